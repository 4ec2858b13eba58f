"""PruningTrainer details that the Trainer gets wrong for pruning: evaluation order, gradient clipping, logs."""

import copy

import pytest
import torch
from datasets import Dataset
from transformers import BertConfig, BertForSequenceClassification, TrainerCallback, TrainingArguments

import fineprune as fp
from fineprune.training.callbacks import PruningCallback
from fineprune.training.trainer import SCORES_SUFFIX, PruningTrainer


def tiny_classifier(dropout: float = 0.1) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=8,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(config)


def pairs(count: int = 8) -> Dataset:
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 8, (count, 6), generator=generator)
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": (ids[:, 0] % 2).tolist()})


def pruning_trainer(model, tmp_path, teacher_args: dict | None = None, **args) -> PruningTrainer:
    """A PruningTrainer on ``pairs()``; ``args`` go to TrainingArguments, ``teacher_args`` (teacher, alphas) to it."""
    defaults = {"output_dir": str(tmp_path), "report_to": [], "use_cpu": True, "save_strategy": "no"}
    return PruningTrainer(
        model=model,
        args=TrainingArguments(**(defaults | args)),
        train_dataset=pairs(),
        callbacks=[PruningCallback(fp.get_pruner(model))],
        **(teacher_args or {}),
    )


def test_group_by_length_leaves_evaluation_in_dataset_order(tmp_path):
    # Lengths in a non-monotone order: a length-grouped sampler would visit them in another order.
    lengths = [3, 17, 5, 30, 2, 11, 24, 8, 19, 4, 27, 6]
    data = Dataset.from_dict({"input_ids": [[1] * n for n in lengths], "labels": [0] * len(lengths)})
    model = tiny_classifier()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        train_sampling_strategy="group_by_length",
        per_device_eval_batch_size=2,
        report_to=[],
        use_cpu=True,
    )
    trainer = PruningTrainer(model=model, args=args, train_dataset=data)

    order = list(iter(trainer._get_eval_sampler(data)))
    train_order = list(iter(trainer._get_train_sampler(data)))

    assert order == list(range(len(lengths)))
    assert sorted(train_order) == order and train_order != order  # the training side still groups by length


class FirstGradients(TrainerCallback):
    """Records every parameter's gradient as the optimizer sees it in the first step (after the Trainer's clipping)."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.grads is None:
            self.grads = {n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None}


def test_clipping_a_real_step_scales_the_weights_by_their_own_norm(tmp_path):
    """A steered lambda makes the scores' gradient huge; the weights must be clipped by their own norm only, and the
    scores not at all. Expected gradients come from a separate forward and backward of the same batch."""
    config = fp.PruningConfig(
        method="soft_movement", initial_threshold=0.05, warmup_steps=0, cooldown_steps=1, regularization_lambda=1e6
    )
    model = fp.prepare(tiny_classifier(dropout=0.0), config)
    twin = copy.deepcopy(model).train()
    fp.get_pruner(twin).set_step(0, 2)
    batch = {k: torch.tensor(v) for k, v in pairs()[:].items()}
    (twin(**batch).loss + fp.get_pruner(twin).regularizer()).backward()
    raw = {n: p.grad for n, p in twin.named_parameters() if p.grad is not None}
    weight_norm = torch.linalg.vector_norm(torch.stack([g.norm() for n, g in raw.items() if not n.endswith("scores")]))
    scores_norm = torch.linalg.vector_norm(torch.stack([g.norm() for n, g in raw.items() if n.endswith("scores")]))
    assert scores_norm > 100 * weight_norm  # lambda made the scores' gradient dominate a shared norm

    clip = 0.5 * weight_norm.item()
    trainer = pruning_trainer(model, tmp_path, max_steps=2, per_device_train_batch_size=8, max_grad_norm=clip)
    recorder = FirstGradients(model)
    trainer.add_callback(recorder)
    trainer.train()

    assert set(recorder.grads) == set(raw)
    for name, grad in recorder.grads.items():
        expected = raw[name] if name.endswith(SCORES_SUFFIX) else raw[name] * 0.5
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-9, msg=name)


def test_pruning_values_reach_log_history_and_tensorboard(tmp_path):
    """transformers records a log and runs report_to integrations before user callbacks' on_log: the pruning values
    must be in the logs before that (PruningTrainer.log)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = fp.prepare(
        tiny_classifier(), fp.PruningConfig(method="movement", final_density=0.5, warmup_steps=1, cooldown_steps=1)
    )
    trainer = pruning_trainer(
        model, tmp_path, max_steps=3, logging_steps=1, per_device_train_batch_size=4, report_to=["tensorboard"]
    )
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    # logged after each step's clock moves: step 1 is the first of the cubic (density 1), then the final 0.5
    assert [(e["step"], e["pruning/density"]) for e in logs] == [(1, 1.0), (2, 0.5), (3, 0.5)]
    assert all("pruning/lambda" in e for e in logs)
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    scalars = accumulator.Tags()["scalars"]
    assert "train/pruning/density" in scalars
    assert [(e.step, e.value) for e in accumulator.Scalars("train/pruning/density")] == [(1, 1.0), (2, 0.5), (3, 0.5)]


def test_each_loss_term_is_logged_beside_the_total(tmp_path):
    """loss/task, loss/distil and loss/hidden are the unweighted terms, recomputed here by hand in float64 from the
    same forward passes; loss/penalty is what makes up the rest of the logged total."""
    config = fp.PruningConfig(
        method="soft_movement", initial_threshold=0.05, warmup_steps=0, cooldown_steps=1, regularization_lambda=1.0
    )
    model = fp.prepare(tiny_classifier(dropout=0.0), config)
    teacher = tiny_classifier(dropout=0.0)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.3 * torch.randn_like(p))
    twin = copy.deepcopy(model).train()
    fp.get_pruner(twin).set_step(0, 2)
    batch = {k: torch.tensor(v) for k, v in pairs()[:].items()}
    with torch.no_grad():
        student = twin(**batch, output_hidden_states=True)
        reference = teacher.eval()(input_ids=batch["input_ids"], output_hidden_states=True)
    s, t, labels = student.logits.double(), reference.logits.double(), batch["labels"]
    log_s = s - s.exp().sum(-1, keepdim=True).log()
    task = -log_s[torch.arange(len(labels)), labels].mean().item()
    log_ps, log_pt = (
        (s / 2) - (s / 2).exp().sum(-1, keepdim=True).log(),
        (t / 2) - (t / 2).exp().sum(-1, keepdim=True).log(),
    )
    distil = 4 * (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean().item()
    layers = list(zip(student.hidden_states[1:], reference.hidden_states[1:], strict=True))
    hidden = sum(((a.double() - b.double()) ** 2).mean().item() for a, b in layers) / len(layers)

    teacher_args = {"teacher": teacher, "alpha_ce": 0.5, "alpha_distil": 0.5, "temperature": 2.0, "alpha_hidden": 1.0}
    trainer = pruning_trainer(
        model, tmp_path, teacher_args, max_steps=2, logging_steps=1, per_device_train_batch_size=8
    )
    trainer.train()

    first = next(e for e in trainer.state.log_history if "loss" in e)
    assert first["loss/task"] == pytest.approx(task, rel=1e-5)
    assert first["loss/distil"] == pytest.approx(distil, rel=1e-5)
    assert first["loss/hidden"] == pytest.approx(hidden, rel=1e-5)
    assert first["loss/penalty"] > 0
    total = 0.5 * task + 0.5 * distil + hidden + first["loss/penalty"]
    assert first["loss"] == pytest.approx(total, rel=1e-4)


@pytest.mark.parametrize("method", ["movement", "soft_movement", "l0"])
def test_frozen_weights_stay_bit_for_bit_and_hold_no_optimizer_state(tmp_path, method):
    """freeze_weights (SMP): a few real Trainer steps with weight decay move the scores, biases, LayerNorm and head,
    and leave every pruned matrix exactly as it was, outside every parameter group and without optimizer state."""
    density = {"final_density": 0.5} if method == "movement" else {}
    config = fp.PruningConfig(
        method=method, freeze_weights=True, scores_init_from_weights=True, warmup_steps=0, cooldown_steps=0, **density
    )
    model = fp.prepare(tiny_classifier(), config)
    frozen = {id(linear.parametrizations.weight.original) for linear in fp.get_pruner(model).linears}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = pruning_trainer(
        model, tmp_path, max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2, weight_decay=0.1
    )
    trainer.train()

    grouped = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    stateful = {id(p) for p in trainer.optimizer.state}
    changed = set()
    for name, p in model.named_parameters():
        if id(p) in frozen:
            assert torch.equal(p, before[name]) and p.grad is None, name
            assert id(p) not in grouped | stateful, name
        elif not torch.equal(p, before[name]):
            changed.add(name)
    assert len(frozen) == 6 and len(grouped & frozen) == 0
    learned = ("scores", "attention.self.query.bias", "output.LayerNorm.weight", "classifier.weight")
    assert all(any(name.endswith(part) for name in changed) for part in learned), changed


def test_a_loss_normalised_penalty_is_lambda_r_times_the_loss_it_joins(tmp_path):
    """regularization_normalize loss through the Trainer: each step's penalty is lambda * R * task loss, from the
    values logged for that step (one batch per step, a constant lambda: the default 1, so the penalty stays below the
    task loss)."""
    config = fp.PruningConfig(
        method="soft_movement",
        initial_threshold=0.1,
        warmup_steps=0,
        cooldown_steps=0,
        regularization_normalize="loss",
    )
    model = fp.prepare(tiny_classifier(dropout=0.0), config)
    trainer = pruning_trainer(model, tmp_path, max_steps=2, logging_steps=1, per_device_train_batch_size=8)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        product = entry["pruning/lambda"] * entry["pruning/regularizer"] * entry["loss/task"]
        assert entry["loss/penalty"] == pytest.approx(product, rel=1e-5)
        assert entry["pruning/lambda"] == pytest.approx(1.0) and entry["loss/penalty"] < entry["loss/task"]
