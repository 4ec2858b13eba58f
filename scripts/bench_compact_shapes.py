"""Where the speed of a compact model comes from: torch fp32 latency of every (heads, FFN width) shape, untrained.

Structured pruning chooses how many heads and FFN neurons each layer keeps; what a shape costs to run does not depend
on its weights. This builds the model's stock class with every layer shrunk to the same shape (fineprune's compact
export code, random weights), times all shapes and the dense model in one process, taking turns (CPU time of the
calling thread, one thread), and prints each shape's share of the encoder's linear weights and its speed-up over the
dense model: the map a run's density has to land on for a speed target.

    python scripts/bench_compact_shapes.py MODEL_DIR [--heads 12,8,6,4] [--ffn 1536,384,128,32] [--batch-sizes 1,32]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from fineprune.bench import parse_batch_sizes
from fineprune.export.compact_modeling import shrink_model
from fineprune.layouts import COMPACT_KEY, encoder_layers
from fineprune.timing import time_variants, torch_variant


def shaped_model(model_dir: Path, heads: int | None, ffn_width: int | None) -> torch.nn.Module:
    """The stock classifier of ``model_dir``'s config, random weights, every layer with ``heads`` heads and
    ``ffn_width`` neurons (None: the dense shape)."""
    config = AutoConfig.from_pretrained(model_dir, num_labels=3)
    model = AutoModelForSequenceClassification.from_config(config)
    if heads is not None:
        layers = len(encoder_layers(model))
        setattr(config, COMPACT_KEY, [{"heads": list(range(heads)), "ffn_width": ffn_width}] * layers)
        shrink_model(model, config)
    return model.eval()


def encoder_weights(model: torch.nn.Module) -> int:
    """The encoder's linear weights: what a run's density counts."""
    return sum(m.weight.numel() for m in encoder_layers(model).modules() if isinstance(m, torch.nn.Linear))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--heads", default="12,10,8,6,4", help="heads per layer to try")
    parser.add_argument("--ffn", default="1536,384,128,32", help="FFN neurons per layer to try")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    batch_sizes = parse_batch_sizes(args.batch_sizes)
    shapes = [(None, None)] + list(itertools.product(parse_batch_sizes(args.heads), parse_batch_sizes(args.ffn)))
    models = [shaped_model(args.model_dir, h, f) for h, f in shapes]
    dense_weights = encoder_weights(models[0])
    variants = [
        torch_variant(m, batch_sizes, args.seq_len, Path(f"{h}x{f}")) for (h, f), m in zip(shapes, models, strict=True)
    ]
    times = time_variants(variants, batch_sizes, args.repeats, warmup=1, clock="cpu")
    medians = [[statistics.median(seconds) for seconds in per_batch] for per_batch in times]
    print(f"{args.seq_len} tokens, 1 thread, CPU time, median of {args.repeats}; speed-up over the dense model")
    print(f"{'heads':>5s} {'FFN':>5s} {'density':>8s} " + " ".join(f"{'batch ' + str(b):>9s}" for b in batch_sizes))
    for i, ((h, f), model) in enumerate(zip(shapes, models, strict=True)):
        density = encoder_weights(model) / dense_weights
        speedups = " ".join(f"{per_batch[0] / per_batch[i]:8.2f}x" for per_batch in medians)
        print(f"{h or 'dense':>5} {f or '':>5} {density:8.3f} {speedups}")


if __name__ == "__main__":
    main()
