"""What a patient package answers with: one diagnosis per bag of cells (``predict``), and
the patient-level metrics of a package on a data set (``evaluate``).

A bag is what the user gives: a folder of one patient's cells (``Unsigned slides`` and
thumbnails left out as in training), a whole data set in a patient layout (one bag per
patient), or loose files/arrays (one bag together).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlens.errors import BadInputError
from medlens.io.atomic import atomic_write_json
from medlens.mil.bags import CellInput, load_bags
from medlens.mil.config import PATIENT_LAYOUTS
from medlens.mil.train import STAGE, patient_metrics, patient_rows, predict_bags, write_per_patient

log = logging.getLogger(__name__)


def cell_files(folder: Path) -> list[Path]:
    """A patient folder's cell images: not in an ``Unsigned slides`` folder, not a thumbnail."""
    from medlens.data.aplaml import UNSIGNED_FOLDER, thumbnails
    from medlens.data.files import images_in

    files = [f for f in images_in(folder)
             if not any(UNSIGNED_FOLDER.match(p) for p in f.relative_to(folder).parts[:-1])]
    thumbs = thumbnails(files)
    for f, why in thumbs.items():
        log.info("%s: thumbnail (%s), not a cell image; skipped", f, why)
    return [f for f in files if f not in thumbs]


def bag_groups(inputs: Any) -> list[tuple[str, str, list[Any]]]:
    """Inputs → ``(patient, source, items)`` bags: a patient-layout data set gives one bag per
    patient, any other folder is one patient, loose files and arrays form one bag."""
    from medlens.data.layouts import detect_layout, load_dataset

    items = [inputs] if isinstance(inputs, (str, Path, np.ndarray)) else list(inputs)
    groups: list[tuple[str, str, list[Any]]] = []
    loose: list[Any] = []
    for item in items:
        if isinstance(item, np.ndarray) or not Path(item).is_dir():
            loose.append(item if isinstance(item, np.ndarray) else str(item))
            continue
        folder = Path(item)
        try:
            layout = detect_layout(folder.resolve())
        except BadInputError:
            layout = None
        if layout in PATIENT_LAYOUTS:
            index = load_dataset(folder, layout=layout)
            by: dict[str, list[str]] = {}
            for r in index.records:
                by.setdefault(str(r.patient), []).append(r.path)
            groups += [(pid, str(folder), paths) for pid, paths in sorted(by.items())]
        else:
            cells = [str(f) for f in cell_files(folder)]
            groups.append((folder.name, str(folder), cells))
    if loose:
        groups.append(("input", "given files" if len(loose) > 1 else str(loose[0]), loose))
    return groups


class PatientPredictor:
    """Per bag: class probabilities, the decision at the package's operating point and the
    cells with the highest attention."""

    def __init__(self, pkg: Any, model: torch.nn.Module | None = None) -> None:
        """``model``: a bag network to use instead of the package's (a stand-in in tests)."""
        import medlens.mil.model  # noqa: F401  (registers the "mil" network the stage rebuilds)
        from medlens.transforms.preprocess import PreprocessConfig

        self.pkg = pkg
        self._model = model
        norm = pkg.metadata.get("normalize") or {}
        self.cell_input = CellInput(tuple(norm.get("mean", (0.0,) * 3)), tuple(norm.get("std", (1.0,) * 3)))
        self.pre = PreprocessConfig(**pkg.metadata["preprocess"])

    @property
    def model(self) -> torch.nn.Module:
        return self._model if self._model is not None else self.pkg.stage(STAGE)

    # --- the bag-level hook of the bias probes (medlens.explain.probes.BagProbeTarget) ------
    @property
    def classes(self) -> list[str]:
        return list(self.pkg.classes)

    @property
    def negative_class(self) -> int:
        return int(self.pkg.negative_class)

    @property
    def threshold(self) -> float | None:
        return self.pkg.threshold

    def probe_bags(self, data: str | Path, *, split: str = "test", max_bags: int = 64,
                   seed: int = 0) -> tuple[list[Any], str]:
        """The patients of ``split`` in ``data`` as bags of cells in [0, 1] for the probes,
        and where they come from (the run's split, the data's, or all of a new cohort)."""
        from medlens.explain.bag_probes import ProbeBag
        from medlens.mil.train import patient_index
        from medlens.options import look_up_option

        split = look_up_option(split, ("test", "val", "train", "all"), what="split")
        index = _with_run_splits(patient_index(data), self.pkg.path)
        chosen = "all patients of the data (--split all)" if split == "all" else f"the {split} patients"
        if split != "all":
            picked = [r for r in index.records if r.split == split]
            if picked:
                index = index.subset(picked)
            elif index.has_official_splits:
                raise BadInputError(f"{data}: no patients in the {split} split; give other data")
            else:
                chosen = "all patients (the data has no splits: a new cohort)"
        bags = load_bags(index, int(self.pkg.metadata["input"]["size"]))
        order = list(range(len(bags)))
        if len(order) > max_bags:
            order = sorted(np.random.default_rng(seed).choice(len(order), max_bags, replace=False).tolist())
            chosen += f", {max_bags} drawn at random (seed {seed})"
        known = all(c in self.classes for c in index.classes)
        out = [ProbeBag(patient=bags.patients[i], cells=bags.cells(i).astype(np.float32) / 255.0,
                        paths=bags.paths(i),
                        label=self.classes.index(index.classes[int(bags.labels[i])]) if known else None)
               for i in order]
        return out, chosen

    def embed_cells(self, cells: np.ndarray) -> torch.Tensor:
        """Cells ``(n, C, S, S)`` in [0, 1] → the encoder's features ``(n, F)`` (each cell on its own)."""
        x = torch.from_numpy(np.ascontiguousarray(cells, dtype=np.float32)).to(self.pkg.device)
        mean = torch.tensor(self.cell_input.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.cell_input.std, device=x.device).view(1, -1, 1, 1)
        with torch.no_grad():
            return self.model.embed((x - mean) / std)

    def bag_probabilities(self, features: torch.Tensor) -> np.ndarray:
        """One bag's encoder features ``(n, F)`` → the patient's class probabilities ``(K,)``."""
        with torch.no_grad():
            logits, _ = self.model.pool_bag(features)
        return torch.softmax(logits.float(), 0).cpu().numpy()

    def load_images(self, paths: Sequence[str | Path]) -> list[np.ndarray]:
        from medlens.io.images import read_image

        return [read_image(p) for p in paths]

    def cells(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Images → ``(n, C, S, S)`` uint8 cells, as training cached them."""
        from medlens.tasks.classify import as_uint8
        from medlens.transforms.preprocess import preprocess_image

        return np.stack([preprocess_image(as_uint8(im), self.pre) for im in images])

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Images → the encoder's normalised ``(n, C, S, S)`` input (one bag)."""
        return self.cell_input(torch.from_numpy(self.cells(images)), self.pkg.device)

    def predict_bag(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One bag's class probabilities ``(K,)`` and attention per cell ``(n,)``."""
        with torch.no_grad():
            logits, a = self.model.forward_bag(self.preprocess(images))
        return torch.softmax(logits.float(), 0).cpu().numpy(), a.float().cpu().numpy()

    def predict(self, inputs: Any, *, batch_size: int = 64) -> list[dict[str, Any]]:
        """Folders/files/arrays → one row per patient bag (``error`` when no cell could be read)."""
        from medlens.io.images import ImageReadError

        pkg, rows = self.pkg, []
        classes, neg, thr = pkg.classes, pkg.negative_class, pkg.threshold
        for pid, source, items in bag_groups(inputs):
            images, names, bad = [], [], []
            for k, item in enumerate(items):
                name = f"array[{k}]" if isinstance(item, np.ndarray) else str(item)
                try:
                    images.append(item if isinstance(item, np.ndarray) else self.load_images([item])[0])
                    names.append(name)
                except ImageReadError as e:
                    bad.append(f"{name}: {e.reason}")
            if not images:
                rows.append({"patient": pid, "file": source, "error": "no readable cell images"
                             + (f" ({bad[0]})" if bad else "")})
                continue
            p, a = self.predict_bag(images)
            score = float(1.0 - p[neg])
            masked = p.copy()
            masked[neg] = -np.inf
            call = (int(masked.argmax()) if score >= thr else neg) if thr is not None else int(p.argmax())
            order = np.argsort(-a, kind="stable")[:5]
            row: dict[str, Any] = {
                "patient": pid, "file": source, "cells": len(images), "predicted": classes[call],
                "disease_score": score, "probabilities": {c: float(v) for c, v in zip(classes, p)},
                "top_cells": [{"file": names[j], "attention": float(a[j])} for j in order],
                "attention": [float(v) for v in a]}
            if thr is not None:
                row.update(decision="positive" if score >= thr else "negative", threshold=float(thr))
            if bad:
                row["unreadable"] = bad
            rows.append(row)
        return rows


def write_patient_predictions(rows: list[dict[str, Any]], out: str | Path, classes: list[str]) -> Path:
    """Rows as ``.json`` (everything) or ``.csv`` (one line per patient)."""
    from medlens.pipelines.predict_io import class_probabilities, write_rows

    cols = ["patient", "file", "cells", "predicted", "disease_score", "decision", "threshold",
            *(f"p_{c}" for c in classes), "top_cell", "top_cell_attention", "error"]

    def flatten(r: dict[str, Any]) -> dict[str, Any]:
        top = (r.get("top_cells") or [{}])[0]
        return {**r, **class_probabilities(r, classes), "top_cell": top.get("file", ""),
                "top_cell_attention": top.get("attention", "")}

    return write_rows(rows, out, cols, flatten)


def _with_run_splits(index: Any, pkg_dir: Path) -> Any:
    """The training run's splits when evaluating on the data it was trained on."""
    from medlens.data.splits import load_splits

    table_path = pkg_dir.parent / "splits.csv"
    if not table_path.exists():
        return index
    table = load_splits(table_path)
    if not any(r.path in table for r in index.records[:50]):
        return index
    return index.subset([replace(r, split=table.get(r.path, r.split)) for r in index.records])


def patients_for(pkg: Any, data: str | Path, split: str = "test", *, layout: str | None = None,
                 splits: dict[str, str] | None = None) -> tuple[Any, str]:
    """The patients of ``split`` in ``data`` with labels in the package's class order, and
    which split that was.

    ``splits`` (cell path → split) overrides the data's own; without it, the package's run
    splits apply when ``data`` is its training data. A data set without splits is a new
    cohort: all of it is test data (``used`` says so).

    Raises:
        BadInputError: no patients in ``split``, or diagnoses the package does not know (named).
    """
    from medlens.mil.train import patient_index
    from medlens.options import look_up_option

    split = look_up_option(split, ("test", "val", "train", "all"), what="split")
    index = patient_index(data, layout)
    if splits:
        index = index.subset([replace(r, split=splits.get(r.path, r.split)) for r in index.records])
    else:
        index = _with_run_splits(index, pkg.path)
    used = split
    if split != "all":
        chosen = [r for r in index.records if r.split == split]
        if chosen:
            index = index.subset(chosen)
        elif not index.has_official_splits:
            used = "all (the data has no splits: a new cohort)"
        else:
            raise BadInputError(f"{data}: no patients in the {split} split")
    missing = sorted(set(index.classes) - set(pkg.classes))
    if missing:
        raise BadInputError(f"{data}: diagnoses {missing} are not classes of this model ({', '.join(pkg.classes)})")
    index = index.subset([replace(r, label=pkg.classes.index(index.classes[r.label])) for r in index.records])
    index.classes = list(pkg.classes)
    return index, used


def evaluate_package(pkg: Any, data: str | Path, *, split: str = "test", out_dir: Path, strict: bool = False,
                     **layout_opts: Any) -> dict[str, Any]:
    """Patient-level metrics of ``pkg`` on ``data`` at the package's operating point; writes
    ``metrics.json``, ``per_patient.csv`` and ``report.html`` into ``out_dir``.

    ``split``: the run's own split when ``data`` is its training data, else every patient
    (a data set without splits is a new cohort: all of it is test data).
    """
    from medlens.mil.report import write_report
    from medlens.pipelines.ood_guard import check_index, refuse_flagged, summary, warn_flagged

    index, used = patients_for(pkg, data, split, layout=layout_opts.get("layout"))
    ood = check_index(pkg, index)
    warn_flagged(ood)
    if strict:
        refuse_flagged(ood)
    bags = load_bags(index, int(pkg.metadata["input"]["size"]))
    pred = PatientPredictor(pkg)
    probs, att = predict_bags(pred.model, bags, pred.cell_input, pkg.device)
    op = pkg.metadata.get("operating_point") or {}
    metrics = patient_metrics(bags, probs, pkg.classes, pkg.negative_class, pkg.threshold,
                              selection=op.get("selection"), n_bootstrap=1000)
    metrics.update({"split": used, "data": str(data), "model": str(pkg.path), "ood": summary(ood),
                    "cells": int(sum(len(m) for m in bags.members))})
    rows = patient_rows(bags, probs, att, pkg.classes, pkg.negative_class, pkg.threshold)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "metrics.json", metrics)
    write_per_patient(out_dir / "per_patient.csv", rows)
    write_report(out_dir / "report.html", metrics, rows, bags,
                 title=f"Patient-level evaluation: {Path(data).name} ({used})", problems=index.problems)
    return metrics
