"""The spine on the real data sets in ../shared/data (skipped when absent). Short runs only:
the full-length figures in the README come from the commands written there."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from medlens.cli.main import get_app

runner = CliRunner()
pytestmark = pytest.mark.realdata


def _train(args):
    res = runner.invoke(get_app(), ["train", *args])
    assert res.exit_code == 0, res.output + repr(res.exception)


def _real(shared_data, name: str):
    """``../shared/data/<name>``, or skip the test when that set is absent."""
    data = shared_data / name
    if not data.exists():
        pytest.skip(f"{data} not found")
    return data


def test_pneumoniamnist_official_splits_short_run(shared_data, tmp_path):
    data = _real(shared_data, "pneumoniamnist/pneumoniamnist.npz")
    out = tmp_path / "run"
    _train([str(data), "--out", str(out), "--epochs", "2", "--max-steps", "12", "--model", "test_cnn",
            "--batch-size", "64"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "test" and m["counts"]["n"] == 624  # the official test split, untouched
    assert m["classes"] == ["normal", "pneumonia"]
    assert m["roc_auc"] > 0.6  # learns something real in a few dozen steps
    splits = (out / "splits.csv").read_text()
    assert splits.count(",val") == 524 and splits.count(",test") == 624


def test_idc_patient_grouped_with_patient_results(shared_data, tmp_path):
    data = _real(shared_data, "idc_breast_histopathology")
    out = tmp_path / "run"
    _train([str(data), "--out", str(out), "--epochs", "1", "--max-steps", "10", "--model", "test_cnn",
            "--size", "32", "--ignore-audit"])
    rows = [ln.rsplit(",", 1) for ln in (out / "splits.csv").read_text().splitlines()[1:]]
    by_patient: dict[str, set[str]] = {}
    for path, split in rows:
        by_patient.setdefault(path.replace("\\", "/").split("/")[-3], set()).add(split)
    assert len(by_patient) == 17 and all(len(s) == 1 for s in by_patient.values())
    m = json.loads((out / "metrics.json").read_text())
    pl = m["patient_level"]
    assert pl is not None and len(pl["table"]) >= 2
    # the IDC recipe's fold ensemble holds out no test split: every patient trains, and every
    # patient is reported, each scored by the member that did not train on it
    assert m["split"] == "out_of_fold" and not any(s == {"test"} for s in by_patient.values())
    assert {row["patient"] for row in pl["table"]} == set(by_patient)
    audit = json.loads((out / "audit_quick.json").read_text())
    assert any("4 of 17 patients" in w for w in audit["warnings"] + audit["blocking"])


def test_pbc_cell_types_get_an_argmax_operating_point(shared_data, tmp_path):
    """The PBC sample (8 cell types × 60, no healthy class, no patient ids): read with no flags,
    an image-level split, and decisions by the most probable type — no threshold on
    "not basophil" (the first class), which the old fallback applied."""
    data = _real(shared_data, "blood_cells_pbc")
    out = tmp_path / "run"
    _train([str(data), "--out", str(out), "--epochs", "1", "--max-steps", "4", "--model", "test_cnn",
            "--size", "32", "--no-audit"])
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["classes"]) == 8 and "basophil" in m["classes"]
    op = m["operating_point"]
    assert op["threshold"] is None and "argmax" in op["note"] and m["sensitivity"] is None
    meta = json.loads((out / "model" / "metadata.json").read_text())
    assert meta["threshold"] is None
