"""What a lung-CT package holds: its stages, metadata and model card — written after
training (:func:`save_ct_package`) and re-written with a new operating threshold by local
recalibration (:func:`save_recalibrated`). One module knows which entries carry the
threshold, so the two writers cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from medlens.ct.detect import DIAGNOSIS_RULE, Detector
from medlens.ct.train import CtConfig

#: The stages whose ``threshold`` is the package's operating nodule threshold.
THRESHOLD_STAGES = ("nodule", "ranker")


def _ranker_kind(hidden: int | None) -> str:
    return f"a network with one hidden layer of {hidden} units" if hidden else "a logistic regression"


def model_card(metrics: dict[str, Any], cfg: CtConfig | None = None) -> str:
    """The package's model card (Markdown)."""
    op = metrics.get("operating_point") or {}
    lines = ["# Lung-CT nodule pipeline", "",
             "**Not for clinical use.** Candidates from a 2D U-Net on context slices"
             + (" in union with classical Hessian blobs" if cfg is None or cfg.blob_candidates else "")
             + ", false-positive reduction and malignancy by 3D CNNs on crops (Deep Learning with PyTorch, "
             "part 2)" + (", candidates ranked by " + _ranker_kind(metrics["ranker"].get("hidden")) + " on shape/intensity "
                          "descriptors" if (metrics.get("ranker") or {}).get("used") else "") + ".", "",
             f"- training data: `{cfg.data if cfg else '?'}` — {metrics.get('train_scans')} training scans, "
             f"{metrics.get('val_scans')} validation scans",
             f"- operating point: nodule threshold {metrics.get('nodule_threshold'):.3f} ({metrics.get('threshold_rule')})",
             f"- diagnosis: {DIAGNOSIS_RULE}"]
    rk = metrics.get("ranker") or {}
    if rk.get("used"):
        lines.append(f"- ranker: fitted on {rk['train_candidates']} training candidates ({rk['train_candidates_on_nodules']} "
                     "on nodules); strongest inputs (mean change of the logit when set to the mean): "
                     + ", ".join(f"{n} {w:+.2f}" for n, w in rk.get("strongest_inputs", [])[:5]))
    if "cpm" in metrics:
        lines.append(f"- validation CPM (LUNA16 FROC): {metrics['cpm']:.3f}; at the operating point sensitivity "
                     f"{op.get('sensitivity', float('nan')):.3f}, {op.get('fp_per_scan', float('nan')):.2f} "
                     "false positives per scan")
    lines += ["", "Limits: a model trained on the synthetic phantoms has never seen real lung texture, real "
              "vessels or real scanners (the phantoms imitate some of it: parenchyma texture, thin vessels, "
              "lobulated/spiculated nodules, blur, correlated noise, varied spacing; training augments HU offset, "
              "contrast, blur and noise); its numbers on phantoms say little about real CT."]
    return "\n".join(lines) + "\n"


def save_ct_package(out: Path, cfg: CtConfig, det: Detector, metrics: dict[str, Any], cand: nn.Module,
                  nod: nn.Module, mal: nn.Module | None, ranker: nn.Module | None = None) -> Path:
    from medlens.package_io import Stage, save_pipeline_package

    def kw(m: nn.Module) -> dict[str, Any]:
        return {k: v for k, v in m.medlens_config.items() if k != "name"}

    p = det.params
    crop_input = {"size": list(p.crop.shape), "channels": 1, "spatial_dims": 3, "spacing_mm": list(p.crop.spacing_mm)}
    stages = {"candidates": Stage(cand, cand.medlens_name, kw(cand), {
        "role": "candidate segmentation", "description": f"2D U-Net on the focus slice ± {p.context} context slices",
        "input": {"channels": 2 * p.context + 1, "spatial_dims": 2, "patch": [cfg.patch, cfg.patch],
                  "divisor": p.divisor}, "threshold": p.candidate_threshold}),
        "nodule": Stage(nod, nod.medlens_name, kw(nod), {
            "role": "false-positive reduction", "description": "3D CNN: nodule vs not, on mm-sized crops",
            "input": crop_input, "classes": ["not nodule", "nodule"], "threshold": p.nodule_threshold})}
    if ranker is not None:
        from medlens.ct.ranker import INPUT_SETS

        names = list(INPUT_SETS[ranker.inputs])
        stages["ranker"] = Stage(ranker, ranker.medlens_name, kw(ranker), {
            "role": "candidate ranking", "description": f"{_ranker_kind(kw(ranker).get('hidden_units'))} "
            f"on {ranker.inputs!r} descriptors of each candidate (medlens.ct.ranker); its probability is the nodule "
            "probability",
            "input": {"channels": len(names), "spatial_dims": 3, "features": names},
            "threshold": p.nodule_threshold})
    if mal is not None:
        stages["malignancy"] = Stage(mal, mal.medlens_name, kw(mal), {
            "role": "malignancy", "description": "3D CNN: malignant (≥ 2 readers rated 4 or 5) vs benign",
            "input": crop_input, "classes": ["benign", "malignant"], "threshold": 0.5})
    meta = {"task": "ct", "classes": ["no nodule", "nodule"], "input": {"channels": 1, "spatial_dims": 3},
            "threshold": p.nodule_threshold, "ct": p.to_dict(), "diagnosis_rule": DIAGNOSIS_RULE,
            "intensity": p.window.model_dump(), "config": cfg.model_dump(mode="json"),
            "metrics": {k: metrics.get(k) for k in ("cpm", "operating_point", "candidate_recall_train",
                                                    "candidates_per_scan", "nodule_threshold",
                                                    "max_findings_per_scan")}}
    return save_pipeline_package(out, stages, metadata=meta, model_card=model_card(metrics, cfg))


def save_recalibrated(pkg: Any, out: Path, threshold: float, provenance: dict[str, Any], card_note: str, *,
                      max_findings: int | None = None) -> Path:
    """A copy of the lung-CT package ``pkg`` at ``out`` with the operating ``threshold`` (package,
    ``ct`` parameters and :data:`THRESHOLD_STAGES`) and reading budget ``max_findings`` (``ct``
    parameters; None: no limit), ``calibrated_from`` = ``provenance`` and
    ``card_note`` appended to its model card; same networks and weights, written atomically."""
    from medlens.package_io import CARD, Stage, save_pipeline_package

    meta = {k: v for k, v in pkg.metadata.items()
            if k not in ("stages", "format", "format_version", "created", "versions")}
    meta["threshold"] = threshold
    meta["ct"] = {**meta.get("ct", {}), "nodule_threshold": threshold, "max_findings": max_findings}
    meta["calibrated_from"] = provenance
    stages = {}
    for name in pkg.stage_names:
        entry = dict(pkg.metadata["stages"][name])
        model = entry.pop("model")
        entry.pop("weights", None)
        if name in THRESHOLD_STAGES:
            entry["threshold"] = threshold
        stages[name] = Stage(pkg.stage(name).cpu(), model["name"], model.get("kwargs") or {}, entry)
    card_path = pkg.path / CARD
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    return save_pipeline_package(out, stages, metadata=meta, model_card=card + card_note)
