"""Sequence classification: one text or a pair of texts -> one of a few labels, from the user's file or a hub
dataset (MNLI and QQP are presets of it).

Every source is normalized to the same examples -- ``text`` (and ``text_pair``) plus an int ``label`` indexing
``task.labels`` -- so the training pipeline sees one shape whatever the data came from. The labels are the config's
(``task.labels``, in its order) or the distinct values of the training data's label column, sorted; a model already
fine-tuned for the task brings its own order (``check_model``), and the run saves the order it used.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import datasets
import numpy as np
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from fineprune.config import TaskSection
from fineprune.errors import UsageError
from fineprune.tasks import sources
from fineprune.tasks.base import Task, TaskData, check_not_empty, head
from fineprune.tasks.presets import Preset

TEXT, PAIR, LABEL = "text", "text_pair", "label"  # the examples' columns, whatever the data calls them
_INDEX = re.compile(r"[0-9]+")
_UNNAMED = re.compile(r"LABEL_[0-9]+")  # what transformers calls the labels of a head made without names

Row = tuple[str, list[str], str]  # (location, texts, label as written)


class ClassificationTask(Task):
    auto_class = AutoModelForSequenceClassification
    head_suffix = "ForSequenceClassification"

    def __init__(self, section: TaskSection, preset: Preset, training: bool = True):
        super().__init__(section)
        self.preset = preset
        self.labels: list[str] = list(section.labels or [])
        self.positive = 1  # the label whose F1 a two-class task reports: the second in the config's or sorted order
        self._partial = False  # labels seen in a validation file alone: a model may know more
        self._checked = False  # a model has settled the label order
        self._read(training)

    # -- data -------------------------------------------------------------------------------------------------------
    def _read(self, training: bool) -> None:
        s = self.section
        train_table, validation_table = sources.tables(s, training)
        train = validation = None
        if train_table is not None:
            rows = self._rows(train_table)
            check_not_empty(len(rows), train_table.where, "train")
            self.labels = self.labels or _labels_of(rows, train_table, s.label_column)
            train = self._examples(rows, train_table)
        if validation_table is None:
            train, validation = _carve(train, s.eval_fraction, s.seed, train_table.where)
        else:
            rows = self._rows(validation_table)
            check_not_empty(len(rows), validation_table.where, "validation")
            if not self.labels:
                self.labels, self._partial = _labels_of(rows, validation_table, s.label_column, minimum=1), True
            validation = self._examples(rows, validation_table)
        self.examples["validation"] = head(validation, s.max_eval_samples)
        if training:
            self.examples["train"] = head(train, s.max_train_samples)

    def _rows(self, table: sources.Table) -> list[Row]:
        """The table's texts and labels, checked: a missing column, a text that is not text or is empty."""
        wanted = [*self.section.text_columns, self.section.label_column]
        names = [self._column(table, column) for column in wanted] if table.columns else wanted
        *text_names, label_name = names
        class_names = table.class_names.get(label_name)
        if class_names and not self.labels:  # a hub dataset's ClassLabel: its names, in its order
            self.labels = list(class_names)
        rows = []
        for location, record in table.rows:
            texts = [_text(record, name, f"{table.where}, {location}, column {name!r}") for name in text_names]
            raw = record.get(label_name)
            label = _label_text(raw, class_names)
            if label is None:
                raise UsageError(f"{table.where}, {location}, column {label_name!r}: {raw!r:.60} is not a label")
            if label in self.preset.unlabelled:
                continue
            if not label:
                what = "missing" if label_name not in record else "empty"
                raise UsageError(f"{table.where}, {location}, column {label_name!r}: {what} label")
            rows.append((f"{location}, column {label_name!r}", texts, label))
        return rows

    def _column(self, table: sources.Table, column: str) -> str:
        """The table's name for ``column``: its own, or one of the preset's other names for it."""
        aliases = self.preset.aliases.get(column, ())
        name = next((name for name in (column, *aliases) if name in table.columns), None)
        if name is None:
            other = "".join(f" (or {alias!r})" for alias in aliases)
            raise UsageError(
                f"{table.where}, {table.first}: no column {column!r}{other}; found: {', '.join(table.columns)}"
            )
        return name

    def _examples(self, rows: list[Row], table: sources.Table) -> datasets.Dataset:
        """The rows as examples, each label an index into self.labels; a label not among them is refused."""
        index = self._label_index()
        labels = []
        for location, _, label in rows:
            found = index(label)
            if found is None:
                allowed = ", ".join(self.labels)
                source = (
                    f"not one of task.labels ({allowed}, or their indices 0-{len(self.labels) - 1})"
                    if self.section.labels
                    else f"not a label of the training data ({allowed})"
                )
                raise UsageError(f"{table.where}, {location}: label {label!r} is {source}")
            labels.append(found)
        columns = {TEXT: [texts[0] for _, texts, _ in rows]}
        if len(self.section.text_columns) == 2:
            columns[PAIR] = [texts[1] for _, texts, _ in rows]
        features = datasets.Features(
            {name: datasets.Value("string") for name in columns} | {LABEL: datasets.Value("int64")}
        )
        return datasets.Dataset.from_dict(columns | {LABEL: labels}, features=features)

    def _label_index(self) -> Callable[[str], int | None]:
        """Label text -> index: the name as written, else ignoring case (where that is unambiguous), else (for
        labels the config or preset lists) an index 0..n-1."""
        exact = {label: i for i, label in enumerate(self.labels)}
        folded_all = [label.casefold() for label in self.labels]
        folded = {name: i for i, name in enumerate(folded_all) if folded_all.count(name) == 1}
        indices = bool(self.section.labels)

        def index(label: str) -> int | None:
            if label in exact:
                return exact[label]
            if label.casefold() in folded:
                return folded[label.casefold()]
            if indices and _INDEX.fullmatch(label) and int(label) < len(self.labels):
                return int(label)
            return None

        return index

    # -- model ------------------------------------------------------------------------------------------------------
    def model_kwargs(self) -> dict[str, Any]:
        return {"num_labels": len(self.labels)} | _label_maps(self.labels)

    def check_head(self, config, where):
        """A model fine-tuned for the task keeps its label order (the data's labels are renumbered to it); one
        whose labels are other than the data's is refused. A head without label names is checked by size and
        given the data's names, so that what is saved and exported predicts names."""
        names = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]
        if all(_UNNAMED.fullmatch(name) for name in names):
            if len(names) != len(self.labels):
                raise UsageError(
                    f"{where}: the model has {len(names)} labels, the data has {len(self.labels)} "
                    f"({', '.join(self.labels)})"
                )
            for key, value in _label_maps(self.labels).items():
                setattr(config, key, value)
        elif names != self.labels:
            order = None if self._checked else _match(self.labels, names, self._partial)
            if order is None:
                relation = "are in another order than" if self._checked else "do not match"
                raise UsageError(
                    f"{where}: the model's labels ({', '.join(names)}) {relation} the data's ({', '.join(self.labels)})"
                )
            self._renumber(order, names)
        self._checked = True

    def _renumber(self, order: list[int], names: list[str]) -> None:
        """Take the model's label order: example labels and the two-class F1's label follow their names."""
        self.examples = self.examples.map(
            lambda batch: {LABEL: [order[label] for label in batch[LABEL]]}, batched=True, desc="Label order"
        )
        self.positive = order[self.positive] if self.positive < len(order) else self.positive
        self.labels = names

    # -- features and metrics ---------------------------------------------------------------------------------------
    def prepare(self, tokenizer: PreTrainedTokenizerBase) -> TaskData:
        length = self.section.max_seq_length
        train = self.examples.get("train")
        return TaskData(
            train=tokenize(train, tokenizer, length) if train is not None else None,
            eval=tokenize(self.examples["validation"], tokenizer, length),
            eval_examples=self.examples["validation"],
        )

    def score(self, data, predictions, output_dir):
        labels = np.asarray(data.eval["labels"])
        return classification_metrics(predicted_classes(predictions[0]), labels, len(self.labels), self.positive)


def tokenize(examples: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_seq_length: int) -> datasets.Dataset:
    """Tokenize the text (or pair), truncated to ``max_seq_length`` but unpadded: a collator pads each batch only
    to its own longest row, which is much cheaper than padding everything to the maximum."""
    pair = PAIR in examples.column_names
    shortest = tokenizer.num_special_tokens_to_add(pair=pair) + (2 if pair else 1)
    if max_seq_length < shortest:
        raise UsageError(
            f"task.max_seq_length is {max_seq_length}: {'a pair' if pair else 'a text'} needs at least {shortest} "
            f"tokens (the special tokens plus one token of {'each text' if pair else 'the text'})"
        )

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return tokenizer(batch[TEXT], batch[PAIR] if pair else None, truncation=True, max_length=max_seq_length)

    texts = [TEXT, PAIR] if pair else [TEXT]
    encoded = examples.map(encode, batched=True, remove_columns=texts, desc="Tokenizing")
    return encoded.rename_column(LABEL, "labels")


def classification_metrics(predicted: np.ndarray, labels: np.ndarray, num_labels: int, positive: int = 1) -> dict:
    """Accuracy, and for two classes the F1 of the ``positive`` class, for more the macro-F1: the mean of the
    classes' F1 = 2 TP / (2 TP + FP + FN) over the classes that occur in the labels or the predictions. Plain numpy
    (``evaluate`` needs the hub); fractions, not percent."""
    predicted, labels = np.asarray(predicted).reshape(-1), np.asarray(labels).reshape(-1)
    result = {"accuracy": float(np.mean(predicted == labels))}
    if num_labels == 2:
        result["f1"] = _f1(predicted, labels, positive)
    else:
        present = np.union1d(labels, predicted)
        result["macro_f1"] = float(np.mean([_f1(predicted, labels, c) for c in present]))
    return result


def predicted_classes(predictions: Any) -> np.ndarray:
    """Class ids from logits (a model with extra outputs gives the logits first), or the ids themselves."""
    if isinstance(predictions, tuple | list):
        predictions = predictions[0]
    predictions = np.asarray(predictions)
    return predictions.argmax(axis=-1).reshape(-1) if predictions.ndim > 1 else predictions.reshape(-1)


def _f1(predicted: np.ndarray, labels: np.ndarray, cls: int) -> float:
    true_pos = int(np.sum((predicted == cls) & (labels == cls)))
    wrong = int(np.sum((predicted == cls) != (labels == cls)))  # false positives + false negatives
    return 2 * true_pos / (2 * true_pos + wrong) if true_pos + wrong else 0.0


def _label_maps(labels: list[str]) -> dict[str, dict]:
    return {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}


def _text(record: dict[str, Any], name: str, where: str) -> str:
    if name not in record:
        raise UsageError(f"{where}: missing")
    value = record[name]
    if not isinstance(value, str):
        raise UsageError(f"{where}: {value!r:.60} is not text")
    if not value.strip():
        raise UsageError(f"{where}: empty text")
    return value


def _label_text(value: Any, class_names: list[str] | None) -> str | None:
    """A label as text: a name stripped of spaces, a whole number as digits (a hub ClassLabel's index as its name);
    None for what is neither."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return class_names[value] if class_names and 0 <= value < len(class_names) else str(value)
    if isinstance(value, str):
        return value.strip()
    return "" if value is None else None


def _labels_of(rows: list[Row], table: sources.Table, column: str, minimum: int = 2) -> list[str]:
    """The distinct labels of the rows, sorted (as numbers when they all are whole numbers)."""
    found = {label for _, _, label in rows}
    if len(found) < minimum:
        raise UsageError(
            f"{table.where}, column {column!r}: only {len(found)} label ({', '.join(map(repr, found))}) in "
            f"{len(rows)} rows; a classifier needs at least two"
        )
    numbers = all(_INDEX.fullmatch(label) for label in found)
    return sorted(found, key=(lambda label: (int(label), label)) if numbers else None)


def _match(data: list[str], model: list[str], partial: bool) -> list[int] | None:
    """For each data label, the index of the same label among the model's (as written, else ignoring case), if the
    two sets are equal (with ``partial``: if the model's holds the data's); else None."""
    for key in (str, str.casefold):
        ours, theirs = [key(label) for label in data], [key(label) for label in model]
        distinct = len(set(ours)) == len(ours) and len(set(theirs)) == len(theirs)
        if distinct and (set(ours) == set(theirs) or (partial and set(ours) <= set(theirs))):
            return [theirs.index(label) for label in ours]
    return None


def _carve(
    train: datasets.Dataset, eval_fraction: float, seed: int, where: str
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split off a seeded random ``eval_fraction`` as validation; rounding is half-up, so 2.5 rows become 3."""
    size = len(train)
    n_eval = int(size * eval_fraction + 0.5)
    order = np.random.default_rng(seed).permutation(size)
    where = f"{where} (task.eval_fraction {eval_fraction} of {size} rows)"
    check_not_empty(size - n_eval, where, "train")
    check_not_empty(n_eval, where, "validation")
    return train.select(order[n_eval:]), train.select(order[:n_eval])
