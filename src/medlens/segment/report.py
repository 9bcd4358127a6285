"""Self-contained HTML report for segmentation runs, and the model card.

3D runs use the same report: their volumes are shown as slices through the lesion.
Worst patients come first everywhere: the table is sorted by Dice ascending and the
overlays (true positive green, false positive red, false negative orange) show each
patient's slices with the most lesion (truth or prediction), worst patient at the top.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from medlens.io.atomic import atomic_write_text

_COLS = ("dice", "iou", "hd95", "volume_error_rel", "detection_rate", "false_positive_components", "slices")


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img_tag(src: str, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img src="{src}" alt="{html.escape(alt)}"{w}>'


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.3f}"
    return html.escape(str(v))


def dice_figure(rows: dict[str, dict[str, float]], slice_dice: np.ndarray | None) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    axes[0].hist([r["dice"] for r in rows.values()], bins=np.linspace(0, 1, 11), color="#4477aa")
    axes[0].set(title="per-patient volume Dice", xlabel="Dice", ylabel="patients")
    if slice_dice is not None and len(slice_dice):
        axes[1].hist(slice_dice, bins=np.linspace(0, 1, 21), color="#66aa55")
    axes[1].set(title="per-slice Dice (slices with lesion)", xlabel="Dice", ylabel="slices")
    fig.tight_layout()
    return _png(fig)


def curves_figure(history: list[dict[str, float]]) -> str | None:
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for key in ("train_loss", "val_loss"):
        if key in history[0]:
            axes[0].plot(ep, [h.get(key, np.nan) for h in history], label=key)
    axes[0].set(title="loss", xlabel="epoch")
    axes[0].legend()
    for key in ("val_dice", "val_slice_dice", "val_iou"):
        if key in history[0]:
            axes[1].plot(ep, [h.get(key, np.nan) for h in history], label=key)
    axes[1].set(title="validation", xlabel="epoch", ylim=(0, 1))
    axes[1].legend()
    fig.tight_layout()
    return _png(fig)


def overlay_tiles(sl: Any, probs: np.ndarray, rows: dict[str, dict[str, float]], threshold: float,
                  *, per_patient: int = 4, max_patients: int = 8) -> list[tuple[str, list[str]]]:
    """PNG data URIs of the slices with most lesion per patient, worst patients first."""
    from PIL import Image

    from medlens.segment.predict import overlay

    out = []
    pred = probs >= threshold
    truth = sl.masks[:, 0].astype(bool)
    for pid in sorted(rows, key=lambda p: rows[p].get("dice", 0))[:max_patients]:
        idx = np.flatnonzero(sl.patients == pid)
        area = truth[idx].reshape(len(idx), -1).sum(1) + pred[idx].reshape(len(idx), -1).sum(1)
        pick = idx[np.argsort(-area, kind="stable")[:per_patient]]
        tiles = []
        for i in sorted(pick, key=lambda i: sl.slice_index[i]):
            rgb = overlay(sl.images[i], pred[i], truth[i])
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="PNG")
            tiles.append(("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(),
                          f"slice {sl.slice_index[i]}"))
        out.append((pid, tiles))
    return out


_STYLE = ("<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
          "figure{display:inline-block;margin:4px}figcaption{font-size:small;text-align:center}"
          ".legend span{padding:2px 6px;margin-right:6px;color:#fff}</style>")


def patient_table(rows: dict[str, dict[str, float]], links: dict[str, str] | None = None) -> str:
    """Per-patient metrics, worst Dice first; ``links`` adds a column linking each patient."""
    head = "<table><tr><th>patient</th>" + "".join(f"<th>{c}</th>" for c in _COLS)
    out = [head + ("<th>run</th>" if links else "") + "</tr>"]
    for pid, r in sorted(rows.items(), key=lambda kv: kv[1].get("dice", 0)):
        cell = (f"<td><a href='{html.escape(links[pid])}'>report</a></td>" if links and pid in links else
                "<td></td>" if links else "")
        out.append(f"<tr><th>{html.escape(pid)}</th>" + "".join(
            f"<td>{_fmt(r.get(c, float('nan')))}</td>" for c in _COLS) + cell + "</tr>")
    return "".join(out) + "</table>"


def write_cv_report(path: str | Path, res: dict[str, Any], fold_runs: list[dict[str, Any]],
                    title: str = "Segmentation cross-validation") -> Path:
    """One page for a leave-patients-out run: summary, every unseen patient worst first (linked
    to its fold's report), the Dice distribution and one row per fold."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             _STYLE, f"</head><body><h1>{html.escape(title)}</h1>"]
    summary = {k: v for k, v in res.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    parts.append("<h2>Summary (patients never seen in training)</h2><table>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in summary.items()) + "</table>")
    links = {p: f"fold{f['fold']}/report.html" for f in fold_runs for p in f["test"]}
    parts.append("<h2>Per patient (worst first)</h2>" + patient_table(res["per_patient"], links))
    parts.append("<h2>Dice distribution</h2>" + _img_tag(dice_figure(res["per_patient"], None), "Dice"))
    parts.append("<h2>Folds</h2><table><tr><th>fold</th><th>test</th><th>validation</th>"
                 "<th>mean Dice</th><th>post-processing</th><th>members (best epochs)</th></tr>")
    for f in fold_runs:
        members = f.get("members") or []
        parts.append(f"<tr><td>{f['fold']}</td><td>{html.escape(', '.join(f['test']))}</td>"
                     f"<td>{html.escape(', '.join(f['val']))}</td><td>{_fmt(f.get('mean_dice'))}</td>"
                     f"<td>{html.escape(str(f.get('postprocess', '')))}</td>"
                     f"<td>{html.escape(', '.join(str(m.get('best_epoch')) for m in members))}</td></tr>")
    parts.append("</table></body></html>")
    return atomic_write_text(path, "\n".join(parts))


def write_report(path: str | Path, sl: Any, probs: np.ndarray, rows: dict[str, dict[str, float]],
                 metrics: dict[str, Any], *, history: list[dict[str, float]] | None = None,
                 problems: list[Any] = (), threshold: float = 0.5, title: str = "Segmentation report",
                 card: str | None = None) -> Path:
    """Write the HTML report (one file, images embedded)."""
    from medlens.segment.metrics import per_slice

    truth = sl.masks[:, 0].astype(bool)
    ps = per_slice(probs >= threshold, truth)
    lesion = truth.reshape(len(truth), -1).any(1)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             _STYLE, f"</head><body><h1>{html.escape(title)}</h1>"]
    summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    parts.append("<h2>Summary</h2><table>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in summary.items()) + "</table>")
    parts.append("<p>Dice is computed per patient over the whole volume (slices stacked); "
                 "both empty counts as 1, one empty as 0. HD95 is undefined (–) when exactly one "
                 "of truth and prediction is empty.</p>")
    parts.append("<h2>Per patient (worst first)</h2>" + patient_table(rows))
    parts.append("<h2>Dice distribution</h2>" + _img_tag(dice_figure(rows, ps["dice"][lesion]), "Dice histograms"))
    cur = curves_figure(history or [])
    if cur:
        parts.append("<h2>Training curves</h2>" + _img_tag(cur, "training curves"))
    parts.append("<h2>Overlays (worst patients first)</h2><p class='legend'>"
                 "<span style='background:#00c800'>true positive</span>"
                 "<span style='background:#ff0000'>false positive</span>"
                 "<span style='background:#ff9600'>false negative</span></p>")
    for pid, tiles in overlay_tiles(sl, probs, rows, threshold):
        parts.append(f"<h3>{html.escape(pid)} — Dice {_fmt(rows[pid].get('dice'))}</h3>")
        parts += [f"<figure>{_img_tag(src, cap, 192)}<figcaption>{html.escape(cap)}</figcaption></figure>"
                  for src, cap in tiles]
    if problems:
        parts.append(f"<h2>Problems ({len(problems)})</h2><ul>" + "".join(
            f"<li>[{html.escape(getattr(p, 'severity', 'error'))}] {html.escape(str(p.path))}: "
            f"{html.escape(p.reason)}</li>" for p in problems) + "</ul>")
    if card:
        parts.append(f"<h2>Model card</h2><pre>{html.escape(card)}</pre>")
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts))


def model_card(meta: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Markdown model card: intended use, data, metrics, limits."""
    inp = meta.get("input", {})
    lines = [
        "# Model card: lesion segmentation", "",
        "**Intended use**: research and teaching; outlines FLAIR-hyperintense abnormalities on",
        "axial brain MRI slices. Not a medical device; every output needs expert review.", "",
        (f"- Input: {inp.get('channels')} channel(s), "
         + (f"resized to {r} px," if (r := meta.get("preprocess", {}).get("resize")) else "at native resolution,")),
        "  uint8 scaled to [0, 1]; volumes windowed per channel at percentiles 0.5-99.5.",
        *([(f"- Model: 3D U-Net trained on patches of {'×'.join(str(v) for v in inp.get('patch') or [])} "
            "voxels (D×H×W); whole volumes predicted by sliding-window inference.")]
          if inp.get("spatial_dims") == 3 else []),
        *([(f"- Ensemble of {len(members)} U-Nets (seeds {', '.join(str(m['seed']) for m in members)}); "
            "their probabilities are averaged. Training curves show member 0.")]
          if len(members := metrics.get("members") or []) > 1 else []),
        f"- Output: lesion probability per pixel; mask = probability >= {meta.get('threshold')}.",
        f"- Loss: {meta.get('loss')}. Data: {meta.get('data', {}).get('path')}.", "",
        "## Held-out results (patients never seen in training)",
        f"- split: {metrics.get('split')}, patients: {', '.join(metrics.get('patient_ids', []))}",
        f"- mean per-patient-volume Dice: {_fmt(metrics.get('mean_dice', float('nan')))}",
        (f"- mean IoU: {_fmt(metrics.get('mean_iou', float('nan')))}, mean HD95: "
         f"{_fmt(metrics.get('mean_hd95', float('nan')))} (mm when spacing is known, else px)"),
        f"- lesion detection rate: {_fmt(metrics.get('mean_detection_rate', float('nan')))}", "",
        "## Limits",
        "- Few patients give wide uncertainty; check the per-patient table before trusting a mean.",
        "- Trained on one scanner/protocol mix; other sequences or resolutions need re-validation.",
    ]
    return "\n".join(lines) + "\n"
