"""The CT report and ``nodules.csv``: files exist, findings are named, marker colours are
right for a known true positive / false positive / missed nodule, empty scans render."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlens.ct.findings import NODULE_COLUMNS, Finding
from medlens.ct.froc import evaluate_froc
from medlens.ct.outputs import read_nodules_csv, write_nodules_csv
from medlens.ct.report import COLOURS, write_ct_report
from medlens.errors import BadInputError
from medlens.io.geometry import Geometry
from medlens.io.volumes import Volume


@dataclass(frozen=True)
class Nod:
    """Stand-in with the fields of ``medlens.ct.annotations.Nodule`` the report reads."""

    seriesuid: str
    center_xyz: tuple[float, float, float]
    diameter_mm: float


GEOM = Geometry((0.8, 0.8, 2.5), (-25.0, -30.0, -100.0))


def chest(uid: str, spheres: list[tuple[tuple[int, int, int], float]]) -> Volume:
    """A tiny chest-like HU volume (D, H, W) = (16, 64, 64): body, two lungs, solid spheres."""
    d, h, w = 16, 64, 64
    _, rr, cc = np.mgrid[0:d, 0:h, 0:w]
    hu = np.full((d, h, w), -1000.0, np.float32)
    hu[((rr - 32) / 30) ** 2 + ((cc - 32) / 30) ** 2 <= 1] = 30.0
    for c0 in (18, 46):
        hu[((rr - 32) / 22) ** 2 + ((cc - c0) / 11) ** 2 <= 1] = -850.0
    ii = np.arange(d)[:, None, None]
    sp = GEOM.array_spacing
    for (i, r, c), dia in spheres:
        dist = np.sqrt(((ii - i) * sp[0]) ** 2 + ((rr - r) * sp[1]) ** 2 + ((cc - c) * sp[2]) ** 2)
        hu[dist <= dia / 2] = 40.0
    return Volume(hu, GEOM, path=f"{uid}.mhd", meta={"seriesuid": uid})


def xyz(irc: tuple[float, float, float]) -> tuple[float, float, float]:
    return tuple(float(v) for v in GEOM.index_to_world(np.asarray(irc, float)))


def finding(uid: str, irc: tuple[float, float, float], p: float, mal: float | None = 0.3) -> Finding:
    return Finding(uid, xyz(irc), irc, 6.0, p, mal)


def colour_count(png: Path, rgb: tuple[int, int, int]) -> int:
    a = np.asarray(Image.open(png).convert("RGB"))
    return int(np.all(a == np.asarray(rgb, np.uint8), axis=-1).sum())


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("ctreport")
    tp_irc, miss_irc, fp_irc = (8.0, 30.0, 18.0), (6.0, 36.0, 46.0), (10.0, 20.0, 44.0)
    vol_a = chest("1.2.840.A", [(tuple(map(int, tp_irc)), 6.0), (tuple(map(int, miss_irc)), 8.0)])
    ref_a = [Nod("1.2.840.A", xyz(tp_irc), 6.0), Nod("1.2.840.A", xyz(miss_irc), 8.0)]
    finds_a = [finding("1.2.840.A", (8.2, 30.4, 18.3), 0.91), finding("1.2.840.A", fp_irc, 0.55, None)]
    vol_b = chest("1.2.840.B", [((8, 30, 18), 7.0)])
    ref_b = [Nod("1.2.840.B", xyz((8.0, 30.0, 18.0)), 7.0)]
    vol_c = chest("1.2.840.C", [((8, 32, 18), 5.0)])
    finds_c = [finding("1.2.840.C", (8.0, 32.0, 18.0), 0.7)]
    froc = evaluate_froc([*finds_a], {"1.2.840.A": ref_a, "1.2.840.B": ref_b})
    card = "# Model card\n\nTrained on phantoms. <script>alert(1)</script>"
    html = write_ct_report(out, [(vol_a, finds_a, ref_a), (vol_b, [], ref_b), (vol_c, finds_c, None)],
                           froc, card)
    return out, html


def test_report_files_exist_and_name_every_finding(report):
    out, html = report
    assert html == out / "report.html"
    for rel in ("froc.png", "scans/1.2.840.A/mip.png", "scans/1.2.840.A/F1_tp.png",
                "scans/1.2.840.A/F2_fp.png", "scans/1.2.840.A/R2_missed.png",
                "scans/1.2.840.B/mip.png", "scans/1.2.840.B/R1_missed.png",
                "scans/1.2.840.C/F1_finding.png"):
        assert (out / rel).is_file() and (out / rel).stat().st_size > 500, rel
    text = html.read_text()
    for name in ("1.2.840.A", "1.2.840.B", "1.2.840.C", "F1 true positive", "F2 false positive",
                 "R2 missed", "F1 finding (no reference)", "CPM", "No findings in this scan"):
        assert name in text, name
    # summary: 3 reference nodules, 1 found (A's R1), 2 missed (A's R2, B's R1)
    assert 'reference nodules found</th><td class="n">1</td>' in text
    assert 'missed nodules</th><td class="n">2</td>' in text
    assert "<script>alert" not in text and "Trained on phantoms" in text  # card rendered, escaped
    assert not list(out.rglob(".*tmp"))  # atomic writes left nothing behind


def test_crop_colours_for_known_tp_fp_missed(report):
    out, _ = report
    scan = out / "scans" / "1.2.840.A"
    expect = {"F1_tp.png": "tp", "F2_fp.png": "fp", "R2_missed.png": "missed"}
    for name, status in expect.items():
        counts = {k: colour_count(scan / name, rgb) for k, rgb in COLOURS.items()}
        assert counts[status] > 100, (name, counts)
        assert all(v == 0 for k, v in counts.items() if k != status), (name, counts)
    # the ring is centred on the finding: the crop is centred there
    a = np.asarray(Image.open(scan / "F1_tp.png").convert("RGB"))
    ys, xs = np.nonzero(np.all(a == COLOURS["tp"], axis=-1))
    assert abs(ys.mean() - a.shape[0] / 2) < 6 and abs(xs.mean() - a.shape[1] / 2) < 6
    # the missed nodule (8 mm, +40 HU) is inside its orange ring: bright centre pixels
    m = np.asarray(Image.open(scan / "R2_missed.png").convert("L"))
    c = m.shape[0] // 2
    assert m[c - 3:c + 4, c - 3:c + 4].mean() > 200


def test_report_of_a_scan_without_findings_or_evaluation(tmp_path):
    html = write_ct_report(tmp_path / "r", [(chest("only", []), [], None)], None, None)
    text = html.read_text()
    assert "No findings in this scan" in text and "No model card was given" in text
    assert "FROC" not in text and not (tmp_path / "r" / "froc.png").exists()
    assert (tmp_path / "r" / "scans" / "only" / "mip.png").is_file()


def test_nodules_csv_round_trip_and_empty_file(tmp_path):
    fs = [finding("s1", (1.5, 2.25, 3.125), 0.8125, 0.1), finding("s2", (4.0, 5.0, 6.0), 0.5, None)]
    p = write_nodules_csv(fs, tmp_path / "out" / "nodules.csv")
    assert p.read_text().splitlines()[0] == ",".join(NODULE_COLUMNS)
    back = read_nodules_csv(p)
    assert back == fs and back[1].malignancy_prob is None
    empty = write_nodules_csv([], tmp_path / "empty.csv")
    assert empty.read_text() == ",".join(NODULE_COLUMNS) + "\n" and read_nodules_csv(empty) == []
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == ["nodules.csv"]


def test_bad_nodules_csv_names_the_row(tmp_path):
    p = write_nodules_csv([finding("s1", (1.0, 2.0, 3.0), 0.8)], tmp_path / "n.csv")
    p.write_text(p.read_text() + "s2,1,2,x,0,0,0,5,0.5,\n")
    with pytest.raises(BadInputError, match=r"n\.csv, row 3"):
        read_nodules_csv(p)
    (tmp_path / "bad.csv").write_text("seriesuid,coordX\ns,1\n")
    with pytest.raises(BadInputError, match="missing column"):
        read_nodules_csv(tmp_path / "bad.csv")
