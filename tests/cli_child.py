"""The fineprune command line run in a child process, its output into a file: for tests that stop a job midway.

The children come from a fork server (multiprocessing's "forkserver") that imported fineprune's jobs, and with them
torch and transformers, once (PRELOAD): a fresh interpreter takes seconds to import them on a busy machine, and a
fork of the test process itself could inherit a lock that one of its threads held (tqdm's monitor thread does).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from fineprune.cli import app

# Importable by the fork server, which does not see the tests' folder.
PRELOAD = ["fineprune.cli", "fineprune.run", "fineprune.export.job"]


def run(args: list[str], log: Path) -> None:
    """``fineprune ARGS`` with stdout and stderr into ``log``; the process exits with the command's exit code."""
    sys.stdout = sys.stderr = open(log, "w", buffering=1)  # noqa: SIM115 (open until the process ends)
    torch.set_num_threads(1)
    app([str(a) for a in args], prog_name="fineprune")
