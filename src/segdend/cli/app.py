"""The Typer application object and helpers shared by the command modules."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from segdend.errors import SegdendError

app = typer.Typer(
    name="segdend",
    help="Deep learning with segregated dendrites (Guerguiev, Lillicrap & Richards, eLife 2017).",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)


def report_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn SegdendError into a one-line message and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SegdendError as err:
            print(f"error: {err}", file=sys.stderr)
            raise typer.Exit(err.exit_code) from None

    return wrapper


def say(line: str) -> None:
    console.print(line, highlight=False, markup=False)
