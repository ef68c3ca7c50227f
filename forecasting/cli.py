"""``evdlm forecast ...`` (fit, backtest)."""

from __future__ import annotations

import typer

forecast_app = typer.Typer(help="Fit and backtest forecasts.", no_args_is_help=True)
