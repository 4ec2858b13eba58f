"""Reading the folders fineprune writes and reads: which files make a run and a model, where a run's config is, and
a folder's model as saved, head included.

Below the jobs that read folders (run, export, bench, sweep, report), so that none of them reaches into another for it.
"""

from __future__ import annotations

from pathlib import Path

import transformers
from transformers import PreTrainedModel

from fineprune.errors import UsageError
from fineprune.tasks import HEAD_TASKS

CONFIG_FILE = "fineprune_config.yaml"  # the run's resolved config, also in its exports
SUMMARY_FILE = "summary.json"  # a finished run's metrics and density
EVAL_FILE = "eval_results.json"
MODEL_FILES = ("model.safetensors", "model.safetensors.index.json")


def has_model(path: Path) -> bool:
    return any((path / name).is_file() for name in MODEL_FILES)


def find_config(model_dir: Path) -> Path:
    """The run's resolved config: in the folder (a run, an export) or its parent (a checkpoint)."""
    for folder in (model_dir, model_dir.parent):
        if (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE
    raise UsageError(f"{model_dir}: no {CONFIG_FILE} here or in the parent folder; pass --config")


def load_stock_model(path: Path) -> PreTrainedModel:
    """A model folder as saved, head included, through the Auto class of its architecture's head
    (trust_remote_code: a compact export carries its own modeling code)."""
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), trust_remote_code=True)
        architecture = (config.architectures or [""])[0]
        auto_class = next((t.auto_class for t in HEAD_TASKS if architecture.endswith(t.head_suffix)), None)
        model = auto_class.from_pretrained(str(path), trust_remote_code=True) if auto_class else None
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: cannot load a model: {str(error).splitlines()[0]}") from None
    if model is None:
        raise UsageError(f"{path}: {architecture or 'the model'} is not a classification or question-answering model")
    return model.eval()
