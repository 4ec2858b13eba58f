"""Model layouts: for each family, the encoder's layers, the six Linear layers of a layer and the head count that
fineprune.layouts finds are the ones the family's modeling code names."""

from __future__ import annotations

import pytest
from conftest import ARCHS, tiny_model
from torch import nn

from fineprune.layouts import BlockLinears, attention_module, block_linears, config_heads, encoder_layers

BERT = BlockLinears(
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
EXPECTED = {  # family: (path of the layers, the layer's linears, the attention module's class)
    "bert": ("bert.encoder.layer", BERT, "BertSelfAttention"),
    "roberta": ("roberta.encoder.layer", BERT, "RobertaSelfAttention"),
    "mpnet": (
        "mpnet.encoder.layer",
        BlockLinears("attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o", *BERT[4:]),
        "MPNetSelfAttention",
    ),
    "distilbert": (
        "distilbert.transformer.layer",
        BlockLinears(
            "attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "ffn.lin1", "ffn.lin2"
        ),
        "DistilBertSelfAttention",
    ),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_each_family_reads_as_its_modeling_code_names_it(arch):
    model = tiny_model(arch)
    layers_path, linears, attention_class = EXPECTED[arch]
    assert encoder_layers(model) is model.get_submodule(layers_path)
    for block in encoder_layers(model):
        assert block_linears(block) == linears
        assert type(attention_module(block, linears)).__name__.endswith(attention_class)
    assert config_heads(model.config) == 4  # the tiny models' head count, named n_heads in DistilBERT


def test_what_is_not_an_encoder_is_said():
    assert block_linears(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))) is None
    with pytest.raises(ValueError, match="no stack of layers"):
        encoder_layers(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="names no number of attention heads"):
        config_heads(object())
