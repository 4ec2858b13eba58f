"""Sparsity accounting, counted from the binary masks that evaluation and export apply."""

from __future__ import annotations

import re
from collections import defaultdict

from torch import nn

from fineprune.pruning.attach import find_pruner, find_targets
from fineprune.pruning.config import PruningConfig
from fineprune.pruning.groups import removed_weights

_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def matrix_kind(name: str) -> str:
    """'attention' for Q, K, V and attention output (any name part mentioning att), else 'ffn'."""
    return "attention" if any("att" in part for part in name.split(".")) else "ffn"


def layer_index(name: str) -> int | None:
    match = _LAYER_INDEX.search(f".{name}.")
    return int(match.group(1)) if match else None


def _ratio(kept: int, total: int) -> float:
    return kept / total if total else 0.0


def sparsity(model: nn.Module) -> dict:
    """Density of the pruned weights: global, per kind (attention / ffn), per layer and per matrix.

    ``density`` is the fraction of the pruned set kept; ``remaining`` / ``total`` count its weights (by default
    the encoder's Linear weights). A model without pruning attached is an error: there is no pruned set.
    """
    pruner = find_pruner(model)
    if pruner is None:
        raise ValueError("this model has no pruning attached (call fineprune.prepare first)")
    matrices = {}
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_layer: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for name, mask in zip(pruner.names, pruner.binary_masks(), strict=True):
        kept, total = int(mask.sum()), mask.numel()
        kind, layer = matrix_kind(name), layer_index(name)
        matrices[name] = {
            "kind": kind,
            "layer": layer,
            "remaining": kept,
            "total": total,
            "density": kept / total,
        }
        for bucket in (by_kind[kind], by_layer[layer]):
            bucket[0] += kept
            bucket[1] += total
    remaining = sum(m["remaining"] for m in matrices.values())
    total = sum(m["total"] for m in matrices.values())
    return {
        "method": pruner.config.method,
        "scope": pruner.config.scope,
        "density": _ratio(remaining, total),
        "remaining": remaining,
        "total": total,
        "kinds": {k: _ratio(*v) for k, v in sorted(by_kind.items())},
        "layers": {k: _ratio(*v) for k, v in sorted(by_layer.items(), key=lambda kv: (kv[0] is None, kv[0]))},
        "matrices": matrices,
    }


def weight_density(model: nn.Module) -> dict:
    """Density of a baked (or dense) model: nonzero fraction of the weights fineprune prunes by default.

    For an export this recounts what the masks left, straight from the weights; the weights of the heads and
    neurons a compact export removed count as pruned.
    """
    targets = find_targets(model, PruningConfig(method="magnitude", final_density=1.0))
    remaining = sum(int(m.weight.count_nonzero()) for m in targets.values())
    total = sum(m.weight.numel() for m in targets.values()) + removed_weights(model)
    return {"density": _ratio(remaining, total), "remaining": remaining, "total": total}
