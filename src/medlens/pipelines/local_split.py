"""The patient split of ``medlens calibrate``: a labelled local sample cut into a calibration
part and an evaluation part that share no patient (images are their own unit only when the
data carry no patient ids), searched for both classes on each side and the wanted size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medlens.errors import BadInputError, ConfigError

DEFAULT_FRACTION = 0.5
#: Candidate patient splits tried; the one closest to the wanted size and class mix is kept.
TRIALS = 300


@dataclass(frozen=True)
class LocalSplit:
    """The local sample split into a calibration and an evaluation part (boolean masks over
    the readable images), the units (patients, or images) on each side, and the unit's name."""

    calibration: np.ndarray
    evaluation: np.ndarray
    calibration_units: list[str]
    evaluation_units: list[str]
    unit: str


def split_local(units: Sequence[str], is_pos: np.ndarray, *, fraction: float | None = None,
                n_calibration: int | None = None, seed: int = 0, what: str = "LOCALDATA",
                unit: str = "patient") -> LocalSplit:
    """Put whole units (patients) in the calibration or the evaluation part.

    Among :data:`TRIALS` seeded random orders of the units, the split kept is the one whose
    calibration part holds both classes (needed to choose a threshold), then whose
    evaluation part does too, then closest to ``fraction`` of the images (or exactly
    ``n_calibration`` units) and to the overall disease share.

    Raises:
        ConfigError: ``n_calibration`` leaves no unit for one part, or ``fraction`` is not in (0, 1).
        BadInputError: fewer than 2 units, or no split gives the calibration part both classes.
    """
    names = sorted(set(units))
    g = len(names)
    if g < 2:
        raise BadInputError(f"{what}: only {g} {unit} — calibrate needs at least 2 (one or more to calibrate "
                            f"on, one or more kept apart to evaluate on); add {unit}s")
    if n_calibration is not None and not 1 <= int(n_calibration) < g:
        raise ConfigError(f"--calibration-patients {n_calibration}: {what} has {g} {unit}s; give 1 to {g - 1} "
                          "so that at least one is kept apart for the evaluation")
    if n_calibration is None:
        fraction = DEFAULT_FRACTION if fraction is None else float(fraction)
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"--fraction must be between 0 and 1 (exclusive), got {fraction}")
    code = {n: i for i, n in enumerate(names)}
    gi = np.array([code[u] for u in units])
    n_img = np.bincount(gi, minlength=g).astype(float)
    n_pos = np.bincount(gi, weights=is_pos.astype(float), minlength=g)
    total, share = float(n_img.sum()), float(n_pos.sum() / n_img.sum())
    rng = np.random.default_rng(seed)
    best, best_cost = np.zeros(g, bool), np.inf
    for _ in range(TRIALS):
        order = rng.permutation(g)
        if n_calibration is not None:
            k = int(n_calibration)
        else:  # the fewest units (in this order) that reach the wanted share of the images
            k = int(np.searchsorted(np.cumsum(n_img[order]) / total, fraction - 1e-9) + 1)
            k = min(max(k, 1), g - 1)
        sel = np.zeros(g, bool)
        sel[order[:k]] = True
        c_img, c_pos = n_img[sel].sum(), n_pos[sel].sum()
        e_img, e_pos = n_img[~sel].sum(), n_pos[~sel].sum()
        cal_missing = int(c_pos == 0) + int(c_pos == c_img)
        eval_missing = int(e_pos == 0) + int(e_pos == e_img)
        cost = 100.0 * cal_missing + 10.0 * eval_missing + abs(c_pos / c_img - share)
        if n_calibration is None:
            cost += abs(c_img / total - fraction)
        if cost < best_cost:
            best, best_cost = sel, cost
    c_img, c_pos = n_img[best].sum(), n_pos[best].sum()
    if c_pos == 0 or c_pos == c_img:
        raise BadInputError(f"{what}: no split of its {g} {unit}s gives the calibration part both negative and "
                            f"disease images (needed to choose the operating point); add {unit}s with the "
                            "missing class, or more of them")
    cal = best[gi]
    return LocalSplit(calibration=cal, evaluation=~cal, calibration_units=[n for n, s in zip(names, best) if s],
                      evaluation_units=[n for n, s in zip(names, best) if not s], unit=unit)
