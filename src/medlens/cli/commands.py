"""The spine's commands: inspect, train, evaluate, predict, demo."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import typer

from medlens.cli.app import _console, app
from medlens.errors import BadInputError, ConfigError

LAYOUT_HELP = "dataset layout (auto-detected when omitted): idc, imagefolder, csv, patient_table, medmnist"


@app.command("inspect")
def inspect_cmd(
    data: Path = typer.Argument(..., help="data folder, CSV manifest or MedMNIST .npz"),
    layout: str | None = typer.Option(None, "--layout", help=LAYOUT_HELP),
    label_column: str | None = typer.Option(None, "--label-column"),
    path_column: str | None = typer.Option(None, "--path-column"),
    patient_column: str | None = typer.Option(None, "--patient-column"),
    patient_table: str | None = typer.Option(None, "--patient-table"),
    as_json: bool = typer.Option(False, "--json", help="print the description as JSON"),
) -> None:
    """Show what medlens detects in DATA: layout, classes, counts, patients, unreadable files."""
    from medlens.data.describe import check_readable, describe, format_description, inspect_path

    workers = os.cpu_count() or 1
    seg_layout = segmentation_layout(data, layout)
    if seg_layout is not None:  # image/mask pairs: the segmentation reader knows them
        from medlens.segment.layouts import load_segmentation_dataset

        index = load_segmentation_dataset(data, layout=seg_layout)
        if seg_layout in ("kaggle_3m", "pairs"):  # 2D files: decode each (volumes are read at training)
            index = check_readable(index, workers=workers)
        desc = describe(index)
    else:
        index, desc = inspect_path(data, workers=workers, layout=layout, label_column=label_column,
                                   path_column=path_column, patient_column=patient_column,
                                   patient_table=patient_table)
    if as_json:
        typer.echo(json.dumps(desc, indent=2, default=str))
    else:
        typer.echo(format_description(desc))
    usable = len(index.records)
    if usable == 0:
        raise BadInputError(f"{data}: nothing usable remains ({len(index.problems)} problem(s) listed above)")


@app.command("train")
def train_cmd(
    data: Path = typer.Argument(..., help="data folder, CSV manifest or MedMNIST .npz"),
    out: Path | None = typer.Option(None, "--out", "-o", help="run directory (default runs/<data>-<time>)"),
    task: str | None = typer.Option(None, "--task",
                                       help="classify or segment (default: segment when DATA holds image/mask pairs)"),
    config: Path | None = typer.Option(None, "--config", help="JSON/YAML config; flags override it"),
    model: str | None = typer.Option(None, "--model", "-m", help="model name (see `medlens models`)"),
    pretrained: str | None = typer.Option(None, "--pretrained", help="local weights file"),
    size: int | None = typer.Option(None, "--size", help="input side in pixels"),
    channels: int | None = typer.Option(None, "--channels", help="1 (grey) or 3 (RGB)"),
    equalize: str | None = typer.Option(None, "--equalize", help="none, hist or clahe"),
    epochs: int | None = typer.Option(None, "--epochs"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr"),
    patience: int | None = typer.Option(None, "--patience"),
    scheduler: str | None = typer.Option(None, "--scheduler", help="cosine, plateau or none"),
    seed: int | None = typer.Option(None, "--seed"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="cap on steps per epoch"),
    balance: str | None = typer.Option(None, "--balance", help="weighted_loss, sampler or none"),
    no_augment: bool = typer.Option(False, "--no-augment"),
    layout: str | None = typer.Option(None, "--layout", help=LAYOUT_HELP),
    label_column: str | None = typer.Option(None, "--label-column"),
    path_column: str | None = typer.Option(None, "--path-column"),
    patient_column: str | None = typer.Option(None, "--patient-column"),
    patient_table: str | None = typer.Option(None, "--patient-table"),
    val_fraction: float | None = typer.Option(None, "--val-fraction"),
    test_fraction: float | None = typer.Option(None, "--test-fraction"),
    target_sensitivity: float | None = typer.Option(None, "--target-sensitivity"),
    negative_class: str | None = typer.Option(None, "--negative-class"),
    patient_aggregate: str | None = typer.Option(None, "--patient-aggregate", help="mean, max or topk"),
    exclude: Path | None = typer.Option(None, "--exclude", help="file of paths to leave out"),
    no_audit: bool = typer.Option(False, "--no-audit", help="skip the quick audit"),
    ignore_audit: bool = typer.Option(False, "--ignore-audit", help="train despite blocking audit findings"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    spatial_dims: int | None = typer.Option(None, "--spatial-dims", help="segment: 2 (slices, default) or 3 (volumes)"),
    mask_pattern: str | None = typer.Option(None, "--mask-pattern",
                                               help="segment, pairs layout: mask path from the image's folder, "
                                                "e.g. '../masks/{stem}_seg{ext}'"),
    patch: str | None = typer.Option(None, "--patch", help="segment, 3D: patch D,H,W (slices,rows,columns), e.g. 32,64,64"),
    ensemble: int | None = typer.Option(None, "--ensemble",
                                           help="segment: models from seeds seed, seed+1, …, probabilities averaged"),
) -> None:
    """Train a model on DATA and write a run directory (report, metrics, model package)."""
    from medlens.pipelines.config import RunConfig, deep_update, load_config_file
    from medlens.pipelines.recipes import apply_recipe

    if task is None:
        task = "segment" if mask_pattern or segmentation_layout(data, layout) else "classify"
        if task == "segment":
            typer.echo(f"{data}: image/mask pairs found, training a segmenter (--task classify to override)")
    if task == "segment":
        _train_segment(data, out, config, resume, locals())
        return
    if task != "classify":
        raise ConfigError(f"--task must be classify or segment, got {task!r}")
    if spatial_dims not in (None, 2) or patch is not None or mask_pattern is not None or ensemble is not None:
        raise ConfigError("--spatial-dims/--patch/--mask-pattern/--ensemble are segmentation options; classification "
                          "trains one model on 2D images (add --task segment for a U-Net)")
    if resume:
        if out is None or not (out / "config.json").exists():
            raise ConfigError("--resume needs --out pointing at an existing run directory (with config.json)")
        cfg = RunConfig(**json.loads((out / "config.json").read_text()))
    else:
        base = load_config_file(config) if config else {}
        flat = dict(layout=layout, label_column=label_column, path_column=path_column,
                    patient_column=patient_column, patient_table=patient_table, val_fraction=val_fraction,
                    test_fraction=test_fraction, exclude=str(exclude) if exclude else None,
                    size=size, channels=channels, equalize=equalize, epochs=epochs, batch_size=batch_size,
                    lr=lr, patience=patience, scheduler=scheduler, seed=seed, device=device,
                    max_steps_per_epoch=max_steps, target_sensitivity=target_sensitivity,
                    negative_class=negative_class, patient_aggregate=patient_aggregate)
        over = _nest(flat)
        if model:
            over.setdefault("model", {})["name"] = model
        if pretrained:
            over.setdefault("model", {})["pretrained"] = pretrained
        if balance:
            over["balance"] = balance
        if no_augment:
            over.setdefault("augment", {})["enabled"] = False
        if no_audit:
            over.setdefault("data", {})["audit"] = False
        if ignore_audit:
            over.setdefault("data", {})["ignore_audit"] = True
        merged = deep_update(base, over)
        merged.setdefault("data", {})["path"] = str(data)
        cfg = apply_recipe(merged)
        out = out or Path("runs") / f"{Path(data).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (out / "checkpoints" / "last.pt").exists():
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    from medlens.pipelines.classification import train_classifier

    outcome = train_classifier(cfg, out, resume=resume)
    _print_summary(outcome.metrics, out)


def segmentation_layout(data: Path, layout: str | None) -> str | None:
    """The segmentation layout DATA is in (the one named by --layout, or detected), else None."""
    try:
        from medlens.segment.layouts import SEGMENT_LAYOUTS, detect_segmentation_layout
    except ImportError:  # a build without segmentation
        return None
    if layout:
        return layout if layout in SEGMENT_LAYOUTS.names() else None
    return detect_segmentation_layout(data)


def _train_segment(data: Path, out: Path | None, config: Path | None, resume: bool, opts: dict) -> None:
    try:
        from medlens.segment.workflow import train_from_cli
    except ImportError:
        raise ConfigError("segmentation support is not installed in this build") from None
    train_from_cli(data=data, out=out, config=config, resume=resume, options=opts)


def _nest(flat: dict) -> dict:
    from medlens.pipelines.config import DataConfig, EvalConfig
    from medlens.train.config import TrainConfig
    from medlens.transforms.preprocess import PreprocessConfig

    owners = {}
    for sec, model in (("data", DataConfig), ("preprocess", PreprocessConfig), ("train", TrainConfig),
                       ("eval", EvalConfig)):
        for name in model.model_fields:
            owners.setdefault(name, sec)
    out: dict = {}
    for k, v in flat.items():
        if v is not None:
            out.setdefault(owners[k], {})[k] = v
    return out


def _print_summary(metrics: dict, run_dir: Path) -> None:
    from rich.table import Table

    if "mean_dice" in metrics:  # a segmentation package
        _print_segment_summary(metrics, run_dir)
        return
    t = Table(title=f"test metrics ({metrics.get('split', 'test')} split)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("95% CI", justify="right")
    cis = metrics.get("ci") or {}
    for k in ("roc_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "f1"):
        v = metrics.get(k)
        if v is None:
            continue
        ci = cis.get(k)
        ci_s = f"{ci[0]:.3f}–{ci[1]:.3f}" if isinstance(ci, (list, tuple)) and None not in ci else \
            (f"{ci['low']:.3f}–{ci['high']:.3f}" if isinstance(ci, dict) and ci.get("low") is not None else "")
        t.add_row(k, f"{v:.3f}", ci_s)
    op = metrics.get("operating_point")
    if op:
        t.add_row("threshold (val)", f"{op.get('threshold', float('nan')):.3f}", "")
        t.add_row("sens @ threshold", f"{op.get('sensitivity', float('nan')):.3f}", "")
        t.add_row("spec @ threshold", f"{op.get('specificity', float('nan')):.3f}", "")
    pl = metrics.get("patient_level")
    if pl and pl.get("balanced_accuracy") is not None:
        t.add_row("patient balanced acc", f"{pl['balanced_accuracy']:.3f}", "")
    con = _console()
    con.print(t)
    con.print(f"run directory: {run_dir}  (report: {run_dir / 'report.html'})")


def _print_segment_summary(metrics: dict, run_dir: Path) -> None:
    from rich.table import Table

    t = Table(title=f"per-patient segmentation ({metrics.get('split', 'test')} split, "
                    f"{int(metrics.get('patients', 0))} patients)")
    t.add_column("patient")
    for col in ("dice", "iou", "hd95", "volume_error_rel"):
        t.add_column(col, justify="right")
    rows = metrics.get("per_patient") or {}
    for pid, r in sorted(rows.items(), key=lambda kv: kv[1].get("dice", 0)):  # worst first
        t.add_row(pid, *(f"{r.get(c, float('nan')):.3f}" for c in ("dice", "iou", "hd95", "volume_error_rel")))
    t.add_row("mean", *(f"{metrics.get('mean_' + c, float('nan')):.3f}"
                        for c in ("dice", "iou", "hd95", "volume_error_rel")))
    con = _console()
    con.print(t)
    con.print(f"output: {run_dir}  (report: {run_dir / 'report.html'})")


@app.command("evaluate")
def evaluate_cmd(
    model: Path = typer.Argument(..., help="run directory or model package"),
    data: Path = typer.Argument(..., help="data to evaluate on"),
    split: str = typer.Option("test", "--split", help="test, val, train or all"),
    out: Path | None = typer.Option(None, "--out", "-o", help="where to write metrics.json and report.html"),
    layout: str | None = typer.Option(None, "--layout", help=LAYOUT_HELP),
    label_column: str | None = typer.Option(None, "--label-column"),
    path_column: str | None = typer.Option(None, "--path-column"),
    patient_column: str | None = typer.Option(None, "--patient-column"),
    patient_table: str | None = typer.Option(None, "--patient-table"),
) -> None:
    """Evaluate a trained model on DATA: metrics.json and report.html in --out."""
    from medlens.pipelines.evaluate_run import evaluate_model

    metrics, out_dir = evaluate_model(model, data, split=split, out=out, layout=layout,
                                      label_column=label_column, path_column=path_column,
                                      patient_column=patient_column, patient_table=patient_table)
    _print_summary(metrics, out_dir)


@app.command("predict")
def predict_cmd(
    model: Path = typer.Argument(..., help="run directory or model package"),
    inputs: list[Path] = typer.Argument(..., help="image files or folders"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write predictions to .csv or .json"),
    batch_size: int = typer.Option(64, "--batch-size"),
) -> None:
    """Predict images with a trained model: probabilities, decision at the operating point."""
    from medlens.package import load_model
    from medlens.pipelines.predict_io import write_predictions

    pkg = load_model(model)
    if pkg.task != "classify":
        from medlens.segment.predict import predict_cli

        predict_cli(pkg, inputs, out)
        return
    rows = pkg.predict([str(p) for p in inputs], batch_size=batch_size)
    if not rows:
        raise BadInputError("no images found in the given inputs")
    if out:
        write_predictions(rows, out, pkg.classes)
    from rich.table import Table

    t = Table()
    for col in ("file", "predicted", "disease_score", "decision"):
        t.add_column(col)
    for r in rows:
        if "error" in r:
            t.add_row(r["file"], "[red]unreadable[/red]", "", r["error"])
        else:
            t.add_row(r["file"], r["predicted"], f"{r['disease_score']:.3f}", r.get("decision", ""))
    _console().print(t)
    bad = sum("error" in r for r in rows)
    if bad == len(rows):
        raise BadInputError(f"none of the {len(rows)} input(s) could be read")


@app.command("models")
def models_cmd(pattern: str = typer.Argument("*", help="wildcard, e.g. 'resnet*'")) -> None:
    """List the registered model names."""
    from medlens.models import list_models

    for name in list_models(pattern):
        typer.echo(name)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("medlens-demo"), "--out", "-o", help="where to write data and the run"),
    task: str = typer.Option("classify", "--task", help="classify or segment"),
    seed: int = typer.Option(0, "--seed"),
    quick: bool = typer.Option(False, "--quick", help="a tiny version (seconds), for smoke tests"),
) -> None:
    """Generate a synthetic data set, audit it, train, evaluate and report — no download."""
    from medlens.pipelines.demo import run_demo

    run_dir = run_demo(out, task=task, seed=seed, quick=quick)
    typer.echo(f"demo finished: open {run_dir / 'report.html'}")
