"""Cross-validation of a segmenter: the segment part (:class:`SegmentCV`) of the shared
driver (:mod:`medlens.pipelines.cv_driver`) — patient or institution folds, one training run
per fold (:func:`medlens.segment.workflow.train_segmentation`), the per-patient summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import ConfigError
from medlens.io.runlog import logged_run
from medlens.segment.config import SegmentConfig
from medlens.segment.workflow import config_from_cli, train_segmentation

logger = logging.getLogger(__name__)
DEFAULT_FOLDS = 3  # without --folds, unless few groups call for leave-one-group-out


@logged_run("out_dir")  # out_dir/run.log; each fold writes its own
def cross_validate(cfg: SegmentConfig, out_dir: str | Path, *, folds: int | None = 3,
                   resume: bool = False) -> dict[str, Any]:
    """Leave-patients-out cross-validation through :func:`~medlens.pipelines.cv_driver.run_cv`
    (``out_dir`` locked; ``cv_plan.json``, ``folds.csv``, ``fold_<k>/``, ``cv_metrics.json``,
    ``cv_report.html``): each fold's patients are the test set once, never trained on.

    Returns per-fold metrics and the mean per-patient-volume Dice over all test patients.
    With ``resume`` finished folds (their ``report.html`` written) are read back, an
    interrupted fold continues from its checkpoints, and the rest train as usual. Folds hold out
    whole groups of ``cfg.group_by`` (:mod:`medlens.data.groups`, the mechanism classify uses);
    ``folds=None``: :func:`medlens.data.groups.fold_count` (leave-one-group-out for few sites).
    """
    from medlens.pipelines.cv_driver import run_cv

    return run_cv(SegmentCV(cfg, folds), out_dir, resume=resume)


class SegmentCV:
    """The segment part of a cross-validation (:class:`~medlens.pipelines.cv_driver.CVTask`).

    Patients fall into ``folds`` groups by :func:`~medlens.segment.data.patient_folds` with
    the run's seed; the validation patient of each fold (for early stopping) is drawn from
    the rest. The data are decoded once, into ``OUT/cache``, for all folds.
    """

    def __init__(self, cfg: SegmentConfig, folds: int | None) -> None:
        from medlens.data.groups import parse_group_by
        from medlens.pipelines.cv_driver import CVPlan

        self.cfg = cfg
        self.grouping = parse_group_by(cfg.group_by)
        self.auto_folds = folds is None  # decided in prepare, once the groups are known
        self.plan = CVPlan(task="segment", folds=DEFAULT_FOLDS if folds is None else folds, data=str(cfg.data),
                           config=cfg.model_dump(mode="json"), unit=self.grouping.unit, group_column="patient")

    def prepare(self, out_dir: Path) -> None:
        from medlens.segment.layouts import load_segmentation_dataset

        cfg = self.cfg
        self.out_dir = out_dir
        self.index = load_segmentation_dataset(cfg.data, layout=cfg.layout, mask_pattern=cfg.mask_pattern)
        from medlens.segment.views import view_type

        view_type(cfg.spatial_dims).check_layout(self.index)
        self.patients = sorted({str(r.patient) for r in self.index.records})
        from medlens.data.groups import fold_count, unit_of

        self.group_of = {p: unit_of(p, self.grouping) for p in self.patients}  # usage errors before training
        if self.auto_folds:
            import dataclasses

            k = fold_count(len(set(self.group_of.values())), self.grouping, None, DEFAULT_FOLDS)
            self.plan = dataclasses.replace(self.plan, folds=k)

    def assign(self) -> Any:
        from medlens.pipelines.cv_driver import Assignment
        from medlens.segment.data import patient_folds

        if self.grouping.kind == "patient":
            groups = patient_folds(self.patients, self.plan.folds, seed=self.cfg.train.seed)
        else:  # whole institutions (or regex groups) held out together
            from medlens.data.groups import group_folds

            groups = group_folds(self.patients, self.plan.folds, by=self.grouping, seed=self.cfg.train.seed)
        fold = {p: k for k, group in enumerate(groups) for p in group}
        return Assignment(("patient",), [(p,) for p in self.patients], [fold[p] for p in self.patients])

    def _patients(self, k: int, fold_of: Any) -> tuple[list[str], list[str]]:
        """Test patients of fold ``k`` and its one validation patient."""
        test = [p for p, f in zip(self.patients, fold_of, strict=True) if f == k]
        rest = [p for p in self.patients if p not in test]
        return test, [rest[np.random.default_rng(self.cfg.train.seed + k).integers(len(rest))]]

    def fold_done(self, fold_dir: Path) -> bool:
        return (fold_dir / "report.html").exists() and (fold_dir / "metrics.json").exists()

    def run_fold(self, k: int, fold_of: Any, fold_dir: Path, *, resume: bool) -> tuple[dict, dict]:
        test, val = self._patients(k, fold_of)
        fcfg = self.cfg.model_copy(update={"test_patients": test, "val_patients": val})
        m = train_segmentation(fcfg, fold_dir, resume=resume, index=self.index,
                               cache_dir=self.out_dir / "cache")  # decoded once for all folds
        return self._row(k, test, val, m), m["per_patient"]

    def load_fold(self, k: int, fold_of: Any, fold_dir: Path) -> tuple[dict, dict]:
        test, val = self._patients(k, fold_of)
        m = json.loads((fold_dir / "metrics.json").read_text(encoding="utf-8"))
        return self._row(k, test, val, m), m["per_patient"]

    def _row(self, k: int, test: list[str], val: list[str], m: dict[str, Any]) -> dict[str, Any]:
        return {**_fold_row(k, test, val, m), "groups": sorted({self.group_of[p] for p in test})}

    def summarise(self, results: list[tuple[dict, dict]]) -> dict[str, Any]:
        from medlens.segment.metrics import summarise

        all_rows: dict[str, dict[str, float]] = {}
        for _, rows in results:
            all_rows.update(rows)
        folds = {str(row["fold"]): row.get("groups", []) for row, _ in results}
        n_groups = len(set(self.group_of.values()))
        cv = {"folds": [row for row, _ in results], **summarise(all_rows), "per_patient": all_rows,
              "group_by": self.grouping.name,
              "groups": {"unit": self.grouping.unit, "n_groups": n_groups,
                         "leave_one_group_out": n_groups == self.plan.folds, "folds": folds}}
        if self.grouping.kind != "patient":  # how each held-out site fared
            from medlens.data.groups import unit_of

            sites: dict[str, list[float]] = {}
            for p, r in all_rows.items():
                sites.setdefault(unit_of(p, self.grouping), []).append(float(r.get("dice", float("nan"))))
            cv["per_group"] = {s: {"patients": len(d), "mean_dice": float(np.nanmean(d))}
                               for s, d in sorted(sites.items())}
        return cv

    def write_report(self, path: Path, cv: dict[str, Any], results: list[tuple[dict, dict]]) -> None:
        from medlens.segment.report import write_cv_report

        write_cv_report(path, cv, [row for row, _ in results],
                        title=f"Segmentation cross-validation: {Path(self.cfg.data).name}, {self.plan.folds} folds")


def _fold_row(k: int, test: list[str], val: list[str], m: dict[str, Any]) -> dict[str, Any]:
    members = m.get("members") or []
    if members and "val_patients" in members[0]:  # a fold ensemble validated on every pooled patient
        val = [f"out-of-fold, {len(members)} folds of {sum(len(r['val_patients']) for r in members)} patients"]
    return {"fold": k, "test": test, "val": val, "mean_dice": m.get("mean_dice"),
            "postprocess": (m.get("postprocess") or {}).get("rule"), "members": m.get("members") or []}


def load_cv_plan(out_dir: str | Path) -> tuple[SegmentConfig, int]:
    """Config and fold count of a segmentation cross-validation folder (``--resume``)."""
    from medlens.pipelines.cv_driver import read_plan

    plan = read_plan(out_dir)
    try:
        return SegmentConfig(**plan["config"]), int(plan["folds"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{out_dir}: no segmentation cross-validation to resume ({e})") from None


def cv_from_cli(*, data: Path, out: Path | None, config: Path | None, resume: bool, folds: int | None,
                options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """``medlens cv DATA --task segment``: the config from the flags (as ``train`` builds it) or,
    with ``resume``, from ``OUT/cv_plan.json``; without ``--folds``: 3, or leave-one-group-out for
    few groups (:func:`medlens.data.groups.fold_count`)."""
    from medlens.pipelines.cv_driver import default_out, plan_for_resume

    if resume:
        plan_for_resume(out, data)  # --out is given, and DATA (when it exists) is the data cross-validated
        cfg, planned = load_cv_plan(out or ".")
        folds = folds or planned
    else:
        cfg = config_from_cli(data=data, config=config, options=options)
    out = out or default_out(data)
    return cross_validate(cfg, out, folds=folds, resume=resume), out
