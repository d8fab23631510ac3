"""The Typer application object and helpers shared by the command modules.

The command line follows the conventions of git, pip and pytest: ``-h``/``--help``,
``--version``, shell completion, bare ``segdend`` prints the help, metavars in capitals
(``--epochs N``, ``RUN_DIR``), and every usage error is one ``error: ...`` line with exit
code 2 (no boxes, no traceback).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperGroup
from typer.exceptions import Abort

try:  # Typer >= 0.29 vendors its own click
    from typer import _click as click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older Typer on click
    import click
    from click.exceptions import UsageError

from segdend.errors import SegdendError

METAVARS = {"int": "N", "float": "X", "path": "PATH", "str": "TEXT", "list[str]": "TEXT",
            "bool": ""}
"""Typer's type labels (``<int>``) as the capitalised metavars users know (``N``)."""


def _metavar(param: Any, ctx: Any) -> str | None:
    try:
        label = param.display_type(ctx).strip("<>")  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - any odd type: keep Typer's own
        return None
    return METAVARS.get(label, label.upper())


class SegdendGroup(TyperGroup):
    """The ``segdend`` group: plain metavars, and usage errors as one ``error:`` line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ctx = click.Context(self)
        for command in self.commands.values():
            for param in command.params:
                if param.metavar is not None or getattr(param, "is_flag", False):
                    continue
                if isinstance(param, TyperArgument):
                    name = (param.name or "ARG").upper()
                    param.metavar = name
                    # Typer writes {NAME} and NAME <type>; git and pip write NAME
                    param.get_usage_pieces = lambda ctx, name=name: [name]  # type: ignore
                    param.display_type_rich = lambda ctx: None  # type: ignore
                else:
                    param.metavar = _metavar(param, ctx) or None

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UsageError as err:
            where = err.ctx.command_path if err.ctx is not None else "segdend"
            message = " ".join(err.format_message().split()).rstrip(".")
            print(f"error: {message[:1].lower() + message[1:]} (see `{where} --help`)",
                  file=sys.stderr)
            sys.exit(2)
        except click.ClickException as err:
            print(f"error: {' '.join(err.format_message().split())}", file=sys.stderr)
            sys.exit(err.exit_code)
        except Abort:
            print("aborted", file=sys.stderr)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="segdend",
    cls=SegdendGroup,
    help="Deep learning with segregated dendrites (Guerguiev, Lillicrap & Richards, eLife 2017).",
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from segdend import __version__

        print(f"segdend {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Deep learning with segregated dendrites (Guerguiev, Lillicrap & Richards, eLife 2017)."""
    if ctx.invoked_subcommand is None:
        print(ctx.get_help())
        raise typer.Exit()


def report_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn SegdendError (and an OS error or MemoryError nothing else caught) into a
    one-line message and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SegdendError as err:
            print(f"error: {err}", file=sys.stderr)
            raise typer.Exit(err.exit_code) from None
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            print(f"error: {where}{err.strerror or err}", file=sys.stderr)
            raise typer.Exit(2) from None
        except MemoryError:
            print("error: out of memory; choose smaller sizes (model.layers, "
                  "--test-examples)", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper


def say(line: str) -> None:
    console.print(line, highlight=False, markup=False)


def plural(n: int, word: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Aligned plain-text columns on stdout, never truncated (unlike a Rich table in a pipe)."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    for row in (headers, *rows):
        cells = [str(x).ljust(w) for x, w in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip())
