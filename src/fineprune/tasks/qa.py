"""Extractive question answering: the user's SQuAD-style data (SQuAD is a preset of it), window features, span
decoding and the official SQuAD v1.1 metrics.

Data: the official SQuAD JSON layout (``data[].paragraphs[].qas[]``) or flat records -- JSON Lines or a JSON list
with ``id``, ``context``, ``question``, ``answers: {text: [...], answer_start: [...]}`` and optionally ``title`` --
from a local file (optionally gzipped) or a hub dataset. Contexts longer than the model's window are cut into
overlapping windows (``doc_stride`` tokens shared between neighbours); training labels each window with the answer's
token span or with index 0 when the answer is not fully inside it, and evaluation picks the best span over all
windows of a question and maps it back to the original context text through the tokenizer's character offsets.
"""

from __future__ import annotations

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
from transformers import AutoModelForQuestionAnswering, BatchEncoding, PreTrainedTokenizerBase

from fineprune.config import TaskSection
from fineprune.errors import UsageError
from fineprune.tasks import sources
from fineprune.tasks.base import Task, TaskData, head

logger = logging.getLogger(__name__)

FORMATS = (".json", ".jsonl")
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

Record = dict[str, Any]  # a flat record, plus "location": where it is in its source, for error messages


class QuestionAnsweringTask(Task):
    """Extractive question answering over windows of the context."""

    auto_class = AutoModelForQuestionAnswering
    head_suffix = "ForQuestionAnswering"

    def __init__(self, section: TaskSection, training: bool = True):
        super().__init__(section)
        train_table, validation_table = sources.tables(section, training, FORMATS)
        train = _records(train_table) if train_table is not None else None
        if validation_table is None:
            train, validation = _split_by_article(train, section.eval_fraction, section.seed, train_table.where)
        else:
            validation = _records(validation_table)
        self.examples["validation"] = head(_to_dataset(validation), section.max_eval_samples)
        if training:
            self.examples["train"] = head(_to_dataset(train), section.max_train_samples)

    def check_model(self, model, where):
        if not hasattr(model, "qa_outputs") and "QuestionAnswering" not in type(model).__name__:
            raise UsageError(f"{where}: {type(model).__name__} is not a question-answering model")

    def prepare(self, tokenizer: PreTrainedTokenizerBase) -> TaskData:
        s = self.section
        kwargs = {"tokenizer": tokenizer, "max_seq_length": s.max_seq_length, "doc_stride": s.doc_stride}
        train, validation = self.examples.get("train"), self.examples["validation"]
        if train is not None:
            train = train.map(prepare_train_features, batched=True, remove_columns=train.column_names, fn_kwargs=kwargs)
        features = validation.map(
            prepare_eval_features, batched=True, remove_columns=validation.column_names, fn_kwargs=kwargs
        )
        return TaskData(train=train, eval=features, eval_examples=validation)

    def model_inputs(self, features):
        return features.remove_columns(["example_id", "offset_mapping"])

    def score(self, data, predictions, output_dir):
        start, end = predictions[:2]
        answers = postprocess_predictions(
            data.eval_examples, data.eval, start, end, self.section.n_best, self.section.max_answer_length
        )
        if output_dir is not None:
            write_predictions(answers, Path(output_dir) / "predictions.json")
        references = {ex["id"]: ex["answers"]["text"] for ex in data.eval_examples}
        return squad_metrics(answers, references)


# ---------------------------------------------------------------------------------------------------- loading


def _records(table: sources.Table) -> list[Record]:
    """A table's questions as validated flat records: the official layout (one document holding ``data``) or
    one flat record per row."""
    rows = list(table.rows)
    where = table.where
    if len(rows) == 1 and isinstance(rows[0][1], dict) and "data" in rows[0][1]:
        records = _flatten_official(rows[0][1]["data"], where)
    elif len(rows) == 1 and "question" not in rows[0][1]:
        raise UsageError(
            f"{where}: neither the official SQuAD layout ({{'data': [articles]}}) nor flat records "
            "(id, context, question, answers)"
        )
    else:
        records = [_flat_record(record, where, location) for location, record in rows]
    if not records:
        raise UsageError(f"{where}: contains no questions")
    _validate(records, where)
    return records


def _field(obj: Any, key: str, kind: type, where: str, location: str) -> Any:
    """``obj[key]`` checked against ``kind``: a malformed file fails with its location, not a KeyError."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UsageError(f"{where}, {location}: no {key!r} of type {kind.__name__} (not a SQuAD layout)")
    return value


def _text(obj: dict[str, Any], key: str, where: str, location: str) -> str:
    """A text field that must say something: the question, the context."""
    value = _field(obj, key, str, where, location)
    if not value.strip():
        raise UsageError(f"{where}, {location}, {key!r}: empty text")
    return value


def _question_id(obj: dict[str, Any], where: str, location: str) -> str:
    """Ids may be written as numbers; they are compared and stored as text."""
    value = obj.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _field(obj, "id", str, where, location)


def _flatten_official(articles: Any, where: str) -> list[Record]:
    """``data[].paragraphs[].qas[]`` into one flat record per question."""
    if not isinstance(articles, list):
        raise UsageError(f"{where}: 'data' is not a list of articles (not a SQuAD layout)")
    records = []
    for a, article in enumerate(articles):
        title = _field(article, "title", str, where, f"data[{a}]")
        for p, paragraph in enumerate(_field(article, "paragraphs", list, where, f"data[{a}]")):
            place = f"data[{a}].paragraphs[{p}]"
            context = _text(paragraph, "context", where, place)
            for q, qa in enumerate(_field(paragraph, "qas", list, where, place)):
                location = f"{place}.qas[{q}]"
                answers = _field(qa, "answers", list, where, location)
                records.append(
                    {
                        "id": _question_id(qa, where, location),
                        "title": title,
                        "context": context,
                        "question": _text(qa, "question", where, location),
                        "answers": {
                            "text": [_field(x, "text", str, where, f"{location}.answers") for x in answers],
                            "answer_start": [
                                _field(x, "answer_start", int, where, f"{location}.answers") for x in answers
                            ],
                        },
                        "location": location,
                    }
                )
    return records


def _flat_record(item: Any, where: str, location: str) -> Record:
    """A flat record, type-checked and reduced to the known columns; the title is optional."""
    answers = _field(item, "answers", dict, where, location)
    texts = _field(answers, "text", list, where, f"{location}, answers")
    starts = _field(answers, "answer_start", list, where, f"{location}, answers")
    if len(texts) != len(starts) or not all(isinstance(t, str) for t in texts):
        raise UsageError(f"{where}, {location}: answers needs as many texts (strings) as answer_start values")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in starts):
        raise UsageError(f"{where}, {location}: answers.answer_start holds a value that is not an integer")
    title = item.get("title")
    if title is not None and not isinstance(title, str):
        raise UsageError(f"{where}, {location}: 'title' is {title!r:.60}, expected text")
    return {
        "id": _question_id(item, where, location),
        "title": title or "",
        "context": _text(item, "context", where, location),
        "question": _text(item, "question", where, location),
        "answers": {"text": texts, "answer_start": starts},
        "location": location,
    }


def _validate(records: list[Record], where: str) -> None:
    """Unique ids, and answers exactly at their answer_start: the training labels are built from it."""
    seen: set[str] = set()
    for record in records:
        qid, context, answers = record["id"], record["context"], record["answers"]
        place = f"{where}, {record['location']}: question {qid!r}"
        if qid in seen:
            raise UsageError(f"{place} appears more than once")
        seen.add(qid)
        if not answers["text"]:
            raise UsageError(f"{place} has no answers (unanswerable SQuAD v2 questions are not supported)")
        for text, start in zip(answers["text"], answers["answer_start"], strict=True):
            if not text.strip():
                raise UsageError(f"{place} has an empty answer text")
            if start < 0 or context[start : start + len(text)] != text:
                raise UsageError(f"{place}: answer {text!r} is not at answer_start {start} of its context")


def _split_by_article(
    records: list[Record], eval_fraction: float, seed: int, where: str
) -> tuple[list[Record], list[Record]]:
    """Seeded split of whole articles (a record's title, or its context where it has none), so that no context
    (nor its neighbours) leaks from train into eval."""
    articles = sorted({record["title"] or record["context"] for record in records})
    if len(articles) < 2:
        raise UsageError(
            f"{where}: has {len(articles)} article (title, or context where there is no title); splitting train/eval "
            "by article needs at least 2 (or set task.validation_file)"
        )
    random.Random(seed).shuffle(articles)
    n_eval = min(max(round(eval_fraction * len(articles)), 1), len(articles) - 1)
    held_out = set(articles[:n_eval])
    train = [record for record in records if (record["title"] or record["context"]) not in held_out]
    validation = [record for record in records if (record["title"] or record["context"]) in held_out]
    return train, validation


def _to_dataset(records: list[Record]) -> datasets.Dataset:
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
