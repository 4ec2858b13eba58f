"""The Pruner: the state of one pruned model (schedule clock, steering) and the masks it implies.

It is a submodule of the model, so its clock and the steered L0 run's Lagrange multipliers travel in every
``state_dict``, checkpoint and ``save_pretrained`` folder. Each pruned ``nn.Linear`` gets a :class:`~fineprune.pruning.masked.MaskedWeight`
parametrization of its ``weight`` that asks the pruner for its mask. The deterministic masks are cached until an
optimizer step (any ``torch.optim.Optimizer`` in the process, counted by a global step hook), an in-place edit of a
score (or of a weight, for magnitude), a move of the clock, or :meth:`Pruner.invalidate`; so gradient-accumulation
micro-batches and evaluation reuse them. The step hook is there because some optimizers (fused AdamW) change the
values without bumping the tensors' version counter.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from fineprune.pruning.config import PruningConfig
from fineprune.pruning.groups import GroupLayout
from fineprune.pruning.masked import MaskedWeight
from fineprune.pruning.masks import expand_mask
from fineprune.pruning.methods import Selection, get_method
from fineprune.pruning.schedule import cubic_schedule, resolve_steps, validate_schedule

_optimizer_steps = 0  # optimizer steps taken in this process, by any optimizer: part of every mask cache key


def _count_optimizer_step(optimizer, args, kwargs) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)


class Pruner(nn.Module):
    """Schedule clock, steering (density band, L0's Lagrange multipliers), mask cache and regularizer."""

    def __init__(
        self,
        config: PruningConfig,
        targets: dict[str, nn.Linear],
        parametrizations: list[MaskedWeight],
        groups: GroupLayout | None = None,
    ):
        super().__init__()
        self.config = config
        self.method = get_method(config.method)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("total_steps", torch.zeros((), dtype=torch.long))
        # lambda_1, lambda_2 of a steered L0 run's Lagrangian (zero and unused otherwise)
        self.register_buffer("multipliers", torch.zeros(2, dtype=torch.float64))
        # Plain attributes, not submodules: the model already owns these modules.
        self.__dict__["names"] = list(targets)
        self.__dict__["linears"] = list(targets.values())
        self.__dict__["parametrizations"] = parametrizations
        self.__dict__["groups"] = groups  # structure heads_neurons: heads and neurons, each with one score
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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Folders saved before the Lagrangian held a lambda controller's scale instead: ignore it, start at zero.
        if state_dict.pop(prefix + "log_lambda_scale", None) is not None:
            state_dict.setdefault(prefix + "multipliers", torch.zeros(2, dtype=torch.float64))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def steps(self, total_steps: int) -> tuple[int, int]:
        """Warm-up and cool-down in optimizer steps for a run of `total_steps`."""
        warmup = resolve_steps(self.config.warmup_steps, total_steps, "pruning.warmup_steps")
        cooldown = resolve_steps(self.config.cooldown_steps, total_steps, "pruning.cooldown_steps")
        return warmup, cooldown

    def validate_run(self, total_steps: int) -> None:
        """Raise a clear error now if a run of `total_steps` cannot complete the schedule."""
        validate_schedule(total_steps, *self.steps(total_steps))

    def set_step(self, step: int, total_steps: int) -> None:
        """Move the clock to optimizer step `step` of `total_steps`; a steered L0 run takes one gradient-ascent step
        on its Lagrange multipliers per new step."""
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self.validate_run(total_steps)
        advanced = step > self._clock[0] and self._clock[1] == total_steps
        self.step.fill_(step)
        self.total_steps.fill_(total_steps)
        self._clock = (step, total_steps)
        if advanced and self.lagrangian_active:
            self._ascend()

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
    def density_band(self) -> tuple[float, float] | None:
        """A steered run's (lowest, highest) density for the masks now: [target * (1 - tolerance), target]."""
        target = self.target_density
        if target is None:
            return None
        return target * (1 - self.config.steering_tolerance), target

    @property
    def lagrangian(self) -> bool:
        """A steered L0 run: the Lagrangian on the expected density replaces lambda * R."""
        return self.config.steered and self.method.lagrangian

    @property
    def lagrangian_active(self) -> bool:
        """Between warm-up and cool-down: before, the target is the initial density (nothing to prune); in the
        cool-down the masks are the Top-v, no gates are sampled."""
        step, total = self._clock
        return self.lagrangian and total > 0 and step >= self.steps(total)[0] and not self.snapped

    @property
    def lambda_value(self) -> float:
        """lambda(t) of the paper's lambda * R (a steered L0 run uses its multipliers instead)."""
        return self.method.lambda_at(self.config, self.schedule_value)

    def expected_density(self) -> float:
        """L0: the expected fraction of the pruned weights whose training-time gate is open, now."""
        with torch.no_grad():
            return float(self.method.expected_density(self.config, [s.detach() for s in self._scores()]))

    def _ascend(self) -> None:
        """Gradient ascent on the multipliers: dL/dlambda_1 = E[density] - t, dL/dlambda_2 = (E[density] - t)^2, so
        lambda_1 grows while the gates keep too much and shrinks (below zero if need be) while they keep too little."""
        gap = self.expected_density() - self.target_density
        step = torch.tensor([gap, gap * gap], dtype=self.multipliers.dtype)
        # Per score: E[density]'s gradient on each score carries 1 / (number of scores), so the multipliers must
        # grow in proportion to the model's size to move its scores alike.
        rate = self.config.lagrangian_learning_rate * sum(s.numel() for s in self._scores())
        self.multipliers.add_(step.to(self.multipliers.device), alpha=rate)

    # -- masks ---------------------------------------------------------------------------------------------------
    def _weights(self) -> list[Tensor]:
        return [lin.parametrizations.weight.original for lin in self.linears]

    def _scores(self) -> list[Tensor]:
        """What the method selects over: each matrix's scores, or, for groups, each layer's group scores as units."""
        scores = [p.scores for p in self.parametrizations]
        return scores if self.groups is None else self.groups.to_units(self.groups.set_scores(scores))

    def _selection(self, training: bool) -> Selection:
        if self.snapped:
            return Selection(self.schedule_value, training, snap_density=self.config.final_density)
        return Selection(self.schedule_value, training, band=self.density_band)

    def _stochastic(self, training: bool) -> bool:
        return training and self.method.name == "l0" and not self.snapped

    def mask(self, index: int, training: bool) -> Tensor:
        """The weight-level mask of matrix `index` in the current state."""
        if self._stochastic(training):  # a fresh hard-concrete sample per forward, differentiable in the scores
            if self.groups is not None:
                owner = self.parametrizations[self.parametrizations[index].owner]
                shape = self.linears[index].parametrizations.weight.original.shape
                return self.groups.sampled_mask(index, owner.scores, self._gates, shape)
            scores = self.parametrizations[index].scores
            sample = self.method.masks(self.config, [], [scores], self._selection(True))[0]
            return expand_mask(sample, self.config.block_shape)
        return self.binary_masks()[index]

    def binary_masks(self) -> list[Tensor]:
        """The deterministic binary masks of the current state: what evaluation and export apply, and training too
        for every method but L0. Boolean, one byte per weight, applied as ``torch.where(mask, weight, 0)`` (the values
        of ``weight * float_mask`` in one pass, a quarter of the memory); with structure heads_neurons a broadcast view
        of the group masks, which costs no memory per weight. Cached until the clock moves, an optimizer steps, a score
        (a weight for magnitude) is changed in place or replaced, or :meth:`invalidate` is called."""
        held = [p.scores for p in self.parametrizations if p.scores is not None]
        tracked = self._weights() if not self.method.uses_scores else held
        key = (
            self._clock,
            _optimizer_steps,
            tuple(t._version for t in tracked),
            tuple(t.data_ptr() for t in tracked),
        )
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._compute())
        return self._cache[1]

    def invalidate(self) -> None:
        """Recompute the masks on next use. Needed only after changing scores (or weights, for magnitude) other
        than by an optimizer step or an in-place tensor operation, e.g. through ``.data`` or a custom kernel."""
        self._cache = None

    def _gates(self, scores: Tensor) -> Tensor:
        """A training-time sample of the method's gates for ``scores`` (L0's hard-concrete)."""
        return self.method.masks(self.config, [], [scores], self._selection(True))[0]

    def _compute(self) -> list[Tensor]:
        weights = self._weights()
        if self.groups is not None:
            with torch.no_grad():
                held = [p.scores.detach() if p.scores is not None else None for p in self.parametrizations]
                detached = [w.detach() for w in weights]
                return self.groups.masks(self.method, self.config, detached, held, self._selection(training=False))
        scores = self._scores() if self.method.uses_scores else [None] * len(weights)
        with torch.no_grad():
            group_masks = self.method.masks(
                self.config,
                [w.detach() for w in weights],
                [s.detach() if s is not None else s for s in scores],
                self._selection(training=False),
            )
        return [expand_mask(m, self.config.block_shape) for m in group_masks]

    def density(self) -> float:
        """Fraction of the pruned weights kept by the binary masks now."""
        masks = self.binary_masks()
        return sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks)

    # -- the regularizer -----------------------------------------------------------------------------------------
    def regularizer(self, loss: Tensor | None = None) -> Tensor | None:
        """The term to add to the loss: lambda(t) * R(S), times ``loss`` (detached) with regularization_normalize
        loss; for a steered L0 run the Lagrangian lambda_1 (E[density] - t) + lambda_2 (E[density] - t)^2 (Wang et
        al. 2020). None when the method has none, lambda is 0 now, or a steered L0 run is outside its Lagrangian's
        window."""
        if self.lagrangian:
            if not self.lagrangian_active:
                return None
            gap = self.method.expected_density(self.config, self._scores()) - self.target_density
            lambda_1, lambda_2 = self.multipliers.tolist()
            value = lambda_1 * gap + lambda_2 * gap * gap
            self.last_regularizer = value.detach()
            return value
        lam = self.lambda_value
        if lam == 0:
            return None
        value = self.method.regularizer(self.config, self._scores())
        if value is None:
            return None
        self.last_regularizer = value.detach()
        if self.config.regularization_normalize == "loss":
            if loss is None:
                raise ValueError(
                    "regularization_normalize loss: pass the loss the penalty is added to, regularizer(loss)"
                )
            return lam * loss.detach() * value
        return lam * value

    def log_values(self) -> dict[str, float]:
        """What the training logs show each logging step."""
        values = {"density": self.density()}
        if self.lagrangian:
            lambda_1, lambda_2 = self.multipliers.tolist()
            values |= {"expected_density": self.expected_density(), "lambda_1": lambda_1, "lambda_2": lambda_2}
        else:
            values["lambda"] = self.lambda_value
        if self.method.scheduled == "threshold":
            values["threshold"] = self.schedule_value
        if self.target_density is not None:
            values["target_density"] = self.target_density
        if self.last_regularizer is not None:
            values["regularizer"] = float(self.last_regularizer)
        return values
