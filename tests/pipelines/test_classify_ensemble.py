"""Classifier ensembles: a cross-validation (fold) ensemble whose operating point is chosen on
every training patient's out-of-fold probabilities, and a seed ensemble; one package either way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medlens.cli.main import get_app

runner = CliRunner()
TINY = ["--model", "test_cnn", "--size", "32", "--epochs", "1", "--batch-size", "32"]


def _patients_by_split(run: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for line in (run / "splits.csv").read_text().splitlines()[1:]:
        path, split = line.rsplit(",", 1)
        out.setdefault(split, set()).add(path.replace("\\", "/").split("/")[-3])  # IDC: <patient>/<label>/<file>
    return out


@pytest.fixture(scope="module")
def fold_run(tmp_path_factory, idc_small):
    out = tmp_path_factory.mktemp("ens") / "run"
    res = runner.invoke(get_app(), ["train", str(idc_small), "--out", str(out), *TINY,
                                    "--ensemble", "3", "--ensemble-by", "folds"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return out


def test_fold_ensemble_members_validate_on_disjoint_patients_and_never_see_test(fold_run):
    by_split = _patients_by_split(fold_run)
    members = json.loads((fold_run / "metrics.json").read_text())["training"]["members"]
    assert len(members) == 3 and [m["seed"] for m in members] == [0, 1, 2]
    val = [{p.removeprefix("patient:") for p in m["val_patients"]} for m in members]
    assert all(val) and sum(len(v) for v in val) == len(set().union(*val))  # each patient validates one member
    assert set().union(*val) == by_split["train"] | by_split["val"]  # ... and every pooled patient does
    assert not set().union(*val) & by_split["test"]
    for k in range(3):
        assert (fold_run / f"member{k}" / "checkpoints" / "last.pt").exists()  # resumable per member


def test_fold_ensemble_threshold_chosen_on_every_pooled_image_out_of_fold(fold_run):
    m = json.loads((fold_run / "metrics.json").read_text())
    sel = m["operating_point"]["selection"]
    from medlens.pipelines.classifier_fit import OUT_OF_FOLD

    assert sel["chosen_on"] == OUT_OF_FOLD and OUT_OF_FOLD in sel["rule"]
    n_pooled = sum(1 for line in (fold_run / "splits.csv").read_text().splitlines()[1:]
                   if line.rsplit(",", 1)[1] in ("train", "val"))
    assert sel["n_positive"] + sel["n_negative"] == n_pooled  # not only the validation split's images
    meta = json.loads((fold_run / "model" / "metadata.json").read_text())
    assert meta["model"]["name"] == "ensemble" and len(meta["model"]["kwargs"]["members"]) == 3
    assert meta["threshold"] == m["operating_point"]["threshold"]
    assert "test_cnn × 3" in (fold_run / "model" / "model_card.md").read_text()  # the card says what answers


def test_fold_ensemble_package_answers_as_the_mean_of_its_members(fold_run):
    from medlens.package import load_model

    pkg = load_model(fold_run / "model")
    t = pkg.model.temperature  # the members' own, fitted on their out-of-fold logits
    assert t != 1.0 and pkg.temperature == 1.0  # applied inside, never again to the average
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        p = pkg.model(x).softmax(1)
        each = torch.stack([(mm(x) / t).softmax(1) for mm in pkg.model.members]).mean(0)
    assert torch.allclose(p, each, atol=1e-5)
    assert not all(torch.allclose(mm(x), pkg.model.members[0](x)) for mm in pkg.model.members[1:])


def test_out_of_fold_logits_come_from_the_member_that_did_not_train_on_the_row(monkeypatch, tmp_path):
    """Each member answers with its own index: the logits the operating point is chosen on must be
    those of the member that validated (never trained on) each row."""
    from medlens.models import create_model
    from medlens.pipelines import classifier_fit as cl
    from medlens.pipelines.config import RunConfig
    from medlens.train.classify import ClassificationTask
    from medlens.train.engine import FitResult

    seen: dict[int, np.ndarray] = {}

    def fake_fit(cfg, images, labels, train_m, val_m, k, run_dir, *, resume=False, norm=None):
        model = create_model("test_cnn", num_classes=2, in_channels=3)
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        member = cfg.train.seed  # fit_members gives member k the seed seed + k (seed 0 here)
        torch.nn.init.zeros_(last.weight)
        last.bias.data = torch.tensor([0.0, float(member)])
        seen[member] = train_m.copy()
        task = ClassificationTask(num_classes=2, mean=norm[0], std=norm[1])
        return cl.Fitted(model, task, FitResult(0, 0.5), {}, norm[0], norm[1])

    monkeypatch.setattr(cl, "fit_classifier", fake_fit)
    n = 36
    images = np.random.default_rng(0).integers(0, 255, (n, 3, 32, 32), dtype=np.uint8)
    labels = np.tile([0, 1], n // 2)
    groups = [f"patient:{i // 3}" for i in range(n)]  # 12 patients of 3 images
    train_m = np.arange(n) < 30
    val_m = (np.arange(n) >= 30) & (np.arange(n) < 33)  # the last 3 rows: test
    cfg = RunConfig(data={"path": "x"}, ensemble=3, ensemble_by="folds")
    t = cl.train_model(cfg, images, labels, train_m, val_m, 2, tmp_path, groups, torch.device("cpu"))
    assert t.op_rows.tolist() == list(range(33)) and t.chosen_on == cl.OUT_OF_FOLD
    temp = t.fitted.model.temperature  # fitted on the members' raw out-of-fold logits; they are returned divided by it
    raw = t.op_logits * temp
    from medlens.evaluate.calibration import fit_temperature

    assert temp == pytest.approx(fit_temperature(raw, labels[t.op_rows]))
    member_of = np.round(raw[:, 1] - raw[:, 0]).astype(int)
    for row, k in zip(t.op_rows, member_of, strict=True):
        assert not seen[k][row]  # the member that answered never trained on the row
        assert all(seen[j][row] for j in range(3) if j != k)  # every other member did
    assert len({groups[r] for r in t.op_rows[member_of == 0]} & {groups[r] for r in t.op_rows[member_of != 0]}) == 0


def test_seed_ensemble_and_bad_settings(tmp_path, idc_small):
    out = tmp_path / "run"
    res = runner.invoke(get_app(), ["train", str(idc_small), "--out", str(out), *TINY, "--ensemble", "2"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["operating_point"]["selection"]["chosen_on"] == "val"
    assert [r["n_train"] for r in m["training"]["members"]] == [m["training"]["members"][0]["n_train"]] * 2
    bad = runner.invoke(get_app(), ["train", str(idc_small), "--out", str(tmp_path / "bad"), *TINY,
                                    "--ensemble-by", "folds"])
    assert bad.exit_code == 2 and "ensemble" in bad.output and "Traceback" not in bad.output


def test_cv_with_a_fold_ensemble_keeps_held_out_patients_out_of_every_member(tmp_path, idc_small):
    out = tmp_path / "cv"
    res = runner.invoke(get_app(), ["cv", str(idc_small), "--folds", "2", "--out", str(out), *TINY,
                                    "--ensemble", "2", "--ensemble-by", "folds"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "out-of-fold predictions of the fold's whole training part" in res.output
    for k in range(2):
        held = _patients_by_split(out / f"fold_{k}")["test"]
        members = json.loads((out / f"fold_{k}" / "result.json").read_text())["members"]
        assert len(members) == 2
        assert not held & {p.removeprefix("patient:") for m in members for p in m["val_patients"]}
    cv = json.loads((out / "cv_metrics.json").read_text())
    assert "fold ensemble" in cv["threshold_note"]
    for row in cv["per_fold"]:  # the temperature is the members' (inside the model), not the average's
        assert row["temperature"] == 1.0 and row["member_temperature"] > 0


def test_an_ensemble_run_is_not_overwritten_without_resume(fold_run, idc_small):
    before = (fold_run / "model" / "weights.pt").read_bytes()
    res = runner.invoke(get_app(), ["train", str(idc_small), "--out", str(fold_run), *TINY,
                                    "--ensemble", "3", "--ensemble-by", "folds"])
    assert res.exit_code != 0 and "already holds a run" in res.output
    assert (fold_run / "model" / "weights.pt").read_bytes() == before


def test_idc_layout_with_ten_patients_gets_the_fold_ensemble_unless_told(tmp_path):
    from medlens.data.synthetic import make_idc_like
    from medlens.pipelines.recipes import apply_recipe
    from medlens.train.ensemble import FOLD_ENSEMBLE_MIN_PATIENTS

    many = make_idc_like(tmp_path / "many", patients=FOLD_ENSEMBLE_MIN_PATIENTS, patches_per_patient=4, size=50, seed=0)
    few = make_idc_like(tmp_path / "few", patients=FOLD_ENSEMBLE_MIN_PATIENTS - 1, patches_per_patient=4, size=50,
                        seed=0)
    cfg = apply_recipe({"data": {"path": str(many)}})
    assert (cfg.ensemble, cfg.ensemble_by) == (3, "folds")
    assert cfg.data.test_fraction == 0.0  # every patient trains the shipped ensemble; out-of-fold is the estimate
    assert apply_recipe({"data": {"path": str(many), "test_fraction": 0.2}}).data.test_fraction == 0.2
    assert (apply_recipe({"data": {"path": str(few)}}).ensemble,
            apply_recipe({"data": {"path": str(few)}}).data.test_fraction) == (1, 0.15)
    one = apply_recipe({"data": {"path": str(many)}, "ensemble": 1})  # --ensemble 1: one network, no error
    assert (one.ensemble, one.ensemble_by, one.data.test_fraction) == (1, "seed", 0.15)
    seeds = apply_recipe({"data": {"path": str(many)}, "ensemble": 2})
    assert (seeds.ensemble, seeds.ensemble_by) == (2, "seed")


def test_a_fold_ensemble_without_every_class_in_each_member_fold_trains_one_network(monkeypatch, tmp_path, caplog):
    """Class 0 in only two patients: a third member would validate on class 1 alone (no AUC to
    stop on, which picked an epoch-0 member in a 3-fold IDC CV) — one network instead, said so."""
    from medlens.pipelines import classifier_fit as cl
    from medlens.pipelines.config import RunConfig

    calls = []

    def fake_fit(cfg, images, labels, train_m, val_m, k, run_dir, *, resume=False, norm=None):
        calls.append(val_m.copy())
        return cl.Fitted(torch.nn.Linear(1, 2), None, None, {}, [0.0], [1.0])

    monkeypatch.setattr(cl, "fit_classifier", fake_fit)
    monkeypatch.setattr("medlens.pipelines.evaluation.cache_logits", lambda m, t, x, d: np.zeros((len(x), 2)))
    n = 24
    groups = [f"patient:{i // 4}" for i in range(n)]  # 6 patients
    labels = np.array([0 if i < 8 else 1 for i in range(n)])  # class 0: patients 0 and 1 only
    train_m, val_m = np.arange(n) < 20, np.arange(n) >= 20
    cfg = RunConfig(data={"path": "x"}, ensemble=3, ensemble_by="folds")
    with caplog.at_level("WARNING"):
        t = cl.train_model(cfg, np.zeros((n, 1, 2, 2), np.uint8), labels, train_m, val_m, 2, tmp_path, groups,
                           torch.device("cpu"))
    assert len(calls) == 1 and t.members == [] and t.chosen_on == "val"
    assert t.op_rows.tolist() == np.flatnonzero(val_m).tolist()
    assert "one network instead" in caplog.text


def test_a_fold_ensemble_without_test_patients_reports_every_image_out_of_fold(tmp_path, idc_small):
    """The IDC recipe's default (no test split): the run's metrics are every image's out-of-fold
    probability, named as such — not the validation split's alone, not the ensemble's own."""
    out = tmp_path / "run"
    res = runner.invoke(get_app(), ["train", str(idc_small), "--out", str(out), *TINY,
                                    "--ensemble", "3", "--ensemble-by", "folds", "--test-fraction", "0"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    by_split = _patients_by_split(out)
    assert "test" not in by_split
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "out_of_fold"
    n_images = len((out / "splits.csv").read_text().splitlines()) - 1
    assert m["counts"]["n"] == n_images  # every image, each scored by the member that never trained on it
    sel = m["operating_point"]["selection"]
    assert sel["n_positive"] + sel["n_negative"] == n_images
    meta = json.loads((out / "model" / "metadata.json").read_text())
    assert meta["metrics"]["split"] == "out_of_fold"
    assert "out-of-fold metrics" in res.output and "Test images" not in (out / "report.html").read_text()
    assert "Out-of-fold images (no test split" in (out / "report.html").read_text()
    ev = runner.invoke(get_app(), ["evaluate", str(out), str(idc_small)])  # its own data: no test images
    assert ev.exit_code != 0 and "holds out no test split" in ev.output and "--split all" in ev.output
