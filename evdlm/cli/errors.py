"""How every ``evdlm`` subcommand reports bad input: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import typer

EXIT_BAD_INPUT = 2


def bad_input(problem: object) -> typer.Exit:
    """Print ``error: <problem>`` (whitespace collapsed to one line) on stderr and return the exit to raise:
    ``raise bad_input(err) from None``. An exception without a message is named by its type."""
    text = " ".join(str(problem).split()) or type(problem).__name__
    typer.echo(f"error: {text}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)
