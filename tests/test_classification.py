"""The user's own classification data: columns, label sets and orders (from the data, the config or a fine-tuned
model), bad input as one line naming file, row and column, and the metrics against values worked out by hand."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from fineprune.config import build_config
from fineprune.errors import UsageError
from fineprune.tasks import load_task, sources
from fineprune.tasks.classification import ClassificationTask, classification_metrics

# (question, coarse class), TREC-like: the class follows from the question word.
QUESTIONS = [
    ("Who wrote Hamlet ?", "HUM"),
    ("Where is Lima ?", "LOC"),
    ("How many legs has a spider ?", "NUM"),
    ("Who painted the ceiling ?", "HUM"),
    ("Where do pandas live ?", "LOC"),
    ("How many moons has Mars ?", "NUM"),
]


def write(path: Path, header: list[str], rows: list[list[Any]]) -> str:
    """Rows in the format the path's name gives (.tsv, .csv, .json, .jsonl, each optionally .gz)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    fmt = path.name.removesuffix(".gz")
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        if fmt.endswith(".tsv"):
            handle.writelines("\t".join(map(str, row)) + "\n" for row in [header, *rows])
        elif fmt.endswith(".csv"):
            csv.writer(handle).writerows([header, *rows])
        elif fmt.endswith(".jsonl"):
            handle.writelines(json.dumps(dict(zip(header, row))) + "\n" for row in rows)
        else:
            json.dump([dict(zip(header, row)) for row in rows], handle)
    return str(path)


def questions_file(tmp_path: Path, name: str = "questions.tsv", rows: list | None = None) -> str:
    return write(tmp_path / name, ["question", "coarse"], [list(row) for row in (rows or QUESTIONS)])


def section(**task: Any):
    keys = {"name": "classification", "text_columns": ["question"], "label_column": "coarse"} | task
    return build_config({"model": {"name_or_path": "m"}, "task": keys}, "config.yaml").task


def load(**task: Any) -> ClassificationTask:
    return load_task(section(**task))


def read(task: ClassificationTask, split: str) -> list[tuple[str, str]]:
    """(text, label name) of a split's examples."""
    examples = task.examples[split]
    return [(text, task.labels[label]) for text, label in zip(examples["text"], examples["label"])]


# -- formats, columns and labels ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("extension", [".tsv", ".csv", ".json", ".jsonl", ".tsv.gz", ".csv.gz", ".jsonl.gz"])
def test_a_single_text_file_in_every_format(tmp_path: Path, extension: str) -> None:
    path = questions_file(tmp_path, f"questions{extension}")
    task = load(train_file=path, validation_file=path)
    assert task.labels == ["HUM", "LOC", "NUM"]  # the training file's distinct labels, sorted
    assert task.examples["train"].column_names == ["text", "label"]
    assert read(task, "validation") == QUESTIONS
    assert task.model_kwargs() == {
        "num_labels": 3,
        "id2label": {0: "HUM", 1: "LOC", 2: "NUM"},
        "label2id": {"HUM": 0, "LOC": 1, "NUM": 2},
    }


def test_pairs_read_both_columns(tmp_path: Path) -> None:
    rows = [["A man sleeps.", "Someone rests.", "yes"], ["A dog runs.", "A cat sits.", "no"]]
    path = write(tmp_path / "pairs.csv", ["premise", "hypothesis", "label"], rows)
    task = load(train_file=path, validation_file=path, text_columns=["premise", "hypothesis"], label_column=None)
    examples = task.examples["validation"]
    assert examples.column_names == ["text", "text_pair", "label"]
    assert list(zip(examples["text"], examples["text_pair"])) == [tuple(row[:2]) for row in rows]
    assert task.labels == ["no", "yes"] and examples["label"] == [1, 0]


def test_labels_that_are_numbers_sort_as_numbers(tmp_path: Path) -> None:
    rows = [[f"text {i}", label] for i, label in enumerate([10, 2, 1, 2, 10])]
    path = write(tmp_path / "numbers.jsonl", ["question", "coarse"], rows)
    task = load(train_file=path, validation_file=path)
    assert task.labels == ["1", "2", "10"]
    assert task.examples["train"]["label"] == [2, 1, 0, 1, 2]


def test_labels_from_the_config_keep_its_order_and_may_be_given_as_indices(tmp_path: Path) -> None:
    named = questions_file(tmp_path)
    indexed = questions_file(tmp_path, "indexed.csv", [(q, ["NUM", "HUM", "LOC"].index(c)) for q, c in QUESTIONS])
    task = load(train_file=named, validation_file=indexed, labels=["NUM", "HUM", "LOC"])
    assert task.labels == ["NUM", "HUM", "LOC"]
    assert task.examples["train"]["label"] == [1, 2, 0, 1, 2, 0]
    assert read(task, "validation") == QUESTIONS  # 0, 1, 2 index the config's list


def test_a_label_not_in_labels_names_file_row_and_column(tmp_path: Path) -> None:
    path = questions_file(tmp_path, rows=[*QUESTIONS, ("What is a Slinky ?", "ENTY")])
    with pytest.raises(UsageError) as error:
        load(train_file=path, labels=["HUM", "LOC", "NUM"])
    assert str(error.value) == (
        f"task.train_file {path}, line 8, column 'coarse': label 'ENTY' is not one of task.labels "
        "(HUM, LOC, NUM, or their indices 0-2)"
    )


def test_a_validation_label_the_training_data_lacks_is_refused(tmp_path: Path) -> None:
    train = questions_file(tmp_path)
    validation = questions_file(tmp_path, "dev.jsonl", [("What is a Slinky ?", "ENTY")])
    with pytest.raises(UsageError) as error:
        load(train_file=train, validation_file=validation)
    assert str(error.value) == (
        f"task.validation_file {validation}, line 1, column 'coarse': label 'ENTY' is not a label of the training "
        "data (HUM, LOC, NUM)"
    )


def test_fewer_than_two_classes_is_refused(tmp_path: Path) -> None:
    path = questions_file(tmp_path, rows=[(q, "HUM") for q, _ in QUESTIONS])
    with pytest.raises(UsageError) as error:
        load(train_file=path)
    assert str(error.value) == (
        f"task.train_file {path}, column 'coarse': only 1 label ('HUM') in 6 rows; a classifier needs at least two"
    )


@pytest.mark.parametrize(
    ("name", "header", "rows", "message"),
    [
        ("missing.csv", ["question", "label"], QUESTIONS, "line 1: no column 'coarse'; found: question, label"),
        (
            "empty_text.tsv",
            ["question", "coarse"],
            [QUESTIONS[0], (" ", "LOC")],
            "line 3, column 'question': empty text",
        ),
        (
            "empty_label.csv",
            ["question", "coarse"],
            [QUESTIONS[0], ("Why ?", "")],
            "line 3, column 'coarse': empty label",
        ),
        (
            "missing_field.jsonl",
            ["question", "coarse"],
            [QUESTIONS[0], ("Who ?",)],
            "line 2, column 'coarse': missing label",
        ),
        (
            "number.json",
            ["question", "coarse"],
            [QUESTIONS[0], (7, "NUM")],
            "record 2, column 'question': 7 is not text",
        ),
        (
            "not_a_label.json",
            ["question", "coarse"],
            [QUESTIONS[0], ("Who ?", [1])],
            "record 2, column 'coarse': [1] is not",
        ),
    ],
)
def test_bad_rows_name_file_row_and_column(tmp_path: Path, name: str, header: list, rows: list, message: str) -> None:
    path = write(tmp_path / name, header, [list(row) for row in rows])
    with pytest.raises(UsageError) as error:
        load(train_file=path)
    assert str(error.value).startswith(f"task.train_file {path}, {message}")


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"text_columns": None}, "task.text_columns: required for task classification"),
        ({"text_columns": ["a", "b", "c"]}, "task.text_columns: one column or two (a pair), got 3"),
        ({"text_columns": ["a", "a"]}, "task.text_columns: names must be distinct"),
        ({"label_column": "question"}, "task.label_column: 'question' must be a column other than the texts"),
        ({"labels": ["yes"]}, "task.labels: a classifier needs at least two labels"),
        ({"labels": ["yes", "yes "]}, "task.labels: names must be distinct and not empty"),
        ({"train_file": None}, "task.train_file: required for task classification (or task.dataset, a hub dataset)"),
        ({"name": "qa"}, "task.text_columns: only for classification tasks, not qa"),
    ],
)
def test_bad_task_settings_name_the_key(tmp_path: Path, task: dict, message: str) -> None:
    with pytest.raises(UsageError) as error:
        section(**{"train_file": "data.tsv"} | task)
    assert str(error.value).startswith(f"config.yaml: {message}")


def test_labels_written_as_numbers_in_yaml_are_names() -> None:
    assert section(train_file="d.csv", labels=[0, 1]).labels == ["0", "1"]


def test_a_hub_dataset_gives_its_class_names_and_a_validation_split_is_carved_when_absent(monkeypatch) -> None:
    names = ["negative", "positive"]
    features = datasets.Features({"sentence": datasets.Value("string"), "y": datasets.ClassLabel(names=names)})
    train = datasets.Dataset.from_dict({"sentence": [f"s{i}" for i in range(10)], "y": [1, 0] * 5}, features=features)
    requested = []

    def fake_hub(*args: Any) -> datasets.DatasetDict:
        requested.append(args)
        return datasets.DatasetDict({"train": train, "test": train.select(range(2))})

    monkeypatch.setattr(sources.datasets, "load_dataset", fake_hub)
    task = load(dataset="me/reviews", dataset_config="en", text_columns=["sentence"], label_column="y", train_file=None)
    assert requested == [("me/reviews", "en")]
    assert task.labels == names  # the ClassLabel's order
    assert len(task.examples["train"]) == 8 and len(task.examples["validation"]) == 2  # eval_fraction 0.2 carved
    chosen = load(dataset="me/reviews", text_columns=["sentence"], label_column="y", validation_split="test")
    assert chosen.examples["validation"]["text"] == ["s0", "s1"] and chosen.examples["validation"]["label"] == [1, 0]
    with pytest.raises(UsageError, match="task.validation_split: the hub dataset me/reviews has no split 'dev'"):
        load(dataset="me/reviews", text_columns=["sentence"], label_column="y", validation_split="dev")


# -- the model's labels --------------------------------------------------------------------------------------------
def classifier(labels: list[str] | int) -> BertForSequenceClassification:
    """A tiny classifier whose head has these label names (or, given a count, transformers' LABEL_i)."""
    torch.manual_seed(0)
    named = {} if isinstance(labels, int) else {"id2label": dict(enumerate(labels))}
    count = labels if isinstance(labels, int) else len(labels)
    config = BertConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, num_labels=count
    )
    for key, value in named.items():
        setattr(config, key, value)
        config.label2id = {name: i for i, name in value.items()}
    return BertForSequenceClassification(config)


def test_a_fine_tuned_model_keeps_its_label_order(tmp_path: Path) -> None:
    path = questions_file(tmp_path, rows=QUESTIONS[:2] * 2 + [("How many ?", "NUM")])
    task = load(train_file=path, validation_file=path)
    assert task.labels == ["HUM", "LOC", "NUM"] and task.positive == 1
    task.check_model(classifier(["num", "HUM", "LOC"]), "model.name_or_path m")  # names match ignoring case
    assert task.labels == ["num", "HUM", "LOC"]
    assert read(task, "train") == [("Who wrote Hamlet ?", "HUM"), ("Where is Lima ?", "LOC")] * 2 + [
        ("How many ?", "num")
    ]
    assert task.examples["validation"]["label"] == [1, 2, 1, 2, 0]
    with pytest.raises(UsageError, match="another order than the data's"):  # a teacher must agree with the student
        task.check_model(classifier(["HUM", "LOC", "num"]), "distillation.teacher t")


def test_a_two_class_f1_follows_its_label_into_the_model_order(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", ["question", "coarse"], [["a b", "neg"], ["c d", "pos"]])
    task = load(train_file=path, validation_file=path)
    task.check_model(classifier(["pos", "neg"]), "model")
    assert task.positive == 0 and task.labels[task.positive] == "pos"


def test_a_model_with_other_labels_gets_one_line_naming_both(tmp_path: Path) -> None:
    task = load(train_file=questions_file(tmp_path))
    with pytest.raises(UsageError) as error:
        task.check_model(classifier(["entailment", "neutral", "contradiction"]), "model.name_or_path m")
    assert str(error.value) == (
        "model.name_or_path m: the model's labels (entailment, neutral, contradiction) do not match the data's "
        "(HUM, LOC, NUM)"
    )
    with pytest.raises(UsageError, match="the model has 2 labels, the data has 3 .HUM, LOC, NUM."):
        task.check_model(classifier(2), "model.name_or_path m")


def test_a_head_without_label_names_gets_the_datas(tmp_path: Path) -> None:
    task = load(train_file=questions_file(tmp_path))
    model = classifier(3)
    task.check_model(model, "model")
    assert model.config.id2label == {0: "HUM", 1: "LOC", 2: "NUM"}
    assert model.config.label2id == {"HUM": 0, "LOC": 1, "NUM": 2}
    assert task.labels == ["HUM", "LOC", "NUM"]


def test_evaluating_on_a_validation_file_alone_accepts_a_model_that_knows_more_labels(tmp_path: Path) -> None:
    validation = questions_file(tmp_path, "dev.tsv", QUESTIONS[:2])
    task = load_task(section(train_file="absent.tsv", validation_file=validation), training=False)
    assert task.labels == ["HUM", "LOC"] and list(task.examples) == ["validation"]
    task.check_model(classifier(["NUM", "LOC", "HUM"]), "model")
    assert task.labels == ["NUM", "LOC", "HUM"] and task.examples["validation"]["label"] == [2, 1]


# -- metrics -------------------------------------------------------------------------------------------------------
def test_macro_f1_of_a_three_class_confusion_worked_out_by_hand() -> None:
    # gold:      0 0 0 0 1 1 1 2 2 2
    # predicted: 0 0 1 2 1 1 0 2 2 1
    # class 0: TP 2, FP 1 (row 6), FN 2 (rows 2, 3) -> F1 = 4 / (4 + 1 + 2) = 4/7
    # class 1: TP 2, FP 2 (rows 2, 9), FN 1 (row 6) -> F1 = 4 / (4 + 2 + 1) = 4/7
    # class 2: TP 2, FP 1 (row 3), FN 1 (row 9)     -> F1 = 4 / (4 + 1 + 1) = 2/3
    # macro-F1 = (4/7 + 4/7 + 2/3) / 3 = (12 + 12 + 14) / 63 = 38/63; accuracy 6/10
    gold = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    predicted = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 1])
    result = classification_metrics(predicted, gold, 3)
    assert result == {"accuracy": pytest.approx(0.6), "macro_f1": pytest.approx(38 / 63)}


def test_macro_f1_averages_only_classes_that_occur() -> None:
    # 4 classes, class 3 neither in gold nor predicted: mean over classes 0-2.
    # class 0: TP 1, FN 1 -> 2/3; class 1: TP 1, FP 1 -> 2/3; class 2: TP 1 -> 1; mean 7/9
    result = classification_metrics(np.array([0, 1, 1, 2]), np.array([0, 0, 1, 2]), 4)
    assert result["macro_f1"] == pytest.approx(7 / 9)
    assert classification_metrics(np.array([2, 2]), np.array([2, 2]), 3)["macro_f1"] == 1.0


def test_two_classes_report_the_f1_of_the_positive_label() -> None:
    # positive 1: TP 1, FP 1, FN 1 -> 2/4; positive 0: TP 2, FP 1, FN 1 -> 4/6
    gold, predicted = np.array([1, 1, 0, 0, 0]), np.array([1, 0, 1, 0, 0])
    assert classification_metrics(predicted, gold, 2) == {"accuracy": pytest.approx(0.6), "f1": pytest.approx(0.5)}
    assert classification_metrics(predicted, gold, 2, positive=0)["f1"] == pytest.approx(2 / 3)
