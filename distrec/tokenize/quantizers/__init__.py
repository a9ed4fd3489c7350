"""Quantizers: item vectors -> code tuples. See base.py for the interface and the registry."""

from distrec.tokenize.quantizers.base import QUANTIZERS, Quantizer, build_quantizer, load_quantizer

__all__ = ["QUANTIZERS", "Quantizer", "build_quantizer", "load_quantizer"]
