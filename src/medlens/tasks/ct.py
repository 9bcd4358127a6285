"""The ``ct`` task: lung-nodule detection in chest CT (candidates → nodule → malignancy → diagnosis).

Its pieces live in :mod:`medlens.ct` (reading, lungs, candidates, crop networks, pipeline,
FROC, report); this entry ties them to the registry, so ``medlens train DATA`` recognises a
LUNA16 layout, ``medlens evaluate`` / ``predict`` / ``demo --task ct`` work on a lung-CT
package, and ``medlens ct …`` (:mod:`medlens.cli.ct`) has one place to call.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medlens.ct.train import CtConfig
from medlens.errors import BadInputError, ConfigError
from medlens.tasks.registry import Summary, TaskSpec

#: LUNA16's annotations.csv header (the malignancy column of the phantoms/LIDC is optional).
_ANNOTATION_COLUMNS = {"seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"}


class CtPredictor:
    """Findings per scan in memory (``medlens ct detect`` / ``predict`` write them to files)."""

    def __init__(self, pkg: Any) -> None:
        from medlens.ct.pipeline import Detector

        self.pkg = pkg
        self.detector = Detector.from_package(pkg)

    def load_images(self, paths: Sequence[str | Path]) -> list[Any]:
        """The scans as HU volumes (:func:`medlens.ct.scan.read_ct`)."""
        from medlens.ct.scan import read_ct

        return [read_ct(p) for p in paths]

    def preprocess(self, images: Sequence[Any]) -> Any:
        raise BadInputError(f"{self.pkg.path}: a lung-CT pipeline has no single network input; explain its stages "
                            "through the Python API (pkg.stage('nodule') on (B, 1, D, H, W) crops)")

    def predict(self, inputs: Any, *, batch_size: int = 64) -> list[dict[str, Any]]:
        """Scan files/folders (or loaded volumes) → one row per scan: the diagnosis and
        ``findings`` (:class:`~medlens.ct.findings.Finding`); an unreadable scan gets ``error``."""
        from medlens.ct.pipeline import detect_files, seriesuid_of
        from medlens.io.volumes import Volume

        items = [inputs] if isinstance(inputs, (str, Path, Volume)) else list(inputs)
        rows: list[dict[str, Any]] = []
        for item in items:
            if isinstance(item, Volume):
                uid = seriesuid_of(item)
                found = self.detector.detect(item, seriesuid=uid)
                rows.append({"file": item.path, **self.detector.diagnose(found, seriesuid=uid), "findings": found})
            else:
                rows += detect_files(self.pkg, [item], None, report=False)
        return rows


def _detect(data: Path, layout: str | None) -> bool:
    """A LUNA16 layout: ``annotations.csv`` with LUNA16's columns at the root of a folder."""
    if layout:
        return layout == "luna16"
    ann = Path(data) / "annotations.csv"
    if not ann.is_file():
        return False
    try:
        with ann.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError):
        return False
    return _ANNOTATION_COLUMNS <= {h.strip() for h in header}


def config_from_options(data: Path, config: Path | None, options: dict[str, Any]) -> CtConfig:
    """The run config: the ``--config`` file, then the flags (``None``: not given). The
    training flags (epochs, batch size, lr, patience, scheduler, max steps) apply to every stage."""
    from pydantic import ValidationError

    from medlens.config_errors import invalid_config
    from medlens.pipelines.config import deep_update, load_config_file

    base = load_config_file(config) if config else {}
    over: dict[str, Any] = {"data": str(data)}
    for key in ("seed", "device", "val_fraction"):
        if options.get(key) is not None:
            over[key] = options[key]
    train = {field: options[key] for key, field in (("epochs", "epochs"), ("batch_size", "batch_size"), ("lr", "lr"),
                                                    ("patience", "patience"), ("scheduler", "scheduler"),
                                                    ("max_steps", "max_steps_per_epoch"))
             if options.get(key) is not None}
    if train:
        for stage in ("train_candidates", "train_nodule", "train_malignancy"):
            over[stage] = train
    if options.get("no_augment"):
        over["augment"] = {"enabled": False}
    try:
        return CtConfig.model_validate(deep_update(base, over))
    except ValidationError as e:
        raise invalid_config(e, what="lung-CT run config") from None


def train_from_cli(data: Path, out: Path | None, config: Path | None, resume: bool,
                   options: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """``medlens train DATA --task ct`` / ``medlens ct train DATA``."""
    from medlens.ct.pipeline import train_pipeline

    if resume:
        from medlens.tasks.config import load_run_config

        if out is None:
            raise ConfigError("--resume needs --out pointing at an existing run directory (with config.json)")
        cfg = load_run_config(out, task="ct")
    else:
        cfg = config_from_options(data, config, options)
        out = out or Path("runs") / f"{Path(data).name}-ct-{time.strftime('%Y%m%d-%H%M%S')}"
    return train_pipeline(cfg, out, resume=resume), out


def _evaluate(pkg: Any, data: Path, *, split: str = "all", out_dir: Path, strict: bool = False,
              **layout_opts: Any) -> dict[str, Any]:
    """Every scan of DATA (a lung-CT package has no split of its own: ``split`` is recorded)."""
    from medlens.ct.pipeline import evaluate_package

    metrics = evaluate_package(pkg, data, out_dir)
    metrics["split"] = split
    return metrics


def _predict_files(pkg: Any, inputs: Sequence[Path], out: Path | None, *, batch_size: int = 64,
                   strict: bool = False) -> list[dict[str, Any]]:
    """``medlens predict`` on scans: ``--out`` is a folder for ``nodules.csv``, ``diagnosis.csv``
    and ``report.html`` (a ``.csv``/``.json`` path: the folder of that name without the suffix)."""
    from medlens.ct.pipeline import detect_files

    folder = None if out is None else (Path(out).with_suffix("") if Path(out).suffix in (".csv", ".json") else Path(out))
    return detect_files(pkg, inputs, folder)


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def _summary(metrics: dict[str, Any]) -> Summary:
    """Per scan: nodules at the operating point, highest probabilities, the call; CPM below."""
    rows = [[d["seriesuid"], str(d["nodules"]), _fmt(d["max_nodule_prob"]), _fmt(d.get("largest_nodule_mm"), ".1f"),
             _fmt(d.get("malignancy_prob")), d["diagnosis"]] for d in metrics.get("diagnosis") or []]
    notes = []
    if metrics.get("cpm") is not None:
        op = metrics.get("operating_point") or {}
        notes.append(f"CPM (LUNA16 FROC) {metrics['cpm']:.3f}; at the operating threshold "
                     f"{metrics.get('nodule_threshold', float('nan')):.3f}"
                     + (f" (at most {op['max_findings_per_scan']} findings per scan)"
                        if op.get("max_findings_per_scan") else "") + ": sensitivity "
                     f"{op.get('sensitivity', float('nan')):.3f} ({op.get('true_positives')}/{op.get('n_nodules')} "
                     f"nodules), {op.get('fp_per_scan', float('nan')):.2f} false positives per scan")
    if metrics.get("problems"):
        notes.append(f"{len(metrics['problems'])} scan(s)/row(s) skipped: " + "; ".join(metrics["problems"][:3]))
    return Summary(title=f"lung-CT nodules ({metrics.get('split', 'evaluated')} scans)",
                   columns=["scan", "nodules", "max nodule p", "largest (mm)", "malignancy p", "diagnosis"],
                   rows=rows, notes=notes)


def _predict_table(pkg: Any, rows: list[dict[str, Any]]) -> Summary:
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["file"], "[red]unreadable[/red]", "", "", r["error"]])
        else:
            out.append([r["file"], str(r["nodules"]), _fmt(r["max_nodule_prob"]), _fmt(r.get("malignancy_prob")),
                        r["diagnosis"]])
    return Summary(title="", columns=["scan", "nodules", "max nodule p", "malignancy p", "diagnosis"], rows=out)


def demo_config(data: Path, *, seed: int = 0, quick: bool = False, device: str = "auto") -> CtConfig:
    """Settings for the phantom demo: small crops and networks, a few epochs (2 CPU cores)."""
    from medlens.train.config import TrainConfig

    epochs = 2 if quick else 10
    steps = 4 if quick else None
    # one torch thread per stage: with other jobs on the 2 cores, two threads made the U-Net stage
    # 14× slower (223 s against 15 s) and the crop stage 2.5× (64 s against 25 s); measured 2026-12-02
    seg = TrainConfig(epochs=2 if quick else 16, batch_size=16, lr=3e-3, patience=16, seed=seed, device=device,
                      max_steps_per_epoch=steps, threads=1)
    crop = TrainConfig(epochs=epochs, batch_size=32, lr=2e-3, patience=epochs, seed=seed, device=device,
                       max_steps_per_epoch=steps, threads=1)
    # the nodule network separates nodules from vessel junctions under intensity augmentation:
    # it needs more epochs than the malignancy network (train loss still falling at 10)
    nod_epochs = 2 if quick else 20
    nod = crop.model_copy(update={"epochs": nod_epochs, "patience": nod_epochs})
    return CtConfig(data=str(data), seed=seed, device=device, patch=48, patches_per_epoch=64 if quick else 384,
                    candidate_threshold=0.2,
                    candidate_kwargs={"channels": [8, 16, 32], "num_res_units": 1},
                    crop_shape=(12, 24, 24), crop_spacing_mm=(2.5, 1.4, 1.4),  # 30×34×34 mm
                    crop_kwargs={"channels": [8, 16, 32]}, crops_per_epoch=128 if quick else 768,
                    # positives are few (a handful of nodules per phantom): each reference nodule gives
                    # shifted copies, and more of the candidates' false positives serve as negatives
                    positive_copies=8, mined_negatives_per_scan=40,
                    train_candidates=seg, train_nodule=nod, train_malignancy=crop)


def run_demo(out: Path, *, seed: int = 0, quick: bool = False, device: str = "auto") -> Path:
    """Synthetic chest CTs (LUNA16 layout) → train the three networks → detect → report."""
    from medlens.ct.pipeline import train_pipeline
    from medlens.data.synthetic.chest_ct import make_chest_ct_like

    out = Path(out)
    data = out / "data"
    if not data.exists():
        # a wider field of view than the generator's default (lungs ~30 mm wide, so larger nodules fit)
        # and per-scan pixel/slice sizes as scanners vary them: closer to what the model meets in real CT
        # 3–6 nodules per scan: the nodule network learns from a few dozen nodules, not a dozen
        make_chest_ct_like(data, n_scans=5 if quick else 12, seed=seed, shape=(40, 128, 128), vary_spacing=True,
                           nodules_per_scan=(3, 6))
    run_dir = out / "run"
    train_pipeline(demo_config(data, seed=seed, quick=quick, device=device), run_dir,
                   resume=(run_dir / "candidates" / "checkpoints" / "last.pt").exists())
    return run_dir


TASK = TaskSpec(
    name="ct",
    description="lung nodules in chest CT: candidates, nodule and malignancy networks, FROC, diagnosis",
    detect=_detect,
    train=train_from_cli,
    evaluate=_evaluate,
    predictor=CtPredictor,
    predict_files=_predict_files,
    summary=_summary,
    predict_table=_predict_table,
    demo=run_demo,
    config_model=CtConfig,
    priority=20,
)
