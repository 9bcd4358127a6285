"""The ``patient`` task: one diagnosis per patient from a bag of cell images (MIL).

Its pieces live in :mod:`medlens.mil` (bags, encoder + attention pooling, training,
predictor, report); this entry ties them to the registry. It is chosen automatically for
data in a patient-labelled layout (``aplaml``: APL/AML smears with ``master.csv``;
``patient_table``: ``<patient>/*`` with ``patients.csv``), never for data labelled per
image (IDC, image folders, manifests), which stays with ``classify``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medlens.errors import BadInputError
from medlens.mil.config import PATIENT_LAYOUTS, PatientConfig
from medlens.tasks.registry import Summary, TaskSpec


def _detect(data: Path, layout: str | None) -> bool:
    from medlens.data.layouts import detect_layout

    if layout:
        return layout in PATIENT_LAYOUTS
    try:
        return Path(data).is_dir() and detect_layout(Path(data).resolve()) in PATIENT_LAYOUTS
    except BadInputError:
        return False


def _train(data: Path, out: Path | None, config: Path | None, resume: bool,
           options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    from medlens.mil.train import train_from_cli

    return train_from_cli(data=data, out=out, config=config, resume=resume, options=options)


def _evaluate(pkg: Any, data: Path, *, split: str, out_dir: Path, strict: bool = False,
              **layout_opts: Any) -> dict[str, Any]:
    from medlens.mil.predict import evaluate_package

    return evaluate_package(pkg, data, split=split, out_dir=out_dir, strict=strict, **layout_opts)


def _predictor(pkg: Any) -> Any:
    from medlens.mil.predict import PatientPredictor

    return PatientPredictor(pkg)


def _predict_files(pkg: Any, inputs: Sequence[Path], out: Path | None, *, batch_size: int = 64,
                   strict: bool = False) -> list[dict[str, Any]]:
    from medlens.mil.predict import write_patient_predictions
    from medlens.pipelines.ood_guard import guard_files

    guard_files(pkg, inputs, strict=strict)  # out-of-distribution cells: warn, or refuse before writing
    rows = pkg.predict([str(p) for p in inputs], batch_size=batch_size)
    if not rows:
        raise BadInputError("no cell images found in the given inputs")
    if out:
        write_patient_predictions(rows, out, pkg.classes)
    return rows


def _f(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def _summary(metrics: dict[str, Any]) -> Summary:
    cis = metrics.get("ci") or {}
    rows = []
    for key, label in (("roc_auc", "ROC-AUC"), ("sensitivity", "sensitivity"), ("specificity", "specificity"),
                       ("balanced_accuracy", "balanced accuracy")):
        ci = cis.get(key)
        rows.append([label, _f(metrics.get(key)), f"{ci['low']:.3f}–{ci['high']:.3f}" if isinstance(ci, dict) else ""])
    op = metrics.get("operating_point") or {}
    n = len(metrics.get("patient_ids") or [])
    return Summary(title=f"patient-level metrics ({metrics.get('split', 'test')} split, {n} patients)",
                   columns=["metric", "value", "95% CI (patient bootstrap)"], rows=rows,
                   notes=[f"at the operating point: threshold {_f(op.get('threshold'))} on the patient disease "
                          f"score ({(op.get('selection') or {}).get('rule', '')})"])


def _predict_table(pkg: Any, rows: list[dict[str, Any]]) -> Summary:
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["patient"], r["file"], "", "[red]unreadable[/red]", "", r["error"]])
        else:
            top = (r.get("top_cells") or [{}])[0]
            out.append([r["patient"], r["file"], str(r["cells"]), r["predicted"], f"{r['disease_score']:.3f}",
                        f"{Path(top.get('file', '')).name} ({top.get('attention', 0):.3f})"])
    thr = pkg.threshold
    note = (f"predicted at the operating point: diseased when disease score ≥ {thr:.4f}" if thr is not None
            else "predicted: the most probable diagnosis")
    return Summary(title="", columns=["patient", "source", "cells", "predicted", "disease_score",
                                      "top-attention cell"], rows=out, notes=[note])


def _cross_validate(data: Path, out: Path | None, config: Path | None, resume: bool, folds: int | None,
                    options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    from medlens.mil.crossval import cv_from_cli

    return cv_from_cli(data=data, out=out, config=config, resume=resume, folds=folds, options=options)


def _cv_summary(cv: dict[str, Any]) -> Summary:
    """Per-fold patient AUC and rates at each fold's operating point, mean ± sd, both AUC intervals."""
    from medlens.pipelines.crossval_summary import binary_cv_table

    rows, notes = binary_cv_table(cv, threshold_note="chosen on the fold's validation patients",
                                  pooled="pooled out-of-fold patient AUC", bootstrap="patient bootstrap")
    return Summary(
        title=f"{cv['folds']}-fold patient cross-validation ({cv.get('patients')} patients, none in two folds)",
        columns=["fold", "test patients", "AUC", "sensitivity", "specificity", "balanced acc"], rows=rows,
        notes=notes)


def _score(pkg: Any, cases: Any) -> Any:
    from medlens.mil.score import score_patients

    return score_patients(pkg, cases)


def _demo(out: Path, *, seed: int = 0, quick: bool = False, device: str = "auto") -> Path:
    from medlens.mil.train import run_demo

    return run_demo(out, seed=seed, quick=quick, device=device)


TASK = TaskSpec(
    name="patient",
    description="one diagnosis per patient from a bag of cell images: MIL with attention pooling",
    detect=_detect,
    train=_train,
    evaluate=_evaluate,
    predictor=_predictor,
    predict_files=_predict_files,
    summary=_summary,
    predict_table=_predict_table,
    demo=_demo,
    cross_validate=_cross_validate,
    cv_summary=_cv_summary,
    config_model=PatientConfig,
    score=_score,
    options=frozenset({"--target-sensitivity", "--negative-class"}),
    priority=5,
)
