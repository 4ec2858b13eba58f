"""The Pruner: the state of one pruned model (schedule clock, steering of lambda) and the masks it implies.

It is a submodule of the model, so its clock and controller state travel in every ``state_dict``, checkpoint and
``save_pretrained`` folder. Each pruned ``nn.Linear`` gets a :class:`MaskedWeight` parametrization of its
``weight`` that asks the pruner for its mask; masks are recomputed only when a score, a weight (magnitude) or the
clock changed, so gradient-accumulation micro-batches and evaluation reuse them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fineprune.pruning.config import PruningConfig
from fineprune.pruning.masks import StraightThroughMask, expand_mask, group_scores
from fineprune.pruning.methods import Selection, get_method
from fineprune.pruning.schedule import cubic_schedule, resolve_steps, validate_schedule

MAX_LOG_LAMBDA_SCALE = 15.0


def initial_scores(weight: Tensor, config: PruningConfig) -> Tensor:
    """One score per block: the constant ``initial_score``, plus, with ``scores_init_from_weights``, the block's
    mean |W| standardised over the matrix (times ``scores_init_scale``), so that Top-v starts from magnitude's mask."""
    rows, cols = weight.shape
    br, bc = config.block_shape
    init = torch.full((rows // br, cols // bc), config.initial_score, dtype=weight.dtype, device=weight.device)
    if config.scores_init_from_weights:
        magnitude = group_scores(weight.detach().double(), config.block_shape)
        spread = magnitude.std() if magnitude.numel() > 1 else magnitude.new_tensor(0.0)
        z = (magnitude - magnitude.mean()) / spread if spread > 0 else torch.zeros_like(magnitude)
        init += (config.scores_init_scale * z).to(weight.dtype)
    return init


class MaskedWeight(nn.Module):
    """Parametrization ``weight -> weight * mask``; holds this matrix's scores (None for magnitude pruning)."""

    def __init__(self, weight: Tensor, config: PruningConfig, uses_scores: bool):
        super().__init__()
        self.block_shape = tuple(config.block_shape)
        if uses_scores:
            self.scores = nn.Parameter(initial_scores(weight, config))
        else:
            self.scores = None
        self.index = -1
        self.__dict__["pruner"] = None  # set by the Pruner; kept out of the module tree

    def forward(self, weight: Tensor) -> Tensor:
        mask = self.pruner.mask(self.index, self.training)
        if self.scores is None or mask.requires_grad:
            return weight * mask
        return StraightThroughMask.apply(weight, self.scores, mask, self.block_shape)


class Pruner(nn.Module):
    """Schedule clock, lambda controller, mask cache and regularizer of a pruned model."""

    def __init__(self, config: PruningConfig, targets: dict[str, nn.Linear], parametrizations: list[MaskedWeight]):
        super().__init__()
        self.config = config
        self.method = get_method(config.method)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("total_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("log_lambda_scale", torch.zeros((), dtype=torch.float64))
        # Plain attributes, not submodules: the model already owns these modules.
        self.__dict__["names"] = list(targets)
        self.__dict__["linears"] = list(targets.values())
        self.__dict__["parametrizations"] = parametrizations
        for i, p in enumerate(parametrizations):
            p.index = i
            p.__dict__["pruner"] = self
        self._clock = (0, 0)
        self._cache: tuple[tuple, list[Tensor]] | None = None
        self.last_regularizer: Tensor | None = None
        self.register_load_state_dict_post_hook(lambda module, _keys: module._read_clock())

    # -- the clock ---------------------------------------------------------------------------------------------
    def _read_clock(self) -> None:
        self._clock = (int(self.step), int(self.total_steps))

    def steps(self, total_steps: int) -> tuple[int, int]:
        """Warm-up and cool-down in optimizer steps for a run of `total_steps`."""
        warmup = resolve_steps(self.config.warmup_steps, total_steps, "pruning.warmup_steps")
        cooldown = resolve_steps(self.config.cooldown_steps, total_steps, "pruning.cooldown_steps")
        return warmup, cooldown

    def validate_run(self, total_steps: int) -> None:
        """Raise a clear error now if a run of `total_steps` cannot complete the schedule."""
        validate_schedule(total_steps, *self.steps(total_steps))

    def set_step(self, step: int, total_steps: int) -> None:
        """Move the clock to optimizer step `step` of `total_steps`; a steered run updates lambda once per new step."""
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self.validate_run(total_steps)
        if self.config.steered and step > self._clock[0] and self._clock[1] == total_steps:
            self._steer()
        self.step.fill_(step)
        self.total_steps.fill_(total_steps)
        self._clock = (step, total_steps)

    def _cubic(self, initial: float, final: float) -> float:
        step, total = self._clock
        if total == 0:  # never scheduled: the initial state
            return initial
        return cubic_schedule(step, total, initial, final, *self.steps(total))

    @property
    def schedule_value(self) -> float:
        """The scheduled quantity now: density (magnitude, movement) or threshold (soft movement)."""
        return self._cubic(*self.method.bounds(self.config))

    @property
    def target_density(self) -> float | None:
        """A steered run's target density now (cubic from initial_density to final_density)."""
        if not self.config.steered:
            return None
        return self._cubic(self.config.initial_density, self.config.final_density)

    @property
    def snapped(self) -> bool:
        """A steered run in its cool-down keeps exactly the Top-v at the final density."""
        step, total = self._clock
        return self.config.steered and total > 0 and step >= total - self.steps(total)[1]

    @property
    def lambda_value(self) -> float:
        base = self.method.lambda_at(self.config, self.schedule_value)
        return base * math.exp(float(self.log_lambda_scale)) if self.config.steered else base

    def _steer(self) -> None:
        """Integral control in log space: lambda grows while the density is above its target, shrinks below it."""
        target = self.target_density
        error = (self.density() - target) / target
        scale = float(self.log_lambda_scale) + self.config.controller_gain * max(-1.0, min(1.0, error))
        self.log_lambda_scale.fill_(max(-MAX_LOG_LAMBDA_SCALE, min(MAX_LOG_LAMBDA_SCALE, scale)))

    # -- masks ---------------------------------------------------------------------------------------------------
    def _weights(self) -> list[Tensor]:
        return [lin.parametrizations.weight.original for lin in self.linears]

    def _scores(self) -> list[Tensor]:
        return [p.scores for p in self.parametrizations]

    def _selection(self, training: bool) -> Selection:
        if self.snapped:
            return Selection(self.schedule_value, training, snap_density=self.config.final_density)
        return Selection(self.schedule_value, training, floor_density=self.target_density)

    def _stochastic(self, training: bool) -> bool:
        return training and self.method.name == "l0" and not self.snapped

    def mask(self, index: int, training: bool) -> Tensor:
        """The weight-level mask of matrix `index` in the current state."""
        if self._stochastic(training):  # a fresh hard-concrete sample per forward, differentiable in the scores
            scores = self.parametrizations[index].scores
            sample = self.method.masks(self.config, [], [scores], self._selection(True))[0]
            return expand_mask(sample, self.config.block_shape)
        return self.binary_masks()[index]

    def binary_masks(self) -> list[Tensor]:
        """The deterministic binary masks of the current state: what evaluation and export apply, and training too
        for every method but L0 (cached until a score, a weight for magnitude, or the clock changes)."""
        tracked = self._weights() if not self.method.uses_scores else self._scores()
        key = (self._clock, tuple(t._version for t in tracked), tuple(t.data_ptr() for t in tracked))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._compute())
        return self._cache[1]

    def _compute(self) -> list[Tensor]:
        weights = self._weights()
        scores = self._scores() if self.method.uses_scores else [None] * len(weights)
        with torch.no_grad():
            group_masks = self.method.masks(
                self.config,
                [w.detach() for w in weights],
                [s.detach() if s is not None else s for s in scores],
                self._selection(training=False),
            )
        block = self.config.block_shape
        return [expand_mask(m, block).to(w.dtype) for m, w in zip(group_masks, weights, strict=True)]

    def density(self) -> float:
        """Fraction of the pruned weights kept by the binary masks now."""
        masks = self.binary_masks()
        return sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks)

    # -- the regularizer -----------------------------------------------------------------------------------------
    def regularizer(self) -> Tensor | None:
        """lambda(t) * R(S), to add to the loss; None when the method has none or lambda is 0 now."""
        lam = self.lambda_value
        if lam == 0:
            return None
        value = self.method.regularizer(self._scores())
        if value is None:
            return None
        self.last_regularizer = value.detach()
        return lam * value

    def log_values(self) -> dict[str, float]:
        """What the training logs show each logging step."""
        values = {"density": self.density(), "lambda": self.lambda_value}
        if self.method.scheduled == "threshold":
            values["threshold"] = self.schedule_value
        if self.target_density is not None:
            values["target_density"] = self.target_density
        if self.last_regularizer is not None:
            values["regularizer"] = float(self.last_regularizer)
        return values
