"""``evdlm scenario ...`` (import, generate, check).

Bad input ends with one line on stderr, ``error: FILE: ... why``, and exit code 2, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from evdlm.cli.errors import bad_input

scenario_app = typer.Typer(help="Create, import and check scenarios.", no_args_is_help=True)

T = TypeVar("T")


class KindOption(StrEnum):
    depot = "depot"
    workplace = "workplace"
    residential = "residential"
    public = "public"


class FormatOption(StrEnum):
    acn = "acn"
    acn_csv = "acn-csv"
    elaad = "elaad"


class EnergyOption(StrEnum):
    delivered = "delivered"
    requested = "requested"


def _guarded(action: Callable[[], T]) -> T:
    """Run ``action``; bad input becomes one line on stderr and exit code 2."""
    from envs.config import ConfigError

    try:
        return action()
    except (ConfigError, ValueError, OSError) as err:
        raise bad_input(err) from None


def _print_summary(path: Path, step: str | None) -> None:
    from envs.scenario import load_scenario, scenario_summary

    scenario = load_scenario(path, step=step)
    for line in scenario_summary(scenario).lines():
        typer.echo(line)


@scenario_app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="folder to write the scenario to")],
    kind: Annotated[KindOption, typer.Option(help="kind of site")] = KindOption.depot,
    chargers: Annotated[int, typer.Option(min=1, help="number of chargers")] = 20,
    days: Annotated[int, typer.Option(min=1, help="length in days")] = 7,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same bytes)")] = 0,
    step: Annotated[str, typer.Option(help="time-series resolution")] = "15min",
    start: Annotated[
        str, typer.Option(help="first instant, ISO 8601 with offset")
    ] = "2025-06-02T00:00:00+02:00",
    v2g: Annotated[bool, typer.Option("--v2g/--no-v2g", help="bidirectional AC chargers")] = False,
    pv: Annotated[bool, typer.Option("--pv/--no-pv", help="rooftop PV")] = True,
    battery: Annotated[bool, typer.Option("--battery/--no-battery", help="stationary battery")] = False,
    demand_charge: Annotated[
        float | None, typer.Option(help="per kW of the monthly peak import (default by kind)")
    ] = None,
) -> None:
    """Generate a plausible scenario folder (site.yaml, sessions.csv, timeseries.csv)."""

    def run() -> None:
        from envs.generate import generate_scenario
        from envs.scenario import save_scenario

        scenario = generate_scenario(
            kind.value, chargers, days, seed, step, start, v2g, pv, battery, demand_charge
        )
        save_scenario(scenario, out)
        typer.echo(f"wrote {out}")
        _print_summary(out, None)

    _guarded(run)


@scenario_app.command(name="import")
def import_(
    file: Annotated[
        Path, typer.Argument(help="ACN-Data JSON, ACN-Data session CSV(.gz) or ElaadNL CSV file")
    ],
    format: Annotated[FormatOption, typer.Option("--format", help="format of FILE")],
    site: Annotated[Path, typer.Option("--site", help="site YAML the sessions are placed on")],
    out: Annotated[Path, typer.Option("--out", help="folder to write the scenario to")],
    timeseries: Annotated[
        Path | None, typer.Option(help="native timeseries CSV (default: a generated profile)")
    ] = None,
    map_chargers: Annotated[
        str | None,
        typer.Option(
            help="'auto' (round robin onto free chargers) or a mapping file (CSV source,charger or YAML)"
        ),
    ] = None,
    step: Annotated[str, typer.Option(help="time-series resolution")] = "15min",
    profile: Annotated[
        KindOption, typer.Option(help="load shape of a generated time series")
    ] = KindOption.workplace,
    energy: Annotated[
        EnergyOption, typer.Option(help="ACN, ACN CSV: energy delivered or requested")
    ] = EnergyOption.delivered,
    seed: Annotated[int, typer.Option(help="seed of a generated time series")] = 0,
) -> None:
    """Convert real session data into a native scenario folder; unplaceable sessions are reported."""

    def run() -> None:
        from envs.loaders import load_acn, load_acn_csv, load_elaad
        from envs.scenario import save_scenario

        if format is FormatOption.acn:
            result = load_acn(file, site, map_chargers, timeseries, step, energy.value, profile.value, seed)
        elif format is FormatOption.acn_csv:
            result = load_acn_csv(
                file, site, map_chargers, timeseries, step, energy.value, profile.value, seed
            )
        else:
            result = load_elaad(file, site, map_chargers, timeseries, step, profile.value, seed)
        save_scenario(result.scenario, out)
        typer.echo(result.report())
        dropped_path = out / "dropped_sessions.csv"
        if len(result.dropped):
            result.dropped.to_csv(dropped_path, index=False, lineterminator="\n")
            typer.echo(f"dropped sessions listed in {dropped_path}")
        elif dropped_path.exists():
            dropped_path.unlink()  # from an earlier import into the same folder
        typer.echo(f"wrote {out}")
        _print_summary(out, None)

    _guarded(run)


@scenario_app.command()
def check(
    folder: Annotated[Path, typer.Argument(help="scenario folder")],
    step: Annotated[str | None, typer.Option(help="resample the time series to this step first")] = None,
) -> None:
    """Validate a scenario folder and print its summary."""
    _guarded(lambda: _print_summary(folder, step))
