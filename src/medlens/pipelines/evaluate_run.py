"""``medlens evaluate``: score a saved model package on a data set, with its own threshold."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import BadInputError, ConfigError
from medlens.io.atomic import atomic_write_json


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


def evaluate_model(model_path: str | Path, data: str | Path, *, split: str = "test", out: str | Path | None = None,
                   **layout_opts: Any) -> tuple[dict[str, Any], Path]:
    from medlens.data.cache import build_cache
    from medlens.data.layouts import load_dataset
    from medlens.evaluate.calibration import apply_temperature
    from medlens.evaluate.metrics import classification_metrics
    from medlens.package import ModelPackage
    from medlens.pipelines.evaluation import cache_logits
    from medlens.train.classify import ClassificationTask
    from medlens.transforms.preprocess import PreprocessConfig

    pkg = ModelPackage(model_path)
    if pkg.task != "classify":
        from medlens.segment.evaluation import evaluate_package

        return evaluate_package(pkg, data, split=split, out=out, **layout_opts)
    index = load_dataset(data, **{k: v for k, v in layout_opts.items() if v is not None})
    run_dir = pkg.path.parent
    index = _with_run_splits(index, run_dir)
    if split != "all":
        if not index.has_official_splits:
            raise ConfigError(f"{data}: has no splits; use --split all to evaluate on every image")
        index = index.subset([r for r in index.records if r.split == split])
        if not index.records:
            raise BadInputError(f"{data}: no images in split {split!r}")
    missing = [c for c in index.classes if c not in pkg.classes]
    if missing:
        raise BadInputError(f"{data}: classes {missing} are unknown to the model (it knows {pkg.classes})")
    remap = np.array([pkg.classes.index(c) for c in index.classes])
    cache = build_cache(index, PreprocessConfig(**pkg.metadata["preprocess"]))
    if not cache.records:
        raise BadInputError(f"{data}: none of the images could be read")
    norm = pkg.metadata["normalize"]
    task = ClassificationTask(num_classes=len(pkg.classes), mean=norm["mean"], std=norm["std"])
    z = cache_logits(pkg.model, task, cache.images, pkg.device)
    probs = apply_temperature(z, pkg.temperature)
    y = remap[cache.labels]
    patients = [r.patient for r in cache.records]
    metrics = classification_metrics(
        y, probs, pkg.classes, negative_class=pkg.negative_class, threshold=pkg.threshold,
        patients=patients if any(p is not None for p in patients) else None, logits=z,
    )
    metrics["split"] = split
    metrics["data"] = str(data)
    metrics["model"] = str(pkg.path)
    out_dir = Path(out) if out else run_dir / f"eval-{Path(data).stem}-{split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "metrics.json", metrics)
    problems = [p.__dict__ for p in list(index.problems) + list(cache.problems)]
    if problems:
        atomic_write_json(out_dir / "problems.json", problems)
    _report(out_dir, pkg, index, cache, metrics, probs, y)
    return metrics, out_dir


def _report(out_dir: Path, pkg, index, cache, metrics, probs, y) -> None:  # noqa: ANN001
    from medlens.data.splits import split_table
    from medlens.evaluate.report import write_report

    pred = probs.argmax(1)
    samples = []
    for j in list(np.flatnonzero(pred != y)[:8]) + list(np.flatnonzero(pred == y)[:8]):
        img = cache.images[j].transpose(1, 2, 0)
        img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
        samples.append((img, f"true {pkg.classes[y[j]]} / pred {pkg.classes[pred[j]]}"))
    card = json.loads(json.dumps(pkg.metadata.get("model_card", {}))) or {
        "model": pkg.metadata["model"]["name"], "intended_use": "research", "not_for_clinical_use": True}
    patient = (metrics.get("patient_level") or {}).get("table")
    write_report(out_dir, title=f"medlens evaluation — {pkg.metadata['model']['name']} on {index.root}",
                 data_summary={"data": index.root, "layout": index.layout, "images": len(cache.records),
                               "split": metrics["split"]},
                 split_table=split_table(index.subset(cache.records)), history=[], metrics=metrics,
                 patient_table=patient, samples=samples, model_card=card)
