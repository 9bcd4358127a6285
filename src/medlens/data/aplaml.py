"""The APL/AML blood-smear layout as published: ``<root>/<Patient_ID>/Signed slides/<cell
type>/*.jpg`` with a ``master.csv`` patient table at the root.

Kept apart from :mod:`medlens.data.tables` (generic manifests and patient tables) because
this reader knows one data set's folder conventions: signed/unsigned slide folders, cell-type
folders as an auxiliary label, and thumbnails mixed in with the cell images.
"""

from __future__ import annotations

import re
from pathlib import Path

from medlens.data.files import build_index, images_in, visible_dirs
from medlens.data.records import DatasetIndex, Problem, Record, order_classes
from medlens.data.tables import PATIENT_COLUMNS, pick_column, read_csv, read_patient_labels
from medlens.errors import BadInputError

MASTER_TABLE_NAMES = ("master.csv",)
#: Folders of cells no pathologist signed off (no cell-type label): left out of training.
UNSIGNED_FOLDER = re.compile(r"^unsigned[\s_-]*slides?$", re.IGNORECASE)
SIGNED_FOLDER = re.compile(r"^signed[\s_-]*slides?$", re.IGNORECASE)
#: A cell image whose longer side is below this share of the data set's median is a thumbnail.
THUMBNAIL_SHARE = 0.25


def find_master_table(root: Path) -> Path | None:
    """``master.csv`` (any case) at ``root``: the APL/AML patient table."""
    if not root.is_dir():
        return None
    for f in sorted(root.iterdir()):
        if f.is_file() and f.name.lower() in MASTER_TABLE_NAMES:
            return f
    return None


def read_master_table(table: Path) -> tuple[dict[str, dict[str, str]], list[Problem], str]:
    """Patient → its row of an APL/AML ``master.csv`` (``Patient_ID, Diagnosis, Cohort, Age at
    Diagnosis, Gender``), the rows left out as problems, and the diagnosis column's name.

    The diagnosis is the label (named here, not guessed: the table has several columns);
    the other columns ride along as patient information.
    """
    header, _ = read_csv(table)
    lowered = {h.lower(): h for h in header}
    if "diagnosis" not in lowered:
        raise BadInputError(f"{table}: an APL/AML master table needs a Diagnosis column "
                            f"(columns: {', '.join(header)})")
    labels, problems = read_patient_labels(table, lowered["diagnosis"], None)
    pc = pick_column(header, PATIENT_COLUMNS, None, "patient", table, True)
    rows = {row[pc]: row for _, row in read_csv(table)[1] if row.get(pc) in labels}
    return {pid: {**rows[pid], "label": lab} for pid, lab in labels.items()}, problems, lowered["diagnosis"]


def _patient_folders(root: Path, ids: set[str]) -> dict[str, Path]:
    """Patient id → folder: ``<root>/<id>``, or one level deeper (``<root>/<group>/<id>``)."""
    found: dict[str, Path] = {}
    for d in visible_dirs(root):
        if d.name in ids:
            found.setdefault(d.name, d)
        else:
            for sub in visible_dirs(d):
                if sub.name in ids:
                    found.setdefault(sub.name, sub)
    return found


def _long_side(path: Path) -> int:
    """The longer side of an image from its header (no decoding); 0 when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return max(im.size)
    except (OSError, UnidentifiedImageError, ValueError):
        return 0  # unreadable files are named later, when decoded


def thumbnails(files: list[Path]) -> dict[Path, str]:
    """The thumbnails among ``files`` with the reason: "thumb" in the name, or a longer side
    under :data:`THUMBNAIL_SHARE` of the median (read from the headers, nothing decoded)."""
    sides = {f: _long_side(f) for f in files}
    readable = sorted(s for s in sides.values() if s > 0)
    small = THUMBNAIL_SHARE * readable[len(readable) // 2] if readable else 0
    out = {}
    for f in files:
        if "thumb" in f.name.lower():
            out[f] = "'thumb' in the name"
        elif 0 < sides[f] < small:
            out[f] = f"{sides[f]} px long side, far below the other images' {readable[len(readable) // 2]} px"
    return out


def load_aplaml(root: Path) -> DatasetIndex:
    """The APL/AML layout as published: ``<root>/<Patient_ID>/Signed slides/<cell type>/*.jpg``
    (sometimes one folder more between ``Signed slides`` and the cell type) with
    ``master.csv`` at the root.

    Every cell gets its patient's Diagnosis as label and keeps its cell-type folder as
    ``meta["cell_type"]`` (an auxiliary label). Left out, each with a problem that says
    so: ``Unsigned slides`` folders (cells without a pathologist's label), thumbnails (a
    name with "thumb", or an image far smaller than the others), folders without a row in
    the table and rows without a folder.
    """
    table = find_master_table(root)
    if table is None:
        raise BadInputError(f"{root}: no master.csv found; the APL/AML layout needs it at the root "
                            "(Patient_ID, Diagnosis, …)")
    patients, problems, dx_col = read_master_table(table)
    classes = order_classes({p["label"] for p in patients.values()})
    folders = _patient_folders(root, set(patients))
    holders = {f.parent for f in folders.values()}
    problems += [Problem(str(d), f"folder has no row in {table.name}; its images are skipped")
                 for d in visible_dirs(root) if d.name not in folders and d not in holders and images_in(d)]
    cells: list[tuple[Path, str, str]] = []
    unsigned: dict[Path, int] = {}
    for pid, folder in sorted(folders.items()):
        for f in images_in(folder):
            rel = f.relative_to(folder).parts
            hit = next((i for i, part in enumerate(rel[:-1]) if UNSIGNED_FOLDER.match(part)), None)
            if hit is not None:
                key = folder.joinpath(*rel[: hit + 1])
                unsigned[key] = unsigned.get(key, 0) + 1
                continue
            cell_type = rel[-2] if len(rel) >= 2 and not SIGNED_FOLDER.match(rel[-2]) else "unknown"
            cells.append((f, pid, cell_type))
    problems += [Problem(str(d), f"'{d.name}' folder: {n} cells without a pathologist's label; skipped")
                 for d, n in sorted(unsigned.items())]
    skipped = {"unsigned_images": sum(unsigned.values()), "thumbnails": 0}
    thumbs = thumbnails([f for f, _, _ in cells])
    problems += [Problem(str(f), f"thumbnail ({why}), not a cell image; skipped") for f, why in thumbs.items()]
    skipped["thumbnails"] = len(thumbs)
    records = [Record(str(f), label=classes.index(patients[pid]["label"]), patient=pid, meta={"cell_type": ct})
               for f, pid, ct in cells if f not in thumbs]
    problems += [Problem(str(root / pid), f"patient {pid} is listed in {table.name} but has no image folder",
                         "warning") for pid in sorted(set(patients) - set(folders))]
    info = {"patient_table": str(table), "label_column": dx_col, "skipped": skipped,
            "patients": {pid: {k: v for k, v in row.items() if k != "label"} for pid, row in patients.items()},
            "auxiliary_labels": ["cell_type"]}
    return build_index(root, "aplaml", records, problems, classes, patient_labels=True, info=info)
