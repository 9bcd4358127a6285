"""Train → package → predict / evaluate, per patient, through the CLI too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def run(aplaml: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medlens.cli.main import get_app

    out = tmp_path_factory.mktemp("milrun") / "run"
    res = CliRunner().invoke(get_app(), ["train", str(aplaml), "--out", str(out), "--model", "test_cnn",
                                         "--size", "32", "--epochs", "2", "--device", "cpu",
                                         "--val-fraction", "0.25", "--test-fraction", "0.25"])
    assert res.exit_code == 0, res.output
    assert "recognised as patient data" in res.output and "ROC-AUC" in res.output
    return out


def test_run_writes_metrics_report_and_package(run: Path) -> None:
    m = json.loads((run / "metrics.json").read_text())
    assert m["unit"] == "patient" and m["split"] == "test" and len(m["patient_ids"]) == 2
    assert m["ci"]["unit"] == "patient" and m["operating_point"]["threshold"] is not None
    html = (run / "report.html").read_text()
    assert "Which cells drove each diagnosis" in html and "data:image/png;base64" in html
    meta = json.loads((run / "model" / "metadata.json").read_text())
    assert meta["task"] == "patient" and list(meta["stages"]) == ["mil"]
    test_pats = set(m["patient_ids"])
    splits = (run / "splits.csv").read_text().splitlines()[1:]
    parts = [Path(line.rsplit(",", 1)[0]).parts for line in splits if line.endswith(",test")]
    assert {p[p.index("data") + 1] for p in parts} == test_pats  # every cell of a test patient, no other


def test_predict_one_patient_folder_and_a_dataset(run: Path, aplaml: Path, tmp_path: Path) -> None:
    from medlens.cli.main import get_app
    from medlens.package import load_model

    pkg = load_model(run)
    one = sorted(p for p in aplaml.iterdir() if p.is_dir())[0]
    rows = pkg.predict(one)
    assert len(rows) == 1 and rows[0]["patient"] == one.name and rows[0]["cells"] == 8  # unsigned/thumb skipped
    assert abs(sum(rows[0]["attention"]) - 1) < 1e-5 and rows[0]["decision"] in ("positive", "negative")
    assert len(pkg.predict(aplaml)) == 8  # a data set: one bag per patient
    out = tmp_path / "p.csv"
    res = CliRunner().invoke(get_app(), ["predict", str(run), str(one), "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("patient,file,cells") and lines[1].startswith(one.name)
    ev = tmp_path / "ev"
    res = CliRunner().invoke(get_app(), ["evaluate", str(run), str(aplaml), "--out", str(ev)])
    assert res.exit_code == 0, res.output
    assert json.loads((ev / "metrics.json").read_text())["patient_ids"] == json.loads(
        (run / "metrics.json").read_text())["patient_ids"]  # the run's own test patients
