"""The lung-CT report: what was found in each scan, how it compares with the reference, and
where to look — one self-contained HTML page plus the same pictures as PNG files.

Sections: summary, per-scan table, FROC curve with CPM (when an evaluation is given), per
finding table, axial slice crops through each finding and each missed reference nodule
(true positive green, false positive red, missed orange — the colours of the segmentation
report), an axial maximum-intensity projection of each scan over its lungs with every
finding marked, and the model card. Colours are drawn as exact RGB values on a grey
(lung-window) picture, so a pixel of one of them can only be that marker.

Files written in ``out_dir``: ``report.html``, ``froc.png`` (with an evaluation) and per scan
``scans/<seriesuid>/mip.png``, ``F<k>_<status>.png`` (finding k) and ``R<k>_missed.png``
(reference nodule k that no finding hit).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.ct.findings import Finding
from medlens.ct.froc import FP, IGNORED, TP, FrocResult, NoduleLike, match_scan
from medlens.evaluate import page
from medlens.io.atomic import atomic_write_bytes, atomic_write_text
from medlens.io.volumes import Volume

#: Marker colours (RGB). TP/FP/missed as in the segmentation report's overlays.
COLOURS: dict[str, tuple[int, int, int]] = {
    TP: (0, 200, 0),
    FP: (255, 0, 0),
    "missed": (255, 150, 0),
    IGNORED: (60, 120, 255),   # hits only an irrelevant (excluded) nodule
    "finding": (255, 220, 0),  # no reference to judge it by
}
_LABELS = {TP: "true positive", FP: "false positive", "missed": "missed reference nodule",
           IGNORED: "on an irrelevant nodule (not counted)", "finding": "finding (no reference)"}
#: Lung window (level -600 HU, width 1500 HU).
LUNG_WINDOW = (-1350.0, 150.0)
#: Side of a displayed crop, pixels.
CROP_PX = 160

ScanEntry = tuple[Volume, Sequence[Finding], Sequence[NoduleLike] | None]


@dataclass
class _Mark:
    """One thing to draw: a finding or a missed reference nodule."""

    name: str
    status: str
    irc: tuple[float, float, float]
    diameter_mm: float
    caption: str
    prob: float = 1.0


def _uid(volume: Volume, findings: Sequence[Finding], k: int) -> str:
    uid = volume.meta.get("seriesuid") if volume.meta else None
    if not uid and findings:
        uid = findings[0].seriesuid
    if not uid and volume.path:
        uid = Path(volume.path).name.split(".")[0]
    return str(uid or f"scan{k + 1}")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:120] or "scan"


def _grey(hu: np.ndarray) -> np.ndarray:
    lo, hi = LUNG_WINDOW
    return (np.clip((np.asarray(hu, np.float32) - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def crop_rgb(volume: Volume, irc: Sequence[float], diameter_mm: float, colour: tuple[int, int, int],
             *, size: int = CROP_PX) -> np.ndarray:
    """RGB uint8 ``(size, size, 3)``: the axial slice through ``irc`` (continuous index),
    lung window, a square of ``max(40 mm, 3 × diameter)`` around the centre, with a ring of
    ``colour`` just outside the ``diameter_mm`` circle."""
    from PIL import Image

    arr = volume.array if volume.array.ndim == 3 else volume.array[0]
    d, h, w = arr.shape
    sp_r, sp_c = (float(s) for s in volume.geometry.array_spacing[-2:])
    i = int(np.clip(round(float(irc[0])), 0, d - 1))
    half_mm = max(20.0, 1.5 * float(diameter_mm))
    hr, hc = max(4, int(round(half_mm / sp_r))), max(4, int(round(half_mm / sp_c)))
    r0, c0 = int(round(float(irc[1]))), int(round(float(irc[2])))
    patch = np.full((2 * hr + 1, 2 * hc + 1), -1000.0, np.float32)  # air outside the scan
    rs, re_ = max(0, r0 - hr), min(h, r0 + hr + 1)
    cs, ce = max(0, c0 - hc), min(w, c0 + hc + 1)
    if rs < re_ and cs < ce:
        patch[rs - (r0 - hr): re_ - (r0 - hr), cs - (c0 - hc): ce - (c0 - hc)] = arr[i, rs:re_, cs:ce]
    grey = np.asarray(Image.fromarray(_grey(patch)).resize((size, size), Image.Resampling.BILINEAR))
    rgb = np.repeat(grey[..., None], 3, axis=2)
    # ring in display pixels (an ellipse when the in-plane spacing differs)
    scale_r, scale_c = size / (2 * hr + 1), size / (2 * hc + 1)
    cy = (hr + float(irc[1]) - r0 + 0.5) * scale_r
    cx = (hc + float(irc[2]) - c0 + 0.5) * scale_c
    rad_r = max(4.0, diameter_mm / 2 / sp_r * scale_r + 3)
    rad_c = max(4.0, diameter_mm / 2 / sp_c * scale_c + 3)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    rho = np.sqrt(((yy - cy) / rad_r) ** 2 + ((xx - cx) / rad_c) ** 2)
    rgb[np.abs(rho - 1.0) * min(rad_r, rad_c) <= 1.2] = colour
    return rgb


def lung_mip(volume: Volume, *, step: int = 2) -> tuple[np.ndarray, tuple[int, int], int]:
    """Axial maximum-intensity projection (HU) over the lung parenchyma, in-plane every
    ``step``-th voxel (an overview picture, so a coarser grid is enough).

    Only the lungs count: per slice, air (< -400 HU) inside the lung mask
    (:func:`medlens.ct.lungs.lung_mask`) with its in-plane holes filled — the vessels and
    nodules inside the lung — so ribs, spine, heart and liver dome do not cover the picture.
    Returns the projection ``(H/step, W/step)``, the slab of slices ``(first, last + 1)`` and
    ``step``.
    """
    from scipy import ndimage

    from medlens.ct.lungs import lung_mask

    arr = volume.array if volume.array.ndim == 3 else volume.array[0]
    m = lung_mask(arr, tuple(volume.geometry.array_spacing))
    z0, z1 = m.bbox[0].start or 0, m.bbox[0].stop
    full_rc = (slice(0, arr.shape[1]), slice(0, arr.shape[2]))
    out = np.full(arr[0, ::step, ::step].shape, -1000.0, np.float32)
    for a in range(z0, z1):
        sl = np.asarray(arr[a, ::step, ::step], np.float32)
        inside = m.full((slice(a, a + 1), *full_rc))[0, ::step, ::step]
        lung = ndimage.binary_fill_holes(inside & (sl < -400.0))
        np.maximum(out, np.where(lung, sl, -1000.0), out=out)
    return out, (int(z0), int(z1)), step


def _figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot(1, 1, 1)


def _fig_png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def mip_png(volume: Volume, marks: Sequence[_Mark], *, max_labels: int = 30) -> bytes:
    """The lung MIP with a coloured circle around every mark; the names of the first
    ``max_labels`` (true positives and missed nodules first, then the most probable)."""
    from matplotlib.patches import Ellipse

    mip, (z0, z1), step = lung_mip(volume)
    sp_r, sp_c = (float(s) * step for s in volume.geometry.array_spacing[-2:])
    h, w = mip.shape
    fig, ax = _figure(5.6, 5.6 * min(1.6, (h * sp_r) / max(w * sp_c, 1e-6)) + 0.3)
    ax.imshow(_grey(mip), cmap="gray", vmin=0, vmax=255, aspect=sp_r / sp_c, interpolation="bilinear")
    named = {mk.name for mk in sorted(marks, key=lambda mk: (mk.status == FP, -mk.prob))[:max_labels]}
    for mk in marks:
        col = tuple(v / 255 for v in COLOURS[mk.status])
        rr = max(3.0, mk.diameter_mm / 2 / sp_r + 3)  # just outside the nodule
        rc = max(3.0, mk.diameter_mm / 2 / sp_c + 3)
        y, x = mk.irc[1] / step, mk.irc[2] / step
        ax.add_patch(Ellipse((x, y), 2 * rc, 2 * rr, fill=False, edgecolor=col, lw=1.4))
        if mk.name in named:
            ax.annotate(mk.name, (x + rc, y - rr), color=col, fontsize=8, weight="bold")
    ax.set_title(f"axial MIP over the lungs, slices {z0}–{z1 - 1}", fontsize=9)
    ax.set_axis_off()
    return _fig_png(fig)


def froc_png(froc: FrocResult) -> bytes:
    """FROC curve (FP per scan on a log axis) with the CPM's seven points marked."""
    fig, ax = _figure(5.0, 3.8)
    lo = 1 / 16
    x = np.maximum(froc.fp_per_scan, lo)
    ax.plot(x, froc.sensitivity, color="#1f5fa8", lw=2, drawstyle="steps-post", label="FROC")
    right = max(8.0, float(x.max()) * 1.1)
    if x[-1] < right:  # LUNA16 reads the curve as flat beyond its last point
        ax.plot([x[-1], right], [froc.sensitivity[-1]] * 2, color="#1f5fa8", lw=1, ls="--")
    rates = list(froc.sensitivity_at)
    ax.plot(rates, [froc.sensitivity_at[r] for r in rates], "o", color="#c0392b", ms=5,
            label="1/8 … 8 FP/scan")
    ax.set_xscale("log", base=2)
    ax.set_xticks(rates, [f"{r:g}" for r in rates])
    ax.set(xlim=(lo, right), ylim=(0, 1.02), xlabel="false positives per scan",
           ylabel="sensitivity")
    ci = f" ({froc.cpm_ci[0]:.3f}–{froc.cpm_ci[1]:.3f})" if froc.cpm_ci else ""
    ax.set_title(f"CPM {froc.cpm:.3f}{ci} — {froc.n_nodules} nodules, {froc.n_scans} scans", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    return _fig_png(fig)


def _fmt_xyz(v: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(a):.1f}" for a in v) + ")"


def _legend() -> str:
    spans = "".join(f'<span style="background:rgb{COLOURS[k]}">{page.e(_LABELS[k])}</span>'
                    for k in (TP, FP, "missed", IGNORED, "finding"))
    return f'<p class="legend">{spans}</p>'


def write_ct_report(out_dir: str | os.PathLike[str], scans: Sequence[ScanEntry],
                    froc_result: FrocResult | None = None, model_card: str | None = None, *,
                    title: str = "Lung-CT nodule report", max_crops_per_scan: int = 48) -> Path:
    """Write ``out_dir/report.html`` and its PNGs; returns the HTML's path.

    Args:
        scans: per scan ``(volume, findings, reference nodules or None)``. With a reference,
            each finding is a true positive (within a nodule's radius), a false positive, or
            ignored (on an irrelevant nodule of ``froc_result.excluded``); reference nodules
            no finding hit are shown as missed. The findings are shown as given (already
            at the pipeline's operating point).
        froc_result: the FROC evaluation over the scans (curve, CPM, per-nodule table).
        model_card: Markdown of the model card.
        max_crops_per_scan: crops drawn per scan (true positives and missed nodules first,
            then the most probable false positives); the tables list everything.
    """
    out = Path(out_dir)
    excluded = froc_result.excluded if froc_result else {}
    scan_rows: list[dict[str, Any]] = []
    finding_rows: list[dict[str, Any]] = []
    blocks: list[str] = []
    totals = {"findings": 0, TP: 0, FP: 0, "missed": 0, "reference": 0, "judged": 0}
    for k, (vol, findings, ref) in enumerate(scans):
        uid = _uid(vol, findings, k)
        folder = out / "scans" / _safe(uid)
        names = [f"F{j + 1}" for j in range(len(findings))]
        marks: list[_Mark] = []
        if ref is not None:
            m = match_scan(findings, list(ref), excluded.get(uid, []), seriesuid=uid)
            status = list(m.status)
            missed = [j for j, p in enumerate(m.nodule_best_prob) if p is None]
        else:
            m, status, missed = None, ["finding"] * len(findings), []
        for j, (f, st) in enumerate(zip(findings, status)):
            hit = m.finding_nodule[j] if m is not None else None
            mal = "n/a" if f.malignancy_prob is None else f"{f.malignancy_prob:.2f}"
            cap = (f"{names[j]} {_LABELS[st]} — nodule p {f.nodule_prob:.2f}, malignancy {mal}, "
                   f"Ø {f.diameter_mm:.1f} mm, slice {int(round(f.center_irc[0]))}")
            marks.append(_Mark(names[j], st, tuple(f.center_irc), float(f.diameter_mm), cap,
                               float(f.nodule_prob)))
            finding_rows.append({
                "scan": uid, "finding": names[j], "status": _LABELS[st],
                "reference nodule": f"R{hit + 1}" if hit is not None else "",
                "centre x, y, z (mm)": _fmt_xyz(f.center_xyz), "centre i, r, c": _fmt_xyz(f.center_irc),
                "diameter (mm)": float(f.diameter_mm), "nodule probability": float(f.nodule_prob),
                "malignancy probability": f.malignancy_prob,
                **({"why (the ranker's largest terms)": f.why} if f.why else {})})
        for j in missed:
            n = list(ref or [])[j]
            irc = tuple(float(v) for v in vol.geometry.world_to_index(np.asarray(n.center_xyz, float)))
            cap = f"R{j + 1} missed — reference nodule Ø {float(n.diameter_mm):.1f} mm, slice {int(round(irc[0]))}"
            marks.append(_Mark(f"R{j + 1}", "missed", irc, float(n.diameter_mm), cap))
        n_tp, n_fp = status.count(TP), status.count(FP)
        scan_rows.append({
            "seriesuid": uid, "slices": int(vol.spatial_shape[0]),
            "in-plane size": f"{vol.spatial_shape[1]}×{vol.spatial_shape[2]}",
            "spacing x, y, z (mm)": _fmt_xyz(vol.spacing), "findings": len(findings),
            "true positives": n_tp if ref is not None else None,
            "false positives": n_fp if ref is not None else None,
            "ignored (irrelevant nodules)": status.count(IGNORED) if ref is not None else None,
            "reference nodules": len(ref) if ref is not None else None,
            "missed": len(missed) if ref is not None else None,
            "highest nodule probability": max((f.nodule_prob for f in findings), default=None),
            "highest malignancy probability": max(
                (f.malignancy_prob for f in findings if f.malignancy_prob is not None), default=None)})
        totals["findings"] += len(findings)
        if ref is not None:
            totals[TP] += n_tp
            totals[FP] += n_fp
            totals["missed"] += len(missed)
            totals["reference"] += len(ref)
            totals["judged"] += 1
        # pictures: the MIP, then crops (TP and missed first, then FPs by probability)
        mip = mip_png(vol, marks)
        atomic_write_bytes(folder / "mip.png", mip)
        order = sorted(marks, key=lambda mk: ({TP: 0, "missed": 1}.get(mk.status, 2), -mk.prob))
        figs = []
        for mk in order[:max_crops_per_scan]:
            png = _png(crop_rgb(vol, mk.irc, mk.diameter_mm, COLOURS[mk.status]))
            atomic_write_bytes(folder / f"{mk.name}_{mk.status}.png", png)
            figs.append(page.figure(png, mk.caption, width=CROP_PX))
        left = len(order) - len(figs)
        blocks.append(
            f"<h3>{page.e(uid)}</h3>" + page.figure(mip, f"{uid}: lung MIP with every finding")
            + ("" if findings else '<p class="muted">No findings in this scan.</p>') + "".join(figs)
            + (f'<p class="muted">{left} more not drawn (see the table).</p>' if left > 0 else ""))

    summary: dict[str, Any] = {"scans": len(scans), "findings": totals["findings"]}
    if totals["judged"]:
        summary.update({
            "scans with a reference": totals["judged"], "reference nodules": totals["reference"],
            "reference nodules found": totals["reference"] - totals["missed"],
            "missed nodules": totals["missed"],
            "findings on a reference nodule (true positives)": totals[TP], "false positives": totals[FP],
            "sensitivity at the operating point": (
                (totals["reference"] - totals["missed"]) / totals["reference"]
                if totals["reference"] else None),
            "false positives per scan": totals[FP] / totals["judged"]})
    sections = [("Summary", page.kv_table(summary)),
                ("Per scan", page.table(scan_rows))]
    if froc_result is not None:
        png = froc_png(froc_result)
        atomic_write_bytes(out / "froc.png", png)
        sens = {f"sensitivity at {r:g} FP/scan": v for r, v in froc_result.sensitivity_at.items()}
        cpm = {"CPM (mean of the seven)": froc_result.cpm}
        if froc_result.cpm_ci:
            cpm[f"CPM {round(100 * (froc_result.ci_level or 0.95))}% CI (bootstrap over scans)"] = (
                f"{froc_result.cpm_ci[0]:.3f}–{froc_result.cpm_ci[1]:.3f}")
        sections.append(("FROC (LUNA16 rules)", page.img(png, "FROC curve") + page.kv_table({**cpm, **sens})
                         + "<p>A finding hits a nodule within its radius; several hits of one nodule count "
                           "once; findings on irrelevant nodules are not counted; false positives per scan "
                           "divide by every scan.</p><h3>Reference nodules</h3>" + page.table(froc_result.nodules)))
    sections.append(("Findings", page.table(finding_rows) if finding_rows
                     else '<p class="muted">No findings in any scan.</p>'))
    sections.append(("Slices through each finding", _legend() + "".join(blocks)))
    sections.append(("Model card", page.markdown_html(model_card) if model_card
                     else '<p class="muted">No model card was given.</p>'))
    return atomic_write_text(out / "report.html", page.page(title, sections))
