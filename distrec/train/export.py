"""The trained model as later stages use it: `train/weights/{best,last}.safetensors` (consolidated
fp32 state dicts; `.pt` from runs that predate safetensors) and `train/model.json` (model + method
config, catalog size, SID-table and data hashes).

    trained = TrainedModel("runs/beauty/train")
    model = trained.load("best")             # rebuilt from model.json, with the SID table it was trained on
    trained.info["best_step"], trained.sid_hash, trained.data_hash
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


class TrainedModel:
    """The train/ artifact: model.json (model + method config, catalog size, hashes), the exported
    weights and the item counts. The one place that finds a model's SID table and checks that a SID
    table or prepared data is the one the model was trained with."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.info = read_json(self.directory / MODEL_JSON)
        self._sid_tables = {}  # directory -> its checked SID table: `load` and its callers read it once

    @property
    def sid_hash(self) -> str | None:
        return self.info.get("sid_hash")

    @property
    def data_hash(self) -> str | None:
        return self.info.get("data_hash")

    @property
    def num_items(self) -> int:
        return int(self.info["num_items"])

    def sids_dir(self, sids_dir: str | Path | None = None) -> Path | None:
        """Where its SID table is: `sids_dir` (paths.sids) when that exists, else where training read it;
        None for a model over item ids."""
        if not self.sid_hash:
            return None
        return Path(sids_dir) if sids_dir is not None and Path(sids_dir).exists() else Path(self.info["sids_dir"])

    def sid_table(self, sids_dir: str | Path | None = None):
        """The SID table it was trained with (see `sids_dir`), its content hash checked; None for item ids."""
        from distrec.tokenize.extend import extends
        from distrec.tokenize.sid_table import SIDTable

        directory = self.sids_dir(sids_dir)
        if directory is None:
            return None
        if directory in self._sid_tables:
            return self._sid_tables[directory]
        sid_table = SIDTable.load(directory)
        if not extends(sid_table, self.sid_hash, self.num_items):
            raise ConfigError(f"{self.directory / MODEL_JSON}: the model was trained with SID table {self.sid_hash} "
                              f"but {directory} is {sid_table.content_hash}, and not an extension of it; use the "
                              "SID table it was trained on (paths.sids) or one `distrec tokenize --extend` made from it")
        self._sid_tables[directory] = sid_table
        return sid_table

    def new_items(self, sid_table) -> int:
        """Items of `sid_table` added after training (`distrec tokenize --extend`): ids num_items + 1, ..."""
        return 0 if sid_table is None else sid_table.num_items - self.num_items

    def check_data(self, data, sid_table=None) -> None:
        """Refuse prepared data (distrec.data.dataset.PreparedData) other than the data it was trained on; with
        a `sid_table` extended since training, data of exactly its catalog (old items first, then the new)."""
        where = self.directory / MODEL_JSON
        if self.new_items(sid_table):
            if data.num_items != sid_table.num_items:
                raise ConfigError(f"{where}: the extended SID table has {sid_table.num_items} items but "
                                  f"{data.directory} has {data.num_items}; use the prepared data of the grown catalog")
            log.info("%s: evaluating on %s, the catalog grown by %d items since training", where, data.directory,
                     self.new_items(sid_table))
            return
        if self.num_items != data.num_items:
            raise ConfigError(f"{where}: the model was trained on {self.num_items} items but {data.directory} "
                              f"has {data.num_items}; evaluate on the prepared data it was trained on (paths.data)")
        if self.data_hash and self.data_hash != data.content_hash:
            raise ConfigError(f"{where}: the model was trained on prepared data {self.data_hash} but "
                              f"{data.directory} is {data.content_hash}; set paths.data to the data it was trained on")

    def load(self, which: str = "best", sids_dir: str | Path | None = None, device="cpu"):
        """The model rebuilt from model.json with `weights/<which>` (or a weights file's path) loaded,
        in eval mode on `device`, with its SID table (`sid_table(sids_dir)`)."""
        from omegaconf import OmegaConf

        from distrec.models.config import MethodConfig, ModelConfig, with_legacy_values
        from distrec.models.recommender import Catalog, build_model, method_class

        hint = "which must be best, last or a .safetensors/.pt file; run `distrec train` to completion first"
        path = Path(which) if which.endswith(SUFFIXES) else require_weights(self.directory / "weights", which,
                                                                            "trained weights", hint)
        if not path.exists():
            raise DataError("trained weights not found", path, hint=hint)
        sid_table = self.sid_table(sids_dir)
        new_items = self.new_items(sid_table)
        counts_path = self.directory / ITEM_COUNTS
        counts = np.load(counts_path) if counts_path.exists() else None
        if counts is not None and new_items:
            counts = np.concatenate([counts, np.zeros(new_items, counts.dtype)])  # unseen in training
        saved = with_legacy_values({"model": self.info["model"], "method": self.info["method"]})  # keys it predates
        model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), saved["model"])
        method_cfg = OmegaConf.merge(OmegaConf.structured(MethodConfig), saved["method"])
        cls = method_class(method_cfg.name, method_cfg.module)
        if new_items and not cls.extendable:
            raise ConfigError(f"{self.directory / MODEL_JSON}: {cls.name} learns parameters per item, so the "
                              f"{new_items} items added to its SID table since training have none; retrain it "
                              "on the grown catalog")
        model = build_model(model_cfg, method_cfg, Catalog(self.num_items + new_items, sid_table, counts))
        state = read_weights(path, "weights", "re-run `distrec train` (it re-exports the weights from its checkpoints)")
        model.load_state_dict(state)
        return model.to(device).eval()
