from __future__ import annotations

import json
import os
import stat

import pytest

from medlens.io.atomic import atomic_write, atomic_write_json


def test_atomic_json_round_trip_and_permissions(tmp_path):
    p = atomic_write_json(tmp_path / "a" / "m.json", {"x": 1})
    assert json.loads(p.read_text()) == {"x": 1}
    assert stat.S_IMODE(os.stat(p).st_mode) & 0o044  # readable by others like any normal file


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "m.json"
    atomic_write_json(p, {"old": True})

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert json.loads(p.read_text()) == {"old": True}
    assert [f.name for f in tmp_path.iterdir()] == ["m.json"]
