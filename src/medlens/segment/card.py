"""The segmentation model card, written from the data the model saw and the task it does.

:func:`describe_data` records what is known about the training data (layout, file
formats, modality and channel names when the layout or its files say so, labels, patients
and images per split); it travels in the package metadata (``metadata["data"]``), and
:func:`model_card` turns it, the input spec and the held-out metrics into Markdown. Nothing
is claimed that the data do not say: an unknown modality is written as unknown.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medlens.evaluate.model_card import NOT_FOR_CLINICAL_USE

#: Layouts that fix what the images are (the Kaggle LGG set: Buda et al. 2019).
KNOWN_LAYOUTS = {
    "kaggle_3m": {"modality": "MR", "anatomy": "brain", "plane": "axial",
                  "channel_names": ["pre-contrast", "FLAIR", "post-contrast"]},
}
_CT_NAMES = {"ct", "cta", "pet/ct"}
_MR_NAMES = {"t1", "t1c", "t1ce", "t1gd", "t1w", "t2", "t2w", "flair", "adc", "dwi", "pd", "mr", "mri",
             "swi", "hbv", "perfusion"}


def _nnunet_channels(root: Path) -> list[str] | None:
    try:
        meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    names = meta.get("channel_names") or meta.get("modality")
    if not isinstance(names, Mapping):
        return None
    return [str(names[k]) for k in sorted(names, key=lambda k: int(k) if str(k).isdigit() else 0)]


def _modality_from_names(names: Sequence[str]) -> str | None:
    low = {n.strip().lower() for n in names}
    if low and low <= _CT_NAMES:
        return "CT"
    if low and low <= _MR_NAMES:
        return "MR"
    return None


def _format(path: str) -> str:
    name = path.lower()
    for suf, fmt in ((".nii.gz", "NIfTI"), (".nii", "NIfTI"), (".mha", "MetaImage"), (".mhd", "MetaImage"),
                     (".nrrd", "NRRD"), (".dcm", "DICOM"), (".tif", "TIFF"), (".tiff", "TIFF"),
                     (".png", "PNG"), (".jpg", "JPEG"), (".jpeg", "JPEG"), (".bmp", "BMP")):
        if name.endswith(suf):
            return fmt
    return Path(path).suffix.lstrip(".").upper() or "unknown"


def describe_data(index: Any, splits: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """What the card says about the data: a JSON-ready dict.

    Args:
        index: the segmentation :class:`~medlens.data.records.DatasetIndex`.
        splits: ``{split: [patient ids]}`` as the run used them.
    """
    records = list(index.records)
    known = KNOWN_LAYOUTS.get(index.layout, {})
    names = known.get("channel_names")
    if index.layout == "nnunet":
        names = _nnunet_channels(Path(index.root))
    where = {str(p): s for s, ps in splits.items() for p in ps}
    unit = "volumes" if any(r.meta.get("kind") == "volume" for r in records) else "slices"
    per_split = Counter(where.get(str(r.patient)) for r in records)
    return {
        "path": str(index.root),
        "layout": index.layout,
        "formats": sorted(Counter(_format(r.path) for r in records)),
        "modality": known.get("modality") or (_modality_from_names(names) if names else None),
        "anatomy": known.get("anatomy"),
        "plane": known.get("plane"),
        "channel_names": names,
        "labels": list(getattr(index, "classes", None) or ["background", "lesion"]),
        "image_unit": unit,
        "patients": {s: len(ps) for s, ps in splits.items()},
        "images": {s: int(per_split.get(s, 0)) for s in splits},
    }


def _n(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _v(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _by_split(counts: Mapping[str, int] | None) -> str:
    if not counts:
        return "n/a"
    total = sum(int(v) for v in counts.values())
    return f"{total:,} (" + ", ".join(f"{k} {int(v):,}" for k, v in counts.items()) + ")"


def _modality_phrase(data: Mapping[str, Any], fingerprint: Mapping[str, Any]) -> str:
    modality = data.get("modality") or fingerprint.get("modality")
    words = {"MR": "MRI", "CT": "CT"}.get(str(modality), modality) if modality else None
    parts = [p for p in (data.get("plane"), data.get("anatomy"), words) if p]
    return " ".join(parts) + " images" if words else "images (modality not recorded in the files)"


def model_card(meta: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    """Markdown model card of a segmentation package: task, data, input, held-out results,
    limits — each statement from ``meta`` (its ``data`` description, input spec, threshold,
    loss) or ``metrics``; nothing about the images that the data did not say."""
    data = dict(meta.get("data") or {})
    fp = dict(meta.get("data_fingerprint") or {})
    inp = meta.get("input") or {}
    labels = data.get("labels") or meta.get("classes") or ["background", "lesion"]
    target = ", ".join(f"`{c}`" for c in labels if c != "background") or "`lesion`"
    what = _modality_phrase(data, fp)
    dims = int(inp.get("spatial_dims", 2))
    channels = inp.get("channels")
    names = data.get("channel_names")
    units = metrics.get("units") or {}
    hd_unit = units.get("hd95", "mm when the files give the spacing, else px")
    unit_note = f" ({units['note']})" if units.get("note") else ""
    members = metrics.get("members") or []
    resize = (meta.get("preprocess") or {}).get("resize")
    model = "3D U-Net" if dims == 3 else "2D U-Net"
    unit = data.get("image_unit", "slices")
    lines = [
        f"# Model card: {model} segmentation of {', '.join(str(c) for c in labels if c != 'background')}",
        "",
        f"> **{NOT_FOR_CLINICAL_USE}**",
        "",
        "## Intended use",
        "",
        f"Research and teaching: outlines {target} regions (binary mask, label > 0) in {what} "
        f"like the training data ({data.get('layout') or 'layout not recorded'} layout). Not a medical "
        "device; every output needs expert review.",
        "",
        "## Data",
        "",
        f"- Source: `{data.get('path', 'not recorded')}`, layout `{data.get('layout') or 'auto'}`, "
        f"files: {', '.join(data.get('formats') or []) or 'not recorded'}.",
        f"- Modality: {data.get('modality') or fp.get('modality') or 'not recorded in the files'}"
        + (f"; anatomy: {data['anatomy']}" if data.get("anatomy") else "") + ".",
        f"- Channels: {channels}" + (f" ({', '.join(names)})" if names else "") + ".",
        f"- Labels: {', '.join(str(c) for c in labels)} (mask values > 0 are the lesion).",
        f"- Patients: {_by_split(data.get('patients'))}; {unit}: {_by_split(data.get('images'))}.",
        "",
        "## Model",
        "",
        f"- {model}; input {channels} channel(s), "
        + (f"resized to {resize} px, " if resize else "at native resolution, ")
        + "uint8 scaled to [0, 1]; volumes windowed per channel at percentiles 0.5–99.5.",
        *([f"- Trained on patches of {'×'.join(str(v) for v in inp.get('patch') or [])} voxels (D×H×W); "
           "whole volumes predicted by sliding-window inference."] if dims == 3 else []),
        *([f"- Ensemble of {len(members)} U-Nets (seeds {', '.join(str(m.get('seed')) for m in members)}); "
           "their probabilities are averaged."
           + (f" Cross-validation ensemble: the training patients in {len(members)} folds, each member "
              "validated on one fold and trained on the others." if "val_patients" in members[0] else "")]
          if len(members) > 1 else []),
        f"- Output: lesion probability per pixel; mask = probability ≥ {meta.get('threshold')}; "
        f"post-processing: {meta.get('postprocess', 'none')}"
        + ("; each probability the mean over the image and its left-right mirror image (test-time "
           "mirroring)." if meta.get("tta") == "flip" else "."),
        f"- Loss: {meta.get('loss')}.",
        "",
        "## Held-out results (patients never seen in training)",
        "",
        f"- Split: {metrics.get('split')}; patients: {_n(metrics.get('patients'))} "
        f"({', '.join(f'`{p}`' for p in metrics.get('patient_ids', []))}).",
        f"- Mean per-patient-volume Dice: {_v(metrics.get('mean_dice'))}; mean IoU: {_v(metrics.get('mean_iou'))}.",
        f"- Mean HD95: {_v(metrics.get('mean_hd95'))} {hd_unit}{unit_note}.",
        f"- Mean relative volume error: {_v(metrics.get('mean_volume_error_rel'))} "
        "(predicted − true, as a fraction of the true volume).",
        f"- Lesion detection rate: {_v(metrics.get('mean_detection_rate'))}.",
        "",
        "## Limits",
        "",
        f"- {_n(sum((data.get('patients') or {}).values()) or math.nan)} patients from one source give wide "
        "uncertainty; check the per-patient table before trusting a mean.",
        f"- Trained on {what} of this one data set; other sites, devices, protocols or resolutions "
        "need re-validation.",
    ]
    return "\n".join(lines) + "\n"
