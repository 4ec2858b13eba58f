"""How the pruning scores learn from their gradient, beside the optimizer's AdamW (``scores_update``).

The scores' gradient is the straight-through ``dL/dS = dL/dW' * W`` (summed over a block for group scores). AdamW
divides it by its running RMS, so the ``|W|`` factor cancels and a score only counts how consistently its weight
wanted to grow. The rules here keep that factor:

- ``sgd``: ``S <- S - lr * dL/dS``, the paper's accumulation ``S = -sum_t lr_t * dL/dW'_t * W_t`` (no momentum, no
  weight decay). Raw score gradients are small (1e-6 to 1e-3 on a pretrained encoder), so its learning rate is
  orders of magnitude above AdamW's; only the order of the scores matters to Top-v, so it scales nothing but the
  size of the scores against their initial values (and, for soft movement / L0, against the fixed threshold).
- ``platon``: PLATON's upper confidence bound of importance (Zhang et al. 2022) with importance
  ``I = |dL/dS| = |dL/dW' * W|`` (for a block: ``|sum over the block|``, the first-order change of the loss if
  the whole block were removed): ``I_bar <- b1 * I_bar + (1 - b1) * I``; ``U <- b2 * U + (1 - b2) * |I - I_bar|``
  (with the new ``I_bar``); ``S <- I_bar * U``. The scores are replaced, not accumulated, so no learning rate.

Each rule updates the scores in place from their ``.grad`` and then drops the gradient (``None``): an optimizer
that also holds the scores (for its learning-rate schedule, gradient unscaling and overflow checks) skips them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from fineprune.pruning.config import PruningConfig

PLATON_AVERAGE = "importance_average"
PLATON_UNCERTAINTY = "importance_uncertainty"


def rule_state(config: PruningConfig, scores: Tensor) -> dict[str, Tensor]:
    """The tensors the configured rule keeps per matrix between updates, at their initial values (zeros).

    They become buffers of the matrix's MaskedWeight, so every state_dict, checkpoint and saved folder carries them
    and a resumed run continues exactly.
    """
    if config.scores_update == "platon":
        return {name: torch.zeros_like(scores) for name in (PLATON_AVERAGE, PLATON_UNCERTAINTY)}
    return {}


def sgd_step(scores: Tensor, grad: Tensor, lr: float) -> None:
    """``S <- S - lr * dL/dS``, in place."""
    scores.add_(grad, alpha=-lr)


def platon_step(scores: Tensor, grad: Tensor, average: Tensor, uncertainty: Tensor, beta1: float, beta2: float) -> None:
    """PLATON's update, in place: the importance's moving average and its uncertainty, then ``S = I_bar * U``.

    It overwrites ``grad`` (the gradient is dropped after the update): no temporary as large as the scores.
    """
    importance = grad.abs_()
    average.mul_(beta1).add_(importance, alpha=1 - beta1)
    deviation = importance.sub_(average).abs_()
    uncertainty.mul_(beta2).add_(deviation, alpha=1 - beta2)
    torch.mul(average, uncertainty, out=scores)


@torch.no_grad()
def update_scores(parametrizations: Iterable[nn.Module], config: PruningConfig, lr: float) -> None:
    """Apply ``config.scores_update`` to every matrix's scores from its gradient (``lr``: the scores' learning rate
    now, unused by platon), then set the gradients to None. Each parametrization holds ``scores`` (None for none)
    and the buffers of :func:`rule_state`; scores without a gradient are left alone."""
    if config.scores_update == "adamw":
        raise ValueError("scores_update adamw is the optimizer's own step: there is no rule to apply")
    for masked in parametrizations:
        scores = masked.scores
        if scores is None or scores.grad is None:
            continue
        if config.scores_update == "sgd":
            sgd_step(scores, scores.grad, lr)
        else:
            average, uncertainty = getattr(masked, PLATON_AVERAGE), getattr(masked, PLATON_UNCERTAINTY)
            platon_step(scores, scores.grad, average, uncertainty, config.platon_beta1, config.platon_beta2)
        scores.grad = None
