"""``medlens compare`` for packages without a negative class (argmax; e.g. 8 blood-cell types).

Such packages call each image its most probable class; there is no "disease" side, so no
false negatives, sensitivity, specificity or disease ROC curve. Comparing them as "disease
vs class 0" would rank models on a split nobody chose. Here models are ranked by macro
one-vs-rest ROC-AUC (``highest-auc``) or balanced accuracy, ties broken by accuracy, and
McNemar's test compares the correctness of the argmax calls case by case. ``fewest-fn`` is
refused with what to do instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.errors import BadInputError, ConfigError
from medlens.evaluate.compare_cases import Scored

#: What compare.json, the page and the terminal say about a comparison without a negative class.
ARGMAX_COMPARE_NOTE = (
    "no negative class (argmax packages): ranked by macro one-vs-rest ROC-AUC (--rule highest-auc) or "
    "balanced accuracy (--rule highest-balanced-accuracy), ties broken by accuracy; sensitivity, "
    "specificity, FN and FP are undefined (no disease side)"
)


def refuse_fewest_fn(rule: str) -> None:
    """Raise for ``fewest-fn`` on argmax packages: without a negative class nothing is a false negative."""
    if rule == "fewest-fn":
        raise ConfigError("--rule fewest-fn needs a negative class, and these packages have none (argmax: no "
                          "healthy class named), so there are no false negatives to count; use --rule highest-auc "
                          "or --rule highest-balanced-accuracy, or retrain with --negative-class CLASS")


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def _row(name: str, y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    from medlens.evaluate.calibration import expected_calibration_error
    from medlens.evaluate.metrics import roc_auc_medmnist

    pred = p.argmax(axis=1)
    return {"name": name, "accuracy": float(np.mean(pred == y)), "balanced_accuracy": _balanced_accuracy(y, pred),
            "roc_auc": roc_auc_medmnist(y, p)[0], "roc_auc_ci": None, "ece": expected_calibration_error(y, p),
            **dict.fromkeys(("sensitivity", "specificity", "ppv", "npv", "fn", "fp", "tp", "tn", "threshold"))}


def select_argmax(rows: list[dict[str, Any]], rule: str) -> tuple[dict[str, Any], str]:
    """The selected row and why: highest macro AUC or balanced accuracy, ties by accuracy."""
    refuse_fewest_fn(rule)
    key, label = ("roc_auc", "macro one-vs-rest ROC-AUC") if rule == "highest-auc" else \
        ("balanced_accuracy", "balanced accuracy")
    best = min(rows, key=lambda r: (-(r[key] if r[key] is not None else -1.0), -r["accuracy"], r["name"]))
    value = "n/a" if best[key] is None else f"{best[key]:.3f}"
    return best, f"highest {label} ({value}) of the argmax call; ties broken by accuracy. Note: {ARGMAX_COMPARE_NOTE}"


def compare_argmax(scored: dict[str, Scored], ids: list[str], take: dict[str, np.ndarray], *, rule: str,
                   min_specificity: float, warnings: list[str], level: float) -> dict[str, Any]:
    """:func:`~medlens.evaluate.compare_stats.compare_scored` for packages without a negative class:
    the same result keys, disease-vs-negative ones ``None``, plus ``note``."""
    from medlens.evaluate.metrics import to_jsonable
    from medlens.evaluate.stats_tests import mcnemar

    names = list(scored)
    plain = [n for n in names if scored[n].probs is None]
    if plain:
        raise BadInputError(f"{', '.join(plain)} have a negative class and {', '.join(n for n in names if n not in plain)}"
                            " do not (argmax): compare packages with the same operating point, or retrain with "
                            "the same --negative-class")
    refuse_fewest_fn(rule)
    first = scored[names[0]]
    y = first.y_true[take[names[0]]].astype(np.int64)
    for name in names[1:]:
        if not np.array_equal(scored[name].y_true[take[name]].astype(np.int64), y):
            raise BadInputError(f"{name} and {names[0]} disagree on the truth of the same cases "
                                "(different class mappings?)")
    probs = {n: np.asarray(scored[n].probs, dtype=np.float64)[take[n]] for n in names}
    rows = [_row(n, y, probs[n]) for n in names]
    best, why = select_argmax(rows, rule)
    right = {n: probs[n].argmax(axis=1) == y for n in names}
    for row in rows:
        row["selected"] = row is best
        # McNemar on correctness: "truth" all True, each model's "decision" = it called the right class
        row["vs_selected"] = None if row is best else \
            {"mcnemar": mcnemar(np.ones(len(y), bool), right[row["name"]], right[best["name"]])}
    groups = None if first.groups is None else [first.groups[j] for j in take[names[0]]]
    n_pat = None if groups is None else len({g for g in groups if g is not None})
    if n_pat:
        warnings.append(f"cases are images of {n_pat} patients: McNemar's test treats images as independent and "
                        "is optimistic")
    warnings.append("no AUC intervals or DeLong test: " + ARGMAX_COMPARE_NOTE)
    return to_jsonable({
        "rule": rule, "min_specificity": float(min_specificity), "selected": best["name"], "selected_because": why,
        "note": ARGMAX_COMPARE_NOTE, "negative_class": None, "n_cases": len(ids), "n_positive": None,
        "n_negative": None, "n_per_class": np.bincount(y, minlength=probs[names[0]].shape[1]), "unit": first.unit,
        "n_patients": n_pat, "ci_level": level, "bootstrap": None, "leaderboard": rows, "warnings": warnings,
        "curves": {},
        "definitions": {
            "operating_point": "argmax: each model calls each case its most probable class (no threshold)",
            "roc_auc": "macro one-vs-rest ROC-AUC over the classes present",
            "ece": "top-label expected calibration error (15 bins) of the class probabilities",
            "delong": "not computed: DeLong's test compares two-class AUCs, and there is no negative class",
            "mcnemar": "McNemar's test of equal accuracy of the argmax calls vs the selected model on the "
                       "discordant cases: exact binomial and mid-p (Fagerland et al. 2013)",
        },
    })
