"""Tiny image sets written to tmp_path as real files, with planted problems."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlens.data.records import DatasetIndex, Record


def patch(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """Random-ish structured RGB content: coarse noise upsampled plus fine grain."""
    import cv2

    coarse = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.integers(-12, 13, img.shape).astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def save(path: Path, arr: np.ndarray, fmt: str | None = None, **kw) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **kw)
    return str(path)


def jpeg_roundtrip(arr: np.ndarray, quality: int = 85) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def shift1(arr: np.ndarray) -> np.ndarray:
    return np.pad(arr[:, 1:], ((0, 0), (0, 1), (0, 0)), mode="edge")


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def planted(tmp_path: Path) -> dict:
    """30 clean images (2 classes, 6 patients, patient-wise train/test) plus planted problems."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    recs: list[Record] = []
    arrays = []
    for i in range(30):
        label, patient = i % 2, f"p{i % 6}"
        split = "test" if patient in ("p4", "p5") else "train"
        arr = patch(rng)
        arrays.append(arr)
        recs.append(Record(save(root / f"{label}/img{i:02d}.png", arr), label=label, patient=patient, split=split))
    plant: dict[str, str] = {}
    # exact copy, same class and patient (records 0 = class 0, patient p0, train)
    plant["copy"] = save(root / "0/copy_of_00.png", arrays[0])
    recs.append(Record(plant["copy"], label=0, patient="p0", split="train"))
    # the same picture as record 1 (class 1) filed under class 0: a label conflict
    plant["conflict"] = save(root / "0/conflict_of_01.png", arrays[1])
    recs.append(Record(plant["conflict"], label=0, patient="p1", split="train"))
    # record 2 (train, p2) copied into the test split under another patient: leakage
    plant["leak"] = save(root / "0/leak_of_02.png", arrays[2])
    recs.append(Record(plant["leak"], label=0, patient="p4", split="test"))
    # near duplicates: JPEG-recompressed copy of record 3, 1-px shifted copy of record 4
    plant["jpeg"] = save(root / "1/jpeg_of_03.jpg", jpeg_roundtrip(arrays[3]), quality=85)
    recs.append(Record(plant["jpeg"], label=1, patient="p3", split="train"))
    plant["shift"] = save(root / "0/shift_of_04.png", shift1(arrays[4]))
    recs.append(Record(plant["shift"], label=0, patient="p4", split="test"))
    # broken files
    good = Path(recs[5].path).read_bytes()
    plant["truncated"] = str(root / "1/truncated.png")
    Path(plant["truncated"]).write_bytes(good[: len(good) // 2])
    plant["zero"] = str(root / "1/zero.png")
    Path(plant["zero"]).write_bytes(b"")
    recs += [Record(plant["truncated"], label=1, patient="p5", split="test"),
             Record(plant["zero"], label=1, patient="p5", split="test")]  # fmt: skip
    # a JPEG file named .png (readable, flagged)
    plant["mismatch"] = save(root / "1/really_jpeg.png", patch(rng), fmt="JPEG")
    recs.append(Record(plant["mismatch"], label=1, patient="p3", split="train"))
    index = DatasetIndex(root=str(root), layout="test", classes=["neg", "pos"], records=recs)
    return {"index": index, "root": root, "plant": plant, "records": recs}
