"""The out-of-distribution guard of ``predict``, ``explain`` and ``evaluate``.

Each input is compared with the package's ``data_fingerprint`` (see
:mod:`medlens.data.fingerprint`); a flagged input gets a warning line naming it and its
reasons, and ``--strict`` refuses the job (exit 1) before anything is written. Packages
saved before fingerprints existed are not checked; one info line says so.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from medlens.data.fingerprint import OodResult, check, file_stats, record_stats
from medlens.errors import BadInputError

log = logging.getLogger(__name__)
#: Warning lines printed before the rest are summarised in one line.
MAX_WARNINGS = 20


def package_fingerprint(pkg: Any) -> dict[str, Any] | None:
    """The package's training fingerprint; ``None`` (with one info line) for older packages."""
    fp = (getattr(pkg, "metadata", None) or {}).get("data_fingerprint")
    if not fp:
        log.info("%s: this model package has no training-data fingerprint (saved before medlens recorded one); "
                 "inputs are not checked for being unlike the training data", getattr(pkg, "path", "model"))
        return None
    return fp


def check_files(pkg: Any, files: Sequence[str | os.PathLike[str]]) -> dict[str, OodResult]:
    """Check 2D image files against the package's fingerprint (unreadable files are left
    to the caller, which reports them as it always does)."""
    fp = package_fingerprint(pkg)
    if fp is None:
        return {}
    out: dict[str, OodResult] = {}
    for f in files:
        try:
            out[str(f)] = check(file_stats(f), fp)
        except Exception as e:  # unreadable: named by the command's own reader
            log.debug("OOD check skipped %s: %s", f, e)
    return out


def check_index(pkg: Any, index: Any, *, workers: int | None = None) -> dict[str, OodResult]:
    """Check every record of a data set (``evaluate``), decoding in a few threads."""
    fp = package_fingerprint(pkg)
    if fp is None:
        return {}

    def one(rec: Any) -> tuple[str, OodResult | None]:
        try:
            return rec.path, check(record_stats(index, rec), fp)
        except Exception as e:  # unreadable: the cache reports it as a problem
            log.debug("OOD check skipped %s: %s", rec.path, e)
            return rec.path, None

    n = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n) as pool:
        pairs = list(pool.map(one, index.records, chunksize=64))
    return {p: r for p, r in pairs if r is not None}


def flagged(results: dict[str, OodResult]) -> dict[str, OodResult]:
    return {p: r for p, r in results.items() if r.ood}


def warn_flagged(results: dict[str, OodResult]) -> None:
    """One warning line per flagged input (the first :data:`MAX_WARNINGS`, then a count)."""
    bad = flagged(results)
    for i, (p, r) in enumerate(bad.items()):
        if i == MAX_WARNINGS:
            log.warning("… and %d more input(s) unlike the training data", len(bad) - MAX_WARNINGS)
            break
        log.warning("%s: unlike the training data (out of distribution): %s", p, "; ".join(r.reasons))


def refuse_flagged(results: dict[str, OodResult], *, flag: str = "--strict") -> None:
    """Raise :class:`BadInputError` naming the flagged inputs (``--strict``)."""
    bad = flagged(results)
    if not bad:
        return
    names = list(bad)
    shown = ", ".join(f"{Path(p).name} ({bad[p].reasons[0]})" for p in names[:5])
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    raise BadInputError(f"{flag}: {len(names)} input(s) unlike the model's training data: {shown}{more}; "
                        f"remove them or run without {flag} to get flagged answers")


def summary(results: dict[str, OodResult], *, max_files: int = 50) -> dict[str, Any]:
    """For ``metrics.json``: how many inputs were checked and flagged, why, and which."""
    bad = flagged(results)
    kinds = Counter(_kind(r) for r in bad.values() for r in r.reasons)
    return {"checked": len(results), "flagged": len(bad),
            "flagged_fraction": round(len(bad) / len(results), 4) if results else None,
            "reasons": dict(kinds.most_common()),
            "files": {p: "; ".join(r.reasons) for p, r in list(bad.items())[:max_files]}}


def _kind(reason: str) -> str:
    """The kind of a reason of :func:`medlens.data.fingerprint.check`, for counting."""
    head = reason.split(",")[0]
    if "-bit input" in head:
        return "bit depth"
    if head.endswith(("channel", "channels")):
        return "channels"
    for key in ("modality", "size", "colour"):
        if head.startswith(key):
            return key
    return "intensity"


def guard_rows(pkg: Any, rows: list[dict[str, Any]], *, strict: bool = False) -> None:
    """``predict``: warn about the rows :meth:`ModelPackage.predict` flagged; ``strict`` refuses."""
    if package_fingerprint(pkg) is None:
        return
    results = {r["file"]: OodResult(float(r.get("ood_score") or 0.0), r["ood_reasons"].split("; "))
               for r in rows if r.get("ood")}
    warn_flagged(results)
    if strict:
        refuse_flagged(results)


def guard_files(pkg: Any, inputs: Sequence[str | os.PathLike[str]], *, strict: bool = False) -> dict[str, OodResult]:
    """``explain`` and segmentation ``predict``: check the 2D image files among ``inputs``
    (folders expanded), warn, and refuse under ``strict`` — before anything is written."""
    from medlens.io.images import IMAGE_EXTENSIONS
    from medlens.io.walk import files_under

    if int(((getattr(pkg, "metadata", None) or {}).get("input") or {}).get("spatial_dims", 2)) == 3:
        log.info("volumes given to a 3D model are not checked against its training data yet")
        return {}
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        found = files_under(p) if p.is_dir() else [p]  # the files explain/predict will read
        files += [f for f in found if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
    results = check_files(pkg, files)
    warn_flagged(results)
    if strict:
        refuse_flagged(results)
    return results


def ood_cell(row: dict[str, Any]) -> str:
    """The predict table's ``ood`` cell: ``yes: reasons``, ``no``, or empty when unchecked."""
    if row.get("ood"):
        return f"[yellow]yes: {row.get('ood_reasons', '')}[/yellow]"
    return "no" if "ood" in row else ""
