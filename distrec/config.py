"""The structured config schema, registered with Hydra.

Every group of `configs/` is merged into a typed dataclass node, so a misspelt key or a value
of the wrong type fails at composition, before any work starts. Each group's dataclass lives
beside the code that uses it; this file only assembles them.
"""

from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore

from distrec.data.config import DataConfig
from distrec.dist.config import ClusterConfig
from distrec.eval.config import EvalConfig
from distrec.models.config import MethodConfig, ModelConfig
from distrec.scaling.config import SweepConfig
from distrec.tokenize.config import EmbedConfig, TokenizerConfig
from distrec.train.config import EngineConfig, TrainConfig

STAGES = {
    "prepare": "read a raw dataset (or generate a catalog) into items/sequences parquet",
    "embed": "compute item embeddings (TF-IDF+SVD, fields, sentence-transformers, FAMAE, column)",
    "tokenize": "quantize embeddings into semantic IDs: the SID table and its quality report",
    "train": "train a model with the DeepSpeed engine (under Ray Train when engine.num_workers > 0)",
    "evaluate": "full-catalog evaluation of a trained checkpoint: metrics.json + predictions.parquet",
    "sweep": "run a grid of train+evaluate jobs on Ray, fit scaling laws, plot them",
    "run": "the whole pipeline: prepare -> embed -> tokenize -> train -> evaluate",
}


@dataclass
class Paths:
    """Artifact directories. Each stage writes one and reads the ones before it."""

    root: str = "runs/${name}"
    data: str = "${.root}/data"
    embeddings: str = "${.root}/embed"
    sids: str = "${.root}/sids"
    train: str = "${.root}/train"
    eval: str = "${.root}/eval"


@dataclass
class Config:
    stage: str = "run"
    name: str = "default"
    seed: int = 0
    progress: bool = True  # progress bars on long work
    paths: Paths = field(default_factory=Paths)
    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


def config_dir() -> Path:
    """The shipped `configs/` directory (repository root; override with DISTREC_CONFIG_DIR)."""
    import os

    return Path(os.environ.get("DISTREC_CONFIG_DIR", Path(__file__).resolve().parents[1] / "configs"))


def register() -> None:
    ConfigStore.instance().store(name="distrec_schema", node=Config)


def compose(overrides: list[str] | None = None, config_name: str = "config"):
    """Compose the config as the CLI would (for tests, notebooks and benchmarks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
