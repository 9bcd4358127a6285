"""`medlens cv DATA`: k-fold cross-validation of any task (classify, segment), one driver and
one folder (:mod:`medlens.pipelines.cv_driver`). The task is detected like ``train`` does
(``--task`` to override) and dispatched through the task registry; ``medlens segment-cv``
(:mod:`medlens.cli.segment`) is this command with ``--task segment``."""

from __future__ import annotations

from pathlib import Path

import typer

from medlens.cli.app import app, make_console
from medlens.cli.boundary import out_must_be_folder
from medlens.cli.options import (
    CLASSIFY,
    LAYOUT_HELP,
    MASK_DEFAULT,
    PATCH_DEFAULT,
    by_layout,
    check_device,
    check_model,
    colour_constancy_option,
    column_option,
    device_option,
    group_by_option,
    layout_option,
    outside_paths_option,
    stain_option,
    task_help,
)
from medlens.errors import ConfigError


@app.command("cv")
def cv_cmd(
    data: Path = typer.Argument(..., help="data folder, CSV manifest, MedMNIST .npz or segmentation data"),
    task: str | None = typer.Option(None, "--task", help=task_help(),
                                    show_default="segment when DATA holds image/mask pairs, else classify; "
                                    "with --resume: the folder's"),
    folds: int | None = typer.Option(
        None, "--folds", "-k", min=2, help="number of folds (each image, or group, is held out once)",
        show_default="5; segment: 3; leave-one-group-out for a --group-by other than patient with at most "
        "10 groups; with --resume: the folder's",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="output folder (cv_plan.json, folds.csv, fold_<k>/, cv_metrics.json, "
        "cv_report.html)", show_default="runs/<data>-cv-<date>-<time>"
    ),
    config: Path | None = typer.Option(
        None, "--config", help="JSON/YAML config; flags override it", show_default="none"
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="model name (see `medlens models`)", show_default=by_layout("model"),
    ),
    pretrained: str | None = typer.Option(None, "--pretrained", help="local weights file, or imagenet "
                                          "(efficientnet_lite0/1/2; the medlens[imagenet] extra)",
                                          show_default="none: random initial weights"),
    size: int | None = typer.Option(
        None, "--size", help="input side in pixels", show_default=by_layout("size")
    ),
    epochs: int | None = typer.Option(None, "--epochs", show_default=by_layout("epochs")),
    batch_size: int | None = typer.Option(None, "--batch-size", show_default=by_layout("batch_size")),
    lr: float | None = typer.Option(None, "--lr", help="learning rate", show_default=by_layout("lr")),
    patience: int | None = typer.Option(
        None, "--patience", help="early stopping: epochs without improvement", show_default=by_layout("patience"),
    ),
    seed: int | None = typer.Option(None, "--seed", show_default=str(CLASSIFY["seed"])),
    device: str | None = device_option(None),
    max_steps: int | None = typer.Option(
        None, "--max-steps", help="cap on steps per epoch", show_default="no cap"
    ),
    val_fraction: float | None = typer.Option(
        None, "--val-fraction", help="classify: validation share carved from each fold's training part",
        show_default=f"{CLASSIFY['val_fraction']}; segment: one validation patient per fold",
    ),
    layout: str | None = layout_option(LAYOUT_HELP + "; segment: kaggle_3m, pairs, nnunet, volumes"),
    label_column: str | None = column_option("--label-column"),
    path_column: str | None = column_option("--path-column"),
    patient_column: str | None = column_option("--patient-column"),
    allow_outside_paths: bool = outside_paths_option(),
    no_audit: bool = typer.Option(False, "--no-audit", help="skip the quick audit"),
    ignore_audit: bool = typer.Option(
        False, "--ignore-audit", help="run despite blocking audit findings"
    ),
    loss: str | None = typer.Option(None, "--loss", help="segment: dice, dice_bce, jaccard, focal, dice_focal",
                                    show_default="dice_bce"),
    mask_pattern: str | None = typer.Option(None, "--mask-pattern",
                                            help="segment, pairs layout: mask path from the image's folder, "
                                            "e.g. '../masks/{stem}_seg{ext}'", show_default=MASK_DEFAULT),
    spatial_dims: int | None = typer.Option(None, "--spatial-dims", help="segment: 2 (U-Net on slices) or "
                                            "3 (3D U-Net on volumes)", show_default="2"),
    patch: str | None = typer.Option(None, "--patch", help="segment, 3D: patch D,H,W (slices,rows,columns), "
                                     "e.g. 32,64,64", show_default=PATCH_DEFAULT),
    ensemble: int | None = typer.Option(None, "--ensemble", help="networks averaged into one model per fold "
                                        "(seeds seed, seed+1, …)", show_default="1; 3 for idc and segment data of ≥ 10 patients"),
    ensemble_by: str | None = typer.Option(None, "--ensemble-by", help="with --ensemble N: seed (members "
                                           "differ by seed) or folds (nnU-Net's cross-validation ensemble: "
                                           "member k validated on fold k of the training patients)",
                                           show_default="seed; folds where the recipe picks 3"),
    group_by: str | None = group_by_option(),
    stain_normalize: str | None = stain_option(),
    colour_constancy: str | None = colour_constancy_option(),
    resume: bool = typer.Option(
        False, "--resume", help="continue the cross-validation in --out with its saved settings (other flags "
        "are ignored): finished folds are read back, an interrupted one continues from its checkpoints"
    ),
) -> None:
    """Cross-validate on DATA: classify (per-fold and pooled out-of-fold AUC with 95 % CIs),
    segment (leave-patients-out, mean per-patient-volume Dice) or patient (patient-level
    AUC over folds that never split a patient); --group-by holds out whole sites."""
    from medlens.tasks import check_options

    out_must_be_folder(out)
    options = dict(locals())
    options["device"], options["model"] = check_device(device), check_model(model)
    spec = _cv_task(data, out, task, layout, mask_pattern, resume)
    check_options(spec, {"--" + k.replace("_", "-"): v for k, v in options.items()})
    if spec.cross_validate is None:
        raise ConfigError(f"--task {spec.name} has no cross-validation; `medlens train` trains it once")
    cv, out_dir = spec.cross_validate(data, out, config, resume, folds, options)
    from medlens.cli.commands import show_table
    from medlens.pipelines.cv_driver import METRICS, REPORT

    if spec.cv_summary is not None:
        show_table(spec.cv_summary(cv))
    make_console().print(f"results: {out_dir / METRICS}  (report: {out_dir / REPORT})", soft_wrap=True)


def _cv_task(data: Path, out: Path | None, task: str | None, layout: str | None, mask_pattern: str | None,
             resume: bool):  # noqa: ANN202
    """The task to cross-validate: the folder's on ``--resume``, else as ``train`` chooses it."""
    from medlens.cli.commands import choose_task
    from medlens.tasks import get_task

    if not resume:
        return choose_task(data, task, layout, mask_pattern)
    from medlens.pipelines.cv_driver import plan_for_resume

    planned = get_task(str(plan_for_resume(out, data)["task"]))
    if task is not None and get_task(task) is not planned:
        raise ConfigError(f"{out} holds a cross-validation of --task {planned.name}, not {task}; drop --task "
                          "to resume it, or choose another --out")
    return planned
