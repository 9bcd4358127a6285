"""`train` on a folder with bad files: names each with its reason, goes on, modifies nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from medlens.cli.main import get_app

runner = CliRunner()


def _hashes(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _folder(root: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    for cls, bright in (("benign", 60), ("malignant", 160)):
        d = root / cls
        d.mkdir(parents=True)
        for i in range(24):
            arr = np.clip(rng.normal(bright, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"img{i}.png")
    good = root / "malignant" / "img0.png"
    (root / "benign" / "truncated.png").write_bytes(good.read_bytes()[:60])
    (root / "benign" / "empty.png").write_bytes(b"")
    (root / "malignant" / "notes.png").write_text("this is text")
    Image.new("CMYK", (30, 30), (0, 50, 100, 0)).save(root / "malignant" / "cmyk.jpg")
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(root / "benign" / "deep16.png")
    Image.new("RGBA", (30, 30), (200, 0, 0, 128)).save(root / "malignant" / "alpha.png")
    Image.new("RGB", (1, 1)).save(root / "benign" / "tiny.png")
    (root / "empty_class").mkdir()
    return {"truncated.png": "truncated", "empty.png": "zero-byte", "notes.png": "not a readable image",
            "tiny.png": "1×1"}


def test_train_skips_bad_files_and_names_them(tmp_path):
    data = tmp_path / "data"
    expected = _folder(data)
    before = _hashes(data)
    out = tmp_path / "run"
    res = runner.invoke(get_app(), ["train", str(data), "--out", str(out), "--model", "test_cnn", "--size", "32",
                                    "--epochs", "1", "--batch-size", "16", "--ignore-audit"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    problems = json.loads((out / "problems.json").read_text())
    reasons = {Path(p["path"]).name: p["reason"] for p in problems}
    for name, why in expected.items():
        assert name in reasons and why in reasons[name], (name, reasons.get(name))
    assert not {"cmyk.jpg", "deep16.png", "alpha.png"} & set(reasons)  # usable formats are kept
    assert any("empty_class" in p["path"] for p in problems)
    assert _hashes(data) == before  # nothing modified, moved or deleted
    assert not (data / "empty_class").exists() or (data / "empty_class").is_dir()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "truncated.png" in html


def test_inspect_names_bad_files(tmp_path):
    data = tmp_path / "data"
    _folder(data)
    res = runner.invoke(get_app(), ["inspect", str(data)])
    assert res.exit_code == 0, res.output
    for name in ("truncated.png", "empty.png", "notes.png", "tiny.png"):
        assert name in res.output


def test_nothing_usable_exits_non_zero(tmp_path):
    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        (data / cls / "x.png").write_text("junk")
        (data / cls / "y.png").write_bytes(b"")
    res = runner.invoke(get_app(), ["inspect", str(data)])
    assert res.exit_code == 1 and "nothing usable" in res.output
    res = runner.invoke(get_app(), ["train", str(data), "--out", str(tmp_path / "r"), "--model", "test_cnn",
                                    "--epochs", "1", "--ignore-audit"])
    assert res.exit_code == 1 and "error:" in res.output
