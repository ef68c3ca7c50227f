"""Episodes: a window of a :class:`~envs.scenario.Scenario` compiled into per-step numpy arrays.

:func:`compile_episode` turns the window into time series, time-of-day features, forecast windows, which
session occupies which charger slot at each step, and a table of session attributes. It uses pandas and
runs once per reset; :class:`envs.sim.BatchSim` steps the result.

Time discretisation (step length ``dt``), exact to the sub-step: an EV occupies its charger slot from the
step it arrives in to the step it leaves in (both included), and is *present for the fraction of each step*
it is plugged in (:meth:`SessionTable.present_fraction`): an EV plugged in from 08:17 to 08:44 on a
15-minute grid is present for 13/15 of the 08:15 step and 14/15 of the 08:30 step. Its energy per step is
capped by that fraction (:func:`envs.physics.ev_terms_one`). Where two sessions on one charger would share a
step, the later one's arrival moves to the next step boundary (one EV per slot and step). Sessions of zero
length (after that move) are dropped (counted in :attr:`Episode.dropped_sessions`). A session that arrived
before the episode window starts is present from the first step with its request (actual and declared)
pro-rated to the part of its stay inside the window.

Declared against actual: a session carries what the driver declared (``declared_departure``,
``declared_energy_kwh``; the actual values where the scenario has none) besides the actual departure and
energy. The simulator ends the session at the actual departure and scores the actual need; the state the
policies see carries the declared values (:meth:`envs.sim.BatchSim.state`). EVs still plugged in
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
    """first step the EV occupies its slot (``floor`` of its arrival, >= 0)"""
    departure_step: IntArray
    """the step after the last one it occupies (``ceil`` of its departure)"""
    arrival_steps: FloatArray
    """exact arrival in steps after the window start (0 for EVs already there), e.g. 2.4"""
    departure_steps: FloatArray
    """exact actual departure in steps after the window start, e.g. 5.8"""
    declared_request_kwh: FloatArray
    """the energy the driver declared, pro-rated like ``request_kwh`` (equal to it without declarations)"""
    declared_departure_steps: FloatArray
    """the departure the driver declared, in steps after the window start"""

    def present_fraction(self, session: IntArray, step: IntArray) -> FloatArray:
        """Fraction of step ``step`` (window-relative) that session ``session`` is plugged in, in [0, 1]."""
        lo = np.maximum(self.arrival_steps[session], step)
        hi = np.minimum(self.departure_steps[session], step + 1)
        return np.clip(hi - lo, 0.0, 1.0)

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
    a_all: FloatArray = np.asarray(((s["arrival"] - t0) / step).to_numpy(dtype=float), dtype=np.float64)
    d_all: FloatArray = np.asarray(((s["departure"] - t0) / step).to_numpy(dtype=float), dtype=np.float64)
    declared_dep = s["declared_departure"] if "declared_departure" in s.columns else s["departure"]
    dd_all: FloatArray = np.asarray(((declared_dep - t0) / step).to_numpy(dtype=float), dtype=np.float64)
    pos = site.config.charger_index()
    slot_all = np.array([pos[c] for c in s["charger_id"].to_numpy()], dtype=np.int64)
    a_all = _after_previous(a_all, d_all, slot_all)
    in_window = (d_all > 0) & (a_all < T)
    zero_length = d_all <= a_all
    dropped = int(np.count_nonzero(in_window & zero_length))
    keep = np.flatnonzero(in_window & ~zero_length)
    a_x, d_x, dd_x = a_all[keep], d_all[keep], dd_all[keep]
    # the steps an EV occupies its slot: from the step it plugs in to the step it leaves in, inclusive
    a_rel = np.floor(a_x).astype(np.int64)
    d_rel = np.ceil(d_x).astype(np.int64)
    slot = slot_all[keep]
    energy = s["energy_kwh"].to_numpy(dtype=float)[keep]
    declared_energy = (
        s["declared_energy_kwh"].to_numpy(dtype=float)[keep] if "declared_energy_kwh" in s.columns else energy
    )
    battery = s["battery_kwh"].to_numpy(dtype=float)[keep]
    arrival_soc = s["arrival_soc"].to_numpy(dtype=float)[keep]
    session_max_kw = s["max_power_kw"].to_numpy(dtype=float)[keep]
    v2g = s["v2g"].to_numpy(dtype=bool)[keep] & site.bidirectional[slot] & allow_discharge

    # sessions that arrived before the window: pro-rate the request to the part of the stay inside it
    frac = np.where(a_x < 0, d_x / (d_x - a_x), 1.0)
    request = energy * frac
    declared_request = declared_energy * frac
    known = np.isfinite(battery) & np.isfinite(arrival_soc)
    with np.errstate(invalid="ignore", divide="ignore"):
        start_soc = np.where(known, np.minimum(arrival_soc + (energy - request) / battery, 1.0), np.nan)
    full_room, above_floor = battery_energies_kwh(battery, start_soc, request, v2g_min_soc)
    # an unknown battery takes what was asked or declared, whichever is more
    room = np.where(known, full_room, np.maximum(request, declared_request))
    dischargeable = np.where(known & v2g, above_floor, 0.0)
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
        arrival_steps=np.maximum(a_x, 0.0),
        departure_steps=d_x,
        declared_request_kwh=declared_request,
        declared_departure_steps=dd_x,
    )
    return slot_session, table, dropped


def battery_energies_kwh(
    battery_kwh: FloatArray, soc: FloatArray, request_kwh: FloatArray, v2g_min_soc: float
) -> tuple[FloatArray, FloatArray]:
    """``(room, dischargeable)`` of EVs of known battery at state of charge ``soc``, kWh on the battery
    side: the room to a full battery (at least the request) and the energy above the SoC floor
    (``v2g_min_soc``, or ``soc`` if lower). NaN where the battery or the SoC is unknown. The environment's
    sessions and the station simulator's EVs (:mod:`stationsim.physics`) both count them so."""
    battery, soc = np.asarray(battery_kwh, dtype=float), np.asarray(soc, dtype=float)
    room = np.maximum(battery * (1.0 - soc), request_kwh)
    return room, np.maximum(battery * (soc - np.minimum(v2g_min_soc, soc)), 0.0)


def _after_previous(arrival: FloatArray, departure: FloatArray, slot: IntArray) -> FloatArray:
    """Arrivals (in steps) moved to the first step boundary after the previous session on the same charger
    has left, where both would share a step (a slot holds one EV per step); unchanged elsewhere."""
    out = arrival.copy()
    order = np.lexsort((arrival, slot))
    s_o, a_o, d_o = slot[order], arrival[order], departure[order]
    same = s_o[1:] == s_o[:-1]
    # the previous session occupies its slot up to the end of the step it leaves in
    prev_end = np.ceil(d_o[:-1])
    clash = same & (np.floor(a_o[1:]) < prev_end) & (d_o[:-1] > a_o[:-1])
    if clash.any():
        moved = np.where(clash, np.maximum(a_o[1:], prev_end), a_o[1:])
        out[order[1:]] = moved
    return out


def deliverable_kwh(scenario: Scenario, site: SiteArrays | None = None) -> FloatArray:
    """(S,) per session of ``scenario`` (its row order): the battery-side energy uncontrolled charging can
    deliver in the simulator when no limit binds, kWh.

    Each step the EV is present for, the charger holds it at ``min(rated, EV max)`` times the fraction of
    the step it is plugged in, rounded down to the charger's resolution grid (what the projection lets
    through), for ``dt`` at the charger's efficiency: the same presence (:func:`compile_episode` over the
    whole scenario) and caps (:func:`envs.physics.ev_terms_one`) as the simulator. Dropped sessions: 0.
    """
    from envs.physics import floor_to_grid

    if site is None:
        site = SiteArrays.from_config(scenario.site)
    T = scenario.n_steps
    step = scenario.step
    _, table, _ = _compile_sessions(
        scenario, site, scenario.timeseries.index[0], step, T, allow_discharge=False, v2g_min_soc=0.0
    )
    pos = site.config.charger_index()
    slot = np.array([pos[c] for c in scenario.sessions["charger_id"].to_numpy()], dtype=np.int64)
    row_of = {sid: k for k, sid in enumerate(scenario.sessions["session_id"].to_numpy().tolist())}
    out = np.zeros(len(scenario.sessions))
    for k, sid in enumerate(table.session_ids):
        row = row_of[sid]
        i = slot[row]
        steps = np.arange(table.arrival_step[k], min(int(table.departure_step[k]), T))
        frac = table.present_fraction(np.full(len(steps), k), steps)
        rate = min(float(site.rated_kw[i]), float(table.max_charge_kw[k]))
        kw = floor_to_grid(rate * frac, float(site.resolution_kw[i]))
        out[row] = float(np.sum(kw)) * float(site.efficiency[i]) * scenario.dt_h
    return out
