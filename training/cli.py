"""``evdlm run``, ``evdlm evaluate``, ``evdlm train``, ``evdlm tune``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the training and evaluation commands to the root app."""

    @app.command()
    def run() -> None:
        """The main job on embedded defaults (grows as evdlm grows)."""
        typer.echo("evdlm: nothing to run yet")
