"""The patients of a patient-level run: the data set checked to label patients, the
patient-grouped split (or given cross-validation folds), its ``splits.csv``, and the
negative class.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from medlens.errors import ConfigError
from medlens.mil.config import PATIENT_LAYOUTS, PatientConfig


def patient_index(data: str | Path, layout: str | None = None) -> Any:
    """The data set at ``data``, checked to carry one label per patient.

    Raises:
        ConfigError: the labels are per image (IDC, image folders): that is ``--task classify``.
    """
    from medlens.data.layouts import load_dataset

    index = load_dataset(data, layout=layout)
    if not index.patient_labels or not index.has_patients:
        raise ConfigError(f"{data}: the {index.layout} layout labels images, not patients; the patient task needs "
                          f"one diagnosis per patient ({', '.join(PATIENT_LAYOUTS)} layouts). Use --task classify")
    return index


def split_patients(index: Any, cfg: PatientConfig) -> dict[str, list[str]]:
    """Patients per split, stratified by diagnosis; a patient is in exactly one split.

    ``cfg.val_patients``/``cfg.test_patients`` (cross-validation folds) are taken as given.

    Raises:
        ConfigError: a given patient is not in the data, or in both lists.
    """
    from medlens.data.splits import assign_splits

    if cfg.val_patients is not None or cfg.test_patients is not None:
        everyone = {str(r.patient) for r in index.records}
        val, test = set(cfg.val_patients or []), set(cfg.test_patients or [])
        unknown = sorted((val | test) - everyone)
        if unknown:
            raise ConfigError(f"patients {unknown[:5]} are not in {cfg.data}; give patients of that data set")
        if val & test:
            raise ConfigError(f"patients {sorted(val & test)[:5]} are both validation and test patients")
        return {"train": sorted(everyone - val - test), "val": sorted(val), "test": sorted(test)}

    s = assign_splits(index, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                      seed=cfg.train.seed, group_by_patient=True)
    out: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    for r in s.records:
        out[r.split or "train"].add(str(r.patient))
    return {k: sorted(v) for k, v in out.items()}


def negative_index(classes: list[str], name: str | None) -> int:
    from medlens.evaluate.operating_point import guess_negative_class
    from medlens.options import look_up_option

    return classes.index(look_up_option(name, classes, what="negative class")) if name else \
        guess_negative_class(classes)


def save_patient_splits(index: Any, splits: dict[str, list[str]], path: Path) -> None:
    """``splits.csv``: every record of ``index`` with its patient's split."""
    from medlens.data.splits import save_splits

    where = {p: s for s, ps in splits.items() for p in ps}
    save_splits(index.subset([dataclasses.replace(r, split=where.get(str(r.patient))) for r in index.records]), path)
