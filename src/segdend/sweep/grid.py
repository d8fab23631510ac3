"""Grids and condition names: ``--grid section.key=v1,v2,...`` and the directory name of
each grid point (``eta=0.1_0.1,g_A=0.05``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from segdend.config import apply_overrides
from segdend.errors import SegdendError

RESERVED_KEYS = {
    "training.seed": "seeds come from --seeds and --seed-start",
    "output.out": "each run's directory is OUT/<condition>/seed<k>; choose OUT with --out",
    "output.overwrite": "a sweep never overwrites runs; finished runs are skipped",
}
MAX_LABEL = 80


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split ``text`` on ``sep`` outside brackets, braces and quotes.

    ``"[0.1,0.1],[0.2,0.2]"`` gives ``["[0.1,0.1]", "[0.2,0.2]"]``; each part is stripped.
    """
    parts: list[str] = []
    depth, quote, start, i = 0, "", 0, 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise SegdendError(f"unbalanced {ch!r} at position {i} in {text!r}")
        elif ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    if quote:
        raise SegdendError(f"unterminated {quote} quote in {text!r}")
    if depth:
        raise SegdendError(f"unclosed bracket in {text!r}")
    parts.append(text[start:].strip())
    return parts


def parse_grid(item: str) -> tuple[str, list[str]]:
    """Parse one ``--grid section.key=v1,v2,...`` into the key and its value texts.

    Values are split on top-level commas (``training.eta=[0.1,0.1],[0.2,0.2]`` has two
    values) and each must be a valid ``--set`` value for the key (TOML; bare words are strings).
    """
    if "=" not in item:
        raise SegdendError(f"--grid {item!r} must look like section.key=value1,value2,...")
    key, _, raw = item.partition("=")
    key = key.strip()
    try:
        values = split_top_level(raw)
        if any(v == "" for v in values):
            raise SegdendError("a value is empty; separate values with single commas")
        if len(set(values)) != len(values):
            raise SegdendError("a value is listed twice")
        _check_key(key, "")
        for v in values:  # unknown keys and unparsable values, with the config's own messages
            apply_overrides({}, [f"{key}={v}"])
    except SegdendError as err:
        msg = str(err).replace(" in --set ", " in ").removeprefix(": ")
        raise SegdendError(f"--grid {item}: {msg}") from None
    return key, values


def _check_key(key: str, where: str) -> None:
    if key in RESERVED_KEYS:
        raise SegdendError(f"{where}: {key} cannot be set in a sweep ({RESERVED_KEYS[key]})"
                           .removeprefix(": "))


def _override_key(override: str) -> str:
    return override.partition("=")[0].strip()


def _value_label(text: str) -> str:
    from segdend.config import _parse_value

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "_".join(fmt(x) for x in v) or "empty"
        if isinstance(v, dict):
            return "_".join(f"{k}-{fmt(x)}" for k, x in v.items()) or "empty"
        return str(v)

    return fmt(_parse_value(text.strip()))


def safe_name(text: str) -> str:
    """A file-system-safe directory name for ``text`` (letters, digits, ``._=+-,``)."""
    name = re.sub(r"[^A-Za-z0-9._=+,-]+", "_", text).strip("_")
    if not name or name.startswith((".", "-")):
        name = "c" + name
    if len(name) > MAX_LABEL:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        name = name[:MAX_LABEL - 9] + "-" + digest
    return name


def condition_label(assignments: Sequence[tuple[str, str]], *, full_keys: bool = False) -> str:
    """The name of a grid point, e.g. ``eta=0.1_0.1`` or ``eta=0.1_0.1,g_A=0.05``.

    ``assignments`` are ``(section.key, value text)`` pairs; keys are shortened to their field
    name unless ``full_keys``.
    """
    parts = []
    for key, value in assignments:
        short = key if full_keys else key.split(".")[-1]
        parts.append(f"{short}={_value_label(value)}")
    return safe_name(",".join(parts))
