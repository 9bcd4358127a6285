"""Segmentation data layouts → :class:`~medlens.data.records.DatasetIndex` (task="segment").

| layout      | on disk                                                           | patient |
|-------------|-------------------------------------------------------------------|---------|
| kaggle_3m   | ``<case>/<case>_<n>.tif`` + ``<case>_<n>_mask.tif`` (Kaggle LGG)   | case folder; slices ordered by ``<n>`` |
| pairs       | ``images/`` + ``masks/`` (or ``labels/``) 2D files matched by stem, or any naming via ``mask_pattern`` | parent folder when images are in per-patient folders, else the stem |
| nnunet      | ``dataset.json``, ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz`` | case |
| volumes     | ``images/`` + ``labels/`` (or ``masks/``) NIfTI/MetaImage volumes, or ``X.nii.gz`` + ``X_mask.nii.gz`` side by side | stem |

Records of 2D layouts have ``meta["kind"] = "slice"`` and ``meta["slice"] = n``; volume
layouts have ``meta["kind"] = "volume"`` (and ``meta["channels"]`` for nnU-Net's
per-channel files). Problems found while indexing (missing mask, mask of another size)
are listed in ``DatasetIndex.problems`` with the file named; the rest goes on. Mask
*values* are checked when the data are read (:mod:`medlens.segment.data`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from medlens.data.records import DatasetIndex, Problem, Record
from medlens.errors import BadInputError
from medlens.io.images import IMAGE_EXTENSIONS
from medlens.io.volumes import VOLUME_SUFFIXES, volume_suffix
from medlens.io.walk import files_under
from medlens.options import look_up_option
from medlens.registry import Registry

SEGMENT_LAYOUTS: Registry = Registry("segmentation layout")
CLASSES = ["background", "lesion"]
_IMAGE_DIRS = ("images", "image", "imgs", "img")
_MASK_DIRS = ("masks", "mask", "labels", "label", "segmentations", "gt")
_MASK_SUFFIXES = ("_mask", "_seg", "_label", "_gt")
_KAGGLE_RE = re.compile(r"^(?P<case>.+)_(?P<n>\d+)\.tiff?$", re.IGNORECASE)


def load_segmentation_dataset(
    path: str | Path, *, layout: str | None = None, mask_pattern: str | None = None
) -> DatasetIndex:
    """Index a segmentation data set.

    Args:
        path: the data set's root folder.
        layout: one of ``kaggle_3m``, ``pairs``, ``nnunet``, ``volumes``; ``None`` detects.
        mask_pattern: for ``pairs``: where an image's mask is, relative to the image's
            folder, with ``{stem}`` (file name without suffix) and ``{ext}`` (suffix), e.g.
            ``"{stem}_mask.png"`` or ``"../masks/{stem}{ext}"``.

    Raises:
        BadInputError: folder missing, layout not recognised, or nothing usable found.
    """
    root = Path(path)
    if not root.is_dir():
        raise BadInputError(f"{root}: not a folder; give the data set's root folder")
    if layout is None:
        layout = "pairs" if mask_pattern else detect_segmentation_layout(root)
        if layout is None:
            raise BadInputError(
                f"{root}: no segmentation layout recognised; expected one of "
                f"{', '.join(SEGMENT_LAYOUTS.names())} (see medlens.segment.layouts)"
            )
    layout = look_up_option(layout, SEGMENT_LAYOUTS.names(), what="segmentation layout")
    records, problems = SEGMENT_LAYOUTS.get(layout)(root, mask_pattern=mask_pattern)
    if not records:
        detail = f" ({len(problems)} problems, first: {problems[0].path}: {problems[0].reason})" if problems else ""
        raise BadInputError(f"{root}: no image/mask pairs found for layout {layout!r}{detail}")
    return DatasetIndex(root=str(root), layout=layout, classes=list(CLASSES), records=records,
                        problems=problems, task="segment")


def detect_segmentation_layout(path: str | Path) -> str | None:
    """Name of the layout ``path`` looks like, or ``None``."""
    root = Path(path)
    if not root.is_dir():
        return None
    if (root / "dataset.json").is_file() and (root / "imagesTr").is_dir():
        return "nnunet"
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir()]
    for d in subdirs[:50]:
        if any(f.name.lower().endswith(("_mask.tif", "_mask.tiff")) for f in d.iterdir()):
            return "kaggle_3m"
    img_dir, mask_dir = _find_dir(root, _IMAGE_DIRS), _find_dir(root, _MASK_DIRS)
    if img_dir is not None and mask_dir is not None:
        files = files_under(img_dir)
        if any(volume_suffix(f) in VOLUME_SUFFIXES for f in files):
            return "volumes"
        if any(f.suffix.lower() in IMAGE_EXTENSIONS for f in files):
            return "pairs"
    if any(volume_suffix(f) in VOLUME_SUFFIXES for f in root.iterdir() if f.is_file()):
        return "volumes"
    return None


def _find_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        for cand in (root / n, root / n.capitalize()):
            if cand.is_dir():
                return cand
    return None


def _size_problem(image: Path, mask: Path) -> Problem | None:
    """Compare header sizes (cheap: no pixel decoding)."""
    from PIL import Image

    try:
        with Image.open(image) as a, Image.open(mask) as b:
            if a.size != b.size:
                return Problem(str(mask), f"mask is {b.size[0]}×{b.size[1]} but its image "
                               f"{image.name} is {a.size[0]}×{a.size[1]}; pair skipped")
    except OSError as e:
        return Problem(str(image), f"cannot open image or mask header ({e}); pair skipped")
    return None


@SEGMENT_LAYOUTS.register("kaggle_3m")
def _kaggle_3m(root: Path, *, mask_pattern: str | None = None) -> tuple[list[Record], list[Problem]]:
    records: list[Record] = []
    problems: list[Problem] = []
    for case_dir in sorted(d for d in root.iterdir() if d.is_dir()):
        items = []
        for f in case_dir.iterdir():
            m = _KAGGLE_RE.match(f.name)
            if m and not f.stem.lower().endswith("_mask"):
                items.append((int(m.group("n")), f))
        masks = {f.name.lower() for f in case_dir.iterdir() if "_mask" in f.name.lower()}
        for n, img in sorted(items):
            mask = img.with_name(f"{img.stem}_mask{img.suffix}")
            if mask.name.lower() not in masks or not mask.is_file():
                problems.append(Problem(str(img), f"missing mask {mask.name}; slice skipped"))
                continue
            prob = _size_problem(img, mask)
            if prob is not None:
                problems.append(prob)
                continue
            records.append(Record(path=str(img), patient=case_dir.name, mask=str(mask),
                                  meta={"kind": "slice", "slice": n}))
        for name in sorted(masks):
            stem = name.rsplit("_mask", 1)[0]
            if not any(f.stem.lower() == stem for _, f in items):
                problems.append(Problem(str(case_dir / name), "mask without image; ignored", "warning"))
    return records, problems


@SEGMENT_LAYOUTS.register("pairs")
def _pairs(root: Path, *, mask_pattern: str | None = None) -> tuple[list[Record], list[Problem]]:
    img_dir = _find_dir(root, _IMAGE_DIRS) or root
    mask_dir = _find_dir(root, _MASK_DIRS)
    problems: list[Problem] = []
    records: list[Record] = []
    images = [f for f in files_under(img_dir) if f.suffix.lower() in IMAGE_EXTENSIONS]
    if mask_pattern is None:
        images = [f for f in images if not f.stem.lower().endswith(_MASK_SUFFIXES)]
    pairs = [(img, _pair_mask(img, img_dir, mask_dir, mask_pattern)) for img in images]
    mask_files = {m.resolve() for _, m in pairs if m is not None and m.is_file()}
    for img, mask in pairs:
        if img.resolve() in mask_files:
            continue  # this file is some image's mask
        if mask is None or not mask.is_file():
            want = mask.name if mask is not None else f"a mask named like {img.stem}.*"
            problems.append(Problem(str(img), f"missing mask ({want}); image skipped"))
            continue
        prob = _size_problem(img, mask)
        if prob is not None:
            problems.append(prob)
            continue
        rel = img.relative_to(img_dir)
        patient = rel.parts[0] if len(rel.parts) > 1 else img.stem
        n = _trailing_int(img.stem)
        records.append(Record(path=str(img), patient=patient, mask=str(mask),
                              meta={"kind": "slice", "slice": n}))
    records.sort(key=lambda r: (r.patient or "", r.meta["slice"] if r.meta["slice"] is not None else -1, r.path))
    return records, problems


def _pair_mask(img: Path, img_dir: Path, mask_dir: Path | None, pattern: str | None) -> Path | None:
    if pattern is not None:
        return img.parent / pattern.format(stem=img.stem, ext=img.suffix)
    if mask_dir is None:
        for suf in _MASK_SUFFIXES:
            for ext in (img.suffix, ".png", ".tif"):
                cand = img.with_name(f"{img.stem}{suf}{ext}")
                if cand.is_file():
                    return cand
        return None
    base = mask_dir / img.relative_to(img_dir).parent
    for name in [img.name] + [f"{img.stem}{s}{e}" for s in ("",) + _MASK_SUFFIXES
                               for e in (img.suffix, ".png", ".tif", ".tiff")]:
        if (base / name).is_file():
            return base / name
    return base / img.name


def _trailing_int(stem: str) -> int | None:
    m = re.search(r"(\d+)$", stem)
    return int(m.group(1)) if m else None


@SEGMENT_LAYOUTS.register("nnunet")
def _nnunet(root: Path, *, mask_pattern: str | None = None) -> tuple[list[Record], list[Problem]]:
    try:
        meta = json.loads((root / "dataset.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BadInputError(f"{root / 'dataset.json'}: cannot read ({e})") from None
    ending = meta.get("file_ending", ".nii.gz")
    n_ch = len(meta.get("channel_names", meta.get("modality", {"0": ""})))
    records: list[Record] = []
    problems: list[Problem] = []
    cases = sorted({f.name[: -len(ending) - 5] for f in (root / "imagesTr").iterdir()
                    if f.name.endswith(f"_0000{ending}")})
    for case in cases:
        chans = [root / "imagesTr" / f"{case}_{c:04d}{ending}" for c in range(n_ch)]
        missing = [c.name for c in chans if not c.is_file()]
        if missing:
            problems.append(Problem(str(chans[0]), f"missing channel file(s) {missing}; case skipped"))
            continue
        label = root / "labelsTr" / f"{case}{ending}"
        if not label.is_file():
            problems.append(Problem(str(chans[0]), f"missing label {label.name} in labelsTr; case skipped"))
            continue
        records.append(Record(path=str(chans[0]), patient=case, mask=str(label),
                              meta={"kind": "volume", "channels": [str(c) for c in chans]}))
    return records, problems


@SEGMENT_LAYOUTS.register("volumes")
def _volumes(root: Path, *, mask_pattern: str | None = None) -> tuple[list[Record], list[Problem]]:
    img_dir, mask_dir = _find_dir(root, _IMAGE_DIRS), _find_dir(root, _MASK_DIRS)
    records: list[Record] = []
    problems: list[Problem] = []
    if img_dir is not None and mask_dir is not None:
        for img in sorted(f for f in img_dir.iterdir() if volume_suffix(f) in VOLUME_SUFFIXES):
            suffix = volume_suffix(img)
            stem = img.name[: -len(suffix)]
            cands = [mask_dir / img.name] + [mask_dir / f"{stem}{s}{suffix}" for s in _MASK_SUFFIXES]
            mask = next((c for c in cands if c.is_file()), None)
            if mask is None:
                problems.append(Problem(str(img), f"missing mask {cands[0]}; volume skipped"))
                continue
            records.append(Record(path=str(img), patient=stem, mask=str(mask), meta={"kind": "volume"}))
        return records, problems
    files = sorted(f for f in root.iterdir() if volume_suffix(f) in VOLUME_SUFFIXES)
    for img in files:
        suffix = volume_suffix(img)
        stem = img.name[: -len(suffix)]
        if stem.lower().endswith(_MASK_SUFFIXES):
            continue
        mask = next((img.with_name(f"{stem}{s}{suffix}") for s in _MASK_SUFFIXES
                     if img.with_name(f"{stem}{s}{suffix}").is_file()), None)
        if mask is None:
            problems.append(Problem(str(img), f"missing mask {stem}_mask{suffix}; volume skipped"))
            continue
        records.append(Record(path=str(img), patient=stem, mask=str(mask), meta={"kind": "volume"}))
    return records, problems
