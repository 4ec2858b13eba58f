"""Knowledge-distillation losses: T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), batch-mean."""

from __future__ import annotations

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
