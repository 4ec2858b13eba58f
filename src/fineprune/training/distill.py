"""Knowledge-distillation losses: the logits' T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), batch-mean, and
the hidden states' per-layer mean squared error (CoFi's and oBERT's recipes)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Distillation loss of one head; the T^2 factor keeps its gradient scale independent of T (Hinton et al.)."""
    t = temperature
    student = F.log_softmax(student_logits / t, dim=-1)
    teacher = F.softmax(teacher_logits / t, dim=-1)
    return F.kl_div(student, teacher, reduction="batchmean") * t * t


def distillation_loss(student_outputs, teacher_outputs, temperature: float) -> Tensor:
    """Classification: the logits' loss. Question answering: the mean of the start- and end-logit losses."""
    if hasattr(student_outputs, "start_logits"):
        start = kd_loss(student_outputs.start_logits, teacher_outputs.start_logits, temperature)
        end = kd_loss(student_outputs.end_logits, teacher_outputs.end_logits, temperature)
        return (start + end) / 2
    return kd_loss(student_outputs.logits, teacher_outputs.logits, temperature)


def hidden_layer_pairs(student_config, teacher_config, mapping: dict[int, int] | None) -> list[tuple[int, int]]:
    """The (student, teacher) indices into ``hidden_states`` to match: 0 is the embeddings' output, i the output of
    transformer layer i. Default: every layer 1..L to the teacher's at the same depth. ValueError if they cannot
    match: no projection is learnt, so the hidden sizes must be equal."""
    hidden = (student_config.hidden_size, teacher_config.hidden_size)
    if hidden[0] != hidden[1]:
        raise ValueError(
            f"the teacher's hidden size is {hidden[1]}, the student's {hidden[0]}: hidden-state distillation "
            "(alpha_hidden) needs equal sizes"
        )
    layers = (student_config.num_hidden_layers, teacher_config.num_hidden_layers)
    if mapping is None:
        if layers[0] != layers[1]:
            raise ValueError(
                f"the teacher has {layers[1]} layers, the student {layers[0]}: give hidden_layers "
                "(student layer: teacher layer) for hidden-state distillation"
            )
        return [(i, i) for i in range(1, layers[0] + 1)]
    for student, teacher in mapping.items():
        for who, index, count in (("student", student, layers[0]), ("teacher", teacher, layers[1])):
            if not 0 <= index <= count:
                raise ValueError(
                    f"hidden_layers maps {who} layer {index}, but the {who} has layers 0 (embeddings) to {count}"
                )
    return sorted(mapping.items())


def hidden_state_loss(
    student_states: Sequence[Tensor],
    teacher_states: Sequence[Tensor],
    pairs: Sequence[tuple[int, int]],
    attention_mask: Tensor | None,
) -> Tensor:
    """Mean over the layer pairs (s, t) of the squared error per hidden unit over the real (non-padding) tokens:

    ``H = 1/|P| * sum_(s,t) [ sum_(b,i) m_bi * ||h_s[b,i] - h_t[b,i]||^2 / (d * sum_(b,i) m_bi) ]``

    with ``m`` the attention mask (all ones if None) and ``d`` the hidden size; computed in float32 at least.
    """
    if not pairs:
        raise ValueError("hidden-state distillation needs at least one pair of layers")
    losses = []
    for s, t in pairs:
        student, teacher = student_states[s], teacher_states[t]
        if student.shape != teacher.shape:
            raise ValueError(f"student hidden state {s} {tuple(student.shape)} != teacher's {t} {tuple(teacher.shape)}")
        dtype = torch.promote_types(student.dtype, torch.float32)
        squared = (student.to(dtype) - teacher.to(dtype)).pow(2).sum(dim=-1)  # (batch, tokens)
        mask = torch.ones_like(squared) if attention_mask is None else attention_mask.to(squared)
        losses.append((squared * mask).sum() / (mask.sum() * student.shape[-1]))
    return torch.stack(losses).mean()
