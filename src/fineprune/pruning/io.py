"""Load a pruned model (a training run, a checkpoint, any ``save_pretrained`` folder of a prepared model)."""

from __future__ import annotations

from pathlib import Path

import transformers
from safetensors.torch import load_file
from torch import nn

from fineprune.errors import UsageError
from fineprune.pruning.attach import CONFIG_ATTRIBUTE, prepare
from fineprune.pruning.config import PruningConfig


def is_pruned_folder(path: str | Path) -> bool:
    """True if the folder's config.json says it holds a model with fineprune's parts (not yet baked)."""
    config = Path(path) / "config.json"
    return config.is_file() and f'"{CONFIG_ATTRIBUTE}"' in config.read_text()


def load_pruned(path: str | Path) -> nn.Module:
    """Rebuild the architecture from ``config.json``, attach pruning as saved, and load weights, scores and
    the pruner's state (strictly: every tensor must be there)."""
    path = Path(path)
    config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=False)  # stock classes only
    saved = getattr(config, CONFIG_ATTRIBUTE, None)
    if saved is None:
        raise UsageError(f"{path / 'config.json'} has no '{CONFIG_ATTRIBUTE}' section: not a pruned model")
    architecture = (config.architectures or [None])[0]
    model_class = getattr(transformers, architecture or "", None)
    if model_class is None:
        raise UsageError(f"{path / 'config.json'}: unknown architecture {architecture!r}")
    delattr(config, CONFIG_ATTRIBUTE)
    model = prepare(model_class(config), PruningConfig(**saved))
    files = sorted(path.glob("model*.safetensors"))
    if not files:
        raise UsageError(f"{path} holds no model*.safetensors weights")
    state = {}
    for file in files:
        state.update(load_file(file))
    model.load_state_dict(state, strict=True)
    return model.eval()
