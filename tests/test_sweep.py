"""The sweep trains the dense model and every (method, density) run, tabulates them, and resumes after a kill."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from tiny_assets import one_thread, tiny_setup_fixture, tiny_sweep_fixture  # noqa: F401 (pytest fixtures, used by name)
from typer.testing import CliRunner

from fineprune.cli import app
from fineprune.config import load_config
from fineprune.errors import UsageError
from fineprune.pruning import PruningConfig
from fineprune.sweep import (
    default_out,
    parse_densities,
    parse_methods,
    parse_seeds,
    pruning_for,
    results_table,
    run_state,
    sweep,
)

RUNS = ["dense", "magnitude_0.5", "movement_0.5"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_sweep_trains_every_run_and_writes_the_tables(tiny_sweep):
    out = tiny_sweep["out"]
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == [
        "task",
        "method",
        "target_density",
        "density",
        "accuracy",
        "macro_f1",
        "seed",
        "distilled",
        "run_dir",
        "runtime_s",
    ]
    assert [(r["method"], float(r["target_density"]), r["distilled"]) for r in rows] == [
        ("none", 1.0, "False"),
        ("magnitude", 0.5, "True"),
        ("movement", 0.5, "True"),
    ]
    assert [Path(r["run_dir"]).name for r in rows] == RUNS
    for row in rows[1:]:
        assert float(row["density"]) == 0.5
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        for matrix in summary["sparsity"]["matrices"].values():  # Top-v: exactly floor(v * n) per matrix
            assert matrix["remaining"] == math.floor(0.5 * matrix["total"])
        assert float(row["accuracy"]) == summary["metrics"]["accuracy"]
    teacher = load_config(out / "movement_0.5" / "fineprune_config.yaml").distillation
    assert teacher is not None and Path(teacher.teacher) == out / "dense"
    assert load_config(out / "dense" / "fineprune_config.yaml").distillation is None

    table = (out / "results.md").read_text()
    assert "| Task (metric) | Remaining weights | magnitude | movement |" in table
    assert "| mnli (accuracy) | 100% (dense) |" in table and "| mnli (accuracy) | 50% |" in table
    assert "45 training / 15 evaluation examples, 12 optimizer steps" in table and "with distillation" in table

    progress = tiny_sweep["progress"]
    finished = [line for line in progress if "left" in line]
    assert [line.split(":")[0] for line in finished] == [f"[{i}/3] {name}" for i, name in enumerate(RUNS, 1)]
    assert all("accuracy" in line and "density" in line and "elapsed" in line for line in finished)


def test_a_killed_sweep_trains_only_the_unfinished_run_again(tiny_setup, tiny_sweep, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(tiny_sweep["out"], out)
    killed = out / "movement_0.5"
    last = max(killed.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    shutil.rmtree(last)  # killed in the second epoch: only the first epoch's checkpoint is left
    for name in ("summary.json", "eval_results.json", "model.safetensors"):
        (killed / name).unlink()
    assert run_state(killed) == "resume"
    before = {name: (out / name / "summary.json").stat().st_mtime_ns for name in RUNS[:2]}

    lines: list[str] = []
    with one_thread():
        rows = sweep(tiny_setup["config"], ["magnitude", "movement"], [0.5], out, progress=lines.append)

    assert {name: (out / name / "summary.json").stat().st_mtime_ns for name in RUNS[:2]} == before
    assert sum("skipped" in line for line in lines) == 2
    assert "[3/3] movement_0.5: training (resume)" in lines
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["optimizer_steps"] == 12 and summary["sparsity"]["density"] == 0.5
    assert [r["density"] for r in rows] == [1.0, 0.5, 0.5] and len(read_csv(out / "results.csv")) == 3


def test_run_state(tmp_path):
    run = tmp_path / "run"
    assert run_state(run) == "new"
    run.mkdir()
    assert run_state(run) == "new"
    (run / "fineprune_config.yaml").write_text("{}")
    assert run_state(run) == "restart"  # killed before its first checkpoint
    (run / "checkpoint-6").mkdir()
    assert run_state(run) == "restart"  # killed while the Trainer wrote it: trainer_state.json comes last
    (run / "checkpoint-6" / "trainer_state.json").write_text("{}")
    assert run_state(run) == "resume"
    (run / "summary.json").write_text("{}")
    assert run_state(run) == "done"


def test_distilling_from_an_existing_dense_model(tiny_setup, tiny_sweep, tmp_path):
    dense = tiny_sweep["out"] / "dense"
    with one_thread():
        rows = sweep(tiny_setup["config"], ["magnitude"], [0.5], tmp_path / "s", distill_from=dense, progress=print)
    assert not (tmp_path / "s" / "dense").exists()
    assert [(r["method"], r["run_dir"]) for r in rows] == [
        ("none", str(dense)),
        ("magnitude", str(tmp_path / "s" / "magnitude_0.5")),
    ]
    assert rows[0]["accuracy"] == json.loads((dense / "summary.json").read_text())["metrics"]["accuracy"]
    assert Path(load_config(tmp_path / "s" / "magnitude_0.5" / "fineprune_config.yaml").distillation.teacher) == dense


def test_a_sweep_over_seeds_trains_every_cell_per_seed(tiny_setup, tiny_sweep, tmp_path):
    dense, out = tiny_sweep["out"] / "dense", tmp_path / "s"
    with one_thread():
        rows = sweep(tiny_setup["config"], ["magnitude"], [0.5], out, distill_from=dense, progress=print, seeds=[3, 4])
    assert [(r["method"], r["seed"], Path(r["run_dir"]).name) for r in rows] == [
        ("none", None, "dense"),
        ("magnitude", 3, "magnitude_0.5_seed3"),
        ("magnitude", 4, "magnitude_0.5_seed4"),
    ]
    for seed in (3, 4):
        assert load_config(out / f"magnitude_0.5_seed{seed}" / "fineprune_config.yaml").training["seed"] == seed
    assert [r["seed"] for r in read_csv(out / "results.csv")] == ["", "3", "4"]
    table = (out / "results.md").read_text()
    assert "over seeds 3, 4" in table and "| mnli (accuracy) | 50% | " in table


def test_a_cell_over_seeds_shows_the_mean_and_the_population_spread():
    def row(method: str, target: float, accuracy: float, density: float | None = None) -> dict:
        return {
            "task": "mnli",
            "method": method,
            "target_density": target,
            "density": density or target,
            "accuracy": accuracy,
        }

    rows = [
        row("none", 1.0, 0.61), row("none", 1.0, 0.62),
        row("movement", 0.1, 0.5901), row("movement", 0.1, 0.5807),
        row("magnitude", 0.1, 0.5), row("magnitude", 0.1, 0.6), row("magnitude", 0.1, 0.7, density=0.12),
        row("magnitude", 0.03, 0.4),
    ]  # fmt: skip
    table = results_table(rows, ["magnitude", "movement"], "header")
    # by hand: (61 + 62) / 2 = 61.5, spread 0.5; (59.01 + 58.07) / 2 = 58.54, spread 0.47;
    # (50 + 60 + 70) / 3 = 60, spread sqrt((100 + 0 + 100) / 3) = 8.165
    assert "| mnli (accuracy) | 100% (dense) | 61.5 ± 0.5 | 61.5 ± 0.5 |" in table
    assert "| mnli (accuracy) | 10% | 60.0 ± 8.2 (at 12%) | 58.5 ± 0.5 |" in table
    assert "| mnli (accuracy) | 3% | 40.0 | – |" in table


def test_a_finished_run_with_other_settings_is_not_reused(tiny_setup, tiny_sweep):
    with pytest.raises(UsageError, match=r"dense was started with training\.num_train_epochs=2"):
        sweep(tiny_setup["config"], ["magnitude"], [0.5], tiny_sweep["out"], overrides=["training.num_train_epochs=3"])


def test_a_finished_run_is_reused_from_a_config_with_relative_paths(tiny_setup, tiny_sweep, monkeypatch):
    """The run folder saves its data and model paths absolute; the same sweep from a config with relative paths,
    run in the config's folder, is the same sweep: nothing retrains."""
    monkeypatch.chdir(tiny_setup["root"])
    relative = tiny_setup["root"] / "relative.yaml"
    data = yaml.safe_load(tiny_setup["config"].read_text())
    data["model"]["name_or_path"] = tiny_setup["model"].name
    data["task"]["train_file"] = tiny_setup["train_file"].name
    relative.write_text(yaml.safe_dump(data))
    lines: list[str] = []
    rows = sweep(relative, ["magnitude", "movement"], [0.5], tiny_sweep["out"], progress=lines.append)
    assert not [line for line in lines if "training" in line]
    assert [row["run_dir"] for row in rows] == [row["run_dir"] for row in tiny_sweep["rows"]]


def test_qa_cells_are_already_in_percent():
    rows = [
        {"task": "squad", "method": "none", "target_density": 1.0, "density": 1.0, "f1": 65.74},
        {"task": "squad", "method": "movement", "target_density": 0.1, "density": 0.1, "f1": 43.22},
    ]
    table = results_table(rows, ["movement"], "header")
    assert "| squad (f1) | 10% | 43.2 |" in table


def test_parse_lists():
    assert parse_methods(" magnitude, movement,movement ") == ["magnitude", "movement"]
    assert parse_densities("0.1, 0.03,1") == [0.1, 0.03, 1.0]
    for text, message in [
        ("magnitude,bogus", "unknown method 'bogus'"),
        ("none", "unknown method"),
        (",", "give at least"),
    ]:
        with pytest.raises(UsageError, match=f"^--methods: {message}"):
            parse_methods(text)
    assert parse_seeds("42, 43,42") == [42, 43]
    with pytest.raises(UsageError, match="^--seeds: give at least"):
        parse_seeds(" , ")
    for text, message in [("0", "outside"), ("0.1,1.5", "outside"), ("ten", "not a number"), ("", "at least")]:
        with pytest.raises(UsageError, match=f"^--densities: .*{message}"):
            parse_densities(text)


@pytest.mark.parametrize(
    ("update", "method", "kept", "from_weights", "learning_rate"),
    [
        ("platon", "movement", "platon", False, None),
        ("platon", "magnitude", "adamw", False, None),
        ("platon", "soft_movement", "adamw", True, 0.1),
        ("platon", "l0", "adamw", True, 0.05),
        ("sgd", "l0", "sgd", False, None),
        ("sgd", "magnitude", "adamw", False, None),
        ("adamw", "soft_movement", "adamw", False, None),
        ("adamw", "l0", "adamw", False, None),  # an AdamW base's own learning rate is the user's choice: kept
    ],
)
def test_a_cell_drops_a_scores_update_its_method_cannot_take(update, method, kept, from_weights, learning_rate):
    base = {"method": "movement", "scope": "local", "final_density": 0.1, "scores_update": update}
    cell, changes = pruning_for(base, method, 0.03)
    assert len(changes) == (kept != update) + from_weights + (learning_rate is not None)
    expected = {"method": method, "scope": "local", "final_density": 0.03, "scores_update": kept}
    expected |= {"scores_init_from_weights": True} if from_weights else {}
    assert cell == expected | ({"scores_learning_rate": learning_rate} if learning_rate else {})
    PruningConfig(**cell)  # every cell of a base config that ships PLATON is a valid config


def test_an_l0_cell_of_a_platon_base_says_what_learning_rate_it_takes():
    base = {"method": "movement", "final_density": 0.1, "scores_update": "platon", "scores_learning_rate": 0.01}
    cell, changes = pruning_for(base, "l0", 0.1)
    assert cell["scores_learning_rate"] == 0.05
    assert changes[-1] == "scores_learning_rate 0.01 -> 0.05 (platon has none; l0's best measured)"
    already, changes = pruning_for(base | {"scores_learning_rate": 0.05}, "l0", 0.1)
    assert already["scores_learning_rate"] == 0.05 and len(changes) == 2  # nothing to say about a rate it has


def test_default_out(tiny_setup):
    assert default_out(load_config(tiny_setup["config"])) == tiny_setup["root"] / "run_sweep"
    with pytest.raises(UsageError, match="--out"):
        default_out(load_config(tiny_setup["config"], ["training.output_dir=null"]))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--methods", "magnitude,bogus", "error: --methods: unknown method 'bogus'"),
        ("--densities", "0.1,2", "error: --densities: 2 is outside"),
        ("--seeds", "42,x", "error: --seeds: 'x' is not a whole number"),
    ],
)
def test_cli_sweep_rejects_a_bad_list(tiny_setup, tmp_path, option, value, message):
    result = CliRunner().invoke(
        app, ["sweep", "--config", str(tiny_setup["config"]), option, value, "--out", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith(message)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("method", "rate"), [("soft_movement", 0.1), ("l0", 0.05)])
def test_a_structured_per_kind_base_serves_the_methods_without_top_v(method, rate):
    """configs/mnli_structured.yaml (PLATON, per-kind budget) as the base: the cell becomes a valid config."""
    shipped = load_config(Path(__file__).resolve().parents[1] / "configs" / "mnli_structured.yaml")
    cell, changes = pruning_for(shipped.pruning.model_dump(mode="json"), method, 0.1)
    assert (cell["group_budget"], cell["scores_update"], cell["structure"]) == ("shared", "adamw", "heads_neurons")
    assert changes == [
        f"scores_update platon -> adamw ({method} cannot take platon)",
        "scores_init_from_weights -> true (its scores start from |W|, as PLATON's do)",
        f"scores_learning_rate 0.01 -> {rate:g} (platon has none; {method}'s best measured)",
        f"group_budget per_kind -> shared ({method} has no Top-v budget to split)",
    ]
    PruningConfig(**cell)
    kept, _ = pruning_for(shipped.pruning.model_dump(mode="json"), "magnitude", 0.1)
    assert kept["group_budget"] == "per_kind"  # magnitude ranks by Top-v: its per-kind budget stays


def test_a_frozen_weights_base_trains_the_weights_of_magnitude():
    base = {"method": "soft_movement", "final_density": 0.1, "freeze_weights": True}
    cell, changes = pruning_for(base, "magnitude", 0.1)
    assert cell["freeze_weights"] is False
    assert changes == ["freeze_weights -> false (magnitude has no scores to learn with frozen weights)"]
    PruningConfig(**cell)
    for method in ("movement", "l0"):
        kept, changes = pruning_for(base, method, 0.1)
        assert kept["freeze_weights"] is True and changes == []


@pytest.mark.parametrize("method", ["magnitude", "movement", "l0"])
def test_a_loss_normalised_base_keeps_the_normalisation_for_soft_movement_alone(method):
    base = {"method": "soft_movement", "final_density": 0.1, "regularization_normalize": "loss"}
    cell, changes = pruning_for(base, method, 0.1)
    assert cell["regularization_normalize"] == "none"
    assert changes == [f"regularization_normalize loss -> none ({method} at a target density has no lambda * R)"]
    PruningConfig(**cell)
    kept, changes = pruning_for(base, "soft_movement", 0.03)
    assert kept["regularization_normalize"] == "loss" and changes == []
