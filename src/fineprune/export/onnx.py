"""ONNX export: an fp32 graph with dynamic batch and sequence axes, and its dynamic int8 quantization.

Written beside a model folder as ``onnx/model.onnx`` and ``onnx/model_quantized.onnx`` (the layout transformers.js
reads). The graph comes from torch.onnx's torch.export-based exporter (``dynamo=True``, the default since torch 2.9;
torch 2.13 warns that the TorchScript exporter will be removed). Attention is traced in its eager form: ONNX Runtime
then gets a plain MatMul / Softmax graph, 7-11% faster in fp32 and 12-22% in int8 on all-MiniLM-L6-v2 than the
traced SDPA decomposition with its NaN guards (docs/benchmarks.md). The graph is fp32 whatever the dtype the model
was saved in: a bf16 or fp16 model is traced from an fp32 copy (ONNX Runtime's CPU kernels have no bf16 Add, and
readers of ``model.onnx`` are promised fp32).

The graph is checked against that fp32 model: each output ``y`` must satisfy
``max|graph - y| <= ABS_TOLERANCE + REL_TOLERANCE * max|y|``. float32 rounding grows with the outputs' scale: on the
tiny test encoders (BERT, MPNet, RoBERTa, DistilBERT; logits 0.3 to 1750) and all-MiniLM-L6-v2 the difference
measured 3e-7 to 1.8e-6 of max|y| (4e-4 at logits near 300), so REL_TOLERANCE leaves five times that; ABS_TOLERANCE
covers outputs near zero.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from fineprune.errors import UsageError
from fineprune.inputs import input_names, random_inputs

ONNX_DIR = "onnx"
FP32_GRAPH = "model.onnx"
INT8_GRAPH = "model_quantized.onnx"
GRAPHS = {"onnx": FP32_GRAPH, "onnx-quantized": INT8_GRAPH}  # backend name -> file in ONNX_DIR
ABS_TOLERANCE = 1e-4  # |graph - torch| accepted on any output, plus REL_TOLERANCE of the output's largest |value|
REL_TOLERANCE = 1e-5  # five times the largest float32 rounding measured (see the module's docstring)


def export_onnx(model: PreTrainedModel, folder: str | Path, quantize: bool = True) -> dict[str, Any]:
    """Write ``folder/onnx/model.onnx`` (fp32) and ``model_quantized.onnx`` (dynamic int8, per output channel).

    The fp32 graph is checked against the model (in fp32) on other shapes than traced, one row padded: a graph whose
    outputs differ by more than the tolerance (see the module's docstring) is deleted and the export refused.
    Returns the paths, sizes and the largest difference.
    """
    out = Path(folder) / ONNX_DIR
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / FP32_GRAPH
    model = _in_fp32(model).eval()
    names = input_names(model)
    example = random_inputs(names, model.config.vocab_size, batch=2, seq_len=16)
    with torch.no_grad():
        output_names = [key for key, value in model(**example).items() if isinstance(value, torch.Tensor)]
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with _eager_attention(model), _quiet_exporter():
        program = torch.onnx.export(
            model,
            (),
            kwargs=example,
            input_names=names,
            output_names=output_names,
            dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
            dynamo=True,
            verbose=False,
        )
    program.save(str(fp32))
    errors = output_errors(model, fp32)
    for name, (error, scale) in errors.items():
        allowed = ABS_TOLERANCE + REL_TOLERANCE * scale
        if not error <= allowed:
            fp32.unlink()
            raise UsageError(
                f"{fp32}: output {name} of the graph differs from {type(model).__name__} in torch by {error:.2e}, more "
                f"than the {allowed:.2e} allowed ({ABS_TOLERANCE:g} + {REL_TOLERANCE:g} x max|{name}| {scale:.3g}): "
                "graph deleted"
            )
    error = max(error for error, _ in errors.values())
    report = {"onnx": str(fp32), "onnx_bytes": fp32.stat().st_size, "onnx_max_abs_error": error}
    if quantize:
        int8 = quantize_graph(fp32, out / INT8_GRAPH)
        report |= {"onnx_quantized": str(int8), "onnx_quantized_bytes": int8.stat().st_size}
    return report


def model_card_section(report: dict[str, Any]) -> list[str]:
    """Markdown lines for the model card: the graphs, their sizes, and how to open them as fineprune does."""
    from fineprune.onnx_inference import SLOW_FUSIONS

    lines = ["## ONNX", "", "| graph | size |", "| --- | --- |"]
    lines.append(f"| `{ONNX_DIR}/{FP32_GRAPH}` (fp32) | {report['onnx_bytes'] / 1e6:.1f} MB |")
    if "onnx_quantized_bytes" in report:
        lines.append(
            f"| `{ONNX_DIR}/{INT8_GRAPH}` (dynamic int8, per output channel) | "
            f"{report['onnx_quantized_bytes'] / 1e6:.1f} MB |"
        )
    lines += [
        "",
        f"The fp32 graph gives the torch model's outputs within {report['onnx_max_abs_error']:.1e}. On CPU, open it "
        "as fineprune's `eval --onnx` and `bench` do, without the fusions that measured slower there:",
        "",
        "```python",
        "import onnxruntime",
        f'session = onnxruntime.InferenceSession("{ONNX_DIR}/{INT8_GRAPH}", providers=["CPUExecutionProvider"],',
        f"                                       disabled_optimizers={list(SLOW_FUSIONS)!r})",
        "```",
        "",
    ]
    return lines


def quantize_graph(fp32: Path, int8: Path) -> Path:
    """Dynamic quantization: int8 weights per output channel, activations quantized on the fly (uint8)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Its advice to pre-process first does not apply: the symbolic shape inference fails on torch.export graphs.
    with _without_log_records("root", "Please consider to run pre-processing"):
        quantize_dynamic(fp32, int8, per_channel=True, weight_type=QuantType.QInt8)
    return int8


def output_errors(model: PreTrainedModel, graph: Path) -> dict[str, tuple[float, float]]:
    """Per output: (max|graph - torch|, max|torch|), on 3 rows of 11 tokens (not the traced 2 x 16), one row
    padded."""
    from fineprune.onnx_inference import open_session

    session = open_session(graph)
    inputs = random_inputs([i.name for i in session.get_inputs()], model.config.vocab_size, 3, 11, seed=1, pad_last=4)
    graph_outputs = session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})
    with torch.no_grad():
        torch_outputs = model(**inputs)
    names = [o.name for o in session.get_outputs()]
    return {
        name: (float(np.abs(got - torch_outputs[name].numpy()).max()), float(torch_outputs[name].abs().max()))
        for name, got in zip(names, graph_outputs, strict=True)
    }


def _in_fp32(model: PreTrainedModel) -> PreTrainedModel:
    """The model itself when all its floating tensors are fp32, else an fp32 copy (the caller's model unchanged)."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.dtype == torch.float32 for t in tensors if t.is_floating_point()):
        return model
    return copy.deepcopy(model).to(torch.float32)


@contextmanager
def _eager_attention(model: PreTrainedModel) -> Iterator[None]:
    """Trace eager attention (see the module's docstring), and give the model back as it came."""
    before = getattr(model.config, "_attn_implementation", None)
    if before in (None, "eager"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's chatter that says nothing about this export: optional torchvision ops, one axis name that
    several inputs share."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
        with _without_log_records("torch.onnx._internal.exporter._registration", "torchvision is not installed"):
            yield


@contextmanager
def _without_log_records(logger: str, text: str) -> Iterator[None]:
    """Drop the records of one logger that contain ``text``, for the duration."""

    def keep(record: logging.LogRecord) -> bool:
        return text not in record.getMessage()

    logging.getLogger(logger).addFilter(keep)
    try:
        yield
    finally:
        logging.getLogger(logger).removeFilter(keep)
