"""Tensor-level pieces, against numbers worked out by hand or in float64."""

import math

import pytest
import torch

from fineprune.pruning.masks import (
    HardConcrete,
    StraightThroughMask,
    expand_mask,
    group_scores,
    keep_count,
    kth_smallest,
    threshold_mask,
    topv_mask,
    topv_masks,
)


def test_keep_count_is_floor_of_the_decimal_product():
    assert keep_count(0.29, 100) == 29  # float 0.29 * 100 = 28.999999999999996 would floor to 28
    assert keep_count(0.1, 36) == 3  # 3.6 -> 3
    assert keep_count(0.999, 10) == 9
    assert keep_count(1.0, 7) == 7
    assert keep_count(0.03, 10_616_832) == 318_504  # 318504.96 -> 318504


def test_topv_keeps_the_largest_exactly():
    scores = torch.tensor([[0.5, -1.0, 3.0], [2.0, 0.0, -2.0]])
    assert topv_mask(scores, 2).tolist() == [[False, False, True], [True, False, False]]
    assert topv_mask(scores, 0).sum() == 0
    assert topv_mask(scores, 6).all()


def test_topv_ties_keep_exact_count_first_position_wins():
    scores = torch.zeros(10)  # movement scores at initialisation: all tied
    mask = topv_mask(scores, 3)
    assert mask.tolist() == [True] * 3 + [False] * 7
    scores = torch.tensor([5.0, 1.0, 1.0, 1.0, 0.0])
    assert topv_mask(scores, 3).tolist() == [True, True, True, False, False]


@pytest.mark.parametrize("density", [0.5, 0.1, 0.03, 0.333])
def test_local_and_global_counts(density):
    torch.manual_seed(0)
    scores = [torch.randn(64, 32), torch.randn(32, 64) + 1, torch.randn(16, 16)]
    local = topv_masks(scores, density, "local")
    for s, m in zip(scores, local):
        assert int(m.sum()) == math.floor(density * s.numel() + 1e-9)
    glob = topv_masks(scores, density, "global")
    total = sum(s.numel() for s in scores)
    assert sum(int(m.sum()) for m in glob) == math.floor(density * total + 1e-9)
    # one threshold: every kept score is >= every dropped score, across matrices
    kept = torch.cat([s[m] for s, m in zip(scores, glob)])
    dropped = torch.cat([s[~m] for s, m in zip(scores, glob)])
    assert kept.min() >= dropped.max()
    # the shifted matrix gets more than its share
    assert glob[1].float().mean() > density


def test_magnitude_keeps_largest_abs():
    w = torch.tensor([[0.1, -5.0], [2.0, -0.3]])
    mask = topv_mask(group_scores(w, (1, 1)), 2)
    assert mask.tolist() == [[False, True], [True, False]]


def test_threshold_mask_and_floor():
    scores = torch.tensor([-3.0, -1.0, 0.0, 2.0])  # sigmoid: 0.047, 0.269, 0.5, 0.881
    assert threshold_mask(scores, 0.25, 0.0).tolist() == [False, True, True, True]
    assert threshold_mask(scores, 0.6, 0.0).tolist() == [False, False, False, True]
    # nothing above 0.95, but min_density 0.5 keeps floor(0.5 * 4) = 2, the largest
    assert threshold_mask(scores, 0.95, 0.5).tolist() == [False, False, True, True]
    # the paper's 0.5% floor on a 1,000-entry matrix: 5 kept
    assert int(threshold_mask(torch.full((1000,), -10.0), 0.1, 0.005).sum()) == 5


PAPER_GATE = HardConcrete()  # beta 2/3, stretch (-0.1, 1.1)


def test_hard_concrete_gate_formula():
    # clamp(sigmoid(a) * 1.2 - 0.1, 0, 1), by hand
    log_alpha = torch.tensor([0.0, math.log(9), -math.log(9), 5.0, -5.0], dtype=torch.float64)
    expected = [0.5, 0.9 * 1.2 - 0.1, 0.1 * 1.2 - 0.1, 1.0, 0.0]
    assert PAPER_GATE.gate(log_alpha).tolist() == pytest.approx(expected)
    assert PAPER_GATE.binary(log_alpha).tolist() == [False, True, False, True, False]


# (beta, l, r): the paper's gate, and a sharper one stretched asymmetrically
GATES = [(2 / 3, -0.1, 1.1), (0.4, -0.3, 1.05)]


@pytest.mark.parametrize(("beta", "left", "right"), GATES)
def test_hard_concrete_samples_in_unit_interval_and_follow_log_alpha(beta, left, right):
    torch.manual_seed(0)
    log_alpha = torch.tensor([-4.0, 0.0, math.log(9), 4.0]).repeat(20_000, 1).requires_grad_()
    sample = HardConcrete(beta, left, right).sample(log_alpha)
    assert sample.min() >= 0 and sample.max() <= 1
    means = sample.mean(0)
    assert means[0] < means[1] < means[2] < means[3]
    # The gate is 0 when s <= -l / (r - l), s = sigmoid((logit(u) + log_alpha) / beta), u uniform: so P(gate = 0) =
    # P(logit(u) <= beta logit(-l / (r - l)) - log_alpha) = sigmoid(beta log(-l / r) - log_alpha) (0.1674 for the
    # paper's gate at log_alpha = 0); in float64 by hand, for each column
    for column, a in enumerate([-4.0, 0.0, math.log(9), 4.0]):
        p_zero = 1 / (1 + math.exp(-(beta * math.log(-left / right) - a)))
        assert (sample[:, column] == 0).double().mean().item() == pytest.approx(p_zero, abs=0.01)
    sample.sum().backward()
    assert log_alpha.grad.abs().sum() > 0


@pytest.mark.parametrize(("beta", "left", "right"), GATES)
def test_hard_concrete_sample_and_gradient_against_float64_finite_differences(beta, left, right):
    """With the noise u fixed, the gate is g(a) = clamp(sigmoid((log u - log(1-u) + a) / beta) (r - l) + l, 0, 1);
    the sample must equal it and its gradient must equal dg/da, by central differences in float64 (0 where the clamp
    holds the gate at 0 or 1)."""
    log_alpha = torch.linspace(-4, 4, 401, dtype=torch.float64)
    torch.manual_seed(7)
    noise = torch.empty_like(log_alpha).uniform_(1e-6, 1 - 1e-6)  # the draw the sample makes under the same seed
    torch.manual_seed(7)
    a = log_alpha.clone().requires_grad_()
    sample = HardConcrete(beta, left, right).sample(a)
    sample.sum().backward()

    def gate(values: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid((torch.log(noise) - torch.log1p(-noise) + values) / beta)
        return (s * (right - left) + left).clamp(0, 1)

    h = 1e-6
    numeric = (gate(log_alpha + h) - gate(log_alpha - h)) / (2 * h)
    stretched = gate(log_alpha).detach()
    inside = (stretched > 1e-4) & (stretched < 1 - 1e-4)  # away from the clamp's kinks
    assert torch.allclose(sample.detach(), gate(log_alpha), atol=1e-12)
    assert inside.sum() > 50 and (stretched == 0).any() and (stretched == 1).any()
    assert torch.allclose(a.grad[inside], numeric[inside], rtol=1e-6, atol=1e-9)
    assert (a.grad[(stretched == 0) | (stretched == 1)] == 0).all()


def test_binary_gate_of_an_asymmetric_stretch_rounds_the_deterministic_gate():
    """Stretch (-0.3, 1.05): sigmoid(a) * 1.35 - 0.3 > 0.5 where a > log(0.8 / 0.55) = 0.3747; the paper's a > 0."""
    gate = HardConcrete(0.4, -0.3, 1.05)
    log_alpha = torch.linspace(-3, 3, 6001, dtype=torch.float64)
    by_hand = torch.sigmoid(log_alpha) * 1.35 - 0.3 > 0.5
    assert torch.equal(gate.binary(log_alpha), by_hand) and by_hand.sum() < (log_alpha > 0).sum()
    assert gate.binary(torch.tensor([0.37, 0.38])).tolist() == [False, True]
    assert torch.equal(gate.gate(log_alpha), (torch.sigmoid(log_alpha) * 1.35 - 0.3).clamp(0, 1))


def test_straight_through_gradient_by_hand():
    # y = (W * M) x, L = g . y  =>  dL/dW' = g x^T;  dL/dS = (g x^T) * W;  dL/dW = (g x^T) * M
    w = torch.tensor([[1.0, -2.0], [3.0, 4.0]], requires_grad=True)
    s = torch.zeros(2, 2, requires_grad=True)
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([1.0, 2.0])
    g = torch.tensor([1.0, -1.0])
    loss = g @ (StraightThroughMask.apply(w, s, m, (1, 1)) @ x)
    loss.backward()
    # g x^T = [[1, 2], [-1, -2]]
    assert s.grad.tolist() == [[1.0, -4.0], [-3.0, -8.0]]
    assert w.grad.tolist() == [[1.0, 0.0], [0.0, -2.0]]


def test_block_scores_and_gradient():
    w = torch.arange(16.0).view(4, 4) - 8  # rows -8..-5, -4..-1, 0..3, 4..7
    # block means of |W|: (8+7+4+3)/4, (6+5+2+1)/4, (0+1+4+5)/4, (2+3+6+7)/4
    assert group_scores(w, (2, 2)).tolist() == [[5.5, 3.5], [2.5, 4.5]]
    mask = expand_mask(torch.tensor([[True, False], [False, True]]), (2, 2))
    assert mask.tolist()[0] == [True, True, False, False]
    assert mask.tolist()[3] == [False, False, True, True]
    s = torch.zeros(2, 2, requires_grad=True)
    wp = w.clone().requires_grad_()
    StraightThroughMask.apply(wp, s, mask.float(), (2, 2)).sum().backward()
    # dL/dW' = 1 everywhere: each block score gets the sum of its weights
    assert s.grad.tolist() == [[-22.0, -14.0], [10.0, 18.0]]


@pytest.mark.parametrize(
    "values",
    [
        torch.randn(300_000, generator=torch.Generator().manual_seed(0)),
        torch.randint(0, 7, (200_000,), generator=torch.Generator().manual_seed(1)).float(),  # heavy ties
        torch.cat([torch.zeros(150_000), torch.randn(100_000, generator=torch.Generator().manual_seed(2))]),
    ],
)
@pytest.mark.parametrize("fraction", [0.0001, 0.03, 0.5, 0.9, 0.99999])
def test_kth_smallest_is_exact_on_large_tensors(values, fraction):
    j = max(1, int(fraction * values.numel()))
    assert kth_smallest(values, j) == values.sort().values[j - 1]


@pytest.mark.parametrize("scope", ["local", "global"])
def test_topv_masks_of_many_matrices_are_a_sorted_top_v(scope):
    """Local Top-v selects the matrices of one size together (as the rows of one tensor): each must still get its own
    exact Top-v, ties to the earlier position, above and below the size where the sampled bracket starts."""
    generator = torch.Generator().manual_seed(4)
    shapes = [(300, 300), (300, 300), (200, 450), (300, 300), (40, 50), (50, 40)]
    scores = [torch.randn(shape, generator=generator) for shape in shapes]
    scores[1] = scores[1].mul(3).round()  # heavy ties
    scores[4] = scores[4].round()
    density = 0.17

    def sorted_top_v(values: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(values.numel(), dtype=torch.bool)
        mask[values.sort(descending=True, stable=True).indices[: keep_count(density, values.numel())]] = True
        return mask

    if scope == "local":
        expected = [sorted_top_v(s.flatten()).view_as(s) for s in scores]
    else:
        flat = sorted_top_v(torch.cat([s.flatten() for s in scores]))
        expected = [m.view_as(s) for m, s in zip(flat.split([s.numel() for s in scores]), scores, strict=True)]
    for got, want in zip(topv_masks(scores, density, scope), expected, strict=True):
        assert torch.equal(got, want)


def test_topv_on_large_tensor_keeps_exact_count_and_the_largest():
    scores = torch.randn(500, 400, generator=torch.Generator().manual_seed(3))
    mask = topv_mask(scores, 6000)
    assert int(mask.sum()) == 6000
    assert scores[mask].min() > scores[~mask].max()
