"""The engine: one optimisation step over a global batch, with plain torch or DeepSpeed ZeRO.

`make_engine` picks the class from `engine.kind`: `PlainEngine` for `plain` and `fast`, `DeepSpeedEngine`
for `deepspeed`. This is the only module that imports DeepSpeed. Both share, in their base `Engine`, the
optimizer (torch AdamW or Adam: no JIT-compiled DeepSpeed optimizers), the LambdaLR schedule, bf16
autocast and the loss weighting, so `engine.kind=plain` and a 1-worker DeepSpeed run give the same
losses. `engine.kind=fast` is plain torch for one device (a GPU): the loop cuts its batches on the
device, the optimizer is fused on CUDA, fp32 matmuls may use TF32 there, and `engine.compile` wraps the
model's forward in `torch.compile` (docs/training.md, "The fast path").

Loss weighting: each micro-batch's loss is multiplied by its share `w` of the global batch (its
labelled positions / those of the global batch). Plain sums the weighted micro-batch gradients;
DeepSpeed divides by the accumulation steps and averages over workers, so it gets the loss
scaled by `w * accum * world` to end up with the same gradient: the gradient of the mean loss over
the whole global batch, whatever the number of workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from distrec.errors import ConfigError, DataError
from distrec.train.checkpoint import CORRUPT_CHECKPOINT, load_tensors
from distrec.train.config import Optimizer
from distrec.train.schedules import lr_multiplier
from distrec.train.weights import as_saved, saved_dtype, write_state_dict, write_streaming

REDUCE_BUCKET_ELEMENTS = 25_000_000  # ZeRO-3 gradient reduction bucket: 100 MB of fp32 per rank
# torch optimizers (not DeepSpeed's JIT-compiled ones): AdamW decays weights apart from the gradient;
# Adam adds weight_decay * w to the gradient (L2), as torch.optim.Adam does in the released IntRR.
OPTIMIZERS = {Optimizer.adamw: torch.optim.AdamW, Optimizer.adam: torch.optim.Adam}
# glibc serves an allocation below its mmap threshold from its heaps, and the threshold grows with the
# largest block freed (to 32 MB): ZeRO-3's per-layer gathers and gradients then stay in the heaps once
# freed, and a rank's RSS keeps ~2.5 GB more than it holds (200m, 2 workers: 6.5 vs 3.8 GiB peak,
# docs/benchmarks.md). A fixed 4 MB threshold returns every large tensor to the OS when freed.
MMAP_THRESHOLD_BYTES = 4 << 20
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def release_large_blocks_to_os() -> bool:
    """Fix glibc's mmap threshold for this process (see MMAP_THRESHOLD_BYTES); False where the C
    library is not glibc (nothing to do)."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


@dataclass
class BatchPlan:
    """Batch arithmetic: global = micro x accumulation x workers."""

    global_batch: int
    micro_batch: int
    accumulation: int
    world_size: int


def plan_batches(global_batch: int, world_size: int, micro_batch: int | None = None) -> BatchPlan:
    """Derive micro-batch and accumulation from the global batch and the world size."""
    if global_batch < world_size or global_batch % world_size:
        raise ConfigError(f"train.global_batch_size={global_batch} must be a multiple of the "
                          f"{world_size} workers (engine.num_workers)")
    per_worker = global_batch // world_size
    micro = micro_batch or per_worker
    if per_worker % micro:
        raise ConfigError(f"train.micro_batch_size={micro} must divide the per-worker batch {per_worker} "
                          f"(train.global_batch_size={global_batch} / {world_size} workers)")
    return BatchPlan(global_batch, micro, per_worker // micro, world_size)


def check_engine_config(engine_cfg) -> None:
    if engine_cfg.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"engine.zero_stage={engine_cfg.zero_stage} must be 0, 1, 2 or 3")
    if engine_cfg.kind in ("plain", "fast") and engine_cfg.num_workers > 0:
        raise ConfigError(f"engine.kind={engine_cfg.kind} runs in one process: set engine.num_workers=0 "
                          f"(or use engine={'plain' if engine_cfg.kind == 'plain' else 'gpu'})")
    if engine_cfg.kind == "fast" and (engine_cfg.zero_stage or engine_cfg.offload_optimizer
                                      or engine_cfg.offload_params):
        raise ConfigError("engine.kind=fast is one device without DeepSpeed: set engine.zero_stage=0 and no offload")
    if engine_cfg.compile and engine_cfg.kind != "fast":
        raise ConfigError("engine.compile=true needs engine.kind=fast (engine=gpu)")
    if engine_cfg.offload_params and engine_cfg.zero_stage != 3:
        raise ConfigError("engine.offload_params needs engine.zero_stage=3")
    if engine_cfg.offload_optimizer and engine_cfg.zero_stage == 0:
        raise ConfigError("engine.offload_optimizer needs engine.zero_stage >= 1")
    if engine_cfg.num_workers < 0:
        raise ConfigError(f"engine.num_workers={engine_cfg.num_workers} must be >= 0 (0 = this process, no Ray)")
    if not engine_cfg.cpus_per_worker > 0:
        raise ConfigError(f"engine.cpus_per_worker={engine_cfg.cpus_per_worker} must be > 0")
    if engine_cfg.max_failures < -1:
        raise ConfigError(f"engine.max_failures={engine_cfg.max_failures} must be >= 0 (or -1: retry forever)")


def init_single_process(backend: str = "gloo") -> None:
    """A one-process torch.distributed group on loopback, for DeepSpeed without Ray or a launcher.

    The rendezvous address goes in `init_method`, not into os.environ: a MASTER_PORT left there is
    inherited by every subprocess this process starts, and a `distrec` run among them would then fail to
    bind it (EADDRINUSE) while this group holds it. MASTER_ADDR / MASTER_PORT set by the user are used."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)  # DeepSpeed asserts LOCAL_RANK
    address = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = os.environ.get("MASTER_PORT")
    if not port:
        with socket.socket() as s:
            s.bind((address, 0))
            port = s.getsockname()[1]
    dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=0, world_size=1)


def _param_groups(model: nn.Module, weight_decay: float):
    """Weight decay on matrices only (not on biases and norms). A parameter partitioned at construction
    (ZeRO-3) holds an empty tensor: its shape is `ds_shape`."""
    def matrix(p) -> bool:
        return len(getattr(p, "ds_shape", p.shape)) >= 2

    decay = [p for p in model.parameters() if p.requires_grad and matrix(p)]
    other = [p for p in model.parameters() if p.requires_grad and not matrix(p)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]


def import_deepspeed():
    """`import deepspeed`, without its start-up noise and without probing or building its ops.

    - DS_ACCELERATOR=cpu where torch sees no GPU: what DeepSpeed would pick, minus its warning.
    - distrec runs none of DeepSpeed's JIT-compiled ops (torch optimizers, gloo/nccl collectives).
      Its op table (`deepspeed.ops.__compatible_ops__`) is computed on first use by compiling test
      programs for every op (the `gcc ... -laio` lines) and querying GPUs; its only reader at run
      time is the comm backend, which would JIT-build the shared-memory all-reduce op on CPU (~50 s
      of both cores, and a process killed during the build leaves a lock in ~/.cache/torch_extensions
      that makes every later start wait forever). An empty table: no op is probed, none is built.
    - ZeRO's partition all-gather and reduce-scatter call torch APIs that torch now marks deprecated.
    """
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    deepspeed.ops.__compatible_ops__ = {}
    warnings.filterwarnings("ignore", message=r".*torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` "
                            "is deprecated", category=FutureWarning)
    return deepspeed


def weights_only_checkpoint_engine(ds):
    """DeepSpeed's torch checkpoint engine, loading through `load_tensors` (its own unpickles fully).

    Besides tensors and plain data, DeepSpeed's ZeRO-0..3 files (with or without offload) pickle
    only these three classes, allowed by name; anything else in a checkpoint is refused."""
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    class WeightsOnly(TorchCheckpointEngine):
        def load(self, path, map_location=None):
            return load_tensors(path, "DeepSpeed checkpoint file", CORRUPT_CHECKPOINT, map_location,
                                allow=(LossScaler, ZeroStageEnum, fragment_address))

    if type(ds.checkpoint_engine) is not TorchCheckpointEngine:  # a DeepSpeed "checkpoint" config section
        raise ConfigError(f"DeepSpeed chose {type(ds.checkpoint_engine).__name__}; distrec loads checkpoints "
                          "with TorchCheckpointEngine only")
    return WeightsOnly(ds._config)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class Engine:
    """Owns the model, optimizer and schedule; `step` runs one global-batch update. The interface the
    loop trains through: `make_engine` builds a `PlainEngine` or a `DeepSpeedEngine` behind it.

    `model` is the model, or a function that builds it: the engine then builds it where it belongs.
    Each kind sets `model` (the module: its state_dict, what is evaluated), `forward` (what `step` calls)
    and, through `_make_optimizer`, `optimizer` and `scheduler`."""

    partitioned = False  # ZeRO-3: no rank holds the whole model (a DeepSpeedEngine at stage 3)

    def __init__(self, train_cfg, engine_cfg, plan: BatchPlan, device: torch.device, rank: int):
        self.kind, self.stage = engine_cfg.kind, int(engine_cfg.zero_stage)
        self.precision, self.device, self.rank, self.plan = engine_cfg.precision, device, rank, plan
        self.world_size = plan.world_size
        self.grad_clip = float(train_cfg.grad_clip or 0.0)

    def _make_optimizer(self, model: nn.Module, train_cfg, total_steps: int, fused: bool = False) -> None:
        """The optimizer and LambdaLR schedule every kind shares; `fused`: one kernel for all parameters."""
        self.optimizer = OPTIMIZERS[Optimizer(train_cfg.optimizer)](_param_groups(model, train_cfg.weight_decay),
                                                               lr=train_cfg.lr, betas=tuple(train_cfg.betas),
                                                               foreach=False, fused=fused or None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_multiplier(train_cfg.schedule, train_cfg.warmup_steps, total_steps,
                                        decay_steps=train_cfg.decay_steps))
        # each group's settings as the config makes them (the schedule set initial_lr): a resumed run
        # goes back to these (`load`)
        self.group_settings = [{key: group[key] for key in ("initial_lr", "betas", "weight_decay")}
                               for group in self.optimizer.param_groups]

    # ---------------------------------------------------------------- training

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def step(self, micro_batches: list[tuple[dict, float]]) -> dict:
        """One optimizer step over this worker's micro-batches [(batch, weight)].

        Returns this worker's share of the global loss (sum of weight x loss; all-reduce to get the
        global-batch loss) and any other scalars the model reported, weighted the same way.
        """
        self.forward.train()  # the DeepSpeed engine or the model (a compiled forward passes it on)
        sums: dict[str, float] = {}
        for batch, weight in micro_batches:
            batch = self.to_device(batch)
            with self.autocast():
                out = self.forward(batch)
            self._backward(out["loss"], weight)
            for key, value in out.items():  # weight: a float, or a tensor on the device (fast)
                if torch.is_tensor(value) and value.numel() == 1:
                    sums[key] = sums.get(key, 0.0) + float(value.detach()) * float(weight)
        self._update()
        return sums

    def _backward(self, loss: torch.Tensor, weight) -> None:
        """Accumulate the gradient of one micro-batch's loss, `weight` its share of the global batch."""
        raise NotImplementedError

    def _update(self) -> None:
        """After the micro-batches: apply the update (DeepSpeed's `step` in `_backward` already has)."""

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ---------------------------------------------------------------- weights and memory

    def evaluation_model(self):
        """What validation evaluates: the model."""
        return self.model

    def write_weights(self, path: Path) -> None:
        """Rank 0 writes the model's consolidated weights to `path` (a safetensors file,
        distrec.train.weights), one tensor at a time; every rank must call it."""
        if self.rank == 0:
            write_state_dict(path, self.model.state_dict(keep_vars=True))

    def memory_bytes(self) -> dict[str, int]:
        """Bytes this rank holds for parameters and optimizer state (master weights + Adam moments;
        partitions under ZeRO; a tensor shared by both is counted once)."""
        seen: set[int] = set()

        def size(t) -> int:
            if t is None or not torch.is_tensor(t) or t.data_ptr() in seen or t.numel() == 0:
                return 0
            seen.add(t.data_ptr())
            return t.numel() * t.element_size()

        params = sum(size(getattr(p, "ds_tensor", None) if hasattr(p, "ds_tensor") else p.data)
                     for p in self.model.parameters())
        optimizer = sum(size(p) for g in self.optimizer.param_groups for p in g["params"])
        optimizer += sum(size(v) for state in self.optimizer.state.values() for v in state.values())
        return {"param_bytes": params, "optimizer_bytes": optimizer, "param_optimizer_bytes": params + optimizer}

    # ---------------------------------------------------------------- checkpoints

    def save(self, directory: Path) -> None:
        """Write this rank's part of the engine state (all ranks call it)."""
        raise NotImplementedError

    def load(self, directory: Path) -> None:
        """Read back what `save` wrote; a file that cannot be loaded is a DataError naming it."""
        directory = Path(directory)
        try:
            self._load(directory)
        except DataError:
            raise  # names the file
        except Exception as e:  # truncated/garbled files raise from torch/pickle/zipfile alike
            raise DataError(f"checkpoint cannot be loaded ({type(e).__name__}: {e})", directory,
                            hint=CORRUPT_CHECKPOINT) from None
        self._apply_hyperparameters()

    def _apply_hyperparameters(self) -> None:
        """A checkpoint brings back the optimizer's moments and step count, and with them the peak LR, betas
        and weight decay it was written with; the resumed run (a branch, say) follows its config's instead,
        from the resumed step on (the LR the schedule gives that step, as `get_last_lr` reports it)."""
        groups, schedule = self.optimizer.param_groups, self.scheduler
        for group, settings in zip(groups, self.group_settings):
            group.update(settings)
        schedule.base_lrs = [group["initial_lr"] for group in groups]
        schedule._last_lr = [lr * f(schedule.last_epoch) for lr, f in zip(schedule.base_lrs, schedule.lr_lambdas)]
        for group, lr in zip(groups, schedule._last_lr):
            group["lr"] = lr

    def _load(self, directory: Path) -> None:
        raise NotImplementedError


class PlainEngine(Engine):
    """Plain torch in one process: `engine.kind=plain`, or `fast` (one device, fused optimizer on CUDA,
    TF32 for fp32 matmuls there, `engine.compile`). Gradients add up over the micro-batches and the
    optimizer steps once per global batch; its checkpoint is one file, `plain.pt`."""

    def __init__(self, model: nn.Module | Callable[[], nn.Module], train_cfg, engine_cfg, plan: BatchPlan,
                 total_steps: int, device: torch.device, rank: int = 0):
        super().__init__(train_cfg, engine_cfg, plan, device, rank)
        if not isinstance(model, nn.Module):
            model = model()
        self.model = model.to(device)
        fast_cuda = self.kind == "fast" and device.type == "cuda"
        self._make_optimizer(self.model, train_cfg, total_steps, fused=fast_cuda)  # fused where it pays
        self.forward = self.model  # what `step` calls: the model, or its compiled forward (engine.compile)
        if fast_cuda and self.precision == "fp32":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        if engine_cfg.compile:  # the module itself stays: its state_dict keys do not change
            self.forward = torch.compile(self.model)

    def _backward(self, loss: torch.Tensor, weight) -> None:
        (loss.float() * weight).backward()

    def _update(self) -> None:
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def save(self, directory: Path) -> None:
        if self.rank == 0:
            torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict()}, Path(directory) / "plain.pt")

    def _load(self, directory: Path) -> None:
        state = load_tensors(directory / "plain.pt", "engine state", CORRUPT_CHECKPOINT, self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


class DeepSpeedEngine(Engine):
    """The model inside a DeepSpeed engine (ZeRO stage 0-3, optional CPU offload), in the torch.distributed
    group of the workers (or a one-process one, `init_single_process`); its checkpoints are DeepSpeed's,
    tag "engine", loaded with `weights_only_checkpoint_engine`.

    Under ZeRO-3 a model given as a function is built inside `deepspeed.zero.Init`, so each module's
    parameters are partitioned as soon as the module is built and no rank ever holds the whole model
    (docs/training.md)."""

    def __init__(self, model: nn.Module | Callable[[], nn.Module], train_cfg, engine_cfg, plan: BatchPlan,
                 total_steps: int, device: torch.device, rank: int = 0):
        super().__init__(train_cfg, engine_cfg, plan, device, rank)
        self.partitioned = self.stage == 3
        if self.partitioned and device.type == "cpu":  # host memory is what ZeRO-3 divides here
            release_large_blocks_to_os()
        deepspeed = import_deepspeed()
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
        if not isinstance(model, nn.Module):
            model = self._build(model, engine_cfg)
        model = model.to(device)
        self._make_optimizer(model, train_cfg, total_steps)
        if self.partitioned:
            # ZeRO-3 gathers a module's parameters with a collective whenever the module runs, so
            # every rank must run the same modules in the same order (see docs/training.md). Tied
            # output embeddings are read outside their module: gather them for the whole forward.
            for module in model.modules():
                if isinstance(module, nn.Embedding):
                    deepspeed.zero.register_external_parameter(model, module.weight)
        self.ds, _, _, _ = deepspeed.initialize(model=model, optimizer=self.optimizer, lr_scheduler=self.scheduler,
                                                config=self.deepspeed_config(engine_cfg))
        self.model = self.ds.module
        self.forward = self.ds  # what `step` calls
        self.ds.checkpoint_engine = weights_only_checkpoint_engine(self.ds)

    def _build(self, make_model: Callable[[], nn.Module], engine_cfg) -> nn.Module:
        """make_model(), under ZeRO-3 inside `zero.Init`: each module's parameters are partitioned when
        its __init__ returns (rank 0's values, broadcast). Initialisation a parent module does on a
        child's weights must go through `Module.apply`, which zero.Init wraps to gather them first
        (distrec.models.init.reinit); a direct `nn.init` call would fill an empty partition."""
        if not self.partitioned:
            return make_model()
        import deepspeed

        with deepspeed.zero.Init(config_dict_or_path=self.deepspeed_config(engine_cfg)):
            return make_model()

    def deepspeed_config(self, engine_cfg) -> dict:
        zero = {"stage": self.stage}
        if self.stage == 3:
            # A module's parameters are whole only while it runs: DeepSpeed's defaults keep every
            # parameter under 100k elements whole on every rank, keep gathered ones that will be used
            # again soon and prefetch up to 50M elements ahead, which for a model of a few hundred MB
            # is the whole model on every rank (tests/train/test_zero3.py)
            zero.update(stage3_param_persistence_threshold=0, stage3_max_reuse_distance=0,
                        stage3_prefetch_bucket_size=0,
                        # DeepSpeed's reduction bucket (5e8 elements, 2 GB of fp32) is sized for GPUs;
                        # bench_zero3 at 200m saw the same peak RSS with either (docs/benchmarks.md)
                        reduce_bucket_size=REDUCE_BUCKET_ELEMENTS,
                        # the optimizer steps one sub-group of the partition at a time: Adam's full-size
                        # temporaries (its denominator) are then 100 MB, not the whole partition
                        sub_group_size=REDUCE_BUCKET_ELEMENTS)
        if engine_cfg.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": self.device.type == "cuda"}
        if engine_cfg.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": self.device.type == "cuda"}
        return {
            "train_batch_size": self.plan.global_batch,
            "train_micro_batch_size_per_gpu": self.plan.micro_batch,
            "gradient_accumulation_steps": self.plan.accumulation,
            "gradient_clipping": self.grad_clip,
            "zero_optimization": zero,
            # Weights stay fp32; bf16 compute comes from torch autocast (see `autocast`), as in plain.
            "zero_allow_untested_optimizer": True,
            "zero_force_ds_cpu_optimizer": False,  # torch AdamW with offload (see stack-notes)
            "steps_per_print": 10 ** 9,
            "wall_clock_breakdown": False,
        }

    def _backward(self, loss: torch.Tensor, weight) -> None:
        # DeepSpeed divides by the accumulation steps and averages over workers (module docstring)
        self.ds.backward(loss.float() * (weight * self.plan.accumulation * self.world_size))
        self.ds.step()  # applies the update at the accumulation boundary only

    def evaluation_model(self):
        """The model, or under ZeRO-3 `Partitioned`, the model whose `recommend` runs as DeepSpeed's
        forward, gathering each module's parameters while it runs."""
        return Partitioned(self.ds) if self.partitioned else self.model

    def write_weights(self, path: Path) -> None:
        """As `Engine.write_weights`. Under ZeRO-3 each parameter is gathered when its turn comes and
        released once written: no rank, rank 0 included, ever holds more than one whole parameter beside
        its partitions."""
        if not self.partitioned:
            return super().write_weights(path)
        import deepspeed

        state = self.model.state_dict(keep_vars=True)

        def values():  # each parameter gathered on its turn (a collective) and released when written
            for tensor in state.values():
                with (deepspeed.zero.GatheredParameters([tensor], modifier_rank=None) if hasattr(tensor, "ds_id")
                      else contextlib.nullcontext()):
                    yield as_saved(tensor) if self.rank == 0 else None

        if self.rank == 0:
            write_streaming(path, [(name, tuple(getattr(t, "ds_shape", t.shape)), saved_dtype(t.dtype))
                                   for name, t in state.items()], values())
        else:
            for _ in values():  # the same gathers (collectives), nothing kept
                pass

    def save(self, directory: Path) -> None:
        self.ds.save_checkpoint(str(Path(directory)), tag="engine", save_latest=False)

    def _load(self, directory: Path) -> None:
        path, _ = self.ds.load_checkpoint(str(directory), tag="engine", load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(directory / "engine")


class Partitioned:
    """A ZeRO-3 model for inference without a whole copy on any rank: `recommend(batch, k)` runs through
    the DeepSpeed engine's forward, so each module's partitioned parameters are gathered while the
    module runs and released after, and a parameter read directly (a tied embedding, a codebook) is
    gathered while the call lasts. The gathers are collectives: every rank must make the same calls
    (`eval_batches(same_sizes=True)`). Anything else is the model's own attribute."""

    def __init__(self, ds):
        self._ds = ds

    def __getattr__(self, name):
        return getattr(self._ds.module, name)

    def recommend(self, batch: dict, k: int):
        module = self._ds.module
        module.forward = lambda b: type(module).recommend(module, b, k)  # an instance attribute, for this call
        try:
            return self._ds(batch)
        finally:
            del module.forward


def make_engine(model: nn.Module | Callable[[], nn.Module], train_cfg, engine_cfg, plan: BatchPlan,
                total_steps: int, device: torch.device, rank: int = 0) -> Engine:
    """The engine `engine.kind` names, after checking `engine_cfg`: a `DeepSpeedEngine` for deepspeed,
    a `PlainEngine` for plain and fast. Each rank builds its own; under DeepSpeed every rank must."""
    check_engine_config(engine_cfg)
    kind = DeepSpeedEngine if engine_cfg.kind == "deepspeed" else PlainEngine
    return kind(model, train_cfg, engine_cfg, plan, total_steps, device, rank)
