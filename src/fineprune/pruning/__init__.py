"""The pruning engine: pure PyTorch + transformers, no Trainer, no datasets."""

from fineprune.pruning.attach import find_pruner, find_targets, get_pruner, prepare
from fineprune.pruning.bake import bake
from fineprune.pruning.config import PruningConfig
from fineprune.pruning.io import is_pruned_folder, load_pruned
from fineprune.pruning.stats import sparsity, weight_density

__all__ = [
    "PruningConfig",
    "bake",
    "find_pruner",
    "find_targets",
    "get_pruner",
    "is_pruned_folder",
    "load_pruned",
    "prepare",
    "sparsity",
    "weight_density",
]
