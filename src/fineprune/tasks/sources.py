"""Where a task's examples come from: a local file (TSV, CSV, JSON, JSON Lines, each optionally gzipped) or a hub
dataset, read as located records so that every complaint about the data can name its file, row and column.

Local files are read with the standard library: GLUE TSVs contain stray quotes that only ``csv.QUOTE_NONE`` reads
faithfully, and a pure-Python pass over ten thousand rows takes milliseconds.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from fineprune.config import TaskSection
from fineprune.errors import UsageError

FORMATS = (".tsv", ".csv", ".json", ".jsonl")


@dataclass
class Table:
    """Records with the place each came from ("line 3", "record 2", "row 17"), for error messages."""

    where: str  # what a message starts with: the config key and the file, or the hub dataset and split
    columns: list[str]  # the header (of a JSON file: the first record's fields)
    first: str  # the location that shows the columns: the header line, or the first record
    rows: Iterable[tuple[str, dict[str, Any]]]
    class_names: dict[str, list[str]] = field(default_factory=dict)  # a hub ClassLabel column's names by index


def tables(
    section: TaskSection, training: bool, formats: tuple[str, ...] = FORMATS
) -> tuple[Table | None, Table | None]:
    """The (train, validation) tables a task section names. Validation None: carve it off train (a train_file
    without a validation_file, or a hub dataset without the split). Train None: evaluating on the validation_file
    alone, which needs no training data."""
    if section.validation_file is not None and (section.train_file is None or not training):
        if training:
            raise UsageError("task.validation_file is set but task.train_file is not: set both, or neither for the hub")
        return None, read_table(section.validation_file, "task.validation_file", formats)
    if section.train_file is not None:
        train = read_table(section.train_file, "task.train_file", formats)
        if section.validation_file is None:
            return train, None
        return train, read_table(section.validation_file, "task.validation_file", formats)
    if section.dataset is None:
        raise UsageError(f"task.train_file: required for task {section.name} (or task.dataset, a hub dataset)")
    hub, label = load_hub(section.dataset, section.dataset_config)
    train = hub_table(hub, section.train_split, "task.train_split", label)
    if section.validation_split is None and "validation" not in hub:
        return train, None
    return train, hub_table(hub, section.validation_split or "validation", "task.validation_split", label)


def file_format(path: Path, where: str, formats: tuple[str, ...] = FORMATS) -> str:
    """The format a file's name gives (``.gz`` aside), one of ``formats``."""
    name = path.name.lower().removesuffix(".gz")
    fmt = next((suffix for suffix in formats if name.endswith(suffix)), None)
    if fmt is None:
        raise UsageError(
            f"{where}: unsupported file type {''.join(path.suffixes) or '(none)'}; "
            f"supported: {', '.join(formats)}, each optionally .gz"
        )
    return fmt


def read_text(path_str: str, key: str) -> str:
    """The file at ``path_str`` (a config ``key``'s value), decompressed if it ends in .gz, as text."""
    path = Path(path_str).expanduser()
    if not path.is_file():
        raise UsageError(f"{key}: no such file: {path_str}")
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            return handle.read()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise UsageError(f"{key} {path_str}: cannot be read as UTF-8 text: {type(exc).__name__}: {exc}") from exc


def read_table(path_str: str, key: str, formats: tuple[str, ...] = FORMATS) -> Table:
    """A local TSV, CSV, JSON or JSON Lines file as a table."""
    where = f"{key} {path_str}"
    fmt = file_format(Path(path_str), where, formats)
    text = read_text(path_str, key)
    if fmt in (".tsv", ".csv"):
        return _delimited(text, fmt, where)
    records = [
        (location, _as_record(value, where, location)) for location, value in json_values(text, where, fmt == ".jsonl")
    ]
    return Table(where, list(records[0][1]) if records else [], records[0][0] if records else "", records)


def json_values(text: str, where: str, lines: bool = False) -> list[tuple[str, Any]]:
    """The located values of a JSON Lines file (``lines``: each line's value, "line N") or of a JSON document: a list
    gives its items ("record N"), a single object itself ("record 1"); a .json file that is not one JSON document is
    read as JSON Lines (what ``Dataset.to_json`` writes by default)."""
    if lines:
        return _json_lines(text, where)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("["):
            raise UsageError(f"{where}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
        return _json_lines(text, where)
    if isinstance(document, list):
        return [(f"record {number}", value) for number, value in enumerate(document, start=1)]
    return [("record 1", document)]


def load_hub(dataset: str, config_name: str | None) -> tuple[datasets.DatasetDict, str]:
    """A hub dataset and how messages name it; offline, the failure is turned into advice to use a local file."""
    label = f"{dataset}{f' ({config_name})' if config_name else ''}"
    try:
        return datasets.load_dataset(dataset, config_name), label
    except Exception as exc:  # the hub's errors are many and unexported: any failure to load is the user's to fix
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise UsageError(
            f"the hub dataset {label} could not be loaded ({reason}); offline, set task.train_file to a local copy"
        ) from exc


def hub_table(hub: datasets.DatasetDict, split: str, key: str, label: str) -> Table:
    """One split of a hub dataset as a table; a ClassLabel column's names come along (its values are indices)."""
    if split not in hub:
        raise UsageError(f"{key}: the hub dataset {label} has no split {split!r}; it has {', '.join(hub)}")
    data = hub[split]
    columns = list(data.column_names)
    names = {c: f.names for c, f in data.features.items() if isinstance(f, datasets.ClassLabel)}
    values = [data[column] for column in columns]  # column-wise: one Arrow conversion per column, not per row
    rows = (
        (f"row {n}", dict(zip(columns, row, strict=True))) for n, row in enumerate(zip(*values, strict=True), start=1)
    )
    return Table(f"the hub dataset {label}, split {split}", columns, "row 1", rows, names)


def _delimited(text: str, fmt: str, where: str) -> Table:
    """TSV is read with QUOTE_NONE: GLUE's texts contain unbalanced quotes that are not field delimiters."""
    lines = io.StringIO(text, newline="")  # lines end at \n, \r\n or \r only, as csv expects: not at U+2028
    try:
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == ".tsv" else csv.reader(lines)
        header = [column.strip() for column in next((row for row in reader if row), [])]
        first = f"line {reader.line_num}"
        records = []
        for row in reader:
            if not row:
                continue
            location = f"line {reader.line_num}"
            if len(row) != len(header):
                raise UsageError(f"{where}, {location}: {len(row)} fields where the header has {len(header)}")
            records.append((location, dict(zip(header, row, strict=True))))
    except csv.Error as exc:
        raise UsageError(f"{where}, line {reader.line_num}: cannot be read as {fmt}: {exc}") from exc
    return Table(where, header, first, records)


def _json_lines(text: str, where: str) -> list[tuple[str, Any]]:
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                values.append((f"line {number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise UsageError(f"{where}, line {number}: not valid JSON ({exc.msg})") from exc
    return values


def _as_record(value: Any, where: str, location: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{where}, {location}: expected an object with named fields, found {value!r:.60}")
    return value
