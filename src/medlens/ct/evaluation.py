"""Lung-CT inference on files: ``medlens ct detect`` (:func:`detect_files`) and ``medlens ct
evaluate`` (:func:`evaluate_package`: FROC/CPM against ``annotations.csv`` or the LIDC XML
reads), plus the FROC and report helpers training shares."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medlens.ct.dataset import CtData, load_ct_data
from medlens.ct.detect import (
    DIAGNOSIS_RULE,
    Detector,
    DetectParams,
    reported,
    scan_stem,
    seriesuid_of,
    top_findings,
    write_diagnosis_csv,
)
from medlens.ct.findings import Finding
from medlens.errors import BadInputError
from medlens.io.atomic import atomic_write_json
from medlens.io.volumes import Volume

log = logging.getLogger(__name__)


def froc_of(findings: dict[str, list[Finding]], reference: dict[str, list[Any]], excluded: dict[str, list[Any]]
            ) -> Any:
    """The LUNA16 FROC of ``findings`` per scan against ``reference`` (``excluded``: irrelevant marks)."""
    from medlens.ct.froc import evaluate_froc

    return evaluate_froc(findings, reference, seriesuids=list(findings),
                         excluded={u: excluded.get(u, []) for u in findings})


def operating_point(findings: dict[str, list[Finding]], reference: dict[str, list[Any]],
                    excluded: dict[str, list[Any]], *, threshold: float, max_findings: int | None) -> dict[str, Any]:
    """Sensitivity and false positives per scan of the findings at the operating point: the
    threshold and the per-scan budget (:func:`medlens.ct.detect.reported`)."""
    op = froc_of(top_findings(findings, max_findings), reference, excluded).at_threshold(threshold)
    return {**op, "max_findings_per_scan": max_findings}


def write_report(out_dir: Path, scans: list[tuple[Volume, list[Finding], list[Any] | None]], froc: Any,
                 params: DetectParams, card: str, *, title: str, max_scans: int = 24) -> None:
    """The HTML report of the findings at the operating point (at most ``max_scans`` scans drawn)."""
    from medlens.ct.report import write_ct_report

    shown = [(v, reported(fs, threshold=params.nodule_threshold, max_findings=params.max_findings), ref)
             for v, fs, ref in scans[:max_scans]]
    write_ct_report(out_dir, shown, froc, card, title=title)


def expand_scan_inputs(inputs: Sequence[str | Path]) -> list[Any]:
    """Scan references for files and folders (a folder: every scan under it)."""
    from medlens.ct.scan import ScanRef, find_scans

    refs: list[Any] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = list(find_scans(p))
            if not found:
                raise BadInputError(f"{p}: no CT scan found in this folder (expected .mhd/.mha/.nii[.gz] files or "
                                    "a DICOM series)")
            refs += found
        elif p.is_file():
            refs.append(ScanRef(seriesuid=scan_stem(p), path=p))
        else:
            raise BadInputError(f"{p}: no such file or folder")
    return refs


def detect_files(pkg: Any, inputs: Sequence[str | Path], out: str | Path | None, *,
                 report: bool = True, max_report_scans: int = 24) -> list[dict[str, Any]]:
    """``medlens ct detect``: findings of every scan in ``inputs``; one unreadable scan is
    reported (``error`` row) and the others go on. Writes ``nodules.csv``, ``diagnosis.csv``
    and (``report``) ``report.html`` into ``out`` when given. Returns one row per scan."""
    from medlens.ct.outputs import write_nodules_csv
    from medlens.ct.scan import read_ct

    det = Detector.from_package(pkg)
    rows: list[dict[str, Any]] = []
    all_findings: list[Finding] = []
    shown: list[tuple[Volume, list[Finding], None]] = []
    for ref in expand_scan_inputs(inputs):
        t = time.perf_counter()
        try:
            vol = read_ct(ref.path)
        except BadInputError as e:
            log.warning("skipped: %s", e)
            rows.append({"file": str(ref.path), "seriesuid": ref.seriesuid, "error": str(e)})
            continue
        uid = seriesuid_of(vol) if vol.meta.get("seriesuid") else ref.seriesuid
        findings = det.detect(vol, seriesuid=uid)
        all_findings += findings
        rows.append({"file": str(ref.path), **det.diagnose(findings, seriesuid=uid), "findings": findings,
                     "seconds": time.perf_counter() - t})
        if report and out is not None and len(shown) < max_report_scans:
            shown.append((vol, det.reported(findings), None))
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_nodules_csv(all_findings, out / "nodules.csv")
        write_diagnosis_csv([r for r in rows if "error" not in r], out / "diagnosis.csv")
        if report and shown:
            from medlens.ct.report import write_ct_report

            card_path = pkg.path / "model_card.md"
            write_ct_report(out, shown, None, card_path.read_text(encoding="utf-8") if card_path.is_file() else None,
                            title="Lung-CT nodules")
    return rows


def _reference_of(ref: Any, vol: Volume, ct: CtData) -> tuple[list[Any] | None, list[Any]]:
    """(reference nodules, irrelevant ones) of a scan: its rows of ``annotations.csv`` (and
    ``annotations_excluded.csv``), else the LIDC XML read in its folder (LUNA16's rule: ≥ 3
    readers, ≥ 3 mm; the other marks are irrelevant), else ``(None, [])``."""
    from medlens.ct.annotations import read_lidc_xml, reference_standard

    if ct.has_annotations:
        return list(ct.annotations.get(ref.seriesuid, [])), list(ct.excluded.get(ref.seriesuid, []))
    folder = Path(ref.path) if Path(ref.path).is_dir() else Path(ref.path).parent
    xmls = sorted(folder.glob("*.xml"))
    if not xmls:
        return None, []
    nodules = [n for x in xmls for n in read_lidc_xml(x, vol)]
    keep = reference_standard(nodules)
    return keep, [n for n in nodules if n not in keep]


def detect_referenced(det: Detector, data: str | Path, *, keep_volumes: int = 0
                      ) -> tuple[dict[str, list[Finding]], dict[str, list[Any]], dict[str, list[Any]], list[str],
                                 list[tuple[Volume, list[Finding], list[Any]]]]:
    """Detection on every scan of ``data`` that has a reference (``annotations.csv``, or the LIDC
    XML read beside a DICOM series): (findings, reference, excluded, problems, the first
    ``keep_volumes`` scans with their findings for a report). Unreadable scans and scans
    without a reference are listed in problems and skipped."""
    from medlens.ct.scan import read_ct

    ct = load_ct_data(data, need_annotations=False)
    findings: dict[str, list[Finding]] = {}
    reference: dict[str, list[Any]] = {}
    excluded: dict[str, list[Any]] = {}
    problems: list[str] = []
    shown: list[tuple[Volume, list[Finding], list[Any]]] = []
    for ref in ct.refs:
        try:
            vol = read_ct(ref.path)
            ref_nodules, exc = _reference_of(ref, vol, ct)
        except BadInputError as e:
            problems.append(str(e))
            log.warning("skipped: %s", e)
            continue
        if ref_nodules is None:
            problems.append(f"{ref.path}: no reference for scan {ref.seriesuid} (not in annotations.csv, no LIDC "
                            "XML beside it); left out of the evaluation")
            continue
        reference[ref.seriesuid], excluded[ref.seriesuid] = ref_nodules, exc
        findings[ref.seriesuid] = det.detect(vol, seriesuid=ref.seriesuid)
        if len(shown) < keep_volumes:
            shown.append((vol, findings[ref.seriesuid], ref_nodules))
    if not findings:
        raise BadInputError(f"{data}: none of the {len(ct.refs)} scans could be evaluated "
                            f"({problems[0] if problems else 'no reference'})")
    return findings, reference, excluded, problems, shown


def evaluate_package(pkg: Any, data: str | Path, out_dir: str | Path, *, max_report_scans: int = 24
                     ) -> dict[str, Any]:
    """``medlens ct evaluate``: detection on every scan of a LUNA16-style folder against its
    ``annotations.csv`` (or, without one, each DICOM series against the LIDC XML read in its
    folder): FROC/CPM, the operating point, per-nodule table, per-scan diagnosis,
    ``nodules.csv`` and the report in ``out_dir``. Unreadable scans are listed and skipped."""
    from medlens.ct.outputs import write_nodules_csv

    det = Detector.from_package(pkg)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    findings, reference, excluded, problems, shown = detect_referenced(det, data, keep_volumes=max_report_scans)
    diag = [det.diagnose(fs, seriesuid=uid) for uid, fs in findings.items()]
    froc = froc_of(findings, reference, excluded)
    thr, budget = det.params.nodule_threshold, det.params.max_findings
    metrics = {"data": str(data), "scans": list(findings), "n_scans": len(findings), "problems": problems,
               "nodule_threshold": thr, "max_findings_per_scan": budget, "cpm": froc.cpm,
               "operating_point": operating_point(findings, reference, excluded, threshold=thr, max_findings=budget),
               "froc": froc.to_dict(), "diagnosis": diag, "diagnosis_rule": DIAGNOSIS_RULE,
               "seconds": time.perf_counter() - t0}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "metrics.json", metrics)
    write_nodules_csv([f for fs in findings.values() for f in fs], out_dir / "nodules.csv")
    write_diagnosis_csv(diag, out_dir / "diagnosis.csv")
    card_path = pkg.path / "model_card.md"
    write_report(out_dir, shown, froc, det.params, card_path.read_text(encoding="utf-8") if card_path.is_file() else "",
            title=f"Lung-CT nodules: {Path(data).name}", max_scans=max_report_scans)
    return metrics
