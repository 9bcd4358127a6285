"""The ``segment`` task: a lesion mask per image or volume (U-Net, 2D slices or 3D patches).

Its pieces live in :mod:`medlens.segment` (layouts, slices/volumes, the engine task,
metrics, report, file prediction); this entry ties them to the registry and holds the
predictor a segmentation package answers with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlens.errors import BadInputError
from medlens.segment.config import SegmentConfig
from medlens.tasks.classify import as_uint8
from medlens.tasks.registry import Summary, TaskSpec


class SegmentPredictor:
    """Masks and probability maps in memory (``medlens predict`` writes them to files)."""

    def __init__(self, pkg: Any) -> None:
        self.pkg = pkg

    @property
    def spatial_dims(self) -> int:
        return int(self.pkg.metadata.get("input", {}).get("spatial_dims", 2))

    def load_images(self, paths: Sequence[str | Path]) -> list[np.ndarray]:
        """``(H, W, C)`` images as the network was trained on them (per-folder intensity
        policy included, :func:`medlens.segment.predict.read_images`)."""
        from medlens.segment.predict import read_images

        got = read_images(self.pkg.metadata, [Path(p) for p in paths])
        for im in got.values():
            if isinstance(im, BadInputError):
                raise im
        return [np.moveaxis(got[Path(p)], 0, -1) for p in paths]  # type: ignore[arg-type]

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """2D images → the U-Net's input, prepared as :func:`medlens.segment.predict.slices_tensor` does."""
        from medlens.segment.predict import slices_tensor

        meta = self.pkg.metadata
        if self.spatial_dims != 2:
            raise BadInputError(f"{self.pkg.path}: a 3D segmenter; explain volumes through the Python API "
                                "(medlens.explain.explain(model, x)) with (B, C, D, H, W) input")
        return slices_tensor([as_uint8(im) for im in images], resize=meta.get("preprocess", {}).get("resize"),
                             divisor=int(meta.get("input", {}).get("divisor", 16)), device=self.pkg.device)

    def predict(self, inputs: Any, *, batch_size: int = 64) -> list[dict[str, Any]]:
        """Image files, volume files or DICOM series folders → one dict per input with the
        ``mask`` (bool array, the input's own size) and ``probability`` map; for volumes
        also ``spacing`` and the lesion volume in mm³. Unreadable inputs get ``error``."""
        from medlens.segment.predict import (
            expand_inputs,
            is_volume_input,
            read_images,
            segment_image,
            segment_volume,
        )

        items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        rows: list[dict[str, Any]] = []
        paths = expand_inputs(items)
        images = read_images(self.pkg.metadata, [p for p in paths if not is_volume_input(p)]) \
            if self.spatial_dims == 2 else {}
        for path in paths:
            try:
                if is_volume_input(path):
                    vol, _, prob, mask = segment_volume(self.pkg.model, self.pkg.metadata, path, self.pkg.device)
                    rows.append({"file": str(path), "mask": mask.astype(bool), "probability": prob,
                                 "spacing": tuple(vol.geometry.spacing), "lesion_voxels": int(mask.sum()),
                                 "lesion_volume_mm3": float(mask.sum()) * vol.geometry.voxel_volume})
                else:
                    image = images.get(path)
                    if isinstance(image, BadInputError):
                        raise image
                    _, prob, mask = segment_image(self.pkg.model, self.pkg.metadata, path, self.pkg.device, image)
                    rows.append({"file": str(path), "mask": np.asarray(mask, bool), "probability": prob,
                                 "lesion_pixels": int(np.sum(mask))})
            except BadInputError as e:
                rows.append({"file": str(path), "error": str(e)})
        return rows


def _detect(data: Path, layout: str | None) -> bool:
    from medlens.segment.layouts import SEGMENT_LAYOUTS, detect_segmentation_layout

    if layout:
        return layout in SEGMENT_LAYOUTS.names()
    return detect_segmentation_layout(data) is not None


def _train(data: Path, out: Path | None, config: Path | None, resume: bool,
           options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    from medlens.segment.workflow import train_from_cli

    return train_from_cli(data=data, out=out, config=config, resume=resume, options=options)


def _evaluate(pkg: Any, data: Path, *, split: str, out_dir: Path, strict: bool = False,
              **layout_opts: Any) -> dict[str, Any]:
    from medlens.segment.evaluation import evaluate_package

    return evaluate_package(pkg, data, split=split, out_dir=out_dir, strict=strict, **layout_opts)


def _predict_files(pkg: Any, inputs: Sequence[Path], out: Path | None, *, batch_size: int = 64,
                   strict: bool = False) -> list[dict[str, Any]]:
    from medlens.pipelines.ood_guard import guard_files
    from medlens.segment.predict import predict_to_folder

    guard_files(pkg, inputs, strict=strict)  # out-of-distribution inputs: warn, or refuse
    return predict_to_folder(pkg, inputs, out)


def _summary(metrics: dict[str, Any]) -> Summary:
    cols = ("dice", "iou", "hd95", "volume_error_rel")
    per = metrics.get("per_patient") or {}
    rows = [[pid, *(f"{r.get(c, float('nan')):.3f}" for c in cols)]
            for pid, r in sorted(per.items(), key=lambda kv: kv[1].get("dice", 0))]  # worst first
    rows.append(["mean", *(f"{metrics.get('mean_' + c, float('nan')):.3f}" for c in cols)])
    n = int(metrics.get("patients", len(per)) or 0)
    split = metrics.get("split", "test")
    notes = ["No test split: every patient scored by the ensemble member that did not train on it (the "
             "post-processing was chosen on these predictions; `medlens cv` gives held-out figures)."
             ] if split == "out_of_fold" else []
    return Summary(title=f"per-patient segmentation ({split.replace('_', '-')} split, {n} patients)",
                   columns=["patient", "dice", "iou", f"hd95 ({(metrics.get('units') or {}).get('hd95', 'px')})",
                            "volume_error_rel"], rows=rows, notes=notes)


def _predict_table(pkg: Any, rows: list[dict[str, Any]]) -> Summary:
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["file"], "[red]unreadable[/red]", "", r["error"]])
        else:
            size = f"{r['lesion_volume_mm3']:.0f} mm³" if "lesion_volume_mm3" in r else f"{r.get('lesion_pixels', 0)} px"
            out.append([r["file"], r["mask"], size, f"{r['max_probability']:.3f}"])
    return Summary(title="", columns=["file", "mask", "lesion", "max probability"], rows=out,
                   notes=[f"masks and overlays in {Path(rows[0].get('mask', '.')).parent}"] if rows else [])


def _cross_validate(data: Path, out: Path | None, config: Path | None, resume: bool, folds: int | None,
                    options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    from medlens.segment.crossval import cv_from_cli

    return cv_from_cli(data=data, out=out, config=config, resume=resume, folds=folds, options=options)


def _cv_summary(cv: dict[str, Any]) -> Summary:
    """Every unseen patient, worst Dice first, its fold, and the mean per-patient-volume Dice."""
    fold_of = {p: f["fold"] for f in cv.get("folds") or [] for p in f["test"]}
    rows = [[pid, str(fold_of.get(pid, "")), f"{r.get('dice', float('nan')):.3f}"]
            for pid, r in sorted(cv["per_patient"].items(), key=lambda kv: kv[1].get("dice", 0))]
    n = int(cv.get("patients", len(rows)) or 0)
    by = cv.get("group_by", "patient")
    notes = [f"mean per-patient-volume Dice over {n} unseen patients: {cv['mean_dice']:.3f}"]
    plain = [r for r in cv["per_patient"].values() if "dice_if_no_mirror" in r]
    if plain:  # the same patients through the network alone: what test-time mirroring gave
        d = np.array([[r["dice"], r["dice_if_no_mirror"]] for r in plain], dtype=float)
        notes.append(f"without test-time mirroring: mean Dice {np.nanmean(d[:, 1]):.3f}; mirroring better for "
                     f"{int((d[:, 0] > d[:, 1] + 1e-3).sum())}, worse for {int((d[:, 0] < d[:, 1] - 1e-3).sum())} "
                     f"of {len(d)} patients")
    notes += [f"held-out {by} {site}: {g['patients']} patient(s), mean Dice {g['mean_dice']:.3f}"
              for site, g in (cv.get("per_group") or {}).items()]
    return Summary(title=f"{len(cv.get('folds') or [])}-fold leave-{by}s-out cross-validation",
                   columns=["patient", "fold", "Dice"], rows=rows, notes=notes)


def _demo(out: Path, *, seed: int = 0, quick: bool = False, device: str = "auto") -> Path:
    from medlens.segment.workflow import run_demo

    return run_demo(out, seed=seed, quick=quick, device=device)


TASK = TaskSpec(
    name="segment",
    description="a lesion mask per image or volume: U-Net, per-patient Dice/HD95, overlays",
    detect=_detect,
    train=_train,
    evaluate=_evaluate,
    predictor=SegmentPredictor,
    predict_files=_predict_files,
    summary=_summary,
    predict_table=_predict_table,
    demo=_demo,
    cross_validate=_cross_validate,
    cv_summary=_cv_summary,
    config_model=SegmentConfig,
    options=frozenset({"--spatial-dims", "--patch", "--mask-pattern", "--ensemble", "--ensemble-by", "--loss", "--group-by"}),
    priority=10,
)
