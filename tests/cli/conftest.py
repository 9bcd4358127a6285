"""A small generated corpus of bad inputs, and a runner for the installed console script.

Everything a case reads lives under one ``inputs`` folder (data sets, packages, config
files, a file standing where a folder should be, an earlier run), so a case can hash that
folder before and after and prove that nothing it was given was modified.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.packages import tiny_classifier_package


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


def medlens_script() -> Path:
    """The console script installed beside this interpreter (``.venv/bin/medlens``)."""
    return Path(sys.executable).with_name("medlens")


@pytest.fixture(scope="session")
def medlens():
    """Run ``medlens ARGS…`` as a subprocess in ``cwd``; return its exit code and output."""
    exe = medlens_script()
    if not exe.is_file():
        pytest.skip(f"console script {exe} not installed (pip install -e .)")
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    env.pop("MEDLENS_DEBUG", None)

    def run(args: list[str], cwd: Path, timeout: float = 120) -> Result:
        p = subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        return Result(p.returncode, p.stdout, p.stderr)

    return run


def tree_hash(root: Path) -> dict[str, str]:
    """Relative path → sha256 of every file (and a marker for every folder) under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


def _pngs(folder: Path, n: int, seed: int, size: int = 24) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{seed}_{i}.png")


def _dicom(path: Path) -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.arange(32 * 32, dtype=np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _package(out: Path) -> Path:
    """A model package of an untrained tiny CNN (loading, not accuracy, is under test)."""
    return tiny_classifier_package(out, classes=("0", "1"))


def _broken_package(good: Path, dest: Path, name: str, content: bytes | None = None,
                    keep: float | None = None) -> Path:
    shutil.copytree(good, dest)
    target = dest / name
    if content is not None:
        target.write_bytes(content)
    if keep is not None:
        data = target.read_bytes()
        target.write_bytes(data[: int(len(data) * keep)])
    return dest


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Path:
    """The corpus: every file a fault case is given (see the module docstring)."""
    from medlens.data.synthetic import make_idc_like

    root = tmp_path_factory.mktemp("corpus") / "inputs"
    make_idc_like(root / "idc", patients=4, patches_per_patient=6, size=50, seed=3)
    _pngs(root / "folder" / "benign", 6, seed=1)
    _pngs(root / "folder" / "malignant", 6, seed=2)
    image = root / "folder" / "benign" / "1_0.png"

    junk = root / "junk"  # nothing decodes
    for cls in ("a", "b"):
        (junk / cls).mkdir(parents=True)
        (junk / cls / "x.png").write_text("not an image")
        (junk / cls / "y.png").write_bytes(b"")
    dcm = root / "dicom_truncated"
    for cls in ("a", "b"):
        (dcm / cls).mkdir(parents=True)
        whole = _dicom(dcm / cls / "im.dcm").read_bytes()
        (dcm / cls / "im.dcm").write_bytes(whole[: len(whole) // 2])
    (root / "empty").mkdir()
    (root / "missing_columns").mkdir()
    _pngs(root / "missing_columns" / "img", 4, seed=4)
    (root / "missing_columns" / "manifest.csv").write_text(
        "file_name,comment\n" + "".join(f"img/4_{i}.png,x\n" for i in range(4)))
    notes = root / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("these are notes, not images\n")
    (notes / "table.csv").write_text("a,b\n1,2\n")

    blocking = root / "blocking"  # one picture filed under both classes
    _pngs(blocking / "cat", 5, seed=5)
    _pngs(blocking / "dog", 5, seed=6)
    shutil.copy(blocking / "cat" / "5_0.png", blocking / "dog" / "copy.png")

    seg = root / "seg"  # image/mask pairs
    for folder in ("images", "masks"):
        (seg / folder).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((32, 32), 40 * i, np.uint8)).save(seg / "images" / f"c{i}.png")
        Image.fromarray((np.eye(32) * 255).astype(np.uint8)).save(seg / "masks" / f"c{i}.png")

    cfg = root / "configs"
    cfg.mkdir()
    (cfg / "bad.yaml").write_text("train: [epochs: 3\n  lr: :\n")
    (cfg / "unknown_key.yaml").write_text("train:\n  lrr: 0.1\n")
    (cfg / "a_list.yaml").write_text("- epochs\n- 3\n")
    (cfg / "bad_value.json").write_text(json.dumps({"train": {"epochs": -3}}))

    (root / "a_file.txt").write_text("a file where a folder is expected\n")
    run = root / "earlier_run"  # a run someone started; a new train must not overwrite it
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"checkpoint")
    (run / "config.json").write_text("{}")
    (root / "not_a_package").mkdir()
    (root / "not_a_package" / "notes.txt").write_text("hello\n")

    good = _package(root / "package")
    _broken_package(good, root / "pkg_garbage_metadata", "metadata.json", content=b"{not json")
    _broken_package(good, root / "pkg_list_metadata", "metadata.json", content=b"[1, 2]")
    _broken_package(good, root / "pkg_truncated_weights", "weights.pt", keep=0.5)
    _broken_package(good, root / "pkg_garbage_weights", "weights.pt", content=b"\x80\x04garbage" * 10)
    meta = json.loads((good / "metadata.json").read_text())
    meta.pop("model", None)
    _broken_package(good, root / "pkg_no_model_entry", "metadata.json", content=json.dumps(meta).encode())
    assert image.is_file()
    return root
