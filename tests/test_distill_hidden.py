"""Hidden-state distillation (issue 10, lever 4): the per-layer MSE over real tokens, the loss PruningTrainer adds,
and the checks that a teacher fits, against float64 computations by hand."""

import copy

import numpy as np
import pytest
import torch
from conftest import tiny_model
from tiny_assets import mnli_rows, write_mnli_tsv
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

from fineprune.config import build_config
from fineprune.errors import UsageError
from fineprune.run import _load_teacher
from fineprune.tasks import load_task
from fineprune.training.distill import hidden_layer_pairs, hidden_state_loss
from fineprune.training.trainer import PruningTrainer


def manual_hidden_mse(student, teacher, pairs, mask) -> float:
    """mean over pairs of sum over real tokens of ||h_s - h_t||^2 / (hidden size * real tokens), by loops."""
    per_layer = []
    for s, t in pairs:
        a, b = student[s], teacher[t]
        batch, tokens, hidden = a.shape
        total, count = 0.0, 0
        for i in range(batch):
            for j in range(tokens):
                if mask[i][j]:
                    total += sum((float(a[i, j, k]) - float(b[i, j, k])) ** 2 for k in range(hidden))
                    count += 1
        per_layer.append(total / (hidden * count))
    return sum(per_layer) / len(per_layer)


def test_hidden_loss_is_the_masked_per_layer_mse():
    generator = torch.Generator().manual_seed(0)
    student = [torch.randn(2, 5, 3, generator=generator) for _ in range(4)]
    teacher = [torch.randn(2, 5, 3, generator=generator) for _ in range(4)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    for states in (student, teacher):  # padding positions far apart: they must not count
        for h in states:
            h[0, 3:] = 100.0 * torch.randn(2, 3, generator=generator)
    pairs = [(1, 1), (2, 3), (3, 2)]

    got = hidden_state_loss(student, teacher, pairs, mask)

    assert float(got) == pytest.approx(manual_hidden_mse(student, teacher, pairs, mask.tolist()), rel=1e-6)
    everything = manual_hidden_mse(student, teacher, pairs, [[1] * 5, [1] * 5])
    assert float(hidden_state_loss(student, teacher, pairs, None)) == pytest.approx(everything, rel=1e-6)


def no_dropout(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_trainer_loss_is_ce_plus_kd_plus_hidden_mse(tmp_path, batch):
    student = no_dropout(tiny_model("bert"))
    teacher = no_dropout(tiny_model("bert"))
    with torch.no_grad():  # a different teacher: perturb every weight
        generator = torch.Generator().manual_seed(5)
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    inputs = dict(batch, labels=torch.tensor([0, 2, 1]))
    inputs["attention_mask"] = inputs["attention_mask"].clone()
    inputs["attention_mask"][0, 8:] = 0
    inputs["attention_mask"][2, 5:] = 0
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    alphas = {"alpha_ce": 0.3, "alpha_distil": 0.6, "alpha_hidden": 2.5, "temperature": 2.0}
    trainer = PruningTrainer(model=student, args=args, teacher=teacher, hidden_layers={1: 2, 2: 1}, **alphas)

    student.train()
    loss, outputs = trainer.compute_loss(student, inputs, return_outputs=True)

    # The same terms from float64 copies of both models, by hand.
    with torch.no_grad():
        s = copy.deepcopy(student).double()(**inputs, output_hidden_states=True)
        t = copy.deepcopy(teacher).double().eval()(**inputs, output_hidden_states=True)
    zs, zt, labels = s.logits.numpy(), t.logits.numpy(), inputs["labels"].numpy()
    ce = -np.mean(np.log(softmax(zs))[np.arange(3), labels])
    ps, pt = softmax(zs / 2.0), softmax(zt / 2.0)
    kd = np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=-1)) * 4.0
    mse = manual_hidden_mse(s.hidden_states, t.hidden_states, [(1, 2), (2, 1)], inputs["attention_mask"].tolist())
    expected = 0.3 * ce + 0.6 * kd + 2.5 * mse
    assert mse > 1e-4 and float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert outputs.hidden_states is not None

    trainer.alpha_hidden = 0.0  # without the hidden term, hidden states are not asked for
    loss, outputs = trainer.compute_loss(student, inputs, return_outputs=True)
    assert outputs.hidden_states is None and float(loss.detach()) == pytest.approx(0.3 * ce + 0.6 * kd, rel=1e-5)


def test_default_pairs_are_every_layer_at_the_same_depth():
    config = BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4)
    assert hidden_layer_pairs(config, config, None) == [(1, 1), (2, 2), (3, 3)]
    assert hidden_layer_pairs(config, config, {3: 0, 1: 2}) == [(1, 2), (3, 0)]


@pytest.mark.parametrize(
    ("teacher", "mapping", "message"),
    [
        ({"hidden_size": 64}, None, "the teacher's hidden size is 64, the student's 32"),
        ({"num_hidden_layers": 4}, None, "the teacher has 4 layers, the student 2: give hidden_layers"),
        (
            {"num_hidden_layers": 4},
            {1: 5},
            "hidden_layers maps teacher layer 5, but the teacher has layers 0 \\(embeddings\\) to 4",
        ),
        ({}, {3: 1}, "hidden_layers maps student layer 3, but the student has layers 0 \\(embeddings\\) to 2"),
    ],
)
def test_a_teacher_that_does_not_fit_is_a_one_line_error(tmp_path, teacher, mapping, message):
    student = tiny_model("bert")
    settings = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    settings |= teacher | {"vocab_size": 99, "num_labels": 3}
    BertForSequenceClassification(BertConfig(**settings)).save_pretrained(tmp_path / "teacher")
    distillation = {"teacher": str(tmp_path / "teacher"), "alpha_hidden": 1.0, "hidden_layers": mapping}
    task = {"name": "mnli", "train_file": str(write_mnli_tsv(tmp_path / "mnli.tsv", mnli_rows(12)))}
    config = build_config({"model": {"name_or_path": "m"}, "task": task, "distillation": distillation}, "run.yaml")
    with pytest.raises(UsageError, match=f"^distillation.teacher {tmp_path / 'teacher'}: {message}") as error:
        _load_teacher(config, load_task(config.task), student)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("distillation", "message"),
    [
        ({"alpha_hidden": -1.0}, "distillation.alpha_hidden: Input should be greater than or equal to 0"),
        ({"hidden_layers": {1: 1}}, "distillation: hidden_layers is set but alpha_hidden is 0"),
        ({"alpha_hidden": 1.0, "hidden_layers": {}}, "distillation: hidden_layers is empty"),
        ({"alpha_hidden": 1.0, "hidden_layers": {"a": 1}}, "distillation.hidden_layers.a"),
    ],
)
def test_bad_hidden_settings_are_one_line_errors(distillation, message):
    data = {"model": {"name_or_path": "m"}, "task": {"name": "mnli"}, "distillation": {"teacher": "t"} | distillation}
    with pytest.raises(UsageError, match=message) as error:
        build_config(data, "run.yaml")
    assert str(error.value).startswith("run.yaml: distillation") and "\n" not in str(error.value)
