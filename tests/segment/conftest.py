"""Fixtures for the segmentation tests: small synthetic brain sets written as real files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from medlens.data.synthetic.brain import make_brain_mri_like


def tree_hash(root: Path) -> str:
    """Hash of every file's path and bytes under ``root`` (inputs must stay unmodified)."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


class ShapeProbe(torch.nn.Module):
    """A stand-in network: records the spatial shape of every window it sees and answers a
    confident lesion everywhere (logit 10). Checks what sliding-window inference feeds."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.dims, self.calls = dims, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape[-self.dims:]))
        return x[:, :1] * 0 + 10.0


RUN_FILES = ("config.json", "splits.csv", "metrics.json", "per_patient.csv", "report.html",
             "model/metadata.json", "model/weights.pt", "model/model_card.md", "checkpoints/best.pt")


def train_leaving_data_untouched(cfg, run: Path) -> dict:
    """``train_segmentation(cfg, run)``, asserting the input folder is byte-for-byte unchanged."""
    from medlens.segment.workflow import train_segmentation

    before = tree_hash(Path(cfg.data))
    metrics = train_segmentation(cfg, run)
    assert tree_hash(Path(cfg.data)) == before  # inputs untouched
    return metrics


def assert_run_directory(run: Path) -> dict:
    """Every file of a segmentation run exists; returns the package metadata."""
    import json

    for name in RUN_FILES:
        assert (run / name).is_file(), name
    return json.loads((run / "model/metadata.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def kaggle_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_brain_mri_like(tmp_path_factory.mktemp("kaggle") / "data", patients=4, slices=6,
                               size=32, difficulty=0.2, seed=1)


@pytest.fixture(scope="session")
def nifti_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_brain_mri_like(tmp_path_factory.mktemp("nifti") / "data", patients=3, slices=5,
                               size=32, seed=2, fmt="nifti")
