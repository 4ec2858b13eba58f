"""The Trainer callbacks: the one that drives pruning (the schedule advances every optimizer step; the logs get the
pruning state in ``PruningTrainer.log``, before the Trainer records them), and the one that stops training cleanly on
Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
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


class StopOnSignal(TrainerCallback):
    """Ctrl-C or SIGTERM during training: the step under way finishes, a checkpoint is saved (unless save_strategy is
    "no") and training ends, instead of the process dying half-way through a write. A second signal acts at once, as
    it would without this. ``signum`` is the signal that stopped training, or None."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None

    @contextmanager
    def listening(self) -> Iterator[None]:
        """Catch the signals for the duration (Python delivers them to the main thread alone: elsewhere, nothing)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.getsignal(number) for number in self.SIGNALS}

        def restore() -> None:
            for number, handler in previous.items():
                signal.signal(number, handler)

        def note(signum: int, frame: object) -> None:
            self.signum = signum
            restore()

        for number in self.SIGNALS:
            signal.signal(number, note)
        try:
            yield
        finally:
            restore()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # every rank stops at one step
            number = torch.tensor([self.signum or 0], device=args.device)
            torch.distributed.all_reduce(number, op=torch.distributed.ReduceOp.MAX)
            self.signum = int(number.item()) or None
        if self.signum is not None:
            control.should_training_stop = True
            control.should_save = args.save_strategy != "no"
