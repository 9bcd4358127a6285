"""A fingerprint of a model's training images, and the out-of-distribution check against it.

A model answers confidently on anything it is given: a CT slice fed to a histology model
gets a "disease score" like any patch. The package therefore records what its training
images looked like, and every input is compared with that before its answer is trusted.

The fingerprint (JSON, stored as ``data_fingerprint`` in the package metadata) holds:

* kinds — channels (1 grey, 3 colour), bit depth (8, 16; 32 for integer/float TIFF),
  file formats, modality when known (DICOM ``Modality`` tag, or the layout: IDC patches
  are H&E histopathology, ``kaggle_3m`` is MR);
* size — height/width (and depth for volumes) range, in pixels;
* pixels — per channel mean, SD and percentiles of the training pixels, in the 0–255
  view the model receives before resizing and normalisation (16-bit data stretched to
  0–255 as :func:`medlens.io.images.read_image` does);
* per-image statistics — for each training image its per-channel mean and SD, and for
  colour images its HSV saturation and two opponent-colour means (red−green,
  yellow−blue); the fingerprint keeps their mean, SD and percentiles over the images;
* ``image_stats`` (packages saved since 2026-12) — the audit's per-image measurements
  (:mod:`medlens.data.image_stats`: per-channel colour mean/SD, brightness,
  contrast, sharpness) plus height and width, summarised the same way. They are not
  part of the check; ``medlens evaluate`` sets them beside the new data's
  (:mod:`medlens.evaluate.shift`) to show how far a new site's images are from these.

:func:`check` compares one input's :class:`ImageStats` with a fingerprint. Kind
mismatches (bit depth, channels, modality) and a size far outside the training range
(more than :data:`SIZE_FACTOR` times beyond it) flag the input outright. Each per-image
statistic is scored by how far it lies outside the training images' central range
(:data:`RANGE_QUANTILES`), in training SDs; beyond :data:`STAT_LIMIT_SD` flags. The score
of an input is its largest such distance (0 inside the range), or :data:`KIND_SCORE` for
an input of another kind or size. Everything is numpy.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlens.data.image_stats import measure_image, summarise_image_stats, summarise_values

log = logging.getLogger(__name__)

FINGERPRINT_VERSION = 1
#: Images sampled from the training split to build a fingerprint.
MAX_IMAGES = 300
#: An input side more than this factor outside the training range is flagged.
SIZE_FACTOR = 2.0
#: Percentiles (of the training images' statistic) bounding the in-distribution range.
RANGE_QUANTILES = (0.5, 99.5)
#: A statistic more than this many training SDs outside that range is flagged.
STAT_LIMIT_SD = 2.0
#: The score of an input of another kind (bit depth, channels, modality) or size.
KIND_SCORE = 99.0
#: Pixels looked at per image (a strided subsample of large images).
MAX_PIXELS = 256 * 256
#: Modality of a layout whose images are all of one kind.
LAYOUT_MODALITY = {"idc": "histopathology (H&E)", "kaggle_3m": "MR"}
_CHANNEL_NAMES = {1: ("grey",), 3: ("red", "green", "blue")}
_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".dcm": "dicom",
            ".dicom": "dicom", ".png": "png", ".bmp": "bmp", ".gif": "gif", ".webp": "webp"}


@dataclass
class ImageStats:
    """What the guard looks at in one image: its kind, size and a few statistics."""

    channels: int
    bit_depth: int | None
    height: int
    width: int
    depth: int | None = None
    format: str | None = None
    modality: str | None = None
    stats: dict[str, float] = field(default_factory=dict)
    pixels: np.ndarray | None = field(default=None, repr=False)  # (P, C) uint8 sample, for the fingerprint
    image: dict[str, float] = field(default_factory=dict)  # the audit's measurements (image_stats)


@dataclass
class OodResult:
    """The verdict on one input: ``ood`` when any reason was found; ``score`` in SDs."""

    score: float
    reasons: list[str]

    @property
    def ood(self) -> bool:
        return bool(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"ood": self.ood, "ood_score": round(self.score, 2), "ood_reasons": "; ".join(self.reasons)}


# --- per-image statistics ---------------------------------------------------------------
def to_uint8_view(arr: np.ndarray) -> np.ndarray:
    """The 0–255 view the model receives: 8-bit as is, deeper data min–max stretched."""
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float64)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if not hi > lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.nan_to_num((a - lo) / (hi - lo) * 255.0).round().astype(np.uint8)


def array_stats(arr: np.ndarray, *, bit_depth: int | None = None, depth: int | None = None,
                format: str | None = None, modality: str | None = None) -> ImageStats:
    """Statistics of an ``(H, W, C)`` image (or ``(H, W)``; ``(C, D, H, W)`` volumes too).

    ``bit_depth`` defaults to the array's: 8 for uint8, 16 for uint16, else unknown.
    """
    a = np.asarray(arr)
    if a.ndim == 4:  # (C, D, H, W) volume → (D·H, W, C) for the statistics
        depth = depth or int(a.shape[1])
        a = np.moveaxis(a, 0, -1).reshape(-1, a.shape[-1], a.shape[0])
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ValueError(f"array_stats: expected (H, W, C), got shape {a.shape}")
    if bit_depth is None:
        bit_depth = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(a.dtype)
    h, w, c = a.shape
    step = max(1, int(np.ceil(np.sqrt(h * w / MAX_PIXELS))))
    px = to_uint8_view(a[::step, ::step]).reshape(-1, c)
    height = h if depth is None else h // depth
    image = measure_image(to_uint8_view(a)) if depth is None else {}  # 2D images only
    if image:
        image.update(height=float(height), width=float(w))
    return ImageStats(channels=c, bit_depth=bit_depth, height=height, width=w,
                      depth=depth, format=format, modality=modality, stats=_pixel_stats(px), pixels=px,
                      image=image)


def _pixel_stats(px: np.ndarray) -> dict[str, float]:
    c = px.shape[1]
    x = px.astype(np.float32)
    names = _CHANNEL_NAMES.get(c, tuple(f"channel {i}" for i in range(c)))
    out: dict[str, float] = {}
    for i, n in enumerate(names):
        out[f"mean {n}"] = float(x[:, i].mean())
        out[f"SD {n}"] = float(x[:, i].std())
    if c == 3:
        mx, mn = x.max(1), x.min(1)
        out["saturation"] = float(np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0).mean())
        out["red-green"] = float((x[:, 0] - x[:, 1]).mean())
        out["yellow-blue"] = float(((x[:, 0] + x[:, 1]) / 2 - x[:, 2]).mean())
    return out


def file_stats(path: str | os.PathLike[str]) -> ImageStats:
    """Read one 2D image file (any format :func:`read_image` takes) and describe it.

    Raises:
        medlens.io.images.ImageReadError: the file cannot be read.
    """
    stats, _ = read_with_stats(path)
    return stats


def read_with_stats(path: str | os.PathLike[str]) -> tuple[ImageStats, np.ndarray]:
    """Decode ``path`` once: its :class:`ImageStats` and the ``(H, W, C)`` uint8 image the
    model reads (exactly what :func:`medlens.io.images.read_image` returns)."""
    from medlens.io.images import is_dicom, read_image

    p = Path(path)
    raw = read_image(p, keep_depth=True)
    fmt, modality, depth = _FORMATS.get(p.suffix.lower()), None, None
    if is_dicom(p):
        fmt, modality = "dicom", _dicom_modality(p)
    elif raw.dtype == np.uint8:
        depth = _pil_bit_depth(p)  # 32-bit integer/float files arrive stretched to uint8
    stats = array_stats(raw, bit_depth=depth, format=fmt, modality=modality)
    return stats, to_uint8_view(raw)


def _dicom_modality(p: Path) -> str | None:
    try:
        import pydicom

        value = pydicom.dcmread(str(p), stop_before_pixels=True).get("Modality")
        return str(value) if value else None
    except Exception:  # a tag we cannot read only means the modality stays unknown
        return None


def _pil_bit_depth(p: Path) -> int:
    try:
        from PIL import Image

        with Image.open(p) as im:
            return 32 if im.mode in ("I", "F") else 16 if im.mode.startswith("I;16") else 8
    except Exception:  # the image was just decoded; a failing header read changes nothing
        return 8


# --- the fingerprint ----------------------------------------------------------------------
def compute_fingerprint(images: Iterable[ImageStats], *, modality: str | None = None,
                        source: str = "") -> dict[str, Any]:
    """The JSON-serialisable fingerprint of a sample of training images."""
    items = list(images)
    if not items:
        raise ValueError("compute_fingerprint: no images")
    mods = {s.modality for s in items if s.modality}
    modality = modality or (", ".join(sorted(mods)) if mods else None)
    depths = [s.depth for s in items if s.depth is not None]
    fp: dict[str, Any] = {
        "version": FINGERPRINT_VERSION, "n_images": len(items), "source": source,
        "channels": sorted({s.channels for s in items}),
        "bit_depth": sorted({s.bit_depth for s in items if s.bit_depth is not None}),
        "formats": dict(Counter(s.format or "array" for s in items)),
        "modality": modality,
        "size": {"height": [min(s.height for s in items), max(s.height for s in items)],
                 "width": [min(s.width for s in items), max(s.width for s in items)],
                 "depth": [min(depths), max(depths)] if depths else None},
        "pixels": {}, "stats": {},
    }
    by_c: dict[int, list[np.ndarray]] = {}
    for s in items:
        if s.pixels is not None:
            by_c.setdefault(s.channels, []).append(s.pixels)
    main_c = Counter(s.channels for s in items).most_common(1)[0][0]
    if main_c in by_c:
        px = np.concatenate(by_c[main_c]).astype(np.float32)
        if len(px) > 2_000_000:
            px = px[np.random.default_rng(0).choice(len(px), 2_000_000, replace=False)]
        for i, n in enumerate(_CHANNEL_NAMES.get(main_c, tuple(f"channel {i}" for i in range(main_c)))):
            fp["pixels"][n] = summarise_values(px[:, i])
    keys = sorted({k for s in items for k in s.stats})
    for k in keys:
        vals = np.array([s.stats[k] for s in items if k in s.stats], dtype=np.float64)
        fp["stats"][k] = summarise_values(vals)
    image_stats = summarise_image_stats(items)
    if image_stats:
        fp["image_stats"] = image_stats
    return fp


def fingerprint_index(index: Any, *, split: str | None = "train", max_images: int = MAX_IMAGES,
                      seed: int = 0) -> dict[str, Any] | None:
    """Fingerprint a sample of ``index``'s records of ``split`` (all records when ``None``
    or when no record carries that split); ``None`` when none of the sample can be read."""
    recs = [r for r in index.records if split is None or r.split == split] or list(index.records)
    n_all = len(recs)
    if n_all > max_images:
        pick = np.random.default_rng(seed).choice(n_all, max_images, replace=False)
        recs = [recs[i] for i in sorted(pick)]
    items = []
    for r in recs:
        try:
            items.append(record_stats(index, r))
        except Exception as e:  # an unreadable file is reported by the cache; here it just leaves the sample
            log.debug("fingerprint: skipping %s: %s", r.path, e)
    if not items:
        return None
    where = f"{split} split" if split else "data"
    return compute_fingerprint(items, modality=_modality_of(index, items),
                               source=f"{len(items)} of {n_all} images of the {where} of {index.root}")


def record_stats(index: Any, record: Any) -> ImageStats:
    """:class:`ImageStats` of one record: a file, an array-backed image or a volume pair."""
    if record.meta.get("kind") == "volume":
        from medlens.segment.data import read_volume_pair

        img = read_volume_pair(record)[0]  # (C, D, H, W) uint8, windowed as training sees it
        return array_stats(img, bit_depth=None, format=_format_of(record.path))
    if "#" in record.path and record.path.split("#", 1)[0] in getattr(index, "arrays", {}):
        return array_stats(index.read(record), format="npz")
    return file_stats(record.path)


def _format_of(path: str) -> str | None:
    name = path.lower()
    for suf, f in ((".nii.gz", "nifti"), (".nii", "nifti"), (".mha", "metaimage"), (".mhd", "metaimage"),
                   (".nrrd", "nrrd")):
        if name.endswith(suf):
            return f
    return _FORMATS.get(Path(path).suffix.lower()) or ("dicom series" if Path(path).is_dir() else None)


def _modality_of(index: Any, items: Sequence[ImageStats]) -> str | None:
    mods = sorted({s.modality for s in items if s.modality})
    if mods:
        return ", ".join(mods)
    return LAYOUT_MODALITY.get(getattr(index, "layout", ""))


# --- the check ------------------------------------------------------------------------------
def check(stats: ImageStats, fp: dict[str, Any]) -> OodResult:
    """Compare one input with a training fingerprint; see the module docstring."""
    reasons: list[str] = []
    trained_c = fp.get("channels") or []
    other_channels = bool(trained_c) and stats.channels not in trained_c
    if other_channels:
        reasons.append(f"{_n(stats.channels, 'channel')}, trained on {_join(trained_c)}")
    trained_bits = fp.get("bit_depth") or []
    if stats.bit_depth is not None and trained_bits and stats.bit_depth not in trained_bits:
        reasons.append(f"{stats.bit_depth}-bit input, trained on {_join(trained_bits, '-bit')}")
    mod = fp.get("modality")
    if stats.modality and mod and stats.modality.upper() not in {m.strip().upper() for m in mod.split(",")}:
        reasons.append(f"modality {stats.modality}, trained on {mod}")
    reasons += _size_reasons(stats, fp.get("size") or {})
    score = KIND_SCORE if reasons else 0.0
    if not other_channels:  # statistics compare like with like only
        stat_reasons, dist = _stat_reasons(stats.stats, fp.get("stats") or {})
        reasons += stat_reasons
        score = max(score, dist)
    return OodResult(score, reasons)


def _size_reasons(stats: ImageStats, size: dict[str, Any]) -> list[str]:
    out = []
    sides = [("height", stats.height), ("width", stats.width)]
    if stats.depth is not None and size.get("depth"):
        sides.append(("depth", stats.depth))
    outside = [(n, v, size[n]) for n, v in sides
               if size.get(n) and not size[n][0] / SIZE_FACTOR <= v <= size[n][1] * SIZE_FACTOR]
    if outside:
        got = "×".join(str(v) for _, v in sides)
        rng = ", ".join(f"{n} {_span(r)}" for n, _, r in outside)
        out.append(f"size {got} px outside the training range ({rng} px)")
    return out


def _stat_reasons(values: dict[str, float], trained: dict[str, Any]) -> tuple[list[str], float]:
    lo_q, hi_q = (f"{q:g}" for q in RANGE_QUANTILES)
    found: list[tuple[float, str]] = []
    worst = 0.0
    for k, v in values.items():
        t = trained.get(k)
        if not t:
            continue
        lo, hi = t["quantiles"][lo_q], t["quantiles"][hi_q]
        sd = max(float(t["sd"]), 0.05 * abs(hi - lo), 1e-3)
        dist = max(lo - v, v - hi, 0.0) / sd
        worst = max(worst, dist)
        if dist > STAT_LIMIT_SD:
            side = "below" if v < lo else "above"
            what = f"colour: {k}" if k in ("saturation", "red-green", "yellow-blue") else k
            found.append((dist, f"{what} {_fmt(v)} is {dist:.1f} SD {side} the training images "
                                f"({_fmt(lo)}–{_fmt(hi)})"))
    found.sort(key=lambda t: -t[0])
    return [r for _, r in found[:3]], worst


def _fmt(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"


def _span(r: Sequence[int]) -> str:
    return f"{r[0]}" if r[0] == r[1] else f"{r[0]}–{r[1]}"


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def _join(vals: Sequence[Any], suffix: str = "") -> str:
    return " or ".join(f"{v}{suffix}" for v in vals)
