"""Downloading the MNIST files from public mirrors into the cache."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from segdend.data.layout import MNIST_FILES, MNIST_MD5, SourceFailed, write_cache_files

__all__ = ["DEFAULT_MIRRORS", "download_to_cache"]

#: Mirrors tried in order; each serves the four ``.gz`` files under these prefixes.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

DEFAULT_TIMEOUT_S = 60.0

# The largest MNIST file is about 10 MB compressed and 47 MB uncompressed; these bounds only
# stop a misbehaving server from filling memory.
_MAX_DOWNLOAD_BYTES = 64 << 20
_MAX_UNCOMPRESSED_BYTES = 128 << 20
_CHUNK_BYTES = 1 << 20
_USER_AGENT = "segdend (MNIST loader)"


def download_to_cache(
    cache_dir: Path,
    mirrors: Sequence[str],
    *,
    log: Callable[[str], None],
    checksums: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> tuple[str, ...]:
    """Download the four MNIST files and store them in ``cache_dir`` as ``.gz`` files.

    Each file is fetched from the first mirror that serves content whose uncompressed MD5
    matches. Nothing is written until all four are in memory and verified, and each is then
    written atomically, so a failed download leaves the cache as it was.

    Parameters
    ----------
    cache_dir : Path
        Where to store the files (created if needed).
    mirrors : sequence of str
        URL prefixes; a file's URL is the prefix, a ``/`` if missing, and its ``.gz`` name.
    log : callable
        Receives one line per attempt.
    checksums : mapping, optional
        Expected MD5 of each uncompressed file, keyed by :attr:`MnistFile.key`; defaults to
        the real MNIST checksums (tests pass their own for small fake files).
    timeout : float
        Seconds to wait on each connection or read.

    Returns
    -------
    tuple of str
        The mirrors the files came from, in the order given.

    Raises
    ------
    SourceFailed
        If some file could not be obtained from any mirror, or the cache is not writable.
    """
    checksums = MNIST_MD5 if checksums is None else checksums
    if not mirrors:
        raise SourceFailed("no download mirrors were given")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceFailed(f"cannot create the cache {cache_dir} ({exc.strerror or exc})") from None

    downloaded: dict[str, bytes] = {}
    used: set[str] = set()
    for spec in MNIST_FILES:
        last_problem = "no mirror tried"
        for mirror in mirrors:
            url = mirror if mirror.endswith("/") else f"{mirror}/"
            url += spec.gz_name
            log(f"MNIST: downloading {url}")
            try:
                downloaded[spec.gz_name] = _fetch_verified(url, checksums[spec.key], timeout)
                used.add(mirror)
                break
            except SourceFailed as exc:
                last_problem = str(exc)
                log(f"MNIST: {url} failed: {last_problem}")
        else:
            raise SourceFailed(
                f"download of {spec.gz_name} failed from all {len(mirrors)} mirrors "
                f"(last: {last_problem})"
            )

    write_cache_files(cache_dir, downloaded)
    log(f"MNIST: downloaded the four files into {cache_dir}")
    return tuple(mirror for mirror in mirrors if mirror in used)


def _fetch_verified(url: str, md5: str, timeout: float) -> bytes:
    """Fetch ``url`` and return it gzip-compressed, after checking its uncompressed MD5."""
    data = _fetch(url, timeout)
    content = _gunzip(data) if data.startswith(b"\x1f\x8b") else data
    actual = hashlib.md5(content).hexdigest()
    if actual != md5:
        raise SourceFailed(f"MD5 mismatch (got {actual}, expected {md5})")
    if content is data:
        # A mirror serving the file uncompressed is still fine; the cache always holds .gz.
        return gzip.compress(content, compresslevel=6, mtime=0)
    return data


def _fetch(url: str, timeout: float) -> bytes:
    """Return the body of ``url``, turning every transport problem into :class:`SourceFailed`."""
    try:
        request = Request(url, headers={"User-Agent": _USER_AGENT})
        with urlopen(request, timeout=timeout) as response:
            body = bytearray()
            while len(body) <= _MAX_DOWNLOAD_BYTES:
                chunk = response.read(_CHUNK_BYTES)
                if not chunk:
                    return bytes(body)
                body += chunk
    except HTTPError as exc:
        raise SourceFailed(f"HTTP {exc.code} {exc.reason}") from None
    except URLError as exc:
        raise SourceFailed(f"cannot connect ({exc.reason})") from None
    except TimeoutError:
        raise SourceFailed(f"timed out after {timeout:g} s") from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        # ValueError: a mirror string that is not a URL at all.
        raise SourceFailed(f"{type(exc).__name__}: {exc}") from None
    raise SourceFailed(f"response larger than {_MAX_DOWNLOAD_BYTES >> 20} MiB")


def _gunzip(data: bytes) -> bytes:
    """Decompress a gzip payload, refusing corrupt streams and implausibly large results."""
    content = bytearray()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as stream:
            while len(content) <= _MAX_UNCOMPRESSED_BYTES:
                chunk = stream.read(_CHUNK_BYTES)
                if not chunk:
                    return bytes(content)
                content += chunk
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceFailed(f"corrupt gzip data ({exc})") from None
    raise SourceFailed(f"uncompresses to more than {_MAX_UNCOMPRESSED_BYTES >> 20} MiB")
