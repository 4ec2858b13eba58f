"""The run configuration: YAML file + ``--set key=value`` overrides -> a validated, typed RunConfig.

Every error names the file and the key, and says what is wrong (with a did-you-mean for misspelt keys).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from transformers import TrainingArguments

from fineprune.errors import UsageError
from fineprune.pruning import PruningConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    name_or_path: str = Field(description="Hub id or local folder of the pretrained (or fine-tuned) encoder.")
    freeze_embeddings: bool = Field(True, description="Keep the embeddings fixed during fine-pruning, as the paper.")


class TaskSection(_Section):
    name: Literal["classification", "qa", "mnli", "qqp", "squad"] = Field(
        description="classification (one text or a pair -> a label) | qa (extractive question answering), or a "
        "preset of them that fills the keys below: mnli, qqp (classification), squad (qa)."
    )
    train_file: str | None = Field(
        None,
        description="Local data file: TSV, CSV, JSON or JSON Lines (qa: SQuAD JSON or JSON Lines), each optionally "
        ".gz; null = the hub dataset.",
    )
    validation_file: str | None = Field(
        None, description="Local file; null with a train_file: carve eval_fraction of it off, reproducibly."
    )
    eval_fraction: float = Field(
        0.2, strict=True, gt=0, lt=1, description="Share of train_file held out for evaluation."
    )
    text_columns: list[str] | None = Field(
        None, description="classification: the text column, or the pair's two: [text] or [premise, hypothesis]."
    )
    label_column: str | None = Field(None, description="classification: the label column (default label).")
    labels: list[str] | None = Field(
        None,
        description="classification: the label names, in the order of the model's outputs (a file may give them as "
        "names or as indices into this list); null = the distinct values of the training file's label column, sorted.",
    )
    dataset: str | None = Field(None, description="Hub dataset id, read when train_file is null.")
    dataset_config: str | None = Field(None, description="The hub dataset's configuration (subset) name.")
    train_split: str = Field("train", description="The hub dataset's split to train on.")
    validation_split: str | None = Field(
        None,
        description="The hub dataset's split to evaluate on; null = validation, or eval_fraction of train_split "
        "carved off when the dataset has no such split.",
    )
    max_train_samples: int | None = Field(None, strict=True, ge=1, description="Keep the first N training examples.")
    max_eval_samples: int | None = Field(None, strict=True, ge=1, description="Keep the first N evaluation examples.")
    max_seq_length: int = Field(128, strict=True, ge=8, description="Tokens per example (per window for qa).")
    doc_stride: int = Field(128, strict=True, ge=1, description="qa: overlap between windows of a long context.")
    n_best: int = Field(20, strict=True, ge=1, description="qa: start/end candidates per window.")
    max_answer_length: int = Field(30, strict=True, ge=1, description="qa: longest answer, in tokens.")
    seed: int = Field(42, strict=True, description="Seed of the train/eval split.")

    @field_validator("text_columns", "labels", mode="before")
    @classmethod
    def _names_as_text(cls, value: Any) -> Any:
        """Names written as numbers in YAML (labels: [0, 1]) are names all the same."""
        if isinstance(value, list):
            return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check_columns(self) -> TaskSection:
        classification = self.name not in ("qa", "squad")
        for key in ("text_columns", "label_column", "labels"):
            if not classification and getattr(self, key) is not None:
                raise ValueError(f"task.{key}: only for classification tasks, not {self.name}")
        if self.name == "classification" and self.text_columns is None:
            raise ValueError(
                "task.text_columns: required for task classification, e.g. [text] or [premise, hypothesis]"
            )
        if self.name in ("classification", "qa") and not (self.train_file or self.validation_file or self.dataset):
            raise ValueError(f"task.train_file: required for task {self.name} (or task.dataset, a hub dataset)")
        columns = self.text_columns or []
        if self.text_columns is not None and not 1 <= len(columns) <= 2:
            raise ValueError(f"task.text_columns: one column or two (a pair), got {len(columns)}")
        if any(not c.strip() for c in columns) or len(set(columns)) != len(columns):
            raise ValueError(f"task.text_columns: names must be distinct and not empty, got {columns}")
        if self.label_column is not None and (not self.label_column.strip() or self.label_column in columns):
            raise ValueError(f"task.label_column: {self.label_column!r} must be a column other than the texts")
        if self.labels is not None:
            if len(self.labels) < 2:
                raise ValueError(f"task.labels: a classifier needs at least two labels, got {self.labels}")
            stripped = [label.strip() for label in self.labels]
            if not all(stripped) or len(set(stripped)) != len(stripped):
                raise ValueError(f"task.labels: names must be distinct and not empty, got {self.labels}")
        return self

    def data_files(self, training: bool = True) -> dict[str, str]:
        """The local files a run reads, by key: evaluating with a validation_file needs no train_file."""
        files = {"task.train_file": self.train_file, "task.validation_file": self.validation_file}
        if not training and self.validation_file is not None:
            files.pop("task.train_file")
        return {key: path for key, path in files.items() if path is not None}


class DistillationSection(_Section):
    teacher: str = Field(description="Folder of the fine-tuned dense teacher (a `method: none` run or export).")
    alpha_ce: float = Field(0.5, ge=0, description="Weight of the task loss.")
    alpha_distil: float = Field(0.5, ge=0, description="Weight of the distillation loss.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature T of the distillation loss.")
    alpha_hidden: float = Field(
        0.0,
        ge=0,
        description="Weight of the hidden-state loss, as CoFi / oBERT: the mean over matched layers of the squared "
        "error per hidden unit between the student's and the teacher's hidden states on the real (non-padding) "
        "tokens. Needs equal hidden sizes (and layer counts unless hidden_layers is given).",
    )
    hidden_layers: dict[int, int] | None = Field(
        None,
        description="With alpha_hidden: student layer -> teacher layer whose outputs are matched (1 = the first "
        "transformer layer, 0 = the embeddings); default every layer to the teacher's at the same depth.",
    )

    @model_validator(mode="after")
    def _check_hidden(self) -> DistillationSection:
        if self.hidden_layers is not None and self.alpha_hidden == 0:
            raise ValueError("hidden_layers is set but alpha_hidden is 0: give alpha_hidden > 0 to use it")
        if self.hidden_layers is not None and not self.hidden_layers:
            raise ValueError("hidden_layers is empty: map at least one student layer to a teacher layer")
        return self


_TRAINING_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
TRAINING_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "logging_steps": 25,
    "eval_strategy": "no",
    "per_device_eval_batch_size": 64,
}


_NUMBER_TYPES = {float: (int, float), int: (int,)}
_TRAINING_TYPES = {f.name: f.type for f in dataclasses.fields(TrainingArguments) if f.init and f.type in _NUMBER_TYPES}


class RunConfig(_Section):
    """A whole run: which model, which task, how to prune, whom to learn from, and the TrainingArguments."""

    model: ModelSection
    task: TaskSection
    pruning: PruningConfig = Field(default_factory=lambda: PruningConfig(method="none"))
    distillation: DistillationSection | None = None
    training: dict[str, Any] = Field(
        default_factory=dict, description="Passed to transformers.TrainingArguments as is."
    )

    @model_validator(mode="after")
    def _check_training(self) -> RunConfig:
        for key in self.training:
            if key not in _TRAINING_FIELDS:
                raise ValueError(f"training.{key}: not a TrainingArguments field{_did_you_mean(key, _TRAINING_FIELDS)}")
            kind, value = _TRAINING_TYPES.get(key), self.training[key]
            if kind and (isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES[kind])):
                raise ValueError(
                    f"training.{key}: expected {'a number' if kind is float else 'an integer'}, got {value!r}"
                )
        return self

    def training_arguments(self, **overrides: Any) -> TrainingArguments:
        """TrainingArguments from the config over fineprune's defaults (no hub, checkpoints each epoch)."""
        values = TRAINING_DEFAULTS | self.training | overrides
        try:
            return TrainingArguments(**values)
        except (ValueError, TypeError) as error:
            raise UsageError(f"training: {error}".splitlines()[0]) from None


def _did_you_mean(key: str, options: set[str] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _section_fields(loc: tuple) -> list[str]:
    """The field names allowed at `loc` in the RunConfig schema (for did-you-mean)."""
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        model = next((c for c in candidates if issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _explain(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    key = ".".join(loc)
    if first["type"] == "extra_forbidden":
        return f"{key}: unknown key{_did_you_mean(loc[-1], _section_fields(loc))}"
    if first["type"] == "missing":
        return f"{key}: required key is missing"
    message = first["msg"].removeprefix("Value error, ")
    if not key or message.startswith(f"{key}."):  # a whole-config or whole-section check: its message names the key
        return message
    if isinstance(first.get("input"), (dict, list)) or "input" not in first:
        return f"{key}: {message}"
    return f"{key}: {message} (got {first['input']!r})"


class _Loader(yaml.SafeLoader):
    """YAML as people write hyper-parameters: 2e-5 is a number (YAML 1.1 wants 2.0e-5 and reads "2e-5" as text,
    which TrainingArguments takes and the optimizer later rejects)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # safe: _Loader is a SafeLoader


# YAML 1.1 reads these as booleans; on the command line they are words (save_strategy=no).
_YAML11_WORDS = {"no", "yes", "on", "off", "y", "n"}


class FreshSection(dict):
    """A section that an earlier ``--set SECTION=null`` emptied: it replaces the file's section instead of merging
    into it, so ``--set distillation=null --set distillation.teacher=T`` means a teacher with default settings."""


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["task.max_train_samples=200", ...]`` -> nested dict; values are read as YAML (so 200 is an int).
    Later pairs win, as on any command line."""
    tree: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {pair!r}: expected KEY=VALUE, e.g. task.max_train_samples=200")
        try:
            value = raw if raw.strip().lower() in _YAML11_WORDS else _load_yaml(raw)
        except yaml.YAMLError:
            value = raw
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if part in node and node[part] is None:
                node[part] = FreshSection()
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UsageError(f"--set {key}: {part} is not a section (an earlier --set gave it a value)")
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not isinstance(value, FreshSection):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: config file not found")
    try:
        data = _load_yaml(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UsageError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(
            f"{path}: expected a mapping of sections (model, task, pruning, ...), got {type(data).__name__}"
        )
    return data


def build_config(data: dict[str, Any], source: str) -> RunConfig:
    """Validate a config dict; errors name `source` (the file) and the key."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise UsageError(f"{source}: {_explain(error)}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config and apply ``--set`` overrides."""
    data = _merge(read_yaml(path), parse_overrides(overrides or []))
    return build_config(data, str(path))


def _absolute(path: str | None, base: Path, always: bool) -> str | None:
    """`path` made absolute against `base` if it is a local path (`always`) or names something there (a folder
    given where a hub id is also allowed); otherwise as it was."""
    if path is None or Path(path).expanduser().is_absolute():
        return path
    local = base / Path(path).expanduser()
    return str(local.resolve()) if always or local.exists() else path


def with_absolute_paths(config: RunConfig, base: str | Path | None = None) -> RunConfig:
    """The config with its local paths (data files, model and teacher folders) absolute, resolved against `base`
    (default: the working folder, against which the command line reads them). A run saves this, so that the run
    and its exports find their data whatever folder they are evaluated from."""
    base = Path(base or Path.cwd())
    task = config.task.model_copy(
        update={
            "train_file": _absolute(config.task.train_file, base, always=True),
            "validation_file": _absolute(config.task.validation_file, base, always=True),
        }
    )
    update: dict[str, Any] = {
        "task": task,
        "model": config.model.model_copy(update={"name_or_path": _absolute(config.model.name_or_path, base, False)}),
    }
    if config.distillation is not None:
        teacher = _absolute(config.distillation.teacher, base, always=False)
        update["distillation"] = config.distillation.model_copy(update={"teacher": teacher})
    return config.model_copy(update=update)


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (written into every run folder)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
