"""The model card of an export: what was pruned, how, how much is left (overall and per layer), how well it does, and
the sections of the formats written (compact, compressed, ONNX)."""

from __future__ import annotations

from typing import Any

from fineprune.config import RunConfig, dump_config
from fineprune.export.compact import model_card_section as compact_section
from fineprune.export.compressed import COMPRESSED_NOTE, size_section
from fineprune.export.onnx import model_card_section as onnx_section
from fineprune.tasks import task_class
from fineprune.tasks.presets import resolve


def model_card(
    config: RunConfig,
    report: dict,
    metrics: dict,
    compact: dict | None = None,
    compressed: dict | None = None,
    graphs: dict[str, Any] | None = None,
) -> str:
    """A Hugging Face model card: what was pruned, how, how much is left (overall and per layer), how well it does;
    for a compact export (``compact``: its summary) what was removed and how to load it; for a compressed one
    (``compressed``: its sizes) how it is stored and loaded; for ONNX graphs (``graphs``: their report) their sizes
    and how to open them."""
    p = config.pruning
    selection = f"{p.scope} selection{' of heads and FFN neurons' if p.structure == 'heads_neurons' else ''}"
    loading = (
        "The masks are baked in and the empty heads and FFN neurons removed (see Compact model below)."
        if compact
        else COMPRESSED_NOTE
        if compressed
        else "The masks are baked in: this is a stock transformers model, zeros where weights were pruned; "
        "it loads with `AutoModel*.from_pretrained` and needs no fineprune."
    )
    lines = [
        "---",
        # A compressed folder is not a transformers folder until `fineprune decompress` makes it one.
        f"library_name: {'fineprune' if compressed else 'transformers'}",
        "tags: [fineprune, pruning, movement-pruning]",
        "---",
        f"# {config.task.name} model fine-pruned with fineprune",
        "",
        f"Fine-pruned from `{config.model.name_or_path}` on `{config.task.name}` with **{p.method}** pruning "
        f"({selection}){' and distillation from `' + config.distillation.teacher + '`' if config.distillation else ''}.",
        loading,
        "",
        f"**Remaining encoder linear weights: {report['remaining']:,} of {report['total']:,} "
        f"({100 * report['density']:.2f}%)**",
        "",
        "| metric | value |",
        "| --- | --- |",
        *[f"| {k} | {v:.4f} |" for k, v in metrics.items()],
        "",
        "## Density per layer",
        "",
        "| layer | attention | ffn | all |",
        "| --- | --- | --- | --- |",
    ]
    for layer, density in report["layers"].items():
        kinds = {
            kind: [m for m in report["matrices"].values() if m["layer"] == layer and m["kind"] == kind]
            for kind in ("attention", "ffn")
        }
        cells = [
            f"{100 * sum(m['remaining'] for m in ms) / sum(m['total'] for m in ms):.2f}%" if ms else "-"
            for ms in kinds.values()
        ]
        lines.append(f"| {layer} | {cells[0]} | {cells[1]} | {100 * density:.2f}% |")
    lines.append("")
    if compact:
        task = resolve(config.task)[0]
        lines += compact_section(compact, task_class(task).auto_class.__name__, task.max_seq_length)
    if compressed:
        lines += size_section(compressed)
    lines += ["## Configuration", "", "```yaml", dump_config(config).rstrip(), "```", ""]
    if graphs:
        lines += onnx_section(graphs)
    return "\n".join(lines)
