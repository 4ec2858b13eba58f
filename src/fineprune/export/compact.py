"""Compact export: the heads and FFN neurons a pruned model left empty are physically removed.

A head is empty when its rows of query, key and value and its columns of the attention output are all zero; a neuron
when its row of FFN-in and its column of FFN-out are. Such a group adds nothing to the layer's output whatever its
biases (its output columns are zero), so removing it changes no logit beyond float rounding; no other group is
removed. A layer whose heads are all empty loses its attention: what it adds to the residual stream is then the
attention output's bias alone (``NoHeads`` and ``BiasOnly`` in :mod:`fineprune.export.compact_modeling`). A layer
whose neurons are all empty keeps its first one, all zeros, so that its FFN still runs in the stock code.

The folder holds the stock weights of the smaller shapes, a ``config.json`` with the per-layer head indices and FFN
widths (``fineprune_compact``) and an ``auto_map``, and ``modeling_fineprune_compact.py``
(:mod:`fineprune.export.modeling_file`): ``AutoModelFor*.from_pretrained(DIR, trust_remote_code=True)`` loads it
without fineprune.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import transformers
from torch import Tensor, nn
from transformers import PreTrainedModel

from fineprune.errors import UsageError
from fineprune.export import compact_modeling
from fineprune.export.modeling_file import MODELING_FILE, write_modeling_file
from fineprune.layouts import COMPACT_KEY, block_linears, config_heads, encoder_layers
from fineprune.pruning.attach import find_pruner


def _nonzero_groups(weight: Tensor, axis: int, width: int) -> Tensor:
    """Per group of ``width`` consecutive rows (axis 0) or columns (axis 1): whether any weight is nonzero."""
    nonzero = weight != 0
    if axis == 0:
        return nonzero.reshape(-1, width * weight.shape[1]).any(1)
    return nonzero.reshape(weight.shape[0], -1, width).any(2).any(0)


def _kept(nonempty: Tensor) -> list[int]:
    """Indices of the nonempty groups."""
    return nonempty.nonzero().flatten().tolist()


def compact_plan(model: nn.Module) -> list[dict]:
    """Per encoder layer, the groups that stay: ``{"heads": [head indices], "neurons": [FFN neuron indices]}``
    (heads possibly none; neurons at least the first)."""
    heads = config_heads(model.config)
    plan = []
    for number, block in enumerate(encoder_layers(model)):
        paths = block_linears(block)
        if paths is None:
            raise UsageError(f"encoder layer {number} ({type(block).__name__}) has no six Linear layers to compact")
        q, k, v, o, ffn_in, ffn_out = (block.get_submodule(p).weight for p in paths)
        head_dim = q.shape[0] // heads
        nonempty_heads = _nonzero_groups(o, 1, head_dim)
        for projection in (q, k, v):
            nonempty_heads |= _nonzero_groups(projection, 0, head_dim)
        nonempty_neurons = _nonzero_groups(ffn_in, 0, 1) | _nonzero_groups(ffn_out, 1, 1)
        plan.append({"heads": _kept(nonempty_heads), "neurons": _kept(nonempty_neurons) or [0]})
    return plan


def _rows(groups: list[int], width: int) -> Tensor:
    return torch.tensor([g * width + i for g in groups for i in range(width)], dtype=torch.long)


def _compact_state(model: nn.Module, plan: list[dict]) -> dict[str, Tensor]:
    """The model's state dict with every layer's six Linear layers cut to the plan's heads and neurons."""
    state = model.state_dict()
    heads = config_heads(model.config)
    prefixes = {id(m): name for name, m in model.named_modules()}
    for block, layer in zip(encoder_layers(model), plan, strict=True):
        paths = block_linears(block)
        prefix = prefixes[id(block)]
        head_dim = block.get_submodule(paths.query).out_features // heads
        head_rows, neurons = _rows(layer["heads"], head_dim), torch.tensor(layer["neurons"], dtype=torch.long)
        cuts = [(paths.ffn_in, neurons, 0), (paths.ffn_out, neurons, 1)]
        if layer["heads"]:
            cuts += [(p, head_rows, 0) for p in paths[:3]] + [(paths.attention_output, head_rows, 1)]
        else:  # no attention: only the attention output's bias stays
            gone = [f"{prefix}.{p}.{kind}" for p in paths[:3] for kind in ("weight", "bias")]
            for key in [*gone, f"{prefix}.{paths.attention_output}.weight"]:
                state.pop(key, None)
        for path, index, axis in cuts:
            key = f"{prefix}.{path}"
            state[f"{key}.weight"] = state[f"{key}.weight"].index_select(axis, index)
            if axis == 0 and f"{key}.bias" in state:
                state[f"{key}.bias"] = state[f"{key}.bias"].index_select(0, index)
    return state


def auto_map(model: PreTrainedModel) -> dict[str, str]:
    """``auto_map`` entries: the base model under AutoModel and the model with its head under its own Auto class."""
    module = Path(MODELING_FILE).stem
    entries = {"AutoModel": f"{module}.{compact_modeling.CLASS_PREFIX}{type(model.base_model).__name__}"}
    name = type(model).__name__
    head = f"AutoModel{name[name.find('For') :]}" if "For" in name else None
    if head is not None and hasattr(transformers, head):
        entries[head] = f"{module}.{compact_modeling.CLASS_PREFIX}{name}"
    return entries


def compact(model: PreTrainedModel) -> PreTrainedModel:
    """A new model of the class ``Compact<type(model)>`` without the heads and neurons ``model`` left empty.

    ``model`` is a stock model: a baked pruned model (or any fine-tuned encoder, from which nothing is removed unless
    it has empty groups). It is not changed.
    """
    if find_pruner(model) is not None:
        raise UsageError("the compact export needs the masks baked in (fineprune.bake) before removing empty groups")
    if getattr(model.config, COMPACT_KEY, None) is not None:
        raise UsageError("this model is already compact")
    plan = compact_plan(model)
    config = copy.deepcopy(model.config)
    heads, layers = config_heads(model.config), []
    for kept, block in zip(plan, encoder_layers(model), strict=True):
        paths = block_linears(block)
        query, ffn_in = block.get_submodule(paths.query), block.get_submodule(paths.ffn_in)
        layers.append(
            {
                "heads": kept["heads"],
                "head_dim": query.out_features // heads,  # a layer that keeps no head says it too
                "ffn_width": len(kept["neurons"]),
                "stock_ffn_width": ffn_in.out_features,
            }
        )
    setattr(config, COMPACT_KEY, layers)
    config.auto_map = auto_map(model)
    smaller = compact_modeling.compact_class(type(model))(config)
    smaller.load_state_dict(_compact_state(model, plan), strict=True)
    return smaller.to(next(model.parameters()).device).eval()


def summary(model: PreTrainedModel, compacted: PreTrainedModel) -> dict:
    """What the compaction removed: parameters, heads and FFN neurons, overall and per layer."""
    heads, layers = config_heads(model.config), getattr(compacted.config, COMPACT_KEY)
    return {
        "parameters": sum(p.numel() for p in compacted.parameters()),
        "parameters_before": sum(p.numel() for p in model.parameters()),
        "heads": sum(len(layer["heads"]) for layer in layers),
        "heads_before": heads * len(layers),
        "ffn_neurons": sum(layer["ffn_width"] for layer in layers),
        "ffn_neurons_before": sum(layer["stock_ffn_width"] for layer in layers),
        "layers": [
            {
                "heads": len(layer["heads"]),
                "heads_before": heads,
                "ffn_width": layer["ffn_width"],
                "ffn_before": layer["stock_ffn_width"],
            }
            for layer in layers
        ],
    }


def save_compact(compacted: PreTrainedModel, out: Path) -> None:
    """Write a compact model and its modeling file to ``out``: a folder that loads without fineprune."""
    compacted.save_pretrained(out)
    write_modeling_file(out)


def model_card_section(report: dict, auto_class: str, seq_len: int) -> list[str]:
    """Markdown lines for the model card: how to load the compact model (with ``auto_class``, its task's Auto class),
    what it kept, and how to time it (at ``seq_len`` tokens, its task's window)."""
    lines = [
        "## Compact model",
        "",
        "The empty attention heads and FFN neurons are removed: load it with "
        f"`{auto_class}.from_pretrained(DIR, trust_remote_code=True)`; its code, `modeling_fineprune_compact.py`, "
        "needs only torch and transformers.",
        "",
        f"**Parameters: {report['parameters']:,} (before removal: {report['parameters_before']:,}); "
        f"heads {report['heads']} of {report['heads_before']}; "
        f"FFN neurons {report['ffn_neurons']:,} of {report['ffn_neurons_before']:,}**",
        "",
        "| layer | heads | FFN width |",
        "| --- | --- | --- |",
    ]
    for number, layer in enumerate(report["layers"]):
        lines.append(
            f"| {number} | {layer['heads']} / {layer['heads_before']} | {layer['ffn_width']} / {layer['ffn_before']} |"
        )
    lines += [
        "",
        "## Speed",
        "",
    ]
    if "speedup_batch1" in report:
        lines += [
            f"**{report['speedup_batch1']:.2f}x faster** than the same model before removal, measured at export: "
            "torch fp32, batch 1, 128 tokens, 1 thread, median CPU time of 10 calls each, taking turns.",
            "",
        ]
    lines += [
        "Measure it on the target machine against the dense model, e.g. "
        f"`fineprune bench DENSE_DIR DIR --batch-sizes 1,32 --seq-len {seq_len}` (the first folder is the reference).",
        "",
    ]
    return lines
