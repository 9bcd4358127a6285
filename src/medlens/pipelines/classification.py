"""Classification from a folder to a report and a model package.

``train_classifier(cfg, run_dir)`` runs: load the data set as laid out → quick audit →
exclusions → splits (official, else stratified and patient-grouped) → uint8 cache →
model → training engine → temperature scaling and operating point on validation →
metrics on test → HTML report → model package. Every artefact lands in ``run_dir``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlens.data.cache import ImageCache, build_cache
from medlens.data.records import DatasetIndex
from medlens.errors import BadInputError, ConfigError, JobFailedError
from medlens.io.atomic import atomic_write_json
from medlens.io.lock import folder_lock
from medlens.io.runlog import logged_run
from medlens.pipelines.classifier_fit import row_groups, train_model
from medlens.pipelines.config import RunConfig
from medlens.pipelines.stain_reference import STAIN_IMAGES_PER_PATIENT as STAIN_IMAGES_PER_PATIENT
from medlens.pipelines.stain_reference import STAIN_MAX_PATIENTS as STAIN_MAX_PATIENTS
from medlens.pipelines.stain_reference import fit_stain
from medlens.train.classify import ClassificationTask
from medlens.train.engine import FitResult, resolve_device

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    run_dir: Path
    metrics: dict[str, Any]
    fit: FitResult


def load_index(cfg: RunConfig) -> DatasetIndex:
    """Load the data set named in ``cfg.data`` and apply the exclude list."""
    from medlens.data.layouts import load_dataset

    d = cfg.data
    index = load_dataset(d.path, layout=d.layout, label_column=d.label_column, path_column=d.path_column,
                         patient_column=d.patient_column, split_column=d.split_column,
                         patient_table=d.patient_table, allow_outside_paths=d.allow_outside_paths)
    if index.info.get("columns"):
        log.info("%s: label column %r", index.info.get("manifest"), index.info["columns"].get("label"))
    if d.exclude:
        excluded = _read_exclude(d.exclude)
        before = len(index.records)
        index = index.subset([r for r in index.records if r.path not in excluded])
        log.info("excluded %d of %d files listed in %s", before - len(index.records), before, d.exclude)
    return index


def _read_exclude(path: str) -> set[str]:
    from medlens.audit import read_exclude_list

    return set(read_exclude_list(path))


def run_quick_audit(index: DatasetIndex, cfg: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """A fast audit before training; blocking findings stop the run unless told to go on."""
    if not cfg.data.audit:
        return None
    from medlens.audit import quick_audit

    result = quick_audit(index)
    summary = result.to_json() if hasattr(result, "to_json") else dict(result)
    atomic_write_json(run_dir / "audit_quick.json", summary)
    blocking = list(getattr(result, "blocking", []) or [])
    if blocking and not cfg.data.ignore_audit:
        raise JobFailedError(f"{cfg.data.path}: the data audit found blocking problems:\n  - "
                             + "\n  - ".join(blocking)
                             + "\nFix them, pass --exclude FILE, or use --ignore-audit to train anyway.")
    for b in blocking:
        log.warning("audit (ignored): %s", b)
    return summary


def make_splits(index: DatasetIndex, cfg: RunConfig, run_dir: Path) -> DatasetIndex:
    from medlens.data.splits import assign_splits, load_splits, save_splits

    path = run_dir / "splits.csv"
    if path.exists():  # a resumed or re-evaluated run keeps its splits
        table = load_splits(path)
        recs = [r for r in index.records if r.path in table]
        from dataclasses import replace

        return index.subset([replace(r, split=table[r.path]) for r in recs])
    split = assign_splits(index, val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction,
                          seed=cfg.train.seed, group_by_patient=cfg.data.group_by_patient)
    save_splits(split, path)
    return split


def _split_mask(cache: ImageCache, split: str) -> np.ndarray:
    return np.array([r.split == split for r in cache.records])


@logged_run("run_dir")  # run_dir/run.log
def train_classifier(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False) -> TrainOutcome:
    """Train, evaluate, report and package a classifier. See the module docstring.

    ``run_dir`` is locked while the job writes it: a second job on it is refused.
    """
    with folder_lock(run_dir):
        _refuse_finished_run(Path(run_dir), resume)
        return _train_classifier(cfg, Path(run_dir), resume=resume)


def _refuse_finished_run(run_dir: Path, resume: bool) -> None:
    """Checked under the lock: a job that started with the same ``--out`` may have trained meanwhile."""
    if not resume and holds_a_run(run_dir):
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")


def holds_a_run(run_dir: Path) -> bool:
    """Has training started in ``run_dir`` (a checkpoint of the model or of an ensemble member)?"""
    return (run_dir / "checkpoints" / "last.pt").exists() or any(run_dir.glob("member*/checkpoints/last.pt"))


def _train_classifier(cfg: RunConfig, run_dir: Path, *, resume: bool = False) -> TrainOutcome:
    run_dir = Path(run_dir)
    index = load_index(cfg)  # before the run directory exists: a wrong path leaves nothing behind
    if not index.records:
        raise BadInputError(f"{cfg.data.path}: no usable images found")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", cfg.model_dump())
    audit = run_quick_audit(index, cfg, run_dir)
    index = make_splits(index, cfg, run_dir)
    if cfg.preprocess.stain_normalize != "none" and cfg.preprocess.stain_reference is None:
        cfg = fit_stain(cfg, index, [r for r in index.records if r.split == "train"])
        atomic_write_json(run_dir / "config.json", cfg.model_dump())  # the resolved config, reference included
    cache = build_cache(index, cfg.preprocess, progress=False)
    problems = list(index.problems) + [p for p in cache.problems if p not in index.problems]
    if problems:
        atomic_write_json(run_dir / "problems.json", [p.__dict__ for p in problems])
    train_m, val_m = _split_mask(cache, "train"), _split_mask(cache, "val")
    if train_m.sum() == 0 or val_m.sum() == 0:
        raise BadInputError(f"{cfg.data.path}: after removing unreadable files the train or validation split "
                            f"is empty (train={int(train_m.sum())}, val={int(val_m.sum())})")
    k = len(index.classes)
    labels = cache.labels
    device = resolve_device(cfg.train.device)
    trained = train_model(cfg, cache.images, labels, train_m, val_m, k, run_dir,
                          row_groups(cache.records, cfg.data.group_by_patient), device, resume=resume)
    fitted = trained.fitted
    model, task, result = fitted.model, fitted.task, fitted.result
    if cfg.ensemble > 1 and not trained.members:  # the fold ensemble fell back to one network (logged why)
        cfg = cfg.model_copy(update={"ensemble": 1, "ensemble_by": "seed"})

    from medlens.pipelines.evaluation import evaluate_cache, package_metadata

    metrics, extras = evaluate_cache(model, task, cache, index.classes, cfg, device,
                                     op_data=(trained.op_rows, trained.op_logits), chosen_on=trained.chosen_on)
    metrics["training"] = {"best_epoch": result.best_epoch, "best_val": result.best_score,
                           "monitor": task.monitor, "epochs_run": len(result.history),
                           "stopped_early": result.stopped_early}
    if trained.members:
        metrics["training"].update(ensemble=cfg.ensemble, ensemble_by=cfg.ensemble_by, members=trained.members)
    atomic_write_json(run_dir / "metrics.json", metrics)
    meta = package_metadata(cfg, index.classes, metrics, fitted.mean, fitted.std, extras)
    from medlens.data.fingerprint import fingerprint_index

    # what the training images looked like: the OOD guard of predict/explain/evaluate
    meta["data_fingerprint"] = fingerprint_index(index.subset([r for r in cache.records if r.split == "train"]),
                                                 split="train", seed=cfg.train.seed)
    from medlens.package_io import save_model_package
    from medlens.pipelines.reporting import model_card, write_run_report

    sections = explanation_sections(model, task, cache, extras, index.classes, device)
    sections += colour_sections(index, cfg, run_dir)
    card = model_card(cfg, index, metrics)
    save_model_package(run_dir / "model", model.cpu(), model_name=model.medlens_name if trained.members else cfg.model.name,
                       model_kwargs=fitted.model_kwargs,
                       metadata=meta, model_card=card.get("markdown"))
    write_run_report(run_dir, cfg, index, cache, result.history, metrics, extras, card, audit, problems,
                     extra_sections=sections)
    return TrainOutcome(run_dir, metrics, result)


def colour_sections(index: DatasetIndex, cfg: RunConfig, run_dir: Path) -> list[tuple[str, str]]:
    """Per-patient tissue colour of the raw images (a seeded sample per patient) with the patients
    whose stain lies far from the others flagged: the report section, and ``colour_by_patient.json``.
    Only for RGB data with patient ids; never costs the user a finished run."""
    if not index.has_patients or cfg.preprocess.channels != 3:
        return []
    try:
        from medlens.audit.report import colour_table_html
        from medlens.audit.run import colour_by_patient
        from medlens.audit.stats import colour_warning

        colour = colour_by_patient(index, seed=cfg.train.seed)
        if colour is None or not colour.get("patients"):
            return []
        atomic_write_json(run_dir / "colour_by_patient.json", colour)
        line = colour_warning(colour)
        if line:
            log.warning("%s", line)
        splits = {str(r.patient): r.split or "" for r in index.records if r.patient is not None}
        return [("Colour by patient (stain)", colour_table_html(colour, splits=splits))]
    except (OSError, ValueError) as e:
        log.warning("colour statistics left out of the report: %s: %s", type(e).__name__, e)
        return []


#: Above this many pixels the report's faithfulness table uses fewer images: each method runs the
#: network hundreds of times per image (occlusion: 225 patch positions), so at 224 px through
#: EfficientNet-Lite0 eight images took 218 of a 310 s ISIC training command.
FAITHFULNESS_FULL_PIXELS = 128 * 128


def faithfulness_budget(spatial: Sequence[int], full: int = 8, large: int = 3) -> int:
    """Images in the training report's faithfulness table: ``full`` up to
    :data:`FAITHFULNESS_FULL_PIXELS`, ``large`` above (the table says how many)."""
    return full if int(np.prod([int(s) for s in spatial])) <= FAITHFULNESS_FULL_PIXELS else large


def explanation_sections(model: torch.nn.Module, task: ClassificationTask, cache: ImageCache, extras: dict[str, Any],
                         classes: list[str], device: torch.device, n: int = 48) -> list[tuple[str, str]]:
    """CAM galleries (TP/FP/TN/FN) and the faithfulness table for the report, on a test sample."""
    from medlens.explain import report_section

    idx = np.flatnonzero(extras["eval_mask"])
    pick = np.random.default_rng(0).permutation(len(idx))[:n]
    x = task.prepare(torch.from_numpy(cache.images[idx[pick]]), device, train=False)
    y = extras["eval_labels"][pick]
    preds = extras["eval_pred"][pick]  # TP/FP/TN/FN at the report's operating point
    neg = extras["negative_class"]  # None (argmax run): the galleries show class 1 against the rest
    positive = next(k for k in range(len(classes)) if k != (0 if neg is None else neg))
    try:
        norm = (task.mean.flatten().tolist(), task.std.flatten().tolist())  # pictures in true colours
        return [report_section(model.to(device), x, y, preds, classes=classes, positive=positive, norm=norm,
                               faithfulness_images=faithfulness_budget(x.shape[2:]))]
    except Exception as e:  # an explanation must never cost the user a finished training run
        log.warning("explanations left out of the report: %s: %s", type(e).__name__, e)
        return [("Explanations", f"<p>Not available: {type(e).__name__}: {e}</p>")]


#: Flags of ``medlens train`` that map one-to-one onto a config field of the same name.
_FLAT_FLAGS = ("layout", "label_column", "path_column", "patient_column", "patient_table", "val_fraction",
               "test_fraction", "size", "channels", "equalize", "epochs", "batch_size", "lr", "patience",
               "scheduler", "seed", "device", "target_sensitivity", "negative_class", "patient_aggregate",
               "stain_normalize", "colour_constancy", "group_by")


def config_from_options(data: str | Path, options: dict[str, Any], config_file: str | Path | None = None
                        ) -> RunConfig:
    """The run config from command-line options: defaults ← layout recipe ← config file ← flags.

    ``options`` holds each flag's value under its parameter name (``None``/False: not given).
    """
    from medlens.pipelines.config import deep_update, load_config_file, nest_options
    from medlens.pipelines.recipes import apply_recipe

    flat = {k: options.get(k) for k in _FLAT_FLAGS}
    flat["max_steps_per_epoch"] = options.get("max_steps")
    flat["exclude"] = str(options["exclude"]) if options.get("exclude") else None
    flat["allow_outside_paths"] = options.get("allow_outside_paths") or None
    over = nest_options(flat)
    if options.get("model"):
        over.setdefault("model", {})["name"] = options["model"]
    if options.get("pretrained"):
        over.setdefault("model", {})["pretrained"] = options["pretrained"]
    if options.get("activation"):
        over.setdefault("model", {})["activation"] = options["activation"]
    if options.get("balance"):
        over["balance"] = options["balance"]
    for key in ("ensemble", "ensemble_by"):
        if options.get(key) is not None:
            over[key] = options[key]
    if options.get("no_augment"):
        over.setdefault("augment", {})["enabled"] = False
    if options.get("no_audit"):
        over.setdefault("data", {})["audit"] = False
    if options.get("ignore_audit"):
        over.setdefault("data", {})["ignore_audit"] = True
    merged = deep_update(load_config_file(config_file) if config_file else {}, over)
    merged.setdefault("data", {})["path"] = str(data)
    return apply_recipe(merged)


def train_from_options(*, data: Path, out: Path | None, config: Path | None, resume: bool,
                       options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """``medlens train DATA`` for a classifier: the config from the options (or, with
    ``resume``, the run's own config.json), then :func:`train_classifier`."""
    if resume:
        from medlens.tasks.config import load_run_config

        if out is None:
            raise ConfigError("--resume needs --out pointing at an existing run directory (with config.json)")
        cfg = load_run_config(out, task="classify")
    else:
        cfg = config_from_options(data, options, config)
        out = out or Path("runs") / f"{Path(data).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        if holds_a_run(out):
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    outcome = train_classifier(cfg, out, resume=resume)
    return outcome.metrics, out
