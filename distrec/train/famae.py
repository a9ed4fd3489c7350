"""`embed.method=famae` (ReSID): train FAMAE on the prepared data with the training engine, then use
the concatenation of each item's learned field embeddings as its vector.

    distrec embed embed=famae data=beauty          # then: distrec tokenize tokenizer=gaoq

Fields: the item id plus every non-text field of items.parquet (`famae.fields` to choose):
categorical ids, multi-valued attribute/genre sets, numeric fields in quantile buckets. Training
runs the FAMAE model through the training loop (DeepSpeed engine; in-process or on Ray Train workers,
as the executor the embed stage hands it says) with its own hyperparameters (`famae.*`), validating
on Recall/NDCG@10 with every target field masked. Afterwards the two diagnostics of the paper are
measured on the test split and written to `<famae.train_dir>/diagnostics.json`:
  - recall@10 of the target item with ALL its fields masked (collaborative capability);
  - recall@10 of the item id with ONLY the item-id field masked (discriminative semantics).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from omegaconf import OmegaConf

from distrec.artifacts import write_json
from distrec.errors import ConfigError, DataError
from distrec.models.methods.famae import FAMAE, FieldSpec

log = logging.getLogger("distrec")
FIELD_KINDS = ("categorical", "multi_categorical", "numeric")


# ------------------------------------------------------------------ item fields -> id tables

def bucketize(values: list, buckets: int) -> np.ndarray:
    """Numeric values -> quantile bucket ids 1..buckets (0 = missing)."""
    x = np.array([np.nan if v is None else float(v) for v in values])
    present = ~np.isnan(x)
    out = np.zeros(len(x), dtype=np.int64)
    if present.any():
        edges = np.unique(np.quantile(x[present], np.linspace(0, 1, buckets + 1)[1:-1]))
        out[present] = np.searchsorted(edges, x[present], side="right") + 1
    return out


def item_field_tables(items: pa.Table, kinds: dict[str, str], fields: list[str], buckets: int, weights: dict,
                      where) -> tuple[list[FieldSpec], list[torch.Tensor]]:
    """FieldSpecs and per-item value tables (row = item id, row 0 = padding), item id first."""
    ids = items.column("item_id").to_numpy()
    n = int(ids.max()) if len(ids) else 0
    if len(ids) != n or len(np.unique(ids)) != n or ids.min() != 1:
        raise DataError(f"item ids must be dense 1..N (got {len(ids)} rows, max id {n})", where,
                        hint="re-run `distrec prepare`")
    unknown = [f for f in list(fields) + list(weights) if f != "item_id" and f not in kinds]
    if unknown:
        raise ConfigError(f"famae: unknown item field(s) {unknown}; the items have {sorted(kinds)}")
    chosen = fields or [f for f, k in kinds.items() if k in FIELD_KINDS]
    specs = [FieldSpec("item_id", n + 1, False, float(weights.get("item_id", 1.0)))]
    tables = [torch.arange(n + 1)]
    for name in chosen:
        kind = kinds[name]
        if kind not in FIELD_KINDS:
            raise ConfigError(f"famae.fields: '{name}' is a {kind} field; FAMAE takes {list(FIELD_KINDS)}")
        column = items.column(name).to_pylist()
        if kind == "multi_categorical":
            width = max((len(v or []) for v in column), default=0) or 1
            table = np.zeros((n + 1, width), dtype=np.int64)
            for item, values in zip(ids, column):
                table[item, :len(values or [])] = values or []
        else:
            values = bucketize(column, buckets) if kind == "numeric" else \
                np.array([v or 0 for v in column], dtype=np.int64)
            table = np.zeros(n + 1, dtype=np.int64)
            table[ids] = values
        if (table < 0).any():
            raise DataError(f"field '{name}' has negative ids", where, hint="ids are 1..V with 0 = missing")
        specs.append(FieldSpec(name, int(table.max()) + 1, kind == "multi_categorical", float(weights.get(name, 1.0))))
        tables.append(torch.from_numpy(table))
    return specs, tables


def build_famae(specs, tables, fcfg) -> FAMAE:
    return FAMAE(specs, tables, dim=fcfg.dim, layers=fcfg.layers, heads=fcfg.heads, ffn=fcfg.ffn,
                 dropout=fcfg.dropout, max_len=fcfg.max_history + 1, negatives=fcfg.negatives,
                 sampled_min_vocab=fcfg.sampled_min_vocab)


def job_config(fcfg, seed: int, progress: bool):
    """The config the training loop reads (train/engine/model/eval groups), from the `famae` node."""
    from distrec.eval.config import EvalConfig

    return OmegaConf.create({"seed": seed, "progress": progress, "train": fcfg.train, "engine": fcfg.engine,
                             "eval": OmegaConf.structured(EvalConfig()), "model": {"max_history": fcfg.max_history}})


# ------------------------------------------------------------------ diagnostics

class _IdMasked(torch.nn.Module):
    """FAMAE seen through its second diagnostic: `recommend` = item id with only the id masked."""

    def __init__(self, model: FAMAE):
        super().__init__()
        self.model = model

    def recommend(self, batch, k):
        return self.model.recommend_id_masked(batch, k)


def diagnostics(model: FAMAE, sequences, split: str, max_history: int, max_users: int | None = None) -> dict:
    from distrec.data.batches import eval_batches
    from distrec.eval.evaluator import evaluate

    out = {}
    for name, m in (("all_fields_masked", model), ("item_id_masked", _IdMasked(model))):
        batches = eval_batches(sequences, split, max_history, 512, max_users=max_users)
        result = evaluate(m, batches, ks=[10], num_items=model.num_items).metrics.result()
        out[f"{name}_recall@10"] = result["recall@10"]
        out["users"] = result.get("users")
    return out


# ------------------------------------------------------------------ the embedder

class FAMAEEmbedder:
    """The embedder interface (inputs, fit, transform) over a FAMAE trained on the prepared data.
    `run_on` is where training runs (distrec.parallel.executor: InProcess or OnRay)."""

    def __init__(self, cfg, seed: int, run_on, progress: bool = True):
        self.cfg, self.seed, self.run_on, self.progress = cfg, seed, run_on, progress  # cfg: the `famae` node
        self.data = self.vectors = self.diagnostics = None

    def inputs(self, data) -> pa.Table:
        self.data = data  # FAMAE learns from the sequences too, not only the item table
        return data.items.select(["item_id"])

    def fit(self, inputs: pa.Table):
        """Train on the whole prepared data given to `inputs` (a fit sample of items is not used)."""
        from distrec.train.checkpoint import config_hash, model_identity
        from distrec.train.loop import TrainJob, check_train_config
        from distrec.train.trainer import export_run
        from distrec.train.weights import read_weights, require_weights

        f, data = self.cfg, self.data
        where = Path(data.directory)
        specs, tables = item_field_tables(data.items, data.fields, list(f.fields), f.numeric_buckets,
                                          dict(f.field_weights or {}), where / "items")
        log.info("famae: fields %s", [(s.name, s.vocab, "multi" if s.multi else "single") for s in specs])
        sequences = data.sequence_data()
        famae_cfg = OmegaConf.to_container(f, resolve=True)
        identity = model_identity({"famae": famae_cfg, "fields": [s.__dict__ for s in specs]}, {"name": "famae"},
                                  data.num_items, None, data.content_hash)
        train_dir = Path(f.train_dir)
        train_dir.mkdir(parents=True, exist_ok=True)
        job_cfg = job_config(f, self.seed, self.progress)
        check_train_config(job_cfg)
        job = TrainJob(cfg=job_cfg, make_model=functools.partial(build_famae, specs, tables, f),
                       num_items=data.num_items, identity=identity, train_dir=str(train_dir))
        latest, checkpoints, summary = self.run_on.train(job, sequences, where / "sequences")
        summary = export_run(job, latest, checkpoints, summary,
                             {"method": {"name": "famae"}, "famae": famae_cfg, "config_hash": config_hash(famae_cfg)})
        torch.manual_seed(self.seed)
        model = build_famae(specs, tables, f)
        hint = "delete famae.train_dir and run `distrec embed` again"
        model.load_state_dict(read_weights(require_weights(train_dir / "weights", "best", "FAMAE weights", hint),
                                           "FAMAE weights", hint))
        model.eval()
        diag = diagnostics(model, sequences, "test", f.max_history, f.diagnostic_max_users)
        diag.update({"split": "test", "best_step": summary.get("model", {}).get("best_step"),
                     "steps": summary["steps"], "train_seconds": round(summary["train_seconds"], 1),
                     "fields": [s.name for s in specs], "dim": int(model.item_representations().shape[1])})
        write_json(train_dir / "diagnostics.json", diag)
        log.info("famae diagnostics (test): %s", diag)
        print(f"FAMAE diagnostics (test): target R@10, all fields masked = {diag['all_fields_masked_recall@10']:.4f}; "
              f"item-id R@10, only the id masked = {diag['item_id_masked_recall@10']:.4f}")
        self.vectors = model.item_representations().numpy()
        self.diagnostics, self.data = diag, None  # the fitted embedder travels to Ray workers: keep it small
        return self

    def transform(self, items: pa.Table) -> np.ndarray:
        ids = items.column("item_id").to_numpy()
        if ids.max(initial=0) >= len(self.vectors) or ids.min(initial=1) < 1:
            raise DataError(f"item ids outside the catalog FAMAE was trained on (1..{len(self.vectors) - 1})",
                            hint="embed the same prepared data FAMAE was trained on")
        return self.vectors[ids]
