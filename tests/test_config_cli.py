"""Bad input gets a one-line error naming the file or key, exit code 2, and loses nothing."""

import gzip
import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import MNLI_SAMPLE, minilm_path
from tiny_assets import mnli_rows, one_thread, tiny_setup_fixture, write_mnli_tsv  # noqa: F401 (fixture by name)
from typer.testing import CliRunner

from fineprune.cli import app
from fineprune.config import load_config, parse_overrides
from fineprune.errors import UsageError

runner = CliRunner()

BASE = """
model:
  name_or_path: {model}
task:
  name: mnli
  train_file: {data}
  max_train_samples: 48
  max_eval_samples: 16
  max_seq_length: 48
pruning:
  method: magnitude
  final_density: 0.5
  warmup_steps: 1
  cooldown_steps: 1
training:
  output_dir: {out}
  num_train_epochs: 1
  per_device_train_batch_size: 8
  save_strategy: "no"
  use_cpu: true
"""


@pytest.fixture
def base(tmp_path):
    def write(text: str | None = None, **fields) -> str:
        values = {"model": "unused", "data": MNLI_SAMPLE, "out": tmp_path / "run"} | fields
        path = tmp_path / "config.yaml"
        path.write_text((text or BASE).format(**values))
        return str(path)

    return write


def fail(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output  # one line (progress bars of the loading may come before it)
    assert "Traceback" not in result.output and result.output.rstrip().endswith(errors[0])
    return errors[0]


def test_yaml_syntax_error(base):
    path = base("model: [unclosed\n")
    assert "invalid YAML at line" in fail(["train", "--config", path]) and path in fail(["train", "--config", path])


def test_unknown_key_has_did_you_mean(base):
    path = base(BASE.replace("  max_seq_length: 48", "  max_seq_lenght: 48"))
    message = fail(["train", "--config", path])
    assert path in message and "task.max_seq_lenght: unknown key (did you mean 'max_seq_length'?)" in message


def test_unknown_training_argument_has_did_you_mean(base):
    message = fail(["train", "--config", base(), "--set", "training.learning_rat=1e-4"])
    assert "training.learning_rat: not a TrainingArguments field (did you mean 'learning_rate'?)" in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("pruning.method=random", "pruning.method"),
        ("task.name=cola", "task.name"),
        ("pruning.final_density=1.5", "pruning.final_density"),
        ("pruning.final_density=0", "pruning.final_density"),
        # number-valued TrainingArguments fields refuse text at config time, not in the optimizer
        ("training.learning_rate=fast", "training.learning_rate: expected a number, got 'fast'"),
        ("training.seed=1.5", "training.seed: expected an integer, got 1.5"),
        ("training.num_train_epochs=true", "training.num_train_epochs: expected a number, got True"),
    ],
)
def test_bad_values_name_the_key(base, override, expected):
    assert expected in fail(["train", "--config", base(), "--set", override])


def test_missing_config_file(tmp_path):
    assert "config file not found" in fail(["train", "--config", str(tmp_path / "nope.yaml")])


def test_set_values_are_typed_by_yaml():
    assert parse_overrides(["task.max_train_samples=200", "pruning.scope=global", "training.use_cpu=true"]) == {
        "task": {"max_train_samples": 200},
        "pruning": {"scope": "global"},
        "training": {"use_cpu": True},
    }
    assert parse_overrides(["training.save_strategy=no"]) == {"training": {"save_strategy": "no"}}
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_overrides(["task.max_train_samples"])


def test_exponents_without_a_dot_are_numbers_in_files_and_overrides(base):
    """YAML 1.1 reads 2e-4 as the string "2e-4"; TrainingArguments took it and AdamW failed with a TypeError."""
    path = base(BASE.replace("  num_train_epochs: 1", "  num_train_epochs: 1\n  learning_rate: 2e-4"))
    assert load_config(path).training["learning_rate"] == 2e-4
    config = load_config(
        path, ["training.learning_rate=3E-5", "pruning.final_density=5e-2", "training.weight_decay=-1e1"]
    )
    assert config.training["learning_rate"] == 3e-5 and config.pruning.final_density == 0.05
    assert config.training["weight_decay"] == -10.0 and isinstance(config.training["weight_decay"], float)
    assert parse_overrides(["training.run_name=e5", "training.hub_model_id=2e"])["training"] == {
        "run_name": "e5",
        "hub_model_id": "2e",
    }


def test_a_section_set_to_null_then_given_keys_starts_afresh(base):
    path = base(BASE + "distillation:\n  teacher: runs/a\n  alpha_ce: 0.9\n  temperature: 3.0\n")
    merged = load_config(path, ["distillation.teacher=runs/b"]).distillation
    assert (merged.teacher, merged.alpha_ce, merged.temperature) == ("runs/b", 0.9, 3.0)  # merged into the file's
    fresh = load_config(path, ["distillation=null", "distillation.teacher=runs/b"]).distillation
    assert (fresh.teacher, fresh.alpha_ce, fresh.temperature) == ("runs/b", 0.5, 2.0)  # the defaults, not the file's
    assert load_config(path, ["distillation.teacher=runs/b", "distillation=null"]).distillation is None  # last wins
    with pytest.raises(UsageError, match="training.seed.x: seed is not a section"):
        parse_overrides(["training.seed=1", "training.seed.x=2"])


def test_shipped_configs_are_valid():
    from pathlib import Path

    configs = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))
    assert len(configs) >= 16
    for path in configs:
        load_config(path)


# -- errors found once the model and data are read: the real model, nothing trained ------------------------------
@pytest.fixture
def real(base):
    return lambda **fields: base(model=minilm_path(), **fields)


@pytest.mark.integration
def test_run_too_short_for_the_schedule(real):
    message = fail(
        ["train", "--config", real(), "--set", "pruning.warmup_steps=4", "--set", "pruning.cooldown_steps=4"]
    )
    assert "6 optimizer steps, not more than warm-up 4 + cool-down 4" in message


@pytest.mark.integration
def test_missing_data_file(real, tmp_path):
    message = fail(["train", "--config", real(data=tmp_path / "missing.tsv")])
    assert "missing.tsv" in message


@pytest.mark.integration
def test_wrong_columns_and_unknown_labels(real, tmp_path):
    wrong = tmp_path / "wrong.tsv"
    wrong.write_text("premise_text\thypothesis\tgold_label\na\tb\tneutral\n")
    assert "wrong.tsv" in fail(["train", "--config", real(data=wrong)])
    labels = tmp_path / "labels.tsv.gz"
    with gzip.open(labels, "wt") as handle:
        handle.write("sentence1\tsentence2\tgold_label\na\tb\tneutral\nc\td\tmaybe\n")
    message = fail(["train", "--config", real(data=labels)])
    assert "labels.tsv.gz" in message and "maybe" in message


@pytest.mark.integration
def test_empty_dataset_after_filtering(real, tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("sentence1\tsentence2\tgold_label\na\tb\t-\nc\td\t-\n")
    assert "empty" in fail(["train", "--config", real(data=empty)])


@pytest.mark.integration
def test_teacher_with_other_label_count(real, tmp_path):
    from transformers import AutoModelForSequenceClassification

    teacher = tmp_path / "teacher"
    AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2).save_pretrained(teacher)
    path = real()
    with open(path, "a") as handle:
        handle.write(f"distillation:\n  teacher: {teacher}\n")
    message = fail(["train", "--config", path])
    assert "distillation.teacher" in message and "2 labels" in message and "3" in message


@pytest.mark.integration
def test_earlier_run_is_refused_and_kept(real, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"precious": True}))
    message = fail(["train", "--config", real()])
    assert "already holds an earlier run" in message and "--overwrite" in message
    assert json.loads((run / "summary.json").read_text()) == {"precious": True}


def test_export_of_a_run_without_pruned_model(tmp_path):
    (tmp_path / "run").mkdir()
    assert "no trained model" in fail(["export", str(tmp_path / "run"), "--out", str(tmp_path / "out")])


def test_a_missing_data_file_is_reported_before_any_model_loads(base, tmp_path, monkeypatch):
    """The model ("unused") cannot even be found: the error must still be the data file's."""
    message = fail(["train", "--config", base(data=tmp_path / "missing.tsv")])
    assert message == f"error: task.train_file: no such file: {tmp_path / 'missing.tsv'}"
    import fineprune.run

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"")
    (run / "fineprune_config.yaml").write_text((tmp_path / "config.yaml").read_text())
    monkeypatch.setattr(fineprune.run, "load_model", lambda *args: pytest.fail("the model was loaded first"))
    message = fail(["eval", str(run), "--set", f"task.validation_file={tmp_path / 'gone.tsv'}"])
    assert message == f"error: task.validation_file: no such file: {tmp_path / 'gone.tsv'}"


# -- tiny real runs: the tiny BERT of tiny_assets ------------------------------------------------------------------
def tiny_train(setup: dict, out: Path, *sets: str):
    config = setup["config"]
    args = ["train", "--config", str(config), "--output-dir", str(out), "--set", "training.num_train_epochs=1"]
    for value in sets:
        args += ["--set", value]
    with one_thread():
        return runner.invoke(app, args)


def test_train_prints_the_result_alone_on_stdout(tiny_setup, tmp_path):
    """`fineprune train ... | jq .metrics`: the Trainer's log dicts and progress go to stderr."""
    result = tiny_train(tiny_setup, tmp_path / "run", "training.logging_steps=1", "training.disable_tqdm=false")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(printed) == {"metrics", "density"} and "accuracy" in printed["metrics"]
    assert "'loss'" in result.stderr and "train_runtime" in result.stderr  # the logs did go somewhere


def test_a_run_and_its_copies_evaluate_from_any_folder(tiny_setup, tmp_path, monkeypatch):
    """A run saves its data paths absolute; an export that went elsewhere evaluates on the user's own
    validation file without the training file it was made with."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (work / "data").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(tiny_setup["train_file"], work / "data" / "mnli.tsv")
    monkeypatch.chdir(work)
    result = tiny_train(tiny_setup, Path("run"), "task.train_file=data/mnli.tsv")
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((work / "run" / "fineprune_config.yaml").read_text())
    assert saved["task"]["train_file"] == str(work / "data" / "mnli.tsv")
    trained = json.loads(result.stdout)["metrics"]["accuracy"]

    monkeypatch.chdir(elsewhere)
    with one_thread():
        result = runner.invoke(app, ["eval", str(work / "run")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == trained  # the same held-out split, found from elsewhere

    shipped = elsewhere / "shipped"
    shutil.copytree(work / "run", shipped)
    saved["task"]["train_file"] = "../shared/data/mnli/dev_matched.tsv.gz"  # as an export made elsewhere holds
    (shipped / "fineprune_config.yaml").write_text(yaml.safe_dump(saved))
    assert "task.train_file: no such file" in fail(["eval", str(shipped)])
    own = elsewhere / "mine.tsv"
    write_mnli_tsv(own, mnli_rows(12))
    with one_thread():
        result = runner.invoke(app, ["eval", str(shipped), "--set", f"task.validation_file={own}"])
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads(result.stdout)["accuracy"] <= 1
