"""Post-processing is chosen on validation patients and applied wherever masks are made."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medlens.segment.config import SegmentConfig
from medlens.segment.postprocess import (
    apply_postprocess,
    choose_postprocess,
    count_components,
    keep_largest_component,
    postprocess_probs,
)
from medlens.segment.workflow import train_segmentation
from medlens.train.config import TrainConfig


def _lesion_with_islands(islands: bool) -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((4, 32, 32), bool)
    truth[1:3, 10:20, 10:20] = True
    prob = np.where(truth, 0.9, 0.1).astype(np.float32)
    if islands:
        prob[0, 0:2, 0:2] = prob[3, 28:30, 28:30] = 0.8  # false-positive specks
    return prob, truth


def test_largest_component_keeps_the_biggest_3d_blob():
    m = np.zeros((3, 10, 10), bool)
    m[0:3, 0:4, 0:4] = True  # 48 voxels across slices: one 3D component
    m[1, 8:10, 8:10] = True  # 4 voxels
    out = keep_largest_component(m)
    assert out.sum() == 48 and not out[1, 8:10, 8:10].any()
    assert not keep_largest_component(np.zeros((2, 4, 4), bool)).any()
    assert np.array_equal(apply_postprocess(m, "none"), m)


def test_auto_keeps_rule_only_when_validation_dice_rises():
    noisy = [_lesion_with_islands(True), _lesion_with_islands(True)]
    rule, scores = choose_postprocess(noisy, threshold=0.5)
    assert rule == "largest_component" and scores["largest_component"] > scores["none"]
    # a second real lesion: dropping it would cost Dice, so nothing is removed
    prob, truth = _lesion_with_islands(False)
    truth[0, 0:4, 0:4] = True
    prob[0, 0:4, 0:4] = 0.9
    rule, scores = choose_postprocess([(prob, truth)], threshold=0.5)
    assert rule == "none" and scores["none"] > scores["largest_component"]


def test_tie_on_validation_is_settled_by_the_training_lesion_count():
    clean = [_lesion_with_islands(False)]  # one blob predicted: both rules score the same
    assert choose_postprocess(clean, threshold=0.5, single_lesion=True)[0] == "largest_component"
    assert choose_postprocess(clean, threshold=0.5, single_lesion=False)[0] == "none"
    two = np.zeros((3, 8, 8), bool)
    two[0, :2, :2] = two[2, 5:, 5:] = True
    assert count_components(two) == 2 and count_components(np.zeros((2, 2), bool)) == 0


def test_postprocess_probs_zeroes_only_removed_voxels():
    prob, _ = _lesion_with_islands(True)
    out = postprocess_probs(prob, 0.5, "largest_component")
    assert out[0, 0, 0] == 0 and out[3, 28, 28] == 0
    assert np.array_equal(out[1:3], prob[1:3]) and out[0, 5, 5] == prob[0, 5, 5]
    assert postprocess_probs(prob, 0.5, "none") is prob


def test_training_records_the_choice_in_metrics_and_package(kaggle_set, tmp_path):
    cfg = SegmentConfig(data=str(kaggle_set), layout="kaggle_3m", size=32, model="test_unet",
                        train=TrainConfig(epochs=1, batch_size=8, max_steps_per_epoch=2, progress=False),
                        val_fraction=0.25, test_fraction=0.25)
    m = train_segmentation(cfg, tmp_path / "run")
    assert m["postprocess"]["chosen_by"] == "validation patients"
    assert isinstance(m["postprocess"]["training_single_lesion"], bool)
    assert set(m["postprocess"]["validation_dice"]) == {"none", "largest_component"}
    meta = json.loads((tmp_path / "run" / "model" / "metadata.json").read_text())
    assert meta["postprocess"] == m["postprocess"]["rule"]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["postprocess"] == m["postprocess"]
    fixed = cfg.model_copy(update={"postprocess": "largest_component"})
    m2 = train_segmentation(fixed, tmp_path / "run2")
    assert m2["postprocess"] == {"rule": "largest_component", "chosen_by": "config"}
    # every held-out patient also says what each rule would have given; the rule used is one of them
    for run in (m, m2):
        rows = run["per_patient"].values()
        assert rows and all(r["dice"] == pytest.approx(r[f"dice_if_{run['postprocess']['rule']}"]) for r in rows)
        assert all(0 <= r["dice_if_none"] <= 1 and 0 <= r["dice_if_largest_component"] <= 1 for r in rows)


class _TwoBlobs(__import__("torch").nn.Module):
    """A stand-in segmenter: a big blob and a speck, whatever the input."""

    def forward(self, x):
        import torch

        out = torch.full((x.shape[0], 1, *x.shape[-2:]), -5.0)
        out[..., 4:14, 4:14] = 5.0
        out[..., 26:28, 26:28] = 5.0
        return out


def test_predict_applies_the_packaged_rule(tmp_path):
    from PIL import Image

    from medlens.segment.predict import predict_files

    img = tmp_path / "scan.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    meta = {"task": "segment", "threshold": 0.5, "preprocess": {"resize": None},
            "input": {"channels": 3, "spatial_dims": 2, "divisor": 1}}
    kept = {}
    for rule in ("none", "largest_component"):
        rows = predict_files(_TwoBlobs(), {**meta, "postprocess": rule}, [img], tmp_path / rule)
        kept[rule] = rows[0]["lesion_pixels"]
    assert kept == {"none": 104, "largest_component": 100}
