"""User-facing errors: every one names the file, line or key at fault and what to do."""


class DistrecError(Exception):
    """An error caused by input or configuration, reported to the user without a traceback."""


class StageFailed(RuntimeError):
    """A `distrec` subprocess (a stage of a sweep point) exited non-zero; the message carries its log's tail."""


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


class OutOfMemory(DistrecError):
    """An allocation failed; the message names its size, the memory there is, and what to lower."""


# What makes each stage's largest allocations (a catalog too large for the memory shows up here).
MEMORY_KNOBS = {
    "prepare": "the catalog (data.synthetic.num_items / num_users, or data.min_*_interactions for real data), "
               "or data.synthetic.shard_items / shard_users (rows generated at once)",
    "embed": "embed.batch_size / embed.encode_batch_size, or the catalog",
    "tokenize": "tokenizer.rqvae.batch_size or the codebook sizes, or the catalog",
    "train": "the model (model.size, model.d_model: the item table is catalog x d_model), train.micro_batch_size, "
             "eval.batch_size (each validated user scores the whole catalog), or split the model and its optimizer "
             "state over workers (engine=zero2 / zero3)",
    "evaluate": "eval.batch_size (each user of a batch scores the whole catalog)",
    "recommend": "recommend.batch_size (each user of a batch scores the whole catalog), or recommend.num_workers "
                 "(each Ray worker holds its own model)",
}


def out_of_memory(error: BaseException, stage: str) -> OutOfMemory | None:
    """The OutOfMemory for a failed allocation (numpy MemoryError, torch's CPU or CUDA allocator), else None."""
    import re

    text = str(error)
    if not (isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and any(
            m in text for m in ("can't allocate memory", "not enough memory", "out of memory")))):
        return None
    exact = re.search(r"allocate (\d+) bytes", text)  # torch's CPU allocator
    rounded = re.search(r"allocate ([\d.]+ [KMGT]i?B)", text, re.I)  # numpy, torch's CUDA allocator
    size = _gib(int(exact.group(1))) if exact else rounded.group(1) if rounded else "unknown size"
    where = "on the GPU" if "CUDA" in text else memory_available()
    return OutOfMemory(f"out of memory: one allocation of {size} failed ({where}). "
                       f"Lower {MEMORY_KNOBS.get(stage, 'the sizes in the config')}, or run where more memory is "
                       "available")


def memory_available() -> str:
    """This process's address-space limit (ulimit -v) and the host's available memory, as text."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    parts = [f"limit {_gib(limit)} (ulimit -v)"] if limit != resource.RLIM_INFINITY else []
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        parts.append(f"{_gib(kib * 1024)} available on the host")
    except (OSError, StopIteration):
        pass
    return ", ".join(parts) or "memory of this host"


def _gib(n: int) -> str:
    return f"{n / 2 ** 30:.2f} GiB"
