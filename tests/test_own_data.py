"""The user's own data end to end, on tiny models that train in seconds: a single-sentence classification file and a
JSON Lines QA file go through train, distillation, structured pruning, eval, export (compact, ONNX, compressed),
bench, sweep and report unchanged; and bad data fails with one line before any model loads."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import invoke
from tiny_assets import SPECIAL_TOKENS, one_thread
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertModel, BertTokenizerFast
from typer.testing import CliRunner

from fineprune.cli import app

WORDS = {  # each class its own words, so that a tiny model learns them in a few dozen steps
    "HUM": ("who", ["wrote songs", "painted walls", "won races", "invented radio"]),
    "LOC": ("where", ["do bears sleep", "was treaty signed", "flows nile", "lies peru"]),
    "NUM": ("how many", ["legs has ant", "days has june", "players form team", "moons orbit mars"]),
    "ENTY": ("what", ["colour has sky", "animal barks", "fruit looks yellow", "metal rusts"]),
}
LABELS = sorted(WORDS)


def questions(count: int = 64) -> list[tuple[str, str]]:
    """TREC-like questions whose class follows from their first words, reproducibly."""
    rng = random.Random(0)
    rows = []
    for i in range(count):
        label = LABELS[i % len(LABELS)]
        start, ends = WORDS[label]
        rows.append((f"{start} {rng.choice(ends)} ?", label))
    return rows


def write_encoder(folder: Path, texts: list[str]) -> Path:
    """A random 2-layer BERT encoder without a head (as a pretrained checkpoint is) and its tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({word for text in texts for word in text.lower().split()})
    # transformers 5 takes the vocabulary as `vocab` (a `vocab_file` argument is silently ignored: all [UNK])
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate([*SPECIAL_TOKENS, *words])}, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        initializer_range=0.2,  # ten times BERT's: a tiny random encoder then learns in a few dozen steps
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def training(out: Path) -> dict:
    return {
        "output_dir": str(out),
        "num_train_epochs": 4,
        "per_device_train_batch_size": 8,
        "learning_rate": 3.0e-3,
        "save_strategy": "no",
        "logging_steps": 50,
        "use_cpu": True,
        "disable_tqdm": True,
    }


def train(config: Path, *sets: str) -> dict:
    args = ["train", "--config", config]
    for value in sets:
        args += ["--set", value]
    with one_thread():
        return invoke(args)


# -- classification --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trec(tmp_path_factory) -> dict[str, Path]:
    """A question file, a tiny encoder, a config and its dense run (the teacher)."""
    root = tmp_path_factory.mktemp("trec")
    rows = questions()
    data = root / "questions.tsv"
    data.write_text("question\tcoarse_label\n" + "".join(f"{q}\t{c}\n" for q, c in rows))
    model = write_encoder(root / "encoder", [q for q, _ in rows])
    task = {
        "name": "classification",
        "train_file": str(data),
        "text_columns": ["question"],
        "label_column": "coarse_label",
        "eval_fraction": 0.25,
        "max_seq_length": 16,
    }
    config = root / "trec.yaml"
    run = {"model": {"name_or_path": str(model)}, "task": task, "pruning": {"method": "none"}}
    config.write_text(yaml.safe_dump(run | {"training": training(root / "dense")}))
    train(config)
    return {"root": root, "config": config, "dense": root / "dense", "data": data}


def test_a_dense_run_on_own_labels_predicts_their_names(trec):
    summary = json.loads((trec["dense"] / "summary.json").read_text())
    assert summary["task"] == "classification"
    assert set(summary["metrics"]) == {"accuracy", "macro_f1"}  # four classes: macro-F1
    assert summary["train_examples"] == 48 and summary["eval_examples"] == 16
    assert summary["metrics"]["accuracy"] > 0.5  # the question word gives the class away
    config = AutoConfig.from_pretrained(trec["dense"])
    assert config.id2label == dict(enumerate(LABELS)) and config.label2id == {n: i for i, n in enumerate(LABELS)}
    assert invoke(["eval", trec["dense"]])["accuracy"] == summary["metrics"]["accuracy"]


def test_structured_distilled_run_exports_compact_onnx_and_compressed(trec):
    root = trec["root"]
    run, compact, packed = root / "structured", root / "compact", root / "packed"
    summary = train(
        trec["config"],
        f"training.output_dir={run}",
        "pruning.method=movement",
        "pruning.structure=heads_neurons",
        "pruning.group_budget=per_kind",
        "pruning.scope=global",
        "pruning.scores_update=platon",
        "pruning.final_density=0.5",
        "pruning.warmup_steps=1",
        "pruning.cooldown_steps=2",
        f"distillation.teacher={trec['dense']}",
        "distillation.alpha_hidden=1.0",
    )
    assert set(summary["metrics"]) == {"accuracy", "macro_f1"}
    exported = invoke(["export", run, "--compact", "--onnx", "--out", compact])
    assert exported["compact"]["parameters"] < exported["compact"]["parameters_before"]
    model = AutoModelForSequenceClassification.from_pretrained(compact, trust_remote_code=True)
    assert model.config.id2label == dict(enumerate(LABELS))  # the export predicts names
    from_export = invoke(["eval", compact])
    assert from_export["accuracy"] == summary["metrics"]["accuracy"]
    assert from_export["macro_f1"] == summary["metrics"]["macro_f1"]
    from_graph = invoke(["eval", compact, "--onnx"])
    assert from_graph["accuracy"] == summary["metrics"]["accuracy"]

    invoke(["export", run, "--compress", "--out", packed])
    assert invoke(["eval", packed])["accuracy"] == summary["metrics"]["accuracy"]
    bench = ["bench", str(trec["dense"]), str(compact), "--batch-sizes", "1", "--seq-len", "16", "--repeats", "1"]
    result = CliRunner().invoke(app, [*bench, "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert {row["model"] for row in json.loads(result.stdout)} >= {str(trec["dense"]), str(compact)}


def test_a_sweep_and_its_report_on_own_data(trec):
    root = trec["root"]
    result = CliRunner().invoke(
        app,
        [
            "sweep",
            "--config",
            str(trec["config"]),
            "--methods",
            "magnitude",
            "--densities",
            "0.5",
            "--distill-from",
            str(trec["dense"]),
            "--out",
            str(root / "sweep"),
            "--set",
            "pruning.warmup_steps=1",
            "--set",
            "pruning.cooldown_steps=2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "classification (accuracy)" in (root / "sweep" / "results.md").read_text()
    result = CliRunner().invoke(app, ["report", str(root / "sweep"), "--out", str(root / "figures")])
    assert result.exit_code == 0, result.output


def test_a_model_with_its_own_label_order_is_evaluated_in_it(trec, tmp_path):
    """The dense run with its head's rows and label names permuted together predicts the same names: evaluated in
    its own order, by torch and by its ONNX graph, it scores what the dense run scores."""
    folder, order = tmp_path / "reordered", [3, 1, 0, 2]  # output i is the dense run's output order[i]
    model = AutoModelForSequenceClassification.from_pretrained(trec["dense"])
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight[order])
        model.classifier.bias.copy_(model.classifier.bias[order])
    model.config.id2label = {i: LABELS[o] for i, o in enumerate(order)}
    model.config.label2id = {name: i for i, name in model.config.id2label.items()}
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "fineprune_config.yaml"):
        shutil.copy(trec["dense"] / name, folder / name)
    dense = json.loads((trec["dense"] / "summary.json").read_text())["metrics"]
    assert dense["accuracy"] > 0.5  # so that reading the outputs in the data's order would score far less
    from_torch = invoke(["eval", folder])
    assert from_torch["accuracy"] == dense["accuracy"] and from_torch["macro_f1"] == pytest.approx(dense["macro_f1"])
    invoke(["export", folder, "--onnx"])
    assert invoke(["eval", folder, "--onnx"])["accuracy"] == dense["accuracy"]


def test_a_model_fine_tuned_with_other_labels_is_one_line(trec, tmp_path):
    other = tmp_path / "other"
    model = AutoModelForSequenceClassification.from_pretrained(trec["dense"])
    model.config.id2label = {0: "ABBR", 1: "DESC", 2: "HUM", 3: "LOC"}
    model.config.label2id = {name: i for i, name in model.config.id2label.items()}
    model.save_pretrained(other)
    args = [
        "train",
        "--config",
        trec["config"],
        "--output-dir",
        tmp_path / "run",
        "--set",
        f"model.name_or_path={other}",
    ]
    error = invoke(args, exit_code=2)
    assert error == (
        f"error: model.name_or_path {other}: the model's labels (ABBR, DESC, HUM, LOC) do not match the data's "
        "(ENTY, HUM, LOC, NUM)\n"
    )


@pytest.mark.parametrize(
    ("rows", "sets", "message"),
    [
        ("question\tlabel\nwho ?\tHUM\n", [], "line 1: no column 'coarse_label'; found: question, label"),
        ("question\tcoarse_label\nwho ?\tHUM\n\twhere\n", [], "line 3, column 'question': empty text"),
        ("question\tcoarse_label\nwho ?\tHUM\nwhere ?\tHUM\n", [], "column 'coarse_label': only 1 label ('HUM')"),
        (
            "question\tcoarse_label\nwho ?\tHUM\nwhat ?\tENTY\n",
            ["task.labels=[HUM, LOC]"],
            "line 3, column 'coarse_label': label 'ENTY' is not one of task.labels (HUM, LOC",
        ),
    ],
)
def test_bad_data_is_one_line_before_any_model_loads(trec, tmp_path, monkeypatch, rows, sets, message):
    import fineprune.run

    data = tmp_path / "bad.tsv"
    data.write_text(rows)
    monkeypatch.setattr(fineprune.run, "load_model", lambda *args: pytest.fail("the model was loaded first"))
    args = ["train", "--config", trec["config"], "--output-dir", tmp_path / "run", "--set", f"task.train_file={data}"]
    args += ["--set", "model.name_or_path=no"]
    for value in sets:
        args += ["--set", value]
    error = invoke(args, exit_code=2)
    assert error.startswith(f"error: task.train_file {data}, {message}") and error.count("\n") == 1


# -- question answering ----------------------------------------------------------------------------------------------
def qa_records(count: int = 24) -> list[dict]:
    """Untitled questions over short contexts (the split goes by context), ids written as numbers."""
    rng = random.Random(1)
    names, places = ["anna", "boris", "chen", "dora"], ["paris", "lima", "oslo", "kyoto"]
    records = []
    for i in range(count):
        name, place = names[i % 4], places[(i // 4) % 4]
        filler = " ".join(rng.choice(names) for _ in range(rng.randint(0, 6)))
        context = f"{filler} {name} lives in {place} .".strip()
        start = context.index(f"lives in {place}") + len("lives in ")
        records.append(
            {
                "id": i,
                "context": context,
                "question": f"where does {name} live ?",
                "answers": {"text": [place], "answer_start": [start]},
            }
        )
    return records


def test_qa_on_a_json_lines_file(tmp_path):
    records = qa_records()
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(record) + "\n" for record in records))
    model = write_encoder(tmp_path / "encoder", [f"{r['context']} {r['question']}" for r in records])
    task = {"name": "qa", "train_file": str(data), "eval_fraction": 0.25, "max_seq_length": 32, "doc_stride": 8}
    pruning = {"method": "movement", "final_density": 0.5, "warmup_steps": 1, "cooldown_steps": 2}
    config = tmp_path / "qa.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"name_or_path": str(model)},
                "task": task,
                "pruning": pruning,
                "training": training(tmp_path / "run"),
            }
        )
    )
    summary = train(config)
    assert set(summary["metrics"]) == {"exact_match", "f1"}
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["train_examples"] + saved["eval_examples"] == len(records)
    predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert len(predictions) == saved["eval_examples"] and all(qid.isdigit() for qid in predictions)

    out = tmp_path / "export"
    invoke(["export", tmp_path / "run", "--onnx", "--out", out])
    from_export = invoke(["eval", out])
    assert from_export["f1"] == summary["metrics"]["f1"]
    assert invoke(["eval", out, "--onnx"])["f1"] == summary["metrics"]["f1"]
