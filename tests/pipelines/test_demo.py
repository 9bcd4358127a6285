"""`medlens demo` runs end to end on built-in data with no download (tiny --quick version)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from medlens.cli.main import get_app


def test_demo_quick(tmp_path):
    res = CliRunner().invoke(get_app(), ["demo", "--out", str(tmp_path / "demo"), "--quick"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    run = tmp_path / "demo" / "run"
    assert (run / "report.html").exists() and (run / "model" / "metadata.json").exists()
    assert (tmp_path / "demo" / "audit" / "audit.html").exists()
    m = json.loads((run / "metrics.json").read_text())
    assert m["patient_level"] is not None and m["operating_point"] is not None
