"""Future EV demand for the MPC: the energy that will arrive, as aggregate "ghost" EVs in its LP.

An MPC that plans only the EVs plugged in sets a peak and fills the cheap hours for them alone; the EVs
that arrive later need the same hours and capacity, and the peak creeps up with every arrival (on the real
weeks that, not the horizon, was most of MPC's gap to the optimum). The answer used here is to plan for
the demand that will arrive: the EVs expected within the horizon are grouped into *ghosts*, aggregate EVs
each with a window (when its members arrive and leave, on average, weighted by energy), the energy they
will ask for and the power they can draw together. The LP plans the ghosts alongside the EVs present
(their energy competes for the same cheap hours and sets the same peak); only the first step is applied,
and no ghost is present in it.

What a forecast may know is what a real site could: aggregate arrivals and energy by arrival and departure
hour, never which session comes to which charger. Two sources (:class:`DemandForecast`):

* :class:`PerfectDemand` reads the scenario's sessions: their arrivals, and what each driver *declares*
  (departure and energy; without declarations, the actual values). In the real-data benchmark's
  ``perfect`` mode that is a perfect forecast of the demand to come; it needs the scenario (simulation).
* :class:`ProfileDemand` is fitted on past sessions (what happened: actual departures and energy): the
  expected demand per day type (workday, weekend), arrival hour and length of stay, averaged over the
  history's days. A live site can fit it on its own log.

Ghosts sit outside the limit tree (their members would spread over chargers and circuits the forecast does
not know), but for the kW limit of the nodes every charger sits under (a transformer: whichever charger an
EV takes, it draws through it; out of it too, the ghosts planned a workplace's morning past it, and the
arriving EVs then needed the hours the plan had left at the peak: +1.40 % over the optimum on a generated
week, +0.49 % held to it): they count in the site's import, its limit and its peak. Their columns are
taken out of the other limit rows of the :class:`~agents.lp.SiteLP` they are added to (:func:`free_of_tree`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from agents.lp import SiteLP
from envs.core import FloatArray, IntArray, SiteArrays
from envs.scenario import Scenario


@dataclass(frozen=True, eq=False)
class Ghosts:
    """Aggregate future EVs over a planning window of ``H`` steps (arrays ``(G,)``, step 0 = now)."""

    start: IntArray
    """first step the ghost is present (>= 1: the current step's EVs are in the snapshot)"""
    stop: IntArray
    """the step after the last one it is present in the window (<= H)"""
    after_steps: IntArray
    """steps its members stay beyond the window's end"""
    energy_kwh: FloatArray
    """battery-side energy its members will ask for"""
    max_kw: FloatArray
    """grid-side power its members can draw together, kW"""

    @property
    def size(self) -> int:
        return len(self.start)


def no_ghosts() -> Ghosts:
    empty = np.zeros(0, dtype=np.int64)
    return Ghosts(empty, empty.copy(), empty.copy(), np.zeros(0), np.zeros(0))


class BoundDemand(Protocol):
    """A demand forecast bound to a site (and, for :class:`PerfectDemand`, a scenario)."""

    def window(self, timestamp: np.datetime64, H: int, dt_h: float, max_ghosts: int) -> Ghosts:
        """The ghosts of the EVs arriving from the step after ``timestamp`` (a step start, UTC) to the end
        of the ``H``-step window (at most ``max_ghosts``)."""
        ...


class DemandForecast(Protocol):
    """Something the MPC binds at reset to get its ghosts (``None``: it cannot forecast here)."""

    @property
    def name(self) -> str: ...

    def bind(self, site: SiteArrays, scenario: Scenario | None) -> BoundDemand | None: ...


def group(
    arrival_steps: FloatArray,
    departure_steps: FloatArray,
    energy_kwh: FloatArray,
    rate_kw: FloatArray,
    H: int,
    dt_h: float,
    max_ghosts: int,
    bucket_h: float = 1.0,
) -> Ghosts:
    """(Fractions of) EVs, arriving and leaving at these steps of the window, grouped into at most
    ``max_ghosts`` ghosts by arrival and departure bucket (``bucket_h`` hours, doubled until they fit).
    A ghost's window is its members' energy-weighted mean arrival and departure, rounded to steps."""
    if max_ghosts < 1 or H < 2 or not len(arrival_steps):
        return no_ghosts()
    a = np.asarray(arrival_steps, dtype=float)
    d = np.maximum(np.asarray(departure_steps, dtype=float), a)
    bucket = max(1, round(bucket_h / dt_h))
    while True:
        key = (np.floor(a / bucket) * (4 * H + 1) + np.minimum(np.floor(d / bucket), 4 * H)).astype(np.int64)
        groups, inv = np.unique(key, return_inverse=True)
        if len(groups) <= max_ghosts:
            break
        bucket *= 2
    w = np.maximum(energy_kwh, 1e-9)
    total_w = np.bincount(inv, weights=w)
    mean_a = np.bincount(inv, weights=w * a) / total_w
    mean_d = np.bincount(inv, weights=w * d) / total_w
    start = np.clip(np.floor(mean_a + 0.5), 1, H - 1).astype(np.int64)
    leave = np.maximum(np.floor(mean_d + 0.5).astype(np.int64), start + 1)
    return Ghosts(
        start=start,
        stop=np.minimum(leave, H),
        after_steps=np.maximum(leave - H, 0),
        energy_kwh=np.bincount(inv, weights=energy_kwh).astype(float),
        max_kw=np.bincount(inv, weights=rate_kw).astype(float),
    )


def _seconds(times: pd.Series | pd.DatetimeIndex) -> FloatArray:
    return np.asarray(pd.DatetimeIndex(times).tz_convert("UTC").asi8, dtype=float) / 1e9


def _now_s(timestamp: np.datetime64) -> float:
    return float(pd.Timestamp(timestamp, tz="UTC").value) / 1e9


@dataclass(frozen=True)
class PerfectDemand:
    """The scenario's own future sessions, aggregated (see the module docstring)."""

    bucket_h: float = 1.0
    name: str = "perfect"

    def bind(self, site: SiteArrays, scenario: Scenario | None) -> BoundDemand | None:
        return None if scenario is None else _SessionDemand(scenario, site, self.bucket_h)


class _SessionDemand:
    def __init__(self, scenario: Scenario, site: SiteArrays, bucket_h: float) -> None:
        s = scenario.sessions
        self.bucket_h = bucket_h
        departure = s["departure"]
        if "declared_departure" in s.columns:
            departure = s["declared_departure"].where(s["declared_departure"].notna(), s["departure"])
        energy = s["energy_kwh"].to_numpy(dtype=float)
        if "declared_energy_kwh" in s.columns:
            declared = s["declared_energy_kwh"].to_numpy(dtype=float)
            energy = np.where(np.isfinite(declared), declared, energy)
        pos = site.config.charger_index()
        charger = np.array([pos[c] for c in s["charger_id"].to_numpy()], dtype=np.int64)
        rate = site.rated_kw[charger] if len(charger) else np.zeros(0)
        if "max_power_kw" in s.columns:
            ev_max = s["max_power_kw"].to_numpy(dtype=float)
            rate = np.where(np.isfinite(ev_max), np.minimum(rate, ev_max), rate)
        arrival = _seconds(s["arrival"])
        order = np.argsort(arrival, kind="stable")
        self._arrival_s = arrival[order]
        self._departure_s = _seconds(departure)[order]
        self._energy_kwh = np.maximum(energy[order], 0.0)
        self._rate_kw = rate[order]
        self._eff = site.efficiency[charger][order] if len(charger) else np.zeros(0)

    def window(self, timestamp: np.datetime64, H: int, dt_h: float, max_ghosts: int) -> Ghosts:
        t0 = _now_s(timestamp)
        dt_s = dt_h * 3600.0
        lo = np.searchsorted(self._arrival_s, t0 + dt_s, side="left")
        hi = np.searchsorted(self._arrival_s, t0 + H * dt_s, side="left")
        a = (self._arrival_s[lo:hi] - t0) / dt_s
        d = np.maximum((self._departure_s[lo:hi] - t0) / dt_s, a)
        rate = self._rate_kw[lo:hi]
        # what each EV can take during its stay at full rate (a request beyond it is not planned for)
        energy = np.minimum(self._energy_kwh[lo:hi], rate * self._eff[lo:hi] * (d - a) * dt_h)
        return group(a, d, energy, rate, H, dt_h, max_ghosts, self.bucket_h)


@dataclass(frozen=True, eq=False)
class ProfileDemand:
    """Expected EV demand from past sessions: per day type (workday or weekend), the sessions of an
    average day of that type, each weighted by one over the number of such days in the history.

    Build with :meth:`fit`. Arrays are per past session; ``rate_kw`` is what one EV draws (the site's
    typical charger)."""

    timezone: str
    workday: np.ndarray
    """(S,) bool: the session arrived on a workday (Monday to Friday, local)"""
    arrival_h: FloatArray
    """(S,) local time of day of the arrival, hours"""
    stay_h: FloatArray
    """(S,) hours plugged in"""
    energy_kwh: FloatArray
    """(S,) battery-side energy delivered (at most what the stay allows at ``rate_kw``)"""
    days: tuple[int, int]
    """number of (workdays, weekend days) in the history"""
    rate_kw: float
    bucket_h: float = 1.0
    name: str = "profile"

    @classmethod
    def fit(
        cls,
        sessions: pd.DataFrame,
        timezone: str,
        first: pd.Timestamp,
        end: pd.Timestamp,
        rate_kw: float,
        efficiency: float = 1.0,
    ) -> ProfileDemand:
        """Fit on ``sessions`` (columns ``arrival``, ``departure``, ``energy_kwh``: what happened) that
        arrived in ``[first, end)`` (whole local days)."""
        arrival = pd.DatetimeIndex(sessions["arrival"]).tz_convert(timezone)
        keep = np.asarray((arrival >= first) & (arrival < end))
        arrival = arrival[keep]
        departure = pd.DatetimeIndex(sessions["departure"]).tz_convert(timezone)[keep]
        stay_h = np.maximum(np.asarray((departure - arrival).total_seconds(), dtype=float) / 3600.0, 0.0)
        energy = np.maximum(sessions["energy_kwh"].to_numpy(dtype=float)[keep], 0.0)
        energy = np.minimum(np.nan_to_num(energy), rate_kw * efficiency * stay_h)
        day0 = pd.Timestamp(first).tz_convert(timezone).normalize()
        day_list = pd.date_range(day0, pd.Timestamp(end).tz_convert(timezone), freq="D", inclusive="left")
        n_work = int((day_list.day_of_week < 5).sum())
        return cls(
            timezone=timezone,
            workday=np.asarray(arrival.day_of_week < 5),
            arrival_h=np.asarray(arrival.hour + arrival.minute / 60.0 + arrival.second / 3600.0, dtype=float),
            stay_h=stay_h,
            energy_kwh=energy,
            days=(n_work, len(day_list) - n_work),
            rate_kw=float(rate_kw),
        )

    def bind(self, site: SiteArrays, scenario: Scenario | None) -> BoundDemand | None:
        return self

    def window(self, timestamp: np.datetime64, H: int, dt_h: float, max_ghosts: int) -> Ghosts:
        now = pd.Timestamp(timestamp, tz="UTC")
        t0 = float(now.value) / 1e9
        dt_s = dt_h * 3600.0
        day0 = now.tz_convert(self.timezone).normalize()
        a_parts: list[FloatArray] = []
        d_parts: list[FloatArray] = []
        w_parts: list[FloatArray] = []
        e_parts: list[FloatArray] = []
        for k in range(int(np.ceil(H * dt_h / 24.0)) + 1):
            day = day0 + pd.Timedelta(days=k)
            work = day.day_of_week < 5
            n_days = self.days[0] if work else self.days[1]
            if n_days == 0:
                continue
            mine = self.workday == work
            a = (float(day.value) / 1e9 + self.arrival_h[mine] * 3600.0 - t0) / dt_s
            inside = (a >= 1.0) & (a < H)
            a_parts.append(a[inside])
            d_parts.append(a[inside] + self.stay_h[mine][inside] * 3600.0 / dt_s)
            w_parts.append(np.full(int(inside.sum()), 1.0 / n_days))
            e_parts.append(self.energy_kwh[mine][inside] / n_days)
        if not a_parts:
            return no_ghosts()
        w = np.concatenate(w_parts)
        return group(
            np.concatenate(a_parts),
            np.concatenate(d_parts),
            np.concatenate(e_parts),
            w * self.rate_kw,
            H,
            dt_h,
            max_ghosts,
            self.bucket_h,
        )


def free_of_tree(lp: SiteLP, slots: IntArray) -> None:
    """Take the charging columns of ``slots`` out of ``lp``'s limit-tree rows (in place, before its first
    solve): they then count only in the site's balance, import limit and peak, and in the kW rows of the
    nodes every charger sits under (a site's transformer: whichever charger an EV takes, it draws through
    it)."""
    xs = np.flatnonzero(np.isin(lp.x_slot, slots))
    if not len(xs) or not lp.n_limit_rows:
        return
    m = lp.matrix
    col_of = np.repeat(np.arange(m.shape[1]), np.diff(m.indptr))
    ghost_col = np.zeros(m.shape[1], dtype=bool)
    ghost_col[lp.col["x"] + xs] = True
    in_tree = (m.indices >= lp.r_limits) & (m.indices < lp.r_limits + lp.n_limit_rows)
    # per limit row: a kW row of a node that holds every charger (a ghost's phases are its members', spread
    # over the phases, not those of the charger its slot is drawn against)
    node = lp.limit_row_node
    common = (node >= 0) & np.asarray(lp.site.membership.all(axis=0))[np.maximum(node, 0)]
    in_tree[in_tree] = ~common[m.indices[in_tree] - lp.r_limits]
    m.data[ghost_col[col_of] & in_tree] = 0.0
    m.eliminate_zeros()
