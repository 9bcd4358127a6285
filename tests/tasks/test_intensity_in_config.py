"""The intensity policy is part of the segmentation config: chosen by a config file, used for
training, stored in the package and applied again when the package predicts a volume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner


def test_config_file_picks_a_fixed_window_that_the_package_keeps(tmp_path: Path):
    from medlens.cli.main import register_all
    from medlens.data.synthetic.brain import make_brain_mri_like
    from medlens.io.volumes import read_volume
    from medlens.package import load_model
    from medlens.segment.config import SegmentConfig
    from medlens.transforms.intensity import FixedWindow

    data = make_brain_mri_like(tmp_path / "data", patients=3, slices=4, size=32, seed=4, fmt="nifti")
    cfg_file = tmp_path / "ct.json"
    cfg_file.write_text(json.dumps({"intensity": {"kind": "fixed", "lower": 0, "upper": 50}}))
    out = tmp_path / "run"
    res = CliRunner().invoke(register_all(), [
        "train", str(data), "--task", "segment", "--config", str(cfg_file), "--out", str(out), "--model", "test_unet",
        "--size", "32", "--epochs", "1", "--max-steps", "1", "--val-fraction", "0.34", "--test-fraction", "0.34"])
    assert res.exit_code == 0, res.output
    pkg = load_model(out)
    assert pkg.metadata["preprocess"]["intensity"] == {"kind": "fixed", "lower": 0.0, "upper": 50.0, "output": "uint8"}
    assert isinstance(pkg.config, SegmentConfig) and isinstance(pkg.config.intensity, FixedWindow)

    vol_file = sorted(p for p in Path(data).rglob("*.nii.gz") if "mask" not in p.name and "seg" not in p.name)[0]
    rows = pkg.predict([vol_file])
    assert "error" not in rows[0], rows[0]
    assert rows[0]["mask"].shape == read_volume(vol_file).array.shape[-3:]
    # the window changes what the network sees: the same volume under the default policy differs
    from medlens.transforms.intensity import PercentileWindow

    arr = read_volume(vol_file).array
    arr = arr if arr.ndim == 4 else arr[None]
    assert not np.array_equal(FixedWindow(lower=0, upper=50).apply(arr), PercentileWindow().apply(arr))
