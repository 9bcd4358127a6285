"""Dataset layouts as users hold them, each turned into one :class:`DatasetIndex`.

Layouts (registry ``LAYOUTS``; detection tries them in ``DETECTION_ORDER``):

* ``medmnist``: a MedMNIST ``.npz`` (or a folder holding one).
* ``csv``: a manifest (``path,label[,patient][,split]``; ISIC ``image,benign_malignant``).
* ``idc``: Kaggle IDC ``<root>/<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png``.
* ``aplaml``: ``<root>/<Patient_ID>/Signed slides/<cell type>/*.jpg`` plus ``master.csv``.
* ``patient_table``: ``<root>/<patient>/*.png`` plus a ``patient,label`` table.
* ``imagefolder``: ``<root>/<class>/*`` or ``<root>/<split>/<class>/*``.

Indexing never decodes images (see :func:`medlens.data.describe.check_readable`) and
never writes to the data set.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlens.data.aplaml import SIGNED_FOLDER, find_master_table, load_aplaml
from medlens.data.files import build_index, has_images, images_in, stray_images, visible_dirs
from medlens.data.records import DatasetIndex, Problem, Record, order_classes
from medlens.data.tables import (
    PATH_COLUMNS,
    SPLIT_ALIASES,
    find_manifest,
    find_patient_table,
    has_column,
    load_manifest,
    load_patient_table,
)
from medlens.errors import BadInputError, ConfigError
from medlens.options import look_up_option
from medlens.registry import Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """A dataset layout: how to recognise it and how to index it."""

    name: str
    detect: Callable[[Path], bool]
    load: Callable[..., DatasetIndex]
    options: frozenset[str]
    summary: str


LAYOUTS: Registry[Layout] = Registry("dataset layout")
DETECTION_ORDER = ("medmnist", "aplaml", "csv", "idc", "patient_table", "imagefolder")
IDC_NAME = re.compile(
    r"^(?P<pid>[^_]+)_idx\d+_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<c>\d+)\.png$", re.IGNORECASE
)


def _register(name: str, detect: Callable[[Path], bool], options: set[str], summary: str):
    def deco(load: Callable[..., DatasetIndex]) -> Callable[..., DatasetIndex]:
        LAYOUTS.register(name)(Layout(name, detect, load, frozenset(options), summary))
        return load

    return deco


def list_layouts() -> list[str]:
    """Names of the known dataset layouts."""
    return LAYOUTS.names()


def load_dataset(
    path: str | os.PathLike[str],
    *,
    layout: str | None = None,
    label_column: str | None = None,
    path_column: str | None = None,
    patient_column: str | None = None,
    split_column: str | None = None,
    positive_labels: list[str] | None = None,
    patient_table: str | None = None,
    allow_outside_paths: bool = False,
) -> DatasetIndex:
    """Index the data set at ``path``, detecting its layout unless ``layout`` is given.

    Args:
        path: a folder, a manifest CSV or a MedMNIST ``.npz``.
        layout: one of :func:`list_layouts`; ``None`` detects it.
        label_column, path_column, patient_column, split_column: override the CSV
            columns (``csv`` and, for label/patient, ``patient_table``).
        positive_labels: class names that become the positive class of a two-class
            task (all other classes become the negative class).
        patient_table: the CSV of patient labels for the ``patient_table`` layout.
        allow_outside_paths: accept manifest paths that resolve outside the manifest's
            folder (``../``, absolute paths, escaping symlinks); refused by default so a
            manifest cannot pull in files the user did not mean to give.

    Raises:
        BadInputError: the path is missing or no layout fits (the message lists them), a
            manifest has no clear label column, or a manifest path is outside its folder.
        ConfigError: an unknown layout or an option that does not apply to it.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise BadInputError(f"{p}: no such file or folder")
    p = p.resolve()
    opts: dict[str, Any] = {
        k: v
        for k, v in {
            "label_column": label_column,
            "path_column": path_column,
            "patient_column": patient_column,
            "split_column": split_column,
            "patient_table": patient_table,
        }.items()
        if v is not None
    }
    name = (
        detect_layout(p, opts)
        if layout is None
        else look_up_option(layout, LAYOUTS.names(), what="dataset layout")
    )
    entry = LAYOUTS.get(name)
    extra = sorted(set(opts) - entry.options)
    if extra:
        raise ConfigError(
            f"option(s) {', '.join(extra)} do not apply to the {name!r} layout"
            f" (it accepts: {', '.join(sorted(entry.options)) or 'none'})"
        )
    if name == "csv":  # the only layout whose file paths come from user-written text
        opts["allow_outside_paths"] = allow_outside_paths
    index = entry.load(p, **opts)
    if positive_labels:
        index = apply_positive_labels(index, positive_labels)
    logger.info("%s: %s layout, %d records, %d problems", p, name, len(index), len(index.problems))
    return index


def detect_layout(path: Path, opts: dict[str, str] | None = None) -> str:
    """The first layout in ``DETECTION_ORDER`` that recognises ``path``."""
    opts = opts or {}
    if "patient_table" in opts:
        return "patient_table"
    if {"path_column", "split_column"} & set(opts):
        return "csv"
    for name in DETECTION_ORDER:
        if LAYOUTS.get(name).detect(path):
            return name
    tried = "; ".join(f"{n} ({LAYOUTS.get(n).summary})" for n in DETECTION_ORDER)
    raise BadInputError(f"{path}: no usable data set found. Layouts tried: {tried}")


def apply_positive_labels(index: DatasetIndex, positive_labels: list[str]) -> DatasetIndex:
    """Collapse classes into negative (0) vs positive (1); raw names kept in meta."""
    pos = [look_up_option(c, index.classes, what="positive label") for c in positive_labels]
    neg = [c for c in index.classes if c not in pos]
    if not neg:
        raise ConfigError(
            f"positive_labels {positive_labels} cover every class; nothing is negative"
        )
    names = [neg[0] if len(neg) == 1 else "negative", pos[0] if len(pos) == 1 else "positive"]
    records = [
        r
        if r.label is None
        else dataclasses.replace(
            r,
            label=int(index.classes[r.label] in pos),
            meta={**r.meta, "raw_label": index.classes[r.label]},
        )
        for r in index.records
    ]
    out = index.subset(records)
    out.classes = names
    out.info["positive_labels"] = pos
    out.info["label_map"] = {c: names[int(c in pos)] for c in index.classes}
    return out


# ---------------------------------------------------------------- medmnist


def _detect_medmnist(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() == ".npz"
    return path.is_dir() and any(path.glob("*.npz"))


@_register("medmnist", _detect_medmnist, set(), "a MedMNIST .npz file, or a folder with one")
def _load_medmnist(path: Path) -> DatasetIndex:
    from medlens.data.medmnist import load_npz

    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if len(files) != 1:
            raise BadInputError(
                f"{path}: holds {len(files)} .npz files ({', '.join(f.name for f in files)});"
                " give the one to use"
            )
        path = files[0]
    return load_npz(path)


# ---------------------------------------------------------------- csv manifest


def _detect_csv(path: Path) -> bool:
    if path.is_file():  # a CSV given by name is a manifest; loading explains a bad header
        return path.suffix.lower() in (".csv", ".tsv")
    table = find_manifest(path)
    return table is not None and has_column(table, PATH_COLUMNS)


@_register(
    "csv",
    _detect_csv,
    {"label_column", "path_column", "patient_column", "split_column"},
    "a manifest CSV with path,label[,patient][,split] columns",
)
def _load_csv(path: Path, **columns: Any) -> DatasetIndex:
    manifest = find_manifest(path)
    if manifest is None:
        raise BadInputError(
            f"{path}: no manifest CSV found (give the .csv itself, or name it labels.csv)"
        )
    return load_manifest(manifest, **columns)


# ---------------------------------------------------------------- IDC


def _detect_idc(path: Path) -> bool:
    if not path.is_dir():
        return False
    for pdir in visible_dirs(path)[:5]:
        for cls in ("0", "1"):
            cdir = pdir / cls
            if cdir.is_dir():
                with os.scandir(cdir) as it:
                    for e in it:
                        if IDC_NAME.match(e.name):
                            return True
    return False


@_register(
    "idc",
    _detect_idc,
    set(),
    "Kaggle IDC <root>/<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<C>.png",
)
def _load_idc(root: Path) -> DatasetIndex:
    records: list[Record] = []
    problems = stray_images(root, "the IDC root")
    for pdir in visible_dirs(root):
        pid = pdir.name
        problems += stray_images(pdir, f"patient folder {pid}")
        for cdir in visible_dirs(pdir):
            if cdir.name not in ("0", "1"):
                problems.append(
                    Problem(
                        str(cdir),
                        "unexpected folder in an IDC patient folder (expected 0 or 1); skipped",
                    )
                )
                continue
            for f in images_in(cdir):
                m = IDC_NAME.match(f.name)
                meta: dict[str, int] = {}
                if m is None:
                    problems.append(
                        Problem(
                            str(f),
                            "file name does not follow <patient>_idx5_x<X>"
                            "_y<Y>_class<C>.png; folder labels used",
                            "warning",
                        )
                    )
                else:
                    meta = {"x": int(m["x"]), "y": int(m["y"])}
                    if m["pid"] != pid:
                        problems.append(
                            Problem(
                                str(f),
                                f"file name says patient {m['pid']} but "
                                f"the folder says {pid}; folder used",
                                "warning",
                            )
                        )
                    if m["c"] != cdir.name:
                        problems.append(
                            Problem(
                                str(f),
                                f"file name says class {m['c']} but the "
                                f"folder says {cdir.name}; folder used",
                                "warning",
                            )
                        )
                records.append(Record(str(f), label=int(cdir.name), patient=pid, meta=meta))
    info = {"class_names": {"0": "no IDC", "1": "IDC"}, "positive_class": "1"}
    return build_index(root, "idc", records, problems, ["0", "1"], info=info)


# ---------------------------------------------------------------- patient table


def _detect_patient_table(path: Path) -> bool:
    if not path.is_dir() or find_patient_table(path) is None:
        return False
    return any(has_images(d, 1) for d in visible_dirs(path))


@_register(
    "patient_table",
    _detect_patient_table,
    {"patient_table", "label_column", "patient_column"},
    "<root>/<patient>/*.png with a patients.csv table of patient,label",
)
def _load_patient_table(
    root: Path,
    *,
    patient_table: str | None = None,
    label_column: str | None = None,
    patient_column: str | None = None,
) -> DatasetIndex:
    return load_patient_table(root, patient_table=patient_table, label_column=label_column,
                              patient_column=patient_column)


# ---------------------------------------------------------------- APL/AML


def _detect_aplaml(path: Path) -> bool:
    if not path.is_dir() or find_master_table(path) is None:
        return False
    tops = visible_dirs(path)
    return any(SIGNED_FOLDER.match(s.name) for d in [*tops, *(c for t in tops[:3] for c in visible_dirs(t))]
               for s in visible_dirs(d))


_register(
    "aplaml",
    _detect_aplaml,
    set(),
    "<root>/<Patient_ID>/Signed slides/<cell type>/*.jpg with master.csv (APL/AML blood smears)",
)(load_aplaml)


# ---------------------------------------------------------------- imagefolder


def _detect_imagefolder(path: Path) -> bool:
    return path.is_dir() and any(has_images(d, 1) for d in visible_dirs(path))


@_register(
    "imagefolder",
    _detect_imagefolder,
    set(),
    "<root>/<class>/* or <root>/<train|val|test>/<class>/*",
)
def _load_imagefolder(root: Path) -> DatasetIndex:
    top = visible_dirs(root)
    split_of = {d: SPLIT_ALIASES.get(d.name.lower()) for d in top}
    by_split = bool(top) and all(split_of.values())
    problems = stray_images(root, "the root")
    class_dirs: list[tuple[str | None, Path]] = []
    if by_split:
        for d in top:
            problems += stray_images(d, f"split folder {d.name}")
            class_dirs += [(split_of[d], c) for c in visible_dirs(d)]
    else:
        class_dirs = [(None, c) for c in top]
    found = [(split, c, images_in(c)) for split, c in class_dirs]
    non_empty = {c.name for _, c, files in found if files}
    for split, c, files in found:
        if not files:
            why = (
                "class dropped"
                if c.name not in non_empty
                else f"no images of this class in the {split} split"
            )
            problems.append(
                Problem(str(c), f"empty class folder: no image files; {why}", "warning")
            )
    classes = order_classes(non_empty)
    records = [
        Record(str(f), label=classes.index(c.name), split=split)
        for split, c, files in found
        for f in files
    ]
    return build_index(root, "imagefolder", records, problems, classes)
