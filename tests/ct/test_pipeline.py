"""The lung-CT pipeline end to end on tiny phantoms: train (tiny networks, few steps), package,
detect, the nodules.csv columns, world ↔ index agreement, a bad scan among good ones, the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medlens.ct.findings import NODULE_COLUMNS
from medlens.ct.pipeline import DIAGNOSIS_COLUMNS, Detector, detect_files, diagnose, train_pipeline
from medlens.ct.train import CtConfig
from medlens.data.synthetic.chest_ct import make_chest_ct_like, read_truth
from medlens.package import load_model
from medlens.train.config import TrainConfig


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def _tiny_config(data: Path) -> CtConfig:
    seg = TrainConfig(epochs=3, batch_size=16, lr=1e-2, patience=3, device="cpu", scheduler="none", threads=1)
    crop = TrainConfig(epochs=1, batch_size=32, lr=2e-3, patience=1, device="cpu", threads=1)
    return CtConfig(data=str(data), device="cpu", val_fraction=0.25, patch=48, patches_per_epoch=160, pos_fraction=0.7,
                    candidate_kwargs={"channels": [8, 16, 32], "num_res_units": 0}, candidate_threshold=0.3,
                    min_voxels=2, crop_shape=(8, 12, 12), crop_spacing_mm=(4.0, 2.5, 2.5),
                    crop_model="test_ct_crop_cnn", crops_per_epoch=64, negatives_per_scan=10,
                    train_candidates=seg, train_nodule=crop, train_malignancy=crop, min_prob=0.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """Four phantom scans (LUNA16 layout), one training run; (data, run, truth)."""
    root = tmp_path_factory.mktemp("ct")
    data = make_chest_ct_like(root / "data", n_scans=4, seed=3)
    before = _tree_hash(data)
    run = root / "run"
    train_pipeline(_tiny_config(data), run)
    assert _tree_hash(data) == before  # training never touches the input
    return data, run, read_truth(data)


def test_training_writes_package_metrics_and_outputs(trained) -> None:
    data, run, _ = trained
    meta = json.loads((run / "model" / "metadata.json").read_text())
    assert meta["task"] == "ct" and set(meta["stages"]) >= {"candidates", "nodule"}
    assert meta["stages"]["candidates"]["input"]["channels"] == 7
    assert 0 < meta["ct"]["nodule_threshold"] < 1 and meta["ct"]["crop"]["shape"] == [8, 12, 12]
    m = json.loads((run / "metrics.json").read_text())
    assert m["val_scans"] == 1 and m["train_scans"] == 3 and np.isfinite(m["cpm"])
    # the ranker: fitted on the training scans' candidates, stored as a stage, used by detection
    assert m["ranker"]["used"] and m["ranker"]["train_candidates_on_nodules"] >= 2
    assert meta["stages"]["ranker"]["input"]["features"][0] == "mean_hu_r2mm"
    assert meta["stages"]["ranker"]["model"]["kwargs"]["inputs"] == "image"
    det = Detector.from_package(load_model(run / "model"))
    assert det.ranker is not None

    class NotCalled(torch.nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            raise AssertionError("the image-only ranker must not run the crop network")

    det.nodule_model = NotCalled()  # the default ranker takes no network logit: detection skips it
    from medlens.ct.scan import find_scans, read_ct

    det.detect(read_ct(find_scans(data)[0].path))
    assert m["operating_point"]["n_scans"] == 1 and len(m["diagnosis"]) == 1
    with open(run / "nodules.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == NODULE_COLUMNS and rows[0][-1] == "why"
    # each finding says which descriptors moved the ranker most (name=value (±term))
    # (or which gate dropped it: no lung around it, no lump at its centre)
    ranked = [r for r in rows[1:] if not r[-1].startswith(("not in the lung", "no lump"))]
    assert ranked and all(r[-1].count("=") == 3 and "(" in r[-1] for r in ranked)
    assert (run / "report.html").is_file() and (run / "run.log").is_file()
    from medlens.tasks.config import load_run_config

    assert load_run_config(run, task="ct").crop_shape == (8, 12, 12)  # --resume reads it back


def test_trained_candidates_find_the_big_nodule_and_world_matches_index(trained) -> None:
    """A few dozen U-Net steps on phantoms: the largest nodule away from the lung wall in a
    training scan is among the candidates (an untrained U-Net, starting at the 5 % prior, flags
    nothing), and every finding's mm centre is its voxel centre through the geometry."""
    data, run, truth = trained
    from medlens.ct.scan import read_ct

    det = Detector.from_package(load_model(run))
    splits = json.loads((run / "splits.json").read_text())
    easy = [(n["diameter_mm"], k, n) for k, s in enumerate(truth["scans"]) if s["seriesuid"] in splits["train"]
            for n in s["nodules"] if not n["juxta_pleural"]]
    _, k, big = max(easy, key=lambda t: t[:2])
    scan = truth["scans"][k]
    assert big["diameter_mm"] >= 6
    vol = read_ct(data / scan["path"])
    found = det.detect(vol)
    assert found, "the trained U-Net flags nothing"
    dist = [np.linalg.norm(np.subtract(f.center_xyz, big["center_xyz"])) for f in found]
    assert min(dist) < big["diameter_mm"] / 2, f"the {big['diameter_mm']:.1f} mm nodule is not among the candidates"
    probs = [f.nodule_prob for f in found]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    # one finding per lump: no finding lies within 1.5 radii of a more probable one (the package's rule)
    assert det.params.suppress_within == 1.5
    for j, f in enumerate(found):
        for g in found[:j]:
            gap = np.linalg.norm(np.subtract(f.center_xyz, g.center_xyz))
            assert gap >= 1.5 * max(f.diameter_mm, g.diameter_mm) / 2
    for f in found:
        assert f.seriesuid == scan["seriesuid"]
        assert np.allclose(vol.geometry.world_to_index(f.center_xyz), f.center_irc, atol=1e-6)
        assert f.malignancy_prob is None or 0 <= f.malignancy_prob <= 1


def test_detect_goes_on_after_a_bad_scan(trained, tmp_path: Path) -> None:
    data, run, truth = trained
    good = [data / s["path"] for s in truth["scans"][:2]]
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = bad_dir / "broken.mhd"
    shutil.copy(good[0], bad)  # the header without its .raw
    before = _tree_hash(data)
    out = tmp_path / "out"
    rows = detect_files(load_model(run), [good[0], bad, good[1]], out, report=False)
    assert [("error" in r) for r in rows] == [False, True, False]
    assert "broken" in rows[1]["error"]
    with open(out / "nodules.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert set(table[0]) == set(NODULE_COLUMNS) if table else True
    assert {r["seriesuid"] for r in table} <= {s["seriesuid"] for s in truth["scans"][:2]}
    with open(out / "diagnosis.csv", newline="") as f:
        diag = list(csv.DictReader(f))
    assert tuple(diag[0]) == DIAGNOSIS_COLUMNS and len(diag) == 2
    assert _tree_hash(data) == before


def test_cli_detect_exit_codes(trained, tmp_path: Path) -> None:
    from medlens.cli.main import run as cli

    data, run, truth = trained
    bad = tmp_path / "broken.mhd"
    shutil.copy(data / truth["scans"][0]["path"], bad)
    assert cli(["ct", "detect", str(run), str(bad), "--out", str(tmp_path / "o1"), "--no-report"]) == 1
    assert cli(["ct", "detect", str(run), str(data / truth["scans"][0]["path"]), "--out", str(tmp_path / "o2")]) == 0
    assert (tmp_path / "o2" / "nodules.csv").is_file() and (tmp_path / "o2" / "report.html").is_file()
    assert cli(["ct", "detect", str(tmp_path / "nothing"), str(bad)]) == 1  # not a package


def test_diagnosis_is_the_highest_malignancy_among_reported_nodules() -> None:
    from medlens.ct.findings import Finding

    fs = [Finding("s", (0, 0, 0), (0, 0, 0), 6.0, 0.9, 0.2), Finding("s", (1, 1, 1), (1, 1, 1), 12.0, 0.6, 0.7),
          Finding("s", (2, 2, 2), (2, 2, 2), 20.0, 0.3, 0.99)]  # under the threshold: not counted
    d = diagnose(fs, nodule_threshold=0.5, seriesuid="s")
    assert d["nodules"] == 2 and d["malignancy_prob"] == 0.7 and d["largest_nodule_mm"] == 12.0
    assert d["diagnosis"].startswith("suspicious")
    assert diagnose(fs, nodule_threshold=0.95, seriesuid="s")["diagnosis"] == "no nodule found"


def test_a_candidate_with_nothing_denser_than_lung_at_its_centre_is_not_a_nodule(trained) -> None:
    """The lump gate (packages since 2026-12-03): a candidate in empty lung gets probability 0 and
    says why; a candidate on a nodule is not touched by it; packages written before keep no gate."""
    import dataclasses

    from scipy import ndimage

    from medlens.ct.detect import DetectParams
    from medlens.ct.findings import Finding
    from medlens.ct.scan import read_ct

    data, run, truth = trained
    det = Detector.from_package(load_model(run / "model"))
    assert det.params.require_lump
    scan = truth["scans"][0]
    vol = read_ct(data / scan["path"])
    lungs = det.lungs(vol)
    air = ndimage.maximum_filter(vol.array, size=9) < -700  # nothing above -700 HU within 4 voxels
    lung = lungs.full() & air
    lung[:4], lung[-4:] = False, False
    i, r, c = np.argwhere(lung)[len(np.argwhere(lung)) // 2]
    empty = Finding(scan["seriesuid"], tuple(vol.geometry.index_to_world(np.array([[i, r, c]], float))[0]),
                    (float(i), float(r), float(c)), 6.0, 0.5)
    nod = scan["nodules"][0]
    on_nodule = Finding(scan["seriesuid"], tuple(nod["center_xyz"]), tuple(nod["center_irc"]), nod["diameter_mm"], 0.5)
    det.params = dataclasses.replace(det.params, min_prob=0.0, suppress_within=0.0)
    gated, why = det._ranked(vol, [empty, on_nodule], np.full(2, 0.5))
    assert gated[0] == 0.0 and why[0].startswith("no lump")
    det.params = dataclasses.replace(det.params, require_lump=False)
    ungated, why2 = det._ranked(vol, [empty, on_nodule], np.full(2, 0.5))
    assert not why2[0].startswith("no lump") and gated[1] == ungated[1]
    d = det.params.to_dict()
    d.pop("require_lump")
    assert not DetectParams.from_dict(d).require_lump


def test_a_blob_finding_reports_the_measured_size_of_its_lump(trained) -> None:
    """A blob candidate's diameter is its detector scale; packages measure the lump instead
    (medlens.ct.sizing). A U-Net component keeps its own (it is measured already)."""
    import dataclasses

    from medlens.ct.findings import Finding
    from medlens.ct.scan import read_ct

    data, run, truth = trained
    det = Detector.from_package(load_model(run / "model"))
    assert det.params.measure_size
    det.params = dataclasses.replace(det.params, min_prob=0.0, suppress_within=0.0, require_lump=False,
                                     min_lung_air=0.0)
    scan = truth["scans"][0]
    nod = max(scan["nodules"], key=lambda n: n["diameter_mm"])
    vol = read_ct(data / scan["path"])
    blob = Finding(scan["seriesuid"], tuple(nod["center_xyz"]), tuple(nod["center_irc"]), 26.0, 0.5, voxels=0)
    unet = dataclasses.replace(blob, diameter_mm=26.0, voxels=50)
    by_voxels = {f.voxels: f.diameter_mm for f in det.score(vol, [blob, unet])}
    assert by_voxels[0] == pytest.approx(nod["diameter_mm"], rel=0.3) and by_voxels[50] == 26.0
    det.params = dataclasses.replace(det.params, measure_size=False)
    assert {f.diameter_mm for f in det.score(vol, [blob])} == {26.0}


def test_one_finding_per_lump_keeps_the_most_probable_of_each() -> None:
    from medlens.ct.findings import one_per_lump

    # 0: a 10 mm finding; 1: 6 mm from it, less probable (inside 1.5 × 5 mm): the same lump;
    # 2: 9 mm away (outside): kept; 3: a 20 mm finding, least probable, whose own radius reaches
    # finding 2 (the larger radius counts); 4: far away
    centres = np.array([[0.0, 0, 0], [6.0, 0, 0], [-9.0, 0, 0], [-20.0, 0, 0], [100.0, 0, 0]])
    diam = np.array([10.0, 10.0, 4.0, 20.0, 8.0])
    probs = np.array([0.9, 0.8, 0.7, 0.3, 0.5])
    assert one_per_lump(centres, diam, probs, within=1.5).tolist() == [0, 2, 4]
    assert one_per_lump(centres, diam, probs, within=1.0).tolist() == [0, 1, 2, 4, 3]  # 6 > 5 mm, 11 > 10 mm
    assert one_per_lump(centres, diam, probs, within=0.0).tolist() == [0, 1, 2, 4, 3]  # off: all, by probability
    assert one_per_lump(centres, diam, probs, within=1.5, limit=2).tolist() == [0, 2]  # the strongest two lumps
    assert one_per_lump(centres, diam, probs, within=0.0, limit=2).tolist() == [0, 1]
    assert one_per_lump(np.zeros((0, 3)), np.zeros(0), np.zeros(0), within=1.5).tolist() == []


def test_the_reading_budget_reports_the_most_probable_findings_and_bounds_false_positives() -> None:
    from medlens.ct.annotations import Nodule
    from medlens.ct.findings import Finding
    from medlens.ct.pipeline import operating_point, reported

    # one nodule at (0, 0, 0) ranked second among seven findings over the threshold, one under it
    probs = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.1]
    fs = [Finding("s", (40.0 * k, 0, 0), (0, 0, 0), 6.0, p, 0.5) for k, p in enumerate(probs)]
    fs[1].center_xyz = (0.0, 0.0, 0.0)
    fs[0].center_xyz = (400.0, 0.0, 0.0)
    ref = {"s": [Nodule("s", (0.0, 0.0, 0.0), 8.0)]}
    assert [f.nodule_prob for f in reported(fs, threshold=0.5, max_findings=4)] == [0.95, 0.9, 0.85, 0.8]
    assert len(reported(fs, threshold=0.5)) == 7 and reported(fs, threshold=0.99, max_findings=4) == []
    unbudgeted = operating_point({"s": fs}, ref, {}, threshold=0.5, max_findings=None)
    budget = operating_point({"s": fs}, ref, {}, threshold=0.5, max_findings=4)
    assert (unbudgeted["true_positives"], unbudgeted["false_positives"]) == (1, 6)
    assert (budget["true_positives"], budget["false_positives"]) == (1, 3) and budget["max_findings_per_scan"] == 4
    assert operating_point({"s": fs}, ref, {}, threshold=0.5, max_findings=1)["true_positives"] == 0
    assert diagnose(fs, nodule_threshold=0.5, seriesuid="s", max_findings=2)["nodules"] == 2


def test_evaluate_scores_every_scan_against_annotations(trained, tmp_path: Path) -> None:
    from medlens.cli.main import run as cli

    data, run, truth = trained
    out = tmp_path / "eval"
    assert cli(["ct", "evaluate", str(run), str(data), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    n_ref = sum(len(s["nodules"]) for s in truth["scans"])
    assert m["n_scans"] == 4 and m["froc"]["n_nodules"] == n_ref and 0 <= m["cpm"] <= 1
    assert m["operating_point"]["threshold"] == json.loads((run / "model" / "metadata.json").read_text())["threshold"]
    assert (out / "report.html").is_file() and len(m["diagnosis"]) == 4


def test_task_recognises_a_luna16_layout(trained, tmp_path: Path) -> None:
    from medlens.tasks import detect_task, get_task

    data, _, _ = trained
    assert get_task("ct").detect(data, None) and detect_task(data).name == "ct"
    (tmp_path / "annotations.csv").write_text("image,label\na.png,1\n")
    assert not get_task("ct").detect(tmp_path, None)


def test_calibrate_refits_the_threshold_on_some_local_scans_and_judges_it_on_the_others(trained, tmp_path) -> None:
    from medlens.ct.calibrate import calibrate_ct

    data, run, _ = trained
    before = _tree_hash(run / "model")
    pkg = load_model(run / "model")
    m = calibrate_ct(pkg, data, tmp_path / "cal", calibration_scans=2, target_fp_per_scan=1.0, seed=1)
    p = m["calibrated_from"]
    assert len(p["calibration_scans"]) == 2 and len(p["evaluation_scans"]) == 2
    assert not set(p["calibration_scans"]) & set(p["evaluation_scans"])
    assert m["calibration"]["after"]["fp_per_scan"] <= 1.0  # the rule holds where it was chosen
    new = load_model(tmp_path / "cal" / "model")
    det = Detector.from_package(new)
    assert det.params.nodule_threshold == pytest.approx(p["threshold"]["after"]) == new.metadata["threshold"]
    assert new.metadata["stages"]["nodule"]["threshold"] == pytest.approx(p["threshold"]["after"])
    assert det.ranker is not None and set(new.stage_names) == set(pkg.stage_names)
    assert new.metadata["calibrated_from"]["package"] == str(pkg.path)
    assert "Local recalibration" in (tmp_path / "cal" / "model" / "model_card.md").read_text()
    assert _tree_hash(run / "model") == before  # the original package is not touched
    assert Detector.from_package(pkg).params.max_findings == det.params.max_findings == 4  # the training default
    m2 = calibrate_ct(pkg, data, tmp_path / "cal2", calibration_scans=2, max_findings=1, seed=1)
    assert m2["calibrated_from"]["max_findings_per_scan"] == {"before": 4, "after": 1}
    assert Detector.from_package(load_model(tmp_path / "cal2" / "model")).params.max_findings == 1
    ev = m2["evaluation"]["after"]
    assert ev["true_positives"] + ev["false_positives"] <= ev["n_scans"]  # one finding per scan at most


def test_calibration_split_needs_a_scan_on_each_side() -> None:
    from medlens.ct.calibrate import split_scans_for_calibration
    from medlens.errors import BadInputError, ConfigError

    cal, ev = split_scans_for_calibration(["a", "b", "c", "d", "e"], None, 0)
    assert len(cal) == 2 and len(ev) == 3 and sorted(cal + ev) == ["a", "b", "c", "d", "e"]
    assert split_scans_for_calibration(["a", "b", "c"], 1, 5) == split_scans_for_calibration(["c", "b", "a"], 1, 5)
    with pytest.raises(BadInputError, match="at least 2"):
        split_scans_for_calibration(["a"], None, 0)
    with pytest.raises(ConfigError, match="--calibration-scans"):
        split_scans_for_calibration(["a", "b"], 2, 0)


def test_the_candidate_recall_example_counts_every_reference_nodule(trained, capsys) -> None:
    """examples/ct_candidate_recall.py: each reference nodule counted once, by size and (phantoms)
    by kind; the large nodule the trained generator finds is among the recalled; the data is only read."""
    import importlib.util
    import re

    data, run, truth = trained
    path = Path(__file__).resolve().parents[2] / "examples" / "ct_candidate_recall.py"
    spec = importlib.util.spec_from_file_location("ct_candidate_recall", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    before = _tree_hash(data)
    assert mod.main(str(run / "model"), [str(data)]) == 0
    out = capsys.readouterr().out
    n_nodules = sum(len(s["nodules"]) for s in truth["scans"])
    found, total = map(int, re.search(r"candidate recall: (\d+) of (\d+)", out).groups())
    assert total == n_nodules and 1 <= found <= total
    by_size = [tuple(map(int, m)) for m in re.findall(r"\d+-\d+ mm: (\d+) of (\d+)", out)]
    by_kind = [tuple(map(int, m)) for m in re.findall(r"(?:solid|part_solid|ground_glass): (\d+) of (\d+)", out)]
    for rows in (by_size, by_kind):
        assert sum(t for _, t in rows) == total and sum(f for f, _ in rows) == found
    assert _tree_hash(data) == before
