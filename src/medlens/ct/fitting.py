"""Training the lung-CT pipeline from a LUNA16 layout (:func:`train_pipeline`).

Reads a LUNA16 layout (``subset*/<uid>.mhd`` or DICOM series / NIfTI files found by
:func:`medlens.ct.scan.find_scans`, ``annotations.csv`` and optionally ``candidates.csv`` and
``annotations_excluded.csv`` at the root), splits the scans into training and validation
scans, trains the three networks with the project's engine (:mod:`medlens.ct.train`), runs
detection on the validation scans, chooses the operating threshold there (at most
``target_fp_per_scan`` false positives per scan), and writes the package (stages
``candidates``, ``nodule``, ``malignancy``), ``metrics.json``, ``nodules.csv`` and
``report.html`` (:mod:`medlens.ct.report`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medlens.ct.crops import CropSpec, ScanCache, extract_crops
from medlens.ct.dataset import CtData, load_ct_data, split_scans
from medlens.ct.detect import (
    DIAGNOSIS_RULE,
    Detector,
    DetectParams,
    top_findings,
    write_diagnosis_csv,
)
from medlens.ct.evaluation import froc_of, operating_point, write_report
from medlens.ct.findings import Finding
from medlens.ct.froc import choose_threshold
from medlens.ct.lungs import lung_mask
from medlens.ct.packaging import model_card, save_ct_package
from medlens.ct.train import CropLoader, CropTask, CtConfig, PatchLoader, TrainScan, fit_stage
from medlens.errors import BadInputError, ConfigError
from medlens.io.atomic import atomic_write_json
from medlens.io.lock import folder_lock
from medlens.io.runlog import logged_run

log = logging.getLogger(__name__)


def _train_scan(ref: Any, data: CtData, cache: ScanCache, problems: list[str], *, read: Any,
                negatives_per_scan: int, rng: np.random.Generator) -> TrainScan | None:
    """A scan ready for training (or ``None``, with the reason in ``problems``)."""
    from medlens.ct.annotations import check_inside

    try:
        vol = cache.load(ref.path, read)
    except BadInputError as e:
        problems.append(str(e))
        log.warning("skipped: %s", e)
        return None
    nodules = list(data.annotations.get(ref.seriesuid, []))
    for msg in check_inside(nodules, vol):
        problems.append(msg)
        log.warning("%s", msg)
    shape = np.asarray(vol.spatial_shape)
    irc = vol.geometry.world_to_index(np.array([n.center_xyz for n in nodules], dtype=np.float64).reshape(-1, 3))
    inside = [n for n, p in zip(nodules, irc, strict=True) if np.all((p > -0.5) & (p < shape - 0.5))]
    neg = np.array([c.center_xyz for c in data.candidates.get(ref.seriesuid, []) if int(c.label) == 0],
                   dtype=np.float64).reshape(-1, 3)
    if len(neg) > negatives_per_scan:
        neg = neg[np.sort(rng.choice(len(neg), negatives_per_scan, replace=False))]
    return TrainScan(ref.seriesuid, vol, lung_mask(vol.array, vol.geometry.array_spacing),
                     np.array([n.center_xyz for n in inside], dtype=np.float64).reshape(-1, 3),
                     np.array([n.diameter_mm for n in inside], dtype=np.float64),
                     [n.malignant for n in inside], neg)


def _hits(points_xyz: np.ndarray, scan: TrainScan) -> np.ndarray:
    """Whether each point lies within the radius of one of the scan's nodules."""
    if not len(scan.nodules_xyz) or not len(points_xyz):
        return np.zeros(len(points_xyz), dtype=bool)
    dist = np.linalg.norm(points_xyz[:, None, :] - scan.nodules_xyz[None], axis=2)
    return np.any(dist < np.maximum(scan.diameters_mm[None] / 2, 1.5), axis=1)


def positive_points(centers_xyz: np.ndarray, diameters_mm: np.ndarray, copies: int, shift: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Each nodule's centre (first, in order) and then ``copies - 1`` points per nodule shifted
    from it by up to ``shift`` of its diameter along each axis (mm): positives are few, and
    candidates seldom sit on a nodule's centre."""
    centers = np.asarray(centers_xyz, dtype=np.float64).reshape(-1, 3)
    if copies <= 1 or not len(centers):
        return centers
    diam = np.asarray(diameters_mm, dtype=np.float64).reshape(-1)
    offs = rng.uniform(-1, 1, (len(centers), copies - 1, 3)) * (shift * diam)[:, None, None]
    return np.concatenate([centers, (centers[:, None, :] + offs).reshape(-1, 3)])


def _nodule_points(scan: TrainScan, found: Sequence[Finding], mined_negatives: int,
                   rng: np.random.Generator, *, copies: int = 1, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Crop centres (mm) and labels for the nodule network in one scan: its reference nodules
    (1, ``copies`` each, see :func:`positive_points`), candidates.csv class 0 (0), and the
    U-Net's candidates — those within a nodule's radius (1), and up to ``mined_negatives`` of
    the others (0, the false positives the network must learn to reject)."""
    cand_xyz = np.array([f.center_xyz for f in found], dtype=np.float64).reshape(-1, 3)
    hit = _hits(cand_xyz, scan)
    miss = np.flatnonzero(~hit)
    if len(miss) > mined_negatives:
        miss = np.sort(rng.choice(miss, mined_negatives, replace=False))
    refs = positive_points(scan.nodules_xyz, scan.diameters_mm, copies, shift, rng)
    pts = np.concatenate([refs, scan.negatives_xyz, cand_xyz[hit], cand_xyz[miss]])
    lab = np.concatenate([np.ones(len(refs)), np.zeros(len(scan.negatives_xyz)), np.ones(int(hit.sum())),
                          np.zeros(len(miss))]).astype(np.int64)
    return pts, lab


def _crop_set(scans: Sequence[TrainScan], points: Sequence[np.ndarray], spec: CropSpec, store: Path
              ) -> np.ndarray:
    """Every scan's crops, extracted once into ``store`` (a float16 ``.npy`` read memory-mapped:
    epochs read crops from it, not the scans, and a LUNA16-sized set need not fit in memory)."""
    total = int(sum(len(p) for p in points))
    store.parent.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(store, mode="w+", dtype=np.float16, shape=(total, *spec.shape))
    k = 0
    for s, pts in zip(scans, points, strict=True):
        if len(pts):
            irc = s.volume.geometry.world_to_index(pts)
            out[k : k + len(pts)] = extract_crops(s.volume.array, s.volume.geometry.array_spacing, irc, spec)
            k += len(pts)
    out.flush()
    return np.load(store, mmap_mode="r")


def _nodule_crops(scans: Sequence[TrainScan], cands: dict[str, list[Finding]], spec: CropSpec, store: Path, *,
                  mined_negatives: int, seed: int, copies: int = 1, shift: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Crops (memory-mapped, see :func:`_crop_set`) and labels for the nodule network."""
    rng = np.random.default_rng(seed)
    pairs = [_nodule_points(s, cands.get(s.seriesuid, []), mined_negatives, rng, copies=copies, shift=shift)
             for s in scans]
    labels = np.concatenate([lab for _, lab in pairs]) if pairs else np.zeros(0, np.int64)
    return _crop_set(scans, [p for p, _ in pairs], spec, store), labels


def _malignancy_crops(scans: Sequence[TrainScan], spec: CropSpec, store: Path) -> tuple[np.ndarray, np.ndarray]:
    """Crops at the reference nodules whose malignancy is rated, and their labels."""
    points, labels = [], []
    for s in scans:
        known = [k for k, m in enumerate(s.malignant) if m is not None]
        points.append(s.nodules_xyz[known].reshape(-1, 3))
        labels += [int(bool(s.malignant[k])) for k in known]
    return _crop_set(scans, points, spec, store), np.asarray(labels, dtype=np.int64)


# --------------------------------------------------------------------------- training
@logged_run("run_dir")  # run_dir/run.log
def train_pipeline(cfg: CtConfig, run_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Train the three networks on ``cfg.data`` into ``run_dir`` (locked while it runs).

    Returns the metrics also written to ``metrics.json``.
    """
    run_dir = Path(run_dir)
    with folder_lock(run_dir):
        if not resume and (run_dir / "candidates" / "checkpoints" / "last.pt").exists():
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        return _train_pipeline(cfg, run_dir, resume=resume)


def _train_pipeline(cfg: CtConfig, run_dir: Path, *, resume: bool) -> dict[str, Any]:
    from medlens.ct.scan import read_ct
    from medlens.models import create_model
    from medlens.segment.models import divisor, init_output_bias
    from medlens.segment.task import SegmentTask
    from medlens.train.engine import resolve_device, seed_everything

    t0 = time.perf_counter()
    data = load_ct_data(cfg.data, need_annotations=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", cfg.model_dump(mode="json"))
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    cache = ScanCache(cfg.cache_dir or run_dir / "cache")
    problems: list[str] = []
    rng = np.random.default_rng(cfg.seed)
    scans = [s for s in (_train_scan(r, data, cache, problems, read=read_ct, negatives_per_scan=cfg.negatives_per_scan,
                                     rng=rng) for r in data.refs) if s is not None]
    if len(scans) < 2:
        raise BadInputError(f"{cfg.data}: lung-CT training needs at least 2 readable scans, found {len(scans)}")
    train_uids, val_uids = split_scans([s.seriesuid for s in scans], cfg)
    train = [s for s in scans if s.seriesuid in set(train_uids)]
    val = [s for s in scans if s.seriesuid in set(val_uids)]
    if not any(len(s.nodules_xyz) for s in train):
        raise BadInputError(f"{cfg.data}: no annotated nodule inside the training scans; nothing to learn from")
    atomic_write_json(run_dir / "splits.json", {"train": train_uids, "val": val_uids})
    log.info("lung-CT training: %d training scans, %d validation scans, %d problem(s)", len(train), len(val),
             len(problems))
    timings: dict[str, float] = {}

    # 1. candidate U-Net
    t = time.perf_counter()
    cand_model = create_model(cfg.candidate_model, num_classes=1, in_channels=2 * cfg.context + 1, spatial_dims=2,
                              **cfg.candidate_kwargs)
    init_output_bias(cand_model, 0.05)
    val_pool = val if any(len(s.nodules_xyz) for s in val) else train  # Dice needs nodules to look at
    tcfg = cfg.train_candidates.model_copy(update={"device": cfg.device, "seed": cfg.seed})
    res_c = fit_stage(cand_model, SegmentTask(loss="dice_bce"),
                      PatchLoader(train, cfg, cfg.patches_per_epoch, seed=cfg.seed),
                      PatchLoader(val_pool, cfg, max(cfg.patches_per_epoch // 4, 32), seed=cfg.seed + 1, fixed=True),
                      tcfg, run_dir / "candidates", resume=resume)
    timings["candidates_train_s"] = time.perf_counter() - t
    params = DetectParams(context=cfg.context, hu_window=cfg.hu_window, candidate_threshold=cfg.candidate_threshold,
                          min_voxels=cfg.min_voxels, max_candidates=cfg.max_candidates, divisor=divisor(cand_model),
                          crop=cfg.crop, blobs=cfg.blobs, min_prob=cfg.min_prob, malignancy_from=cfg.min_prob,
                          min_lung_air=cfg.min_lung_air if cfg.ranker else 0.0,
                          require_lump=cfg.require_lump and cfg.ranker, max_findings=cfg.max_findings_per_scan,
                          suppress_within=cfg.suppress_within, measure_size=cfg.measure_size)
    det = Detector(cand_model.eval(), nn.Identity(), None, params, device)
    t = time.perf_counter()
    with torch.inference_mode():
        cands = {s.seriesuid: det.candidates(s.volume, seriesuid=s.seriesuid, lungs=s.lungs) for s in scans}
    timings["candidates_infer_s"] = time.perf_counter() - t
    recall = _candidate_recall(train, cands)
    log.info("candidate U-Net: %.1f candidates per scan, %.0f%% of the training nodules among them",
             np.mean([len(v) for v in cands.values()]), 100 * recall)

    # 2. nodule vs not
    t = time.perf_counter()
    crops_dir = run_dir / "cache" / "crops"  # per run, even when the scan cache is shared
    xtr, ytr = _nodule_crops(train, cands, cfg.crop, crops_dir / "nodule_train.npy",
                             mined_negatives=cfg.mined_negatives_per_scan, seed=cfg.seed,
                             copies=cfg.positive_copies, shift=cfg.positive_shift)
    xva, yva = (_nodule_crops(val, cands, cfg.crop, crops_dir / "nodule_val.npy",
                              mined_negatives=cfg.mined_negatives_per_scan, seed=cfg.seed + 1) if val else (xtr, ytr))
    if len(np.unique(ytr)) < 2:
        raise BadInputError(f"{cfg.data}: the training scans give no negative candidates for the nodule network; "
                            "add candidates.csv (LUNA16) or more scans")
    nod_model = create_model(cfg.crop_model, num_classes=2, in_channels=1, spatial_dims=3, **cfg.crop_kwargs)
    ncfg = cfg.train_nodule.model_copy(update={"device": cfg.device, "seed": cfg.seed})
    res_n = fit_stage(nod_model, CropTask(augment=cfg.augment),
                      CropLoader(xtr, ytr, batch_size=ncfg.batch_size, n=cfg.crops_per_epoch, seed=cfg.seed),
                      CropLoader(xva, yva, batch_size=ncfg.batch_size, balanced=False),
                      ncfg, run_dir / "nodule", resume=resume)
    timings["nodule_train_s"] = time.perf_counter() - t

    # 2b. the ranker: descriptors + the network's logit, fitted on the training scans' candidates
    t = time.perf_counter()
    ranker, ranker_info = (_fit_ranker(train, cands, nod_model.eval(), cfg, device) if cfg.ranker
                           else (None, {"used": False, "why": "off in the config"}))
    timings["ranker_fit_s"] = time.perf_counter() - t

    # 3. malignancy (only when the annotations rate malignancy)
    t = time.perf_counter()
    mtr, mytr = _malignancy_crops(train, cfg.crop, crops_dir / "malignancy_train.npy")
    mal_model, res_m = None, None
    if len(np.unique(mytr)) == 2:
        mva, myva = _malignancy_crops(val, cfg.crop, crops_dir / "malignancy_val.npy")
        if len(np.unique(myva)) < 2:
            mva, myva = mtr, mytr  # too few rated validation nodules: watch the training fit
            log.info("malignancy: the validation scans do not hold both classes; monitoring the training crops")
        mal_model = create_model(cfg.crop_model, num_classes=2, in_channels=1, spatial_dims=3, **cfg.crop_kwargs)
        mcfg = cfg.train_malignancy.model_copy(update={"device": cfg.device, "seed": cfg.seed})
        res_m = fit_stage(mal_model, CropTask(augment=cfg.augment),
                          CropLoader(mtr, mytr, batch_size=mcfg.batch_size, n=max(len(mytr) * 4, 64), seed=cfg.seed),
                          CropLoader(mva, myva, batch_size=mcfg.batch_size, balanced=False),
                          mcfg, run_dir / "malignancy", resume=resume)
    else:
        log.warning("no malignancy stage: the annotations do not rate malignancy of both kinds (LUNA16's do "
                    "not; the phantoms' and LIDC's do)")
    timings["malignancy_train_s"] = time.perf_counter() - t

    # 4. validation: detection, FROC, the operating threshold
    det = Detector(cand_model.eval(), nod_model.eval(), None if mal_model is None else mal_model.eval(), params, device,
                   ranker)
    eval_scans = val or train
    t = time.perf_counter()
    with torch.inference_mode():
        findings = {s.seriesuid: det.score(s.volume, cands[s.seriesuid]) for s in eval_scans}
    timings["val_detect_s"] = time.perf_counter() - t
    reference = {s.seriesuid: data.annotations.get(s.seriesuid, []) for s in eval_scans}
    froc = froc_of(findings, reference, data.excluded)
    budget = cfg.max_findings_per_scan  # the threshold is chosen with the budget in force, as the package runs
    thr = cfg.nodule_threshold if cfg.nodule_threshold is not None else (
        choose_threshold(froc_of(top_findings(findings, budget), reference, data.excluded), cfg.target_fp_per_scan)
        if froc is not None else 0.5)
    params = dataclasses.replace(params, nodule_threshold=thr, malignancy_from=None)  # what the package does
    det.params = params
    metrics: dict[str, Any] = {
        "split": "val" if val else "train", "scans": [s.seriesuid for s in eval_scans],
        "train_scans": len(train), "val_scans": len(val), "nodule_threshold": thr,
        "threshold_rule": ("given in the config" if cfg.nodule_threshold is not None else
                           f"lowest threshold with at most {cfg.target_fp_per_scan:g} false positives per "
                           "validation scan") + ("" if budget is None else f"; at most {budget} findings per scan"),
        "max_findings_per_scan": budget,
        "candidate_recall_train": recall,
        "candidates_per_scan": float(np.mean([len(v) for v in cands.values()])),
        "best_epochs": {"candidates": res_c.best_epoch, "nodule": res_n.best_epoch,
                        "malignancy": None if res_m is None else res_m.best_epoch},
        "val_scores": {"candidates_dice": res_c.best_score, "nodule": res_n.best_score,
                       "malignancy": None if res_m is None else res_m.best_score},
        "ranker": ranker_info, "problems": problems, "diagnosis_rule": DIAGNOSIS_RULE, **timings,
    }
    if froc is not None:
        metrics["froc"] = froc.to_dict()
        metrics["cpm"] = froc.cpm
        metrics["operating_point"] = operating_point(findings, reference, data.excluded, threshold=thr,
                                                     max_findings=budget)
    metrics["diagnosis"] = [det.diagnose(findings[s.seriesuid], seriesuid=s.seriesuid) for s in eval_scans]
    metrics["train_seconds"] = time.perf_counter() - t0
    save_ct_package(run_dir / "model", cfg, det, metrics, cand_model, nod_model, mal_model, ranker)
    atomic_write_json(run_dir / "metrics.json", metrics)
    from medlens.ct.outputs import write_nodules_csv

    write_nodules_csv([f for s in eval_scans for f in findings[s.seriesuid]], run_dir / "nodules.csv")
    write_diagnosis_csv(metrics["diagnosis"], run_dir / "diagnosis.csv")
    write_report(run_dir, [(s.volume, findings[s.seriesuid], data.annotations.get(s.seriesuid, [])) for s in eval_scans],
            froc, params, model_card(metrics, cfg), title=f"Lung-CT nodules: {Path(cfg.data).name} "
                                                         f"({metrics['split']} scans)")
    return metrics


def _fit_ranker(scans: Sequence[TrainScan], cands: dict[str, list[Finding]], nod_model: nn.Module, cfg: CtConfig,
                device: torch.device) -> tuple[nn.Module | None, dict[str, Any]]:
    """The ranker (:mod:`medlens.ct.ranker`) fitted on every candidate of ``scans``: those
    within a nodule's radius are the positives. ``None`` (and why) when they hold no nodule."""
    from medlens.ct.classifier import score_crops
    from medlens.ct.features import candidate_features
    from medlens.ct.ranker import fit_ranker, needs_network, ranker_inputs, strongest_inputs

    xs, ys = [], []
    for s in scans:
        found = cands.get(s.seriesuid, [])
        if not found:
            continue
        p = np.full(len(found), 0.5)  # the network's opinion, only where the input set takes it
        if needs_network(cfg.ranker_inputs):
            centres = np.array([f.center_irc for f in found], dtype=np.float64)
            with torch.inference_mode():
                p = score_crops(nod_model, extract_crops(s.volume.array, s.volume.geometry.array_spacing, centres,
                                                         cfg.crop), batch_size=cfg.train_nodule.batch_size, device=device)
        xs.append(ranker_inputs(candidate_features(s.volume, found), p, cfg.ranker_inputs))
        ys.append(_hits(np.array([f.center_xyz for f in found], dtype=np.float64), s))
    y = np.concatenate(ys) if ys else np.zeros(0, dtype=bool)
    info: dict[str, Any] = {"used": False, "train_candidates": int(len(y)), "train_candidates_on_nodules": int(y.sum())}
    if y.sum() < 2 or (~y).sum() < 2:
        log.warning("no ranker: the training scans' candidates hold %d on nodules and %d elsewhere; the nodule "
                    "network's probability decides", int(y.sum()), int((~y).sum()))
        return None, {**info, "why": "too few candidates on nodules or elsewhere"}
    x = np.concatenate(xs)
    model = fit_ranker(x, y, inputs=cfg.ranker_inputs, hidden=cfg.ranker_hidden, c=cfg.ranker_c,
                       alpha=cfg.ranker_alpha, seed=cfg.seed).to(device)
    strongest = strongest_inputs(model, x)
    log.info("ranker: fitted on %d candidates (%d on nodules); strongest inputs %s", len(y), int(y.sum()),
             ", ".join(f"{n} {w:+.2f}" for n, w in strongest[:5]))
    return model, {**info, "used": True, "inputs": cfg.ranker_inputs, "hidden": cfg.ranker_hidden,
                   "c": cfg.ranker_c, "alpha": cfg.ranker_alpha,
                   "strongest_inputs": strongest}


def _candidate_recall(scans: Sequence[TrainScan], cands: dict[str, list[Finding]]) -> float:
    """Share of the scans' nodules that some candidate lies within the radius of."""
    hit = total = 0
    for s in scans:
        pts = np.array([f.center_xyz for f in cands.get(s.seriesuid, [])], dtype=np.float64).reshape(-1, 3)
        for c, d in zip(s.nodules_xyz, s.diameters_mm, strict=True):
            total += 1
            hit += bool(len(pts)) and bool(np.any(np.linalg.norm(pts - c, axis=1) < max(d / 2, 1.5)))
    return hit / total if total else float("nan")
