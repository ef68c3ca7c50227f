"""Episodes: a window of a :class:`~envs.scenario.Scenario` compiled into per-step numpy arrays.

:func:`compile_episode` turns the window into time series, time-of-day features, forecast windows, which
session occupies which charger slot at each step, and a table of session attributes. It uses pandas and
runs once per reset; :class:`envs.sim.BatchSim` steps the result.

Time discretisation (step length ``dt``): a session's arrival and departure are rounded to the nearest step
boundary; the EV is plugged in from the start of its arrival step until the end of the step before its
departure step. Sessions shorter than half a step round to zero length and are dropped (counted in
:attr:`Episode.dropped_sessions`). A session that arrived before the episode window starts is present from
the first step with its request pro-rated to the part of its stay inside the window. EVs still plugged in
when the window ends are not charged the missing-energy penalty; only departures inside the episode count
(a departure exactly at the window end does count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from envs.core import BoolArray, FloatArray, IntArray, SiteArrays
from envs.costs import billing_period_ids
from envs.forecast import COLUMNS, BoundForecast, PerfectForecast
from envs.scenario import TIMESERIES_COLUMNS, Scenario

Int32Array = NDArray[np.int32]

N_TIME_FEATURES = 4
"""sin/cos of the time of day and of the time of week (site-local time)"""


class ForecastSource(Protocol):
    """A forecast provider (:class:`envs.forecast.PerfectForecast`, ``NoisyForecast``, fitted models)."""

    @property
    def name(self) -> str: ...

    def bind(self, timeseries: pd.DataFrame) -> BoundForecast: ...


@dataclass(frozen=True, eq=False)
class SessionTable:
    """Attributes of the sessions of one episode, indexed by the local session number ``0..S-1``.

    Energies in kWh on the EV battery side, powers in kW, ``departure_step`` relative to the window start
    (it may lie past the window end).
    """

    session_ids: tuple[str, ...]
    request_kwh: FloatArray
    """energy the EV must still receive in the window (the request, pro-rated for early arrivals)"""
    room_kwh: FloatArray
    """energy the EV can take before it is full (>= request; equal to it where the battery is unknown)"""
    dischargeable_kwh: FloatArray
    """energy above the V2G floor at the window start (0 without V2G or where the battery is unknown)"""
    max_charge_kw: FloatArray
    """the EV's own charging limit, kW (inf where unknown)"""
    max_discharge_kw: FloatArray
    """discharge limit, kW: 0 unless V2G is allowed for this session and the charger is bidirectional"""
    battery_kwh: FloatArray
    """EV battery capacity, kWh (NaN where unknown)"""
    start_soc: FloatArray
    """state of charge when the session enters the window (NaN where unknown)"""
    priority: FloatArray
    arrival_step: IntArray
    departure_step: IntArray

    @property
    def size(self) -> int:
        return len(self.session_ids)


@dataclass(frozen=True, eq=False)
class Episode:
    """A window of ``T`` steps of a scenario compiled into arrays.

    Per-step arrays have ``T + 1`` rows: row ``T`` is the state right after the last step (time-series
    values there repeat step ``T - 1``), so the final observation is well defined.
    """

    name: str
    start_step: int
    """index of the first step in the scenario"""
    n_steps: int
    dt_h: float
    timestamps: NDArray[np.datetime64]
    """(T + 1,) start of each step, UTC (row T: the window end)"""
    base_load_kw: FloatArray
    pv_kw: FloatArray
    import_price_per_kwh: FloatArray
    export_price_per_kwh: FloatArray
    new_period: BoolArray
    """(T + 1,) a new billing period starts with this step (the peak so far resets to 0)"""
    time_features: FloatArray
    """(T + 1, 4) sin/cos of time of day and of time of week, site-local"""
    forecast: FloatArray
    """(T + 1, 4, H + 1) forecast made at the start of each step for it and the next H steps; the second
    axis is :data:`envs.forecast.COLUMNS` (base load, PV, import price, export price)"""
    slot_session: Int32Array
    """(T + 1, n) local session number occupying each charger slot at each step, -1 where empty"""
    sessions: SessionTable
    dropped_sessions: int
    """sessions in the window shorter than half a step (not simulated, not penalised)"""

    @property
    def horizon(self) -> int:
        return int(self.forecast.shape[-1]) - 1


def _forecast_windows(
    scenario: Scenario,
    provider: ForecastSource,
    start: int,
    n_rows: int,
    horizon: int,
    rng: np.random.Generator,
) -> FloatArray:
    """(n_rows, 4, horizon + 1) forecast windows made at steps ``start .. start + n_rows - 1``."""
    if type(provider) is PerfectForecast:
        # the truth: a gather, identical to PerfectForecast's window() (tested), without a call per step
        data = scenario.timeseries[list(COLUMNS)].to_numpy(dtype=float).T  # (4, T_total)
        idx = np.minimum(
            np.arange(start, start + n_rows)[:, None] + np.arange(horizon + 1), data.shape[1] - 1
        )
        return np.ascontiguousarray(np.moveaxis(data[:, idx], 0, 1))
    bound = provider.bind(scenario.timeseries)
    out = np.empty((n_rows, 4, horizon + 1))
    for k in range(n_rows):
        w = bound.window(start + k, horizon + 1, rng)
        out[k, 0] = w.base_load_kw
        out[k, 1] = w.pv_kw
        out[k, 2] = w.import_price_per_kwh
        out[k, 3] = w.export_price_per_kwh
    return out


def compile_episode(
    scenario: Scenario,
    site: SiteArrays,
    *,
    start_step: int = 0,
    n_steps: int | None = None,
    forecast: ForecastSource | None = None,
    horizon: int = 16,
    rng: np.random.Generator | None = None,
    allow_discharge: bool = True,
    v2g_min_soc: float = 0.2,
) -> Episode:
    """Compile steps ``start_step .. start_step + n_steps - 1`` of ``scenario`` for ``site``.

    ``site`` must have the scenario's chargers (same ids, same order); the scenario's sessions and time
    series are used, and ``site``'s configuration (time zone, billing period), not the scenario's.
    ``forecast`` (default: perfect) is bound to the scenario's time series; a noisy provider draws from
    ``rng``. V2G is allowed for a session when ``allow_discharge``, the session's ``v2g`` flag and the
    charger's ``bidirectional`` flag all hold; where the EV battery is known it may be discharged down to
    ``v2g_min_soc`` (or its SoC on entering the window, if lower), else only the energy it received in
    this session.
    """
    if scenario.site.charger_ids != site.charger_ids:
        raise ValueError(f"scenario {scenario.name!r} has other chargers than the environment's site")
    ts = scenario.timeseries
    total = len(ts)
    if n_steps is None:
        n_steps = total - start_step
    if n_steps < 1 or start_step < 0 or start_step + n_steps > total:
        raise ValueError(
            f"episode window [{start_step}, {start_step + n_steps}) does not fit the scenario's {total} steps"
        )
    if rng is None:
        rng = np.random.default_rng(0)
    T = n_steps
    rows = np.minimum(np.arange(start_step, start_step + T + 1), start_step + T - 1)  # row T repeats T-1
    values = ts[list(TIMESERIES_COLUMNS)].to_numpy(dtype=float)[rows]
    step = scenario.step
    index = pd.DatetimeIndex(ts.index[start_step : start_step + T])
    t0 = index[0]
    local = index.tz_convert(site.config.timezone)
    hours = np.asarray(local.hour + local.minute / 60.0 + local.second / 3600.0, dtype=float)
    week_h = np.asarray(local.day_of_week, dtype=float) * 24.0 + hours
    tod, tow = 2 * np.pi * hours / 24.0, 2 * np.pi * week_h / 168.0
    time_features = np.stack([np.sin(tod), np.cos(tod), np.sin(tow), np.cos(tow)], axis=1)
    time_features = np.concatenate([time_features, time_features[-1:]], axis=0)
    period = billing_period_ids(local, site.config.tariff.billing_period)
    new_period = np.zeros(T + 1, dtype=bool)
    new_period[0] = True
    new_period[1:T] = period[1:] != period[:-1]
    utc = index.tz_convert("UTC").tz_localize(None)
    stamps = np.append(utc.to_numpy().astype("datetime64[ns]"), (utc[-1] + step).to_datetime64())

    slot_session, sessions, dropped = _compile_sessions(
        scenario, site, t0, step, T, allow_discharge=allow_discharge, v2g_min_soc=v2g_min_soc
    )
    return Episode(
        name=scenario.name,
        start_step=start_step,
        n_steps=T,
        dt_h=scenario.dt_h,
        timestamps=stamps,
        base_load_kw=values[:, 0].copy(),
        pv_kw=values[:, 1].copy(),
        import_price_per_kwh=values[:, 2].copy(),
        export_price_per_kwh=values[:, 3].copy(),
        new_period=new_period,
        time_features=time_features,
        forecast=_forecast_windows(scenario, forecast or PerfectForecast(), start_step, T + 1, horizon, rng),
        slot_session=slot_session,
        sessions=sessions,
        dropped_sessions=dropped,
    )


def _compile_sessions(
    scenario: Scenario,
    site: SiteArrays,
    t0: pd.Timestamp,
    step: pd.Timedelta,
    T: int,
    *,
    allow_discharge: bool,
    v2g_min_soc: float,
) -> tuple[Int32Array, SessionTable, int]:
    s = scenario.sessions
    n = site.n
    a_rel = np.floor(((s["arrival"] - t0) / step).to_numpy(dtype=float) + 0.5).astype(np.int64)
    d_rel = np.floor(((s["departure"] - t0) / step).to_numpy(dtype=float) + 0.5).astype(np.int64)
    in_window = (d_rel > 0) & (a_rel < T)
    zero_length = d_rel <= a_rel
    dropped = int(np.count_nonzero(in_window & zero_length))
    keep = np.flatnonzero(in_window & ~zero_length)
    a_rel, d_rel = a_rel[keep], d_rel[keep]
    pos = site.config.charger_index()
    slot = np.array([pos[c] for c in s["charger_id"].to_numpy()[keep]], dtype=np.int64)
    energy = s["energy_kwh"].to_numpy(dtype=float)[keep]
    battery = s["battery_kwh"].to_numpy(dtype=float)[keep]
    arrival_soc = s["arrival_soc"].to_numpy(dtype=float)[keep]
    session_max_kw = s["max_power_kw"].to_numpy(dtype=float)[keep]
    v2g = s["v2g"].to_numpy(dtype=bool)[keep] & site.bidirectional[slot] & allow_discharge

    # sessions that arrived before the window: pro-rate the request to the part of the stay inside it
    frac = np.where(a_rel < 0, d_rel / np.maximum(d_rel - a_rel, 1), 1.0)
    request = energy * frac
    known = np.isfinite(battery) & np.isfinite(arrival_soc)
    with np.errstate(invalid="ignore", divide="ignore"):
        start_soc = np.where(known, np.minimum(arrival_soc + (energy - request) / battery, 1.0), np.nan)
    room = np.where(known, np.maximum(battery * (1.0 - start_soc), request), request)
    floor_soc = np.minimum(v2g_min_soc, start_soc)
    dischargeable = np.where(known & v2g, np.maximum(battery * (start_soc - floor_soc), 0.0), 0.0)
    max_charge = np.where(np.isfinite(session_max_kw), session_max_kw, np.inf)
    max_discharge = np.where(v2g, np.minimum(site.max_discharge_kw[slot], max_charge), 0.0)

    # slot occupancy: departures written first, so an arrival at the same step on the same slot wins
    start = np.maximum(a_rel, 0)
    stop = np.minimum(d_rel, T + 1)
    value = np.full((T + 2, n), -1, dtype=np.int32)
    has_event = np.zeros((T + 2, n), dtype=bool)
    value[stop, slot] = -1
    has_event[stop, slot] = True
    local_ids = np.arange(len(keep), dtype=np.int32)
    value[start, slot] = local_ids
    has_event[start, slot] = True
    last = np.where(has_event, np.arange(T + 2)[:, None], 0)
    np.maximum.accumulate(last, axis=0, out=last)
    slot_session = np.ascontiguousarray(np.take_along_axis(value, last, axis=0)[: T + 1])

    table = SessionTable(
        session_ids=tuple(s["session_id"].to_numpy()[keep].tolist()),
        request_kwh=request,
        room_kwh=room,
        dischargeable_kwh=dischargeable,
        max_charge_kw=max_charge,
        max_discharge_kw=max_discharge,
        battery_kwh=battery,
        start_soc=start_soc,
        priority=s["priority"].to_numpy(dtype=float)[keep],
        arrival_step=start,
        departure_step=d_rel,
    )
    return slot_session, table, dropped
