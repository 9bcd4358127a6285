"""A patient's cells as one bag: decoded once into a uint8 cache, served one bag per step.

Why a bag per step: the patient's label is the only supervision, and attention pooling
compares a patient's cells with each other, so all of them (or ``max_cells`` drawn at
random) pass through the encoder together; every cell is encoded once per epoch. Decoding
is the slow part on a CPU, so :func:`medlens.data.cache.build_cache` decodes every cell
once (and keeps it on disk for the next run); training reads the ``(N, C, S, S)`` uint8
array and turns a bag to float only when it is used.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medlens.data.records import DatasetIndex, Problem, Record
from medlens.errors import ConfigError


@dataclass
class Bags:
    """Cells grouped by patient.

    Attributes:
        images: ``(N, C, S, S)`` uint8 cells (every bag's cells are rows of it).
        records: the N cells' records (path, patient, ``meta["cell_type"]``).
        patients: patient id per bag.
        labels: ``(P,)`` class index per bag (the patient's diagnosis).
        members: per bag, the row indices of its cells in ``images``.
        problems: cells that could not be read (named, skipped).
    """

    images: np.ndarray
    records: list[Record]
    patients: list[str]
    labels: np.ndarray
    members: list[np.ndarray]
    problems: list[Problem]

    def __len__(self) -> int:
        return len(self.patients)

    def subset(self, patients: list[str] | set[str]) -> Bags:
        """The bags of ``patients`` (sharing the image array)."""
        keep = [i for i, p in enumerate(self.patients) if p in set(patients)]
        return Bags(self.images, self.records, [self.patients[i] for i in keep], self.labels[keep],
                    [self.members[i] for i in keep], self.problems)

    def cells(self, i: int) -> np.ndarray:
        """Bag ``i``'s cells ``(n, C, S, S)`` uint8."""
        return self.images[self.members[i]]

    def cell_types(self, i: int) -> list[str]:
        return [str(self.records[j].meta.get("cell_type", "unknown")) for j in self.members[i]]

    def paths(self, i: int) -> list[str]:
        return [self.records[j].path for j in self.members[i]]


def bags_from_cache(images: np.ndarray, records: list[Record], problems: list[Problem] | None = None) -> Bags:
    """Group decoded cells by patient (records in patient order; cells in path order)."""
    by: dict[str, list[int]] = defaultdict(list)
    label: dict[str, int] = {}
    for j, r in enumerate(records):
        if r.patient is None or r.label is None:
            raise ConfigError(f"{r.path}: the patient task needs a patient id and a patient label for every cell")
        by[str(r.patient)].append(j)
        if label.setdefault(str(r.patient), int(r.label)) != int(r.label):
            raise ConfigError(f"patient {r.patient}: cells carry different labels; the patient task needs one "
                              "diagnosis per patient (use --task classify for per-image labels)")
    pats = sorted(by)
    return Bags(images, list(records), pats, np.array([label[p] for p in pats], dtype=np.int64),
                [np.asarray(by[p], dtype=np.int64) for p in pats], list(problems or []))


def load_bags(index: DatasetIndex, size: int, *, cache_dir: str | Path | None = None) -> Bags:
    """Decode (or read from the cache) every cell of ``index`` at ``size`` px and group them."""
    from medlens.data.cache import build_cache
    from medlens.transforms.preprocess import PreprocessConfig

    cache = build_cache(index, PreprocessConfig(size=size, channels=3), cache_dir=cache_dir)
    if not len(cache.records):
        raise ConfigError(f"{index.root}: no readable cell images")
    return bags_from_cache(cache.images, cache.records, cache.problems)


class BagLoader:
    """One bag per step for :func:`medlens.train.engine.fit`: ``{"x": (n, C, S, S) uint8,
    "y": (1,), "bag": (1,)}``. Shuffled each epoch (the engine seeds NumPy per epoch, so
    a resumed run sees the same order); ``max_cells`` draws that many cells per bag."""

    def __init__(self, bags: Bags, *, shuffle: bool = False, max_cells: int | None = None) -> None:
        self.bags, self.shuffle, self.max_cells = bags, shuffle, max_cells

    def __len__(self) -> int:
        return len(self.bags)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = np.random.permutation(len(self.bags)) if self.shuffle else np.arange(len(self.bags))
        for i in order:
            idx = self.bags.members[i]
            if self.max_cells and len(idx) > self.max_cells:
                idx = np.sort(np.random.choice(idx, self.max_cells, replace=False))
            yield {"x": torch.from_numpy(self.bags.images[idx]), "y": torch.tensor([int(self.bags.labels[i])]),
                   "bag": torch.tensor([int(i)])}


@dataclass(frozen=True)
class CellInput:
    """uint8 cells → the encoder's normalised float input (``(x/255 − mean) / std`` per channel).

    ``mean``/``std`` come from the training cells, or from the pretrained weights' own
    normalisation; the package stores them so ``predict`` feeds cells the same way.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_cells(cls, images: np.ndarray, *, max_cells: int = 4000, seed: int = 0) -> CellInput:
        """Per-channel statistics of (a sample of) ``images`` ``(N, C, S, S)`` uint8."""
        rng = np.random.default_rng(seed)
        pick = images if len(images) <= max_cells else images[rng.choice(len(images), max_cells, replace=False)]
        x = pick.astype(np.float32) / 255.0
        return cls(tuple(float(v) for v in x.mean(axis=(0, 2, 3))),
                   tuple(float(max(v, 1e-3)) for v in x.std(axis=(0, 2, 3))))

    def __call__(self, x: torch.Tensor, device: torch.device | str = "cpu", *, augment: bool = False) -> torch.Tensor:
        """``(n, C, S, S)`` uint8 → float on ``device``; ``augment``: random flips/90° turns per
        cell and one brightness/contrast/colour jitter per bag (a patient's stain)."""
        x = x.to(device).float().div_(255.0)
        if augment:
            x = _augment_bag(x)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}


def _augment_bag(x: torch.Tensor) -> torch.Tensor:
    """Flips and 90° turns per cell (a cell has no up or down), one stain jitter per bag.

    Uses torch's global generator, which the engine re-seeds every epoch (resume-exact)."""
    n = x.shape[0]
    flip = torch.rand(n, device=x.device) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    k = int(torch.randint(0, 4, (1,)))
    x = torch.rot90(x, k, dims=(-2, -1))
    gain = 1.0 + 0.08 * (2 * torch.rand(1, x.shape[1], 1, 1, device=x.device) - 1)
    bias = 0.04 * (2 * torch.rand(1, 1, 1, 1, device=x.device) - 1)
    return (x * gain + bias).clamp_(0.0, 1.0)
