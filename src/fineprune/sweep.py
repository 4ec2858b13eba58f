"""The paper's comparison as one resumable job: a dense teacher, then every (method, density) run with the same
training settings, and the results as a CSV and a Markdown table laid out like the paper's Tables 2 and 3.

A sweep is hours of training, so it must survive being killed: finished runs (summary.json present) are
skipped, an unfinished one continues from its last checkpoint, and the tables are rewritten after every run.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fineprune.config import (
    DistillationSection,
    RunConfig,
    build_config,
    load_config,
    read_yaml,
    with_absolute_paths,
)
from fineprune.errors import UsageError
from fineprune.loading import CONFIG_FILE, EVAL_FILE, SUMMARY_FILE, has_model, may_run_code
from fineprune.outputs import is_nonempty, staging_path
from fineprune.pruning.config import SCORED_METHODS, TOPV_METHODS, PruningConfig, takes_scores_update
from fineprune.report import MAIN_METRIC, percent
from fineprune.run import last_checkpoint, train

SWEEP_METHODS = ("magnitude", "movement", "soft_movement", "l0")
DENSE = "dense"
DENSITY_TOLERANCE = 0.005  # reached density this far from the target is shown in the table
# Paths differ between machines and folders without changing what a run trains, so they do not count.
_PATH_KEYS = (("training", "output_dir"), ("distillation", "teacher"))
PERCENT_TASKS = (
    "squad",
    "qa",
)  # extractive QA's EM and F1 come in % (as SQuAD's script gives them), the rest as fractions
_LEADING = ("task", "method", "target_density", "density")  # results.csv columns before the metrics
_TRAILING = ("seed", "distilled", "run_dir", "runtime_s")  # and after them


# -- the lists the user gives ----------------------------------------------------------------------------------------
def check_methods(methods: list[str]) -> list[str]:
    """The methods without duplicates; a UsageError naming --methods for an unknown one or an empty list."""
    for method in methods:
        if method not in SWEEP_METHODS:
            raise UsageError(f"--methods: unknown method {method!r}; choose from {', '.join(SWEEP_METHODS)}")
    if not methods:
        raise UsageError(f"--methods: give at least one of {', '.join(SWEEP_METHODS)}")
    return list(dict.fromkeys(methods))


def check_densities(densities: list[float]) -> list[float]:
    """The densities without duplicates; each must lie in (0, 1] (the fraction of weights kept)."""
    for density in densities:
        if not 0 < density <= 1:
            raise UsageError(f"--densities: {density:g} is outside (0, 1]: give fractions of weights to keep")
    if not densities:
        raise UsageError("--densities: give at least one fraction of weights to keep, e.g. 0.1,0.03")
    return list(dict.fromkeys(densities))


def parse_methods(text: str) -> list[str]:
    """``"magnitude, movement"`` -> ``["magnitude", "movement"]``."""
    return check_methods([m.strip() for m in text.split(",") if m.strip()])


def _split_numbers(text: str, option: str, kind: type, what: str) -> list:
    """The comma-separated items of `text` as `kind`; a UsageError naming `option` for one that is not."""
    values = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        try:
            values.append(kind(item))
        except ValueError:
            raise UsageError(f"{option}: {item!r} is not {what}") from None
    return values


def parse_densities(text: str) -> list[float]:
    """``"0.1,0.03"`` -> ``[0.1, 0.03]``."""
    return check_densities(_split_numbers(text, "--densities", float, "a number"))


def parse_seeds(text: str) -> list[int]:
    """``"42,43"`` -> ``[42, 43]``: the training seeds every cell is trained with, without duplicates."""
    seeds = _split_numbers(text, "--seeds", int, "a whole number")
    if not seeds:
        raise UsageError("--seeds: give at least one training seed, e.g. 42,43")
    return list(dict.fromkeys(seeds))


def default_out(config: RunConfig) -> Path:
    """``<training.output_dir>_sweep``: beside where the base config would put its single run."""
    output_dir = config.training.get("output_dir")
    if not output_dir:
        raise UsageError("training.output_dir: not set in the base config, so give the sweep folder with --out")
    return Path(f"{str(output_dir).rstrip('/')}_sweep")


# -- planning ----------------------------------------------------------------------------------------------------------
def run_name(method: str, density: float | None, seed: int | None = None) -> str:
    """``movement_0.1`` (``dense`` without a density): the run's folder name inside the sweep folder, with
    ``_seed43`` when the sweep was given seeds."""
    name = DENSE if density is None else f"{method}_{density:g}"
    return name if seed is None else f"{name}_seed{seed}"


def _variant(
    base: RunConfig, source: str, run_dir: Path, pruning: dict, distillation: dict | None, seed: int | None
) -> RunConfig:
    """The base config with this run's pruning, distillation, seed and folder, validated like a file of its own."""
    data = base.model_dump(mode="json")
    data["pruning"] = pruning
    data["distillation"] = distillation
    data["training"] = data["training"] | {"output_dir": str(run_dir)} | ({} if seed is None else {"seed": seed})
    return build_config(data, f"{source} ({run_dir.name})")


# The AdamW learning rate of the scores measured best for a method where the base config's PLATON scores have none
# (docs/results.md, "Soft movement and L0 with few updates"): at 1e-2 L0's gates lag the density schedule and the
# cool-down cuts at once, and soft movement's masks stay near magnitude's.
ADAMW_SCORES_LEARNING_RATE = {"l0": 5e-2, "soft_movement": 1e-1}


def pruning_for(base: dict[str, Any], method: str, density: float) -> tuple[dict[str, Any], list[str]]:
    """The base pruning section for one (method, density) cell of the sweep, and what it changed of the base's
    settings to fit the method (one sentence each, for the user to read).

    A scores update the method cannot take (platon ranks movement's Top-v; magnitude has no scores) falls back to
    adamw, so that one base config, such as a movement config that ships PLATON, serves the paper's whole comparison.
    Soft movement and L0 falling back from platon also start their scores from |W|: what keeps the weights' size
    in their scores as PLATON does in movement's (without it they ended one class in 3 of 10 runs of 750 updates on
    the MNLI split; docs/results.md), and they take the AdamW learning rate measured best for them (PLATON has none).
    A per-kind budget splits Top-v's budget, so the methods without Top-v (soft movement, L0) share one budget
    between heads and neurons instead. Frozen weights leave magnitude nothing to
    learn its masks by, so its cell trains them; of the cells (all at a target density) only soft movement's penalty
    is lambda * R, which regularization_normalize scales.
    """
    pruning = base | {"method": method, "final_density": density}
    changes = []
    rule = pruning.get("scores_update", "adamw")
    if not takes_scores_update(method, rule):
        pruning["scores_update"] = "adamw"
        changes.append(f"scores_update {rule} -> adamw ({method} cannot take {rule})")
        if rule == "platon" and method in SCORED_METHODS:
            if not pruning.get("scores_init_from_weights"):
                pruning["scores_init_from_weights"] = True
                changes.append("scores_init_from_weights -> true (its scores start from |W|, as PLATON's do)")
            wanted = ADAMW_SCORES_LEARNING_RATE.get(method)
            given = pruning.get("scores_learning_rate", PruningConfig.model_fields["scores_learning_rate"].default)
            if wanted is not None and given != wanted:
                pruning["scores_learning_rate"] = wanted
                changes.append(
                    f"scores_learning_rate {given:g} -> {wanted:g} (platon has none; {method}'s best measured)"
                )
    normalize = pruning.get("regularization_normalize", "none")
    if normalize != "none" and method != "soft_movement":
        pruning["regularization_normalize"] = "none"
        changes.append(f"regularization_normalize {normalize} -> none ({method} at a target density has no lambda * R)")
    if pruning.get("freeze_weights") and method not in SCORED_METHODS:
        pruning["freeze_weights"] = False
        changes.append(f"freeze_weights -> false ({method} has no scores to learn with frozen weights)")
    if pruning.get("group_budget", "shared") != "shared" and method not in TOPV_METHODS:
        changes.append(f"group_budget {pruning['group_budget']} -> shared ({method} has no Top-v budget to split)")
        pruning["group_budget"] = "shared"
    return pruning, changes


def _distillation(base: RunConfig, teacher: Path) -> dict:
    """The base config's alpha and temperature if it has a distillation section, else the defaults."""
    section = base.distillation or DistillationSection(teacher=str(teacher))
    return section.model_dump(mode="json") | {"teacher": str(teacher)}


def _settings(config: RunConfig) -> dict[str, Any]:
    """What makes two runs the same run: the config without its output paths, its data and model paths absolute
    (as the run folder saves them), flattened to dotted keys."""
    data = with_absolute_paths(config).model_dump(mode="json")
    for section, key in _PATH_KEYS:
        if isinstance(data.get(section), dict):
            data[section].pop(key, None)
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix.rstrip(".")] = node

    walk(data, "")
    return flat


def _check_same_settings(run_dir: Path, config: RunConfig) -> None:
    """Refuse to skip or resume a run that was started with other settings: its numbers would not belong here."""
    saved_path = next((p / CONFIG_FILE for p in (run_dir, staging_path(run_dir)) if (p / CONFIG_FILE).is_file()), None)
    if saved_path is None:
        return
    saved, wanted = _settings(build_config(read_yaml(saved_path), str(saved_path))), _settings(config)
    for key in sorted(saved.keys() | wanted.keys()):
        if saved.get(key) != wanted.get(key):
            raise UsageError(
                f"{run_dir} was started with {key}={saved.get(key)!r}, this sweep asks for {wanted.get(key)!r}: "
                "delete that folder or give another --out"
            )


def run_state(run_dir: Path) -> str:
    """'done' (summary.json present), 'new' (nothing written), 'resume' (a checkpoint to continue from, in the run's
    staging folder, or in the run folder for a run an older fineprune trained in place) or 'restart' (killed before
    its first checkpoint: nothing worth keeping)."""
    if (run_dir / SUMMARY_FILE).is_file():
        return "done"
    written = [folder for folder in (staging_path(run_dir), run_dir) if is_nonempty(folder)]
    if not written:
        return "new"
    return "resume" if any(last_checkpoint(folder) for folder in written) else "restart"


# -- rows and tables ---------------------------------------------------------------------------------------------------
def _row(
    summary: dict, target: float, distilled: bool, run_dir: Path, runtime: float | None, seed: int | None = None
) -> dict[str, Any]:
    return {
        "task": summary["task"],
        "method": summary["method"],
        "target_density": target,
        "density": summary.get("sparsity", {}).get("density"),
        **summary.get("metrics", {}),
        "seed": seed,
        "distilled": distilled,
        "run_dir": str(run_dir),
        "runtime_s": runtime,
    }


def _teacher_row(teacher: Path, task: str) -> dict[str, Any]:
    """The dense row of a sweep distilled from an existing model: its summary, else its eval_results.json."""
    if (teacher / SUMMARY_FILE).is_file():
        summary = json.loads((teacher / SUMMARY_FILE).read_text())
        return _row(summary, 1.0, False, teacher, summary.get("train_runtime_s"))
    results = json.loads((teacher / EVAL_FILE).read_text()) if (teacher / EVAL_FILE).is_file() else {}
    metrics = {k: v for k, v in results.items() if k in ("accuracy", "f1", "exact_match")}
    summary = {"task": task, "method": "none", "sparsity": {"density": results.get("density")}, "metrics": metrics}
    return _row(summary, 1.0, False, teacher, None)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """One row per run; the metric columns are whichever metrics the task reports, in the order it reports them."""
    metrics = list(dict.fromkeys(k for row in rows for k in row if k not in _LEADING + _TRAILING))
    columns = [*_LEADING, *metrics, *_TRAILING]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _cell(rows: list[dict[str, Any]], metric: str) -> str:
    """The main metric in % (one decimal, as the paper) of one cell's runs: their mean, ± the population standard
    deviation over seeds when there are several, and the densities reached that missed the target."""
    values = [row[metric] * (1 if row["task"] in PERCENT_TASKS else 100) for row in rows if row.get(metric) is not None]
    if not values:
        return "–"
    cell = f"{statistics.fmean(values):.1f}"
    if len(values) > 1:
        cell += f" ± {statistics.pstdev(values):.1f}"
    missed = [
        r["density"]
        for r in rows
        if r["density"] is not None and abs(r["density"] - r["target_density"]) > DENSITY_TOLERANCE
    ]
    if missed:
        cell += f" (at {', '.join(percent(d) for d in missed)})"
    return cell


def results_table(rows: list[dict[str, Any]], methods: list[str], header: str) -> str:
    """Tables 2/3 of the paper: rows (task, remaining weights), columns methods, cells the main metric.

    The dense model's score fills its row in every column: at 100% remaining weights every method is the dense
    model, so each column reads as that method's curve from its starting point down.
    """
    lines = [header, "", f"| Task (metric) | Remaining weights | {' | '.join(methods)} |"]
    lines.append("| --- | --- |" + " --- |" * len(methods))
    for task in dict.fromkeys(row["task"] for row in rows):
        metric = MAIN_METRIC[task]
        label = f"{task} ({metric})"
        dense = [r for r in rows if r["task"] == task and r["method"] == "none"]
        if dense:
            lines.append(f"| {label} | 100% (dense) |" + f" {_cell(dense, metric)} |" * len(methods))
        pruned = [r for r in rows if r["task"] == task and r["method"] != "none"]
        for target in sorted({r["target_density"] for r in pruned}, reverse=True):
            at = [r for r in pruned if r["target_density"] == target]
            cells = " | ".join(_cell([r for r in at if r["method"] == method], metric) for method in methods)
            lines.append(f"| {label} | {percent(target)} | {cells} |")
    return "\n".join(lines) + "\n"


def _header(base: RunConfig, rows: list[dict[str, Any]], summary: dict, teacher: Path | None) -> str:
    """Model, data sizes, updates per run and distillation: what the numbers in the table depend on.

    `summary` is any run's of this sweep: they all share data and training settings.
    """
    data = (
        f"{summary['train_examples']:,} training / {summary['eval_examples']:,} evaluation examples, "
        f"{summary['optimizer_steps']:,} optimizer steps per run"
    )
    if teacher is None:
        distill = "without distillation"
    else:
        d = DistillationSection.model_validate(_distillation(base, teacher))
        distill = (
            f"with distillation from `{teacher}` (alpha_ce {d.alpha_ce:g}, alpha_distil {d.alpha_distil:g}, "
            f"T {d.temperature:g})"
        )
    metric = ", ".join(sorted({MAIN_METRIC[r["task"]] for r in rows}))
    seeds = list(dict.fromkeys(r["seed"] for r in rows if r["method"] != "none"))
    over = f", mean ± population standard deviation over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else ""
    return (
        f"Model `{base.model.name_or_path}` on {base.task.name}: {data}; pruned runs {distill}. "
        f"Cells: {metric} (%) on the evaluation split{over}; '(at x%)' where the density reached differs from the "
        f"target by more than {100 * DENSITY_TOLERANCE:g} points."
    )


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# -- the sweep ---------------------------------------------------------------------------------------------------------
def sweep(
    base_config_path: str | Path,
    methods: list[str],
    densities: list[float],
    out: Path,
    distill_from: str | Path | None = None,
    distill: bool = True,
    overrides: list[str] | None = None,
    progress: Callable[[str], None] = print,
    seeds: list[int] | None = None,
    trust_remote_code: bool = False,
    notice: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train the dense model (unless `distill_from` gives one), then every (method, density) run, into `out`.

    Every run uses the base config's training settings (so the same number of updates) and pruning settings,
    with its own method and ``final_density`` (soft_movement / l0 are steered to it); with `distill`, pruned runs
    learn from the dense model. With `seeds`, all of it is trained once per training seed (the first seed's dense
    model is the teacher) and each table cell gives the mean and spread. What a cell changes of the base's pruning
    settings to fit its method goes to `notice`, before anything trains. Returns the rows of ``out/results.csv``;
    also writes ``out/results.md``. ``trust_remote_code``: the model's and the teacher's folders may run their own
    code (see fineprune.loading).
    """
    methods, densities = check_methods(methods), check_densities(densities)
    seed_list: list[int | None] = list(seeds) if seeds else [None]
    base = load_config(base_config_path, overrides)
    out = Path(out)
    source = str(base_config_path)
    teacher = Path(distill_from) if distill_from is not None else out / run_name("none", None, seed_list[0])
    if distill_from is not None and not has_model(teacher):
        raise UsageError(f"--distill-from {teacher}: no trained model here")
    for source in (base.model.name_or_path, distill_from):
        if source is not None:  # a folder with code fineprune does not run is refused now, not after the dense run
            may_run_code(source, trust_remote_code)

    # Every config is built and checked before anything trains: a bad combination fails now, not hours in.
    plan: list[tuple[Path, RunConfig]] = []
    distillation = _distillation(base, teacher) if distill else None
    announced: set[str] = set()
    for seed in seed_list:
        if distill_from is None:
            run_dir = out / run_name("none", None, seed)
            plan.append((run_dir, _variant(base, source, run_dir, {"method": "none"}, None, seed)))
        for method in methods:
            for density in densities:
                pruning, changes = pruning_for(base.pruning.model_dump(mode="json"), method, density)
                run_dir = out / run_name(method, density, seed)
                if method not in announced:
                    announced.add(method)
                    for change in changes:
                        notice(f"{method} runs: {change}")
                plan.append((run_dir, _variant(base, source, run_dir, pruning, distillation, seed)))
    for run_dir, config in plan:
        _check_same_settings(run_dir, config)

    out.mkdir(parents=True, exist_ok=True)
    rows = [_teacher_row(teacher, base.task.name)] if distill_from is not None else []
    started, trained_times = time.monotonic(), []
    for number, (run_dir, config) in enumerate(plan, 1):
        state = run_state(run_dir)
        tag = f"[{number}/{len(plan)}] {run_dir.name}"
        if state == "done":
            summary, runtime = json.loads((run_dir / SUMMARY_FILE).read_text()), None
        else:
            progress(f"{tag}: training ({state})")
            begun = time.monotonic()
            summary = train(
                config,
                str(run_dir),
                overwrite=state == "restart",
                resume=state == "resume",
                trust_remote_code=trust_remote_code,
            )
            runtime = time.monotonic() - begun
            trained_times.append(runtime)
        target = config.pruning.final_density or 1.0
        runtime_s = summary.get("train_runtime_s") or runtime
        rows.append(
            _row(summary, target, config.distillation is not None, run_dir, runtime_s, config.training.get("seed"))
        )
        metric = MAIN_METRIC[summary["task"]]
        line = (
            f"{tag}: {metric} {100 * summary['metrics'][metric]:.2f}, density {percent(summary['sparsity']['density'])}"
        )
        if runtime is None:
            line += ", finished earlier: skipped"
        else:
            left = sum(run_state(d) != "done" for d, _ in plan[number:])
            eta = _duration(left * sum(trained_times) / len(trained_times))
            line += f", {_duration(runtime)}; elapsed {_duration(time.monotonic() - started)}, about {eta} left"
        progress(line)
        _write_results(rows, methods, out, _header(base, rows, summary, teacher if distill else None))
    return rows


def _write_results(rows: list[dict[str, Any]], methods: list[str], out: Path, header: str) -> None:
    """Both tables, rewritten after every run so a killed sweep still leaves what it has."""
    write_csv(rows, out / "results.csv")
    (out / "results.md").write_text(results_table(rows, methods, header))
