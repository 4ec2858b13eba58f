"""Model layouts: where an encoder keeps its layers, which Linear layers of a layer form its attention and its FFN,
and how many attention heads it has. The pruning engine (whole heads and neurons) and the compact export (removing
them) both read encoders through these functions, so they agree on what a head and a neuron are.

Nothing is written per architecture: a layer's six Linear layers are found by type, order and shape, which gives
these paths (relative to the layer) in the families fineprune is tested on:

==========  ===================================  ==========================  ====================  ===============
family      query, key, value                    attention output            FFN in, FFN out       head count
==========  ===================================  ==========================  ====================  ===============
BERT        attention.self.query / key / value   attention.output.dense      intermediate.dense,   num_attention_
RoBERTa                                                                      output.dense          heads
MPNet       attention.attn.q / k / v             attention.attn.o            intermediate.dense,   num_attention_
                                                                             output.dense          heads
DistilBERT  attention.q_lin / k_lin / v_lin      attention.out_lin           ffn.lin1, ffn.lin2    n_heads
==========  ===================================  ==========================  ====================  ===============

This module imports only torch: the compact export writes it into the modeling file of every compact folder, which
loads without fineprune.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

COMPACT_KEY = "fineprune_compact"  # config.json of a compact model: per layer, the heads kept and the FFN width
HEAD_COUNT_ATTRIBUTES = ("num_attention_heads", "n_heads", "num_heads")  # in configs and attention modules


class BlockLinears(NamedTuple):
    """The six Linear layers of one transformer block, as paths relative to the block, in the order the block
    registers them: query, key, value (hidden -> heads * head_dim), attention output (back to hidden), FFN in
    (hidden -> width) and FFN out (width -> hidden)."""

    query: str
    key: str
    value: str
    attention_output: str
    ffn_in: str
    ffn_out: str


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's stack of blocks: the largest ``nn.ModuleList`` (by parameter count) of the base model."""
    base = getattr(model, "base_model", model)
    stacks = [m for m in base.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not stacks:
        raise ValueError(f"{type(model).__name__} has no stack of layers (nn.ModuleList)")
    return max(stacks, key=lambda m: sum(p.numel() for p in m.parameters()))


def block_linears(block: nn.Module) -> BlockLinears | None:
    """The block's six Linear layers, or None when the block is not an encoder block of that shape.

    Query, key and value share their shape; their order does not matter to what a head is (its rows in all three).
    """
    named = [(name, m) for name, m in block.named_modules() if isinstance(m, nn.Linear)]
    if len(named) != 6:
        return None
    (_, q), (_, k), (_, v), (_, o), (_, f_in), (_, f_out) = named
    hidden, heads_width, width = q.in_features, q.out_features, f_in.out_features
    shapes_fit = (
        all((m.in_features, m.out_features) == (hidden, heads_width) for m in (k, v))
        and (o.in_features, o.out_features) == (heads_width, hidden)
        and f_in.in_features == hidden
        and (f_out.in_features, f_out.out_features) == (width, hidden)
    )
    return BlockLinears(*(name for name, _ in named)) if shapes_fit else None


def attention_module(block: nn.Module, linears: BlockLinears) -> nn.Module:
    """The module that owns query, key and value: the one that reads the head count in its forward."""
    parent, _, _ = linears.query.rpartition(".")
    return block.get_submodule(parent)


def config_heads(config) -> int:
    """The stock number of attention heads per layer (``num_attention_heads``; ``n_heads`` in DistilBERT)."""
    for name in HEAD_COUNT_ATTRIBUTES:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"{type(config).__name__} names no number of attention heads")
