"""Task families behind one small interface: which model head, which data, how to evaluate.

``get_task(name)`` returns a :class:`Task`; the run code never branches on the task's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    EvalPrediction,
    PreTrainedModel,
)

from fineprune.errors import UsageError
from fineprune.tasks import glue, squad


@dataclass
class TaskData:
    train: datasets.Dataset | None  # tokenized training features (None when only evaluating)
    eval: datasets.Dataset  # tokenized evaluation features
    eval_examples: datasets.Dataset  # the raw evaluation examples (SQuAD maps windows back to them)


class Task:
    name: str
    auto_class: type
    head_suffix: str  # how the architectures of models fine-tuned for this task end

    def model_kwargs(self) -> dict[str, Any]:
        return {}

    def check_model(self, model: PreTrainedModel, where: str) -> None:
        """Raise a clear error if a model (a teacher, an export) does not fit this task."""

    def prepare(self, config, tokenizer, training: bool = True) -> TaskData:
        """Tokenized features; with ``training`` False only the evaluation split, read from task.validation_file
        alone where it is given (evaluating needs no training file then)."""
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


class ClassificationTask(Task):
    """MNLI and QQP: sentence pairs -> a label."""

    auto_class = AutoModelForSequenceClassification
    head_suffix = "ForSequenceClassification"

    def __init__(self, name: str):
        self.name = name
        self.labels = glue.LABELS[name]

    def model_kwargs(self):
        return {
            "num_labels": len(self.labels),
            "id2label": dict(enumerate(self.labels)),
            "label2id": {label: i for i, label in enumerate(self.labels)},
        }

    def check_model(self, model, where):
        if model.config.num_labels != len(self.labels):
            raise UsageError(
                f"{where}: the model has {model.config.num_labels} labels, task {self.name} has {len(self.labels)} "
                f"({', '.join(self.labels)})"
            )

    def prepare(self, config, tokenizer, training=True):
        t = config.task
        if not training and t.validation_file is not None:
            train, validation = None, glue.load_glue_validation(t.name, t.validation_file, t.max_eval_samples)
        else:
            raw = glue.load_glue(
                t.name,
                t.train_file,
                t.validation_file,
                t.eval_fraction,
                t.seed,
                t.max_train_samples,
                t.max_eval_samples,
            )
            train, validation = raw["train"] if training else None, raw["validation"]
        return TaskData(
            train=glue.tokenize(train, tokenizer, t.name, t.max_seq_length) if train is not None else None,
            eval=glue.tokenize(validation, tokenizer, t.name, t.max_seq_length),
            eval_examples=validation,
        )

    def score(self, data, predictions, output_dir):
        labels = np.asarray(data.eval["labels"])
        return glue.compute_metrics(self.name)(EvalPrediction(predictions=predictions[0], label_ids=labels))


class QuestionAnsweringTask(Task):
    """SQuAD v1.1: extractive question answering over windows of the context."""

    name = "squad"
    auto_class = AutoModelForQuestionAnswering
    head_suffix = "ForQuestionAnswering"

    def check_model(self, model, where):
        if not hasattr(model, "qa_outputs") and "QuestionAnswering" not in type(model).__name__:
            raise UsageError(f"{where}: {type(model).__name__} is not a question-answering model")

    def prepare(self, config, tokenizer, training=True):
        t = config.task
        if not training and t.validation_file is not None:
            train, validation = None, squad.load_squad_validation(t.validation_file, t.max_eval_samples)
        else:
            raw = squad.load_squad(
                t.train_file, t.validation_file, t.eval_fraction, t.seed, t.max_train_samples, t.max_eval_samples
            )
            train, validation = raw["train"] if training else None, raw["validation"]
        kwargs = {"tokenizer": tokenizer, "max_seq_length": t.max_seq_length, "doc_stride": t.doc_stride}
        if train is not None:
            train = train.map(
                squad.prepare_train_features, batched=True, remove_columns=train.column_names, fn_kwargs=kwargs
            )
        features = validation.map(
            squad.prepare_eval_features, batched=True, remove_columns=validation.column_names, fn_kwargs=kwargs
        )
        self._answer_args = {"n_best": t.n_best, "max_answer_length": t.max_answer_length}
        return TaskData(train=train, eval=features, eval_examples=validation)

    def model_inputs(self, features):
        return features.remove_columns(["example_id", "offset_mapping"])

    def score(self, data, predictions, output_dir):
        start, end = predictions[:2]
        answers = squad.postprocess_predictions(data.eval_examples, data.eval, start, end, **self._answer_args)
        if output_dir is not None:
            squad.write_predictions(answers, Path(output_dir) / "predictions.json")
        references = {ex["id"]: ex["answers"]["text"] for ex in data.eval_examples}
        return squad.squad_metrics(answers, references)


HEAD_TASKS = (ClassificationTask, QuestionAnsweringTask)  # one per model head: auto_class, head_suffix


def get_task(name: str) -> Task:
    if name in glue.LABELS:
        return ClassificationTask(name)
    if name == "squad":
        return QuestionAnsweringTask()
    raise UsageError(f"task.name: unknown task {name!r}; choose one of mnli, qqp, squad")
