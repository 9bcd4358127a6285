"""Segmentation data in memory: every slice decoded once into uint8 arrays.

:func:`build_slices` turns a segmentation :class:`~medlens.data.records.DatasetIndex`
into a :class:`SliceSet` (images ``(N, C, H, W)`` uint8, masks ``(N, 1, H, W)`` uint8
0/1, patient and slice number per row, in slice order per patient). Volumes are cut into
axial slices after a per-volume percentile window (0.5–99.5 %) to uint8.

Bad files are reported as :class:`~medlens.data.records.Problem` naming the file and
left out; the rest goes on. Mask binarisation rule (reported as a warning whenever a mask
is not already {0,1} or {0,255}): masks whose values are all small integers (max ≤ 10,
label maps) count every value > 0 as lesion; other masks (grey levels, JPEG artefacts)
count values ≥ half their maximum.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medlens.data.records import DatasetIndex, Problem, Record
from medlens.errors import BadInputError

logger = logging.getLogger(__name__)


@dataclass
class SliceSet:
    """Decoded slices of a segmentation data set (rows in slice order per patient)."""

    images: np.ndarray
    masks: np.ndarray
    patients: np.ndarray
    slice_index: np.ndarray
    sources: list[str]
    spacing: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def positive(self) -> np.ndarray:
        """Whether each slice's mask has any lesion pixel."""
        return self.masks.reshape(len(self.masks), -1).any(1)

    def select(self, patients: list[str] | set[str]) -> SliceSet:
        keep = np.isin(self.patients, list(patients))
        idx = np.flatnonzero(keep)
        return SliceSet(self.images[idx], self.masks[idx], self.patients[idx],
                        self.slice_index[idx], [self.sources[i] for i in idx],
                        {p: s for p, s in self.spacing.items() if p in set(patients)}, [])


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


def _read_2d(rec: Record, channels: int) -> tuple[np.ndarray, np.ndarray, Problem | None]:
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
    mask, warn = binarise_mask(raw, str(rec.mask))
    return np.moveaxis(img, -1, 0), mask, warn


def window_uint8(vol: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """Per-channel percentile window of ``(C, ...)`` data to uint8 (images only, never masks)."""
    out = np.empty(vol.shape, dtype=np.uint8)
    for c in range(vol.shape[0]):
        v = vol[c].astype(np.float32)
        lo, hi = np.percentile(v, [lo_pct, hi_pct])
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        out[c] = np.clip((v - lo) * scale, 0, 255).round().astype(np.uint8)
    return out


def read_volume_pair(rec: Record) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], list[Problem]]:
    """Image ``(C, D, H, W)`` uint8, mask ``(D, H, W)`` 0/1, spacing in array order (z, y, x)."""
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
    mask, warn = binarise_mask(m, str(rec.mask))
    return window_uint8(img), mask, tuple(float(s) for s in vols[0].spacing[::-1]), [warn] if warn else []


def _fit_channels(img: np.ndarray, channels: int) -> np.ndarray:
    if img.shape[0] == channels:
        return img
    if img.shape[0] == 1:
        return np.repeat(img, channels, 0)
    if channels == 1:
        return img.mean(0, keepdims=True).round().astype(np.uint8)
    raise BadInputError(f"cannot turn {img.shape[0]} channels into {channels}")


def _resize(img: np.ndarray, mask: np.ndarray, size: int | None) -> tuple[np.ndarray, np.ndarray]:
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
) -> SliceSet:
    """Decode every record of ``index`` into a :class:`SliceSet`.

    Args:
        size: resize slices to ``size × size`` (``None``: keep; all slices must then agree).
        channels: image channels (``None``: those of the first readable record).
        cache_dir: keep an ``.npz`` of the decoded set there, keyed by paths, sizes and
            modification times; a second call with unchanged inputs reads only the cache.
    """
    key = _cache_key(index, size, channels)
    cache = Path(cache_dir) / f"slices_{key}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        return _load_cache(cache, index)
    imgs, masks, pats, nums, srcs, problems = [], [], [], [], [], list(index.problems)
    spacing: dict[str, tuple[float, float, float]] = {}
    for rec in index.records:
        try:
            if rec.meta.get("kind") == "volume":
                img, mask, sp, warns = read_volume_pair(rec)
                if size is not None:  # in-plane spacing follows the resize (mm stay mm)
                    sp = (sp[0], sp[1] * img.shape[-2] / size, sp[2] * img.shape[-1] / size)
                spacing[str(rec.patient)] = sp
                problems.extend(warns)
                for z in range(img.shape[1]):
                    imgs.append(img[:, z]), masks.append(mask[z])
                    pats.append(str(rec.patient)), nums.append(z), srcs.append(f"{rec.path}#{z}")
                continue
            channels = channels or _channels_of(rec.path)
            img, mask, warn = _read_2d(rec, channels)
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
    pairs = [_resize(_fit_channels(i, channels), m, size) for i, m in zip(imgs, masks)]
    shapes = {p[0].shape[-2:] for p in pairs}
    if len(shapes) > 1:
        raise BadInputError(f"{index.root}: slices have different sizes {sorted(shapes)[:4]}; "
                            "give a size to resize them to")
    out = SliceSet(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])[:, None],
                   np.asarray(pats), np.asarray(nums, dtype=np.int64), srcs, spacing, problems)
    if cache is not None:
        _save_cache(cache, out)
    return out


def _channels_of(path: str) -> int:
    from medlens.io.images import read_image

    return read_image(path).shape[-1]


def _cache_key(index: DatasetIndex, size: int | None, channels: int | None) -> str:
    h = hashlib.sha1(f"{size}|{channels}|v1".encode())
    for r in index.records:
        for p in (r.meta.get("channels") or [r.path]) + [r.mask]:
            st = Path(p).stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _save_cache(path: Path, s: SliceSet) -> None:
    import io

    from medlens.io.atomic import atomic_write_bytes

    buf = io.BytesIO()
    sp = np.array([[*v] for v in s.spacing.values()]) if s.spacing else np.zeros((0, 3))
    np.savez(buf, images=s.images, masks=s.masks, patients=s.patients, slice_index=s.slice_index,
             sources=np.asarray(s.sources), sp_keys=np.asarray(list(s.spacing)), sp=sp)
    atomic_write_bytes(path, buf.getvalue())


def _load_cache(path: Path, index: DatasetIndex) -> SliceSet:
    with np.load(path) as z:
        sp = {str(k): tuple(float(x) for x in v) for k, v in zip(z["sp_keys"], z["sp"])}
        return SliceSet(z["images"], z["masks"], z["patients"].astype(str), z["slice_index"],
                        z["sources"].astype(str).tolist(), sp, list(index.problems))


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
