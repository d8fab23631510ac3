"""The IDX reader and writer: valid files, every kind of damage, and fuzzing."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segdend.data import idx_bytes, read_images, read_labels, write_idx
from segdend.errors import SegdendError


def image_file(images: np.ndarray, *, count: int | None = None, rows: int = 28) -> bytes:
    """Hand-encode an IDX image file (independently of the module's own writer)."""
    n = images.shape[0] if count is None else count
    return struct.pack(">IIII", 0x00000803, n, rows, 28) + images.tobytes()


def label_file(labels: np.ndarray, *, magic: int = 0x00000801) -> bytes:
    """Hand-encode an IDX label file."""
    return struct.pack(">II", magic, labels.shape[0]) + labels.tobytes()


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (3, 784), dtype=np.uint8)


@pytest.fixture
def labels() -> np.ndarray:
    return np.array([0, 9, 3, 7], dtype=np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_reads_valid_images(tmp_path: Path, images: np.ndarray, compress: bool) -> None:
    data = image_file(images)
    path = tmp_path / "images"
    path.write_bytes(gzip.compress(data) if compress else data)
    loaded = read_images(path)
    assert loaded.dtype == np.uint8
    assert loaded.shape == (3, 784)
    np.testing.assert_array_equal(loaded, images)
    assert loaded.flags.writeable


def test_image_rows_are_row_major_pixels(tmp_path: Path) -> None:
    grid = np.arange(784, dtype=np.uint16).reshape(1, 28, 28) % 251
    path = tmp_path / "images"
    path.write_bytes(image_file(grid.astype(np.uint8)))
    loaded = read_images(path)
    assert loaded[0, 28 * 2 + 5] == grid[0, 2, 5]


@pytest.mark.parametrize("compress", [False, True])
def test_reads_valid_labels(tmp_path: Path, labels: np.ndarray, compress: bool) -> None:
    data = label_file(labels)
    path = tmp_path / "labels"
    path.write_bytes(gzip.compress(data) if compress else data)
    loaded = read_labels(path)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, labels)


def test_compression_is_detected_by_content_not_name(tmp_path: Path, images: np.ndarray) -> None:
    raw_named_gz = tmp_path / "images.gz"
    raw_named_gz.write_bytes(image_file(images))
    gz_named_raw = tmp_path / "images-idx3-ubyte"
    gz_named_raw.write_bytes(gzip.compress(image_file(images)))
    np.testing.assert_array_equal(read_images(raw_named_gz), images)
    np.testing.assert_array_equal(read_images(gz_named_raw), images)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_payload(tmp_path: Path, images: np.ndarray, compress: bool) -> None:
    data = image_file(images)[:-100]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(SegdendError, match=r"is truncated: .*declares 3 images.* 2368 ") as err:
        read_images(path)
    assert "train-images-idx3-ubyte.gz in " in str(err.value)
    assert "re-download" in str(err.value)


@pytest.mark.parametrize("size", [0, 3, 10])
def test_truncated_header(tmp_path: Path, images: np.ndarray, size: int) -> None:
    path = tmp_path / "images"
    path.write_bytes(image_file(images)[:size])
    with pytest.raises(SegdendError, match="is truncated: an IDX images header needs 16 bytes"):
        read_images(path)


@pytest.mark.parametrize("compress", [False, True])
def test_over_long_file(tmp_path: Path, images: np.ndarray, compress: bool) -> None:
    data = image_file(images) + b"\0" * 5
    path = tmp_path / "images"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(SegdendError, match=r"longer than its header says: .* has 2373\b"):
        read_images(path)


def test_over_long_labels(tmp_path: Path, labels: np.ndarray) -> None:
    path = tmp_path / "labels"
    path.write_bytes(label_file(labels) + b"\x01")
    with pytest.raises(SegdendError, match="longer than its header says"):
        read_labels(path)


def test_count_in_header_larger_than_data(tmp_path: Path, images: np.ndarray) -> None:
    path = tmp_path / "images"
    path.write_bytes(image_file(images, count=5))
    with pytest.raises(SegdendError, match="declares 5 images"):
        read_images(path)


def test_count_in_header_smaller_than_data(tmp_path: Path, images: np.ndarray) -> None:
    path = tmp_path / "images"
    path.write_bytes(image_file(images, count=2))
    with pytest.raises(SegdendError, match="longer than its header says: 2 images"):
        read_images(path)


def test_huge_declared_count_is_truncation_not_memory_error(tmp_path: Path) -> None:
    path = tmp_path / "images"
    path.write_bytes(gzip.compress(struct.pack(">IIII", 0x803, 0xFFFFFFFF, 28, 28) + b"\0" * 9))
    with pytest.raises(SegdendError, match="is truncated"):
        read_images(path)


def test_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "images"
    path.write_bytes(b"<html>not found</html>" * 10)
    with pytest.raises(SegdendError, match=r"magic number 0x3C68746D, not 0x00000803"):
        read_images(path)


def test_label_file_read_as_images(tmp_path: Path, labels: np.ndarray) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(label_file(labels))
    with pytest.raises(SegdendError, match="holds labels .* not images .* swapped"):
        read_images(path)


def test_image_file_read_as_labels(tmp_path: Path, images: np.ndarray) -> None:
    path = tmp_path / "labels"
    path.write_bytes(image_file(images))
    with pytest.raises(SegdendError, match="holds images .* not labels"):
        read_labels(path)


def test_wrong_data_type(tmp_path: Path, labels: np.ndarray) -> None:
    path = tmp_path / "labels"
    path.write_bytes(label_file(labels, magic=0x00000D01))
    with pytest.raises(SegdendError, match="data type 0x0D, but MNIST files hold unsigned bytes"):
        read_labels(path)


def test_wrong_image_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "images"
    path.write_bytes(struct.pack(">IIII", 0x803, 1, 32, 28) + bytes(32 * 28))
    with pytest.raises(SegdendError, match="images of 32x28 pixels, but MNIST images are 28x28"):
        read_images(path)


def test_label_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(label_file(np.array([1, 2, 10, 255], dtype=np.uint8)))
    with pytest.raises(SegdendError, match=r"holds label 10 at index 2 \(2 labels"):
        read_labels(path)


def test_corrupted_gzip_stream(tmp_path: Path, images: np.ndarray) -> None:
    data = bytearray(gzip.compress(image_file(images)))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "images.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(SegdendError, match="damaged or truncated gzip file"):
        read_images(path)


def test_gzip_with_wrong_checksum(tmp_path: Path, images: np.ndarray) -> None:
    data = bytearray(gzip.compress(image_file(images)))
    data[-6] ^= 0x01  # inside the CRC-32 trailer
    path = tmp_path / "images.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(SegdendError, match="damaged or truncated gzip file"):
        read_images(path)


def test_cut_gzip_stream(tmp_path: Path, images: np.ndarray) -> None:
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(image_file(images))[:-20])
    with pytest.raises(SegdendError, match="damaged or truncated gzip file"):
        read_images(path)


def test_garbage_after_gzip_stream(tmp_path: Path, labels: np.ndarray) -> None:
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(label_file(labels)) + b"trailing junk")
    with pytest.raises(SegdendError, match="damaged or truncated gzip file"):
        read_labels(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SegdendError, match="cannot open nothing-here in .*check the path"):
        read_images(tmp_path / "nothing-here")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(SegdendError, match="cannot open"):
        read_labels(tmp_path)


def test_idx_bytes_matches_hand_encoding(images: np.ndarray, labels: np.ndarray) -> None:
    assert idx_bytes(images.reshape(-1, 28, 28)) == image_file(images)
    assert idx_bytes(labels) == label_file(labels)


def test_idx_bytes_rejects_other_dtypes() -> None:
    with pytest.raises(ValueError, match="uint8"):
        idx_bytes(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="1 to 255 dimensions"):
        idx_bytes(np.uint8(3))


@pytest.mark.parametrize("compress", [False, True])
def test_write_idx_round_trip(tmp_path: Path, images: np.ndarray, compress: bool) -> None:
    path = tmp_path / "sub" / "images"
    write_idx(path, images.reshape(-1, 28, 28), gzip=compress)
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if compress else b"\0\0")
    np.testing.assert_array_equal(read_images(path), images)
    assert [p.name for p in path.parent.iterdir()] == ["images"]


def test_write_idx_is_deterministic(tmp_path: Path, labels: np.ndarray) -> None:
    write_idx(tmp_path / "a", labels, gzip=True)
    write_idx(tmp_path / "b", labels, gzip=True)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_write_idx_into_unwritable_place(tmp_path: Path, labels: np.ndarray) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(SegdendError, match="cannot write"):
        write_idx(blocker / "labels", labels, gzip=False)


def _header(magic: int, dims: list[int]) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims)


_plausible_files = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda magic, dims, payload: _header(magic, dims) + payload,
        st.sampled_from([0x801, 0x803, 0x802, 0xD01, 0x803]),
        st.lists(st.sampled_from([0, 1, 2, 27, 28, 29]), min_size=0, max_size=3),
        st.binary(max_size=2 * 784 + 3),
    ),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(content=_plausible_files, compress=st.booleans(), kind=st.sampled_from(["i", "l"]))
def test_fuzz_any_bytes_load_or_raise_segdend_error(
    tmp_path: Path, content: bytes, compress: bool, kind: str
) -> None:
    path = tmp_path / "fuzz"
    if compress:
        compressed = gzip.compress(content)
        # Damage some compressed streams too, at a position derived from the content.
        if content and content[0] % 3 == 0:
            damaged = bytearray(compressed)
            damaged[content[-1] % len(damaged)] ^= 0x5A
            compressed = bytes(damaged)
        content = compressed
    path.write_bytes(content)
    try:
        loaded = read_images(path) if kind == "i" else read_labels(path)
    except SegdendError as exc:
        assert "\n" not in str(exc)
        return
    assert loaded.dtype == np.uint8
    if kind == "i":
        assert loaded.ndim == 2 and loaded.shape[1] == 784
    else:
        assert loaded.ndim == 1 and int(loaded.max(initial=0)) <= 9
