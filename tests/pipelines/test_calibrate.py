"""``medlens calibrate``: a new package version with refitted temperature and threshold, the
original untouched, calibration and evaluation patients apart, the threshold following a
site's shift, and one clear error line for unusable local data."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from medlens.cli.main import get_app
from tests.packages import tiny_classifier_package

MEDLENS = Path(sys.executable).with_name("medlens")
BRIGHTNESS = "test_brightness_probe"


def _run(*args: object):
    return CliRunner().invoke(get_app(), [str(a) for a in args])


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """Synthetic IDC-like local data (6 patients, both classes each) and a package trained elsewhere."""
    from medlens.data.fingerprint import fingerprint_index
    from medlens.data.layouts import load_dataset
    from medlens.data.synthetic import make_idc_like

    base = tmp_path_factory.mktemp("cal")
    train = make_idc_like(base / "train", patients=2, patches_per_patient=10, seed=3)
    data = make_idc_like(base / "local", patients=6, patches_per_patient=12, positive_fraction=0.5, seed=4)
    fp = fingerprint_index(load_dataset(train), split=None)
    op = {"threshold": 0.5, "selection": {"rule": "test rule", "target_sensitivity": 0.9, "chosen_on": "val"}}
    tiny_classifier_package(base / "run" / "model", classes=("0", "1"), negative_class=0, threshold=0.5,
                            temperature=1.0, target_sensitivity=0.9, operating_point=op, data_fingerprint=fp)
    return base / "run", data


def test_calibrate_writes_a_new_package_and_leaves_the_original(local, tmp_path):
    run, data = local
    before = _digest(run / "model")
    res = _run("calibrate", run, data, "--calibration-patients", 3, "--seed", 1)
    assert res.exit_code == 0, res.output
    assert _digest(run / "model") == before  # the original package, byte for byte
    (out,) = (run / "calibrations").iterdir()
    meta = json.loads((out / "model" / "metadata.json").read_text())
    old = json.loads((run / "model" / "metadata.json").read_text())
    prov = meta["calibrated_from"]
    assert Path(prov["package"]) == (run / "model").resolve() or Path(prov["package"]) == run / "model"
    assert prov["local_data"] == str(data) and prov["target_sensitivity"] == 0.9
    assert meta["temperature"] != old["temperature"] and meta["threshold"] != old["threshold"]
    assert prov["temperature"] == {"old": 1.0, "new": meta["temperature"]}
    assert prov["threshold"] == {"old": 0.5, "new": meta["threshold"]}
    assert meta["operating_point"]["threshold"] == meta["threshold"]
    cal, ev = set(prov["calibration_patients"]), set(prov["evaluation_patients"])
    assert len(cal) == 3 and not cal & ev and cal | ev == {p.name for p in data.iterdir()}
    assert meta["data_fingerprint"] == old["data_fingerprint"]  # still the training data's
    assert "Local recalibration" in (out / "model" / "model_card.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {r["key"]: r for r in metrics["comparison"]}
    assert {"roc_auc_disease", "sensitivity", "specificity", "balanced_accuracy", "ece"} <= rows.keys()
    assert rows["balanced_accuracy"]["before_ci"]["low"] <= rows["balanced_accuracy"]["before"]
    assert rows["ece"]["after_ci"] is not None
    # the after metrics are the new package's own: evaluate it on the evaluation patients only
    assert metrics["after"]["operating_point"]["threshold"] == pytest.approx(meta["threshold"])
    assert metrics["after"]["counts"]["n"] == prov["n_evaluation_images"]
    html = (out / "report.html").read_text()
    assert "Dataset shift" in html and "kept apart" in html
    from medlens.package import load_model

    pkg = load_model(out)
    assert pkg.threshold == meta["threshold"] and pkg.temperature == meta["temperature"]


def test_split_keeps_patients_apart_with_both_classes_to_calibrate():
    from medlens.pipelines.calibrate import split_local

    units = [f"p{i // 10}" for i in range(80)]
    is_pos = np.array([(i % 10) < (3 if i < 40 else 7) for i in range(80)])
    for kw in ({"n_calibration": 3}, {"fraction": 0.25}, {}):
        s = split_local(units, is_pos, seed=2, **kw)
        cal = {u for u, c in zip(units, s.calibration) if c}
        ev = {u for u, e in zip(units, s.evaluation) if e}
        assert not cal & ev and cal | ev == set(units)
        assert sorted(cal) == s.calibration_units and 0 < is_pos[s.calibration].mean() < 1
    assert len(split_local(units, is_pos, n_calibration=3).calibration_units) == 3
    assert split_local(units, is_pos, fraction=0.25).calibration.sum() == 20


# --- a site whose images are darker ---------------------------------------------------------
class _Brightness(nn.Module):
    """Disease logit = 10 · (mean input − 0.45): brighter images look more diseased."""

    def __init__(self, num_classes: int = 2, in_channels: int = 3, spatial_dims: int = 2) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.centre = nn.Parameter(torch.tensor(0.45))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.scale * (x.mean(dim=(1, 2, 3)) - self.centre)
        return torch.stack([torch.zeros_like(d), d], 1)


@pytest.fixture
def brightness_model():
    from medlens.models.registry import MODELS, register_model

    if BRIGHTNESS not in MODELS:
        register_model(BRIGHTNESS, input_size=32, hidden=True)(lambda **kw: _Brightness(**kw))
    yield BRIGHTNESS
    MODELS._items.pop(BRIGHTNESS, None)  # keep the global registry clean for other tests


def _site(root: Path, gain: float, seed: int = 0) -> Path:
    """8 patients × (6 disease, 6 negative) textured patches in the IDC layout; disease is brighter;
    ``gain`` scales every pixel (a darker scanner)."""
    rng = np.random.default_rng(seed)
    for p in range(8):
        pid = str(10000 + p)
        for c, centre in ((0, 100.0), (1, 160.0)):
            (root / pid / str(c)).mkdir(parents=True, exist_ok=True)
            for k in range(6):
                level = rng.normal(centre, 12.0)
                img = np.clip((level + rng.normal(0, 25, (32, 32, 3))) * gain, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / pid / str(c) / f"{pid}_idx5_x{k}_y{c}_class{c}.png")
    return root


def test_a_darker_site_lowers_the_threshold_and_is_flagged(tmp_path, brightness_model):
    from medlens.data.fingerprint import fingerprint_index
    from medlens.data.layouts import load_dataset
    from medlens.models import create_model
    from medlens.package import save_model_package
    from medlens.pipelines.calibrate import calibrate_model
    from medlens.pipelines.evaluate_run import evaluate_model

    home, dark = _site(tmp_path / "home", 1.0), _site(tmp_path / "dark", 0.6)
    meta = {"task": "classify", "classes": ["0", "1"], "negative_class": 0, "input": {"size": 32, "channels": 3},
            "preprocess": {"size": 32, "channels": 3}, "normalize": {"mean": [0.0] * 3, "std": [1.0] * 3},
            "threshold": 0.5, "temperature": 1.0, "target_sensitivity": 0.9,
            "data_fingerprint": fingerprint_index(load_dataset(home), split=None)}
    save_model_package(tmp_path / "run" / "model", create_model(brightness_model, num_classes=2), model_name=brightness_model,
                       model_kwargs={"num_classes": 2}, metadata=meta)
    kw = {"calibration_patients": 4, "seed": 0, "device": "cpu", "n_bootstrap": 100}
    at_home, _ = calibrate_model(tmp_path / "run", home, out=tmp_path / "c_home", **kw)
    darker, _ = calibrate_model(tmp_path / "run", dark, out=tmp_path / "c_dark", **kw)
    assert darker["calibrated_from"]["evaluation_patients"] == at_home["calibrated_from"]["evaluation_patients"]
    thr_home = at_home["calibrated_from"]["threshold"]["new"]
    thr_dark = darker["calibrated_from"]["threshold"]["new"]
    assert thr_dark < 0.5 < thr_home  # scores fell with the brightness: the threshold follows them down
    before, after = darker["before"], darker["after"]
    assert before["sensitivity"] < 0.2 < 0.7 < after["sensitivity"]  # the old threshold misses the darker site
    assert darker["shift"]["rows"][6]["feature"] == "brightness" and darker["shift"]["rows"][6]["level"] == "large"
    metrics, out = evaluate_model(tmp_path / "run", dark, split="all", device="cpu")
    shift = metrics["shift"]
    bright = next(r for r in shift["rows"] if r["feature"] == "brightness")
    assert bright["level"] == "large" and bright["std_difference"] < -0.8
    assert any("darker" in f for f in shift["flags"]) and "differ strongly" in shift["verdict"]
    html = (out / "report.html").read_text()
    assert "Dataset shift" in html and "darker" in html


# --- unusable local data: one error line, exit 1 (bad data) or 2 (bad flag) --------------------
def _one_error(res, code: int, text: str) -> None:
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and text in lines[0], res.output
    assert "Traceback" not in res.output


def test_unusable_local_data_is_refused_with_one_line(local, tmp_path):
    from medlens.data.synthetic import make_idc_like

    run, data = local
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(flat / f"x{i}.png")
    _one_error(_run("calibrate", run, flat), 1, "no usable data set")
    one_class = make_idc_like(tmp_path / "pos", patients=3, patches_per_patient=4, seed=5)
    for f in one_class.glob("*/0/*.png"):
        f.unlink()
    _one_error(_run("calibrate", run, one_class), 1, "calibrate needs both negative")
    lone = make_idc_like(tmp_path / "lone", patients=1, patches_per_patient=8, positive_fraction=0.5, seed=6)
    _one_error(_run("calibrate", run, lone), 1, "only 1 patient")
    _one_error(_run("calibrate", run, data, "--calibration-patients", 6), 2, "give 1 to 5")
    _one_error(_run("calibrate", run, data, "--fraction", 0.3, "--calibration-patients", 2), 2, "not both")
    assert not (run / "calibrations").exists() or len(list((run / "calibrations").iterdir())) <= 1


def test_installed_script_exit_code_for_a_bad_fraction(local):
    run, data = local
    proc = subprocess.run([str(MEDLENS), "calibrate", str(run), str(data), "--fraction", "1.5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --fraction must be between 0 and 1")
