"""Per-patient colour statistics: a patient whose stain differs from the others' is flagged in
audit.json, audit.html and the printed warnings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medlens.audit.stats import COLOUR_CHANNELS, colour_outliers, robust_z, tissue_colour


@pytest.fixture(scope="module")
def restained_set(tmp_path_factory):
    """7 patients in the IDC layout, the same synthetic tissue with a little per-patient brightness
    spread; one patient (the odd one) re-stained: much more haematoxylin, less eosin."""
    from PIL import Image
    from skimage.color import hed2rgb, rgb2hed

    from medlens.data.synthetic import make_idc_like

    base = tmp_path_factory.mktemp("colour")
    src = sorted(make_idc_like(base / "src", patients=1, patches_per_patient=8, seed=4).rglob("*.png"))
    root, odd = base / "d", "10003"
    for k in range(7):
        pid = str(10000 + k)
        for i, f in enumerate(src):
            img = np.asarray(Image.open(f).convert("RGB")).astype(np.float64) * (0.97 + 0.01 * k)
            if pid == odd:
                hed = rgb2hed(np.clip(img, 0, 255).astype(np.uint8))
                hed[..., 0] *= 2.0
                hed[..., 1] *= 0.5
                img = hed2rgb(hed) * 255
            out = root / pid / str(i % 2) / f"{pid}_idx5_x{50 * i}_y0_class{i % 2}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8)).save(out)
    return root, odd


def test_the_restained_patient_is_flagged_and_printed(restained_set, tmp_path):
    from typer.testing import CliRunner

    from medlens.cli.main import get_app

    root, odd = restained_set
    res = CliRunner().invoke(get_app(), ["audit", str(root), "--out", str(tmp_path / "a")])
    assert res.exit_code in (0, 1), res.output
    colour = json.loads((tmp_path / "a" / "audit.json").read_text())["confounding"]["colour_by_patient"]
    assert colour["flagged"] == [odd]
    row = colour["patients"][odd]
    assert row["z"]["H"] > 3 and row["n_images"] == 8 and set(row["mean"]) == set(COLOUR_CHANNELS)
    others = [r for p, r in colour["patients"].items() if p != odd]
    assert len(others) == 6 and not any(r["flagged"] for r in others)
    assert row["mean"]["H"] > max(r["mean"]["H"] for r in others)  # more haematoxylin, as re-stained
    out = " ".join(res.output.split())
    assert "warning: Stain/colour of 1 patient(s)" in out and odd in out.split("Stain/colour", 1)[1]
    page = (tmp_path / "a" / "audit.html").read_text()
    assert "Colour by patient" in page and odd in page


def test_robust_z_and_flags_on_a_table():
    means = np.array([[200, 150, 180, 0.05, 0.02]] * 6, float) + np.arange(6)[:, None] * [1, 1, 1, 0.001, 0.001]
    means[4, 3] = 0.12  # one patient's haematoxylin far off
    t = colour_outliers([f"p{i}" for i in range(6)], means, np.ones_like(means), [3] * 6, [100] * 6)
    assert t["flagged"] == ["p4"] and t["patients"]["p4"]["worst_channel"] == "H"
    assert abs(robust_z(means[:, :1])[:, 0]).max() < 3  # an even spread flags nobody
    few = colour_outliers(["a", "b", "c"], means[:3], means[:3], [1] * 3, [1] * 3)
    assert few["flagged"] == [] and few["status"] == "too few patients to flag"


def test_grey_and_blank_images_have_no_tissue_colour():
    assert tissue_colour(np.zeros((8, 8, 1), np.uint8)) is None
    assert tissue_colour(np.full((8, 8, 3), 250, np.uint8)) is None
    v = tissue_colour(np.full((8, 8, 3), (150, 60, 140), np.uint8))
    assert v.shape == (64, 5) and np.allclose(v[:, :3], (150, 60, 140))
