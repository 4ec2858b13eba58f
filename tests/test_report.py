"""The report draws the paper's figures from a sweep's runs, and skips (never crashes on) what the runs lack."""

from __future__ import annotations

from tiny_assets import tiny_setup_fixture, tiny_sweep_fixture  # noqa: F401 (pytest fixtures, used by name)
from typer.testing import CliRunner

from fineprune.cli import app
from fineprune.report import FIGURES, report

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


def test_a_dense_run_alone_skips_every_figure(tiny_sweep, tmp_path):
    notes: list[str] = []
    assert report([tiny_sweep["out"] / "dense"], tmp_path, notes.append) == []
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
    result = CliRunner().invoke(app, ["report", str(tiny_sweep["out"] / "dense"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.count("skipped") == len(FIGURES) and "0 figure(s)" in result.output
