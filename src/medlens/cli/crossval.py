"""`medlens cv DATA`: k-fold cross-validation of a classifier (for small data sets)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from medlens.cli.app import _console, app
from medlens.cli.commands import LAYOUT_HELP, _nest
from medlens.errors import ConfigError


@app.command("cv")
def cv_cmd(
    data: Path = typer.Argument(..., help="data folder, CSV manifest or MedMNIST .npz"),
    folds: int = typer.Option(
        5, "--folds", "-k", help="number of folds (each image is held out once)"
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="output folder (default runs/<data>-cv-<time>)"
    ),
    config: Path | None = typer.Option(
        None, "--config", help="JSON/YAML config; flags override it"
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="model name (see `medlens models`)"
    ),
    size: int | None = typer.Option(None, "--size", help="input side in pixels"),
    epochs: int | None = typer.Option(None, "--epochs"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    patience: int | None = typer.Option(None, "--patience"),
    seed: int | None = typer.Option(None, "--seed"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="cap on steps per epoch"),
    val_fraction: float | None = typer.Option(
        None, "--val-fraction", help="validation share carved from each fold's training part"
    ),
    layout: str | None = typer.Option(None, "--layout", help=LAYOUT_HELP),
    label_column: str | None = typer.Option(None, "--label-column"),
    path_column: str | None = typer.Option(None, "--path-column"),
    patient_column: str | None = typer.Option(None, "--patient-column"),
    no_audit: bool = typer.Option(False, "--no-audit", help="skip the quick audit"),
    ignore_audit: bool = typer.Option(
        False, "--ignore-audit", help="run despite blocking audit findings"
    ),
    resume: bool = typer.Option(
        False, "--resume", help="continue the run in --out: skip finished folds"
    ),
) -> None:
    """Cross-validate a classifier on DATA: per-fold and pooled out-of-fold AUC with 95 % CIs."""
    from medlens.pipelines.crossval import cross_validate, load_run

    if resume:
        if out is None or not (out / "config.json").exists():
            raise ConfigError(
                "--resume needs --out pointing at an existing cross-validation folder"
            )
        cfg, folds = load_run(out)
    else:
        cfg = _config(
            data,
            config,
            model=model,
            no_audit=no_audit,
            ignore_audit=ignore_audit,
            flat={
                "layout": layout,
                "label_column": label_column,
                "path_column": path_column,
                "patient_column": patient_column,
                "val_fraction": val_fraction,
                "size": size,
                "epochs": epochs,
                "batch_size": batch_size,
                "lr": lr,
                "patience": patience,
                "seed": seed,
                "device": device,
                "max_steps_per_epoch": max_steps,
            },
        )
        out = out or Path("runs") / f"{Path(data).stem}-cv-{time.strftime('%Y%m%d-%H%M%S')}"
    cv = cross_validate(cfg, out, folds=folds, resume=resume)
    _print_cv(cv, out)


def _config(
    data: Path,
    config: Path | None,
    *,
    model: str | None,
    no_audit: bool,
    ignore_audit: bool,
    flat: dict[str, Any],
) -> Any:
    from medlens.pipelines.config import deep_update, load_config_file
    from medlens.pipelines.recipes import apply_recipe

    over = _nest(flat)
    if model:
        over.setdefault("model", {})["name"] = model
    if no_audit:
        over.setdefault("data", {})["audit"] = False
    if ignore_audit:
        over.setdefault("data", {})["ignore_audit"] = True
    merged = deep_update(load_config_file(config) if config else {}, over)
    merged.setdefault("data", {})["path"] = str(data)
    return apply_recipe(merged)


def _print_cv(cv: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}"

    t = Table(title=f"{cv['folds']}-fold cross-validation (grouped by {cv['grouping']})")
    for col in ("fold", "held out", "AUC", "sensitivity", "specificity", "balanced acc"):
        t.add_column(col, justify="right")
    for r in cv["per_fold"]:
        t.add_row(
            str(r["fold"]),
            str(r["n_test"]),
            f(r["roc_auc"]),
            f(r["sensitivity"]),
            f(r["specificity"]),
            f(r["balanced_accuracy"]),
        )
    s = cv["summary"]
    t.add_row(
        "mean ± sd",
        "",
        *(
            f"{f(s[k]['mean'])} ± {f(s[k]['std'])}"
            for k in ("roc_auc", "sensitivity", "specificity", "balanced_accuracy")
        ),
    )
    con = _console()
    con.print(t)
    auc = cv["auc"]
    ci_t, ci_b = auc.get("ci_fold_t") or {}, auc.get("ci_pooled_bootstrap") or {}
    con.print(
        f"AUC {f(auc['mean'])} ± {f(auc['std'])} over folds, 95% CI (t over folds) "
        f"{f(ci_t.get('low'))}–{f(ci_t.get('high'))}"
    )
    con.print(
        f"pooled out-of-fold AUC {f(auc['pooled_oof'])}, 95% CI (bootstrap) "
        f"{f(ci_b.get('low'))}–{f(ci_b.get('high'))}"
    )
    con.print(f"results: {out / 'cv_metrics.json'}  (report: {out / 'report.html'})")
