"""3D segmentation: whole volumes per patient, random patches, sliding-window evaluation.

Axis order is medlens' one convention (:mod:`medlens.io.geometry`) everywhere here:
images ``(C, D, H, W)``, masks ``(D, H, W)``, with D the slice (axial) axis, H rows and W
columns; each volume carries its :class:`~medlens.io.geometry.Geometry`, and metrics use its
``array_spacing`` ``(z, y, x)`` mm. A patch (``SegmentConfig.patch``,
``--patch``) is ``(D, H, W)`` in voxels too: ``--patch 32,64,64`` is 32 slices of 64×64.

Volumes come from the volume layouts (``nnunet``, ``volumes``: NIfTI/MetaImage) or from
``kaggle_3m``, whose slices are stacked per patient in slice-number order. Independent 2D
image pairs (``pairs``) are refused: they hold no volume to learn from.

Intensities are kept as uint8 after the same intensity policy as the 2D path (default: the
per-volume 0.5–99.5 percentile window, :class:`~medlens.transforms.intensity.PercentileWindow`),
not as float z-scores: a 2D and a 3D
model then see identical inputs, the predictor has one preprocessing for both, and whole
training volumes held in memory take a quarter of float32's space. The model sees
``uint8 / 255``.

Training draws random patches (:class:`PatchLoader`), validation (:class:`VolumeBatches`)
and evaluation predict whole volumes with ``monai.inferers.sliding_window_inference``;
:class:`~medlens.segment.views.VolumeView` puts them behind the data view that 2D shares.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlens.data.records import DatasetIndex, Problem
from medlens.errors import BadInputError, ConfigError
from medlens.io.geometry import Geometry
from medlens.segment.data import (
    SliceSet,
    channels_of,
    fit_channels,
    read_slice_pair,
    read_volume_pair,
    resize_pair,
)
from medlens.transforms.intensity import parse_intensity

logger = logging.getLogger(__name__)

#: Default training patch ``(D, H, W)``, clipped to the smallest training volume.
DEFAULT_PATCH: tuple[int, int, int] = (32, 64, 64)
#: Layouts without volumes: every record is an independent 2D image.
_LAYOUTS_2D = ("pairs",)


@dataclass
class VolumeSet:
    """Whole volumes, one per patient: images ``(C, D, H, W)`` uint8, masks ``(D, H, W)`` 0/1.

    ``slice_index`` and ``sources`` say where each slice came from (slice numbers of
    ``kaggle_3m`` files; ``path#z`` for volume files); ``geometry`` is each patient's grid after
    any in-plane resize, absent when the files carry no geometry (then metrics are in voxels);
    ``spacing`` derives ``(z, y, x)`` mm from it.
    """

    images: list[np.ndarray]
    masks: list[np.ndarray]
    patients: list[str]
    slice_index: list[np.ndarray]
    sources: list[list[str]]
    geometry: dict[str, Geometry] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.patients)

    @property
    def spacing(self) -> dict[str, tuple[float, ...]]:
        """Per patient with geometry, spacing in array order ``(z, y, x)`` mm."""
        return {p: g.array_spacing for p, g in self.geometry.items()}

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """``(patient, image, mask)`` per volume."""
        yield from zip(self.patients, self.images, self.masks)

    @property
    def channels(self) -> int:
        return int(self.images[0].shape[0])

    @property
    def shapes(self) -> list[tuple[int, int, int]]:
        """``(D, H, W)`` of every volume."""
        return [tuple(m.shape) for m in self.masks]  # type: ignore[misc]

    def select(self, patients: Sequence[str] | set[str]) -> VolumeSet:
        keep = [i for i, p in enumerate(self.patients) if p in set(patients)]
        return VolumeSet([self.images[i] for i in keep], [self.masks[i] for i in keep],
                         [self.patients[i] for i in keep], [self.slice_index[i] for i in keep],
                         [self.sources[i] for i in keep],
                         {p: g for p, g in self.geometry.items() if p in set(patients)}, [])

    def as_slices(self, probs: Sequence[np.ndarray] | None = None) -> tuple[Any, np.ndarray | None]:
        """The volumes as a :class:`~medlens.segment.data.SliceSet` (for the report's slice
        overlays and per-slice Dice), and ``probs`` stacked alike.

        Volumes of different in-plane sizes are zero-padded to the largest (bottom/right),
        which changes no Dice: padding is empty in truth and prediction alike.
        """
        h = max(s[1] for s in self.shapes)
        w = max(s[2] for s in self.shapes)

        def pad(a: np.ndarray) -> np.ndarray:  # (..., H, W) → (..., h, w)
            extra = [(0, 0)] * (a.ndim - 2) + [(0, h - a.shape[-2]), (0, w - a.shape[-1])]
            return np.pad(a, extra) if any(e[1] for e in extra) else a

        images = np.concatenate([pad(np.moveaxis(im, 1, 0)) for im in self.images])
        masks = np.concatenate([pad(m) for m in self.masks])[:, None]
        pats = np.concatenate([np.full(len(m), p) for p, m in zip(self.patients, self.masks)])
        sl = SliceSet(images, masks, pats.astype(str), np.concatenate(self.slice_index),
                      [s for src in self.sources for s in src], dict(self.geometry), list(self.problems))
        stacked = None if probs is None else np.concatenate([pad(p) for p in probs])
        return sl, stacked


def require_volume_layout(index: DatasetIndex) -> None:
    """Refuse 3D training on layouts of independent 2D images, naming what to do instead."""
    if index.layout in _LAYOUTS_2D:
        raise ConfigError(
            f"{index.root}: layout {index.layout!r} holds independent 2D image/mask pairs, not volumes; "
            "spatial_dims=3 (--spatial-dims 3) needs NIfTI/MetaImage volumes (layouts 'volumes', "
            "'nnunet') or kaggle_3m slice stacks. Train this data with --spatial-dims 2.")


def build_volumes(index: DatasetIndex, *, size: int | None = None, channels: int | None = None,
                  intensity: Any = None, labels: bool = False, slice_intensity: str = "none") -> VolumeSet:
    """Decode every patient of ``index`` into one volume.

    Args:
        size: resize every slice in-plane to ``size × size`` (images area-interpolated,
            masks nearest-neighbour; the slice axis is left alone, and the geometry follows);
            ``None`` keeps the voxels. Volumes may differ in shape.
        channels: image channels (``None``: those of the first readable record).
        intensity: intensity policy of volume files (see
            :func:`~medlens.segment.data.read_volume_pair`; default percentile window).
        labels: keep integer mask labels instead of binarising.
        slice_intensity: ``"patient"``: a patient's 2D slice files are stacked, then put through
            ``intensity`` as one volume (as :func:`~medlens.segment.data.build_slices` does).

    Unreadable files are listed as problems and left out, as in the 2D path; a
    ``kaggle_3m`` patient missing slices in the middle is stacked without them, with a
    warning naming the gap.
    """
    require_volume_layout(index)
    problems: list[Problem] = list(index.problems)
    groups: dict[str, list[Any]] = {}
    for rec in index.records:
        groups.setdefault(str(rec.patient), []).append(rec)
    out = VolumeSet([], [], [], [], [], {}, problems)
    for pid, recs in groups.items():
        try:
            if len(recs) == 1 and recs[0].meta.get("kind") == "volume":
                img, mask, geo, warns = read_volume_pair(recs[0], intensity=intensity, labels=labels)
                problems.extend(warns)
                nums = np.arange(img.shape[1])
                srcs = [f"{recs[0].path}#{z}" for z in nums]
            elif all(r.meta.get("kind") == "slice" for r in recs):
                img, mask, nums, srcs, geo = _stack_slices(recs, channels, problems, labels=labels)
                if slice_intensity == "patient" and img.shape[1]:  # as the 2D path does (one volume)
                    img = parse_intensity(intensity).apply(img)
            else:
                raise BadInputError(f"{recs[0].path}: patient {pid} has {len(recs)} volume records; "
                                    "give each patient one image volume and one mask volume")
        except BadInputError as e:
            problems.append(Problem(getattr(e, "path", recs[0].path), getattr(e, "reason", str(e))))
            logger.warning("skipped: %s", e)
            continue
        if img.shape[1] == 0:
            continue
        channels = channels or int(img.shape[0])
        img = fit_channels(img, channels)
        if size is not None and img.shape[-2:] != (size, size):
            if geo is not None:  # in-plane spacing follows the resize (mm stay mm)
                geo = geo.resampled(img.shape[1:], (img.shape[1], size, size))
            pairs = [resize_pair(img[:, z], mask[z], size) for z in range(img.shape[1])]
            img = np.stack([p[0] for p in pairs], axis=1)
            mask = np.stack([p[1] for p in pairs])
        out.images.append(np.ascontiguousarray(img))
        out.masks.append(np.ascontiguousarray(mask, dtype=mask.dtype if labels else np.uint8))
        out.patients.append(pid)
        out.slice_index.append(np.asarray(nums, dtype=np.int64))
        out.sources.append(list(srcs))
        if geo is not None:
            out.geometry[pid] = geo
    if not out.patients:
        raise BadInputError(f"{index.root}: no readable volume "
                            f"({len(problems)} problems; first: {problems[0].path}: {problems[0].reason})"
                            if problems else f"{index.root}: data set is empty")
    return out


def _stack_slices(recs: list[Any], channels: int | None, problems: list[Problem], *, labels: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, list[int], list[str], None]:
    """One patient's 2D slice files (``kaggle_3m``) → ``(C, D, H, W)``, ``(D, H, W)``."""
    imgs, masks, nums, srcs = [], [], [], []
    for rec in sorted(recs, key=lambda r: (r.meta.get("slice") or 0, r.path)):
        try:
            img, mask, warn = read_slice_pair(rec, channels or channels_of(rec.path), labels=labels)
        except BadInputError as e:
            problems.append(Problem(getattr(e, "path", rec.path), getattr(e, "reason", str(e))))
            logger.warning("skipped: %s", e)
            continue
        if warn:
            problems.append(warn)
        if imgs and (img.shape != imgs[0].shape):
            problems.append(Problem(rec.path, f"slice shape (C, H, W) {img.shape} differs from the "
                                    f"patient's first slice {imgs[0].shape}; slice skipped"))
            continue
        imgs.append(img), masks.append(mask), nums.append(int(rec.meta.get("slice") or 0)), srcs.append(rec.path)
    if not imgs:
        return np.zeros((channels or 1, 0, 1, 1), np.uint8), np.zeros((0, 1, 1), np.uint8), [], [], None
    gaps = sorted(set(range(nums[0], nums[-1] + 1)) - set(nums))
    if gaps:
        problems.append(Problem(str(Path(srcs[0]).parent), f"slices {gaps[:8]} missing; the volume is "
                                "stacked without them", "warning"))
    return np.stack(imgs, axis=1), np.stack(masks), nums, srcs, None


def resolve_patch(patch: Sequence[int] | None, shapes: Sequence[Sequence[int]], divisor: int
                  ) -> tuple[int, int, int]:
    """The training patch ``(D, H, W)``: the asked (or default) patch clipped to the smallest
    volume, each side rounded down to a multiple of ``divisor`` (at least ``divisor``, so
    every patch fits the U-Net; smaller volumes are zero-padded to it)."""
    want = tuple(DEFAULT_PATCH if patch is None else patch)
    if len(want) != 3 or any(int(s) < 1 for s in want):
        raise ConfigError(f"patch must be three positive sides (D, H, W), got {list(want)}")
    smallest = np.min(np.asarray(shapes), axis=0) if len(shapes) else np.asarray(want)
    return tuple(max(divisor, (min(int(w), int(s)) // divisor) * divisor)  # type: ignore[return-value]
                 for w, s in zip(want, smallest))


class PatchLoader:
    """Random training patches from whole volumes, the same for the same (seed, epoch).

    Each epoch draws ``samples_per_volume`` patches from every volume, in shuffled order.
    A share ``pos_fraction`` of patches is centred on a random lesion voxel; the rest (and
    all of a lesion-free volume's) anywhere, uniformly. This is MONAI
    ``RandCropByPosNegLabel``'s rule with one change: negatives are not drawn from a list of
    background voxel indices, which would hold nearly every voxel at 8 bytes each (~0.5 GB
    for the LGG set at 128²); only the (few) lesion voxels are indexed. ``pos_fraction=None``
    draws every centre uniformly. Centres near a border are moved inwards so the patch stays
    inside; volumes smaller than the patch are zero-padded once (bottom/right), as
    sliding-window inference pads them.

    Batches: ``image`` uint8 ``(B, C, D, H, W)``, ``mask`` uint8 ``(B, 1, D, H, W)``.
    """

    def __init__(self, volumes: VolumeSet, *, patch: Sequence[int], batch_size: int,
                 samples_per_volume: int = 4, pos_fraction: float | None = 0.5, seed: int = 0) -> None:
        if len(volumes) == 0:
            raise ValueError("PatchLoader needs at least one volume")
        if pos_fraction is not None and not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"pos_fraction must be in [0, 1] or None, got {pos_fraction}")
        self.patch = tuple(int(p) for p in patch)
        self.batch_size = int(batch_size)
        self.samples_per_volume = int(samples_per_volume)
        self.pos_fraction = pos_fraction
        self.seed = seed
        self.epoch = 0
        self.images, self.masks, self.foreground = [], [], []
        for img, mask in zip(volumes.images, volumes.masks):
            extra = [(0, max(p - s, 0)) for p, s in zip(self.patch, mask.shape)]
            if any(e[1] for e in extra):
                img, mask = np.pad(img, [(0, 0), *extra]), np.pad(mask, extra)
            self.images.append(img)
            self.masks.append(mask)
            self.foreground.append(np.flatnonzero(mask))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, math.ceil(len(self.images) * self.samples_per_volume / self.batch_size))

    def _start(self, i: int, rng: np.random.Generator) -> tuple[int, ...]:
        shape = self.masks[i].shape
        fg = self.foreground[i]
        if self.pos_fraction is not None and len(fg) and rng.random() < self.pos_fraction:
            centre = np.unravel_index(int(fg[rng.integers(len(fg))]), shape)
        else:
            centre = tuple(int(rng.integers(s)) for s in shape)
        return tuple(int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, self.patch, shape))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(np.repeat(np.arange(len(self.images)), self.samples_per_volume))
        d, h, w = self.patch
        for b in range(len(self)):
            imgs, masks = [], []
            for i in order[b * self.batch_size:(b + 1) * self.batch_size]:
                z, y, x = self._start(int(i), rng)
                imgs.append(self.images[i][:, z:z + d, y:y + h, x:x + w])
                masks.append(self.masks[i][None, z:z + d, y:y + h, x:x + w])
            yield {"image": torch.from_numpy(np.stack(imgs)), "mask": torch.from_numpy(np.stack(masks))}


class VolumeBatches:
    """Whole volumes as validation batches of one: ``image`` uint8 ``(1, C, D, H, W)``,
    ``mask`` uint8 ``(1, 1, D, H, W)`` and the volume's ``patient`` code, in volume order
    (what :class:`~medlens.segment.task.SegmentTask` validates with sliding windows)."""

    def __init__(self, volumes: VolumeSet) -> None:
        self.volumes = volumes

    def __len__(self) -> int:
        return len(self.volumes)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for k, (image, mask) in enumerate(zip(self.volumes.images, self.volumes.masks)):
            yield {"image": torch.from_numpy(np.ascontiguousarray(image)[None]),
                   "mask": torch.from_numpy(np.ascontiguousarray(mask)[None, None]),
                   "patient": torch.tensor([k], dtype=torch.int64)}
