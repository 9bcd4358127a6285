"""Segmentation data in memory: every slice decoded once into uint8 arrays.

:func:`build_slices` turns a segmentation :class:`~medlens.data.records.DatasetIndex`
into a :class:`SliceSet` (images ``(N, C, H, W)`` uint8, masks ``(N, 1, H, W)`` uint8
0/1, patient and slice number per row, in slice order per patient). Volumes are cut into
axial slices after the intensity policy (:mod:`medlens.transforms.intensity`; default a
per-volume percentile window 0.5–99.5 % to uint8). Each volume patient keeps its
:class:`~medlens.io.geometry.Geometry` (after any in-plane resize); ``SliceSet.spacing``
derives the array-order ``(z, y, x)`` spacing the metrics need from it.

Bad files are reported as :class:`~medlens.data.records.Problem` naming the file and
left out; the rest goes on. Mask binarisation rule (reported as a warning whenever a mask
is not already {0,1} or {0,255}): masks whose values are all small integers (max ≤ 10,
label maps) count every value > 0 as lesion; other masks (grey levels, JPEG artefacts)
count values ≥ half their maximum. With ``labels=True`` masks keep their integer labels
instead (multi-label segmentation): non-negative integers, ``uint8`` (``uint16`` above 255).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlens.data.records import DatasetIndex, Problem, Record
from medlens.errors import BadInputError
from medlens.io.geometry import Geometry
from medlens.transforms.intensity import PercentileWindow, intensity_to_dict, parse_intensity

logger = logging.getLogger(__name__)


@dataclass
class SliceSet:
    """Decoded slices of a segmentation data set (rows in slice order per patient)."""

    images: np.ndarray
    masks: np.ndarray
    patients: np.ndarray
    slice_index: np.ndarray
    sources: list[str]
    geometry: dict[str, Geometry] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def spacing(self) -> dict[str, tuple[float, ...]]:
        """Per volume patient, spacing in array order ``(z, y, x)`` mm (from :attr:`geometry`);
        patients from 2D files have none (their metrics are in pixels)."""
        return {p: g.array_spacing for p, g in self.geometry.items()}

    @property
    def positive(self) -> np.ndarray:
        """Whether each slice's mask has any lesion pixel."""
        return self.masks.reshape(len(self.masks), -1).any(1)

    def select(self, patients: list[str] | set[str]) -> SliceSet:
        keep = np.isin(self.patients, list(patients))
        idx = np.flatnonzero(keep)
        return SliceSet(self.images[idx], self.masks[idx], self.patients[idx],
                        self.slice_index[idx], [self.sources[i] for i in idx],
                        {p: g for p, g in self.geometry.items() if p in set(patients)}, [])


def binarise_mask(mask: np.ndarray, path: str) -> tuple[np.ndarray, Problem | None]:
    """Binary ``uint8`` 0/1 mask by the module's documented rule, and a warning if needed."""
    m = np.asarray(mask)
    if m.dtype.kind == "f" and not np.isfinite(m).all():
        raise BadInputError(f"{path}: mask contains NaN or infinite values")
    values = np.unique(m)
    if set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}:
        return (m > 0).astype(np.uint8), None
    mx = float(values.max())
    shown = ", ".join(str(v) for v in values[:6].tolist()) + (" ..." if len(values) > 6 else "")
    if mx <= 10 and np.all(values == np.round(values)):
        out, rule = m > 0, "> 0 (label map)"
    else:
        out, rule = m >= mx / 2, f">= {mx / 2:g} (half the maximum)"
    return out.astype(np.uint8), Problem(
        path, f"mask values {{{shown}}} are not {{0,1}} or {{0,255}}; binarised as {rule}", "warning")


def label_mask(mask: np.ndarray, path: str) -> np.ndarray:
    """A multi-label mask kept as its integer labels: ``uint8`` (``uint16`` above 255).

    Raises:
        BadInputError: NaN, negative or non-integer values, or labels above 65535.
    """
    m = np.asarray(mask)
    if m.dtype.kind == "f" and not np.isfinite(m).all():
        raise BadInputError(f"{path}: mask contains NaN or infinite values")
    if m.size and (m.min() < 0 or not np.all(m == np.round(m))):
        raise BadInputError(f"{path}: a label mask needs non-negative integer labels")
    top = int(m.max()) if m.size else 0
    if top > 65535:
        raise BadInputError(f"{path}: label {top} exceeds 65535")
    return m.astype(np.uint8 if top <= 255 else np.uint16)


def read_mask(mask: np.ndarray, path: str, *, labels: bool = False) -> tuple[np.ndarray, Problem | None]:
    """The training mask of a raw mask array: binary 0/1 (default) or integer labels."""
    return (label_mask(mask, path), None) if labels else binarise_mask(mask, path)


def read_slice_pair(rec: Record, channels: int, *, labels: bool = False) -> tuple[np.ndarray, np.ndarray, Problem | None]:
    from PIL import Image

    from medlens.io.images import read_image

    for p in (rec.path, rec.mask):
        with Image.open(p) as im:
            frames = getattr(im, "n_frames", 1)
        if frames > 1:
            raise BadInputError(f"{p}: a 3D volume ({frames} frames) where a 2D slice is expected; "
                                "use a volume layout (NIfTI/MetaImage) for 3D data")
    img = read_image(rec.path, channels=channels)
    with Image.open(rec.mask) as im:
        raw = np.asarray(im)
    if raw.ndim == 3:
        if not (raw[..., :1] == raw[..., : min(3, raw.shape[-1])]).all():
            raise BadInputError(f"{rec.mask}: mask has differing colour channels; give a grey mask")
        raw = raw[..., 0]
    if raw.shape != img.shape[:2]:
        raise BadInputError(f"{rec.mask}: mask is {raw.shape[1]}×{raw.shape[0]} but its image "
                            f"{Path(rec.path).name} is {img.shape[1]}×{img.shape[0]}")
    mask, warn = read_mask(raw, str(rec.mask), labels=labels)
    return np.moveaxis(img, -1, 0), mask, warn


def window_uint8(vol: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """Per-channel percentile window of ``(C, ...)`` data to uint8 (images only, never masks):
    :class:`~medlens.transforms.intensity.PercentileWindow`, the default intensity policy."""
    return PercentileWindow(lower=lo_pct, upper=hi_pct).apply(vol)


def read_volume_pair(rec: Record, *, intensity: Any = None, labels: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, Geometry, list[Problem]]:
    """Image ``(C, D, H, W)``, mask ``(D, H, W)`` and the image's :class:`Geometry`.

    Args:
        intensity: the intensity policy (a :mod:`medlens.transforms.intensity` policy or its
            dict; ``None``: the default 0.5–99.5 percentile window to uint8).
        labels: keep the mask's integer labels instead of binarising it to 0/1.
    """
    from medlens.io.volumes import read_volume

    paths = rec.meta.get("channels") or [rec.path]
    vols = [read_volume(p) for p in paths]
    arrs = [v.array if v.array.ndim == 4 else v.array[None] for v in vols]
    shapes = {a.shape[1:] for a in arrs}
    if len(shapes) > 1:
        raise BadInputError(f"{rec.path}: channel files have different shapes {sorted(shapes)}")
    img = np.concatenate(arrs)
    mvol = read_volume(rec.mask)
    m = mvol.array if mvol.array.ndim == 3 else mvol.array[0]
    if m.shape != img.shape[1:]:
        raise BadInputError(f"{rec.mask}: mask shape {m.shape} differs from image shape "
                            f"{img.shape[1:]} of {Path(rec.path).name}")
    mask, warn = read_mask(m, str(rec.mask), labels=labels)
    warns = [warn] if warn else []
    geo = vols[0].geometry
    if mvol.has_geometry and not np.allclose(mvol.geometry.affine, geo.affine, atol=1e-3):
        warns.append(Problem(str(rec.mask), "mask geometry (spacing/origin/direction) differs from its image "
                             f"{Path(rec.path).name}; voxels paired by index, image geometry kept", "warning"))
    return parse_intensity(intensity).apply(img), mask, geo, warns


def fit_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """``(C, ...)`` image with ``channels`` channels: one repeated, or several averaged to one."""
    if img.shape[0] == channels:
        return img
    if img.shape[0] == 1:
        return np.repeat(img, channels, 0)
    if channels == 1:
        mean = img.mean(0, keepdims=True)
        return mean.round().astype(np.uint8) if img.dtype == np.uint8 else mean.astype(img.dtype)
    raise BadInputError(f"cannot turn {img.shape[0]} channels into {channels}")


def resize_pair(img: np.ndarray, mask: np.ndarray, size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Images area-interpolated, masks nearest-neighbour (never interpolated)."""
    if size is None or img.shape[-2:] == (size, size):
        return img, mask
    import cv2

    im = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in img])
    return im, cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)


def build_slices(
    index: DatasetIndex,
    *,
    size: int | None = None,
    channels: int | None = None,
    cache_dir: str | Path | None = None,
    intensity: Any = None,
    labels: bool = False,
    slice_intensity: str = "none",
) -> SliceSet:
    """Decode every record of ``index`` into a :class:`SliceSet`.

    Args:
        size: resize slices to ``size × size`` (``None``: keep; all slices must then agree).
        channels: image channels (``None``: those of the first readable record).
        cache_dir: keep an ``.npz`` of the decoded set there, keyed by paths, sizes and
            modification times; a second call with unchanged inputs reads only the cache.
        intensity: intensity policy for volume records (see :func:`read_volume_pair`).
        labels: keep integer mask labels instead of binarising.
        slice_intensity: ``"patient"``: 2D slice files go through ``intensity`` too, each
            patient's slices together as one volume
            (:func:`~medlens.transforms.intensity.apply_to_group`); ``"none"``: as stored.
    """
    key = _cache_key(index, size, channels, intensity, labels, slice_intensity)
    cache = Path(cache_dir) / f"slices_{key}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        return _load_cache(cache, index)
    imgs, masks, pats, nums, srcs, problems = [], [], [], [], [], list(index.problems)
    geometry: dict[str, Geometry] = {}
    for rec in index.records:
        try:
            if rec.meta.get("kind") == "volume":
                img, mask, geo, warns = read_volume_pair(rec, intensity=intensity, labels=labels)
                if size is not None:  # in-plane spacing follows the resize (mm stay mm)
                    geo = geo.resampled(img.shape[1:], (img.shape[1], size, size))
                geometry[str(rec.patient)] = geo
                problems.extend(warns)
                for z in range(img.shape[1]):
                    imgs.append(img[:, z]), masks.append(mask[z])
                    pats.append(str(rec.patient)), nums.append(z), srcs.append(f"{rec.path}#{z}")
                continue
            channels = channels or channels_of(rec.path)
            img, mask, warn = read_slice_pair(rec, channels, labels=labels)
            if warn:
                problems.append(warn)
        except BadInputError as e:
            problems.append(Problem(getattr(e, "path", rec.path), getattr(e, "reason", str(e))))
            logger.warning("skipped: %s", e)
            continue
        imgs.append(img), masks.append(mask), pats.append(str(rec.patient))
        nums.append(rec.meta.get("slice") or 0), srcs.append(rec.path)
    if not imgs:
        raise BadInputError(f"{index.root}: no readable image/mask pair "
                            f"({len(problems)} problems; first: {problems[0].path}: {problems[0].reason})"
                            if problems else f"{index.root}: data set is empty")
    channels = channels or imgs[0].shape[0]
    if slice_intensity == "patient":
        imgs = normalise_patients(imgs, pats, srcs, intensity, channels)
    pairs = [resize_pair(fit_channels(i, channels), m, size) for i, m in zip(imgs, masks)]
    shapes = {p[0].shape[-2:] for p in pairs}
    if len(shapes) > 1:
        raise BadInputError(f"{index.root}: slices have different sizes {sorted(shapes)[:4]}; "
                            "give a size to resize them to")
    out = SliceSet(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])[:, None],
                   np.asarray(pats), np.asarray(nums, dtype=np.int64), srcs, geometry, problems)
    if cache is not None:
        _save_cache(cache, out)
    return out


def channels_of(path: str) -> int:
    """Channel count of a 2D image file as :func:`~medlens.io.images.read_image` reads it."""
    from medlens.io.images import read_image

    return read_image(path).shape[-1]


def normalise_patients(imgs: list[np.ndarray], patients: list[str], sources: list[str], intensity: Any,
                       channels: int) -> list[np.ndarray]:
    """Each patient's slices from 2D files through ``intensity`` as one volume; slices cut
    from volume files (source ``path#z``) already went through it and are left alone."""
    from medlens.transforms.intensity import apply_to_group

    out = list(imgs)
    groups: dict[str, list[int]] = {}
    for i, (pid, src) in enumerate(zip(patients, sources)):
        if "#" not in src:
            groups.setdefault(pid, []).append(i)
    for rows in groups.values():
        done = apply_to_group(intensity, [fit_channels(imgs[i], channels) for i in rows])
        for i, im in zip(rows, done):
            out[i] = im
    return out


def _cache_key(index: DatasetIndex, size: int | None, channels: int | None,
               intensity: Any = None, labels: bool = False, slice_intensity: str = "none") -> str:
    policy = json.dumps(intensity_to_dict(intensity), sort_keys=True)
    scope = "" if slice_intensity == "none" else f"|slices:{slice_intensity}"
    h = hashlib.sha1(f"{size}|{channels}|{policy}|{labels}|v2{scope}".encode())
    for r in index.records:
        for p in (r.meta.get("channels") or [r.path]) + [r.mask]:
            st = Path(p).stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _save_cache(path: Path, s: SliceSet) -> None:
    import io

    from medlens.io.atomic import atomic_write_bytes

    buf = io.BytesIO()
    geometry = json.dumps({p: g.to_dict() for p, g in s.geometry.items()})
    np.savez(buf, images=s.images, masks=s.masks, patients=s.patients, slice_index=s.slice_index,
             sources=np.asarray(s.sources), geometry=np.asarray(geometry))
    atomic_write_bytes(path, buf.getvalue())


def _load_cache(path: Path, index: DatasetIndex) -> SliceSet:
    with np.load(path, allow_pickle=False) as z:  # a cache file never runs code
        geometry = {p: Geometry.from_dict(g) for p, g in json.loads(str(z["geometry"])).items()}
        return SliceSet(z["images"], z["masks"], z["patients"].astype(str), z["slice_index"],
                        z["sources"].astype(str).tolist(), geometry, list(index.problems))


def split_patients(patients, *, val_fraction: float = 0.2, test_fraction: float = 0.0,
                   seed: int = 0) -> dict[str, list[str]]:
    """Patient-grouped split: no patient's slices in two splits.

    Rule: unique patient ids sorted, shuffled by ``numpy.random.default_rng(seed)``; the
    first ``round(test_fraction·n)`` go to test, the next ``round(val_fraction·n)`` to val
    (each at least one when its fraction is > 0 and two patients are left for training).
    """
    ids = sorted({str(p) for p in patients})
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n = len(ids)
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise BadInputError(f"{n} patient(s) cannot be split into train/val/test "
                            f"({1 - val_fraction - test_fraction:.0%}/{val_fraction:.0%}/{test_fraction:.0%})")
    return {"test": sorted(order[:n_test]), "val": sorted(order[n_test:n_test + n_val]),
            "train": sorted(order[n_test + n_val:])}


def patient_folds(patients, k: int, *, seed: int = 0) -> list[list[str]]:
    """``k`` disjoint patient groups for leave-patients-out cross-validation."""
    ids = sorted({str(p) for p in patients})
    if not 2 <= k <= len(ids):
        raise BadInputError(f"k={k} folds need 2 <= k <= {len(ids)} patients")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return [sorted(order[i::k]) for i in range(k)]


def sampling_weights(positive: np.ndarray, pos_fraction: float | None) -> np.ndarray | None:
    """Per-slice weights so that a share ``pos_fraction`` of drawn slices shows a lesion."""
    if pos_fraction is None:
        return None
    if not 0.0 < pos_fraction < 1.0:
        raise ValueError(f"pos_fraction must be in (0, 1), got {pos_fraction}")
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    return np.where(pos, pos_fraction / n_pos, (1 - pos_fraction) / n_neg)
