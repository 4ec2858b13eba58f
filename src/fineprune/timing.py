"""Timing models that take turns: the core that ``fineprune bench`` and the compact export's own speed-up share.

The variants live in one process and take turns (one call of each per round), so that the machine's noise hits each
alike; warm-up rounds are not timed. The clock is wall time, or, on a machine shared with other work, the CPU time of
the calling thread: with one thread, torch and ONNX Runtime compute in that thread, so its CPU time is the latency
without the time the scheduler gave to other processes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fineprune.inputs import input_names, random_inputs


@dataclass
class Variant:
    """One way to run one model folder: ``call(batch)`` runs the inputs of one batch size once."""

    folder: Path
    backend: str  # "torch", or a key of GRAPHS
    call: Callable[[int], Any]


def model_inputs(model: torch.nn.Module, batch_sizes: list[int], seq_len: int) -> dict[int, dict[str, torch.Tensor]]:
    """Random token ids (and masks) of the inputs ``model`` takes, one batch per size, built once before timing."""
    return {b: random_inputs(input_names(model), model.config.vocab_size, b, seq_len) for b in batch_sizes}


def torch_variant(model: torch.nn.Module, batch_sizes: list[int], seq_len: int, name: Path = Path(".")) -> Variant:
    """``model`` in torch fp32 under inference mode, on its own random inputs."""
    return Variant(name, "torch", torch_call(model.eval(), model_inputs(model, batch_sizes, seq_len)))


def torch_call(model: torch.nn.Module, inputs: dict[int, dict[str, torch.Tensor]]) -> Callable[[int], Any]:
    def call(batch: int) -> Any:
        with torch.inference_mode():
            return model(**inputs[batch])

    return call


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
Progress = Callable[[str, int, int], None]  # (what runs now, calls done, calls in all)


def time_variants(
    variants: list[Variant],
    batch_sizes: list[int],
    repeats: int,
    warmup: int,
    clock: str = "wall",
    progress: Progress | None = None,
) -> list[list[list[float]]]:
    """Seconds of every timed call, per batch size, per variant: the variants take turns, one call each per round."""
    timer = CLOCKS[clock]
    total, done = len(batch_sizes) * (warmup + repeats) * len(variants), 0
    result = []
    for batch in batch_sizes:
        times: list[list[float]] = [[] for _ in variants]
        for repeat in range(-warmup, repeats):  # negative: warm-up rounds, not timed
            what = f"batch {batch}: " + (f"warm-up {repeat + warmup + 1}" if repeat < 0 else f"repeat {repeat + 1}")
            for variant, seconds in zip(variants, times, strict=True):
                start = timer()
                variant.call(batch)
                elapsed = timer() - start
                if repeat >= 0:
                    seconds.append(elapsed)
                done += 1
                if progress:
                    progress(what, done, total)
        result.append(times)
    return result


def torch_speedup(reference: torch.nn.Module, model: torch.nn.Module, seq_len: int = 128, repeats: int = 10) -> float:
    """How many times faster ``model`` runs than ``reference`` in torch fp32 at batch 1, one thread, CPU clock:
    the ratio of their median CPU times, taking turns (what an export can say about itself on this machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        variants = [torch_variant(module, [1], seq_len) for module in (reference, model)]
        reference_times, model_times = time_variants(variants, [1], repeats, 2, "cpu")[0]
    finally:
        torch.set_num_threads(threads)
    return statistics.median(reference_times) / statistics.median(model_times)
