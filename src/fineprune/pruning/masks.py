"""The tensor-level pieces of pruning: exact Top-v selection, thresholds, the hard-concrete gate, block
granularity, and the straight-through product ``W * M``.

Scores live at *group* granularity: one score per block of ``block_shape`` weights (``(1, 1)``: one per weight;
``(1, in_features)``: one per row). Masks are computed per group and expanded to the weight's shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor

# Hard-concrete settings of the paper (Louizos et al. 2018's gate): temperature, stretch; and the noise's margin.
L0_BETA = 2 / 3
L0_LEFT = -0.1
L0_RIGHT = 1.1
L0_EPS = 1e-6


def keep_count(density: float, n: int) -> int:
    """How many of `n` entries density `density` keeps: floor(density * n), with the density read as the decimal
    the user wrote (``0.29 * 100`` keeps 29, not the 28 that binary floating point would give)."""
    return math.floor(Fraction(repr(float(density))) * n)


_SAMPLE_SIZE = 1 << 14
_EXACT_BELOW = 1 << 16


def _row_counts(mask: Tensor) -> list[int]:
    """The True entries of each row. Row by row with ``count_nonzero``: a sum, or a count along dim 1, converts the
    booleans to integers first, which takes longer on the CPU than the count itself."""
    return [int(row.count_nonzero()) for row in mask]


def _sample_order(samples: Tensor, index: int) -> Tensor:
    """Each row's ``index``-th smallest sample (0-based; -inf before the first, +inf past the last). Row by row: the
    CPU's selection or sort along dim 1 is many times slower than on each row."""
    count, size = samples.shape
    if not 0 <= index < size:
        return samples.new_full((count,), -math.inf if index < 0 else math.inf)
    return torch.stack([row.kthvalue(index + 1).values for row in samples])


def kth_smallest_rows(rows: Tensor, j: int) -> Tensor:
    """The exact j-th smallest value (1-based) of each row of a 2-D tensor, by selection on a small bracket.

    A fixed-seed sample of 16,384 positions brackets each row's answer within about four standard errors; one
    counting pass and one gather keep the entries inside the brackets (about 2% of them), and ``kthvalue`` finishes
    on each row's. The answer is exact whatever the sample (a missed bracket falls back to ``kthvalue`` on the row);
    the sample only makes it fast: about 5x faster than ``kthvalue`` over 10M entries, 30x faster than a sort. The
    comparisons and the gather run once for all the rows: a model's matrices of one size share them (each operation
    costs a synchronisation of the CPU threads or a GPU launch, a price that a machine busy with other work raises).
    """
    n = rows.shape[1]
    if n <= _EXACT_BELOW:
        return rows.kthvalue(j, dim=1).values
    generator = torch.Generator(device=rows.device).manual_seed(0)
    positions = torch.randint(0, n, (_SAMPLE_SIZE,), device=rows.device, generator=generator)
    q = j / n
    margin = 4 * math.sqrt(q * (1 - q) / _SAMPLE_SIZE) + 2 / _SAMPLE_SIZE
    low_index, high_index = math.floor((q - margin) * _SAMPLE_SIZE), math.ceil((q + margin) * _SAMPLE_SIZE)
    samples = rows.index_select(1, positions)
    low, high = _sample_order(samples, low_index), _sample_order(samples, high_index)
    below = _row_counts(rows < low[:, None])
    inside = (rows >= low[:, None]) & (rows <= high[:, None])
    parts = rows[inside].split(_row_counts(inside))  # row-major: each row's bracket
    return torch.stack(
        [
            part.kthvalue(j - before).values if 1 <= j - before <= part.numel() else row.kthvalue(j).values
            for row, part, before in zip(rows, parts, below, strict=True)
        ]
    )


def kth_smallest(flat: Tensor, j: int) -> Tensor:
    """The exact j-th smallest value (1-based) of a 1-D tensor (:func:`kth_smallest_rows` of one row)."""
    return kth_smallest_rows(flat[None], j)[0]


def topv_rows(rows: Tensor, k: int) -> Tensor:
    """Boolean mask keeping exactly the `k` largest entries of each row of a 2-D tensor (ties broken by position,
    first wins). Uses selection (:func:`kth_smallest_rows`), not a sort."""
    n = rows.shape[1]
    if k >= n:
        return torch.ones_like(rows, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(rows, dtype=torch.bool)
    thresholds = kth_smallest_rows(rows, n - k)[:, None]  # (n-k)-th smallest: at most k entries lie above it
    mask = rows > thresholds
    for i, missing in enumerate(k - kept for kept in _row_counts(mask)):
        if missing > 0:
            ties = (rows[i] == thresholds[i]).nonzero().squeeze(1)[:missing]
            mask[i, ties] = True
    return mask


def topv_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean mask keeping exactly the `k` largest entries of `scores` (ties broken by position, first wins)."""
    return topv_rows(scores.reshape(1, -1), k).view_as(scores)


def topv_masks(scores: list[Tensor], density: float, scope: str) -> list[Tensor]:
    """Top-v per matrix (`local`: the matrices of one size as the rows of one tensor) or with one threshold over
    all matrices (`global`)."""
    if scope == "local":
        masks: list[Tensor] = [None] * len(scores)  # type: ignore[list-item]
        by_size: dict[int, list[int]] = {}
        for i, s in enumerate(scores):
            by_size.setdefault(s.numel(), []).append(i)
        for n, members in by_size.items():
            kept = topv_rows(torch.stack([scores[i].reshape(-1) for i in members]), keep_count(density, n))
            for i, row in zip(members, kept, strict=True):
                masks[i] = row.view_as(scores[i])
        return masks
    flat = torch.cat([s.reshape(-1) for s in scores])
    mask = topv_mask(flat, keep_count(density, flat.numel()))
    return [m.view_as(s) for m, s in zip(mask.split([s.numel() for s in scores]), scores, strict=True)]


def threshold_mask(scores: Tensor, threshold: float, min_density: float) -> Tensor:
    """Soft movement: keep sigmoid(S) > threshold, and at least floor(min_density * n) entries (the largest)."""
    mask = torch.sigmoid(scores) > threshold
    floor = keep_count(min_density, scores.numel())
    if int(mask.sum()) < floor:
        return topv_mask(scores, floor)
    return mask


class _HardConcreteSample(torch.autograd.Function):
    """Forward and backward of the hard-concrete sample in few passes over memory (it runs every forward)."""

    @staticmethod
    def forward(ctx, log_alpha: Tensor, beta: float, left: float, right: float) -> Tensor:
        s = torch.empty_like(log_alpha).uniform_(L0_EPS, 1 - L0_EPS).logit_().add_(log_alpha)
        s.div_(beta).sigmoid_()
        stretched = s * (right - left) + left
        ctx.save_for_backward(s, stretched)
        ctx.slope = (right - left) / beta
        return stretched.clamp(0, 1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        s, stretched = ctx.saved_tensors
        inside = (stretched > 0) & (stretched < 1)
        return grad * s * (1 - s) * ctx.slope * inside, None, None, None


@dataclass(frozen=True)
class HardConcrete:
    """The L0 gate of Louizos et al. 2018 with its temperature ``beta`` and stretch interval ``(left, right)``
    (l < 0 < 1 < r, so that a gate is exactly 0 or 1 with positive probability); the defaults are the paper's."""

    beta: float = L0_BETA
    left: float = L0_LEFT
    right: float = L0_RIGHT

    def sample(self, log_alpha: Tensor) -> Tensor:
        """A training-time gate: u ~ U(eps, 1-eps), s = sigmoid((log u - log(1-u) + log_alpha) / beta),
        clamp(s * (r - l) + l, 0, 1). Differentiable in log_alpha (zero gradient where the clamp is active)."""
        return _HardConcreteSample.apply(log_alpha, self.beta, self.left, self.right)

    def gate(self, log_alpha: Tensor) -> Tensor:
        """The deterministic (expected-value) gate: clamp(sigmoid(log_alpha) * (r - l) + l, 0, 1)."""
        return (torch.sigmoid(log_alpha) * (self.right - self.left) + self.left).clamp(0, 1)

    def binary(self, log_alpha: Tensor) -> Tensor:
        """The binary gate used at evaluation and export: the deterministic gate rounded, gate > 0.5.

        That is sigmoid(log_alpha) > (0.5 - l) / (r - l), i.e. log_alpha > log((0.5 - l) / (r - 0.5)), computed on the
        decimals written: exactly ``log_alpha > 0`` for a stretch symmetric about 1/2, such as the paper's.
        """
        half = Fraction(1, 2)
        ratio = (half - Fraction(repr(float(self.left)))) / (Fraction(repr(float(self.right))) - half)
        return log_alpha > (0.0 if ratio == 1 else math.log(ratio))

    def open_probability(self, log_alpha: Tensor) -> Tensor:
        """P(gate != 0) = sigmoid(log_alpha - beta * log(-l / r)) (Louizos et al. 2018, eq. 12)."""
        return torch.sigmoid(log_alpha - self.beta * math.log(-self.left / self.right))


def group_scores(weight: Tensor, block_shape: tuple[int, int]) -> Tensor:
    """Mean |W| over each block: the magnitude criterion at group granularity."""
    if block_shape == (1, 1):
        return weight.abs()
    rows, cols = weight.shape
    br, bc = block_shape
    return weight.abs().view(rows // br, br, cols // bc, bc).mean(dim=(1, 3))


def expand_mask(mask: Tensor, block_shape: tuple[int, int]) -> Tensor:
    """Group-level mask -> weight-level mask."""
    if block_shape == (1, 1):
        return mask
    br, bc = block_shape
    gr, gc = mask.shape
    return mask[:, None, :, None].expand(gr, br, gc, bc).reshape(gr * br, gc * bc)


def _sum_blocks(t: Tensor, block_shape: tuple[int, int]) -> Tensor:
    if block_shape == (1, 1):
        return t
    rows, cols = t.shape
    br, bc = block_shape
    return t.view(rows // br, br, cols // bc, bc).sum(dim=(1, 3))


def apply_mask(values: Tensor, mask: Tensor) -> Tensor:
    """``values * mask``. For a boolean mask ``torch.where(mask, values, 0)``: the same values (a pruned entry is 0
    where the product gives -0 for a negative weight) in one pass, where the product would first convert the booleans
    to a float tensor as large as the weight."""
    return torch.where(mask, values, 0.0) if mask.dtype == torch.bool else values * mask


class StraightThroughMask(torch.autograd.Function):
    """W' = W * M with a hard mask M computed from scores S; the gradient skips the mask's step function:
    dL/dW = dL/dW' * M and dL/dS = dL/dW' * W (summed over each block for group scores)."""

    @staticmethod
    def forward(ctx, weight: Tensor, scores: Tensor, mask: Tensor, block_shape: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(weight, mask)
        ctx.block_shape = block_shape
        return apply_mask(weight, mask)

    @staticmethod
    def backward(ctx, grad: Tensor):
        weight, mask = ctx.saved_tensors
        grad_weight = apply_mask(grad, mask) if ctx.needs_input_grad[0] else None
        grad_scores = _sum_blocks(grad * weight, ctx.block_shape) if ctx.needs_input_grad[1] else None
        return grad_weight, grad_scores, None, None
