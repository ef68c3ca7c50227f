"""The ``evdlm`` command: every typer command of evdlm lives in this package, one module per group
(``scenario``, ``forecast``, ``train`` (run, evaluate, train, tune), ``serve`` (serve, simulate)); the library
packages carry no CLI. Heavy imports stay inside the commands so ``evdlm --help`` stays fast."""

from __future__ import annotations

import typer

from evdlm.cli.forecast import forecast_app
from evdlm.cli.scenario import scenario_app
from evdlm.cli.serve import register as register_serving
from evdlm.cli.train import register as register_training

app = typer.Typer(
    name="evdlm",
    help="Dynamic load management for EV charging sites.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(scenario_app, name="scenario")
app.add_typer(forecast_app, name="forecast")
register_training(app)
register_serving(app)


def main() -> None:
    app()
