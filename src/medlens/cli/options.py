"""Option texts shared by the commands: the flags' help and their *effective* defaults.

An option whose value is ``None`` until a recipe, a config file or the data fills it
cannot show a plain ``[default: …]``; it shows the rule instead. The recipe values are
written out here (importing :mod:`medlens.pipelines.recipes` costs torch's import time
on every ``--help``); ``tests/cli/test_cli_consistency.py`` checks them against the
recipes and the config classes, so the help never drifts from what a run does.

Short flags mean one thing everywhere: ``-o`` output, ``-m`` model, ``-k`` folds,
``-t`` target class, ``-p`` probe; ``-v``/``-q`` belong to ``medlens`` itself.
"""

from __future__ import annotations

from typing import Any

import typer

from medlens.options import DEVICE_HELP

LAYOUT_HELP = "dataset layout: idc, imagefolder, csv, patient_table, medmnist"
LAYOUT_DEFAULT = "detected from DATA"
COLUMN_DEFAULT = "detected from the table's header"
PATIENT_TABLE_DEFAULT = "patients.csv or diagnosis.csv in DATA"
MASK_DEFAULT = "masks paired with images by file name"
PATCH_DEFAULT = "32,64,64, clipped to the smallest training volume"

#: The classification recipes by layout (mirror of ``pipelines.recipes.RECIPES``).
RECIPE: dict[str, dict[str, Any]] = {
    "model": {"idc": "cancernet", "medmnist": "cancernet", "imagefolder": "cancernet",
              "csv": "melanoma_cnn", "patient_table": "resnet18"},
    "size": {"idc": 50, "medmnist": "the images' own side", "csv": 224, "patient_table": 64,
             "imagefolder": 64},
    "equalize": {"idc": "hist"},
    "epochs": {"idc": 20, "csv": 20, "medmnist": 15, "patient_table": 15, "imagefolder": 15},
    "batch_size": {"medmnist": 128, "csv": 16, "idc": 64, "patient_table": 64, "imagefolder": 64},
    "lr": {"medmnist": 0.002, "csv": 0.0005, "idc": 0.001, "patient_table": 0.001,
           "imagefolder": 0.001},
    "patience": {"medmnist": 6, "idc": 6, "csv": 6, "patient_table": 5, "imagefolder": 5},
}
#: What a classification run uses when no recipe matches (``RunConfig`` defaults).
UNMATCHED: dict[str, Any] = {"model": "cancernet", "size": 64, "equalize": "none", "epochs": 10,
                             "batch_size": 64, "lr": 0.001, "patience": 5}
#: A segmentation run's defaults (``segment.config.SegmentConfig`` and ``DEFAULT_TRAIN``).
SEGMENT: dict[str, Any] = {"model": "unet", "size": 128, "epochs": 50, "batch_size": 16, "lr": 0.003,
                           "patience": "off: every epoch, the last weights; --patience N stops early "
                                       "and keeps the best epoch",
                           "val_fraction": 0.2, "test_fraction": 0.2}
#: Classification defaults that no recipe changes (``DataConfig``, ``EvalConfig``, ...).
CLASSIFY: dict[str, Any] = {"val_fraction": 0.15, "test_fraction": 0.15, "channels": 3,
                            "scheduler": "cosine", "seed": 0, "balance": "weighted_loss",
                            "target_sensitivity": 0.95, "patient_aggregate": "mean"}


def by_layout(key: str, *, segment: bool = True) -> str:
    """``"from the recipe: 20 for idc and csv, 15 for …, 10 otherwise; segment: 50"``."""
    groups: dict[str, list[str]] = {}
    for layout, value in RECIPE[key].items():
        if value != UNMATCHED[key]:  # a layout with the usual value needs no mention
            groups.setdefault(str(value), []).append(layout)
    parts = [f"{value} for {_and(layouts)}" for value, layouts in groups.items()]
    parts.append(f"{UNMATCHED[key]} otherwise")
    text = "from the recipe: " + ", ".join(parts)
    return f"{text}; segment: {SEGMENT[key]}" if segment and key in SEGMENT else text


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def layout_option(help: str = LAYOUT_HELP) -> Any:
    """``--layout``: the data layout, detected when not given."""
    return typer.Option(None, "--layout", help=help, show_default=LAYOUT_DEFAULT)


def column_option(flag: str) -> Any:
    """A manifest column (``--label-column``, ``--path-column``, …), detected from the header."""
    return typer.Option(None, flag, show_default=COLUMN_DEFAULT)


def patient_table_option(help: str | None = None) -> Any:
    """``--patient-table``: the patient_table layout's CSV of patient labels."""
    return typer.Option(None, "--patient-table", help=help, show_default=PATIENT_TABLE_DEFAULT)


def outside_paths_option() -> Any:
    """``--allow-outside-paths``: manifest paths may leave the data folder (off: refused)."""
    return typer.Option(False, "--allow-outside-paths", help="accept manifest paths outside the data folder "
                        "(../, absolute paths, symlinks leading out)")


GROUP_BY_HELP = ("what each fold holds out whole: patient, institution (a manifest column institution/site/"
                 "center/hospital, else TCGA case ids), a manifest column name, or regex:<pattern> with one "
                 "group (searched in the patient id, else the file path); without --folds, a non-patient "
                 "grouping with at most 10 groups is leave-one-group-out")
STAIN_HELP = ("classify, RGB histology: normalise H&E stain to a reference fitted on the training split "
              "(none, macenko, reinhard; stored in the package and applied at prediction)")


def group_by_option() -> Any:
    """``--group-by``: what a cross-validation fold holds out (:mod:`medlens.data.groups`)."""
    return typer.Option(None, "--group-by", help=GROUP_BY_HELP, show_default="patient")


def stain_option() -> Any:
    """``--stain-normalize``: ``preprocess.stain_normalize`` (off unless given or in a config file)."""
    return typer.Option(None, "--stain-normalize", help=STAIN_HELP, show_default="none")


def colour_constancy_option() -> Any:
    """``--colour-constancy``: ``preprocess.colour_constancy`` (the small-photo recipe turns it on)."""
    return typer.Option(None, "--colour-constancy", help="classify, RGB photos: none or shades_of_gray (each "
                        "image's colour cast removed; applied at prediction too)",
                        show_default="shades_of_gray for small photo sets, else none")


def device_option(default: str | None = "auto") -> Any:
    """``--device`` (no short flag). ``None`` as default: a config file's value wins."""
    return typer.Option(default, "--device", help=DEVICE_HELP,
                        show_default="auto" if default is None else True)


def check_device(device: str | None) -> str | None:
    """Validate ``--device`` before any work (``ConfigError``, exit 2); ``None`` passes."""
    from medlens.options import check_device as check

    return None if device is None else check(device)


def check_model(name: str | None) -> str | None:
    """Validate ``--model`` before any data is read (``ConfigError`` with "did you mean",
    exit 2); ``timm/*`` names are checked when built, ``None`` passes."""
    if name is None or name.startswith("timm/"):
        return name
    from medlens.models.registry import MODELS, import_builtin_models

    import_builtin_models()
    return MODELS.get(name).name


def task_help() -> str:
    """The task names ``--task`` accepts, in words (the built-in ones; plug-ins are listed by
    the error a wrong name gives)."""
    from medlens.tasks.registry import BUILTIN_TASKS

    names = list(BUILTIN_TASKS)
    return ", ".join(names[:-1]) + f" or {names[-1]}"
