"""SQuAD v1.1 extractive question answering: loading, window features, span decoding and the official metrics.

Contexts longer than the model's window are cut into overlapping windows (``doc_stride`` tokens shared between
neighbours); training labels each window with the answer's token span or with index 0 when the answer is not
fully inside it, and evaluation picks the best span over all windows of a question and maps it back to the
original context text through the tokenizer's character offsets.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import re
import string
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from transformers import BatchEncoding, PreTrainedTokenizerBase

from fineprune.errors import UsageError

logger = logging.getLogger(__name__)

HUB_DATASET = "rajpurkar/squad"

_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {
            "text": datasets.List(datasets.Value("string")),
            "answer_start": datasets.List(datasets.Value("int32")),
        },
    }
)
_COLUMNS = tuple(_FEATURES)
# Tokenizer outputs that only serve to build the features; the model must not receive them.
_WINDOW_ONLY = ("offset_mapping", "overflow_to_sample_mapping")
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


# ---------------------------------------------------------------------------------------------------- loading


def load_squad(
    train_file: str | None,
    validation_file: str | None,
    eval_fraction: float = 0.5,
    seed: int = 42,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
) -> datasets.DatasetDict:
    """Load the "train" and "validation" splits in the hub's flat layout.

    Without files, the hub dataset. With only ``train_file``, that file is split by article title so that no
    context is on both sides (machines without the hub have only the dev set to fine-prune and evaluate on).
    """
    if not 0.0 < eval_fraction < 1.0:
        raise UsageError(f"task.eval_fraction must be strictly between 0 and 1, got {eval_fraction}")
    for key, value in (
        ("task.max_train_samples", max_train_samples),
        ("task.max_eval_samples", max_eval_samples),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{key} must be a positive integer, got {value}")

    if train_file is None:
        if validation_file is not None:
            raise UsageError("task.validation_file is set but task.train_file is not; set both or neither")
        splits = _load_hub()
    else:
        train = _read_squad_file(Path(train_file))
        if validation_file is None:
            train, validation = _split_by_title(train, eval_fraction, seed, Path(train_file))
        else:
            validation = _read_squad_file(Path(validation_file))
        splits = datasets.DatasetDict(train=_to_dataset(train), validation=_to_dataset(validation))

    for split, limit in (("train", max_train_samples), ("validation", max_eval_samples)):
        if limit is not None:
            splits[split] = splits[split].select(range(min(limit, len(splits[split]))))
    return splits


def load_squad_validation(validation_file: str, max_eval_samples: int | None = None) -> datasets.Dataset:
    """The evaluation split alone, from a local file: evaluating a finished model needs no training data."""
    if max_eval_samples is not None and max_eval_samples < 1:
        raise UsageError(f"task.max_eval_samples must be a positive integer, got {max_eval_samples}")
    validation = _to_dataset(_read_squad_file(Path(validation_file)))
    return validation.select(range(min(max_eval_samples or len(validation), len(validation))))


def _load_hub() -> datasets.DatasetDict:
    """The hub copy, for online users; offline the failure is turned into advice to use a local file."""
    try:
        hub = datasets.load_dataset(HUB_DATASET)
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(
            f"cannot load the hub dataset {HUB_DATASET} ({reason}); set task.train_file to a local SQuAD JSON file"
        ) from err
    return datasets.DatasetDict(train=hub["train"], validation=hub["validation"])


def _read_squad_file(path: Path) -> list[dict[str, Any]]:
    """Parse an official-layout or flat-layout file (optionally gzipped) into validated flat records."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                text = handle.read()
        else:
            text = path.read_text(encoding="utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: cannot be read as UTF-8 text ({err})") from err

    document = _parse_json_or_lines(text, path)
    if isinstance(document, dict) and "data" in document:
        records = _flatten_official(document["data"], path)
    elif isinstance(document, dict) and "question" in document:
        records = [_flat_record(document, path, "record 1")]  # a JSON Lines file with a single record
    elif isinstance(document, list):
        records = [_flat_record(item, path, f"record {i + 1}") for i, item in enumerate(document)]
    else:
        raise UsageError(
            f"{path}: neither the official SQuAD layout ({{'data': [articles]}}) nor flat records "
            "(id, title, context, question, answers)"
        )
    if not records:
        raise UsageError(f"{path}: contains no questions")
    _validate(records, path)
    return records


def _parse_json_or_lines(text: str, path: Path) -> Any:
    """One JSON document, or else JSON Lines (one record per non-blank line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UsageError(f"{path}: neither JSON nor JSON Lines (line {number}: {err.msg})") from err
    return records


def _field(obj: Any, key: str, kind: type, path: Path, where: str) -> Any:
    """``obj[key]`` checked against ``kind``: a malformed file fails with its location, not a KeyError."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UsageError(f"{path}: {where} has no {key!r} of type {kind.__name__} (not a SQuAD layout)")
    return value


def _flatten_official(articles: Any, path: Path) -> list[dict[str, Any]]:
    """``data[].paragraphs[].qas[]`` into one flat record per question."""
    if not isinstance(articles, list):
        raise UsageError(f"{path}: 'data' is not a list of articles (not a SQuAD layout)")
    records = []
    for a, article in enumerate(articles):
        title = _field(article, "title", str, path, f"data[{a}]")
        for p, paragraph in enumerate(_field(article, "paragraphs", list, path, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, path, where)
            for q, qa in enumerate(_field(paragraph, "qas", list, path, where)):
                where_q = f"{where}.qas[{q}]"
                answers = _field(qa, "answers", list, path, where_q)
                records.append(
                    {
                        "id": _field(qa, "id", str, path, where_q),
                        "title": title,
                        "context": context,
                        "question": _field(qa, "question", str, path, where_q),
                        "answers": {
                            "text": [_field(x, "text", str, path, f"{where_q}.answers") for x in answers],
                            "answer_start": [
                                _field(x, "answer_start", int, path, f"{where_q}.answers") for x in answers
                            ],
                        },
                    }
                )
    return records


def _flat_record(item: Any, path: Path, where: str) -> dict[str, Any]:
    """A hub-layout record, type-checked and reduced to the known columns."""
    answers = _field(item, "answers", dict, path, where)
    texts = _field(answers, "text", list, path, f"{where}.answers")
    starts = _field(answers, "answer_start", list, path, f"{where}.answers")
    if len(texts) != len(starts) or not all(isinstance(t, str) for t in texts):
        raise UsageError(f"{path}: {where}.answers needs as many texts (strings) as answer_start values")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in starts):
        raise UsageError(f"{path}: {where}.answers.answer_start holds a value that is not an integer")
    record = {key: _field(item, key, str, path, where) for key in ("id", "title", "context", "question")}
    record["answers"] = {"text": texts, "answer_start": starts}
    return record


def _validate(records: list[dict[str, Any]], path: Path) -> None:
    """Unique ids, and answers exactly at their answer_start: the training labels are built from it."""
    seen: set[str] = set()
    for record in records:
        qid, context, answers = record["id"], record["context"], record["answers"]
        if qid in seen:
            raise UsageError(f"{path}: question id {qid!r} appears more than once")
        seen.add(qid)
        if not answers["text"]:
            raise UsageError(
                f"{path}: question {qid!r} has no answers (unanswerable SQuAD v2 questions are not supported)"
            )
        for text, start in zip(answers["text"], answers["answer_start"], strict=True):
            if not text.strip():
                raise UsageError(f"{path}: question {qid!r} has an empty answer text")
            if start < 0 or context[start : start + len(text)] != text:
                raise UsageError(
                    f"{path}: question {qid!r}: answer {text!r} is not at answer_start {start} of its context"
                )


def _split_by_title(
    records: list[dict[str, Any]], eval_fraction: float, seed: int, path: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded split of whole articles, so that no context (nor its neighbours) leaks from train into eval."""
    titles = sorted({record["title"] for record in records})
    if len(titles) < 2:
        raise UsageError(
            f"{path}: has {len(titles)} article title(s); splitting train/eval by article needs at least 2 "
            "(or set task.validation_file)"
        )
    random.Random(seed).shuffle(titles)
    n_eval = min(max(round(eval_fraction * len(titles)), 1), len(titles) - 1)
    eval_titles = set(titles[:n_eval])
    train = [record for record in records if record["title"] not in eval_titles]
    validation = [record for record in records if record["title"] in eval_titles]
    return train, validation


def _to_dataset(records: list[dict[str, Any]]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {column: [record[column] for record in records] for column in _COLUMNS}, features=_FEATURES
    )


# --------------------------------------------------------------------------------------------------- features


def _check_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Offsets and sequence ids exist only in fast tokenizers; CLS at index 0 needs right padding."""
    if not getattr(tokenizer, "is_fast", False):
        raise UsageError(
            f"tokenizer {tokenizer.name_or_path!r} is not a fast tokenizer; SQuAD needs its character offsets"
        )
    if tokenizer.padding_side != "right":
        raise UsageError(
            f"tokenizer {tokenizer.name_or_path!r} pads on the {tokenizer.padding_side}; SQuAD features need "
            "padding_side='right'"
        )


def _windows(
    examples: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, doc_stride: int
) -> BatchEncoding:
    """Question + context windows, unpadded, with offsets and the window -> example mapping."""
    _check_tokenizer(tokenizer)
    questions = [question.strip() for question in examples["question"]]
    # The tokenizer aborts the process (a Rust panic) when a question leaves no more room than the stride.
    room = max_seq_length - tokenizer.num_special_tokens_to_add(pair=True)
    question_ids = tokenizer(questions, add_special_tokens=False)["input_ids"]
    for qid, ids in zip(examples["id"], question_ids, strict=True):
        if room - len(ids) <= doc_stride:
            raise UsageError(
                f"question {qid!r} is {len(ids)} tokens long: with max_seq_length {max_seq_length} it leaves "
                f"{room - len(ids)} context tokens per window, not more than doc_stride {doc_stride}; "
                "raise max_seq_length or lower doc_stride"
            )
    return tokenizer(
        questions,
        examples["context"],
        truncation="only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )


def _answer_tokens(
    offsets: list[tuple[int, int]], sequence_ids: list[int | None], start_char: int, end_char: int
) -> tuple[int, int]:
    """Token span of the characters [start_char, end_char) inside this window's context, or (0, 0) (CLS)."""
    context = [token for token, sequence in enumerate(sequence_ids) if sequence == 1]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return 0, 0
    start = next(token for token in context if offsets[token][1] > start_char)
    end = next(token for token in reversed(context) if offsets[token][0] < end_char)
    return start, end


def prepare_train_features(
    examples: dict[str, list],
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int = 384,
    doc_stride: int = 128,
) -> dict[str, list]:
    """Batched ``Dataset.map`` function (use ``remove_columns``: one question gives several rows).

    Labels ``start_positions``/``end_positions`` locate the first gold answer in tokens; a window that does
    not hold the whole answer is labelled 0/0 (CLS). Rows are unpadded: pad per batch with
    DataCollatorWithPadding.
    """
    encoding = _windows(examples, tokenizer, max_seq_length, doc_stride)
    starts, ends = [], []
    for window, offsets in enumerate(encoding["offset_mapping"]):
        answers = examples["answers"][encoding["overflow_to_sample_mapping"][window]]
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        start, end = _answer_tokens(offsets, encoding.sequence_ids(window), start_char, end_char)
        starts.append(start)
        ends.append(end)
    features = {key: value for key, value in encoding.items() if key not in _WINDOW_ONLY}
    features["start_positions"] = starts
    features["end_positions"] = ends
    return features


def prepare_eval_features(
    examples: dict[str, list],
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int = 384,
    doc_stride: int = 128,
) -> dict[str, list]:
    """Batched ``Dataset.map`` function: the training windows plus what decoding needs.

    ``example_id`` ties a window to its question; ``offset_mapping`` is None outside the context so that
    decoding cannot pick a span in the question or a special token.
    """
    encoding = _windows(examples, tokenizer, max_seq_length, doc_stride)
    example_ids, offset_mapping = [], []
    for window, offsets in enumerate(encoding["offset_mapping"]):
        example_ids.append(examples["id"][encoding["overflow_to_sample_mapping"][window]])
        sequence_ids = encoding.sequence_ids(window)
        offset_mapping.append(
            [offset if sequence == 1 else None for offset, sequence in zip(offsets, sequence_ids, strict=True)]
        )
    features = {key: value for key, value in encoding.items() if key not in _WINDOW_ONLY}
    features["example_id"] = example_ids
    features["offset_mapping"] = offset_mapping
    return features


# --------------------------------------------------------------------------------------------------- decoding


def postprocess_predictions(
    examples: datasets.Dataset,
    features: datasets.Dataset,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """Best answer text per question id over all its windows (score = start logit + end logit).

    The n_best candidates for start and for end are taken among the window's context tokens only, so the
    Trainer's -100 padding beyond a window's length and the question tokens never compete.
    """
    if n_best < 1 or max_answer_length < 1:
        raise UsageError(f"n_best ({n_best}) and max_answer_length ({max_answer_length}) must be positive")
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    if start_logits.shape != end_logits.shape or start_logits.ndim != 2 or len(start_logits) != len(features):
        raise ValueError(
            f"logits of shapes {start_logits.shape} and {end_logits.shape} do not match {len(features)} features"
        )
    windows_of: dict[str, list[int]] = defaultdict(list)
    # ``[:]`` turns a Dataset column into a list in one Arrow conversion instead of one per row.
    for window, example_id in enumerate(features["example_id"][:]):
        windows_of[example_id].append(window)
    offset_mapping = features["offset_mapping"][:]

    predictions = {}
    for example_id, context in zip(examples["id"][:], examples["context"][:], strict=True):
        best_score, best_text = -np.inf, ""
        for window in windows_of[example_id]:
            offsets = offset_mapping[window]
            if len(offsets) > start_logits.shape[1]:
                raise ValueError(f"window {window} has {len(offsets)} tokens but only {start_logits.shape[1]} logits")
            tokens = np.array([token for token, offset in enumerate(offsets) if offset is not None])
            if tokens.size == 0:
                continue
            starts = tokens[np.argsort(-start_logits[window, tokens], kind="stable")[:n_best]]
            ends = tokens[np.argsort(-end_logits[window, tokens], kind="stable")[:n_best]]
            lengths = ends[None, :] - starts[:, None] + 1
            scores = start_logits[window, starts][:, None] + end_logits[window, ends][None, :]
            scores = np.where((lengths >= 1) & (lengths <= max_answer_length), scores, -np.inf)
            i, j = np.unravel_index(np.argmax(scores), scores.shape)
            if scores[i, j] > best_score:
                best_score = scores[i, j]
                best_text = context[offsets[starts[i]][0] : offsets[ends[j]][1]]
        predictions[example_id] = best_text
    return predictions


# ---------------------------------------------------------------------------------------------------- metrics


def normalize_answer(text: str) -> str:
    """The official SQuAD v1.1 normalization: lower case, no punctuation, no articles, single spaces."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalized texts (0 when nothing is shared, as in the v1.1 script)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    shared = sum((Counter(predicted) & Counter(expected)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """Exact match and F1 in percent over the reference questions; each scores its best gold answer."""
    if not references:
        raise ValueError("squad_metrics needs at least one reference question")
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        logger.warning("%d of %d questions have no prediction; they score 0", len(missing), len(references))
    exact = f1 = 0.0
    for qid, golds in references.items():
        if qid in predictions:
            exact += max(float(normalize_answer(predictions[qid]) == normalize_answer(g)) for g in golds)
            f1 += max(_f1(predictions[qid], g) for g in golds)
    return {"exact_match": 100.0 * exact / len(references), "f1": 100.0 * f1 / len(references)}


def write_predictions(predictions: dict[str, str], path: str | Path) -> None:
    """``predictions.json`` as the official evaluation script reads it: question id -> answer text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(predictions, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
