"""A compact fine-pruned encoder: a stock transformers model whose layers keep only some attention heads and FFN
neurons, each layer its own number.

Every compact folder carries this module as ``modeling_fineprune_compact.py``, with :mod:`fineprune.layouts`
written in place of its import (:mod:`fineprune.export.modeling_file`), so the folder needs only torch and
transformers: it loads on a machine without fineprune, with ``AutoModelFor*.from_pretrained(DIR,
trust_remote_code=True)``. Nothing here is written for one architecture. The model is built by the stock class, then,
in every encoder layer, the six Linear layers (found by type, order and shape, not by name) get their compact shapes
from ``config.json`` and the attention module its head count; the weights are loaded afterwards as usual. A layer
that keeps no head has no attention to compute: its attention module becomes :class:`NoHeads` and its attention
output :class:`BiasOnly`, what that Linear gives when every head's columns are zero.

``config.json`` holds ``fineprune_compact``: one entry per encoder layer, ``{"heads": [original indices of the
heads kept], "ffn_width": neurons kept}``, and ``auto_map`` names ``Compact<StockClass>`` (for example
``CompactBertForSequenceClassification``), a subclass of the stock class that this module makes on first use.
"""

from __future__ import annotations

import inspect

import torch
import transformers
from torch import nn

from fineprune.layouts import (
    COMPACT_KEY,
    HEAD_COUNT_ATTRIBUTES,
    BlockLinears,
    attention_module,
    block_linears,
    config_heads,
    encoder_layers,
)

CLASS_PREFIX = "Compact"


def _put(block: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` where ``path`` (relative to the block) is."""
    parent, _, name = path.rpartition(".")
    setattr(block.get_submodule(parent), name, module)


def _replace(block: nn.Module, path: str, in_features: int, out_features: int) -> None:
    """Put an uninitialised Linear of the given shape where ``path`` is (same bias, device and dtype)."""
    old = block.get_submodule(path)
    new = nn.Linear(
        in_features, out_features, bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype
    )
    _put(block, path, new)


def _select_bias_heads(attention: nn.Module, heads: list[int], total_heads: int) -> None:
    """If the attention takes a ``position_bias`` of all the stock heads (MPNet computes one relative-position bias
    for every layer), give this layer only the kept heads' slices, by their original indices."""
    parameters = [p for p in inspect.signature(attention.forward).parameters if p != "self"]
    if "position_bias" not in parameters:
        return
    position = parameters.index("position_bias")

    def keep_heads(module, args, kwargs):
        def select(bias):
            if isinstance(bias, torch.Tensor) and bias.dim() == 4 and bias.shape[1] == total_heads:
                return bias.index_select(1, torch.tensor(heads, device=bias.device))
            return bias

        if "position_bias" in kwargs:
            kwargs["position_bias"] = select(kwargs["position_bias"])
        elif len(args) > position:
            args = (*args[:position], select(args[position]), *args[position + 1 :])
        return args, kwargs

    attention.register_forward_pre_hook(keep_heads, with_kwargs=True)


class BiasOnly(nn.Module):
    """A Linear whose weights are all zero: its bias (zeros if it has none) at every position of its input."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.bias is None:
            self.register_buffer("bias", linear.weight.new_zeros(linear.out_features), persistent=False)
        else:
            self.bias = nn.Parameter(torch.empty_like(linear.bias))  # loaded with the other weights

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(*hidden_states.shape[:-1], -1)


class NoHeads(nn.Module):
    """The attention module of a layer that keeps no head: no query, key or value. It gives back ``(output, None)``
    as the stock module gives (output, attention weights): its own attention output (a BiasOnly) when it owns it,
    else its input, which the attention output outside it (a BiasOnly) reads only the shape of."""

    def __init__(self, first_argument: str, attention_output: str | None):
        super().__init__()
        self.first_argument, self.attention_output = first_argument, attention_output

    def forward(self, *args, **kwargs) -> tuple[torch.Tensor, None]:
        hidden_states = args[0] if args else kwargs[self.first_argument]
        if self.attention_output is None:
            return hidden_states, None
        return self.get_submodule(self.attention_output)(hidden_states), None


def _drop_attention(block: nn.Module, linears: BlockLinears) -> None:
    """Replace the attention of a block that keeps no head by NoHeads, and its attention output by BiasOnly."""
    owner, _, _ = linears.query.rpartition(".")
    first_argument = next(iter(inspect.signature(block.get_submodule(owner).forward).parameters))
    inside = linears.attention_output.startswith(owner + ".")
    bias_only = BiasOnly(block.get_submodule(linears.attention_output))
    _put(block, owner, NoHeads(first_argument, linears.attention_output[len(owner) + 1 :] if inside else None))
    _put(block, linears.attention_output, bias_only)


def shrink_block(block: nn.Module, heads: list[int], ffn_width: int, total_heads: int) -> None:
    """Give one block its compact shapes: ``len(heads)`` heads (original indices ``heads``; none: no attention) and
    ``ffn_width`` neurons. The Linear layers are replaced by uninitialised ones; the caller loads their weights."""
    linears = block_linears(block)
    if linears is None:
        raise ValueError(f"{type(block).__name__} is not an encoder block with six Linear layers")
    ffn_in = block.get_submodule(linears.ffn_in)
    _replace(block, linears.ffn_in, ffn_in.in_features, ffn_width)
    _replace(block, linears.ffn_out, ffn_width, ffn_in.in_features)
    if not heads:
        _drop_attention(block, linears)
        return
    query = block.get_submodule(linears.query)
    hidden, head_dim = query.in_features, query.out_features // total_heads
    width = len(heads) * head_dim
    for path in (linears.query, linears.key, linears.value):
        _replace(block, path, hidden, width)
    _replace(block, linears.attention_output, width, hidden)
    attention = attention_module(block, linears)
    for name in HEAD_COUNT_ATTRIBUTES:
        if hasattr(attention, name):
            setattr(attention, name, len(heads))
    if hasattr(attention, "all_head_size"):
        attention.all_head_size = width
    if len(heads) < total_heads:
        _select_bias_heads(attention, heads, total_heads)


def shrink_model(model: nn.Module, config) -> None:
    """Give every encoder layer the shapes ``config.fineprune_compact`` lists."""
    plan = getattr(config, COMPACT_KEY, None)
    if plan is None:
        return
    layers = encoder_layers(model)
    if len(plan) != len(layers):
        raise ValueError(f"config {COMPACT_KEY} lists {len(plan)} layers, the model has {len(layers)}")
    total_heads = config_heads(config)
    for block, layer in zip(layers, plan, strict=True):
        shrink_block(block, list(layer["heads"]), int(layer["ffn_width"]), total_heads)


def compact_class(base: type) -> type:
    """``Compact<base>``: the stock class ``base`` that shrinks its layers right after building them."""

    def __init__(self, config, *args, **kwargs):
        base.__init__(self, config, *args, **kwargs)
        shrink_model(self, config)

    return type(CLASS_PREFIX + base.__name__, (base,), {"__init__": __init__, "__module__": __name__})


def __getattr__(name: str) -> type:
    """``Compact<StockClass>`` for any transformers model class, made once on first use (``auto_map`` names it)."""
    stock = getattr(transformers, name[len(CLASS_PREFIX) :], None) if name.startswith(CLASS_PREFIX) else None
    if not (isinstance(stock, type) and issubclass(stock, transformers.PreTrainedModel)):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    made = compact_class(stock)
    globals()[name] = made
    return made
