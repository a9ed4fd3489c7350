"""One result row per sweep point, read from the artifacts its `train` and `evaluate` wrote.

    train/manifest.json   resolved config + the run summary (steps, train seconds, tokens/s)
    train/metrics.jsonl   train rows (step, loss, tokens_per_s) and valid rows (ndcg@10, ...)
    train/weights/*.pt    the trained model, loaded to count its parameters
    eval/metrics.json     test metrics (recall@K, ndcg@K; `fidelity` for ACERec, else measured
                          here with the model's own `fidelity(item_ids)`)

What a run does not record stays null and is named in the row's `notes`, never guessed silently.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from distrec.artifacts import read_json
from distrec.eval.evaluation import METRIC_PREFIXES, Evaluation



def _find(obj, key):
    """First value of `key` in a nested dict (manifests nest summaries under different keys)."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for value in obj.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def read_metrics_log(train_dir: Path) -> list[dict]:
    path = Path(train_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def output_size(model, method_cfg: dict, num_items: int, sids_dir: Path | None, notes: list[str]) -> int:
    """Scores computed per token by the output layer (the 2*d*V_out term of the FLOP count): what
    the model declares (`output_size`), else the catalog / negatives for item-ID methods, else the
    SID vocabulary for semantic-ID methods."""
    declared = getattr(model, "output_size", None)
    if declared is not None:
        return int(declared() if callable(declared) else declared)
    if not model.uses_sids:  # item ids: the catalog, or the sampled negatives
        if method_cfg.get("loss") == "sampled_softmax":
            return int(method_cfg.get("num_negatives", 0)) + 1
        return 2 if method_cfg.get("loss") == "bce" else int(num_items)
    meta = Path(str(sids_dir)) / "sid_meta.json"
    if sids_dir is not None and meta.exists():
        return int(read_json(meta).get("vocab_size", 0))
    notes.append("output layer size unknown: FLOPs leave out the output term")
    return 0


def model_counts(train_dir: Path, config: dict, notes: list[str]) -> dict:
    """Parameter and FLOP counts of the trained model (null with a note when it cannot be loaded)."""
    from distrec.models.presets import resolve_dims
    from distrec.scaling.counters import analytic_flops_per_token, count_params

    try:
        from distrec.train.export import TrainedModel

        trained = TrainedModel(train_dir)
        model, info = trained.load("last"), trained.info
    except Exception as e:  # an export problem must not lose the row: it is noted instead
        notes.append(f"model not loaded for counting ({type(e).__name__}: {e})")
        return {}
    from omegaconf import OmegaConf

    counts = count_params(model)
    dims = resolve_dims(OmegaConf.create(config["model"]))
    layers = dims.n_layers + (dims.n_decoder_layers if dims.backbone == "t5" else 0)
    num_items = int(_find(info, "num_items") or getattr(model, "num_items", 0) or 0)
    out = output_size(model, config.get("method", {}), num_items, trained.sids_dir(), notes)
    return {
        "model_fidelity": model_fidelity(model, num_items),
        "params_total": counts.total, "params_embedding": counts.embedding,
        "params_non_embedding": counts.non_embedding,
        "d_model": dims.d_model, "n_layers": layers, "num_items": num_items or None,
        "flops_per_token": analytic_flops_per_token(counts.non_embedding, layers, dims.d_model,
                                                    dims.max_history, output_size=out),
    }


def tokens_seen(train_rows: list[dict], steps, global_batch) -> float | None:
    """Training tokens (non-padding input positions) over the whole run. Each logged train row has
    the step's tokens/s and samples/s over the same seconds, so their ratio is tokens per sample;
    its mean over the logged steps times the samples seen. (Robust to resumed runs, whose summary
    only covers the resumed part.)"""
    ratios = [r["tokens_per_s"] / r["samples_per_s"] for r in train_rows
              if r.get("tokens_per_s") and r.get("samples_per_s")]
    if not ratios or not steps or not global_batch:
        return None
    return float(sum(ratios) / len(ratios) * global_batch * steps)


def model_fidelity(model, num_items: int, max_items: int = 10_000):
    """ACERec's compressor fidelity (`model.fidelity(item_ids)`, 1 = lossless) over the first
    `max_items` items, for runs whose eval/metrics.json does not carry it; null for other models."""
    if not callable(getattr(model, "fidelity", None)) or not num_items:
        return None
    import torch

    value = model.fidelity(torch.arange(1, min(num_items, max_items) + 1))
    return None if value is None or math.isnan(value) else float(value)


def collect(point_dir: Path, values: dict, seconds: dict) -> dict:
    """The result row of a finished point (see docs/scaling.md for the columns)."""
    point_dir = Path(point_dir)
    train_dir, eval_dir = point_dir / "train", point_dir / "eval"
    notes: list[str] = []
    manifest = read_json(train_dir / "manifest.json")
    config = manifest.get("config", {})
    rows = read_metrics_log(train_dir)
    train_rows = [r for r in rows if r.get("split") == "train" and r.get("loss") is not None]
    valid_rows = [r for r in rows if r.get("split") == "valid"]

    steps = train_rows[-1]["step"] if train_rows else _find(manifest, "steps")
    train_s = _find(manifest, "train_seconds")
    global_batch = _find(manifest, "global_batch") or config.get("train", {}).get("global_batch_size")
    tokens = tokens_seen(train_rows, steps, global_batch)
    if tokens is None:
        notes.append("tokens seen not recorded by the run")

    row = {
        **values,
        "method": config.get("method", {}).get("name"),
        "backbone": config.get("model", {}).get("backbone"),
        "size": config.get("model", {}).get("size"),
        "max_history": config.get("model", {}).get("max_history"),
        **model_counts(train_dir, config, notes),
        "steps": steps,
        "tokens_seen": tokens,
        "samples_seen": steps * global_batch if steps and global_batch else None,
        "train_loss": train_rows[-1]["loss"] if train_rows else _find(manifest, "final_loss"),
        "valid_loss": valid_rows[-1].get("loss") if valid_rows else None,
        "train_seconds": train_s,
        "wall_s": sum(seconds.values()),
        **{f"{stage}_s": s for stage, s in seconds.items()},
        "run_dir": str(point_dir),
    }
    if valid_rows:
        row.update({f"valid_{k}": v for k, v in valid_rows[-1].items()
                    if str(k).startswith(METRIC_PREFIXES) and isinstance(v, (int, float))})
    row["train_flops"] = row["flops_per_token"] * tokens if tokens and row.get("flops_per_token") else None
    row["flops_per_sample"] = row["train_flops"] / row["samples_seen"] if row["train_flops"] else None
    evaluation = Evaluation(eval_dir)
    metrics = evaluation.metrics
    row.update({f"test_{k}": float(v) for k, v in metrics.items()
                if str(k).startswith(METRIC_PREFIXES) and isinstance(v, (int, float))})
    fidelity = metrics.get("fidelity", _find(evaluation.report, "fidelity"))
    measured = row.pop("model_fidelity", None)
    row["fidelity"] = float(fidelity) if isinstance(fidelity, (int, float)) else measured
    row["loss"] = row["valid_loss"] if row["valid_loss"] is not None else row["train_loss"]
    row["notes"] = "; ".join(notes) or None
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def curve(point_dir: Path, row: dict) -> list[dict]:
    """The train-loss curve of a finished point against tokens and FLOPs (tokens per step taken as
    the run's mean: the engine logs rates, not cumulative counts)."""
    rows = [r for r in read_metrics_log(Path(point_dir) / "train") if r.get("split") == "train"]
    steps, tokens = row.get("steps"), row.get("tokens_seen")
    per_step = tokens / steps if tokens and steps else None
    fpt = row.get("flops_per_token")
    out = []
    for r in rows:
        t = per_step * r["step"] if per_step else None
        out.append({"point_id": row["point_id"], "step": r["step"], "loss": r.get("loss"), "tokens": t,
                    "flops": t * fpt if t and fpt else None})
    return out
