"""Output folders are written beside their target and renamed into place: a kill at any moment leaves the earlier
folder or the new one whole, and a second writer is refused."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fineprune import outputs
from fineprune.errors import UsageError

SRC = Path(outputs.__file__).parents[1]


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name != target.name)


def test_a_finished_block_moves_the_folder_into_place(tmp_path):
    target = tmp_path / "out"
    with outputs.writing(target) as staging:
        assert staging == tmp_path / ".out.partial" and not target.exists()
        (staging / "model.txt").write_text("new")
    assert tree(target) == {"model.txt": "new"}
    assert leftovers(target) == []  # no staging folder, no lock file


def test_the_earlier_folder_stays_whole_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "model.txt").write_text("old")
    with pytest.raises(UsageError, match="out is not empty: pass --overwrite to replace it"), outputs.writing(target):
        pass
    with outputs.writing(target, overwrite=True, note="export it again") as staging:
        (staging / "model.txt").write_text("new")
        assert tree(target) == {"model.txt": "old"}
        with pytest.raises(UsageError, match=r"\.out\.partial: unfinished, its job was interrupted: export it again"):
            outputs.check_complete(staging)
    assert tree(target) == {"model.txt": "new"} and leftovers(target) == []
    outputs.check_complete(target)


@pytest.mark.parametrize("earlier", ["link", "file"])
def test_an_earlier_link_or_file_is_replaced_and_a_links_folder_left_alone(tmp_path, earlier):
    target, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "model.txt").write_text("old")
    if earlier == "link":
        target.symlink_to(elsewhere)
    else:
        target.write_text("old")
    with outputs.writing(target, overwrite=True) as staging:
        (staging / "model.txt").write_text("new")
    assert not target.is_symlink() and tree(target) == {"model.txt": "new"}
    assert tree(elsewhere) == {"model.txt": "old"} and leftovers(target) == ["elsewhere"]


@pytest.mark.parametrize("name", [".", ".."])
def test_a_target_named_dot_is_refused(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"name the folder itself, not \. or \.\."), outputs.writing(Path(name)):
        pass


def test_a_failed_job_leaves_the_earlier_folder_and_no_staging(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "model.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), outputs.writing(target, overwrite=True) as staging:
        (staging / "model.txt").write_text("half")
        raise KeyboardInterrupt
    assert tree(target) == {"model.txt": "old"} and leftovers(target) == []


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


@contextmanager
def killed_before(step: int) -> Iterator[list[str]]:
    """Kill the block before its ``step``-th file-system change (each rename, unlink, rmdir, shutil.rmtree's
    included): yields the steps taken. The block must be killed: one that runs to its end fails."""
    steps: list[str] = []

    def counted(function):
        def run(*args, **kwargs):
            if len(steps) == step:
                raise Killed
            steps.append(function.__name__)
            return function(*args, **kwargs)

        return run

    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        for name in ("rename", "replace", "unlink", "rmdir"):
            patch.setattr(os, name, counted(getattr(os, name)))
        yield steps


def old_and_staged(tmp_path: Path) -> tuple[Path, Path]:
    """A target holding the old folder and a complete staging folder beside it, with a file and a subfolder."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "model.txt").write_text("old")
    staging = outputs.start(target, "export it again")
    (staging / "model.txt").write_text("new")
    (staging / "onnx").mkdir()
    (staging / "onnx" / "model.onnx").write_text("new")
    return target, staging


@pytest.mark.parametrize("kill_before", range(5))
def test_a_kill_at_each_step_of_the_swap_keeps_one_whole_folder(tmp_path, kill_before):
    """The swap is five file-system steps (unmark, old aside, new in, the old folder's file and folder deleted); kill
    before each, then let the next writer recover: the target holds the old folder or the new one, nothing else."""
    target, staging = old_and_staged(tmp_path)
    with killed_before(kill_before):
        outputs.publish(staging, target)
    with outputs.locked(target):
        outputs.recover(target)
    if kill_before == 0:  # before the commit: the old folder stays, the staging folder is left to its job, marked
        assert tree(target) == {"model.txt": "old"} and leftovers(target) == [".out.partial"]
        with pytest.raises(UsageError, match="unfinished"):
            outputs.check_complete(staging)
    else:
        assert tree(target) == {"model.txt": "new", "onnx/model.onnx": "new"} and leftovers(target) == []


@pytest.mark.parametrize("kill_before", range(5))
def test_a_staging_folder_killed_during_its_deletion_is_never_taken_for_complete(tmp_path, kill_before):
    target, staging = old_and_staged(tmp_path)
    with killed_before(kill_before):
        outputs.discard(staging)
    with outputs.locked(target):
        outputs.recover(target)
    assert tree(target) == {"model.txt": "old"}
    assert not staging.exists() or (staging / outputs.PARTIAL_MARKER).is_file()


def test_a_staging_folder_killed_before_its_mark_is_removed(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "model.txt").write_text("old")
    outputs.staging_path(target).mkdir()  # made, not yet marked
    outputs.recover(target)
    assert tree(target) == {"model.txt": "old"} and leftovers(target) == []


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path):
    target = tmp_path / "out"
    # the writer: a process that holds the lock (fineprune's package imports torch: load the module alone, fast)
    holder = (
        "import sys, time, types; from pathlib import Path\n"
        f"package = types.ModuleType('fineprune'); package.__path__ = [{str(SRC / 'fineprune')!r}]\n"
        "sys.modules['fineprune'] = package\n"
        "from fineprune.outputs import locked\n"
        f"with locked(Path({str(target)!r})):\n"
        "    print('locked', flush=True); time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "locked\n"
        refused = rf"out is being written by another process \(pid {writer.pid}, lock "
        with pytest.raises(UsageError, match=refused), outputs.locked(target):
            pass
    finally:
        writer.kill()
        writer.wait()
    assert (tmp_path / ".out.lock").read_text() == f"{writer.pid}\n"  # a killed writer leaves its lock file
    with outputs.locked(target):
        assert (tmp_path / ".out.lock").read_text() == f"{os.getpid()}\n"
    assert not (tmp_path / ".out.lock").exists()


WRITER = """
import sys, time, types
from pathlib import Path
package = types.ModuleType("fineprune"); package.__path__ = [sys.argv[1]]; sys.modules["fineprune"] = package
from fineprune.outputs import writing
target = Path(sys.argv[2])
for generation in range(1, 10**6):
    with writing(target, overwrite=True) as staging:
        for part in range(20):
            (staging / f"part{part}.txt").write_text(str(generation))
    print(generation, flush=True)
"""


def test_random_kills_of_a_writer_never_leave_a_torn_folder(tmp_path):
    """A process rewriting a folder of 20 files over and over, killed (SIGKILL) at random moments: after the next
    writer's recovery the folder is always one generation whole, never older than the last one published."""
    target, rng = tmp_path / "out", random.Random(0)
    for _ in range(6):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(SRC / "fineprune"), str(target)], stdout=subprocess.PIPE, text=True
        )
        time.sleep(rng.uniform(0.05, 0.4))
        writer.send_signal(signal.SIGKILL)
        published = [int(line) for line in writer.communicate()[0].split()]
        with outputs.locked(target):
            outputs.recover(target)
        if not target.exists():  # killed before its first folder was complete
            assert not published
            continue
        generations = set(tree(target).values())
        assert len(generations) == 1 and len(tree(target)) == 20
        assert int(generations.pop()) >= max(published, default=0)
        outputs.check_complete(target)
