"""The trained model as later stages use it: `train/weights/{best,last}.safetensors` (consolidated
fp32 state dicts; `.pt` from runs that predate safetensors) and `train/model.json` (model + method
config, catalog size, SID-table and data hashes).

    model, info = load_trained_model("runs/beauty/train", which="best")
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from distrec.artifacts import read_json, write_json
from distrec.errors import ConfigError, DataError
from distrec.train.checkpoint import WEIGHTS, read_state
from distrec.train.weights import SUFFIXES, read_weights, require_weights

log = logging.getLogger("distrec.train")
MODEL_JSON = "model.json"
ITEM_COUNTS = "item_counts.npy"


def _export(checkpoint: Path, weights_dir: Path, stem: str) -> None:
    """The checkpoint's weights file as `weights/<stem>` + its suffix; an export of the other kind
    (a run resumed across the change to safetensors) is removed, so one file answers for `stem`."""
    src = require_weights(checkpoint, WEIGHTS, "the checkpoint's weights file",
                          "the checkpoint is incomplete: delete it and run `distrec train` again "
                          "(it resumes from the one before)")
    dst = weights_dir / f"{stem}{src.suffix}"
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    for suffix in SUFFIXES:
        if suffix != src.suffix:
            (weights_dir / f"{stem}{suffix}").unlink(missing_ok=True)


def export_weights(train_dir: str | Path, latest: Path, checkpoints: dict[int, Path], info: dict) -> dict:
    """Copy the last and best checkpoints' weights to train/weights/ and write model.json."""
    train_dir = Path(train_dir)
    state = read_state(latest)
    best_step = state.get("best_step")
    best = checkpoints.get(best_step, latest if best_step in (None, state["step"]) else None)
    if best is None:
        log.warning("the best checkpoint (step %s) was pruned (train.keep_checkpoints); best = last", best_step)
        best, best_step = latest, state["step"]
    (train_dir / "weights").mkdir(parents=True, exist_ok=True)
    _export(latest, train_dir / "weights", "last")
    _export(best, train_dir / "weights", "best")
    metric = info.get("select_metric", "ndcg@10")
    info = {**info, "last_step": state["step"], "best_step": best_step if best_step is not None else state["step"],
            f"best_val_{metric}": state.get("best_metric")}
    write_json(train_dir / MODEL_JSON, info)
    return info


def load_trained_model(train_dir: str | Path, which: str = "best", sid_table=None, device="cpu"):
    """Rebuild the trained model from model.json and load `weights/<which>` (or a weights file's path).

    The SID table is loaded from the recorded `sids_dir` unless given; its content hash must match
    the one the model was trained with. Returns (model in eval mode, model.json contents)."""
    from omegaconf import OmegaConf

    from distrec.models.config import MethodConfig, ModelConfig, with_legacy_values
    from distrec.models.recommender import Catalog, build_model

    train_dir = Path(train_dir)
    info = read_json(train_dir / MODEL_JSON)
    hint = "which must be best, last or a .safetensors/.pt file; run `distrec train` to completion first"
    path = Path(which) if which.endswith(SUFFIXES) else require_weights(train_dir / "weights", which,
                                                                        "trained weights", hint)
    if not path.exists():
        raise DataError("trained weights not found", path, hint=hint)
    if info.get("sid_hash"):
        if sid_table is None:
            from distrec.tokenize.sid_table import SIDTable

            sid_table = SIDTable.load(info["sids_dir"])
        if sid_table.content_hash != info["sid_hash"]:
            raise ConfigError(f"{train_dir / MODEL_JSON}: the model was trained with SID table {info['sid_hash']} "
                              f"but the given one is {sid_table.content_hash}; evaluate with the SID table it was "
                              "trained on (paths.sids)")
    counts_path = train_dir / ITEM_COUNTS
    counts = np.load(counts_path) if counts_path.exists() else None
    saved = with_legacy_values({"model": info["model"], "method": info["method"]})  # keys it predates
    model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), saved["model"])
    method_cfg = OmegaConf.merge(OmegaConf.structured(MethodConfig), saved["method"])
    model = build_model(model_cfg, method_cfg, Catalog(info["num_items"], sid_table, counts))
    state = read_weights(path, "weights", "re-run `distrec train` (it re-exports the weights from its checkpoints)")
    model.load_state_dict(state)
    return model.to(device).eval(), info
