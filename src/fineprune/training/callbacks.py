"""The Trainer callback that drives pruning: the schedule advances every optimizer step. (The logs get the pruning
state in ``PruningTrainer.log``, before the Trainer records them.)"""

from __future__ import annotations

from transformers import TrainerCallback

from fineprune.pruning.pruner import Pruner


class PruningCallback(TrainerCallback):
    """Moves the pruner's clock to ``state.global_step`` (optimizer steps, so gradient accumulation counts once)."""

    def __init__(self, pruner: Pruner):
        self.pruner = pruner

    def on_train_begin(self, args, state, control, **kwargs):
        self.pruner.validate_run(state.max_steps)
        self.pruner.set_step(state.global_step, state.max_steps)

    def on_step_begin(self, args, state, control, **kwargs):
        self.pruner.set_step(state.global_step, state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        # After the optimizer step: the clock reads the number of steps done, so checkpoints and the final
        # model (saved after this) hold the state of the next step, as a resumed run expects.
        self.pruner.set_step(state.global_step, state.max_steps)
