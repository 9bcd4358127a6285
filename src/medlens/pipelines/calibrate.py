"""``medlens calibrate``: adapt a classifier's temperature and operating point to a new site.

A model's threshold is chosen on its training run's validation patients. At another
hospital (another scanner, stain, population) the same threshold can give a very
different sensitivity and specificity, and the probabilities can be badly calibrated.
Retraining needs many labelled images; refitting the two numbers that turn scores into
decisions needs few. This module

1. splits a small labelled local sample **by patient** into a calibration part and an
   evaluation part that are kept apart (no patient in both; images are their own unit
   only when the data carry no patient ids);
2. refits the softmax temperature (:func:`~medlens.evaluate.calibration.fit_temperature`)
   and the operating point with the package's own rule and target sensitivity
   (:func:`~medlens.evaluate.operating_point.choose_threshold`) on the calibration part;
3. reports the evaluation part before and after (AUC, sensitivity, specificity, balanced
   accuracy, ECE, with patient-bootstrap CIs), and
4. writes a NEW package version (the original is never touched): by default
   ``<run>/calibrations/<local>-<time>/model`` beside ``metrics.json`` and
   ``report.html``; its metadata records ``calibrated_from`` (the original package, the
   local data, the patients used, old → new temperature and threshold).

The network's weights are not changed, so ranking metrics (AUC) move only through the
new data, not through the recalibration.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import BadInputError, ConfigError, OutputError
from medlens.io.atomic import atomic_write_json, atomic_write_text
from medlens.io.lock import folder_lock
from medlens.io.runlog import logged_run
from medlens.pipelines.local_split import (  # noqa: F401  (DEFAULT_FRACTION, TRIALS: re-exported)
    DEFAULT_FRACTION,
    TRIALS,
    LocalSplit,
    split_local,
)

log = logging.getLogger(__name__)

#: Metrics the before/after comparison shows (all at the operating point but the AUC and ECE).
COMPARED = (("roc_auc_disease", "AUC (disease score)"), ("sensitivity", "sensitivity"),
            ("specificity", "specificity"), ("balanced_accuracy", "balanced accuracy"),
            ("ppv", "PPV"), ("npv", "NPV"), ("ece", "ECE (top label)"))


def calibration_dir(run_dir: Path, data: str | Path, out: str | Path | None) -> Path:
    """``out``, or ``<run>/calibrations/<local>-<time>/`` (a new folder; never the run itself).

    Raises:
        ConfigError: ``out`` holds a run, a package or earlier results.
        OutputError: ``out`` is a file.
    """
    from medlens.pipelines.evaluate_run import RUN_MARKERS, unique_results_dir

    if out is None:
        return unique_results_dir(run_dir / "calibrations", Path(data).stem)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} is a file; give a new folder for the calibrated package")
    held = [m for m in (*RUN_MARKERS, "metrics.json", "report.html") if (out_dir / m).exists()]
    inside = any((p / "metadata.json").exists() for p in (out_dir.resolve(), *out_dir.resolve().parents))
    if held or inside:
        raise ConfigError(f"--out {out_dir} already holds a run, a package or results "
                          f"({', '.join(held) or 'a model package'}); calibrate never overwrites one: omit --out "
                          f"(default {run_dir / 'calibrations'}/<data>-<time>) or choose a new folder")
    return out_dir


@logged_run(lambda result: result[1])  # run.log beside the metrics it returns
def calibrate_model(model_path: str | Path, data: str | Path, *, out: str | Path | None = None,
                    fraction: float | None = None, calibration_patients: int | None = None,
                    target_sensitivity: float | None = None, seed: int = 0, device: str = "auto",
                    n_bootstrap: int = 1000, **layout_opts: Any) -> tuple[dict[str, Any], Path]:
    """Refit temperature and operating point of the classifier at ``model_path`` on part of
    the labelled local sample ``data``; evaluate before/after on the rest; write a new package.

    Args:
        fraction: share of the local images (whole patients) to calibrate on (default 0.5).
        calibration_patients: calibrate on exactly this many patients instead.
        target_sensitivity: the operating point's target; default the package's own.
        layout_opts: ``layout``, ``label_column``… as for ``evaluate``.

    Returns:
        (metrics, output folder); the new package is ``<output folder>/model``.
    """
    from medlens.options import resolve_device
    from medlens.package import ModelPackage
    from medlens.package_io import find_package

    if fraction is not None and calibration_patients is not None:
        raise ConfigError("give --fraction or --calibration-patients, not both")
    if fraction is not None and not 0.0 < float(fraction) < 1.0:
        raise ConfigError(f"--fraction must be between 0 and 1 (exclusive), got {fraction}")
    if target_sensitivity is not None and not 0.0 < float(target_sensitivity) <= 1.0:
        raise ConfigError(f"--target-sensitivity must be in (0, 1], got {target_sensitivity}")
    source = find_package(model_path)
    out_dir = calibration_dir(source.parent, data, out)
    with folder_lock(out_dir):
        pkg = ModelPackage(source, device=resolve_device(device))
        if not pkg.is_classifier:
            raise ConfigError(f"{source}: calibrate works on classifier packages; this is a {pkg.task} package")
        result = _calibrate(pkg, data, out_dir, fraction=fraction, calibration_patients=calibration_patients,
                            target_sensitivity=target_sensitivity, seed=seed, n_bootstrap=n_bootstrap,
                            layout_opts=layout_opts)
        return result, out_dir


def _load_local(pkg: Any, data: str | Path, layout_opts: dict[str, Any]) -> tuple[Any, Any, np.ndarray]:
    """The labelled local data as the package sees it: index, image cache, labels in the package's classes."""
    from medlens.data.layouts import load_dataset
    from medlens.pipelines.evaluate_run import package_cache

    index = load_dataset(data, **{k: v for k, v in layout_opts.items() if v is not None})
    unlabelled = [r for r in index.records if r.label is None]
    if unlabelled or not index.classes:
        example = f" (e.g. {unlabelled[0].path})" if unlabelled else ""
        raise BadInputError(f"{data}: {len(unlabelled) or len(index.records)} image(s) have no label{example}; "
                            "calibrate needs labelled local images (class folders, or a manifest with a label "
                            "column)")
    cache, y = package_cache(pkg, index, data)
    return index, cache, y


def _calibrate(pkg: Any, data: str | Path, out_dir: Path, *, fraction: float | None,
               calibration_patients: int | None, target_sensitivity: float | None, seed: int,
               n_bootstrap: int, layout_opts: dict[str, Any]) -> dict[str, Any]:
    from medlens.evaluate.calibration import apply_temperature, fit_temperature
    from medlens.evaluate.operating_point import (
        alternative_thresholds,
        choose_threshold,
        selection_record,
    )
    from medlens.evaluate.shift import dataset_shift, new_data_stats
    from medlens.pipelines.evaluate_run import legacy_selection, package_logits
    from medlens.pipelines.evaluation import package_negative_class

    index, cache, y = _load_local(pkg, data, layout_opts)
    neg = pkg.negative_class
    is_pos = y != neg
    if is_pos.all() or not is_pos.any():
        present = pkg.classes[int(y[0])]
        raise BadInputError(f"{data}: every readable image is of class {present!r}; calibrate needs both "
                            f"negative ({pkg.classes[neg]}) and disease images")
    patients = [r.patient for r in cache.records]
    known = any(p is not None for p in patients)
    units = [str(p) if p is not None else f"image:{r.path}" for p, r in zip(patients, cache.records)]
    split = split_local(units, is_pos, fraction=fraction, n_calibration=calibration_patients, seed=seed,
                        what=str(data), unit="patient" if known else "image")
    if not known:
        log.warning("%s: no patient ids, so images are split one by one; images of one patient may fall in both "
                    "parts and the evaluation is then optimistic", data)
    z = package_logits(pkg, cache.images)[0]
    cal, ev = split.calibration, split.evaluation
    old_t, old_thr = pkg.temperature, pkg.threshold
    op_meta = pkg.metadata.get("operating_point") or {}
    old_sel = op_meta.get("selection") or legacy_selection(pkg.metadata)
    target = target_sensitivity if target_sensitivity is not None else (
        (old_sel or {}).get("target_sensitivity") or pkg.metadata.get("target_sensitivity"))
    if package_negative_class(pkg) is None:  # argmax package: no class to build a threshold on
        if target_sensitivity is not None:
            raise ConfigError(f"{pkg.path}: --target-sensitivity needs a negative class, and this package has "
                              "none (argmax operating point); retrain with --negative-class to get a threshold")
        target = None
    new_t = float(fit_temperature(z[cal], y[cal]))
    p_cal = apply_temperature(z[cal], new_t)
    where = f"the calibration patients of {data}" if known else f"the calibration images of {data}"
    if target is None:  # an argmax package: only the temperature is refitted
        new_thr, selection, alternatives, chosen = None, {"rule": "none: argmax call"}, None, None
    else:
        chosen = choose_threshold(y[cal], p_cal, negative_class=neg, target_sensitivity=float(target))
        new_thr = float(chosen["threshold"])
        selection = selection_record(chosen, chosen_on="calibration part", rule=(
            f"largest disease-score threshold with sensitivity >= {float(target):g} on {where} "
            f"({len(split.calibration_units)} {split.unit}s, recalibrated)"))
        alternatives = alternative_thresholds(y[cal], p_cal, negative_class=neg, chosen_on="calibration part")
    ev_patients = [patients[i] for i in np.flatnonzero(ev)] if known else None
    before = _metrics(y[ev], apply_temperature(z[ev], old_t), pkg, old_thr, old_sel,
                      op_meta.get("alternatives"), ev_patients, n_bootstrap, seed)
    after = _metrics(y[ev], apply_temperature(z[ev], new_t), pkg, new_thr, selection, alternatives,
                     ev_patients, n_bootstrap, seed)
    provenance = {
        "package": str(pkg.path), "package_created": pkg.metadata.get("created"), "local_data": str(data),
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "unit": split.unit, "seed": int(seed),
        "calibration_patients": split.calibration_units, "evaluation_patients": split.evaluation_units,
        "n_calibration_images": int(cal.sum()), "n_evaluation_images": int(ev.sum()),
        "temperature": {"old": old_t, "new": new_t},
        "threshold": {"old": old_thr, "new": new_thr},
        "target_sensitivity": None if target is None else float(target),
        "calibration_part": None if chosen is None else {
            "sensitivity": chosen["sensitivity"], "specificity": chosen["specificity"],
            "n_positive": chosen["n_positive"], "n_negative": chosen["n_negative"]},
    }
    result = {
        "command": "calibrate", "model": str(pkg.path), "new_package": str(out_dir / "model"),
        "local_data": str(data), "calibrated_from": provenance,
        "comparison": _comparison(before, after), "before": before, "after": after,
        "split": "evaluation part of the local data",
        "shift": dataset_shift(pkg.fingerprint, new_data_stats(index, cache.records), new_source=str(data)),
    }
    _write_package(pkg, out_dir / "model", provenance, new_t, new_thr, selection, alternatives, after)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "metrics.json", result)
    problems = [p.__dict__ for p in list(index.problems) + list(cache.problems)]
    if problems:
        atomic_write_json(out_dir / "problems.json", problems)
    _write_report(out_dir, pkg, result, split, cache.records, y, is_pos)
    log.info("calibrated %s on %d %ss of %s: temperature %.3f -> %.3f, threshold %s -> %s; new package %s",
             pkg.path, len(split.calibration_units), split.unit, data, old_t, new_t, _f(old_thr), _f(new_thr),
             out_dir / "model")
    return result


def _f(v: float | None) -> str:
    return "none (argmax)" if v is None else f"{v:.4f}"


def _metrics(y: np.ndarray, probs: np.ndarray, pkg: Any, threshold: float | None, selection: Any,
             alternatives: Any, patients: list[Any] | None, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """The evaluation part's metrics at one (temperature, threshold), with an ECE interval."""
    from medlens.evaluate.metrics import classification_metrics
    from medlens.pipelines.evaluation import package_negative_class

    m = classification_metrics(y, probs, pkg.classes, negative_class=package_negative_class(pkg), threshold=threshold,
                               selection=selection, alternatives=alternatives, patients=patients,
                               n_bootstrap=n_bootstrap, seed=seed)
    m["ece"] = m["calibration"]["ece"]
    if m.get("ci") is not None:
        m["ci"]["ece"] = ece_interval(y, probs, patients, n_bootstrap=n_bootstrap, seed=seed,
                                      level=float(m["ci"].get("level") or 0.95))
    return m


def ece_interval(y: np.ndarray, probs: np.ndarray, patients: Sequence[Any] | None, *, n_bootstrap: int,
                 seed: int, level: float = 0.95) -> dict[str, float] | None:
    """Percentile interval of the top-label ECE, resampling patients (images when unknown),
    like the other intervals of the report (:mod:`medlens.evaluate.bootstrap`)."""
    from medlens.evaluate.bootstrap import cluster_codes
    from medlens.evaluate.calibration import expected_calibration_error

    if n_bootstrap <= 0:
        return None
    unit, n_units, _, _ = cluster_codes(patients, len(y))
    members = [np.flatnonzero(unit == u) for u in range(n_units)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(int(n_bootstrap)):
        idx = np.concatenate([members[u] for u in rng.integers(0, n_units, n_units)])
        values.append(expected_calibration_error(y[idx], probs[idx]))
    a = (1 - level) / 2
    return {"low": float(np.quantile(values, a)), "high": float(np.quantile(values, 1 - a))}


def _comparison(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, label in COMPARED:
        ci_key = "roc_auc" if key == "roc_auc_disease" else key  # the bootstrap's AUC is of the disease score
        rows.append({"metric": label, "key": key, "before": before.get(key),
                     "before_ci": (before.get("ci") or {}).get(ci_key), "after": after.get(key),
                     "after_ci": (after.get("ci") or {}).get(ci_key)})
    return rows


def _write_package(pkg: Any, target: Path, provenance: dict[str, Any], temperature: float,
                   threshold: float | None, selection: dict[str, Any], alternatives: Any,
                   after: dict[str, Any]) -> None:
    """The original package's metadata with the new temperature and operating point and
    ``calibrated_from``; same network and weights; written atomically."""
    from medlens.package_io import CARD, save_model_package

    meta = copy.deepcopy(pkg.metadata)
    entry = meta.pop("model")
    for key in ("format", "format_version", "created", "versions"):  # the writer sets these anew
        meta.pop(key, None)
    meta["temperature"] = temperature
    meta["threshold"] = threshold
    if provenance.get("target_sensitivity") is not None:
        meta["target_sensitivity"] = provenance["target_sensitivity"]
    meta["operating_point"] = {**(meta.get("operating_point") or {}), "threshold": threshold,
                               "selection": selection, "alternatives": alternatives}
    meta["metrics"] = {"split": "evaluation part of the local data", "at": "the operating point",
                       **{k: after.get(k) for k in ("accuracy", "balanced_accuracy", "sensitivity", "specificity",
                                                    "ppv", "npv", "roc_auc", "pr_auc", "ece")}}
    meta["calibrated_from"] = provenance
    card_path = pkg.path / CARD
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    card += _card_note(provenance)
    save_model_package(target, pkg.model.cpu(), model_name=entry["name"], model_kwargs=entry.get("kwargs") or {},
                       metadata=meta, model_card=card)


def _card_note(p: dict[str, Any]) -> str:
    return (f"\n\n## Local recalibration\n\nRecalibrated from `{p['package']}` on {len(p['calibration_patients'])} "
            f"{p['unit']}(s) of `{p['local_data']}` ({p['n_calibration_images']} images) on {p['when']}: "
            f"temperature {p['temperature']['old']:.3f} → {p['temperature']['new']:.3f}, threshold "
            f"{_f(p['threshold']['old'])} → {_f(p['threshold']['new'])}. The network's weights are unchanged. "
            f"Evaluated on {len(p['evaluation_patients'])} other {p['unit']}(s) ({p['n_evaluation_images']} "
            "images), kept apart from the calibration; see the calibration's report.html.\n")


def _write_report(out_dir: Path, pkg: Any, result: dict[str, Any], split: LocalSplit, records: Sequence[Any],
                  y: np.ndarray, is_pos: np.ndarray) -> Path:
    from medlens.evaluate import figures, page
    from medlens.evaluate.model_card import ci_text
    from medlens.evaluate.shift import shift_section_html

    p = result["calibrated_from"]
    before, after = result["before"], result["after"]

    def band(ci: Any) -> str:
        return f"{ci['low']:.3f}–{ci['high']:.3f}" if isinstance(ci, dict) and ci.get("low") is not None else ""

    rows = [{"metric": r["metric"], "before": r["before"], "95% CI before": band(r["before_ci"]),
             "after": r["after"], "95% CI after": band(r["after_ci"])} for r in result["comparison"]]
    summary = (
        f"<p><strong>Temperature {p['temperature']['old']:.3f} → {p['temperature']['new']:.3f}; threshold "
        f"{page.e(_f(p['threshold']['old']))} → {page.e(_f(p['threshold']['new']))}</strong>, refitted on "
        f"{len(p['calibration_patients'])} {p['unit']}(s) ({p['n_calibration_images']} images) of "
        f"{page.e(p['local_data'])}; before and after below are on the {len(p['evaluation_patients'])} other "
        f"{p['unit']}(s) ({p['n_evaluation_images']} images), kept apart.</p>"
        f"<p>New package: <code>{page.e(result['new_package'])}</code>. The original package "
        f"(<code>{page.e(p['package'])}</code>) is unchanged; its network's weights are reused as they are.</p>"
        + page.table(rows) + f'<p class="muted">{page.e(ci_text(after))}</p>')
    sel_b = (before.get("operating_point") or {}).get("selection") or {}
    sel_a = (after.get("operating_point") or {}).get("selection") or {}
    op_html = page.kv_table({"before: rule": sel_b.get("rule"), "before: threshold": p["threshold"]["old"],
                             "after: rule": sel_a.get("rule"), "after: threshold": p["threshold"]["new"],
                             "calibration part: sensitivity": (p.get("calibration_part") or {}).get("sensitivity"),
                             "calibration part: specificity": (p.get("calibration_part") or {}).get("specificity")})
    cal_png = figures.reliability_png(before["calibration"]["reliability"], after["calibration"]["reliability"],
                                      ece=before.get("ece"), ece_after=after.get("ece"))
    unit_rows = []
    part = {u: "calibration" for u in split.calibration_units} | {u: "evaluation" for u in split.evaluation_units}
    counts: dict[str, list[int]] = {}
    for r, pos in zip(records, is_pos):
        key = str(r.patient) if r.patient is not None else f"image:{r.path}"
        c = counts.setdefault(key, [0, 0])
        c[0] += 1
        c[1] += int(pos)
    for u in sorted(counts, key=lambda k: (part.get(k, ""), k)):
        unit_rows.append({split.unit: u, "part": part.get(u), "images": counts[u][0],
                          "disease images": counts[u][1]})
    sections = [
        ("Summary", summary),
        ("Operating point", op_html),
        ("Calibration (evaluation part)", page.img(cal_png, "Reliability diagram: before (model) and after "
                                                   "(recalibrated temperature)")),
        (f"{split.unit.capitalize()}s", page.table(unit_rows[:500])),
        ("Dataset shift", shift_section_html(result["shift"])),
        ("Provenance", page.kv_table({k: v for k, v in p.items() if not isinstance(v, (list, dict))})),
    ]
    html = page.page(f"medlens calibration — {pkg.metadata['model']['name']} on {p['local_data']}", sections)
    return atomic_write_text(out_dir / "report.html", html)
