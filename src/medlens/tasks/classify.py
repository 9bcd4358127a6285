"""The ``classify`` task: one label per image (or per patient), at one operating point.

Its pieces live where the data flow puts them (``data`` layouts and cache, ``train``'s
:class:`~medlens.train.classify.ClassificationTask`, ``evaluate`` metrics and report,
``pipelines.classification``); this entry ties them to the registry and holds the
predictor a package of this task answers with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlens.errors import BadInputError
from medlens.io.walk import files_under
from medlens.pipelines.config import RunConfig
from medlens.tasks.registry import Summary, TaskSpec


def as_uint8(im: np.ndarray) -> np.ndarray:
    """Any image array → ``(H, W, C)`` uint8 (a non-uint8 image is min–max scaled)."""
    if im.dtype == np.uint8:
        return im if im.ndim == 3 else im[..., None]
    a = im.astype(np.float64)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255
    a = np.nan_to_num(a).round().astype(np.uint8)
    return a if a.ndim == 3 else a[..., None]


def expand_image_inputs(inputs: Any) -> list[Any]:
    """Files, folders (their images, recursively) and arrays → a flat list of items."""
    from medlens.io.images import IMAGE_EXTENSIONS

    if isinstance(inputs, (str, Path, np.ndarray)):
        inputs = [inputs]
    out: list[Any] = []
    for item in inputs:
        if isinstance(item, np.ndarray):
            out.append(item)
            continue
        p = Path(item)
        if p.is_dir():
            out += [str(f) for f in files_under(p) if f.suffix.lower() in IMAGE_EXTENSIONS]
        else:
            out.append(str(p))
    return out


class ClassifyPredictor:
    """Probabilities and the decision at the package's operating point, per input."""

    def __init__(self, pkg: Any) -> None:
        self.pkg = pkg

    def load_images(self, paths: Sequence[str | Path]) -> list[np.ndarray]:
        from medlens.io.images import read_image

        return [read_image(p) for p in paths]

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """``(H, W, C)`` images of any size → normalised ``(B, C, S, S)`` float."""
        from medlens.transforms.preprocess import PreprocessConfig, preprocess_image

        meta = self.pkg.metadata
        cfg = PreprocessConfig(**meta["preprocess"])  # with the training split's stain reference, if any
        failures: list[str] = []
        arr = np.stack([preprocess_image(as_uint8(im), cfg, stain_failures=failures) for im in images])
        if failures:
            import logging

            logging.getLogger(__name__).info("stain normalisation left %d of %d image(s) unchanged (%s)",
                                             len(failures), len(images), failures[0])
        x = torch.from_numpy(arr).float().div_(255.0)
        norm = meta.get("normalize", {})
        mean = torch.tensor(norm.get("mean", [0.0] * x.shape[1])).view(1, -1, 1, 1)
        std = torch.tensor(norm.get("std", [1.0] * x.shape[1])).view(1, -1, 1, 1)
        return ((x - mean) / std).to(self.pkg.device)

    def predict(self, inputs: Any, *, batch_size: int = 64) -> list[dict[str, Any]]:
        """Files, folders or arrays → one dict per input (unreadable files get ``error``)."""
        from medlens.io.images import ImageReadError

        pkg = self.pkg
        items = expand_image_inputs(inputs)
        images, names, results = [], [], {}
        oods: dict[int, dict[str, Any]] = {}  # the out-of-distribution guard's verdict per input
        for i, item in enumerate(items):
            name = f"array[{i}]" if isinstance(item, np.ndarray) else str(item)
            try:
                image, oods[i] = pkg.read_checked(item)
                images.append(image)
                names.append((i, name))
            except ImageReadError as e:
                results[i] = {"file": name, "error": e.reason}
        probs = pkg.predict_proba(images, batch_size=batch_size)
        neg = _negative_class(pkg)
        for (i, name), p, c in zip(names, probs, pkg.call(probs)):
            row: dict[str, Any] = {"file": name, "predicted": pkg.classes[int(c)],
                                   "probabilities": {k: float(v) for k, v in zip(pkg.classes, p)}}
            if neg is None:  # argmax package: 1 - p(first class) would mean nothing
                results[i] = row
                continue
            score = float(1.0 - p[neg])
            row["disease_score"] = score
            if pkg.threshold is not None:
                row["decision"] = "positive" if score >= pkg.threshold else "negative"
                row["threshold"] = float(pkg.threshold)
            results[i] = row
        for i, verdict in oods.items():
            results[i].update(verdict)
        return [results[i] for i in range(len(items))]


def _negative_class(pkg: Any) -> int | None:
    """The package's negative class; ``None`` for an argmax package (no disease score then)."""
    from medlens.pipelines.evaluation import package_negative_class

    return package_negative_class(pkg)


def _detect(data: Path, layout: str | None) -> bool:
    return True  # the fallback: any folder of labelled images


def _train(data: Path, out: Path | None, config: Path | None, resume: bool,
           options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    from medlens.pipelines.classification import train_from_options

    return train_from_options(data=data, out=out, config=config, resume=resume, options=options)


def _evaluate(pkg: Any, data: Path, *, split: str, out_dir: Path, strict: bool = False,
              **layout_opts: Any) -> dict[str, Any]:
    from medlens.pipelines.evaluate_run import evaluate_classifier

    return evaluate_classifier(pkg, data, split=split, out_dir=out_dir, strict=strict, **layout_opts)


def _predict_files(pkg: Any, inputs: Sequence[Path], out: Path | None, *, batch_size: int = 64,
                   strict: bool = False) -> list[dict[str, Any]]:
    from medlens.pipelines.ood_guard import guard_rows
    from medlens.pipelines.predict_io import write_predictions

    rows = pkg.predict([str(p) for p in inputs], batch_size=batch_size)
    if not rows:
        raise BadInputError("no images found in the given inputs")
    guard_rows(pkg, rows, strict=strict)  # out-of-distribution inputs: warn, or refuse before writing
    if out:
        write_predictions(rows, out, pkg.classes, disease_score=_negative_class(pkg) is not None)
    return rows


def _summary(metrics: dict[str, Any]) -> Summary:
    """The test metrics, every thresholded one at the run's single operating point (stated)."""
    from medlens.evaluate.model_card import ci_text, evaluated_text, headline, operating_point_text

    op = metrics.get("operating_point") or {}
    at = f"at threshold {op['threshold']:.3f}" if op.get("threshold") is not None else \
        ("at each fold's threshold" if op.get("threshold_range") else "argmax call, no threshold")
    rows = []
    cis = metrics.get("ci") or {}
    for k, label in (*headline(metrics), ("f1", "F1")):
        v = metrics.get(k)
        if v is None:
            continue
        ci = cis.get(k)
        ci_s = f"{ci['low']:.3f}–{ci['high']:.3f}" if isinstance(ci, dict) and ci.get("low") is not None else ""
        rows.append([label, f"{v:.3f}", ci_s])
    pl = metrics.get("patient_level")
    if pl and pl.get("balanced_accuracy") is not None:
        rows.append(["patient balanced accuracy", f"{pl['balanced_accuracy']:.3f}", ""])
    split = metrics.get("split", "test")
    notes = [operating_point_text(metrics), ci_text(metrics)]
    if split != "test":
        notes.insert(0, evaluated_text(metrics) + ".")
    return Summary(title=f"{'out-of-fold' if split == 'out_of_fold' else split} metrics ({at})",
                   columns=["metric", "value", "95% CI"], rows=rows, notes=notes)


def _predict_table(pkg: Any, rows: list[dict[str, Any]]) -> Summary:
    from medlens.pipelines.ood_guard import ood_cell

    if _negative_class(pkg) is None:  # argmax: the most probable class and its probability
        cols = ["file", "predicted", "p(predicted)", "ood"]
        out = [[r["file"], "[red]unreadable[/red]", r["error"], ""] if "error" in r else
               [r["file"], r["predicted"], f"{r['probabilities'][r['predicted']]:.3f}", ood_cell(r)] for r in rows]
        return Summary(title="", columns=cols, rows=out, notes=[_predict_caption(pkg)])
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["file"], "[red]unreadable[/red]", "", r["error"], ""])
        else:
            out.append([r["file"], r["predicted"], f"{r['disease_score']:.3f}", r.get("decision", ""), ood_cell(r)])
    return Summary(title="", columns=["file", "predicted", "disease_score", "decision", "ood"], rows=out,
                   notes=[_predict_caption(pkg)])


def _predict_caption(pkg: Any) -> str:
    """Which call ``predicted`` and ``decision`` follow (the package's operating point)."""
    if _negative_class(pkg) is None:
        from medlens.evaluate.operating_point import ARGMAX_NOTE

        return f"predicted: the most probable class; no disease score ({ARGMAX_NOTE})"
    if pkg.threshold is None:
        return "predicted: the most probable class (this model has no threshold)"
    op = pkg.metadata.get("operating_point") or {}
    rule = (op.get("selection") or {}).get("rule")
    neg = pkg.classes[pkg.negative_class]
    return (f"predicted and decision at the operating point: positive when disease score (1 − p({neg})) ≥ "
            f"{float(pkg.threshold):.4f}" + (f"; chosen by: {rule}" if rule else ""))


def _cross_validate(data: Path, out: Path | None, config: Path | None, resume: bool, folds: int | None,
                    options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    from medlens.pipelines.crossval import cv_from_options

    return cv_from_options(data=data, out=out, config=config, resume=resume, folds=folds, options=options)


def _cv_summary(cv: dict[str, Any]) -> Summary:
    """Per-fold AUC and rates at each fold's operating point, mean ± sd, and the two AUC intervals."""
    from medlens.pipelines.crossval_summary import binary_cv_table

    rows, notes = binary_cv_table(cv, threshold_note=cv.get("threshold_note") or "threshold chosen on the fold's "
                                  "validation split for the target sensitivity")
    groups = (cv.get("groups") or {}).get("folds") or {}
    held = [f"fold {k} held out {cv['grouping']}: " + ", ".join(v[:12]) + (" …" if len(v) > 12 else "")
            for k, v in groups.items()]
    logo = " leave-one-group-out" if (cv.get("groups") or {}).get("leave_one_group_out") else ""
    return Summary(
        title=f"{cv['folds']}-fold{logo} cross-validation (grouped by {cv['grouping']})",
        columns=["fold", "held out", "AUC", "sensitivity", "specificity", "balanced acc"], rows=rows,
        notes=[*held, *notes])


def _demo(out: Path, *, seed: int = 0, quick: bool = False, device: str = "auto") -> Path:
    from medlens.pipelines.demo import classify_demo

    return classify_demo(out, seed=seed, quick=quick, device=device)


TASK = TaskSpec(
    name="classify",
    description="one label per image (or patient): classifier, operating point, report",
    detect=_detect,
    train=_train,
    evaluate=_evaluate,
    predictor=ClassifyPredictor,
    predict_files=_predict_files,
    summary=_summary,
    predict_table=_predict_table,
    demo=_demo,
    cross_validate=_cross_validate,
    cv_summary=_cv_summary,
    config_model=RunConfig,
    options=frozenset({"--channels", "--equalize", "--balance", "--target-sensitivity", "--negative-class",
                       "--patient-aggregate", "--label-column", "--path-column", "--patient-column",
                       "--patient-table", "--stain-normalize", "--colour-constancy", "--group-by", "--activation",
                       "--ensemble", "--ensemble-by"}),
    priority=0,
)
