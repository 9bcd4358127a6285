"""``medlens calibrate RUN LOCALDATA``: refit a classifier's temperature and operating point on
a labelled local sample and write a new package version (:mod:`medlens.pipelines.calibrate`)."""

from __future__ import annotations

from pathlib import Path

import typer

from medlens.cli.app import app, make_console
from medlens.cli.boundary import out_must_be_folder
from medlens.cli.options import (
    CLASSIFY,
    check_device,
    column_option,
    device_option,
    layout_option,
    outside_paths_option,
    patient_table_option,
)


@app.command("calibrate")
def calibrate_cmd(
    model: Path = typer.Argument(..., help="run directory or model package (a classifier)"),
    data: Path = typer.Argument(..., help="labelled local data (with patient ids where known)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="a new folder for the calibrated package "
                                    "(<out>/model), metrics.json and report.html",
                                    show_default="<run>/calibrations/<data>-<time>"),
    fraction: float | None = typer.Option(None, "--fraction", help="share of the local images (whole "
                                          "patients) to calibrate on; the rest evaluates",
                                          show_default="0.5"),
    calibration_patients: int | None = typer.Option(None, "--calibration-patients",
                                                    help="calibrate on exactly this many patients instead",
                                                    show_default="by --fraction"),
    target_sensitivity: float | None = typer.Option(None, "--target-sensitivity",
                                                    help="the operating point's target on the calibration part",
                                                    show_default="the package's own "
                                                    f"(training default {CLASSIFY['target_sensitivity']})"),
    seed: int = typer.Option(0, "--seed", help="which patients go to calibration (and the bootstrap)"),
    device: str = device_option(),
    layout: str | None = layout_option(),
    label_column: str | None = column_option("--label-column"),
    path_column: str | None = column_option("--path-column"),
    patient_column: str | None = column_option("--patient-column"),
    patient_table: str | None = patient_table_option(),
    allow_outside_paths: bool = outside_paths_option(),
) -> None:
    """Adapt a classifier to local data: refit temperature and threshold on some local patients,
    compare before/after on the others, write a new package (the original is unchanged)."""
    from rich.table import Table

    from medlens.pipelines.calibrate import calibrate_model

    out_must_be_folder(out)
    metrics, out_dir = calibrate_model(model, data, out=out, fraction=fraction,
                                       calibration_patients=calibration_patients,
                                       target_sensitivity=target_sensitivity, seed=seed, device=check_device(device),
                                       layout=layout, label_column=label_column, path_column=path_column,
                                       patient_column=patient_column, patient_table=patient_table,
                                       allow_outside_paths=allow_outside_paths)
    p = metrics["calibrated_from"]
    t = Table(title=f"evaluation part: {len(p['evaluation_patients'])} {p['unit']}(s), "
                    f"{p['n_evaluation_images']} images (kept apart from the calibration)")
    for col in ("metric", "before", "95% CI", "after", "95% CI"):
        t.add_column(col, justify="left" if col == "metric" else "right")

    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    def band(ci: dict | None) -> str:
        return f"{ci['low']:.3f}–{ci['high']:.3f}" if isinstance(ci, dict) and ci.get("low") is not None else ""

    for r in metrics["comparison"]:
        t.add_row(r["metric"], f(r["before"]), band(r["before_ci"]), f(r["after"]), band(r["after_ci"]))
    con = make_console()
    con.print(t)

    def thr(v: float | None) -> str:
        return "none (argmax)" if v is None else f"{v:.4f}"

    con.print(f"temperature {p['temperature']['old']:.3f} → {p['temperature']['new']:.3f}; threshold "
              f"{thr(p['threshold']['old'])} → {thr(p['threshold']['new'])} (calibrated on "
              f"{len(p['calibration_patients'])} {p['unit']}(s), {p['n_calibration_images']} images)", soft_wrap=True)
    con.print(f"new package: {metrics['new_package']}  (report: {out_dir / 'report.html'})", soft_wrap=True)
