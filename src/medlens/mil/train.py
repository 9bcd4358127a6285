"""Train and evaluate a patient-level MIL model: split by patient, the shared engine,
the operating point on validation patients, metrics with patient bootstrap CIs, the
package and the report.

A run folder holds ``config.json``, ``splits.csv``, ``checkpoints/``, ``logs/``,
``metrics.json`` (test patients, or the validation ones without a test split),
``per_patient.csv``, ``report.html`` and the package ``model/`` (task ``"patient"``, one
stage ``mil``: encoder + pooling, rebuilt by ``create_model("mil", …)``).

The parts live beside this module: the engine's tasks and bag prediction
(:mod:`~medlens.mil.fitting`), the patients and their split (:mod:`~medlens.mil.patients`),
the encoder choice and its features (:mod:`~medlens.mil.recipe`), the config from CLI flags
(:mod:`~medlens.mil.cli_config`) and what a run writes (:mod:`~medlens.mil.results`); their
public names stay importable from here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlens.errors import ConfigError
from medlens.io.atomic import atomic_write_json
from medlens.io.lock import folder_lock
from medlens.io.runlog import logged_run
from medlens.mil.bags import BagLoader, Bags, load_bags
from medlens.mil.cli_config import config_from_cli
from medlens.mil.config import DEFAULT_TRAIN, PatientConfig
from medlens.mil.fitting import FeatureLoader, HeadTask, MILTask, predict_bags, predict_features
from medlens.mil.fitting import bag_scores as bag_scores
from medlens.mil.patients import negative_index, patient_index, save_patient_splits, split_patients
from medlens.mil.recipe import build_network, cell_input_for, frozen_features, resolve_recipe
from medlens.mil.recipe import import_module_of as import_module_of
from medlens.mil.results import STAGE as STAGE
from medlens.mil.results import (
    package_metadata,
    patient_metrics,
    patient_rows,
    save_package,
    write_per_patient,
)

log = logging.getLogger(__name__)


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
    save_patient_splits(index, splits, run_dir / "splits.csv")
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


def train_from_cli(*, data: Path, out: Path | None, config: Path | None, resume: bool,
                   options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """``medlens train DATA --task patient``."""
    from medlens.tasks.config import run_config_or_resume

    cfg, out = run_config_or_resume(data, out, task="patient", resume=resume,
                                    make=lambda: config_from_cli(data=data, config=config, options=options))
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
