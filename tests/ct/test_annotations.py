"""Reference nodules: LUNA16 CSVs (bad rows named), rows outside the scan reported, LIDC XML
reads clustered into nodules with readers, ratings and diameter, LUNA16's reference rule."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from medlens.ct.annotations import (
    Candidate,
    Nodule,
    check_inside,
    read_lidc_xml,
    read_luna16_annotations,
    read_luna16_candidates,
    reference_standard,
)
from medlens.ct.scan import read_ct
from medlens.data.synthetic.chest_ct import make_chest_ct_like, read_truth
from medlens.errors import BadInputError


@pytest.fixture(scope="module")
def luna(tmp_path_factory) -> Path:
    return make_chest_ct_like(tmp_path_factory.mktemp("luna"), n_scans=2, shape=(12, 48, 48), seed=4)


@pytest.fixture(scope="module")
def dicom_volume(tmp_path_factory):
    root = make_chest_ct_like(tmp_path_factory.mktemp("dicom"), n_scans=1, shape=(12, 64, 64), seed=5,
                              fmt="dicom")
    return read_ct(root / read_truth(root)["scans"][0]["path"])


def test_luna16_annotations_match_truth_with_and_without_malignancy(luna, tmp_path):
    truth = read_truth(luna)["scans"]
    got = read_luna16_annotations(luna / "annotations.csv")
    assert set(got) == {s["seriesuid"] for s in truth}
    for s in truth:
        nods = got[s["seriesuid"]]
        assert [n.center_xyz for n in nods] == [tuple(n["center_xyz"]) for n in s["nodules"]]
        assert [n.diameter_mm for n in nods] == [n["diameter_mm"] for n in s["nodules"]]
        assert [n.malignant for n in nods] == [n["malignant"] for n in s["nodules"]]
        assert all(n.source.startswith("annotations.csv:row ") for n in nods)
    # the real LUNA16 file has no malignancy column, and excluded files use -1 diameters
    plain = tmp_path / "annotations.csv"
    plain.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3,-10.5,20,-300.25,5.5\n1.2.3,0,0,0,-1\n")
    nods = read_luna16_annotations(plain)["1.2.3"]
    assert nods[0] == Nodule("1.2.3", (-10.5, 20.0, -300.25), 5.5, source="annotations.csv:row 2")
    assert nods[0].malignant is None and nods[1].diameter_mm == 0.0


@pytest.mark.parametrize("body,match", [
    ("1.2.3,1,2,3,4\n1.2.3,1,abc,3,4\n", r"row 3: coordY is 'abc', not a number"),
    ("1.2.3,1,2,nan,4\n", r"row 2: coordZ is 'nan'"),
    ("1.2.3,1,2,3,-4\n", r"row 2: diameter_mm is -4"),
    (",1,2,3,4\n", r"row 2: empty seriesuid"),
])
def test_bad_annotation_rows_are_named(tmp_path, body, match):
    p = tmp_path / "annotations.csv"
    p.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n" + body)
    before = p.read_bytes()
    with pytest.raises(BadInputError, match=match):
        read_luna16_annotations(p)
    assert p.read_bytes() == before


def test_missing_columns_and_candidates(luna, tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("seriesuid,x,y,z,diameter_mm\n1,2,3,4,5\n")
    with pytest.raises(BadInputError, match="missing column.*coordX.*the file has seriesuid, x, y, z"):
        read_luna16_annotations(p)
    cands = read_luna16_candidates(luna / "candidates.csv")
    for s in read_truth(luna)["scans"]:
        c = cands[s["seriesuid"]]
        assert all(isinstance(x, Candidate) for x in c)
        assert sorted(x.center_xyz for x in c if x.label == 1) == sorted(tuple(n["center_xyz"]) for n in s["nodules"])
        assert sum(x.label == 0 for x in c) >= 10
    p.write_text("seriesuid,coordX,coordY,coordZ,class\n1,2,3,4,2\n")
    with pytest.raises(BadInputError, match="row 2: class is '2'; it must be 0 or 1"):
        read_luna16_candidates(p)


def test_annotation_outside_the_volume_is_reported(luna, tmp_path):
    scan = read_truth(luna)["scans"][0]
    vol = read_ct(luna / scan["path"])
    text = (luna / "annotations.csv").read_text().splitlines()
    # move the first row of this scan 500 mm up (outside), keep the others
    k = next(i for i, line in enumerate(text) if line.startswith(scan["seriesuid"]))
    cells = text[k].split(",")
    cells[3] = str(float(cells[3]) + 500)
    text[k] = ",".join(cells)
    p = tmp_path / "annotations.csv"
    p.write_text("\n".join(text) + "\n")
    nods = read_luna16_annotations(p)
    probs = check_inside(nods[scan["seriesuid"]], vol)
    assert len(probs) == 1 and probs[0].startswith(f"annotations.csv:row {k + 1}: ") and "outside scan" in probs[0]
    assert check_inside(read_luna16_annotations(luna / "annotations.csv")[scan["seriesuid"]], vol) == []
    other = [n for uid, ns in nods.items() if uid != scan["seriesuid"] for n in ns]
    assert all("is not this scan's" in m for m in check_inside(other, vol))
    cand = read_luna16_candidates(luna / "candidates.csv")[scan["seriesuid"]]
    assert check_inside(cand, vol) == []  # every candidate the generator writes lies in its scan


def test_malignant_rule():
    n = Nodule("s", (0.0, 0.0, 0.0), 8.0)
    assert n.malignant is None
    assert dataclasses.replace(n, ratings=(4, 5, 1, 1)).malignant is True  # two readers ≥ 4, median 2.5
    assert dataclasses.replace(n, ratings=(4, 3, 3, 3)).malignant is False
    assert dataclasses.replace(n, malignancy=4.0).malignant is True
    assert dataclasses.replace(n, malignancy=3.5).malignant is False


# -- LIDC XML ---------------------------------------------------------------------------------
def _roi(z: float, sop: str, points: list[tuple[int, int]]) -> str:
    edges = "".join(f"<edgeMap><xCoord>{c}</xCoord><yCoord>{r}</yCoord></edgeMap>" for r, c in points)
    return (f"<roi><imageZposition>{z:.6f} </imageZposition><imageSOP_UID>{sop}</imageSOP_UID>"
            f"<inclusion>TRUE</inclusion>{edges}</roi>")


def _circle(r0: int, c0: int, radius: int) -> list[tuple[int, int]]:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    pts = np.rint(np.stack([r0 + radius * np.sin(t), c0 + radius * np.cos(t)], 1)).astype(int)
    return [tuple(p) for p in dict.fromkeys(map(tuple, pts.tolist()))]


def _nodule(nid: str, rois: str, malignancy: int | None) -> str:
    chars = f"<characteristics><malignancy>{malignancy}</malignancy></characteristics>" if malignancy else ""
    return f"<unblindedReadNodule><noduleID>{nid}</noduleID>{chars}{rois}</unblindedReadNodule>"


def _lidc_xml(vol, sessions: list[str], series_uid: str | None = None) -> str:
    uid = series_uid or vol.meta["seriesuid"]
    body = "".join(f"<readingSession><servicingRadiologistID>{k}</servicingRadiologistID>{s}</readingSession>"
                   for k, s in enumerate(sessions))
    return ('<?xml version="1.0" encoding="UTF-8"?><LidcReadMessage xmlns="http://www.nih.gov">'
            f"<ResponseHeader><SeriesInstanceUid>{uid}</SeriesInstanceUid></ResponseHeader>{body}</LidcReadMessage>")


def _slice(vol, k):
    return float(vol.geometry.index_to_world([k, 0, 0])[2]), vol.meta["sop_uids"][k]


@pytest.fixture()
def lidc_case(dicom_volume, tmp_path):
    """Nodule A (slices 5–7, centre row 30 col 20, radius 5 px) outlined by readers 0, 1, 2
    rated 4, 5, 2, and marked as a < 3 mm point by reader 3; nodule B outlined by readers 0
    and 1 only; a single point by reader 2 far away; a nonNodule (ignored)."""
    v = dicom_volume
    a = "".join(_roi(*_slice(v, k), _circle(30, 20, 5)) for k in (5, 6, 7))
    a2 = "".join(_roi(*_slice(v, k), _circle(31, 20, 6)) for k in (5, 6, 7))  # a bit larger, shifted
    b = "".join(_roi(*_slice(v, k), _circle(40, 48, 3)) for k in (2, 3))
    point_a = _roi(*_slice(v, 6), [(30, 21)])
    point_far = _roi(*_slice(v, 9), [(10, 55)])
    non = f"<nonNodule><nonNoduleID>x</nonNoduleID><imageZposition>{_slice(v, 1)[0]}</imageZposition>" \
          f"<imageSOP_UID>{_slice(v, 1)[1]}</imageSOP_UID><locus><xCoord>5</xCoord><yCoord>5</yCoord></locus></nonNodule>"
    sessions = [_nodule("A0", a, 4) + _nodule("B0", b, 1) + non,
                _nodule("A1", a2, 5) + _nodule("B1", b, 2),
                _nodule("A2", a, 2) + _nodule("P2", point_far, None),
                _nodule("A3", point_a, None)]
    p = tmp_path / "read.xml"
    p.write_text(_lidc_xml(v, sessions))
    return v, p


def test_lidc_xml_readers_clustered_into_nodules(lidc_case):
    vol, xml = lidc_case
    before = hashlib.sha256(xml.read_bytes()).hexdigest()
    nods = read_lidc_xml(xml, vol)
    assert [n.n_readers for n in nods] == [4, 2, 1]
    a, b, p = nods
    assert a.ratings == (4, 5, 2) and a.malignancy == 4.0 and a.malignant is True
    assert sum(d == 0 for d in a.reader_diameters) == 1  # reader 3's point mark
    np.testing.assert_allclose(a.center_xyz, vol.geometry.index_to_world([6, 30.3, 20]), atol=0.8)
    # equivalent-sphere diameter of ~3 slices × a disc of radius 5–6 px (plus its edge)
    sx, sy, sz = vol.geometry.spacing
    lo = np.cbrt(6 * 3 * np.pi * 5**2 * sx * sy * sz / np.pi)
    hi = np.cbrt(6 * 3 * np.pi * 7**2 * sx * sy * sz / np.pi)
    assert lo < a.diameter_mm < hi
    assert b.ratings == (1, 2) and b.malignant is False
    np.testing.assert_allclose(b.center_xyz, vol.geometry.index_to_world([2.5, 40, 48]), atol=0.8)
    assert p.diameter_mm == 0.0 and p.malignancy is None and p.malignant is None
    np.testing.assert_allclose(p.center_xyz, vol.geometry.index_to_world([9, 10, 55]), atol=1e-6)
    assert all(n.seriesuid == vol.meta["seriesuid"] and n.source == "read.xml" for n in nods)
    # LUNA16: ≥ 3 readers outlining it (point marks do not count), ≥ 3 mm
    assert reference_standard(nods) == [a]
    assert reference_standard(nods, min_readers=2) == [a, b]
    assert reference_standard(nods, min_readers=2, min_diameter_mm=a.diameter_mm + 1) == []
    assert hashlib.sha256(xml.read_bytes()).hexdigest() == before


def test_lidc_xml_slices_found_by_z_without_sop_uids(lidc_case):
    vol, xml = lidc_case
    bare = dataclasses.replace(vol, meta={k: v for k, v in vol.meta.items() if k != "sop_uids"})
    assert read_lidc_xml(xml, bare) == read_lidc_xml(xml, vol)


def test_lidc_xml_errors(lidc_case, tmp_path):
    vol, xml = lidc_case
    wrong = tmp_path / "other.xml"
    wrong.write_text(_lidc_xml(vol, ["<unblindedReadNodule/>"], series_uid="9.9.9"))
    with pytest.raises(BadInputError, match=r"other\.xml: describes series 9\.9\.9"):
        read_lidc_xml(wrong, vol)
    off = tmp_path / "off.xml"
    off.write_text(_lidc_xml(vol, [_nodule("Z9", _roi(999.0, "1.2.3.4", [(3, 3), (3, 4), (4, 4)]), 3)]))
    with pytest.raises(BadInputError, match=r"off\.xml: nodule 'Z9': outline on slice z=999"):
        read_lidc_xml(off, vol)
    broken = tmp_path / "broken.xml"
    broken.write_text("<LidcReadMessage><readingSession>")
    with pytest.raises(BadInputError, match=r"broken\.xml: not a readable XML"):
        read_lidc_xml(broken, vol)


@pytest.mark.realdata
def test_real_lidc_idri_0001_read(shared_data):
    """The four radiologists marked 4, 1, 4 and 4 nodules; the large one (rated 5, 5, 5, 4)
    is the only one LUNA16's rule keeps; the others are < 3 mm point marks."""
    xmls = sorted((shared_data / "lidc_lung_ct").glob("LIDC-IDRI-0001/*/*/*.xml"))
    if not xmls:
        pytest.skip("LIDC-IDRI-0001 XML not in the shared data")
    from medlens.ct.annotations import read_lidc_marks

    vol = read_ct(xmls[0].parent)
    marks = read_lidc_marks(xmls[0], vol)
    assert sorted(np.bincount([m.reader for m in marks]).tolist()) == [1, 4, 4, 4]
    nods = read_lidc_xml(xmls[0], vol)
    big = nods[0]
    assert big.n_readers == 4 and sorted(big.ratings) == [4, 5, 5, 5] and big.malignancy == 5.0
    assert big.malignant is True and 20 < big.diameter_mm < 30
    assert check_inside([big], vol) == []
    assert reference_standard(nods) == [big]
    small = nods[1:]
    assert len(small) == 3 and all(n.diameter_mm == 0 and n.n_readers == 3 for n in small)
