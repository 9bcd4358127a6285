"""A segmentation package's training fingerprint guards ``medlens predict`` like a classifier's."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medlens.cli.main import get_app


@pytest.fixture(scope="module")
def seg_package(kaggle_set, tmp_path_factory):
    """An untrained test_unet package with the metadata (and fingerprint) training writes."""
    from medlens.data.fingerprint import fingerprint_index
    from medlens.models import create_model
    from medlens.package import save_model_package
    from medlens.segment.config import SegmentConfig
    from medlens.segment.layouts import load_segmentation_dataset
    from medlens.segment.workflow import package_metadata

    cfg = SegmentConfig(data=str(kaggle_set), size=32, model="test_unet")
    meta = package_metadata(cfg, {"channels": 3, "size": [32, 32], "divisor": 4, "spatial_dims": 2,
                                  "patch": None}, {})
    meta["data_fingerprint"] = fingerprint_index(load_segmentation_dataset(kaggle_set), split=None)
    run = tmp_path_factory.mktemp("segood") / "run"
    save_model_package(run / "model", create_model("test_unet", num_classes=1, in_channels=3), model_name="test_unet",
                       model_kwargs={"num_classes": 1, "in_channels": 3}, metadata=meta)
    return run


def test_fingerprint_of_a_kaggle_3m_set(seg_package):
    from medlens.package import ModelPackage

    fp = ModelPackage(seg_package).fingerprint
    assert fp["modality"] == "MR" and fp["channels"] == [3] and fp["size"]["height"] == [32, 32]


def test_strict_segment_predict_refuses_a_16_bit_image(seg_package, kaggle_set, tmp_path):
    noise = tmp_path / "noise16.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 65535, (32, 32), dtype=np.uint16)).save(noise)
    res = CliRunner().invoke(get_app(), ["predict", str(seg_package), str(noise), "--strict",
                                         "--out", str(tmp_path / "pred")])
    assert res.exit_code == 1 and "noise16.png (1 channel, trained on 3)" in res.output
    assert not (tmp_path / "pred").exists()
    slice_ = next(kaggle_set.glob("*/*_2.tif"))
    ok = CliRunner().invoke(get_app(), ["predict", str(seg_package), str(slice_), "--strict",
                                        "--out", str(tmp_path / "pred")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "pred" / f"{slice_.stem}_mask.tif").is_file()
