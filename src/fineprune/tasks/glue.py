"""Data for the GLUE sentence-pair tasks MNLI and QQP: loading, tokenizing and metrics.

Every source (the hub, or a local TSV/CSV/JSON/JSON Lines file) is normalized to the hub's layout -- its two
text columns plus an int "label" indexing ``LABELS[task]`` -- so the training pipeline sees one shape whatever
the data came from. Local files are read with the standard library: GLUE TSVs contain stray quotes that only
``csv.QUOTE_NONE`` reads faithfully, and a pure-Python pass over ten thousand rows takes milliseconds.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import datasets
import numpy as np

from fineprune.errors import UsageError

if TYPE_CHECKING:
    from transformers import EvalPrediction, PreTrainedTokenizerBase

LABELS: dict[str, list[str]] = {
    "mnli": ["entailment", "neutral", "contradiction"],
    "qqp": ["not_duplicate", "duplicate"],
}
TEXT_COLUMNS: dict[str, tuple[str, str]] = {
    "mnli": ("premise", "hypothesis"),
    "qqp": ("question1", "question2"),
}

_HUB_DATASET = "nyu-mll/glue"
_HUB_VALIDATION_SPLIT = {"mnli": "validation_matched", "qqp": "validation"}
# The column names of the original GLUE TSV release: text, text, label.
_GLUE_TSV_COLUMNS = {
    "mnli": ("sentence1", "sentence2", "gold_label"),
    "qqp": ("question1", "question2", "is_duplicate"),
}
# MNLI's gold_label for "annotators did not agree": GLUE drops these rows rather than guessing a class.
_NO_GOLD_LABEL = frozenset({"", "-"})
_FORMATS = (".tsv", ".csv", ".json", ".jsonl")


def load_glue(
    task: str,
    train_file: str | None,
    validation_file: str | None,
    eval_fraction: float = 0.2,
    seed: int = 42,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
) -> datasets.DatasetDict:
    """Load the "train" and "validation" splits of `task`, normalized to the hub layout.

    Without `train_file` the splits come from the hub. With `train_file` but no `validation_file`, a seeded
    shuffle carves ``round(n * eval_fraction)`` rows (halves rounded up) off as validation, so offline runs
    can evaluate on data they never trained on and get the same split every time. `max_*_samples` then keep
    the first N rows of each split (for a carved split that is a random subset, as its order is shuffled).
    """
    _check_task(task)
    max_train = _check_max_samples(max_train_samples, "task.max_train_samples")
    max_eval = _check_max_samples(max_eval_samples, "task.max_eval_samples")
    if train_file is None:
        if validation_file is not None:
            raise UsageError("task.validation_file is set but task.train_file is not: set both, or neither for the hub")
        train, validation = _load_hub(task)
    else:
        if validation_file is None:
            _check_eval_fraction(eval_fraction)
        train = _read_file(task, train_file, "task.train_file")
        _check_not_empty(train, f"task.train_file {train_file}", "train")
        if validation_file is None:
            train, validation = _carve_validation(train, eval_fraction, seed, train_file)
        else:
            validation = _read_file(task, validation_file, "task.validation_file")
            _check_not_empty(validation, f"task.validation_file {validation_file}", "validation")
    return datasets.DatasetDict({"train": _head(train, max_train), "validation": _head(validation, max_eval)})


def load_glue_validation(task: str, validation_file: str, max_eval_samples: int | None = None) -> datasets.Dataset:
    """The evaluation split alone, from a local file: evaluating a finished model needs no training data."""
    _check_task(task)
    max_eval = _check_max_samples(max_eval_samples, "task.max_eval_samples")
    validation = _read_file(task, validation_file, "task.validation_file")
    _check_not_empty(validation, f"task.validation_file {validation_file}", "validation")
    return _head(validation, max_eval)


def tokenize(
    dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, task: str, max_seq_length: int
) -> datasets.Dataset:
    """Tokenize the sentence pair, truncated to `max_seq_length` but unpadded: a collator pads each batch only
    to its own longest row, which is much cheaper than padding everything to the maximum."""
    _check_task(task)
    first, second = TEXT_COLUMNS[task]
    shortest = tokenizer.num_special_tokens_to_add(pair=True) + 2
    if max_seq_length < shortest:
        raise UsageError(
            f"task.max_seq_length is {max_seq_length}: a pair needs at least {shortest} tokens "
            "(the special tokens plus one token of each text)"
        )

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return tokenizer(batch[first], batch[second], truncation=True, max_length=max_seq_length)

    encoded = dataset.map(encode, batched=True, remove_columns=[first, second], desc=f"Tokenizing {task}")
    return encoded.rename_column("label", "labels")


def compute_metrics(task: str) -> Callable[[EvalPrediction], dict[str, float]]:
    """The task's GLUE metrics as fractions: accuracy, plus F1 of "duplicate" for QQP (its classes are skewed,
    so accuracy alone flatters a model leaning to "not_duplicate"). Plain numpy: `evaluate` needs the hub."""
    _check_task(task)

    def metrics(prediction: EvalPrediction) -> dict[str, float]:
        predicted = _predicted_classes(prediction.predictions)
        labels = np.asarray(prediction.label_ids).reshape(-1)
        result = {"accuracy": float(np.mean(predicted == labels))}
        if task == "qqp":
            true_pos = int(np.sum((predicted == 1) & (labels == 1)))
            false_pos = int(np.sum((predicted == 1) & (labels != 1)))
            false_neg = int(np.sum((predicted != 1) & (labels == 1)))
            denominator = 2 * true_pos + false_pos + false_neg
            result["f1"] = 2 * true_pos / denominator if denominator else 0.0
        return result

    return metrics


def _predicted_classes(predictions: Any) -> np.ndarray:
    """Class ids from logits; a model with extra outputs gives Trainer a tuple that starts with the logits."""
    if isinstance(predictions, tuple | list):
        predictions = predictions[0]
    predictions = np.asarray(predictions)
    if predictions.ndim > 1:
        return predictions.argmax(axis=-1).reshape(-1)
    return predictions.reshape(-1)


def _check_task(task: str) -> None:
    if task not in LABELS:
        raise UsageError(f"task {task!r} is not a GLUE pair task handled here; choose one of {', '.join(LABELS)}")


def _check_max_samples(value: int | None, key: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UsageError(f"{key} is {value!r}: it must be a positive whole number, or unset for all rows")
    return value


def _check_eval_fraction(eval_fraction: float) -> None:
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, int | float) or not 0 < eval_fraction < 1:
        raise UsageError(f"task.eval_fraction is {eval_fraction!r}: it must lie strictly between 0 and 1")


def _check_not_empty(dataset: datasets.Dataset, where: str, split: str) -> None:
    if len(dataset) == 0:
        raise UsageError(f"{where}: the {split} split is empty")


def _head(dataset: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.select(range(limit))


def _load_hub(task: str) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The hub's train and (matched) validation splits, without the hub's "idx" column."""
    try:
        hub = datasets.load_dataset(_HUB_DATASET, task)
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise UsageError(
            f"the hub dataset {_HUB_DATASET} ({task}) could not be loaded ({reason}); "
            "offline, set task.train_file to a local copy"
        ) from exc
    keep = [*TEXT_COLUMNS[task], "label"]
    return hub["train"].select_columns(keep), hub[_HUB_VALIDATION_SPLIT[task]].select_columns(keep)


def _carve_validation(
    dataset: datasets.Dataset, eval_fraction: float, seed: int, path: str
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split off a seeded random `eval_fraction` as validation; rounding is half-up, so 2.5 rows become 3."""
    size = len(dataset)
    n_eval = int(size * eval_fraction + 0.5)
    order = np.random.default_rng(seed).permutation(size)
    train, validation = dataset.select(order[n_eval:]), dataset.select(order[:n_eval])
    where = f"task.train_file {path} (task.eval_fraction {eval_fraction} of {size} rows)"
    _check_not_empty(train, where, "train")
    _check_not_empty(validation, where, "validation")
    return train, validation


def _read_file(task: str, path_str: str, key: str) -> datasets.Dataset:
    """Read one local file into the hub layout, dropping MNLI rows without a gold label as GLUE does."""
    path = Path(path_str).expanduser()
    where = f"{key} {path_str}"
    if not path.is_file():
        raise UsageError(f"{key}: no such file: {path_str}")
    name = path.name.lower().removesuffix(".gz")
    fmt = next((suffix for suffix in _FORMATS if name.endswith(suffix)), None)
    if fmt is None:
        raise UsageError(
            f"{where}: unsupported file type {''.join(path.suffixes) or '(none)'}; "
            f"supported: {', '.join(_FORMATS)}, each optionally .gz"
        )
    first, second = TEXT_COLUMNS[task]
    names = LABELS[task]
    lookup = {label: index for index, label in enumerate(names)} | {str(i): i for i in range(len(names))}
    columns: dict[str, list[Any]] = {first: [], second: [], "label": []}
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            found, records = _records(handle, fmt, where)
            # No columns means no records either (an empty file or JSON list): left to the empty-split check.
            wanted = _pick_columns(task, found, fmt, where) if found else ()
            for location, record in records:
                text_a, text_b, raw_label = (record.get(column) for column in wanted)
                label = _label_index(raw_label, lookup, len(names))
                if label is None:
                    if task == "mnli" and (raw_label is None or str(raw_label).strip() in _NO_GOLD_LABEL):
                        continue
                    raise UsageError(
                        f"{where}, {location}: unknown label {raw_label!r} in column {wanted[2]!r}; "
                        f"allowed: {', '.join(names)} (or their indices 0-{len(names) - 1})"
                    )
                for column, text in ((wanted[0], text_a), (wanted[1], text_b)):
                    if not isinstance(text, str):
                        raise UsageError(f"{where}, {location}: column {column!r} is {text!r}, expected text")
                columns[first].append(text_a)
                columns[second].append(text_b)
                columns["label"].append(label)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, json.JSONDecodeError) as exc:
        raise UsageError(f"{where}: cannot be read as {fmt}: {type(exc).__name__}: {exc}") from exc
    features = datasets.Features(
        {
            first: datasets.Value("string"),
            second: datasets.Value("string"),
            "label": datasets.ClassLabel(names=names),
        }
    )
    return datasets.Dataset.from_dict(columns, features=features)


def _label_index(value: Any, lookup: dict[str, int], count: int) -> int | None:
    """The class index of a label given as an index (int or digit string) or a name; None if it is neither."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return value if 0 <= value < count else None
    if isinstance(value, str):
        return lookup.get(value.strip().lower())
    return None


def _pick_columns(task: str, found: list[str], fmt: str, where: str) -> tuple[str, str, str]:
    """The file's text and label columns: GLUE TSV names for .tsv, hub names otherwise; either is accepted."""
    hub = (*TEXT_COLUMNS[task], "label")
    glue = _GLUE_TSV_COLUMNS[task]
    preferred, other = (glue, hub) if fmt == ".tsv" else (hub, glue)
    for candidate in (preferred, other):
        if set(candidate) <= set(found):
            return candidate
    missing = [column for column in preferred if column not in found]
    raise UsageError(f"{where}: missing columns {', '.join(missing)}; found: {', '.join(found) or '(none)'}")


def _records(handle: IO[str], fmt: str, where: str) -> tuple[list[str], Iterator[tuple[str, dict[str, Any]]]]:
    """The column names and the (location, record) pairs of a file; locations are what an editor shows."""
    if fmt in (".tsv", ".csv"):
        return _delimited_records(handle, fmt, where)
    read = _json_lines if fmt == ".jsonl" else _json_records
    records = read(handle.read(), where)
    found = list(records[0][1]) if records else []
    return found, iter(records)


def _delimited_records(handle: IO[str], fmt: str, where: str) -> tuple[list[str], Iterator[tuple[str, dict[str, Any]]]]:
    """TSV is read with QUOTE_NONE: GLUE's texts contain unbalanced quotes that are not field delimiters."""
    reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == ".tsv" else csv.reader(handle)
    header = [column.strip() for column in next((row for row in reader if row), [])]

    def rows() -> Iterator[tuple[str, dict[str, Any]]]:
        for row in reader:
            if not row:
                continue
            location = f"line {reader.line_num}"
            if len(row) != len(header):
                raise UsageError(f"{where}, {location}: {len(row)} fields where the header has {len(header)}")
            yield location, dict(zip(header, row, strict=True))

    return header, rows()


def _json_records(text: str, where: str) -> list[tuple[str, dict[str, Any]]]:
    """A .json file: a list of records, or JSON Lines (what Dataset.to_json writes by default)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        if text.lstrip().startswith("["):
            raise
        return _json_lines(text, where)
    if isinstance(data, dict):  # a single record, the whole of a one-line JSON Lines file
        data = [data]
    if not isinstance(data, list):
        raise UsageError(f"{where}: expected a list of records, found a JSON {type(data).__name__}")
    return [
        (f"record {number}", _as_record(record, where, f"record {number}")) for number, record in enumerate(data, 1)
    ]


def _json_lines(text: str, where: str) -> list[tuple[str, dict[str, Any]]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{where}, line {number}: not valid JSON ({exc.msg})") from exc
            records.append((f"line {number}", _as_record(record, where, f"line {number}")))
    return records


def _as_record(value: Any, where: str, location: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{where}, {location}: expected an object with named fields, found {value!r:.60}")
    return value
