"""A tiny BERT (model + tokenizer folder), a tiny MNLI TSV and a base config, so that real training runs take
seconds: the sweep and report tests train through fineprune.run.train exactly as a user would."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

LABELS = ["entailment", "neutral", "contradiction"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "a child", "the farmer"]
VERBS = ["sees", "likes", "finds", "paints", "buys"]
OBJECTS = ["a red ball", "the old house", "some bread", "a small boat", "the green tree"]


def mnli_rows(count: int = 60) -> list[tuple[str, str, str]]:
    """Sentence pairs whose label follows from the words (same sentence, other object, negation), reproducibly."""
    rng = random.Random(0)
    rows = []
    for i in range(count):
        subject, verb, thing = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
        label = LABELS[i % 3]
        premise = f"{subject} {verb} {thing} today."
        if label == "entailment":
            hypothesis = f"{subject} {verb} {thing}."
        elif label == "neutral":
            hypothesis = f"{subject} {verb} {rng.choice(OBJECTS)} too."
        else:
            hypothesis = f"{subject} never {verb} {thing}."
        rows.append((premise, hypothesis, label))
    return rows


def vocabulary(rows: list[tuple[str, str, str]]) -> list[str]:
    words = {w for premise, hypothesis, _ in rows for w in f"{premise} {hypothesis}".lower().split()}
    return [*SPECIAL_TOKENS, ".", *sorted(w.strip(".") for w in words)]


def write_mnli_tsv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    lines = ["sentence1\tsentence2\tgold_label", *("\t".join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_tiny_bert(folder: Path, vocab: list[str], lively: bool = False) -> Path:
    """A random 2-layer BERT classifier and a WordPiece tokenizer over `vocab`, saved as one model folder; ``lively``:
    its matrices scaled by 10 (conftest.lively), so that a wrong weight moves the logits past their margins."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=len(tokenizer),
        num_labels=3,
    )
    model = BertForSequenceClassification(config)
    if lively:
        from conftest import lively as scale_matrices

        scale_matrices(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def base_config(model_dir: Path, train_file: Path, output_dir: Path) -> dict:
    """A base config whose runs take a few seconds: 45 training rows, 12 optimizer steps over 2 epochs."""
    return {
        "model": {"name_or_path": str(model_dir)},
        "task": {"name": "mnli", "train_file": str(train_file), "eval_fraction": 0.25, "max_seq_length": 32},
        "pruning": {"method": "movement", "final_density": 0.5, "warmup_steps": 1, "cooldown_steps": 1},
        "training": {
            "output_dir": str(output_dir),
            "num_train_epochs": 2,
            "per_device_train_batch_size": 8,
            "save_strategy": "epoch",
            "logging_steps": 50,
            "report_to": "none",
            "use_cpu": True,
            "disable_tqdm": True,
        },
    }


def mnli_eval_features(folder: Path) -> tuple[Any, Any, Any]:
    """(task, tokenizer, eval features) of the MNLI config and tokenizer in an exported folder."""
    from transformers import AutoTokenizer

    from fineprune.config import load_config
    from fineprune.tasks import load_task

    task, tokenizer = (
        load_task(load_config(folder / "fineprune_config.yaml").task),
        AutoTokenizer.from_pretrained(folder),
    )
    return task, tokenizer, task.prepare(tokenizer).eval


def row_logits(model: torch.nn.Module, features, input_names: list[str]) -> np.ndarray:
    """The torch model's logits over the features, one row at a time (no padding)."""
    with torch.no_grad():
        rows = [model(**{k: torch.tensor([row[k]]) for k in input_names}).logits[0] for row in features]
    return torch.stack(rows).numpy()


def assert_same_predictions(logits: np.ndarray, expected: np.ndarray) -> None:
    """Each row of ``logits`` within half of the expected row's margin (its top logit minus the next), so that every
    prediction is the same: a tolerance as tight as the predictions allow, not a fixed one."""
    top_two = np.sort(expected, axis=1)[:, -2:]
    assert (np.abs(logits - expected).max(axis=1) < (top_two[:, 1] - top_two[:, 0]) / 2).all()
    assert (logits.argmax(axis=1) == expected.argmax(axis=1)).all()


@contextmanager
def one_thread() -> Iterator[None]:
    """Train on one thread: on a busy 2-core machine OpenMP threads spin on each other and a tiny run takes 15 s
    instead of 0.3 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# Each test module that imports these fixtures registers its own copy, and pytest caches a session fixture per
# copy: the cache makes the sweep train once per session however many modules use it.
_MADE: dict[str, Any] = {}


@pytest.fixture(scope="session", name="tiny_setup")
def tiny_setup_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of the tiny model folder, the MNLI TSV and the base YAML config."""
    if "setup" not in _MADE:
        root = tmp_path_factory.mktemp("tiny")
        rows = mnli_rows()
        train_file = write_mnli_tsv(root / "mnli.tsv", rows)
        model_dir = write_tiny_bert(root / "tiny-bert", vocabulary(rows))
        config = root / "base.yaml"
        config.write_text(yaml.safe_dump(base_config(model_dir, train_file, root / "run")))
        _MADE["setup"] = {"model": model_dir, "train_file": train_file, "config": config, "root": root}
    return _MADE["setup"]


@pytest.fixture(scope="session", name="tiny_sweep")
def tiny_sweep_fixture(tiny_setup: dict[str, Path]) -> dict[str, Any]:
    """A finished sweep of magnitude and movement at density 0.5 with distillation: its folder, rows and progress."""
    from fineprune.sweep import sweep

    if "sweep" not in _MADE:
        out, lines = tiny_setup["root"] / "sweep", []
        with one_thread():
            rows = sweep(tiny_setup["config"], ["magnitude", "movement"], [0.5], out, progress=lines.append)
        _MADE["sweep"] = {"out": out, "rows": rows, "progress": lines}
    return _MADE["sweep"]
