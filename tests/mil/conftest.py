"""Tiny synthetic APL/AML data shared by the MIL tests (written once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Feature caches under the session's temp folder, set before any module fixture trains
    (a function-scoped setting came too late for those, which then wrote ~/.cache/medlens)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDLENS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(scope="session")
def aplaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medlens.data.synthetic.blood import make_leukemia_like

    return make_leukemia_like(tmp_path_factory.mktemp("aplaml") / "data", patients_per_class=4,
                              cells_per_patient=8, size=32, difficulty=0.1,
                              abnormal_fraction=0.3, overlap=0.0, seed=3)
