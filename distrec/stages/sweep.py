"""`distrec sweep`: run a grid of train + evaluate jobs, collect results.parquet, fit scaling laws.

    distrec sweep sweep=backbone_size                 # a preset (configs/sweep/)
    distrec sweep sweep=catalog_size train.max_steps=20 sweep.max_concurrent=2

Overrides given on the command line apply to every point. Re-running the same command skips the
points that finished (their done.json) and retries the ones that failed. With an empty grid the
command line itself is the one point, so Hydra's `--multirun` runs a sweep too (docs/scaling.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm

from distrec.artifacts import write_json, wrote
from distrec.config import compose
from distrec.scaling import sweep as sw
from distrec.scaling.report import analyze, write_tables

log = logging.getLogger("distrec")


def command_line_overrides() -> list[str]:
    """The overrides this command was given (empty when composed outside the CLI)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not running under @hydra.main
        return []


def run(cfg, base_args: list[str] | None = None) -> dict:
    s = cfg.sweep
    sweep_dir = Path(s.out_dir).resolve()
    base_args = command_line_overrides() if base_args is None else base_args
    shared, points = sw.plan(cfg, base_args, sweep_dir, compose)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json(sweep_dir / "sweep.json", {"sweep": OmegaConf.to_container(s, resolve=True),
                                          "command_line": base_args,
                                          "points": {p.id: {"values": p.values, "args": p.args} for p in points}})
    done = [p for p in points if sw.is_done(p)]
    failed_before = [p for p in points if not sw.is_done(p) and (Path(p.dir) / "failed.json").exists()]
    todo = [p for p in points if not sw.is_done(p) and (s.rerun_failed or p not in failed_before)]
    # the table covers this grid's points; without a grid (one --multirun job) every point on disk
    only = {p.id for p in points} if (s.grid or s.points) else None
    log.info("sweep %s: %d points, %d finished before (skipped), %d to run", sweep_dir, len(points), len(done), len(todo))

    bar = tqdm(total=len(todo), desc="sweep", unit="point", disable=not cfg.progress, dynamic_ncols=True)

    def on_done(job, row):
        bar.update(1)
        sw.mark_done(job, row)
        write_tables(sweep_dir, only)  # results.parquet grows as points finish
        log.info("sweep: point %s finished (%s)", job.id, _summary(row))

    def on_failed(job, error, attempts):
        bar.update(1)
        sw.mark_failed(job, error, attempts)
        write_tables(sweep_dir, only)
        log.error("sweep: point %s FAILED after %d attempts:\n%s", job.id, attempts, error)

    if s.recollect:
        for job in done:
            sw.recollect(job)
    if todo:
        if s.backend == "ray" and len(todo) > 1:
            from distrec.parallel.sweep import RayExecutor

            executor = RayExecutor(cfg.cluster)
        else:
            executor = sw.LocalExecutor()
        sw.schedule(shared, todo, executor, max_concurrent=s.max_concurrent, retries=s.retries,
                    on_done=on_done, on_failed=on_failed)
    bar.close()

    grid_keys = list(dict.fromkeys(k for p in points for k in p.values))
    result = analyze(sweep_dir, grid_keys, metric=s.metric, loss_key=s.loss_key, only=only) if s.fit else \
        {"rows": write_tables(sweep_dir, only)}
    rows = result["rows"]
    failed = [r for r in rows if r.get("status") != "ok"]
    for r in failed:
        print(f"  FAILED {r['point_id']}: {str(r.get('error')).splitlines()[0] if r.get('error') else ''}")
    wrote("sweep", f"{len(rows) - len(failed)} points finished, {len(failed)} failed: results.parquet"
          + (", report.md, plots" if s.fit else ""), sweep_dir)
    return {"sweep_dir": str(sweep_dir), "rows": rows, "skipped": [p.id for p in done]}


def _summary(row: dict) -> str:
    keys = ("params_non_embedding", "train_loss", "test_ndcg@10", "wall_s")
    return ", ".join(f"{k}={row[k]:.4g}" if isinstance(row.get(k), float) else f"{k}={row.get(k)}" for k in keys)
