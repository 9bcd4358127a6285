"""k-fold cross-validation of a classifier, for data sets too small for one test split.

``cross_validate(cfg, out_dir, folds=5)`` loads and decodes the data once, then for each
fold (stratified, grouped by patient, else by image): carves a grouped validation split
from the training part — used for early stopping, temperature and threshold, never the
held-out fold — trains with the same engine, model and task as ``medlens train``, and
keeps the held-out (out-of-fold, OOF) probabilities. The result, ``cv_metrics.json``
(:mod:`~medlens.pipelines.crossval_summary`) and ``cv_report.html``
(:mod:`~medlens.pipelines.crossval_report`), has per-fold metrics, mean ± std, two 95 % CIs
for AUC (a t-interval over folds and a bootstrap of the pooled OOF AUC) and the full metrics
of the pooled OOF predictions. The folder, the fold loop and resume are the shared driver's
(:mod:`medlens.pipelines.cv_driver`): ``cv_plan.json``, ``folds.csv``, one run folder
``fold_<k>/`` per fold; a finished fold is read back and an interrupted one resumes from its
last checkpoint with ``resume=True``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from medlens.data.cache import ImageCache, build_cache
from medlens.data.records import DatasetIndex
from medlens.errors import BadInputError, ConfigError
from medlens.io.atomic import atomic_write, atomic_write_json
from medlens.io.runlog import logged_run
from medlens.pipelines.classifier_fit import row_groups, train_model
from medlens.pipelines.config import RunConfig
from medlens.pipelines.crossval_summary import FOLD_KEYS, FoldResult, summarise

log = logging.getLogger(__name__)



#: Folds when ``--folds`` is not given and the grouping does not call for leave-one-group-out.
DEFAULT_FOLDS = 5


@logged_run("out_dir")  # out_dir/run.log
def cross_validate(
    cfg: RunConfig, out_dir: str | Path, *, folds: int | None = DEFAULT_FOLDS, resume: bool = False
) -> dict[str, Any]:
    """Run k-fold cross-validation through :func:`~medlens.pipelines.cv_driver.run_cv`
    (``out_dir`` locked; ``cv_plan.json``, ``folds.csv``, ``fold_<k>/``, ``cv_metrics.json``,
    ``cv_report.html``); return the metrics.

    Folds hold out whole groups of ``cfg.data.group_by`` (:mod:`medlens.data.groups`);
    ``folds=None`` picks the count by :func:`medlens.data.groups.fold_count`.

    Raises:
        ConfigError: ``folds`` < 2, too few patients/images, ``val_fraction`` 0, or an
            ``out_dir`` that already holds a run without ``resume`` (or a different one with it).
    """
    from medlens.pipelines.cv_driver import run_cv

    return run_cv(ClassifyCV(cfg, folds), out_dir, resume=resume)


def cv_from_options(*, data: Path, out: Path | None, config: Path | None, resume: bool,
                    folds: int | None, options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """``medlens cv DATA`` for a classifier: the config from the options (as ``train`` builds
    it) or, with ``resume``, from ``OUT/cv_plan.json``; without ``--folds``, 5 folds or
    leave-one-group-out for few groups (:func:`medlens.data.groups.fold_count`)."""
    from medlens.pipelines.classification import config_from_options
    from medlens.pipelines.cv_driver import default_out, plan_for_resume

    if resume:
        plan = plan_for_resume(out, data)  # --out is given, and DATA (when it exists) is the data cross-validated
        try:
            cfg = RunConfig(**plan["config"])
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{out}: no classification cross-validation to resume ({e})") from None
        folds = folds or int(plan["folds"])
    else:
        cfg = config_from_options(data, options, config)
    out = out or default_out(data)
    return cross_validate(cfg, out, folds=folds, resume=resume), out


class ClassifyCV:
    """The classify part of a cross-validation (:class:`~medlens.pipelines.cv_driver.CVTask`).

    Loads and decodes the data once; folds are stratified and hold out whole groups of
    ``cfg.data.group_by``: patients (else images) by ``kfold_splits`` with the run's seed, as
    before, or institutions, a manifest column's values or regex groups
    (:mod:`medlens.data.groups`). Each fold carves a patient-grouped validation split from its
    training part (early stopping, temperature, threshold — never the held-out fold), fits the
    stain reference on its training rows when stain normalisation is on, trains like
    ``medlens train`` and keeps the held-out (out-of-fold) probabilities.
    """

    def __init__(self, cfg: RunConfig, folds: int | None) -> None:
        import json

        from medlens.data.groups import parse_group_by
        from medlens.pipelines.cv_driver import CVPlan

        if cfg.data.val_fraction <= 0:
            raise ConfigError(
                "cross-validation carves a validation split from each fold's training part; "
                "set val_fraction > 0"
            )
        self.cfg = cfg
        self.grouping = parse_group_by(cfg.data.group_by)
        self.auto_folds = folds is None  # decided once the groups are known (prepare)
        by_patient = self.grouping.kind == "patient"
        self.plan = CVPlan(task="classify", folds=DEFAULT_FOLDS if folds is None else folds,
                           data=str(cfg.data.path), config=json.loads(cfg.model_dump_json()),
                           unit=self.grouping.unit if cfg.data.group_by_patient or not by_patient else "image",
                           group_column="group" if cfg.data.group_by_patient or not by_patient else None)
        self.fold_of: Any = None

    def prepare(self, out_dir: Path) -> None:
        from medlens.pipelines.classification import load_index, run_quick_audit

        self.t0, self.out_dir = time.perf_counter(), out_dir
        index = load_index(self.cfg)
        if not index.records:
            raise BadInputError(f"{self.cfg.data.path}: no usable images found")
        self.index = index
        from medlens.data.groups import fold_count, record_groups

        record_groups(index.records, self.grouping, root=index.root, info=index.info)  # usage errors first
        self.audit = run_quick_audit(index, self.cfg, out_dir)
        base = self.cfg.preprocess
        if base.stain_normalize != "none" and base.stain_reference is None:
            base = base.model_copy(update={"stain_normalize": "none"})  # each fold fits its own reference
        self.cache = build_cache(index, base, progress=False)
        self.problems = list(index.problems) + [p for p in self.cache.problems if p not in index.problems]
        self.usable = index.subset([dataclasses.replace(r, split=None) for r in self.cache.records])
        by_image = self.grouping.kind == "patient" and not (self.usable.has_patients
                                                           and self.cfg.data.group_by_patient)
        if by_image:
            self.plan = dataclasses.replace(self.plan, unit="image", group_column=None)
            self.groups = [f"image:{r.path}" for r in self.usable.records]
        else:
            self.groups = record_groups(self.usable.records, self.grouping, root=index.root, info=index.info)
        if self.auto_folds:
            k = fold_count(len(set(self.groups)), self.grouping, None, DEFAULT_FOLDS)
            self.plan = dataclasses.replace(self.plan, folds=k)
            log.info("cross-validation: %d folds by %s (%d groups)", k, self.grouping.name, len(set(self.groups)))

    def assign(self) -> Any:
        """Fold number per usable image, from ``kfold_splits`` (stratified, grouped)."""
        from medlens.data.splits import kfold_splits
        from medlens.pipelines.cv_driver import Assignment

        recs = self.usable.records
        if self.grouping.kind == "patient":  # the folds patient-grouped runs always had
            fold_of = np.full(len(recs), -1)
            for i, (_, test_idx) in enumerate(kfold_splits(self.usable, self.plan.folds, self.cfg.train.seed,
                                                           group_by_patient=self.cfg.data.group_by_patient)):
                fold_of[test_idx] = i
        else:
            from medlens.data.groups import stratified_group_folds

            fold_of = stratified_group_folds(self.groups, self.cache.labels, self.plan.folds,
                                             seed=self.cfg.train.seed, by=self.grouping)
        return Assignment(("path", "patient", "group"),
                          [(r.path, r.patient or "", g) for r, g in zip(recs, self.groups, strict=True)],
                          [int(f) for f in fold_of])

    def fold_done(self, fold_dir: Path) -> bool:
        return (fold_dir / "result.json").exists()

    def run_fold(self, k: int, fold_of: Any, fold_dir: Path, *, resume: bool) -> FoldResult:
        self.fold_of = np.asarray(fold_of)
        cache, cfg = self.cache, self.cfg
        if cfg.preprocess.stain_normalize != "none" and cfg.preprocess.stain_reference is None:
            cache, cfg = self._stain_fold(k, fold_dir)
        return _run_fold(k, self.fold_of, self.usable, cache, cfg, fold_dir, resume)

    def _stain_fold(self, k: int, fold_dir: Path) -> tuple[ImageCache, RunConfig]:
        """This fold's stain reference, fitted on its training rows only, and the data decoded with it."""
        from medlens.pipelines.classification import fit_stain

        fold_dir.mkdir(parents=True, exist_ok=True)
        split = _inner_splits(k, self.fold_of, self.usable, self.cfg, fold_dir)
        train = [r for r, s in zip(self.usable.records, split, strict=True) if s == "train"]
        cfg = fit_stain(self.cfg, self.usable, train)
        ref = cfg.preprocess.stain_reference
        atomic_write_json(fold_dir / "stain_reference.json", ref.model_dump() if ref else None)
        cache = build_cache(self.usable, cfg.preprocess, progress=False)
        if [r.path for r in cache.records] != [r.path for r in self.usable.records]:
            raise BadInputError(f"{self.cfg.data.path}: files changed while the folds were decoded; run again")
        return cache, cfg

    def load_fold(self, k: int, fold_of: Any, fold_dir: Path) -> FoldResult:
        self.fold_of = np.asarray(fold_of)
        return _load_fold(fold_dir, self.usable)

    def fold_groups(self) -> dict[int, list[str]]:
        """The groups each fold holds out (from the assignment the folds ran with)."""
        out: dict[int, set[str]] = {}
        if self.fold_of is not None:
            for g, f in zip(self.groups, self.fold_of, strict=True):
                out.setdefault(int(f), set()).add(g)
        return {f: sorted(v) for f, v in sorted(out.items())}

    def summarise(self, results: list[FoldResult]) -> dict[str, Any]:
        cv = summarise(results, self.usable, self.cache, self.cfg)
        cv["seconds"] = round(time.perf_counter() - self.t0, 1)  # this call (a resumed run skips folds)
        cv["seconds_folds"] = round(sum(r.row.get("seconds") or 0.0 for r in results), 1)
        cv["audit"] = self.audit
        cv["threshold_note"] = threshold_note(self.cfg)
        if self.plan.unit != "image":
            cv["grouping"] = self.grouping.name
        groups = self.fold_groups() if self.plan.unit != "image" else {}  # images: folds.csv lists them
        cv["group_by"] = cv["grouping"]
        cv["groups"] = {"unit": self.plan.unit, "n_groups": len(set(self.groups)),
                        "leave_one_group_out": len(set(self.groups)) == self.plan.folds,
                        "folds": {str(k): v for k, v in groups.items()}}
        for row in cv["per_fold"]:
            row["groups"] = groups.get(int(row["fold"]), [])
        return cv

    def write_report(self, path: Path, cv: dict[str, Any], results: list[FoldResult]) -> None:
        from medlens.pipelines.crossval_report import write_cv_report

        shown = dict(cv)  # the report's "grouped by" line names the groups each fold held out
        if cv["grouping"] != "image":
            shown["grouping"] = cv["grouping"] + " — " + "; ".join(
                f"fold {k}: {_names(v)}" for k, v in cv["groups"]["folds"].items())
        write_cv_report(path, self.cfg, self.index, self.cache, self.problems, results, shown)


def threshold_note(cfg: RunConfig) -> str:
    """How each fold's operating threshold was chosen, for the summaries."""
    if cfg.ensemble > 1 and cfg.ensemble_by == "folds":
        return ("threshold chosen on the out-of-fold predictions of the fold's whole training part "
                "(fold ensemble) for the target sensitivity")
    return "threshold chosen on the fold's validation split for the target sensitivity"


def _names(groups: list[str], limit: int = 12) -> str:
    return ", ".join(groups[:limit]) + (f" … ({len(groups)} in all)" if len(groups) > limit else "")


def _inner_splits(
    i: int, fold_of: np.ndarray, usable: DatasetIndex, cfg: RunConfig, fold_dir: Path
) -> np.ndarray:
    """``train``/``val``/``test`` per image for fold ``i``; val is carved from train, grouped."""
    from medlens.data.splits import apply_splits, assign_splits, load_splits, save_splits

    recs = usable.records
    train_part = usable.subset([recs[j] for j in np.flatnonzero(fold_of != i)])
    path = fold_dir / "splits.csv"
    if path.exists():
        inner = apply_splits(train_part, load_splits(path))
    else:
        inner = assign_splits(
            train_part,
            val_fraction=cfg.data.val_fraction,
            test_fraction=0.0,
            seed=cfg.train.seed + i,
            group_by_patient=cfg.data.group_by_patient,
        )
    split = np.full(len(recs), "test", dtype=object)
    split[fold_of != i] = [r.split for r in inner.records]
    if not path.exists():
        save_splits(
            usable.subset(
                [dataclasses.replace(r, split=s) for r, s in zip(recs, split, strict=True)]
            ),
            path,
        )
    return split


def _run_fold(
    i: int,
    fold_of: np.ndarray,
    usable: DatasetIndex,
    cache: ImageCache,
    cfg: RunConfig,
    fold_dir: Path,
    resume: bool,
) -> FoldResult:
    from medlens.evaluate.calibration import apply_temperature
    from medlens.evaluate.metrics import classification_metrics
    from medlens.pipelines.evaluation import (
        cache_logits,
        choose_operating_point,
        negative_class_index,
        output_temperature,
    )
    from medlens.train.engine import resolve_device

    t0 = time.perf_counter()
    fold_dir.mkdir(parents=True, exist_ok=True)
    split = _inner_splits(i, fold_of, usable, cfg, fold_dir)
    train_m, val_m, test_m = split == "train", split == "val", split == "test"
    labels, classes = cache.labels, usable.classes
    resume_fold = resume  # the driver passes it only when the fold has checkpoints
    log.info(
        "fold %d/%d: train %d, val %d, held out %d%s",
        i + 1,
        len(np.unique(fold_of)),
        train_m.sum(),
        val_m.sum(),
        test_m.sum(),
        " (resuming)" if resume_fold else "",
    )
    device = resolve_device(cfg.train.device)
    trained = train_model(cfg, cache.images, labels, train_m, val_m, len(classes), fold_dir,
                          row_groups(usable.records, cfg.data.group_by_patient), device, resume=resume_fold)
    model, task, fit_res = trained.fitted.model, trained.fitted.task, trained.fitted.result
    neg = negative_class_index(classes, cfg.eval.negative_class)
    z_val, y_val = trained.op_logits, labels[trained.op_rows]  # a fold ensemble: out-of-fold, every pooled row
    temperature = output_temperature(z_val, y_val, trained.chosen_on)
    op, selection, alternatives = choose_operating_point(  # threshold None: argmax (no negative class)
        y_val, apply_temperature(z_val, temperature), neg, cfg,
        chosen_on=("val (carved from this fold's training part)" if trained.chosen_on == "val"
                   else trained.chosen_on + ", this fold's training part"),
    )
    z = cache_logits(model, task, cache.images[test_m], device)
    probs = apply_temperature(z, temperature)
    y = labels[test_m]
    patients = [r.patient for r, m in zip(usable.records, test_m, strict=True) if m]
    metrics = classification_metrics(
        y,
        probs,
        classes,
        negative_class=neg,
        threshold=op["threshold"],
        selection=selection,
        alternatives=alternatives,
        patients=patients if any(p is not None for p in patients) else None,
        n_bootstrap=0,
        patient_aggregate=cfg.eval.patient_aggregate,
        patient_k=cfg.eval.topk,
        logits=z,
        val_logits=z_val,
        val_y=y_val,
    )
    atomic_write_json(fold_dir / "metrics.json", metrics)
    row = {
        "fold": i,
        "n_train": int(train_m.sum()),
        "n_val": int(val_m.sum()),
        "n_test": int(test_m.sum()),
        **{k: metrics.get(k) for k in FOLD_KEYS},  # at the fold's operating point
        "threshold": op["threshold"],
        "temperature": temperature,
        "member_temperature": getattr(model, "temperature", None),  # a fold ensemble's, inside the model
        "best_epoch": fit_res.best_epoch,
        "epochs_run": len(fit_res.history),
        "seconds": round(time.perf_counter() - t0, 1),  # this session's share when resumed
    }
    test_paths = np.array([r.path for r, m in zip(usable.records, test_m, strict=True) if m])
    atomic_write(
        fold_dir / "oof.npz",
        # the validation logits too, so another operating rule can be judged on the same folds
        lambda fh: np.savez(fh, paths=test_paths, probs=probs, logits=z, labels=y,
                            val_logits=z_val, val_labels=y_val, temperature=temperature),
    )
    atomic_write_json(
        fold_dir / "result.json", {"row": row, "history": fit_res.history, "members": trained.members}
    )  # marks the fold done
    return FoldResult(np.flatnonzero(test_m), probs, op["threshold"], row, fit_res.history,
                      _alternative_thresholds(metrics))


def _load_fold(fold_dir: Path, usable: DatasetIndex) -> FoldResult:
    import json

    res = json.loads((fold_dir / "result.json").read_text(encoding="utf-8"))
    metrics = fold_dir / "metrics.json"
    with np.load(fold_dir / "oof.npz", allow_pickle=False) as z:
        paths, probs = z["paths"].tolist(), z["probs"]
    pos = {r.path: j for j, r in enumerate(usable.records)}
    missing = [p for p in paths if p not in pos]
    if missing:
        raise ConfigError(
            f"{fold_dir}: {len(missing)} held-out images are no longer in the data "
            f"(e.g. {missing[0]}); start a new run in another --out"
        )
    return FoldResult(
        np.array([pos[p] for p in paths]),
        probs,
        res["row"]["threshold"],  # None: the fold's call was argmax
        res["row"],
        res["history"],
        _alternative_thresholds(json.loads(metrics.read_text(encoding="utf-8")) if metrics.is_file() else {}),
    )


def _alternative_thresholds(metrics: dict[str, Any]) -> dict[str, float]:
    """name → threshold of the rules a fold did not use, as its ``metrics.json`` lists them."""
    rows = (metrics.get("alternative_operating_points") or {}).get("rows") or []
    return {r["name"]: float(r["threshold"]) for r in rows if r.get("threshold") is not None}
