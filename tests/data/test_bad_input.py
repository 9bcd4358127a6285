"""Bad input: every unusable file is named with its reason, usable oddities are read right,
and no input file is ever modified."""

from __future__ import annotations

import hashlib
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlens.data.describe import check_readable, describe, format_description, inspect_path
from medlens.data.layouts import load_dataset


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def fake_png(path: Path, width: int, height: int) -> None:
    """A valid PNG header claiming ``width``×``height`` RGB with (almost) no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def messy(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "messy"
    good, bad = root / "good", root / "bad"
    good.mkdir(parents=True)
    bad.mkdir()
    (root / "empty").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(good / f"g{i}.png")
    Image.new("RGB", (16, 12), (200, 30, 30)).convert("CMYK").save(good / "cmyk.jpg", quality=95)
    ramp = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257  # 0..65535
    Image.fromarray(ramp).save(good / "deep16.png")
    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 255
    rgba[:4, :, 3] = 0  # the top half is fully transparent
    Image.fromarray(rgba).save(good / "alpha.png")
    payload = (good / "g0.png").read_bytes()
    (bad / "truncated.png").write_bytes(payload[: len(payload) // 2])
    (bad / "zero.png").write_bytes(b"")
    (bad / "text.png").write_text("this is a note, not a picture\n")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(bad / "one_pixel.png")
    fake_png(bad / "bomb.png", 100_000, 100_000)  # 10 Gpx: PIL refuses it at open
    fake_png(bad / "huge.png", 12_000, 12_000)  # 144 Mpx: over medlens' own limit
    return root


EXPECTED = {
    "truncated.png": "truncated",
    "zero.png": "zero-byte",
    "text.png": "not a readable image",
    "one_pixel.png": "1×1",
    "bomb.png": "decompression bomb",
    "huge.png": "120,000,000 limit",
}


def test_check_readable_names_each_bad_file(messy):
    before = hashes(messy)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    index = load_dataset(messy)
    assert index.classes == ["bad", "good"]  # "empty" is dropped with a warning
    assert any(
        Path(p.path).name == "empty" and "empty class folder" in p.reason for p in index.problems
    )
    assert len(index) == 12  # indexing alone decodes nothing
    checked = check_readable(index)
    reasons = {Path(p.path).name: p.reason for p in checked.problems if p.severity == "error"}
    assert set(reasons) == set(EXPECTED)
    for name, words in EXPECTED.items():
        assert words in reasons[name], (name, reasons[name])
    assert sorted(Path(r.path).name for r in checked.records) == [
        "alpha.png",
        "cmyk.jpg",
        "deep16.png",
        "g0.png",
        "g1.png",
        "g2.png",
    ]
    assert len(index) == 12 and len(index.problems) == 1  # the input index is unchanged
    # the bomb headers were refused before any pixel buffer was allocated
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert rss_growth_mb < 200
    threaded = check_readable(index, workers=2)
    assert [r.path for r in threaded.records] == [r.path for r in checked.records]
    assert {p.path: p.reason for p in threaded.problems} == {
        p.path: p.reason for p in checked.problems
    }
    assert hashes(messy) == before


def test_usable_oddities_are_read_correctly(messy):
    index = check_readable(load_dataset(messy))
    by_name = {Path(r.path).name: r for r in index.records}
    cmyk = index.read(by_name["cmyk.jpg"])
    assert cmyk.shape == (12, 16, 3) and cmyk.dtype == np.uint8
    assert np.abs(cmyk.astype(int) - [200, 30, 30]).max() <= 6
    deep = index.read(by_name["deep16.png"])
    assert deep.shape == (16, 16, 1) and deep.dtype == np.uint8
    assert deep.min() == 0 and deep.max() == 255
    assert (np.diff(deep.reshape(-1).astype(int)) >= 0).all()  # the ramp stays a ramp
    alpha = index.read(by_name["alpha.png"])
    assert alpha.shape == (8, 10, 3) and alpha.dtype == np.uint8
    assert (alpha[:4] == 255).all()  # transparent → composited on white
    assert (alpha[4:] == [255, 0, 0]).all()
    assert index.info["image_shapes"]["20x24x3"] == 3


def test_inspect_lists_problems_one_per_line(messy):
    before = hashes(messy)
    _index, desc = inspect_path(messy, workers=2)
    text = format_description(desc)
    for name, words in EXPECTED.items():
        line = next(
            ln for ln in text.splitlines() if ln.strip().startswith(str(messy / "bad" / name))
        )
        assert f"{messy / 'bad' / name}: " in line and words in line
    assert "empty class folder" in text
    assert (
        desc["images"] == 6
        and desc["errors"] == 6
        and desc["class_counts"] == {"bad": 0, "good": 6}
    )
    assert hashes(messy) == before


def test_manifest_with_missing_and_broken_rows(messy):
    (messy / "labels.csv").write_text(
        "path,label\ngood/g0.png,ok\ngood/not_there.png,ok\nbad/zero.png,ok\ngood/g1.png,sick\n"
    )
    before = hashes(messy)
    index = load_dataset(messy / "labels.csv")
    missing = [p for p in index.problems if "not_there" in p.path]
    assert len(missing) == 1 and "line 3" in missing[0].reason and "not found" in missing[0].reason
    checked = check_readable(index)
    assert sorted(Path(r.path).name for r in checked.records) == ["g0.png", "g1.png"]
    desc = describe(checked)
    lines = format_description(desc).splitlines()
    assert any(str(messy / "bad" / "zero.png") + ": zero-byte file" in ln for ln in lines)
    assert any("not_there.png: labels.csv line 3: image file not found" in ln for ln in lines)
    assert hashes(messy) == before
