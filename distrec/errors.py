"""User-facing errors: every one names the file, line or key at fault and what to do."""


class DistrecError(Exception):
    """An error caused by input or configuration, reported to the user without a traceback."""


class DataError(DistrecError):
    """Bad input data. Carries where it was found so the message can point at it."""

    def __init__(self, message: str, path=None, line: int | None = None, hint: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}" + (f", line {line}" if line is not None else "") + ": "
        text = where + message
        if hint:
            text += f"\n  -> {hint}"
        super().__init__(text)
        self.path, self.line, self.hint = path, line, hint


class ConfigError(DistrecError):
    """A configuration that cannot work (checked before any work starts)."""


class MissingExtra(ConfigError):
    """An optional extra (e.g. `text`: sentence-transformers) is not installed; the message names it."""
