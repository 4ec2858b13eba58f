"""PruningConfig: every pruning setting, typed, documented and validated on creation.

Each field's description is its help text, in the YAML config and in ``--help`` alike.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fineprune.pruning.masks import L0_BETA, L0_LEFT, L0_RIGHT, HardConcrete

Method = Literal["none", "magnitude", "movement", "soft_movement", "l0"]
TOPV_METHODS = ("magnitude", "movement")
STEERABLE_METHODS = ("soft_movement", "l0")
SCORED_METHODS = ("movement", "soft_movement", "l0")


def takes_scores_update(method: str, rule: str) -> bool:
    """Whether `method` can learn its scores by `rule`: adamw always, sgd any method with scores, platon only movement
    (its scores rank a Top-v)."""
    if rule == "platon":
        return method == "movement"
    return rule == "adamw" or method in SCORED_METHODS


# controller_gain: the lambda controller of steered runs, replaced by the density band and L0's Lagrangian.
OBSOLETE_FIELDS = frozenset({"controller_gain"})
DEFAULT_LAMBDA = {"soft_movement": 400.0, "l0": 125.0}
DEFAULT_SCORES_INIT = {"movement": 0.0, "soft_movement": 0.0, "l0": math.log(9.0)}


class PruningConfig(BaseModel):
    """What to prune, how, and on which schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = Field("movement", description="none | magnitude | movement | soft_movement | l0.")
    scope: Literal["local", "global"] = Field(
        "local",
        description="Top-v per matrix (local) or one threshold over all pruned matrices (global); with structure "
        "heads_neurons, per layer (local) or over all layers (global). For a steered soft_movement / l0 run it is "
        "how the final density is met.",
    )
    initial_density: float = Field(1.0, gt=0, le=1, description="Density (fraction kept) before warm-up ends.")
    final_density: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Fraction of the pruned weights kept at the end. Required for magnitude / movement; for "
        "soft_movement / l0 the target the run is steered to (leave it out for the paper's fixed lambda).",
    )
    initial_threshold: float = Field(0.0, ge=0, lt=1, description="soft_movement: threshold tau on sigmoid(S).")
    final_threshold: float = Field(0.1, ge=0, lt=1, description="soft_movement: final threshold tau.")
    regularization_lambda: float | None = Field(
        None,
        ge=0,
        description="Final lambda of the regularizer (default: 400 soft_movement, 125 l0; 1 with "
        "regularization_normalize loss).",
    )
    regularization_normalize: Literal["none", "loss"] = Field(
        "none",
        description="soft_movement, and l0 without final_density: the scale of the penalty. none: lambda(t) * R, "
        "the paper's, R the mean over the pruned matrices of each matrix's mean sigmoid(S) (l0: P(gate != 0)), at "
        "most 1 (nn_pruning's mean over attention and FFN matrices of such means is the same R when each layer has "
        "3 of each), so lambda 400 makes the penalty ~100 times a short run's task loss. loss: lambda(t) * R * L, L "
        "the loss the penalty is added to (task and distillation terms, detached): regularization_lambda is the "
        "penalty's ceiling in units of that loss (default 1), and the penalty keeps its proportion as L falls. "
        "Either way only the scores feel it (R depends on nothing else).",
    )
    warmup_steps: int | float = Field(
        0.1,
        ge=0,
        description="Steps at the initial value: optimizer steps, or a fraction of the run if < 1 (rounded half "
        "up: 0.05 of 10 steps is 1, 0.25 of 10 is 3).",
    )
    cooldown_steps: int | float = Field(
        0.2,
        ge=0,
        description="Steps at the final value at the end: optimizer steps, or a fraction of the run if < 1 "
        "(rounded half up).",
    )
    scores_init: float | None = Field(None, description="Initial score (default 0; log 9 for l0).")
    scores_learning_rate: float = Field(
        1e-2,
        gt=0,
        description="Learning rate of the scores' optimizer group. With AdamW and a few hundred updates the best "
        "measured on MNLI were 1e-1 for soft movement and 5e-2 for L0 (1e-2 leaves their masks near the start).",
    )
    scores_init_from_weights: bool = Field(
        False,
        description="Start each score at scores_init + scores_init_scale * z, z the weight's |W| (block mean) "
        "standardised per matrix (structure heads_neurons: the group's RMS, standardised over its layer's groups): "
        "the first masks are magnitude's, and movement then adapts them.",
    )
    scores_init_scale: float = Field(
        1.0,
        gt=0,
        description="With scores_init_from_weights: the spread of the initial scores. AdamW moves a score by about "
        "scores_learning_rate per update, so scale / scores_learning_rate updates overturn one standard deviation.",
    )
    scores_update: Literal["adamw", "sgd", "platon"] = Field(
        "adamw",
        description="How the scores learn from dL/dS = dL/dW' * W. adamw: the optimizer's AdamW (divides by the "
        "gradient's RMS, so |W| cancels). sgd: S <- S - lr * dL/dS, the paper's accumulation of movement, with "
        "scores_learning_rate following the Trainer's lr schedule as the reference's scores group does; raw score "
        "gradients are ~1e-6..1e-4, so that lr is ~1e2..1e3, and from constant initial scores it does not change "
        "the masks (Top-v ignores a common scale). platon (movement only): PLATON's S = I_bar * U, the moving "
        "average of I = |dL/dS| times that of |I - I_bar|; no learning rate.",
    )
    platon_beta1: float = Field(
        0.85, ge=0, lt=1, description="scores_update platon: decay of the importance's moving average I_bar."
    )
    platon_beta2: float = Field(
        0.95, ge=0, lt=1, description="scores_update platon: decay of the uncertainty U, the average of |I - I_bar|."
    )
    freeze_weights: bool = Field(
        False,
        description="Freeze the pruned matrices' weights, as SMP (Jiang et al. 2023): only their scores learn, with "
        "everything that carries no mask (biases, LayerNorm, pooler, task head); the frozen weights get no gradient "
        "and no optimizer state. SMP also freezes the encoder's biases and LayerNorm: here they learn (0.3% of "
        "all-MiniLM-L6-v2's encoder), to re-centre the activations the masks shift. Needs a method with scores.",
    )
    min_density: float = Field(0.005, ge=0, le=1, description="soft_movement: fraction always kept per matrix.")
    block_shape: tuple[int, int] = Field(
        (1, 1), description="One score per block of (rows, cols) weights; (1, 1) is unstructured pruning."
    )
    structure: Literal["unstructured", "heads_neurons"] = Field(
        "unstructured",
        description="unstructured: one score per weight (or per block_shape block). heads_neurons: one score per "
        "attention head (its rows of Q, K, V and its columns of the attention output) and per FFN neuron (its row "
        "of FFN-in and column of FFN-out), so that `fineprune export --compact` removes them; final_density still "
        "counts weights (groups are kept whole, so the density reached is within half a head of it per layer, or "
        "per model with scope global).",
    )
    group_budget: Literal["shared", "per_kind"] = Field(
        "shared",
        description="structure heads_neurons, magnitude and movement: shared: heads and neurons compete for one "
        "budget of weights; per_kind: the heads and the FFN neurons each keep final_density of their own weights, "
        "as nn_pruning's separate attention and FFN thresholds do (docs/benchmarks.md compares the two).",
    )
    target_modules: list[str] | None = Field(
        None,
        description="Regular expressions on module names selecting the nn.Linear layers to prune; by default "
        "every nn.Linear inside the encoder's layers.",
    )
    exclude_modules: list[str] = Field(default_factory=list, description="Regular expressions of names to skip.")
    steering_tolerance: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="Steered runs: the masks keep between target * (1 - tolerance) and target of the weights "
        "(same scope); inside that band the threshold (soft_movement) or the gates (l0) decide.",
    )
    l0_temperature: float = Field(
        L0_BETA,
        gt=0,
        description="l0: the hard-concrete temperature beta (the paper's 2/3). The training-time gate is "
        "clamp(sigmoid((logit(u) + S) / beta) * (r - l) + l, 0, 1): a lower beta makes the sampled gates closer to "
        "0 or 1 and their gradient steeper; P(gate != 0) = sigmoid(S - beta * log(-l / r)).",
    )
    l0_stretch: tuple[float, float] = Field(
        (L0_LEFT, L0_RIGHT),
        description="l0: the hard-concrete stretch interval (l, r), l < 0 < 1 < r (the paper's (-0.1, 1.1)): the "
        "gate is stretched to (l, r) and clamped to [0, 1], so a wider interval puts more of the sampled gates at "
        "exactly 0 or 1 (and more gradient-free). The binary gate of evaluation is the deterministic gate above "
        "0.5: S > log((0.5 - l) / (r - 0.5)), S > 0 for an interval symmetric about 1/2.",
    )
    lagrangian_learning_rate: float = Field(
        5e-6,
        gt=0,
        description="Steered l0: gradient ascent on the Lagrange multipliers once per optimizer step, per score: "
        "lambda_1 += lr * n * (E[density] - t), lambda_2 += lr * n * (E[density] - t)^2, n the number of scores "
        "(the per-score push of the multipliers then does not shrink with the model's size). Larger reacts faster but "
        "overshoots (on a tiny encoder, 40x the default made the gates swing between 20% and 78% open while the "
        "target fell steadily from 56% to 38%).",
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_obsolete(cls, data):
        """Folders saved by earlier versions hold keys that no longer mean anything: read them, ignore those."""
        if isinstance(data, dict) and any(key in data for key in OBSOLETE_FIELDS):
            data = {k: v for k, v in data.items() if k not in OBSOLETE_FIELDS}
        return data

    @model_validator(mode="after")
    def _check(self) -> PruningConfig:
        if self.method in TOPV_METHODS and self.final_density is None:
            raise ValueError(f"method {self.method} needs final_density (the fraction of weights to keep)")
        if self.final_density is not None and self.final_density > self.initial_density:
            raise ValueError(
                f"final_density {self.final_density} is above initial_density {self.initial_density}: "
                "pruning only removes weights"
            )
        if self.method == "soft_movement" and self.final_threshold < self.initial_threshold:
            raise ValueError(
                f"final_threshold {self.final_threshold} is below initial_threshold {self.initial_threshold}"
            )
        for name in ("warmup_steps", "cooldown_steps"):
            value = getattr(self, name)
            if isinstance(value, float) and not (value < 1 or value.is_integer()):
                raise ValueError(f"{name} {value}: give whole steps or a fraction below 1")
        if min(self.block_shape) < 1:
            raise ValueError(f"block_shape {self.block_shape} must be positive")
        if self.structure != "unstructured" and tuple(self.block_shape) != (1, 1):
            raise ValueError(
                f"block_shape {self.block_shape} is for unstructured pruning, not structure {self.structure}"
            )
        if self.group_budget != "shared" and (self.structure == "unstructured" or self.method not in TOPV_METHODS):
            raise ValueError(
                f"group_budget {self.group_budget} splits Top-v's budget between heads and neurons: it needs "
                f"structure heads_neurons and method magnitude or movement (got {self.structure}, {self.method})"
            )
        left, right = self.l0_stretch
        if not left < 0 < 1 < right:
            raise ValueError(
                f"l0_stretch {tuple(self.l0_stretch)} must be (l, r) with l < 0 < 1 < r: the gates reach exactly 0 "
                "and 1 only when stretched past them"
            )
        if self.regularization_normalize != "none" and (self.method not in STEERABLE_METHODS or self.steered_l0):
            owner = "a steered l0 run replaces it by its Lagrangian" if self.steered_l0 else f"{self.method} has none"
            raise ValueError(f"regularization_normalize {self.regularization_normalize} scales lambda * R: {owner}")
        if self.freeze_weights and self.method not in SCORED_METHODS:
            raise ValueError(
                f"freeze_weights leaves only the scores to choose the masks, and method {self.method} has none: "
                "its masks could never learn (use movement, soft_movement or l0)"
            )
        return self

    @model_validator(mode="after")
    def _check_scores_update(self) -> PruningConfig:
        rule = self.scores_update
        if not takes_scores_update(self.method, rule):
            problem = (
                f": method {self.method} has no scores to update"
                if self.method not in SCORED_METHODS
                else f" ranks by Top-v: it needs method movement, not {self.method}"
            )
            raise ValueError(f"scores_update {rule}{problem} (set scores_update to adamw)")
        if rule == "platon" and self.scores_init_from_weights:
            raise ValueError("scores_init_from_weights has no effect with scores_update platon (it sets the scores)")
        return self

    @property
    def steered(self) -> bool:
        """Soft movement / L0 with a target density: the masks follow the cubic target density (see docs/reference.md)."""
        return self.method in STEERABLE_METHODS and self.final_density is not None

    @property
    def steered_l0(self) -> bool:
        """L0 with a target density: its Lagrangian replaces lambda * R."""
        return self.steered and self.method == "l0"

    @property
    def hard_concrete(self) -> HardConcrete:
        """L0's gate with this config's temperature and stretch."""
        return HardConcrete(self.l0_temperature, *self.l0_stretch)

    @property
    def lambda_final(self) -> float:
        if self.regularization_lambda is not None:
            return self.regularization_lambda
        if self.regularization_normalize == "loss":
            return 1.0
        return DEFAULT_LAMBDA.get(self.method, 0.0)

    @property
    def initial_score(self) -> float:
        return self.scores_init if self.scores_init is not None else DEFAULT_SCORES_INIT.get(self.method, 0.0)
