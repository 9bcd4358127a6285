"""The gradient-descent primer (examples/gradient_descent_primer.py) learns F = 1.8·C + 32."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

PRIMER = Path(__file__).resolve().parents[1] / "examples" / "gradient_descent_primer.py"


@pytest.fixture(scope="module")
def primer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gradient_descent_primer", PRIMER)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_training_converges_to_the_conversion_rule(primer: ModuleType) -> None:
    w, b, costs = primer.train(primer.CELSIUS, primer.FAHRENHEIT, lr=1e-3, steps=6000)
    c = np.array(costs)
    assert len(c) == 6001
    assert np.all(np.diff(c) <= 1e-9 * c[:-1] + 1e-12)  # monotonically non-increasing
    assert c[-1] < 1e-3 * c[0] and c[-1] < 1e-3
    assert abs(w - 1.8) < 0.01 and abs(b - 32) < 0.1
    assert abs(primer.predict(50.0, w, b) - 122.0) < 0.5


def test_analytic_gradient_matches_finite_differences(primer: ModuleType) -> None:
    c, f = primer.CELSIUS, primer.FAHRENHEIT
    eps = 1e-6
    for w, b in [(0.0, 0.0), (1.3, 10.0), (2.5, -7.0)]:
        dw, db = primer.gradient(c, f, w, b)
        num_dw = (primer.cost(c, f, w + eps, b) - primer.cost(c, f, w - eps, b)) / (2 * eps)
        num_db = (primer.cost(c, f, w, b + eps) - primer.cost(c, f, w, b - eps)) / (2 * eps)
        assert dw == pytest.approx(num_dw, rel=1e-5, abs=1e-4)
        assert db == pytest.approx(num_db, rel=1e-5, abs=1e-4)


def test_too_large_learning_rate_diverges(primer: ModuleType) -> None:
    _, _, costs = primer.train(primer.CELSIUS, primer.FAHRENHEIT, lr=2.5e-3, steps=50)
    assert costs[-1] > costs[0]


def test_bad_arguments_and_main_output(
    primer: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="same length"):
        primer.train(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="lr"):
        primer.train(primer.CELSIUS, primer.FAHRENHEIT, lr=0.0)
    primer.main()
    out = capsys.readouterr().out
    assert "learned:  F = 1.8000" in out
    assert "50 °C  →  122.0" in out
