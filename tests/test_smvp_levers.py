"""scripts/smvp_levers.sh without training: a stand-in for the fineprune command records each call and fakes a
finished run, so that every run's config is validated as `fineprune train` would read it, each lever is checked to
differ from its baseline cell (same method, density, teacher and seed) by its lever alone, the dense models are
trained before the runs that need them, DENSITIES / TEACHERS pick cells, and a second pass skips what is done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from fineprune.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "smvp_levers.sh"

STUB = """#!{python}
import json, pathlib, sys

args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
run = pathlib.Path(args[args.index("--output-dir") + 1])
run.mkdir(parents=True)
dense = args[args.index("--config") + 1].endswith("mnli_dense.yaml")
summary = {{"metrics": {{"accuracy": 0.65 if dense else 0.5}}, "sparsity": {{"density": 1.0 if dense else 0.1}}}}
(run / "summary.json").write_text(json.dumps(summary))
print(json.dumps(summary))
"""

# What each lever changes against its method's baseline cell ("{out}": the script's OUT).
LEVERS = {
    ("smvp", "freeze"): {"pruning.freeze_weights": True},
    ("smvp", "no_hidden"): {"distillation.alpha_hidden": 0},
    ("smvp", "local"): {"pruning.scope": "local"},
    ("smvp", "normalize"): {"pruning.regularization_normalize": "loss", "pruning.regularization_lambda": 1},
    ("smvp", "scoreslr"): {"pruning.scores_learning_rate": 0.1},
    ("smvp", "scoreslr5e-2"): {"pruning.scores_learning_rate": 0.05},
    ("smvp", "scoreslr3e-1"): {"pruning.scores_learning_rate": 0.3},
    ("smvp", "freeze_scoreslr"): {"pruning.freeze_weights": True, "pruning.scores_learning_rate": 0.1},
    ("smvp", "normalize_scoreslr"): {
        "pruning.regularization_normalize": "loss",
        "pruning.regularization_lambda": 1,
        "pruning.scores_learning_rate": 0.1,
    },
    ("smvp", "sgd100"): {"pruning.scores_update": "sgd", "pruning.scores_learning_rate": 100},
    ("smvp", "sgd1000"): {"pruning.scores_update": "sgd", "pruning.scores_learning_rate": 1000},
    ("l0", "freeze"): {"pruning.freeze_weights": True},
    ("l0", "no_hidden"): {"distillation.alpha_hidden": 0},
    ("l0", "local"): {"pruning.scope": "local"},
    ("l0", "dense_start"): {"model.name_or_path": "{out}/dense_1epoch", "training.num_train_epochs": 2},
    ("l0", "temperature"): {"pruning.l0_temperature": 1 / 3},
    ("l0", "scoreslr"): {"pruning.scores_learning_rate": 0.05},
    ("l0", "scoreslr1e-1"): {"pruning.scores_learning_rate": 0.1},
}


def flat(config: RunConfig) -> dict[str, Any]:
    """The config as ``section.key: value`` (a section set to null: ``section: None``), without the output folder."""
    values = {}
    for section, content in config.model_dump(mode="json").items():
        if content is None:
            values[section] = None
        for key, value in (content or {}).items():
            if f"{section}.{key}" != "training.output_dir":
                values[f"{section}.{key}"] = value
    return values


def differences(config: RunConfig, baseline: RunConfig) -> dict[str, Any]:
    mine, theirs = flat(config), flat(baseline)
    return {key: mine.get(key) for key in mine.keys() | theirs.keys() if mine.get(key) != theirs.get(key)}


def run_script(tmp_path: Path, **env: str) -> tuple[str, list[list[str]], Path]:
    out, log = tmp_path / "out", tmp_path / "calls.jsonl"
    stub = tmp_path / "fineprune"
    stub.write_text(STUB.format(python=sys.executable, log=str(log)))
    stub.chmod(0o755)
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "mnli.tsv").touch()
    env = os.environ | {"FINEPRUNE": str(stub), "PYTHON": sys.executable, "MNLI_FILE": str(tmp_path / "mnli.tsv")} | env
    log.unlink(missing_ok=True)
    args = ["bash", str(SCRIPT), str(tmp_path / "model"), str(out), "--set", "training.logging_steps=10"]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return done.stdout, calls, out


def test_every_run_is_valid_and_changes_its_lever_alone(tmp_path):
    stdout, calls, out = run_script(tmp_path)
    names = [Path(call[call.index("--output-dir") + 1]).name for call in calls]
    cells = [(d, t, "seed42") for d in ("0.1", "0.03") for t in ("teacher", "no_teacher")]
    expected = {"dense", "dense_1epoch"} | {
        "_".join((method, lever, *cell))
        for method, lever in [*LEVERS, ("smvp", "baseline"), ("l0", "baseline")]
        for cell in cells
        if not (lever == "no_hidden" and cell[1] == "no_teacher")
    }
    assert sorted(names) == sorted(expected) and len(names) == 78
    assert names[:2] == ["dense", "dense_1epoch"]

    configs = {}
    for name, call in zip(names, calls, strict=True):
        sets = [call[i + 1] for i, arg in enumerate(call) if arg == "--set"]
        config = configs[name] = load_config(ROOT / call[call.index("--config") + 1], sets)
        config.training_arguments(output_dir=str(tmp_path / "arguments"))  # what TrainingArguments accepts
        assert config.task.train_file == str(tmp_path / "mnli.tsv") and config.task.eval_fraction == 0.1849
        assert config.training["num_train_epochs"] == (
            1 if name == "dense_1epoch" else 2 if "dense_start" in name else 3
        )
        assert config.training["logging_steps"] == 10
        if name.startswith("dense"):
            assert config.pruning.method == "none" and config.distillation is None
            continue
        method, _, rest = name.partition("_")
        density, teacher = ("0.1" if "_0.1_" in name else "0.03"), "no_teacher" not in name
        assert config.pruning.method == {"smvp": "soft_movement", "l0": "l0"}[method]
        assert config.pruning.final_density == float(density) and config.training["seed"] == 42
        assert (config.distillation.teacher == str(out / "dense")) if teacher else config.distillation is None
        assert config.model.name_or_path == str(out / "dense_1epoch" if "dense_start" in name else tmp_path / "model")

    for (method, lever), change in LEVERS.items():
        change = {key: value.format(out=out) if isinstance(value, str) else value for key, value in change.items()}
        for density, teacher, seed in cells:
            name = f"{method}_{lever}_{density}_{teacher}_{seed}"
            if name in configs:
                baseline = configs[f"{method}_baseline_{density}_{teacher}_{seed}"]
                assert differences(configs[name], baseline) == change, name

    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 2 + len(names)
    assert "| smvp_sgd100_0.1_teacher_seed42 | 50.00 | 10.00% |" in table and "| dense | 65.00 | 100.00% |" in table

    stdout, calls, _ = run_script(tmp_path)  # everything done: nothing is trained again
    assert calls == [] and stdout.count("(done)") == len(names)


def test_densities_and_teachers_pick_cells(tmp_path):
    _, calls, _ = run_script(tmp_path, DENSITIES="0.1", TEACHERS="teacher", SEEDS="42 43")
    names = {Path(call[call.index("--output-dir") + 1]).name for call in calls}
    pruned = names - {"dense", "dense_1epoch"}
    assert len(pruned) == 2 * (len(LEVERS) + 2)
    assert all("_0.1_teacher_seed4" in name for name in pruned)
    assert {"smvp_freeze_0.1_teacher_seed43", "l0_no_hidden_0.1_teacher_seed42"} <= pruned
