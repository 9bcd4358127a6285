"""Train several models of one recipe from different seeds and join them.

Member ``k`` trains with seed ``seed + k`` in ``run_dir/member<k>`` (its own checkpoints
and logs, so ``--resume`` continues whichever member was interrupted and skips finished
ones). With one member nothing changes: it trains in ``run_dir`` itself and is returned
as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from medlens.train.config import TrainConfig
from medlens.train.engine import FitResult

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
