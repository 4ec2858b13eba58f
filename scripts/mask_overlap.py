"""How far a pruned run's masks moved from magnitude's: the share of its kept weights that are also among the largest
|W| of the pretrained matrix, with as many kept per matrix as the run keeps there (random selection: the density;
magnitude pruning: 100%). Soft movement and L0 started from |W| that stay near 100% have learnt little beyond
magnitude's masks.

    python scripts/mask_overlap.py PRETRAINED_FOLDER RUN_FOLDER [RUN_FOLDER ...]

Reads each run's model.safetensors (its scores and weights, as `fineprune train` saves them) and summary.json (the
weights each matrix keeps); prints one line per run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

SCORES = ".parametrizations.weight.0.scores"


def top_k(values: torch.Tensor, k: int) -> torch.Tensor:
    """A flat boolean mask of the k largest entries."""
    mask = torch.zeros(values.numel(), dtype=torch.bool)
    mask[values.flatten().topk(k).indices] = True
    return mask


def overlap(pretrained: dict[str, torch.Tensor], run: Path) -> float:
    """Kept weights that are in the pretrained top-|W| of their matrix, over all kept weights (scored matrices)."""
    tensors = load_file(run / "model.safetensors")
    matrices = json.loads((run / "summary.json").read_text())["sparsity"]["matrices"]
    kept = shared = 0
    for key, scores in tensors.items():
        if not key.endswith(SCORES):
            continue
        module = key.removesuffix(SCORES)
        count = matrices[module]["remaining"]
        original = pretrained.get(f"{module}.weight", pretrained.get(f"{module.partition('.')[2]}.weight"))
        if original is None:
            raise SystemExit(f"{run}: the pretrained model has no weight for {module}")
        if scores.shape != original.shape:
            raise SystemExit(f"{run}: {module} has one score per group, not per weight: no per-weight overlap")
        shared += (top_k(scores.float(), count) & top_k(original.float().abs(), count)).sum().item()
        kept += count
    if kept == 0:
        raise SystemExit(f"{run}: no per-weight scores (magnitude and dense runs have none)")
    return shared / kept


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    pretrained = load_file(Path(argv[0]) / "model.safetensors")
    for run in map(Path, argv[1:]):
        print(f"{run.name}: {100 * overlap(pretrained, run):.1f}% of the kept weights are magnitude's")


if __name__ == "__main__":
    main(sys.argv[1:])
