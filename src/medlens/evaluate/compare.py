"""``medlens compare``: several model packages on the same cases, one leaderboard, one choice.

Every package is scored on the same cases by a *scorer*: a function ``(package, cases)
→ Scored`` that returns, per case, its id, the truth (disease or not), the disease score
and the decision at that package's own operating point. Everything after that — AUC with
paired bootstrap intervals, sensitivity/specificity and FN/FP counts, ECE, DeLong and
McNemar tests against the selected model, the selection rule — works on those four
vectors alone, so a task whose cases are patients (multiple-instance learning) plugs in
by providing a scorer that returns one row per patient (see :func:`scorer_for`).

Why a rule and not just "the best AUC": the project this grew from chose the model with
the fewest false negatives (missed leukaemias) among those specific enough to be usable;
``fewest-fn`` states that choice and the specificity floor it was made under.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlens.errors import BadInputError, ConfigError, JobFailedError
from medlens.evaluate.bootstrap import cluster_codes, weighted_auc
from medlens.io.runlog import logged_run
from medlens.registry import Registry

log = logging.getLogger(__name__)

RULES = ("fewest-fn", "highest-auc", "highest-balanced-accuracy")
SWEEP_INDEX = "sweep.json"
OUTPUTS = ("compare.json", "leaderboard.csv", "compare.html")


# ------------------------------------------------------------------ cases and scores
@dataclass
class Cases:
    """What every package is scored on: DATA, the split, and the split assignment to use.

    ``splits`` (``{path: split}``) comes from a training run whose data DATA is, so that
    "test" means that run's held-out images; ``None`` keeps the layout's own splits.
    """

    data: Path
    split: str = "test"
    splits: dict[str, str] | None = None
    splits_from: str | None = None
    layout_opts: dict[str, Any] = field(default_factory=dict)

    def index(self) -> Any:
        """The data set restricted to ``split`` (a :class:`~medlens.data.records.DatasetIndex`)."""
        from dataclasses import replace

        from medlens.data.layouts import load_dataset

        index = load_dataset(self.data, **{k: v for k, v in self.layout_opts.items() if v is not None})
        if self.splits:
            index = index.subset([replace(r, split=self.splits.get(r.path, r.split)) for r in index.records])
        if self.split != "all":
            if not index.has_official_splits:
                raise ConfigError(f"{self.data}: has no splits (and no run's splits.csv matches it); "
                                  "use --split all, or --data a run folder to use its test split")
            index = index.subset([r for r in index.records if r.split == self.split])
        if not index.records:
            raise BadInputError(f"{self.data}: no images in split {self.split!r}")
        return index


@dataclass
class Scored:
    """One package's result on the compared cases (all arrays aligned with ``ids``).

    Attributes:
        ids: one id per case (an image path, or a patient id for patient-level tasks).
        y_true: (N,) bool, the case has the disease (any class but the negative one).
        scores: (N,) disease score in [0, 1] (``1 - p(negative)``), higher = more disease.
        decisions: (N,) bool, called diseased at the package's own operating point.
        groups: the patient of each case (the bootstrap's resampling unit), or ``None``
            when the cases are independent units themselves (e.g. patients).
        unit: what a case is, ``"image"`` or ``"patient"`` (models are paired only on one unit).
        threshold: the package's operating point on ``scores`` (``None``: most probable class).
        notes: remarks for the comparison's warnings (e.g. which split was used).
        members: the files of each case when a case is more than one file (a patient's cells),
            so the training-overlap check can look them up in a run's splits.csv.
    """

    ids: list[str]
    y_true: np.ndarray
    scores: np.ndarray
    decisions: np.ndarray
    groups: list[str | None] | None = None
    unit: str = "image"
    threshold: float | None = None
    notes: list[str] = field(default_factory=list)
    members: dict[str, list[str]] | None = None


Scorer = Callable[[Any, Cases], Scored]
#: task name → scorer, for tasks whose entry has no ``score`` of its own.
SCORERS: Registry[Scorer] = Registry("comparison scorer")


def scorer_for(pkg: Any) -> Scorer:
    """The scorer of a package's task: the task entry's ``score`` when it has one (the
    patient task's scores one row per patient, :func:`medlens.mil.score.score_patients`),
    else the one registered in :data:`SCORERS` under the task's name."""
    own = getattr(pkg.task_spec, "score", None)
    if own is not None:
        return own
    if pkg.task not in SCORERS:
        raise ConfigError(f"{pkg.path}: packages of task {pkg.task!r} cannot be compared yet "
                          f"(comparable: {', '.join(SCORERS.names())})")
    return SCORERS.get(pkg.task)


@SCORERS.register("classify")
def score_classifier(pkg: Any, cases: Cases) -> Scored:
    """A classifier package on ``cases``: one row per readable image, its patient as group."""
    from medlens.data.cache import build_cache
    from medlens.evaluate.calibration import apply_temperature
    from medlens.evaluate.operating_point import disease_score
    from medlens.pipelines.evaluation import cache_logits
    from medlens.train.classify import ClassificationTask
    from medlens.transforms.preprocess import PreprocessConfig

    index = cases.index()
    missing = [c for c in index.classes if c not in pkg.classes]
    if missing:
        raise BadInputError(f"{cases.data}: classes {missing} are unknown to {pkg.path} (it knows {pkg.classes})")
    cache = build_cache(index, PreprocessConfig(**pkg.metadata["preprocess"]))
    if not cache.records:
        raise BadInputError(f"{cases.data}: none of the images could be read")
    remap = np.array([pkg.classes.index(c) for c in index.classes])
    norm = pkg.metadata["normalize"]
    task = ClassificationTask(num_classes=len(pkg.classes), mean=norm["mean"], std=norm["std"])
    probs = apply_temperature(cache_logits(pkg.model, task, cache.images, pkg.device), pkg.temperature)
    y = remap[cache.labels]
    neg = pkg.negative_class
    patients = [r.patient for r in cache.records]
    return Scored(ids=[r.path for r in cache.records], y_true=y != neg, scores=disease_score(probs, neg),
                  decisions=pkg.call(probs) != neg,
                  groups=patients if any(p is not None for p in patients) else None,
                  unit="image", threshold=pkg.threshold)


# ------------------------------------------------------------------ packages
@dataclass
class Entry:
    """A package to compare, with the name it has on the leaderboard."""

    name: str
    package: Path
    run: Path | None  # the training run folder (for its splits.csv), when there is one


def expand_runs(runs: Sequence[str | Path]) -> list[Entry]:
    """Run folders, package folders and sweep folders (``sweep.json``) → packages by name.

    Raises:
        BadInputError: a path is none of these (named), or nothing is left to compare.
    """
    from medlens.package_io import find_package

    found: list[tuple[str, Path, Path | None]] = []
    for raw in runs:
        p = Path(raw)
        if (p / SWEEP_INDEX).is_file():
            for name, run in _sweep_runs(p):
                found.append((name, find_package(run), run))
            continue
        if not p.exists():
            raise BadInputError(f"{p}: no such run, package or sweep folder")
        try:
            pkg = find_package(p)
        except BadInputError:
            if p.is_dir() and not list(p.glob("*/model/metadata.json")):
                raise
            for sub in sorted(p.glob("*/model/metadata.json")):  # a folder of runs
                found.append((sub.parent.parent.name, find_package(sub.parent), sub.parent.parent))
            continue
        run = pkg.parent if pkg.name == "model" else None
        found.append(((run or pkg).name, pkg, run))
    if not found:
        raise BadInputError(f"nothing to compare in {', '.join(map(str, runs))}")
    names: dict[str, int] = {}
    out, seen = [], set()
    for name, pkg, run in found:
        if pkg.resolve() in seen:
            continue
        seen.add(pkg.resolve())
        names[name] = names.get(name, 0) + 1
        out.append(Entry(name if names[name] == 1 else f"{name}#{names[name]}", pkg, run))
    return out


def _sweep_runs(folder: Path) -> list[tuple[str, Path]]:
    """The finished runs of a sweep folder, as its index lists them."""
    try:
        index = json.loads((folder / SWEEP_INDEX).read_text(encoding="utf-8"))
        rows = index["runs"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"{folder / SWEEP_INDEX}: unreadable sweep index ({e})") from None
    out = []
    for row in rows:
        run = folder / str(row.get("name"))
        if row.get("status") == "done" and (run / "model" / "metadata.json").is_file():
            out.append((str(row["name"]), run))
        else:
            log.warning("sweep %s: run %s is not finished (status %s); left out", folder, row.get("name"),
                        row.get("status"))
    if not out:
        raise BadInputError(f"{folder}: the sweep has no finished run yet; run `medlens sweep` again to finish it")
    return out


def check_same_task(pkgs: dict[str, Any]) -> None:
    """Refuse packages of different tasks: their cases differ (images vs patients), so they
    cannot be paired case by case. Names every task's packages."""
    by: dict[str, list[str]] = {}
    for name, p in pkgs.items():
        by.setdefault(p.task, []).append(name)
    if len(by) > 1:
        parts = "; ".join(f"{', '.join(names)}: {task!r} ({pkgs[names[0]].task_spec.description})"
                          for task, names in by.items())
        raise BadInputError(f"packages of different tasks cannot be compared case by case (image-level and "
                            f"patient-level cases do not pair): {parts}; compare the packages of one task at a time")


def check_same_classes(pkgs: dict[str, Any]) -> None:
    """Refuse packages whose classes or negative class differ, naming them."""
    ref_name, ref = next(iter(pkgs.items()))
    want = (sorted(ref.classes), ref.classes[ref.negative_class])
    odd = [f"{n} {p.classes} (negative {p.classes[p.negative_class]!r})" for n, p in pkgs.items()
           if (sorted(p.classes), p.classes[p.negative_class]) != want]
    if odd:
        raise BadInputError(f"packages with other classes than {ref_name} {ref.classes} (negative {want[1]!r}) "
                            f"cannot be compared: {'; '.join(odd)}")


def resolve_cases(data: str | Path, entries: list[Entry], split: str, layout_opts: dict[str, Any]) -> Cases:
    """DATA and the split assignment: a run folder as DATA means its data and its splits;
    otherwise the splits.csv of the first compared run trained on DATA, if any."""
    from medlens.data.splits import load_splits

    d = Path(data)
    if (d / "config.json").is_file() and (d / "splits.csv").is_file():
        cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
        # a classifier run nests its data settings; a patient run keeps the path and layout at the top
        given = cfg.get("data") if isinstance(cfg.get("data"), dict) else {"path": cfg.get("data") or "",
                                                                            "layout": cfg.get("layout")}
        path = Path(given.get("path") or "")
        if not str(path) or not path.exists():
            raise BadInputError(f"{d}/config.json: its data {path} is not found from here; pass --data DATA")
        opts = {k: given.get(k) for k in ("layout", "label_column", "path_column", "patient_column",
                                          "patient_table")}
        opts.update({k: v for k, v in layout_opts.items() if v is not None})
        return Cases(path, split, load_splits(d / "splits.csv"), str(d / "splits.csv"), opts)
    cases = Cases(d, split, None, None, dict(layout_opts))
    if split == "all":
        return cases
    from medlens.data.layouts import load_dataset

    paths = {r.path for r in load_dataset(d, **{k: v for k, v in layout_opts.items() if v is not None}).records}
    for e in entries:
        f = e.run / "splits.csv" if e.run is not None else None
        if f is not None and f.is_file():
            table = load_splits(f)
            if paths and sum(p in table for p in paths) >= 0.9 * len(paths):
                cases.splits, cases.splits_from = table, str(f)
                break
    return cases


def seen_in_training(entry: Entry, ids: list[str], members: dict[str, list[str]] | None = None) -> dict[str, int]:
    """How many compared cases this package's run had in its train and val splits (a case
    with several files, a patient, counts when any of its files was there)."""
    f = entry.run / "splits.csv" if entry.run is not None else None
    if f is None or not f.is_file():
        return {}
    from medlens.data.splits import load_splits

    table = load_splits(f)
    files = members or {}
    return {s: sum(any(table.get(p) == s for p in files.get(i, [i])) for i in ids) for s in ("train", "val")}


# ------------------------------------------------------------------ the comparison
def _rates(y: np.ndarray, d: np.ndarray) -> dict[str, Any]:
    from medlens.evaluate.operating_point import binary_rates

    r = binary_rates(y, d)
    sens, spec = r["sensitivity"], r["specificity"]
    r["balanced_accuracy"] = None if sens is None or spec is None else (sens + spec) / 2
    return r


def _ece(y: np.ndarray, s: np.ndarray) -> float:
    from medlens.evaluate.calibration import expected_calibration_error

    return expected_calibration_error(y.astype(np.int64), np.stack([1 - s, s], axis=1))


def paired_bootstrap(y: np.ndarray, scores: np.ndarray, groups: list[str | None] | None, *, n_bootstrap: int,
                     seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """AUC of every model (rows of ``scores``) on the SAME resamples: (k, B) and how
    ((k, 0) when fewer than 2 units hold disease or negative cases: no interval then).

    Patients are resampled when ``groups`` are known (all images of a drawn patient enter
    together), stratified by whether a unit has disease cases, so no resample lacks a side.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    unit, n_units, kind, _ = cluster_codes(groups, n)
    diseased = np.zeros(n_units, dtype=bool)
    np.logical_or.at(diseased, unit, y)
    has_neg = np.zeros(n_units, dtype=bool)
    np.logical_or.at(has_neg, unit, ~y)
    strata = [g for g in (np.flatnonzero(diseased), np.flatnonzero(~diseased)) if g.size]
    how = {"unit": kind, "n_units": int(n_units), "n_bootstrap": int(n_bootstrap), "seed": int(seed),
           "method": f"paired percentile bootstrap: the same {n_bootstrap} resamples of the {n_units} "
                     f"{kind}s for every model, stratified by whether a {kind} has disease cases"}
    if min(int(diseased.sum()), int(has_neg.sum())) < 2:  # one unit on a side: its resamples are all alike
        how["method"] = (f"none: only {int(diseased.sum())} {kind}(s) with disease cases and {int(has_neg.sum())} "
                         f"with negative cases; a {kind} bootstrap needs at least 2 on each side")
        return np.full((len(scores), 0), np.nan), how
    out = np.empty((len(scores), n_bootstrap))
    chunk = max(1, 2_000_000 // max(n, n_units))
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        idx = np.concatenate([g[rng.integers(0, len(g), size=(b, len(g)))] for g in strata], axis=1)
        flat = (np.arange(b)[:, None] * n_units + idx).ravel()
        w = np.bincount(flat, minlength=b * n_units).reshape(b, n_units).astype(np.float64)[:, unit]
        for m, s in enumerate(scores):
            out[m, start:start + b] = weighted_auc(s, y, w)
    return out, how


def _interval(values: np.ndarray, level: float) -> dict[str, float] | None:
    v = values[np.isfinite(values)]
    if v.size < 10:
        return None
    a = (1 - level) / 2
    lo, hi = np.quantile(v, [a, 1 - a])
    return {"low": float(lo), "high": float(hi)}


def select(rows: list[dict[str, Any]], rule: str, min_specificity: float) -> tuple[dict[str, Any], str]:
    """The selected row and the sentence that says why.

    ``fewest-fn``: fewest false negatives among models with specificity ≥ ``min_specificity``
    (ties: higher AUC, then higher specificity); ``highest-auc`` (ties: fewer FN);
    ``highest-balanced-accuracy`` (ties: fewer FN).

    Raises:
        JobFailedError: ``fewest-fn`` and no model reaches ``min_specificity`` (names each one's).
    """
    from medlens.options import look_up_option

    rule = look_up_option(rule, RULES, what="rule")

    def auc(r: dict[str, Any]) -> float:
        return -1.0 if r["roc_auc"] is None else r["roc_auc"]

    if rule == "fewest-fn":
        ok = [r for r in rows if r["specificity"] is not None and r["specificity"] >= min_specificity]
        if not ok:
            specs = ", ".join(f"{r['name']} {_num(r['specificity'])}" for r in rows)
            raise JobFailedError(f"no model reaches specificity >= {min_specificity:g} at its operating point "
                                 f"({specs}); none selected: lower --min-specificity or use another --rule")
        best = min(ok, key=lambda r: (r["fn"], -auc(r), -(r["specificity"] or 0.0), r["name"]))
        why = (f"fewest false negatives ({best['fn']}) among the {len(ok)} of {len(rows)} model(s) with "
               f"specificity >= {min_specificity:g} at their own operating point; ties broken by higher AUC")
    elif rule == "highest-auc":
        best = min(rows, key=lambda r: (-auc(r), r["fn"], r["name"]))
        why = f"highest ROC-AUC ({_num(best['roc_auc'])}); ties broken by fewer false negatives"
    else:
        best = min(rows, key=lambda r: (-(r["balanced_accuracy"] or -1.0), r["fn"], r["name"]))
        why = (f"highest balanced accuracy ({_num(best['balanced_accuracy'])}) at each model's operating point; "
               "ties broken by fewer false negatives")
    return best, why


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def compare_scored(scored: dict[str, Scored], *, rule: str = "fewest-fn", min_specificity: float = 0.5,
                   n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """The leaderboard, the selected model and the paired tests, from each model's scores.

    Cases are paired by id: only ids every model scored are compared (a warning names how
    many were left out). ``scored`` maps leaderboard name → :class:`Scored`.
    """
    from medlens.evaluate.metrics import to_jsonable
    from medlens.evaluate.stats_tests import delong, mcnemar

    if not 0.0 <= float(min_specificity) <= 1.0:
        raise ConfigError(f"--min-specificity must be in [0, 1], got {min_specificity}")
    if not scored:
        raise BadInputError("no model to compare")
    units = {s.unit for s in scored.values()}
    if len(units) > 1:
        raise BadInputError(f"models score different units ({', '.join(sorted(units))}): "
                            "image-level and patient-level models cannot be paired case by case")
    warnings: list[str] = []
    common = set.intersection(*(set(s.ids) for s in scored.values()))
    first = next(iter(scored.values()))
    ids = [i for i in first.ids if i in common]
    if not ids:
        raise BadInputError("the models share no scored case (did they read different data?)")
    for name, s in scored.items():
        if len(s.ids) > len(ids):
            warnings.append(f"{name}: {len(s.ids) - len(ids)} case(s) not scored by every model were left out")
    names = list(scored)
    pos = {name: {i: j for j, i in enumerate(s.ids)} for name, s in scored.items()}
    take = {name: np.array([pos[name][i] for i in ids]) for name in names}
    y = first.y_true[take[names[0]]].astype(bool)
    for name in names[1:]:
        if not np.array_equal(scored[name].y_true[take[name]].astype(bool), y):
            raise BadInputError(f"{name} and {names[0]} disagree on the truth of the same cases "
                                "(different class mappings?)")
    S = np.stack([scored[n].scores[take[n]].astype(np.float64) for n in names])
    D = np.stack([scored[n].decisions[take[n]].astype(bool) for n in names])
    groups = None if first.groups is None else [first.groups[j] for j in take[names[0]]]
    both = bool(y.any() and not y.all())
    if not both:
        warnings.append("the compared cases hold only one class: AUC, its intervals and DeLong's test are undefined")
    # patient-level cases are patients themselves: each its own resampling unit, named so
    units_of = groups if groups is not None or first.unit != "patient" else ids
    boot, how = (paired_bootstrap(y, S, units_of, n_bootstrap=n_bootstrap, seed=seed) if both and n_bootstrap > 0
                 else (np.full((len(names), 0), np.nan), None))
    rows = []
    for m, name in enumerate(names):
        r = _rates(y, D[m])
        auc = float(weighted_auc(S[m], y, np.ones((1, len(y))))[0]) if both else None
        rows.append({"name": name, "roc_auc": auc, "roc_auc_ci": _interval(boot[m], level) if boot.size else None,
                     "sensitivity": r["sensitivity"], "specificity": r["specificity"], "fn": r["fn"], "fp": r["fp"],
                     "tp": r["tp"], "tn": r["tn"], "balanced_accuracy": r["balanced_accuracy"], "ppv": r["ppv"],
                     "npv": r["npv"], "ece": _ece(y, S[m]), "threshold": scored[name].threshold})
    best, why = select(rows, rule, float(min_specificity))
    b = names.index(best["name"])
    for m, row in enumerate(rows):
        row["selected"] = m == b
        if m == b:
            row["vs_selected"] = None
            continue
        test = {"mcnemar": mcnemar(y, D[m], D[b])}
        if both:
            test["delong"] = delong(y, S[m], S[b])
            if boot.size:
                test["auc_difference_ci"] = _interval(boot[m] - boot[b], level)
        row["vs_selected"] = test
    if groups is not None and any(g is not None for g in groups):
        n_pat = len({g for g in groups if g is not None})
        warnings.append(f"cases are images of {n_pat} patients: DeLong's and McNemar's tests treat images as "
                        "independent and are optimistic; the patient-bootstrap intervals account for patients")
    return to_jsonable({
        "rule": rule, "min_specificity": float(min_specificity), "selected": best["name"], "selected_because": why,
        "n_cases": len(ids), "n_positive": int(y.sum()), "n_negative": int((~y).sum()), "unit": first.unit,
        "n_patients": None if groups is None else len({g for g in groups if g is not None}),
        "ci_level": level, "bootstrap": how, "leaderboard": rows, "warnings": warnings,
        "curves": {n: _roc(y, S[m]) for m, n in enumerate(names)} if both else {},
        "definitions": {
            "operating_point": "each model's own packaged threshold (chosen on its validation data), not re-tuned",
            "fn/fp": "missed disease cases / healthy cases called diseased, at that operating point",
            "ece": "top-label expected calibration error (15 bins) of the disease-vs-negative probability",
            "delong": "DeLong (1988) test of equal AUC vs the selected model, fast algorithm of Sun & Xu (2014)",
            "mcnemar": "McNemar's test of equal accuracy vs the selected model on the discordant cases: exact "
                       "binomial and mid-p (Fagerland et al. 2013)",
        },
    })


def _roc(y: np.ndarray, s: np.ndarray, max_points: int = 300) -> dict[str, list[float]]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    keep = np.unique(np.round(np.linspace(0, len(fpr) - 1, min(len(fpr), max_points))).astype(int))
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}


# ------------------------------------------------------------------ the command's workflow
@logged_run(lambda result: result[1])  # run.log beside compare.json
def compare_runs(runs: Sequence[str | Path], data: str | Path, *, split: str = "test", rule: str = "fewest-fn",
                 min_specificity: float = 0.5, out: str | Path | None = None, device: str = "auto",
                 n_bootstrap: int = 1000, seed: int = 0, **layout_opts: Any) -> tuple[dict[str, Any], Path]:
    """Score every package on the same cases, compare, and write the outputs into ``out``.

    Returns:
        ``(result, out_dir)``; ``out_dir`` holds compare.json, leaderboard.csv, compare.html.

    Raises:
        BadInputError: packages with different classes (named), unreadable data.
        JobFailedError: the rule selects no model (``fewest-fn`` with no model specific enough).
    """
    from medlens.options import look_up_option, resolve_device
    from medlens.package import ModelPackage

    rule = look_up_option(rule, RULES, what="--rule")
    dev = resolve_device(device)
    out_dir = output_dir(out)
    entries = expand_runs(runs)
    pkgs = {e.name: ModelPackage(e.package, device=dev) for e in entries}
    check_same_task(pkgs)
    check_same_classes(pkgs)
    cases = resolve_cases(data, entries, split, layout_opts)
    scored: dict[str, Scored] = {}
    for e in entries:
        log.info("scoring %s (%s)", e.name, e.package)
        scored[e.name] = scorer_for(pkgs[e.name])(pkgs[e.name], cases)
    result = compare_scored(scored, rule=rule, min_specificity=min_specificity, n_bootstrap=n_bootstrap, seed=seed)
    ids = [i for i in next(iter(scored.values())).ids if all(i in set(s.ids) for s in scored.values())]
    for e, row in zip(entries, result["leaderboard"], strict=True):
        row["package"] = str(e.package)
        result["warnings"] += [f"{e.name}: {note}" for note in scored[e.name].notes]
        seen = seen_in_training(e, ids, scored[e.name].members)
        row["seen_in_training"] = seen or None
        if seen.get("train") or seen.get("val"):
            result["warnings"].append(f"{e.name}: {seen.get('train', 0)} of the compared cases were in its training "
                                      f"split and {seen.get('val', 0)} in its validation split: its figures are "
                                      "optimistic")
    result.update({"data": str(cases.data), "split": split, "splits_from": cases.splits_from,
                   "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    for w in result["warnings"]:
        log.warning("%s", w)
    write_outputs(out_dir, result)
    return result, out_dir


def output_dir(out: str | Path | None) -> Path:
    """``out`` or ``runs/compare-<time>``; a run, package or sweep folder is refused."""
    from medlens.errors import OutputError
    from medlens.pipelines.evaluate_run import RUN_MARKERS

    if out is None:
        return Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise OutputError(f"--out {d} is a file; give a folder for {', '.join(OUTPUTS)}")
    held = [m for m in (*RUN_MARKERS, SWEEP_INDEX) if (d / m).exists()]
    if held:
        raise ConfigError(f"--out {d} is a run, package or sweep folder (it holds {', '.join(held)}); "
                          "compare never writes into one: choose another folder")
    return d


def leaderboard_csv(result: dict[str, Any]) -> str:
    """The leaderboard as CSV: one row per model, the tests against the selected model."""
    import csv
    import io

    cols = ["name", "selected", "roc_auc", "roc_auc_low", "roc_auc_high", "sensitivity", "specificity", "fn", "fp",
            "tp", "tn", "balanced_accuracy", "ece", "threshold", "delong_p", "mcnemar_p_exact", "mcnemar_p_mid",
            "package"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in result["leaderboard"]:
        ci, vs = r.get("roc_auc_ci") or {}, r.get("vs_selected") or {}
        w.writerow({**{c: r.get(c) for c in cols}, "roc_auc_low": ci.get("low"), "roc_auc_high": ci.get("high"),
                    "delong_p": (vs.get("delong") or {}).get("p_value"),
                    "mcnemar_p_exact": (vs.get("mcnemar") or {}).get("p_exact"),
                    "mcnemar_p_mid": (vs.get("mcnemar") or {}).get("p_mid")})
    return buf.getvalue()


def write_outputs(out_dir: Path, result: dict[str, Any]) -> None:
    """compare.json, leaderboard.csv and compare.html, each written atomically."""
    from medlens.evaluate.compare_page import compare_html
    from medlens.io.atomic import atomic_write_json, atomic_write_text
    from medlens.io.lock import folder_lock

    with folder_lock(out_dir):
        atomic_write_json(out_dir / "compare.json", result)
        atomic_write_text(out_dir / "leaderboard.csv", leaderboard_csv(result))
        atomic_write_text(out_dir / "compare.html", compare_html(result))
