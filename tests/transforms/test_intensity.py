"""Intensity policies: the default reproduces the old percentile window bit for bit; fixed HU
windows and foreground z-scores do what they say; every policy survives JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from medlens.transforms.intensity import (
    DEFAULT_INTENSITY,
    FixedWindow,
    PercentileWindow,
    ZScore,
    intensity_to_dict,
    parse_intensity,
    to_float,
)


def old_window_uint8(vol: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """medlens' volume windowing before intensity policies existed (segment/data.py, 2026-11)."""
    out = np.empty(vol.shape, dtype=np.uint8)
    for c in range(vol.shape[0]):
        v = vol[c].astype(np.float32)
        lo, hi = np.percentile(v, [lo_pct, hi_pct])
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        out[c] = np.clip((v - lo) * scale, 0, 255).round().astype(np.uint8)
    return out


def test_default_is_todays_percentile_window_exactly(tmp_path):
    from medlens.data.synthetic import make_brain_mri_like
    from medlens.io.volumes import read_volume
    from medlens.segment.data import read_volume_pair, window_uint8
    from medlens.segment.layouts import load_segmentation_dataset

    rng = np.random.default_rng(0)
    raw = (rng.gamma(2.0, 300.0, size=(2, 6, 20, 24)) - 50).astype(np.float32)  # MRI-like, a long tail
    raw[1, :, :3] = 0  # a constant band
    expected = old_window_uint8(raw)
    assert DEFAULT_INTENSITY == PercentileWindow(lower=0.5, upper=99.5)
    np.testing.assert_array_equal(DEFAULT_INTENSITY.apply(raw), expected)
    np.testing.assert_array_equal(parse_intensity(None).apply(raw), expected)
    np.testing.assert_array_equal(window_uint8(raw), expected)
    np.testing.assert_array_equal(window_uint8(raw, 2, 98), old_window_uint8(raw, 2, 98))
    np.testing.assert_array_equal(DEFAULT_INTENSITY.apply(np.full((1, 4, 4), 7.0)), np.zeros((1, 4, 4)))
    # through the reader, on generated NIfTI volumes: what training sees has not moved
    root = make_brain_mri_like(tmp_path / "d", patients=2, slices=6, size=32, seed=5, fmt="nifti")
    rec = load_segmentation_dataset(root).records[0]
    img, mask, geo, warns = read_volume_pair(rec)
    vol = read_volume(rec.path).array
    np.testing.assert_array_equal(img, old_window_uint8(vol if vol.ndim == 4 else vol[None]))
    assert img.dtype == np.uint8 and geo.array_spacing == (3.0, 1.0, 1.0) and warns == []


def test_fixed_ct_window_in_hounsfield_units():
    hu = np.array([[[-2000.0, -1000.0, -300.0, 400.0, 3000.0]]])  # (C=1, 1, 5)
    w = FixedWindow()  # lung window -1000…400 HU
    assert (w.lower, w.upper) == (-1000.0, 400.0)
    np.testing.assert_array_equal(w.apply(hu)[0, 0], [0, 0, 128, 255, 255])
    f = FixedWindow(lower=-1000, upper=400, output="float32").apply(hu)
    assert f.dtype == np.float32
    np.testing.assert_allclose(f[0, 0], [0.0, 0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ValidationError, match="below"):
        FixedWindow(lower=400, upper=-1000)


def test_zscore_uses_the_foreground():
    rng = np.random.default_rng(1)
    v = np.zeros((2, 8, 16, 16), np.float32)
    v[:, 2:6, 4:12, 4:12] = rng.normal(500.0, 40.0, size=(2, 4, 8, 8))  # a head in air (zeros)
    out = ZScore().apply(v)
    assert out.dtype == np.float32 and out.shape == v.shape
    fg = v[0] != 0
    assert abs(out[0][fg].mean()) < 1e-4 and out[0][fg].std() == pytest.approx(1.0, abs=1e-4)
    assert out[0][~fg].max() < -5  # background far below: the statistics ignored it
    # all voxels: the zeros pull the mean down, so the head sits above 0
    assert ZScore(foreground="all").apply(v)[0][fg].mean() > 1
    # Otsu: a dark but nonzero background is still left out
    v2 = v + 20.0
    otsu = ZScore(foreground="otsu").apply(v2)
    assert abs(otsu[0][fg].mean()) < 1e-3 and otsu[0][fg].std() == pytest.approx(1.0, abs=1e-3)
    assert np.isfinite(ZScore().apply(np.zeros((1, 3, 3)))).all()  # empty foreground: no NaN


@pytest.mark.parametrize("policy", [PercentileWindow(lower=1, upper=99), FixedWindow(lower=-160, upper=240),
                                    ZScore(foreground="otsu")])
def test_policies_survive_json(policy):
    text = json.dumps(intensity_to_dict(policy))
    back = parse_intensity(json.loads(text))
    assert back == policy and type(back) is type(policy)
    x = np.random.default_rng(2).normal(size=(1, 4, 5, 6)) * 100
    np.testing.assert_array_equal(back.apply(x), policy.apply(x))


def test_parse_refuses_unknown_kinds_and_fields():
    assert intensity_to_dict(None) == {"kind": "percentile", "lower": 0.5, "upper": 99.5}
    with pytest.raises(ValidationError, match="kind"):
        parse_intensity({"kind": "minmax"})
    with pytest.raises(ValidationError, match="extra"):
        parse_intensity({"kind": "fixed", "lo": 0})
    with pytest.raises(ValidationError, match="below"):
        parse_intensity({"kind": "percentile", "lower": 99, "upper": 1})
    with pytest.raises(ValueError, match="channel-first"):
        DEFAULT_INTENSITY.apply(np.zeros(5))


def test_to_float_is_the_model_input_contract():
    u = torch.tensor([[0, 255, 51]], dtype=torch.uint8)
    torch.testing.assert_close(to_float(u), torch.tensor([[0.0, 1.0, 0.2]]))
    f = torch.tensor([-1.5, 2.0])
    torch.testing.assert_close(to_float(f), f)
