"""A LUNA16-style training/evaluation folder: its scans, annotations, candidates, and the split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.ct.train import CtConfig
from medlens.errors import BadInputError, ConfigError


@dataclass
class CtData:
    """A LUNA16-style folder: its scans, reference nodules and (optional) candidate points."""

    root: Path
    refs: list[Any]
    annotations: dict[str, list[Any]]
    candidates: dict[str, list[Any]]
    excluded: dict[str, list[Any]]
    has_annotations: bool


def load_ct_data(root: str | Path, *, need_annotations: bool) -> CtData:
    """Find the scans and read ``annotations.csv`` / ``candidates.csv`` /
    ``annotations_excluded.csv`` at ``root`` (each optional unless ``need_annotations``).

    Raises:
        BadInputError: no scan under ``root``, or no ``annotations.csv`` when it is needed.
    """
    from medlens.ct.annotations import read_luna16_annotations, read_luna16_candidates
    from medlens.ct.scan import find_scans

    root = Path(root)
    if not root.exists():
        raise BadInputError(f"{root}: no such folder")
    refs = list(find_scans(root)) if root.is_dir() else []
    if not refs:
        raise BadInputError(f"{root}: no CT scan found (expected LUNA16 subset*/<seriesuid>.mhd + .raw, DICOM "
                            "series folders or NIfTI files)")
    ann_path = root / "annotations.csv"
    if not ann_path.is_file() and need_annotations:
        raise BadInputError(f"{root}: no annotations.csv (LUNA16 layout: annotations.csv with seriesuid, coordX, "
                            "coordY, coordZ, diameter_mm at the folder's root; subset*/<seriesuid>.mhd + .raw)")
    ann = read_luna16_annotations(ann_path) if ann_path.is_file() else {}
    cand_path = root / "candidates.csv"
    cands = read_luna16_candidates(cand_path) if cand_path.is_file() else {}
    exc_path = root / "annotations_excluded.csv"
    exc = read_luna16_annotations(exc_path) if exc_path.is_file() else {}
    return CtData(root, refs, ann, cands, exc, ann_path.is_file())


def split_scans(uids: Sequence[str], cfg: CtConfig) -> tuple[list[str], list[str]]:
    """(train, validation) series uids: ``cfg.val_scans``, else a seeded ``val_fraction`` share."""
    uids = sorted(uids)
    if cfg.val_scans is not None:
        unknown = sorted(set(cfg.val_scans) - set(uids))
        if unknown:
            raise ConfigError(f"val_scans names scans that are not in {cfg.data}: {', '.join(unknown[:5])}")
        val = sorted(set(cfg.val_scans))
    else:
        n_val = int(round(cfg.val_fraction * len(uids)))
        n_val = min(max(n_val, 1 if cfg.val_fraction > 0 and len(uids) > 1 else 0), len(uids) - 1)
        perm = np.random.default_rng(cfg.seed).permutation(len(uids))
        val = sorted(uids[k] for k in perm[:n_val])
    train = [u for u in uids if u not in set(val)]
    if not train:
        raise ConfigError("lung-CT training needs at least one training scan")
    return train, val
