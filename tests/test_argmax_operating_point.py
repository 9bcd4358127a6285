"""Multi-class data without a healthy class get the argmax operating point (issue 14).

Before: cell types (basophil, eosinophil, …) fell back to "negative = class 0" and every
pipeline applied a sensitivity-targeted threshold on 1 − p(basophil)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import medlens
from medlens.cli.main import get_app
from medlens.errors import ConfigError
from medlens.evaluate.metrics import classification_metrics
from medlens.evaluate.operating_point import ARGMAX_NOTE, operating_negative_class
from medlens.pipelines.evaluation import negative_class_index

runner = CliRunner()
TINY = ["--model", "test_cnn", "--size", "32", "--epochs", "2", "--batch-size", "16"]
COLOURS = ((200, 60, 60), (60, 200, 60), (60, 60, 200))


def _folders(root: Path, names: tuple[str, ...], per_class: int = 14) -> Path:
    """One folder per class of small noisy colour squares (class = colour)."""
    rng = np.random.default_rng(0)
    for name, colour in zip(names, COLOURS, strict=False):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(np.array(colour) + rng.normal(0, 60, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{name}_{i}.png")
    return root


def _train(tmp: Path, names: tuple[str, ...]) -> tuple[Path, Path]:
    data = _folders(tmp / "data", names)
    out = tmp / "run"
    res = runner.invoke(get_app(), ["train", str(data), "--out", str(out), *TINY])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return data, out


def test_the_rule_names_no_negative_class_only_for_multiclass_without_a_healthy_name():
    assert operating_negative_class(["a", "b", "c"]) is None
    assert operating_negative_class(["a", "Normal", "c"]) == 1
    assert operating_negative_class(["cat", "dog"]) == 0  # binary: unchanged
    assert operating_negative_class(["a", "b", "c"], named=2) == 2
    assert negative_class_index(["basophil", "eosinophil", "ig"], None) is None
    assert negative_class_index(["basophil", "eosinophil", "ig"], "ig") == 2
    assert negative_class_index(["cat", "dog"], None) == 0


def test_metrics_without_a_negative_class_are_argmax_and_drop_disease_rates():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 20)
    p = rng.dirichlet(np.ones(3), size=60)
    p[np.arange(60), y] += 0.4 * (rng.random(60) < 0.6)
    p /= p.sum(1, keepdims=True)
    m = classification_metrics(y, p, ["a", "b", "c"], negative_class=None, n_bootstrap=50)
    assert m["accuracy"] == pytest.approx(float(np.mean(p.argmax(1) == y)))
    assert m["operating_point"]["threshold"] is None and m["operating_point"]["note"] == ARGMAX_NOTE
    assert m["negative_class"]["index"] is None
    for key in ("sensitivity", "specificity", "ppv", "npv", "f1", "roc_auc_disease"):
        assert m[key] is None and "no negative class" in m["undefined"][key]
    assert m["negative_class"]["note"] == ARGMAX_NOTE
    assert m["ci"]["sensitivity"] is None and m["ci"]["accuracy"] is not None
    recall_b = np.mean(p[y == 1].argmax(1) == 1)
    assert m["per_class"][1]["recall"] == pytest.approx(recall_b)  # one-vs-rest sensitivity kept
    # with negative class 0 the same data get the old disease-vs-"a" rates
    old = classification_metrics(y, p, ["a", "b", "c"], negative_class=0, n_bootstrap=0)
    assert old["sensitivity"] is not None
    with pytest.raises(ConfigError, match="negative-class"):
        classification_metrics(y, p, ["a", "b", "c"], negative_class=None, threshold=0.5, n_bootstrap=0)


def test_three_classes_without_healthy_name_train_predict_evaluate_argmax(tmp_path):
    data, run = _train(tmp_path, ("a", "b", "c"))
    meta = json.loads((run / "model" / "metadata.json").read_text())
    assert meta["threshold"] is None
    assert meta["operating_point"]["negative_class"] is None and meta["operating_point"]["note"] == ARGMAX_NOTE
    m = json.loads((run / "metrics.json").read_text())
    assert m["operating_point"]["threshold"] is None and m["sensitivity"] is None
    assert ARGMAX_NOTE in m["operating_point"]["selection"]["rule"]

    with (run / "splits.csv").open(newline="") as fh:
        test = [r["path"] for r in csv.DictReader(fh) if r["split"] == "test"]
    assert test
    files = [p if Path(p).is_absolute() else str(data / p) for p in test]
    pkg = medlens.load_model(run)
    rows = pkg.predict(files)
    for r in rows:  # predicted = argmax, no decision without a threshold
        assert r["predicted"] == max(r["probabilities"], key=r["probabilities"].get)
        assert "decision" not in r
    truth = [Path(f).parent.name for f in files]
    argmax_acc = float(np.mean([r["predicted"] == t for r, t in zip(rows, truth, strict=True)]))
    assert m["accuracy"] == pytest.approx(argmax_acc)

    res = runner.invoke(get_app(), ["evaluate", str(run), str(data), "--split", "test", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert ev["accuracy"] == pytest.approx(argmax_acc)
    assert ev["negative_class"]["index"] is None and ev["sensitivity"] is None
    assert (tmp_path / "ev" / "report.html").exists()

    # calibrate refits the temperature only: no threshold appears on "1 - p(a)"
    res = runner.invoke(get_app(), ["calibrate", str(run), str(data), "--fraction", "0.5"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    (cal,) = (run / "calibrations").iterdir()
    cal_meta = json.loads((cal / "model" / "metadata.json").read_text())
    assert cal_meta["threshold"] is None and cal_meta["operating_point"]["negative_class"] is None
    assert cal_meta["metrics"]["sensitivity"] is None
    res = runner.invoke(get_app(), ["calibrate", str(run), str(data), "--target-sensitivity", "0.9",
                                    "--out", str(tmp_path / "cal2")])
    assert res.exit_code != 0 and "--negative-class" in res.output


def test_a_class_named_normal_keeps_the_threshold(tmp_path):
    _, run = _train(tmp_path, ("b", "c", "normal"))
    meta = json.loads((run / "model" / "metadata.json").read_text())
    assert isinstance(meta["threshold"], float) and meta["negative_class"] == 2
    m = json.loads((run / "metrics.json").read_text())
    assert m["negative_class"]["name"] == "normal" and m["sensitivity"] is not None
    assert m["operating_point"]["selection"]["target_sensitivity"] == 0.95


def test_cv_on_three_classes_pools_argmax_accuracy(tmp_path):
    data = _folders(tmp_path / "data", ("a", "b", "c"), per_class=12)
    out = tmp_path / "cv"
    res = runner.invoke(get_app(), ["cv", str(data), "--folds", "2", "--out", str(out), *TINY])
    assert res.exit_code == 0, res.output + repr(res.exception)
    cv = json.loads((out / "cv_metrics.json").read_text())
    assert all(r["threshold"] is None for r in cv["per_fold"])
    probs, labels = [], []
    for i in range(2):
        with np.load(out / f"fold_{i}" / "oof.npz") as z:
            probs.append(z["probs"])
            labels.append(z["labels"])
    p, y = np.concatenate(probs), np.concatenate(labels)
    pooled = cv["pooled"]
    assert pooled["accuracy"] == pytest.approx(float(np.mean(p.argmax(1) == y)))
    assert pooled["operating_point"]["threshold"] is None and pooled["sensitivity"] is None
    assert cv["pooled_operating_point"]["rule"] == ARGMAX_NOTE
    assert "argmax" in res.output and ARGMAX_NOTE in (out / "cv_report.html").read_text()


# --- predict, report, compare and the patient bootstrap on argmax packages (issue 14 loose ends) ---
@pytest.fixture(scope="module")
def abc_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny argmax package (classes a/b/c, none healthy) shared by the tests below."""
    return _train(tmp_path_factory.mktemp("abc"), ("a", "b", "c"))


def _predict_csv(run: Path, data: Path, out: Path) -> tuple[list[dict[str, str]], str]:
    res = runner.invoke(get_app(), ["predict", str(run), str(data), "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    with out.open(newline="") as fh:
        return list(csv.DictReader(fh)), res.output


def test_predict_on_an_argmax_package_has_no_disease_score(abc_run, tmp_path):
    data, run = abc_run
    rows, shown = _predict_csv(run, data / "b", tmp_path / "p.csv")
    assert rows and "disease_score" not in rows[0] and "decision" not in rows[0]
    for r in rows:  # predicted = the most probable class; every class probability kept
        p = {c: float(r[f"p_{c}"]) for c in "abc"}
        assert r["predicted"] == max(p, key=p.get) and sum(p.values()) == pytest.approx(1.0, abs=1e-4)
    assert "disease_score" not in shown and "most probable class" in shown
    res = runner.invoke(get_app(), ["predict", str(run), str(data / "b"), "--out", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    got = json.loads((tmp_path / "p.json").read_text())
    assert all("disease_score" not in r and set(r["probabilities"]) == {"a", "b", "c"} for r in got)


@pytest.mark.parametrize("names", [("cat", "dog"), ("b", "c", "normal")])
def test_predict_keeps_the_disease_score_of_binary_and_healthy_named_packages(tmp_path, names):
    data, run = _train(tmp_path, names)
    meta = json.loads((run / "model" / "metadata.json").read_text())
    neg, thr = names[meta["negative_class"]], meta["threshold"]
    assert neg == ("cat" if len(names) == 2 else "normal") and thr is not None
    rows, shown = _predict_csv(run, data, tmp_path / "p.csv")
    assert "disease_score" in shown
    for r in rows:
        score = float(r["disease_score"])
        assert score == pytest.approx(1 - float(r[f"p_{neg}"]), abs=1e-5)
        assert r["decision"] == ("positive" if score >= thr else "negative")


def test_the_report_of_an_argmax_run_states_argmax_and_shows_the_kxk_matrix(abc_run):
    _, run = abc_run
    page = (run / "report.html").read_text()
    assert ARGMAX_NOTE in page
    assert "negative class: None" not in page and "Sensitivity" not in page
    assert "true \\ predicted</th><th>a</th><th>b</th><th>c" in page  # the K×K counts as a table
    assert ">disease</th>" not in page  # no 2×2 (negative / disease) table
    assert "ROC AUC (macro one-vs-rest)" in page and "Per-class metrics" in page
    m = json.loads((run / "metrics.json").read_text())
    cm = np.array(m["confusion_matrix"]["matrix"])
    assert cm.shape == (3, 3) and f"<td class=\"n\">{cm[0, 0]}</td>" in page
    card = (run / "model" / "model_card.md").read_text() if (run / "model" / "model_card.md").exists() else ""
    assert "| Sensitivity |" not in card


def test_the_report_of_a_thresholded_run_keeps_the_2x2_and_sensitivity():
    from medlens.evaluate.report import write_report

    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 20)
    p = np.clip(rng.normal(0.5 + 0.3 * (2 * y - 1)[:, None] * [-1, 1], 0.2), 0.01, 0.99)
    p /= p.sum(1, keepdims=True)
    m = classification_metrics(y, p, ["normal", "tumour"], negative_class=0, threshold=0.5, n_bootstrap=0)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        page = write_report(Path(d) / "r.html", title="t", data_summary={}, split_table={}, history=[],
                            metrics=m, patient_table=None, samples=[], model_card={}).read_text()
    assert "Sensitivity" in page and ">disease</th>" in page and ARGMAX_NOTE not in page
    assert "negative class: normal" in page


def _scored(y: np.ndarray, p: np.ndarray, groups: list[str] | None = None):
    from medlens.evaluate.compare_cases import Scored

    return Scored(ids=[f"i{j}" for j in range(len(y))], y_true=y, scores=p.max(1), decisions=p.argmax(1),
                  groups=groups, probs=p)


def test_compare_ranks_argmax_packages_by_macro_auc_and_refuses_fewest_fn():
    from medlens.errors import BadInputError
    from medlens.evaluate.compare_cases import Scored
    from medlens.evaluate.compare_page import compare_html
    from medlens.evaluate.compare_stats import compare_scored

    rng = np.random.default_rng(4)
    y = np.repeat([0, 1, 2], 30)
    good = rng.dirichlet(np.ones(3), size=90) + 1.5 * np.eye(3)[y]
    bad = rng.dirichlet(np.ones(3), size=90) + 0.3 * np.eye(3)[y]
    good, bad = good / good.sum(1, keepdims=True), bad / bad.sum(1, keepdims=True)
    scored = {"bad": _scored(y, bad), "good": _scored(y, good)}
    with pytest.raises(ConfigError) as err:
        compare_scored(scored, rule="fewest-fn", n_bootstrap=0)
    assert "no false negatives" in str(err.value) and "--rule highest-auc" in str(err.value)
    assert "--negative-class" in str(err.value)
    res = compare_scored(scored, rule="highest-auc", n_bootstrap=0)
    assert res["selected"] == "good" and "macro one-vs-rest" in res["selected_because"]
    rows = {r["name"]: r for r in res["leaderboard"]}
    assert rows["bad"]["accuracy"] == pytest.approx(float(np.mean(bad.argmax(1) == y)))
    assert rows["good"]["sensitivity"] is None and rows["good"]["fn"] is None and res["n_negative"] is None
    mc = rows["bad"]["vs_selected"]["mcnemar"]  # McNemar on argmax correctness
    rb, rg = bad.argmax(1) == y, good.argmax(1) == y
    assert (mc["b"], mc["c"]) == (int(np.sum(rb & ~rg)), int(np.sum(~rb & rg)))
    assert res["note"] in compare_html(res) and "disease vs" not in compare_html(res)
    assert compare_scored(scored, rule="highest-balanced-accuracy", n_bootstrap=0)["selected"] == "good"
    binary = Scored(ids=scored["bad"].ids, y_true=y != 0, scores=1 - bad[:, 0], decisions=bad.argmax(1) != 0)
    with pytest.raises(BadInputError, match="negative class"):
        compare_scored({"bad": binary, "good": scored["good"]}, rule="highest-auc", n_bootstrap=0)


def test_compare_cli_refuses_fewest_fn_on_argmax_packages_before_scoring(abc_run, tmp_path):
    import shutil

    data, run = abc_run
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    res = runner.invoke(get_app(), ["compare", str(run), str(twin), "--data", str(run), "--rule", "fewest-fn",
                                    "--out", str(tmp_path / "c")])
    assert res.exit_code != 0 and "no false negatives" in res.output and "--rule highest-auc" in res.output
    # without --rule, argmax packages are ranked by macro AUC (fewest-fn needs a healthy class)
    res = runner.invoke(get_app(), ["compare", str(run), str(twin), "--data", str(run),
                                    "--out", str(tmp_path / "c2"), "--n-bootstrap", "0"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    out = json.loads((tmp_path / "c2" / "compare.json").read_text())
    assert out["rule"] == "highest-auc" or out.get("selection", {}).get("rule") == "highest-auc", out.keys()
    assert out["negative_class"] is None and out["leaderboard"][0]["sensitivity"] is None
    m = json.loads((run / "metrics.json").read_text())
    assert out["leaderboard"][0]["accuracy"] == pytest.approx(m["accuracy"])


def test_patient_bootstrap_without_a_negative_class_keeps_the_multiclass_auc_interval():
    rng = np.random.default_rng(5)
    y = np.tile([1, 2], 40)  # class 0 ("a") absent from this split: no "negative" patient exists
    p = rng.dirichlet(np.ones(3), size=80) + np.eye(3)[y]
    p /= p.sum(1, keepdims=True)
    patients = [f"pt{j % 8}" for j in range(80)]
    m = classification_metrics(y, p, ["a", "b", "c"], negative_class=None, patients=patients, n_bootstrap=200)
    assert m["ci"]["unit"] == "patient" and "roc_auc" not in m["ci"]["not_estimable"]
    assert m["ci"]["roc_auc"] is not None and m["ci"]["accuracy"] is not None
    # the same data with class "a" as the negative class: no negative patient → no AUC interval
    old = classification_metrics(y, p, ["a", "b", "c"], negative_class=0, patients=patients, n_bootstrap=200)
    assert old["ci"]["roc_auc"] is None and "roc_auc" in old["ci"]["not_estimable"]
    # a class seen in one patient only still gets no interval: its one-vs-rest split has one patient
    one = classification_metrics(np.r_[y, 0, 0], np.r_[p, p[:2]], ["a", "b", "c"], negative_class=None,
                                 patients=[*patients, "pt9", "pt9"], n_bootstrap=200)
    assert one["ci"]["roc_auc"] is None and "one-vs-rest" in one["ci"]["not_estimable"]["roc_auc"]
