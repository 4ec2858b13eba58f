"""How ONNX Runtime is told to run an exported graph, and what it costs: the levers tried for int8 speed on a CPU.

For each model folder of `fineprune export --onnx` (its onnx/model.onnx and onnx/model_quantized.onnx), the same
graphs are timed in one process, taking turns, on random tokens (batch x seq-len, no padding), with:
- `ort default`: InferenceSession with every graph optimization (what a user gets without options);
- `fineprune`: `fineprune.onnx_inference.open_session`, the same less the fusions in SLOW_FUSIONS;
- `offline bert optimizer`: onnxruntime.transformers' optimize_model (model_type bert) applied first, then ORT
  default (fp32 graph only; its int8 is the optimized graph quantized as fineprune quantizes);
- `static int8`: the fp32 graph quantized with calibrated activations (QDQ, per channel, MatMul only; calibrated on
  the same random tokens, so only its speed and its distance to fp32 mean anything, not its accuracy).
Reported per folder and batch size: median ms over the repeats (CPU time of the calling thread with one thread,
which stays honest on a busy machine), the speed-up over the first folder's fp32 graph under `ort default`, and the
largest |logit - fp32 graph's logit| on the timed input.

    python scripts/bench_ort_sessions.py exports/dense exports/structured_0.25 [--batch-sizes 1,32] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.transformers.optimizer import optimize_model

from fineprune.export.onnx import FP32_GRAPH, INT8_GRAPH, ONNX_DIR
from fineprune.inputs import random_inputs
from fineprune.onnx_inference import open_session
from fineprune.timing import Variant, time_variants


def default_session(graph: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 1, 1, 3
    return onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def random_feed(session: onnxruntime.InferenceSession, vocab_size: int, batch: int, seq_len: int, seed: int = 0):
    """fineprune's random inputs for ``session``'s input names, as numpy."""
    names = [i.name for i in session.get_inputs()]
    return {k: v.numpy() for k, v in random_inputs(names, vocab_size, batch, seq_len, seed).items()}


class RandomTokens(CalibrationDataReader):
    def __init__(self, graph: Path, vocab_size: int, batches: int = 4):
        session = default_session(graph)
        self.feeds = iter([random_feed(session, vocab_size, 4, 128, seed) for seed in range(batches)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def variants(folder: Path, vocab_size: int, work: Path) -> dict[str, onnxruntime.InferenceSession]:
    """Every way of running this folder's graphs, named `<fp32|int8> <how>`."""
    fp32, int8 = folder / ONNX_DIR / FP32_GRAPH, folder / ONNX_DIR / INT8_GRAPH
    optimized, optimized_int8 = work / f"{folder.name}_opt.onnx", work / f"{folder.name}_opt_int8.onnx"
    optimize_model(str(fp32), model_type="bert", num_heads=0, hidden_size=0).save_model_to_file(str(optimized))
    quantize_dynamic(optimized, optimized_int8, per_channel=True, weight_type=QuantType.QInt8)
    static = work / f"{folder.name}_static_int8.onnx"
    quantize_static(
        fp32,
        static,
        RandomTokens(fp32, vocab_size),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
    )
    return {
        "fp32 ort default": default_session(fp32),
        "fp32 fineprune": open_session(fp32, threads=1),
        "fp32 offline bert optimizer": default_session(optimized),
        "int8 ort default": default_session(int8),
        "int8 fineprune": open_session(int8, threads=1),
        "int8 offline bert optimizer": default_session(optimized_int8),
        "int8 static (QDQ)": default_session(static),
    }


def session_variant(folder: Path, how: str, session, feeds: dict[int, dict[str, np.ndarray]]) -> Variant:
    return Variant(folder, how, lambda batch: session.run(None, feeds[batch])[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as work:
        timed = []
        for folder in args.folders:
            vocab_size = json.loads((folder / "config.json").read_text())["vocab_size"]
            for how, session in variants(folder, vocab_size, Path(work)).items():
                feeds = {b: random_feed(session, vocab_size, b, args.seq_len) for b in batch_sizes}
                timed.append(session_variant(folder, how, session, feeds))
        times = time_variants(timed, batch_sizes, args.repeats, warmup=1, clock="cpu")
        for batch, per_variant in zip(batch_sizes, times, strict=True):
            logits = {(v.folder, v.backend): v.call(batch) for v in timed}
            base = statistics.median(per_variant[0])
            print(f"\nbatch {batch} x {args.seq_len} tokens, 1 thread, median of {args.repeats}")
            print(f"{'model':12s} {'graph and session':30s} {'ms':>8s} {'speed-up':>9s} {'max |diff|':>11s}")
            for variant, samples in zip(timed, per_variant, strict=True):
                diff = np.abs(
                    logits[(variant.folder, variant.backend)] - logits[(variant.folder, "fp32 ort default")]
                ).max()
                median = statistics.median(samples)
                print(
                    f"{variant.folder.name:12s} {variant.backend:30s} {1000 * median:8.1f} {base / median:8.2f}x {diff:11.4f}"
                )


if __name__ == "__main__":
    main()
