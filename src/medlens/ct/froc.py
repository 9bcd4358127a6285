"""LUNA16-style detection evaluation: FROC curve, CPM, operating point, per-nodule table.

The rules are those of the LUNA16 challenge's evaluation script
(``noduleCADEvaluationLUNA16.py``, Setio et al. 2017), so numbers compare with the
literature:

* a detection *hits* a reference nodule when its centre lies strictly within the nodule's
  radius (``diameter_mm / 2``) of the nodule's centre, Euclidean distance in mm;
* several detections of one nodule count once, with the best probability among them; the
  extra ones are neither true nor false positives;
* a detection that hits only an *irrelevant* nodule (``excluded``: LIDC marks by fewer than
  3 readers or under 3 mm) is ignored — neither a true nor a false positive. An excluded
  nodule without a usable diameter gets LUNA16's 10 mm;
* every other detection is a false positive; FP per scan divides by *all* evaluated scans,
  those without any nodule included;
* the FROC curve is sensitivity against FP per scan as the probability threshold falls;
  sensitivities at 1/8, 1/4, 1/2, 1, 2, 4 and 8 FP per scan are read from it by linear
  interpolation (LUNA16's ``np.interp``: beyond the last point the curve stays flat), and
  the CPM (competition performance metric) is their mean.

Nodules and findings are duck-typed: anything with ``seriesuid``, ``center_xyz`` (LPS mm)
and ``diameter_mm`` is a nodule (:class:`medlens.ct.annotations.Nodule`); findings also
carry ``nodule_prob`` (:class:`medlens.ct.findings.Finding`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from medlens.errors import BadInputError

#: FP-per-scan rates of the CPM (LUNA16).
FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Diameter LUNA16 gives an excluded nodule whose diameter is unknown (≤ 0 or missing), mm.
DEFAULT_EXCLUDED_DIAMETER_MM = 10.0

#: Status of one finding against the reference.
TP, FP, IGNORED = "tp", "fp", "ignored"


class NoduleLike(Protocol):
    seriesuid: str
    center_xyz: tuple[float, float, float]
    diameter_mm: float


class FindingLike(Protocol):
    seriesuid: str
    center_xyz: tuple[float, float, float]
    nodule_prob: float


@dataclass(frozen=True)
class ScanMatch:
    """How the findings of one scan match its reference nodules.

    Attributes:
        seriesuid: the scan.
        status: per finding (input order): ``"tp"``, ``"fp"`` or ``"ignored"``.
        finding_nodule: per finding, the index of the relevant nodule it hits (the closest
            relative to the radius), else ``None``.
        nodule_best_prob: per relevant nodule, the best probability among the findings that
            hit it; ``None`` when none did (missed).
        nodule_hits: per relevant nodule, how many findings hit it.
        fp_probs: probabilities of the false positives.
    """

    seriesuid: str
    status: tuple[str, ...]
    finding_nodule: tuple[int | None, ...]
    nodule_best_prob: tuple[float | None, ...]
    nodule_hits: tuple[int, ...]
    fp_probs: tuple[float, ...]

    @property
    def n_tp_nodules(self) -> int:
        """Relevant nodules hit by at least one finding."""
        return sum(p is not None for p in self.nodule_best_prob)

    @property
    def n_fp(self) -> int:
        return len(self.fp_probs)

    @property
    def n_ignored(self) -> int:
        return sum(s == IGNORED for s in self.status)


def _radius(n: NoduleLike, *, excluded: bool) -> float:
    d = float(n.diameter_mm) if n.diameter_mm is not None else float("nan")
    if not math.isfinite(d) or d <= 0:
        if excluded:
            return DEFAULT_EXCLUDED_DIAMETER_MM / 2
        raise BadInputError(
            f"reference nodule of scan {n.seriesuid} at {tuple(n.center_xyz)} has no usable diameter "
            f"({n.diameter_mm!r}); give its diameter in mm or list it among the excluded nodules")
    return d / 2


def _centres(items: Sequence[Any]) -> np.ndarray:
    return np.asarray([tuple(map(float, x.center_xyz)) for x in items], np.float64).reshape(-1, 3)


def match_scan(findings: Sequence[FindingLike], nodules: Sequence[NoduleLike],
               excluded: Sequence[NoduleLike] = (), *, seriesuid: str = "") -> ScanMatch:
    """Match one scan's findings to its relevant ``nodules`` and irrelevant ``excluded`` ones
    (the rules in the module docstring)."""
    f_xyz, n_xyz, x_xyz = _centres(findings), _centres(nodules), _centres(excluded)
    probs = np.asarray([float(f.nodule_prob) for f in findings], np.float64)
    n_r = np.asarray([_radius(n, excluded=False) for n in nodules], np.float64)
    x_r = np.asarray([_radius(n, excluded=True) for n in excluded], np.float64)
    # relative distance (distance / radius) of every finding to every nodule: hit when < 1
    rel = np.linalg.norm(f_xyz[:, None] - n_xyz[None], axis=-1) / n_r[None] if len(n_r) else (
        np.zeros((len(findings), 0)))
    rel_x = np.linalg.norm(f_xyz[:, None] - x_xyz[None], axis=-1) / x_r[None] if len(x_r) else (
        np.zeros((len(findings), 0)))
    hit, hit_x = rel < 1.0, (rel_x < 1.0).any(axis=1)
    status, nod = [], []
    for k in range(len(findings)):
        if hit[k].any():
            status.append(TP)
            nod.append(int(np.argmin(np.where(hit[k], rel[k], np.inf))))
        else:
            status.append(IGNORED if hit_x[k] else FP)
            nod.append(None)
    best = tuple(float(probs[hit[:, j]].max()) if hit[:, j].any() else None for j in range(len(nodules)))
    fp = tuple(float(p) for p, s in zip(probs, status) if s == FP)
    uid = seriesuid or next((str(x.seriesuid) for x in (*findings, *nodules)), "")
    return ScanMatch(uid, tuple(status), tuple(nod), best, tuple(int(v) for v in hit.sum(0)), fp)


@dataclass
class FrocResult:
    """The FROC evaluation of a set of scans (:func:`evaluate_froc`).

    ``thresholds``/``sensitivity``/``fp_per_scan`` are the curve's points as the threshold
    falls (first point: threshold +inf, nothing detected); both coordinates never decrease.
    """

    thresholds: np.ndarray
    sensitivity: np.ndarray
    fp_per_scan: np.ndarray
    sensitivity_at: dict[float, float]
    cpm: float
    n_scans: int
    n_nodules: int
    matches: dict[str, ScanMatch]
    nodules: list[dict[str, Any]]
    excluded: dict[str, list[Any]] = field(default_factory=dict)
    cpm_ci: tuple[float, float] | None = None
    ci_level: float | None = None

    @property
    def n_detected(self) -> int:
        """Relevant nodules hit at the lowest threshold (any probability)."""
        return sum(m.n_tp_nodules for m in self.matches.values())

    @property
    def n_false_positives(self) -> int:
        """False positives at the lowest threshold (every finding given)."""
        return sum(m.n_fp for m in self.matches.values())

    def at_threshold(self, threshold: float) -> dict[str, Any]:
        """Sensitivity and FP per scan when only findings with ``nodule_prob >= threshold``
        are kept (the pipeline's operating point)."""
        t = float(threshold)
        tp = sum(p is not None and p >= t for m in self.matches.values() for p in m.nodule_best_prob)
        fp = sum(p >= t for m in self.matches.values() for p in m.fp_probs)
        return {"threshold": t, "true_positives": tp, "false_positives": fp,
                "n_nodules": self.n_nodules, "n_scans": self.n_scans,
                "sensitivity": tp / self.n_nodules if self.n_nodules else float("nan"),
                "fp_per_scan": fp / self.n_scans if self.n_scans else float("nan")}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (curve, CPM, sensitivities, per-nodule table)."""
        return {
            "cpm": self.cpm, "cpm_ci": list(self.cpm_ci) if self.cpm_ci else None,
            "ci_level": self.ci_level,
            "sensitivity_at_fp_per_scan": {str(k): v for k, v in self.sensitivity_at.items()},
            "n_scans": self.n_scans, "n_nodules": self.n_nodules, "n_detected": self.n_detected,
            "n_false_positives": self.n_false_positives,
            "n_ignored": sum(m.n_ignored for m in self.matches.values()),
            "curve": {"threshold": [float(t) for t in self.thresholds],
                      "sensitivity": [float(s) for s in self.sensitivity],
                      "fp_per_scan": [float(f) for f in self.fp_per_scan]},
            "nodules": self.nodules,
        }


def froc_curve(scores: np.ndarray, is_tp: np.ndarray, n_nodules: float | np.ndarray, n_scans: int,
               weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FROC points from scored items: each hit nodule (its best probability, ``is_tp``) and
    each false positive. Missed nodules are not items; they only count in ``n_nodules``.

    ``weights`` (B, N) gives B weighted curves at once (the bootstrap); ``n_nodules`` is then
    (B,). Returns ``(thresholds (K,), sensitivity (…, K), fp_per_scan (…, K))`` with a first
    point at threshold +inf.
    """
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if len(s) else np.zeros(0, int)  # end of each tie
    w = np.ones((1, len(s))) if weights is None else np.asarray(weights, np.float64)[:, order]
    tp = np.asarray(is_tp, bool)[order]
    cum_tp = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w * tp, axis=1)[:, last]], axis=1)
    cum_fp = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w * ~tp, axis=1)[:, last]], axis=1)
    nn = np.asarray(n_nodules, np.float64).reshape(-1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(nn > 0, cum_tp / np.where(nn > 0, nn, 1), np.nan)
    fps = cum_fp / n_scans
    thr = np.r_[np.inf, s[last]]
    if weights is None:
        return thr, sens[0], fps[0]
    return thr, sens, fps


def sensitivity_at(fp_per_scan: np.ndarray, sensitivity: np.ndarray,
                   rates: Sequence[float] = FP_RATES) -> np.ndarray:
    """Sensitivity at each FP-per-scan rate by linear interpolation along one FROC curve
    (flat beyond its last point, as LUNA16). Where several points share an FP rate, the
    highest sensitivity counts."""
    fps, sens = np.asarray(fp_per_scan, np.float64), np.asarray(sensitivity, np.float64)
    if not np.isfinite(sens).all():
        return np.full(len(rates), np.nan)
    keep = np.r_[fps[1:] != fps[:-1], True]  # last point of each run of equal FP rates
    return np.interp(np.asarray(rates, np.float64), fps[keep], sens[keep])


def evaluate_froc(findings: Iterable[FindingLike] | Mapping[str, Sequence[FindingLike]],
                  reference: Mapping[str, Sequence[NoduleLike]], *,
                  seriesuids: Iterable[str] | None = None,
                  excluded: Mapping[str, Sequence[NoduleLike]] | None = None,
                  rates: Sequence[float] = FP_RATES, n_boot: int = 0, seed: int = 0,
                  level: float = 0.95) -> FrocResult:
    """FROC, CPM and per-nodule table of ``findings`` against ``reference`` nodules.

    Args:
        findings: every detection (all probabilities, not only those above the operating
            threshold: the curve sweeps the threshold), flat or grouped by series uid.
        reference: relevant nodules per series uid (LUNA16: ≥ 3 readers, ≥ 3 mm).
        seriesuids: every evaluated scan (FP per scan divides by their number); default:
            the scans named in ``reference`` and ``findings``. A scan without nodules
            belongs here (or in ``reference`` with an empty list).
        excluded: irrelevant nodules per series uid (detections on them are ignored).
        n_boot: bootstrap resamples of scans for a percentile CI of the CPM (0: none).
    """
    excluded = {k: list(v) for k, v in (excluded or {}).items()}
    by_scan: dict[str, list[FindingLike]] = {}
    if isinstance(findings, Mapping):
        for uid, fs in findings.items():
            by_scan.setdefault(str(uid), []).extend(fs)
    else:
        for f in findings:
            by_scan.setdefault(str(f.seriesuid), []).append(f)
    if seriesuids is None:
        uids = list(dict.fromkeys([*map(str, reference), *by_scan, *map(str, excluded)]))
    else:
        uids = list(dict.fromkeys(map(str, seriesuids)))
        unknown = sorted(set(by_scan) - set(uids)) + sorted(set(map(str, reference)) - set(uids))
        if unknown:
            raise BadInputError(
                f"findings or reference nodules name scans that are not among the evaluated "
                f"ones: {', '.join(unknown[:5])}; evaluate those scans too or drop their rows")
    if not uids:
        raise BadInputError("FROC evaluation needs at least one scan; none was given")
    matches = {u: match_scan(by_scan.get(u, []), list(reference.get(u, [])), excluded.get(u, []),
                             seriesuid=u) for u in uids}
    n_nodules = sum(len(m.nodule_best_prob) for m in matches.values())
    items = [(k, p, True) for k, m in enumerate(matches.values()) for p in m.nodule_best_prob
             if p is not None]
    items += [(k, p, False) for k, m in enumerate(matches.values()) for p in m.fp_probs]
    scan_of = [k for k, _, _ in items]
    scores = [p for _, p, _ in items]
    is_tp = [t for _, _, t in items]
    thr, sens, fps = froc_curve(np.asarray(scores), np.asarray(is_tp, bool), n_nodules, len(uids))
    at = sensitivity_at(fps, sens, rates)
    cpm = float(np.mean(at))
    rows = []
    for u, m in matches.items():
        for j, n in enumerate(reference.get(u, [])):
            best = m.nodule_best_prob[j]
            rows.append({"seriesuid": u, "nodule": j + 1,
                         **{k: float(v) for k, v in zip(("coordX", "coordY", "coordZ"), n.center_xyz)},
                         "diameter_mm": float(n.diameter_mm), "detected": best is not None,
                         "best_prob": best, "hits": m.nodule_hits[j]})
    result = FrocResult(thr, sens, fps, {float(r): float(v) for r, v in zip(rates, at)}, cpm,
                        len(uids), n_nodules, matches, rows, excluded)
    if n_boot > 0 and n_nodules > 0:
        result.cpm_ci = _bootstrap_cpm(matches, np.asarray(scores), np.asarray(is_tp, bool),
                                       np.asarray(scan_of, int), rates, n_boot, seed, level)
        result.ci_level = level
    return result


def _bootstrap_cpm(matches: Mapping[str, ScanMatch], scores: np.ndarray, is_tp: np.ndarray,
                   scan_of: np.ndarray, rates: Sequence[float], n_boot: int, seed: int,
                   level: float) -> tuple[float, float] | None:
    """Percentile CI of the CPM over scans resampled with replacement (multiplicity weights:
    every nodule and false positive of a drawn scan enters as often as the scan)."""
    rng = np.random.default_rng(seed)
    n_scans = len(matches)
    per_scan_nodules = np.asarray([len(m.nodule_best_prob) for m in matches.values()], np.float64)
    draws = rng.integers(0, n_scans, size=(n_boot, n_scans))
    counts = np.stack([np.bincount(d, minlength=n_scans) for d in draws]).astype(np.float64)
    _, sens, fps = froc_curve(scores, is_tp, counts @ per_scan_nodules, n_scans, counts[:, scan_of])
    cpms = np.asarray([np.mean(sensitivity_at(f, s, rates)) for f, s in zip(fps, sens)])
    cpms = cpms[np.isfinite(cpms)]
    if cpms.size < max(10, n_boot // 2):
        return None
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(cpms, [alpha, 1 - alpha])
    return float(lo), float(hi)


def choose_threshold(froc: FrocResult, target_fp_per_scan: float) -> float:
    """The lowest nodule-probability threshold whose FP per scan stays ≤ the target on the
    validation scans (0.5 when they give nothing to choose from)."""
    thr, fps = np.asarray(froc.thresholds, float), np.asarray(froc.fp_per_scan, float)
    ok = np.isfinite(thr) & (fps <= target_fp_per_scan)
    if froc.n_nodules == 0 or not ok.any():
        return 0.5
    return float(np.clip(thr[ok].min(), 0.01, 0.99))
