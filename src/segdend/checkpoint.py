"""Checkpoints and other run files, written atomically.

A checkpoint is ONE safetensors file: the arrays (weights, feedback, carried neuron state,
the current epoch's per-example losses) plus JSON metadata in the safetensors header (format
version, package version, config fingerprint, position in the run, metrics so far). One file
means the arrays and their metadata can never disagree. Every file is written to a temporary
name in the same directory, fsynced, then renamed over the old one, so a crash at any point
leaves the previous version valid. Nothing here uses pickle.
"""

from __future__ import annotations

import errno
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from segdend.atomic import atomic_write_bytes as _atomic_write
from segdend.errors import SegdendError

FORMAT_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes, *, _before_rename: Callable[[], None] | None = None
                       ) -> None:
    """Write a run file atomically (:func:`segdend.atomic.atomic_write_bytes`); a full disk or
    another OS error becomes a one-line SegdendError and leaves ``path`` untouched."""
    try:
        _atomic_write(Path(path), data, _before_rename=_before_rename)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise SegdendError(
                f"no space left on the device while writing {path}; free some space and resume "
                "(the previous file is intact)"
            ) from None
        raise SegdendError(f"cannot write {path}: {err.strerror or err}") from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def trajectory_fields(config_json: str) -> dict[str, Any]:
    """The parts of a config that determine a run's trajectory (what
    :func:`config_fingerprint` hashes): everything but output, data, names, the epoch count
    (a run may be extended) and how or how often it is tested and stored."""
    data = json.loads(config_json)
    for volatile in ("output", "data", "description", "name"):
        data.pop(volatile, None)
    data.get("training", {}).pop("epochs", None)  # a run may be extended
    for key in ("test_every", "test_repeats", "quick_test_every", "quick_test_examples",
                "checkpoint_every", "engine", "threads", "test_examples", "test_threads",
                "overlap_test"):
        data.get("training", {}).pop(key, None)
    return data


def config_fingerprint(config_json: str) -> str:
    """A short hash of the parts of a config that determine a run's trajectory."""
    blob = json.dumps(trajectory_fields(config_json), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_checkpoint(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                    **kwargs: Any) -> None:
    """Write a checkpoint atomically (see module docstring)."""
    from segdend import __version__

    header = {"format_version": FORMAT_VERSION, "segdend_version": __version__, **meta}
    tensors = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    blob = save(tensors, metadata={"segdend": json.dumps(header)})
    atomic_write_bytes(path, blob, **kwargs)


def load_checkpoint(path: Path, *, fingerprint: str | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint, refusing corrupted files and incompatible versions or configs."""
    path = Path(path)
    if not path.is_file():
        raise SegdendError(f"checkpoint {path} does not exist")
    try:
        arrays = load_file(str(path))
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        meta = json.loads(header["__metadata__"]["segdend"])
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        raise SegdendError(
            f"checkpoint {path} is corrupted or not a segdend checkpoint ({type(err).__name__}); "
            "resume from an earlier checkpoint or start the run again"
        ) from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise SegdendError(
            f"checkpoint {path} has format version {meta.get('format_version')} but this segdend "
            f"reads version {FORMAT_VERSION}; use the segdend version that wrote it"
        )
    if fingerprint is not None and meta.get("config_fingerprint") != fingerprint:
        raise SegdendError(
            f"checkpoint {path} was written for a different config (fingerprint "
            f"{meta.get('config_fingerprint')}, this run {fingerprint}); resume with the run's "
            "own config.json or start a new run"
        )
    for name, a in arrays.items():
        # Recordings may hold NaN by definition (the angle between an error vector and a zero
        # one is undefined, MODEL.md 10); weights, state and losses may not.
        if name.startswith("partial.record."):
            continue
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise SegdendError(f"checkpoint {path} holds non-finite values in {name}; it is unusable")
    return arrays, meta


def checkpoint_params(path: Path) -> tuple[Any, dict[str, Any]]:
    """The weights (:class:`~segdend.network.Params`) and metadata of a checkpoint file."""
    from segdend.network import Params

    arrays, meta = load_checkpoint(Path(path))
    prefix = "params."
    params = Params.from_arrays({k[len(prefix):]: v for k, v in arrays.items()
                                 if k.startswith(prefix)})
    return params, meta
