"""Print what `make demo` produced: per model, its accuracy on the held-out pairs, its file size and its latency
against the dense model (torch fp32, and ONNX Runtime int8 for the structured model).

python scripts/demo_report.py demo_runs

Reads only what the commands wrote: each run's summary.json, each export's eval_results*.json, and the rows of
`fineprune bench --json` in demo_runs/bench.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MIB = 2**20


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _accuracy(path: Path) -> float:
    """From a run's summary.json (under "metrics") or an eval_results*.json (at the top)."""
    data = _json(path)
    return data.get("metrics", data)["accuracy"]


def _speedups(bench: list[dict], folder: Path, backend: str) -> str:
    """'2.7x / 3.5x' at each batch size timed, from the bench rows (speed-up over the dense torch model)."""
    rows = [r for r in bench if Path(r["model"]).name == folder.name and r["backend"] == backend]
    return " / ".join(f"{r['speedup']:.1f}x" for r in sorted(rows, key=lambda r: r["batch_size"]))


def main(root: Path) -> None:
    bench = _json(root / "bench.json")
    sizes = sorted({r["batch_size"] for r in bench})
    dense, movement, structured = root / "dense", root / "movement", root / "structured"
    compressed, compact = root / "movement_compressed", root / "structured_compact"
    density = {run: _json(run / "summary.json")["sparsity"]["density"] for run in (movement, structured)}
    rows = [
        ("dense (fine-tuned)", _accuracy(dense / "summary.json"), 1.0, dense / "model.safetensors", "1.0x"),
        (
            "movement 10%, compressed",
            _accuracy(compressed / "eval_results.json"),
            density[movement],
            compressed / "model.compressed.safetensors",
            "1.0x (zeros are still multiplied)",
        ),
        (
            "structured 25%, compact torch",
            _accuracy(compact / "eval_results.json"),
            density[structured],
            compact / "model.safetensors",
            _speedups(bench, compact, "torch"),
        ),
        (
            "structured 25%, ONNX int8",
            _accuracy(compact / "eval_results_onnx-quantized.json"),
            density[structured],
            compact / "onnx" / "model_quantized.onnx",
            _speedups(bench, compact, "onnx-quantized"),
        ),
    ]
    batches = " / ".join(f"batch {b}" for b in sizes)
    print(f"\n{'model':<32} {'accuracy':>8} {'weights kept':>12} {'file size':>10}  speed vs dense ({batches})")
    for name, accuracy, kept, file, speed in rows:
        size = f"{file.stat().st_size / MIB:.1f} MiB"
        print(f"{name:<32} {100 * accuracy:>7.1f}% {100 * kept:>11.0f}% {size:>10}  {speed}")
    summary = _json(movement / "summary.json")
    print(
        f"\nTrained on {summary['train_examples']:,} MNLI pairs (data/mnli_sample.tsv.gz), evaluated on "
        f"{summary['eval_examples']:,} held-out pairs; 'weights kept' counts the encoder's linear weights. "
        f"Folders: {root}/. Speed: fineprune bench, {bench[0]['seq_len']} tokens, CPU time of one thread.\n"
        "What the same recipes keep with more data and updates: docs/results.md."
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_runs"))
