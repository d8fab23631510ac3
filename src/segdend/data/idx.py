"""Reading and writing IDX files, the format the MNIST database is distributed in.

An IDX file is a big-endian header followed by the array's elements in row-major order. The
header is a four-byte magic number (two zero bytes, a data-type byte, and the number of
dimensions) and then one 32-bit size per dimension. MNIST uses only unsigned bytes (data type
0x08): image files are three-dimensional (count, 28, 28) with magic 0x00000803, label files are
one-dimensional with magic 0x00000801.

Files may be gzip-compressed or raw. Compression is recognised by the gzip magic bytes rather
than by the file name, because decompressed copies often keep their ``.gz`` name and vice versa.
"""

from __future__ import annotations

import gzip as gzip_format
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from segdend.atomic import atomic_write_bytes
from segdend.errors import SegdendError

__all__ = [
    "IMAGE_MAGIC",
    "IMAGE_PIXELS",
    "IMAGE_SIDE",
    "LABEL_MAGIC",
    "N_CLASSES",
    "UNSIGNED_BYTE",
    "IdxKind",
    "idx_bytes",
    "read_images",
    "read_labels",
    "write_idx",
]

IdxKind = Literal["images", "labels"]

IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
UNSIGNED_BYTE = 0x08
IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE
N_CLASSES = 10

GZIP_MAGIC = b"\x1f\x8b"

# Payloads are read in bounded chunks so that a header claiming an absurd size, or a tiny gzip
# file that inflates to gigabytes, costs at most what the file really holds (plus one chunk).
_CHUNK_BYTES = 1 << 22
# When a file is too long, how far to keep reading just to report by how much.
_EXCESS_COUNT_LIMIT = 1 << 26
# Six is zlib's usual trade-off: about 1 s for the training images instead of 11 s at level 9,
# for a file 2 % larger.
_COMPRESS_LEVEL = 6

_FIX = "re-download it or point --data-dir at a complete copy"


def read_images(path: str | Path) -> np.ndarray:
    """Read an IDX file of 28x28 MNIST images.

    Parameters
    ----------
    path : str or Path
        The file, raw or gzip-compressed.

    Returns
    -------
    numpy.ndarray
        A writable ``uint8`` array of shape ``(n, 784)``; each row is one image's pixels in
        row-major order.

    Raises
    ------
    SegdendError
        If the file cannot be read, is not an IDX image file of unsigned bytes, holds images of
        another size, is damaged (corrupt gzip stream) or is shorter or longer than its header
        says.
    """
    pixels = _read_idx(Path(path), "images")
    return pixels.reshape(-1, IMAGE_PIXELS)


def read_labels(path: str | Path) -> np.ndarray:
    """Read an IDX file of MNIST labels.

    Parameters
    ----------
    path : str or Path
        The file, raw or gzip-compressed.

    Returns
    -------
    numpy.ndarray
        A writable ``uint8`` array of shape ``(n,)`` with values in ``0..9``.

    Raises
    ------
    SegdendError
        If the file cannot be read, is not an IDX label file of unsigned bytes, is damaged or
        has the wrong length, or holds a label outside ``0..9``.
    """
    path = Path(path)
    labels = _read_idx(path, "labels")
    out_of_range = np.flatnonzero(labels >= N_CLASSES)
    if out_of_range.size:
        index = int(out_of_range[0])
        raise SegdendError(
            f"{_describe(path)} holds label {labels[index]} at index {index} "
            f"({out_of_range.size} labels in all are outside 0..9), so it is not an MNIST "
            f"label file; {_FIX}"
        )
    return labels


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as an uncompressed IDX file of unsigned bytes.

    The array's own shape is written, so MNIST images must be passed as ``(n, 28, 28)`` (for
    example ``images.reshape(-1, 28, 28)``) to reproduce the distributed files byte for byte,
    and hence their MD5 checksums.

    Parameters
    ----------
    array : numpy.ndarray
        A ``uint8`` array with 1 to 255 dimensions, each smaller than 2**32.

    Returns
    -------
    bytes
        The header followed by the elements in row-major order.

    Raises
    ------
    ValueError
        If the array is not ``uint8`` or its shape cannot be expressed in IDX.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"IDX unsigned-byte files need a uint8 array, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX files hold 1 to 255 dimensions, got {array.ndim}")
    if any(size >= 2**32 for size in array.shape):
        raise ValueError(f"IDX dimensions must be below 2**32, got shape {array.shape}")
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, UNSIGNED_BYTE, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: str | Path, array: np.ndarray, gzip: bool) -> None:
    """Write an array as an IDX file, atomically.

    Parameters
    ----------
    path : str or Path
        Destination. Its directory is created if needed; an existing file is replaced only
        once the new one is complete.
    array : numpy.ndarray
        A ``uint8`` array, encoded as by :func:`idx_bytes` (pass MNIST images as
        ``(n, 28, 28)``).
    gzip : bool
        Whether to gzip-compress the file. The compressed stream carries no timestamp, so equal
        arrays give equal files.

    Raises
    ------
    ValueError
        If the array cannot be encoded as IDX.
    SegdendError
        If the file cannot be written.
    """
    path = Path(path)
    data = idx_bytes(array)
    if gzip:
        data = gzip_format.compress(data, compresslevel=_COMPRESS_LEVEL, mtime=0)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise SegdendError(
            f"cannot write {path}: {exc.strerror or exc}; check that its directory is writable "
            "and the disk is not full"
        ) from None


def _describe(path: Path) -> str:
    """Name a file the way every message of this module does."""
    return f"{path.name} in {path.parent}"


def _read_idx(path: Path, kind: IdxKind) -> np.ndarray:
    """Read and validate one IDX file, returning its elements as a flat ``uint8`` array."""
    where = _describe(path)
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise SegdendError(
            f"cannot open {where}: {exc.strerror or exc}; check the path and its permissions"
        ) from None
    compressed = False
    with raw:
        try:
            compressed = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
            raw.seek(0)
            if not compressed:
                return _parse(raw, where, kind, unit="bytes")
            with gzip_format.GzipFile(fileobj=raw, mode="rb") as stream:
                return _parse(stream, where, kind, unit="bytes uncompressed")
        except (OSError, EOFError, zlib.error) as exc:
            # BadGzipFile is an OSError, and a gzip stream cut short ends in EOFError.
            if compressed:
                detail = str(exc) or type(exc).__name__
                raise SegdendError(
                    f"{where} is a damaged or truncated gzip file ({detail}); {_FIX}"
                ) from None
            raise SegdendError(
                f"cannot read {where}: {getattr(exc, 'strerror', None) or exc}; "
                "check the file and its permissions"
            ) from None


def _parse(stream: BinaryIO, where: str, kind: IdxKind, unit: str) -> np.ndarray:
    """Validate the header and length of an (uncompressed) IDX stream and return its payload."""
    ndim = 3 if kind == "images" else 1
    header_bytes = 4 + 4 * ndim

    magic_bytes = _read_up_to(stream, 4)
    if len(magic_bytes) < 4:
        raise SegdendError(
            f"{where} is truncated: an IDX {kind} header needs {header_bytes} {unit}, "
            f"but the file has {len(magic_bytes)}; {_FIX}"
        )
    magic = int.from_bytes(magic_bytes, "big")
    _check_magic(magic, where, kind)

    dims_bytes = _read_up_to(stream, 4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise SegdendError(
            f"{where} is truncated: an IDX {kind} header needs {header_bytes} {unit}, "
            f"but the file has {4 + len(dims_bytes)}; {_FIX}"
        )
    dims = struct.unpack(f">{ndim}I", dims_bytes)
    if kind == "images" and dims[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise SegdendError(
            f"{where} holds images of {dims[1]}x{dims[2]} pixels, but MNIST images are "
            f"{IMAGE_SIDE}x{IMAGE_SIDE}; it is not an MNIST image file, {_FIX}"
        )

    count = dims[0]
    payload_bytes = math.prod(dims)
    expected = header_bytes + payload_bytes
    payload = _read_up_to(stream, payload_bytes)
    if len(payload) < payload_bytes:
        raise SegdendError(
            f"{where} is truncated: its header declares {count} {kind}, which take "
            f"{expected} {unit}, but the file has {header_bytes + len(payload)}; {_FIX}"
        )
    excess, exhausted = _count_remaining(stream)
    if excess:
        actual = f"{expected + excess}" if exhausted else f"more than {expected + excess}"
        raise SegdendError(
            f"{where} is longer than its header says: {count} {kind} take {expected} {unit}, "
            f"but the file has {actual}; {_FIX}"
        )
    # A bytearray keeps the array writable without another copy.
    return np.frombuffer(payload, dtype=np.uint8)


def _check_magic(magic: int, where: str, kind: IdxKind) -> None:
    """Explain, as precisely as the header allows, why ``magic`` is not the one expected."""
    expected, other, other_kind, ndim = (
        (IMAGE_MAGIC, LABEL_MAGIC, "labels", 3)
        if kind == "images"
        else (LABEL_MAGIC, IMAGE_MAGIC, "images", 1)
    )
    if magic == expected:
        return
    if magic == other:
        raise SegdendError(
            f"{where} holds {other_kind} (IDX magic 0x{magic:08X}), not {kind} "
            f"(0x{expected:08X}); check that the MNIST files are not swapped or misnamed"
        )
    data_type, dimensions = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 == 0 and dimensions == ndim and data_type != UNSIGNED_BYTE:
        raise SegdendError(
            f"{where} stores IDX data type 0x{data_type:02X}, but MNIST files hold unsigned "
            f"bytes (0x{UNSIGNED_BYTE:02X}); it is not an MNIST {kind} file, {_FIX}"
        )
    raise SegdendError(
        f"{where} has magic number 0x{magic:08X}, not 0x{expected:08X} (IDX {kind}); "
        f"it is not an MNIST {kind} file, {_FIX}"
    )


def _read_up_to(stream: BinaryIO, size: int) -> bytearray:
    """Read ``size`` bytes, or fewer if the stream ends first."""
    buffer = bytearray()
    while len(buffer) < size:
        chunk = stream.read(min(_CHUNK_BYTES, size - len(buffer)))
        if not chunk:
            break
        buffer += chunk
    return buffer


def _count_remaining(stream: BinaryIO) -> tuple[int, bool]:
    """Count the bytes left in ``stream``, up to a limit.

    Returns the count and whether the end was reached. Reaching the end of a gzip stream is
    also what makes :mod:`gzip` verify its CRC, so even a file of the right length is read to
    its end.
    """
    count = 0
    while count <= _EXCESS_COUNT_LIMIT:
        chunk = stream.read(_CHUNK_BYTES if count else 1)
        if not chunk:
            return count, True
        count += len(chunk)
    return count, False
