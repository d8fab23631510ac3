"""Command-line interface: ``segdend train | evaluate | presets | ...``.

Each command lives in its own module that registers itself on :data:`segdend.cli.app.app`;
modules that are not installed (optional features) are skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

from segdend.cli.app import app
from segdend.errors import SegdendError

COMMAND_MODULES = (
    "segdend.cli.train_cmd",
    "segdend.cli.experiments_cmd",
    "segdend.cli.sweep_cmd",
)


def _register() -> None:
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def main() -> None:
    _register()
    try:
        app()
    except SegdendError as err:  # raised outside a command (e.g. while parsing)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
