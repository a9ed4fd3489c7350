"""Checkpoints: complete or absent, and only ever resumed into the model they were written by.

A checkpoint directory holds every rank's engine state (DeepSpeed shards, or `plain.pt`), each
rank's RNG state (`rng-<rank>.pt`), the consolidated fp32 weights (`weights.safetensors`, written by
rank 0 one tensor at a time; `weights.pt` in checkpoints written before) and
`state.json` (step, early-stopping state, world size, and the model/SID/data hashes), written last.
Every `.pt` file is read with `load_tensors`: tensors and plain data only, never code.

Without Ray, checkpoints live in `train/checkpoints/step-<N>/`: written to a hidden temporary
directory, marked `COMPLETE`, then renamed, so a crash never leaves a directory that looks
usable. Under Ray Train each rank writes a local directory and `ray.train.report` publishes them
together (see distrec/parallel/train.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import torch

from distrec.artifacts import read_json, write_json
from distrec.errors import ConfigError, DataError
from distrec.train.weights import SUFFIXES

COMPLETE = "COMPLETE"
STATE = "state.json"
WEIGHTS = "weights"  # + .safetensors (or a legacy .pt): distrec.train.weights
STEP_DIR = re.compile(r"^step-(\d+)$")
# the hint of every file of a checkpoint that cannot be read
CORRUPT_CHECKPOINT = ("it is corrupt (or from another engine.kind/zero_stage): delete the checkpoint directory "
                      "that holds it (checkpoints/step-N/ or ray/checkpoint_*/) and run the same command again; "
                      "training resumes from the previous checkpoint (under Ray Train too)")


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# keys (at any depth of the model and method configs) that change how a model is computed or trained, not
# what it computes once trained: a run may resume with another value (a branch with more dropout, say)
HOW_NOT_WHAT = {"activation_checkpointing", "dropout", "embd_dropout", "attn_dropout", "token_dropout"}


def _what_it_computes(cfg):
    if isinstance(cfg, dict):
        return {k: _what_it_computes(v) for k, v in cfg.items() if k not in HOW_NOT_WHAT}
    return cfg


def model_identity(model_cfg: dict, method_cfg: dict, num_items: int, sid_hash: str | None,
                   data_hash: str | None) -> dict:
    """What a checkpoint must match to be resumed or evaluated: architecture + catalog + inputs.
    The config itself is kept (`model_config`) so a mismatch can name its keys."""
    config = {"model": _what_it_computes(model_cfg), "method": _what_it_computes(method_cfg), "num_items": num_items}
    return {"model_hash": config_hash(config), "model_config": config, "sid_hash": sid_hash, "data_hash": data_hash}


def config_changes(saved, current, prefix: str = "") -> list[str]:
    """`key: old -> new` for every value of `saved` that `current` changes. Keys only in `current` were
    added by a later release (see distrec.models.config.LEGACY_VALUES); keys only in `saved` were removed."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [change for key in saved if key in current
                for change in config_changes(saved[key], current[key], f"{prefix}{key}.")]
    return [] if saved == current else [f"{prefix[:-1]}: {saved!r} -> {current!r}"]


def check_identity(state: dict, identity: dict, where) -> None:
    """Raise ConfigError when a checkpoint was written by another model, SID table or dataset."""
    from distrec.models.config import with_legacy_values

    def refuse(what: str) -> None:
        raise ConfigError(f"{where}: checkpoint was written for a different {what}; refusing to resume it. "
                          "Use another `name`/`paths.train` for the new run, or delete the old checkpoints.")

    if "model_config" in state:  # written since the config is kept: name what changed
        changes = config_changes(with_legacy_values(state["model_config"]), identity["model_config"])
        if changes:
            refuse(f"model/method config or catalog size ({'; '.join(changes)})")
    elif state.get("model_hash") != identity["model_hash"]:
        refuse(f"model/method config or catalog size (model_hash {state.get('model_hash')} != "
               f"{identity['model_hash']})")
    for key, label in (("sid_hash", "SID table"), ("data_hash", "prepared data")):
        if state.get(key) != identity.get(key):
            refuse(f"{label} ({key} {state.get(key)} != {identity.get(key)})")


def load_tensors(path: Path, what: str, hint: str, map_location="cpu", allow=()):
    """`torch.load` of tensors and plain containers only (`weights_only`), plus the classes in `allow`.

    Checkpoints come from shared storage, and a full unpickle runs whatever code a file names: a
    file holding anything else is refused, naming it. `hint` is for a file that is merely corrupt."""
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = next((line.strip() for line in str(e).splitlines() if "nsupported" in line), "not tensors")
        raise DataError(f"refusing to load {what}: it holds more than tensors and plain data ({reason}), "
                        "and unpickling it could run code", path,
                        hint="distrec never writes such a file: do not resume from it (it is damaged or was "
                             "altered); train under a new run name (`name=...`)") from None
    except Exception as e:  # truncated/garbled files raise from torch/zipfile alike
        raise DataError(f"{what} cannot be loaded ({type(e).__name__}: {e})", path, hint=hint) from None


# ---------------------------------------------------------------- one checkpoint

def write_checkpoint(directory: Path, engine, state: dict) -> None:
    """Every rank calls this with its own engine; rank 0 also writes the weights and state.json (last)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    engine.save(directory)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, directory / f"rng-{engine.rank}.pt")
    engine.write_weights(directory / f"{WEIGHTS}{SUFFIXES[0]}")  # collective under ZeRO-3
    _barrier()
    if engine.rank == 0:
        write_json(directory / STATE, state)


def read_state(directory: Path) -> dict:
    directory = Path(directory)
    if not (directory / STATE).exists():
        raise DataError("checkpoint is incomplete (no state.json)", directory,
                        hint="delete it; training resumes from the previous complete checkpoint")
    return read_json(directory / STATE)


def restore_checkpoint(directory: Path, engine, identity: dict) -> dict:
    """Load engine state and this rank's RNG from `directory` after checking it belongs to this run."""
    directory = Path(directory)
    state = read_state(directory)
    check_identity(state, identity, directory)
    saved = (state.get("engine_kind"), state.get("zero_stage"), state.get("world_size"))
    now = (engine.kind, engine.stage, engine.world_size)
    if saved != now:
        raise ConfigError(f"{directory}: checkpoint was written with engine.kind/zero_stage/workers={saved}, "
                          f"this run uses {now}; resume with the same engine settings or start a new run")
    engine.load(directory)
    rng_path = directory / f"rng-{engine.rank}.pt"
    rng = load_tensors(rng_path, "RNG state", CORRUPT_CHECKPOINT)
    try:
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    except Exception as e:
        raise DataError(f"RNG state cannot be loaded ({type(e).__name__})", rng_path, hint=CORRUPT_CHECKPOINT) from None
    return state


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# ---------------------------------------------------------------- train/checkpoints/ (no Ray)

def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, dir) of the complete checkpoints under `root`, oldest first; partial ones are ignored."""
    root = Path(root)
    if not root.exists():
        return []
    found = []
    for d in root.iterdir():
        m = STEP_DIR.match(d.name)
        if m and (d / COMPLETE).exists():
            found.append((int(m.group(1)), d))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1][1] if found else None


def staging_dir(root: Path, step: int) -> Path:
    tmp = Path(root) / f".step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit(root: Path, step: int, tmp: Path) -> Path:
    """Mark a fully written staging directory complete and move it into place."""
    (Path(tmp) / COMPLETE).write_text("ok\n")
    final = Path(root) / f"step-{step}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def prune(root: Path, keep: int, protect: set[int]) -> None:
    """Keep the `keep` newest complete checkpoints plus the protected steps (the best); 0 keeps all."""
    if keep <= 0:
        return
    found = complete_checkpoints(root)
    for step, d in found[:-keep]:
        if step not in protect:
            shutil.rmtree(d, ignore_errors=True)
