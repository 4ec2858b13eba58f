"""The ``fineprune`` command line: parse, then call the jobs (run, export.job, bench, sweep, report); no logic here."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer

from fineprune.errors import Interrupted, UsageError

app = typer.Typer(
    help="Fine-prune Hugging Face transformer encoders: magnitude, movement, soft movement and L0 pruning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override any config key: --set task.max_train_samples=200 (repeatable; later ones win). "
        "SECTION=null drops a section; keys given after it start the section afresh, with its defaults.",
    ),
]

TrustOption = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Let model folders run the Python code their config.json names (auto_map), as transformers' "
        "trust_remote_code does: only for folders you trust. fineprune's own compact exports need no flag.",
    ),
]


def _user_errors(command):
    """Bad input ends in one line on stderr and exit code 2, never a traceback; Ctrl-C or SIGTERM in one line and
    exit code 128 + the signal's number (130, 143), after the command has cleaned up on the way out."""

    @wraps(command)
    def run(*args, **kwargs):
        try:
            with _sigterm_raises():
                return command(*args, **kwargs)
        except UsageError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo(Interrupted(signal.SIGINT), err=True)
            raise typer.Exit(128 + signal.SIGINT) from None
        except Interrupted as error:
            typer.echo(error, err=True)
            raise typer.Exit(128 + error.signum) from None

    return run


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises Interrupted, as Ctrl-C raises KeyboardInterrupt, so that the command unwinds (its staging folder
    removed, its lock released) instead of dying where it stands. Signals reach the main thread alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
@_user_errors
def train(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="YAML config: model, task, pruning, distillation, training.")
    ],
    set_: SetOption = None,
    output_dir: Annotated[str | None, typer.Option(help="Run folder (overrides training.output_dir).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier run in the output folder.")] = False,
    resume: Annotated[
        bool, typer.Option(help="Continue from the run's last checkpoint (scores, masks, schedule).")
    ] = False,
    trust_remote_code: TrustOption = False,
) -> None:
    """Fine-prune a model as the config says; the run folder gets the pruned model, the config and a summary.
    Logs and progress go to stderr, the result (JSON: metrics, density) alone to stdout."""
    from fineprune.config import load_config
    from fineprune.run import train as run_train

    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs: stdout carries the result alone
        summary = run_train(
            load_config(config, set_),
            output_dir=output_dir,
            overwrite=overwrite,
            resume=resume,
            trust_remote_code=trust_remote_code,
        )
    typer.echo(json.dumps({"metrics": summary["metrics"], "density": summary["sparsity"]["density"]}, indent=2))


@app.command("eval")
@_user_errors
def eval_(
    model_dir: Annotated[Path, typer.Argument(help="A training run, a checkpoint or an exported model folder.")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config to use (default: the one saved with the run).")
    ] = None,
    set_: SetOption = None,
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Evaluate the folder's fp32 ONNX graph (onnx/model.onnx) with ONNX Runtime.")
    ] = False,
    onnx_quantized: Annotated[
        bool,
        typer.Option(
            "--onnx-quantized", help="Evaluate the folder's int8 ONNX graph (onnx/model_quantized.onnx) instead."
        ),
    ] = False,
    trust_remote_code: TrustOption = False,
) -> None:
    """Evaluate with the binary masks of the model's current state (or an ONNX graph of it); prints JSON and writes
    eval_results.json (eval_results_onnx.json, eval_results_onnx-quantized.json)."""
    from fineprune.run import evaluate

    if onnx and onnx_quantized:
        raise UsageError("--onnx and --onnx-quantized exclude each other: evaluate one graph at a time")
    backend = "onnx" if onnx else "onnx-quantized" if onnx_quantized else "torch"
    results = evaluate(model_dir, str(config) if config else None, set_, backend, trust_remote_code)
    typer.echo(json.dumps(results, indent=2))


@app.command()
@_user_errors
def export(
    run_dir: Annotated[
        Path, typer.Argument(help="The training run to export (with --onnx: or a folder holding a stock model).")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for the exported model (--onnx on a stock model: default in place)."),
    ] = None,
    bake_masks: Annotated[
        bool, typer.Option("--bake-masks/--keep-scores", help="Bake masks into a stock transformers model (default).")
    ] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
    onnx: Annotated[
        bool,
        typer.Option(
            "--onnx", help="Also write OUT/onnx/model.onnx (fp32) and model_quantized.onnx (dynamic int8 weights)."
        ),
    ] = False,
    compact: Annotated[
        bool,
        typer.Option(
            "--compact",
            help="Remove the attention heads and FFN neurons the masks left empty (structure: heads_neurons): a "
            "smaller, faster model that loads with trust_remote_code=True, without fineprune.",
        ),
    ] = False,
    compress: Annotated[
        bool,
        typer.Option(
            "--compress",
            help="Write one small safetensors file instead: pruned weights as a bitmask of the kept positions + int8 "
            "values + one scale per row (fineprune.load_compressed, `fineprune decompress`, `fineprune eval` read it).",
        ),
    ] = False,
    other_dtype: Annotated[
        str | None,
        typer.Option(
            help="With --compress: how the unpruned matrices (embeddings, pooler, head) are stored: int8 (per row, "
            "the default) or fp16; biases and LayerNorm stay fp32."
        ),
    ] = None,
    zstd: Annotated[
        bool, typer.Option("--zstd/--no-zstd", help="With --compress: zstd over each stored part (default).")
    ] = True,
    trust_remote_code: TrustOption = False,
) -> None:
    """Export a pruned run: config, safetensors with zeros where pruned, tokenizer and a model card; with --compact,
    without its empty heads and neurons; with --onnx, ONNX graphs for ONNX Runtime too (also of a dense run or an
    earlier export, in place); with --compress, in fineprune's compressed format (bitmask + int8)."""
    from fineprune.export.job import export as run_export

    report = run_export(
        run_dir,
        out,
        bake_masks=bake_masks,
        overwrite=overwrite,
        onnx=onnx,
        compact=compact,
        compress=compress,
        other_dtype=other_dtype,
        zstd=zstd,
        trust_remote_code=trust_remote_code,
    )
    typer.echo(json.dumps(report, indent=2))


@app.command()
@_user_errors
def decompress(
    folder: Annotated[Path, typer.Argument(help="A folder written by `fineprune export --compress`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the stock transformers model.")],
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Turn a compressed export back into a stock transformers folder (dense fp32, zeros where pruned) that loads
    with AutoModel*.from_pretrained without fineprune; tokenizer, config and model card come along."""
    from fineprune.export.compressed import decompress as run_decompress

    typer.echo(json.dumps(run_decompress(folder, out, overwrite=overwrite), indent=2))


@app.command()
@_user_errors
def sweep(
    config: Annotated[
        Path,
        typer.Option(
            "--config", "-c", help="Base YAML config: model, task, training; its pruning settings apply to every run."
        ),
    ],
    methods: Annotated[
        str, typer.Option(help="Comma-separated pruning methods: magnitude, movement, soft_movement, l0.")
    ] = "magnitude,movement,soft_movement,l0",
    densities: Annotated[
        str, typer.Option(help="Comma-separated fractions of the encoder's linear weights to keep, each in (0, 1].")
    ] = "0.1,0.03",
    distill_from: Annotated[
        Path | None,
        typer.Option(help="An already fine-tuned dense model to distil from (and to compare with): no dense run."),
    ] = None,
    distill: Annotated[
        bool, typer.Option("--distill/--no-distill", help="Distil every pruned run from the dense model (default).")
    ] = True,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Sweep folder (default: <training.output_dir>_sweep).")
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated training seeds: every run is trained once per seed (folders METHOD_DENSITY_seedS) "
            "and each cell shows the mean ± the spread (default: the config's seed, once)."
        ),
    ] = None,
    set_: SetOption = None,
    trust_remote_code: TrustOption = False,
) -> None:
    """Train the dense model and every (method, density) run; writes results.csv and results.md, and resumes when
    run again after a stop."""
    from fineprune.config import load_config
    from fineprune.sweep import default_out, parse_densities, parse_methods, parse_seeds
    from fineprune.sweep import sweep as run_sweep

    method_list, density_list = parse_methods(methods), parse_densities(densities)
    seed_list = parse_seeds(seeds) if seeds is not None else None
    folder = out or default_out(load_config(config, set_))
    run_sweep(
        config,
        method_list,
        density_list,
        folder,
        distill_from,
        distill,
        set_,
        progress=typer.echo,
        seeds=seed_list,
        trust_remote_code=trust_remote_code,
        notice=lambda text: typer.echo(f"note: {text}", err=True),
    )
    typer.echo(f"\n{(folder / 'results.md').read_text()}\nresults: {folder / 'results.csv'}, {folder / 'results.md'}")


@app.command()
@_user_errors
def report(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Finished run folders, or a sweep folder standing for all its runs.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNG figures.")],
) -> None:
    """Draw the paper's figures (metric vs density, per-layer density, weight distributions) from finished runs;
    a figure the runs cannot support is skipped with a note (exit code 2 when they support none)."""
    from fineprune.report import report as run_report

    written = run_report(run_dirs, out, progress=typer.echo)
    typer.echo(f"{len(written)} figure(s) in {out}")


@app.command()
@_user_errors
def bench(
    model_dirs: Annotated[
        list[Path], typer.Argument(help="Model folders (exports, dense runs); the first is the reference.")
    ],
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,32",
    seq_len: Annotated[int, typer.Option(help="Tokens per example.")] = 128,
    threads: Annotated[
        int | None, typer.Option(help="Threads for torch and ONNX Runtime alike (default: torch's count).")
    ] = None,
    repeats: Annotated[int, typer.Option(help="Timed calls per model and batch size; the median is reported.")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed calls per model and batch size first.")] = 2,
    clock: Annotated[
        str,
        typer.Option(
            help="wall: elapsed time; cpu: CPU time of the calling thread, for a busy machine (needs --threads 1)."
        ),
    ] = "wall",
    json_: Annotated[bool, typer.Option("--json", help="Print the rows as JSON instead of a table.")] = False,
    trust_remote_code: TrustOption = False,
) -> None:
    """Inference latency of each folder's torch model and of every ONNX graph in its onnx/ folder, in one process,
    taking turns; median of the repeats and the speed-up over the first. Progress on stderr, results on stdout."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from transformers.utils.logging import disable_progress_bar

    from fineprune.bench import bench as run_bench
    from fineprune.bench import parse_batch_sizes, table

    sizes = parse_batch_sizes(batch_sizes)
    disable_progress_bar()  # transformers' bars for loading weights: this command shows its own
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar = Progress(*columns, console=Console(stderr=True), transient=True)
    task = bar.add_task("", total=None)

    def progress(what: str, done: int, total: int) -> None:
        bar.start()  # at the first timed call: bad input fails before, with its one line alone on stderr
        bar.update(task, description=what, completed=done, total=total)

    try:
        rows = run_bench(
            model_dirs,
            sizes,
            seq_len,
            threads,
            repeats,
            warmup,
            progress=progress,
            clock=clock,
            trust_remote_code=trust_remote_code,
        )
    finally:
        if bar.live.is_started:
            bar.stop()
    if json_:
        typer.echo(json.dumps(rows, indent=2))
    else:
        Console().print(table(rows))


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
