"""Attach pruning to any Hugging Face encoder without touching its modeling code, and find it again.

Every selected ``nn.Linear`` gets a :class:`~fineprune.pruning.masked.MaskedWeight` parametrization of its
``weight`` (``torch.nn.utils.parametrize``); one :class:`~fineprune.pruning.pruner.Pruner` submodule, named
``fineprune_pruner`` on the model, holds the shared state. The pruning config is also written into
``model.config.fineprune`` so that a saved folder says how to rebuild the pruned model.
"""

from __future__ import annotations

import re

from torch import nn
from torch.nn.utils import parametrize

from fineprune import layouts
from fineprune.errors import UsageError
from fineprune.pruning.config import PruningConfig
from fineprune.pruning.groups import group_parametrizations
from fineprune.pruning.masked import MaskedWeight
from fineprune.pruning.methods import get_method
from fineprune.pruning.pruner import Pruner

PRUNER_ATTRIBUTE = "fineprune_pruner"
CONFIG_ATTRIBUTE = "fineprune"


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's stack of transformer blocks: the largest ``nn.ModuleList`` (by parameter count) in the model."""
    try:
        return layouts.encoder_layers(model)
    except ValueError as error:
        raise UsageError(f"{error} to prune") from None


def find_targets(model: nn.Module, config: PruningConfig) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules to prune, by qualified name.

    Default: every ``nn.Linear`` inside the encoder's layers (Q, K, V, attention output, FFN in and out), which
    leaves out embeddings, pooler and task head whatever the architecture calls them. ``target_modules`` (regular
    expressions, ``re.search`` on the qualified name) replaces that selection; ``exclude_modules`` removes from it.
    """
    if config.target_modules is None:
        in_encoder = {id(m) for m in encoder_layers(model).modules()}
        selected = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) in in_encoder}
    else:
        patterns = [re.compile(p) for p in config.target_modules]
        selected = {
            n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and any(p.search(n) for p in patterns)
        }
    excluded = [re.compile(p) for p in config.exclude_modules]
    selected = {n: m for n, m in selected.items() if not any(p.search(n) for p in excluded)}
    if not selected:
        raise UsageError(
            f"no nn.Linear module of {type(model).__name__} matches pruning.target_modules="
            f"{config.target_modules} / exclude_modules={config.exclude_modules}"
        )
    return selected


def _check_blocks(name: str, linear: nn.Linear, block_shape: tuple[int, int]) -> None:
    rows, cols = linear.weight.shape
    if rows % block_shape[0] or cols % block_shape[1]:
        raise UsageError(
            f"pruning.block_shape {tuple(block_shape)} does not divide the weight of {name} ({rows} x {cols})"
        )


def prepare(model: nn.Module, config: PruningConfig) -> nn.Module:
    """Attach pruning to `model` in place and return it. ``method: none`` leaves the model as it is."""
    if config.method == "none":
        return model
    if find_pruner(model) is not None:
        raise UsageError("this model is already prepared for pruning; bake() it or start from a fresh model")
    method = get_method(config.method)
    targets = find_targets(model, config)
    groups = None
    if config.structure == "heads_neurons":
        groups, parametrizations = group_parametrizations(model, targets, config, method.uses_scores)
    else:
        parametrizations = []
        for name, linear in targets.items():
            _check_blocks(name, linear, config.block_shape)
            masked = MaskedWeight(linear.weight, config, uses_scores=method.uses_scores)
            parametrizations.append(masked)
    pruner = Pruner(config, targets, parametrizations, groups)
    for linear, masked in zip(targets.values(), parametrizations, strict=True):
        parametrize.register_parametrization(linear, "weight", masked, unsafe=True)
        if config.freeze_weights:  # an optimizer built from the parameters that require a gradient leaves it out
            linear.parametrizations.weight.original.requires_grad_(False)
    model.add_module(PRUNER_ATTRIBUTE, pruner)
    if hasattr(model, "config"):
        setattr(model.config, CONFIG_ATTRIBUTE, config.model_dump(mode="json"))
    return model


def find_pruner(model: nn.Module) -> Pruner | None:
    """The model's Pruner, looking through wrappers (DDP, accelerate); None if the model is not prepared."""
    return next((m for m in model.modules() if isinstance(m, Pruner)), None)


def get_pruner(model: nn.Module) -> Pruner:
    """The model's Pruner; a clear error if it has none."""
    pruner = find_pruner(model)
    if pruner is None:
        raise UsageError("this model has no pruning attached (call fineprune.prepare first)")
    return pruner
