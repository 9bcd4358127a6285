"""A patient package on ``medlens compare``'s cases: one row per patient.

Patients are the units the package diagnoses, so they are the compared cases: the paired
bootstrap resamples patients, and DeLong's and McNemar's tests are exact in the sense that
their cases are independent units (no images of one patient counted as separate cases).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.evaluate.compare_cases import Cases, Scored


def score_patients(pkg: Any, cases: Cases) -> Scored:
    """Every patient of ``cases`` (its split; the shared splits.csv when compare found one):
    truth, disease score ``1 - p(negative)`` and the call at the package's own threshold."""
    from medlens.mil.bags import load_bags
    from medlens.mil.predict import PatientPredictor, patients_for
    from medlens.mil.train import predict_bags

    index, used = patients_for(pkg, cases.data, cases.split, layout=cases.layout_opts.get("layout"),
                               splits=cases.splits)
    bags = load_bags(index, int(pkg.metadata["input"]["size"]))
    if not len(bags):
        from medlens.errors import BadInputError

        raise BadInputError(f"{cases.data}: none of the patients of split {cases.split!r} has a readable cell image")
    pred = PatientPredictor(pkg)
    probs, _ = predict_bags(pred.model, bags, pred.cell_input, pkg.device)
    neg, thr = pkg.negative_class, pkg.threshold
    scores = 1.0 - probs[:, neg]
    decisions = scores >= thr if thr is not None else probs.argmax(1) != neg
    notes = [] if used == cases.split else [f"split {used}"]
    return Scored(ids=list(bags.patients), y_true=np.asarray(bags.labels) != neg, scores=scores,
                  decisions=np.asarray(decisions, dtype=bool), groups=None, unit="patient", threshold=thr,
                  notes=notes, members={p: bags.paths(i) for i, p in enumerate(bags.patients)})
