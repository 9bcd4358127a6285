"""``medlens demo``: synthetic data → audit → train → evaluate → report, no download, < 5 min on 2 CPUs."""

from __future__ import annotations

import logging
from pathlib import Path

from medlens.io.runlog import logged_run

log = logging.getLogger(__name__)

#: Demo training settings: small enough for 2 CPU cores, long enough for real trade-offs.
DEMO_TRAIN = {"epochs": 8, "batch_size": 64, "lr": 2e-3, "patience": 4}


@logged_run("out")  # out/run.log (the training run writes its own in out/run)
def run_demo(out: str | Path, *, task: str = "classify", seed: int = 0, quick: bool = False,
             device: str = "auto") -> Path:
    """Generate the synthetic IDC-like data set under ``out/data`` and train on it into ``out/run``.

    ``out`` is locked while the demo writes it: a second demo on it is refused.
    """
    from medlens.io.lock import folder_lock

    with folder_lock(out):
        return _run_demo(Path(out), task=task, seed=seed, quick=quick, device=device)


def _run_demo(out: Path, *, task: str, seed: int, quick: bool, device: str) -> Path:
    from medlens.tasks import get_task

    return get_task(task).demo(Path(out), seed=seed, quick=quick, device=device)


def classify_demo(out: Path, *, seed: int = 0, quick: bool = False, device: str = "auto") -> Path:
    """The classify task's demo: synthetic IDC-like patches → audit → train into ``out/run``."""
    from medlens.data.synthetic import make_idc_like
    from medlens.pipelines.classification import holds_a_run, train_classifier
    from medlens.pipelines.recipes import apply_recipe

    data = out / "data"
    if not data.exists():
        log.info("generating synthetic IDC-like patches in %s", data)
        kw = {"patients": 6, "patches_per_patient": 40} if quick else {"patients": 14, "patches_per_patient": 150}
        make_idc_like(data, seed=seed, **kw)
    from medlens.audit import run_audit

    audit = run_audit(data, out_dir=out / "audit", quick=quick)
    log.info("audit: %d warning(s), %d blocking; see %s", len(audit.warnings), len(audit.blocking),
             out / "audit" / "audit.html")
    train = dict(DEMO_TRAIN, seed=seed, device=device)
    if quick:
        train.update(epochs=2, max_steps_per_epoch=5)
    # three synthetic patients held out as a test split (the recipe's fold ensemble trains on every
    # patient unless asked): the demo shows a model judged on patients it never saw
    cfg = apply_recipe({"data": {"path": str(data), "layout": "idc", "test_fraction": 0.15}, "train": train,
                        "eval": {"n_bootstrap": 300 if quick else 1000}})
    run_dir = out / "run"
    train_classifier(cfg, run_dir, resume=holds_a_run(run_dir))
    return run_dir
