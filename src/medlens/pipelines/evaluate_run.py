"""``medlens evaluate``: score a saved model package on a data set, with its own threshold."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import BadInputError, ConfigError, OutputError
from medlens.io.atomic import atomic_write_json
from medlens.io.lock import folder_lock
from medlens.io.runlog import logged_run


def _with_run_splits(index, run_dir: Path):  # noqa: ANN001, ANN202
    """Reuse the training run's splits when evaluating on the data it was trained on."""
    from medlens.data.splits import load_splits

    splits_csv = run_dir / "splits.csv"
    if not splits_csv.exists():
        return index
    table = load_splits(splits_csv)
    if not any(r.path in table for r in index.records[:50]):
        return index
    return index.subset([replace(r, split=table.get(r.path, r.split)) for r in index.records])


@logged_run(lambda result: result[1])  # run.log beside the metrics it returns
def evaluate_model(model_path: str | Path, data: str | Path, *, split: str = "test", out: str | Path | None = None,
                   **opts: Any) -> tuple[dict[str, Any], Path]:
    """Score the package at ``model_path`` on ``data``; write metrics and report to their own folder.

    The folder is :func:`evaluation_dir` (never the run's own results), locked while written;
    ``opts``: ``device``, ``strict``, ``tta`` (test-time augmentation of a classifier,
    :data:`medlens.package.TTA_MODES`) and the layout options, for the task's ``evaluate``.
    """
    from medlens.options import resolve_device
    from medlens.package import ModelPackage, check_tta
    from medlens.package_io import find_package

    tta = check_tta(opts.pop("tta", None) or "none")  # a bad value is refused before anything is read
    out_dir = evaluation_dir(find_package(model_path).parent, data, split, out)
    device, strict = opts.pop("device", "auto"), bool(opts.pop("strict", False))
    with folder_lock(out_dir):
        pkg = ModelPackage(model_path, device=resolve_device(device), tta=tta)
        metrics = pkg.task_spec.evaluate(pkg, data, split=split, out_dir=out_dir, strict=strict, **opts)
        return metrics, out_dir


#: Files that make a folder a training run, a cross-validation or a model package.
RUN_MARKERS = ("model", "checkpoints", "config.json", "cv_plan.json", "cv_metrics.json", "metadata.json")


def unique_results_dir(parent: Path, name: str) -> Path:
    """``parent/<name>-<time>/``, with ``-1``, ``-2``… appended when that folder exists: a
    command's default output never lands on an earlier one's."""
    base = parent / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir, n = base, 1
    while out_dir.exists():
        out_dir, n = base.with_name(f"{base.name}-{n}"), n + 1
    return out_dir


def evaluation_dir(run_dir: Path, data: str | Path, split: str, out: str | Path | None) -> Path:
    """Where an evaluation writes: ``out``, or ``<run>/evaluations/<data>-<split>-<time>/``.

    Raises:
        ConfigError: ``out`` is a training run, cross-validation or package folder, or
            already holds the results of an earlier command (metrics.json/report.html).
        OutputError: ``out`` is a file.
    """
    if out is None:
        return unique_results_dir(run_dir / "evaluations", f"{Path(data).stem}-{split}")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} is a file; give a folder for metrics.json and report.html")
    held = [m for m in RUN_MARKERS if (out_dir / m).exists()]
    if held or any(p.name == "model" and (p / "metadata.json").exists() for p in out_dir.resolve().parents):
        raise ConfigError(f"--out {out_dir} is a training run or model folder (it holds {', '.join(held) or 'a model'}); "
                          f"evaluate never overwrites a run's results: omit --out (default "
                          f"{run_dir / 'evaluations'}/<data>-<split>-<time>) or choose another folder")
    done = [m for m in ("metrics.json", "report.html") if (out_dir / m).exists()]
    if done:
        raise ConfigError(f"--out {out_dir} already holds results ({', '.join(done)}); choose another folder")
    return out_dir


def package_logits(pkg: Any, images: np.ndarray, *, tta: str = "none") -> list[np.ndarray]:
    """The package network's logits ``(N, K)`` for cached ``(N, C, H, W)`` uint8 images,
    normalised as the package says: one array per view of :func:`medlens.package.tta_views`
    (one for ``tta="none"``; the first is always the image as it is)."""
    from medlens.package import tta_views
    from medlens.pipelines.evaluation import cache_logits
    from medlens.train.classify import ClassificationTask

    norm = pkg.metadata["normalize"]
    task = ClassificationTask(num_classes=len(pkg.classes), mean=norm["mean"], std=norm["std"])
    return [cache_logits(pkg.model, task, v, pkg.device) for v in tta_views(images, tta)]


def tta_probabilities(logits: list[np.ndarray], temperature: float) -> np.ndarray:
    """Temperature-scaled softmax averaged over the views' logits (one view: plain scaling)."""
    from medlens.evaluate.calibration import apply_temperature

    return np.mean([apply_temperature(z, temperature) for z in logits], axis=0)


def evaluate_classifier(pkg: Any, data: str | Path, *, split: str, out_dir: Path, strict: bool = False,
                        **layout_opts: Any) -> dict[str, Any]:
    """The classify task's evaluation of a loaded package on ``data`` into ``out_dir``
    (metrics.json, report.html, problems.json); inputs unlike the training data are
    counted, warned about, or refused with ``strict``. ``metrics["shift"]`` compares the
    evaluated images with the training data (:mod:`medlens.evaluate.shift`);
    ``metrics["tta"]`` says whether the package's test-time augmentation was on."""
    from medlens.data.layouts import load_dataset
    from medlens.evaluate.metrics import classification_metrics
    from medlens.evaluate.shift import dataset_shift, new_data_stats
    from medlens.package import TTA_DESCRIPTION
    from medlens.pipelines.evaluation import package_negative_class

    index = load_dataset(data, **{k: v for k, v in layout_opts.items() if v is not None})
    run_dir = pkg.path.parent
    index = _with_run_splits(index, run_dir)
    if split != "all":
        if not index.has_official_splits:
            raise ConfigError(f"{data}: has no splits; use --split all to evaluate on every image")
        index = index.subset([r for r in index.records if r.split == split])
        if not index.records:
            from medlens.evaluate.model_card import no_split_text

            held = no_split_text(split, run_dir / "splits.csv", "evaluate on other data, or use --split all "
                                 "knowing the package trained on it") if (run_dir / "splits.csv").exists() else ""
            raise BadInputError(f"{data}: no images in split {split!r}{held}")
    from medlens.pipelines.ood_guard import check_index, refuse_flagged, summary, warn_flagged

    check_known_classes(pkg, index, data)
    ood = check_index(pkg, index)  # inputs unlike the training data: counted, warned, refused by strict
    warn_flagged(ood)
    if strict:
        refuse_flagged(ood)
    cache, y = package_cache(pkg, index, data)
    tta = getattr(pkg, "tta", "none")
    views = package_logits(pkg, cache.images, tta=tta)
    z = views[0]
    probs = tta_probabilities(views, pkg.temperature)
    patients = [r.patient for r in cache.records]
    op = pkg.metadata.get("operating_point") or {}  # how training chose the threshold it stored
    metrics = classification_metrics(
        y, probs, pkg.classes, negative_class=package_negative_class(pkg), threshold=pkg.threshold,
        selection=op.get("selection") or legacy_selection(pkg.metadata), alternatives=op.get("alternatives"),
        patients=patients if any(p is not None for p in patients) else None, logits=z,
    )
    metrics["split"] = split
    metrics["data"] = str(data)
    metrics["model"] = str(pkg.path)
    metrics["ood"] = summary(ood) if pkg.fingerprint else {"checked": 0, "flagged": None,
                                                           "note": "the package has no training-data fingerprint"}
    metrics["tta"] = {"mode": tta, "description": TTA_DESCRIPTION[tta]}
    metrics["shift"] = dataset_shift(pkg.fingerprint, new_data_stats(index, cache.records),
                                     new_source=f"{data} ({split} split)")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "metrics.json", metrics)
    problems = [p.__dict__ for p in list(index.problems) + list(cache.problems)]
    if problems:
        atomic_write_json(out_dir / "problems.json", problems)
    _report(out_dir, pkg, index, cache, metrics, probs, y)
    return metrics


def check_known_classes(pkg: Any, index: Any, data: str | Path) -> None:
    """Refuse data whose classes the package does not know, naming the data and both class lists.

    Raises:
        BadInputError: a class of ``index`` is not one of ``pkg.classes``.
    """
    missing = [c for c in index.classes if c not in pkg.classes]
    if missing:
        raise BadInputError(f"{data}: classes {missing} are unknown to the model {pkg.path} "
                            f"(it knows {pkg.classes})")


def package_cache(pkg: Any, index: Any, data: str | Path) -> tuple[Any, np.ndarray]:
    """The images of ``index`` preprocessed as the classifier package ``pkg`` was trained
    (its ``preprocess`` metadata), and their labels in the package's class order: the one way
    evaluate, compare and calibrate read a classifier's cases.

    Raises:
        BadInputError: the data hold classes the package does not know, or no image is readable.
    """
    from medlens.data.cache import build_cache
    from medlens.transforms.preprocess import PreprocessConfig

    check_known_classes(pkg, index, data)
    cache = build_cache(index, PreprocessConfig(**pkg.metadata["preprocess"]))
    if not cache.records:
        raise BadInputError(f"{data}: none of the images could be read")
    remap = np.array([pkg.classes.index(c) for c in index.classes])
    return cache, remap[cache.labels]


def legacy_selection(meta: dict[str, Any]) -> dict[str, Any] | None:
    """A package from before the operating-point block: what its metadata still tells."""
    if meta.get("threshold") is None or meta.get("target_sensitivity") is None:
        return None
    return {"rule": f"largest disease-score threshold with sensitivity >= {meta['target_sensitivity']:g} "
                    "on the training run's val split", "target_sensitivity": meta["target_sensitivity"],
            "chosen_on": "val"}


def _report(out_dir: Path, pkg, index, cache, metrics, probs, y) -> None:  # noqa: ANN001
    from medlens.data.splits import split_table
    from medlens.evaluate.report import write_report

    pred = pkg.call(probs)  # the operating point's call, as in the metrics
    samples = []
    for j in list(np.flatnonzero(pred != y)[:8]) + list(np.flatnonzero(pred == y)[:8]):
        img = cache.images[j].transpose(1, 2, 0)
        img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
        samples.append((img, f"true {pkg.classes[y[j]]} / pred {pkg.classes[pred[j]]}"))
    card = json.loads(json.dumps(pkg.metadata.get("model_card", {}))) or {
        "model": pkg.metadata["model"]["name"], "intended_use": "research", "not_for_clinical_use": True}
    patient = (metrics.get("patient_level") or {}).get("table")
    from medlens.evaluate.shift import shift_section_html

    shift = metrics.get("shift") or {}
    write_report(out_dir, title=f"medlens evaluation — {pkg.metadata['model']['name']} on {index.root}",
                 data_summary={"data": index.root, "layout": index.layout, "images": len(cache.records),
                               "split": metrics["split"],
                               "inputs unlike the training data": (metrics.get("ood") or {}).get("flagged"),
                               "shift from the training data": shift.get("verdict"),
                               "test-time augmentation": (metrics.get("tta") or {}).get("description")},
                 split_table=split_table(index.subset(cache.records)), history=[], metrics=metrics,
                 patient_table=patient, samples=samples, model_card=card,
                 extra_sections=[("Dataset shift", shift_section_html(shift, metrics.get("calibration")))])
