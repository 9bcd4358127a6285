"""Segmentation workflows called by the CLI: train, cross-validate, demo.

The run's configuration is :mod:`medlens.segment.config`; evaluation of held-out patients
and of saved packages is :mod:`medlens.segment.evaluation`.

One fit for any dimensionality (:func:`fit_segmenter`): ``spatial_dims`` only picks the
data view (:mod:`medlens.segment.views`): ``2`` (default) trains on slices
(:mod:`medlens.segment.data`), ``3`` trains a 3D U-Net on random ``patch``-sized crops of
whole volumes and evaluates whole volumes by sliding-window inference
(:mod:`medlens.segment.volumes`). Both write the same files.

A run directory holds ``config.json`` (resolved :class:`SegmentConfig`), ``splits.csv``,
``checkpoints/``, ``logs/``, ``metrics.json`` + ``per_patient.csv`` (test patients, or
validation patients when there is no test split), ``report.html`` and the model package
``model/`` (task ``"segment"``).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import BadInputError, ConfigError
from medlens.io.atomic import atomic_write_json
from medlens.io.lock import folder_lock
from medlens.io.runlog import logged_run
from medlens.segment.config import DEFAULT_TRAIN, SegmentConfig, make_config, parse_patch
from medlens.segment.evaluation import write_per_patient
from medlens.train.config import TrainConfig
from medlens.transforms.intensity import intensity_to_dict

logger = logging.getLogger(__name__)

def _split(index, cfg: SegmentConfig) -> dict[str, list[str]]:
    """Patients per split: explicit lists, else the classification side's grouped rule."""
    pats = sorted({str(r.patient) for r in index.records})
    if cfg.test_patients is not None or cfg.val_patients is not None:
        test, val = set(cfg.test_patients or []), set(cfg.val_patients or [])
        unknown = sorted((test | val) - set(pats))
        if unknown:
            raise ConfigError(f"unknown patients {unknown}; the data set has {pats}")
        return {"train": [p for p in pats if p not in test | val], "val": sorted(val), "test": sorted(test)}
    from medlens.data.splits import assign_splits

    s = assign_splits(index, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                      seed=cfg.train.seed, group_by_patient=True)
    out: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    for r in s.records:
        out[r.split or "train"].add(str(r.patient))
    return {k: sorted(v) for k, v in out.items()}


@logged_run("run_dir")  # run_dir/run.log
def train_segmentation(cfg: SegmentConfig, run_dir: str | Path, *, resume: bool = False,
                       index: Any = None, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """:func:`_train_segmentation` with ``run_dir`` locked: a second job on it is refused."""
    run_dir = Path(run_dir)
    with folder_lock(run_dir):
        if not resume and ((run_dir / "checkpoints" / "last.pt").exists()
                           or any(run_dir.glob("member*/checkpoints/last.pt"))):
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        return _train_segmentation(cfg, run_dir, resume=resume, index=index, cache_dir=cache_dir)


def _train_segmentation(cfg: SegmentConfig, run_dir: Path, *, resume: bool = False,
                        index: Any = None, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Train, evaluate on held-out patients, write the report and the model package.

    ``cfg.spatial_dims`` picks the data view, slices (2) or volume patches (3); the rest is shared.
    ``index`` (the loaded ``cfg.data``) and ``cache_dir`` (decoded slices, default
    ``run_dir/cache``) let cross-validation load and decode the data once for all folds.
    Returns the metrics dict also written to ``metrics.json``.
    """
    from medlens.segment.layouts import load_segmentation_dataset
    from medlens.segment.views import view_type

    run_dir = Path(run_dir)
    kind = view_type(cfg.spatial_dims)
    t0 = time.perf_counter()
    if index is None:
        index = load_segmentation_dataset(cfg.data, layout=cfg.layout, mask_pattern=cfg.mask_pattern)
    run_dir.mkdir(parents=True, exist_ok=True)  # only once the data is found
    atomic_write_json(run_dir / "config.json", cfg.model_dump())
    kind.check_layout(index)
    splits = _split(index, cfg)
    if not splits["val"]:
        raise ConfigError("segmentation training needs at least one validation patient "
                          "(set val_fraction > 0 or val_patients)")
    # a fold ensemble trains on every validation patient (all members but one): train in splits.csv
    pooled = {"train": sorted(splits["train"] + splits["val"]), "val": [], "test": splits["test"]}
    _save_splits(index, pooled if cfg.ensemble_by == "folds" else splits, run_dir / "splits.csv")
    fitted = fit_segmenter(cfg, index, splits, run_dir, resume=resume, cache_dir=cache_dir)
    from medlens.segment.metrics import summarise

    eval_split, rows, model, result = fitted.eval_split, fitted.rows, fitted.model, fitted.result
    single = cfg.ensemble == 1  # an ensemble has no one best epoch: see "members"
    metrics = {"split": eval_split, "patient_ids": fitted.patients, **summarise(rows), "per_patient": rows,
               "best_epoch": result.best_epoch if single else None,
               "best_val_dice": result.best_score if single else None,
               "train_seconds": time.perf_counter() - t0, "problems": len(fitted.problems), **fitted.counts,
               "postprocess": fitted.postprocess}
    from medlens.segment.metrics import metric_units

    metrics["units"] = metric_units(fitted.report_slices.spacing, fitted.patients, size=cfg.size,
                                    spatial_dims=cfg.spatial_dims)
    atomic_write_json(run_dir / "metrics.json", metrics)
    write_per_patient(run_dir / "per_patient.csv", rows)
    meta = package_metadata(cfg, fitted.input_meta, metrics)
    from medlens.data.fingerprint import fingerprint_index

    # what the training images looked like: the OOD guard of predict/explain/evaluate
    train_pats = set(pooled["train"] if cfg.ensemble_by == "folds" else splits["train"])
    meta["data_fingerprint"] = fingerprint_index(
        index.subset([r for r in index.records if str(r.patient) in train_pats]), split=None,
        max_images=kind.fingerprint_images, seed=cfg.train.seed)
    from medlens.package_io import save_model_package
    from medlens.segment.card import describe_data
    from medlens.segment.report import model_card, write_report

    meta["data"] = {**meta["data"], **describe_data(index, splits)}  # the card is written from the data
    card = model_card(meta, metrics)
    save_model_package(run_dir / "model", model, model_name=model.medlens_name,
                       model_kwargs={k: v for k, v in model.medlens_config.items() if k != "name"},
                       metadata=meta, model_card=card)
    write_report(run_dir / "report.html", fitted.report_slices, fitted.report_probs, rows, metrics,
                 history=result.history, problems=fitted.problems, threshold=cfg.threshold,
                 title=f"{kind.title}: {Path(cfg.data).name} ({eval_split} patients)", card=card)
    return metrics


@dataclasses.dataclass
class Fitted:
    """What :func:`fit_segmenter` hands to the shared tail of :func:`train_segmentation`."""

    model: Any
    result: Any
    eval_split: str
    patients: list[str]
    rows: dict[str, dict[str, float]]
    report_slices: Any
    report_probs: np.ndarray
    problems: list[Any]
    counts: dict[str, Any]
    input_meta: dict[str, Any]
    postprocess: dict[str, Any] = dataclasses.field(default_factory=lambda: {"rule": "none"})


def fit_segmenter(cfg: SegmentConfig, index: Any, splits: dict[str, list[str]], run_dir: str | Path,
                  *, resume: bool = False, cache_dir: str | Path | None = None) -> Fitted:
    """Train a U-Net on ``splits["train"]`` (an ensemble with ``cfg.ensemble > 1``),
    choose the post-processing on the validation patients and evaluate the test patients
    (the validation ones without a test split): the same steps for 2D and 3D, on the data
    view of ``cfg.spatial_dims``. A fold ensemble (``cfg.ensemble_by == "folds"``) trains
    member k on :func:`member_splits` ``[k]`` and decides on every pooled patient's
    out-of-fold prediction (and reports those without a test split).

    ``cache_dir`` keeps decoded slices (default ``run_dir/cache``).
    """
    from medlens.models.ensemble import with_mirror
    from medlens.models.registry import create_model
    from medlens.segment.models import init_output_bias
    from medlens.segment.postprocess import decide_postprocess
    from medlens.segment.task import SegmentAugment, SegmentTask
    from medlens.segment.views import training_view
    from medlens.train.engine import fit, resolve_device, seed_everything
    from medlens.train.ensemble import fit_members

    run_dir = Path(run_dir)
    network = cfg.network_options()
    view = training_view(cfg, index, splits, cache_dir=Path(cache_dir) if cache_dir is not None else run_dir / "cache")
    task = SegmentTask(loss=cfg.loss, threshold=cfg.threshold, augment=SegmentAugment(**cfg.augment_acquisition) if cfg.augment else None,
                       window=view.window)
    folds = member_splits(splits, cfg.ensemble, cfg.train.seed) if cfg.ensemble_by == "folds" else None
    views = [view.resplit(f) for f in folds] if folds else [view] * cfg.ensemble

    def train_one(k: int, mtc: TrainConfig, mdir: Path, mresume: bool) -> tuple[Any, Any]:
        seed_everything(mtc.seed)  # the initial weights too: same config, same run
        model = create_model(cfg.model, num_classes=1, in_channels=view.channels, **network)
        init_output_bias(model, views[k].foreground("train"))
        return model, fit(model, task, views[k].train_loader(mtc), views[k].val_loader(mtc), mtc, mdir, resume=mresume)

    model, result, members = fit_members(cfg.ensemble, cfg.train, run_dir, train_one, resume=resume)
    device = resolve_device(cfg.train.device)
    counts = {**view.counts(), "members": members}
    answer = with_mirror if cfg.tta == "flip" else (lambda m: m)  # how the package will answer
    members_of = model.members if folds else None
    model = answer(model)
    if folds:  # each pooled patient predicted by the one member that did not train on it
        oof = [p for k, v in enumerate(views) for p in v.predict(answer(members_of[k]), "val", device=device)]
        for row, f in zip(members, folds):
            row["val_patients"] = f["val"]
        pool = sorted(splits["train"] + splits["val"])
        post = decide_postprocess(cfg.postprocess, cfg.threshold, ((p, t) for _, p, t in oof),
                                  itertools.chain(view.truths("train"), view.truths("val")))
        post["chosen_by"] = f"out-of-fold predictions of {len(oof)} patients"
        counts["ensemble_by"] = "folds"
    else:
        val = ((prob, truth) for _, prob, truth in view.predict(model, "val", device=device))
        post = decide_postprocess(cfg.postprocess, cfg.threshold, val, view.truths("train"))
    plain = None  # the same patients without the mirror: what test-time mirroring gave (dice_if_no_mirror)
    if len(view.parts["test"]) or not folds:
        eval_split = "test" if len(view.parts["test"]) else "val"
        patients, scored = splits[eval_split], view
        rows, slices, probs = view.evaluate(model, eval_split, threshold=cfg.threshold, device=device,
                                            postprocess=post["rule"])
        if cfg.tta == "flip":
            plain = view.predict(model.inner, eval_split, device=device)
    else:
        eval_split, patients = "out_of_fold", pool
        scored = view.resplit({eval_split: pool})
        rows, slices, probs = scored.score(oof, eval_split, threshold=cfg.threshold, postprocess=post["rule"])
        if cfg.tta == "flip":
            plain = (p for k, v in enumerate(views) for p in v.predict(members_of[k], "val", device=device))
    if plain is not None:
        for pid, r in scored.score(plain, eval_split, threshold=cfg.threshold, postprocess=post["rule"])[0].items():
            rows[pid]["dice_if_no_mirror"] = r["dice"]
    return Fitted(model, result, eval_split, patients, rows, slices, probs, view.problems, counts,
                  view.input_meta(model), post)


def member_splits(splits: dict[str, list[str]], n: int, seed: int) -> list[dict[str, list[str]]]:
    """A fold ensemble's splits (nnU-Net's five-fold ensemble): the training and validation
    patients pooled and cut into ``n`` folds (:func:`~medlens.segment.data.patient_folds`
    with ``seed``); member k validates on fold k and trains on the others. Test patients
    stay out of every member."""
    from medlens.segment.data import patient_folds

    pool = sorted(splits["train"] + splits["val"])
    if len(pool) < n:
        raise ConfigError(f"an ensemble over {n} folds needs at least {n} training and validation patients, "
                          f"the run has {len(pool)}; lower --ensemble or use ensemble_by seed")
    return [{"train": [p for p in pool if p not in fold], "val": sorted(fold), "test": list(splits["test"])}
            for fold in patient_folds(pool, n, seed=seed)]


def package_metadata(cfg: SegmentConfig, input_meta: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """``metadata.json`` of a segmentation package; ``input_meta`` holds channels, size,
    divisor, spatial_dims and patch (``(D, H, W)`` for 3D models)."""
    return {
        "task": "segment", "classes": ["background", "lesion"], "threshold": cfg.threshold,
        "postprocess": metrics.get("postprocess", {}).get("rule", "none"),
        "tta": cfg.tta,  # built into the packaged model ("mirror"): every prediction is the mean of both
        "input": {**input_meta, "dtype": "uint8 scaled to [0, 1]"},
        "preprocess": {"resize": cfg.size,
                       "intensity": intensity_to_dict(cfg.intensity),  # the config's policy, read back at predict
                       "slice_intensity": cfg.slice_intensity,  # 2D files: per-patient (per-folder) policy
                       "mask_rule": "binary masks; other values binarised (see medlens.segment.data)"},
        "loss": cfg.loss, "metrics": {k: v for k, v in metrics.items() if k != "per_patient"},
        "config": cfg.model_dump(mode="json"),  # the typed run config (medlens.tasks.config)
        "data": {"path": cfg.data, "layout": cfg.layout},
    }


def _save_splits(index, splits: dict[str, list[str]], path: Path) -> None:
    from medlens.data.splits import save_splits

    where = {p: s for s, ps in splits.items() for p in ps}
    save_splits(index.subset([dataclasses.replace(r, split=where.get(str(r.patient))) for r in index.records]), path)


def config_from_cli(*, data: Path, config: Path | None, options: dict[str, Any]) -> SegmentConfig:
    """The run config from command-line options (``None``/False: not given) over the config file."""
    from medlens.pipelines.config import deep_update, load_config_file

    base = load_config_file(config) if config else {}
    over: dict[str, Any] = {"data": str(data)}
    for key in ("layout", "mask_pattern", "size", "val_fraction", "test_fraction", "spatial_dims", "ensemble",
                "ensemble_by", "loss", "group_by"):
        if options.get(key) is not None:
            over[key] = options[key]
    if options.get("patch"):
        over["patch"] = parse_patch(options["patch"])
    if options.get("model"):
        over["model"] = options["model"]
    if options.get("no_augment"):
        over["augment"] = False
    train = dict(DEFAULT_TRAIN, **(base.get("train") or {}))  # the file's settings over the defaults
    if options.get("patience") is not None and "keep" not in (base.get("train") or {}):
        train["keep"] = "best"  # --patience asks for early stopping, which keeps the best epoch
    for key, field in (("epochs", "epochs"), ("batch_size", "batch_size"), ("lr", "lr"),
                       ("patience", "patience"), ("scheduler", "scheduler"), ("seed", "seed"),
                       ("device", "device"), ("max_steps", "max_steps_per_epoch")):
        if options.get(key) is not None:
            train[field] = options[key]
    over["train"] = train
    if options.get("ensemble") is None and "ensemble" not in base:
        recipe = fold_ensemble_recipe(data, layout=over.get("layout") or base.get("layout"),
                                      mask_pattern=over.get("mask_pattern") or base.get("mask_pattern"))
        if over.get("ensemble_by", base.get("ensemble_by", "folds")) != "folds":
            recipe.pop("test_fraction", None)  # a seed ensemble has no out-of-fold estimate: keep the test split
        over.update({k: v for k, v in recipe.items() if k not in over and k not in base})  # the user's values win
    return make_config(**deep_update(base, over))


def fold_ensemble_recipe(data: Path, *, layout: str | None, mask_pattern: str | None) -> dict[str, Any]:
    """:data:`~medlens.train.ensemble.FOLD_ENSEMBLE` (and no test split,
    :data:`~medlens.train.ensemble.FOLD_ENSEMBLE_TEST_FRACTION`) for data sets of at least
    :data:`~medlens.train.ensemble.FOLD_ENSEMBLE_MIN_PATIENTS` patients, else nothing (one network)."""
    from medlens.segment.layouts import load_segmentation_dataset
    from medlens.train.ensemble import (
        FOLD_ENSEMBLE,
        FOLD_ENSEMBLE_MIN_PATIENTS,
        FOLD_ENSEMBLE_TEST_FRACTION,
    )

    try:
        n = len({r.patient for r in load_segmentation_dataset(data, layout=layout, mask_pattern=mask_pattern).records})
    except (ConfigError, BadInputError, OSError):
        return {}  # the run itself reports what is wrong with the data
    if n < FOLD_ENSEMBLE_MIN_PATIENTS:
        return {}
    logger.info("%d patients: a cross-validation ensemble of %d U-Nets trained on every patient unless "
                "--test-fraction is given (--ensemble 1 for one network)", n, FOLD_ENSEMBLE["ensemble"])
    return {**FOLD_ENSEMBLE, "test_fraction": FOLD_ENSEMBLE_TEST_FRACTION}


def train_from_cli(*, data: Path, out: Path | None, config: Path | None, resume: bool,
                   options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """``medlens train DATA --task segment``: flags override the config file."""
    from medlens.tasks.config import run_config_or_resume

    cfg, out = run_config_or_resume(data, out, task="segment", resume=resume,
                                    make=lambda: config_from_cli(data=data, config=config, options=options))
    if not resume and ((out / "checkpoints" / "last.pt").exists() or any(out.glob("member*/checkpoints/last.pt"))):
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    return train_segmentation(cfg, out, resume=resume), out


def run_demo(out: str | Path, *, seed: int = 0, quick: bool = False, device: str = "auto") -> Path:
    """Synthetic brain MRI → train → evaluate → report, a few minutes on 2 CPU cores."""
    from medlens.data.synthetic.brain import make_brain_mri_like

    out = Path(out)
    data = out / "data"
    if not data.exists():
        make_brain_mri_like(data, patients=4 if quick else 8, slices=8 if quick else 16,
                            size=64, difficulty=0.3, seed=seed)
    train = dict(DEFAULT_TRAIN, seed=seed, epochs=2 if quick else 20, batch_size=16, lr=3e-3, patience=8,
                 device=device)
    if quick:
        train["max_steps_per_epoch"] = 3
    cfg = SegmentConfig(data=str(data), layout="kaggle_3m", size=64,
                        model="test_unet" if quick else "unet", train=TrainConfig(**train),
                        val_fraction=0.25, test_fraction=0.25)
    run_dir = out / "run"
    train_segmentation(cfg, run_dir, resume=(run_dir / "checkpoints" / "last.pt").exists())
    return run_dir
