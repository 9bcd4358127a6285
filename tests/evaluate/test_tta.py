"""Test-time augmentation (``--tta flip``): the mean probability over the image and its two
mirror images; the same on a mirror-symmetric image, different otherwise, recorded in the outputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medlens.cli.main import get_app
from tests.packages import tiny_classifier_package


@pytest.fixture(scope="module")
def pkg_dir(tmp_path_factory):
    return tiny_classifier_package(tmp_path_factory.mktemp("tta") / "run" / "model", classes=("0", "1"),
                                   negative_class=0, threshold=0.5, temperature=1.0)


def _symmetric(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    a = rng.integers(0, 256, (size, size, 3)).astype(np.float64)
    return ((a + a[::-1] + a[:, ::-1] + a[::-1, ::-1]) / 4).round().astype(np.uint8)


def test_flip_tta_is_identity_on_symmetric_images_and_differs_otherwise(pkg_dir):
    from medlens.package import load_model

    rng = np.random.default_rng(0)
    sym = [_symmetric(rng) for _ in range(3)]
    noise = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    pkg = load_model(pkg_dir)
    flip = load_model(pkg_dir, tta="flip")
    np.testing.assert_allclose(flip.predict_proba(sym), pkg.predict_proba(sym), atol=1e-6)
    p_none, p_flip = pkg.predict_proba(noise), flip.predict_proba(noise)
    assert np.abs(p_none - p_flip).max() > 1e-5
    np.testing.assert_allclose(p_flip.sum(1), 1.0, atol=1e-6)
    # the flip mode is exactly the mean over the three views
    views = [noise, [im[:, ::-1] for im in noise], [im[::-1] for im in noise]]
    np.testing.assert_allclose(p_flip, np.mean([pkg.predict_proba(v) for v in views], axis=0), atol=1e-6)


def test_evaluate_uses_the_same_tta_as_predict(pkg_dir):
    """evaluate averages over flipped cached images: the same numbers as predict_proba."""
    from medlens.package import load_model
    from medlens.pipelines.evaluate_run import package_logits, tta_probabilities
    from medlens.transforms.preprocess import PreprocessConfig, preprocess_image

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    flip = load_model(pkg_dir, tta="flip")
    cached = np.stack([preprocess_image(im, PreprocessConfig(**flip.metadata["preprocess"])) for im in images])
    views = package_logits(flip, cached, tta="flip")
    assert len(views) == 3
    np.testing.assert_allclose(tta_probabilities(views, flip.temperature), flip.predict_proba(images), atol=1e-5)


def test_cli_records_tta_and_refuses_unknown_modes(pkg_dir, tmp_path):
    from medlens.data.synthetic import make_idc_like

    files = []
    for i in range(2):
        f = tmp_path / f"im{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(f)
        files.append(str(f))
    out = tmp_path / "p.json"
    res = CliRunner().invoke(get_app(), ["predict", str(pkg_dir), *files, "--tta", "flip", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert [r["tta"] for r in json.loads(out.read_text())] == ["flip", "flip"]
    assert "test-time augmentation" in res.output
    csv_out = tmp_path / "p.csv"
    res = CliRunner().invoke(get_app(), ["predict", str(pkg_dir), *files, "--tta", "flip", "--out", str(csv_out)])
    assert res.exit_code == 0, res.output
    assert [r["tta"] for r in csv.DictReader(csv_out.open())] == ["flip", "flip"]
    bad = CliRunner().invoke(get_app(), ["predict", str(pkg_dir), files[0], "--tta", "flp"])
    assert bad.exit_code == 2 and "Did you mean 'flip'" in bad.output
    data = make_idc_like(tmp_path / "d", patients=2, patches_per_patient=6, positive_fraction=0.5, seed=2)
    res = CliRunner().invoke(get_app(), ["evaluate", str(pkg_dir), str(data), "--split", "all", "--tta", "flip",
                                         "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["tta"]["mode"] == "flip"
    assert "horizontal and its vertical flip" in (tmp_path / "ev" / "report.html").read_text()
