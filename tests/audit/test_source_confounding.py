"""The audit flags class ↔ source confounding: file-name prefix, image size, JPEG settings."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medlens.audit.confounding import patient_confounding, source_confounding
from medlens.data.layouts import load_dataset


def _two_hospitals(root, factor: str, n: int = 12):
    """healthy/ and leukemic/ cells; only ``factor`` differs between the two classes."""
    rng = np.random.default_rng(0)
    for k, cls in enumerate(("healthy", "leukemic")):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            side = 40 if factor == "size" and k else 32
            img = (rng.random((side, side, 3)) * 255).astype(np.uint8)
            name = f"{('JHH' if k else 'PBC') if factor == 'prefix' else 'cell'}_{i:03d}.jpg"
            Image.fromarray(img).save(root / cls / name, quality=70 if factor == "quality" and k else 92,
                                      subsampling=2 if factor == "subsampling" and k else 0)
    return load_dataset(root)


@pytest.mark.parametrize(("factor", "says"), [("prefix", "file-name prefix"), ("size", "40×40"),
                                              ("quality", "q≈70"), ("subsampling", "4:2:0")])
def test_a_source_that_tells_the_class_is_flagged(tmp_path, factor: str, says: str) -> None:
    index = _two_hospitals(tmp_path / factor, factor)
    found = source_confounding(index)
    assert len(found["warnings"]) == 1 and says in found["warnings"][0]
    assert "Class and source are confounded" in patient_confounding(index)["warnings"][0]  # what the audit runs


def test_mixed_sources_are_not_flagged(tmp_path) -> None:
    assert source_confounding(_two_hospitals(tmp_path / "none", "none"))["warnings"] == []
