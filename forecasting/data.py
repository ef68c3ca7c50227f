"""Data access: the forecast targets of a scenario on its time grid, and how each is treated.

Targets (``--target`` on the command line) and the series they stand for:

* ``base_load`` - ``base_load_kw``, the site's non-EV load, kW;
* ``pv`` - ``pv_kw``, PV generation, kW (a clear-sky-ratio model);
* ``ev_demand`` - ``ev_arrivals``, EVs arriving per interval (a count), and ``ev_energy_kwh``, the energy
  those EVs ask for, kWh per interval (summed over the sessions arriving in it).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from envs.scenario import Scenario
from forecasting.features import Location
from forecasting.history import CleaningRules
from forecasting.models import GBRParams, SeriesSpec

Target = Literal["base_load", "pv", "ev_demand"]
TARGETS: tuple[str, ...] = ("base_load", "pv", "ev_demand")
TARGET_SERIES: dict[str, tuple[str, ...]] = {
    "base_load": ("base_load_kw",),
    "pv": ("pv_kw",),
    "ev_demand": ("ev_arrivals", "ev_energy_kwh"),
}
ALL_SERIES: tuple[str, ...] = ("base_load_kw", "pv_kw", "ev_arrivals", "ev_energy_kwh")


def ev_demand_frame(sessions: pd.DataFrame, index: pd.DatetimeIndex) -> pd.DataFrame:
    """EV arrivals and energy asked per interval of ``index`` (a regular grid of step starts).

    A session counts in the interval its arrival falls in; arrivals outside the grid are ignored.
    """
    if len(index) < 2:
        raise ValueError("the time grid needs at least two steps")
    step = pd.Timedelta(index[1] - index[0])
    n = len(index)
    arrivals = np.zeros(n)
    energy = np.zeros(n)
    if len(sessions):
        start = pd.Timestamp(index[0])
        arrival = pd.DatetimeIndex(sessions["arrival"]).tz_convert(index.tz)
        pos = np.asarray((arrival - start) // step, dtype=np.int64)
        inside = (pos >= 0) & (pos < n)
        np.add.at(arrivals, pos[inside], 1.0)
        np.add.at(energy, pos[inside], sessions["energy_kwh"].to_numpy(dtype=float)[inside])
    return pd.DataFrame({"ev_arrivals": arrivals, "ev_energy_kwh": energy}, index=index)


def scenario_series(scenario: Scenario) -> pd.DataFrame:
    """All forecastable series of a scenario on its time grid (:data:`ALL_SERIES` columns)."""
    ts = scenario.timeseries
    ev = ev_demand_frame(scenario.sessions, pd.DatetimeIndex(ts.index))
    return pd.concat([ts[["base_load_kw", "pv_kw"]], ev], axis=1)


def target_frame(scenario: Scenario, target: str) -> pd.DataFrame:
    """The series of one target (:data:`TARGET_SERIES`)."""
    if target not in TARGET_SERIES:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    return scenario_series(scenario)[list(TARGET_SERIES[target])]


def series_spec(column: str, timezone: str, location: Location | None = None) -> SeriesSpec:
    """How a series is cleaned and bounded: zero runs are genuine for PV and EV demand, not for base load."""
    if column not in ALL_SERIES:
        raise ValueError(f"unknown series {column!r}; choose one of {', '.join(ALL_SERIES)}")
    loc = Location.for_timezone(timezone) if location is None else location
    zero_ok = column != "base_load_kw"
    # EV arrivals and energies repeat exactly (0, or the same request) by nature: no stuck-meter check
    stuck = 10**9 if column.startswith("ev_") else 8
    return SeriesSpec(
        name=column,
        timezone=timezone,
        location=loc,
        rules=CleaningRules(stuck_steps=stuck, allow_zero_runs=zero_ok),
        nonnegative=column != "base_load_kw",
    )


def gbr_params(column: str, base: GBRParams | None = None) -> GBRParams:
    """Gradient-boosting settings per series: PV as a clear-sky ratio, arrivals as counts."""
    from dataclasses import replace

    params = GBRParams() if base is None else base
    if column == "pv_kw":
        return replace(params, target="clear_sky_ratio", residual_to="profile_14d")
    if column == "ev_arrivals":
        return replace(params, count_data=True)
    return params


def scenario_location(scenario: Scenario) -> Location:
    """Where the scenario's site is: coordinates of its time zone (a site config has none)."""
    return Location.for_timezone(scenario.site.timezone)


def site_model(column: str, model: str = "gbr") -> str:
    """The model a site's ``column`` is forecast with when ``model`` is asked for: with ``gbr``, PV is
    forecast through its clear-sky index (:mod:`forecasting.clearsky`), which beat gradient boosting on
    the real-data weeks (``python -m benchmarks.forecasting --real``)."""
    return "clear_sky_index" if model == "gbr" and column == "pv_kw" else model
