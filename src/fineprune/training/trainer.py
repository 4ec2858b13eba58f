"""PruningTrainer: a transformers Trainer whose loss is alpha_ce * CE + alpha_distil * KD + alpha_hidden * H
+ lambda * R, and whose optimizer gives the pruning scores their own group (own learning rate, no weight decay, and
the pruning config's ``scores_update`` rule)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler, SequentialSampler
from transformers import Trainer

from fineprune.pruning import find_pruner
from fineprune.pruning.score_updates import update_scores
from fineprune.training.distill import distillation_loss, hidden_layer_pairs, hidden_state_loss

SCORES_SUFFIX = "scores"


class PruningTrainer(Trainer):
    def __init__(
        self,
        *args,
        teacher: nn.Module | None = None,
        alpha_ce: float = 1.0,
        alpha_distil: float = 0.0,
        temperature: float = 2.0,
        alpha_hidden: float = 0.0,
        hidden_layers: dict[int, int] | None = None,
        scores_learning_rate: float = 1e-2,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self.alpha_ce = alpha_ce
        self.alpha_distil = alpha_distil
        self.temperature = temperature
        self.scores_learning_rate = scores_learning_rate
        self.pruner = find_pruner(self.model)
        # compute_loss returns a per-micro-batch mean: let the Trainer divide by the accumulation steps.
        self.loss_is_scaled_for_ga = False
        if teacher is not None:
            self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
        self.alpha_hidden = alpha_hidden if teacher is not None else 0.0
        self.hidden_pairs = (
            hidden_layer_pairs(self.model.config, teacher.config, hidden_layers) if self.alpha_hidden > 0 else []
        )
        self._loss_terms: dict[str, list[torch.Tensor]] = {}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs get the pruner's state (``pruning/density``, ...) before the Trainer records them, so that
        ``state.log_history`` and every ``report_to`` integration see them (callbacks' ``on_log`` runs too late)."""
        if self.pruner is not None and "loss" in logs:
            logs.update({f"pruning/{k}": v for k, v in self.pruner.log_values().items()})
        if "loss" in logs:
            logs.update(self._pop_loss_terms())
        super().log(logs, start_time)

    def _record(self, name: str, value: torch.Tensor) -> None:
        """Keep one term of a training micro-batch's loss for the next log (detached: no device sync per step)."""
        self._loss_terms.setdefault(name, []).append(value.detach().float())

    def _pop_loss_terms(self) -> dict[str, float]:
        """The mean of each loss term over the micro-batches since the last log (and over processes), as
        ``loss/task``, ``loss/distil``, ``loss/hidden`` (before their alphas) and ``loss/penalty`` (the pruner's term
        as added, lambda * R): the logged total alone hides which term moves (a steered penalty can be 30 times
        the task loss)."""
        terms = {
            f"loss/{name}": self.accelerator.gather(torch.stack(values).mean()[None]).mean().item()
            for name, values in self._loss_terms.items()
        }
        self._loss_terms = {}
        return terms

    def _get_eval_sampler(self, eval_dataset: Dataset) -> Sampler | None:
        """Evaluation keeps the dataset's order: transformers applies ``group_by_length`` to evaluation too, which
        would hand SQuAD post-processing the logits of other windows than the ones it maps them to."""
        if self.args.train_sampling_strategy != "group_by_length" or eval_dataset is None:
            return super()._get_eval_sampler(eval_dataset)
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def _clip_grad_norm(self, model):
        """Clip the model's weights only. The scores' gradient carries lambda (steering raises it by orders of
        magnitude) and would otherwise shrink every weight update through the shared norm; AdamW already bounds
        the scores' step by their learning rate."""
        if self.pruner is None or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._clip_grad_norm(model)
        weights = [p for n, p in model.named_parameters() if not n.endswith(SCORES_SUFFIX)]
        return self.accelerator.clip_grad_norm_(weights, self.args.max_grad_norm)

    def create_optimizer(self, model=None):
        """AdamW over two kinds of parameters: the model's (the Trainer's usual groups) and the scores."""
        if self.optimizer is None:
            model = model or self.model
            decay = set(self.get_decay_parameter_names(model))
            params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            weights = [(n, p) for n, p in params if not n.endswith(SCORES_SUFFIX)]
            scores = [p for n, p in params if n.endswith(SCORES_SUFFIX)]
            groups = [
                {"params": [p for n, p in weights if n in decay], "weight_decay": self.args.weight_decay},
                {"params": [p for n, p in weights if n not in decay], "weight_decay": 0.0},
            ]
            if scores:
                groups.append({"params": scores, "weight_decay": 0.0, "lr": self.scores_learning_rate})
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            optimizer_kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(
                [g for g in groups if g["params"]], lr=self.args.learning_rate, **optimizer_kwargs
            )
            if scores and self.pruner is not None and self.pruner.config.scores_update != "adamw":
                self.optimizer.register_step_pre_hook(self._scores_rule_hook(scores))
        return self.optimizer

    def _scores_rule_hook(self, scores: list[nn.Parameter]):
        """A pre-step hook of the optimizer that applies the pruning config's ``scores_update`` rule to the scores.

        It runs inside ``optimizer.step()``: after clipping, gradient unscaling and the overflow check (a skipped
        step skips it too), with the scores group's learning rate as the Trainer's schedule has set it now. The rule
        drops the scores' gradients, so the optimizer's own step (fused AdamW or any other) leaves them alone.
        """
        ids = {id(p) for p in scores}
        pruner = self.pruner

        def apply_rule(optimizer, args, kwargs):
            lr = next(g["lr"] for g in optimizer.param_groups if any(id(p) in ids for p in g["params"]))
            update_scores(pruner.parametrizations, pruner.config, lr)

        return apply_rule

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        hidden = self.alpha_hidden > 0 and model.training  # hidden states only when they enter the loss
        ask = {"output_hidden_states": True} if hidden else {}
        outputs = model(**inputs, **ask)
        loss = outputs.loss
        if model.training:
            self._record("task", loss)
        if self.teacher is not None and model.training:
            features = {k: v for k, v in inputs.items() if k not in _LABEL_KEYS}
            with torch.no_grad():
                teacher_outputs = self.teacher(**features, **ask)
            kd = distillation_loss(outputs, teacher_outputs, self.temperature)
            self._record("distil", kd)
            loss = self.alpha_ce * loss + self.alpha_distil * kd
            if hidden:
                states = (outputs.hidden_states, teacher_outputs.hidden_states)
                mse = hidden_state_loss(*states, self.hidden_pairs, inputs.get("attention_mask"))
                self._record("hidden", mse)
                loss = loss + self.alpha_hidden * mse
        if self.pruner is not None and model.training:
            penalty = self.pruner.regularizer(loss)
            if penalty is not None:
                self._record("penalty", penalty)
                loss = loss + penalty
        return (loss, outputs) if return_outputs else loss


_LABEL_KEYS = ("labels", "start_positions", "end_positions")
