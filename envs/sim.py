"""Episode dynamics of a charging site, vectorised over a batch of sites that share one configuration.

Two halves:

* :func:`compile_episode` turns a window of a :class:`~envs.scenario.Scenario` into per-step numpy arrays
  (time series, time-of-day features, forecast windows, which session occupies which charger slot at each
  step, and a table of session attributes). It uses pandas and runs once per reset.
* :class:`BatchSim` steps ``B`` such episodes at once: it builds the :class:`~envs.core.SiteState` the
  projection and the policies act on, applies a projected allocation
  (:class:`~envs.projection.ProjectionResult`), keeps the energy books, lets EVs leave and arrive, tracks the
  stationary battery and the billing-period peak, and prices the step with :func:`envs.costs.price_rows`.
  A step is one call of a compiled kernel (numba) over preallocated arrays, the same code for one site
  (the env) and for a batch (the vector env); there are no Python loops over chargers or rows.

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
from numba import njit
from numpy.typing import NDArray

from envs.config import Tariff
from envs.core import BoolArray, FloatArray, IntArray, SiteArrays, SiteState
from envs.costs import FLOW_ROWS, PART_ROWS, StepCost, billing_period_ids, price_rows, tariff_constants
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
# their rows in BatchSim._slot_floats (compile-time constants of the kernels)
(
    _REQ,
    _ROOM0,
    _DIS0,
    _NET,
    _MAXC,
    _MAXD,
    _V2G,
    _PRIO,
    _DEP_H,
    _PRES_F,
    _H_PER_KWH,
    _SOC_BASE,
    _INV_BATT,
) = range(len(_SLOT_FLOATS))

_SESSION_FLOATS = ("request", "room", "disch", "max_c", "max_d", "batt", "soc", "prio")
"""rows of BatchSim._s_floats: the :class:`SessionTable` columns the simulator reads, per row and session"""
_S_REQ, _S_ROOM, _S_DIS, _S_MAXC, _S_MAXD, _S_BATT, _S_SOC, _S_PRIO = range(len(_SESSION_FLOATS))

_ROW_FLOATS = (
    "peak_kw",
    "battery_soc_kwh",
    "battery_kw_last",
    "delivered_total_kwh",
    "missing_total_kwh",
    "ev_discharged_total_kwh",
    "cost_total",
    "_peak_now",
)
"""per-row floats (B,) of BatchSim, views of one stacked array ``_row_floats``"""
_R_PEAK, _R_SOC, _R_BKW, _R_DELIV, _R_MISS, _R_EVDIS, _R_COST, _R_PEAK_NOW = range(len(_ROW_FLOATS))

_ROW_INTS = ("t", "n_steps", "start_step")
_I_T, _I_N, _I_START = range(len(_ROW_INTS))

_SERIES = ("_base", "_pv", "_price_in", "_price_out")
_X_BASE, _X_PV, _X_PIN, _X_POUT = range(len(_SERIES))

OUTCOME_FLOATS = (
    *FLOW_ROWS,
    *PART_ROWS,
    "reward",
    "battery_kw",
    "delivered_kwh",
    "peak_import_kw",
    "battery_soc_kwh",
    "delivered_total_kwh",
    "missing_total_kwh",
)
"""rows of :attr:`StepOutcome.table`: the step's flows as :func:`envs.costs.price_rows` reads them, the
cost parts it writes, the reward, the battery power, the energy delivered, the peak after the step and
row totals"""

OUTCOME_COUNTS = ("departures", "arrivals", "terminated", "step_index")
"""rows of :attr:`StepOutcome.counts`: EVs that left and arrived, 1 where the row's episode ended with
this step, and the step's index in its scenario"""
(
    _O_IMPORT,
    _O_PIN,
    _O_POUT,
    _O_PEAK0,
    _O_EVDIS,
    _O_BDIS,
    _O_MISS,
    _O_ENERGY,
    _O_EXPORT,
    _O_DEMAND,
    _O_MISSING,
    _O_DEGR,
    _O_REWARD,
    _O_BKW,
    _O_DELIV,
    _O_PEAK1,
    _O_SOC,
    _O_DELIV_TOT,
    _O_MISS_TOT,
) = range(len(OUTCOME_FLOATS))
_FLOWS = slice(_O_IMPORT, _O_MISS + 1)
_PARTS = slice(_O_ENERGY, _O_DEGR + 1)

_STATE_FLOATS = 7
"""(7, B, n) per-charger floats of a state: EV max charge, EV max discharge, need, room, dischargeable,
time left, priority"""


class StepOutcome:
    """What one step did, per batch element (arrays ``(B,)`` unless named otherwise).

    The projected allocation's arrays are the result's own; the rest are views of the step kernel's
    stacked output (:attr:`table`, rows :data:`OUTCOME_FLOATS`; :attr:`counts`), made on access.
    """

    __slots__ = (
        "battery_kw",
        "charger_kw",
        "counts",
        "feasible",
        "moved_kw",
        "pv_curtailed_kw",
        "site_import_kw",
        "table",
    )

    def __init__(self, result: ProjectionResult, table: FloatArray, counts: IntArray) -> None:
        self.charger_kw: FloatArray = result.charger_kw
        """(B, n) applied charger power after projection, kW"""
        self.battery_kw: FloatArray = result.battery_kw
        self.site_import_kw: FloatArray = result.site_import_kw
        """net grid import over the step, kW (negative = export)"""
        self.pv_curtailed_kw: FloatArray = result.pv_curtailed_kw
        self.moved_kw: FloatArray = result.moved_kw
        self.feasible: BoolArray = result.feasible
        self.table = table
        """(len(OUTCOME_FLOATS), B) the float outcomes, stacked"""
        self.counts = counts
        """(len(OUTCOME_COUNTS), B) the integer outcomes, stacked"""

    @property
    def cost(self) -> StepCost:
        """the step's cost parts (currency)"""
        t = self.table
        return StepCost(t[_O_ENERGY], t[_O_EXPORT], t[_O_DEMAND], t[_O_MISSING], t[_O_DEGR])

    @property
    def reward(self) -> FloatArray:
        """minus the step's total cost"""
        return self.table[_O_REWARD]

    @property
    def delivered_kwh(self) -> FloatArray:
        """energy into EV batteries this step"""
        return self.table[_O_DELIV]

    @property
    def ev_discharged_kwh(self) -> FloatArray:
        """energy out of EV batteries (V2G) this step"""
        return self.table[_O_EVDIS]

    @property
    def battery_discharged_kwh(self) -> FloatArray:
        """energy out of the stationary battery this step"""
        return self.table[_O_BDIS]

    @property
    def missing_kwh(self) -> FloatArray:
        """energy EVs still missed when they left at the end of this step"""
        return self.table[_O_MISS]

    @property
    def departures(self) -> IntArray:
        return self.counts[0]

    @property
    def arrivals(self) -> IntArray:
        return self.counts[1]

    @property
    def peak_before_kw(self) -> FloatArray:
        return self.table[_O_PEAK0]

    @property
    def peak_import_kw(self) -> FloatArray:
        """billing-period peak import after this step"""
        return self.table[_O_PEAK1]

    @property
    def terminated(self) -> BoolArray:
        """the row's episode ended with this step (a new array on each access)"""
        return self.counts[2] != 0


# --------------------------------------------------------------------------- step kernels (numba)


@njit(cache=True, error_model="numpy")
def _pos(x: float) -> float:
    """``np.maximum(x, 0.0)`` of one value (NaN propagates)."""
    return x if (x >= 0.0 or x != x) else 0.0


_PW_BLOCK = 128
"""numpy's PW_BLOCKSIZE: rows up to this long are summed in one unrolled pass"""


@njit(cache=True, error_model="numpy")
def _pairwise_block(a: FloatArray, lo: int, n: int) -> float:
    """numpy's pairwise sum of ``a[lo : lo + n]`` for ``n <= 128``: eight interleaved partial sums."""
    if n < 8:
        res = -0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    stop = n - n % 8
    while i < stop:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True, error_model="numpy")
def _pairwise_sum(a: FloatArray, n: int) -> float:
    """``a[:n].sum()`` as numpy computes it (``np.add.reduce`` on a contiguous row: pairwise, split in
    halves rounded to multiples of 8 above 128 values), so that a row sum here is bit-identical to
    ``x.sum(axis=-1)``. The halving recursion runs on an explicit stack (cached numba code and recursion
    do not mix)."""
    if n <= _PW_BLOCK:
        return 0.0 + _pairwise_block(a, 0, n)
    st_lo = np.empty(64, dtype=np.int64)
    st_n = np.empty(64, dtype=np.int64)
    st_stage = np.empty(64, dtype=np.int64)
    st_left = np.empty(64)
    d = 0
    st_lo[0], st_n[0], st_stage[0] = 0, n, 0
    ret = 0.0
    while True:
        m = st_n[d]
        if m <= _PW_BLOCK:  # a leaf: hand its sum to the parent
            ret = _pairwise_block(a, st_lo[d], m)
            d -= 1
            continue
        half = m // 2
        half -= half % 8
        if st_stage[d] == 0:  # descend into the left half
            st_stage[d] = 1
            st_lo[d + 1], st_n[d + 1], st_stage[d + 1] = st_lo[d], half, 0
            d += 1
        elif st_stage[d] == 1:  # left half done: keep it, descend into the right half
            st_left[d] = ret
            st_stage[d] = 2
            st_lo[d + 1], st_n[d + 1], st_stage[d + 1] = st_lo[d] + half, m - half, 0
            d += 1
        else:  # both halves done
            ret = st_left[d] + ret
            if d == 0:
                return 0.0 + ret
            d -= 1


@njit(cache=True, error_model="numpy")
def _clear_slot(sf: FloatArray, present: BoolArray, session: IntArray, b: int, i: int) -> None:
    present[b, i] = False
    session[b, i] = -1
    for k in range(sf.shape[0]):
        sf[k, b, i] = 0.0


@njit(cache=True, error_model="numpy")
def _arrive_slot(
    sf: FloatArray,
    present: BoolArray,
    session: IntArray,
    b: int,
    i: int,
    s: int,
    s_floats: FloatArray,
    s_dep: IntArray,
    rated_kw: FloatArray,
    efficiency: FloatArray,
    dt_h: float,
) -> None:
    """Plug session ``s`` of row ``b`` into slot ``i`` (nothing delivered yet)."""
    present[b, i] = True
    sf[_PRES_F, b, i] = 1.0
    session[b, i] = s
    sf[_REQ, b, i] = s_floats[_S_REQ, b, s]
    sf[_ROOM0, b, i] = s_floats[_S_ROOM, b, s]
    sf[_DIS0, b, i] = s_floats[_S_DIS, b, s]
    sf[_NET, b, i] = 0.0
    max_c = s_floats[_S_MAXC, b, s]
    max_d = s_floats[_S_MAXD, b, s]
    sf[_MAXC, b, i] = max_c
    sf[_MAXD, b, i] = max_d
    sf[_V2G, b, i] = 1.0 if max_d > 0 else 0.0
    sf[_PRIO, b, i] = s_floats[_S_PRIO, b, s]
    sf[_DEP_H, b, i] = s_dep[b, s] * dt_h
    r = rated_kw[i]
    rate = r if (r <= max_c or r != r) else max_c  # np.minimum
    sf[_H_PER_KWH, b, i] = 1.0 / (rate * efficiency[i])
    battery = s_floats[_S_BATT, b, s]
    soc = s_floats[_S_SOC, b, s]
    known = np.isfinite(battery) and np.isfinite(soc)
    sf[_SOC_BASE, b, i] = soc if known else -1.0
    sf[_INV_BATT, b, i] = 1.0 / battery if known else 0.0


@njit(cache=True, error_model="numpy")
def _start_row(
    b: int,
    sf: FloatArray,
    present: BoolArray,
    session: IntArray,
    slot: NDArray[np.int32],
    s_floats: FloatArray,
    s_dep: IntArray,
    rated_kw: FloatArray,
    efficiency: FloatArray,
    dt_h: float,
    row_floats: FloatArray,
    new_period: BoolArray,
    static_all: NDArray[np.float32],
    static_now: NDArray[np.float32],
) -> None:
    """Empty every slot of row ``b``, plug in the sessions present at step 0 and set the step's cache."""
    for i in range(present.shape[1]):
        _clear_slot(sf, present, session, b, i)
        s = slot[b, 0, i]
        if s >= 0:
            _arrive_slot(sf, present, session, b, i, s, s_floats, s_dep, rated_kw, efficiency, dt_h)
    _set_now(b, 0, row_floats, new_period, static_all, static_now)


@njit(cache=True, error_model="numpy")
def _set_now(
    b: int,
    t: int,
    row_floats: FloatArray,
    new_period: BoolArray,
    static_all: NDArray[np.float32],
    static_now: NDArray[np.float32],
) -> None:
    """The per-step cache of row ``b`` at step ``t``: peak so far (0 when a period opens), static obs."""
    row_floats[_R_PEAK_NOW, b] = 0.0 if new_period[b, t] else row_floats[_R_PEAK, b]
    for j in range(static_now.shape[1]):
        static_now[b, j] = static_all[b, t, j]


@njit(cache=True, error_model="numpy")
def _apply_kernel(
    p: FloatArray,
    pb: FloatArray,
    site_import: FloatArray,
    sf: FloatArray,
    present: BoolArray,
    session: IntArray,
    site_c: FloatArray,
    battery_c: FloatArray,
    dt_h: float,
    row_floats: FloatArray,
    row_ints: IntArray,
    slot: NDArray[np.int32],
    s_floats: FloatArray,
    s_dep: IntArray,
    series: FloatArray,
    new_period: BoolArray,
    static_all: NDArray[np.float32],
    static_now: NDArray[np.float32],
    vals: FloatArray,
    counts: IntArray,
    scratch: FloatArray,
) -> bool:
    """One step of every row (see :meth:`BatchSim.apply`) but its pricing: ``vals`` gets the flows and
    outcomes (rows :data:`OUTCOME_FLOATS`), ``counts`` the integer ones (:data:`OUTCOME_COUNTS`); False,
    with nothing changed, where a row is past its end.

    ``site_c``: (4, n) ``eff * dt``, ``dt / eff``, rated kW, efficiency; ``battery_c``: has battery,
    ``dt / eff``, ``eff * dt``. Elementwise operations mirror numpy's (``np.maximum`` with NaN, pairwise
    row sums), so the results are bit-identical to the former numpy implementation."""
    B, n = p.shape
    for b in range(B):
        if row_ints[_I_T, b] >= row_ints[_I_N, b]:
            return False
    has_battery = battery_c[0] > 0.0
    for b in range(B):
        t = row_ints[_I_T, b]
        # EV energy books: charging at p puts p * eff * dt in, discharging takes |p| * dt / eff out
        for i in range(n):
            x = p[b, i]
            charge = _pos(x)
            out_of_ev = (charge - x) * site_c[1, i]
            into_ev = charge * site_c[0, i]
            net = sf[_NET, b, i] + into_ev
            sf[_NET, b, i] = net - out_of_ev
            scratch[0, i] = into_ev
            scratch[1, i] = out_of_ev
        delivered = _pairwise_sum(scratch[0], n)
        ev_out = _pairwise_sum(scratch[1], n)

        # stationary battery
        xb = pb[b]
        batt_out = 0.0
        if has_battery:
            b_charge = _pos(xb)
            batt_out = (b_charge - xb) * battery_c[1]
            row_floats[_R_SOC, b] += b_charge * battery_c[2] - batt_out
        row_floats[_R_BKW, b] = xb

        # departures at the end of this step, then arrivals for the next one
        departures = 0
        arrivals = 0
        for i in range(n):
            scratch[2, i] = 0.0
            now = slot[b, t, i]
            nxt = slot[b, t + 1, i]
            if now != nxt:
                if present[b, i]:
                    scratch[2, i] = _pos(sf[_REQ, b, i] - sf[_NET, b, i])
                    departures += 1
                    _clear_slot(sf, present, session, b, i)
                if nxt >= 0:
                    arrivals += 1
                    _arrive_slot(sf, present, session, b, i, nxt, s_floats, s_dep, site_c[2], site_c[3], dt_h)
        missing = _pairwise_sum(scratch[2], n) if departures > 0 else 0.0

        # billing-period peak; the step is priced by envs.costs.price_rows on the flows written here
        imp = site_import[b]
        peak_before = 0.0 if new_period[b, t] else row_floats[_R_PEAK, b]
        peak = peak_before if (peak_before >= imp or peak_before != peak_before) else imp  # np.maximum
        row_floats[_R_PEAK, b] = peak
        row_floats[_R_DELIV, b] += delivered
        row_floats[_R_MISS, b] += missing
        row_floats[_R_EVDIS, b] += ev_out
        row_ints[_I_T, b] = t + 1
        counts[2, b] = 1 if t + 1 >= row_ints[_I_N, b] else 0
        _set_now(b, t + 1, row_floats, new_period, static_all, static_now)

        vals[_O_IMPORT, b] = imp
        vals[_O_PIN, b] = series[_X_PIN, b, t]
        vals[_O_POUT, b] = series[_X_POUT, b, t]
        vals[_O_PEAK0, b] = peak_before
        vals[_O_EVDIS, b] = ev_out
        vals[_O_BDIS, b] = batt_out
        vals[_O_MISS, b] = missing
        vals[_O_DELIV, b] = delivered
        vals[_O_PEAK1, b] = peak
        vals[_O_SOC, b] = row_floats[_R_SOC, b]
        vals[_O_DELIV_TOT, b] = row_floats[_R_DELIV, b]
        vals[_O_MISS_TOT, b] = row_floats[_R_MISS, b]
        vals[_O_BKW, b] = xb
        counts[0, b] = departures
        counts[1, b] = arrivals
        counts[3, b] = row_ints[_I_START, b] + t
    return True


@njit(cache=True, error_model="numpy")
def _state_kernel(
    sf: FloatArray,
    present: BoolArray,
    row_ints: IntArray,
    row_floats: FloatArray,
    series: FloatArray,
    dt_h: float,
    out_f: FloatArray,
    out_present: BoolArray,
    out_site: FloatArray,
) -> None:
    """Fill the arrays of :meth:`BatchSim.state`: ``out_f`` (see ``_STATE_FLOATS``), ``out_present``,
    ``out_site`` (3, B): base load, PV, battery SoC."""
    B, n = present.shape
    for b in range(B):
        t = row_ints[_I_T, b]
        now_h = t * dt_h
        for i in range(n):
            net = sf[_NET, b, i]
            out_present[b, i] = present[b, i]
            out_f[0, b, i] = sf[_MAXC, b, i]
            out_f[1, b, i] = sf[_MAXD, b, i]
            out_f[2, b, i] = _pos(sf[_REQ, b, i] - net)
            out_f[3, b, i] = _pos(sf[_ROOM0, b, i] - net)
            out_f[4, b, i] = _pos(sf[_DIS0, b, i] + net) * sf[_V2G, b, i]
            out_f[5, b, i] = (sf[_DEP_H, b, i] - now_h) * sf[_PRES_F, b, i]
            out_f[6, b, i] = sf[_PRIO, b, i]
        out_site[0, b] = series[_X_BASE, b, t]
        out_site[1, b] = series[_X_PV, b, t]
        out_site[2, b] = row_floats[_R_SOC, b]


# --------------------------------------------------------------------------- the simulator


class BatchSim:
    """``B`` episodes of one site stepped together.

    Load an episode into row ``b`` with :meth:`load`, read the current :meth:`state`, project a request on
    it, and :meth:`apply` the (batched) result. Rows advance independently (each has its own step counter
    and length), so a vector environment can reset rows as their episodes end. The step itself
    (:meth:`apply`, :meth:`state`) runs in compiled kernels (numba) over preallocated arrays: one
    implementation for one site and for a batch.

    ``static_obs_size`` reserves a per-step float32 block for each row (filled by :meth:`load`), which an
    observation builder precomputes at reset; the simulator only stores and gathers it.
    """

    # per-slot EV state, (B, n); 0 where no EV is plugged in (views of one stacked array, _slot_floats)
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
    # per-row site state (B,) (views of _row_floats / _row_ints, updated in place)
    peak_kw: FloatArray
    """billing-period peak import after the last step, kW"""
    battery_soc_kwh: FloatArray
    battery_kw_last: FloatArray
    delivered_total_kwh: FloatArray
    missing_total_kwh: FloatArray
    ev_discharged_total_kwh: FloatArray
    cost_total: FloatArray
    _peak_now: FloatArray
    t: IntArray
    """step of each row's episode"""
    n_steps: IntArray
    start_step: IntArray
    _base: FloatArray
    _pv: FloatArray
    _price_in: FloatArray
    _price_out: FloatArray

    def __init__(self, site: SiteArrays, batch: int, dt_h: float, static_obs_size: int = 0) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.site = site
        self.batch = batch
        self.dt_h = float(dt_h)
        self.tariff: Tariff = site.config.tariff
        self.static_obs_size = static_obs_size
        B, n = batch, site.n
        self._site_c = np.ascontiguousarray(
            np.stack(
                [site.efficiency * self.dt_h, self.dt_h / site.efficiency, site.rated_kw, site.efficiency]
            ),
            dtype=np.float64,
        )
        eff_b = site.battery_efficiency
        self._battery_c = np.array([float(site.has_battery), self.dt_h / eff_b, eff_b * self.dt_h])
        self._tariff_c = tariff_constants(self.tariff)
        self.present = np.zeros((B, n), dtype=bool)
        self.session = np.full((B, n), -1, dtype=np.int64)
        # the per-slot floats are views of one stacked array, so that a departure clears them in one write
        self._slot_floats = np.zeros((len(_SLOT_FLOATS), B, n))
        for k, name in enumerate(_SLOT_FLOATS):
            setattr(self, name, self._slot_floats[k])
        self._row_floats = np.zeros((len(_ROW_FLOATS), B))
        for k, name in enumerate(_ROW_FLOATS):
            setattr(self, name, self._row_floats[k])
        self.battery_soc_kwh[:] = site.battery_initial_kwh
        self._row_ints = np.zeros((len(_ROW_INTS), B), dtype=np.int64)
        for k, name in enumerate(_ROW_INTS):
            setattr(self, name, self._row_ints[k])
        self.n_steps[:] = 1
        self._scratch = np.zeros((3, n))
        # stacked per-step episode arrays (B, T + 1, ...) and session tables (B, S), grown on demand
        self._t_cap = 0
        self._s_cap = 0
        self._series = np.zeros((len(_SERIES), B, 0))
        self._new_period = np.zeros((B, 0), dtype=bool)
        self._slot: Int32Array = np.zeros((B, 0, n), dtype=np.int32)
        self._static_obs: NDArray[np.float32] = np.zeros((B, 0, static_obs_size), dtype=np.float32)
        self._static_now: NDArray[np.float32] = np.zeros((B, static_obs_size), dtype=np.float32)
        self._s_floats = np.zeros((len(_SESSION_FLOATS), B, 0))
        self._s_dep = np.zeros((B, 0), dtype=np.int64)
        self._reserve(2, 1)

    # ------------------------------------------------------------------ storage

    def _reserve(self, t_cap: int, s_cap: int) -> None:
        """Grow the stacked arrays to hold ``t_cap`` steps and ``s_cap`` sessions per row."""
        if t_cap > self._t_cap:
            self._series = _grown(self._series, t_cap, 2, 0.0)
            for k, name in enumerate(_SERIES):
                setattr(self, name, self._series[k])
            self._new_period = _grown(self._new_period, t_cap, 1, False)
            self._slot = _grown(self._slot, t_cap, 1, -1)
            self._static_obs = _grown(self._static_obs, t_cap, 1, 0.0)
            self._t_cap = t_cap
            self._row_base = np.arange(self.batch) * t_cap
        if s_cap > self._s_cap:
            self._s_floats = _grown(self._s_floats, s_cap, 2, 0.0)
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
        table = (
            st.request_kwh,
            st.room_kwh,
            st.dischargeable_kwh,
            st.max_charge_kw,
            st.max_discharge_kw,
            st.battery_kwh,
            st.start_soc,
            st.priority,
        )
        for k, column in enumerate(table):
            self._s_floats[k, b, :S] = column
        self._s_dep[b, :S] = st.departure_step
        self.t[b] = 0
        self.n_steps[b] = T
        self.start_step[b] = episode.start_step
        self._row_floats[:, b] = 0.0
        self.battery_soc_kwh[b] = self.site.battery_initial_kwh
        _start_row(
            b,
            self._slot_floats,
            self.present,
            self.session,
            self._slot,
            self._s_floats,
            self._s_dep,
            self._site_c[2],
            self._site_c[3],
            self.dt_h,
            self._row_floats,
            self._new_period,
            self._static_obs,
            self._static_now,
        )

    # ------------------------------------------------------------------ views of the current step

    def energy_needed_kwh(self) -> FloatArray:
        """(B, n) energy still to deliver before departure, kWh (0 where no EV)."""
        return self.state().energy_needed_kwh

    def time_left_h(self) -> FloatArray:
        """(B, n) hours to departure (0 where no EV)."""
        return self.state().time_left_h

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
        return self._peak_now.copy()

    def static_obs(self) -> NDArray[np.float32]:
        """(B, static_obs_size) the precomputed observation block of the current step: the simulator's
        buffer (read-only by convention), valid until the next :meth:`apply` or :meth:`load`."""
        return self._static_now

    def state(self) -> SiteState:
        """The batched :class:`SiteState` of the current step (arrays ``(B, n)``, site values ``(B,)``).

        Its arrays are fresh: they do not change when the simulator steps on.
        """
        B, n = self.batch, self.site.n
        out_f = np.empty((_STATE_FLOATS, B, n))
        present = np.empty((B, n), dtype=bool)
        site = np.empty((3, B))
        _state_kernel(
            self._slot_floats, self.present, self._row_ints, self._row_floats, self._series, self.dt_h,
            out_f, present, site,
        )  # fmt: skip
        f = out_f
        return SiteState.from_arrays(
            present, f[0], f[1], f[2], f[3], f[4], f[5], site[0], site[1], site[2], self.dt_h, f[6]
        )

    # ------------------------------------------------------------------ the step

    def apply(self, result: ProjectionResult) -> StepOutcome:
        """Hold the projected allocation (batched: ``(B, n)``, ``(B,)``) for one step, then advance every
        row by one step. Rows already at their end must be reloaded first (a :class:`ValueError` otherwise).
        """
        B = self.batch
        p = result.charger_kw
        pb = result.battery_kw
        site_import = result.site_import_kw
        if p.shape != (B, self.site.n) or np.shape(pb) != (B,) or np.shape(site_import) != (B,):
            raise ValueError("apply() needs a batched projection result: (B, n) and (B,) arrays")
        vals = np.empty((len(OUTCOME_FLOATS), B))
        counts = np.empty((len(OUTCOME_COUNTS), B), dtype=np.int64)
        ok = _apply_kernel(
            p, pb, site_import, self._slot_floats, self.present, self.session, self._site_c,
            self._battery_c, self.dt_h, self._row_floats, self._row_ints, self._slot,
            self._s_floats, self._s_dep, self._series, self._new_period, self._static_obs,
            self._static_now, vals, counts, self._scratch,
        )  # fmt: skip
        if not ok:
            raise ValueError("a row is past its episode end; load a new episode first")
        price_rows(vals[_FLOWS], self.dt_h, self._tariff_c, vals[_PARTS], vals[_O_REWARD], self.cost_total)
        return StepOutcome(result, vals, counts)
