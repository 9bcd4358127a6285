"""Detection of one scan with a trained lung-CT package, and the patient-level diagnosis.

:meth:`Detector.detect`, each step batched, no Python loop over voxels:

1. lung mask on a coarse grid → the lung bounding box (:mod:`medlens.ct.lungs`);
2. candidates: the U-Net on every slice of the box with its context slices
   (:mod:`medlens.ct.candidates`), voxels ≥ ``candidate_threshold`` grouped by connected
   components, **in union with** classical Hessian blobs (:mod:`medlens.ct.blobs`), so that
   candidate recall does not hang on the U-Net transferring from its training scans;
3. 3D crops around each candidate (mm-sized boxes, :mod:`medlens.ct.crops`) scored by the
   nodule network (false-positive reduction); then, in packages that hold one, the ranker
   (:mod:`medlens.ct.ranker`: shape/intensity descriptors + the network's logit) gives the
   nodule probability; a blob finding's diameter is measured on the image
   (:mod:`medlens.ct.sizing`); of several findings on one lump only the most probable stays
   (:func:`medlens.ct.findings.one_per_lump`); the malignancy network rates the findings at
   the threshold;
4. the patient's diagnosis (:func:`diagnose`): the highest malignancy probability among the
   findings at the operating point (the package records this rule).

The *operating point* is the nodule threshold and a reading budget: at most ``max_findings``
findings per scan, the most probable (:func:`reported`). Why the budget: a threshold chosen
on one kind of scan lets a different number of false positives through on another — a
package trained on phantoms (2 per validation scan) let 14–17 through on the real
LIDC-IDRI-0001 scan, where its nodule ranked first; the budget bounds the false positives a
reader sees on any scanner, and costs sensitivity only where a scan holds more nodules than
the budget or ranks false positives above them. ``nodules.csv`` keeps every finding
≥ ``min_prob`` (what the FROC needs); reports and diagnoses use the operating point.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medlens.ct.blobs import BlobParams, detect_blobs, merge_candidates
from medlens.ct.candidates import group_candidates, predict_probability
from medlens.ct.classifier import score_crops
from medlens.ct.crops import CropSpec, extract_crops
from medlens.ct.features import FEATURE_NAMES, LUMP_HU, NEAR_MM, candidate_features
from medlens.ct.findings import Finding, one_per_lump
from medlens.ct.lungs import LungMask, lung_mask
from medlens.ct.ranker import needs_network, rank, ranker_inputs, reasons
from medlens.ct.sizing import measure_findings
from medlens.errors import BadInputError
from medlens.io.atomic import atomic_write_text
from medlens.io.volumes import Volume
from medlens.transforms.intensity import FixedWindow

STAGES = ("candidates", "nodule", "ranker", "malignancy")
DIAGNOSIS_RULE = ("patient malignancy probability = the highest malignancy probability among the findings "
                  "at the operating point (nodule probability at or above the operating threshold, at most "
                  "the package's max_findings per scan, most probable first); no such finding: no nodule found")
DIAGNOSIS_COLUMNS = ("seriesuid", "nodules", "max_nodule_prob", "largest_nodule_mm", "malignancy_prob",
                     "diagnosis")


@dataclass(frozen=True)
class DetectParams:
    """Everything detection needs besides the networks (stored in the package as ``ct``)."""

    context: int = 3
    hu_window: tuple[float, float] = (-1000.0, 400.0)
    candidate_threshold: float = 0.3
    min_voxels: int = 3
    max_candidates: int = 300
    divisor: int = 16
    crop: CropSpec = field(default_factory=CropSpec)
    nodule_threshold: float = 0.5
    min_prob: float = 0.02
    malignancy_from: float | None = None  # nodule probability from which malignancy is scored (None: threshold)
    slice_batch: int = 8
    crop_batch: int = 32
    blobs: BlobParams = field(default_factory=BlobParams)  # classical candidates in union with the U-Net's
    min_lung_air: float = 0.0  # with a ranker: candidates with less lung (< -700 HU) in their box are dropped
    require_lump: bool = False  # with a ranker: candidates with nothing above -600 HU within 3 mm are dropped
    max_findings: int | None = None  # reading budget: findings per scan at the operating point (None: no limit)
    suppress_within: float = 0.0  # one finding per lump: see medlens.ct.findings.one_per_lump (0: keep all)
    measure_size: bool = False  # blob findings get the lump's measured diameter (medlens.ct.sizing), not their scale

    @property
    def window(self) -> FixedWindow:
        return FixedWindow(lower=self.hu_window[0], upper=self.hu_window[1], output="float32")

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["crop"] = self.crop.to_dict()
        d["hu_window"] = list(self.hu_window)
        d["blobs"] = self.blobs.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectParams:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["crop"] = CropSpec.from_dict(d["crop"])
        known["hu_window"] = tuple(d.get("hu_window", (-1000.0, 400.0)))
        known["blobs"] = BlobParams.from_dict(d.get("blobs"))  # absent in older packages: U-Net only
        return cls(**known)


def scan_stem(path: str | Path | None) -> str:
    """A scan file's name without its (compound) suffix: LUNA16's series uid of ``<uid>.mhd``."""
    name = Path(path or "scan").name
    for suffix in (".nii.gz", ".nii", ".mhd", ".mha"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def seriesuid_of(volume: Volume) -> str:
    """The scan's series uid: ``meta['seriesuid']``, else the file's stem."""
    uid = volume.meta.get("seriesuid") if volume.meta else None
    return str(uid) if uid else scan_stem(volume.path)


@dataclass
class Detector:
    """The three networks and the parameters: one scan in, its findings out."""

    candidate_model: nn.Module
    nodule_model: nn.Module
    malignancy_model: nn.Module | None
    params: DetectParams
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    ranker: nn.Module | None = None  # packages written before the ranker existed: the crop network decides
    ranker_features: tuple[str, ...] | None = None  # the ranker's input names (None: its own input set)

    @classmethod
    def from_package(cls, pkg: Any) -> Detector:
        """The detector of a loaded lung-CT package (:class:`medlens.package.ModelPackage`)."""
        import medlens.ct.classifier  # noqa: F401  (registers the crop networks)

        meta = pkg.metadata.get("ct")
        if pkg.metadata.get("task") != "ct" or not isinstance(meta, dict):
            raise BadInputError(f"{pkg.path}: not a lung-CT package (task {pkg.metadata.get('task')!r}); "
                                "train one with `medlens ct train`")
        mal = pkg.stage("malignancy") if "malignancy" in pkg.stage_names else None
        ranker, names = None, None
        if "ranker" in pkg.stage_names:
            ranker = pkg.stage("ranker")
            names = tuple(pkg.metadata["stages"]["ranker"].get("input", {}).get("features") or ()) or None
        return cls(pkg.stage("candidates"), pkg.stage("nodule"), mal, DetectParams.from_dict(meta), pkg.device,
                   ranker, names)

    def lungs(self, volume: Volume) -> LungMask:
        return lung_mask(volume.array, volume.geometry.array_spacing)

    def candidates(self, volume: Volume, *, seriesuid: str | None = None,
                   lungs: LungMask | None = None) -> list[Finding]:
        """Steps 1–2: the grouped U-Net candidates (``nodule_prob`` = their peak voxel probability),
        then the Hessian blobs that no U-Net candidate already covers (``params.blobs``)."""
        p = self.params
        lungs = lungs or self.lungs(volume)
        uid = seriesuid or seriesuid_of(volume)
        prob, box = predict_probability(self.candidate_model, volume.array, lungs, window=p.window, context=p.context,
                                        batch_size=p.slice_batch, divisor=p.divisor, device=self.device)
        found = group_candidates(prob, box, volume.geometry, seriesuid=uid, threshold=p.candidate_threshold,
                                 lungs=lungs, min_voxels=p.min_voxels, max_candidates=p.max_candidates)
        if not p.blobs.enabled:
            return found
        return merge_candidates(found, detect_blobs(volume.array, volume.geometry, lungs, seriesuid=uid,
                                                    params=p.blobs), by=p.blobs.merge_by)

    def score(self, volume: Volume, candidates: Sequence[Finding]) -> list[Finding]:
        """Step 3: nodule probability of ``candidates`` (those under ``min_prob`` dropped; blob
        candidates' diameters measured on the image, ``params.measure_size``; then the less
        probable findings on a lump another one holds dropped, ``params.suppress_within``; the
        rest most probable first) and the malignancy probability of those at or above
        ``malignancy_from`` (default: the operating threshold; the others get ``None``)."""
        if not candidates:
            return []
        p = self.params
        centres = np.array([f.center_irc for f in candidates], dtype=np.float64)
        crops = extract_crops(volume.array, volume.geometry.array_spacing, centres, p.crop)
        if self.ranker is not None and not needs_network(self.ranker_features or self.ranker.inputs):
            crop_prob = np.full(len(candidates), 0.5)  # the ranker does not take the network's opinion
        else:
            crop_prob = score_crops(self.nodule_model, crops, batch_size=p.crop_batch, device=self.device)
        nod, why = self._ranked(volume, candidates, crop_prob)
        keep = np.flatnonzero(nod >= p.min_prob)
        diam = np.array([c.diameter_mm for c in candidates], dtype=np.float64)
        if p.measure_size:  # a blob's diameter is its scale: measure the lump (U-Net components are measured)
            blobs = np.array([k for k in keep if candidates[k].voxels == 0], dtype=np.int64)
            measured = measure_findings(volume, [candidates[k] for k in blobs])
            diam[blobs[np.isfinite(measured)]] = measured[np.isfinite(measured)]
        keep = keep[one_per_lump(np.array([c.center_xyz for c in candidates])[keep], diam[keep], nod[keep],
                                 within=p.suppress_within)]
        # malignancy only where it matters (the reported nodules): the crop network is the costly part
        rate = keep[nod[keep] >= (p.nodule_threshold if p.malignancy_from is None else p.malignancy_from)]
        mal = dict(zip(rate.tolist(), score_crops(self.malignancy_model, crops[rate], batch_size=p.crop_batch,
                                                  device=self.device).tolist(), strict=True)
                   if self.malignancy_model is not None and len(rate) else {})
        out = []
        for k in keep:
            c = candidates[k]
            out.append(Finding(c.seriesuid, c.center_xyz, c.center_irc, float(diam[k]), float(nod[k]),
                               mal.get(int(k)), c.voxels, None if why is None else why[k]))
        return sorted(out, key=lambda f: -f.nodule_prob)

    def rank(self, volume: Volume, candidates: Sequence[Finding], crop_prob: np.ndarray) -> np.ndarray:
        """The nodule probability of each candidate: the ranker's (0 for a candidate with no lung
        around it, ``params.min_lung_air``, or with no lump at its centre, ``params.require_lump``),
        or the crop network's ``crop_prob`` without a ranker."""
        return self._ranked(volume, candidates, crop_prob)[0]

    def _ranked(self, volume: Volume, candidates: Sequence[Finding], crop_prob: np.ndarray
                ) -> tuple[np.ndarray, list[str] | None]:
        """:meth:`rank` and, with a ranker, each candidate's reasons (:func:`medlens.ct.ranker.reasons`)."""
        if self.ranker is None or not len(candidates):
            return crop_prob, None
        feats = candidate_features(volume, candidates)
        x = ranker_inputs(feats, crop_prob, self.ranker_features or self.ranker.inputs)
        prob = rank(self.ranker, x)
        why = reasons(self.ranker, x, self.ranker_features)
        outside = feats[:, FEATURE_NAMES.index("box_air")] < self.params.min_lung_air
        prob[outside] = 0.0
        for k in np.flatnonzero(outside):
            why[k] = f"not in the lung: box_air={feats[k, FEATURE_NAMES.index('box_air')]:.2f}"
        if self.params.require_lump:
            # a nodule is denser than the lung around it; a candidate with nothing above -600 HU near
            # its centre is lung. Phantom nodules never are (ground glass included), so the ranker never
            # learned it: on LIDC-IDRI-0001 such empty spots became its most probable findings
            empty = (feats[:, FEATURE_NAMES.index("lump_log_volume_600hu")] <= 0) & ~outside
            prob[empty] = 0.0
            for k in np.flatnonzero(empty):
                why[k] = f"no lump: nothing above {LUMP_HU[0]:g} HU within {NEAR_MM:g} mm of the centre"
        return prob, why

    def detect(self, volume: Volume, *, seriesuid: str | None = None) -> list[Finding]:
        """Every finding of ``volume`` with ``nodule_prob >= min_prob``, most probable first."""
        with torch.inference_mode():
            return self.score(volume, self.candidates(volume, seriesuid=seriesuid))

    def reported(self, findings: Sequence[Finding]) -> list[Finding]:
        """The findings of one scan at the package's operating point (:func:`reported`)."""
        return reported(findings, threshold=self.params.nodule_threshold, max_findings=self.params.max_findings)

    def diagnose(self, findings: Sequence[Finding], *, seriesuid: str) -> dict[str, Any]:
        return diagnose(findings, nodule_threshold=self.params.nodule_threshold, seriesuid=seriesuid,
                        max_findings=self.params.max_findings)


def detect(package: Any, volume: Volume) -> list[Finding]:
    """The findings of ``volume`` with a loaded lung-CT package (see :meth:`Detector.detect`)."""
    return Detector.from_package(package).detect(volume)


def reported(findings: Sequence[Finding], *, threshold: float, max_findings: int | None = None) -> list[Finding]:
    """The findings of one scan at the operating point: ``nodule_prob >= threshold``, at most
    ``max_findings`` of them (the most probable; ``None``: all), most probable first."""
    keep = sorted((f for f in findings if f.nodule_prob >= threshold), key=lambda f: -f.nodule_prob)
    return keep if max_findings is None else keep[:max_findings]


def top_findings(findings: dict[str, list[Finding]], max_findings: int | None) -> dict[str, list[Finding]]:
    """Each scan's ``max_findings`` most probable findings (all when ``None``). Their FROC at a
    threshold is the operating point with the budget: the budget takes the most probable
    ones whatever the threshold, so capping first and thresholding after is the same."""
    return {u: reported(fs, threshold=-np.inf, max_findings=max_findings) for u, fs in findings.items()}


def diagnose(findings: Sequence[Finding], *, nodule_threshold: float, seriesuid: str,
             max_findings: int | None = None) -> dict[str, Any]:
    """The patient-level call of one scan (:data:`DIAGNOSIS_RULE`)."""
    nods = reported(findings, threshold=nodule_threshold, max_findings=max_findings)
    mal = [f.malignancy_prob for f in nods if f.malignancy_prob is not None]
    mal_p = max(mal) if mal else None
    if not nods:
        call = "no nodule found"
    elif mal_p is None:
        call = "nodule(s) found; malignancy not scored"
    else:
        call = "suspicious nodule (likely malignant)" if mal_p >= 0.5 else "nodule(s), likely benign"
    return {"seriesuid": seriesuid, "nodules": len(nods),
            "max_nodule_prob": max((f.nodule_prob for f in findings), default=0.0),
            "largest_nodule_mm": max((f.diameter_mm for f in nods), default=None),
            "malignancy_prob": mal_p, "diagnosis": call}


def write_diagnosis_csv(rows: Iterable[dict[str, Any]], path: Path) -> Path:
    """``diagnosis.csv``: one row per scan (:data:`DIAGNOSIS_COLUMNS`), written atomically."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(DIAGNOSIS_COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in DIAGNOSIS_COLUMNS})
    return atomic_write_text(path, buf.getvalue())
