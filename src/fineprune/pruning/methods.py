"""One small class per pruning method: how its masks follow from (weights, scores, schedule), and its regularizer.

Masks are returned at group granularity (one entry per score); the caller expands them to the weights' shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fineprune.errors import UsageError
from fineprune.pruning.config import PruningConfig
from fineprune.pruning.masks import group_scores, threshold_mask, topv_masks


@dataclass(frozen=True)
class Selection:
    """The state a method selects with: the schedule's value now; whether a steered run has snapped to its
    target density (its cool-down), in which case every method keeps the Top-v at that density; and, before
    that, the steered run's band (lowest, highest density) into which its deterministic masks are clamped."""

    value: float
    training: bool
    snap_density: float | None = None
    band: tuple[float, float] | None = None


def clamp_density(masks: list[Tensor], scores: list[Tensor], band: tuple[float, float] | None, scope: str):
    """Masks whose density lies in ``band = (low, high)`` per matrix (local) or over all matrices (global): the
    masks' own choice where it is inside, else the Top-v of the scores at the nearer edge.

    ``(mask & Top_v(high)) | Top_v(low)``: Top-v at ``low`` lies inside Top-v at ``high`` (same scores, same ties),
    so the count is at least ``low``'s and at most ``high``'s; a mask that is a threshold on the scores stays one.
    """
    if band is None:
        return masks
    low, high = band
    ceiling, floor = topv_masks(scores, high, scope), topv_masks(scores, low, scope)
    return [(mask & top) | kept for mask, top, kept in zip(masks, ceiling, floor, strict=True)]


class PruningMethod:
    """Base: the schedule drives `scheduled` ("density", "threshold" or None) from `bounds` (initial, final)."""

    name: str
    uses_scores = True
    scheduled: str | None = "density"
    lagrangian = False  # steered by a Lagrangian on expected_density (else by the masks' density band alone)

    def bounds(self, config: PruningConfig) -> tuple[float, float]:
        return config.initial_density, config.final_density or config.initial_density

    def masks(self, config: PruningConfig, weights: list[Tensor], scores: list[Tensor], sel: Selection) -> list[Tensor]:
        raise NotImplementedError

    def regularizer(self, config: PruningConfig, scores: list[Tensor]) -> Tensor | None:
        """R(S), or None for methods without one."""
        return None

    def expected_density(self, config: PruningConfig, scores: list[Tensor]) -> Tensor:
        """The expected density of the training-time masks, differentiable in the scores (lagrangian methods)."""
        raise NotImplementedError

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
        # Steered: the threshold decides inside the band only. Adam moves every score by about its learning rate
        # per update whatever lambda is, so no lambda can hold the threshold's density on the schedule: with a fast
        # scores lr it prunes far past the target (weights pruned past it stop learning and come back untrained at
        # the cool-down), with a slow one it keeps everything until the cool-down cuts at once.
        masks = [threshold_mask(s, sel.value, config.min_density) for s in scores]
        return clamp_density(masks, scores, sel.band, config.scope)

    def regularizer(self, config, scores):
        return torch.stack([torch.sigmoid(s).mean() for s in scores]).mean()

    def lambda_at(self, config, value):
        # The reference scales lambda with the threshold: lambda(t) = lambda_f * tau(t) / tau_f.
        if config.final_threshold == 0:
            return config.lambda_final
        return config.lambda_final * value / config.final_threshold


class L0(PruningMethod):
    name = "l0"
    scheduled = None
    lagrangian = True

    def masks(self, config, weights, scores, sel):
        if sel.snap_density is not None:
            return topv_masks(scores, sel.snap_density, config.scope)
        gate = config.hard_concrete
        if sel.training:
            return [gate.sample(s) for s in scores]
        return clamp_density([gate.binary(s) for s in scores], scores, sel.band, config.scope)

    def regularizer(self, config, scores):
        gate = config.hard_concrete
        return torch.stack([gate.open_probability(s).mean() for s in scores]).mean()

    def expected_density(self, config, scores):
        # Every score gates the same number of weights (one block), so the weight-weighted mean over all matrices is
        # the mean over all scores: the expected fraction of the pruned weights kept.
        gate = config.hard_concrete
        return sum(gate.open_probability(s).sum() for s in scores) / sum(s.numel() for s in scores)

    def lambda_at(self, config, value):
        return config.lambda_final


METHODS: dict[str, PruningMethod] = {m.name: m for m in (Magnitude(), Movement(), SoftMovement(), L0())}


def get_method(name: str) -> PruningMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise UsageError(f"unknown pruning method {name!r}; choose one of {', '.join(METHODS)}") from None
