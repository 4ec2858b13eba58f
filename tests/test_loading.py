"""Loading folders runs no code but fineprune's own: a folder whose config.json names code of its own (auto_map) is
refused in one line by every command that loads it, and its code never runs, unless --trust-remote-code is given;
fineprune's compact exports load everywhere without the flag, and an edited copy of their modeling file does not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import invoke
from tiny_assets import base_config, mnli_rows, one_thread, vocabulary, write_mnli_tsv, write_tiny_bert
from transformers import AutoModelForSequenceClassification

import fineprune as fp
from fineprune.errors import UsageError
from fineprune.export.compact import compact, save_compact
from fineprune.export.modeling_file import MODELING_FILE
from fineprune.loading import may_run_code

FOREIGN_CODE = """
from pathlib import Path

Path({marker!r}).write_text("the folder's code ran")

from transformers import BertForSequenceClassification


class ForeignModel(BertForSequenceClassification):
    pass
"""
QUICK_BENCH = ["--batch-sizes", "1", "--seq-len", "8", "--threads", "1", "--repeats", "1", "--warmup", "0"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A dense tiny BERT, the same with a foreign auto_map whose module leaves a marker file when imported, a compact
    export of a pruned copy, the data and a config that evaluates any of them."""
    root = tmp_path_factory.mktemp("loading")
    rows = mnli_rows()
    data = write_mnli_tsv(root / "mnli.tsv", rows)
    dense = write_tiny_bert(root / "dense", vocabulary(rows))
    foreign = root / "foreign"
    shutil.copytree(dense, foreign)
    marker = root / "marker"
    (foreign / "foreign_model.py").write_text(FOREIGN_CODE.format(marker=str(marker)))
    config = json.loads((foreign / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "foreign_model.ForeignModel"}
    (foreign / "config.json").write_text(json.dumps(config))

    model = AutoModelForSequenceClassification.from_pretrained(dense)
    fp.prepare(model, fp.PruningConfig(method="magnitude", structure="heads_neurons", final_density=0.4))
    fp.get_pruner(model).set_step(10, 10)
    save_compact(compact(fp.bake(model)), root / "compact")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (dense / name).is_file():
            shutil.copy(dense / name, root / "compact" / name)
    settings = base_config(dense, data, root / "run")
    (root / "eval.yaml").write_text(yaml.safe_dump(settings))
    settings["model"]["name_or_path"] = str(foreign)
    (root / "foreign_student.yaml").write_text(yaml.safe_dump(settings))
    settings["model"]["name_or_path"] = str(dense)
    settings["distillation"] = {"teacher": str(foreign)}
    (root / "foreign_teacher.yaml").write_text(yaml.safe_dump(settings))
    return {"root": root, "dense": dense, "foreign": foreign, "marker": marker, "compact": root / "compact"}


def commands(folders: dict[str, Path], folder: Path) -> dict[str, list]:
    """Every command that loads ``folder`` as a model (train: as the student or as the teacher)."""
    root = folders["root"]
    return {
        "eval": ["eval", folder, "--config", root / "eval.yaml"],
        "export --onnx": ["export", folder, "--onnx", "--out", root / "onnx_copy", "--overwrite"],
        "bench": ["bench", folder, *QUICK_BENCH],
        "train": ["train", "--config", root / "foreign_student.yaml", "--output-dir", root / "refused_run"],
        "train (teacher)": ["train", "--config", root / "foreign_teacher.yaml", "--output-dir", root / "refused_run"],
        "sweep --distill-from": [
            "sweep", "--config", root / "eval.yaml", "--distill-from", folder, "--methods", "magnitude",
            "--densities", "0.5", "--out", root / "refused_sweep",
        ],
    }  # fmt: skip


@pytest.mark.parametrize(
    "command", ["eval", "export --onnx", "bench", "train", "train (teacher)", "sweep --distill-from"]
)
def test_a_folder_naming_its_own_code_is_refused_and_its_code_never_runs(folders, command):
    message = invoke(commands(folders, folders["foreign"])[command], exit_code=2)
    assert len(message.strip().splitlines()) == 1, message
    assert str(folders["foreign"]) in message and "foreign_model" in message and "--trust-remote-code" in message
    assert not folders["marker"].exists()
    assert not (folders["root"] / "refused_run").exists() and not (folders["root"] / "refused_sweep").exists()


def invoke_text(args: list) -> str:
    from typer.testing import CliRunner

    from fineprune.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_with_trust_remote_code_the_folder_loads_with_its_code(folders):
    (row,) = json.loads(invoke_text(["bench", folders["foreign"], *QUICK_BENCH, "--json", "--trust-remote-code"]))
    assert row["model"] == str(folders["foreign"]) and folders["marker"].is_file()
    with one_thread():
        results = invoke(["eval", folders["foreign"], "--config", folders["root"] / "eval.yaml", "--trust-remote-code"])
        dense = invoke(["eval", folders["dense"], "--config", folders["root"] / "eval.yaml"])
    assert results["accuracy"] == dense["accuracy"]  # the same weights in the folder's subclass of BERT
    folders["marker"].unlink()


def test_compact_exports_load_everywhere_without_the_flag(folders):
    compact_dir, root = folders["compact"], folders["root"]
    assert may_run_code(compact_dir) is True
    with one_thread():
        results = invoke(["eval", compact_dir, "--config", root / "eval.yaml"])
        (row,) = json.loads(invoke_text(["bench", compact_dir, *QUICK_BENCH, "--json"]))
        exported = invoke(["export", compact_dir, "--onnx", "--out", root / "compact_copy"])
    assert "accuracy" in results and row["backend"] == "torch"
    assert Path(exported["onnx"]).is_file()
    # the copy that export --onnx saved beside its graphs carries the same modeling file, and loads as its own
    assert may_run_code(root / "compact_copy") is True
    assert (root / "compact_copy" / MODELING_FILE).read_bytes() == (compact_dir / MODELING_FILE).read_bytes()


def test_an_edited_compact_modeling_file_is_refused(folders, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(folders["compact"], edited)
    marker = tmp_path / "marker"
    with (edited / MODELING_FILE).open("a") as file:
        file.write(f"\n__import__('pathlib').Path({str(marker)!r}).write_text('ran')\n")
    for args in (["bench", edited, *QUICK_BENCH], ["eval", edited, "--config", folders["root"] / "eval.yaml"]):
        message = invoke(args, exit_code=2)
        assert (
            f"{edited / MODELING_FILE}: not the compact modeling file" in message and "--trust-remote-code" in message
        )
    assert not marker.exists()


def test_the_decision(folders):
    assert may_run_code(folders["dense"]) is False  # a stock folder: its stock class, no code
    assert may_run_code(folders["dense"], trust_remote_code=True) is True
    assert may_run_code(folders["foreign"], trust_remote_code=True) is True
    assert may_run_code("some-org/some-model") is False  # a hub id: transformers runs no code it is not trusted with
    with pytest.raises(UsageError, match="foreign_model"):
        may_run_code(folders["foreign"])
