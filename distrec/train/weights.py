"""Consolidated weights files: safetensors, written one tensor at a time.

A model trained under ZeRO-3 may not fit one worker, so its consolidated weights are never held whole:
the header (names, dtypes, shapes) is known before any parameter is gathered, and each tensor's bytes
are appended as soon as it is gathered and then dropped (`write_streaming`). safetensors also reads
without unpickling anything and maps a large file lazily. Checkpoints written before this hold
`weights.pt` (one `torch.save` dict); `find_weights` and `read_weights` take either.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterable

import torch

from distrec.errors import DataError

SUFFIXES = (".safetensors", ".pt")  # the first is written; .pt is read for checkpoints that predate it
_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}


def as_saved(tensor: torch.Tensor) -> torch.Tensor:
    """What a weights file holds for a model tensor: floating point as fp32 (a bf16 engine's weights
    too), anything else (SID code tables) as it is, on the CPU."""
    tensor = tensor.detach()
    return (tensor.float() if tensor.is_floating_point() else tensor).cpu()


def saved_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype.is_floating_point else dtype


def write_streaming(path: Path, entries: list[tuple[str, tuple[int, ...], torch.dtype]],
                    tensors: Iterable[torch.Tensor]) -> None:
    """Write a safetensors file of `entries` (name, shape, dtype) whose values `tensors` yields in the
    same order, each written as it comes: at most one tensor is held at a time. Written to a temporary
    name and renamed, so the file is whole or absent."""
    header, offset = {}, 0
    for name, shape, dtype in entries:
        size = torch.Size(shape).numel() * dtype.itemsize
        header[name] = {"dtype": _DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            written = 0
            for (name, shape, dtype), tensor in zip(entries, tensors, strict=True):
                if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                    raise ValueError(f"{name}: got {tuple(tensor.shape)} {tensor.dtype}, "
                                     f"the header says {tuple(shape)} {dtype}")
                data = tensor.contiguous().reshape(-1).view(torch.uint8)  # the bytes, no copy
                f.write(data.numpy().data)
                written += data.numel()
        if written != offset:
            raise ValueError(f"{path}: wrote {written} bytes of tensors, the header says {offset}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def write_state_dict(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A whole in-memory state dict as a weights file (each tensor converted as it is written)."""
    entries = [(name, tuple(t.shape), saved_dtype(t.dtype)) for name, t in state.items()]
    write_streaming(path, entries, (as_saved(t) for t in state.values()))


def find_weights(directory: Path, stem: str) -> Path | None:
    """`<stem>.safetensors`, else a legacy `<stem>.pt`, in `directory`; None when neither exists."""
    return next((p for p in (Path(directory) / f"{stem}{s}" for s in SUFFIXES) if p.exists()), None)


def require_weights(directory: Path, stem: str, what: str, hint: str) -> Path:
    """`find_weights`, or a DataError naming the file that was expected."""
    path = find_weights(directory, stem)
    if path is None:
        raise DataError(f"{what} not found", Path(directory) / f"{stem}{SUFFIXES[0]}", hint=hint)
    return path


def read_weights(path: Path, what: str, hint: str) -> dict[str, torch.Tensor]:
    """The state dict in a weights file of either kind; a damaged file is a DataError naming it."""
    from distrec.train.checkpoint import load_tensors  # it imports this module

    path = Path(path)
    if path.suffix == ".pt":
        return load_tensors(path, what, hint)
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as e:  # truncated or garbled: safetensors raises its own errors
        raise DataError(f"{what} cannot be loaded ({type(e).__name__}: {e})", path, hint=hint) from None
