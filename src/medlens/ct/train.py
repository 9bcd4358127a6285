"""Training the three networks of the lung-CT pipeline with the project's engine.

* The candidate U-Net trains on in-plane patches of context slices (``2·context+1``
  channels) drawn from the cached scans: half centred near a nodule (jittered), half at
  random lung points; the target is the nodules as balls in mm. The engine task is the
  segmentation task of :mod:`medlens.segment.task` (Dice + BCE, batched flips/affine).
* The crop models (nodule vs not, malignant vs benign) train on 3D crops extracted once
  from the cached scans (:mod:`medlens.ct.crops`), positives and negatives balanced each
  epoch as in the book, with :func:`medlens.ct.classifier.augment_crops`.

Every loader re-draws its samples per epoch from a generator seeded by (seed, epoch), so
runs are reproducible and the engine's ``--resume`` replays the same epochs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medlens.ct.blobs import BlobParams
from medlens.ct.candidates import context_offsets
from medlens.ct.classifier import CropAugment, augment_crops
from medlens.ct.crops import CropSpec, sphere_mask
from medlens.ct.lungs import LungMask
from medlens.io.volumes import Volume
from medlens.train.config import TrainConfig
from medlens.transforms.intensity import FixedWindow

log = logging.getLogger(__name__)

CANDIDATE_TRAIN = {"epochs": 12, "batch_size": 16, "lr": 2e-3, "patience": 6, "scheduler": "cosine"}
CROP_TRAIN = {"epochs": 12, "batch_size": 32, "lr": 1e-3, "patience": 6, "scheduler": "cosine"}


class CtConfig(BaseModel):
    """A lung-CT pipeline run (saved as ``config.json``; also in the package)."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["ct"] = "ct"  # the key of the task union (medlens.tasks.config)
    data: str
    val_fraction: float = Field(0.25, ge=0, lt=1, description="share of scans held out for validation")
    val_scans: list[str] | None = Field(None, description="series uids held out (overrides val_fraction)")
    seed: int = 0
    device: str = "auto"
    cache_dir: str | None = Field(None, description="decoded-scan cache; None = <run>/cache")
    # --- candidates (2D U-Net on context slices) ---
    context: int = Field(3, ge=0, le=8, description="slices above and below the focus slice (book: 3)")
    hu_window: tuple[float, float] = (-1000.0, 400.0)
    candidate_model: str = "unet"
    candidate_kwargs: dict[str, Any] = Field(default_factory=lambda: {"channels": [8, 16, 32, 64],
                                                                       "num_res_units": 1})
    patch: int = Field(64, ge=16, description="in-plane side of the U-Net's training patches, voxels")
    patches_per_epoch: int = Field(512, ge=8)
    pos_fraction: float = Field(0.5, gt=0, lt=1, description="share of patches centred near a nodule")
    candidate_threshold: float = Field(0.3, gt=0, lt=1, description="voxel probability that flags a candidate")
    min_voxels: int = Field(3, ge=1, description="smaller candidate groups are dropped")
    max_candidates: int = Field(300, ge=1, description="most probable candidate groups kept per scan")
    blob_candidates: bool = Field(True, description="add classical Hessian blobs (medlens.ct.blobs) to the "
                                  "U-Net's candidates: recall that does not depend on the U-Net transferring")
    max_blobs: int = Field(40, ge=1, description="strongest blobs kept per scan")
    blob_min_blobness: float = Field(40.0, gt=0, description="weakest blob kept: -σ²·λ₃ of the smoothed HU, in HU")
    train_candidates: TrainConfig = Field(default_factory=lambda: TrainConfig(**CANDIDATE_TRAIN))
    # --- crop models (nodule, malignancy) ---
    crop_shape: tuple[int, int, int] = (32, 48, 48)
    crop_spacing_mm: tuple[float, float, float] = (1.5, 1.0, 1.0)
    crop_model: str = "ct_crop_cnn"
    crop_kwargs: dict[str, Any] = Field(default_factory=dict)
    augment: CropAugment = Field(default_factory=CropAugment)
    negatives_per_scan: int = Field(60, ge=0, description="candidates.csv class-0 rows used per scan (random)")
    mined_negatives_per_scan: int = Field(30, ge=0, description="U-Net candidates that are not nodules, used "
                                          "per scan as negatives of the nodule network (random)")
    crops_per_epoch: int = Field(1024, ge=8, description="crops drawn per epoch, half positive")
    positive_copies: int = Field(1, ge=1, le=64, description="crops per reference nodule in the nodule network's "
                                 "training set: the centre and copies shifted by up to ±positive_shift of its "
                                 "diameter (positives are few; candidate centres miss nodule centres)")
    positive_shift: float = Field(0.3, ge=0, le=1, description="largest shift of a positive copy, in diameters")
    train_nodule: TrainConfig = Field(default_factory=lambda: TrainConfig(**CROP_TRAIN))
    ranker: bool = Field(True, description="rank the candidates with a small network on shape/intensity "
                         "descriptors (medlens.ct.ranker), fitted on the training scans' candidates; False = the "
                         "nodule network's probability decides")
    ranker_hidden: int = Field(16, ge=0, le=256, description="hidden units of the ranker (0: a logistic "
                               "regression, the ranker of packages before 2026-12-03)")
    ranker_alpha: float = Field(1.0, gt=0, description="L2 strength of the ranker's hidden-layer network")
    ranker_inputs: Literal["image", "all"] = Field("image", description="the ranker's inputs: the image "
                                                   "descriptors only (transfer from phantoms to real CT), or also "
                                                   "the candidate generator's score and the nodule network's logit")
    ranker_c: float = Field(0.03, gt=0, description="inverse L2 strength of the ranker's logistic regression "
                            "(ranker_hidden 0)")
    min_lung_air: float = Field(0.1, ge=0, lt=1, description="with the ranker: candidates whose 30×40×40 mm box "
                                "holds less than this share of lung (< -700 HU) are dropped — a lung nodule has "
                                "lung around it (phantom nodules: ≥ 0.25; LIDC-IDRI-0001's: 0.44)")
    require_lump: bool = Field(True, description="with the ranker: candidates with nothing denser than -600 HU "
                               "within 3 mm of their centre are dropped — a nodule is denser than lung (phantom "
                               "nodules, ground glass included, always have such a lump)")
    train_malignancy: TrainConfig = Field(default_factory=lambda: TrainConfig(**CROP_TRAIN))
    # --- decisions ---
    nodule_threshold: float | None = Field(None, gt=0, lt=1, description="operating threshold on the nodule "
                                           "probability; None = chosen on the validation scans")
    target_fp_per_scan: float = Field(2.0, gt=0, description="the threshold chosen on validation keeps "
                                      "at most this many false positives per scan")
    max_findings_per_scan: int | None = Field(4, ge=1, description="reading budget: at most this many findings "
                                              "per scan at the operating point, the most probable (None: no "
                                              "limit). Bounds the false positives on scans unlike the training "
                                              "ones (see medlens.ct.detect)")
    min_prob: float = Field(0.02, ge=0, lt=1, description="findings below this nodule probability are not "
                            "written (the FROC needs the rest)")
    measure_size: bool = Field(True, description="blob findings report the measured diameter of the lump at "
                               "their centre (medlens.ct.sizing) instead of the blob's scale")
    suppress_within: float = Field(1.5, ge=0, description="one finding per lump: a finding within this many "
                                   "radii (the larger of the two) of a more probable one is dropped as the same "
                                   "nodule (0: keep all; medlens.ct.findings.one_per_lump)")

    @property
    def blobs(self) -> BlobParams:
        return BlobParams(enabled=self.blob_candidates, max_blobs=self.max_blobs, min_blobness=self.blob_min_blobness)

    @property
    def crop(self) -> CropSpec:
        return CropSpec(self.crop_shape, self.crop_spacing_mm, self.hu_window)

    @property
    def window(self) -> FixedWindow:
        return FixedWindow(lower=self.hu_window[0], upper=self.hu_window[1], output="float32")


@dataclass
class TrainScan:
    """One training scan: its (cached, memory-mapped) volume, lungs and reference nodules."""

    seriesuid: str
    volume: Volume
    lungs: LungMask
    nodules_xyz: np.ndarray  # (N, 3) LPS mm
    diameters_mm: np.ndarray  # (N,)
    malignant: list[bool | None] = field(default_factory=list)
    negatives_xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # candidates.csv class 0

    @property
    def nodules_irc(self) -> np.ndarray:
        return self.volume.geometry.world_to_index(self.nodules_xyz.reshape(-1, 3))


class PatchLoader:
    """Per epoch, ``n`` U-Net patches ``image`` (B, 2c+1, P, P) float 0–1 and ``mask`` (B, 1, P, P)."""

    def __init__(self, scans: list[TrainScan], cfg: CtConfig, n: int, *, seed: int, fixed: bool = False) -> None:
        self.scans, self.cfg, self.n, self.seed = scans, cfg, n, seed
        self.batch_size = cfg.train_candidates.batch_size
        self.epoch = 0
        self._lung_points = [np.argwhere(s.lungs.mask) for s in scans]  # coarse grid, once
        self._fixed = self._draw(np.random.default_rng(seed)) if fixed else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def _draw(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        images, masks, codes = [], [], []
        with_nodules = [k for k, s in enumerate(self.scans) if len(s.nodules_xyz)]
        for _ in range(self.n):
            positive = bool(with_nodules) and rng.random() < self.cfg.pos_fraction
            k = int(rng.choice(with_nodules)) if positive else int(rng.integers(len(self.scans)))
            scan = self.scans[k]
            if positive:
                j = int(rng.integers(len(scan.nodules_xyz)))
                r_vox = scan.diameters_mm[j] / 2 / np.asarray(scan.volume.geometry.array_spacing)
                jitter = rng.uniform(-1, 1, 3) * np.r_[r_vox[0], r_vox[1:] + self.cfg.patch / 4]
                centre = scan.nodules_irc[j] + jitter
            else:
                centre = _random_lung_point(scan.lungs, self._lung_points[k], rng)
            img, msk = _patch(scan, centre, self.cfg)
            images.append(img), masks.append(msk), codes.append(k)
        return {"image": np.stack(images), "mask": np.stack(masks)[:, None], "patient": np.asarray(codes)}

    def __iter__(self):  # noqa: ANN204
        data = self._fixed if self._fixed is not None else self._draw(
            np.random.default_rng([self.seed, self.epoch]))
        for i in range(0, self.n, self.batch_size):
            yield {"image": torch.from_numpy(data["image"][i : i + self.batch_size]),
                   "mask": torch.from_numpy(data["mask"][i : i + self.batch_size]),
                   "patient": torch.from_numpy(data["patient"][i : i + self.batch_size])}


def _random_lung_point(lungs: LungMask, pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random full-resolution point in the lung mask (``pts``: its coarse voxels)."""
    p = pts[int(rng.integers(len(pts)))] * np.asarray(lungs.stride) + rng.uniform(0, 1, 3) * np.asarray(lungs.stride)
    return np.minimum(p, np.asarray(lungs.shape) - 1)


def _patch(scan: TrainScan, centre: np.ndarray, cfg: CtConfig) -> tuple[np.ndarray, np.ndarray]:
    """The context-slice patch around ``centre`` (clamped inside the scan, padded with air if the
    scan is smaller than the patch) and its nodule mask."""
    hu = scan.volume.array
    d, h, w = hu.shape
    p = cfg.patch
    i = int(np.clip(round(float(centre[0])), 0, d - 1))
    r0 = int(np.clip(round(float(centre[1])) - p // 2, 0, max(h - p, 0)))
    c0 = int(np.clip(round(float(centre[2])) - p // 2, 0, max(w - p, 0)))
    idx = np.clip(i + context_offsets(cfg.context), 0, d - 1)
    raw = np.asarray(hu[idx, r0 : r0 + p, c0 : c0 + p], dtype=np.float32)
    box = (slice(i, i + 1), slice(r0, r0 + raw.shape[1]), slice(c0, c0 + raw.shape[2]))
    mask = sphere_mask(hu.shape, scan.volume.geometry, scan.nodules_xyz, scan.diameters_mm, box=box)[0]
    img = cfg.window.apply(raw)
    if raw.shape[1:] != (p, p):
        pad = ((0, 0), (0, p - raw.shape[1]), (0, p - raw.shape[2]))
        img, mask = np.pad(img, pad), np.pad(mask, pad[1:])
    return img.astype(np.float32), mask.astype(np.uint8)


class CropLoader:
    """Balanced crop batches ``crop`` (B, D, H, W) float and ``label`` (B,) int64.

    Training: per epoch ``n`` crops, half drawn from the positives and half from the
    negatives (with replacement when a side is short, as the book's balanced sampler);
    validation (``balanced=False``): every crop once, in order.
    """

    def __init__(self, crops: np.ndarray, labels: np.ndarray, *, batch_size: int, n: int | None = None,
                 seed: int = 0, balanced: bool = True) -> None:
        self.crops, self.labels = crops, np.asarray(labels, dtype=np.int64)
        self.batch_size, self.seed, self.balanced = batch_size, seed, balanced
        self.n = int(n if n is not None and balanced else len(self.labels))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def _order(self) -> np.ndarray:
        if not self.balanced:
            return np.arange(len(self.labels))
        rng = np.random.default_rng([self.seed, self.epoch])
        pos, neg = np.flatnonzero(self.labels == 1), np.flatnonzero(self.labels == 0)
        sides = [s for s in (pos, neg) if len(s)]
        picks = [rng.choice(s, size=self.n // len(sides), replace=len(s) < self.n // len(sides)) for s in sides]
        order = np.concatenate(picks)
        return order[rng.permutation(len(order))]

    def __iter__(self):  # noqa: ANN204
        order = self._order()
        for i in range(0, len(order), self.batch_size):
            sel = np.sort(order[i : i + self.batch_size])
            yield {"crop": torch.from_numpy(np.asarray(self.crops[sel], dtype=np.float32)),
                   "label": torch.from_numpy(self.labels[sel])}


@dataclass
class CropTask:
    """Two-class crop classification for the engine; ``val_score`` is the AUC when the
    validation crops hold both classes, else minus the validation loss."""

    augment: CropAugment = field(default_factory=CropAugment)
    monitor: str = "val_score"
    mode: str = "max"

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        x = augment_crops(batch["crop"].to(device)[:, None], self.augment)
        return F.cross_entropy(model(x), batch["label"].to(device))

    @torch.no_grad()
    def validate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        from sklearn.metrics import roc_auc_score

        probs, labels, loss, n = [], [], 0.0, 0
        for batch in loader:
            logits = model(batch["crop"].to(device)[:, None]).float()
            y = batch["label"].to(device)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            n += len(y)
            probs.append(torch.softmax(logits, 1)[:, 1].cpu().numpy())
            labels.append(y.cpu().numpy())
        p = np.concatenate(probs) if probs else np.zeros(0)
        y_all = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        val_loss = loss / n if n else float("nan")
        auc = float(roc_auc_score(y_all, p)) if len(np.unique(y_all)) == 2 else float("nan")
        acc = float(np.mean((p >= 0.5) == (y_all == 1))) if n else float("nan")
        return {"val_score": auc if np.isfinite(auc) else -val_loss, "val_auc": auc, "val_loss": val_loss,
                "val_accuracy": acc}


def fit_stage(model: nn.Module, task: Any, train_loader: Any, val_loader: Any, cfg: TrainConfig,
              run_dir: Path, *, resume: bool) -> Any:
    """One stage through :func:`medlens.train.engine.fit` into ``run_dir`` (checkpoints, logs);
    a stage's ``threads`` setting ends with the stage (the engine sets it process-wide)."""
    from medlens.train.engine import fit

    if resume and not (run_dir / "checkpoints" / "last.pt").exists():
        resume = False  # the run was killed before this stage began
    threads = torch.get_num_threads()
    try:
        return fit(model, task, train_loader, val_loader, cfg, run_dir, resume=resume)
    finally:
        torch.set_num_threads(threads)
