"""Fixtures for the segmentation tests: small synthetic brain sets written as real files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from medlens.data.synthetic.brain import make_brain_mri_like


def tree_hash(root: Path) -> str:
    """Hash of every file's path and bytes under ``root`` (inputs must stay unmodified)."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="session")
def kaggle_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_brain_mri_like(tmp_path_factory.mktemp("kaggle") / "data", patients=4, slices=6,
                               size=32, difficulty=0.2, seed=1)


@pytest.fixture(scope="session")
def nifti_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_brain_mri_like(tmp_path_factory.mktemp("nifti") / "data", patients=3, slices=5,
                               size=32, seed=2, fmt="nifti")
