"""The report draws the paper's figures from a sweep's runs, and skips (never crashes on) what the runs lack."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from tiny_assets import tiny_setup_fixture, tiny_sweep_fixture  # noqa: F401 (pytest fixtures, used by name)
from typer.testing import CliRunner

from fineprune.cli import app
from fineprune.errors import UsageError
from fineprune.report import FIGURES, layers_global, metric_vs_density, read_run, report

MIN_BYTES = 5_000  # a titled, labelled figure with data; an empty canvas is smaller


def test_report_draws_every_figure_from_the_runs(tiny_sweep, tmp_path):
    out = tiny_sweep["out"]
    notes: list[str] = []
    written = report([out / "dense", out / "magnitude_0.5", out / "movement_0.5"], tmp_path / "figs", notes.append)
    assert [p.name for p in written] == list(FIGURES)
    for path in written:
        assert path.stat().st_size > MIN_BYTES, path
    assert not [note for note in notes if note.startswith("skipped")]


def test_a_sweep_folder_stands_for_its_runs(tiny_sweep, tmp_path):
    notes: list[str] = []
    written = report([tiny_sweep["out"]], tmp_path, notes.append)
    assert len(written) == len(FIGURES)


def test_a_dense_run_alone_supports_no_figure(tiny_sweep, tmp_path):
    notes: list[str] = []
    with pytest.raises(UsageError, match="support none of the figures"):
        report([tiny_sweep["out"] / "dense"], tmp_path, notes.append)
    assert sorted(note.split(":")[0] for note in notes) == sorted(f"skipped {name}" for name in FIGURES)
    assert not list(tmp_path.glob("*.png"))


def test_unfinished_runs_are_left_out_with_a_note(tiny_sweep, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    notes: list[str] = []
    written = report([unfinished, tiny_sweep["out"] / "movement_0.5"], tmp_path / "figs", notes.append)
    assert any(str(unfinished) in note and "not a finished run" in note for note in notes)
    # one movement run: no dense line, no magnitude panel, but every figure it can support
    assert [p.name for p in written] == list(FIGURES)


def test_cli_report(tiny_sweep, tmp_path):
    result = CliRunner().invoke(app, ["report", str(tiny_sweep["out"]), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"{len(FIGURES)} figure(s)" in result.output


@pytest.mark.parametrize("given", ["dense", "nothing"])
def test_cli_report_without_a_usable_run_exits_2(tiny_sweep, tmp_path, given):
    folder = tiny_sweep["out"] / "dense" if given == "dense" else tmp_path / "empty"
    folder.mkdir(exist_ok=True)
    result = CliRunner().invoke(app, ["report", str(folder), "--out", str(tmp_path / "figs")])
    assert result.exit_code == 2, result.output
    assert result.output.rstrip().splitlines()[-1].startswith("error: ")


# -- what the figures draw ------------------------------------------------------------------------------------------
def summaries(out, names):
    return {name: json.loads((out / name / "summary.json").read_text()) for name in names}


def test_metric_vs_density_draws_each_runs_density_and_accuracy(tiny_sweep):
    out = tiny_sweep["out"]
    names = ["dense", "magnitude_0.5", "movement_0.5"]
    expected = summaries(out, names)
    fig = metric_vs_density([read_run(out / name) for name in names], None)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    for method in ("magnitude", "movement"):
        summary = expected[f"{method}_0.5"]
        assert list(lines[method].get_xdata()) == [100 * summary["sparsity"]["density"]]
        assert list(lines[method].get_ydata()) == [100 * summary["metrics"]["accuracy"]]
    dense = 100 * expected["dense"]["metrics"]["accuracy"]
    assert list(lines["dense model (no pruning)"].get_ydata()) == [dense, dense]
    assert list(lines["95% of dense"].get_ydata()) == pytest.approx([0.95 * dense] * 2)


def test_seeds_of_one_cell_are_one_point_with_the_spread_as_an_error_bar(tiny_sweep):
    out = tiny_sweep["out"]
    run = read_run(out / "movement_0.5")
    seeds = [replace(run, summary=run.summary | {"metrics": {"accuracy": a}}) for a in (0.3, 0.5)]
    dense = read_run(out / "dense")
    dense_seeds = [replace(dense, summary=dense.summary | {"metrics": {"accuracy": a}}) for a in (0.6, 0.7)]
    ax = metric_vs_density([*dense_seeds, *seeds, read_run(out / "magnitude_0.5")], None).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["movement"].get_xdata()) == [100 * run.density]
    assert list(lines["movement"].get_ydata()) == pytest.approx([40.0])  # (30 + 50) / 2
    [bar] = [c for c in ax.collections if len(c.get_segments()) == 1]  # magnitude (one seed) has no error bar
    (_, low), (_, high) = bar.get_segments()[0]
    assert (low, high) == pytest.approx((30.0, 50.0))  # the population spread of 30 and 50 is 10
    assert list(lines["dense model (no pruning)"].get_ydata()) == pytest.approx([65.0, 65.0])


def test_a_method_and_its_distilled_variant_look_different_and_the_legend_covers_no_data(tiny_sweep):
    out = tiny_sweep["out"]
    distilled = read_run(out / "movement_0.5")
    plain = replace(
        distilled,
        config=distilled.config.model_copy(update={"distillation": None}),
        summary=distilled.summary | {"metrics": {"accuracy": 0.3}},
    )
    fig = metric_vs_density([read_run(out / "dense"), distilled, plain], None)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    a, b = lines["movement"], lines["movement + distillation"]
    assert list(a.get_ydata()) == [30.0]
    assert a.get_color() != b.get_color()
    assert (a.get_markerfacecolor(), a.get_linestyle()) != (b.get_markerfacecolor(), b.get_linestyle())
    FigureCanvasAgg(fig).draw()
    legend = fig.legends[0].get_window_extent()
    assert not legend.overlaps(ax.get_window_extent())  # beside the panel: it hides neither points nor dense lines
    assert {t.get_text() for t in fig.legends[0].get_texts()} >= {"movement", "movement + distillation"}


def test_layers_figure_draws_each_layers_density(tiny_sweep):
    out = tiny_sweep["out"]
    expected = summaries(out, ["magnitude_0.5", "movement_0.5"])
    fig = layers_global([read_run(out / name) for name in expected], None)
    bars = [(patch.get_height()) for patch in fig.axes[0].patches]
    wanted = [100 * d for name in sorted(expected) for d in expected[name]["sparsity"]["layers"].values()]
    assert bars == pytest.approx(wanted)
