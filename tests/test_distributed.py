"""The same `fineprune train` under torchrun: two CPU processes (gloo), one global Top-v, identical masks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_assets import base_config, mnli_rows, vocabulary, write_mnli_tsv, write_tiny_bert

pytestmark = pytest.mark.integration


def test_two_processes_end_with_identical_masks(tmp_path):
    rows = mnli_rows(96)
    config = base_config(
        write_tiny_bert(tmp_path / "model", vocabulary(rows)),
        write_mnli_tsv(tmp_path / "mnli.tsv", rows),
        tmp_path / "run",
    )
    config["pruning"] |= {"scope": "global", "final_density": 0.2}
    config["training"] |= {"ddp_backend": "gloo", "save_strategy": "no"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    torchrun = Path(sys.executable).with_name("torchrun")
    fineprune = Path(sys.executable).with_name("fineprune")
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [
        str(torchrun),
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        str(fineprune),
        "train",
        "-c",
        str(path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_agree_on_masks"] is True
    # 72 rows for training over 2 processes x 8 per device: 5 steps per epoch, 10 in all
    assert summary["optimizer_steps"] == 10
    assert summary["sparsity"]["remaining"] == int(0.2 * summary["sparsity"]["total"])
