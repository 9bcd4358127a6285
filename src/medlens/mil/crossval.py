"""Patient-grouped cross-validation of the patient (MIL) task: its part
(:class:`PatientCV`) of the shared driver (:mod:`medlens.pipelines.cv_driver`).

Why: a cohort of tens of patients gives a test split of a handful, whose AUC says little;
k folds of patients, each held out once, give every patient an out-of-fold disease score.
Folds are stratified by diagnosis and never split a patient (the unit is the patient);
each fold draws its validation patients (early stopping, operating point) from its
training part, never from the held-out fold. The cells are decoded, and a frozen
encoder's features computed, once for all folds (``OUT/cache``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import ConfigError
from medlens.io.runlog import logged_run
from medlens.mil.config import PatientConfig

log = logging.getLogger(__name__)
DEFAULT_FOLDS = 5
POOLED_RULE = ("each patient called at its own fold's threshold, chosen on that fold's validation patients as "
               "the largest threshold with sensitivity >= {target:g}")


@logged_run("out_dir")  # out_dir/run.log; each fold writes its own
def cross_validate(cfg: PatientConfig, out_dir: str | Path, *, folds: int = DEFAULT_FOLDS,
                   resume: bool = False) -> dict[str, Any]:
    """k-fold patient cross-validation through :func:`~medlens.pipelines.cv_driver.run_cv`
    (``cv_plan.json``, ``folds.csv`` one row per patient, ``fold_<k>/`` run folders,
    ``cv_metrics.json``, ``cv_report.html``): per-fold and pooled out-of-fold patient AUC
    with CIs."""
    from medlens.pipelines.cv_driver import run_cv

    return run_cv(PatientCV(cfg, folds), out_dir, resume=resume)


def stratified_patient_folds(patients: list[str], labels: list[int], folds: int, seed: int) -> list[int]:
    """Fold per patient: stratified by diagnosis when every class has ``folds`` patients, else plain k-fold.

    Raises:
        ConfigError: fewer patients than folds.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if len(patients) < folds:
        raise ConfigError(f"{folds} folds need at least {folds} patients; the data has {len(patients)}")
    counts = np.bincount(labels)
    splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed) if counts[counts > 0].min() >= folds
                else KFold(folds, shuffle=True, random_state=seed))
    out = [-1] * len(patients)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(patients)), labels)):
        for i in test:
            out[int(i)] = k
    return out


class PatientCV:
    """The patient part of a cross-validation (:class:`~medlens.pipelines.cv_driver.CVTask`)."""

    def __init__(self, cfg: PatientConfig, folds: int) -> None:
        from medlens.pipelines.cv_driver import CVPlan

        if cfg.val_fraction <= 0:
            raise ConfigError("cross-validation draws validation patients from each fold's training part; "
                              "set val_fraction > 0")
        self.cfg = cfg.model_copy(update={"val_patients": None, "test_patients": None})
        self.plan = CVPlan(task="patient", folds=folds, data=str(cfg.data), config=self.cfg.model_dump(mode="json"),
                           unit="patient", group_column="patient")

    def prepare(self, out_dir: Path) -> None:
        from medlens.mil.bags import load_bags
        from medlens.mil.patients import patient_index

        self.t0, self.out_dir = time.perf_counter(), out_dir
        self.index = patient_index(self.cfg.data, self.cfg.layout)
        label = {str(r.patient): int(r.label) for r in self.index.records}
        self.patients = sorted(label)
        self.labels = [label[p] for p in self.patients]
        self.classes = list(self.index.classes)
        load_bags(self.index, self.cfg.size, cache_dir=out_dir / "cache")  # decoded once; folds read the cache

    def assign(self) -> Any:
        from medlens.pipelines.cv_driver import Assignment

        fold = stratified_patient_folds(self.patients, self.labels, self.plan.folds, self.cfg.train.seed)
        return Assignment(("patient", "diagnosis"), [(p, self.classes[y]) for p, y in zip(self.patients, self.labels)],
                          fold)

    def fold_patients(self, k: int, fold_of: Any) -> tuple[list[str], list[str]]:
        """Fold ``k``'s test patients and its validation patients (per diagnosis, ``val_fraction``
        of the rest, at least one; drawn with the run's seed + k)."""
        test = [p for p, f in zip(self.patients, fold_of, strict=True) if int(f) == k]
        rng = np.random.default_rng(self.cfg.train.seed + k)
        val: list[str] = []
        for c in sorted(set(self.labels)):
            rest = [p for p, y in zip(self.patients, self.labels) if y == c and p not in test]
            if len(rest) >= 2:
                n = max(1, round(self.cfg.val_fraction * len(rest)))
                val += [rest[i] for i in sorted(rng.choice(len(rest), n, replace=False))]
        return sorted(test), sorted(val)

    def fold_done(self, fold_dir: Path) -> bool:
        return (fold_dir / "metrics.json").exists() and (fold_dir / "report.html").exists()

    def run_fold(self, k: int, fold_of: Any, fold_dir: Path, *, resume: bool) -> dict[str, Any]:
        from medlens.mil.train import train_patient

        test, val = self.fold_patients(k, fold_of)
        fcfg = self.cfg.model_copy(update={"test_patients": test, "val_patients": val})
        t = time.perf_counter()
        m = train_patient(fcfg, fold_dir, resume=resume, cache_dir=self.out_dir / "cache")
        log.info("fold %d: %d test patients, AUC %s (%.1f s)", k, len(test), m.get("roc_auc"),
                 time.perf_counter() - t)
        return _fold(k, test, val, m)

    def load_fold(self, k: int, fold_of: Any, fold_dir: Path) -> dict[str, Any]:
        test, val = self.fold_patients(k, fold_of)
        return _fold(k, test, val, json.loads((fold_dir / "metrics.json").read_text(encoding="utf-8")))

    def summarise(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        cv = summarise_folds(results, self.patients, self.labels, self.classes, self.cfg)
        cv["seconds"] = round(time.perf_counter() - self.t0, 1)
        return cv

    def write_report(self, path: Path, cv: dict[str, Any], results: list[dict[str, Any]]) -> None:
        from medlens.mil.report import write_cv_report

        write_cv_report(path, cv, title=f"Patient-level cross-validation: {Path(self.cfg.data).name}, "
                                        f"{self.plan.folds} folds")


FOLD_KEYS = ("roc_auc", "sensitivity", "specificity", "balanced_accuracy")


def _fold(k: int, test: list[str], val: list[str], m: dict[str, Any]) -> dict[str, Any]:
    probs = m.get("probabilities") or {}
    missing = sorted(set(test) - set(probs))
    if missing:
        raise ConfigError(f"fold {k}: no out-of-fold prediction for patients {missing[:5]}; start a new "
                          "cross-validation in another --out")
    row = {"fold": k, "n_test": len(test), "test": test, "val": val,
           **{key: m.get(key) for key in FOLD_KEYS},
           "threshold": (m.get("operating_point") or {}).get("threshold"),
           "best_epoch": m.get("best_epoch"), "seconds": (m.get("timing_seconds") or {}).get("total")}
    return {"row": row, "probabilities": {p: probs[p] for p in test}}


def summarise_folds(results: list[dict[str, Any]], patients: list[str], labels: list[int], classes: list[str],
                    cfg: PatientConfig) -> dict[str, Any]:
    """``cv_metrics.json``: per-fold rows, mean ± sd, a t-interval over folds, and the pooled
    out-of-fold patient metrics (each patient at its own fold's threshold) with bootstrap CIs."""
    from medlens.evaluate.metrics import classification_metrics, to_jsonable
    from medlens.mil.patients import negative_index
    from medlens.pipelines.crossval_summary import fold_t_interval

    neg = negative_index(classes, cfg.negative_class)
    probs: dict[str, list[float]] = {}
    thr: dict[str, float] = {}
    for r in results:
        for p, v in r["probabilities"].items():
            if p in probs:
                raise ConfigError(f"patient {p} is held out by two folds; start a new cross-validation")
            probs[p], thr[p] = v, float(r["row"]["threshold"])
    if set(probs) != set(patients):
        raise ConfigError("the held-out folds do not cover every patient exactly once; start a new cross-validation")
    y = np.asarray(labels)
    p = np.asarray([probs[q] for q in patients], dtype=np.float64)
    pooled = classification_metrics(
        y, p, classes, negative_class=neg, threshold=np.asarray([thr[q] for q in patients]),
        selection={"rule": POOLED_RULE.format(target=cfg.target_sensitivity),
                   "target_sensitivity": cfg.target_sensitivity, "chosen_on": "val (one per fold)"},
        patients=list(patients), n_bootstrap=cfg.n_bootstrap, seed=cfg.train.seed)
    pooled.pop("patient_level", None)
    pooled["unit"] = "patient"
    rows = [r["row"] for r in results]
    summary = {}
    for key in FOLD_KEYS:
        v = [x[key] for x in rows if x.get(key) is not None]
        summary[key] = {"mean": float(np.mean(v)) if v else None,
                        "std": float(np.std(v, ddof=1)) if len(v) > 1 else None, "n_folds": len(v)}
    boot = (pooled.get("ci") or {}).get("roc_auc")
    return to_jsonable({
        "folds": len(results), "grouping": "patient", "unit": "patient", "patients": len(patients),
        "per_fold": rows, "summary": summary,
        "auc": {"mean": summary["roc_auc"]["mean"], "std": summary["roc_auc"]["std"],
                "pooled_oof": pooled.get("roc_auc"),
                "ci_fold_t": fold_t_interval([x["roc_auc"] for x in rows if x.get("roc_auc") is not None]),
                "ci_pooled_bootstrap": None if boot is None else {
                    **boot, "level": pooled["ci"]["level"],
                    "method": pooled["ci"]["method"] + "; pools the models of all folds"}},
        "pooled": pooled,
        "per_patient": {q: {"label": classes[y[i]], "fold": next(r["row"]["fold"] for r in results
                                                                  if q in r["probabilities"]),
                            "disease_score": float(1.0 - p[i][neg]), "threshold": thr[q]}
                        for i, q in enumerate(patients)},
        "config": cfg.model_dump(mode="json"),
    })


def cv_from_cli(*, data: Path, out: Path | None, config: Path | None, resume: bool, folds: int | None,
                options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """``medlens cv DATA --task patient [--folds K]``: the config as ``train`` builds it, or with
    ``resume`` the one in ``OUT/cv_plan.json``."""
    from medlens.mil.cli_config import config_from_cli
    from medlens.pipelines.cv_driver import default_out, plan_for_resume

    if resume:
        plan = plan_for_resume(out, data)
        try:
            cfg = PatientConfig(**plan["config"])
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{out}: no patient cross-validation to resume ({e})") from None
        folds = folds or int(plan["folds"])
    else:
        cfg = config_from_cli(data=data, config=config, options=options)
    out = out or default_out(data)
    return cross_validate(cfg, out, folds=folds or DEFAULT_FOLDS, resume=resume), out
