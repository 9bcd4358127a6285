"""`inspect` and `train` recognise image/mask folders without being told `--task segment`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medlens.cli.main import get_app
from medlens.data.synthetic.brain import make_brain_mri_like

runner = CliRunner()


@pytest.fixture(scope="module")
def brain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_brain_mri_like(tmp_path_factory.mktemp("brain") / "data", patients=3, slices=4,
                               size=32, seed=3)


def test_inspect_shows_segmentation_pairs_not_classes(brain):
    res = runner.invoke(get_app(), ["inspect", str(brain)])
    assert res.exit_code == 0, res.output
    assert "kaggle_3m" in res.output and "task: segment" in res.output
    assert "12 usable, 12 with a mask" in res.output
    assert "Patients: 3 (segmentation)" in res.output
    assert "Classes:" not in res.output  # case folders are not classes


def test_inspect_json_counts_masks(brain):
    res = runner.invoke(get_app(), ["inspect", str(brain), "--json"])
    desc = json.loads(res.output)
    assert desc["task"] == "segment" and desc["masks"] == desc["images"] == 12


def test_train_without_task_trains_a_segmenter(brain, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(get_app(), ["train", str(brain), "--out", str(out), "--model", "test_unet",
                                    "--epochs", "1", "--max-steps", "1", "--size", "32"])
    assert res.exit_code == 0, res.output
    assert "recognised as segment data" in res.output and "--task to override" in res.output
    assert json.loads((out / "model" / "metadata.json").read_text())["task"] == "segment"


def test_classify_refuses_3d_options(tmp_path):
    res = runner.invoke(get_app(), ["train", str(tmp_path), "--task", "classify", "--spatial-dims", "3"])
    assert res.exit_code == 2 and "--spatial-dims: option(s) of --task segment" in res.output


def test_mask_pattern_pairs_any_naming(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("images", "seg"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(8):
        img = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        mask[8 + i:20, 8:20] = 255
        img[mask > 0] = 220
        Image.fromarray(img).save(tmp_path / "data" / "images" / f"case{i}.png")
        Image.fromarray(mask).save(tmp_path / "data" / "seg" / f"case{i}_label.png")
    out = tmp_path / "run"
    res = runner.invoke(get_app(), ["train", str(tmp_path / "data"), "--mask-pattern", "../seg/{stem}_label{ext}",
                                    "--out", str(out), "--model", "test_unet", "--epochs", "1",
                                    "--max-steps", "1", "--size", "32"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["slices"]["train"] + metrics["slices"]["val"] + metrics["slices"]["test"] == 8
