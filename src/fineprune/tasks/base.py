"""The interface every task family offers the run code: which model head, which data, how to evaluate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from fineprune.config import TaskSection
from fineprune.errors import UsageError


@dataclass
class TaskData:
    train: datasets.Dataset | None  # tokenized training features (None when only evaluating)
    eval: datasets.Dataset  # tokenized evaluation features
    eval_examples: datasets.Dataset  # the raw evaluation examples (QA maps windows back to them)


class Task:
    """One task family. Built by ``load_task``, which has read and checked the examples: bad data is said before
    any model loads."""

    auto_class: type
    head_suffix: str  # how the architectures of models fine-tuned for this kind of task end

    def __init__(self, section: TaskSection):
        self.section = section
        self.name = section.name
        self.examples = datasets.DatasetDict()  # "validation", and "train" when training

    def model_kwargs(self) -> dict[str, Any]:
        """What a new head for this task is made with."""
        return {}

    def check_model(self, model: PreTrainedModel, where: str) -> None:
        """Raise a clear error if a model (the one trained, a teacher, an export) does not fit this task."""
        self.check_head(model.config, where)

    def check_head(self, config: PretrainedConfig, where: str) -> None:
        """What a model's config says about its head, checked and taken (classification: the label names and their
        order); also for an ONNX graph, whose folder holds the config of the model it was exported from."""

    def prepare(self, tokenizer: PreTrainedTokenizerBase) -> TaskData:
        """Tokenized features of the examples read."""
        raise NotImplementedError

    def evaluate(self, trainer, data: TaskData, output_dir: Path | None) -> dict[str, float]:
        """Metrics of the trainer's model on the evaluation features."""
        predictions = trainer.predict(self.model_inputs(data.eval)).predictions
        return self.score(data, predictions if isinstance(predictions, tuple) else (predictions,), output_dir)

    def model_inputs(self, features: datasets.Dataset) -> datasets.Dataset:
        """The evaluation features without the columns that only the metrics use."""
        return features

    def score(self, data: TaskData, predictions: tuple[np.ndarray, ...], output_dir: Path | None) -> dict[str, float]:
        """Metrics from the model's outputs on ``data.eval`` in order (from torch or an ONNX graph alike)."""
        raise NotImplementedError


def check_not_empty(count: int, where: str, split: str) -> None:
    if count == 0:
        raise UsageError(f"{where}: the {split} split is empty")


def head(dataset: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    """The first ``limit`` rows (task.max_*_samples), or all."""
    return dataset if limit is None or limit >= len(dataset) else dataset.select(range(limit))
