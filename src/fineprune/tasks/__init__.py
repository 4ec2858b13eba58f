"""Two task families behind one small interface: sequence classification (one text or a pair -> a label) and
extractive question answering. mnli, qqp and squad are presets of them (tasks/presets.py).

``load_task(section)`` returns a :class:`Task` whose examples are read and checked; the run code never branches on
the task's name.
"""

from __future__ import annotations

from fineprune.config import TaskSection
from fineprune.tasks.base import Task, TaskData
from fineprune.tasks.classification import ClassificationTask
from fineprune.tasks.presets import resolve
from fineprune.tasks.qa import QuestionAnsweringTask

HEAD_TASKS = (ClassificationTask, QuestionAnsweringTask)  # one per model head: auto_class, head_suffix

__all__ = ["HEAD_TASKS", "Task", "TaskData", "load_task", "task_class"]


def task_class(section: TaskSection) -> type[Task]:
    """The family of the task a config's ``task`` section names, without reading its examples: what knows its model
    head (``auto_class``)."""
    return QuestionAnsweringTask if resolve(section)[1].family == "qa" else ClassificationTask


def load_task(section: TaskSection, training: bool = True) -> Task:
    """The task a config's ``task`` section names, with its examples read and checked (``training`` False: only the
    evaluation examples, from task.validation_file alone where it is given)."""
    resolved, preset = resolve(section)
    if preset.family == "qa":
        return QuestionAnsweringTask(resolved, training)
    return ClassificationTask(resolved, preset, training)
