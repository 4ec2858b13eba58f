"""SQuAD end to end on the real all-MiniLM-L6-v2 and a few hundred questions: fine-prune with distillation-free
soft movement steered to 10%, export, and get the same EM/F1 from the export."""

import json

import pytest
from conftest import DATA, minilm_path
from test_pipeline import invoke

SQUAD_DEV = DATA / "squad" / "dev-v1.1.json.gz"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not SQUAD_DEV.is_file(), reason="../shared/data is not present"),
]

CONFIG = """
model:
  name_or_path: {model}
task:
  name: squad
  train_file: {data}
  max_train_samples: 160
  max_eval_samples: 48
  max_seq_length: 192
  doc_stride: 64
pruning:
  method: soft_movement
  scope: global
  final_density: 0.1
  warmup_steps: 2
  cooldown_steps: 4
training:
  output_dir: {out}
  num_train_epochs: 1
  learning_rate: 1.0e-4
  per_device_train_batch_size: 16
  save_strategy: "no"
  use_cpu: true
"""


def test_squad_train_export_eval(tmp_path):
    config = tmp_path / "squad.yaml"
    run, out = tmp_path / "run", tmp_path / "export"
    config.write_text(CONFIG.format(model=minilm_path(), data=SQUAD_DEV, out=run))
    invoke(["train", "--config", str(config)])
    summary = json.loads((run / "summary.json").read_text())
    assert abs(summary["sparsity"]["density"] - 0.1) <= 0.01
    assert set(summary["metrics"]) == {"exact_match", "f1"}
    predictions = json.loads((run / "predictions.json").read_text())
    assert len(predictions) == 48

    invoke(["export", str(run), "--out", str(out)])
    from_export = invoke(["eval", str(out)])
    assert from_export["exact_match"] == summary["metrics"]["exact_match"]
    assert from_export["f1"] == summary["metrics"]["f1"]
    assert from_export["density"] == pytest.approx(summary["sparsity"]["density"], abs=1e-9)
    assert "exact_match" in (out / "README.md").read_text()
