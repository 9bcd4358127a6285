"""CSV tables: manifests (``path,label[,patient][,split]``) and patient diagnosis tables.

Column names are mapped from common aliases (ISIC's ``image,benign_malignant`` too) or
given by options; every bad row becomes a :class:`Problem` naming its line.

The label column is never guessed: an unambiguous name (``label``, ``class``,
``benign_malignant``, ``target``) is used, a looser one (``diagnosis``) only when it is the
table's one column besides path/patient/split; otherwise loading stops and lists the columns.
Image paths must stay inside the manifest's folder unless the caller allows otherwise.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from medlens.data.files import build_index, images_in, stray_images, visible_dirs
from medlens.data.records import DatasetIndex, Problem, Record, order_classes
from medlens.errors import BadInputError, ConfigError
from medlens.io.images import IMAGE_EXTENSIONS
from medlens.options import look_up_option

PATH_COLUMNS = ("path", "image", "image_id", "file", "filename", "image_path", "filepath")
LABEL_COLUMNS = ("label", "benign_malignant", "diagnosis", "target", "class")
#: Names that say "this column is the class" whatever else the table holds.
CLEAR_LABEL_COLUMNS = ("label", "labels", "class", "benign_malignant", "target")
PATIENT_COLUMNS = ("patient", "patient_id", "lesion_id", "subject", "subject_id")
SPLIT_COLUMNS = ("split", "fold")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "tr": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "holdout": "test",
}
MANIFEST_NAMES = ("labels.csv", "manifest.csv")
PATIENT_TABLE_NAMES = ("patients.csv", "diagnosis.csv")


def _header(path: Path) -> list[str]:
    import csv

    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            head = fh.readline()
    except (OSError, UnicodeDecodeError):
        return []
    return [h.strip() for h in next(csv.reader([head], delimiter=_delimiter(head)), [])]


def _delimiter(head: str) -> str:
    return max(",;\t", key=head.count)


def read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and ``(line number, row)`` pairs of a CSV (``,``/``;``/tab, BOM tolerated)."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            head = fh.readline()
            fh.seek(0)
            reader = csv.DictReader(fh, delimiter=_delimiter(head))
            header = [h.strip() for h in reader.fieldnames or []]
            reader.fieldnames = header
            rows = [
                (reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None})
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BadInputError(f"{path}: cannot read CSV ({e})") from None
    if not header:
        raise BadInputError(f"{path}: empty CSV (no header row)")
    return header, rows


def pick_column(
    header: list[str],
    aliases: tuple[str, ...],
    override: str | None,
    what: str,
    table: Path,
    required: bool,
) -> str | None:
    """The column ``override`` names, else the first of ``aliases`` present (any case), else None."""
    if override is not None:
        return look_up_option(override, header, what=f"{what} column of {table.name}")
    lowered = {h.lower(): h for h in header}
    for alias in aliases:
        if alias in lowered:
            return lowered[alias]
    if required:
        raise BadInputError(
            f"{table}: no {what} column found (columns: {', '.join(header)}); expected one of "
            f"{', '.join(aliases)}, or pass {what}_column="
        )
    return None


def _pick_label(
    header: list[str], override: str | None, table: Path, taken: set[str | None]
) -> str:
    """The label column: the one named, the one clear name, or a looser alias standing alone.

    Why not the first alias present: a table with ``diagnosis`` next to other columns may
    hold the class anywhere, and training on the wrong column gives a silent wrong model.
    """
    if override is not None:
        return look_up_option(override, header, what=f"label column of {table.name}")
    lowered = {h.lower(): h for h in header}
    clear = [lowered[a] for a in CLEAR_LABEL_COLUMNS if a in lowered]
    if len(clear) == 1:
        return clear[0]
    rest = [h for h in header if h and h not in taken]
    if not clear and len(rest) == 1 and rest[0].lower() in LABEL_COLUMNS:
        return rest[0]
    if clear:
        why, hint = f"several columns could hold the class ({', '.join(clear)})", clear[0]
    else:
        why = "no label column recognised"
        hint = next((h for h in rest if h.lower() in LABEL_COLUMNS), rest[0] if rest else "NAME")
    raise BadInputError(
        f"{table}: {why}; columns found: {', '.join(header)}. Name the column that holds the "
        f"class with --label-column (e.g. --label-column {hint}; label_column= in Python)"
    )


def _outside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (symlinks followed) lies outside ``folder``."""
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, base]) != base


def has_column(path: Path, aliases: tuple[str, ...]) -> bool:
    """Whether the table's header has one of ``aliases`` (case-insensitive)."""
    return any(h.lower() in aliases for h in _header(path))


def find_manifest(path: Path) -> Path | None:
    """The CSV manifest ``path`` is or holds (a known name, or the one CSV with a path column)."""
    if path.is_file():
        return path if path.suffix.lower() in (".csv", ".tsv") else None
    if not path.is_dir():
        return None
    for name in MANIFEST_NAMES:
        if (path / name).is_file():
            return path / name
    csvs = sorted(path.glob("*.csv"))
    with_paths = [c for c in csvs if has_column(c, PATH_COLUMNS)]
    if len(with_paths) == 1:
        return with_paths[0]
    return csvs[0] if len(csvs) == 1 else None


def find_patient_table(root: Path) -> Path | None:
    """The patient → label table in ``root`` (a known name, or the one fitting CSV)."""
    for name in PATIENT_TABLE_NAMES:
        if (root / name).is_file():
            return root / name
    fits = [
        c
        for c in sorted(root.glob("*.csv"))
        if has_column(c, PATIENT_COLUMNS)
        and has_column(c, LABEL_COLUMNS)
        and not has_column(c, PATH_COLUMNS)
    ]
    return fits[0] if len(fits) == 1 else None


class _Resolver:
    """Finds a manifest's image: as given, under ``images/``, or by trying extensions."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._listings: dict[Path, tuple[set[str], dict[str, str]]] = {}

    def _listing(self, folder: Path) -> tuple[set[str], dict[str, str]]:
        if folder not in self._listings:
            try:
                names = sorted(e.name for e in os.scandir(folder) if e.is_file())
            except OSError:
                names = []
            stems: dict[str, str] = {}
            for n in names:
                stem, ext = os.path.splitext(n)
                if ext.lower() in IMAGE_EXTENSIONS:
                    stems.setdefault(stem, n)
            self._listings[folder] = (set(names), stems)
        return self._listings[folder]

    def __call__(self, raw: str) -> Path | None:
        rel = Path(raw)
        for cand in [rel] if rel.is_absolute() else [self.base / rel, self.base / "images" / rel]:
            names, stems = self._listing(cand.parent)
            if cand.name in names:
                return Path(os.path.normpath(cand))
            if cand.suffix.lower() not in IMAGE_EXTENSIONS and cand.name in stems:
                return Path(os.path.normpath(cand.parent / stems[cand.name]))
        return None


def load_manifest(
    manifest: Path,
    *,
    label_column: str | None = None,
    path_column: str | None = None,
    patient_column: str | None = None,
    split_column: str | None = None,
    allow_outside_paths: bool = False,
) -> DatasetIndex:
    """Index a manifest; paths resolving outside its folder are refused unless allowed.

    Raises:
        BadInputError: no path column, no clear label column, or a path outside the folder.
    """
    header, rows = read_csv(manifest)
    pcol = pick_column(header, PATH_COLUMNS, path_column, "path", manifest, True)
    patcol = pick_column(header, PATIENT_COLUMNS, patient_column, "patient", manifest, False)
    scol = pick_column(header, SPLIT_COLUMNS, split_column, "split", manifest, False)
    lcol = _pick_label(header, label_column, manifest, {pcol, patcol, scol})
    values = {r[scol] for _, r in rows if r.get(scol)} if scol else set()
    as_fold = any(v.lower() not in SPLIT_ALIASES for v in values)
    if as_fold and not all(re.fullmatch(r"\d+", v) for v in values):
        odd = sorted(v for v in values if v.lower() not in SPLIT_ALIASES)[:5]
        raise ConfigError(
            f"{manifest}: column {scol!r} has values {odd} that are neither "
            "train/val/test nor fold numbers; fix them or pass split_column="
        )
    used = {pcol, lcol, patcol, scol}
    resolve = _Resolver(manifest.parent)
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    kept: list[tuple[Path, str, dict[str, str], int]] = []
    outside: list[tuple[int, str, str]] = []
    for line, row in rows:
        raw = row.get(pcol, "")
        where = f"{manifest.name} line {line}"
        if not raw:
            problems.append(Problem(f"{manifest}:{line}", f"{where}: empty {pcol!r} value"))
            continue
        f = resolve(raw)
        if f is None:
            problems.append(Problem(str(manifest.parent / raw), f"{where}: image file not found"))
            continue
        if not allow_outside_paths and _outside(f, manifest.parent):
            outside.append((line, raw, os.path.realpath(f)))
            continue
        if str(f) in seen:
            problems.append(
                Problem(
                    str(f),
                    f"{where}: listed again (first at line {seen[str(f)]}); later row ignored",
                    "warning",
                )
            )
            continue
        label = row.get(lcol, "")
        if not label:
            problems.append(Problem(str(f), f"{where}: empty label in column {lcol!r}"))
            continue
        seen[str(f)] = line
        kept.append((f, label, row, line))
    if outside:
        line, raw, real = outside[0]
        via = (
            ""
            if Path(raw).is_absolute() or ".." in Path(raw).parts
            else f" (it resolves to {real})"
        )
        more = f" (and {len(outside) - 1} more row(s))" if len(outside) > 1 else ""
        raise BadInputError(
            f"{manifest.name} line {line}: {raw}{via} is outside the data folder {manifest.parent}{more}; "
            "pass --allow-outside-paths if that is intended"
        )
    classes = order_classes({lab for _, lab, _, _ in kept})
    records = []
    for f, label, row, line in kept:
        meta: dict[str, object] = {k: v for k, v in row.items() if k not in used and v}
        meta["line"] = line
        split = None
        if scol and row.get(scol):
            if as_fold:
                meta["fold"] = int(row[scol])
            else:
                split = SPLIT_ALIASES[row[scol].lower()]
        records.append(
            Record(
                str(f),
                label=classes.index(label),
                patient=(row.get(patcol) or None) if patcol else None,
                split=split,
                meta=meta,
            )
        )
    info = {
        "manifest": str(manifest),
        "columns": {"path": pcol, "label": lcol, "patient": patcol, "split": scol},
    }
    return build_index(manifest.parent, "csv", records, problems, classes, info=info)


def read_patient_labels(
    table: Path, label_column: str | None, patient_column: str | None
) -> tuple[dict[str, str], list[Problem]]:
    """Patient → label from a patient table, with the rows left out as problems."""
    header, rows = read_csv(table)
    pc = pick_column(header, PATIENT_COLUMNS, patient_column, "patient", table, True)
    lc = _pick_label(header, label_column, table, {pc})
    labels: dict[str, tuple[str, int]] = {}
    bad: set[str] = set()
    problems: list[Problem] = []
    for line, row in rows:
        pid, lab = row.get(pc, ""), row.get(lc, "")
        if not pid or not lab:
            problems.append(
                Problem(f"{table}:{line}", f"{table.name} line {line}: empty patient or label")
            )
        elif pid in labels and labels[pid][0] != lab:
            problems.append(
                Problem(
                    str(table.parent / pid),
                    f"{table.name} line {line}: patient "
                    f"{pid} labelled {lab!r} here but {labels[pid][0]!r} at line "
                    f"{labels[pid][1]}; patient skipped",
                )
            )
            bad.add(pid)
        else:
            labels.setdefault(pid, (lab, line))
    return {p: v[0] for p, v in labels.items() if p not in bad}, problems


def load_patient_table(
    root: Path,
    *,
    patient_table: str | None = None,
    label_column: str | None = None,
    patient_column: str | None = None,
) -> DatasetIndex:
    """The ``patient_table`` layout: ``<root>/<patient>/*`` images, each labelled with its
    patient's row of the table (``patients.csv``/``diagnosis.csv`` at the root, or
    ``patient_table``); folders without a row, rows without a folder and stray images are
    listed as problems."""
    if patient_table is not None:
        table = Path(patient_table).expanduser()
        table = table if table.is_absolute() else root / table
        if not table.is_file():
            raise BadInputError(f"{table}: patient table not found")
    else:
        table = find_patient_table(root)
        if table is None:
            raise BadInputError(
                f"{root}: no patient table found; put patients.csv (patient,label) at the root "
                "or pass patient_table"
            )
    labels, problems = read_patient_labels(table, label_column, patient_column)
    classes = order_classes(set(labels.values()))
    records: list[Record] = []
    folders = {d.name: d for d in visible_dirs(root)}
    problems += stray_images(root, "the root")
    for pid, folder in folders.items():
        images = images_in(folder)
        if pid not in labels:
            if images:
                problems.append(
                    Problem(
                        str(folder),
                        f"patient folder has no row in {table.name}; "
                        f"its {len(images)} images are skipped",
                    )
                )
            continue
        if not images:
            problems.append(Problem(str(folder), "patient folder holds no images", "warning"))
        lab = classes.index(labels[pid])
        records += [Record(str(f), label=lab, patient=pid) for f in images]
    problems += [
        Problem(
            str(root / pid),
            f"patient {pid} is listed in {table.name} but has no image folder",
            "warning",
        )
        for pid in sorted(set(labels) - set(folders))
    ]
    return build_index(
        root,
        "patient_table",
        records,
        problems,
        classes,
        patient_labels=True,
        info={"patient_table": str(table)},
    )
