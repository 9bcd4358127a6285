"""What a cross-validation holds out together: patients, institutions, a manifest column's
values, or what a regular expression takes from the patient id or file path.

A model that will meet the next hospital's patients is best judged on a hospital it never
saw. One mechanism serves every task (``medlens cv --group-by``, classify and segment):

* ``patient`` (the default): each patient is a group (each image when patients are unknown);
* ``institution``: a manifest column named institution, site, center, centre or hospital when
  the data has one, else the site in TCGA case ids (their second part, the tissue source site:
  ``TCGA_CS_4941`` → ``CS``, as in the LGG brain-MRI set);
* ``<column>``: the values of that manifest column (an unknown column is a usage error that lists
  the columns there are);
* ``regex:<pattern>``: the pattern's one capture group, searched in the patient id, else in the
  file's path relative to the data folder (``regex:^(\\d{2})`` → the first two digits).

Fold count rule (:func:`fold_count`): with ``--folds`` given, that; without it, a grouping other
than ``patient`` with at most :data:`LOGO_MAX_GROUPS` groups holds out one group per fold
(leave-one-group-out: each site is judged by a model that never saw it); otherwise the task's
default (classify 5, segment 3), so patient-grouped defaults stay as they were.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import BadInputError, ConfigError

GROUP_UNITS = ("patient", "institution")
#: Manifest columns that ``--group-by institution`` reads (case-insensitive), in this order.
INSTITUTION_COLUMNS = ("institution", "site", "center", "centre", "hospital")
#: Without ``--folds``, a non-patient grouping with at most this many groups is left-one-group-out.
LOGO_MAX_GROUPS = 10
#: Record metadata that is not a manifest column (layouts' own fields).
_NOT_COLUMNS = frozenset({"line", "fold", "x", "y", "raw_label"})


@dataclass(frozen=True)
class Grouping:
    """A parsed ``--group-by`` value (see the module docstring)."""

    kind: str  # "patient", "institution", "column" or "regex"
    column: str | None = None
    pattern: str | None = None

    @property
    def name(self) -> str:
        """The value as the user gives it (``patient``, ``institution``, ``site``, ``regex:…``)."""
        if self.kind == "column":
            return str(self.column)
        if self.kind == "regex":
            return f"regex:{self.pattern}"
        return self.kind

    @property
    def unit(self) -> str:
        """One held-out unit, in words (reports: "leave-institutions-out", "held-out site CS")."""
        return {"column": str(self.column), "regex": "group"}.get(self.kind, self.kind)


def parse_group_by(spec: str | Grouping | None) -> Grouping:
    """``--group-by`` text → :class:`Grouping` (``None`` → patient).

    Raises:
        ConfigError: an empty value, or a regex that does not compile or lacks exactly one group.
    """
    if isinstance(spec, Grouping):
        return spec
    text = "patient" if spec is None else str(spec).strip()
    if not text:
        raise ConfigError("--group-by needs a value: patient, institution, a manifest column or regex:<pattern>")
    low = text.lower()
    if low in GROUP_UNITS:
        return Grouping(low)
    if low.startswith("regex:"):
        pattern = text[len("regex:"):]
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"--group-by {text}: invalid regular expression ({e})") from None
        if rx.groups != 1:
            raise ConfigError(f"--group-by {text}: the pattern needs exactly one capture group (…), "
                              f"it has {rx.groups}; e.g. regex:^([A-Z]+)_")
        return Grouping("regex", pattern=pattern)
    return Grouping("column", column=text)


def institution_of(patient: str) -> str:
    """The institution of a patient id (TCGA tissue source site), or a ConfigError saying so."""
    parts = [p for p in re.split(r"[-_]", str(patient)) if p]
    if len(parts) >= 2 and parts[0].upper() == "TCGA":
        return parts[1].upper()
    raise ConfigError(f"cannot tell the institution of patient {patient!r}: only TCGA case ids "
                      "(TCGA_<site>_<case>) carry it, or a manifest column named "
                      f"{'/'.join(INSTITUTION_COLUMNS)}; use --group-by patient, a column or regex:<pattern>")


def _search(pattern: str, *texts: str | None) -> str | None:
    rx = re.compile(pattern)
    for t in texts:
        if t:
            m = rx.search(t)
            if m and m.group(1):
                return m.group(1)
    return None


def unit_of(patient: str, by: str | Grouping) -> str:
    """The group a patient belongs to under ``by`` when only the patient id is known
    (segmentation cases): ``patient``, ``institution`` (TCGA site) or ``regex:…``.

    Raises:
        ConfigError: a column grouping (no manifest here), no institution in the id, or a
            regex that does not match the id.
    """
    g = parse_group_by(by)
    if g.kind == "patient":
        return str(patient)
    if g.kind == "institution":
        return institution_of(patient)
    if g.kind == "regex":
        found = _search(str(g.pattern), str(patient))
        if found is None:
            raise ConfigError(f"--group-by {g.name}: the pattern does not match patient {patient!r}")
        return found
    raise ConfigError(f"--group-by {g.name}: this data has no manifest columns; use one of "
                      f"{', '.join(GROUP_UNITS)} or regex:<pattern>")


def manifest_columns(records: Sequence[Any], info: Mapping[str, Any] | None = None) -> list[str]:
    """The manifest columns a record set carries (what ``--group-by <column>`` may name)."""
    cols = {k for r in records for k in (getattr(r, "meta", None) or {}) if k not in _NOT_COLUMNS}
    cols |= {c for c in ((info or {}).get("columns") or {}).values() if c}
    return sorted(cols, key=str.casefold)


def record_groups(records: Sequence[Any], by: str | Grouping, *, root: str | Path | None = None,
                  info: Mapping[str, Any] | None = None) -> list[str]:
    """The group of every record (``Record``-like: ``path``, ``patient``, ``meta``) under ``by``.

    ``patient`` falls back to one group per image when a record has no patient id.

    Raises:
        ConfigError: an unknown column (the message lists the available ones), or no way to
            tell the institution.
        BadInputError: a record without a value in the column, or one the regex does not match.
    """
    g = parse_group_by(by)
    if g.kind == "patient":
        return [f"{r.patient}" if r.patient is not None else f"image:{r.path}" for r in records]
    columns = manifest_columns(records, info)
    patient_col = ((info or {}).get("columns") or {}).get("patient")
    col: str | None = None
    if g.kind == "institution":
        col = next((c for name in INSTITUTION_COLUMNS for c in columns if c.lower() == name), None)
        if col is None:
            out = []
            for r in records:
                if r.patient is None:
                    raise ConfigError(f"--group-by institution: {r.path} has no patient id and the data has no "
                                      f"{'/'.join(INSTITUTION_COLUMNS)} column; use --group-by <column> or "
                                      "regex:<pattern>")
                out.append(institution_of(r.patient))
            return out
    elif g.kind == "column":
        col = next((c for c in columns if c == g.column), None) or \
            next((c for c in columns if c.casefold() == str(g.column).casefold()), None)
        if col is None:
            have = ", ".join(columns) if columns else "none (this layout has no manifest)"
            raise ConfigError(f"--group-by {g.column}: no such manifest column; the columns are: {have} "
                              f"(or patient, institution, regex:<pattern>)")
    if col is not None:
        if col == patient_col:
            return record_groups(records, "patient")
        out = []
        for r in records:
            v = (r.meta or {}).get(col)
            if v is None or str(v).strip() == "":
                line = (r.meta or {}).get("line")
                raise BadInputError(f"{r.path}{f' (manifest line {line})' if line else ''}: no value in column "
                                    f"{col!r}, which --group-by {g.name} holds out by; fill it in or exclude the row")
            out.append(str(v).strip())
        return out
    out = []
    for r in records:
        rel = str(r.path)
        if root is not None:
            try:
                rel = str(Path(r.path).relative_to(Path(root)))
            except ValueError:
                pass
        found = _search(str(g.pattern), r.patient, rel)
        if found is None:
            raise BadInputError(f"{r.path}: --group-by {g.name} matches neither its patient id "
                                f"({r.patient!r}) nor its path ({rel}); adjust the pattern")
        out.append(found)
    return out


def fold_count(n_groups: int, by: str | Grouping, folds: int | None, default: int) -> int:
    """How many folds: ``folds`` when given; else leave-one-group-out for a non-patient grouping with
    at most :data:`LOGO_MAX_GROUPS` groups; else ``default`` (see the module docstring)."""
    if folds is not None:
        return folds
    if parse_group_by(by).kind != "patient" and 2 <= n_groups <= LOGO_MAX_GROUPS:
        return n_groups
    return default


def check_enough_groups(groups: Sequence[str], k: int, by: str | Grouping) -> None:
    """Refuse ``k`` folds with fewer than ``k`` groups (ConfigError naming how many there are)."""
    g = parse_group_by(by)
    names = sorted(set(groups))
    if len(names) < k:
        shown = ", ".join(names[:12]) + (" …" if len(names) > 12 else "")
        raise ConfigError(f"--group-by {g.name}: {len(names)} {g.unit} group(s) ({shown}) cannot fill "
                          f"{k} folds; use --folds {len(names)} or fewer")


def stratified_group_folds(groups: Sequence[str], labels: Sequence[int] | np.ndarray, k: int, *,
                           seed: int = 0, by: str | Grouping = "patient") -> np.ndarray:
    """Held-out fold per item: whole groups, stratified by label as far as groups allow
    (scikit-learn's ``StratifiedGroupKFold``; with ``k`` equal to the number of groups, one
    group per fold).

    Raises:
        ConfigError: fewer groups than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    check_enough_groups(groups, k, by)
    gid = np.unique(np.asarray(list(groups), dtype=object), return_inverse=True)[1]
    y = np.asarray(labels)
    fold = np.full(len(y), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for i, (_, test) in enumerate(StratifiedGroupKFold(k, shuffle=True, random_state=seed)
                                      .split(np.zeros(len(y)), y, gid)):
            fold[test] = i
    return fold


def group_folds(patients: Sequence[str], k: int, *, by: str | Grouping, seed: int = 0) -> list[list[str]]:
    """``k`` folds of patients such that every group (institution, regex group) lies in one fold.

    Groups are shuffled with ``seed`` and dealt largest first to the fold with the fewest
    patients so far, so folds are as even as whole groups allow.

    Raises:
        ConfigError: fewer groups than folds (the message gives how many there are).
    """
    g = parse_group_by(by)
    units: dict[str, list[str]] = {}
    for p in sorted(map(str, patients)):
        units.setdefault(unit_of(p, g), []).append(p)
    if len(units) < k:
        raise ConfigError(f"--group-by {g.name}: {len(units)} {g.unit} group(s) ({', '.join(sorted(units))}) "
                          f"cannot fill {k} folds; use --folds {len(units)} or fewer")
    names = sorted(units)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    order.sort(key=lambda u: -len(units[u]))  # stable: ties keep the shuffled order
    folds: list[list[str]] = [[] for _ in range(k)]
    for u in order:
        min(folds, key=len).extend(units[u])
    return [sorted(f) for f in folds]
