"""The four MNIST files: their names, their kinds and the checksums of their contents."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from segdend.atomic import atomic_write_bytes
from segdend.data.idx import IdxKind

__all__ = ["MNIST_FILES", "MNIST_MD5", "MnistFile", "SourceFailed", "find_file",
           "write_cache_files"]


class SourceFailed(Exception):
    """One route to the MNIST files (cache, mirror download, package index) did not work.

    The message is a short clause, such as ``"download from 2 mirrors failed (HTTP 404)"``,
    meant to be listed with the others in the final error when every route fails.
    """


@dataclass(frozen=True)
class MnistFile:
    """One of the four files of the MNIST distribution.

    Attributes
    ----------
    key : str
        The matching field of :class:`segdend.data.MNIST`, e.g. ``"train_images"``.
    kind : {"images", "labels"}
        What the file holds.
    name : str
        The usual file name without ``.gz``, e.g. ``"train-images-idx3-ubyte"``.
    old_name : str
        The older spelling with a dot, e.g. ``"train-images.idx3-ubyte"``.
    md5 : str
        Hex MD5 of the uncompressed file.
    """

    key: str
    kind: IdxKind
    name: str
    old_name: str
    md5: str

    @property
    def gz_name(self) -> str:
        """The name under which the file is downloaded and cached."""
        return f"{self.name}.gz"

    @property
    def candidates(self) -> tuple[str, ...]:
        """Every accepted file name, in the order they are looked for."""
        return (self.gz_name, self.name, f"{self.old_name}.gz", self.old_name)


MNIST_FILES: tuple[MnistFile, ...] = (
    MnistFile(
        "train_images",
        "images",
        "train-images-idx3-ubyte",
        "train-images.idx3-ubyte",
        "6bbc9ace898e44ae57da46a324031adb",
    ),
    MnistFile(
        "train_labels",
        "labels",
        "train-labels-idx1-ubyte",
        "train-labels.idx1-ubyte",
        "a25bea736e30d166cdddb491f175f624",
    ),
    MnistFile(
        "test_images",
        "images",
        "t10k-images-idx3-ubyte",
        "t10k-images.idx3-ubyte",
        "2646ac647ad5339dbf082846283269ea",
    ),
    MnistFile(
        "test_labels",
        "labels",
        "t10k-labels-idx1-ubyte",
        "t10k-labels.idx1-ubyte",
        "27ae3e4e09519cfbb04c329615203637",
    ),
)

#: MD5 of each uncompressed file, keyed by :attr:`MnistFile.key`.
MNIST_MD5: Mapping[str, str] = MappingProxyType({spec.key: spec.md5 for spec in MNIST_FILES})


def find_file(directory: Path, spec: MnistFile) -> Path | None:
    """Return the first of ``spec``'s accepted names present in ``directory``, if any."""
    for name in spec.candidates:
        path = directory / name
        if path.is_file():
            return path
    return None


def write_cache_files(cache_dir: Path, files: Mapping[str, bytes]) -> None:
    """Write verified MNIST files into the cache, each atomically; a failure is this source's
    failure (:class:`SourceFailed`), never a partial file."""
    try:
        for name, data in files.items():
            atomic_write_bytes(cache_dir / name, data)
    except OSError as exc:
        raise SourceFailed(f"cannot write to the cache {cache_dir} ({exc.strerror or exc})") from None
