"""The named tasks as settings of the two task families: MNLI and QQP are classification with their columns, label
order and hub dataset; SQuAD is extractive QA with its hub dataset. A preset fills the ``task`` keys a config
leaves unset, so ``name: mnli`` with ``labels: [...]`` is MNLI with other labels, never a separate code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from fineprune.config import TaskSection


@dataclass(frozen=True)
class Preset:
    family: Literal["classification", "qa"]
    defaults: dict[str, Any] = field(default_factory=dict)  # task keys, filled where the config leaves them unset
    # Other names a file may give a column (the original GLUE TSV's), by the column's own name.
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Label values of rows to drop rather than refuse: MNLI's "annotators did not agree", which GLUE drops too.
    unlabelled: frozenset[str] = frozenset()


PRESETS: dict[str, Preset] = {
    "classification": Preset("classification", {"label_column": "label"}),
    "qa": Preset("qa"),
    "mnli": Preset(
        "classification",
        {
            "text_columns": ["premise", "hypothesis"],
            "label_column": "label",
            "labels": ["entailment", "neutral", "contradiction"],
            "dataset": "nyu-mll/glue",
            "dataset_config": "mnli",
            "validation_split": "validation_matched",
        },
        aliases={"premise": ("sentence1",), "hypothesis": ("sentence2",), "label": ("gold_label",)},
        unlabelled=frozenset({"", "-"}),
    ),
    "qqp": Preset(
        "classification",
        {
            "text_columns": ["question1", "question2"],
            "label_column": "label",
            "labels": ["not_duplicate", "duplicate"],
            "dataset": "nyu-mll/glue",
            "dataset_config": "qqp",
            "validation_split": "validation",
        },
        aliases={"label": ("is_duplicate",)},
    ),
    "squad": Preset("qa", {"dataset": "rajpurkar/squad", "validation_split": "validation"}),
}


def resolve(section: TaskSection) -> tuple[TaskSection, Preset]:
    """The task section with its preset's defaults filled in, and the preset."""
    preset = PRESETS[section.name]
    filled = {key: value for key, value in preset.defaults.items() if getattr(section, key) is None}
    return section.model_copy(update=filled), preset
