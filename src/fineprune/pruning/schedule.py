"""The cubic sparsity schedule of Zhu & Gupta (2018), as one small, validated, pure function."""

from __future__ import annotations

import math
from fractions import Fraction

from fineprune.errors import UsageError


def resolve_steps(steps: int | float, total_steps: int, name: str) -> int:
    """A step count given either as optimizer steps (int >= 1 or 0) or as a fraction of the run (0 < float < 1).

    A fraction is rounded half up, on the decimal the user wrote: 0.05 of 10 steps is 1, 0.25 of 10 is 3 (Python's
    ``round`` would give 0 and 2, rounding halves to even on binary floats)."""
    if isinstance(steps, float) and 0 < steps < 1:
        return math.floor(Fraction(repr(steps)) * total_steps + Fraction(1, 2))
    if steps < 0 or steps != int(steps):
        raise UsageError(f"{name} must be a whole number of steps >= 0 or a fraction in (0, 1), got {steps}")
    return int(steps)


def validate_schedule(total_steps: int, warmup_steps: int, cooldown_steps: int) -> None:
    """Refuse a run too short for its warm-up and cool-down: it would silently never reach the target."""
    if warmup_steps < 0 or cooldown_steps < 0:
        raise UsageError(f"warm-up ({warmup_steps}) and cool-down ({cooldown_steps}) steps must be >= 0")
    if total_steps <= warmup_steps + cooldown_steps:
        raise UsageError(
            f"the run has {total_steps} optimizer steps, not more than warm-up {warmup_steps} + cool-down "
            f"{cooldown_steps}: the schedule would never reach its final value; train longer or shorten them"
        )


def cubic_schedule(
    step: int, total_steps: int, initial: float, final: float, warmup_steps: int, cooldown_steps: int
) -> float:
    """Value at optimizer step `step` (0-based) of a run of `total_steps` steps.

    `initial` for the first `warmup_steps` steps, `final` for the last `cooldown_steps` steps (and beyond the end),
    and in between ``final + (initial - final) * (1 - (step - warmup) / (total - warmup - cooldown)) ** 3``.
    """
    validate_schedule(total_steps, warmup_steps, cooldown_steps)
    if step < warmup_steps:
        return initial
    span = total_steps - warmup_steps - cooldown_steps
    progress = (step - warmup_steps) / span
    if progress >= 1:
        return final
    return final + (initial - final) * (1 - progress) ** 3
