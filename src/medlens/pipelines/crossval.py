"""k-fold cross-validation of a classifier, for data sets too small for one test split.

``cross_validate(cfg, out_dir, folds=5)`` loads and decodes the data once, then for each
fold (stratified, grouped by patient, else by image): carves a grouped validation split
from the training part — used for early stopping, temperature and threshold, never the
held-out fold — trains with the same engine, model and task as ``medlens train``, and
keeps the held-out (out-of-fold, OOF) probabilities. The result, ``cv_metrics.json``
(:mod:`~medlens.pipelines.crossval_summary`) and ``report.html``
(:mod:`~medlens.pipelines.crossval_report`), has per-fold metrics, mean ± std, two 95 % CIs
for AUC (a t-interval over folds and a bootstrap of the pooled OOF AUC) and the full metrics
of the pooled OOF predictions. Each fold lives in ``out_dir/fold_<i>/``; a finished fold is
skipped and an interrupted one resumes from its last checkpoint with ``resume=True``.
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
from medlens.io.lock import folder_lock
from medlens.io.runlog import logged_run
from medlens.pipelines.classification import fit_classifier
from medlens.pipelines.config import RunConfig
from medlens.pipelines.crossval_summary import FOLD_KEYS, FoldResult, summarise

log = logging.getLogger(__name__)



@logged_run("out_dir")  # out_dir/run.log
def cross_validate(
    cfg: RunConfig, out_dir: str | Path, *, folds: int = 5, resume: bool = False
) -> dict[str, Any]:
    """:func:`_cross_validate` with ``out_dir`` locked: a second job on it is refused."""
    with folder_lock(out_dir):
        return _cross_validate(cfg, out_dir, folds=folds, resume=resume)


def _cross_validate(
    cfg: RunConfig, out_dir: str | Path, *, folds: int = 5, resume: bool = False
) -> dict[str, Any]:
    """Run k-fold cross-validation; write ``cv_metrics.json`` and ``report.html``; return the metrics.

    Raises:
        ConfigError: ``folds`` < 2, too few patients/images, ``val_fraction`` 0, or an
            ``out_dir`` that already holds a run without ``resume`` (or a different one with it).
    """
    from medlens.pipelines.classification import load_index, run_quick_audit

    if not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"--folds must be an integer >= 2, got {folds!r}")
    if cfg.data.val_fraction <= 0:
        raise ConfigError(
            "cross-validation carves a validation split from each fold's training part; "
            "set val_fraction > 0"
        )
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, cfg, resume)
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "config.json", cfg.model_dump())
    index = load_index(cfg)
    if not index.records:
        raise BadInputError(f"{cfg.data.path}: no usable images found")
    audit = run_quick_audit(index, cfg, out_dir)
    cache = build_cache(index, cfg.preprocess, progress=False)
    problems = list(index.problems) + [p for p in cache.problems if p not in index.problems]
    usable = index.subset([dataclasses.replace(r, split=None) for r in cache.records])
    fold_of = _fold_assignment(usable, folds, cfg, out_dir / "folds.csv", resume)
    results = [
        _run_fold(i, fold_of, usable, cache, cfg, out_dir / f"fold_{i}", resume)
        for i in range(folds)
    ]
    cv = summarise(results, usable, cache, cfg)
    cv["seconds"] = round(time.perf_counter() - t0, 1)  # this call (a resumed run skips folds)
    cv["seconds_folds"] = round(sum(r.row.get("seconds") or 0.0 for r in results), 1)
    cv["audit"] = audit
    atomic_write_json(out_dir / "cv_metrics.json", cv)
    from medlens.pipelines.crossval_report import write_cv_report

    write_cv_report(out_dir, cfg, index, cache, problems, results, cv)
    return cv


def load_run(out_dir: str | Path) -> tuple[RunConfig, int]:
    """The config and fold count of an existing cross-validation folder (for ``--resume``)."""
    out_dir = Path(out_dir)
    try:
        import json

        cfg = RunConfig(**json.loads((out_dir / "config.json").read_text(encoding="utf-8")))
        rows = (out_dir / "folds.csv").read_text(encoding="utf-8").splitlines()[1:]
    except (OSError, ValueError) as e:
        raise ConfigError(f"{out_dir}: not a cross-validation folder to resume ({e})") from None
    return cfg, len({ln.rsplit(",", 1)[1] for ln in rows if ln})


def _check_out_dir(out_dir: Path, cfg: RunConfig, resume: bool) -> None:
    started = (out_dir / "folds.csv").exists() or any(out_dir.glob("fold_*/checkpoints/last.pt"))
    if started and not resume:
        raise ConfigError(
            f"{out_dir} already holds a cross-validation run; pass --resume to continue it "
            "or choose another --out"
        )
    if resume and (out_dir / "config.json").exists():
        import json

        old = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
        if old != json.loads(cfg.model_dump_json()):
            raise ConfigError(
                f"{out_dir}/config.json differs from the config given; resume with the same "
                "config (the CLI reads it from --out) or choose another --out"
            )


def _fold_assignment(
    usable: DatasetIndex, folds: int, cfg: RunConfig, path: Path, resume: bool
) -> np.ndarray:
    """Fold number per usable image, from ``kfold_splits``; saved so a resumed run keeps it."""
    import csv
    import io

    from medlens.data.splits import kfold_splits
    from medlens.io.atomic import atomic_write_text

    paths = [r.path for r in usable.records]
    if resume and path.exists():
        with path.open(newline="", encoding="utf-8") as fh:
            saved = {row["path"]: int(row["fold"]) for row in csv.DictReader(fh)}
        if set(saved) != set(paths) or len(set(saved.values())) != folds:
            raise ConfigError(
                f"{path}: the data set or --folds changed since the run started; "
                "start a new run in another --out"
            )
        return np.array([saved[p] for p in paths])
    fold_of = np.full(len(paths), -1)
    for i, (_, test_idx) in enumerate(
        kfold_splits(usable, folds, cfg.train.seed, group_by_patient=cfg.data.group_by_patient)
    ):
        fold_of[test_idx] = i
    if (fold_of < 0).any() or len(np.unique(fold_of)) != folds:
        raise ConfigError(f"could not form {folds} non-empty folds from {len(paths)} images")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "patient", "fold"])
    w.writerows(
        (r.path, r.patient or "", int(f)) for r, f in zip(usable.records, fold_of, strict=True)
    )
    atomic_write_text(path, buf.getvalue())
    return fold_of


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
    from medlens.evaluate.calibration import apply_temperature, fit_temperature
    from medlens.evaluate.metrics import classification_metrics
    from medlens.evaluate.operating_point import (
        alternative_thresholds,
        choose_threshold,
        selection_record,
    )
    from medlens.pipelines.evaluation import cache_logits, negative_class_index
    from medlens.train.engine import resolve_device

    if (fold_dir / "result.json").exists():  # finished earlier: reuse, never retrain
        log.info("fold %d: already finished, reusing %s", i, fold_dir)
        return _load_fold(fold_dir, usable)
    t0 = time.perf_counter()
    fold_dir.mkdir(parents=True, exist_ok=True)
    split = _inner_splits(i, fold_of, usable, cfg, fold_dir)
    train_m, val_m, test_m = split == "train", split == "val", split == "test"
    labels, classes = cache.labels, usable.classes
    resume_fold = resume and (fold_dir / "checkpoints" / "last.pt").exists()
    log.info(
        "fold %d/%d: train %d, val %d, held out %d%s",
        i + 1,
        len(np.unique(fold_of)),
        train_m.sum(),
        val_m.sum(),
        test_m.sum(),
        " (resuming)" if resume_fold else "",
    )
    fitted = fit_classifier(cfg, cache.images, labels, train_m, val_m, len(classes), fold_dir,
                            resume=resume_fold)
    model, task, fit_res = fitted.model, fitted.task, fitted.result
    device = resolve_device(cfg.train.device)
    neg = negative_class_index(classes, cfg.eval.negative_class)
    z_val, y_val = cache_logits(model, task, cache.images[val_m], device), labels[val_m]
    temperature = float(fit_temperature(z_val, y_val)) if len(np.unique(y_val)) > 1 else 1.0
    op = choose_threshold(
        y_val,
        apply_temperature(z_val, temperature),
        negative_class=neg,
        target_sensitivity=cfg.eval.target_sensitivity,
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
        selection=selection_record(op, chosen_on="val (carved from this fold's training part)"),
        alternatives=alternative_thresholds(
            y_val, apply_temperature(z_val, temperature), negative_class=neg
        ),
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
        "best_epoch": fit_res.best_epoch,
        "epochs_run": len(fit_res.history),
        "seconds": round(time.perf_counter() - t0, 1),  # this session's share when resumed
    }
    test_paths = np.array([r.path for r, m in zip(usable.records, test_m, strict=True) if m])
    atomic_write(
        fold_dir / "oof.npz",
        lambda fh: np.savez(fh, paths=test_paths, probs=probs, logits=z, labels=y),
    )
    atomic_write_json(
        fold_dir / "result.json", {"row": row, "history": fit_res.history}
    )  # marks the fold done
    return FoldResult(np.flatnonzero(test_m), probs, float(op["threshold"]), row, fit_res.history)


def _load_fold(fold_dir: Path, usable: DatasetIndex) -> FoldResult:
    import json

    res = json.loads((fold_dir / "result.json").read_text(encoding="utf-8"))
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
        float(res["row"]["threshold"]),
        res["row"],
        res["history"],
    )
