"""Jobs stopped at random moments: a killed `fineprune train`, export (each format) or decompress never leaves a folder
that eval or export take for finished, nor loses the folder that --overwrite was replacing; Ctrl-C and SIGTERM stop a
training run cleanly and say how to resume it.

The jobs run in child processes of a fork server that has imported torch, transformers and fineprune already
(cli_child): a fresh interpreter takes seconds to import them on a busy machine, a fork starts the job at once.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import shlex
import signal
import time
from pathlib import Path

import cli_child
import pytest
import yaml
from conftest import invoke
from tiny_assets import one_thread, tiny_setup_fixture  # noqa: F401 (a fixture)

from fineprune import outputs

STEPS_PER_EPOCH = 6  # the tiny config: 45 training rows, batch 8


FORK_SERVER = multiprocessing.get_context("forkserver")
FORK_SERVER.set_forkserver_preload(cli_child.PRELOAD)


def start(args: list, log: Path) -> multiprocessing.Process:
    """Start `fineprune ARGS` in a child process (see cli_child), its stdout and stderr into ``log``."""
    process = FORK_SERVER.Process(target=cli_child.run, args=([str(a) for a in args], log))
    process.start()
    return process


def wait_for(condition, process: multiprocessing.Process, timeout: float = 120) -> None:
    """Poll ``condition`` until it holds; fail if the process ended first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.is_alive(), "the job ended before the moment it was to be stopped"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def exit_code(process: multiprocessing.Process) -> int:
    """The process's exit code, or minus the signal that ended it."""
    process.join(300)
    return process.exitcode


@pytest.fixture(name="tiny_config")
def tiny_config_fixture(tiny_setup, tmp_path) -> Path:
    """The tiny training config with 4 epochs (24 optimizer steps, a checkpoint per epoch) and its run in tmp_path."""
    config = yaml.safe_load(tiny_setup["config"].read_text())
    config["training"] |= {"num_train_epochs": 4, "output_dir": str(tmp_path / "run")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_saves_a_checkpoint_and_says_how_to_resume(tiny_config, tmp_path, stop):
    run, staging, log = tmp_path / "run", tmp_path / ".run.partial", tmp_path / "train.log"
    process = start(["train", "--config", tiny_config], log)
    wait_for(lambda: outputs.staging_path(run).joinpath("checkpoint-6", "trainer_state.json").is_file(), process)
    os.kill(process.pid, stop)
    assert exit_code(process) == 128 + stop  # 143 for SIGTERM, 130 for Ctrl-C

    lines = log.read_text().splitlines()
    assert "Traceback" not in log.read_text()
    last = re.fullmatch(rf"interrupted by {stop.name}: checkpoint-(\d+) saved; continue with `(.+)`", lines[-1])
    assert last is not None, lines[-3:]
    step, command = int(last[1]), last[2]
    assert 6 < step < 4 * STEPS_PER_EPOCH  # the step under way when the signal came, not the last epoch's
    assert (staging / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert not run.exists()
    error = invoke(["eval", run], exit_code=2)
    where = f"(its files are in {staging})"
    assert error == f"error: {run}: unfinished, its job was interrupted {where}: continue it with `{command}`\n"
    if stop == signal.SIGINT:
        return

    words = shlex.split(command)
    assert words[:2] == ["fineprune", "train"] and words[-1] == "--resume"
    with one_thread():
        invoke(words[1:])
    summary = yaml.safe_load((run / "summary.json").read_text())
    assert summary["optimizer_steps"] == 4 * STEPS_PER_EPOCH
    assert not staging.exists() and not (run / outputs.PARTIAL_MARKER).exists()
    assert invoke(["eval", run])["accuracy"] == summary["metrics"]["accuracy"]


def test_an_unfinished_run_is_resumed_or_replaced_not_mistaken_for_new(tiny_config, tmp_path):
    """After a kill the plain command is refused (the checkpoints are worth keeping); --resume continues."""
    run, log = tmp_path / "run", tmp_path / "train.log"
    process = start(["train", "--config", tiny_config], log)
    wait_for(lambda: outputs.staging_path(run).joinpath("checkpoint-6", "trainer_state.json").is_file(), process)
    os.kill(process.pid, signal.SIGKILL)
    assert exit_code(process) == -signal.SIGKILL
    error = invoke(["train", "--config", tiny_config], exit_code=2)
    assert f"{run}: an unfinished run is in {tmp_path / '.run.partial'}: pass --resume to continue it" in error


# -- SIGKILL at random moments -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module", name="finished")
def finished_fixture(tiny_setup, tmp_path_factory) -> dict[str, Path]:
    """A finished tiny pruned run and its compressed export (decompress reads it), written in this process."""
    from fineprune.config import load_config
    from fineprune.run import train

    root = tmp_path_factory.mktemp("finished")
    with one_thread():
        train(load_config(tiny_setup["config"]), output_dir=str(root / "run"))
    invoke(["export", root / "run", "--compress", "--out", root / "compressed"])
    return {"config": tiny_setup["config"], "run": root / "run", "compressed": root / "compressed"}


JOBS = {  # each job's command, writing into the folder OUT
    "train": ["train", "--config", "{config}", "--output-dir", "{out}"],
    "bake": ["export", "{run}", "--bake-masks", "--out", "{out}"],
    "compact": ["export", "{run}", "--compact", "--out", "{out}"],
    "onnx": ["export", "{run}", "--onnx", "--out", "{out}"],
    "compress": ["export", "{run}", "--compress", "--out", "{out}"],
    "decompress": ["decompress", "{compressed}", "--out", "{out}"],
}


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("job", JOBS)
def test_a_job_killed_at_random_moments_leaves_no_folder_taken_for_finished(job, finished, tmp_path):
    """The job writes its folder once in full (the earlier output; and how long it writes, from the moment its staging
    folder appears); then it is killed (SIGKILL) a random part of that time into its writing, once replacing the
    earlier output with --overwrite, once writing a new folder. The earlier output is still there, byte for byte, or
    was replaced whole; a new folder is absent (eval and export refuse it) or whole. Meanwhile a second writer of the
    same folder is refused."""
    rng, log = random.Random(job), tmp_path / "job.log"
    command = [word.format(**finished, out="{out}") for word in JOBS[job]]

    out = tmp_path / "out"
    process, staged = start([word.format(out=out) for word in command], log), None
    while process.is_alive():
        if staged is None and outputs.staging_path(out).exists():
            staged = time.monotonic()
        time.sleep(0.005)
    assert exit_code(process) == 0 and staged is not None, log.read_text()[-2000:]
    writing, earlier = time.monotonic() - staged, files(out)

    for target, extra in [(out, ["--overwrite"]), (tmp_path / "new", [])]:
        args, staging = [word.format(out=target) for word in command] + extra, outputs.staging_path(target)
        process = start(args, log)
        wait_for(staging.exists, process)
        began, lock = time.monotonic(), target.parent / f".{target.name}.lock"
        error = invoke(args, exit_code=2)
        assert f"{target} is being written by another process (pid {process.pid}, lock {lock})" in error
        time.sleep(max(0.0, rng.uniform(0, writing) - (time.monotonic() - began)))
        process.kill()  # SIGKILL, unless the job has ended
        finished_writing = exit_code(process) == 0

        if extra and files(target) == earlier:
            continue  # the earlier output, intact
        if target.exists():  # a new folder in place, whole: every file of the job's, its staging folder moved there
            assert sorted(files(target)) == sorted(earlier) and not staging.exists()
            continue
        assert not extra and not finished_writing
        for folder in (target, staging):
            for words in (["eval", folder], ["export", folder, "--onnx"]):
                error = invoke(words, exit_code=2)
                assert "unfinished, its job was interrupted" in error if staging.exists() else "no " in error


def test_a_terminated_export_cleans_up_and_keeps_the_earlier_folder(finished, tmp_path):
    """SIGTERM (or Ctrl-C) unwinds an export: its staging folder and lock are removed, the earlier folder stays."""
    out, log = tmp_path / "out", tmp_path / "export.log"
    invoke(["export", finished["run"], "--out", out])
    earlier = files(out)
    process = start(["export", finished["run"], "--onnx", "--out", out, "--overwrite"], log)
    wait_for(lambda: (outputs.staging_path(out) / "config.json").is_file(), process)  # writing
    os.kill(process.pid, signal.SIGTERM)
    assert exit_code(process) == 128 + signal.SIGTERM
    assert log.read_text().splitlines()[-1] == "interrupted by SIGTERM" and "Traceback" not in log.read_text()
    assert files(out) == earlier and sorted(p.name for p in tmp_path.iterdir()) == ["export.log", "out"]
