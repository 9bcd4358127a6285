"""2D and 3D segmentation are one code path: the same fit, task and evaluation, the
spatial dimensionality choosing only the data view (slices or volumes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medlens.segment.config import SegmentConfig
from medlens.segment.layouts import load_segmentation_dataset
from medlens.segment.task import SegmentAugment, SegmentTask
from medlens.segment.views import SegmentView, SliceView, VolumeView, training_view, view_type
from medlens.segment.workflow import fit_segmenter

SPLITS = {"train": ["SYN_000_20200101", "SYN_002_20200301"], "val": ["SYN_001_20200201"],
          "test": ["SYN_003_20200401"]}  # val and test patients have a lesion
TRAIN = {"epochs": 1, "batch_size": 2, "max_steps_per_epoch": 1, "progress": False, "threads": 1}


class Bright(nn.Module):
    """A voxel-wise stand-in network on any number of spatial axes: lesion where FLAIR (the
    middle channel) is bright; it finds the lesions with false positives (Dice ~0.4)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, 1:2] - 0.5) * 40.0


def _cfg(data, dims: int, **over) -> SegmentConfig:
    extra = {"patch": [4, 16, 16]} if dims == 3 else {}
    return SegmentConfig(data=str(data), size=32, model="test_unet", spatial_dims=dims, train=TRAIN,
                         **extra, **over)


@pytest.fixture(scope="module")
def views(kaggle_set, tmp_path_factory):
    index = load_segmentation_dataset(kaggle_set)
    cache = tmp_path_factory.mktemp("cache")
    return {d: training_view(_cfg(kaggle_set, d), index, SPLITS, cache_dir=cache) for d in (2, 3)}


def test_the_dimensionality_only_picks_the_view(views):
    assert view_type(2) is SliceView and view_type(3) is VolumeView
    assert isinstance(views[2], SliceView) and isinstance(views[3], VolumeView)
    for view in views.values():
        assert isinstance(view, SegmentView)  # both satisfy the one protocol
        assert view.channels == 3 and set(view.parts) == {"train", "val", "test"}
    assert views[2].window is None and views[3].window == (4, 16, 16)


def test_both_views_give_the_same_patient_volumes(views):
    """The kaggle slices, as slices or stacked into volumes: the same truths per patient,
    the same prior, and per-patient (D, H, W) predictions in slice order."""
    s, v = views[2], views[3]
    for part in ("train", "val", "test"):
        for a, b in zip(s.truths(part), v.truths(part), strict=True):
            np.testing.assert_array_equal(a, b)
    assert s.foreground() == v.foreground() > 0
    (p2, prob2, t2), = s.predict(Bright(), "test")
    (p3, prob3, t3), = v.predict(Bright(), "test")
    assert p2 == p3 == SPLITS["test"][0] and prob2.shape == prob3.shape == t2.shape == (6, 32, 32)
    np.testing.assert_array_equal(prob2 >= 0.5, prob3 >= 0.5)
    rows2, sl2, probs2 = s.evaluate(Bright(), "test", threshold=0.5)
    rows3, sl3, probs3 = v.evaluate(Bright(), "test", threshold=0.5)
    assert rows2.keys() == rows3.keys() and rows2[p2]["dice"] == rows3[p3]["dice"]
    assert probs2.shape == probs3.shape == sl2.masks[:, 0].shape == sl3.masks[:, 0].shape


def test_one_task_validates_slice_batches_and_whole_volumes_alike(views):
    """Slice batches (one forward each) and whole volumes (sliding windows of the patch)
    score the same predictions to the same validation Dice."""
    tc = SegmentConfig(data="x", train=TRAIN).train
    flat = SegmentTask(augment=None).validate(Bright(), views[2].val_loader(tc), torch.device("cpu"))
    windowed = SegmentTask(augment=None, window=views[3].window).validate(
        Bright(), views[3].val_loader(tc), torch.device("cpu"))
    for key in ("val_dice", "val_iou", "val_slice_dice"):
        assert flat[key] == pytest.approx(windowed[key], abs=1e-12), key
    assert 0.1 < flat["val_dice"] < 0.9 and np.isfinite(flat["val_loss"]) and np.isfinite(windowed["val_loss"])


def test_augment_rotates_in_plane_on_any_spatial_dims():
    aug = SegmentAugment()
    t2 = aug._theta(3, 2, torch.Generator().manual_seed(4))
    t3 = aug._theta(3, 3, torch.Generator().manual_seed(4))
    assert t2.shape == (3, 2, 3) and t3.shape == (3, 3, 4)
    torch.testing.assert_close(t3[:, :2, [0, 1, 3]], t2, rtol=0, atol=0)  # the same (H, W) motion
    torch.testing.assert_close(t3[:, 2], torch.tensor([0.0, 0.0, 1.0, 0.0]).expand(3, 4))  # slices stay
    for shape in ((2, 1, 8, 8), (2, 1, 4, 8, 8)):
        x = torch.zeros(shape)
        x[..., 2:5, 2:5] = 1
        ax, ay = aug(x, x.clone(), torch.Generator().manual_seed(0))
        assert ax.shape == ay.shape == shape and set(torch.unique(ay).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("dims", [2, 3])
def test_one_fit_trains_2d_and_3d(kaggle_set, tmp_path, dims):
    index = load_segmentation_dataset(kaggle_set)
    fitted = fit_segmenter(_cfg(kaggle_set, dims, postprocess="auto"), index, SPLITS, tmp_path / "run")
    assert fitted.model.medlens_config["spatial_dims"] == dims
    assert fitted.eval_split == "test" and set(fitted.rows) == set(SPLITS["test"])
    assert fitted.report_probs.shape == fitted.report_slices.masks[:, 0].shape == (6, 32, 32)
    assert fitted.input_meta["spatial_dims"] == dims and fitted.input_meta["channels"] == 3
    assert fitted.input_meta["patch"] == ([4, 16, 16] if dims == 3 else None)
    assert fitted.counts["slices"] == {"train": 12, "val": 6, "test": 6}
    assert fitted.counts["members"][0]["epochs_run"] == 1
    assert fitted.postprocess["chosen_by"] == "validation patients"
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_model_kwargs_may_not_contradict_the_dimensionality(kaggle_set, tmp_path):
    from medlens.errors import ConfigError

    cfg = _cfg(kaggle_set, 2, model_kwargs={"spatial_dims": 3})
    with pytest.raises(ConfigError, match="contradicts spatial_dims=2"):
        fit_segmenter(cfg, load_segmentation_dataset(kaggle_set), SPLITS, tmp_path / "run")
