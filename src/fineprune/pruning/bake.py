"""Bake: turn a pruned model back into a stock transformers model (the shape of PEFT's ``merge_and_unload``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from fineprune.pruning.attach import CONFIG_ATTRIBUTE, PRUNER_ATTRIBUTE, get_pruner


def bake(model: nn.Module) -> nn.Module:
    """Write ``W * M`` (the binary masks evaluation uses) into each pruned weight, remove every fineprune part
    (parametrizations, scores, the pruner, ``config.fineprune``) and return the model, changed in place.

    The result is a plain ``nn.Linear`` model that ``save_pretrained`` / ``AutoModel*.from_pretrained`` handle
    without fineprune; its outputs equal the pruned model's in eval mode.
    """
    pruner = get_pruner(model)
    masks = pruner.binary_masks()
    with torch.no_grad():
        for linear, mask in zip(pruner.linears, masks, strict=True):
            _own_class(linear)
            parametrize.remove_parametrizations(linear, "weight", leave_parametrized=False)
            linear.weight.mul_(mask)
    owner = next(m for m in model.modules() if getattr(m, PRUNER_ATTRIBUTE, None) is pruner)
    delattr(owner, PRUNER_ATTRIBUTE)
    config = getattr(owner, "config", None)
    if config is not None and hasattr(config, CONFIG_ATTRIBUTE):
        delattr(config, CONFIG_ATTRIBUTE)
    return model


def _own_class(module: nn.Module) -> None:
    """Give `module` a private copy of its parametrized class. torch's parametrize makes one class per module, but
    deep copies of the model share it, and removing a parametrization deletes the property from that class: baking
    one copy would break every other."""
    cls = type(module)
    module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
