"""Per-file probe: readability, format vs extension, mode, bit depth, large JPEG reduction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medlens.audit.files import probe_record
from medlens.data.records import DatasetIndex, Record
from tests.audit.conftest import patch, save


def _probe(path: Path, **kw):
    rec = Record(str(path))
    return probe_record(DatasetIndex(root=str(path.parent), layout="t", classes=[], records=[rec]), rec, **kw)


def test_good_png(tmp_path: Path) -> None:
    p = _probe(Path(save(tmp_path / "a.png", patch(np.random.default_rng(0), 40))))
    assert p.ok and p.format == "PNG" and p.mode == "RGB" and p.bit_depth == 8 and p.channels == 3
    assert (p.width, p.height) == (40, 40) and p.array.shape == (40, 40, 3) and p.ext_mismatch is None
    assert len(p.file_sha) == 64


def test_broken_files_have_reasons(tmp_path: Path) -> None:
    good = Path(save(tmp_path / "g.png", patch(np.random.default_rng(1), 64))).read_bytes()
    (tmp_path / "t.png").write_bytes(good[:200])
    (tmp_path / "z.png").write_bytes(b"")
    (tmp_path / "x.jpg").write_bytes(b"hello world, not a jpeg")
    assert "truncated" in _probe(tmp_path / "t.png").reason or "cannot decode" in _probe(tmp_path / "t.png").reason
    assert _probe(tmp_path / "z.png").reason == "zero-byte file"
    assert "not a readable image" in _probe(tmp_path / "x.jpg").reason
    assert "not found" in _probe(tmp_path / "missing.png").reason
    assert not _probe(tmp_path / "t.png").ok


def test_extension_mismatch_and_16_bit(tmp_path: Path) -> None:
    p = _probe(Path(save(tmp_path / "j.png", patch(np.random.default_rng(2)), fmt="JPEG")))
    assert p.ok and p.format == "JPEG" and "content is JPEG" in p.ext_mismatch and p.jpeg_quant > 0
    arr16 = (np.arange(30 * 20, dtype=np.uint16).reshape(20, 30) * 100)
    Image.fromarray(arr16).save(tmp_path / "d.png")
    p = _probe(tmp_path / "d.png")
    assert p.ok and p.bit_depth == 16 and p.channels == 1 and p.array.dtype == np.uint16


def test_large_jpeg_is_reduced_for_statistics(tmp_path: Path) -> None:
    import cv2

    big = cv2.resize(patch(np.random.default_rng(3), 64), (2000, 1500))
    p = _probe(Path(save(tmp_path / "big.jpg", big, quality=90)), max_side=256)
    assert p.ok and (p.width, p.height) == (2000, 1500)  # header size kept
    assert max(p.array.shape[:2]) == 256 and p.scale > 7
