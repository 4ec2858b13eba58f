"""End to end on the real all-MiniLM-L6-v2 and a few hundred MNLI pairs: train with every method, reach the density
asked for, export, and get the same zero count and metrics from the export."""

import json
import math

import pytest
import torch
from conftest import MNLI_SAMPLE, minilm_path
from typer.testing import CliRunner

from fineprune.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()

CONFIG = """
model:
  name_or_path: {model}
task:
  name: mnli
  train_file: {data}
  max_train_samples: 160
  max_eval_samples: 64
  max_seq_length: 64
pruning:
  method: none
training:
  output_dir: {out}/dense
  num_train_epochs: 2
  learning_rate: 1.0e-4
  per_device_train_batch_size: 16
  save_strategy: "no"
  logging_steps: 5
  use_cpu: true
  seed: 7
"""
PRUNING = {
    "magnitude": ["pruning.method=magnitude", "pruning.final_density=0.1"],
    "movement": ["pruning.method=movement", "pruning.final_density=0.1", "pruning.scope=global"],
    "soft_movement": ["pruning.method=soft_movement", "pruning.final_density=0.1"],
    "l0": ["pruning.method=l0", "pruning.final_density=0.1", "pruning.scope=global"],
}
SCHEDULE = ["pruning.warmup_steps=2", "pruning.cooldown_steps=4"]


def invoke(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # the result alone: logs and progress go to stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    config = root / "mnli.yaml"
    config.write_text(CONFIG.format(model=minilm_path(), data=MNLI_SAMPLE, out=root))
    invoke(["train", "--config", str(config)])  # the dense model: also the teacher
    return root, config


def sets(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


@pytest.mark.parametrize("method", list(PRUNING))
def test_train_export_eval(workspace, method):
    root, config = workspace
    run, out = root / method, root / f"{method}_export"
    extra = PRUNING[method] + SCHEDULE
    if method == "soft_movement":
        extra.append(f"distillation.teacher={root / 'dense'}")
    invoke(["train", "--config", str(config), "--output-dir", str(run), *sets(extra)])
    summary = json.loads((run / "summary.json").read_text())
    sparsity = summary["sparsity"]
    if method == "magnitude":  # local: exactly floor(0.1 n) per matrix
        assert all(m["remaining"] == math.floor(0.1 * m["total"]) for m in sparsity["matrices"].values())
    elif method == "movement":  # global: exactly floor(0.1 N) over all
        assert sparsity["remaining"] == math.floor(0.1 * sparsity["total"])
    else:  # steered: within one point
        assert abs(sparsity["density"] - 0.1) <= 0.01

    exported = invoke(["export", str(run), "--bake-masks", "--out", str(out)])
    assert exported["density"] == sparsity["density"]
    from safetensors.torch import load_file

    weights = load_file(out / "model.safetensors")
    zeros = sum(int((weights[f"{name}.weight"] == 0).sum()) for name in sparsity["matrices"])
    assert zeros == sparsity["total"] - sparsity["remaining"]
    assert not any("scores" in k or "parametrizations" in k or "fineprune" in k for k in weights)
    card = (out / "README.md").read_text()
    assert method in card and "Density per layer" in card

    from_export = invoke(["eval", str(out)])
    from_run = invoke(["eval", str(run)])
    assert from_export["accuracy"] == from_run["accuracy"] == summary["metrics"]["accuracy"]
    assert from_export["density"] == pytest.approx(sparsity["density"], abs=1e-9)


def test_resumed_run_ends_with_the_same_masks(workspace):
    from fineprune import get_pruner, load_pruned

    root, config = workspace
    extra = sets(PRUNING["movement"] + SCHEDULE + ["training.save_strategy=epoch", "training.save_total_limit=3"])
    whole, cut = root / "whole", root / "cut"
    invoke(["train", "--config", str(config), "--output-dir", str(whole), *extra])
    invoke(["train", "--config", str(config), "--output-dir", str(cut), *extra])
    # interrupt "cut" after its first epoch: drop everything written later
    checkpoints = sorted(cut.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) == 2
    for path in [*cut.glob("*.json"), *cut.glob("*.safetensors")]:
        path.unlink()
    import shutil

    shutil.rmtree(checkpoints[-1])
    invoke(["train", "--config", str(config), "--output-dir", str(cut), "--resume", *extra])
    a, b = get_pruner(load_pruned(whole)), get_pruner(load_pruned(cut))
    assert a._clock == b._clock
    for mask_a, mask_b in zip(a.binary_masks(), b.binary_masks(), strict=True):
        assert torch.equal(mask_a, mask_b)
