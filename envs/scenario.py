"""Scenarios: a site, the EV sessions that visit it and the site's time series.

A scenario on disk is a folder with ``site.yaml``, ``sessions.csv`` and ``timeseries.csv`` (documented in
``docs/scenario-format.md``). In memory it is a frozen :class:`Scenario` holding the validated
:class:`~envs.config.SiteConfig` and two validated pandas frames. Bad input is a :class:`ConfigError`
naming the file, the row and the column, never a silent fix.

In memory every timestamp is ``datetime64[ns, UTC]``; on disk times are ISO 8601 with the offset of the
site's time zone. Rows in error messages are numbered as in the CSV file: the header is row 1, the first
record row 2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from envs.config import ConfigError, SiteConfig, dump_site, load_site
from envs.scenario_checks import (
    MAX_EV_POWER_KW,
    MAX_PRICE_PER_KWH,
    MAX_SESSION_ENERGY_KWH,
    SESSION_DECLARED,
    SESSION_DEFAULTS,
    SESSION_OPTIONAL,
    SESSION_REQUIRED,
    TIMESERIES_COLUMNS,
    TIMESERIES_WEATHER,
    check_consistency,
    grid_step,
    plural,
    resample_timeseries,
    shown,
    validate_sessions,
    validate_timeseries,
)

__all__ = [
    "MAX_EV_POWER_KW",
    "MAX_PRICE_PER_KWH",
    "MAX_SESSION_ENERGY_KWH",
    "SESSION_DECLARED",
    "SESSION_DEFAULTS",
    "SESSION_OPTIONAL",
    "SESSION_REQUIRED",
    "TIMESERIES_COLUMNS",
    "TIMESERIES_WEATHER",
    "Scenario",
    "ScenarioSummary",
    "charger_load_kw",
    "check_consistency",
    "grid_step",
    "load_scenario",
    "make_scenario",
    "plural",
    "read_csv",
    "resample_timeseries",
    "save_scenario",
    "scenario_summary",
    "session_rate_kw",
    "shown",
    "spread_load_kw",
    "uncontrolled_load_kw",
    "validate_sessions",
    "validate_timeseries",
]


@dataclass(frozen=True, eq=False)
class Scenario:
    """A site with its sessions and time series.

    ``sessions``: one row per EV visit, columns :data:`SESSION_REQUIRED` + :data:`SESSION_OPTIONAL`;
    ``arrival``/``departure`` are tz-aware timestamps, ``energy_kwh`` is what the driver asks for by
    departure, NaN in optional numeric columns means unknown.
    ``timeseries``: indexed by a regular tz-aware ``DatetimeIndex`` (the step start), columns
    :data:`TIMESERIES_COLUMNS` in kW and currency per kWh.

    ``==`` is identity (frames have no single truth value); compare contents with :meth:`equals`.
    """

    site: SiteConfig
    sessions: pd.DataFrame
    timeseries: pd.DataFrame
    name: str = "scenario"

    @property
    def step(self) -> pd.Timedelta:
        return grid_step(self.timeseries.index)

    @property
    def dt_h(self) -> float:
        """Length of one time-series step in hours."""
        return self.step.total_seconds() / 3600.0

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.timeseries.index[0])

    @property
    def end(self) -> pd.Timestamp:
        """End of the last step (exclusive)."""
        return pd.Timestamp(self.timeseries.index[-1]) + self.step

    @property
    def n_steps(self) -> int:
        return len(self.timeseries)

    def with_timeseries(self, timeseries: pd.DataFrame) -> Scenario:
        return Scenario(self.site, self.sessions, validate_timeseries(timeseries, "<timeseries>"), self.name)

    def equals(self, other: Scenario) -> bool:
        """Same site, sessions and time series (values, dtypes and index); the name is not compared."""
        return (
            self.site == other.site
            and self.sessions.equals(other.sessions)
            and list(self.sessions.dtypes) == list(other.sessions.dtypes)
            and self.timeseries.equals(other.timeseries)
            and self.timeseries.index.equals(other.timeseries.index)
            and self.step == other.step
        )


# --------------------------------------------------------------------------- folder I/O


def load_scenario(path: str | Path, step: str | pd.Timedelta | None = None) -> Scenario:
    """Load a scenario folder; the time series is resampled to ``step`` when given."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a scenario folder")
    site = load_site(folder / "site.yaml")
    sessions_path = folder / "sessions.csv"
    ts_path = folder / "timeseries.csv"
    for p in (sessions_path, ts_path):
        if not p.exists():
            raise ConfigError(
                f"{p}: missing (a scenario folder holds site.yaml, sessions.csv, timeseries.csv)"
            )
    sessions_raw = read_csv(sessions_path, dtype={"session_id": str, "charger_id": str})
    ts_raw = read_csv(ts_path)
    sessions = validate_sessions(sessions_raw, site, str(sessions_path))
    ts = validate_timeseries(ts_raw, str(ts_path))
    if step is not None:
        ts = resample_timeseries(ts, step)
    check_consistency(site, sessions, ts, str(folder))
    return Scenario(site, sessions, ts, name=folder.name)


def read_csv(path: str | Path, **kwargs: object) -> pd.DataFrame:
    """``pandas.read_csv`` whose failures are :class:`ConfigError` naming the file."""
    try:
        return pd.read_csv(path, **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{path}: cannot parse CSV: {str(err).strip().splitlines()[0]}") from None


def save_scenario(scenario: Scenario, path: str | Path) -> Path:
    """Write a scenario folder; the same scenario always gives the same bytes.

    Floats are written in their shortest exact form, so loading the folder gives back equal frames.
    Times are written in the site's time zone, with their offset. The :data:`SESSION_DECLARED` columns
    are written only where some session's declared values differ from its actual ones.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    dump_site(scenario.site, folder / "site.yaml")
    tz = scenario.site.timezone
    columns = list(SESSION_REQUIRED + SESSION_OPTIONAL)
    if not _declares(scenario.sessions):
        columns = [c for c in columns if c not in SESSION_DECLARED]
    sessions = scenario.sessions[columns].copy()
    for col in ("arrival", "departure", *(["declared_departure"] if "declared_departure" in columns else [])):
        sessions[col] = [t.isoformat() for t in pd.DatetimeIndex(sessions[col]).tz_convert(tz)]
    sessions.to_csv(folder / "sessions.csv", index=False, lineterminator="\n")
    weather = [c for c in TIMESERIES_WEATHER if c in scenario.timeseries.columns]
    ts = scenario.timeseries[list(TIMESERIES_COLUMNS) + weather].copy()
    ts.insert(0, "timestamp", [t.isoformat() for t in pd.DatetimeIndex(ts.index).tz_convert(tz)])
    ts.to_csv(folder / "timeseries.csv", index=False, lineterminator="\n")
    return folder


def _declares(sessions: pd.DataFrame) -> bool:
    """Whether some session declared other values than its actual departure and energy."""
    if not all(c in sessions.columns for c in SESSION_DECLARED):
        return False
    same_departure = np.array_equal(
        sessions["declared_departure"].to_numpy(), sessions["departure"].to_numpy()
    )
    same_energy = np.array_equal(
        sessions["declared_energy_kwh"].to_numpy(), sessions["energy_kwh"].to_numpy()
    )
    return not (same_departure and same_energy)


def make_scenario(
    site: SiteConfig, sessions: pd.DataFrame, timeseries: pd.DataFrame, name: str = "scenario"
) -> Scenario:
    """Build a validated in-memory scenario (the same checks as loading a folder)."""
    checked_sessions = validate_sessions(sessions, site, f"{name}/sessions")
    checked_ts = validate_timeseries(timeseries, f"{name}/timeseries")
    check_consistency(site, checked_sessions, checked_ts, name)
    return Scenario(site, checked_sessions, checked_ts, name)


# --------------------------------------------------------------------------- summary


def _steps_since_start(scenario: Scenario, times: pd.Series) -> np.ndarray:
    delta_ns = pd.DatetimeIndex(times).as_unit("ns").asi8 - scenario.start.as_unit("ns").value
    return np.asarray(delta_ns / scenario.step.value, dtype=float)


def _ramp_profile(n_steps: int, starts: np.ndarray, ends: np.ndarray, power_kw: np.ndarray) -> np.ndarray:
    """Mean kW per step of boxes ``power_kw`` on ``[starts, ends)`` (in steps from the grid start).

    The integral of the summed boxes is a sum of ramps ``p * (max(t - a, 0) - max(t - e, 0))``; it is
    evaluated at the step edges with sorted cumulative sums, so the cost is O((S + K) log S).
    """
    x = np.concatenate([starts, ends])
    w = np.concatenate([power_kw, -power_kw])
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    cum_w = np.concatenate([[0.0], np.cumsum(w)])
    cum_wx = np.concatenate([[0.0], np.cumsum(w * x)])
    edges = np.arange(n_steps + 1, dtype=float)
    k = np.searchsorted(x, edges, side="right")
    integral = edges * cum_w[k] - cum_wx[k]
    return np.asarray(np.diff(integral), dtype=float)


def session_rate_kw(scenario: Scenario) -> np.ndarray:
    """(S,) the fastest each session can charge, kW at the grid: min(charger rating, EV max)."""
    rated = {c.id: c.rated_power_kw for c in scenario.site.chargers}
    rated_kw = scenario.sessions["charger_id"].map(rated).to_numpy(float)
    return np.asarray(np.minimum(rated_kw, scenario.sessions["max_power_kw"].fillna(np.inf).to_numpy(float)))


def _grid_energy_kwh(scenario: Scenario) -> np.ndarray:
    eff = {c.id: c.efficiency for c in scenario.site.chargers}
    return np.asarray(
        scenario.sessions["energy_kwh"].to_numpy(float)
        / scenario.sessions["charger_id"].map(eff).to_numpy(float)
    )


def charger_load_kw(
    scenario: Scenario, mode: Literal["uncontrolled", "spread"] = "uncontrolled"
) -> np.ndarray:
    """(n_chargers, n_steps) mean kW per step of each charger, in the order of the site's chargers.

    ``mode`` is ``"uncontrolled"`` (see :func:`uncontrolled_load_kw`) or ``"spread"`` (see
    :func:`spread_load_kw`).
    """
    out = np.zeros((scenario.site.n_chargers, scenario.n_steps))
    if len(scenario.sessions) == 0:
        return out
    a, e, p = _session_boxes(scenario, mode)
    pos = scenario.sessions["charger_id"].map(scenario.site.charger_index()).to_numpy(int)
    for i in np.unique(pos):
        sel = pos == i
        out[i] = _ramp_profile(scenario.n_steps, a[sel], e[sel], p[sel])
    return out


def _session_boxes(
    scenario: Scenario, mode: Literal["uncontrolled", "spread"]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start and end (in steps from the grid start) and kW of each session's charging box."""
    a = _steps_since_start(scenario, scenario.sessions["arrival"])
    d = _steps_since_start(scenario, scenario.sessions["departure"])
    grid_kwh = _grid_energy_kwh(scenario)
    if mode == "spread":
        return a, d, grid_kwh / ((d - a) * scenario.dt_h)
    rate_kw = session_rate_kw(scenario)
    return a, np.minimum(d, a + grid_kwh / rate_kw / scenario.dt_h), rate_kw


def uncontrolled_load_kw(scenario: Scenario) -> np.ndarray:
    """(n_steps,) EV load, mean kW per step, when every EV charges at full speed from arrival.

    Each EV draws min(charger rating, EV max) from its arrival until its energy (plus charging losses)
    is delivered or it leaves, whichever comes first.
    """
    if len(scenario.sessions) == 0:
        return np.zeros(scenario.n_steps)
    return _ramp_profile(scenario.n_steps, *_session_boxes(scenario, "uncontrolled"))


def spread_load_kw(scenario: Scenario) -> np.ndarray:
    """(n_steps,) EV load, mean kW per step, when every EV charges at one constant power over its stay.

    The flattest way to deliver every session's energy one EV at a time; its peak (with the base load)
    tells how low a site limit can go before energy is necessarily missed.
    """
    if len(scenario.sessions) == 0:
        return np.zeros(scenario.n_steps)
    return _ramp_profile(scenario.n_steps, *_session_boxes(scenario, "spread"))


@dataclass(frozen=True)
class ScenarioSummary:
    """Key figures of a scenario, printed by ``evdlm scenario check`` and logged by ``evdlm run``."""

    name: str
    site: str
    start: str
    """ISO 8601, site time zone"""
    days: float
    step_min: float
    n_chargers: int
    n_sessions: int
    energy_asked_kwh: float
    """sum of what drivers ask for (battery side)"""
    undeliverable_sessions: int
    """sessions asking more than their charger delivers at full speed during the stay in the simulator
    (:func:`envs.episode.deliverable_kwh`: the fraction of each step the EV is plugged in, the charger's
    resolution grid)"""
    max_concurrent_evs: int
    peak_base_load_kw: float
    peak_pv_kw: float
    import_limit_kw: float
    uncontrolled_ev_peak_kw: float
    """peak mean kW per step of the EV load when every EV charges at full speed from arrival"""
    uncontrolled_site_peak_kw: float
    """peak net import with uncontrolled charging: base load + EVs - PV"""
    uncontrolled_steps_over_limit: int
    """steps where uncontrolled charging would import more than the limit"""
    spread_site_peak_kw: float
    """peak net import if every EV charged at one constant power over its whole stay"""

    @property
    def over_limit(self) -> bool:
        return self.uncontrolled_site_peak_kw > self.import_limit_kw

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def lines(self) -> list[str]:
        verdict = "EXCEEDS" if self.over_limit else "within"
        return [
            f"scenario            {self.name} (site {self.site})",
            f"period              {self.start}, {plural(self.days, 'day')} at {self.step_min:g} min steps",
            f"chargers            {self.n_chargers}",
            f"sessions            {self.n_sessions} (max {self.max_concurrent_evs} EVs at once, "
            f"{self.undeliverable_sessions} asking more than deliverable)",
            f"energy asked        {self.energy_asked_kwh:.1f} kWh",
            f"peak base load      {self.peak_base_load_kw:.1f} kW",
            f"peak PV             {self.peak_pv_kw:.1f} kW",
            f"import limit        {self.import_limit_kw:.1f} kW",
            f"uncontrolled EVs    peak {self.uncontrolled_ev_peak_kw:.1f} kW",
            f"uncontrolled site   peak {self.uncontrolled_site_peak_kw:.1f} kW: {verdict} the import limit "
            f"({self.uncontrolled_steps_over_limit} steps over)",
            f"spread charging     site peak {self.spread_site_peak_kw:.1f} kW",
        ]


def scenario_summary(scenario: Scenario) -> ScenarioSummary:
    """Sessions, energy asked, peak base load and what uncontrolled charging would peak at vs the limit."""
    ts = scenario.timeseries
    base = ts["base_load_kw"].to_numpy(float)
    pv = ts["pv_kw"].to_numpy(float)
    ev = uncontrolled_load_kw(scenario)
    site_uncontrolled = base + ev - pv
    spread = base + spread_load_kw(scenario) - pv
    from envs.episode import deliverable_kwh

    s = scenario.sessions
    # what the simulator lets uncontrolled charging deliver: sub-step presence, the charger's grid
    undeliverable = int(np.sum(s["energy_kwh"].to_numpy(float) > deliverable_kwh(scenario) + 1e-9))
    if len(s):
        times = np.concatenate([s["arrival"].to_numpy(), s["departure"].to_numpy()])
        delta = np.concatenate([np.ones(len(s)), -np.ones(len(s))])
        order = np.lexsort((delta, times))  # departures before arrivals at the same instant
        max_concurrent = int(np.max(np.cumsum(delta[order])))
    else:
        max_concurrent = 0
    limit = scenario.site.grid.import_limit_kw
    return ScenarioSummary(
        name=scenario.name,
        site=scenario.site.name,
        start=scenario.start.tz_convert(scenario.site.timezone).isoformat(),
        days=(scenario.end - scenario.start).total_seconds() / 86400.0,
        step_min=scenario.step.total_seconds() / 60.0,
        n_chargers=scenario.site.n_chargers,
        n_sessions=len(s),
        energy_asked_kwh=float(s["energy_kwh"].sum()),
        undeliverable_sessions=undeliverable,
        max_concurrent_evs=max_concurrent,
        peak_base_load_kw=float(base.max()),
        peak_pv_kw=float(pv.max()),
        import_limit_kw=limit,
        uncontrolled_ev_peak_kw=float(ev.max()),
        uncontrolled_site_peak_kw=float(site_uncontrolled.max()),
        uncontrolled_steps_over_limit=int(np.sum(site_uncontrolled > limit + 1e-9)),
        spread_site_peak_kw=float(spread.max()),
    )
