"""What a cross-validation holds out together: patients, or whole institutions.

A model that will meet the next hospital's patients is best judged on a hospital it never
saw. ``institution`` groups patients by the site that contributed them; TCGA case ids carry
it as their second part (the tissue source site: ``TCGA_CS_4941`` → ``CS``), as the LGG
brain-MRI set does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from medlens.errors import ConfigError

GROUP_UNITS = ("patient", "institution")


def institution_of(patient: str) -> str:
    """The institution of a patient id (TCGA tissue source site), or a ConfigError saying so."""
    parts = [p for p in re.split(r"[-_]", str(patient)) if p]
    if len(parts) >= 2 and parts[0].upper() == "TCGA":
        return parts[1].upper()
    raise ConfigError(f"cannot tell the institution of patient {patient!r}: only TCGA case ids "
                      "(TCGA_<site>_<case>) carry it; use --group-by patient")


def unit_of(patient: str, by: str) -> str:
    """The group a patient belongs to under ``by`` (``patient`` or ``institution``)."""
    if by == "patient":
        return str(patient)
    if by == "institution":
        return institution_of(patient)
    raise ConfigError(f"--group-by must be one of {', '.join(GROUP_UNITS)}, got {by!r}")


def group_folds(patients: Sequence[str], k: int, *, by: str, seed: int = 0) -> list[list[str]]:
    """``k`` folds of patients such that every group (institution) lies in one fold.

    Groups are shuffled with ``seed`` and dealt largest first to the fold with the fewest
    patients so far, so folds are as even as whole groups allow.

    Raises:
        ConfigError: fewer groups than folds (the message gives how many there are).
    """
    units: dict[str, list[str]] = {}
    for p in sorted(map(str, patients)):
        units.setdefault(unit_of(p, by), []).append(p)
    if len(units) < k:
        raise ConfigError(f"--group-by {by}: {len(units)} {by} group(s) ({', '.join(sorted(units))}) cannot fill "
                          f"{k} folds; use --folds {len(units)} or fewer")
    names = sorted(units)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    order.sort(key=lambda u: -len(units[u]))  # stable: ties keep the shuffled order
    folds: list[list[str]] = [[] for _ in range(k)]
    for u in order:
        min(folds, key=len).extend(units[u])
    return [sorted(f) for f in folds]
