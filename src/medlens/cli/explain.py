"""``medlens explain`` and ``medlens probe``: heat maps, faithfulness and bias probes."""

from __future__ import annotations

from pathlib import Path

import typer

from medlens.cli.app import app
from medlens.cli.boundary import out_must_be_folder
from medlens.cli.options import device_option


def _target(pkg, value: str | None) -> int | None:
    if value is None:
        return None
    if value.strip().lstrip("-").isdigit():
        return int(value)
    from medlens.options import look_up_option

    classes = list(getattr(pkg, "classes", []) or [])
    return classes.index(look_up_option(value, classes, what="target class"))


@app.command("explain")
def explain_command(
    model: Path = typer.Argument(..., help="Model package (run folder or its model/ folder)."),
    inputs: list[Path] = typer.Argument(..., help="Image/volume files or folders."),
    method: str = typer.Option(
        "gradcam",
        "--method",
        help="gradcam, gradcam++, lime, occlusion, integrated-gradients (no short flag: -m is --model).",
    ),
    target: str | None = typer.Option(
        None, "--target", "-t", help="Class index or name.", show_default="the predicted class"
    ),
    layer: str | None = typer.Option(
        None, "--layer", help="Dotted layer name for CAMs.", show_default="the model's CAM layer"
    ),
    out: Path = typer.Option(Path("explanations"), "--out", "-o", help="Output folder."),
    evaluate: bool = typer.Option(
        False, "--evaluate", help="Also rank all methods by deletion/insertion faithfulness."
    ),
    max_eval_images: int = typer.Option(8, "--max-eval-images", help="Images used by --evaluate."),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse (exit 1) inputs unlike the training data instead of flagging them."
    ),
    device: str = device_option(),
) -> None:
    """Write a heat-map overlay (PNG) and the raw map (.npy) for every input.

    A file that cannot be read is named with the reason and skipped; the exit code is 1
    only when none could be read.
    """
    from medlens.options import resolve_device

    device = resolve_device(device)  # a bad value is refused before the package is read
    from rich.console import Console

    from medlens.explain.files import evaluate_files, explain_files
    from medlens.io.atomic import atomic_write_json
    from medlens.package import load_model

    out_must_be_folder(out)
    console = Console()
    pkg = load_model(model, device=device)
    tgt = _target(pkg, target)
    from medlens.pipelines.ood_guard import guard_files

    guard_files(pkg, inputs, strict=strict)  # out-of-distribution inputs: warn, or refuse before writing
    records = explain_files(pkg, inputs, method=method, target=tgt, layer=layer, out_dir=out,
                            on_skip=lambda path, why: typer.echo(f"skipped {path}: {why}", err=True))
    done = sum("error" not in r for r in records)
    skipped = f" ({len(records) - done} unreadable input(s) skipped)" if done < len(records) else ""
    console.print(f"Wrote {done} overlay(s) and map(s) to {out}{skipped}", soft_wrap=True)
    if evaluate:
        table = evaluate_files(pkg, inputs, target=tgt, layer=layer, max_images=max_eval_images)
        console.print(table.to_rich())
        console.print(table.verdict())
        atomic_write_json(out / "faithfulness.json", table.to_dict())


@app.command("probe")
def probe_command(
    model: Path = typer.Argument(..., help="Model package (run folder or its model/ folder)."),
    data: Path = typer.Argument(..., help="Folder of images (class sub-folders give labels)."),
    out: Path = typer.Option(Path("probes"), "--out", "-o", help="Output folder."),
    probes: list[str] | None = typer.Option(
        None, "--probe", "-p", help="Probe to run (repeatable).", show_default="all"
    ),
    max_images: int = typer.Option(
        64, "--max-images", help="Images sampled from DATA (patients, for a patient-level model)."
    ),
    seed: int = typer.Option(0, "--seed"),
    device: str = device_option(),
) -> None:
    """Perturb images (hide region, shapes, background, blur, colour, equalize) and report
    how often and how far predictions move, per class.

    For a patient-level (bag) model every cell of each test patient is perturbed, all at once
    and one at a time, and the change of the patient's disease score is reported."""
    from medlens.options import resolve_device

    device = resolve_device(device)  # a bad value is refused before the package is read
    from rich.console import Console
    from rich.table import Table

    from medlens.explain.bag_probes import BAG_PROBES, bag_probe_target
    from medlens.explain.files import probe_files
    from medlens.explain.probes import DEFAULT_PROBES
    from medlens.package import load_model

    out_must_be_folder(out)
    pkg = load_model(model, device=device)
    target = bag_probe_target(pkg)
    if target is not None:  # the task answers per bag (patient): probe cells, watch the patient score
        result = probe_files(pkg, data, out_dir=out, max_images=max_images, seed=seed, probes=probes or BAG_PROBES)
        title = (f"Bias probes on {result['n_patients']} patients, {result['n_images']} cells "
                 f"(per class by {result['grouped_by']}; Δ of the patient disease score)")
    else:
        result = probe_files(
            pkg, data, out_dir=out, max_images=max_images, seed=seed, probes=probes or DEFAULT_PROBES
        )
        title = f"Bias probes on {result['n_images']} images (per class by {result['grouped_by']})"
    bag = target is not None
    table = Table(title=title)
    table.add_column("probe")
    table.add_column("flip rate", justify="right")
    table.add_column("mean |Δ score|" if bag else "mean |Δp|", justify="right")
    if bag:
        table.add_column("max |Δ score|", justify="right")
        table.add_column("one cell: mean / max |Δ|", justify="right")
        table.add_column("flipped by one cell", justify="right")
    table.add_column("per class flip rate")
    for name, r in result["probes"].items():
        per = ", ".join(f"{c}: {v['flip_rate']:.0%}" for c, v in r["per_class"].items())
        extra = []
        if bag:
            cell = r["per_cell"]
            extra = [f"{r['max_abs_dscore']:.3f}", f"{cell['mean_abs_dscore']:.3f} / {cell['max_abs_dscore']:.3f}",
                     str(cell["patients_flipped_by_one_cell"])]
        table.add_row(name, f"{r['flip_rate']:.0%}", f"{r['mean_abs_dprob']:.3f}", *extra, per)
    console = Console()
    console.print(table)
    console.print(f"Images: {result['images_from']}")
    console.print(
        f"Wrote {out / 'probes.html'}, {out / 'probes.json'} and example PNGs in {out / 'examples'}"
    )
