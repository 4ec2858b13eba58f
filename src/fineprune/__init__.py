"""fineprune: fine-pruning of Hugging Face transformer encoders (movement pruning and the methods it compares).

The public Python API; the ``fineprune`` command line is a thin layer over it.
"""

from fineprune.export.compressed import load_compressed
from fineprune.pruning import (
    PruningConfig,
    bake,
    get_pruner,
    load_pruned,
    prepare,
    sparsity,
)

__all__ = ["PruningConfig", "bake", "get_pruner", "load_compressed", "load_pruned", "prepare", "sparsity"]
__version__ = "0.1.0"
