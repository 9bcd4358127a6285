"""`medlens compare`: the selection rules, the paired leaderboard, the outputs and the refusals."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medlens.errors import JobFailedError
from medlens.evaluate.compare import Scored, compare_scored, select
from tests.packages import tiny_classifier_package


def _row(name: str, fn: int, spec: float, auc: float) -> dict:
    return {"name": name, "fn": fn, "specificity": spec, "roc_auc": auc, "balanced_accuracy": (1 + spec) / 2}


def test_fewest_fn_respects_the_specificity_floor_and_breaks_ties_by_auc() -> None:
    rows = [_row("sensitive-but-useless", 0, 0.30, 0.80), _row("a", 3, 0.70, 0.85), _row("b", 3, 0.60, 0.90),
            _row("c", 5, 0.90, 0.95)]
    best, why = select(rows, "fewest-fn", 0.5)
    assert best["name"] == "b" and "specificity >= 0.5" in why  # 3 FN tie → higher AUC
    assert select(rows, "highest-auc", 0.5)[0]["name"] == "c"
    assert select(rows, "highest-balanced-accuracy", 0.5)[0]["name"] == "c"
    with pytest.raises(JobFailedError, match="no model reaches specificity >= 0.95.*c 0.900"):
        select(rows, "fewest-fn", 0.95)


def test_compare_scored_pairs_models_on_the_same_cases() -> None:
    rng = np.random.default_rng(0)
    n = 200
    y = rng.random(n) < 0.4
    ids = [f"img{i}" for i in range(n)]
    groups = [f"p{i // 10}" for i in range(n)]  # 20 patients
    good = np.clip(0.5 + 0.35 * (y - 0.5) + rng.normal(0, 0.15, n), 0, 1)
    weak = np.clip(0.5 + 0.10 * (y - 0.5) + rng.normal(0, 0.15, n), 0, 1)
    scored = {
        "good": Scored(ids, y, good, good >= 0.5, groups, threshold=0.5),
        "weak-lenient": Scored(ids[::-1], y[::-1], weak[::-1], np.ones(n, bool), groups[::-1], threshold=0.0),
    }  # listed in another order: pairing is by id
    res = compare_scored(scored, rule="fewest-fn", min_specificity=0.5, n_bootstrap=200)
    lb = {r["name"]: r for r in res["leaderboard"]}
    assert lb["weak-lenient"]["fn"] == 0 and lb["weak-lenient"]["specificity"] == 0.0
    assert res["selected"] == "good" and lb["good"]["selected"]  # the lenient one fails the floor
    vs = lb["weak-lenient"]["vs_selected"]
    assert vs["delong"]["p_value"] < 0.01 and vs["auc_difference_ci"]["high"] < 0
    assert lb["good"]["roc_auc_ci"]["low"] < lb["good"]["roc_auc"] < lb["good"]["roc_auc_ci"]["high"]
    assert res["bootstrap"]["unit"] == "patient" and res["bootstrap"]["n_units"] == 20
    assert compare_scored(scored, rule="fewest-fn", min_specificity=0.0, n_bootstrap=0)["selected"] == "weak-lenient"


@pytest.fixture(scope="module")
def blood_like(tmp_path_factory):
    from medlens.data.synthetic import make_idc_like

    root = tmp_path_factory.mktemp("cmp") / "data"
    make_idc_like(root, patients=4, patches_per_patient=12, size=32, seed=2)
    return root


def test_compare_cli_writes_the_outputs_with_both_models(tmp_path, blood_like) -> None:
    from typer.testing import CliRunner

    from medlens.cli.main import get_app

    a = tiny_classifier_package(tmp_path / "strict" / "model", classes=("0", "1"), threshold=0.9)
    b = tiny_classifier_package(tmp_path / "lenient", classes=("0", "1"), threshold=0.0)
    out = tmp_path / "cmp"
    res = CliRunner().invoke(get_app(), ["compare", str(a.parent), str(b), "--data", str(blood_like), "--split",
                                         "all", "--min-specificity", "0", "--n-bootstrap", "50", "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert {p.name for p in out.iterdir()} >= {"compare.json", "leaderboard.csv", "compare.html", "run.log"}
    result = json.loads((out / "compare.json").read_text())
    names = [r["name"] for r in result["leaderboard"]]
    assert names == ["strict", "lenient"] and result["n_cases"] == 48
    assert result["selected"] == "lenient"  # threshold 0 calls everything diseased: no FN
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert [r["name"] for r in rows] == names and rows[1]["selected"] == "True" and rows[1]["fn"] == "0"
    html = (out / "compare.html").read_text()
    assert "Selected: lenient" in html and "fewest false negatives" in html and "data:image/png;base64" in html
    assert "lenient ★" in res.output and "selected: lenient" in res.output


def test_class_mismatch_is_one_error_line(tmp_path, blood_like, capsys) -> None:
    from medlens.cli.main import run

    a = tiny_classifier_package(tmp_path / "a", classes=("0", "1"))
    b = tiny_classifier_package(tmp_path / "b", classes=("healthy", "AML", "APL"))
    code = run(["compare", str(a), str(b), "--data", str(blood_like), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: ") and "b ['healthy', 'AML', 'APL']" in err[0]
    assert not (tmp_path / "o" / "compare.json").exists()


def test_a_run_without_test_patients_says_why_there_is_nothing_to_compare_on(tmp_path, blood_like) -> None:
    """A fold-ensemble run trains on every patient: comparing on its "test" split must say so and
    how to get one, not only that the split is empty."""
    from medlens.data.layouts import load_dataset
    from medlens.errors import BadInputError
    from medlens.evaluate.compare_cases import Cases

    every = {r.path: "train" for r in load_dataset(blood_like).records}
    cases = Cases(blood_like, "test", every, str(tmp_path / "run" / "splits.csv"))
    with pytest.raises(BadInputError, match="holds out no test split.*--test-fraction"):
        cases.index()
