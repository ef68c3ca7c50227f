"""The ``evdlm`` command. Each part of evdlm contributes its subcommands; heavy imports stay inside them."""

from __future__ import annotations

import typer

from envs.cli import scenario_app
from forecasting.cli import forecast_app
from serving.cli import register as register_serving
from training.cli import register as register_training

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


if __name__ == "__main__":
    main()
