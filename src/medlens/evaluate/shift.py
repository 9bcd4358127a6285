"""How far new data is from a model's training data: the audit's statistics side by side.

A model trained at one clinic meets another clinic's scanner, stain and JPEG settings.
Before trusting its numbers there, a reader should see *how* the new images differ. The
package's training fingerprint (:mod:`medlens.data.fingerprint`) keeps, per measurement
of the audit (:func:`medlens.audit.stats.pixel_stats`: per-channel colour mean and SD,
brightness, contrast, sharpness; and the image size), its mean and SD over a sample of
training images; the same measurements are taken here on the new images.

Each measurement gets a standardised difference (Cohen's d)::

    d = (mean_new - mean_training) / sqrt((sd_training**2 + sd_new**2) / 2)

in units of the spread between images; ``|d| >=`` :data:`MODERATE` is a moderate shift
and ``|d| >=`` :data:`LARGE` a large one (Cohen's conventions), stated in plain words.
File formats are compared by their shares (a JPEG share that differs by
:data:`FORMAT_SHIFT` or more is flagged: compression is a known shortcut).

Packages saved before the audit's measurements were fingerprinted (``image_stats``)
still show colour means and SDs from the older per-image statistics; what neither
holds is reported as "not recorded".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: |d| from which a shift is called moderate / large.
MODERATE, LARGE = 0.5, 0.8
#: A difference in the share of JPEG files (0–1) from which formats are flagged.
FORMAT_SHIFT = 0.3
#: New images measured at most (a seeded sample of larger sets).
MAX_NEW_IMAGES = 500
NOT_RECORDED = "not recorded"
METHOD = (f"standardised difference d = (new mean − training mean) / pooled SD over images; "
          f"|d| ≥ {MODERATE:g} moderate, ≥ {LARGE:g} large (Cohen)")

#: measurement → (label, unit, word when higher, word when lower)
FEATURES: dict[str, tuple[str, str, str, str]] = {
    "mean_r": ("red mean", "0–255", "redder", "less red"),
    "mean_g": ("green mean", "0–255", "greener", "less green"),
    "mean_b": ("blue mean", "0–255", "bluer", "less blue"),
    "std_r": ("red SD", "0–255", "more varied in red", "less varied in red"),
    "std_g": ("green SD", "0–255", "more varied in green", "less varied in green"),
    "std_b": ("blue SD", "0–255", "more varied in blue", "less varied in blue"),
    "brightness": ("brightness", "grey mean, 0–255", "brighter", "darker"),
    "contrast": ("contrast", "grey SD, 0–255", "higher in contrast", "lower in contrast"),
    "sharpness": ("sharpness", "variance of the Laplacian", "sharper", "blurrier"),
    "height": ("height", "px", "taller", "shorter"),
    "width": ("width", "px", "wider", "narrower"),
}
#: An older fingerprint's per-image statistics that stand for a measurement
#: (colour images, then grey ones).
_LEGACY = {"mean_r": ("mean red",), "mean_g": ("mean green",), "mean_b": ("mean blue",),
           "std_r": ("SD red",), "std_g": ("SD green",), "std_b": ("SD blue",),
           "brightness": ("mean grey",), "contrast": ("SD grey",)}


def new_data_stats(index: Any, records: Sequence[Any], *, max_images: int = MAX_NEW_IMAGES,
                   seed: int = 0) -> list[Any]:
    """:class:`~medlens.data.fingerprint.ImageStats` of (a seeded sample of) ``records``;
    unreadable files are left out (the evaluation names them)."""
    from medlens.data.fingerprint import record_stats

    recs = list(records)
    if len(recs) > max_images:
        pick = np.random.default_rng(seed).choice(len(recs), max_images, replace=False)
        recs = [recs[i] for i in sorted(pick)]
    out = []
    for r in recs:
        try:
            out.append(record_stats(index, r))
        except Exception as e:  # an unreadable file is reported by the cache; here it just leaves the sample
            log.debug("shift: skipping %s: %s", r.path, e)
    return out


def _training_side(fp: dict[str, Any], key: str) -> tuple[float | None, float | None, str]:
    """(mean, SD, where from) of measurement ``key`` in the training fingerprint."""
    entry = (fp.get("image_stats") or {}).get(key)
    if entry:
        return float(entry["mean"]), float(entry["sd"]), "image_stats"
    stats = fp.get("stats") or {}
    for legacy in _LEGACY.get(key, ()):
        if legacy in stats:
            return float(stats[legacy]["mean"]), float(stats[legacy]["sd"]), f"older fingerprint ({legacy})"
    if key in ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b") and "mean grey" in stats:
        grey = "mean grey" if key.startswith("mean") else "SD grey"
        return float(stats[grey]["mean"]), float(stats[grey]["sd"]), f"older fingerprint ({grey})"
    return None, None, NOT_RECORDED


def std_difference(m_train: float, sd_train: float, m_new: float, sd_new: float) -> float:
    """Cohen's d of the new images against the training ones (pooled SD, floored at 1 % of
    the training mean's size so identical-size sets do not divide by zero)."""
    pooled = math.sqrt((sd_train**2 + sd_new**2) / 2)
    pooled = max(pooled, 0.01 * abs(m_train), 1e-6)
    return (m_new - m_train) / pooled


def level_of(d: float | None) -> str:
    if d is None:
        return NOT_RECORDED
    a = abs(d)
    return "large" if a >= LARGE else "moderate" if a >= MODERATE else "small"


def _shares(counts: dict[str, Any] | None) -> dict[str, float]:
    counts = {str(k): float(v) for k, v in (counts or {}).items()}
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


def dataset_shift(fp: dict[str, Any] | None, new_items: Sequence[Any], *, new_source: str = "") -> dict[str, Any]:
    """The side-by-side comparison for ``metrics.json`` (key ``shift``).

    Args:
        fp: the package's training fingerprint (``None``: a package saved before
            fingerprints; every training value is then "not recorded").
        new_items: :class:`~medlens.data.fingerprint.ImageStats` of the new images.
        new_source: what the new images are, for the reader.

    Returns:
        ``{"method", "training", "new", "rows", "formats", "flags", "verdict"}``; each row
        has ``feature``, ``label``, ``unit``, training and new mean/SD, ``std_difference``,
        ``level`` (small, moderate, large or not recorded) and ``training_from``.
    """
    from medlens.data.image_stats import format_shares, summarise_image_stats

    new = summarise_image_stats(new_items)
    fp = fp or {}
    rows, flags = [], []
    for key, (label, unit, higher, lower) in FEATURES.items():
        m_t, sd_t, source = _training_side(fp, key) if fp else (None, None, NOT_RECORDED)
        entry = new.get(key)
        m_n, sd_n = (float(entry["mean"]), float(entry["sd"])) if entry else (None, None)
        d = std_difference(m_t, sd_t, m_n, sd_n) if None not in (m_t, sd_t, m_n, sd_n) else None
        row = {"feature": key, "label": label, "unit": unit, "training_mean": m_t, "training_sd": sd_t,
               "new_mean": m_n, "new_sd": sd_n, "std_difference": d, "level": level_of(d),
               "training_from": source}
        if d is None and m_t is None and fp.get("size") and key in ("height", "width"):
            lo, hi = fp["size"][key]
            row["training_from"] = f"range only: {lo}–{hi} px"
            if m_n is not None and not lo <= m_n <= hi:
                row["level"] = "outside the training range"
                flags.append(f"{label}: new images average {m_n:.0f} px, the training images were {lo}–{hi} px")
        rows.append(row)
        if d is not None and abs(d) >= MODERATE:
            word = higher if d > 0 else lower
            flags.append(f"{row['level']} shift in {label}: the new images are {word} than the training images "
                         f"({m_n:.3g} vs {m_t:.3g}, {unit}; d = {d:+.2f})")
    fmt_train = _shares(fp.get("formats")) if fp else {}
    fmt_new = format_shares(new_items)
    formats = {"training": fmt_train or None, "new": fmt_new,
               "jpeg_share_training": fmt_train.get("jpeg") if fmt_train else None,
               "jpeg_share_new": fmt_new.get("jpeg", 0.0) if fmt_new else None}
    if fmt_train and fmt_new:
        diff = abs(fmt_new.get("jpeg", 0.0) - fmt_train.get("jpeg", 0.0))
        formats["jpeg_share_difference"] = diff
        if diff >= FORMAT_SHIFT:
            flags.append(f"file formats differ: JPEG share {fmt_new.get('jpeg', 0.0):.0%} of the new images, "
                         f"{fmt_train.get('jpeg', 0.0):.0%} of the training images (compression can be a shortcut)")
    large = [r["label"] for r in rows if r["level"] == "large"]
    known = [r for r in rows if r["std_difference"] is not None]
    if not fp:
        verdict = "The package records no training-data fingerprint: the training side is not recorded."
    elif not known:
        verdict = "None of the measurements can be compared (not recorded in this package)."
    elif large:
        verdict = (f"The new data differ strongly from the training data in {', '.join(large)}: expect the "
                   "model's calibration and operating point to transfer poorly; consider `medlens calibrate` "
                   "on a labelled local sample.")
    elif flags:
        verdict = "The new data differ moderately from the training data (see the flags)."
    else:
        verdict = "No large difference from the training data in these measurements."
    return {"method": METHOD, "training": fp.get("source") or None,
            "n_training_images": fp.get("n_images"), "n_new_images": len(new_items), "new": new_source,
            "rows": rows, "formats": formats, "flags": flags, "verdict": verdict}


def shift_section_html(shift: dict[str, Any], calibration: dict[str, Any] | None = None) -> str:
    """The report's "Dataset shift" section: verdict, flags, the table, formats, the new data's ECE."""
    from medlens.evaluate import page

    parts = [f"<p><strong>{page.e(shift.get('verdict', ''))}</strong></p>"]
    if shift.get("flags"):
        parts.append("<ul>" + "".join(f"<li>{page.e(f)}</li>" for f in shift["flags"]) + "</ul>")
    parts.append(f'<p class="muted">Training: {page.e(shift.get("training") or NOT_RECORDED)}. '
                 f'New: {page.e(shift.get("n_new_images"))} images of {page.e(shift.get("new") or "the data")}. '
                 f'{page.e(shift.get("method", ""))}.</p>')
    table = [{"measurement": f"{r['label']} ({r['unit']})",
              "training mean": r["training_mean"] if r["training_mean"] is not None else NOT_RECORDED,
              "training SD": r["training_sd"] if r["training_sd"] is not None else NOT_RECORDED,
              "new mean": r["new_mean"], "new SD": r["new_sd"], "d": r["std_difference"], "shift": r["level"],
              "training values from": r["training_from"]} for r in shift.get("rows") or []]
    parts.append(page.table(table, row_class=lambda r: "bad" if r.get("shift") == "large" else ""))
    fm = shift.get("formats") or {}
    fmt_rows = [{"format": k, "training share": (fm.get("training") or {}).get(k, 0.0) if fm.get("training")
                 else NOT_RECORDED, "new share": (fm.get("new") or {}).get(k, 0.0)}
                for k in dict.fromkeys([*(fm.get("training") or {}), *(fm.get("new") or {})])]
    parts.append("<h3>File formats</h3>" + page.table(fmt_rows))
    if calibration:  # its reliability diagram is the report's Calibration section
        parts.append(f"<p>Calibration on the new data: expected calibration error "
                     f"{page.e(page.fmt(calibration.get('ece')))} with the package's temperature (0 is perfect; "
                     "reliability diagram under \u201cCalibration\u201d).</p>")
    return "".join(parts)
