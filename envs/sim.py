"""Episode dynamics of a charging site, vectorised over a batch of sites that share one configuration.

Two halves:

* :func:`compile_episode` turns a window of a :class:`~envs.scenario.Scenario` into per-step numpy arrays
  (time series, time-of-day features, forecast windows, which session occupies which charger slot at each
  step, and a table of session attributes). It uses pandas and runs once per reset.
* :class:`BatchSim` steps ``B`` such episodes at once in pure numpy: it builds the
  :class:`~envs.core.SiteState` the projection and the policies act on, applies a projected allocation
  (:class:`~envs.projection.ProjectionResult`), keeps the energy books, lets EVs leave and arrive, tracks the
  stationary battery and the billing-period peak, and prices the step with :func:`envs.costs.step_cost`.
  There are no Python loops over chargers or batch elements in a step.

Time discretisation (step length ``dt``): a session's arrival and departure are rounded to the nearest step
boundary; the EV is plugged in from the start of its arrival step until the end of the step before its
departure step. Sessions shorter than half a step round to zero length and are dropped (counted in
:attr:`Episode.dropped_sessions`). A session that arrived before the episode window starts is present from
the first step with its request pro-rated to the part of its stay inside the window. EVs still plugged in
when the window ends are not charged the missing-energy penalty; only departures inside the episode count
(a departure exactly at the window end does count).

Energy books (all kWh on the EV battery side unless named otherwise): charging at ``p > 0`` kW (grid side)
for ``dt`` hours puts ``p * efficiency * dt`` into the EV; discharging at ``p < 0`` takes
``|p| * dt / efficiency`` out of it. The stationary battery follows the same rule with its own efficiency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from envs.config import Tariff
from envs.core import BoolArray, FloatArray, IntArray, SiteArrays, SiteState
from envs.costs import StepCost, billing_period_ids, step_cost
from envs.forecast import COLUMNS, BoundForecast, PerfectForecast
from envs.projection import ProjectionResult
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


# --------------------------------------------------------------------------- the batched simulator

_A = TypeVar("_A", bound=np.ndarray)


def _grown(old: _A, size: int, axis: int, fill: float) -> _A:
    """A copy of ``old`` grown to ``size`` along ``axis``, the new part filled with ``fill``."""
    shape = list(old.shape)
    shape[axis] = size
    new = np.full(shape, fill, dtype=old.dtype)
    new[tuple(slice(0, k) for k in old.shape)] = old
    return new  # type: ignore[return-value]


@dataclass(eq=False, slots=True)
class StepOutcome:
    """What one step did, per batch element (arrays ``(B,)`` unless named otherwise)."""

    charger_kw: FloatArray
    """(B, n) applied charger power after projection, kW"""
    battery_kw: FloatArray
    site_import_kw: FloatArray
    """net grid import over the step, kW (negative = export)"""
    pv_curtailed_kw: FloatArray
    moved_kw: FloatArray
    feasible: BoolArray
    cost: StepCost
    reward: FloatArray
    """minus the step's total cost"""
    delivered_kwh: FloatArray
    """energy into EV batteries this step"""
    ev_discharged_kwh: FloatArray
    """energy out of EV batteries (V2G) this step"""
    battery_discharged_kwh: FloatArray
    """energy out of the stationary battery this step"""
    missing_kwh: FloatArray
    """energy EVs still missed when they left at the end of this step"""
    departures: IntArray
    arrivals: IntArray
    peak_before_kw: FloatArray
    peak_import_kw: FloatArray
    """billing-period peak import after this step"""
    terminated: BoolArray


_SLOT_FLOATS = (
    "request_kwh",
    "room0_kwh",
    "dischargeable0_kwh",
    "net_kwh",
    "ev_max_charge_kw",
    "ev_max_discharge_kw",
    "v2g",
    "priority",
    "departure_h",
    "present_f",
    "h_per_kwh",
    "soc_base",
    "inv_battery",
)


class BatchSim:
    """``B`` episodes of one site stepped together in numpy.

    Load an episode into row ``b`` with :meth:`load`, read the current :meth:`state`, project a request on
    it, and :meth:`apply` the (batched) result. Rows advance independently (each has its own step counter
    and length), so a vector environment can reset rows as their episodes end.

    ``static_obs_size`` reserves a per-step float32 block for each row (filled by :meth:`load`), which an
    observation builder precomputes at reset; the simulator only stores and gathers it.
    """

    # per-slot EV state, (B, n); 0 (or NaN for the battery columns) where no EV is plugged in
    present: BoolArray
    session: IntArray
    """local session number in the row's episode, -1 where empty"""
    request_kwh: FloatArray
    """energy the EV must receive in the window (its request, pro-rated for early arrivals)"""
    room0_kwh: FloatArray
    dischargeable0_kwh: FloatArray
    net_kwh: FloatArray
    """net energy into the EV since it entered the window, kWh (battery side)"""
    ev_max_charge_kw: FloatArray
    ev_max_discharge_kw: FloatArray
    v2g: FloatArray
    """1.0 where V2G is allowed for the session"""
    priority: FloatArray
    departure_h: FloatArray
    """departure time, hours after the window start"""
    present_f: FloatArray
    h_per_kwh: FloatArray
    """hours per kWh into the battery at the EV's full rate (min of charger and EV limits)"""
    soc_base: FloatArray
    """SoC on entering the window where known, -1 where unknown (0 where empty)"""
    inv_battery: FloatArray
    """1 / battery kWh where known, else 0"""

    def __init__(self, site: SiteArrays, batch: int, dt_h: float, static_obs_size: int = 0) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.site = site
        self.batch = batch
        self.dt_h = float(dt_h)
        self.tariff: Tariff = site.config.tariff
        self.static_obs_size = static_obs_size
        B, n = batch, site.n
        self._rows = np.arange(B)
        self._cols = np.arange(n)
        self._eff_dt = site.efficiency * self.dt_h
        self._dt_over_eff = self.dt_h / site.efficiency
        self.present = np.zeros((B, n), dtype=bool)
        self.session = np.full((B, n), -1, dtype=np.int64)
        # the per-slot floats are views of one stacked array, so that a departure clears them in one write
        self._slot_floats = np.zeros((len(_SLOT_FLOATS), B, n))
        for k, name in enumerate(_SLOT_FLOATS):
            setattr(self, name, self._slot_floats[k])
        # per-row site state (B,)
        self.t = np.zeros(B, dtype=np.int64)
        self.n_steps = np.ones(B, dtype=np.int64)
        self.start_step = np.zeros(B, dtype=np.int64)
        self.peak_kw = np.zeros(B)
        """billing-period peak import after the last step, kW"""
        self.battery_soc_kwh = np.full(B, site.battery_initial_kwh)
        self.battery_kw_last = np.zeros(B)
        self.delivered_total_kwh = np.zeros(B)
        self.missing_total_kwh = np.zeros(B)
        self.ev_discharged_total_kwh = np.zeros(B)
        self.cost_total = np.zeros(B)
        # stacked per-step episode arrays (B, T + 1, ...) and session tables (B, S), grown on demand
        self._t_cap = 0
        self._s_cap = 0
        self._base = np.zeros((B, 0))
        self._pv = np.zeros((B, 0))
        self._price_in = np.zeros((B, 0))
        self._price_out = np.zeros((B, 0))
        self._new_period = np.zeros((B, 0), dtype=bool)
        self._slot: Int32Array = np.zeros((B, 0, n), dtype=np.int32)
        self._static_obs: NDArray[np.float32] = np.zeros((B, 0, static_obs_size), dtype=np.float32)
        self._s_request = np.zeros((B, 0))
        self._s_room = np.zeros((B, 0))
        self._s_disch = np.zeros((B, 0))
        self._s_max_c = np.zeros((B, 0))
        self._s_max_d = np.zeros((B, 0))
        self._s_batt = np.zeros((B, 0))
        self._s_soc = np.zeros((B, 0))
        self._s_prio = np.zeros((B, 0))
        self._s_dep = np.zeros((B, 0), dtype=np.int64)
        self._reserve(2, 1)

    # ------------------------------------------------------------------ storage

    def _reserve(self, t_cap: int, s_cap: int) -> None:
        """Grow the stacked arrays to hold ``t_cap`` steps and ``s_cap`` sessions per row."""
        if t_cap > self._t_cap:
            self._base = _grown(self._base, t_cap, 1, 0.0)
            self._pv = _grown(self._pv, t_cap, 1, 0.0)
            self._price_in = _grown(self._price_in, t_cap, 1, 0.0)
            self._price_out = _grown(self._price_out, t_cap, 1, 0.0)
            self._new_period = _grown(self._new_period, t_cap, 1, False)
            self._slot = _grown(self._slot, t_cap, 1, -1)
            self._static_obs = _grown(self._static_obs, t_cap, 1, 0.0)
            self._t_cap = t_cap
            self._row_base = self._rows * t_cap
        if s_cap > self._s_cap:
            self._s_request = _grown(self._s_request, s_cap, 1, 0.0)
            self._s_room = _grown(self._s_room, s_cap, 1, 0.0)
            self._s_disch = _grown(self._s_disch, s_cap, 1, 0.0)
            self._s_max_c = _grown(self._s_max_c, s_cap, 1, 0.0)
            self._s_max_d = _grown(self._s_max_d, s_cap, 1, 0.0)
            self._s_batt = _grown(self._s_batt, s_cap, 1, 0.0)
            self._s_soc = _grown(self._s_soc, s_cap, 1, 0.0)
            self._s_prio = _grown(self._s_prio, s_cap, 1, 0.0)
            self._s_dep = _grown(self._s_dep, s_cap, 1, 0)
            self._s_cap = s_cap

    def load(self, b: int, episode: Episode, static_obs: NDArray[np.float32] | None = None) -> None:
        """Start ``episode`` in row ``b``: step 0, empty slots, then the arrivals of step 0."""
        if abs(episode.dt_h - self.dt_h) > 1e-12:
            raise ValueError(f"episode step {episode.dt_h} h differs from the simulator's {self.dt_h} h")
        T = episode.n_steps
        st = episode.sessions
        self._reserve(T + 1, max(st.size, 1))
        self._base[b, : T + 1] = episode.base_load_kw
        self._pv[b, : T + 1] = episode.pv_kw
        self._price_in[b, : T + 1] = episode.import_price_per_kwh
        self._price_out[b, : T + 1] = episode.export_price_per_kwh
        self._new_period[b, : T + 1] = episode.new_period
        self._slot[b, : T + 1] = episode.slot_session
        if self.static_obs_size:
            if static_obs is None or static_obs.shape != (T + 1, self.static_obs_size):
                raise ValueError("static_obs must be (n_steps + 1, static_obs_size)")
            self._static_obs[b, : T + 1] = static_obs
        S = st.size
        self._s_request[b, :S] = st.request_kwh
        self._s_room[b, :S] = st.room_kwh
        self._s_disch[b, :S] = st.dischargeable_kwh
        self._s_max_c[b, :S] = st.max_charge_kw
        self._s_max_d[b, :S] = st.max_discharge_kw
        self._s_batt[b, :S] = st.battery_kwh
        self._s_soc[b, :S] = st.start_soc
        self._s_prio[b, :S] = st.priority
        self._s_dep[b, :S] = st.departure_step
        self.t[b] = 0
        self.n_steps[b] = T
        self.start_step[b] = episode.start_step
        self.peak_kw[b] = 0.0
        self.battery_soc_kwh[b] = self.site.battery_initial_kwh
        self.battery_kw_last[b] = 0.0
        self.delivered_total_kwh[b] = 0.0
        self.missing_total_kwh[b] = 0.0
        self.ev_discharged_total_kwh[b] = 0.0
        self.cost_total[b] = 0.0
        self._clear(np.full(self.site.n, b), self._cols)
        occ = episode.slot_session[0]
        cols = np.flatnonzero(occ >= 0)
        self._arrive(np.full(len(cols), b), cols, occ[cols].astype(np.int64))

    def _clear(self, rows: IntArray, cols: IntArray) -> None:
        self.present[rows, cols] = False
        self.session[rows, cols] = -1
        self._slot_floats[:, rows, cols] = 0.0  # every name of _SLOT_FLOATS

    def _arrive(self, rows: IntArray, cols: IntArray, sess: IntArray) -> None:
        site = self.site
        self.present[rows, cols] = True
        self.present_f[rows, cols] = 1.0
        self.session[rows, cols] = sess
        self.request_kwh[rows, cols] = self._s_request[rows, sess]
        self.room0_kwh[rows, cols] = self._s_room[rows, sess]
        self.dischargeable0_kwh[rows, cols] = self._s_disch[rows, sess]
        self.net_kwh[rows, cols] = 0.0
        max_c = self._s_max_c[rows, sess]
        max_d = self._s_max_d[rows, sess]
        self.ev_max_charge_kw[rows, cols] = max_c
        self.ev_max_discharge_kw[rows, cols] = max_d
        self.v2g[rows, cols] = (max_d > 0).astype(float)
        self.priority[rows, cols] = self._s_prio[rows, sess]
        self.departure_h[rows, cols] = self._s_dep[rows, sess] * self.dt_h
        self.h_per_kwh[rows, cols] = 1.0 / (np.minimum(site.rated_kw[cols], max_c) * site.efficiency[cols])
        battery = self._s_batt[rows, sess]
        soc = self._s_soc[rows, sess]
        known = np.isfinite(battery) & np.isfinite(soc)
        self.soc_base[rows, cols] = np.where(known, soc, -1.0)
        self.inv_battery[rows, cols] = np.where(known, 1.0 / np.where(known, battery, 1.0), 0.0)

    # ------------------------------------------------------------------ views of the current step

    def energy_needed_kwh(self) -> FloatArray:
        """(B, n) energy still to deliver before departure, kWh (0 where no EV)."""
        return np.maximum(self.request_kwh - self.net_kwh, 0.0)

    def time_left_h(self) -> FloatArray:
        """(B, n) hours to departure (0 where no EV)."""
        left = self.departure_h - (self.t * self.dt_h)[:, None]
        left *= self.present_f
        return left

    def soc(self) -> FloatArray:
        """(B, n) EV state of charge where the battery is known, -1 where unknown, 0 where no EV."""
        return self.soc_base + self.net_kwh * self.inv_battery

    def _at(self, t: IntArray) -> IntArray:
        """Flat indices of step ``t[b]`` of each row in the stacked ``(B, T_cap, ...)`` arrays (a ``take``
        with them is the gather ``a[rows, t]`` at a fraction of its cost)."""
        return self._row_base + t

    def base_load_kw(self) -> FloatArray:
        return self._base.take(self._at(self.t))

    def pv_kw(self) -> FloatArray:
        return self._pv.take(self._at(self.t))

    def import_price_per_kwh(self) -> FloatArray:
        return self._price_in.take(self._at(self.t))

    def export_price_per_kwh(self) -> FloatArray:
        return self._price_out.take(self._at(self.t))

    def peak_so_far_kw(self) -> FloatArray:
        """(B,) billing-period peak import before the current step (0 when the step opens a new period)."""
        return np.where(self._new_period.take(self._at(self.t)), 0.0, self.peak_kw)

    def static_obs(self) -> NDArray[np.float32]:
        """(B, static_obs_size) the precomputed observation block of the current step."""
        block = self._static_obs
        flat = block.reshape(self.batch * self._t_cap, block.shape[2])
        return flat.take(self._at(self.t), axis=0)

    def state(self) -> SiteState:
        """The batched :class:`SiteState` of the current step (arrays ``(B, n)``, site values ``(B,)``).

        Its arrays are fresh (or the simulator's, read-only by convention): it stays valid until
        :meth:`apply`.
        """
        net = self.net_kwh
        dis = self.dischargeable0_kwh + net
        np.maximum(dis, 0.0, out=dis)
        dis *= self.v2g
        t = self.t
        at = self._at(t)
        return SiteState(
            ev_present=self.present.copy(),
            ev_max_charge_kw=self.ev_max_charge_kw.copy(),
            ev_max_discharge_kw=self.ev_max_discharge_kw.copy(),
            energy_needed_kwh=np.maximum(self.request_kwh - net, 0.0),
            energy_room_kwh=np.maximum(self.room0_kwh - net, 0.0),
            energy_dischargeable_kwh=dis,
            time_left_h=self.time_left_h(),
            base_load_kw=self._base.take(at),
            pv_kw=self._pv.take(at),
            battery_soc_kwh=self.battery_soc_kwh.copy(),
            dt_h=self.dt_h,
            priority=self.priority.copy(),
        )

    # ------------------------------------------------------------------ the step

    def apply(self, result: ProjectionResult) -> StepOutcome:
        """Hold the projected allocation (batched: ``(B, n)``, ``(B,)``) for one step, then advance every
        row by one step. Rows already at their end must be reloaded first (a :class:`ValueError` otherwise).
        """
        t = self.t
        if (t >= self.n_steps).any():
            raise ValueError("a row is past its episode end; load a new episode first")
        B = self.batch
        p = result.charger_kw
        pb = result.battery_kw
        site_import = result.site_import_kw
        if p.shape != (B, self.site.n) or np.shape(pb) != (B,) or np.shape(site_import) != (B,):
            raise ValueError("apply() needs a batched projection result: (B, n) and (B,) arrays")

        # EV energy books
        charge = np.maximum(p, 0.0)
        out_of_ev = charge - p
        out_of_ev *= self._dt_over_eff
        into_ev = charge
        into_ev *= self._eff_dt
        self.net_kwh += into_ev
        self.net_kwh -= out_of_ev
        delivered = into_ev.sum(axis=1)
        ev_out = out_of_ev.sum(axis=1)

        # stationary battery
        if self.site.has_battery:
            eff_b = self.site.battery_efficiency
            b_charge = np.maximum(pb, 0.0)
            batt_out = (b_charge - pb) * (self.dt_h / eff_b)
            self.battery_soc_kwh += b_charge * (eff_b * self.dt_h) - batt_out
        else:
            batt_out = np.zeros(B)
        self.battery_kw_last = np.array(pb, dtype=float)

        # departures at the end of this step, then arrivals for the next one
        at = self._at(t)
        slots = self._slot.reshape(B * self._t_cap, self.site.n)
        occ_now = slots.take(at, axis=0)
        occ_next = slots.take(at + 1, axis=0)
        changed = occ_now != occ_next
        missing = np.zeros(B)
        departures = np.zeros(B, dtype=np.int64)
        arrivals = departures
        if changed.any():
            leaving = changed & self.present
            if leaving.any():
                need = np.maximum(self.request_kwh - self.net_kwh, 0.0)
                missing = np.where(leaving, need, 0.0).sum(axis=1)
                departures = leaving.sum(axis=1)
                r, c = np.nonzero(leaving)
                self._clear(r, c)
            arriving = changed & (occ_next >= 0)
            if arriving.any():
                arrivals = arriving.sum(axis=1)
                r, c = np.nonzero(arriving)
                self._arrive(r, c, occ_next[r, c].astype(np.int64))

        # billing-period peak and the step's cost
        peak_before = np.where(self._new_period.take(at), 0.0, self.peak_kw)
        cost = step_cost(
            self.tariff,
            site_import,
            self._price_in.take(at),
            self._price_out.take(at),
            peak_before,
            self.dt_h,
            ev_discharged_kwh=ev_out,
            battery_discharged_kwh=batt_out,
            missing_kwh=missing,
        )
        total = np.asarray(cost.total, dtype=float)
        self.peak_kw = np.maximum(peak_before, site_import)
        self.delivered_total_kwh += delivered
        self.missing_total_kwh += missing
        self.ev_discharged_total_kwh += ev_out
        self.cost_total += total
        self.t = t + 1
        return StepOutcome(
            charger_kw=p,
            battery_kw=pb,
            site_import_kw=site_import,
            pv_curtailed_kw=result.pv_curtailed_kw,
            moved_kw=result.moved_kw,
            feasible=result.feasible,
            cost=cost,
            reward=-total,
            delivered_kwh=delivered,
            ev_discharged_kwh=ev_out,
            battery_discharged_kwh=batt_out,
            missing_kwh=missing,
            departures=departures,
            arrivals=arrivals,
            peak_before_kw=peak_before,
            peak_import_kw=self.peak_kw,
            terminated=self.t >= self.n_steps,
        )
