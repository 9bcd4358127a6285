"""Train several models of one recipe from different seeds and join them.

Member ``k`` trains with seed ``seed + k`` in ``run_dir/member<k>`` (its own checkpoints
and logs, so ``--resume`` continues whichever member was interrupted and skips finished
ones). With one member nothing changes: it trains in ``run_dir`` itself and is returned
as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from torch import nn

from medlens.train.config import TrainConfig
from medlens.train.engine import FitResult


class EnsembleSettings(BaseModel):
    """The ensemble fields of every task's config (classify ``RunConfig``, ``SegmentConfig``)."""

    ensemble: int = Field(1, ge=1, le=10, description="models trained from seeds seed, seed+1, …; "
                                                      "their probabilities averaged (one model answers)")
    ensemble_by: Literal["seed", "folds"] = Field(
        "seed", description="with ensemble > 1 — seed: every member trains on the same patients; folds: "
                            "nnU-Net's cross-validation ensemble, the training and validation patients pooled "
                            "and split into `ensemble` folds, member k validated on fold k and trained on the "
                            "rest (every patient trains all but one member); what the run chooses on "
                            "validation data — segment: post-processing, classify: temperature and operating "
                            "point — is chosen on every pooled patient's out-of-fold prediction")

    @model_validator(mode="after")
    def _folds_need_members(self) -> EnsembleSettings:
        if self.ensemble_by == "folds" and self.ensemble < 2:
            raise ValueError("ensemble_by folds needs ensemble ≥ 2 (the number of folds), e.g. --ensemble 3")
        return self


#: The default ensemble of the recipes that pick one (segmentation; IDC classification) from
#: :data:`FOLD_ENSEMBLE_MIN_PATIENTS` patients on: a cross-validation ensemble of three networks at
#: about twice one network's training time. Fewer patients would leave a member fold one or two
#: to validate on; ``--ensemble 1`` trains one network. Measurements: README ("Segmentation
#: defaults for new sites", "IDC: a cross-validation ensemble").
FOLD_ENSEMBLE: dict[str, Any] = {"ensemble": 3, "ensemble_by": "folds"}
FOLD_ENSEMBLE_MIN_PATIENTS = 10
#: … and with it, unless the user sets ``test_fraction``, no test split: every patient trains the
#: ensemble that is shipped (as in nnU-Net, whose final model is its cross-validation ensemble).
#: The members' out-of-fold predictions already score every patient with a network that never saw
#: it — an estimate over all patients instead of three or four held-out ones — and chose the
#: operating point or post-processing; a held-out test split would only take patients away from
#: the model (IDC: one of the four patients with benign tissue; in a 3-fold IDC CV with the split
#: the member folds lacked a class and the run fell back to one network). Ask for a test split
#: with ``--test-fraction``; ``medlens cv`` gives the honest held-out estimate.
FOLD_ENSEMBLE_TEST_FRACTION = 0.0

TrainOne = Callable[[int, TrainConfig, Path, bool], tuple[nn.Module, FitResult]]


def fit_members(n: int, tc: TrainConfig, run_dir: Path, train_one: TrainOne, *, resume: bool = False
                ) -> tuple[nn.Module, FitResult, list[dict[str, Any]]]:
    """``train_one(member, config, directory, resume)`` ``n`` times; returns the model (a
    :class:`~medlens.models.ensemble.MeanEnsemble` when ``n > 1``), the first member's
    fit result (its curves go in the report) and one summary row per member."""
    if n == 1:
        model, result = train_one(0, tc, run_dir, resume)
        return model, result, [_row(0, tc.seed, result)]
    models, results, rows = [], [], []
    for k in range(n):
        mdir = Path(run_dir) / f"member{k}"
        mtc = tc.model_copy(update={"seed": tc.seed + k})
        model, result = train_one(k, mtc, mdir, resume and (mdir / "checkpoints" / "last.pt").exists())
        models.append(model), results.append(result), rows.append(_row(k, mtc.seed, result))
    from medlens.models.ensemble import make_ensemble

    return make_ensemble(models), results[0], rows


def _row(k: int, seed: int, r: FitResult) -> dict[str, Any]:
    return {"member": k, "seed": seed, "best_epoch": r.best_epoch, "best_score": r.best_score,
            "epochs_run": len(r.history), "stopped_early": r.stopped_early}
