"""The training jobs as functions: train a run, evaluate a model folder (a run, a checkpoint, an export).

cli.py parses arguments and calls these; they know nothing of the command line. Exporting is
:mod:`fineprune.export.job`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import signal
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import DataCollatorWithPadding, PreTrainedModel
from transformers.trainer import TRAINER_STATE_NAME

from fineprune import outputs
from fineprune.config import RunConfig, dump_config, load_config, with_absolute_paths
from fineprune.errors import Interrupted, UsageError
from fineprune.export.compressed import WEIGHTS_FILE, is_compressed_folder, load_compressed
from fineprune.export.onnx import GRAPHS, ONNX_DIR
from fineprune.loading import (
    CONFIG_FILE,
    EVAL_FILE,
    MODEL_FILES,
    SUMMARY_FILE,
    find_config,
    has_model,
    load_tokenizer,
    may_run_code,
)
from fineprune.pruning import find_pruner, is_pruned_folder, load_pruned, prepare, sparsity, weight_density
from fineprune.tasks import Task, TaskData, load_task
from fineprune.training.callbacks import PruningCallback, StopOnSignal
from fineprune.training.distill import hidden_layer_pairs
from fineprune.training.trainer import PruningTrainer

CHECKPOINT = re.compile(r"checkpoint-(\d+)")  # the Trainer's checkpoint folders, by optimizer step


def load_model(path: str | Path, task: Task, where: str, trust_remote_code: bool = False) -> PreTrainedModel:
    """A fineprune folder (pruned, with scores) via load_pruned; anything else with the task's Auto class, running
    the folder's own code only as :func:`~fineprune.loading.may_run_code` allows."""
    outputs.check_complete(path)
    code = may_run_code(path, trust_remote_code)
    if is_pruned_folder(path):
        model = load_pruned(path)
    elif is_compressed_folder(path):
        model = load_compressed(path)
    else:
        try:
            # A model already fine-tuned for this kind of task keeps its head (and its label count, checked below).
            architectures = transformers.AutoConfig.from_pretrained(str(path), trust_remote_code=code).architectures
            fine_tuned = any(a.endswith(task.head_suffix) for a in architectures or [])
            kwargs = ({} if fine_tuned else task.model_kwargs()) | {"trust_remote_code": code}
            model = task.auto_class.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError) as error:
            raise UsageError(f"{where} {path}: cannot load a model: {str(error).splitlines()[0]}") from None
    task.check_model(model, f"{where} {path}")
    return model


def freeze_embeddings(model: PreTrainedModel) -> None:
    embeddings = getattr(model.base_model, "embeddings", None) or model.get_input_embeddings()
    embeddings.requires_grad_(False)


def check_data_files(config: RunConfig, training: bool = True) -> None:
    """Every local data file the job reads exists: said before any model is loaded."""
    for key, path in config.task.data_files(training).items():
        if not Path(path).expanduser().is_file():
            raise UsageError(f"{key}: no such file: {path}")


def check_model_code(config: RunConfig, trust_remote_code: bool) -> None:
    """The model's and the teacher's folders run no code fineprune does not allow: said before any model is loaded."""
    for source in (config.model.name_or_path, config.distillation.teacher if config.distillation else None):
        if source is not None:
            may_run_code(source, trust_remote_code)


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
def train(
    config: RunConfig,
    output_dir: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    trust_remote_code: bool = False,
) -> dict:
    """Fine-prune as configured; returns the run's summary (metrics and sparsity), also written to the run folder.
    ``trust_remote_code``: the model's and the teacher's folders may run their own code (see fineprune.loading).

    The run, checkpoints included, is written into a staging folder beside the run folder and renamed into place
    when finished (:mod:`fineprune.outputs`): a killed run leaves no folder that looks finished, an earlier run that
    ``overwrite`` replaces stays until then, and ``resume`` continues from the staging folder's last checkpoint.
    """
    out = output_dir or config.training.get("output_dir")
    if not out:
        raise UsageError("training.output_dir: required (or give --output-dir)")
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    out_path = Path(out)
    first = int(os.environ.get("RANK", "0")) == 0  # the first process of a distributed run writes the folder
    try:
        with outputs.locked(out_path) if first else contextlib.nullcontext():
            if first:
                outputs.recover(out_path)
            return _train(config, out_path, overwrite, resume, trust_remote_code, first)
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """A distributed run's process group is torn down before the interpreter exits: left to exit, gloo's threads
    could abort a process that had finished ("terminate called without an active exception", exit -6)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def last_checkpoint(folder: Path) -> Path | None:
    """The folder's last checkpoint that the Trainer finished writing (it writes trainer_state.json last)."""
    finished = {
        int(match[1]): path
        for path in folder.glob("checkpoint-*")
        if (match := CHECKPOINT.fullmatch(path.name)) and (path / TRAINER_STATE_NAME).is_file()
    }
    return finished[max(finished)] if finished else None


def _resume_from(out_path: Path, staging: Path) -> Path:
    """The folder of the run to continue: the staging folder, or a run folder that an older fineprune trained in
    place and did not finish."""
    if (out_path / SUMMARY_FILE).is_file() and not staging.is_dir():
        raise UsageError(f"{out_path}: the run has finished, there is nothing to resume (--overwrite trains it again)")
    source = staging if staging.is_dir() else out_path
    if not source.is_dir() or last_checkpoint(source) is None:
        raise UsageError(f"{out_path}: no checkpoint to resume from (checkpoints are saved per training.save_strategy)")
    return source


def _stage(out_path: Path, staging: Path, resumed: Path | None) -> None:
    """Make the staging folder: a fresh one, or the run being resumed, without checkpoints it did not finish."""
    note = f"continue it with `{_resume_command(out_path)}`"
    if resumed is None:
        outputs.start(out_path, note)
        return
    outputs.mark(resumed, note)  # before the rename: the staging folder is never there unmarked
    if resumed != staging:
        resumed.rename(staging)
    for checkpoint in staging.glob("checkpoint-*"):
        if not (checkpoint / TRAINER_STATE_NAME).is_file():  # killed while the Trainer wrote it
            shutil.rmtree(checkpoint)


def _resume_command(out_path: Path) -> str:
    """The command that continues the run: with the config it was started with, saved in its staging folder."""
    out = out_path.absolute()
    config = outputs.staging_path(out) / CONFIG_FILE
    return shlex.join(["fineprune", "train", "--config", str(config), "--output-dir", str(out), "--resume"])


def _stopped(signum: int, out_path: Path) -> Interrupted:
    checkpoint = last_checkpoint(outputs.staging_path(out_path))
    if checkpoint is None:
        return Interrupted(signum, "no checkpoint was saved yet (training.save_strategy): run the same command again")
    return Interrupted(signum, f"{checkpoint.name} saved; continue with `{_resume_command(out_path)}`")


def _train(
    config: RunConfig, out_path: Path, overwrite: bool, resume: bool, trust_remote_code: bool, first: bool
) -> dict:
    staging = outputs.staging_path(out_path)
    resumed = _resume_from(out_path, staging) if resume else None
    if not (resume or overwrite):
        if last_checkpoint(staging) is not None:
            raise UsageError(
                f"{out_path}: an unfinished run is in {staging}: pass --resume to continue it or --overwrite to start "
                "afresh"
            )
        if _is_run_dir(out_path):
            raise UsageError(
                f"{out_path} already holds an earlier run: pass --overwrite to replace it or --resume to continue it"
            )

    check_data_files(config)
    check_model_code(config, trust_remote_code)
    task = load_task(config.task)  # reads and checks the data: bad data is said before any model loads
    transformers.set_seed(config.training.get("seed", 42))
    tokenizer = load_tokenizer(config.model.name_or_path, trust_remote_code)
    model = load_model(config.model.name_or_path, task, "model.name_or_path", trust_remote_code)
    if config.model.freeze_embeddings:
        freeze_embeddings(model)
    data = task.prepare(tokenizer)
    teacher = _load_teacher(config, task, model, trust_remote_code)
    prepare(model, config.pruning)
    args = config.training_arguments(output_dir=str(staging))
    pruner = find_pruner(model)
    if pruner is not None:
        pruner.validate_run(_total_steps(args, len(data.train)))

    # every check above has passed: from here on the run writes, into its staging folder alone
    with args.main_process_first(local=False, desc="the staging folder"):
        if first:
            _stage(out_path, staging, resumed)
            # Local paths absolute: the run and its exports find their data from any folder.
            (staging / CONFIG_FILE).write_text(dump_config(with_absolute_paths(config)))
    checkpoint = last_checkpoint(staging) if resume else None
    trainer = _trainer(model, args, tokenizer, data, config, teacher)
    stop = StopOnSignal()
    trainer.add_callback(stop)
    try:
        with stop.listening():
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if stop.signum is not None:
            raise Interrupted(stop.signum)
        summary = _finish(trainer, config, task, data, model, staging if first else None)
    except KeyboardInterrupt:
        raise _stopped(signal.SIGINT, out_path) from None
    except Interrupted as error:
        raise _stopped(error.signum, out_path) from None
    if first:
        outputs.publish(staging, out_path)
    return summary


def _finish(trainer: PruningTrainer, config: RunConfig, task: Task, data: TaskData, model, folder: Path | None) -> dict:
    """Save the trained model, evaluate it, and write its summary into ``folder`` (None: a process that writes
    nothing)."""
    trainer.save_model(str(trainer.args.output_dir))
    trainer.save_state()  # trainer_state.json: the log history, pruning/* included
    metrics = task.evaluate(trainer, data, folder)
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
    if folder is not None:
        (folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        _write_eval(folder, metrics, summary["sparsity"])
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


def _load_teacher(
    config: RunConfig, task: Task, student: PreTrainedModel, trust_remote_code: bool = False
) -> PreTrainedModel | None:
    if config.distillation is None:
        return None
    teacher = load_model(config.distillation.teacher, task, "distillation.teacher", trust_remote_code)
    if teacher.config.vocab_size != student.config.vocab_size:
        raise UsageError(
            f"distillation.teacher {config.distillation.teacher}: vocabulary of {teacher.config.vocab_size} tokens, "
            f"the student's has {student.config.vocab_size}"
        )
    if config.distillation.alpha_hidden > 0:
        try:
            hidden_layer_pairs(student.config, teacher.config, config.distillation.hidden_layers)
        except ValueError as error:
            raise UsageError(f"distillation.teacher {config.distillation.teacher}: {error}") from None
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
        alpha_hidden=distill.alpha_hidden if distill else 0.0,
        hidden_layers=distill.hidden_layers if distill else None,
        scores_learning_rate=config.pruning.scores_learning_rate,
    )


def _write_eval(folder: Path, metrics: dict, density: dict) -> dict:
    results = dict(metrics) | {"density": density["density"], "remaining_weights": density["remaining"]}
    (folder / EVAL_FILE).write_text(json.dumps(results, indent=2))
    return results


# -- eval ------------------------------------------------------------------------------------------------------------
def evaluate(
    model_dir: str | Path,
    config_path: str | None = None,
    overrides: list[str] | None = None,
    backend: str = "torch",
    trust_remote_code: bool = False,
) -> dict:
    """Evaluate a run, checkpoint or export with the binary masks of its current state; writes eval_results.json.

    ``backend`` "onnx" or "onnx-quantized" evaluates the folder's graph of ``fineprune export --onnx`` with ONNX
    Runtime instead, on the same features and metrics, and writes eval_results_<backend>.json. The folder's own
    code runs only as :func:`~fineprune.loading.may_run_code` allows (``trust_remote_code``: the user's word).
    """
    model_dir = Path(model_dir)
    outputs.check_complete(model_dir)
    graph = model_dir / ONNX_DIR / GRAPHS[backend] if backend != "torch" else None
    if graph is None and not (has_model(model_dir) or is_compressed_folder(model_dir)):
        raise UsageError(f"{model_dir}: no model here (expected {' or '.join((*MODEL_FILES, WEIGHTS_FILE))})")
    if graph is not None and not graph.is_file():
        raise UsageError(f"{graph}: no ONNX graph here (write it with `fineprune export {model_dir} --onnx`)")
    config = load_config(config_path or find_config(model_dir), overrides)
    check_data_files(config, training=False)
    task = load_task(config.task, training=False)
    source = model_dir if (model_dir / "tokenizer_config.json").is_file() else config.model.name_or_path
    tokenizer = load_tokenizer(source, trust_remote_code)
    if graph is not None:
        # No model is loaded: the folder's config says what the graph's outputs are (their labels' order).
        head = transformers.PretrainedConfig.from_dict(transformers.PretrainedConfig.get_config_dict(str(model_dir))[0])
        task.check_head(head, f"model {model_dir}")
        return _evaluate_graph(graph, backend, config, task, tokenizer, model_dir / f"eval_results_{backend}.json")
    model = load_model(model_dir, task, "model", trust_remote_code).eval()
    data = task.prepare(tokenizer)
    args = config.training_arguments(output_dir=str(model_dir / "eval_tmp"), report_to="none", save_strategy="no")
    trainer = _trainer(model, args, tokenizer, data, config)
    metrics = task.evaluate(trainer, data, model_dir)
    shutil.rmtree(model_dir / "eval_tmp", ignore_errors=True)
    return _write_eval(model_dir, metrics | {"backend": backend}, _density(model))


def _evaluate_graph(graph: Path, backend: str, config: RunConfig, task: Task, tokenizer, results_file: Path) -> dict:
    """The task's metrics of an ONNX graph run by ONNX Runtime, written to ``results_file``."""
    from fineprune.onnx_inference import open_session, predict

    data = task.prepare(tokenizer)
    batch_size = config.training.get("per_device_eval_batch_size", 8)
    outputs = predict(open_session(graph), task.model_inputs(data.eval), tokenizer, batch_size)
    results = task.score(data, outputs, None) | {"backend": backend, "graph": str(graph)}
    results_file.write_text(json.dumps(results, indent=2))
    return results
