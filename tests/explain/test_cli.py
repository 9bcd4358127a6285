"""`medlens explain` / `medlens probe` through typer's CliRunner, on a saved package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner


def _images(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / ("benign" if i % 2 else "malignant")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    return root


def test_explain_cli_writes_overlays_and_maps(app, package, tmp_path):
    data = _images(tmp_path / "data")
    before = {p: p.read_bytes() for p in data.rglob("*.png")}
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "explain",
            str(package),
            str(data),
            "--method",
            "gradcam++",
            "--target",
            "malignant",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert len(list(out.glob("*.gradcam++.png"))) == 4
    maps = sorted(out.glob("*.gradcam++.npy"))
    assert len(maps) == 4 and np.load(maps[0]).shape == (32, 32)
    recs = json.loads((out / "explanations.gradcam++.json").read_text())
    assert {r["target"] for r in recs} == {1} and all(
        r["predicted"] in ("benign", "malignant") for r in recs
    )
    assert {p: p.read_bytes() for p in data.rglob("*.png")} == before  # inputs untouched


def test_explain_cli_evaluate_prints_most_faithful(app, package, tmp_path):
    data = _images(tmp_path / "data", n=2)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["explain", str(package), str(data), "--evaluate", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "Most faithful for this model and data" in res.output
    table = json.loads((out / "faithfulness.json").read_text())
    assert {r["method"] for r in table["rows"]} >= {"gradcam", "lime", "random"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "features.blok2"], "Did you mean"),
        (["--target", "5"], "out of range"),
        (["--method", "gradcamm"], "Did you mean 'gradcam'"),
    ],
)
def test_explain_cli_user_errors(app, package, tmp_path, args, message):
    data = _images(tmp_path / "data", n=1)
    res = CliRunner().invoke(
        app, ["explain", str(package), str(data), "--out", str(tmp_path / "o"), *args]
    )
    assert res.exit_code == 2
    assert message in res.output


def test_probe_cli(app, package, tmp_path):
    data = _images(tmp_path / "data", n=6)
    out = tmp_path / "probes"
    res = CliRunner().invoke(
        app,
        [
            "probe",
            str(package),
            str(data),
            "--out",
            str(out),
            "--probe",
            "blur",
            "--probe",
            "hide-region",
        ],
    )
    assert res.exit_code == 0, res.output
    result = json.loads((out / "probes.json").read_text())
    assert result["grouped_by"] == "true label"
    assert set(result["probes"]) == {"blur", "hide-region"}
    assert set(result["probes"]["blur"]["per_class"]) == {"benign", "malignant"}
    assert list((out / "examples").glob("*.png"))
    assert "flip rate" in res.output


def test_python_api_takes_a_package_and_paths(package, tmp_path):
    import medlens
    from medlens.explain import evaluate_faithfulness, explain

    data = _images(tmp_path / "data", n=2)
    pkg = medlens.load_model(str(package))
    paths = sorted(data.rglob("*.png"))
    maps = explain(pkg, paths, method="gradcam")
    assert maps.shape == (2, 32, 32)
    x = pkg.preprocess(pkg.load_images([str(p) for p in paths]))
    np.testing.assert_allclose(maps, explain(pkg.model, x, method="gradcam"), atol=1e-6)
    table = evaluate_faithfulness(pkg, paths, ["gradcam"], n_random=1)
    assert table.row("gradcam").n_images == 2
