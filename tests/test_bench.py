"""`fineprune bench`: variants take turns, warm-ups are not timed, medians and speed-ups are the arithmetic they
claim; on real folders, every variant of every folder is in the table; bad input is one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_model
from tiny_assets import mnli_rows, vocabulary, write_tiny_bert
from typer.testing import CliRunner

import fineprune as fp
from fineprune import bench as bench_module
from fineprune import timing
from fineprune.bench import bench, parse_batch_sizes
from fineprune.cli import app
from fineprune.export.onnx import export_onnx
from fineprune.timing import Variant

runner = CliRunner()


def test_variants_take_turns_and_medians_skip_the_warm_up(monkeypatch):
    clock, calls = [0.0], []
    # seconds each call takes, in call order: first the 2 warm-ups (slow), then 5 timed repeats
    durations = {"a": [9.0, 9.0, 1.0, 5.0, 2.0, 4.0, 3.0], "b": [9.0, 9.0, 0.5, 0.5, 2.5, 1.0, 1.5]}

    def variant(name: str) -> Variant:
        def call(batch: int) -> None:
            calls.append((name, batch))
            clock[0] += durations[name][sum(1 for n, b in calls if n == name and b == batch) - 1]

        return Variant(Path(name), "torch", call)

    monkeypatch.setattr(bench_module, "load_variants", lambda *args: [variant("a"), variant("b")])
    monkeypatch.setitem(timing.CLOCKS, "wall", lambda: clock[0])
    progress = []
    rows = bench([Path("a"), Path("b")], [1, 8], repeats=5, warmup=2, threads=1, progress=lambda *a: progress.append(a))

    assert calls == [(n, b) for b in (1, 8) for _ in range(7) for n in ("a", "b")]  # round-robin, batch by batch
    assert [(r["model"], r["batch_size"]) for r in rows] == [("a", 1), ("b", 1), ("a", 8), ("b", 8)]
    a, b = rows[0], rows[1]
    assert a["median_ms"] == pytest.approx(3000.0)  # median of 1, 5, 2, 4, 3 s
    assert b["median_ms"] == pytest.approx(1000.0)  # median of 0.5, 0.5, 2.5, 1, 1.5 s
    assert a["min_ms"] == pytest.approx(1000.0)
    assert a["speedup"] == 1.0 and b["speedup"] == pytest.approx(3.0)
    assert progress[-1][1:] == (28, 28) and [p[1] for p in progress] == list(range(1, 29))


def test_cpu_clock_leaves_out_time_not_spent_computing(monkeypatch):
    """A call that only waits (as a process does while the scheduler runs others) costs wall time, not CPU time."""
    import time

    monkeypatch.setattr(
        bench_module, "load_variants", lambda *args: [Variant(Path("w"), "torch", lambda b: time.sleep(0.05))]
    )
    (wall,) = bench([Path("w")], [1], threads=1, repeats=3, warmup=0)
    (cpu,) = bench([Path("w")], [1], threads=1, repeats=3, warmup=0, clock="cpu")
    assert wall["median_ms"] >= 50 and cpu["median_ms"] < 10 and cpu["clock"] == "cpu"


def test_parse_batch_sizes():
    assert parse_batch_sizes("1,32") == [1, 32]
    assert parse_batch_sizes("8") == [8]
    for bad in ("", "0,4", "a", "1;2", "-1"):
        with pytest.raises(fp.errors.UsageError, match="--batch-sizes"):
            parse_batch_sizes(bad)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny model folders; only the second has ONNX graphs."""
    root = tmp_path_factory.mktemp("bench")
    vocab = vocabulary(mnli_rows())
    plain, with_graphs = write_tiny_bert(root / "plain", vocab), write_tiny_bert(root / "graphs", vocab)
    from transformers import AutoModelForSequenceClassification

    export_onnx(AutoModelForSequenceClassification.from_pretrained(str(with_graphs)), with_graphs)
    return plain, with_graphs


def invoke(args: list, exit_code: int = 0):
    result = runner.invoke(app, ["bench", *map(str, args)], env={"COLUMNS": "200"})
    assert result.exit_code == exit_code, result.output
    return result


def test_bench_table_and_json(folders):
    plain, with_graphs = folders
    options = ["--batch-sizes", "1,2", "--seq-len", "8", "--threads", "1", "--repeats", "3", "--warmup", "1"]
    rows = json.loads(invoke([plain, with_graphs, *options, "--json"]).stdout)
    variants = [(str(plain), "torch"), (str(with_graphs), "torch"), (str(with_graphs), "onnx")]
    variants.append((str(with_graphs), "onnx-quantized"))
    assert [(r["model"], r["backend"], r["batch_size"]) for r in rows] == [(*v, b) for b in (1, 2) for v in variants]
    for batch in (1, 2):
        same_batch = [r for r in rows if r["batch_size"] == batch]
        assert same_batch[0]["speedup"] == 1.0
        for row in same_batch:
            assert row["speedup"] == pytest.approx(same_batch[0]["median_ms"] / row["median_ms"])
            assert 0 < row["min_ms"] <= row["median_ms"]
            assert (row["seq_len"], row["threads"], row["repeats"]) == (8, 1, 3)

    table = invoke([plain, with_graphs, *options]).stdout
    lines = [line for line in table.splitlines() if "fp32" in line or "int8" in line]
    assert len(lines) == 8  # 4 variants x 2 batch sizes
    assert "1.00x" in lines[0] and "1.00x" in lines[4] and str(plain) in lines[0]
    assert sum(str(with_graphs) in line for line in lines) == 6
    assert [line.split("│")[2].strip() for line in lines[:4]] == ["torch fp32", "torch fp32", "onnx fp32", "onnx int8"]


def test_bad_input_is_one_line_and_exit_2(folders, tmp_path):
    plain, _ = folders
    model = tiny_model("bert")
    fp.prepare(model, fp.PruningConfig(method="magnitude", final_density=0.5))
    model.save_pretrained(tmp_path / "run")
    for args, message in (
        ([tmp_path / "nothing"], "no model here"),
        ([plain, tmp_path / "run"], "a training run with masks"),
        ([plain, "--batch-sizes", "1,x"], "--batch-sizes"),
        ([plain, "--seq-len", "600"], "more than"),
        ([plain, "--repeats", "0"], "--repeats"),
        ([plain, "--clock", "cpu"], "needs --threads 1"),
        ([plain, "--clock", "gpu", "--threads", "1"], "expected one of wall, cpu"),
    ):
        result = invoke(args, exit_code=2)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and message in result.stderr
