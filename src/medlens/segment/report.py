"""Self-contained HTML report for segmentation runs (the model card: :mod:`medlens.segment.card`).

3D runs use the same report: their volumes are shown as slices through the lesion.
Worst patients come first everywhere: the table is sorted by Dice ascending and the
overlays (true positive green, false positive red, false negative orange) show each
patient's slices with the most lesion (truth or prediction), worst patient at the top.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

from medlens.evaluate import page
from medlens.io.atomic import atomic_write_text
from medlens.segment.card import model_card

__all__ = ["model_card", "patient_table", "summary_table", "write_cv_report", "write_report"]

def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


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


#: Summary rows: label and unit kind ("hd95"/"volume" take the run's units).
_LABELS = {
    "patients": ("patients", None),
    "mean_dice": ("mean Dice (per patient volume)", None),
    "mean_iou": ("mean IoU", None),
    "mean_hd95": ("mean HD95", "hd95"),
    "mean_volume_true": ("mean true lesion volume", "volume"),
    "mean_volume_pred": ("mean predicted lesion volume", "volume"),
    "mean_volume_error": ("mean volume error (predicted − true)", "volume"),
    "mean_volume_error_rel": ("mean relative volume error", "%"),
    "mean_dice_if_none": ("mean Dice without post-processing (an alternative, not the rule used)", None),
    "mean_dice_if_largest_component": ("mean Dice keeping the largest component only (an alternative)", None),
    "mean_dice_if_no_mirror": ("mean Dice without test-time mirroring (the network alone, same rule)", None),
    "mean_detection_rate": ("mean lesion detection rate", None),
    "mean_lesions": ("mean lesions per patient", None),
    "mean_detected": ("mean lesions detected per patient", None),
    "mean_false_positive_components": ("mean false-positive components", None),
    "mean_slices": ("mean slices per patient", None),
    "best_epoch": ("chosen epoch", None),
    "best_val_dice": ("validation Dice at the chosen epoch", None),
    "train_seconds": ("training time", "s"),
    "problems": ("files left out", None),
}
#: Per-patient columns: header and unit kind.
_COLUMNS = {
    "dice": ("Dice", None),
    "iou": ("IoU", None),
    "hd95": ("HD95", "hd95"),
    "volume_true": ("true volume", "volume"),
    "volume_error": ("volume error", "volume"),
    "volume_error_rel": ("relative volume error", "%"),
    "detection_rate": ("lesions detected", None),
    "false_positive_components": ("false-positive components", None),
    "slices": ("slices", None),
}
_UNDEFINED = {"hd95": "HD95", "volume_error_rel": "relative volume error", "detection_rate": "detection rate"}
_GENERIC_UNITS = {"hd95": "mm or px", "volume": "mm³ or voxels",
                  "note": "mm when the files give the spacing, else pixels/voxels"}


def _unit(kind: str | None, units: dict[str, str]) -> str | None:
    return None if kind is None else units.get(kind, _GENERIC_UNITS.get(kind, kind))


def _display(key: str, value: Any) -> Any:
    """Relative errors are shown in per cent."""
    if key.endswith("volume_error_rel") and not key.startswith("undefined_") and isinstance(value, (int, float)):
        return 100.0 * float(value)
    return value


def summary_table(metrics: dict[str, Any], units: dict[str, str]) -> str:
    """Every numeric summary value with its label and unit; counts as integers."""
    data, labels, unit_of = {}, {}, {}
    for k in [*(k for k in _LABELS if k in metrics), *(k for k in metrics if k not in _LABELS)]:
        v = metrics[k]
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        label, kind = _LABELS.get(k, (k.replace("_", " "), None))
        if k.startswith("undefined_"):
            what = k[len("undefined_"):]
            label = f"patients with {_UNDEFINED.get(what, what.replace('_', ' '))} undefined"
        data[k], labels[k] = _display(k, v), label
        if (u := _unit(kind, units)) is not None:
            unit_of[k] = u
    return page.kv_table(data, units=unit_of, labels=labels)


def patient_table(rows: dict[str, dict[str, float]], links: dict[str, str] | None = None,
                  units: dict[str, str] | None = None) -> str:
    """Per-patient metrics, worst Dice first, units in the headers; ``links`` adds a column
    linking each patient (to its fold's report)."""
    units = units or {}
    head = "<table><thead><tr><th>patient</th>" + "".join(
        f"<th>{page.e(name)}" + (f" ({page.e(u)})" if (u := _unit(kind, units)) else "") + "</th>"
        for name, kind in _COLUMNS.values())
    out = [head + ("<th>run</th>" if links else "") + "</tr></thead><tbody>"]
    for pid, r in sorted(rows.items(), key=lambda kv: kv[1].get("dice", 0)):
        cell = (f"<td><a href='{page.e(links[pid])}'>report</a></td>" if links and pid in links else
                "<td></td>" if links else "")
        out.append(f"<tr><th>{page.e(pid)}</th>" + "".join(
            page.cell(_display(c, r.get(c, float("nan"))), count=page.is_count(c)) for c in _COLUMNS)
            + cell + "</tr>")
    return "".join(out) + "</tbody></table>"


_DICE_NOTE = ("<p>Dice is computed per patient over the whole volume (slices stacked); both empty counts "
              "as 1, one empty as 0. HD95 is undefined (n/a) when exactly one of truth and prediction is "
              "empty. HD95 in {hd95}, volumes in {volume}: {note}.</p>")


def _dice_note(units: dict[str, str]) -> str:
    return _DICE_NOTE.format(**{k: page.e(v) for k, v in {**_GENERIC_UNITS, **units}.items()})


def write_cv_report(path: str | Path, res: dict[str, Any], fold_runs: list[dict[str, Any]],
                    title: str = "Segmentation cross-validation") -> Path:
    """One page for a leave-patients-out run: summary, every unseen patient worst first (linked
    to its fold's report), the Dice distribution and one row per fold."""
    from medlens.pipelines.cv_driver import fold_path

    units = res.get("units") or next((f["units"] for f in fold_runs if f.get("units")), None) or _GENERIC_UNITS
    links = {p: (fold_path("", f["fold"]) / "report.html").as_posix() for f in fold_runs for p in f["test"]}
    folds = [{"fold": f["fold"], "test": ", ".join(f["test"]), "validation": ", ".join(f["val"]),
              "mean Dice": f.get("mean_dice"), "post-processing": str(f.get("postprocess", "")),
              "members (best epochs)": ", ".join(str(m.get("best_epoch")) for m in f.get("members") or [])}
             for f in fold_runs]
    sections = [
        ("Summary (patients never seen in training)", summary_table(res, units)
         + _dice_note(units)),
        ("Per patient (worst first)", patient_table(res["per_patient"], links, units)),
        ("Dice distribution", page.img(dice_figure(res["per_patient"], None), "Dice")),
        ("Folds", page.table(folds)),
    ]
    return atomic_write_text(path, page.page(title, sections))


def write_report(path: str | Path, sl: Any, probs: np.ndarray, rows: dict[str, dict[str, float]],
                 metrics: dict[str, Any], *, history: list[dict[str, float]] | None = None,
                 problems: list[Any] = (), threshold: float = 0.5, title: str = "Segmentation report",
                 card: str | None = None) -> Path:
    """Write the HTML report (one file, images embedded), in the look of every medlens page."""
    from medlens.evaluate import figures
    from medlens.segment.metrics import metric_units, per_slice

    truth = sl.masks[:, 0].astype(bool)
    ps = per_slice(probs >= threshold, truth)
    lesion = truth.reshape(len(truth), -1).any(1)
    units = metrics.get("units") or metric_units(getattr(sl, "spacing", {}) or {}, list(rows))
    sections = [
        ("Summary", summary_table(metrics, units) + _dice_note(units)),
        ("Per patient (worst first)", patient_table(rows, units=units)),
        ("Dice distribution", page.img(dice_figure(rows, ps["dice"][lesion]), "Dice histograms")),
    ]
    if history:
        curves = figures.training_curves_png(history, best_epoch=metrics.get("best_epoch"), monitor="val_dice")
        sections.append(("Training curves", page.img(curves, "training curves")))
    overlays = ["<p class='legend'><span style='background:#00c800'>true positive</span>"
                "<span style='background:#ff0000'>false positive</span>"
                "<span style='background:#ff9600'>false negative</span></p>"]
    for pid, tiles in overlay_tiles(sl, probs, rows, threshold):
        overlays.append(f"<h3>{page.e(pid)} — Dice {page.e(page.fmt(rows[pid].get('dice')))}</h3>")
        overlays += [page.figure(src, cap, width=192) for src, cap in tiles]
    sections.append(("Overlays (worst patients first)", "".join(overlays)))
    if problems:
        sections.append((f"Problems ({len(problems)})", "<ul>" + "".join(
            f"<li>[{page.e(getattr(p, 'severity', 'error'))}] {page.e(p.path)}: {page.e(p.reason)}</li>"
            for p in problems) + "</ul>"))
    if card:
        sections.append(("Model card", page.markdown_html(card)))
    return atomic_write_text(path, page.page(title, sections))
