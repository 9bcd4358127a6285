"""Train/val/test splits that never put one patient in two splits.

Official splits are kept as given. Otherwise images are split stratified by class and
grouped by patient (each image is its own group when patients are unknown): among
scikit-learn ``GroupShuffleSplit`` candidates, the one closest to the wanted size and class
mix is kept. The result depends only on the data and the seed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medlens.data.records import SPLITS, DatasetIndex, Record
from medlens.errors import BadInputError, ConfigError

logger = logging.getLogger(__name__)
_TRIALS = 200  # candidate group splits tried per carved split


def _groups(records: list[Record], group_by_patient: bool) -> np.ndarray:
    """Group ids: the patient when known, else a unique id per image."""
    out = [
        f"p:{r.patient}" if group_by_patient and r.patient is not None else f"i:{i}"
        for i, r in enumerate(records)
    ]
    return np.unique(np.asarray(out, dtype=object), return_inverse=True)[1]


def _labels(records: list[Record]) -> np.ndarray:
    return np.asarray([-1 if r.label is None else r.label for r in records])


def _carve(y: np.ndarray, groups: np.ndarray, fraction: float, seed: int, what: str) -> np.ndarray:
    """Boolean mask of about ``fraction`` of the samples, whole groups, stratified by ``y``."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ConfigError(
            f"cannot carve a {what} split: only {n_groups} patient/group available; "
            f"add patients or set {what}_fraction=0"
        )
    if n_groups == len(y):  # one image per group: a plain stratified split is exact
        idx = np.arange(len(y))
        n_take = min(max(1, round(fraction * len(y))), len(y) - 1)
        try:  # stratify when every class can be represented on both sides
            _, take = train_test_split(idx, test_size=n_take, random_state=seed, stratify=y)
        except ValueError:
            _, take = train_test_split(idx, test_size=n_take, random_state=seed)
        mask = np.zeros(len(y), bool)
        mask[take] = True
        return mask
    # Whole groups: draw candidate group splits and keep the one closest to the wanted
    # size and class mix (StratifiedGroupKFold alone ignores the seed on such data).
    yi = np.unique(y, return_inverse=True)[1]
    total = np.bincount(yi)
    n = len(y)
    best, best_cost = None, np.inf
    gss = GroupShuffleSplit(n_splits=_TRIALS, test_size=fraction, random_state=seed)
    for _, take in gss.split(np.zeros(n), y, groups):
        sel = np.bincount(yi[take], minlength=len(total))
        missing = int(((sel == 0) | (sel == total)).sum())  # a class absent on one side
        cost = (
            abs(len(take) / n - fraction)
            + 0.5 * np.abs(sel / len(take) - total / n).sum()
            + missing
        )
        if cost < best_cost:
            best, best_cost = take, cost
    mask = np.zeros(n, bool)
    mask[best] = True
    return mask


def assign_splits(
    index: DatasetIndex,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    group_by_patient: bool = True,
) -> DatasetIndex:
    """Return a copy of ``index`` whose records all have ``split`` set.

    Official splits are kept; a missing val (or test) split is carved from train,
    grouped and stratified. Without official splits, test and then val are carved from
    all images. A patient never appears in two carved splits.

    Raises:
        ConfigError: bad fractions, or too few patients/images for a non-empty split.
    """
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {f!r}")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}"
        )
    records = list(index.records)
    if not records:
        raise ConfigError(f"{index.root}: no usable images to split")
    official = index.has_official_splits
    split = np.asarray([r.split or "train" for r in records], dtype=object)
    y = _labels(records)
    groups = _groups(records, group_by_patient)
    present = set(split.tolist()) if official else {"train"}
    carved = []
    for what, frac in (("test", test_fraction), ("val", val_fraction)):
        if what in present or frac == 0:
            continue
        pool = np.flatnonzero(split == "train")
        if len(pool) < 2:
            raise ConfigError(f"cannot carve a {what} split: only {len(pool)} training images")
        # generated splits: a fraction of the whole set; official ones: of the train split
        share = min(frac if official else frac * len(records) / len(pool), 0.9)
        mask = _carve(y[pool], groups[pool], share, seed, what)
        split[pool[mask]] = what
        carved.append(what)
    counts = Counter(split.tolist())
    for what in ["train", *carved]:
        if counts.get(what, 0) == 0:
            raise ConfigError(
                f"the {what} split would be empty ({len(np.unique(groups))} patients/groups for "
                f"{len(records)} images); add data or lower the fractions"
            )
    out = index.subset(
        [dataclasses.replace(r, split=s) for r, s in zip(records, split, strict=True)]
    )
    out.info["splits"] = {
        "source": ("official" + (f" + carved {'/'.join(carved)}" if carved else ""))
        if official
        else "generated",
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "group_by_patient": group_by_patient,
    }
    leaks = patients_in_several_splits(out)
    if leaks:
        logger.warning(
            "%d patients appear in more than one official split: %s",
            len(leaks),
            ", ".join(leaks[:5]),
        )
        out.info["splits"]["patients_in_several_splits"] = leaks
    return out


def patients_in_several_splits(index: DatasetIndex) -> list[str]:
    """Patients whose images sit in more than one split (a leak)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for r in index.records:
        if r.patient is not None and r.split is not None:
            seen[r.patient].add(r.split)
    return sorted(p for p, s in seen.items() if len(s) > 1)


def split_table(index: DatasetIndex) -> dict[str, dict[str, int]]:
    """``{split: {<class>: n, ..., "total": images, "patients": n_patients}}``.

    Records without a split are listed under ``"unassigned"``; use
    :func:`patients_in_several_splits` to find leaks.
    """
    out: dict[str, dict[str, int]] = {}
    names: list[str | None] = [s for s in SPLITS if any(r.split == s for r in index.records)]
    if any(r.split is None for r in index.records):
        names.append(None)
    for s in names:
        recs = [r for r in index.records if r.split == s]
        cls = Counter(r.label for r in recs)
        row = {c: cls.get(i, 0) for i, c in enumerate(index.classes)}
        row["total"] = len(recs)
        row["patients"] = len({r.patient for r in recs if r.patient is not None})
        out[s or "unassigned"] = row
    return out


def save_splits(index: DatasetIndex, path: str | os.PathLike[str]) -> Path:
    """Write ``path,split`` for every record (atomically) so a run records its splits."""
    import csv
    import io

    from medlens.io.atomic import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "split"])
    w.writerows((r.path, r.split or "") for r in index.records)
    return atomic_write_text(path, buf.getvalue())


def load_splits(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a file written by :func:`save_splits` as ``{path: split}``."""
    import csv

    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as e:
        raise BadInputError(f"{p}: cannot read splits file ({e})") from None
    if rows and not {"path", "split"} <= set(rows[0]):
        raise BadInputError(f"{p}: a splits file needs the columns path,split")
    bad = sorted({r["split"] for r in rows} - set(SPLITS) - {""})
    if bad:
        raise BadInputError(f"{p}: unknown split names {bad}; expected {', '.join(SPLITS)}")
    return {r["path"]: r["split"] for r in rows if r["split"]}


def apply_splits(index: DatasetIndex, splits: dict[str, str]) -> DatasetIndex:
    """Set each record's split from a :func:`load_splits` mapping (all must be present)."""
    missing = [r.path for r in index.records if r.path not in splits]
    if missing:
        raise ConfigError(
            f"{len(missing)} images have no saved split (e.g. {missing[0]}); the data set "
            "changed since the splits were saved"
        )
    return index.subset([dataclasses.replace(r, split=splits[r.path]) for r in index.records])


def kfold_splits(
    index: DatasetIndex, k: int = 5, seed: int = 0, *, group_by_patient: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(train_idx, test_idx)`` index arrays for k-fold cross-validation.

    Folds are stratified by class and grouped by patient (never one patient in both).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if not isinstance(k, int) or k < 2:
        raise ConfigError(f"k must be an integer >= 2, got {k!r}")
    groups = _groups(list(index.records), group_by_patient)
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise ConfigError(f"k={k} folds need at least {k} patients/groups, found {n_groups}")
    y = _labels(list(index.records))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield from cv.split(np.zeros(len(y)), y, groups)
