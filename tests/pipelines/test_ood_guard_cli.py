"""The out-of-distribution guard through the CLI: predict, explain and evaluate flag inputs
unlike the training data, ``--strict`` refuses them (exit 1, nothing written), and a package
saved without a fingerprint still predicts."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medlens.cli.main import get_app

MEDLENS = Path(sys.executable).with_name("medlens")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, idc_small):
    """An (untrained) test_cnn package whose fingerprint comes from ``idc_small``, plus inputs."""
    import torch

    from medlens.data.fingerprint import fingerprint_index
    from medlens.data.layouts import load_dataset
    from medlens.models import create_model
    from medlens.package import save_model_package

    base = tmp_path_factory.mktemp("ood")
    torch.manual_seed(0)
    model = create_model("test_cnn", num_classes=2, in_channels=3)
    meta = {"task": "classify", "classes": ["0", "1"], "negative_class": 0,
            "input": {"size": 32, "channels": 3}, "preprocess": {"size": 32, "channels": 3},
            "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}, "threshold": 0.5, "temperature": 1.0,
            "data_fingerprint": fingerprint_index(load_dataset(idc_small), split=None)}
    save_model_package(base / "run" / "model", model, model_name="test_cnn",
                       model_kwargs={"num_classes": 2, "in_channels": 3}, metadata=meta)
    patch = sorted(idc_small.glob("*/1/*.png"))[0]
    noise = base / "noise16.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 65535, (50, 50), dtype=np.uint16)).save(noise)
    return base / "run", patch, noise


def _run(*args: str):
    return CliRunner().invoke(get_app(), [str(a) for a in args])


def test_predict_flags_without_refusing(guarded, tmp_path, caplog):
    run, patch, noise = guarded
    out = tmp_path / "p.csv"
    res = _run("predict", run, patch, noise, "--out", out)
    assert res.exit_code == 0, res.output
    rows = {Path(r["file"]).name: r for r in csv.DictReader(out.open())}
    assert rows[patch.name]["ood"] == "False" and rows[patch.name]["ood_reasons"] == ""
    assert rows["noise16.png"]["ood"] == "True"
    assert "16-bit input, trained on 8-bit" in rows["noise16.png"]["ood_reasons"]
    assert float(rows["noise16.png"]["ood_score"]) > 2
    assert "yes: 1 channel, trained on 3" in res.output  # the printed table
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("noise16.png: unlike the training data" in m for m in warned)
    assert not any(patch.name in m for m in warned)


def test_python_api_returns_the_flag(guarded):
    import medlens

    run, patch, noise = guarded
    rows = medlens.load_model(run).predict([patch, noise, np.zeros((50, 50, 3), np.uint8)])
    assert [r["ood"] for r in rows] == [False, True, True]
    assert "1 channel, trained on 3" in rows[1]["ood_reasons"]


def test_strict_predict_refuses_via_console_script(guarded, tmp_path):
    run, patch, noise = guarded
    out = tmp_path / "strict.csv"
    proc = subprocess.run([str(MEDLENS), "predict", str(run), str(patch), str(noise), "--strict", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "--strict: 1 input(s) unlike the model's training data: noise16.png" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()  # no half-trusted predictions left behind
    ok = _run("predict", run, patch, "--strict", "--out", out)  # in-distribution inputs pass
    assert ok.exit_code == 0 and out.exists()


def test_strict_explain_refuses_before_writing(guarded, tmp_path):
    run, patch, noise = guarded
    out = tmp_path / "maps"
    res = _run("explain", run, patch, noise, "--strict", "--out", out)
    assert res.exit_code == 1 and "noise16.png" in res.output
    assert not out.exists()


def test_evaluate_counts_and_strict_refuses(guarded, tmp_path, idc_small):
    run, _, noise = guarded
    data = tmp_path / "data"
    for c in ("0", "1"):
        for p in sorted(idc_small.glob(f"*/{c}/*.png"))[:6]:
            (data / c).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, data / c / p.name)
    shutil.copy(noise, data / "1" / "noise16.png")
    res = _run("evaluate", run, data, "--split", "all", "--out", tmp_path / "ev")
    assert res.exit_code == 0, res.output
    ood = json.loads((tmp_path / "ev" / "metrics.json").read_text())["ood"]
    assert ood["checked"] == 13 and ood["flagged"] == 1 and list(ood["files"]) == [str(data / "1" / "noise16.png")]
    strict = _run("evaluate", run, data, "--split", "all", "--out", tmp_path / "ev2", "--strict")
    assert strict.exit_code == 1 and "noise16.png" in strict.output
    assert not (tmp_path / "ev2" / "metrics.json").exists()


def test_old_package_without_fingerprint_still_predicts(guarded, tmp_path, caplog):
    run, patch, noise = guarded
    old = tmp_path / "old"
    shutil.copytree(run, old)
    meta_path = old / "model" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["data_fingerprint"]
    meta_path.write_text(json.dumps(meta))
    res = _run("predict", old, patch, noise, "--strict", "--out", tmp_path / "p.json")
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == 2 and not any("ood" in r for r in rows)  # not checked, not claimed to be fine
    infos = [r.getMessage() for r in caplog.records if "no training-data fingerprint" in r.getMessage()]
    assert len(infos) == 1


def test_training_records_a_fingerprint(trained_run):
    fp = json.loads((trained_run / "model" / "metadata.json").read_text())["data_fingerprint"]
    assert fp["channels"] == [3] and fp["bit_depth"] == [8] and fp["size"]["height"] == [50, 50]
    assert "train split" in fp["source"] and fp["stats"]["mean red"]["sd"] > 0
