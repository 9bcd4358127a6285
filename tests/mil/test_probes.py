"""Bias probes on a patient-level (bag) model: per-cell effects on the patient score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def run(aplaml: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medlens.cli.main import get_app

    out = tmp_path_factory.mktemp("milprobe") / "run"
    res = CliRunner().invoke(get_app(), ["train", str(aplaml), "--out", str(out), "--model", "test_cnn",
                                         "--size", "32", "--epochs", "1", "--device", "cpu",
                                         "--val-fraction", "0.25", "--test-fraction", "0.25"])
    assert res.exit_code == 0, res.output
    return out


class RegionMean(nn.Module):
    """Stand-in cell encoder: the grey level of one region of the cell picture (undoing the
    package's normalisation), so the patient score depends on that region only."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], region: str) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        img = (x * self.std + self.mean).mean(1)  # (n, S, S) grey in [0, 1]
        s = img.shape[-1]
        if self.region == "background":  # the four 3×3 corners
            parts = [img[:, :3, :3], img[:, :3, -3:], img[:, -3:, :3], img[:, -3:, -3:]]
            return torch.stack([p.mean((1, 2)) for p in parts], 1).mean(1, keepdim=True)
        c = s // 2
        return img[:, c - 3:c + 3, c - 3:c + 3].mean((1, 2))[:, None]


def crafted_predictor(pkg, bags, region: str):
    """A patient predictor whose disease score is a steep sigmoid of the mean region grey of
    the bag's cells, centred on the patients at hand."""
    from medlens.mil.model import MILNet
    from medlens.mil.predict import PatientPredictor

    base = PatientPredictor(pkg)
    enc = RegionMean(base.cell_input.mean, base.cell_input.std, region)
    net = MILNet(enc, len(pkg.classes), embed_dim=1, pooling="mean", dropout=0.0).eval()
    with torch.no_grad():
        f = torch.stack([enc(_norm(base, b.cells)).mean() for b in bags])
        w = net.head.classifier.weight
        w.zero_()
        net.head.classifier.bias.zero_()
        a = 10.0 / max(float(f.std()), 0.02)
        for k in range(len(pkg.classes)):
            if k != pkg.negative_class:
                w[k, 0] = a
                net.head.classifier.bias[k] = -a * float(f.median())
    return PatientPredictor(pkg, model=net)


def _norm(pred, cells: np.ndarray) -> torch.Tensor:
    mean = torch.tensor(pred.cell_input.mean).view(1, -1, 1, 1)
    std = torch.tensor(pred.cell_input.std).view(1, -1, 1, 1)
    return (torch.from_numpy(cells) - mean) / std


def test_probe_cli_writes_per_patient_effects(run: Path, aplaml: Path, tmp_path: Path) -> None:
    from medlens.cli.main import get_app

    out = tmp_path / "probes"
    res = CliRunner().invoke(get_app(), ["probe", str(run), str(aplaml), "--out", str(out),
                                         "-p", "replace-background", "-p", "hide-cell"],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Bias probes on 2 patients, 16 cells" in res.output and "one cell: mean / max" in res.output
    r = json.loads((out / "probes.json").read_text())
    test_patients = json.loads((run / "metrics.json").read_text())["patient_ids"]
    assert r["n_patients"] == len(test_patients) == 2 and r["grouped_by"] == "diagnosis"
    for name in ("replace-background", "hide-cell"):
        e = r["probes"][name]
        assert {p["patient"] for p in e["per_patient"]} == set(test_patients)
        for p in e["per_patient"]:
            assert len(p["per_cell_dscore"]) == p["cells"] == 8
            assert p["per_cell_max_abs_dscore"] == pytest.approx(max(abs(v) for v in p["per_cell_dscore"]))
            assert p["dscore"] == pytest.approx(p["score_after"] - p["score_before"])
        assert e["max_abs_dscore"] >= e["mean_abs_dprob"] >= 0
        assert 0 <= e["flips"] <= 2 and e["per_cell"]["max_abs_dscore"] >= e["per_cell"]["mean_abs_dscore"]
        assert all(Path(ex["image"]).is_file() for ex in e["examples"])
    html = (out / "probes.html").read_text()
    assert "Per patient" in html and "one cell: max |Δ score|" in html and "data:image/png;base64" in html
    from medlens.explain.files import probe_files  # the Python API takes the same route as the CLI

    api = probe_files(str(run), aplaml, out_dir=tmp_path / "api", probes=["hide-cell"])
    assert api["n_patients"] == 2 and list(api["probes"]) == ["hide-cell"]


def smear_bags(n_patients: int = 6, n_cells: int = 5, size: int = 32) -> list:
    """Hand-made bags: per patient one background grey and one cell grey; every cell a dark
    disc in the middle of the picture (so Otsu's foreground is exactly the disc)."""
    from medlens.explain.bag_probes import ProbeBag

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= 7 ** 2
    bags = []
    for i in range(n_patients):
        bg, cell = rng.uniform(0.7, 0.95), rng.uniform(0.1, 0.4)
        cells = np.full((n_cells, 3, size, size), bg, np.float32)
        cells[:, :, disc] = cell + rng.uniform(-0.02, 0.02, (n_cells, 1, 1))
        bags.append(ProbeBag(patient=f"P{i}", cells=cells, paths=[f"P{i}/cell{j}.jpg" for j in range(n_cells)],
                             label=i % 2))
    return bags


@pytest.mark.parametrize("region, big, small", [("background", "replace-background", "hide-cell"),
                                                ("centre", "hide-cell", "replace-background")])
def test_crafted_models_show_their_shortcut(run: Path, aplaml: Path, region: str, big: str, small: str) -> None:
    from medlens.explain.bag_probes import bag_probe_target, probe_bags
    from medlens.package import load_model

    pkg = load_model(run)
    assert bag_probe_target(pkg) is pkg.predictor  # the patient task's predictor is the hook
    real, _ = pkg.predictor.probe_bags(aplaml, split="all")
    assert len(real) == 8 and all(b.cells.shape[1:] == (3, 32, 32) and b.cells.max() <= 1 for b in real)
    bags = smear_bags()
    pred = crafted_predictor(pkg, bags, region)
    r = probe_bags(pred, bags, probes=[big, small])
    hit, miss = r["probes"][big], r["probes"][small]
    assert r["n_patients"] == 6 and len(hit["per_patient"]) == 6
    assert hit["mean_abs_dprob"] > 0.2 and hit["mean_abs_dprob"] > 10 * miss["mean_abs_dprob"]
    assert hit["flips"] >= 2 and miss["flips"] == 0
    assert hit["per_cell"]["max_abs_dscore"] > 0.05 and hit["per_cell"]["max_abs_dscore"] > 10 * miss["per_cell"][
        "max_abs_dscore"]
