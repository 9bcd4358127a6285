"""The statistics of ``medlens compare`` on scored cases: per-model rates, AUC with paired
patient-bootstrap intervals, ECE, DeLong and McNemar tests against the selected model, and
the selection rule. Works on :class:`~medlens.evaluate.compare_cases.Scored` vectors alone."""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.errors import BadInputError, ConfigError, JobFailedError
from medlens.evaluate.bootstrap import cluster_codes, weighted_auc
from medlens.evaluate.compare_cases import Scored

RULES = ("fewest-fn", "highest-auc", "highest-balanced-accuracy")


# ------------------------------------------------------------------ the comparison
def _rates(y: np.ndarray, d: np.ndarray) -> dict[str, Any]:
    from medlens.evaluate.operating_point import binary_rates

    r = binary_rates(y, d)
    sens, spec = r["sensitivity"], r["specificity"]
    r["balanced_accuracy"] = None if sens is None or spec is None else (sens + spec) / 2
    return r


def _ece(y: np.ndarray, s: np.ndarray) -> float:
    from medlens.evaluate.calibration import expected_calibration_error

    return expected_calibration_error(y.astype(np.int64), np.stack([1 - s, s], axis=1))


def paired_bootstrap(y: np.ndarray, scores: np.ndarray, groups: list[str | None] | None, *, n_bootstrap: int,
                     seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """AUC of every model (rows of ``scores``) on the SAME resamples: (k, B) and how
    ((k, 0) when fewer than 2 units hold disease or negative cases: no interval then).

    Patients are resampled when ``groups`` are known (all images of a drawn patient enter
    together), stratified by whether a unit has disease cases, so no resample lacks a side.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    unit, n_units, kind, _ = cluster_codes(groups, n)
    diseased = np.zeros(n_units, dtype=bool)
    np.logical_or.at(diseased, unit, y)
    has_neg = np.zeros(n_units, dtype=bool)
    np.logical_or.at(has_neg, unit, ~y)
    strata = [g for g in (np.flatnonzero(diseased), np.flatnonzero(~diseased)) if g.size]
    how = {"unit": kind, "n_units": int(n_units), "n_bootstrap": int(n_bootstrap), "seed": int(seed),
           "method": f"paired percentile bootstrap: the same {n_bootstrap} resamples of the {n_units} "
                     f"{kind}s for every model, stratified by whether a {kind} has disease cases"}
    if min(int(diseased.sum()), int(has_neg.sum())) < 2:  # one unit on a side: its resamples are all alike
        how["method"] = (f"none: only {int(diseased.sum())} {kind}(s) with disease cases and {int(has_neg.sum())} "
                         f"with negative cases; a {kind} bootstrap needs at least 2 on each side")
        return np.full((len(scores), 0), np.nan), how
    out = np.empty((len(scores), n_bootstrap))
    chunk = max(1, 2_000_000 // max(n, n_units))
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        idx = np.concatenate([g[rng.integers(0, len(g), size=(b, len(g)))] for g in strata], axis=1)
        flat = (np.arange(b)[:, None] * n_units + idx).ravel()
        w = np.bincount(flat, minlength=b * n_units).reshape(b, n_units).astype(np.float64)[:, unit]
        for m, s in enumerate(scores):
            out[m, start:start + b] = weighted_auc(s, y, w)
    return out, how


def _interval(values: np.ndarray, level: float) -> dict[str, float] | None:
    v = values[np.isfinite(values)]
    if v.size < 10:
        return None
    a = (1 - level) / 2
    lo, hi = np.quantile(v, [a, 1 - a])
    return {"low": float(lo), "high": float(hi)}


def select(rows: list[dict[str, Any]], rule: str, min_specificity: float) -> tuple[dict[str, Any], str]:
    """The selected row and the sentence that says why.

    ``fewest-fn``: fewest false negatives among models with specificity ≥ ``min_specificity``
    (ties: higher AUC, then higher specificity); ``highest-auc`` (ties: fewer FN);
    ``highest-balanced-accuracy`` (ties: fewer FN).

    Raises:
        JobFailedError: ``fewest-fn`` and no model reaches ``min_specificity`` (names each one's).
    """
    from medlens.options import look_up_option

    rule = look_up_option(rule, RULES, what="rule")

    def auc(r: dict[str, Any]) -> float:
        return -1.0 if r["roc_auc"] is None else r["roc_auc"]

    if rule == "fewest-fn":
        ok = [r for r in rows if r["specificity"] is not None and r["specificity"] >= min_specificity]
        if not ok:
            specs = ", ".join(f"{r['name']} {_num(r['specificity'])}" for r in rows)
            raise JobFailedError(f"no model reaches specificity >= {min_specificity:g} at its operating point "
                                 f"({specs}); none selected: lower --min-specificity or use another --rule")
        best = min(ok, key=lambda r: (r["fn"], -auc(r), -(r["specificity"] or 0.0), r["name"]))
        why = (f"fewest false negatives ({best['fn']}) among the {len(ok)} of {len(rows)} model(s) with "
               f"specificity >= {min_specificity:g} at their own operating point; ties broken by higher AUC")
    elif rule == "highest-auc":
        best = min(rows, key=lambda r: (-auc(r), r["fn"], r["name"]))
        why = f"highest ROC-AUC ({_num(best['roc_auc'])}); ties broken by fewer false negatives"
    else:
        best = min(rows, key=lambda r: (-(r["balanced_accuracy"] or -1.0), r["fn"], r["name"]))
        why = (f"highest balanced accuracy ({_num(best['balanced_accuracy'])}) at each model's operating point; "
               "ties broken by fewer false negatives")
    return best, why


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def compare_scored(scored: dict[str, Scored], *, rule: str = "fewest-fn", min_specificity: float = 0.5,
                   n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """The leaderboard, the selected model and the paired tests, from each model's scores.

    Cases are paired by id: only ids every model scored are compared (a warning names how
    many were left out). ``scored`` maps leaderboard name → :class:`Scored`.
    """
    from medlens.evaluate.metrics import to_jsonable
    from medlens.evaluate.stats_tests import delong, mcnemar

    if not 0.0 <= float(min_specificity) <= 1.0:
        raise ConfigError(f"--min-specificity must be in [0, 1], got {min_specificity}")
    if not scored:
        raise BadInputError("no model to compare")
    units = {s.unit for s in scored.values()}
    if len(units) > 1:
        raise BadInputError(f"models score different units ({', '.join(sorted(units))}): "
                            "image-level and patient-level models cannot be paired case by case")
    warnings: list[str] = []
    common = set.intersection(*(set(s.ids) for s in scored.values()))
    first = next(iter(scored.values()))
    ids = [i for i in first.ids if i in common]
    if not ids:
        raise BadInputError("the models share no scored case (did they read different data?)")
    for name, s in scored.items():
        if len(s.ids) > len(ids):
            warnings.append(f"{name}: {len(s.ids) - len(ids)} case(s) not scored by every model were left out")
    names = list(scored)
    pos = {name: {i: j for j, i in enumerate(s.ids)} for name, s in scored.items()}
    take = {name: np.array([pos[name][i] for i in ids]) for name in names}
    if any(s.probs is not None for s in scored.values()):  # argmax packages: no disease side
        from medlens.evaluate.compare_argmax import compare_argmax

        return compare_argmax(scored, ids, take, rule=rule, min_specificity=min_specificity, warnings=warnings,
                              level=level)
    y = first.y_true[take[names[0]]].astype(bool)
    for name in names[1:]:
        if not np.array_equal(scored[name].y_true[take[name]].astype(bool), y):
            raise BadInputError(f"{name} and {names[0]} disagree on the truth of the same cases "
                                "(different class mappings?)")
    S = np.stack([scored[n].scores[take[n]].astype(np.float64) for n in names])
    D = np.stack([scored[n].decisions[take[n]].astype(bool) for n in names])
    groups = None if first.groups is None else [first.groups[j] for j in take[names[0]]]
    both = bool(y.any() and not y.all())
    if not both:
        warnings.append("the compared cases hold only one class: AUC, its intervals and DeLong's test are undefined")
    # patient-level cases are patients themselves: each its own resampling unit, named so
    units_of = groups if groups is not None or first.unit != "patient" else ids
    boot, how = (paired_bootstrap(y, S, units_of, n_bootstrap=n_bootstrap, seed=seed) if both and n_bootstrap > 0
                 else (np.full((len(names), 0), np.nan), None))
    rows = []
    for m, name in enumerate(names):
        r = _rates(y, D[m])
        auc = float(weighted_auc(S[m], y, np.ones((1, len(y))))[0]) if both else None
        rows.append({"name": name, "accuracy": float(np.mean(D[m] == y)), "roc_auc": auc, "roc_auc_ci": _interval(boot[m], level) if boot.size else None,
                     "sensitivity": r["sensitivity"], "specificity": r["specificity"], "fn": r["fn"], "fp": r["fp"],
                     "tp": r["tp"], "tn": r["tn"], "balanced_accuracy": r["balanced_accuracy"], "ppv": r["ppv"],
                     "npv": r["npv"], "ece": _ece(y, S[m]), "threshold": scored[name].threshold})
    best, why = select(rows, rule, float(min_specificity))
    b = names.index(best["name"])
    for m, row in enumerate(rows):
        row["selected"] = m == b
        if m == b:
            row["vs_selected"] = None
            continue
        test = {"mcnemar": mcnemar(y, D[m], D[b])}
        if both:
            test["delong"] = delong(y, S[m], S[b])
            if boot.size:
                test["auc_difference_ci"] = _interval(boot[m] - boot[b], level)
        row["vs_selected"] = test
    if groups is not None and any(g is not None for g in groups):
        n_pat = len({g for g in groups if g is not None})
        warnings.append(f"cases are images of {n_pat} patients: DeLong's and McNemar's tests treat images as "
                        "independent and are optimistic; the patient-bootstrap intervals account for patients")
    return to_jsonable({
        "rule": rule, "min_specificity": float(min_specificity), "selected": best["name"], "selected_because": why,
        "n_cases": len(ids), "n_positive": int(y.sum()), "n_negative": int((~y).sum()), "unit": first.unit,
        "n_patients": None if groups is None else len({g for g in groups if g is not None}),
        "ci_level": level, "bootstrap": how, "leaderboard": rows, "warnings": warnings,
        "curves": {n: _roc(y, S[m]) for m, n in enumerate(names)} if both else {},
        "definitions": {
            "operating_point": "each model's own packaged threshold (chosen on its validation data), not re-tuned",
            "fn/fp": "missed disease cases / healthy cases called diseased, at that operating point",
            "ece": "top-label expected calibration error (15 bins) of the disease-vs-negative probability",
            "delong": "DeLong (1988) test of equal AUC vs the selected model, fast algorithm of Sun & Xu (2014)",
            "mcnemar": "McNemar's test of equal accuracy vs the selected model on the discordant cases: exact "
                       "binomial and mid-p (Fagerland et al. 2013)",
        },
    })


def _roc(y: np.ndarray, s: np.ndarray, max_points: int = 300) -> dict[str, list[float]]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    keep = np.unique(np.round(np.linspace(0, len(fpr) - 1, min(len(fpr), max_points))).astype(int))
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}
