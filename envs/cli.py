"""``evdlm scenario ...`` (import, generate, check)."""

from __future__ import annotations

import typer

scenario_app = typer.Typer(help="Create, import and check scenarios.", no_args_is_help=True)
