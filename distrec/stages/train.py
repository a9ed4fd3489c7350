"""`distrec train`: prepared data (+ SID table) -> train/ (checkpoints, weights, model.json, logs).

Runs the engine where `engine.num_workers` says (distrec.parallel.executor): in this process, or
on Ray Train workers.
The train/ directory is written in place (its checkpoints are each atomic) so an interrupted run
resumes; `manifest.json` appears last, when the run is complete.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from distrec.artifacts import Timer, write_manifest, wrote
from distrec.errors import ConfigError
from distrec.train.checkpoint import complete_checkpoints, model_identity
from distrec.train.logs import CURVE
from distrec.train.weights import SUFFIXES as WEIGHTS_SUFFIXES

log = logging.getLogger("distrec.train")


def _existing_run(train_dir: Path) -> bool:
    return bool(complete_checkpoints(train_dir / "checkpoints")) or (train_dir / "ray").exists()


def run(cfg) -> dict:
    from distrec.data.dataset import load_prepared
    from distrec.models.recommender import Catalog, build_model, method_class
    from distrec.parallel.executor import executor
    from distrec.train.export import ITEM_COUNTS
    from distrec.train.loop import TrainJob, check_batches, check_train_config
    from distrec.train.trainer import export_run

    check_train_config(cfg)
    timer = Timer()
    train_dir = Path(cfg.paths.train).resolve()  # absolute: Ray workers run elsewhere
    if not cfg.train.resume and _existing_run(train_dir):
        raise ConfigError(f"{train_dir} already holds checkpoints and train.resume=false; nothing was "
                          "overwritten. Delete it, choose another `name`/`paths.train`, or resume.")
    with timer("load"):
        data = load_prepared(cfg.paths.data, cfg.data.name)
        sequences = data.sequence_data()
        check_batches(cfg, sequences)
        sid_table = None
        if method_class(cfg.method.name, cfg.method.module).uses_sids:
            from distrec.tokenize.sid_table import SIDTable

            sid_table = SIDTable.load(cfg.paths.sids)
        sid_hash = sid_table.content_hash if sid_table is not None else None
        item_counts = data.item_counts()
        catalog = Catalog(data.num_items, sid_table, item_counts)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    identity = model_identity(model_cfg, method_cfg, data.num_items, sid_hash, data.content_hash)
    job = TrainJob(cfg=cfg, make_model=functools.partial(build_model, cfg.model, cfg.method, catalog),
                   num_items=data.num_items, identity=identity, train_dir=str(train_dir))
    info = {"method": method_cfg, "model": model_cfg, "num_items": data.num_items,
            "sids_dir": str(Path(cfg.paths.sids).resolve()) if sid_hash else None,
            "data_dir": str(Path(cfg.paths.data).resolve()), "include_valid": bool(cfg.train.include_valid),
            **_param_counts(job)}
    with timer("train"):  # the first thing that writes into train_dir
        run_on = executor(cfg.engine.num_workers, cfg.cluster, "engine.num_workers")
        latest, checkpoints, summary = run_on.train(job, sequences, Path(cfg.paths.data).resolve() / "sequences")
        summary = export_run(job, latest, checkpoints, summary, info)
    np.save(train_dir / ITEM_COUNTS, item_counts)  # read with the weights (export.TrainedModel)
    write_manifest(train_dir, stage="train", config=cfg, timings=timer.phases,
                   inputs={"data": data.content_hash, "sids": sid_hash}, counts={"steps": summary["steps"]},
                   extra={"summary": summary, **identity})
    print(summary_table(summary))
    weights = [f"weights/{stem}{suffix}" for stem in ("best", "last") for suffix in WEIGHTS_SUFFIXES]
    written = (*weights, "model.json", "checkpoints/", "ray/", "metrics.jsonl", CURVE)
    wrote("train", ", ".join(n for n in written if (train_dir / n).exists()), train_dir)
    return summary


def _param_counts(job) -> dict:
    """Parameter counts and analytic training FLOPs per token (distrec.scaling.counters)."""
    import torch

    from distrec.scaling.counters import count_params, model_flops_per_token, parameters_on_meta

    torch.manual_seed(job.cfg.seed)
    try:  # shapes without memory: a model meant for ZeRO-3 need not fit the driver
        with parameters_on_meta():
            model = job.make_model()
    except Exception as e:  # construction that computes with its own parameters
        log.info("counting parameters on a real build (%s)", e)
        torch.manual_seed(job.cfg.seed)
        model = job.make_model()
    c = count_params(model)
    out = {"params": c.total, "embedding_params": c.embedding, "non_embedding_params": c.non_embedding}
    try:  # informational: a backbone the analytic counter does not know must not stop training
        out["train_flops_per_token"] = model_flops_per_token(model, job.cfg.model)
    except Exception as e:
        log.warning("no FLOPs count for this model (%s)", e)
    return out


def summary_table(s: dict) -> str:
    gib = 1024 ** 3
    metric = s.get("select_metric", "ndcg@10")
    mem = s.get("memory_bytes_per_worker") or []
    rss = s.get("peak_rss_bytes_per_worker") or []
    rows = [
        ("steps", f"{s['steps']} / {s['total_steps']} ({s['steps_per_epoch']} per epoch)"
                  + ("  early-stopped" if s.get("early_stopped") else "")),
        ("batch", f"global {s['global_batch']} = micro {s['micro_batch']} x accum {s['accumulation']} "
                  f"x {s['world_size']} workers"),
        ("params", f"{s.get('model', {}).get('params', 0):,} "
                   f"({s.get('model', {}).get('non_embedding_params', 0):,} non-embedding)"),
        ("backbone train FLOPs/token", f"{s.get('model', {}).get('train_flops_per_token', 0):.3g}"),
        ("final train loss", f"{s['final_loss']:.4f}" if s.get("final_loss") is not None
                             else "- (no step ran in this attempt: resumed at its last step)"),
        (f"best valid {metric}", f"{s.get(f'best_val_{metric}'):.4f} at step {s.get('best_step')}"
                                 if s.get("best_step") is not None else "- (no validation: the last step is the result)"),
        ("samples/s", f"{s['samples_per_s']:.1f}" if s.get("samples_per_s") else "-"),
        ("tokens/s", f"{s['tokens_per_s']:.0f}" if s.get("tokens_per_s") else "-"),
        ("train time", f"{s['train_seconds']:.1f} s" + (f" in {s['attempts']} attempts (resumed or recovered: time and "
                                                       "throughput cover all steps)" if s.get("attempts", 1) > 1 else "")),
        ("peak RSS / worker", ", ".join(f"{b / gib:.2f} GiB" for b in rss)),
        ("params+optim / worker", ", ".join(f"{m['param_optimizer_bytes'] / gib:.3f} GiB" for m in mem)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["train summary"] + [f"  {k:<{width}}  {v}" for k, v in rows])
