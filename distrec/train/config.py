"""Configs of the training loop (`train`) and of the engine that runs it (`engine`)."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Optional


class Optimizer(StrEnum):
    adamw = "adamw"  # decoupled weight decay
    adam = "adam"  # weight decay added to the gradient (L2), as the released IntRR


class Schedule(StrEnum):
    constant = "constant"
    cosine = "cosine"
    inverse_sqrt = "inverse_sqrt"
    wsd = "wsd"  # warmup, stable at the peak, linear decay to 0 over the last train.decay_steps


class LossWeighting(StrEnum):
    labels = "labels"  # a micro-batch weighs its share of the labelled positions
    rows = "rows"  # its share of the rows


class EngineKind(StrEnum):
    deepspeed = "deepspeed"
    plain = "plain"  # one process, no DeepSpeed, for debugging
    fast = "fast"  # one device (engine=gpu)


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"


class Reader(StrEnum):
    arrow = "arrow"  # pyarrow
    ray_data = "ray_data"


@dataclass
class TrainConfig:
    global_batch_size: int = 256  # micro-batch and accumulation are derived from the world size
    micro_batch_size: Optional[int] = None  # per worker; null = global / world size
    group_by_length: bool = True  # cut micro-batches from the length-sorted global batch (less padding)
    optimizer: Optimizer = Optimizer.adamw
    lr: float = 1e-3
    weight_decay: float = 0.0  # on matrices only (not biases and norms)
    betas: tuple[float, float] = (0.9, 0.98)
    schedule: Schedule = Schedule.cosine
    warmup_steps: int = 100
    max_steps: Optional[int] = None  # null = epochs * steps per epoch
    # `wsd` only: the last steps, decayed linearly to 0. A run trained at the stable LR can branch a
    # cooldown from any checkpoint (copy it into a new train dir, resume with a larger max_steps)
    decay_steps: int = 0
    epochs: int = 20
    grad_clip: float = 1.0
    eval_every: int = 0  # steps between validations; 0 = once per epoch
    select_metric: str = "ndcg@10"  # validation metric of the best checkpoint and early stopping: ndcg@K | recall@K
    patience: int = 5  # early stopping: validations without improvement of select_metric (0 = never)
    checkpoint_every: int = 0  # steps; 0 = at every validation
    log_every: int = 20
    resume: bool = True  # continue from the latest complete checkpoint of the same run
    keep_checkpoints: int = 3  # newest complete checkpoints kept (+ the best); 0 = keep all
    loss_weighting: LossWeighting = LossWeighting.labels  # the weight of a micro-batch
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
    kind: EngineKind = EngineKind.deepspeed
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    precision: Precision = Precision.bf16
    num_workers: int = 1  # Ray Train workers; 0 = run in this process without Ray
    cpus_per_worker: float = 0.5  # fractional: Ray Data reading the shards needs CPU left over
    use_gpu: bool = False
    reader: Reader = Reader.arrow  # how Ray workers read the sequences shards
    max_failures: int = 0  # Ray Train worker-failure retries (resume from last checkpoint)
    compile: bool = False  # engine.kind=fast: torch.compile the model's forward


@dataclass
class FAMAEConfig:
    """embed.method=famae (ReSID): the field-aware masked auto-encoder, trained with the same training
    loop and engine as every model (its own `train` and `engine` settings, FAMAE's defaults)."""

    train_dir: str = "${paths.embeddings}-famae"  # its checkpoints/logs (beside the embed/ artifact)
    fields: list[str] = field(default_factory=list)  # item fields besides item_id; empty = every non-text field
    field_weights: dict[str, float] = field(default_factory=dict)  # alpha_k per field (default 1.0)
    dim: int = 128
    layers: int = 2
    heads: int = 4
    ffn: int = 512
    dropout: float = 0.1
    max_history: int = 32  # sliding windows of the history (the paper's max length)
    negatives: int = 128  # sampled-softmax negatives for vocabularies above sampled_min_vocab
    sampled_min_vocab: int = 2048
    numeric_buckets: int = 10  # numeric fields -> quantile buckets
    diagnostic_max_users: Optional[int] = None  # test users for the two diagnostics (null = all)
    # early stopping (patience 3) on validation Recall/NDCG@10 with every field of the target masked
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, weight_decay=1e-5, warmup_steps=50,
                                                                   patience=3, val_max_users=2000))
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(num_workers=0))  # 0: in this process
