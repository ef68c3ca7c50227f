"""The two information modes of the real-data benchmark (:mod:`benchmarks.real`).

The optimum always plans with perfect foresight of the actual sessions and time series: it is the yardstick,
and :func:`benchmarks.real.run` runs it on the ``perfect`` inputs in every mode (the same plan and row in
both: on the declared scenario the simulator's projection bounds V2G discharge by the declared departure and
need, and lets an EV of unknown battery take its declared energy when that is more).
What the *policies* are told is the benchmark's mode:

* ``perfect``: the policies see what the optimum sees. Each session's declared departure and energy are
  replaced by the actual ones, and the forecast window holds the true time series
  (:class:`envs.forecast.PerfectForecast`). Any gap to the optimum is planning, not information: this is
  where the issue's targets apply (optimum cheapest, MPC within 3 %, rule-based within 5 %).
* ``declared``: the policies see what a live site sees: the drivers' declared departures and energies (the
  simulator still ends each session at its actual departure and scores its actual need) and base load and
  PV forecast by a fitted forecaster (:class:`forecasting.provider.ModelForecast`, the models ``evdlm
  forecast fit`` fits by default, fitted on the :data:`HISTORY_DAYS` days before the week; prices are
  day-ahead, hence known). Its figures are reported, not targeted: the gap mixes planning with what the
  policy could not know.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from agents.base import Policy
    from benchmarks.real import Week
    from envs.forecast import ForecastProvider
    from envs.scenario import Scenario

MODES: tuple[str, ...] = ("perfect", "declared")
"""The benchmark's information modes, in the order the table shows them."""
MODE_LABELS: dict[str, str] = {
    "perfect": "perfect: policies see the actual departures and energies and the true time series",
    "declared": "declared: policies see the drivers' declarations and fitted forecasts of base load and PV",
}
HISTORY_DAYS = 28
"""days before each week the declared mode's forecaster is fitted on"""


def check_modes(modes: list[str]) -> list[str]:
    """``modes`` validated (each one of :data:`MODES`, at least one)."""
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"unknown mode(s) {bad or modes}: choose from {', '.join(MODES)}")
    return modes


def perfect_scenario(scenario: Scenario) -> Scenario:
    """``scenario`` with every declared value replaced by the actual one (what the optimum sees)."""
    from envs.scenario import Scenario

    sessions = scenario.sessions.copy()
    if "declared_departure" in sessions.columns:
        sessions["declared_departure"] = sessions["departure"]
    if "declared_energy_kwh" in sessions.columns:
        sessions["declared_energy_kwh"] = sessions["energy_kwh"]
    return Scenario(scenario.site, sessions, scenario.timeseries, scenario.name)


def fitted_forecast(week: Week, cache: Path) -> ForecastProvider:
    """The declared mode's forecast provider for ``week``: base load and PV fitted (as ``evdlm forecast
    fit`` does) on the :data:`HISTORY_DAYS` days before the week, cached under ``cache``."""
    from benchmarks import real
    from forecasting.data import gbr_params, series_spec, site_model
    from forecasting.models import make_forecaster
    from forecasting.provider import ModelForecast, SiteForecaster

    path = cache / "forecasters" / f"{week.name}.joblib"
    if path.exists():
        return ModelForecast(SiteForecaster.load(path))
    start = pd.Timestamp(week.start, tz=real.TIMEZONE)
    first = start - pd.DateOffset(days=HISTORY_DAYS)
    index = pd.date_range(first.tz_convert("UTC"), start.tz_convert("UTC"), freq=real.STEP, inclusive="left")
    n = len(real.stations(week.site, cache))
    ts = real.site_timeseries(index, n)
    fitted = {}
    for col in ("base_load_kw", "pv_kw"):
        name = site_model(col)
        model = make_forecaster(
            name, series_spec(col, real.TIMEZONE), gbr_params(col) if name == "gbr" else None
        )
        fitted[col] = model.fit(ts[col])
    site = SiteForecaster(fitted, real.TIMEZONE, pd.Timedelta(real.STEP), f"{week.name}-history", start)
    site.save(path)
    return ModelForecast(site)


def mode_inputs(mode: str, week: Week, scenario: Scenario, cache: Path) -> tuple[Scenario, ForecastProvider]:
    """The scenario and forecast provider the policies get in ``mode``."""
    from envs.forecast import PerfectForecast

    if mode == "perfect":
        return perfect_scenario(scenario), PerfectForecast()
    if mode == "declared":
        return scenario, fitted_forecast(week, cache)
    raise ValueError(f"unknown mode {mode!r}: choose from {', '.join(MODES)}")


def mode_policies(mode: str, week: Week, policies: list[str], cache: Path) -> list[str | Policy]:
    """The policies as evaluated in ``mode``: by name, except the MPC in ``declared`` mode, which plans for
    the EVs still to come from a demand profile (:class:`agents.mpc_demand.ProfileDemand`) fitted on the
    sessions of the :data:`HISTORY_DAYS` days before the week (from the period's first day where it starts
    later) instead of the week's own sessions (in ``perfect`` mode it reads them: a perfect forecast of the
    demand to come), and the rule-based DLM, whose record of arrivals starts from that profile in both
    modes (a site's log of past sessions; without it the first day is planned blind) and which is told
    how much more than declared the EVs of those sessions took (declared mode; it then offers every EV
    whose declared energy is in up to that much more: :func:`agents.rule_based.top_up_kw`)."""
    if "rule_based" not in policies and (mode != "declared" or "mpc" not in policies):
        return list(policies)
    from agents.mpc import ModelPredictiveControl
    from agents.mpc_demand import ProfileDemand
    from agents.rule_based import RuleBasedDLM
    from agents.rule_drivers import DepartureLog, under_declared_kwh
    from benchmarks import real

    start = pd.Timestamp(week.start, tz=real.TIMEZONE)
    period_start = pd.Timestamp(week.period.split()[0], tz=real.TIMEZONE)
    first = max(start - pd.DateOffset(days=HISTORY_DAYS), period_start)
    history = real.read_period(week.site, week.period, cache)
    demand = ProfileDemand.fit(history, real.TIMEZONE, first, start, real.CHARGER_KW)
    # the log as the policies see it: in perfect mode every driver declared what the EV took
    arrival = pd.DatetimeIndex(history["arrival"]).tz_convert(real.TIMEZONE)
    log = history[np.asarray((arrival >= first) & (arrival < start))]
    top_up = under_declared_kwh(log) if mode == "declared" else 0.0
    departures = DepartureLog.of(log) if mode == "declared" else None
    out: list[str | Policy] = []
    for p in policies:
        if p == "rule_based":
            out.append(
                RuleBasedDLM(
                    arrival_prior=demand,
                    top_up_kwh=top_up,
                    departure_log=departures,
                    top_up_min_steps=1.0 if mode == "declared" else 0.0,
                )
            )
        elif p == "mpc" and mode == "declared":
            out.append(ModelPredictiveControl(demand=demand, top_up_kwh=top_up))
        else:
            out.append(p)
    return out
