"""The parametrization each pruned ``nn.Linear`` gets on its ``weight``: ``weight -> weight * mask``, the mask asked
of the model's :class:`~fineprune.pruning.pruner.Pruner`; it holds the matrix's learned scores (and the score rule's
state) where the method learns them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fineprune.pruning.config import PruningConfig
from fineprune.pruning.masks import StraightThroughMask, apply_mask, group_scores
from fineprune.pruning.score_updates import rule_state


def initial_scores(weight: Tensor, config: PruningConfig) -> Tensor:
    """One score per block: the constant ``initial_score``, plus, with ``scores_init_from_weights``, the block's
    mean |W| standardised over the matrix (times ``scores_init_scale``), so that Top-v starts from magnitude's mask."""
    rows, cols = weight.shape
    br, bc = config.block_shape
    init = torch.full((rows // br, cols // bc), config.initial_score, dtype=weight.dtype, device=weight.device)
    if config.scores_init_from_weights:
        magnitude = group_scores(weight.detach().double(), config.block_shape)
        init += (config.scores_init_scale * standardised(magnitude)).to(weight.dtype)
    return init


def standardised(values: Tensor) -> Tensor:
    """``(values - mean) / std`` over all entries; zeros when they are all equal."""
    spread = values.std() if values.numel() > 1 else values.new_tensor(0.0)
    return (values - values.mean()) / spread if spread > 0 else torch.zeros_like(values)


class MaskedWeight(nn.Module):
    """Parametrization ``weight -> weight * mask``; holds this matrix's scores (None for magnitude pruning)."""

    def __init__(self, weight: Tensor, config: PruningConfig, uses_scores: bool):
        super().__init__()
        self.block_shape = tuple(config.block_shape)
        self.scores = None
        if uses_scores:
            self.hold_scores(initial_scores(weight, config), config)
        self.index = -1
        self.__dict__["pruner"] = None  # set by the Pruner; kept out of the module tree

    def hold_scores(self, scores: Tensor, config: PruningConfig) -> None:
        """Make ``scores`` this parametrization's learned scores, with the score rule's state."""
        self.scores = nn.Parameter(scores)
        for name, tensor in rule_state(config, self.scores.detach()).items():
            self.register_buffer(name, tensor)  # a score rule's state (platon), saved with the model

    def forward(self, weight: Tensor) -> Tensor:
        mask = self.pruner.mask(self.index, self.training)
        if self.scores is None or mask.requires_grad:
            return apply_mask(weight, mask)
        return StraightThroughMask.apply(weight, self.scores, mask, self.block_shape)

    def weight_scores(self) -> Tensor:
        """The scores, one per weight (a block's score repeated over its weights), detached."""
        rows, cols = self.block_shape
        return self.scores.detach().repeat_interleave(rows, 0).repeat_interleave(cols, 1)
