"""The training loop every worker runs, in this process or under Ray Train.

The loop is the same in both; a *session* supplies what differs: rank and world size, where
checkpoints go and how metrics are reported (`LocalSession` below; `RaySession` in
distrec/parallel/train.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from distrec.data.batches import (SequenceData, TrainSampler, build_train_index, collate_train, eval_batches,
                                  eval_rows, user_sample)
from distrec.errors import ConfigError, DistrecError
from distrec.train import checkpoint as ckpt
from distrec.train.engine import Engine, make_engine, peak_rss_bytes, plan_batches
from distrec.train.logs import MetricsLog, format_duration

ESTIMATE_AFTER = 6  # steps of this attempt after which rank 0 prints how long the run will take

logger = logging.getLogger("distrec.train")


def select_metric(cfg) -> str:
    """`train.select_metric`, checked against what `validate` reports: Recall/NDCG at eval.ks and 10."""
    ks = sorted(set(int(k) for k in cfg.eval.ks) | {10})
    allowed = [f"{name}@{k}" for name in ("ndcg", "recall") for k in ks]
    if cfg.train.select_metric not in allowed:
        raise ConfigError(f"train.select_metric='{cfg.train.select_metric}' is not a validation metric; "
                          f"choose one of {allowed} (K comes from eval.ks)")
    return cfg.train.select_metric


# Lowest allowed value of each numeric train key (null stays allowed where the schema allows it).
# Checked before any work: max_steps=-3 used to crash inside DeepSpeed, max_steps=0 to train 20 epochs.
TRAIN_MINIMUM = {"global_batch_size": 1, "micro_batch_size": 1, "warmup_steps": 0, "max_steps": 1, "epochs": 1,
                 "eval_every": 0, "patience": 0, "checkpoint_every": 0, "log_every": 1, "keep_checkpoints": 0,
                 "val_max_users": 1, "weight_decay": 0, "grad_clip": 0, "time_limit_s": 0, "decay_steps": 0}


def check_train_config(cfg) -> None:
    """Refuse `train`/`engine` values that cannot work, naming the key (before anything is loaded or written)."""
    from distrec.train.engine import check_engine_config

    t = cfg.train
    for key, low in TRAIN_MINIMUM.items():
        if t[key] is not None and t[key] < low:
            raise ConfigError(f"train.{key}={t[key]} must be >= {low}"
                              + (" (or null: train.epochs x steps per epoch)" if key == "max_steps" else ""))
    if not t.lr > 0:
        raise ConfigError(f"train.lr={t.lr} must be > 0")
    if t.schedule == "wsd" and not (0 < t.decay_steps <= (t.max_steps or float("inf")) - t.warmup_steps):
        raise ConfigError(f"train.schedule=wsd decays over the last train.decay_steps steps: set 0 < decay_steps <= "
                          f"max_steps - warmup_steps (got decay_steps={t.decay_steps}, max_steps={t.max_steps}, "
                          f"warmup_steps={t.warmup_steps})")
    if not all(0 <= b < 1 for b in t.betas):
        raise ConfigError(f"train.betas={list(t.betas)} must both be in [0, 1)")
    check_engine_config(cfg.engine)
    select_metric(cfg)
    e = cfg.engine
    # the workers run on this host (in this process, or in the local Ray cluster it starts)
    if e.use_gpu and (e.num_workers == 0 or not cfg.cluster.address) and not torch.cuda.is_available():
        raise ConfigError(f"engine.use_gpu=true but this host has no usable CUDA GPU (torch {torch.__version__}: "
                          "torch.cuda.is_available() is False); set engine.use_gpu=false, or run on a GPU host "
                          "or join a GPU cluster (cluster.address)")


def check_batches(cfg, data: SequenceData) -> None:
    """The batch arithmetic the workers will do, checked on the data in the driver."""
    t = cfg.train
    world = max(1, int(cfg.engine.num_workers))
    plan = plan_batches(t.global_batch_size, world, t.micro_batch_size)
    TrainSampler(build_train_index(data, cfg.model.max_history, t.include_valid), plan.global_batch,
                 plan.micro_batch, world, 0, cfg.seed, t.loss_weighting, t.group_by_length)


@dataclass
class TrainJob:
    """Everything a worker needs (picklable: it travels to Ray workers)."""

    cfg: Any  # the composed config (DictConfig)
    make_model: Callable[[], torch.nn.Module]
    num_items: int
    identity: dict  # model/SID/data hashes (distrec.train.checkpoint.model_identity)
    train_dir: str
    extra: dict = field(default_factory=dict)


class LocalSession:
    """One process, checkpoints in `train/checkpoints/step-N/`."""

    rank, world_size = 0, 1
    progress_bar = True  # a tqdm bar on rank 0 (with `progress`)

    def __init__(self, train_dir: str | Path, keep: int, device: torch.device | None = None):
        self.root = Path(train_dir) / "checkpoints"
        self.keep = keep
        self.device = device or torch.device("cpu")

    def latest_checkpoint(self) -> Path | None:
        return ckpt.latest_checkpoint(self.root)

    def save(self, step: int, write: Callable[[Path], None], metrics: dict, protect: set[int]) -> None:
        tmp = ckpt.staging_dir(self.root, step)
        write(tmp)
        ckpt.commit(self.root, step, tmp)
        ckpt.prune(self.root, self.keep, protect)

    def report(self, metrics: dict) -> None:
        pass


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj) -> list:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def on_every_rank(fn: Callable[[], Any]) -> Any:
    """fn(); a DistrecError on any rank is raised on every rank (collective). A rank going on alone
    would wait forever in the next collective for the rank that stopped."""
    try:
        out, error = fn(), None
    except DistrecError as e:
        out, error = None, e
    errors = [e for e in all_gather_objects(error) if e is not None]
    if errors:
        raise errors[0]
    return out


def validate(engine: Engine, job: TrainJob, data: SequenceData, rank: int, world: int) -> dict:
    """Validation metrics over all ranks' users (each rank evaluates a slice; sums are all-reduced)."""
    from distrec.eval.evaluator import evaluate

    cfg = job.cfg
    ks = sorted(set(int(k) for k in cfg.eval.ks) | {10})
    batches = eval_batches(data, "valid", cfg.model.max_history, cfg.eval.batch_size, rank, world,
                           cfg.train.val_max_users, cfg.eval.sample_seed, device=engine.device,
                           same_sizes=engine.partitioned)
    model = engine.evaluation_model()  # under ZeRO-3 partitioned: every rank makes the same calls
    # the test's protocol (eval.filter_history): the best checkpoint is chosen on what is reported
    result = evaluate(model, batches, ks=ks, num_items=job.num_items, filter_history=cfg.eval.filter_history,
                      precision=cfg.engine.precision, beam_rows=cfg.eval.beam_rows)
    out = {}
    for prefix, acc in (("", result.metrics), ("unfiltered_", result.unfiltered)):
        if acc is None:
            continue
        acc.load(all_reduce(acc.state().to(engine.device)).cpu())
        out.update({prefix + k: v for k, v in acc.result().items()
                    if k.startswith(("ndcg", "recall", "mrr", "seen")) or (k == "users" and not prefix)})
    sample = user_sample(data, "valid", cfg.train.val_max_users, cfg.eval.sample_seed)
    if sample is not None:  # a seeded sample of the validation users, not all of them
        out.update(users_of=sample["of"], sample_seed=sample["seed"])
    return out


def code_usage(engine: Engine) -> dict:
    """The model's code-usage diagnostic (distinct SID paths / codes per level; few = collapse), for
    models that have one. Not under ZeRO-3: its partitioned weights are only whole inside the engine."""
    if not hasattr(engine.model, "code_usage") or engine.partitioned:
        return {}
    return engine.model.code_usage()


def run_protocol(cfg, metric: str) -> tuple[dict, dict]:
    """What this run's validation numbers and training targets mean (a resumed run must mean the same),
    and what a checkpoint from before the protocol was kept meant: the defaults then, and
    val_max_users took the first N users."""
    n = cfg.train.val_max_users
    protocol = {"include_valid": bool(cfg.train.include_valid), "select_metric": metric,
                "filter_history": bool(cfg.eval.filter_history),
                "validation_users": "all" if n is None else f"{n} sampled, seed {cfg.eval.sample_seed}"}
    legacy = {"include_valid": False, "select_metric": "ndcg@10", "filter_history": False,
              "validation_users": "all" if n is None else f"first {n}"}
    return protocol, legacy


def _resumable(saved: dict, protocol: dict, legacy: dict, where) -> dict:
    """The restored state under this run's protocol. Training targets must not change mid-run; a new
    selection metric, history filtering or set of validation users restarts the best-checkpoint
    tracking (old values are not comparable). A key the checkpoint predates means its `legacy` value."""
    before = {k: saved.get(k, legacy[k]) for k in protocol}
    if before["include_valid"] != protocol["include_valid"]:
        raise ConfigError(f"{where}: checkpoint was trained with train.include_valid={before['include_valid']}"
                          f"; resume with the same value, or use another `name` for a run with "
                          f"include_valid={protocol['include_valid']}")
    changed = [k for k in protocol if before[k] != protocol[k]]
    if changed:
        logger.warning("%s: %s changed since this checkpoint; best-checkpoint tracking starts again", where,
                       ", ".join(f"{k} {before[k]} -> {protocol[k]}" for k in changed))
        saved = {**saved, "best_metric": None, "best_step": None, "bad_evals": 0}
    return {**saved, **protocol}


def train_loop(job: TrainJob, session, data: SequenceData) -> dict:
    """Train until max steps or early stopping; returns the run summary (on every rank)."""
    cfg, t = job.cfg, job.cfg.train
    metric = select_metric(cfg)
    rank, world = session.rank, session.world_size
    plan = plan_batches(t.global_batch_size, world, t.micro_batch_size)
    index = build_train_index(data, cfg.model.max_history, t.include_valid)
    sampler = TrainSampler(index, plan.global_batch, plan.micro_batch, world, rank, cfg.seed, t.loss_weighting,
                           t.group_by_length)
    total_steps = int(t.max_steps or t.epochs * sampler.steps_per_epoch)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    engine = make_engine(job.make_model, t, cfg.engine, plan, total_steps, session.device, rank)
    torch.manual_seed(cfg.seed * 1000 + rank + 1)  # dropout draws differ per rank, reproducibly

    # what the validation numbers and the training targets mean: a resumed run must mean the same
    protocol, legacy = run_protocol(cfg, metric)
    # train_seconds (validation excluded), samples_seen, tokens_seen, attempts: summed over every
    # attempt of the run (they travel in the checkpoints): the x axis of equal-wall-clock comparisons,
    # and a resumed or recovered run's summary covers all of its steps
    state = {"step": 0, "best_metric": None, "best_step": None, "bad_evals": 0, "done": False, "valid": None,
             "summary": None, "stopped_by": None, "train_seconds": 0.0, "samples_seen": 0, "tokens_seen": 0,
             "attempts": 0,
             **protocol}
    latest = session.latest_checkpoint()
    if latest is not None:  # each rank reads its own files: a corrupt one must stop every rank
        state.update(on_every_rank(
            lambda: _resumable(ckpt.restore_checkpoint(latest, engine, job.identity), protocol, legacy, latest)))
        stopped_by = (state["summary"] or {}).get("stopped_by")
        early = (state["summary"] or {}).get("early_stopped") and stopped_by != "time_limit_s"
        if state["done"] and state["step"] < total_steps and not early:
            # a finished run given more steps, or one stopped by its time limit, trains on
            state.update(done=False, summary=None, stopped_by=None)
    state["attempts"] += 1
    has_valid = not t.include_valid and len(eval_rows(data, "valid")[0]) > 0
    eval_every = int(t.eval_every or sampler.steps_per_epoch)
    ckpt_every = int(t.checkpoint_every or eval_every)
    log = MetricsLog(job.train_dir, enabled=rank == 0, resume_step=state["step"], curve_metric=metric)
    bar = tqdm(total=total_steps, initial=state["step"], desc="train", unit="step",
               disable=not (cfg.progress and rank == 0 and session.progress_bar), dynamic_ncols=True)

    def save(step: int) -> None:
        info = {**state, **job.identity, "engine_kind": engine.kind, "zero_stage": engine.stage,
                "world_size": world, "total_steps": total_steps, "epoch": step / sampler.steps_per_epoch}
        session.save(step, lambda d: ckpt.write_checkpoint(d, engine, info),
                     {"step": step, **(state["valid"] or {})},
                     protect={state["best_step"]} if state["best_step"] is not None else set())

    def micro_batches(step: int) -> list:
        """This worker's micro-batches of `step`: cut on the engine's device (fast), else on the host."""
        if engine.kind == "fast":
            chosen = sampler.device_micro_batches(step, engine.device)
        else:
            chosen = sampler.micro_batches(step)
        return [(collate_train(data, index, ids, cfg.model.max_history), w) for ids, w in chosen]

    last_loss, first_step = None, state["step"]  # None: no step ran in this attempt (resumed at the end)
    # the loss's parts the model reports (a class attribute: the same list, so the same tensor, on every rank)
    terms = list(getattr(engine.model, "loss_terms", ()))
    clock = Clock(first_step, total_steps)
    while state["step"] < total_steps and not state["done"]:
        step = state["step"]
        start = time.perf_counter()
        micro = micro_batches(step)
        sums = engine.step(micro)
        n_tokens = sum(int((b["input_ids"] > 0).sum()) for b, _ in micro)
        reduced = all_reduce(torch.tensor([sums.get("loss", 0.0), float(n_tokens), *(sums.get(k, 0.0) for k in terms)],
                                          dtype=torch.float64))
        elapsed = time.perf_counter() - start
        state["train_seconds"] += elapsed
        state["samples_seen"] += plan.global_batch
        state["tokens_seen"] += int(reduced[1])
        last_loss = float(reduced[0])
        state["step"] = step = step + 1
        bar.update(1)
        clock.tick(step)
        if rank == 0 and step == first_step + ESTIMATE_AFTER < total_steps:
            tqdm.write(clock.estimate(step, sampler.steps_per_epoch, eval_every if has_valid else 0))
        if step % t.log_every == 0 or step == total_steps:
            row = {"step": step, "split": "train", "epoch": round(step / sampler.steps_per_epoch, 4),
                   "loss": last_loss, "lr": engine.lr, "samples_per_s": plan.global_batch / elapsed,
                   "tokens_per_s": float(reduced[1]) / elapsed, "train_seconds": round(state["train_seconds"], 2),
                   **{k: float(v) for k, v in zip(terms, reduced[2:]) if k in sums}}
            log.log(row)
            bar.set_postfix(loss=f"{last_loss:.4f}", samples_s=f"{row['samples_per_s']:.0f}")
        # train.time_limit_s: the attempt's time is up (the same on every rank: rank 0's clock decides)
        out_of_time = t.time_limit_s is not None and bool(all_reduce(torch.tensor(
            [float(time.perf_counter() - clock.start >= t.time_limit_s and rank == 0)]))[0])
        evaluate_now = has_valid and (step % eval_every == 0 or step == total_steps or out_of_time)
        improved = False
        if evaluate_now:
            metrics = validate(engine, job, data, rank, world)
            state["valid"] = metrics
            value = metrics[metric]
            improved = state["best_metric"] is None or value > state["best_metric"]
            if improved:
                state.update(best_metric=value, best_step=step, bad_evals=0)
            else:
                state["bad_evals"] += 1
            if t.patience > 0 and state["bad_evals"] >= t.patience:
                state["done"] = True  # early stopping
                state["stopped_by"] = "patience"
            usage = code_usage(engine) if rank == 0 else {}
            log.log({"step": step, "split": "valid", **metrics, **usage, "best_step": state["best_step"],
                     "train_seconds": round(state["train_seconds"], 2)})
            if rank == 0:
                tqdm.write(validation_line(step, total_steps, metrics, metric, state, clock.eta(step)))
            session.report({"step": step, "loss": last_loss, **{f"val_{k}": v for k, v in metrics.items()}})
        if out_of_time and not state["done"]:
            state.update(done=True, stopped_by="time_limit_s")
        if step == total_steps:
            state["done"] = True
        if state["done"]:  # the summary travels in the final checkpoint's state.json
            state["summary"] = _summary(state, metric, engine, sampler, plan, total_steps, len(index), last_loss)
        if improved or state["done"] or step % ckpt_every == 0:
            save(step)
    if state["summary"] is None:  # resumed at (or past) the last step: nothing left to train
        state["summary"] = _summary(state, metric, engine, sampler, plan, total_steps, len(index), last_loss)
    bar.close()
    log.close()
    return state["summary"]


class Clock:
    """Wall time of this attempt: the estimate printed after its first steps (their speed, without the
    first step's warm-up) and the ETA of each validation line (validations and checkpoints included)."""

    def __init__(self, first_step: int, total_steps: int):
        self.first_step, self.total_steps = first_step, total_steps
        self.start = time.perf_counter()
        self.warm = None  # when the attempt's first step ended

    def tick(self, step: int) -> None:
        if step == self.first_step + 1:
            self.warm = time.perf_counter()

    def eta(self, step: int) -> float:
        done = step - self.first_step
        return (time.perf_counter() - self.start) / max(done, 1) * (self.total_steps - step)

    def estimate(self, step: int, steps_per_epoch: int, eval_every: int) -> str:
        per_step = (time.perf_counter() - self.warm) / max(step - self.first_step - 1, 1)
        todo = self.total_steps - self.first_step
        what = f"{todo} steps" if not self.first_step else f"{todo} steps left of {self.total_steps}"
        line = (f"train: {what} ({todo / steps_per_epoch:.3g} epochs), about {format_duration(per_step * todo)} "
                f"at {per_step:.2f} s/step")
        return line + (f" plus a validation every {eval_every} steps" if eval_every else "")


def validation_line(step: int, total_steps: int, metrics: dict, metric: str, state: dict, eta: float) -> str:
    """One line per validation: the selection metric (and Recall/NDCG@10), the best so far, the ETA."""
    shown = dict.fromkeys([metric, "ndcg@10", "recall@10"])
    values = "  ".join(f"{k} {metrics[k]:.4f}" for k in shown if k in metrics)
    best = f"best {metric} {state['best_metric']:.4f} at step {state['best_step']}"
    return f"valid step {step}/{total_steps}: {values}  |  {best}  |  ETA {format_duration(eta)}"


def _summary(state, metric, engine, sampler, plan, total_steps, train_samples, last_loss):
    """Run summary (collective: every rank calls it). Time and throughput cover every attempt's steps
    (steps redone after a failure are counted once); memory is this attempt's."""
    rss = all_gather_objects(peak_rss_bytes())
    memory = all_gather_objects(engine.memory_bytes())
    train_time, samples, tokens = state["train_seconds"], state["samples_seen"], state["tokens_seen"]
    return {
        "steps": state["step"], "total_steps": total_steps, "steps_per_epoch": sampler.steps_per_epoch,
        "final_loss": last_loss, "best_step": state["best_step"], "select_metric": metric,
        f"best_val_{metric}": state["best_metric"],
        "valid": state["valid"], "early_stopped": state["step"] < total_steps,
        "stopped_by": state.get("stopped_by"),  # patience | time_limit_s | None (ran all steps)
        "global_batch": plan.global_batch, "micro_batch": plan.micro_batch, "accumulation": plan.accumulation,
        "world_size": plan.world_size, "train_seconds": train_time, "attempts": state["attempts"],
        "samples_per_s": samples / train_time if train_time else None,
        "tokens_per_s": tokens / train_time if train_time else None,
        "peak_rss_bytes_per_worker": rss, "memory_bytes_per_worker": memory, "train_samples": train_samples,
        "torch_threads": torch.get_num_threads(),
    }
