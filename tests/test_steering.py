"""Steered soft movement and L0 follow the cubic target density.

On real short runs through the Trainer, the density logged at every step after warm-up lies within 2 points of the
logged target, whatever the scores' learning rate (a slow one would keep everything until the cool-down, a fast one
would prune far past the target): the masks are clamped into [target * (1 - tolerance), target]. L0's training-time
gates follow the target through the Lagrangian on their expected density, whose multipliers react to the gap.
"""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_model
from tiny_assets import one_thread, tiny_setup_fixture  # noqa: F401 (pytest fixture, used by name)

import fineprune as fp
from fineprune.config import build_config
from fineprune.pruning.pruner import Pruner
from fineprune.run import train

FINAL = 0.2
WARMUP, COOLDOWN = 4, 8


def steered_run(setup: dict, out: Path, method: str, scope: str, scores_lr: float) -> tuple[list[dict], dict]:
    """A 48-step run (45 pairs, batch 8, 8 epochs) logging every step; returns the logs with pruning/* keys (read
    back from the run folder's trainer_state.json) and the summary."""
    data = yaml.safe_load(setup["config"].read_text())
    data["pruning"] = {
        "method": method,
        "scope": scope,
        "final_density": FINAL,
        "warmup_steps": WARMUP,
        "cooldown_steps": COOLDOWN,
        "scores_learning_rate": scores_lr,
    }
    data["training"] |= {"num_train_epochs": 8, "logging_steps": 1, "save_strategy": "no"}
    with one_thread():
        summary = train(build_config(data, "steering test"), output_dir=str(out))
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [entry for entry in history if "loss" in entry], summary


@pytest.mark.parametrize(
    ("method", "scope", "scores_lr"),
    [
        ("soft_movement", "global", 1e-2),  # slow: the threshold alone would keep everything until the cool-down
        ("soft_movement", "local", 0.5),  # fast: the threshold alone would prune far past the target
        ("l0", "global", 0.1),
        ("l0", "local", 0.5),
    ],
)
def test_logged_density_follows_the_logged_target(tiny_setup, tmp_path, method, scope, scores_lr):
    logs, summary = steered_run(tiny_setup, tmp_path / "run", method, scope, scores_lr)
    assert [entry["step"] for entry in logs] == list(range(1, 49))
    for entry in logs:
        density, target = entry["pruning/density"], entry["pruning/target_density"]
        if entry["step"] >= WARMUP:
            assert target - 0.02 <= density <= target + 1e-9, entry
    assert logs[-1]["pruning/target_density"] == FINAL
    assert min(entry["pruning/target_density"] for entry in logs) == FINAL  # the schedule did reach the target
    sparsity = summary["sparsity"]  # the cool-down's Top-v: exactly floor(0.2 n) per matrix, or over all of them
    if scope == "local":
        assert all(m["remaining"] == math.floor(FINAL * m["total"]) for m in sparsity["matrices"].values())
    else:
        assert sparsity["remaining"] == math.floor(FINAL * sparsity["total"])
    if method == "l0":
        assert {"pruning/expected_density", "pruning/lambda_1", "pruning/lambda_2"} <= set(logs[-1])


def l0_user_loop(steps: int = 300, scores_lr: float = 0.1) -> list[tuple[int, float, float, float]]:
    """A steered L0 run in a user's own loop with a constant scores lr: (step, E[density], target, lambda_1)."""
    model = tiny_model("bert").train()
    fp.prepare(
        model,
        fp.PruningConfig(method="l0", scope="global", final_density=0.15, warmup_steps=0.1, cooldown_steps=0.2),
    )
    pruner = fp.get_pruner(model)
    scores = [p for n, p in model.named_parameters() if n.endswith("scores")]
    others = [p for n, p in model.named_parameters() if not n.endswith("scores")]
    optimizer = torch.optim.AdamW(
        [{"params": others, "lr": 1e-3}, {"params": scores, "lr": scores_lr, "weight_decay": 0}]
    )
    generator = torch.Generator().manual_seed(0)
    trace = []
    with one_thread():
        for step in range(steps):
            pruner.set_step(step, steps)
            ids = torch.randint(5, 99, (8, 10), generator=generator)
            loss = model(input_ids=ids, labels=ids[:, 0] % 3).loss
            penalty = pruner.regularizer()
            if penalty is not None:
                loss = loss + penalty
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            trace.append((step, pruner.expected_density(), pruner.target_density, float(pruner.multipliers[0])))
    return trace


def test_l0_lagrangian_keeps_the_training_gates_near_the_target():
    """The multipliers rise while the gates keep too much: once the cubic slows down (from a third of its span on),
    the expected density of the gates stays within 10 points of the target. Without the ascent (multipliers left at
    0, no penalty) the gates stay open: E[density] ~ 0.97 against a target falling to 0.15."""
    trace = l0_user_loop()
    warmup, end = 30, 300 - 60
    tracked = [(step, e, t) for step, e, t, _ in trace if warmup + (end - warmup) / 3 <= step < end]
    worst = max(tracked, key=lambda row: abs(row[1] - row[2]))
    assert abs(worst[1] - worst[2]) <= 0.1, f"step {worst[0]}: E[density] {worst[1]:.3f}, target {worst[2]:.3f}"
    assert max(lam for *_, lam in trace) > 0


def test_lagrangian_and_its_ascent_by_hand():
    """Lagrangian = l1 (E - t) + l2 (E - t)^2; one ascent step per optimizer step: l += lr * n * (E - t, (E - t)^2),
    n the number of scores; both computed here in float64 from the scores."""
    model = fp.prepare(
        tiny_model("bert"),
        fp.PruningConfig(
            method="l0", final_density=0.1, warmup_steps=2, cooldown_steps=2, lagrangian_learning_rate=1e-5
        ),
    )
    pruner = fp.get_pruner(model)
    with torch.no_grad():
        for i, p in enumerate(pruner.parametrizations):
            p.scores.fill_(-1.0 if i % 3 == 0 else 0.5)
    scores = torch.cat([p.scores.detach().double().flatten() for p in pruner.parametrizations])
    expected = torch.sigmoid(scores - (2 / 3) * math.log(0.1 / 1.1)).mean().item()
    n = scores.numel()

    pruner.set_step(1, 10)  # warm-up: no Lagrangian yet, multipliers untouched
    assert pruner.regularizer() is None and pruner.multipliers.tolist() == [0.0, 0.0]
    pruner.set_step(2, 10)  # first step of the cubic: t = initial density 1.0
    gap = expected - 1.0
    assert pruner.multipliers.tolist() == pytest.approx([1e-5 * n * gap, 1e-5 * n * gap**2], rel=1e-5)
    pruner.multipliers.copy_(torch.tensor([3.0, 40.0]))
    pruner.set_step(3, 10)  # t = 0.1 + 0.9 * (1 - 1/6)^3
    target = 0.1 + 0.9 * (5 / 6) ** 3
    gap = expected - target
    assert pruner.target_density == pytest.approx(target, rel=1e-12)
    lambda_1, lambda_2 = 3.0 + 1e-5 * n * gap, 40.0 + 1e-5 * n * gap**2
    assert pruner.multipliers.tolist() == pytest.approx([lambda_1, lambda_2], rel=1e-5)
    assert float(pruner.regularizer().detach()) == pytest.approx(lambda_1 * gap + lambda_2 * gap**2, rel=1e-5)
    pruner.set_step(8, 10)  # cool-down: the masks are the Top-v, no gates are sampled, no Lagrangian
    assert pruner.regularizer() is None


def test_masks_are_clamped_into_the_band_by_the_scores():
    """Inside [t (1 - tolerance), t] the threshold decides; outside, the Top-v of the scores at the nearer edge."""
    model = fp.prepare(
        tiny_model("bert"),
        fp.PruningConfig(
            method="soft_movement", final_density=0.1, warmup_steps=0, cooldown_steps=1, steering_tolerance=0.5
        ),
    )
    pruner: Pruner = fp.get_pruner(model)
    pruner.set_step(8, 10)  # the last step before the cool-down: threshold ~0.1, target 0.1 + 0.9 (1/9)^3
    target = pruner.target_density
    low = target * 0.5
    torch.manual_seed(0)
    with torch.no_grad():
        for p in pruner.parametrizations:
            p.scores.copy_(torch.randn_like(p.scores))
    first = pruner.parametrizations[0].scores.detach()
    n = first.numel()
    order = first.flatten().argsort(descending=True)
    by_threshold = int((torch.sigmoid(first) > 0.1).sum())  # about 0.93 n: above the band
    assert by_threshold > target * n
    mask = pruner.binary_masks()[0].flatten().bool()
    assert int(mask.sum()) == math.floor(target * n) and mask[order[: math.floor(target * n)]].all()
    with torch.no_grad():  # now the threshold keeps 3 weights: below the band
        pruner.parametrizations[0].scores.copy_(torch.where(first > 2.4, first, first.new_tensor(-5.0)))
    kept = int((torch.sigmoid(pruner.parametrizations[0].scores) > 0.1).sum())
    assert kept < low * n
    assert int(pruner.binary_masks()[0].sum()) == math.floor(low * n)
    with torch.no_grad():  # and inside the band the threshold's own choice stays
        inside = first.clone().flatten()
        inside[order[: math.floor(0.75 * target * n)]] = 5.0
        inside[order[math.floor(0.75 * target * n) :]] = -5.0
        pruner.parametrizations[0].scores.copy_(inside.view_as(first))
    assert int(pruner.binary_masks()[0].sum()) == math.floor(0.75 * target * n)
