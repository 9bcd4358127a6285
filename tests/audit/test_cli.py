"""`medlens audit` through typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.audit.conftest import patch, save, tree_hashes


@pytest.fixture
def app():
    from medlens.cli.main import register_all

    return register_all()


def _folder(root: Path, n: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        save(root / ("cat" if i % 2 else "dog") / f"{i}.png", patch(rng, 32))
    return root


def test_cli_clean_folder_exit_0(app, tmp_path: Path) -> None:
    data = _folder(tmp_path / "data")
    before = tree_hashes(data)
    res = CliRunner().invoke(app, ["audit", str(data), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert "24 image(s), 24 readable" in res.output
    assert (tmp_path / "rep" / "audit.json").is_file() and (tmp_path / "rep" / "audit.html").is_file()
    assert tree_hashes(data) == before


def test_cli_blocking_exit_1_and_exclude_list(app, tmp_path: Path) -> None:
    data = _folder(tmp_path / "data")
    (data / "dog" / "0_copy.png").write_bytes((data / "cat" / "1.png").read_bytes())  # label conflict
    excl = tmp_path / "excl.txt"
    res = CliRunner().invoke(app, ["audit", str(data), "--out", str(tmp_path / "rep"), "--exclude-list", str(excl)])
    assert res.exit_code == 1, res.output
    assert "BLOCKING" in res.output and "different labels" in res.output
    from medlens.audit import read_exclude_list

    assert {Path(p).name for p in read_exclude_list(excl)} == {"1.png", "0_copy.png"}


def test_cli_missing_folder_is_one_clean_line(app, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["audit", str(tmp_path / "nope"), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 1  # the job failed (bad input), not a usage error
    assert "error:" in res.output and "Traceback" not in res.output
