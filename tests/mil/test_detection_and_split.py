"""The patient task is chosen for patient-labelled data only; splits never share a patient."""

from __future__ import annotations

from pathlib import Path

from medlens.data.layouts import load_dataset
from medlens.data.synthetic.histology import make_idc_like
from medlens.mil.config import PatientConfig
from medlens.mil.patients import split_patients
from medlens.tasks import detect_task


def test_patient_data_is_detected_and_idc_is_not(aplaml: Path, tmp_path: Path) -> None:
    assert detect_task(aplaml).name == "patient"
    idc = make_idc_like(tmp_path / "idc", patients=2, patches_per_patient=6, seed=0)
    assert detect_task(idc).name == "classify"  # patients, but labels per image
    assert detect_task(idc, "idc").name == "classify"
    assert detect_task(aplaml, "aplaml").name == "patient"


def test_split_is_grouped_by_patient(aplaml: Path) -> None:
    ix = load_dataset(aplaml)
    s = split_patients(ix, PatientConfig(data=str(aplaml), val_fraction=0.25, test_fraction=0.25))
    sets = [set(v) for v in s.values()]
    assert all(sets) and sum(map(len, sets)) == 8 and not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
