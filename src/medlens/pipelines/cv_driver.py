"""One cross-validation driver for every task, and one folder for its result.

A task brings what is its own — how items fall into folds, how one fold trains into its
folder, how a finished fold is read back, how the folds add up — as a :class:`CVTask`;
:func:`run_cv` owns the rest, the same for classify and segment:

* the output folder's lock (:func:`medlens.io.lock.folder_lock`), so a second job on it is
  refused;
* a started cross-validation is refused without ``resume``, and a resume with another
  task, fold count or config is refused (a :class:`~medlens.errors.ConfigError` naming the
  folder and what to do);
* ``cv_plan.json`` (task, folds, data, the config as JSON, what is grouped and by which
  column) and ``folds.csv`` (item → held-out fold, kept on resume);
* the fold loop: ``fold_<k>/`` per fold, ``k`` from 0, each a run folder as the task's
  ``train`` writes it; with ``resume`` a finished fold is read back, an interrupted one
  continues from its checkpoints, the rest train as usual;
* ``cv_metrics.json`` and ``cv_report.html`` from the task's summary of all folds.

The folder::

    OUT/cv_plan.json   OUT/folds.csv   OUT/fold_0/ … OUT/fold_<k-1>/
    OUT/cv_metrics.json   OUT/cv_report.html   (OUT/run.log, OUT/cache/, … as the task needs)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from medlens.errors import ConfigError
from medlens.io.atomic import atomic_write_json, atomic_write_text
from medlens.io.lock import folder_lock

log = logging.getLogger(__name__)

PLAN = "cv_plan.json"
FOLDS = "folds.csv"
METRICS = "cv_metrics.json"
REPORT = "cv_report.html"


def fold_path(out_dir: str | Path, k: int) -> Path:
    """The run folder of fold ``k`` (from 0): ``OUT/fold_<k>``."""
    return Path(out_dir) / f"fold_{k}"


def default_out(data: str | Path) -> Path:
    """``runs/<data>-cv-<date>-<time>``: where a cross-validation goes without ``--out``."""
    return Path("runs") / f"{Path(data).stem}-cv-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclasses.dataclass(frozen=True)
class CVPlan:
    """What defines a cross-validation; written to ``cv_plan.json`` and compared on resume."""

    task: str
    folds: int
    data: str
    config: dict[str, Any]  # the run's config as JSON
    unit: str  # what is held out together: "patient" or "image"
    group_column: str | None = None  # the column of folds.csv that groups items, if any

    def as_json(self) -> dict[str, Any]:
        return {"task": self.task, "folds": self.folds, "data": self.data,
                "group": {"unit": self.unit, "column": self.group_column},
                "config": json.loads(json.dumps(self.config, default=str))}


@dataclasses.dataclass(frozen=True)
class Assignment:
    """The held-out fold of every item: one row of ``folds.csv`` per item.

    ``columns`` name the row's fields before ``fold``; the first identifies the item.
    """

    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
    fold: list[int]

    @property
    def items(self) -> list[str]:
        return [r[0] for r in self.rows]


class CVTask(Protocol):
    """The task-specific part of a cross-validation (see :func:`run_cv`)."""

    plan: CVPlan  # may fill in what the data shows (the unit) once :meth:`prepare` ran

    def prepare(self, out_dir: Path) -> None:
        """Load (and check) the data once for all folds; nothing is written before this passes."""

    def assign(self) -> Assignment:
        """Items → folds, from the task's seeded rule (the same data and config, the same folds)."""

    def fold_done(self, fold_dir: Path) -> bool:
        """Does ``fold_dir`` hold a finished fold?"""

    def run_fold(self, k: int, fold_of: Sequence[int], fold_dir: Path, *, resume: bool) -> Any:
        """Train and evaluate fold ``k`` (items with ``fold_of == k`` held out) into ``fold_dir``;
        ``resume``: continue from the checkpoints there."""

    def load_fold(self, k: int, fold_of: Sequence[int], fold_dir: Path) -> Any:
        """A finished fold's result, read back (what :meth:`run_fold` returned)."""

    def summarise(self, results: list[Any]) -> dict[str, Any]:
        """All folds' results → the cross-validation metrics (``cv_metrics.json``)."""

    def write_report(self, path: Path, cv: dict[str, Any], results: list[Any]) -> None:
        """Write ``cv_report.html`` at ``path``."""


def run_cv(task: CVTask, out_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Cross-validate ``task`` into ``out_dir`` (locked while it runs); return the metrics.

    Raises:
        ConfigError: fewer than 2 folds; ``out_dir`` holds a started cross-validation and
            ``resume`` is off, or ``resume`` with another task, fold count, config or data.
        RunLockedError: another job writes ``out_dir``.
    """
    plan = task.plan
    if not isinstance(plan.folds, int) or isinstance(plan.folds, bool) or plan.folds < 2:
        raise ConfigError(f"--folds must be an integer >= 2, got {plan.folds!r}")
    out_dir = Path(out_dir)
    with folder_lock(out_dir):
        check_folder(out_dir, plan, resume)
        task.prepare(out_dir)
        plan = task.plan  # what the data showed (e.g. the grouping unit) is known now
        atomic_write_json(out_dir / PLAN, plan.as_json())
        assignment = _assignment(task, out_dir / FOLDS, plan, resume)
        results = []
        for k in range(plan.folds):
            fold_dir = fold_path(out_dir, k)
            if resume and task.fold_done(fold_dir):  # finished earlier: read back, never retrain
                log.info("fold %d: finished before, read back from %s", k, fold_dir)
                results.append(task.load_fold(k, assignment.fold, fold_dir))
            else:
                results.append(task.run_fold(k, assignment.fold, fold_dir,
                                             resume=resume and has_checkpoint(fold_dir)))
        cv = {"task": plan.task, **task.summarise(results)}
        atomic_write_json(out_dir / METRICS, cv)
        task.write_report(out_dir / REPORT, cv, results)
        return cv


def has_checkpoint(fold_dir: Path) -> bool:
    """Did training start in ``fold_dir`` (a ``last.pt``, of the model or of an ensemble member)?"""
    return (fold_dir / "checkpoints" / "last.pt").exists() or any(fold_dir.glob("member*/checkpoints/last.pt"))


def started(out_dir: Path) -> bool:
    """Does ``out_dir`` hold a cross-validation (a plan, the folds, or a fold's files)?"""
    if (out_dir / PLAN).exists() or (out_dir / FOLDS).exists():
        return True
    return any(d.is_dir() and any(d.iterdir()) for d in out_dir.glob("fold_*"))


def read_plan(out_dir: str | Path) -> dict[str, Any]:
    """The ``cv_plan.json`` of a cross-validation folder (``--resume`` reads its settings here).

    Raises:
        ConfigError: no readable plan there.
    """
    path = Path(out_dir) / PLAN
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(plan, dict) or not {"task", "folds", "config"} <= set(plan):
            raise ValueError("task, folds or config missing")
    except (OSError, ValueError) as e:
        raise ConfigError(f"{out_dir}: no cross-validation to resume ({path.name}: "
                          f"{getattr(e, 'strerror', None) or e}); point --out at a cross-validation "
                          "folder, or run without --resume") from None
    return plan


def plan_for_resume(out: Path | None, data: str | Path | None = None) -> dict[str, Any]:
    """The plan of the cross-validation ``--resume`` continues; DATA, when it names an
    existing path, must be the data that run cross-validated."""
    if out is None:
        raise ConfigError("--resume needs --out pointing at an existing cross-validation folder")
    plan = read_plan(out)
    if data is not None and Path(data).exists() and plan.get("data") \
            and Path(plan["data"]).resolve() != Path(data).resolve():
        raise ConfigError(f"{out} cross-validated {plan['data']}, not {data}; give the same data to "
                          "resume, or choose another --out")
    return plan


def changed_settings(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Settings of ``old`` (a saved plan's config) that ``new`` changes, as dotted names.
    A setting absent from ``old`` was added to medlens after the plan was written; its
    default keeps the old behaviour (the rule for new settings), so it does not count."""
    out = []
    for k, v in old.items():
        w = new.get(k)
        if isinstance(v, dict) and isinstance(w, dict):
            out += changed_settings(v, w, f"{prefix}{k}.")
        elif k not in new or v != w:
            out.append(f"{prefix}{k}")
    return sorted(out)


def check_folder(out_dir: Path, plan: CVPlan, resume: bool) -> None:
    """Refuse a started cross-validation without ``resume``, and a resume of another one."""
    if not resume:
        if started(out_dir):
            raise ConfigError(f"{out_dir} already holds a cross-validation; pass --resume to continue it "
                              "or choose another --out")
        return
    if not (out_dir / PLAN).exists():
        if started(out_dir):
            raise ConfigError(f"{out_dir} holds folds but no {PLAN}, so it cannot be resumed; "
                              "choose another --out")
        return  # nothing was written yet: start it
    old, new = read_plan(out_dir), plan.as_json()
    differ = []
    if old.get("task") != new["task"]:
        differ.append(f"task {old.get('task')}, not {new['task']}")
    if old.get("folds") != new["folds"]:
        differ.append(f"{old.get('folds')} folds, not {new['folds']}")
    keys = changed_settings(old.get("config") or {}, new["config"])
    if keys:
        differ.append("another config (" + ", ".join(keys) + ")")
    if differ:
        raise ConfigError(f"{out_dir / PLAN} was written with {'; '.join(differ)}; resume with the same "
                          "settings (`medlens cv DATA --out DIR --resume` reads them from the folder) "
                          "or choose another --out")


def _assignment(task: CVTask, path: Path, plan: CVPlan, resume: bool) -> Assignment:
    """The task's assignment; on resume the one saved in ``folds.csv`` (the data must not have changed)."""
    a = task.assign()
    if resume and path.exists():
        with path.open(newline="", encoding="utf-8") as fh:
            saved = {row[a.columns[0]]: int(row["fold"]) for row in csv.DictReader(fh)}
        if set(saved) != set(a.items) or len(set(saved.values())) != plan.folds:
            raise ConfigError(f"{path}: the data set or --folds changed since the run started; "
                              "start a new run in another --out")
        return dataclasses.replace(a, fold=[saved[i] for i in a.items])
    if sorted(set(a.fold)) != list(range(plan.folds)):
        raise ConfigError(f"could not form {plan.folds} non-empty folds from {len(a.rows)} items "
                          f"(held out by {plan.unit})")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*a.columns, "fold"])
    w.writerows((*row, int(f)) for row, f in zip(a.rows, a.fold, strict=True))
    atomic_write_text(path, buf.getvalue())
    return a
