"""Pictures in true colours: overlays and probe pictures undo the package's normalisation
instead of stretching the normalised tensor (which turned pink H&E grey-green)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
SIZE = 32


def _pink(seed: int) -> np.ndarray:
    """An H&E-like pink patch: eosin-pink background with a few purple nuclei."""
    rng = np.random.default_rng(seed)
    img = np.empty((SIZE, SIZE, 3), np.float32)
    img[:] = (232, 160, 205)
    img += rng.normal(0, 4, img.shape)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for _ in range(3):
        cy, cx = rng.integers(4, SIZE - 4, 2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 9] = (120, 70, 160)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def imagenet_package(tmp_path_factory) -> Path:
    """A classifier package normalised ImageNet-style, in a run folder."""
    from medlens.models import create_model
    from medlens.package import save_model_package

    torch.manual_seed(0)
    kwargs = {"num_classes": 2, "in_channels": 3}
    model = create_model("test_cnn", **kwargs).eval()
    run = tmp_path_factory.mktemp("run")
    meta = {
        "task": "classify",
        "classes": ["benign", "malignant"],
        "input": {"size": SIZE, "channels": 3},
        "preprocess": {"size": SIZE, "channels": 3},
        "normalize": IMAGENET,
    }
    save_model_package(run / "model", model, model_name="test_cnn", model_kwargs=kwargs, metadata=meta)
    return run


def test_to_display_undoes_the_normalisation():
    from medlens.explain.overlay import to_display

    img = _pink(0).astype(np.float32) / 255
    mean, std = np.array(IMAGENET["mean"]), np.array(IMAGENET["std"])
    x = torch.from_numpy(((img - mean) / std).transpose(2, 0, 1).astype(np.float32))
    shown = to_display(x, (IMAGENET["mean"], IMAGENET["std"]))
    assert np.abs(shown - img).max() < 1e-5


def test_explain_overlay_keeps_the_pink_of_the_input(imagenet_package, tmp_path):
    from medlens.explain.files import explain_files
    from medlens.explain.overlay import MIN_PANEL

    src = _pink(1)
    Image.fromarray(src).save(tmp_path / "patch.png")
    out = tmp_path / "out"
    rec = explain_files(imagenet_package, [tmp_path / "patch.png"], method="gradcam", out_dir=out)[0]
    ov = np.asarray(Image.open(rec["overlay"]).convert("RGB")).astype(int)
    heat = np.load(rec["map"])
    k = MIN_PANEL // SIZE  # the panels are enlarged k×
    left = ov[: SIZE * k : k, : SIZE * k : k]
    right = ov[: SIZE * k : k, SIZE * k + 4 : SIZE * k + 4 + SIZE * k : k]
    # the image panel is the input as the user sees it (old code: min-max stretched)
    assert np.abs(left - src.astype(int)).mean() < 3
    # where the heat map is ~0 the overlay keeps the image's own colour and hue
    cold = heat < 0.05
    assert cold.sum() >= 10
    bg = right[cold]
    assert (bg[:, 0] > bg[:, 1]).mean() > 0.95  # still pink: red over green
    assert np.abs(bg - src[cold].astype(int)).mean() < 6


def test_report_gallery_in_true_colours():
    from medlens.explain.report import _gallery_image

    src = _pink(2).astype(np.float32) / 255
    mean, std = np.array(IMAGENET["mean"]), np.array(IMAGENET["std"])
    x = torch.from_numpy(((src - mean) / std).transpose(2, 0, 1).astype(np.float32))
    rgb = _gallery_image(x, np.zeros((SIZE, SIZE), np.float32), (IMAGENET["mean"], IMAGENET["std"]))
    assert np.abs(rgb.astype(int) - np.round(src * 255).astype(int)).max() <= 1


def _run_data(root: Path, run: Path) -> dict[str, str]:
    """An image-folder set of 12 pink patches and a splits.csv in the run: 4 in test."""
    splits = {}
    for i in range(12):
        d = root / ("benign" if i % 2 else "malignant")
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"img{i}.png"
        Image.fromarray(_pink(10 + i)).save(p)
        splits[str(p.resolve())] = "test" if i < 4 else "train" if i < 10 else "val"
    lines = ["path,split", *(f"{p},{s}" for p, s in splits.items())]
    (run / "splits.csv").write_text("\n".join(lines) + "\n")
    return splits


def test_probe_page_on_the_runs_test_split(imagenet_package, tmp_path):
    from medlens.explain.files import probe_files
    from medlens.explain.probes import DEFAULT_PROBES

    splits = _run_data(tmp_path / "data", imagenet_package)
    out = tmp_path / "probes"
    res = probe_files(imagenet_package, tmp_path / "data", out_dir=out, seed=0, n_examples=1)
    test = {p for p, s in splits.items() if s == "test"}
    assert set(res["inputs"]) == test and res["n_images"] == 4
    assert "test split" in res["images_from"] and res["grouped_by"] == "true label"
    page = (out / "probes.html").read_text(encoding="utf-8")
    assert "Not for clinical use" in page
    for name in DEFAULT_PROBES:
        entry = res["probes"][name]
        assert entry["description"] and "p_before" in entry and "accuracy_after" in entry
        # each probe's caption: name, what it does, score before → after, n per class
        assert f"{name}: {entry['description']}" in page.replace("&#x27;", "'")
        assert f"{entry['p_before']:.3f} → {entry['p_after']:.3f}" in page
    assert "benign: n = 2, malignant: n = 2" in page
    assert page.count("data:image/png;base64,") == len(DEFAULT_PROBES)
    assert json.loads((out / "probes.json").read_text())["images_from"] == res["images_from"]


def test_probe_pictures_are_the_true_image(imagenet_package, tmp_path):
    from medlens.explain.overlay import MIN_PANEL
    from medlens.explain.probes import probe

    src = np.stack([_pink(20 + i) for i in range(2)]).astype(np.float32) / 255
    mean, std = np.array(IMAGENET["mean"]), np.array(IMAGENET["std"])
    x = torch.from_numpy(((src - mean) / std).transpose(0, 3, 1, 2).astype(np.float32))
    import medlens

    pkg = medlens.load_model(str(imagenet_package))
    res = probe(pkg.model, x, probes=["blur"], n_examples=1, example_dir=tmp_path,
                norm=(IMAGENET["mean"], IMAGENET["std"]))
    ex = res["probes"]["blur"]["examples"][0]
    pic = np.asarray(Image.open(ex["image"]).convert("RGB")).astype(int)
    k = MIN_PANEL // SIZE
    before = pic[: SIZE * k : k, : SIZE * k : k]
    assert np.abs(before - np.round(src[ex["index"]] * 255)).max() <= 1
