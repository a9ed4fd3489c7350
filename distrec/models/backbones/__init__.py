"""Generative backbones. `build_backbone(model_cfg)` picks one by `model_cfg.backbone`."""

from distrec.errors import ConfigError
from distrec.models.backbones.hstu import HSTU
from distrec.models.backbones.t5 import T5EncoderDecoder
from distrec.models.backbones.transformer import TransformerDecoder

BACKBONES = ("transformer", "t5", "hstu")


def build_backbone(model_cfg, max_len: int | None = None):
    """Backbone from a `model` config (dimensions filled by its size preset). `max_len` is the token
    length it must handle (default `model.max_history`); methods with several tokens per item pass theirs."""
    from distrec.models.presets import resolve_dims

    cfg = resolve_dims(model_cfg)
    max_len = max_len or cfg.max_history
    if cfg.backbone == "transformer":
        return TransformerDecoder(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, cfg.dropout, max_len, cfg.head_dim,
                                  activation_checkpointing=cfg.activation_checkpointing)
    if cfg.backbone == "t5":
        return T5EncoderDecoder(cfg.d_model, cfg.n_layers, cfg.n_decoder_layers, cfg.n_heads, cfg.d_ff, cfg.dropout,
                                cfg.rel_buckets, cfg.rel_max_distance, cfg.head_dim,
                                activation_checkpointing=cfg.activation_checkpointing)
    if cfg.backbone == "hstu":
        return HSTU(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.dropout, max_len, cfg.num_time_buckets,
                    cfg.head_dim, cfg.linear_dim, cfg.kernel, init=cfg.init, norm_affine=cfg.norm_affine,
                    activation_checkpointing=cfg.activation_checkpointing)
    raise ConfigError(f"model.backbone='{cfg.backbone}' has no generic backbone; choose one of {list(BACKBONES)}")
