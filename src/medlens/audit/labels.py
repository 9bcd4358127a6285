"""Class-name checks: classes too small to learn and names that are variants of another.

Both usually come from a slip in a manifest or a folder name ("malignnat" beside
"malignant", "Benign" beside "benign") and would otherwise train a model with an extra
class without a word. Either is a *blocking* finding: ``medlens train`` stops unless the
user passes ``--ignore-audit``.

Rules (documented here because the thresholds are choices, not facts):

* **Rare class**: fewer than ``max(MIN_CLASS_IMAGES, MIN_CLASS_SHARE × labelled images)``
  images. Five is the least a class needs to put at least one image in each of train,
  validation and test with the default 70/15/15 split and still learn from a few; 0.1 % keeps
  the bar meaningful on large sets (100,000 images → 100) while a real minority class such as
  ISIC's dermatofibroma (≈ 1 %) passes.
* **Near-duplicate names**: equal once case, spaces and punctuation are removed
  ("Benign" / "benign_", "non-IDC" / "non idc"), or one edit apart (a letter added,
  dropped, changed, or two neighbours swapped) when both names are at least
  ``MIN_TYPO_LENGTH`` letters long. Short names (AML / ALL, T1 / T2) and names that
  differ only in a number or roman numeral ("grade 1" / "grade 2", "stage I" / "stage II")
  are real, distinct classes and are never flagged. The smaller class is reported as the
  suspect, with the larger one as the class it was probably meant to be.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from medlens.data.records import DatasetIndex, Record

MIN_CLASS_IMAGES = 5
MIN_CLASS_SHARE = 0.001
MIN_TYPO_LENGTH = 5
SHOW_ROWS = 5
_ROMAN = re.compile(r"m{0,3}(cm|cd|d?c{0,3})(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})")


def label_findings(index: DatasetIndex) -> dict[str, Any]:
    """Rare classes and near-duplicate class names of a classification index.

    Returns:
        ``{"min_class_images", "rare", "near_duplicates", "blocking"}``: each finding
        names the class, its image count, the manifest lines and first paths, and (for
        near duplicates) the class it was probably meant to be; ``blocking`` holds one
        message per finding.
    """
    by_name = _records_by_name(index)
    n_labelled = sum(len(v) for v in by_name.values())
    threshold = max(MIN_CLASS_IMAGES, math.ceil(MIN_CLASS_SHARE * n_labelled))
    out: dict[str, Any] = {
        "min_class_images": threshold,
        "rare": [],
        "near_duplicates": [],
        "blocking": [],
    }
    if not index.has_class_labels or len(by_name) < 2:
        return out
    suspects: set[str] = set()
    names = sorted(by_name, key=lambda c: (-len(by_name[c]), c))  # larger class first
    for i, big in enumerate(names):
        for small in names[i + 1 :]:
            how = near_duplicate(big, small)
            if how is None:
                continue
            suspects.add(small)
            item = _describe(index, small, by_name[small]) | {
                "suspected_class": big,
                "suspected_class_images": len(by_name[big]),
                "why": how,
            }
            out["near_duplicates"].append(item)
            out["blocking"].append(
                f"Class {small!r} ({item['images']} image(s)) looks like {big!r} ({len(by_name[big])} image(s)): "
                f"the names {how}. Rows: {item['where']}. Fix the label in the manifest (or the folder name) so "
                "each class has one spelling."
            )
    for name in names:
        if name in suspects or len(by_name[name]) >= threshold:
            continue
        item = _describe(index, name, by_name[name])
        close = difflib.get_close_matches(name, [c for c in names if c != name], n=1, cutoff=0.75)
        item["closest_class"] = close[0] if close else None
        out["rare"].append(item)
        hint = f" (closest class name: {close[0]!r})" if close else ""
        out["blocking"].append(
            f"Class {name!r} has only {item['images']} image(s), fewer than {threshold}{hint}: too few to "
            f"train and test on, and often a labelling slip. Rows: {item['where']}. Fix the labels, leave "
            "these rows out, or add images."
        )
    return out


def near_duplicate(a: str, b: str) -> str | None:
    """How two class names look like one (a phrase for the message), or ``None``."""
    ka, kb = _key(a), _key(b)
    if ka == kb:
        return "differ only in case, spaces or punctuation"
    if min(len(ka), len(kb)) < MIN_TYPO_LENGTH or abs(len(ka) - len(kb)) > 1 or _numbered(a, b):
        return None
    if _edit_distance(ka, kb) <= 1:
        return "are one letter apart"
    return None


def _key(name: str) -> str:
    return re.sub(r"[\W_]+", "", name.casefold())


def _numbered(a: str, b: str) -> bool:
    """Names that differ only in numbers or roman numerals ("grade 1" / "grade 2")."""
    ta, tb = (re.findall(r"[^\W\d_]+|\d+", n.casefold()) for n in (a, b))
    if len(ta) != len(tb):
        return False
    diff = [(x, y) for x, y in zip(ta, tb, strict=True) if x != y]
    return bool(diff) and all(_is_number(x) and _is_number(y) for x, y in diff)


def _is_number(token: str) -> bool:
    return token.isdigit() or (token != "" and _ROMAN.fullmatch(token) is not None)


def _edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of
    neighbours each count 1 (the standard library has no edit distance)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def _records_by_name(index: DatasetIndex) -> dict[str, list[Record]]:
    """Records per class *as written* (before ``positive_labels`` merged classes)."""
    out: dict[str, list[Record]] = defaultdict(list)
    for r in index.records:
        if r.label is not None:
            out[str(r.meta.get("raw_label", index.classes[r.label]))].append(r)
    return dict(out)


def _describe(index: DatasetIndex, name: str, records: list[Record]) -> dict[str, Any]:
    """The class, its count, manifest lines, first paths and a short ``where`` phrase."""
    lines = sorted(int(r.meta["line"]) for r in records if "line" in r.meta)
    paths = [_short(r.path, index.root) for r in records[:SHOW_ROWS]]
    patients = sorted({r.patient for r in records if r.patient is not None})
    more = f", … {len(records) - SHOW_ROWS} more" if len(records) > SHOW_ROWS else ""
    if lines:
        table = Path(str(index.info.get("manifest", "manifest"))).name
        where = (
            f"{table} line(s) {', '.join(map(str, lines[:SHOW_ROWS]))}{more} ({', '.join(paths)})"
        )
    elif index.patient_labels and patients:
        where = f"patient(s) {', '.join(patients[:SHOW_ROWS])} ({', '.join(paths)}{more})"
    else:
        where = ", ".join(paths) + more
    return {"class": name, "images": len(records), "lines": lines, "paths": paths,
            "patients": patients[:SHOW_ROWS], "where": where}  # fmt: skip


def _short(path: str, root: str) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path
