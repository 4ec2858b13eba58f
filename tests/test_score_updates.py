"""The scores' update rules (issue 10, levers 1 and 5): plain SGD (the paper's accumulation of movement) and PLATON,
against gradients recomputed independently in float64; their state across save / load and a checkpoint resume; and
their place in PruningTrainer's optimizer step."""

import copy

import numpy as np
import pytest
import torch
from conftest import tiny_model
from datasets import Dataset
from torch import nn
from transformers import TrainerCallback, TrainingArguments

import fineprune as fp
from fineprune.config import build_config
from fineprune.errors import UsageError
from fineprune.pruning.masks import keep_count
from fineprune.pruning.score_updates import update_scores
from fineprune.training.callbacks import PruningCallback
from fineprune.training.trainer import PruningTrainer

B1, B2 = 0.85, 0.95


def no_dropout(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def movement(rule: str, block=(1, 1), **kw) -> fp.PruningConfig:
    settings = {"method": "movement", "final_density": 0.5, "warmup_steps": 0, "cooldown_steps": 0}
    return fp.PruningConfig(**(settings | {"block_shape": block, "scores_update": rule} | kw))


def batches(n: int, size: int = 4, length: int = 10) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(2)
    return [
        {
            "input_ids": torch.randint(5, 99, (size, length), generator=generator),
            "attention_mask": torch.ones(size, length, dtype=torch.long),
            "labels": torch.randint(0, 3, (size,), generator=generator),
        }
        for _ in range(n)
    ]


def block_sums(array: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    rows, cols = array.shape
    return array.reshape(rows // block[0], block[0], cols // block[1], block[1]).sum(axis=(1, 3))


def masked_gradients(dense64: nn.Module, pruned: nn.Module, batch) -> dict[str, np.ndarray]:
    """dL/dW' by float64 autograd on a plain (unparametrized) copy whose weights are set to W * M."""
    pruner = fp.get_pruner(pruned)
    dense64.zero_grad()
    with torch.no_grad():
        for name, linear, mask in zip(pruner.names, pruner.linears, pruner.binary_masks(), strict=True):
            original = linear.parametrizations.weight.original
            dense64.get_submodule(name).weight.copy_(original.double() * mask.double())
    dense64(**batch).loss.backward()
    return {name: dense64.get_submodule(name).weight.grad.numpy().copy() for name in pruner.names}


def run_rule(rule: str, block, steps: int = 3, lr: float = 1e4):
    """`steps` updates of the engine's rule; returns the model, the weights W and the float64 dL/dW' of each step."""
    model = no_dropout(tiny_model("bert"))
    dense64 = copy.deepcopy(model).double()
    fp.prepare(model, movement(rule, block))
    pruner = fp.get_pruner(model)
    weights = {
        n: lin.parametrizations.weight.original.detach().double().numpy()
        for n, lin in zip(pruner.names, pruner.linears)
    }
    gradients = []
    for t, batch in enumerate(batches(steps)):
        pruner.set_step(3 + t, 10)
        gradients.append(masked_gradients(dense64, model, batch))
        model.zero_grad()
        model(**batch).loss.backward()
        update_scores(pruner.parametrizations, pruner.config, lr)
    return model, weights, gradients


@pytest.mark.parametrize("block", [(1, 1), (2, 4)])
def test_sgd_accumulates_the_raw_movement(block):
    """S_3 = S_0 - lr * sum_t block_sum(dL/dW'_t * W): the paper's S = -lr * sum_t dL/dW' * W."""
    lr = 1e4  # raw score gradients of this tiny random model are ~1e-5
    model, weights, gradients = run_rule("sgd", block, lr=lr)
    pruner = fp.get_pruner(model)
    for name, masked in zip(pruner.names, pruner.parametrizations):
        expected = 0.0 - lr * sum(block_sums(g[name] * weights[name], block) for g in gradients)
        scores = masked.scores.detach().double().numpy()
        assert masked.scores.grad is None  # dropped, so an optimizer holding the scores skips them
        np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    assert any(np.abs(m.scores.detach().numpy()).max() > 1e-2 for m in pruner.parametrizations)


def test_sgd_masks_ignore_the_learning_rate_from_constant_scores():
    """From constant initial scores, sgd's scores are lr times a sum that does not depend on lr, so Top-v (local
    or global) keeps the same weights whatever the learning rate: the lr only matters against weight-based scores."""
    masks = []
    for lr in (1.0, 1e4):
        model, _, _ = run_rule("sgd", (1, 1), lr=lr)
        pruner = fp.get_pruner(model)
        pruner.set_step(9, 10)
        masks.append(pruner.binary_masks())
    assert all(torch.equal(a, b) for a, b in zip(*masks))
    assert any(not bool(m.all()) for m in masks[0])


@pytest.mark.parametrize("block", [(1, 1), (2, 4)])
def test_platon_moving_averages_after_three_steps(block):
    """I = |block_sum(dL/dW' * W)|; I_bar <- b1 I_bar + (1-b1) I; U <- b2 U + (1-b2) |I - I_bar|; S = I_bar * U."""
    model, weights, gradients = run_rule("platon", block)
    pruner = fp.get_pruner(model)
    for name, masked in zip(pruner.names, pruner.parametrizations):
        average = uncertainty = 0.0
        for g in gradients:
            importance = np.abs(block_sums(g[name] * weights[name], block))
            average = B1 * average + (1 - B1) * importance
            uncertainty = B2 * uncertainty + (1 - B2) * np.abs(importance - average)
        for got, expected in [
            (masked.importance_average, average),
            (masked.importance_uncertainty, uncertainty),
            (masked.scores, average * uncertainty),
        ]:
            np.testing.assert_allclose(got.detach().double().numpy(), expected, rtol=1e-4, atol=1e-6 * expected.max())


def straightforward_platon(grad, average, uncertainty):
    """PLATON's update with a new tensor for each intermediate, as first written: the engine's in-place update must
    give exactly these bits."""
    importance = grad.abs()
    average = (average * B1).add(importance, alpha=1 - B1)
    uncertainty = (uncertainty * B2).add((importance - average).abs(), alpha=1 - B2)
    return average, uncertainty, average * uncertainty


def topv_by_sorting(scores: list[torch.Tensor], density: float, scope: str) -> list[torch.Tensor]:
    """Top-v by a full stable descending sort: the highest scores, ties to the earlier position."""

    def top(flat: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(flat.numel(), dtype=torch.bool)
        mask[flat.sort(descending=True, stable=True).indices[: keep_count(density, flat.numel())]] = True
        return mask

    if scope == "local":
        return [top(s.reshape(-1)).view_as(s) for s in scores]
    flat = top(torch.cat([s.reshape(-1) for s in scores]))
    return [m.view_as(s) for m, s in zip(flat.split([s.numel() for s in scores]), scores, strict=True)]


@pytest.mark.parametrize("scope", ["local", "global"])
def test_platon_masks_over_steps_are_bit_for_bit_the_reference(scope):
    """Eight optimizer steps through the cubic schedule: PLATON's averages and scores are exactly the
    straightforward update's, the masks exactly a sorted Top-v of those scores, and the weights the model uses
    exactly W times that mask."""
    model = no_dropout(tiny_model("bert")).train()
    fp.prepare(model, movement("platon", scope=scope, final_density=0.2, warmup_steps=1, cooldown_steps=2))
    pruner = fp.get_pruner(model)
    optimizer = torch.optim.AdamW([p for n, p in model.named_parameters() if not n.endswith("scores")], lr=1e-2)
    seen = set()
    for t, batch in enumerate(batches(8)):
        pruner.set_step(t, 8)
        model(**batch).loss.backward()
        expected = [
            straightforward_platon(m.scores.grad, m.importance_average, m.importance_uncertainty)
            for m in pruner.parametrizations
        ]
        update_scores(pruner.parametrizations, pruner.config, 0.0)
        optimizer.step()
        optimizer.zero_grad()
        for masked, (average, uncertainty, scores) in zip(pruner.parametrizations, expected, strict=True):
            assert torch.equal(masked.importance_average, average)
            assert torch.equal(masked.importance_uncertainty, uncertainty)
            assert torch.equal(masked.scores, scores)
        pruner.set_step(t + 1, 8)
        scores = [m.scores.detach() for m in pruner.parametrizations]
        reference = topv_by_sorting(scores, pruner.schedule_value, scope)
        for mask, want, linear in zip(pruner.binary_masks(), reference, pruner.linears, strict=True):
            assert torch.equal(mask, want)
            assert torch.equal(linear.weight, linear.parametrizations.weight.original * want.float())
        seen.add(b"".join(m.numpy().tobytes() for m in reference))
    assert len(seen) >= 6  # the masks moved with the scores and the schedule: the comparison is not vacuous


def test_platon_state_survives_save_and_load(tmp_path):
    model, _, _ = run_rule("platon", (1, 1), steps=2)
    model.save_pretrained(tmp_path)
    loaded = no_dropout(fp.load_pruned(tmp_path))
    batch = batches(3)[2]
    for m in (model, loaded):  # one more update on each: the same scores only if the state came back
        m.zero_grad()
        m(**batch).loss.backward()
        pruner = fp.get_pruner(m)
        update_scores(pruner.parametrizations, pruner.config, 1.0)
    for a, b in zip(fp.get_pruner(model).parametrizations, fp.get_pruner(loaded).parametrizations):
        assert float(a.importance_uncertainty.abs().max()) > 0
        for name in ("scores", "importance_average", "importance_uncertainty"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-6, atol=0)


def training_data(n: int = 24) -> Dataset:
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 99, (n, 10), generator=generator)
    labels = torch.randint(0, 3, (n,), generator=generator)
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})


class StepRecorder(TrainerCallback):
    """Snapshots of the scores, their gradients and the rule's state around each optimizer step."""

    def __init__(self, model: nn.Module):
        self.pruner = fp.get_pruner(model)
        self.steps: list[dict] = []

    def _state(self) -> list[dict[str, torch.Tensor | None]]:
        return [
            {k: v.detach().clone() for k, v in m.named_buffers()}
            | {"scores": m.scores.detach().clone(), "grad": None if m.scores.grad is None else m.scores.grad.clone()}
            for m in self.pruner.parametrizations
        ]

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.steps.append({"before": self._state()})

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.steps[-1]["after"] = self._state()


def train(model: nn.Module, out, max_steps: int, lr: float, recorder=None, resume=None, save_steps=None):
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        logging_steps=1,
    )
    callbacks = [PruningCallback(fp.get_pruner(model))] + ([recorder] if recorder else [])
    trainer = PruningTrainer(
        model=model, args=args, train_dataset=training_data(), callbacks=callbacks, scores_learning_rate=lr
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


@pytest.mark.parametrize("rule", ["sgd", "platon"])
def test_trainer_applies_the_rule_at_each_optimizer_step(tmp_path, rule):
    lr, steps = 50.0, 3
    model = fp.prepare(no_dropout(tiny_model("bert")), movement(rule, warmup_steps=1, cooldown_steps=1))
    weights_before = [w.detach().clone() for w in fp.get_pruner(model)._weights()]
    recorder = StepRecorder(model)
    trainer = train(model, tmp_path, steps, lr, recorder)

    assert isinstance(trainer.optimizer.optimizer, torch.optim.AdamW) and trainer.optimizer.optimizer.defaults["fused"]
    assert len(recorder.steps) == steps
    for t, step in enumerate(recorder.steps):
        scheduled_lr = lr * (steps - t) / steps  # the Trainer's linear decay, no warm-up
        for before, after in zip(step["before"], step["after"]):
            grad = before["grad"].double()
            assert after["grad"] is None and float(grad.abs().max()) > 0
            if rule == "sgd":
                expected = before["scores"].double() - scheduled_lr * grad
                torch.testing.assert_close(after["scores"].double(), expected, rtol=1e-5, atol=1e-7)
            else:
                average = B1 * before["importance_average"].double() + (1 - B1) * grad.abs()
                uncertainty = B2 * before["importance_uncertainty"].double() + (1 - B2) * (grad.abs() - average).abs()
                torch.testing.assert_close(after["importance_average"].double(), average, rtol=1e-5, atol=1e-12)
                torch.testing.assert_close(after["importance_uncertainty"].double(), uncertainty, rtol=1e-5, atol=1e-12)
                torch.testing.assert_close(after["scores"].double(), average * uncertainty, rtol=1e-5, atol=1e-15)
    weights_after = fp.get_pruner(model)._weights()
    assert all(not torch.equal(a, b) for a, b in zip(weights_before, weights_after))  # AdamW still moves the weights


def test_platon_resume_continues_exactly(tmp_path):
    whole = fp.prepare(no_dropout(tiny_model("bert")), movement("platon", warmup_steps=1, cooldown_steps=1))
    train(whole, tmp_path / "whole", 4, 1.0, save_steps=2)
    resumed = fp.prepare(no_dropout(tiny_model("bert")), movement("platon", warmup_steps=1, cooldown_steps=1))
    train(resumed, tmp_path / "resumed", 4, 1.0, resume=str(tmp_path / "whole" / "checkpoint-2"))
    for a, b in zip(fp.get_pruner(whole).parametrizations, fp.get_pruner(resumed).parametrizations):
        for name in ("scores", "importance_average", "importance_uncertainty"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize(
    ("pruning", "message"),
    [
        (
            {"method": "movement", "final_density": 0.1, "scores_update": "adam"},
            "pruning.scores_update: Input should be",
        ),
        (
            {"method": "magnitude", "final_density": 0.1, "scores_update": "sgd"},
            "method magnitude has no scores .*set scores_update to adamw",
        ),
        (
            {"method": "soft_movement", "scores_update": "platon"},
            "needs method movement, not soft_movement .set scores_update to adamw",
        ),
        (
            {"method": "movement", "final_density": 0.1, "scores_update": "platon", "scores_init_from_weights": True},
            "scores_init_from_weights has no effect",
        ),
        (
            {"method": "movement", "final_density": 0.1, "platon_beta1": 1.0},
            "pruning.platon_beta1: Input should be less",
        ),
    ],
)
def test_bad_rule_settings_are_one_line_errors(pruning, message):
    data = {"model": {"name_or_path": "m"}, "task": {"name": "mnli"}, "pruning": pruning}
    with pytest.raises(UsageError, match=message) as error:
        build_config(data, "run.yaml")
    assert str(error.value).startswith("run.yaml: pruning") and "\n" not in str(error.value)
