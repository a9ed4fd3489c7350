"""Building blocks shared by the backbones: masks, attention, KV cache, norms."""
