"""How ONNX Runtime is told to run an exported graph, and what it costs: the levers tried for issue 12's int8 target.

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

    python scripts/bench_ort_sessions.py runs/r12/dense runs/r12/compact [--batch-sizes 1,32] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.transformers.optimizer import optimize_model

from fineprune.export.onnx import FP32_GRAPH, INT8_GRAPH, ONNX_DIR
from fineprune.onnx_inference import open_session


def default_session(graph: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 1, 1, 3
    return onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def random_feed(session: onnxruntime.InferenceSession, batch: int, seq_len: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "input_ids": rng.integers(1000, 20000, (batch, seq_len)),
        "attention_mask": np.ones((batch, seq_len), np.int64),
        "token_type_ids": np.zeros((batch, seq_len), np.int64),
    }
    return {i.name: arrays[i.name].astype(np.int64) for i in session.get_inputs()}


class RandomTokens(CalibrationDataReader):
    def __init__(self, graph: Path, batches: int = 4):
        session = default_session(graph)
        self.feeds = iter([random_feed(session, 4, 128) for _ in range(batches)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def variants(folder: Path, work: Path) -> dict[str, onnxruntime.InferenceSession]:
    """Every way of running this folder's graphs, named `<fp32|int8> <how>`."""
    fp32, int8 = folder / ONNX_DIR / FP32_GRAPH, folder / ONNX_DIR / INT8_GRAPH
    optimized, optimized_int8 = work / f"{folder.name}_opt.onnx", work / f"{folder.name}_opt_int8.onnx"
    optimize_model(str(fp32), model_type="bert", num_heads=0, hidden_size=0).save_model_to_file(str(optimized))
    quantize_dynamic(optimized, optimized_int8, per_channel=True, weight_type=QuantType.QInt8)
    static = work / f"{folder.name}_static_int8.onnx"
    quantize_static(
        fp32,
        static,
        RandomTokens(fp32),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        sessions = {(f.name, how): s for f in args.folders for how, s in variants(f, Path(work)).items()}
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            feeds = {key: random_feed(s, batch, args.seq_len) for key, s in sessions.items()}
            reference = {key: s.run(None, feeds[key])[0] for key, s in sessions.items()}  # also the warm-up
            times: dict[tuple[str, str], list[float]] = {key: [] for key in sessions}
            for _ in range(args.repeats):
                for key, session in sessions.items():
                    start = time.thread_time()
                    session.run(None, feeds[key])
                    times[key].append(time.thread_time() - start)
            base = statistics.median(times[(args.folders[0].name, "fp32 ort default")])
            print(f"\nbatch {batch} x {args.seq_len} tokens, 1 thread, median of {args.repeats}")
            print(f"{'model':12s} {'graph and session':30s} {'ms':>8s} {'speed-up':>9s} {'max |diff|':>11s}")
            for (name, how), samples in times.items():
                diff = np.abs(reference[(name, how)] - reference[(name, "fp32 ort default")]).max()
                median = statistics.median(samples)
                print(f"{name:12s} {how:30s} {1000 * median:8.1f} {base / median:8.2f}x {diff:11.4f}")


if __name__ == "__main__":
    main()
