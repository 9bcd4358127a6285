"""MedMNIST .npz reading and fetching (from a local HTTP server: no internet)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from medlens.data.layouts import load_dataset
from medlens.data.medmnist import fetch_medmnist, load_npz
from medlens.errors import BadInputError, ConfigError, MedlensError


def write_npz(
    path: Path, *, rgb: bool = False, n_classes: int = 2, flat_labels: bool = False, side: int = 28
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 5)):
        shape = (n, side, side, 3) if rgb else (n, side, side)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        labels = (np.arange(n) % n_classes).astype(np.uint8)
        arrays[f"{split}_labels"] = labels if flat_labels else labels[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return arrays


def test_load_pneumoniamnist_like_file(tmp_path):
    arrays = write_npz(tmp_path / "pneumoniamnist.npz")
    ix = load_npz(tmp_path / "pneumoniamnist.npz")
    assert ix.layout == "medmnist" and ix.classes == ["normal", "pneumonia"]
    assert len(ix) == 21 and ix.has_official_splits
    assert ix.class_counts("val") == {"normal": 2, "pneumonia": 2}
    rec = ix.records[12 + 3]  # val/3
    assert rec.path.endswith("pneumoniamnist.npz#val/3") and rec.split == "val"
    img = ix.read(rec)
    assert img.shape == (28, 28, 1) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 0], arrays["val_images"][3])
    assert ix.read(rec, channels=3).shape == (28, 28, 3)
    # the folder holding it is detected as MedMNIST too
    assert load_dataset(tmp_path).layout == "medmnist"


def test_rgb_unknown_flag_flat_labels_any_size(tmp_path):
    arrays = write_npz(tmp_path / "mydata.npz", rgb=True, n_classes=3, flat_labels=True, side=64)
    ix = load_dataset(tmp_path / "mydata.npz")
    assert ix.classes == ["0", "1", "2"]
    img = ix.read(ix.records[0])
    assert img.shape == (64, 64, 3)
    np.testing.assert_array_equal(img, arrays["train_images"][0])


def test_unsupported_and_broken_files(tmp_path):
    write_npz(tmp_path / "a" / "chestmnist.npz")
    with pytest.raises(ConfigError, match="not supported"):
        load_npz(tmp_path / "a" / "chestmnist.npz")
    np.savez(
        tmp_path / "multi.npz",
        train_images=np.zeros((2, 8, 8), np.uint8),
        train_labels=np.zeros((2, 3), np.uint8),
    )
    with pytest.raises(ConfigError, match="multi-label"):
        load_npz(tmp_path / "multi.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(BadInputError, match="train_images"):
        load_npz(tmp_path / "other.npz")
    np.savez(
        tmp_path / "short.npz",
        train_images=np.zeros((3, 8, 8), np.uint8),
        train_labels=np.zeros((2, 1), np.uint8),
    )
    with pytest.raises(BadInputError, match="3 images"):
        load_npz(tmp_path / "short.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BadInputError, match="junk.npz"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(BadInputError, match="give the one"):
        load_dataset(tmp_path)  # several .npz files in one folder


# ------------------------------------------------------------------ fetching


@contextlib.contextmanager
def serve(folder: Path):
    """A bounded local HTTP server on 127.0.0.1 serving ``folder``."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def test_fetch_downloads_verifies_and_reuses(tmp_path, no_proxy, monkeypatch):
    remote = tmp_path / "remote"
    write_npz(remote / "breastmnist_64.npz", side=64)
    payload = (remote / "breastmnist_64.npz").read_bytes()
    md5 = hashlib.md5(payload).hexdigest()
    root = tmp_path / "cache"
    with serve(remote) as base:
        got = fetch_medmnist("breastmnist", 64, root=root, url=base, md5=md5)
        assert got == root / "breastmnist_64.npz" and got.read_bytes() == payload
        assert sorted(p.name for p in root.iterdir()) == ["breastmnist_64.npz"]
        # a wrong checksum: nothing is kept, not even a temporary file
        with pytest.raises(BadInputError, match="md5"):
            fetch_medmnist("breastmnist", 64, root=tmp_path / "bad", url=base, md5="0" * 32)
        assert not any((tmp_path / "bad").iterdir())
        with pytest.raises(MedlensError, match="404"):
            fetch_medmnist("dermamnist", root=tmp_path / "none", url=base)
        (remote / "page.npz").write_text("<html>error page</html>")
        with pytest.raises(BadInputError, match="not an .npz"):
            fetch_medmnist("bloodmnist", root=tmp_path / "html", url=f"{base}/page.npz")
        monkeypatch.setenv("MEDLENS_MEDMNIST_URL", base)
        via_env = fetch_medmnist("breastmnist", 64, root=tmp_path / "env")
        assert via_env.read_bytes() == payload
    # the server is gone: an existing, matching file is reused without the network
    assert fetch_medmnist("breastmnist", 64, root=root, url=base, md5=md5) == got
    ix = load_dataset(got)
    assert ix.classes == ["malignant", "normal, benign"] and ix.read(ix.records[0]).shape[:2] == (
        64,
        64,
    )
    with pytest.raises(BadInputError, match="existing file"):
        fetch_medmnist("breastmnist", 64, root=root, url=base, md5="1" * 32)


def test_fetch_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="size"):
        fetch_medmnist("pneumoniamnist", 32, root=tmp_path)
    with pytest.raises(ConfigError, match="flag"):
        fetch_medmnist("../etc", root=tmp_path)


# ------------------------------------------------------------------ real copy


@pytest.mark.realdata
def test_real_pneumoniamnist(shared_data):
    path = shared_data / "pneumoniamnist" / "pneumoniamnist.npz"
    if not path.is_file():
        pytest.skip("PneumoniaMNIST copy not found")
    ix = load_dataset(path.parent)
    assert ix.layout == "medmnist" and ix.classes == ["normal", "pneumonia"]
    assert ix.class_counts("train") == {"normal": 388, "pneumonia": 3494}
    assert ix.class_counts("val") == {"normal": 135, "pneumonia": 389}
    assert ix.class_counts("test") == {"normal": 234, "pneumonia": 390}
    assert ix.read(ix.records[-1]).shape == (28, 28, 1)
