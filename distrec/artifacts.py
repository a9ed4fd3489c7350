"""Artifact directories: sharded parquet tables, JSON files and the manifest every stage writes.

An artifact directory is complete once `manifest.json` exists; stages write into a temporary
directory and rename it into place, so a half-written artifact is never picked up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distrec.errors import ConfigError, DataError

MANIFEST = "manifest.json"


# ---------------------------------------------------------------- parquet tables (sharded)

def write_table(table: pa.Table, directory: str | Path, num_shards: int = 1) -> list[Path]:
    """Write `table` as `part-00000.parquet` ... so Ray Data can read shards in parallel."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    num_shards = max(1, min(num_shards, table.num_rows or 1))
    rows_per_shard = -(-table.num_rows // num_shards) if table.num_rows else 0
    paths = []
    for i in range(num_shards):
        path = directory / f"part-{i:05d}.parquet"
        pq.write_table(table.slice(i * rows_per_shard, rows_per_shard), path)
        paths.append(path)
    return paths


def shard_paths(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    if not directory.exists():
        raise DataError("table directory does not exist", directory,
                        hint="run the stage that writes it first, or fix the path in the config")
    paths = sorted(directory.glob("part-*.parquet"))
    if not paths:
        raise DataError("no part-*.parquet shards found", directory,
                        hint="the directory is not a distrec table; re-run the stage that writes it")
    return paths


def adopt_parts(source: str | Path, directory: str | Path) -> list[Path]:
    """Move the parquet files a writer named its own way (Ray Data: `<uuid>_<task>_<block>.parquet`) from
    `source` to `directory` as part-00000.parquet ... in their sorted order, and remove `source`."""
    source, directory = Path(source), Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, path in enumerate(sorted(source.glob("*.parquet"))):
        paths.append(directory / f"part-{i:05d}.parquet")
        os.replace(path, paths[-1])
    shutil.rmtree(source, ignore_errors=True)
    return paths


def read_table(directory: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read every shard of a table directory into one Arrow table."""
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in shard_paths(directory)])


# ---------------------------------------------------------------- JSON

def write_json(path: str | Path, obj) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: str | Path):
    path = Path(path)
    if not path.exists():
        raise DataError("file does not exist", path, hint="run the stage that writes it first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON ({e.msg})", path, e.lineno) from None


# ---------------------------------------------------------------- hashing

def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def dir_hash(directory: str | Path, pattern: str = "*.parquet") -> str:
    """Content hash of the data files of an artifact directory (order-stable)."""
    h = hashlib.sha256()
    for p in sorted(Path(directory).rglob(pattern)):
        h.update(p.relative_to(directory).as_posix().encode())
        h.update(file_hash(p).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- manifest

def code_version() -> str:
    """distrec version plus the git commit when run from a checkout."""
    from distrec import __version__

    try:
        root = Path(__file__).resolve().parents[1]
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "deepspeed", "ray", "pyarrow", "faiss-cpu", "faiss-gpu-cu12", "hydra-core", "numpy",
                 "sentence-transformers", "transformers"):  # the last two: the text extra, when installed
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


class Timer:
    """Named wall-clock phases: `with timer("fit"): ...`; `timer.phases` maps name -> seconds."""

    def __init__(self):
        self.phases: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start


def write_manifest(directory: str | Path, *, stage: str, config, inputs: dict | None = None,
                   timings: dict | None = None, counts: dict | None = None, extra: dict | None = None) -> dict:
    """Write `manifest.json`: resolved config, input hashes, code and library versions, timings, counts."""
    from omegaconf import OmegaConf

    if not isinstance(config, dict):
        config = OmegaConf.to_container(config, resolve=True)
    manifest = {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "code_version": code_version(),
        "libraries": library_versions(),
        "config": config,
        "inputs": inputs or {},
        "timings_s": {k: round(v, 3) for k, v in (timings or {}).items()},
        "counts": counts or {},
        **(extra or {}),
    }
    write_json(Path(directory) / MANIFEST, manifest)
    return manifest


def wrote(stage: str, what: str, directory: str | Path) -> None:
    """The last line every stage prints: what it wrote and where."""
    print(f"{stage}: {what} -> {directory}", flush=True)


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise DataError("artifact is incomplete or missing (no manifest.json)", directory,
                        hint="run the stage that writes it (an interrupted stage leaves no manifest)")
    return read_json(path)


def check_same_dataset(directory: str | Path, data_name: str) -> None:
    """Refuse to read an artifact made from another dataset than this command's `data=`: later stages
    find their inputs by `name` (runs/<name>/...), so `name=beauty` without `data=beauty` would otherwise
    run, and record, the default dataset's config against Beauty's artifacts."""
    path = Path(directory) / MANIFEST
    if not path.exists():  # the stage's own reader says what is missing
        return
    made_from = ((read_json(path).get("config") or {}).get("data") or {}).get("name")
    if made_from and made_from != data_name:
        raise ConfigError(f"{directory} was made from data={made_from} but this command composes data={data_name}; "
                          f"add data={made_from} (or the experiment= that made it), or point paths.* at "
                          f"artifacts of {data_name}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_staging(directory: str | Path) -> list[Path]:
    """Remove the temporary siblings (`.<name>.tmp-<host>-<pid>`) that stages killed on this host left
    behind (SIGKILL runs no clean-up); those of live processes and other hosts are kept."""
    directory = Path(directory)
    removed = []
    for path in directory.parent.glob(f".{directory.name}.tmp-*"):
        host, _, pid = path.name.rsplit(".tmp-", 1)[1].rpartition("-")
        if pid.isdigit() and host in ("", platform.node()) and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def staged_output(directory: str | Path):
    """Yield a temporary sibling directory; on success it replaces `directory` atomically.

    On failure (an exception, Ctrl-C, or SIGTERM under the CLI) the temporary directory is removed
    and the previous artifact stays untouched; one a killed process left is removed by the next run.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(directory)
    tmp = directory.with_name(f".{directory.name}.tmp-{platform.node()}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
