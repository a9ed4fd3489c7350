"""A scaling-law sweep: plan the points of a grid, run each as its own `distrec` subprocesses,
keep one result row per point on disk.

Layout of the sweep directory:

    shared/<key>/{data,embed,sids}/   prepared data (+ SID table) shared by points with equal data keys
    points/<id>/                      one point: its `paths.root` (train/, eval/), log.txt,
                                      done.json (the finished row: the restart marker) or failed.json
    results.parquet                   every point's row, rebuilt from the markers as points finish
    curves.parquet                    train-loss curve of every finished point (step, tokens, FLOPs)

A point's job is `distrec train ... && distrec evaluate ...` in fresh processes (isolated, and a
crash costs one point). Nothing here imports Ray: `distrec/parallel/sweep.py` runs the same jobs as Ray
tasks; `run_local` runs them one after another.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distrec.artifacts import write_json
from distrec.errors import ConfigError, StageFailed
from distrec.pipeline import ARTIFACTS, STAGES, stage_named, stages_for

log = logging.getLogger("distrec")

# Keys a point may not set: the sweep owns each point's name and artifact paths.
RESERVED = ("stage", "name", "paths", "sweep", "hydra")
SHARED_PREFIXES = ("data", "embed", "famae", "tokenizer", "seed")  # keys that change the shared artifacts
SHARED_STAGES = [s for s in STAGES if s.shared]  # run once per group of points with the same data args
ERROR_TAIL_LINES = 25


# ---------------------------------------------------------------- planning

def format_value(value) -> str:
    """A value as Hydra override syntax."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return f"'{text}'" if re.search(r"[\s,=\[\]{}:]", text) else text


def overrides_of(mapping: dict) -> list[str]:
    return [f"{k}={format_value(v)}" for k, v in mapping.items()]


def parse_overrides(args: list[str]) -> dict:
    """`key=value` strings back to a dict of typed values (numbers, booleans, null, lists)."""
    import yaml

    out = {}
    for arg in args:
        key, _, text = arg.partition("=")
        try:
            out[key] = yaml.safe_load(text)
        except yaml.YAMLError:
            out[key] = text
    return out


def _top(key: str) -> str:
    return key.lstrip("+~").split(".")[0].split("=")[0]


def expand_grid(grid: dict, points: list[dict]) -> list[dict]:
    """Override sets of the sweep: the explicit `points`, each crossed with the `grid` product."""
    keys = list(grid)
    for key in keys:
        if not isinstance(grid[key], (list, tuple)) or not grid[key]:
            raise ConfigError(f"sweep.grid.{key} must be a non-empty list of values, got {grid[key]!r}")
    product = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    sets = [{**dict(p), **g} for p in (points or [{}]) for g in product]
    for s in sets:
        bad = [k for k in s if _top(k) in RESERVED]
        if bad:
            raise ConfigError(f"sweep point sets {bad}: the sweep owns each point's name, paths and sweep keys; "
                              "remove them from sweep.grid/sweep.points")
    seen, unique = set(), []
    for s in sets:  # the same override set twice is one point
        key = json.dumps(s, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            unique.append(s)
    return unique


def point_id(overrides: dict) -> str:
    """Readable and stable: the last part of each key and its value, plus a short hash of all."""
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:6]
    slug = "_".join(f"{k.split('.')[-1]}-{format_value(v)}" for k, v in overrides.items())
    slug = re.sub(r"[^A-Za-z0-9.\-_]+", "", slug)[:60]
    return f"{slug}-{digest}" if slug else digest


@dataclass
class SharedJob:
    """Prepared data (and SIDs) that several points read: built once, before them."""

    key: str
    dir: str
    args: list[str]  # base + data/embed/tokenizer overrides
    stages: list[str]  # prepare [, embed, tokenize]
    cwd: str  # where relative paths of the config resolve (the sweep's working directory)
    timeout_s: float | None = None
    cpus: float = 1.0

    def path_args(self) -> list[str]:
        return [f"paths.{s.writes}={self.dir}/{ARTIFACTS[s.writes]}" for s in SHARED_STAGES]


@dataclass
class PointJob:
    id: str
    values: dict[str, Any]  # the grid values of this point (columns of the results)
    args: list[str]  # every override passed to its `distrec` commands
    dir: str
    shared: str  # SharedJob key
    cwd: str
    stages: list[str] = field(default_factory=lambda: ["train", "evaluate"])
    timeout_s: float | None = None
    cpus: float = 1.0


def plan(cfg, base_args: list[str], sweep_dir: Path, compose) -> tuple[list[SharedJob], list[PointJob]]:
    """Expand the grid, compose every point's config with `compose(overrides)` (typos fail here,
    before any work), group the points by the shared artifacts they need."""
    from omegaconf import OmegaConf

    from distrec.models.recommender import method_class

    sweep = OmegaConf.to_container(cfg.sweep, resolve=True)
    given = [a for a in base_args if _top(a) not in RESERVED]
    if sweep["grid"] or sweep["points"]:
        base = overrides_of(sweep["base"]) + given
        sets = expand_grid(sweep["grid"], sweep["points"])
    else:  # no grid: the command line is the point (one job of `distrec sweep --multirun ...`)
        base = overrides_of(sweep["base"])
        sets = [parse_overrides(given)]
    shared: dict[str, SharedJob] = {}
    points = []
    for values in sets:
        args = _dedupe(base + overrides_of(values))
        try:
            point_cfg = compose(args)
        except Exception as e:
            raise ConfigError(f"sweep point {values} does not compose: {e}") from None
        data_args = [a for a in args if _top(a) in SHARED_PREFIXES]
        key = hashlib.sha1(" ".join(sorted(data_args)).encode()).hexdigest()[:10]
        uses_sids = method_class(point_cfg.method.name, point_cfg.method.module).uses_sids
        stages = [s.name for s in stages_for(uses_sids) if s.shared]
        job_args = data_args + [a for a in args if _top(a) in ("cluster", "progress")]  # where, not what
        job = shared.setdefault(key, SharedJob(key, str(sweep_dir / "shared" / key), job_args, [], os.getcwd(),
                                               sweep["timeout_s"], float(sweep["cpus_per_point"])))
        job.stages = [s.name for s in SHARED_STAGES if s.name in job.stages or s.name in stages]
        pid = point_id(values)
        point_dir = sweep_dir / "points" / pid
        args = args + [f"name={pid}", f"paths.root={point_dir}", *job.path_args()]
        points.append(PointJob(pid, values, args, str(point_dir), key, os.getcwd(),
                               timeout_s=sweep["timeout_s"], cpus=float(sweep["cpus_per_point"])))
    return list(shared.values()), points


def _dedupe(args: list[str]) -> list[str]:
    """Later overrides of the same key win (Hydra rejects a key given twice)."""
    out: dict[str, str] = {}
    for a in args:
        out[a.split("=", 1)[0]] = a
    return list(out.values())


# ---------------------------------------------------------------- running one job

def _die_with_parent():
    """Subprocesses die with the process that started them (a killed sweep leaves no orphans)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def describe_error(e: BaseException) -> str:
    """A failed stage speaks through its log tail; anything else through its traceback's tail."""
    if isinstance(e, StageFailed):
        return str(e)
    import traceback

    return "\n".join("".join(traceback.format_exception(e)).splitlines()[-ERROR_TAIL_LINES:])


def run_stage(stage: str, args: list[str], log_path: Path, cwd: str, timeout_s=None, cpus: float = 1.0) -> float:
    """Run `distrec <stage> args` in a fresh process, output appended to `log_path`; returns seconds.
    Raises RuntimeError with the log's tail when it fails."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, int(cpus))))
    env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, "-m", "distrec", stage, *_dedupe(["progress=false", *args])]
    start = time.perf_counter()
    with open(log_path, "a") as out:
        out.write(f"\n$ distrec {stage} {' '.join(args)}\n")
        out.flush()
        try:
            rc = subprocess.run(command, cwd=cwd if os.path.isdir(cwd) else None, env=env, stdout=out, stderr=subprocess.STDOUT,
                                timeout=timeout_s, preexec_fn=_die_with_parent).returncode
        except subprocess.TimeoutExpired:
            rc = f"timeout after {timeout_s} s"
    if rc != 0:
        raise StageFailed(f"distrec {stage} failed (exit {rc}):\n{tail(log_path)}")
    return time.perf_counter() - start


def tail(path: Path, lines: int = ERROR_TAIL_LINES) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_shared(job: SharedJob) -> dict:
    """Build the shared artifacts a group of points reads; a stage whose artifact is complete
    (has manifest.json) is skipped, so this is cheap to repeat."""
    directory = Path(job.dir)
    directory.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for stage in job.stages:
        if (directory / ARTIFACTS[stage_named(stage).writes] / "manifest.json").exists():
            continue
        args = job.args + job.path_args() + [f"paths.root={directory}"]
        seconds[stage] = run_stage(stage, args, directory / "log.txt", job.cwd, job.timeout_s, job.cpus)
    return {"key": job.key, "seconds": seconds}


def run_point(job: PointJob) -> dict:
    """Train + evaluate one point and read its result row from the artifacts it wrote."""
    from distrec.scaling.results import collect

    directory = Path(job.dir)
    directory.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for stage in job.stages:
        seconds[stage] = run_stage(stage, job.args, directory / "log.txt", job.cwd, job.timeout_s, job.cpus)
    return collect(directory, job.values, seconds)


# ---------------------------------------------------------------- markers and the results table

def is_done(job: PointJob) -> bool:
    return (Path(job.dir) / "done.json").exists()


def mark_done(job: PointJob, row: dict) -> None:
    row = {"point_id": job.id, **row, "status": "ok", "error": None}
    write_json(Path(job.dir) / "done.json", row)
    (Path(job.dir) / "failed.json").unlink(missing_ok=True)


def recollect(job: PointJob) -> None:
    """Rebuild a finished point's row from its artifacts, keeping its measured stage times."""
    from distrec.scaling.results import collect

    old = json.loads((Path(job.dir) / "done.json").read_text())
    seconds = {stage: old[f"{stage}_s"] for stage in job.stages if old.get(f"{stage}_s") is not None}
    mark_done(job, collect(Path(job.dir), job.values, seconds))


def mark_failed(job: PointJob, error: str, attempts: int) -> None:
    Path(job.dir).mkdir(parents=True, exist_ok=True)
    row = {"point_id": job.id, **job.values, "run_dir": job.dir, "status": "failed",
           "attempts": attempts, "error": error[-4000:]}
    write_json(Path(job.dir) / "failed.json", row)


def gather_rows(sweep_dir: Path, only: set[str] | None = None) -> list[dict]:
    """Every point's marker row; `only` keeps the points of the current grid (an edited grid
    leaves its old points on disk, out of the table)."""
    rows = []
    for marker in sorted(Path(sweep_dir, "points").glob("*/*.json")):
        if marker.name in ("done.json", "failed.json") and (only is None or marker.parent.name in only):
            rows.append(json.loads(marker.read_text()))
    return rows


# ---------------------------------------------------------------- scheduling

class LocalExecutor:
    """Runs each job when it is submitted, in this process's children: no Ray, one at a time."""

    def __init__(self):
        self.finished = {}

    def submit(self, fn, job):
        handle = len(self.finished)
        try:
            self.finished[handle] = (fn(job), None)
        except Exception as e:
            self.finished[handle] = (None, describe_error(e))
        return handle

    def wait(self, handles):
        """(handle, result, error text or None) of one finished job."""
        handle = handles[0]
        result, error = self.finished.pop(handle)
        return handle, result, error


def schedule(shared: list[SharedJob], points: list[PointJob], executor, *, max_concurrent: int = 1,
             retries: int = 0, on_done=None, on_failed=None) -> None:
    """Run the shared jobs the points need, then the points, at most `max_concurrent` at once.
    A failing job is retried `retries` times; a point whose shared data failed fails with it."""
    needed = {p.shared for p in points}
    queue = [("shared", s, 1) for s in shared if s.key in needed]
    waiting, ready, broken = list(points), set(), {}
    running = {}
    while queue or running or waiting:
        for p in list(waiting):
            if p.shared in ready:
                queue.append(("point", p, 1))
                waiting.remove(p)
            elif p.shared in broken:
                on_failed(p, f"shared data/SIDs could not be built:\n{broken[p.shared]}", 0)
                waiting.remove(p)
        while queue and len(running) < max(1, max_concurrent):
            kind, job, attempt = queue.pop(0)
            if kind == "shared":
                handle = executor.submit(run_shared, job)
            else:
                log.info("sweep: point %s (attempt %d)", job.id, attempt)
                handle = executor.submit(run_point, job)
            running[handle] = (kind, job, attempt)
        if not running:
            continue
        handle, result, error = executor.wait(list(running))
        kind, job, attempt = running.pop(handle)
        if error is None:
            if kind == "shared":
                ready.add(job.key)
            else:
                on_done(job, result)
        elif attempt <= retries:
            log.warning("sweep: %s %s failed (attempt %d of %d), retrying", kind,
                        job.id if kind == "point" else job.key, attempt, retries + 1)
            queue.insert(0, (kind, job, attempt + 1))
        elif kind == "shared":
            broken[job.key] = error
        else:
            on_failed(job, error, attempt)

