"""The task registry: what a task is to the rest of medlens, and how one is found by name.

A task (classify, segment, and the lung-CT and patient-level tasks to come) is one
:class:`TaskSpec`: how to recognise its data, train it from the command line, evaluate a
package of it, predict with it, summarise its metrics, cross-validate it and run its demo. The CLI, the
package loader and the pipelines ask the registry for the spec and call it; nothing
outside a task's own entry tests the task's name.

Built-in tasks are listed here by the dotted path of their entry (``module:ATTRIBUTE``) and
imported on first use, so ``import medlens`` stays light and this module imports no
task; other packages add tasks through the ``medlens.tasks`` entry-point group or
:func:`register_task`.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from medlens.errors import ConfigError

#: name → ``module:attribute`` of its :class:`TaskSpec`, imported when first asked for.
BUILTIN_TASKS: dict[str, str] = {
    "classify": "medlens.tasks.classify:TASK",
    "segment": "medlens.tasks.segment:TASK",
    "patient": "medlens.tasks.patient:TASK",
    "ct": "medlens.tasks.ct:TASK",
}
ENTRY_POINT_GROUP = "medlens.tasks"


class Predictor(Protocol):
    """What a loaded package predicts with; one implementation per task."""

    def load_images(self, paths: Sequence[str | Path]) -> list[Any]:
        """Read inputs the way the model was trained to see them."""

    def preprocess(self, images: Sequence[Any]) -> Any:
        """Inputs → the batch tensor the network takes (for explainers and probes)."""

    def predict(self, inputs: Any, *, batch_size: int = 64) -> list[dict[str, Any]]:
        """One result dict per input; an unreadable input gets an ``error`` entry."""


@dataclass(frozen=True)
class Summary:
    """A task's metrics as one table for the terminal, and the lines that go under it."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TaskSpec:
    """Everything medlens needs to know to run one task end to end.

    Attributes:
        name: the value of ``--task`` and of ``task`` in a package's metadata.
        description: one line for ``--help`` and error messages.
        detect: ``(data, layout) → bool``: does DATA look like this task's data? Asked in
            descending ``priority`` order when ``--task`` is not given.
        train: ``(data, out, config_file, resume, options) → (metrics, run_dir)``: a
            training run from command-line options (``options`` holds every flag's value).
        evaluate: ``(package, data, split, out_dir, strict, layout_options) → metrics``:
            score a loaded package on DATA and write metrics and report into ``out_dir``.
        predictor: ``package → Predictor``.
        predict_files: ``(package, inputs, out, batch_size, strict) → rows``: the
            ``predict`` command (writes what the task writes: a CSV, masks…).
        summary: ``(metrics) → Summary`` for the terminal.
        predict_table: ``(package, rows) → Summary``: the rows ``predict_files`` returned, as
            the terminal shows them.
        demo: ``(out, seed, quick, device) → run_dir`` on built-in synthetic data.
        cross_validate: ``(data, out, config_file, resume, folds, options) → (cv_metrics,
            out_dir)``: ``medlens cv`` for this task, through the shared driver
            (:mod:`medlens.pipelines.cv_driver`: ``cv_plan.json``, ``folds.csv``,
            ``fold_<k>/``, ``cv_metrics.json``, ``cv_report.html`` in ``out_dir``);
            ``folds`` and ``out`` ``None`` take the task's defaults, ``resume`` reads the
            settings from ``out``. ``None``: the task cannot be cross-validated.
        cv_summary: ``(cv_metrics) → Summary``: the cross-validation for the terminal.
        config_model: the pydantic model of a run's config; its ``task`` field is the
            literal task name, the key of the one config union (:mod:`medlens.tasks.config`).
        score: ``(package, cases) → Scored``: the package on ``medlens compare``'s cases
            (:mod:`medlens.evaluate.compare`), one row per compared unit (image or patient);
            ``None``: the scorer registered for the task's name there, if any.
        options: command-line flags only this task takes; giving one to another task is
            a usage error that names the task it belongs to.
        priority: detection order (higher first); the fallback task has the lowest.
    """

    name: str
    description: str
    detect: Callable[[Path, str | None], bool]
    train: Callable[..., tuple[dict[str, Any], Path]]
    evaluate: Callable[..., dict[str, Any]]
    predictor: Callable[[Any], Predictor]
    predict_files: Callable[..., list[dict[str, Any]]]
    summary: Callable[[dict[str, Any]], Summary]
    predict_table: Callable[[Any, list[dict[str, Any]]], Summary]
    demo: Callable[..., Path]
    cross_validate: Callable[..., tuple[dict[str, Any], Path]] | None = None
    cv_summary: Callable[[dict[str, Any]], Summary] | None = None
    config_model: Any = None
    score: Callable[[Any, Any], Any] | None = None
    options: frozenset[str] = frozenset()
    priority: int = 0


_registered: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec, *, replace: bool = False) -> TaskSpec:
    """Add ``spec`` to the registry (``replace=True`` to override a task of that name)."""
    if spec.name in _registered and not replace:
        raise ValueError(f"task {spec.name!r} is already registered")
    _registered[spec.name] = spec
    return spec


def _load(ref: str) -> TaskSpec:
    module, _, attr = ref.partition(":")
    spec = getattr(importlib.import_module(module), attr)
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"{ref} is not a TaskSpec")
    return spec


def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _all_refs() -> dict[str, str]:
    return {**_entry_points(), **BUILTIN_TASKS}


def task_names() -> list[str]:
    """Every task ``--task`` accepts, built-in and plug-in."""
    return sorted({*_all_refs(), *_registered})


def get_task(name: str) -> TaskSpec:
    """The spec of task ``name``.

    Raises:
        ConfigError: no such task (a usage error; the message offers the closest names).
    """
    if name not in _registered:
        refs = _all_refs()
        if name not in refs:
            close = difflib.get_close_matches(str(name), task_names(), n=2)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"--task {name!r} is not a task; choose one of {', '.join(task_names())}.{hint}")
        _registered[name] = _load(refs[name])
    return _registered[name]


def all_tasks() -> list[TaskSpec]:
    """Every task's spec, in detection order."""
    return sorted((get_task(n) for n in task_names()), key=lambda s: -s.priority)


def detect_task(data: Path, layout: str | None = None) -> TaskSpec:
    """The task DATA is for: the first whose ``detect`` accepts it, in priority order."""
    specs = all_tasks()
    for spec in specs:
        if spec.detect(Path(data), layout):
            return spec
    return specs[-1]


def task_of(metadata: dict[str, Any]) -> TaskSpec:
    """The spec of the task a package's metadata names (packages before tasks: classify)."""
    return get_task(str(metadata.get("task") or "classify"))


def check_options(spec: TaskSpec, given: dict[str, Any]) -> None:
    """Refuse flags that belong to another task (``--patch`` on a classifier, …).

    Args:
        spec: the task that will run.
        given: flag → value of every task-specific flag the user set (``None``/False = unset).
    """
    for other in all_tasks():
        if other.name == spec.name:
            continue
        foreign = sorted(f for f in other.options - spec.options if given.get(f) not in (None, False))
        if foreign:
            raise ConfigError(f"{', '.join(foreign)}: option(s) of --task {other.name}, not of --task "
                              f"{spec.name} ({spec.description})")
