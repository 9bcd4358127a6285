"""Thin adapter from a saved model package and file paths to the tensor-level API.

The core functions take ``(model, x)``; the CLI and other callers holding a package
(``medlens.load_model(path)``) use these helpers, which read the files with the
package's own loader and preprocessing and write overlays and raw maps.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import BadInputError, ConfigError
from medlens.io.atomic import atomic_write_bytes, atomic_write_json
from medlens.io.runlog import logged_run
from medlens.io.walk import files_under

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")


def _is_input(p: Path) -> bool:
    from medlens.io.images import IMAGE_EXTENSIONS

    name = p.name.lower()
    return p.suffix.lower() in IMAGE_EXTENSIONS or name.endswith(VOLUME_SUFFIXES)


def collect_inputs(inputs: Sequence[str | os.PathLike[str]], *, missing_ok: bool = False) -> list[Path]:
    """Files as given, folders expanded (sorted, recursive) to their image/volume files.

    ``missing_ok`` keeps a path that does not exist (reading it then reports "file not
    found" for that file alone, as ``predict`` does) instead of refusing all inputs.
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(
                sorted(
                    f
                    for f in files_under(p)
                    if _is_input(f)
                )
            )
        elif p.is_file() or missing_ok:
            files.append(p)
        else:
            raise BadInputError(f"{p}: no such file or folder")
    if not files:
        raise BadInputError(f"No image files found in {', '.join(map(str, inputs))}")
    return files


def _package(model: Any) -> Any:
    if isinstance(model, (str, os.PathLike)):
        from medlens.package import load_model

        return load_model(str(model))
    return model


def display_norm(pkg: Any) -> tuple[list[float], list[float]] | None:
    """The ``(mean, std)`` that undoes the package's input normalisation for pictures.

    Classifiers normalise ``uint8/255`` with the mean/std in ``metadata["normalize"]``;
    segmenters feed ``uint8/255`` as is. ``None`` when the package does not say.
    """
    meta = getattr(pkg, "metadata", None) or {}
    norm = meta.get("normalize")
    if norm and "mean" in norm and "std" in norm:
        return list(norm["mean"]), list(norm["std"])
    if meta.get("task") == "segment":
        return [0.0], [1.0]
    return None


def _tensor(pkg: Any, paths: Sequence[Path]) -> Any:
    return pkg.preprocess(pkg.load_images([str(p) for p in paths]))


def _readable(pkg: Any, paths: Sequence[Path], on_skip: Callable[[Path, str], None]) -> tuple[list[int], Any]:
    """Positions of the readable ``paths`` and their preprocessed batch (None if none); each
    file that cannot be read is reported to ``on_skip(path, reason)`` and left out."""
    keep, arrays = [], []
    for i, p in enumerate(paths):
        try:
            arrays.append(pkg.load_images([str(p)])[0])
        except BadInputError as e:
            on_skip(p, str(getattr(e, "reason", e)))
            continue
        keep.append(i)
    return keep, (pkg.preprocess(arrays) if arrays else None)


def _log_skip(path: Path, reason: str) -> None:
    log.warning("skipped %s: %s", path, reason)


def _stem(p: Path) -> str:
    name = p.name
    for suf in VOLUME_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return p.stem


def explain_files(
    model: Any,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    method: str = "gradcam",
    target: int | None = None,
    layer: str | None = None,
    out_dir: str | os.PathLike[str] = "explanations",
    batch_size: int = 16,
    on_skip: Callable[[Path, str], None] | None = None,
    **opts: Any,
) -> list[dict[str, Any]]:
    """Explain each input; write ``<name>.<method>.png`` (overlay) and ``.npy`` (raw map).

    A file that cannot be read (missing, corrupt, not an image) is skipped, as in
    ``predict``: ``on_skip(path, reason)`` is told (default: a warning in the log) and the
    rest are explained.

    Args:
        model: a model package or its path.
        inputs: image/volume files or folders.

    Returns:
        One record per input: paths written, predicted class and explained target; a
        skipped input's record holds ``input`` and ``error`` (the reason) only.

    Raises:
        BadInputError: none of the inputs could be read (nothing is written).
    """
    from medlens.explain.base import forward
    from medlens.explain.methods import explain, list_methods
    from medlens.explain.overlay import save_overlay
    from medlens.options import look_up_option

    method = look_up_option(method, list_methods(), what="explanation method")
    pkg = _package(model)
    files = collect_inputs(inputs, missing_ok=True)
    out = Path(out_dir)
    classes = list(getattr(pkg, "classes", []) or [])
    stems = [_stem(f) for f in files]
    dup = {s for s in stems if stems.count(s) > 1}
    names = [f"{i:04d}_{s}" if s in dup else s for i, s in enumerate(stems)]
    norm = display_norm(pkg)
    records: list[dict[str, Any]] = []

    def skip(path: Path, reason: str) -> None:
        records.append({"input": str(path), "error": reason})
        (on_skip or _log_skip)(path, reason)

    for start in range(0, len(files), batch_size):
        keep, x = _readable(pkg, files[start : start + batch_size], skip)
        if x is None:
            continue
        maps = explain(pkg.model, x, method=method, target=target, layer=layer, **opts)
        logits = forward(pkg.model, x)
        for j, k in enumerate(keep):
            f, stem = files[start + k], names[start + k]
            png = save_overlay(out / f"{stem}.{method}.png", x[j], maps[j], norm=norm)
            npy = out / f"{stem}.{method}.npy"
            buf = io.BytesIO()
            np.save(buf, maps[j])
            atomic_write_bytes(npy, buf.getvalue())
            rec: dict[str, Any] = {"input": str(f), "overlay": str(png), "map": str(npy)}
            if logits.ndim == 2:
                pred = int(logits[j].argmax()) if logits.shape[1] > 1 else int(logits[j, 0] > 0)
                rec["predicted"] = classes[pred] if pred < len(classes) else pred
            rec["target"] = target
            records.append(rec)
    if all("error" in r for r in records):
        raise BadInputError(f"none of the {len(files)} input(s) could be read (reasons above)")
    atomic_write_json(out / f"explanations.{method}.json", records)
    return records


def evaluate_files(
    model: Any,
    inputs: Sequence[str | os.PathLike[str]],
    *,
    methods: Sequence[str] | None = None,
    target: int | None = None,
    layer: str | None = None,
    max_images: int = 16,
    **kwargs: Any,
) -> Any:
    """Faithfulness table over (up to ``max_images``) inputs; see ``evaluate_faithfulness``."""
    from medlens.explain.faithfulness import DEFAULT_METHODS, evaluate_faithfulness

    pkg = _package(model)
    files = collect_inputs(inputs, missing_ok=True)[:max_images]
    _, x = _readable(pkg, files, lambda p, why: log.debug("faithfulness: skipped %s: %s", p, why))
    if x is None:
        raise BadInputError(f"none of the {len(files)} input(s) could be read")
    return evaluate_faithfulness(
        pkg.model, x, methods or DEFAULT_METHODS, target=target, layer=layer, **kwargs
    )


@logged_run("out_dir")  # out_dir/run.log
def probe_files(
    model: Any,
    data: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] = "probes",
    max_images: int = 64,
    seed: int = 0,
    split: str = "test",
    **kwargs: Any,
) -> dict[str, Any]:
    """Bias probes on ``split`` of the data; writes ``probes.json``, ``probes.html`` and
    example PNGs.

    The images are the run's ``split`` (its ``splits.csv``, else the data's official
    split); data the run never split are probed whole, and the page says so. Labels come
    from the data's layout when its classes are the package's; otherwise results are
    grouped by the original prediction.
    """
    from medlens.explain.bag_probes import BAG_PROBES, bag_probe_target, probe_bag_files
    from medlens.explain.probe_page import write_probe_page
    from medlens.explain.probes import probe

    pkg = _package(model)
    target = bag_probe_target(pkg)
    if target is not None:  # a patient-level (bag) model: perturb its cells, watch the patient score
        bag_probes = kwargs.pop("probes", None) or BAG_PROBES
        return probe_bag_files(target, data, out_dir=out_dir, max_bags=max_images, seed=seed, split=split,
                               probes=bag_probes)
    if getattr(pkg, "task", "classify") != "classify":
        raise ConfigError(f"{getattr(pkg, 'path', model)}: bias probes need a classifier or a patient-level "
                          f"model; this one is a {getattr(pkg, 'task', 'other')} model")
    names, x, y, chosen = _probe_inputs(pkg, data, split=split, max_images=max_images, seed=seed)
    classes = list(getattr(pkg, "classes", []) or [])
    out = Path(out_dir)
    result = probe(
        pkg.model, x, y, classes=classes or None, seed=seed, example_dir=out / "examples",
        norm=display_norm(pkg), **kwargs,
    )
    result["grouped_by"] = "true label" if y is not None else "original prediction"
    result["data"] = str(data)
    result["images_from"] = chosen
    result["inputs"] = names
    for entry in result["probes"].values():
        for ex in entry["examples"]:
            ex["input"] = names[ex["index"]]
    atomic_write_json(out / "probes.json", result)
    write_probe_page(out / "probes.html", result, title=f"Bias probes — {Path(str(data)).name}")
    return result


def _probe_inputs(
    pkg: Any, data: str | os.PathLike[str], *, split: str, max_images: int, seed: int
) -> tuple[list[str], Any, list[int] | None, str]:
    """``(names, x, labels or None, where the images come from)`` for the bias probes."""
    from medlens.data.layouts import load_dataset

    try:
        index = load_dataset(data)
    except BadInputError:  # no layout: any folder of images, labels from parent folders
        return _probe_files_anyhow(pkg, data, max_images=max_images, seed=seed)
    records, chosen = _split_records(index, Path(pkg.path).parent, split)
    if not records:
        raise BadInputError(f"{data}: no images in the {split} split; give --split all or other data")
    if len(records) > max_images:
        rng = np.random.default_rng(seed)
        records = [records[i] for i in sorted(rng.choice(len(records), max_images, replace=False))]
        chosen += f", {max_images} drawn at random (seed {seed})"
    import torch

    from medlens.data.cache import build_cache
    from medlens.transforms.preprocess import PreprocessConfig

    cache = build_cache(index.subset(records), PreprocessConfig(**pkg.metadata["preprocess"]), use_disk=False)
    if not cache.records:
        raise BadInputError(f"{data}: none of the chosen images could be read")
    mean, std = display_norm(pkg) or ([0.0], [1.0])
    x = torch.from_numpy(cache.images).float().div_(255.0)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    x = ((x - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)).to(pkg.device)
    classes = list(pkg.classes)
    known = all(c in classes for c in index.classes) and all(r.label is not None for r in cache.records)
    y = [classes.index(index.classes[r.label]) for r in cache.records] if known else None
    return [r.path for r in cache.records], x, y, chosen


def _split_records(index: Any, run_dir: Path, split: str) -> tuple[list[Any], str]:
    """The records of ``split``: the run's splits first, then the data's own."""
    from medlens.data.splits import load_splits

    if split == "all":
        return list(index.records), "all images of the data (--split all)"
    table = load_splits(run_dir / "splits.csv") if (run_dir / "splits.csv").is_file() else {}
    where = {r.path: table.get(r.path, table.get(str(Path(r.path).resolve()))) for r in index.records}
    if any(where.values()):
        return [r for r in index.records if where[r.path] == split], f"the run's {split} split (splits.csv)"
    if index.has_official_splits:
        return [r for r in index.records if r.split == split], f"the data's official {split} split"
    return list(index.records), (f"all images: the run's splits.csv does not cover this data and it "
                                 f"has no {split} split of its own")


def _probe_files_anyhow(
    pkg: Any, data: str | os.PathLike[str], *, max_images: int, seed: int
) -> tuple[list[str], Any, list[int] | None, str]:
    files = collect_inputs([data])
    chosen = "all image files under the folder (no data layout recognised)"
    if len(files) > max_images:
        rng = np.random.default_rng(seed)
        files = [files[i] for i in sorted(rng.choice(len(files), max_images, replace=False))]
        chosen += f", {max_images} drawn at random (seed {seed})"
    classes = list(getattr(pkg, "classes", []) or [])
    labels = [classes.index(f.parent.name) if f.parent.name in classes else None for f in files]
    y = labels if all(v is not None for v in labels) else None
    return [str(f) for f in files], _tensor(pkg, files), y, chosen
