"""The Typer app and its single error boundary (library errors become messages and exit codes)."""

from __future__ import annotations

import warnings

import typer
from typer.core import TyperGroup

from rft_cli import __version__
from rft_cli.cli import render
from rft_cli.errors import EXIT_INTERRUPTED, ConfigError, RftError, RftWarning

_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
    """The library's own warnings read `Warning: <message>`; any other keeps Python's format."""
    if issubclass(category, RftWarning):
        render.warning(str(message))
    else:
        _showwarning(message, category, filename, lineno, file, line)


class UsageError(ConfigError):
    """A flag combination Typer cannot check itself (exit 2); the library never raises it."""


class _BoundaryGroup(TyperGroup):
    """Catches `RftError` and Ctrl-C once, for every command, so no user ever sees a traceback."""

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        from rft_cli.cli.help_format import classic_metavars

        super().__init__(*args, **kwargs)
        classic_metavars(
            self
        )  # `--valid FILE`, not Typer 0.29's `--valid <file>` (see help_format)

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            with warnings.catch_warnings():  # restores showwarning afterwards
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except RftError as exc:
            render.error(str(exc))
            raise typer.Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            render.error("interrupted (Ctrl-C)")
            raise typer.Exit(code=EXIT_INTERRUPTED) from None


app = typer.Typer(
    name="rft",
    cls=_BoundaryGroup,
    help=(
        "Reinforcement fine-tuning for open models on your own hardware: validate data, "
        "grade samples, train (SFT warm-up then PPO), evaluate, report.\n\n"
        "Exit codes: 0 ok, 1 data invalid / quality gate failed / run failed, "
        "2 usage or config error, 130 interrupted."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"rft {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """rft: reinforcement fine-tuning (ReFT) on your own hardware."""
