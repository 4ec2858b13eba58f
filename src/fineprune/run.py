"""The main jobs as functions: train a run, evaluate a model folder, export a baked model.

cli.py parses arguments and calls these; they know nothing of the command line.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoTokenizer, DataCollatorWithPadding, PreTrainedModel

from fineprune.config import RunConfig, build_config, dump_config, load_config, read_yaml
from fineprune.errors import UsageError
from fineprune.pruning import (
    bake,
    find_pruner,
    is_pruned_folder,
    load_pruned,
    prepare,
    sparsity,
    weight_density,
)
from fineprune.tasks import Task, TaskData, get_task
from fineprune.training.callbacks import PruningCallback
from fineprune.training.trainer import PruningTrainer

CONFIG_FILE = "fineprune_config.yaml"
SUMMARY_FILE = "summary.json"
EVAL_FILE = "eval_results.json"
MODEL_FILES = ("model.safetensors", "model.safetensors.index.json")


# -- loading ---------------------------------------------------------------------------------------------------------
def has_model(path: Path) -> bool:
    return any((path / name).is_file() for name in MODEL_FILES)


def load_model(path: str | Path, task: Task, where: str) -> PreTrainedModel:
    """A fineprune folder (pruned, with scores) via load_pruned; anything else with the task's Auto class."""
    if is_pruned_folder(path):
        model = load_pruned(path)
    else:
        try:
            # A model already fine-tuned for this kind of task keeps its head (and its label count, checked below).
            architectures = transformers.AutoConfig.from_pretrained(str(path)).architectures or []
            fine_tuned = any(a.endswith(task.head_suffix) for a in architectures)
            model = task.auto_class.from_pretrained(str(path), **({} if fine_tuned else task.model_kwargs()))
        except (OSError, ValueError) as error:
            raise UsageError(f"{where} {path}: cannot load a model: {str(error).splitlines()[0]}") from None
    task.check_model(model, f"{where} {path}")
    return model


def freeze_embeddings(model: PreTrainedModel) -> None:
    embeddings = getattr(model.base_model, "embeddings", None) or model.get_input_embeddings()
    embeddings.requires_grad_(False)


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _density(model: PreTrainedModel) -> dict[str, Any]:
    """Density from the masks if the model is pruned, else recounted from its weights."""
    return sparsity(model) if find_pruner(model) is not None else weight_density(model)


def _total_steps(args: transformers.TrainingArguments, train_size: int) -> int:
    """Optimizer steps the Trainer will run (its own rule: ceil per epoch over accumulation)."""
    if args.max_steps > 0:
        return args.max_steps
    batch = args.per_device_train_batch_size * max(1, args.world_size)
    batches = math.ceil(train_size / batch) if not args.dataloader_drop_last else train_size // batch
    per_epoch = max(1, math.ceil(batches / args.gradient_accumulation_steps))
    return math.ceil(args.num_train_epochs * per_epoch)


# -- train -----------------------------------------------------------------------------------------------------------
def train(config: RunConfig, output_dir: str | None = None, overwrite: bool = False, resume: bool = False) -> dict:
    """Fine-prune as configured; returns the run's summary (metrics and sparsity), also written to the run folder."""
    out = output_dir or config.training.get("output_dir")
    if not out:
        raise UsageError("training.output_dir: required (or give --output-dir)")
    out_path = Path(out)
    if _is_run_dir(out_path) and not (overwrite or resume):
        raise UsageError(
            f"{out_path} already holds an earlier run: pass --overwrite to replace it or --resume to continue it"
        )
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    checkpoint = transformers.trainer_utils.get_last_checkpoint(str(out_path)) if resume and out_path.is_dir() else None
    if resume and checkpoint is None:
        raise UsageError(f"{out_path}: no checkpoint to resume from (checkpoints are saved per training.save_strategy)")

    task = get_task(config.task.name)
    transformers.set_seed(config.training.get("seed", 42))
    tokenizer = AutoTokenizer.from_pretrained(config.model.name_or_path)
    model = load_model(config.model.name_or_path, task, "model.name_or_path")
    if config.model.freeze_embeddings:
        freeze_embeddings(model)
    data = task.prepare(config, tokenizer)
    teacher = _load_teacher(config, task, model)
    prepare(model, config.pruning)
    args = config.training_arguments(output_dir=str(out_path))
    pruner = find_pruner(model)
    if pruner is not None:
        pruner.validate_run(_total_steps(args, len(data.train)))

    if overwrite and out_path.exists():
        shutil.rmtree(out_path)  # the user asked for it; every check above has passed
    out_path.mkdir(parents=True, exist_ok=True)
    (out_path / CONFIG_FILE).write_text(dump_config(config))
    trainer = _trainer(model, args, tokenizer, data, config, teacher)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out_path))
    metrics = task.evaluate(trainer, data, out_path if trainer.is_world_process_zero() else None)
    summary = {
        "task": config.task.name,
        "method": config.pruning.method,
        "metrics": metrics,
        "sparsity": _density(model),
        "train_examples": len(data.train),
        "eval_examples": len(data.eval_examples),
        "optimizer_steps": trainer.state.global_step,
        "train_runtime_s": next(
            (log["train_runtime"] for log in reversed(trainer.state.log_history) if "train_runtime" in log), None
        ),
    }
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        summary["world_size"] = torch.distributed.get_world_size()
        summary["ranks_agree_on_masks"] = _ranks_agree(model)
    if trainer.is_world_process_zero():
        (out_path / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        _write_eval(out_path, metrics, summary["sparsity"])
    return summary


def _ranks_agree(model: PreTrainedModel) -> bool | None:
    """Every process must end with the same masks: compare a fingerprint of them across ranks."""
    pruner = find_pruner(model)
    if pruner is None:
        return None
    digest = hashlib.sha256(b"".join(m.bool().cpu().numpy().tobytes() for m in pruner.binary_masks())).hexdigest()
    fingerprints: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(fingerprints, digest)
    return len(set(fingerprints)) == 1


def _load_teacher(config: RunConfig, task: Task, student: PreTrainedModel) -> PreTrainedModel | None:
    if config.distillation is None:
        return None
    teacher = load_model(config.distillation.teacher, task, "distillation.teacher")
    if teacher.config.vocab_size != student.config.vocab_size:
        raise UsageError(
            f"distillation.teacher {config.distillation.teacher}: vocabulary of {teacher.config.vocab_size} tokens, "
            f"the student's has {student.config.vocab_size}"
        )
    return teacher


def _trainer(model, args, tokenizer, data: TaskData, config: RunConfig, teacher=None) -> PruningTrainer:
    pruner = find_pruner(model)
    distill = config.distillation
    return PruningTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=[PruningCallback(pruner)] if pruner is not None else None,
        teacher=teacher,
        alpha_ce=distill.alpha_ce if distill else 1.0,
        alpha_distil=distill.alpha_distil if distill else 0.0,
        temperature=distill.temperature if distill else 1.0,
        scores_learning_rate=config.pruning.scores_learning_rate,
    )


def _write_eval(folder: Path, metrics: dict, density: dict) -> dict:
    results = dict(metrics) | {"density": density["density"], "remaining_weights": density["remaining"]}
    (folder / EVAL_FILE).write_text(json.dumps(results, indent=2))
    return results


# -- eval ------------------------------------------------------------------------------------------------------------
def find_config(model_dir: Path) -> Path:
    """The run's resolved config: in the folder (a run, an export) or its parent (a checkpoint)."""
    for folder in (model_dir, model_dir.parent):
        if (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE
    raise UsageError(f"{model_dir}: no {CONFIG_FILE} here or in the parent folder; pass --config")


def evaluate(model_dir: str | Path, config_path: str | None = None, overrides: list[str] | None = None) -> dict:
    """Evaluate a run, checkpoint or export with the binary masks of its current state; writes eval_results.json."""
    model_dir = Path(model_dir)
    if not has_model(model_dir):
        raise UsageError(f"{model_dir}: no model here (expected {' or '.join(MODEL_FILES)})")
    config = load_config(config_path or find_config(model_dir), overrides)
    task = get_task(config.task.name)
    source = model_dir if (model_dir / "tokenizer_config.json").is_file() else config.model.name_or_path
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = load_model(model_dir, task, "model").eval()
    data = task.prepare(config, tokenizer)
    args = config.training_arguments(output_dir=str(model_dir / "eval_tmp"), report_to="none", save_strategy="no")
    trainer = _trainer(model, args, tokenizer, data, config)
    metrics = task.evaluate(trainer, data, model_dir)
    shutil.rmtree(model_dir / "eval_tmp", ignore_errors=True)
    return _write_eval(model_dir, metrics, _density(model))


# -- export ----------------------------------------------------------------------------------------------------------
def export(run_dir: str | Path, out: str | Path, bake_masks: bool = True, overwrite: bool = False) -> dict:
    """Write a stock transformers folder (config, safetensors, tokenizer, model card) of a pruned run."""
    run_dir, out = Path(run_dir), Path(out)
    if not has_model(run_dir):
        raise UsageError(f"{run_dir}: no trained model here (has the run finished?)")
    if not is_pruned_folder(run_dir):
        raise UsageError(f"{run_dir}: holds no pruned model (a `method: none` run?): there are no masks to bake")
    if _is_run_dir(out) and not overwrite:
        raise UsageError(f"{out} is not empty: pass --overwrite to replace it")
    config_path = find_config(run_dir)
    model = load_pruned(run_dir)
    report = sparsity(model)
    if bake_masks:
        model = bake(model)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(run_dir)).save_pretrained(out)
    shutil.copy(config_path, out / CONFIG_FILE)
    summary_path = run_dir / SUMMARY_FILE
    metrics = json.loads(summary_path.read_text())["metrics"] if summary_path.is_file() else {}
    (out / "README.md").write_text(model_card(build_config(read_yaml(config_path), str(config_path)), report, metrics))
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    return {"out": str(out), "density": report["density"], "safetensors_bytes": size, "metrics": metrics}


def model_card(config: RunConfig, report: dict, metrics: dict) -> str:
    """A Hugging Face model card: what was pruned, how, how much is left (overall and per layer), how well it does."""
    p = config.pruning
    lines = [
        "---",
        "library_name: transformers",
        "tags: [fineprune, pruning, movement-pruning]",
        "---",
        f"# {config.task.name} model fine-pruned with fineprune",
        "",
        f"Fine-pruned from `{config.model.name_or_path}` on `{config.task.name}` with **{p.method}** pruning "
        f"({p.scope} selection){' and distillation from `' + config.distillation.teacher + '`' if config.distillation else ''}.",
        "The masks are baked in: this is a stock transformers model, zeros where weights were pruned; "
        "it loads with `AutoModel*.from_pretrained` and needs no fineprune.",
        "",
        f"**Remaining encoder linear weights: {report['remaining']:,} of {report['total']:,} "
        f"({100 * report['density']:.2f}%)**",
        "",
        "| metric | value |",
        "| --- | --- |",
        *[f"| {k} | {v:.4f} |" for k, v in metrics.items()],
        "",
        "## Density per layer",
        "",
        "| layer | attention | ffn | all |",
        "| --- | --- | --- | --- |",
    ]
    for layer, density in report["layers"].items():
        kinds = {
            kind: [m for m in report["matrices"].values() if m["layer"] == layer and m["kind"] == kind]
            for kind in ("attention", "ffn")
        }
        cells = [
            f"{100 * sum(m['remaining'] for m in ms) / sum(m['total'] for m in ms):.2f}%" if ms else "-"
            for ms in kinds.values()
        ]
        lines.append(f"| {layer} | {cells[0]} | {cells[1]} | {100 * density:.2f}% |")
    lines += ["", "## Configuration", "", "```yaml", dump_config(config).rstrip(), "```", ""]
    return "\n".join(lines)
