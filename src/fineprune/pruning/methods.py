"""One small class per pruning method: how its masks follow from (weights, scores, schedule), and its regularizer.

Masks are returned at group granularity (one entry per score); the caller expands them to the weights' shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fineprune.errors import UsageError
from fineprune.pruning.config import PruningConfig
from fineprune.pruning.masks import (
    L0_BETA,
    L0_LEFT,
    L0_RIGHT,
    group_scores,
    hard_concrete_binary,
    hard_concrete_sample,
    threshold_mask,
    topv_masks,
)


@dataclass(frozen=True)
class Selection:
    """The state a method selects with: the schedule's value now; whether a steered run has snapped to its
    target density (its cool-down), in which case every method keeps the Top-v at that density; and, before
    that, the steered run's target density now, below which a threshold mask must not fall."""

    value: float
    training: bool
    snap_density: float | None = None
    floor_density: float | None = None


class PruningMethod:
    """Base: the schedule drives `scheduled` ("density", "threshold" or None) from `bounds` (initial, final)."""

    name: str
    uses_scores = True
    scheduled: str | None = "density"

    def bounds(self, config: PruningConfig) -> tuple[float, float]:
        return config.initial_density, config.final_density or config.initial_density

    def masks(self, config: PruningConfig, weights: list[Tensor], scores: list[Tensor], sel: Selection) -> list[Tensor]:
        raise NotImplementedError

    def regularizer(self, scores: list[Tensor]) -> Tensor | None:
        """R(S), or None for methods without one."""
        return None

    def lambda_at(self, config: PruningConfig, value: float) -> float:
        """lambda(t) before any steering."""
        return 0.0


class Magnitude(PruningMethod):
    name = "magnitude"
    uses_scores = False

    def masks(self, config, weights, scores, sel):
        return topv_masks([group_scores(w, config.block_shape) for w in weights], sel.value, config.scope)


class Movement(PruningMethod):
    name = "movement"

    def masks(self, config, weights, scores, sel):
        return topv_masks(scores, sel.value, config.scope)


class SoftMovement(PruningMethod):
    name = "soft_movement"
    scheduled = "threshold"

    def bounds(self, config):
        return config.initial_threshold, config.final_threshold

    def masks(self, config, weights, scores, sel):
        if sel.snap_density is not None:
            return topv_masks(scores, sel.snap_density, config.scope)
        masks = [threshold_mask(s, sel.value, config.min_density) for s in scores]
        if sel.floor_density is None:
            return masks
        # Steered: the threshold may prune only down to the target. Adam moves every score by about its learning
        # rate per update whatever lambda is, so the controller cannot stop a fast fall in time; weights pruned past
        # the target would stop learning and come back untrained at the cool-down's Top-v.
        floor = topv_masks(scores, sel.floor_density, config.scope)
        return [mask | kept for mask, kept in zip(masks, floor, strict=True)]

    def regularizer(self, scores):
        return torch.stack([torch.sigmoid(s).mean() for s in scores]).mean()

    def lambda_at(self, config, value):
        # The reference scales lambda with the threshold: lambda(t) = lambda_f * tau(t) / tau_f.
        if config.final_threshold == 0:
            return config.lambda_final
        return config.lambda_final * value / config.final_threshold


class L0(PruningMethod):
    name = "l0"
    scheduled = None

    def masks(self, config, weights, scores, sel):
        if sel.snap_density is not None:
            return topv_masks(scores, sel.snap_density, config.scope)
        if sel.training:
            return [hard_concrete_sample(s) for s in scores]
        return [hard_concrete_binary(s) for s in scores]

    def regularizer(self, scores):
        shift = L0_BETA * math.log(-L0_LEFT / L0_RIGHT)
        return torch.stack([torch.sigmoid(s - shift).mean() for s in scores]).mean()

    def lambda_at(self, config, value):
        return config.lambda_final


METHODS: dict[str, PruningMethod] = {m.name: m for m in (Magnitude(), Movement(), SoftMovement(), L0())}


def get_method(name: str) -> PruningMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise UsageError(f"unknown pruning method {name!r}; choose one of {', '.join(METHODS)}") from None
