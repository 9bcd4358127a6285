"""`medlens segment-cv DATA`: leave-patients-out cross-validation of a segmentation model.

(``medlens train DATA --task segment``, ``evaluate`` and ``predict`` are wired in the
spine's commands and call :mod:`medlens.segment.workflow` / :mod:`medlens.segment.predict`.)
"""

from __future__ import annotations

from pathlib import Path

import typer

from medlens.cli.app import app
from medlens.cli.boundary import out_must_be_folder
from medlens.cli.options import (
    LAYOUT_DEFAULT,
    MASK_DEFAULT,
    PATCH_DEFAULT,
    check_device,
    check_model,
    device_option,
)


@app.command("segment-cv")
def segment_cv(
    data: Path = typer.Argument(..., help="segmentation data folder (kaggle_3m, pairs, nnunet, volumes)"),
    out: Path = typer.Option(Path("runs/segment-cv"), "--out", "-o", help="folder for one run per fold"),
    folds: int = typer.Option(3, "--folds", "-k", min=2, help="patient groups; each is the test set once"),
    model: str = typer.Option("unet", "--model", "-m", help="see `medlens models '*unet*'`"),
    size: int = typer.Option(128, "--size", help="slice side after resizing"),
    epochs: int = typer.Option(50, "--epochs"),
    batch_size: int = typer.Option(16, "--batch-size"),
    lr: float = typer.Option(3e-3, "--lr"),
    loss: str = typer.Option("dice_bce", "--loss", help="dice, dice_bce, jaccard, focal, dice_focal"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="cap on steps per epoch", show_default="no cap"),
    layout: str | None = typer.Option(None, "--layout", help="kaggle_3m, pairs, nnunet or volumes",
                                      show_default=LAYOUT_DEFAULT),
    mask_pattern: str | None = typer.Option(None, "--mask-pattern",
                                            help="pairs: mask path relative to the image's folder, e.g. "
                                            "'../masks/{stem}_seg{ext}'", show_default=MASK_DEFAULT),
    seed: int = typer.Option(0, "--seed"),
    spatial_dims: int = typer.Option(2, "--spatial-dims", help="2: U-Net on slices; 3: 3D U-Net on volumes"),
    patch: str | None = typer.Option(None, "--patch", help="3D patch D,H,W (slices,rows,columns), e.g. 32,64,64",
                                     show_default=PATCH_DEFAULT),
    ensemble: int = typer.Option(1, "--ensemble", help="models per fold from seeds seed, seed+1, …; "
                                                        "probabilities averaged"),
    resume: bool = typer.Option(False, "--resume", help="continue the cross-validation in --out with its "
                                                        "saved settings (other flags are ignored)"),
    device: str = device_option(),
) -> None:
    """Train on some patients, test on patients never seen; mean per-patient-volume Dice."""
    from medlens.segment.config import DEFAULT_TRAIN, make_config, parse_patch
    from medlens.segment.workflow import cross_validate, load_cv_plan

    out_must_be_folder(out)
    device, model = check_device(device), check_model(model)
    if resume:
        from medlens.errors import ConfigError

        cfg, folds = load_cv_plan(out)
        if Path(cfg.data).resolve() != data.resolve():
            raise ConfigError(f"{out} cross-validated {cfg.data}, not {data}; give the same data to resume")
        res = cross_validate(cfg, out, folds=folds, resume=True)
        _print_cv(res, out)
        return
    train = dict(DEFAULT_TRAIN, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                 max_steps_per_epoch=max_steps, device=device)
    cfg = make_config(data=str(data), layout=layout, mask_pattern=mask_pattern, model=model, size=size, loss=loss, train=train,
                      spatial_dims=spatial_dims, patch=parse_patch(patch) if patch else None,
                      ensemble=ensemble)
    res = cross_validate(cfg, out, folds=folds)
    _print_cv(res, out)


def _print_cv(res: dict, out: Path) -> None:
    for pid, row in sorted(res["per_patient"].items(), key=lambda kv: kv[1]["dice"]):
        typer.echo(f"{pid}: Dice {row['dice']:.3f}")
    typer.echo(f"mean per-patient-volume Dice over {int(res['patients'])} unseen patients: "
               f"{res['mean_dice']:.3f}  ({out / 'cv_metrics.json'})")
