"""``fineprune export``: a run folder to an export folder in one trip down: load the pruned run, bake its masks,
write the chosen format (:mod:`~fineprune.export.compact`, :mod:`~fineprune.export.compressed`, a stock folder; and
:mod:`~fineprune.export.onnx` graphs beside it), then the model card (:mod:`~fineprune.export.card`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fineprune.config import load_config
from fineprune.errors import UsageError
from fineprune.export.card import model_card
from fineprune.export.compact import compact as compact_model
from fineprune.export.compact import save_compact
from fineprune.export.compact import summary as compact_summary
from fineprune.export.compressed import OTHER_DTYPES, export_compressed
from fineprune.export.onnx import ONNX_DIR, export_onnx
from fineprune.loading import (
    CONFIG_FILE,
    SUMMARY_FILE,
    find_config,
    has_model,
    load_stock_model,
    load_tokenizer,
    may_run_code,
)
from fineprune.outputs import check_complete, writing
from fineprune.pruning import bake, is_pruned_folder, load_pruned, sparsity
from fineprune.timing import torch_speedup


def export(
    run_dir: str | Path,
    out: str | Path | None,
    bake_masks: bool = True,
    overwrite: bool = False,
    onnx: bool = False,
    compact: bool = False,
    compress: bool = False,
    other_dtype: str | None = None,
    zstd: bool = True,
    trust_remote_code: bool = False,
) -> dict:
    """Write a stock transformers folder (config, safetensors, tokenizer, model card) of a pruned run.

    ``compress`` stores the weights in fineprune's compressed format instead (:mod:`fineprune.export.compressed`:
    pruned weights as bitmask + int8, the other matrices in ``other_dtype``, int8 or fp16; ``zstd`` over each part).

    ``compact`` removes the heads and FFN neurons the masks left empty (:mod:`fineprune.export.compact`): the folder
    then loads with ``trust_remote_code=True``, without fineprune.

    ``onnx`` adds its ONNX graphs (fp32, int8) in ``out/onnx``; for a folder that already holds a stock model (a
    dense run, an export) that is all it does: into the folder itself, or into a copy of the model at ``out``.

    A folder whose config names code of its own is refused unless it is fineprune's compact modeling file or
    ``trust_remote_code`` is given (:func:`~fineprune.loading.may_run_code`).
    """
    run_dir = Path(run_dir)
    check_complete(run_dir)
    if not has_model(run_dir):
        raise UsageError(f"{run_dir}: no trained model here (has the run finished?)")
    may_run_code(run_dir, trust_remote_code)
    if onnx and not bake_masks:
        raise UsageError("--onnx needs the masks baked: drop --keep-scores")
    if compact and not bake_masks:
        raise UsageError("--compact removes what the baked masks left empty: drop --keep-scores")
    if other_dtype is not None and not compress:
        raise UsageError("--other-dtype: only with --compress")
    if other_dtype not in (None, *OTHER_DTYPES):
        raise UsageError(f"--other-dtype {other_dtype}: expected one of {', '.join(OTHER_DTYPES)}")
    if compress and not bake_masks:
        raise UsageError("--compress needs the masks baked: drop --keep-scores")
    if compress and (compact or onnx):
        raise UsageError("--compress writes its own format: export --compact or --onnx to another folder")
    if not is_pruned_folder(run_dir):
        if onnx:
            return _export_stock_onnx(run_dir, Path(out) if out else None, overwrite, trust_remote_code)
        raise UsageError(f"{run_dir}: holds no pruned model (a `method: none` run?): there are no masks to bake")
    if out is None:
        raise UsageError(f"--out: required to export the pruned run {run_dir}")
    out = Path(out)
    if out.resolve() == run_dir.resolve() or out.resolve() in run_dir.resolve().parents:
        raise UsageError(f"--out {out} holds the run {run_dir} itself: export to another folder")
    config_path = find_config(run_dir)
    with writing(out, overwrite) as staging:  # moved to `out` only once complete; an earlier `out` stays till then
        model = load_pruned(run_dir)
        report = sparsity(model)
        if bake_masks:
            model = bake(model)
        removal = None
        if compact:
            compacted = compact_model(model)
            removal = compact_summary(model, compacted) | {"speedup_batch1": torch_speedup(model, compacted)}
            model = compacted
        storage = None
        if removal is not None:
            save_compact(model, staging)
        elif compress:
            pruned = [f"{name}.weight" for name in report["matrices"]]
            storage = export_compressed(model, staging, pruned, other_dtype or "int8", zstd)
        else:
            model.save_pretrained(staging)
        load_tokenizer(run_dir, trust_remote_code).save_pretrained(staging)
        shutil.copy(config_path, staging / CONFIG_FILE)
        summary_path = run_dir / SUMMARY_FILE
        metrics = json.loads(summary_path.read_text())["metrics"] if summary_path.is_file() else {}
        graphs = export_onnx(model, staging) if onnx else {}
        card = model_card(load_config(config_path), report, metrics, removal, storage, graphs)
        (staging / "README.md").write_text(card)
        size = sum(f.stat().st_size for f in staging.glob("*.safetensors"))
    result = {"out": str(out), "density": report["density"], "safetensors_bytes": size, "metrics": metrics}
    if removal is not None:
        result["compact"] = {k: v for k, v in removal.items() if k != "layers"}
    if storage is not None:
        result |= {k: v for k, v in storage.items() if k != "file"}
    return result | _graphs_in(out / ONNX_DIR, graphs)


def _export_stock_onnx(folder: Path, out: Path | None, overwrite: bool, trust_remote_code: bool) -> dict:
    """ONNX graphs of a stock model folder, in ``folder/onnx``, or in ``out/onnx`` beside a copy of the model."""
    if out is not None and out.resolve() == folder.resolve():
        out = None
    with writing(folder / ONNX_DIR if out is None else out, overwrite) as staging:
        model = load_stock_model(folder, trust_remote_code)
        if out is not None:
            model.save_pretrained(staging)
            if (folder / "tokenizer_config.json").is_file():
                load_tokenizer(folder, trust_remote_code).save_pretrained(staging)
            if (folder / CONFIG_FILE).is_file():
                shutil.copy(folder / CONFIG_FILE, staging / CONFIG_FILE)
        graphs = export_onnx(model, staging)
        if out is None:  # the staging folder stands for folder/onnx itself: the graphs go up out of its onnx/
            for graph in (staging / ONNX_DIR).iterdir():
                graph.rename(staging / graph.name)
            (staging / ONNX_DIR).rmdir()
    target = out or folder
    return {"out": str(target)} | _graphs_in(target / ONNX_DIR, graphs)


def _graphs_in(graph_dir: Path, graphs: dict) -> dict:
    """export_onnx's report with the graphs' paths where they are now (it wrote them into the staging folder)."""
    return graphs | {
        key: str(graph_dir / Path(graphs[key]).name) for key in ("onnx", "onnx_quantized") if key in graphs
    }
