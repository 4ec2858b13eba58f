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


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
