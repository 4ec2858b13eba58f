"""Scores initialised from the weights (issue 10, lever 2): the first masks are magnitude's."""

import numpy as np
import pytest
import torch
from conftest import tiny_model

import fineprune as fp


def standardised_abs(weight: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """(|W| block mean - its mean) / its sample standard deviation, with explicit loops in float64."""
    rows, cols = weight.shape
    br, bc = block
    means = np.empty((rows // br, cols // bc))
    for i in range(rows // br):
        for j in range(cols // bc):
            means[i, j] = np.abs(weight[i * br : (i + 1) * br, j * bc : (j + 1) * bc]).mean()
    return (means - means.mean()) / means.std(ddof=1)


@pytest.mark.parametrize("block", [(1, 1), (2, 4)])
@pytest.mark.parametrize("method,offset", [("movement", 0.0), ("l0", np.log(9.0))])
def test_scores_start_from_standardised_magnitudes(block, method, offset):
    model = tiny_model("bert")
    weights = {n: m.weight.detach().double().numpy().copy() for n, m in model.named_modules() if n.endswith("query")}
    config = fp.PruningConfig(
        method=method, final_density=0.3, block_shape=block, scores_init_from_weights=True, scores_init_scale=0.5
    )
    fp.prepare(model, config)
    for name, weight in weights.items():
        scores = model.get_submodule(name).parametrizations.weight[0].scores.detach().double().numpy()
        np.testing.assert_allclose(scores, offset + 0.5 * standardised_abs(weight, block), rtol=1e-5, atol=1e-6)


def test_first_movement_mask_is_magnitudes():
    """At the first pruning step, movement with weight-initialised scores keeps exactly magnitude's Top-v."""
    masks = {}
    for method in ("movement", "magnitude"):
        model = tiny_model("bert")
        fp.prepare(model, fp.PruningConfig(method=method, final_density=0.3, scores_init_from_weights=True))
        pruner = fp.get_pruner(model)
        pruner.set_step(10, 10)
        masks[method] = pruner.binary_masks()
    for moved, magnitude in zip(masks["movement"], masks["magnitude"]):
        assert torch.equal(moved, magnitude)


def test_default_scores_are_constant():
    model = tiny_model("bert")
    fp.prepare(model, fp.PruningConfig(method="movement", final_density=0.3))
    scores = [p for n, p in model.named_parameters() if n.endswith("scores")]
    assert all(bool((s == 0).all()) for s in scores)
