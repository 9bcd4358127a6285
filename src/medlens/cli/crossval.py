"""`medlens cv DATA`: k-fold cross-validation of a classifier (for small data sets)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from medlens.cli.app import app, make_console
from medlens.cli.boundary import out_must_be_folder
from medlens.cli.options import (
    CLASSIFY,
    COLUMN_DEFAULT,
    LAYOUT_DEFAULT,
    LAYOUT_HELP,
    by_layout,
    check_device,
    check_model,
    device_option,
)
from medlens.errors import ConfigError


@app.command("cv")
def cv_cmd(
    data: Path = typer.Argument(..., help="data folder, CSV manifest or MedMNIST .npz"),
    folds: int = typer.Option(
        5, "--folds", "-k", min=2, help="number of folds (each image is held out once)"
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="output folder", show_default="runs/<data>-cv-<date>-<time>"
    ),
    config: Path | None = typer.Option(
        None, "--config", help="JSON/YAML config; flags override it", show_default="none"
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="model name (see `medlens models`)",
        show_default=by_layout("model", segment=False),
    ),
    size: int | None = typer.Option(
        None, "--size", help="input side in pixels", show_default=by_layout("size", segment=False)
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", show_default=by_layout("epochs", segment=False)
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", show_default=by_layout("batch_size", segment=False)
    ),
    lr: float | None = typer.Option(
        None, "--lr", help="learning rate", show_default=by_layout("lr", segment=False)
    ),
    patience: int | None = typer.Option(
        None, "--patience", help="early stopping: epochs without improvement",
        show_default=by_layout("patience", segment=False),
    ),
    seed: int | None = typer.Option(None, "--seed", show_default=str(CLASSIFY["seed"])),
    device: str | None = device_option(None),
    max_steps: int | None = typer.Option(
        None, "--max-steps", help="cap on steps per epoch", show_default="no cap"
    ),
    val_fraction: float | None = typer.Option(
        None, "--val-fraction", help="validation share carved from each fold's training part",
        show_default=str(CLASSIFY["val_fraction"]),
    ),
    layout: str | None = typer.Option(None, "--layout", help=LAYOUT_HELP, show_default=LAYOUT_DEFAULT),
    label_column: str | None = typer.Option(None, "--label-column", show_default=COLUMN_DEFAULT),
    path_column: str | None = typer.Option(None, "--path-column", show_default=COLUMN_DEFAULT),
    patient_column: str | None = typer.Option(None, "--patient-column", show_default=COLUMN_DEFAULT),
    allow_outside_paths: bool = typer.Option(
        False, "--allow-outside-paths",
        help="accept manifest paths outside the data folder (../, absolute paths, symlinks leading out)",
    ),
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

    out_must_be_folder(out)
    device, model = check_device(device), check_model(model)
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
                "allow_outside_paths": allow_outside_paths or None,
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
    from medlens.pipelines.config import deep_update, load_config_file, nest_options
    from medlens.pipelines.recipes import apply_recipe

    over = nest_options(flat)
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

    t = Table(
        title=f"{cv['folds']}-fold cross-validation (grouped by {cv['grouping']})",
        caption="sensitivity, specificity, balanced acc: at each fold's operating point "
        "(threshold chosen on the fold's validation split for the target sensitivity)",
    )
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
    con = make_console()
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
