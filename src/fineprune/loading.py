"""Reading the folders fineprune writes and reads: which files make a run and a model, where a run's config is,
whether a folder's code may run, and a folder's model and tokenizer as saved.

A model folder's ``config.json`` may name Python code in the folder (``auto_map``) that transformers imports to
build the model. :func:`may_run_code` is the one place that allows it: for fineprune's own compact modeling file,
recognised by its content, or when the user passes ``--trust-remote-code``; any other such folder is refused before
anything of it is imported. Every loader of a model folder goes through it.

Below the jobs that read folders (run, export, bench, sweep, report), so that none of them reaches into another for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import transformers
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from fineprune.errors import UsageError
from fineprune.export.modeling_file import MODELING_FILE, is_own_modeling_file
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


def may_run_code(source: str | Path, trust_remote_code: bool = False) -> bool:
    """Whether loading the model of ``source`` may run Python code from it: the ``trust_remote_code`` to give
    transformers. True for the user's ``trust_remote_code`` and for a folder whose ``auto_map`` names only
    fineprune's compact modeling file, byte for byte the one this fineprune writes; a folder that names any other
    code is refused in one line. A hub id is left to transformers, which runs no code it is not trusted with."""
    config_file = Path(source).expanduser() / "config.json"
    if trust_remote_code or not config_file.is_file():
        return trust_remote_code
    try:
        auto_map = json.loads(config_file.read_text(encoding="utf-8")).get("auto_map") or {}
    except (ValueError, AttributeError):
        return False  # not a config transformers can read either: it says so when loading
    names = {name for value in auto_map.values() for name in ([value] if isinstance(value, str) else value) if name}
    modules = {name.rpartition(".")[0] for name in names}
    if not modules:
        return False
    if modules != {Path(MODELING_FILE).stem}:
        raise UsageError(
            f"{config_file}: auto_map names code in the folder ({', '.join(sorted(modules))}) that loading would "
            "run; fineprune runs no folder's code but its own: pass --trust-remote-code if you trust it"
        )
    if not is_own_modeling_file(config_file.parent / MODELING_FILE):
        raise UsageError(
            f"{config_file.parent / MODELING_FILE}: not the compact modeling file this fineprune writes (edited, or "
            "written by another version): export the run again, or pass --trust-remote-code if you trust it"
        )
    return True


def load_tokenizer(source: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of a folder or hub id; its own code (``tokenizer_config.json``'s auto_map) only if trusted."""
    try:
        return AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise UsageError(f"{source}: cannot load a tokenizer: {str(error).splitlines()[0]}") from None


def load_stock_model(path: Path, trust_remote_code: bool = False) -> PreTrainedModel:
    """A model folder as saved, head included, through the Auto class of its architecture's head (a compact export
    with its own modeling code, which :func:`may_run_code` recognises)."""
    code = may_run_code(path, trust_remote_code)
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), trust_remote_code=code)
        architecture = (config.architectures or [""])[0]
        auto_class = next((t.auto_class for t in HEAD_TASKS if architecture.endswith(t.head_suffix)), None)
        model = auto_class.from_pretrained(str(path), trust_remote_code=code) if auto_class else None
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: cannot load a model: {str(error).splitlines()[0]}") from None
    if model is None:
        raise UsageError(f"{path}: {architecture or 'the model'} is not a classification or question-answering model")
    return model.eval()
