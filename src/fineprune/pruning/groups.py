"""Structured pruning groups (``structure: heads_neurons``): attention heads and FFN neurons.

A group is a slice across several matrices of one encoder layer, and it has one score:
- a head: its ``head_dim`` rows of query, key and value and its ``head_dim`` columns of the attention output
  (``4 * head_dim * hidden`` weights);
- an FFN neuron: its row of FFN-in and its column of FFN-out (``2 * hidden`` weights).
The layers' six matrices are found by type, order and shape (:func:`block_linears`), the head count is the model
config's. The masks stay per-matrix :class:`MaskedWeight` parametrizations; they are derived from the group masks.

Selection is by the weights a group holds, so ``final_density`` keeps its meaning (the fraction of the pruned
weights kept): every group counts as ``size / unit`` equal units, ``unit`` the greatest common divisor of the group
sizes (``2 * hidden``: a neuron is one unit, a head ``2 * head_dim``), and the pruning methods select over those
units exactly as they select over the weights of unstructured runs. A group is kept when at least half its units
are: a Top-v keeps the groups with the highest scores (ties: earlier position first), and the one group it cuts
through is kept if at least half of it fits. So the kept weights are within half a group (half a head, in practice)
of ``floor(density * n)`` per pool, and grow with the density (``sparsity()`` reports the density reached). Thresholds (soft movement) and gates (L0) decide per
group, and the regularizers and L0's expected density weigh each group by its weights. ``scope: local`` pools each
layer's heads and neurons, ``global`` all layers'. With ``group_budget: per_kind`` the heads and the neurons each
keep ``final_density`` of their own weights (per layer, or across layers with ``global``).

Magnitude ranks a group by the L2 norm of all its weights divided by the square root of their number (the RMS): among
groups of one kind that is the L2 norm's order, and it makes a head and a neuron comparable (greedy by kept energy per
weight). Learned scores (movement, soft movement, L0) are one parameter per group, held by the group's first matrix
(query for heads, FFN-in for neurons); the straight-through gradient is the sum of ``dL/dW' * W`` over the group's
weights in every matrix it touches (autograd adds the matrices' parts).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

import torch
from torch import Tensor, nn

from fineprune.errors import UsageError
from fineprune.layouts import COMPACT_KEY, block_linears, config_heads, encoder_layers
from fineprune.pruning.config import PruningConfig
from fineprune.pruning.masked import MaskedWeight, standardised
from fineprune.pruning.masks import apply_mask

HEADS = "heads"
NEURONS = "neurons"


@dataclass(frozen=True)
class GroupSlice:
    """Where the groups of a set lie in one matrix: ``width`` consecutive rows (``axis`` 0) or columns (1) each."""

    matrix: int
    axis: int
    width: int

    def sums(self, values: Tensor, count: int) -> Tensor:
        """Sum of ``values`` (shaped like the matrix) over each group's slice: one entry per group."""
        if self.axis == 0:
            return values.reshape(count, -1).sum(1)
        return values.reshape(values.shape[0], count, self.width).sum((0, 2))

    def expand(self, per_group: Tensor, shape: torch.Size) -> Tensor:
        """One value per group -> one per weight of the matrix: a broadcast view of one row or column, so that a
        matrix's mask costs a vector's memory, not a matrix's."""
        spread = per_group.repeat_interleave(self.width)
        return (spread[:, None] if self.axis == 0 else spread[None, :]).expand(shape)


@dataclass(frozen=True)
class GroupSet:
    """The groups of one kind in one layer, with the slices they own in each matrix they touch."""

    kind: str
    layer: int
    count: int
    size: int  # weights per group
    slices: tuple[GroupSlice, ...]

    @property
    def owner(self) -> int:
        """The matrix whose parametrization holds the set's scores."""
        return self.slices[0].matrix


class GroupLayout:
    """Every group set of a pruned model, and the bookkeeping between groups, selection units and matrices."""

    def __init__(self, sets: list[GroupSet], n_matrices: int, budget: str = "shared"):
        self.sets = sets
        self.unit = reduce(math.gcd, (s.size for s in sets))
        # pools: what scope local selects within (a layer, or a layer's heads and its neurons apart); budgets: the
        # pools that share one budget (all of them, or each kind's)
        keys = sorted({(s.layer, s.kind if budget == "per_kind" else "") for s in sets})
        self.pools = [
            [i for i, s in enumerate(sets) if (s.layer, s.kind if k else "") == (layer, k)] for layer, k in keys
        ]
        kinds = sorted({k for _, k in keys})
        self.budgets = [[j for j, (_, k) in enumerate(keys) if k == kind] for kind in kinds]
        self.of_matrix: list[tuple[int, GroupSlice]] = [None] * n_matrices  # type: ignore[list-item]
        for i, group_set in enumerate(sets):
            for piece in group_set.slices:
                self.of_matrix[piece.matrix] = (i, piece)
        self._gates: dict[int, tuple[Tensor, set[int]]] = {}  # L0: the sample each set's matrices share in a forward

    def units_per_group(self, group_set: GroupSet) -> int:
        return group_set.size // self.unit

    def to_units(self, per_set: list[Tensor]) -> list[Tensor]:
        """One value per group -> one per unit, concatenated per pool (layer): what the methods select over."""
        return [
            torch.cat([per_set[i].repeat_interleave(self.units_per_group(self.sets[i])) for i in pool])
            for pool in self.pools
        ]

    def from_units(self, unit_masks: list[Tensor]) -> list[Tensor]:
        """Unit masks per pool -> one boolean per group, per set: a group is kept when at least half its units are
        (they differ only in the group a Top-v cuts through)."""
        per_set: list[Tensor] = [None] * len(self.sets)  # type: ignore[list-item]
        for pool, mask in zip(self.pools, unit_masks, strict=True):
            per = [self.units_per_group(self.sets[i]) for i in pool]
            sizes = [self.sets[i].count * n for i, n in zip(pool, per, strict=True)]
            for i, n, part in zip(pool, per, mask.bool().split(sizes), strict=True):
                per_set[i] = part.view(self.sets[i].count, n).sum(1) * 2 >= n
        return per_set

    def matrix_masks(self, group_masks: list[Tensor], weights: list[Tensor]) -> list[Tensor]:
        """Boolean group masks per set -> the weight-level mask of every matrix (broadcast views)."""
        return [piece.expand(group_masks[i], w.shape) for w, (i, piece) in zip(weights, self.of_matrix, strict=True)]

    def set_scores(self, matrix_scores: list[Tensor | None]) -> list[Tensor]:
        """The learned scores of each set (held by its owner matrix), from the per-matrix list."""
        return [matrix_scores[s.owner] for s in self.sets]

    def magnitudes(self, weights: list[Tensor]) -> list[Tensor]:
        """Magnitude's ranking of each group: the L2 norm of its weights over every matrix it touches, divided by the
        square root of their number."""
        return [
            sum(p.sums(weights[p.matrix].square(), s.count) for p in s.slices).div(s.size).sqrt() for s in self.sets
        ]

    def masks(self, method, config: PruningConfig, weights: list[Tensor], matrix_scores, selection) -> list[Tensor]:
        """The deterministic per-matrix masks: the method selects over the units of the groups' values."""
        values = self.set_scores(matrix_scores) if method.uses_scores else self.magnitudes(weights)
        units = self.to_units(values)
        unit_masks: list[Tensor] = [None] * len(units)  # type: ignore[list-item]
        for budget in self.budgets:
            part = [units[j] for j in budget]
            for j, mask in zip(budget, method.masks(config, part, part, selection), strict=True):
                unit_masks[j] = mask
        return self.matrix_masks(self.from_units(unit_masks), weights)

    def sampled_mask(self, matrix: int, scores: Tensor, sample: Callable[[Tensor], Tensor], shape) -> Tensor:
        """L0 in training: matrix ``matrix``'s mask from its set's gate sample. The matrices of a set share one sample
        per forward: a new one is drawn when a matrix asks a second time (the next forward, or a recomputation under
        gradient checkpointing, which restores the random state)."""
        i, piece = self.of_matrix[matrix]
        gates, used = self._gates.get(i, (None, None))
        if gates is None or matrix in used:
            gates, used = sample(scores), set()
            self._gates[i] = (gates, used)
        used.add(matrix)
        return piece.expand(gates, shape)

    def initial_scores(self, weights: list[Tensor], config: PruningConfig) -> list[Tensor]:
        """Each set's initial scores: ``initial_score``, plus with ``scores_init_from_weights`` the groups' magnitude
        standardised over each layer's groups, so that the first masks are magnitude's."""
        scores = []
        for s in self.sets:
            owner = weights[s.owner]
            scores.append(torch.full((s.count,), config.initial_score, dtype=owner.dtype, device=owner.device))
        if config.scores_init_from_weights:
            magnitudes = self.magnitudes([w.detach().double() for w in weights])
            for pool in self.pools:
                z = standardised(torch.cat([magnitudes[i] for i in pool]))
                for i, part in zip(pool, z.split([self.sets[i].count for i in pool]), strict=True):
                    scores[i] += (config.scores_init_scale * part).to(scores[i].dtype)
        return scores


class _GroupStraightThrough(torch.autograd.Function):
    """W' = W * M for a mask derived from group scores; dL/dW = dL/dW' * M and, for each group, dL/dS = the sum
    of dL/dW' * W over the group's slice of this matrix (the other matrices of the group add theirs)."""

    @staticmethod
    def forward(ctx, weight: Tensor, scores: Tensor, mask: Tensor, piece: GroupSlice) -> Tensor:
        ctx.save_for_backward(weight, mask)
        ctx.piece, ctx.count = piece, scores.numel()
        return apply_mask(weight, mask)

    @staticmethod
    def backward(ctx, grad: Tensor):
        weight, mask = ctx.saved_tensors
        grad_weight = apply_mask(grad, mask) if ctx.needs_input_grad[0] else None
        grad_scores = ctx.piece.sums(grad * weight, ctx.count) if ctx.needs_input_grad[1] else None
        return grad_weight, grad_scores, None, None


class GroupMaskedWeight(MaskedWeight):
    """Parametrization ``weight -> weight * mask`` of one matrix of a group set. The set's owner matrix holds its
    scores (one per group); every matrix of the set sends its part of their straight-through gradient."""

    def __init__(self, weight: Tensor, config: PruningConfig, piece: GroupSlice, owner: int, scores: Tensor | None):
        super().__init__(weight, config, uses_scores=False)
        self.piece = piece
        self.owner = owner  # the index of the matrix that holds the set's scores
        if scores is not None:
            self.hold_scores(scores, config)

    def forward(self, weight: Tensor) -> Tensor:
        mask = self.pruner.mask(self.index, self.training)
        scores = self.pruner.parametrizations[self.owner].scores
        if scores is None or mask.requires_grad:
            return apply_mask(weight, mask)
        return _GroupStraightThrough.apply(weight, scores, mask, self.piece)

    def weight_scores(self) -> Tensor:
        """The set's scores, one per weight of this matrix (a group's score over its slice), detached."""
        shape = self.pruner.linears[self.index].parametrizations.weight.original.shape
        return self.piece.expand(self.pruner.parametrizations[self.owner].scores.detach(), shape)


def _layer_sets(layer: int, modules: list[nn.Linear], index: list[int], heads: int) -> list[GroupSet]:
    """The head set and the neuron set of one layer from its six matrices (``index``: their places in the targets)."""
    q, _, _, _, ffn_in, _ = modules
    hidden = q.in_features
    if q.out_features % heads:
        raise UsageError(f"layer {layer}: {q.out_features} query rows do not split into {heads} heads")
    head_dim = q.out_features // heads
    head_slices = tuple(GroupSlice(m, axis, head_dim) for m, axis in zip(index[:4], (0, 0, 0, 1), strict=True))
    neuron_slices = (GroupSlice(index[4], 0, 1), GroupSlice(index[5], 1, 1))
    return [
        GroupSet(HEADS, layer, heads, 4 * head_dim * hidden, head_slices),
        GroupSet(NEURONS, layer, ffn_in.out_features, 2 * hidden, neuron_slices),
    ]


def find_groups(model: nn.Module, targets: dict[str, nn.Linear], budget: str = "shared") -> GroupLayout:
    """The heads and FFN neurons of every encoder layer whose matrices are pruning targets.

    A layer's heads (or neurons) are a group set when all four (two) of their matrices are targets; a target outside
    every group, or a set with only some of its matrices targeted, is an error: whole heads and neurons only.
    """
    config = getattr(model, "config", None)
    if config is None or getattr(config, COMPACT_KEY, None) is not None:
        raise UsageError("pruning.structure heads_neurons needs a stock transformers model (not a compact export)")
    heads = config_heads(config)
    place = {id(m): i for i, m in enumerate(targets.values())}
    names = list(targets)
    sets: list[GroupSet] = []
    for layer, block in enumerate(encoder_layers(model)):
        paths = block_linears(block)
        if paths is None:
            continue
        modules = [block.get_submodule(p) for p in paths]
        layer_sets = _layer_sets(layer, modules, [place.get(id(m), -1) for m in modules], heads)
        for group_set in layer_sets:
            chosen = [p.matrix >= 0 for p in group_set.slices]
            if all(chosen):
                sets.append(group_set)
            elif any(chosen):
                missing = [paths[j] for j, m in enumerate(modules) if id(m) not in place]
                raise UsageError(
                    f"pruning.structure heads_neurons: layer {layer}'s {group_set.kind} span matrices that are not "
                    f"all pruned ({', '.join(missing)} excluded): prune all or none of them"
                )
    grouped = {p.matrix for s in sets for p in s.slices}
    outside = [names[i] for i in range(len(names)) if i not in grouped]
    if outside:
        raise UsageError(
            f"pruning.structure heads_neurons prunes whole heads and FFN neurons: {', '.join(outside)} belongs to "
            "no head or neuron (check pruning.target_modules)"
        )
    return GroupLayout(sets, len(names), budget)


def group_parametrizations(
    model: nn.Module, targets: dict[str, nn.Linear], config: PruningConfig, uses_scores: bool
) -> tuple[GroupLayout, list[GroupMaskedWeight]]:
    """The group layout of ``model`` and one parametrization per target (owners holding the sets' scores)."""
    layout = find_groups(model, targets, config.group_budget)
    weights = [linear.weight for linear in targets.values()]
    scores = layout.initial_scores(weights, config) if uses_scores else [None] * len(layout.sets)
    parametrizations = []
    for matrix, weight in enumerate(weights):
        i, piece = layout.of_matrix[matrix]
        owner = layout.sets[i].owner
        parametrizations.append(GroupMaskedWeight(weight, config, piece, owner, scores[i] if owner == matrix else None))
    return layout, parametrizations


def removed_weights(model: nn.Module) -> int:
    """The weights of the heads and neurons a compact export removed (per its config); 0 for any other model."""
    plan = getattr(getattr(model, "config", None), COMPACT_KEY, None)
    if not plan:
        return 0
    stock_heads, hidden, removed = config_heads(model.config), model.config.hidden_size, 0
    for block, layer in zip(encoder_layers(model), plan, strict=True):
        head_dim = layer.get("head_dim")
        if head_dim is None:  # exported before a layer could keep no head: every layer has a query to read it from
            head_dim = block.get_submodule(block_linears(block).query).out_features // len(layer["heads"])
        removed += (stock_heads - len(layer["heads"])) * 4 * head_dim * hidden
        removed += (layer["stock_ffn_width"] - layer["ffn_width"]) * 2 * hidden
    return removed
