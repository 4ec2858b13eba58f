"""The inputs an encoder takes, and random ones of a given shape: what the ONNX export traces and checks with and
what the timings run on."""

from __future__ import annotations

import inspect

import torch
from transformers import PreTrainedModel


def input_names(model: PreTrainedModel) -> list[str]:
    """input_ids and attention_mask, and token_type_ids where the model has more than one segment embedding."""
    names = ["input_ids", "attention_mask"]
    takes_segments = "token_type_ids" in inspect.signature(model.forward).parameters
    if takes_segments and getattr(model.config, "type_vocab_size", 1) > 1:
        names.append("token_type_ids")
    return names


def random_inputs(
    names: list[str], vocab_size: int, batch: int, seq_len: int, seed: int = 0, pad_last: int = 0
) -> dict[str, torch.Tensor]:
    """Random token ids, an attention mask of ones (the last row's final ``pad_last`` tokens masked), no segments."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, seq_len), generator=generator)
    mask = torch.ones_like(ids)
    if pad_last:
        mask[-1, -pad_last:] = 0
    tensors = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {name: tensors[name] for name in names}
