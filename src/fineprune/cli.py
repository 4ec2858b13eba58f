"""The ``fineprune`` command line: parse, then call the functions of fineprune.run. No logic lives here."""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer

from fineprune.errors import UsageError

app = typer.Typer(
    help="Fine-prune Hugging Face transformer encoders: magnitude, movement, soft movement and L0 pruning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any config key: --set task.max_train_samples=200 (repeatable)."),
]


def _user_errors(command):
    """Bad input ends in one line on stderr and exit code 2, never a traceback."""

    @wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UsageError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None

    return run


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
) -> None:
    """Fine-prune a model as the config says; the run folder gets the pruned model, the config and a summary."""
    from fineprune.config import load_config
    from fineprune.run import train as run_train

    summary = run_train(load_config(config, set_), output_dir=output_dir, overwrite=overwrite, resume=resume)
    typer.echo(json.dumps({"metrics": summary["metrics"], "density": summary["sparsity"]["density"]}, indent=2))


@app.command("eval")
@_user_errors
def eval_(
    model_dir: Annotated[Path, typer.Argument(help="A training run, a checkpoint or an exported model folder.")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config to use (default: the one saved with the run).")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Evaluate with the binary masks of the model's current state; prints JSON and writes eval_results.json."""
    from fineprune.run import evaluate

    typer.echo(json.dumps(evaluate(model_dir, str(config) if config else None, set_), indent=2))


@app.command()
@_user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="The training run to export.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the exported model.")],
    bake_masks: Annotated[
        bool, typer.Option("--bake-masks/--keep-scores", help="Bake masks into a stock transformers model (default).")
    ] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Export a pruned run: config, safetensors with zeros where pruned, tokenizer and a model card."""
    from fineprune.run import export as run_export

    typer.echo(json.dumps(run_export(run_dir, out, bake_masks=bake_masks, overwrite=overwrite), indent=2))


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
    set_: SetOption = None,
) -> None:
    """Train the dense model and every (method, density) run; writes results.csv and results.md, and resumes when
    run again after a stop."""
    from fineprune.config import load_config
    from fineprune.sweep import default_out, parse_densities, parse_methods
    from fineprune.sweep import sweep as run_sweep

    method_list, density_list = parse_methods(methods), parse_densities(densities)
    folder = out or default_out(load_config(config, set_))
    run_sweep(config, method_list, density_list, folder, distill_from, distill, set_, progress=typer.echo)
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
    a figure the runs cannot support is skipped with a note."""
    from fineprune.report import report as run_report

    written = run_report(run_dirs, out, progress=typer.echo)
    typer.echo(f"{len(written)} figure(s) in {out}")


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
