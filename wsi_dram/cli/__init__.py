"""The ``wsi-dram`` command line: one module per command, behind one typer app.

Each module in :data:`COMMAND_MODULES` defines ``register(app)``, which adds its
command(s) to the app. Commands parse options and call library functions; no
pipeline logic lives here. Errors a user can cause (:class:`WsiDramError`) become
one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import NoReturn

import click
import typer

from wsi_dram.errors import WsiDramError

COMMAND_MODULES = [
    "wsi_dram.cli.slides",  # info, annotations
    "wsi_dram.cli.synth",  # synth
    "wsi_dram.cli.preprocess",  # preprocess
    "wsi_dram.cli.train",  # train, evaluate, visualize
    "wsi_dram.cli.heatmap",  # heatmap
    "wsi_dram.cli.demo",  # demo, demo-real
]

app = typer.Typer(
    name="wsi-dram",
    help="Recurrent visual attention (DRAM) on whole-slide images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def package_version() -> str:
    """The installed distribution's version, else ``wsi_dram.__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wsi-dram")
    except PackageNotFoundError:  # run from a source tree, not installed
        import wsi_dram

        return wsi_dram.__version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"wsi-dram {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug lines."),
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Recurrent visual attention (DRAM) on whole-slide images."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:
        if exc.name != _name:
            raise
        continue
    _module.register(app)


def _from_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while handling a KeyboardInterrupt (its chain)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _interrupted() -> NoReturn:
    typer.secho("interrupted", err=True, fg=typer.colors.RED)
    sys.exit(130)


def main() -> None:
    """Entry point of the ``wsi-dram`` console script.

    Exit codes: 0 success, 1 a command's own failure (e.g. failed slides), 2 a
    user error (one ``error: ...`` line) or a usage error, 130 Ctrl-C (one
    ``interrupted`` line). Typer turns a KeyboardInterrupt into a silent
    ``SystemExit(130)`` (click: ``Abort``); both are recognised here.
    """
    try:
        app()
    except WsiDramError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except click.exceptions.Abort as exc:  # click's own conversion, if it reaches
        if _from_interrupt(exc):
            _interrupted()
        raise
    except SystemExit as exc:
        if exc.code == 130 and _from_interrupt(exc):
            _interrupted()
        raise
