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

This module finds the packages and runs the command; the cases and scorers live in
:mod:`medlens.evaluate.compare_cases`, the statistics and the rule in
:mod:`medlens.evaluate.compare_stats` (their public names are importable from here too).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlens.errors import BadInputError, ConfigError
from medlens.evaluate.compare_cases import (  # noqa: F401  (re-exported: the scoring's public names)
    SCORERS,
    Cases,
    Scored,
    Scorer,
    score_classifier,
    scorer_for,
)
from medlens.evaluate.compare_stats import (  # noqa: F401  (re-exported: the statistics' public names)
    RULES,
    compare_scored,
    paired_bootstrap,
    select,
)
from medlens.io.runlog import logged_run

log = logging.getLogger(__name__)

SWEEP_INDEX = "sweep.json"
OUTPUTS = ("compare.json", "leaderboard.csv", "compare.html")


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


def negative_name(pkg: Any) -> str | None:
    """The name of a package's negative class; ``None`` for an argmax package (none named)."""
    from medlens.pipelines.evaluation import package_negative_class

    neg = package_negative_class(pkg)
    return None if neg is None else pkg.classes[neg]


def check_same_classes(pkgs: dict[str, Any]) -> None:
    """Refuse packages whose classes or negative class (or its absence: argmax) differ, naming them."""
    ref_name, ref = next(iter(pkgs.items()))
    want = (sorted(ref.classes), negative_name(ref))
    odd = [f"{n} {p.classes} (negative {negative_name(p)!r})" for n, p in pkgs.items()
           if (sorted(p.classes), negative_name(p)) != want]
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


# ------------------------------------------------------------------ the command's workflow
@logged_run(lambda result: result[1])  # run.log beside compare.json
def compare_runs(runs: Sequence[str | Path], data: str | Path, *, split: str = "test", rule: str | None = None,
                 min_specificity: float = 0.5, out: str | Path | None = None, device: str = "auto",
                 n_bootstrap: int = 1000, seed: int = 0, **layout_opts: Any) -> tuple[dict[str, Any], Path]:
    """Score every package on the same cases, compare, and write the outputs into ``out``.

    Returns:
        ``(result, out_dir)``; ``out_dir`` holds compare.json, leaderboard.csv, compare.html.

    Raises:
        BadInputError: packages with different classes (named), unreadable data.
        JobFailedError: the rule selects no model (``fewest-fn`` with no model specific enough).

    ``rule=None``: ``fewest-fn``, or ``highest-auc`` for packages with no healthy class.
    """
    from medlens.options import look_up_option, resolve_device
    from medlens.package import ModelPackage

    if rule is not None:
        rule = look_up_option(rule, RULES, what="--rule")
    dev = resolve_device(device)
    out_dir = output_dir(out)
    entries = expand_runs(runs)
    pkgs = {e.name: ModelPackage(e.package, device=dev) for e in entries}
    check_same_task(pkgs)
    check_same_classes(pkgs)
    if negative_name(next(iter(pkgs.values()))) is None:  # argmax packages: refuse before scoring
        from medlens.evaluate.compare_argmax import refuse_fewest_fn

        if rule is None:  # no false negatives to count without a healthy class
            rule = "highest-auc"
            log.info("no healthy class: models ranked by macro one-vs-rest AUC (--rule highest-auc)")
        refuse_fewest_fn(rule)
    rule = rule or "fewest-fn"
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

    cols = ["name", "selected", "accuracy", "roc_auc", "roc_auc_low", "roc_auc_high", "sensitivity", "specificity", "fn", "fp",
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
