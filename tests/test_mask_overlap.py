"""scripts/mask_overlap.py on hand-made folders: the share of kept weights that magnitude would keep too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mask_overlap.py"


def test_overlap_counts_the_kept_weights_magnitude_would_keep(tmp_path):
    pretrained, run = tmp_path / "pretrained", tmp_path / "run"
    pretrained.mkdir(), run.mkdir()
    # |W| ranks entries 5 > 4 > 3 > 2 > 1 > 0 in matrix a, 3 > 2 > 1 > 0 in matrix b.
    a = torch.tensor([[0.5, -0.1, 0.0], [0.2, -0.4, 0.3]])
    b = torch.tensor([[-0.9, 0.1], [0.3, 0.0]])
    save_file({"encoder.a.weight": a, "encoder.b.weight": b}, pretrained / "model.safetensors")
    # a keeps 3 by its scores: entries 0, 1, 2; magnitude's 3 are entries 0, 4, 5: one shared.
    # b keeps 1: entry 2 (the largest signed weight); magnitude's 1 is entry 0 (-0.9): none shared. 1 of 4 in all.
    scores_a = torch.tensor([[9.0, 8.0, 7.0], [0.0, 1.0, 2.0]])
    scores_b = torch.tensor([[0.0, 1.0], [3.0, 2.0]])
    save_file(
        {
            "bert.encoder.a.parametrizations.weight.0.scores": scores_a,
            "bert.encoder.a.parametrizations.weight.original": a,
            "bert.encoder.b.parametrizations.weight.0.scores": scores_b,
            "bert.encoder.b.parametrizations.weight.original": b,
        },
        run / "model.safetensors",
    )
    matrices = {"bert.encoder.a": {"remaining": 3}, "bert.encoder.b": {"remaining": 1}}
    (run / "summary.json").write_text(json.dumps({"sparsity": {"matrices": matrices}}))

    done = subprocess.run([sys.executable, SCRIPT, pretrained, run], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "run: 25.0% of the kept weights are magnitude's"
