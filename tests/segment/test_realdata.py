"""The real LGG brain-MRI slices (../shared/data/lgg_brain_mri); skipped when absent.

The quick test checks layout, patients, slice order and masks on real files. The long
test (``MEDLENS_LONG_TESTS=1``) trains on 4 patients and tests on one never seen.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

LGG = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "lgg_brain_mri"

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def lgg() -> Path:
    if not LGG.is_dir():
        pytest.skip(f"real LGG data {LGG} not found")
    return LGG.resolve()


def test_lgg_indexes_as_kaggle_3m_with_binary_masks(lgg):
    from medlens.segment.data import build_slices
    from medlens.segment.layouts import detect_segmentation_layout, load_segmentation_dataset

    assert detect_segmentation_layout(lgg) == "kaggle_3m"
    ix = load_segmentation_dataset(lgg)
    # counts of ../shared/data/lgg_brain_mri as its README states them (20 patients, 603 slices)
    assert len(ix) == 603 and not ix.problems
    patients = {r.patient for r in ix.records}
    assert len(patients) == 20
    assert len({p.split("_")[1] for p in patients}) == 5  # institutions
    one = [r.meta["slice"] for r in ix.records if r.patient == "TCGA_CS_4942_19970222"]
    assert one == list(range(1, 21))
    sub = ix.subset([r for r in ix.records if r.patient == "TCGA_CS_4942_19970222"])
    s = build_slices(sub, size=64)
    assert s.images.shape == (20, 3, 64, 64) and int(s.positive.sum()) == 6
    assert not s.problems


@pytest.mark.skipif(os.environ.get("MEDLENS_LONG_TESTS") != "1", reason="set MEDLENS_LONG_TESTS=1 (about 10-25 min on 2 CPU cores)")
def test_lgg_unseen_patient_dice(lgg, tmp_path):
    from medlens.segment.config import SegmentConfig
    from medlens.segment.workflow import train_segmentation
    from medlens.train.config import TrainConfig

    cfg = SegmentConfig(data=str(lgg), size=128, model="unet",
                        test_patients=["TCGA_CS_4941_19960909"], val_patients=["TCGA_HT_7602_19951103"],
                        train=TrainConfig(epochs=50, batch_size=16, lr=3e-3, patience=20, progress=False))
    m = train_segmentation(cfg, tmp_path / "run")
    assert m["mean_dice"] >= 0.6, m["per_patient"]
    assert np.isfinite(m["mean_iou"])
