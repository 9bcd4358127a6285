"""`medlens ct train|detect|evaluate`: the lung-CT nodule pipeline (:mod:`medlens.ct`).

The commands call the ``ct`` task's entry (:mod:`medlens.tasks.ct`) and the pipeline; the
generic ``medlens train/evaluate/predict/demo --task ct`` reach the same code.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from medlens.cli.app import app, make_console
from medlens.cli.boundary import out_must_be_folder
from medlens.cli.options import check_device, device_option
from medlens.errors import BadInputError

ct_app = typer.Typer(name="ct", no_args_is_help=True, help="Lung-nodule detection in chest CT (LUNA16 / LIDC): "
                     "train the candidate, nodule and malignancy networks, detect, evaluate (FROC).")
app.add_typer(ct_app, name="ct")


@ct_app.command("train")
def ct_train(
    data: Path = typer.Argument(..., help="LUNA16-layout folder: annotations.csv (seriesuid, coordX, coordY, "
                                "coordZ, diameter_mm[, malignancy]) and optionally candidates.csv at its root, "
                                "scans in subset*/ (.mhd + .raw), DICOM series folders or NIfTI files"),
    out: Path | None = typer.Option(None, "--out", "-o", help="run directory",
                                    show_default="runs/<data>-ct-<date>-<time>"),
    config: Path | None = typer.Option(None, "--config", help="JSON/YAML config (medlens.ct.train.CtConfig); "
                                       "flags override it", show_default="none"),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="epochs of every stage", show_default="12"),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, show_default="16 (U-Net), 32 (crops)"),
    lr: float | None = typer.Option(None, "--lr", help="learning rate of every stage", show_default="2e-3, 1e-3"),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="cap on steps per epoch",
                                         show_default="no cap"),
    val_fraction: float | None = typer.Option(None, "--val-fraction", help="share of scans held out",
                                              show_default="0.25"),
    seed: int | None = typer.Option(None, "--seed", show_default="0"),
    device: str | None = device_option(None),
    no_augment: bool = typer.Option(False, "--no-augment", help="train the crop networks without augmentation"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its checkpoints"),
) -> None:
    """Train the candidate U-Net and the nodule and malignancy 3D CNNs on a LUNA16-layout DATA."""
    from medlens.cli.commands import print_summary
    from medlens.tasks import get_task
    from medlens.tasks.ct import train_from_cli

    out_must_be_folder(out)
    options = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "max_steps": max_steps,
               "val_fraction": val_fraction, "seed": seed, "device": check_device(device), "no_augment": no_augment}
    metrics, run_dir = train_from_cli(data, out, config, resume, options)
    print_summary(metrics, run_dir, get_task("ct"))


@ct_app.command("detect")
def ct_detect(
    model: Path = typer.Argument(..., help="run directory or model package of `medlens ct train`"),
    scans: list[Path] = typer.Argument(..., help="scans: .mhd/.mha/.nii[.gz] files, DICOM series folders, or "
                                       "folders holding them"),
    out: Path = typer.Option(Path("ct-detections"), "--out", "-o",
                             help="folder for nodules.csv, diagnosis.csv and report.html"),
    device: str = device_option(),
    report: bool = typer.Option(True, "--report/--no-report", help="write report.html with slices through "
                                "each finding"),
) -> None:
    """Detect lung nodules in SCANS: nodules.csv, diagnosis.csv and report.html in --out."""
    from medlens.cli.commands import show_table
    from medlens.ct.pipeline import detect_files
    from medlens.options import resolve_device
    from medlens.package import load_model
    from medlens.tasks.ct import TASK

    out_must_be_folder(out)
    pkg = load_model(model, device=resolve_device(device))
    rows = detect_files(pkg, scans, out, report=report)
    show_table(TASK.predict_table(pkg, rows))
    make_console().print(f"output: {out} (nodules.csv, diagnosis.csv{', report.html' if report else ''})",
                         soft_wrap=True)
    bad = sum("error" in r for r in rows)
    if bad == len(rows):
        raise BadInputError(f"none of the {len(rows)} scan(s) could be read")


@ct_app.command("evaluate")
def ct_evaluate(
    model: Path = typer.Argument(..., help="run directory or model package of `medlens ct train`"),
    data: Path = typer.Argument(..., help="LUNA16-layout folder with annotations.csv"),
    out: Path | None = typer.Option(None, "--out", "-o", help="folder for metrics.json, nodules.csv, report.html",
                                    show_default="<run>/evaluations/<data>-<time>"),
    device: str = device_option(),
) -> None:
    """Evaluate a lung-CT package on DATA: FROC/CPM, sensitivity and FP per scan, report."""
    from medlens.cli.commands import print_summary
    from medlens.ct.pipeline import evaluate_package
    from medlens.io.lock import folder_lock
    from medlens.options import resolve_device
    from medlens.package import load_model
    from medlens.tasks.ct import TASK

    out_must_be_folder(out)
    pkg = load_model(model, device=resolve_device(device))
    if out is None:
        run = pkg.path.parent if pkg.path.name == "model" else pkg.path
        out = run / "evaluations" / f"{Path(data).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with folder_lock(out):
        metrics = evaluate_package(pkg, data, out)
    print_summary({**metrics, "split": "evaluated"}, out, TASK)


@ct_app.command("calibrate")
def ct_calibrate(
    model: Path = typer.Argument(..., help="run directory or model package of `medlens ct train`"),
    data: Path = typer.Argument(..., help="local annotated scans: LUNA16 layout with annotations.csv, or DICOM "
                                "series with their LIDC XML reads"),
    out: Path | None = typer.Option(None, "--out", "-o", help="folder for the new package (model/) and metrics.json",
                                    show_default="<run>/calibrations/<data>-<time>"),
    calibration_scans: int | None = typer.Option(None, "--calibration-scans", min=1, help="scans that choose the "
                                                 "threshold; the others judge it", show_default="half"),
    target_fp_per_scan: float | None = typer.Option(None, "--target-fp-per-scan", help="most false positives per "
                                                    "scan the new threshold allows on the calibration scans",
                                                    show_default="the package's rule (2)"),
    max_findings: int | None = typer.Option(None, "--max-findings", min=1, help="new reading budget: at most this "
                                            "many findings per scan at the operating point",
                                            show_default="the package's (4)"),
    seed: int = typer.Option(0, "--seed", help="seed of the calibration/evaluation split"),
    device: str = device_option(),
) -> None:
    """Refit the operating threshold on local annotated scans; judge it on other local scans;
    write a new package (the original is not touched)."""
    from medlens.ct.calibrate import calibrate_ct
    from medlens.io.lock import folder_lock
    from medlens.options import resolve_device
    from medlens.package import load_model

    out_must_be_folder(out)
    pkg = load_model(model, device=resolve_device(check_device(device)))
    if out is None:
        run = pkg.path.parent if pkg.path.name == "model" else pkg.path
        out = run / "calibrations" / f"{Path(data).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with folder_lock(out):
        m = calibrate_ct(pkg, data, out, calibration_scans=calibration_scans, target_fp_per_scan=target_fp_per_scan,
                         max_findings=max_findings, seed=seed)
    p, ev = m["calibrated_from"], m["evaluation"]
    console = make_console()
    console.print(f"threshold {p['threshold']['before']:.3f} → {p['threshold']['after']:.3f} (at most "
                  f"{p['target_fp_per_scan']:g} false positives per scan on {len(p['calibration_scans'])} calibration "
                  "scans; at most "
                  f"{p['max_findings_per_scan']['after'] or 'any number of'} findings per scan)", soft_wrap=True)
    console.print(f"on {len(p['evaluation_scans'])} other local scans: sensitivity {ev['before']['sensitivity']:.3f} → "
                  f"{ev['after']['sensitivity']:.3f}, false positives per scan {ev['before']['fp_per_scan']:.2f} → "
                  f"{ev['after']['fp_per_scan']:.2f}", soft_wrap=True)
    console.print(f"new package: {out / 'model'}  (metrics: {out / 'metrics.json'})", soft_wrap=True)
