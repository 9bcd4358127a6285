"""``medlens ct calibrate``: refit a lung-CT package's operating threshold on local scans.

Why: the threshold chosen on the training data's validation scans does not transfer to
another scanner or population — a package trained on phantoms let 14–17 false positives per
scan through on the real LIDC-IDRI-0001 scan, against 2 per scan on phantoms. A hospital with
a few annotated scans can refit the threshold (at most ``target_fp_per_scan`` false
positives per scan, the training rule) without retraining. The local scans are split: the
threshold is chosen on the calibration scans and judged on the others, before and after,
so the figures are not measured on the scans that chose them. The package's reading budget
(at most N findings per scan, :func:`medlens.ct.detect.reported`) is in force throughout;
``max_findings`` changes it in the new package. The new package is a copy
with the new threshold and ``calibrated_from`` provenance; the original is not touched.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from medlens.ct.detect import Detector, top_findings
from medlens.ct.evaluation import detect_referenced, froc_of, operating_point
from medlens.ct.froc import choose_threshold
from medlens.ct.packaging import save_recalibrated
from medlens.errors import BadInputError, ConfigError
from medlens.io.atomic import atomic_write_json

log = logging.getLogger(__name__)


def split_scans_for_calibration(uids: list[str], n_calibration: int | None, seed: int) -> tuple[list[str], list[str]]:
    """(calibration, evaluation) series uids: a seeded permutation; ``n_calibration`` scans
    (default half, at least one) calibrate, the rest (at least one) evaluate.

    Raises:
        BadInputError: fewer than two scans.
        ConfigError: ``n_calibration`` leaves no scan on one side.
    """
    uids = sorted(uids)
    if len(uids) < 2:
        raise BadInputError(f"calibration needs at least 2 annotated scans (one to calibrate on, one to judge the "
                            f"result), found {len(uids)}")
    n = max(len(uids) // 2, 1) if n_calibration is None else int(n_calibration)
    if not 1 <= n < len(uids):
        raise ConfigError(f"--calibration-scans must be between 1 and {len(uids) - 1} for {len(uids)} scans, got {n}")
    order = np.random.default_rng(seed).permutation(len(uids))
    cal = sorted(uids[k] for k in order[:n])
    return cal, [u for u in uids if u not in set(cal)]


def calibrate_ct(pkg: Any, data: str | Path, out_dir: str | Path, *, calibration_scans: int | None = None,
                 target_fp_per_scan: float | None = None, max_findings: int | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """Refit the operating threshold of the lung-CT package ``pkg`` on part of the annotated
    local scans ``data``; write ``out_dir/model`` (the new package) and ``metrics.json``.

    Returns the metrics: the split, old and new threshold, and the operating point of both on
    the evaluation scans (sensitivity, false positives per scan) with the CPM there.
    ``max_findings``: a new reading budget per scan (default: the package's).
    """
    det = Detector.from_package(pkg)
    rule = pkg.metadata.get("config", {}).get("target_fp_per_scan", 2.0)
    target = float(rule if target_fp_per_scan is None else target_fp_per_scan)
    if not target > 0:
        raise ConfigError(f"--target-fp-per-scan must be > 0, got {target}")
    if max_findings is not None and max_findings < 1:
        raise ConfigError(f"--max-findings must be at least 1, got {max_findings}")
    out_dir = Path(out_dir)
    findings, reference, excluded, problems, _ = detect_referenced(det, data)
    cal, ev = split_scans_for_calibration(list(findings), calibration_scans, seed)

    old_budget = det.params.max_findings
    budget = old_budget if max_findings is None else int(max_findings)

    def parts(uids: list[str]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        return ({u: findings[u] for u in uids}, {u: reference[u] for u in uids},
                {u: excluded.get(u, []) for u in uids})

    def point(uids: list[str], thr: float, k: int | None) -> dict[str, Any]:
        return operating_point(*parts(uids), threshold=thr, max_findings=k)

    old = float(det.params.nodule_threshold)
    cal_f, cal_r, cal_x = parts(cal)
    if not any(cal_r.values()):
        raise BadInputError(f"{data}: the calibration scans hold no reference nodule; add annotated scans or give "
                            "--calibration-scans so that some with nodules calibrate")
    new = choose_threshold(froc_of(top_findings(cal_f, budget), cal_r, cal_x), target)
    froc_ev = froc_of(*parts(ev))
    provenance = {"package": str(pkg.path), "local_data": str(data), "calibration_scans": cal,
                  "evaluation_scans": ev, "target_fp_per_scan": target, "threshold": {"before": old, "after": new},
                  "max_findings_per_scan": {"before": old_budget, "after": budget}, "seed": seed}
    metrics = {"calibrated_from": provenance, "problems": problems,
               "calibration": {"before": point(cal, old, old_budget), "after": point(cal, new, budget)},
               "evaluation": {"before": point(ev, old, old_budget), "after": point(ev, new, budget),
                              "cpm": froc_ev.cpm if froc_ev.n_nodules else None}}
    ev_before, ev_after = metrics["evaluation"]["before"], metrics["evaluation"]["after"]
    budget_text = "" if budget == old_budget else f"; reading budget {old_budget} → {budget} findings per scan"
    note = (f"\n## Local recalibration\n\nOperating threshold {old:.3f} → {new:.3f} (at most {target:g} false "
            f"positives per scan on {len(cal)} local calibration scans of `{data}`{budget_text}); judged on {len(ev)} other local "
            f"scans: sensitivity {ev_before['sensitivity']:.3f} → {ev_after['sensitivity']:.3f}, false positives per "
            f"scan {ev_before['fp_per_scan']:.2f} → {ev_after['fp_per_scan']:.2f}.\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_recalibrated(pkg, out_dir / "model", new, provenance, note, max_findings=budget)
    atomic_write_json(out_dir / "metrics.json", metrics)
    log.info("threshold %.3f → %.3f on %d calibration scans; evaluation scans: %s → %s", old, new, len(cal),
             metrics["evaluation"]["before"], metrics["evaluation"]["after"])
    return metrics
