"""The cases of ``medlens compare`` and how a package is scored on them: :class:`Cases`
(the data and split every package sees), :class:`Scored` (per case: id, truth, disease
score, decision at the package's own operating point) and the scorer of each task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import BadInputError, ConfigError
from medlens.registry import Registry


# ------------------------------------------------------------------ cases and scores
@dataclass
class Cases:
    """What every package is scored on: DATA, the split, and the split assignment to use.

    ``splits`` (``{path: split}``) comes from a training run whose data DATA is, so that
    "test" means that run's held-out images; ``None`` keeps the layout's own splits.
    """

    data: Path
    split: str = "test"
    splits: dict[str, str] | None = None
    splits_from: str | None = None
    layout_opts: dict[str, Any] = field(default_factory=dict)

    def index(self) -> Any:
        """The data set restricted to ``split`` (a :class:`~medlens.data.records.DatasetIndex`)."""
        from dataclasses import replace

        from medlens.data.layouts import load_dataset

        index = load_dataset(self.data, **{k: v for k, v in self.layout_opts.items() if v is not None})
        if self.splits:
            index = index.subset([replace(r, split=self.splits.get(r.path, r.split)) for r in index.records])
        if self.split != "all":
            if not index.has_official_splits:
                raise ConfigError(f"{self.data}: has no splits (and no run's splits.csv matches it); "
                                  "use --split all, or --data a run folder to use its test split")
            index = index.subset([r for r in index.records if r.split == self.split])
        if not index.records:
            from medlens.evaluate.model_card import no_split_text

            held = no_split_text(self.split, self.splits_from, "compare on data the runs did not train on, or "
                                 "train them with --test-fraction") if self.splits_from else ""
            raise BadInputError(f"{self.data}: no images in split {self.split!r}{held}")
        return index


@dataclass
class Scored:
    """One package's result on the compared cases (all arrays aligned with ``ids``).

    Attributes:
        ids: one id per case (an image path, or a patient id for patient-level tasks).
        y_true: (N,) bool, the case has the disease (any class but the negative one).
        scores: (N,) disease score in [0, 1] (``1 - p(negative)``), higher = more disease.
        decisions: (N,) bool, called diseased at the package's own operating point.
        groups: the patient of each case (the bootstrap's resampling unit), or ``None``
            when the cases are independent units themselves (e.g. patients).
        unit: what a case is, ``"image"`` or ``"patient"`` (models are paired only on one unit).
        threshold: the package's operating point on ``scores`` (``None``: most probable class).
        notes: remarks for the comparison's warnings (e.g. which split was used).
        members: the files of each case when a case is more than one file (a patient's cells),
            so the training-overlap check can look them up in a run's splits.csv.
        probs: (N, K) class probabilities of a package without a negative class (argmax);
            then ``y_true`` holds class indices, ``decisions`` the predicted class and
            ``scores`` its probability (compared by :mod:`medlens.evaluate.compare_argmax`).
    """

    ids: list[str]
    y_true: np.ndarray
    scores: np.ndarray
    decisions: np.ndarray
    groups: list[str | None] | None = None
    unit: str = "image"
    threshold: float | None = None
    notes: list[str] = field(default_factory=list)
    members: dict[str, list[str]] | None = None
    probs: np.ndarray | None = None


Scorer = Callable[[Any, Cases], Scored]
#: task name → scorer, for tasks whose entry has no ``score`` of its own.
SCORERS: Registry[Scorer] = Registry("comparison scorer")


def scorer_for(pkg: Any) -> Scorer:
    """The scorer of a package's task: the task entry's ``score`` when it has one (the
    patient task's scores one row per patient, :func:`medlens.mil.score.score_patients`),
    else the one registered in :data:`SCORERS` under the task's name."""
    own = getattr(pkg.task_spec, "score", None)
    if own is not None:
        return own
    if pkg.task not in SCORERS:
        raise ConfigError(f"{pkg.path}: packages of task {pkg.task!r} cannot be compared yet "
                          f"(comparable: {', '.join(SCORERS.names())})")
    return SCORERS.get(pkg.task)


@SCORERS.register("classify")
def score_classifier(pkg: Any, cases: Cases) -> Scored:
    """A classifier package on ``cases``: one row per readable image, its patient as group."""
    from medlens.evaluate.calibration import apply_temperature
    from medlens.evaluate.operating_point import disease_score
    from medlens.pipelines.evaluate_run import package_cache, package_logits
    from medlens.pipelines.evaluation import package_negative_class

    cache, y = package_cache(pkg, cases.index(), cases.data)
    probs = apply_temperature(package_logits(pkg, cache.images)[0], pkg.temperature)
    neg = package_negative_class(pkg)
    patients = [r.patient for r in cache.records]
    if neg is None:  # argmax package: the class call and the probabilities, no disease score
        return Scored(ids=[r.path for r in cache.records], y_true=np.asarray(y), scores=probs.max(axis=1),
                      decisions=probs.argmax(axis=1), groups=patients if any(p is not None for p in patients)
                      else None, unit="image", threshold=None, probs=probs)
    return Scored(ids=[r.path for r in cache.records], y_true=y != neg, scores=disease_score(probs, neg),
                  decisions=pkg.call(probs) != neg,
                  groups=patients if any(p is not None for p in patients) else None,
                  unit="image", threshold=pkg.threshold)
