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
from medlens.pipelines.config import RunConfig
from medlens.pipelines.stain_reference import STAIN_IMAGES_PER_PATIENT as STAIN_IMAGES_PER_PATIENT
from medlens.pipelines.stain_reference import STAIN_MAX_PATIENTS as STAIN_MAX_PATIENTS
from medlens.pipelines.stain_reference import fit_stain
from medlens.train.classify import ClassificationTask, class_weights
from medlens.train.engine import FitResult, fit, resolve_device, seed_everything
from medlens.train.head_features import fit_head
from medlens.train.loader import BatchLoader

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


def _norm_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    x = images.reshape(images.shape[0], images.shape[1], -1).astype(np.float64) / 255.0
    mean = x.mean(axis=(0, 2))
    std = x.std(axis=(0, 2))
    return mean.round(6).tolist(), np.maximum(std, 1e-3).round(6).tolist()


def pretrained_normalize(cfg: RunConfig) -> tuple[list[float], list[float]] | None:
    """The normalisation named weights were trained with (``--pretrained imagenet``), per
    input channel, or ``None`` (random init or a weights file: the training rows' statistics).

    A 1-channel run gets the RGB values averaged; with the Lite models' equal per-channel
    values that is exact (see :mod:`medlens.models.efficientnet_lite`).
    """
    from medlens.models import model_info

    pre = cfg.model.pretrained
    if not pre or cfg.model.name.startswith("timm/"):
        return None
    info = model_info(cfg.model.name)
    if pre not in info.get("weights", []) or not info.get("normalize") or Path(pre).exists():
        return None
    mean, std = np.asarray(info["normalize"]["mean"]), np.asarray(info["normalize"]["std"])
    c = cfg.preprocess.channels
    if c != len(mean):
        mean, std = np.full(c, mean.mean()), np.full(c, std.mean())
    return mean.round(6).tolist(), std.round(6).tolist()


def _split_mask(cache: ImageCache, split: str) -> np.ndarray:
    return np.array([r.split == split for r in cache.records])


def build_model(cfg: RunConfig, num_classes: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Create the network; returns it with the kwargs that rebuild it (stored in the package)."""
    from medlens.models import create_model

    kwargs = {"num_classes": num_classes, "in_channels": cfg.preprocess.channels,
              "input_size": cfg.preprocess.size, **cfg.model.kwargs}
    model = create_model(cfg.model.name, pretrained=cfg.model.pretrained, **kwargs)
    if getattr(model, "pretrained_report", None):
        rep = model.pretrained_report  # counts here (the loader already logged the file); the lists at debug level
        log.info("pretrained weights from %s: %d tensors loaded, %d adapted, %d skipped (%s)", cfg.model.pretrained,
                 len(rep.get("loaded", [])), len(rep.get("adapted", [])), len(rep.get("skipped", {})),
                 ", ".join(list(rep.get("skipped", {}))[:4]) or "none")
        log.debug("pretrained weights report: %s", rep)
    return model, kwargs


def _head(cfg: RunConfig) -> str | None:
    """The model's registered classifier module (fine-tuning: warm-up, its own learning rate)."""
    if cfg.model.name.startswith("timm/"):
        return None
    from medlens.models import model_info

    return model_info(cfg.model.name).get("head")


def _channels_last(cfg: RunConfig) -> bool:
    if cfg.train.channels_last is not None:
        return cfg.train.channels_last
    try:
        from medlens.models import model_info

        return bool(model_info(cfg.model.name).get("channels_last", False))
    except Exception:  # unknown preference → the safe default
        return False


@dataclass
class Fitted:
    model: torch.nn.Module
    task: ClassificationTask
    result: FitResult
    model_kwargs: dict[str, Any]  # what rebuilds the network (stored in the package)
    mean: list[float]  # per-channel normalisation of the training rows
    std: list[float]


def fit_classifier(cfg: RunConfig, images: np.ndarray, labels: np.ndarray, train_m: np.ndarray,
                   val_m: np.ndarray, num_classes: int, run_dir: Path, *, resume: bool = False,
                   norm: tuple[list[float], list[float]] | None = None) -> Fitted:
    """Model, task and loaders from ``cfg`` on the masked cache rows, then the engine's ``fit``.

    One network (:func:`train_model` builds ensembles from it). Normalisation statistics come
    from the training rows unless ``norm`` (an ensemble's members share one) is given.
    """
    k = num_classes
    mean, std = norm or pretrained_normalize(cfg) or _norm_stats(images[train_m])
    cl = _channels_last(cfg)
    weights = class_weights(labels[train_m], k) if cfg.balance == "weighted_loss" else None
    task = ClassificationTask(num_classes=k, mean=mean, std=std, augment=cfg.augment,
                              weights=weights, channels_last=cl)
    sampler_w = class_weights(labels[train_m], k)[labels[train_m]] if cfg.balance == "sampler" else None
    bs = cfg.train.batch_size
    train_loader = BatchLoader({"image": images[train_m], "label": labels[train_m]}, batch_size=bs,
                               shuffle=True, seed=cfg.train.seed, weights=sampler_w)
    val_loader = BatchLoader({"image": images[val_m], "label": labels[val_m]}, batch_size=bs * 2,
                             shuffle=False)
    seed_everything(cfg.train.seed)  # the initial weights depend on the seed alone
    model, model_kwargs = build_model(cfg, k)
    train_cfg = cfg.train.model_copy(update={"channels_last": cl, "head": cfg.train.head or _head(cfg)})
    result = fit_head(model, task, {"image": images[train_m], "label": labels[train_m]},
                      {"image": images[val_m], "label": labels[val_m]}, train_cfg, run_dir,
                      sampler_weights=sampler_w, resume=resume)
    if result is None:  # the backbone trains (or its features cannot be cached)
        result = fit(model, task, train_loader, val_loader, train_cfg, run_dir, resume=resume)
    return Fitted(model, task, result, model_kwargs, mean, std)


@dataclass
class Trained:
    """A trained classifier (one network or an ensemble answering as one) and the logits its
    temperature and operating point are chosen on: the validation rows' (one network, seed
    ensemble), or every pooled training and validation row's out-of-fold logits (fold ensemble)."""

    fitted: Fitted
    op_rows: np.ndarray  # cache rows (indices)
    op_logits: np.ndarray
    members: list[dict[str, Any]]  # one row per member; empty for one network
    chosen_on: str = "val"  # what the operating point's record says it was chosen on


def train_model(cfg: RunConfig, images: np.ndarray, labels: np.ndarray, train_m: np.ndarray, val_m: np.ndarray,
                num_classes: int, run_dir: Path, groups: Sequence[str], device: torch.device, *,
                resume: bool = False) -> Trained:
    """``cfg.ensemble`` networks from :func:`fit_classifier` (member k in ``run_dir/member<k>``,
    seed ``seed + k``), averaged into one model; one network as it always was.

    One place for ``medlens train`` and every cross-validation fold, so a fold trains exactly as
    a single run does. ``groups`` (patient per cache row) keeps each patient in one member fold.

    Why a fold ensemble: with the threshold chosen on two or three validation patients, where
    those patients' scores happen to sit decides the operating point (IDC, README "IDC
    operating point"); out-of-fold probabilities of every training patient choose it instead,
    and averaging networks trained on different patients steadies the ranking (nnU-Net's
    cross-validation ensemble, as segmentation does).
    """
    from medlens.pipelines.evaluation import cache_logits
    from medlens.train.ensemble import fit_members

    n = cfg.ensemble
    fold = None
    if n > 1 and cfg.ensemble_by == "folds":
        from medlens.data.groups import stratified_group_folds

        pool = np.flatnonzero(train_m | val_m)
        fold = stratified_group_folds([groups[i] for i in pool], labels[pool], n, seed=cfg.train.seed)
        lacking = [j for j in range(n) if set(labels[pool].tolist()) - set(labels[pool[fold == j]].tolist())]
        if lacking:  # a member validating on one class has no AUC to stop on (IDC: 4 of 17 patients hold class 0)
            log.warning("a fold ensemble of %d needs every class in each member's validation patients; member "
                        "fold(s) %s would hold one class (too few patients of a class): one network instead",
                        n, ", ".join(str(j + 1) for j in lacking))
            n, fold = 1, None
    if n == 1:
        fitted = fit_classifier(cfg, images, labels, train_m, val_m, num_classes, run_dir, resume=resume)
        rows = np.flatnonzero(val_m)
        return Trained(fitted, rows, cache_logits(fitted.model, fitted.task, images[rows], device), [])
    if fold is not None:
        parts = [(np.isin(np.arange(len(labels)), pool[fold != j]), np.isin(np.arange(len(labels)), pool[fold == j]))
                 for j in range(n)]
        norm = pretrained_normalize(cfg) or _norm_stats(images[pool])
    else:
        parts = [(train_m, val_m)] * n
        norm = pretrained_normalize(cfg) or _norm_stats(images[train_m])
    fits: list[Fitted] = []

    def train_one(k: int, tc: Any, mdir: Path, res: bool) -> tuple[torch.nn.Module, FitResult]:
        log.info("ensemble member %d of %d: train %d, val %d rows", k + 1, n, parts[k][0].sum(), parts[k][1].sum())
        f = fit_classifier(cfg.model_copy(update={"train": tc}), images, labels, parts[k][0], parts[k][1],
                           num_classes, mdir, resume=res, norm=norm)
        fits.append(f)
        return f.model, f.result

    model, result, rows = fit_members(n, cfg.train, run_dir, train_one, resume=resume)
    first = fits[0]
    fitted = Fitted(model, first.task, result, {k: v for k, v in model.medlens_config.items() if k != "name"},
                    first.mean, first.std)
    for row, (tr, va) in zip(rows, parts, strict=True):
        row.update(n_train=int(tr.sum()), n_val=int(va.sum()),
                   val_patients=sorted({str(groups[i]) for i in np.flatnonzero(va)}))
    if fold is not None:  # member k answers for the rows it validated on, never trained on
        op_rows = np.concatenate([np.flatnonzero(va) for _, va in parts])
        op_logits = np.concatenate([cache_logits(f.model, f.task, images[va], device)
                                    for f, (_, va) in zip(fits, parts, strict=True)])
        order = np.argsort(op_rows, kind="stable")
        return Trained(fitted, op_rows[order], op_logits[order], rows, chosen_on=OUT_OF_FOLD)
    op_rows = np.flatnonzero(val_m)
    return Trained(fitted, op_rows, cache_logits(model, first.task, images[op_rows], device), rows)


#: Where a fold ensemble's operating point is chosen (the report's "chosen on").
OUT_OF_FOLD = "pooled out-of-fold (training and validation patients)"


def row_groups(records: Sequence[Any], by_patient: bool) -> list[str]:
    """Patient per row for :func:`train_model`'s member folds (the row itself without patient ids)."""
    return [f"patient:{r.patient}" if by_patient and r.patient is not None else f"image:{r.path}" for r in records]


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
