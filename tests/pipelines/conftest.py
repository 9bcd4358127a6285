from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def idc_small(tmp_path_factory):
    """A small synthetic IDC-layout folder (6 patients × 40 patches)."""
    from medlens.data.synthetic import make_idc_like

    root = tmp_path_factory.mktemp("idc") / "data"
    make_idc_like(root, patients=6, patches_per_patient=40, size=50, seed=1)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, idc_small):
    """A tiny trained run directory produced by the CLI."""
    from typer.testing import CliRunner

    from medlens.cli.main import get_app

    out = tmp_path_factory.mktemp("run") / "run"
    res = CliRunner().invoke(get_app(), ["train", str(idc_small), "--out", str(out), "--model", "test_cnn",
                                         "--size", "32", "--epochs", "2", "--batch-size", "32"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return out
