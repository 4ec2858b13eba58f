"""scripts/squad_levers.sh without training: a stand-in for the fineprune command records each call and fakes its
result, so that every run's config is validated as `fineprune train` would read it, each row is checked to differ
from its baseline by its lever alone, teachers are trained before their students, and a second pass skips what is
done while a stopped run continues from its checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fineprune.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "squad_levers.sh"

# Records its arguments (one JSON line per call) and writes what the real command would leave behind: a finished run
# folder with a summary (dense F1 60, pruned 45) and a checkpoint, an export folder, a result on stdout.
STUB = """#!{python}
import json, pathlib, sys

args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
def value(flag):
    return args[args.index(flag) + 1]
if args[0] == "train":
    run = pathlib.Path(value("--output-dir"))
    (run / "checkpoint-9").mkdir(parents=True)
    dense = value("--config").endswith("squad_dense.yaml")
    metrics = {{"exact_match": 50.0 if dense else 30.0, "f1": 60.0 if dense else 45.0}}
    summary = {{"metrics": metrics, "sparsity": {{"density": 1.0 if dense else 0.1}}}}
    (run / "summary.json").write_text(json.dumps(summary))
    print(json.dumps({{"metrics": metrics}}))
elif args[0] == "export":
    pathlib.Path(value("--out")).mkdir(parents=True)
else:
    print("{{}}")
"""

# What each run changes against its baseline (flattened config keys); the other keys must be the baseline's.
DENSE_ROWS = {
    "dense": {},
    "dense_seq256": {"task.max_seq_length": 256},  # doc_stride stays 128
    "dense_10ep": {"training.num_train_epochs": 10},
}
PRUNED_ROWS = {
    "movement_0.1": {},
    "movement_0.1_from_dense": {"model.name_or_path": "{out}/dense"},
    "movement_0.1_teacher_only": {"distillation.alpha_ce": 0, "distillation.alpha_distil": 1},
    "movement_0.1_no_hidden": {"distillation.alpha_hidden": 0},
    "movement_0.1_lr3e-5": {"training.learning_rate": 3e-5},
    "movement_0.1_lr5e-5": {"training.learning_rate": 5e-5},
    "movement_0.1_global": {"pruning.scope": "global"},
    "movement_0.03": {"pruning.final_density": 0.03},
    "movement_0.1_seed43": {"training.seed": 43},
    "movement_0.1_seq256": DENSE_ROWS["dense_seq256"] | {"distillation.teacher": "{out}/dense_seq256"},
    "movement_0.1_10ep": DENSE_ROWS["dense_10ep"] | {"distillation.teacher": "{out}/dense_10ep"},
    "structured_0.25": {
        "pruning.structure": "heads_neurons",
        "pruning.scope": "global",
        "pruning.group_budget": "per_kind",
        "pruning.final_density": 0.25,
    },
}


def flat(config: RunConfig) -> dict[str, Any]:
    """The config as ``section.key: value``, without training.output_dir (the script's --output-dir replaces it)."""
    return {
        f"{section}.{key}": value
        for section, values in config.model_dump(mode="json").items()
        for key, value in (values or {}).items()
        if f"{section}.{key}" != "training.output_dir"
    }


def differences(config: RunConfig, baseline: RunConfig) -> dict[str, Any]:
    mine, theirs = flat(config), flat(baseline)
    return {key: mine.get(key) for key in mine.keys() | theirs.keys() if mine.get(key) != theirs.get(key)}


@pytest.fixture
def levers(tmp_path: Path):
    """Run the script with the stand-in; returns (run it again, the calls of the last pass, OUT)."""
    out, log = tmp_path / "out", tmp_path / "calls.jsonl"
    stub = tmp_path / "fineprune"
    stub.write_text(STUB.format(python=sys.executable, log=str(log)))
    stub.chmod(0o755)
    (tmp_path / "model").mkdir()
    (tmp_path / "squad.json").write_text("{}")
    env = os.environ | {"FINEPRUNE": str(stub), "PYTHON": sys.executable, "SQUAD_FILE": str(tmp_path / "squad.json")}

    def run() -> tuple[str, list[list[str]]]:
        log.unlink(missing_ok=True)
        args = ["bash", str(SCRIPT), str(tmp_path / "model"), str(out), "--set", "training.logging_steps=10"]
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
        return done.stdout, calls

    return run, out, tmp_path


def test_every_run_is_valid_and_changes_its_lever_alone(levers):
    run, out, tmp_path = levers
    stopped = out / ".movement_0.1_global.partial" / "checkpoint-3"  # a run stopped after a checkpoint
    stopped.mkdir(parents=True)
    (stopped / "trainer_state.json").write_text("{}")
    stdout, calls = run()

    trains = [call for call in calls if call[0] == "train"]
    names = [Path(call[call.index("--output-dir") + 1]).name for call in trains]
    assert sorted(names) == sorted(DENSE_ROWS | PRUNED_ROWS)
    configs, finished = {}, set()
    for name, call in zip(names, trains, strict=True):
        sets = [call[i + 1] for i, arg in enumerate(call) if arg == "--set"]
        config = configs[name] = load_config(ROOT / call[call.index("--config") + 1], sets)
        config.training_arguments(output_dir=str(tmp_path / "arguments"))  # what TrainingArguments accepts
        assert ("--resume" in call, "--overwrite" in call) == (
            (True, False) if name == "movement_0.1_global" else (False, True)
        )
        assert config.task.train_file == str(tmp_path / "squad.json") and config.task.eval_fraction == 0.5
        assert config.training["save_strategy"] == "epoch" and config.training["logging_steps"] == 10
        for source in (config.model.name_or_path, config.distillation.teacher if config.distillation else None):
            if source is not None and Path(source).parent == out:
                assert Path(source).name in finished, f"{name} needs {source} before it is trained"
        finished.add(name)

    for rows, baseline in ((DENSE_ROWS, "dense"), (PRUNED_ROWS, "movement_0.1")):
        for name, expected in rows.items():
            expected = {
                key: value.format(out=out) if isinstance(value, str) else value for key, value in expected.items()
            }
            assert differences(configs[name], configs[baseline]) == expected, name
    dense, movement = configs["dense"], configs["movement_0.1"]
    assert dense.pruning.method == "none" and dense.distillation is None
    assert (dense.task.max_seq_length, dense.task.doc_stride, dense.training["num_train_epochs"]) == (384, 128, 3)
    assert (movement.pruning.method, movement.pruning.final_density) == ("movement", 0.1)
    assert movement.distillation.teacher == str(out / "dense") and movement.model.name_or_path == str(
        tmp_path / "model"
    )
    assert not any(any((out / name).glob("checkpoint-*")) for name in names)  # a finished run keeps none

    compact = out / "structured_0.25_compact"
    assert ["export", str(out / "structured_0.25"), "--compact", "--onnx", "--out", str(compact)] in calls
    assert ["eval", str(compact), "--onnx-quantized"] in calls
    bench = next(call for call in calls if call[0] == "bench")
    assert bench[1:3] == [str(out / "dense"), str(compact)] and bench[bench.index("--seq-len") + 1] == "384"
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 2 + len(names)
    assert "| movement_0.1_10ep | dense_10ep | 30.00 | 45.00 | 75.0% | 10.00% |" in table
    assert "| dense_seq256 | dense_seq256 | 50.00 | 60.00 | 100.0% | 100.00% |" in table

    stdout, calls = run()  # everything done: nothing is trained or exported again
    assert [call[0] for call in calls] == ["eval", "bench"]
    assert stdout.count("(done)") == len(names)
