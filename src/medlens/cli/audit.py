"""`medlens audit DATA`: the data audit as a command (exit code 1 on blocking findings)."""

from __future__ import annotations

from pathlib import Path

import typer

from medlens.cli.app import app
from medlens.cli.boundary import out_must_be_folder
from medlens.cli.options import (
    column_option,
    layout_option,
    outside_paths_option,
    patient_table_option,
)


@app.command("audit")
def audit(
    data: Path = typer.Argument(..., help="data folder, CSV manifest or MedMNIST .npz"),
    out: Path | None = typer.Option(None, "--out", "-o", help="folder for audit.json and audit.html",
                                    show_default="runs/audit-<data folder name>"),
    exclude_list: Path | None = typer.Option(
        None, "--exclude-list", help="write the files to leave out here (for `train --exclude`)",
        show_default="not written",
    ),
    layout: str | None = layout_option(),
    label_column: str | None = column_option("--label-column"),
    path_column: str | None = column_option("--path-column"),
    patient_column: str | None = column_option("--patient-column"),
    split_column: str | None = column_option("--split-column"),
    patient_table: str | None = patient_table_option(),
    allow_outside_paths: bool = outside_paths_option(),
    quick: bool = typer.Option(False, "--quick", help="readability, exact duplicates and confounding only"),
    near_threshold: int = typer.Option(10, "--near-threshold", help="perceptual-hash bits for near duplicates"),
    shortcut_threshold: float = typer.Option(0.75, "--shortcut-threshold", help="metadata-only AUC that warns"),
    min_patients: int = typer.Option(5, "--min-patients", help="warn when a class has fewer patients"),
) -> None:
    """Check DATA before training: unreadable files, duplicates, leakage, shortcuts, confounding.

    Never moves, renames or deletes a file. Exits with code 1 when a problem would block
    `medlens train`.
    """
    from medlens.audit import run_audit

    given = {"layout": layout, "label_column": label_column, "path_column": path_column,
             "patient_column": patient_column, "split_column": split_column,
             "patient_table": patient_table, "allow_outside_paths": allow_outside_paths or None}  # fmt: skip
    layout_kwargs = {k: v for k, v in given.items() if v is not None}
    if out is None:
        out = Path("runs") / f"audit-{data.resolve().name}"
    out_must_be_folder(out)
    result = run_audit(
        data, out_dir=out, exclude_list=exclude_list, quick=quick, near_threshold=near_threshold,
        shortcut_threshold=shortcut_threshold, min_patients=min_patients, **layout_kwargs,
    )  # fmt: skip
    s = result.summary
    typer.echo(f"{s['n_records']} image(s), {s['n_readable']} readable, layout {s['layout']}; "
               f"classes {s['class_counts']}")  # fmt: skip
    exact = result.duplicates.get("exact", {})
    near = result.duplicates.get("near", {})
    typer.echo(f"duplicates: {exact.get('n_groups', 0)} exact group(s), {near.get('n_groups', 0)} near group(s)")
    if result.shortcut.get("status") == "ok":
        groups = ", ".join(f"{g} {v['auc']:.2f}" for g, v in result.shortcut["groups"].items())
        typer.echo(f"shortcut test (metadata-only ROC-AUC): {groups}")
    for w in result.warnings:
        typer.echo(f"warning: {w}")
    for b in result.blocking:
        typer.echo(f"BLOCKING: {b}")
    typer.echo(f"report: {out / 'audit.html'}")
    if exclude_list is not None:
        typer.echo(f"exclude list ({len(result.exclude)} file(s)): {exclude_list}")
    if result.blocking:  # exit 1: scripts and CI must not take a blocked data set for a clean one
        from medlens.errors import JobFailedError

        raise JobFailedError(f"{data}: the audit found {len(result.blocking)} blocking problem(s) (listed "
                             f"above); fix them or exclude files with --exclude-list")
