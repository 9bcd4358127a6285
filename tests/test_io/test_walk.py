"""Listing a user's folder (medlens.io.walk): linked folders followed once, loops end, hidden skipped."""

from __future__ import annotations

from pathlib import Path

from medlens.data.files import images_in
from medlens.io.walk import files_under


def test_linked_folders_are_listed_once_hidden_ones_never_and_a_loop_ends(tmp_path: Path) -> None:
    other = tmp_path / "other_drive" / "patient_7"
    other.mkdir(parents=True)
    (other / "a.png").write_bytes(b"x")
    root = tmp_path / "data"
    (root / "class_1").mkdir(parents=True)
    (root / "class_1" / "b.png").write_bytes(b"x")
    (root / "class_1" / "._b.png").write_bytes(b"x")  # a macOS fork
    (root / ".cache").mkdir()
    (root / ".cache" / "c.png").write_bytes(b"x")
    (root / "class_1" / "patient_7").symlink_to(other, target_is_directory=True)
    (root / "class_1" / "up").symlink_to(root, target_is_directory=True)  # a loop
    before = sorted(p.name for p in tmp_path.rglob("*"))
    names = [p.relative_to(root).as_posix() for p in files_under(root)]
    assert names == ["class_1/b.png", "class_1/patient_7/a.png"]
    assert [p.relative_to(root).as_posix() for p in images_in(root)] == names  # the layouts' listing too
    assert [p.name for p in images_in(root / "class_1", recursive=False)] == ["b.png"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # listing changed nothing
