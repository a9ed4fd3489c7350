"""Named model sizes. A preset fills the backbone dimensions the config leaves at null."""

from dataclasses import replace

from distrec.errors import ConfigError

# name: (d_model, n_layers, n_heads, d_ff)
PRESETS = {
    "debug": (32, 1, 2, 64),
    "small": (128, 2, 2, 256),
    "base": (256, 4, 4, 1024),
    "large": (768, 12, 12, 3072),
    "xl": (2048, 18, 16, 8192),  # ~0.9B non-embedding parameters
    # past one CPU worker (ZeRO-3 over several: docs/training.md, bench/bench_zero3.py); named by the
    # Transformer's non-embedding parameters (12 d^2 per layer): fp32 weights + gradients + Adam state
    # are 16 bytes per parameter, 3.2 GB for 200m
    "200m": (1024, 16, 16, 4096),
    "400m": (1024, 32, 16, 4096),
    "800m": (2048, 16, 16, 8192),
}


def resolve_dims(model_cfg):
    """Return a copy of `model_cfg` (dataclass or DictConfig) with every dimension set."""
    if model_cfg.size not in PRESETS:
        raise ConfigError(f"model.size='{model_cfg.size}' is not a preset; choose one of {sorted(PRESETS)}")
    d_model, n_layers, n_heads, d_ff = PRESETS[model_cfg.size]
    values = {
        "d_model": model_cfg.d_model or d_model,
        "n_layers": model_cfg.n_layers or n_layers,
        "n_heads": model_cfg.n_heads or n_heads,
        "d_ff": model_cfg.d_ff or d_ff,
    }
    values["n_decoder_layers"] = model_cfg.n_decoder_layers or values["n_layers"]
    if values["d_model"] % values["n_heads"] and not getattr(model_cfg, "head_dim", None):
        raise ConfigError(f"model.d_model={values['d_model']} is not divisible by model.n_heads={values['n_heads']}")
    from omegaconf import DictConfig, OmegaConf

    if isinstance(model_cfg, DictConfig):
        out = OmegaConf.to_object(model_cfg) if OmegaConf.is_struct(model_cfg) else OmegaConf.to_container(model_cfg)
        model_cfg = out
    if isinstance(model_cfg, dict):
        from distrec.models.config import ModelConfig

        model_cfg = ModelConfig(**model_cfg)
    return replace(model_cfg, **values)
