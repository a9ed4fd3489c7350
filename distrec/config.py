"""The structured config schema, registered with Hydra.

Every group of `configs/` is merged into a typed dataclass node, so a misspelt key or a value
of the wrong type fails at composition, before any work starts. Each group's dataclass lives
beside the code that uses it; this file only assembles them.
"""

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path

from distrec.data.config import DataConfig
from distrec.eval.config import EvalConfig
from distrec.inference.config import RecommendConfig, ServeConfig
from distrec.models.config import MethodConfig, ModelConfig
from distrec.parallel.config import ClusterConfig
from distrec.pipeline import ARTIFACTS
from distrec.scaling.config import SweepConfig
from distrec.tokenize.config import EmbedConfig, TokenizerConfig
from distrec.train.config import EngineConfig, FAMAEConfig, TrainConfig

# Artifact directories, one per artifact of the stage graph (distrec.pipeline): each stage writes one
# and reads the ones before it; `root` holds them all unless one is overridden.
Paths = dataclasses.make_dataclass(
    "Paths", [("root", str, "runs/${name}")] + [(key, str, f"${{.root}}/{d}") for key, d in ARTIFACTS.items()])


@dataclass
class Config:
    stage: str = "run"
    name: str = "${data.name}"  # runs/<name>/: by default one run directory per dataset
    seed: int = 0
    progress: bool = True  # progress bars on long work
    paths: Paths = field(default_factory=Paths)
    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    famae: FAMAEConfig = field(default_factory=FAMAEConfig)  # embed.method=famae
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


def check_config(cfg) -> None:
    """Refuse keys that no schema dataclass declares. `+group.key=value` adds a key to a typed node
    without complaint (it is what Hydra suggests for a misspelt key), and nothing would read it.
    Free-form dict fields (e.g. `data.files`) take any key."""
    from omegaconf import DictConfig, OmegaConf

    from distrec.errors import ConfigError

    def walk(node, prefix: str) -> None:
        schema = OmegaConf.get_type(node)
        known = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
        for key in node.keys():
            path = f"{prefix}{key}"
            if known is not None and key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                raise ConfigError(f"unknown config key '{path}' (added with +{path}=...; nothing reads it)"
                                  + (f": did you mean '{prefix}{close[0]}'?" if close else
                                     f"; the keys of {prefix[:-1] or 'the config'} are {known}"))
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
                walk(child, path + ".")

    walk(cfg, "")


def config_dir() -> Path:
    """The shipped `configs/` directory (repository root; override with DISTREC_CONFIG_DIR)."""
    import os

    return Path(os.environ.get("DISTREC_CONFIG_DIR", Path(__file__).resolve().parents[1] / "configs"))


def register() -> None:
    from hydra.core.config_store import ConfigStore  # here: the schema itself loads without Hydra

    ConfigStore.instance().store(name="distrec_schema", node=Config)


def load_resolved(path) -> "DictConfig":  # noqa: F821
    """A composed config saved as YAML with every value resolved (`OmegaConf.to_yaml(cfg, resolve=True)`),
    checked against the schema: for machines without Hydra (bench/gpu/reproduce), needs only omegaconf."""
    from omegaconf import OmegaConf

    from distrec.errors import ConfigError

    try:
        return OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path))
    except Exception as e:  # omegaconf names the key and the type it expected
        raise ConfigError(f"{path}: not a resolved distrec config ({type(e).__name__}: {e}); write it with "
                          "bench/gpu/pack") from None


def compose(overrides: list[str] | None = None, config_name: str = "config"):
    """Compose the config as the CLI would (for tests, notebooks, benchmarks and sweep points); inside
    a CLI run (`distrec sweep`) Hydra is already initialised with the command's config directory."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        if GlobalHydra.instance().is_initialized():
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides or []))
        else:
            register()
            with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
                cfg = hydra_compose(config_name=config_name, overrides=list(overrides or []))
    except Exception as e:  # a value the schema refuses: say which key and what it takes, as the CLI does
        invalid = schema_error(e)
        if invalid is None:
            raise
        raise invalid from None
    check_config(cfg)
    return cfg


def schema_error(error: BaseException):
    """A ConfigError naming the key and the accepted values for an OmegaConf validation error found in
    `error`'s causes (Hydra wraps it), else None."""
    from omegaconf.errors import ValidationError

    from distrec.errors import ConfigError

    while error is not None and not isinstance(error, ValidationError):
        error = error.__cause__ or error.__context__
    if error is None:
        return None
    return ConfigError(f"{error.full_key}: {error.msg}")
