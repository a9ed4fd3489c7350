"""Configs of the training loop (`train`) and of the engine that runs it (`engine`)."""

from dataclasses import dataclass
from typing import Optional


@dataclass
class TrainConfig:
    global_batch_size: int = 256  # micro-batch and accumulation are derived from the world size
    micro_batch_size: Optional[int] = None  # per worker; null = global / world size
    group_by_length: bool = True  # cut micro-batches from the length-sorted global batch (less padding)
    optimizer: str = "adamw"  # adamw (decoupled weight decay) | adam (weight decay added to the gradient)
    lr: float = 1e-3
    weight_decay: float = 0.0  # on matrices only (not biases and norms)
    betas: tuple[float, float] = (0.9, 0.98)
    schedule: str = "cosine"  # constant | cosine | inverse_sqrt
    warmup_steps: int = 100
    max_steps: Optional[int] = None  # null = epochs * steps per epoch
    epochs: int = 20
    grad_clip: float = 1.0
    eval_every: int = 0  # steps between validations; 0 = once per epoch
    select_metric: str = "ndcg@10"  # validation metric of the best checkpoint and early stopping: ndcg@K | recall@K
    patience: int = 5  # early stopping: validations without improvement of select_metric (0 = never)
    checkpoint_every: int = 0  # steps; 0 = at every validation
    log_every: int = 20
    resume: bool = True  # continue from the latest complete checkpoint of the same run
    keep_checkpoints: int = 3  # newest complete checkpoints kept (+ the best); 0 = keep all
    loss_weighting: str = "labels"  # micro-batch weight: labels (share of labelled positions) | rows
    val_max_users: Optional[int] = None  # validate on the first N users only (null = all)
    # train on each user's validation item too, and skip validation (it would score training targets):
    # Meta's HSTU protocol (train up to the second-to-last item, report the last). The last checkpoint
    # is the result; set a fixed budget (epochs), since nothing stops early.
    include_valid: bool = False
    # stop after this many seconds of the attempt's wall time (validations included): validate, save and
    # end as early stopping does (null = no limit). For fixed-budget runs (bench/gpu/reproduce).
    time_limit_s: Optional[float] = None


@dataclass
class EngineConfig:
    kind: str = "deepspeed"  # deepspeed | plain (one process, no DeepSpeed, for debugging) | fast (one device: engine=gpu)
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    precision: str = "bf16"  # fp32 | bf16
    num_workers: int = 1  # Ray Train workers; 0 = run in this process without Ray
    cpus_per_worker: float = 0.5  # fractional: Ray Data reading the shards needs CPU left over
    use_gpu: bool = False
    reader: str = "arrow"  # how Ray workers read the sequences shards: arrow (pyarrow) | ray_data
    max_failures: int = 0  # Ray Train worker-failure retries (resume from last checkpoint)
    compile: bool = False  # engine.kind=fast: torch.compile the model's forward
