"""``fineprune bench``: inference latency of model folders, torch fp32 and every ONNX graph beside it.

All variants live in one process and take turns (one call of each per repeat, round-robin), so that the machine's
noise hits each alike; each is warmed up first and reported by the median of its repeats, with its speed-up over
the first variant at the same batch size. Inputs: random token ids of the given length, an attention mask of ones.
The clock is wall time or the calling thread's CPU time (:mod:`fineprune.timing`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from fineprune.errors import UsageError
from fineprune.export.onnx import GRAPHS, ONNX_DIR
from fineprune.loading import MODEL_FILES, has_model, load_stock_model
from fineprune.outputs import check_complete
from fineprune.pruning import is_pruned_folder
from fineprune.timing import CLOCKS, Progress, Variant, model_inputs, time_variants, torch_call


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,32"`` -> [1, 32]; anything else is a usage error naming the option."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise UsageError(f"--batch-sizes: {text!r} is not a comma-separated list of positive integers")
    return sizes


def load_variants(
    folders: list[Path], batch_sizes: list[int], seq_len: int, threads: int, trust_remote_code: bool = False
) -> list[Variant]:
    """torch fp32 and each ONNX graph present, per folder, each with its inputs built once per batch size; a
    folder's own code runs only as :func:`~fineprune.loading.may_run_code` allows."""
    from fineprune.onnx_inference import open_session

    for folder in folders:  # every folder checked before any is loaded
        check_complete(folder)
        if not has_model(folder):
            raise UsageError(f"{folder}: no model here (expected {' or '.join(MODEL_FILES)})")
        if is_pruned_folder(folder):
            raise UsageError(f"{folder}: a training run with masks; bench its export (fineprune export RUN --out DIR)")
    variants = []
    for folder in folders:
        model = load_stock_model(folder, trust_remote_code)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and seq_len > limit:
            raise UsageError(f"--seq-len: {seq_len} is more than {folder} takes ({limit} positions)")
        inputs = model_inputs(model, batch_sizes, seq_len)
        variants.append(Variant(folder, "torch", torch_call(model, inputs)))
        for backend, name in GRAPHS.items():
            if (graph := folder / ONNX_DIR / name).is_file():
                session = open_session(graph, threads)
                variants.append(Variant(folder, backend, _graph_call(session, inputs)))
    return variants


def _graph_call(session, inputs: dict[int, dict[str, torch.Tensor]]) -> Callable[[int], Any]:
    wanted = {i.name for i in session.get_inputs()}
    feeds = {b: {k: v.numpy() for k, v in tensors.items() if k in wanted} for b, tensors in inputs.items()}
    return lambda batch: session.run(None, feeds[batch])


def bench(
    folders: list[Path],
    batch_sizes: list[int],
    seq_len: int = 128,
    threads: int | None = None,
    repeats: int = 10,
    warmup: int = 2,
    progress: Progress | None = None,
    clock: str = "wall",
    trust_remote_code: bool = False,
) -> list[dict[str, Any]]:
    """Median latency of every variant of every folder, per batch size, with the speed-up over the first variant.

    ``threads`` (default: torch's count) is used by torch and by every ONNX Runtime session alike.
    """
    if seq_len < 1 or repeats < 1 or warmup < 0:
        raise UsageError(f"--seq-len ({seq_len}) and --repeats ({repeats}) must be positive, --warmup ({warmup}) >= 0")
    if clock not in CLOCKS:
        raise UsageError(f"--clock {clock}: expected one of {', '.join(CLOCKS)}")
    if clock == "cpu" and threads != 1:
        raise UsageError("--clock cpu: needs --threads 1 (it counts the CPU time of the calling thread only)")
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    variants = load_variants(folders, batch_sizes, seq_len, threads, trust_remote_code)
    rows = []
    timed = time_variants(variants, batch_sizes, repeats, warmup, clock, progress)
    for batch, times in zip(batch_sizes, timed, strict=True):
        medians = [statistics.median(seconds) for seconds in times]
        for variant, median, seconds in zip(variants, medians, times, strict=True):
            rows.append(
                {
                    "model": str(variant.folder),
                    "backend": variant.backend,
                    "batch_size": batch,
                    "seq_len": seq_len,
                    "threads": threads,
                    "repeats": repeats,
                    "clock": clock,
                    "median_ms": 1000 * median,
                    "min_ms": 1000 * min(seconds),
                    "speedup": medians[0] / median,
                }
            )
    return rows


BACKEND_LABELS = {"torch": "torch fp32", "onnx": "onnx fp32", "onnx-quantized": "onnx int8"}


def table(rows: list[dict[str, Any]]) -> Table:
    """The rows as a rich table: one line per variant and batch size, speed-up over the first variant."""
    first = rows[0]
    result = Table(
        title=f"Inference latency: {first['seq_len']} tokens per example, {first['threads']} thread(s), "
        f"median of {first['repeats']} calls" + (" (CPU time)" if first["clock"] == "cpu" else ""),
        caption="speed-up: the first line's median over this line's, at the same batch size",
    )
    result.add_column("model", overflow="fold")
    for column in ("backend", "batch"):
        result.add_column(column, no_wrap=True)
    for column in ("median ms", "ms / example", "speed-up"):
        result.add_column(column, justify="right", no_wrap=True)
    previous_batch = None
    for row in rows:
        if previous_batch is not None and row["batch_size"] != previous_batch:
            result.add_section()
        previous_batch = row["batch_size"]
        result.add_row(
            row["model"],
            BACKEND_LABELS[row["backend"]],
            str(row["batch_size"]),
            f"{row['median_ms']:.1f}",
            f"{row['median_ms'] / row['batch_size']:.2f}",
            f"{row['speedup']:.2f}x",
        )
    return result
