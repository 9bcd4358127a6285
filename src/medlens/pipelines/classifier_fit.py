"""Fitting a classifier: one network (:func:`fit_classifier`) or several averaged into one
(:func:`train_model`: seed or cross-validation ensembles), with the logits its operating point
is chosen on. One place for ``medlens train`` and every cross-validation fold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlens.pipelines.config import RunConfig
from medlens.pipelines.evaluation import OUT_OF_FOLD, fitted_temperature
from medlens.train.classify import ClassificationTask, class_weights
from medlens.train.engine import FitResult, fit, seed_everything
from medlens.train.head_features import fit_head
from medlens.train.loader import BatchLoader

log = logging.getLogger(__name__)


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
    for row, (tr, va) in zip(rows, parts, strict=True):
        row.update(n_train=int(tr.sum()), n_val=int(va.sum()),
                   val_patients=sorted({str(groups[i]) for i in np.flatnonzero(va)}))
    if fold is not None:  # member k answers for the rows it validated on, never trained on
        from medlens.models.ensemble import make_ensemble

        op_rows = np.concatenate([np.flatnonzero(va) for _, va in parts])
        op_logits = np.concatenate([cache_logits(f.model, f.task, images[va], device)
                                    for f, (_, va) in zip(fits, parts, strict=True)])
        order = np.argsort(op_rows, kind="stable")
        op_rows, op_logits = op_rows[order], op_logits[order]
        t = fitted_temperature(op_logits, labels[op_rows])  # the members' own: applied to each (MeanEnsemble)
        model = make_ensemble(list(model.members), temperature=t)
        fitted = Fitted(model, first.task, result, _kwargs(model), first.mean, first.std)
        return Trained(fitted, op_rows, op_logits / t, rows, chosen_on=OUT_OF_FOLD)
    fitted = Fitted(model, first.task, result, _kwargs(model), first.mean, first.std)
    op_rows = np.flatnonzero(val_m)
    return Trained(fitted, op_rows, cache_logits(model, first.task, images[op_rows], device), rows)


def _kwargs(model: torch.nn.Module) -> dict[str, Any]:
    return {k: v for k, v in model.medlens_config.items() if k != "name"}


def row_groups(records: Sequence[Any], by_patient: bool) -> list[str]:
    """Patient per row for :func:`train_model`'s member folds (the row itself without patient ids)."""
    return [f"patient:{r.patient}" if by_patient and r.patient is not None else f"image:{r.path}" for r in records]
