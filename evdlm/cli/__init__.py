"""The ``evdlm`` command: every typer command of evdlm lives in this package, one module per group
(``scenario``, ``forecast``, ``train`` (run, evaluate, train, tune), ``serve`` (serve, simulate)); the library
packages carry no CLI. Heavy imports stay inside the commands so ``evdlm --help`` stays fast."""

from __future__ import annotations

from typing import TextIO

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


LIBRARY_PACKAGES = ("mlflow", "ray", "setuptools", "pkg_resources")
"""packages whose warnings are advice to their developers (type hints, deprecations), not to a user"""


def _from_library(filename: str) -> bool:
    import os

    return any(f"{os.sep}{name}{os.sep}" in filename for name in LIBRARY_PACKAGES)


def quiet_libraries() -> None:
    """Keep library noise off stderr: MLflow's INFO and WARNING lines (database set-up, serialisation
    advice), its artifact download bars, and the warnings raised inside :data:`LIBRARY_PACKAGES` (dropped
    where they would be shown, since MLflow resets the warning filters around its own calls). evdlm says
    itself what went wrong; ``MLFLOW_LOGGING_LEVEL``, ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` or
    ``PYTHONWARNINGS`` set by the user win."""
    import os
    import warnings

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if os.environ.get("PYTHONWARNINGS"):
        return
    shown = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if not _from_library(str(filename)):
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main() -> None:
    quiet_libraries()
    app()
