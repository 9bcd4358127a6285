"""`medlens explain` skips files it cannot read, as `predict` does: one line naming the file
and the reason, the rest explained; exit 1 only when nothing could be read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner


def _inputs(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = {}
    for name in ("good1", "good2"):
        files[name] = root / f"{name}.png"
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(files[name])
    files["text"] = root / "notes.png"
    files["text"].write_text("not an image")
    files["empty"] = root / "empty.png"
    files["empty"].write_bytes(b"")
    return files


def test_unreadable_files_are_named_and_skipped(app, package, tmp_path):
    files = _inputs(tmp_path / "in")
    missing = tmp_path / "in" / "gone.png"
    before = {p: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["explain", str(package), str(tmp_path / "in"), str(missing), "-o", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    for key, why in (("text", ""), ("empty", "zero-byte")):
        line = next(ln for ln in res.output.splitlines() if ln.startswith(f"skipped {files[key]}:"))
        assert why in line
    assert f"skipped {missing}: file not found" in res.output
    assert "Wrote 2 overlay(s)" in res.output and "3 unreadable input(s) skipped" in res.output
    assert sorted(p.name for p in out.glob("*.gradcam.png")) == ["good1.gradcam.png", "good2.gradcam.png"]
    recs = json.loads((out / "explanations.gradcam.json").read_text())
    assert sorted(Path(r["input"]).name for r in recs if "error" in r) == ["empty.png", "gone.png", "notes.png"]
    assert sum("overlay" in r for r in recs) == 2
    assert {p: p.read_bytes() for p in (tmp_path / "in").iterdir()} == before  # inputs untouched


def test_nothing_readable_exits_1_and_writes_nothing(app, package, tmp_path):
    files = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["explain", str(package), str(files["text"]), str(files["empty"]),
                                   "-o", str(out)])
    assert res.exit_code == 1, res.output
    assert "none of the 2 input(s) could be read" in res.output
    assert f"skipped {files['text']}:" in res.output and f"skipped {files['empty']}:" in res.output
    assert not out.exists()


def test_evaluate_faithfulness_uses_the_readable_files(app, package, tmp_path):
    files = _inputs(tmp_path / "in")
    res = CliRunner().invoke(app, ["explain", str(package), str(files["good1"]), str(files["text"]),
                                   "-o", str(tmp_path / "out"), "--evaluate", "--max-eval-images", "2"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert (tmp_path / "out" / "faithfulness.json").is_file()
