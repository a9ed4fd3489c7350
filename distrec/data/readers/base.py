"""What every reader shares: the raw dataset it returns, file opening, and row-level error handling.

A reader turns one on-disk format into a `RawData`: an interaction log (user, item, optional
timestamp and rating, in file order) plus item metadata keyed by the source's item id. Everything
after that (filtering, ordering, id remapping, splits) is format-independent (distrec/data/build.py).
"""

from __future__ import annotations

import gzip
import io
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from distrec.errors import ConfigError, DataError

progress = True  # tqdm bars while reading files; set from cfg.progress by the prepare stage


class RowErrors:
    """`on_error=raise`: a bad row stops with a DataError naming file and line.
    `on_error=skip`: the row is dropped and counted under its reason (reported in stats.json)."""

    def __init__(self, on_error: str = "raise"):
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"data.on_error='{on_error}' is unknown; choose raise or skip")
        self.skip = on_error == "skip"
        self.dropped: Counter = Counter()

    def bad(self, reason: str, message: str, path=None, line: int | None = None, hint: str | None = None):
        if not self.skip:
            hint = (hint + "; " if hint else "") + "or set data.on_error=skip to drop such rows (counted in stats.json)"
            raise DataError(message, path, line, hint)
        self.dropped[reason] += 1


class InteractionLog:
    """Interactions in file order, with user and item keys interned to small integer codes."""

    def __init__(self):
        self.user_codes: dict[str, int] = {}
        self.item_codes: dict[str, int] = {}
        self.user = array("i")
        self.item = array("i")
        self.timestamp = array("q")
        self.rating = array("d")
        self.has_time: bool | None = None  # decided by the first interaction
        self.has_rating: bool | None = None

    def __len__(self):
        return len(self.user)

    def item_code(self, item: str) -> int:
        code = self.item_codes.get(item)
        if code is None:
            code = self.item_codes[item] = len(self.item_codes)
        return code

    def user_code(self, user: str) -> int:
        code = self.user_codes.get(user)
        if code is None:
            code = self.user_codes[user] = len(self.user_codes)
        return code

    def add(self, user: str, item: str, timestamp: int | None = None, rating: float | None = None):
        if self.has_time is None:
            self.has_time, self.has_rating = timestamp is not None, rating is not None
        elif (timestamp is not None) != self.has_time or (rating is not None) != self.has_rating:
            raise ValueError("some interactions have a timestamp/rating and others do not")
        self.user.append(self.user_code(user))
        self.item.append(self.item_code(item))
        if self.has_time:
            self.timestamp.append(int(timestamp))
        if self.has_rating:
            self.rating.append(float(rating))

    def add_sequence(self, user: str, items: list[str], timestamps=None, ratings=None):
        """All of one user's interactions at once (the fast path for sequence formats)."""
        if not items:
            return
        if self.has_time is None:
            self.has_time, self.has_rating = timestamps is not None, ratings is not None
        elif (timestamps is not None) != self.has_time or (ratings is not None) != self.has_rating:
            raise ValueError("some interactions have a timestamp/rating and others do not")
        code = self.user_code(user)
        self.user.extend([code] * len(items))
        self.item.extend([self.item_code(i) for i in items])
        if self.has_time:
            self.timestamp.extend([int(t) for t in timestamps])
        if self.has_rating:
            self.rating.extend([float(r) for r in ratings])


@dataclass
class RawData:
    """One dataset as read from its source files, before any processing."""

    log: InteractionLog = field(default_factory=InteractionLog)
    items: dict[str, dict] = field(default_factory=dict)  # source item key -> canonical fields (see items.py)
    kinds: dict[str, str] = field(default_factory=dict)  # field kinds the format declares (else items.KINDS / guessed)
    user_raw: dict[str, str] = field(default_factory=dict)  # source user key -> original user id, when different
    files: list[Path] = field(default_factory=list)  # every input file read (hashed into the manifest)
    has_catalog: bool = False  # True when an item file exists: sequence items must appear in it


# ---------------------------------------------------------------- files

def require(path: str | Path, what: str, hint: str | None = None) -> Path:
    """The path if it exists, else a DataError saying what was expected there."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{what} not found", path, hint=hint or "check data.path / data.files in the config")
    return path


def find(directory: Path, names: list[str], what: str, required: bool = True) -> Path | None:
    """The first of `names` (globs allowed, `.gz` variants tried) present in `directory`."""
    for name in names:
        for candidate in (name, name + ".gz"):
            hits = sorted(directory.glob(candidate))
            if hits:
                return hits[0]
    if required:
        raise DataError(f"{what} not found (looked for {', '.join(names)})", directory,
                        hint="point data.path at the dataset folder or name the file in data.files")
    return None


def open_text(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    """Open a text file, gzip-compressed or not (decided by the magic bytes, not the name)."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding=encoding) if gz else open(path, encoding=encoding)


def lines(path: Path, raw: RawData | None = None, encoding: str = "utf-8", skip_header: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, line) for every non-blank data line; a file without data rows is a DataError."""
    if raw is not None:
        raw.files.append(path)
    header_pending, rows = skip_header, 0
    try:
        with open_text(path, encoding) as f:
            bar = tqdm(f, desc=f"read {path.name}", unit=" lines", disable=not progress, leave=False, mininterval=1)
            for number, line in enumerate(bar, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                if header_pending:
                    header_pending = False
                    continue
                rows += 1
                yield number, line
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read file ({e})", path, hint="the file is truncated or not text in the expected encoding") from None
    if rows == 0:
        raise DataError("file is empty (no data rows)", path, hint="re-export the file or point the config at the right one")


def first_line(path: Path, encoding: str = "utf-8") -> str:
    with open_text(path, encoding) as f:
        return f.readline().rstrip("\r\n")


def known_item(raw: RawData, errors: RowErrors, item: str, path: Path, line: int) -> bool:
    """False (after counting or raising) when a sequence names an item missing from the item file."""
    if not raw.has_catalog or item in raw.items:
        return True
    errors.bad("unknown_item", f"item id {item!r} is not in the item file", path, line,
               hint="add the item to the item file or remove it from the sequence")
    return False
