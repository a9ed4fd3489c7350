"""distrec: semantic-ID generative recommenders at catalog scale."""

__version__ = "0.1.0"
