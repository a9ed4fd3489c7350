"""Learning-rate schedules as multipliers of the peak `train.lr` (for torch's LambdaLR).

Both engines (plain and DeepSpeed) use the same LambdaLR, so their learning rates agree step by step.
"""

from __future__ import annotations

import math

from distrec.train.config import Schedule


def lr_multiplier(schedule: str, warmup_steps: int, total_steps: int, min_ratio: float = 0.0,
                  decay_steps: int = 0):
    """Return f(step) -> multiplier: linear warmup to 1, then the named decay."""
    schedule = Schedule(schedule)  # a value outside train.config.Schedule is a ValueError
    warmup = max(0, int(warmup_steps))
    total = max(1, int(total_steps))
    if schedule == "wsd" and not 0 < decay_steps <= total - warmup:
        raise ValueError(f"the wsd schedule needs 0 < decay_steps <= total steps - warmup steps "
                         f"({total} - {warmup}); got decay_steps={decay_steps}")

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        if schedule == "inverse_sqrt":
            # 1 at the end of warmup, then 1/sqrt(step): the Transformer's "Noam" decay
            return math.sqrt(max(warmup, 1) / (step + 1))
        if schedule == "wsd":
            # stable at 1 until the decay starts, then linear to min_ratio at the last step
            # (Hagele et al. 2024: one stable run, a cooldown branched from any of its checkpoints)
            left = min(1.0, max(0.0, (total - step) / decay_steps))
            return min_ratio + (1 - min_ratio) * left
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f
