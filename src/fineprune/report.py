"""The paper's figures from finished run folders (and what sweep.py reads back from a run for its tables).

Each figure needs something particular (a dense run, a global-scope run, a movement run with scores, the
pretrained model); a figure the given runs cannot support is skipped with a note, never an error, so
``fineprune report`` works on whatever subset of a sweep exists.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator
from torch import Tensor, nn

from fineprune.config import RunConfig, build_config, read_yaml
from fineprune.errors import UsageError
from fineprune.loading import CONFIG_FILE, SUMMARY_FILE
from fineprune.pruning import get_pruner, is_pruned_folder, load_pruned

MAIN_METRIC = {"classification": "accuracy", "mnli": "accuracy", "qqp": "accuracy", "qa": "f1", "squad": "f1"}
METHOD_COLORS = {"magnitude": "tab:blue", "movement": "tab:orange", "soft_movement": "tab:green", "l0": "tab:red"}
# Different shapes and sizes, so methods that land on the same point (common at low sparsity) stay visible.
METHOD_MARKERS = {"magnitude": ("s", 9), "movement": ("o", 7), "soft_movement": ("^", 6), "l0": ("D", 4)}
DISTILLED_SHADE = 0.55  # a distilled run's colour: its method's, darkened by this factor
PRUNED_COLOR = "0.7"
SCATTER_POINTS = 20_000


@dataclass
class Run:
    """A finished run folder: its summary.json and resolved config."""

    path: Path
    summary: dict
    config: RunConfig

    @property
    def method(self) -> str:
        return self.config.pruning.method

    @property
    def task(self) -> str:
        return self.config.task.name

    @property
    def density(self) -> float:
        """Reached density, counted from the masks."""
        return self.summary["sparsity"]["density"]

    @property
    def target_density(self) -> float:
        return self.config.pruning.final_density or 1.0

    @property
    def score(self) -> float | None:
        return self.summary["metrics"].get(MAIN_METRIC[self.task])

    @property
    def distilled(self) -> bool:
        return self.config.distillation is not None

    @property
    def name(self) -> str:
        return self.path.name


def read_run(path: Path) -> Run | None:
    """The run in `path`, or None if it is not a finished run (no summary.json or no config)."""
    if not (path / SUMMARY_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        return None
    config = build_config(read_yaml(path / CONFIG_FILE), str(path / CONFIG_FILE))
    return Run(path, json.loads((path / SUMMARY_FILE).read_text()), config)


def percent(fraction: float) -> str:
    """0.1 -> '10%', 0.03 -> '3%', 0.125 -> '12.5%'."""
    return f"{100 * fraction:.4g}%"


class _Skip(Exception):
    """The runs given lack what a figure needs; the message says what."""


# -- reading runs ----------------------------------------------------------------------------------------------------
def _run_folders(paths: list[Path]) -> Iterator[Path]:
    """The given folders, with a sweep folder (no summary.json, runs inside) standing for its runs."""
    for path in paths:
        if not (path / SUMMARY_FILE).is_file() and path.is_dir():
            inner = sorted(p for p in path.iterdir() if (p / SUMMARY_FILE).is_file())
            if inner:
                yield from inner
                continue
        yield path


def _read_runs(paths: list[Path], progress: Callable[[str], None]) -> list[Run]:
    runs = []
    for path in _run_folders(paths):
        run = read_run(path)
        if run is None:
            progress(f"note: {path} is not a finished run (no {SUMMARY_FILE} or {CONFIG_FILE}): left out")
        else:
            runs.append(run)
    return runs


@dataclass
class _Weights:
    """One pruned model's matrices, in the pruner's order: fine-tuned weight, kept or not, score (per weight)."""

    names: list[str]
    weights: list[Tensor]
    kept: list[Tensor]
    scores: list[Tensor] | None

    def flat(self, values: list[Tensor]) -> Tensor:
        """All matrices as one vector, for figures over the whole pruned set."""
        return torch.cat([v.reshape(-1) for v in values])


def _load_weights(run: Run) -> _Weights:
    if not is_pruned_folder(run.path):
        raise _Skip(f"{run.path} holds no pruned model to read masks from")
    pruner = get_pruner(load_pruned(run.path))
    with torch.no_grad():
        weights = [lin.parametrizations.weight.original.detach().float() for lin in pruner.linears]
        kept = [mask.bool() for mask in pruner.binary_masks()]
        scores = None
        if pruner.method.uses_scores:
            scores = [p.weight_scores().float() for p in pruner.parametrizations]
    return _Weights(list(pruner.names), weights, kept, scores)


def _sample(n: int, size: int = SCATTER_POINTS) -> Tensor:
    """A fixed random subset of indices, so the scatter plots of big models stay readable and reproducible."""
    if n <= size:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:size]


def _pick(runs: list[Run], method: str, target: float | None = None) -> Run | None:
    """The run of `method` at `target` density, or at its lowest target density if `target` is None."""
    candidates = [r for r in runs if r.method == method and (target is None or r.target_density == target)]
    return min(candidates, key=lambda r: r.target_density, default=None)


def _lowest_shared(runs: list[Run], methods: tuple[str, ...]) -> list[Run]:
    """One run per method present, all at the lowest density every present method has (else each its lowest)."""
    present = [m for m in methods if _pick(runs, m)]
    if not present:
        return []
    shared = set.intersection(*({r.target_density for r in runs if r.method == m} for m in present))
    target = min(shared) if shared else None
    return [_pick(runs, m, target) for m in present]


def _pruned(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.method != "none"]


def _method_order(run: Run) -> int:
    """The paper's order: magnitude, movement, soft movement, L0."""
    return list(METHOD_COLORS).index(run.method)


def _label(run: Run, pruned: list[Run]) -> str:
    """Method name, plus scope / distillation only where the runs shown differ in them."""
    label = run.method
    if len({r.config.pruning.scope for r in pruned}) > 1:
        label += f" {run.config.pruning.scope}"
    if len({r.distilled for r in pruned}) > 1:
        label += " + distillation" if run.distilled else ""
    return label


def _curve_style(run: Run) -> dict:
    """The method's colour and marker shape; a distilled run in a darker shade, hollow markers and a dashed line, so
    a method and its distilled variant stay apart."""
    marker, size = METHOD_MARKERS[run.method]
    style = {"marker": marker, "markersize": size, "color": METHOD_COLORS[run.method]}
    if run.distilled:
        shade = tuple(DISTILLED_SHADE * c for c in to_rgb(style["color"]))
        style |= {"color": shade, "markerfacecolor": "white", "linestyle": "--"}
    return style


def _percent_axis(axis, values: list[float]) -> None:
    """A log axis labelled at the given percentages only, as the paper's figures are."""
    axis.set_ticks(sorted(set(values)))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:.3g}%"))


def _seed_means(runs: list[Run]) -> list[tuple[float, float, float]]:
    """(remaining %, mean metric %, population spread %) per target density, in order of density: the runs of one
    cell trained with different seeds become one point with an error bar."""
    cells: dict[float, list[Run]] = defaultdict(list)
    for run in runs:
        cells[run.target_density].append(run)
    points = []
    for cell in cells.values():
        scores = [100 * r.score for r in cell]
        points.append(
            (100 * statistics.fmean(r.density for r in cell), statistics.fmean(scores), statistics.pstdev(scores))
        )
    return sorted(points)


# -- the figures -----------------------------------------------------------------------------------------------------
def metric_vs_density(runs: list[Run], _weights: Callable[[Run], _Weights]) -> Figure:
    """Figures 2 and 3: main metric against remaining weights, one panel per task, dense model and 95% of it."""
    pruned = [r for r in _pruned(runs) if r.score is not None]
    if not pruned:
        raise _Skip("no pruned run with a metric")
    tasks = sorted({r.task for r in pruned})
    fig = Figure(figsize=(6.5 * len(tasks) + 3, 4.5), layout="constrained")
    for ax, task in zip(fig.subplots(1, len(tasks), squeeze=False)[0], tasks, strict=True):
        metric = MAIN_METRIC[task]
        curves: dict[str, list[Run]] = defaultdict(list)
        for run in sorted((r for r in pruned if r.task == task), key=_method_order):
            curves[_label(run, pruned)].append(run)
        xs = []
        for label, members in curves.items():
            x, y, spread = zip(*_seed_means(members), strict=True)
            xs += x
            style = _curve_style(members[0])
            ax.plot(x, y, label=label, **style)
            if any(spread):
                ax.errorbar(x, y, yerr=spread, fmt="none", ecolor=style["color"], capsize=3)
        dense = [100 * r.score for r in runs if r.method == "none" and r.task == task and r.score is not None]
        if dense:
            ax.axhline(statistics.fmean(dense), color="black", label="dense model (no pruning)")
            ax.axhline(0.95 * statistics.fmean(dense), color="black", linestyle="--", label="95% of dense")
        ax.set_xscale("log")
        _percent_axis(ax.xaxis, xs)
        ax.set_title(f"{task}: {metric} vs remaining weights{_distillation_note(pruned)}")
        ax.set_xlabel("remaining weights of the encoder's linear layers (%, log scale)")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
    # One legend beside the panels: inside, it would cover the dense lines or the points.
    entries = {label: handle for ax in fig.axes for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(entries.values(), entries.keys(), loc="outside right upper")
    return fig


def _distillation_note(pruned: list[Run]) -> str:
    """Said once in the title when every run shown agrees on distillation (else the labels say it)."""
    if all(r.distilled for r in pruned):
        return " (with distillation)"
    if not any(r.distilled for r in pruned):
        return " (no distillation)"
    return ""


def layers_global(runs: list[Run], _weights: Callable[[Run], _Weights]) -> Figure:
    """Figure 6: remaining weights per layer; global selection is what lets layers differ."""
    pruned = [r for r in _pruned(runs) if r.summary["sparsity"].get("layers")]
    if not pruned:
        raise _Skip("no pruned run with per-layer densities")
    shown = [r for r in pruned if r.config.pruning.scope == "global"]
    title = "Remaining weights per layer, global selection"
    if not shown:
        shown = pruned
        title = "Remaining weights per layer (no global-scope run given: local runs shown)"
    shown.sort(key=lambda r: (_method_order(r), r.target_density))
    width = 0.8 / len(shown)
    fig = Figure(figsize=(max(7.0, 0.6 * len(shown) + 5), 4.5))
    ax = fig.subplots()
    rank: dict[str, int] = defaultdict(int)  # the method's lowest density drawn darkest, higher ones lighter
    for offset, run in enumerate(shown):
        layers = {int(k): v for k, v in run.summary["sparsity"]["layers"].items() if str(k).isdigit()}
        order = sorted(layers)
        ax.bar(
            [i - 0.4 + width * (offset + 0.5) for i in order],
            [100 * layers[i] for i in order],
            width,
            color=METHOD_COLORS[run.method],
            alpha=max(0.3, 1 - 0.3 * rank[run.method]),
            label=f"{_label(run, shown)} at {percent(run.density)}",
        )
        rank[run.method] += 1
        ax.set_xticks(order)
    ax.set_title(title)
    ax.set_xlabel("layer")
    ax.set_ylabel("remaining weights in the layer (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars: they reach any height
    return fig


def weight_distribution(runs: list[Run], weights: Callable[[Run], _Weights]) -> Figure:
    """Figure 4a: magnitude pruning leaves two clusters away from zero, movement a smoother spread."""
    chosen = _lowest_shared(runs, ("magnitude", "movement"))
    if not chosen:
        raise _Skip("needs a magnitude or a movement run")
    kept = {run.name: _kept_values(weights(run)) for run in chosen}
    if not any(v.numel() for v in kept.values()):
        raise _Skip("the chosen runs keep no weights")
    limit = max(_tail_limit(v) for v in kept.values() if v.numel())
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for run in chosen:
        values = kept[run.name].numpy()
        ax.hist(
            values,
            bins=120,
            range=(-limit, limit),
            density=True,
            histtype="stepfilled",
            alpha=0.45,
            color=METHOD_COLORS[run.method],
            label=f"{run.method} at {percent(run.density)} ({values.size:,} weights)",
        )
    ax.set_title("Distribution of the remaining weights (all pruned matrices)")
    ax.set_xlabel("fine-tuned weight value")
    ax.set_ylabel("probability density")
    ax.legend()
    return fig


def _tail_limit(values: Tensor, share: float = 0.999) -> float:
    """The |value| below which `share` of the weights lie: a few outliers would otherwise squash the histogram."""
    magnitudes = values.abs().flatten()
    return float(magnitudes.kthvalue(max(1, round(share * magnitudes.numel()))).values)


def _kept_values(data: _Weights) -> Tensor:
    return data.flat(data.weights)[data.flat(data.kept)]


def scores_vs_weights(runs: list[Run], weights: Callable[[Run], _Weights]) -> Figure:
    """Figure 4b: high scores go with weights that moved away from zero, whatever their size (the "v")."""
    run = _pick(runs, "movement") or _pick(runs, "soft_movement")
    if run is None:
        raise _Skip("needs a movement or soft_movement run")
    data = weights(run)
    w, kept, s = data.flat(data.weights), data.flat(data.kept), data.flat(data.scores)
    index = _sample(w.numel())
    w, kept, s = w[index], kept[index], s[index]
    fig = Figure(figsize=(6.5, 5))
    ax = fig.subplots()
    ax.scatter(w[~kept], s[~kept], s=3, color=PRUNED_COLOR, label="pruned", rasterized=True)
    ax.scatter(w[kept], s[kept], s=3, color=METHOD_COLORS[run.method], label="kept", rasterized=True)
    ax.set_title(f"Scores vs weights: {run.method} at {percent(run.density)} ({_shown(index, data)})")
    ax.set_xlabel("fine-tuned weight value")
    ax.set_ylabel("importance score S")
    ax.legend(markerscale=4)
    return fig


def _shown(index: Tensor, data: _Weights) -> str:
    total = sum(w.numel() for w in data.weights)
    return f"all {total:,} weights" if len(index) == total else f"{len(index):,} of {total:,} weights"


def _pretrained_linears(name_or_path: str) -> dict[str, Tensor]:
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise _Skip(f"cannot load the pretrained model {name_or_path}: {str(error).splitlines()[0]}") from None
    return {n: m.weight.detach().float() for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def _match(name: str, pretrained: dict[str, Tensor]) -> Tensor | None:
    """The pretrained weight of pruned matrix `name` (the task model's names carry a prefix such as ``bert.``)."""
    for key, weight in pretrained.items():
        if name == key or name.endswith(f".{key}"):
            return weight
    return None


def finetuned_vs_pretrained(runs: list[Run], weights: Callable[[Run], _Weights]) -> Figure:
    """Figure 1: fine-tuned weights stay near their pretrained values, so magnitude pruning is decided before
    fine-tuning starts, while movement pruning keeps weights that moved away from zero."""
    chosen = _lowest_shared(runs, ("magnitude", "movement"))
    if not chosen:
        raise _Skip("needs a magnitude or a movement run")
    fig = Figure(figsize=(6 * len(chosen), 5.5))
    loaded: dict[str, dict[str, Tensor]] = {}
    for ax, run in zip(fig.subplots(1, len(chosen), squeeze=False)[0], chosen, strict=True):
        source = run.config.model.name_or_path
        if source not in loaded:
            loaded[source] = _pretrained_linears(source)
        data = weights(run)
        pairs = [(w, k, _match(n, loaded[source])) for n, w, k in zip(data.names, data.weights, data.kept, strict=True)]
        pairs = [(w, k, p) for w, k, p in pairs if p is not None and p.shape == w.shape]
        if not pairs:
            raise _Skip(f"no pruned matrix of {run.path} matches a linear layer of {source} by name")
        w, kept, p = (torch.cat([t.reshape(-1) for t in column]) for column in zip(*pairs, strict=True))
        index = _sample(w.numel())
        w, kept, p = w[index], kept[index], p[index]
        ax.scatter(p[~kept], w[~kept], s=3, color=PRUNED_COLOR, label="pruned", rasterized=True)
        ax.scatter(p[kept], w[kept], s=3, color=METHOD_COLORS[run.method], label="kept", rasterized=True)
        low, high = float(torch.minimum(p.min(), w.min())), float(torch.maximum(p.max(), w.max()))
        ax.plot([low, high], [low, high], color="black", linewidth=1, label="identity")
        ax.set_title(f"{run.method} at {percent(run.density)}")
        ax.set_xlabel("pretrained weight value")
        ax.set_ylabel("fine-tuned weight value")
        ax.legend(markerscale=4)
    fig.suptitle(f"Fine-tuned vs pretrained weights (up to {SCATTER_POINTS:,} sampled per panel)")
    return fig


FIGURES: dict[str, Callable[[list[Run], Callable[[Run], _Weights]], Figure]] = {
    "metric_vs_density.png": metric_vs_density,
    "layers_global.png": layers_global,
    "weight_distribution.png": weight_distribution,
    "scores_vs_weights.png": scores_vs_weights,
    "finetuned_vs_pretrained.png": finetuned_vs_pretrained,
}


def report(run_dirs: list[Path], out: Path, progress: Callable[[str], None] = print) -> list[Path]:
    """Draw every figure the runs support into `out` (PNG); returns the files written.

    A sweep folder may stand for all the runs in it. Pruned models are loaded once each, on first need. No finished
    run, or none that supports a figure, is a usage error (after the notes that say why).
    """
    runs = _read_runs([Path(p) for p in run_dirs], progress)
    if not runs:
        raise UsageError(f"no finished run (with {SUMMARY_FILE} and {CONFIG_FILE}) in {', '.join(map(str, run_dirs))}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache: dict[Path, _Weights] = {}

    def weights(run: Run) -> _Weights:
        if run.path not in cache:
            cache[run.path] = _load_weights(run)
        return cache[run.path]

    written = []
    for name, draw in FIGURES.items():
        try:
            fig = draw(runs, weights)
        except _Skip as reason:
            progress(f"skipped {name}: {reason}")
            continue
        fig.savefig(out / name, dpi=130, bbox_inches="tight")
        written.append(out / name)
        progress(f"wrote {out / name}")
    if not written:
        raise UsageError("the runs given support none of the figures (the notes above say what each one needs)")
    return written
