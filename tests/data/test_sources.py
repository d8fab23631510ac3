"""Where load_mnist looks: a named directory (alone), the cache, and the public API's rules."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from segdend.data import MNIST, default_cache_dir, load_mnist, mirrors, split_validation
from segdend.data.layout import MNIST_FILES
from segdend.errors import SegdendError


@pytest.fixture
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any download route is attempted."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a named directory must never fall back to downloading")

    monkeypatch.setattr(mirrors, "download_to_cache", refuse)


@pytest.mark.parametrize("old_names", [False, True], ids=["usual-names", "old-names"])
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_named_directory_in_both_naming_styles(
    tmp_path: Path,
    write_mnist_dir: Callable[..., Path],
    fake_arrays: dict[str, np.ndarray],
    assert_mnist_equals,
    old_names: bool,
    compress: bool,
) -> None:
    directory = write_mnist_dir(
        tmp_path / "mnist", fake_arrays, old_names=old_names, compress=compress
    )
    lines: list[str] = []
    mnist = load_mnist(directory, log=lines.append)
    assert_mnist_equals(mnist, fake_arrays)
    assert str(directory) in mnist.source
    assert lines and all("\n" not in line for line in lines)


def test_named_directory_from_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_mnist_dir: Callable[..., Path],
    fake_arrays: dict[str, np.ndarray],
    assert_mnist_equals,
) -> None:
    directory = write_mnist_dir(tmp_path / "mnist", fake_arrays)
    monkeypatch.setenv("SEGDEND_DATA_DIR", str(directory))
    mnist = load_mnist()
    assert_mnist_equals(mnist, fake_arrays)
    assert "SEGDEND_DATA_DIR" in mnist.source


def test_argument_wins_over_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_mnist_dir: Callable[..., Path],
    fake_arrays: dict[str, np.ndarray],
) -> None:
    directory = write_mnist_dir(tmp_path / "mnist", fake_arrays)
    monkeypatch.setenv("SEGDEND_DATA_DIR", str(tmp_path / "elsewhere"))
    assert load_mnist(directory).n_train == len(fake_arrays["train_labels"])


@pytest.mark.usefixtures("no_downloads")
@pytest.mark.parametrize("via_env", [False, True])
def test_missing_named_directory_does_not_fall_back(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_mnist_dir: Callable[..., Path],
    fake_arrays: dict[str, np.ndarray],
    via_env: bool,
) -> None:
    cache = write_mnist_dir(tmp_path / "cache", fake_arrays)
    missing = tmp_path / "typo"
    if via_env:
        monkeypatch.setenv("SEGDEND_DATA_DIR", str(missing))
    with pytest.raises(SegdendError) as err:
        load_mnist(None if via_env else missing, cache_dir=cache)
    message = str(err.value)
    assert f"MNIST directory {missing}" in message and "does not exist" in message
    assert ("SEGDEND_DATA_DIR)" if via_env else "--data-dir)") in message
    assert "\n" not in message


@pytest.mark.usefixtures("no_downloads")
def test_named_path_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "mnist.tar"
    path.write_bytes(b"")
    with pytest.raises(SegdendError, match="is not a directory"):
        load_mnist(path)


@pytest.mark.usefixtures("no_downloads")
def test_missing_file_in_named_directory_does_not_fall_back(
    tmp_path: Path, write_mnist_dir: Callable[..., Path], fake_arrays: dict[str, np.ndarray]
) -> None:
    cache = write_mnist_dir(tmp_path / "cache", fake_arrays)
    directory = write_mnist_dir(tmp_path / "mnist", fake_arrays)
    (directory / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(SegdendError) as err:
        load_mnist(directory, cache_dir=cache)
    message = str(err.value)
    assert f"{directory} (from --data-dir) has no t10k-images-idx3-ubyte" in message
    assert "t10k-images.idx3-ubyte[.gz]" in message


@pytest.mark.usefixtures("no_downloads")
def test_invalid_file_in_named_directory_does_not_fall_back(
    tmp_path: Path, write_mnist_dir: Callable[..., Path], fake_arrays: dict[str, np.ndarray]
) -> None:
    cache = write_mnist_dir(tmp_path / "cache", fake_arrays)
    directory = write_mnist_dir(tmp_path / "mnist", fake_arrays)
    target = directory / "train-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-12])
    with pytest.raises(SegdendError, match=f"train-labels-idx1-ubyte.gz in {directory} is"):
        load_mnist(directory, cache_dir=cache)


def test_image_and_label_counts_must_agree(
    tmp_path: Path, write_mnist_dir: Callable[..., Path], fake_arrays: dict[str, np.ndarray]
) -> None:
    arrays = dict(fake_arrays, test_labels=fake_arrays["test_labels"][:-1])
    directory = write_mnist_dir(tmp_path / "mnist", arrays)
    with pytest.raises(SegdendError, match="holds 4 images but t10k-labels-idx1-ubyte.gz holds 3"):
        load_mnist(directory)


def test_usual_gz_name_is_preferred(
    tmp_path: Path, write_mnist_dir: Callable[..., Path], fake_arrays: dict[str, np.ndarray]
) -> None:
    directory = write_mnist_dir(tmp_path / "mnist", fake_arrays)
    (directory / "train-images.idx3-ubyte").write_bytes(b"an unrelated leftover")
    assert load_mnist(directory).n_train == len(fake_arrays["train_labels"])


def test_cache_route(
    tmp_path: Path,
    write_mnist_dir: Callable[..., Path],
    fake_arrays: dict[str, np.ndarray],
    assert_mnist_equals,
) -> None:
    cache = write_mnist_dir(tmp_path / "cache", fake_arrays, compress=False)
    lines: list[str] = []
    mnist = load_mnist(cache_dir=cache, download=False, log=lines.append)
    assert_mnist_equals(mnist, fake_arrays)
    assert mnist.source == f"MNIST from the cache {cache}"
    assert any("from the cache" in line or str(cache) in line for line in lines)


def test_default_cache_is_used(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    write_mnist_dir: Callable[..., Path],
    fake_arrays: dict[str, np.ndarray],
) -> None:
    cache = write_mnist_dir(tmp_path / "envcache", fake_arrays)
    monkeypatch.setenv("SEGDEND_CACHE_DIR", str(cache))
    assert load_mnist(download=False).source == f"MNIST from the cache {cache}"


def test_invalid_cache_is_reported_and_skipped(
    tmp_path: Path, write_mnist_dir: Callable[..., Path], fake_arrays: dict[str, np.ndarray]
) -> None:
    cache = write_mnist_dir(tmp_path / "cache", fake_arrays)
    (cache / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x03"))
    lines: list[str] = []
    with pytest.raises(SegdendError) as err:
        load_mnist(cache_dir=cache, download=False, log=lines.append)
    assert any("cache not usable: train-images-idx3-ubyte.gz" in line for line in lines)
    message = str(err.value)
    assert message.startswith("could not load MNIST: no usable copy in the cache")
    assert "downloads are disabled" in message
    assert "--data-dir DIR" in message and "\n" not in message


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_cache_dir() == Path.home() / ".cache" / "segdend" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_cache_dir() == Path.home() / ".cache" / "segdend" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "segdend" / "mnist"
    monkeypatch.setenv("SEGDEND_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def _mnist(n_train: int = 10, n_test: int = 3) -> MNIST:
    return MNIST(
        train_images=np.arange(n_train * 784, dtype=np.uint32).astype(np.uint8).reshape(-1, 784),
        train_labels=(np.arange(n_train) % 10).astype(np.uint8),
        test_images=np.zeros((n_test, 784), dtype=np.uint8),
        test_labels=np.zeros(n_test, dtype=np.uint8),
        source="test data",
    )


def test_split_validation_holds_out_the_last_images() -> None:
    mnist = _mnist()
    training, (images, labels) = split_validation(mnist, 4)
    assert training.n_train == 6 and images.shape == (4, 784) and labels.shape == (4,)
    np.testing.assert_array_equal(training.train_images, mnist.train_images[:6])
    np.testing.assert_array_equal(images, mnist.train_images[6:])
    np.testing.assert_array_equal(labels, mnist.train_labels[6:])
    assert training.test_images is mnist.test_images
    assert "last 4 training images held out" in training.source


def test_split_validation_of_zero() -> None:
    mnist = _mnist()
    training, (images, labels) = split_validation(mnist, 0)
    assert training.n_train == 10 and training.source == mnist.source
    assert images.shape == (0, 784) and labels.shape == (0,)


@pytest.mark.parametrize("bad", [-1, 10, 11])
def test_split_validation_out_of_range(bad: int) -> None:
    with pytest.raises(SegdendError, match=f"between 0 and 9 .*has 10 images\\), got {bad}"):
        split_validation(_mnist(), bad)


@pytest.mark.parametrize("bad", [2.5, True, "3"])
def test_split_validation_needs_a_whole_number(bad: object) -> None:
    with pytest.raises(SegdendError, match="must be a whole number"):
        split_validation(_mnist(), bad)  # type: ignore[arg-type]


def test_split_validation_accepts_numpy_integers() -> None:
    training, _ = split_validation(_mnist(), np.int64(2))
    assert training.n_train == 8


def test_mnist_checks_shapes_and_has_a_short_repr() -> None:
    mnist = _mnist()
    assert repr(mnist) == "MNIST(n_train=10, n_test=3, source='test data')"
    assert mnist == mnist and mnist != _mnist()
    with pytest.raises(ValueError, match="shape"):
        MNIST(
            mnist.train_images.reshape(-1, 28, 28),
            mnist.train_labels,
            mnist.test_images,
            mnist.test_labels,
            "x",
        )


def test_every_file_has_two_names_and_a_checksum() -> None:
    for spec in MNIST_FILES:
        assert spec.name.replace("-idx", ".idx") == spec.old_name
        assert len(spec.md5) == 32
