"""Running exported ONNX graphs with ONNX Runtime: one CPU session per graph, predictions over a tokenized dataset.

Shared by ``fineprune eval --onnx`` (the task's own features and metrics) and ``fineprune bench`` (latency).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import onnxruntime
from transformers import PreTrainedTokenizerBase

from fineprune.errors import UsageError

PAD_LOGIT = -100.0  # what the Trainer pads predictions of shorter batches with; SQuAD decoding ignores it
# Graph rewrites that make these encoders slower on CPU: ONNX Runtime 1.32's fused SkipLayerNormalization kernel took
# ~0.3 ms per call at 128 x 384 where Add + LayerNormalization take a tenth of that; without it all-MiniLM-L6-v2 ran
# 1.08-1.12x (fp32) / 1.19-1.23x (int8) faster, a compact 40% model 1.19-1.21x / 1.33-1.49x (docs/benchmarks.md).
SLOW_FUSIONS = ("SkipLayerNormFusion",)


def open_session(graph: str | Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """A CPU session with every graph optimization but SLOW_FUSIONS; ``threads`` intra-op threads (default: ONNX
    Runtime's)."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no notes about initializers or unused outputs
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(graph), options, providers=["CPUExecutionProvider"], disabled_optimizers=SLOW_FUSIONS
    )


def predict(
    session: onnxruntime.InferenceSession,
    features: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
) -> tuple[np.ndarray, ...]:
    """The graph's outputs over every row, in order: batches padded as the Trainer's collator pads them, outputs
    of shorter batches padded with PAD_LOGIT along the sequence (as the Trainer does) and concatenated."""
    wanted = [i.name for i in session.get_inputs()]
    available = [name for name in wanted if name in features.column_names]
    missing = set(wanted) - set(available) - {"token_type_ids"}  # no segments given: all segment 0
    if missing:
        raise UsageError(f"the ONNX graph needs {', '.join(sorted(missing))}, which the task's features lack")
    outputs: list[list[np.ndarray]] = [[] for _ in session.get_outputs()]
    for start in range(0, len(features), batch_size):
        rows = features[start : start + batch_size]
        batch = tokenizer.pad({name: rows[name] for name in available}, return_tensors="np")
        feeds = {name: np.asarray(batch[name], dtype=np.int64) for name in available}
        if "token_type_ids" in wanted and "token_type_ids" not in feeds:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        for collected, array in zip(outputs, session.run(None, feeds), strict=True):
            collected.append(array)
    return tuple(_concatenate(arrays) for arrays in outputs)


def _concatenate(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenate along rows, padding the other axes of smaller arrays with PAD_LOGIT."""
    shape = np.max([a.shape for a in arrays], axis=0)
    padded = [
        np.pad(
            a,
            [(0, 0)] + [(0, int(n - m)) for n, m in zip(shape[1:], a.shape[1:], strict=True)],
            constant_values=PAD_LOGIT,
        )
        for a in arrays
    ]
    return np.concatenate(padded)
