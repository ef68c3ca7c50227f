"""What the rule-based DLM (:mod:`agents.rule_based`) expects of arrivals: how much energy EVs that are not
here yet will ask for, when, and by when they will want it.

A site's EVs do not all arrive at once: at a workplace most arrive within a couple of morning hours. A rule
that plans only on the EVs present sets a peak target they alone just fit under and defers their energy
to the cheap hours of their stay, then finds the target and those hours shared with the EVs that came
after, and has to raise the peak to keep every deadline. The record counts the energy each arriving EV
asks for in the step of the day it arrives, apart for workdays and weekends (local time of the site), and
expects in each coming step the mean over the days seen. Where no such day was seen yet (the first day),
it expects the next hour to bring what the last hour brought, as far as the chargers free by then take it
(those free now and those the present EVs leave; each EV asking the mean of what arriving EVs asked so far).
An arriving EV is expected to stay the mean stay (as declared) of the EVs seen arriving at that time of day
(a workplace's late arrivals leave the same evening), where none was seen of all arrivals seen.

A site that keeps a log need not start blind: a record can start from a profile of past sessions
(:class:`agents.mpc_demand.ProfileDemand`, what the MPC's ghosts are drawn from in the declared mode), its
days counting as days seen.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from envs.core import BoolArray, FloatArray, IntArray, Snapshot

if TYPE_CHECKING:
    from agents.mpc_demand import ProfileDemand


class ArrivalRecord:
    """Energy asked by arriving EVs, kWh, per time of day (bins of a step, at least :attr:`MIN_BIN_H`) and
    day type (workday, weekend), and what arrived in the last hour."""

    MIN_BIN_H = 0.25
    """the finest time-of-day bin (a live site steps every few seconds)"""

    def __init__(self, timezone: str, prior: ProfileDemand | None = None) -> None:
        self.timezone = timezone
        self.prior = prior
        """past sessions the record starts from (none: it starts empty)"""
        self._kwh: FloatArray | None = None
        """(2, bins per day) energy asked by the EVs that arrived in each time-of-day bin, summed"""
        self._days: FloatArray | None = None
        """(2, bins per day) days seen in each bin"""
        self._stays: FloatArray | None = None
        """(2, 2, bins per day) declared stays (h) of the EVs that arrived in each bin, summed; their count"""
        self._recent: deque[float] = deque()
        """energy asked by the arrivals of each of the last steps (one hour), kWh"""
        self.arrivals = 0
        self.asked_kwh = 0.0
        self.stay_h = 0.0
        """total declared stay of the arrivals seen, h"""
        self._step = -2
        self._present: BoolArray | None = None
        self._left: FloatArray | None = None

    @staticmethod
    def bin_h(dt_h: float) -> float:
        """Width of the record's time-of-day bins, h: the step, but no finer than :attr:`MIN_BIN_H`."""
        return max(dt_h, ArrivalRecord.MIN_BIN_H)

    def _slots(self, times: pd.DatetimeIndex, dt_h: float) -> tuple[IntArray, IntArray]:
        """(day type, time-of-day bin) of steps starting at ``times`` (UTC), in local time."""
        local = times.tz_convert(self.timezone)
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        width_s = self.bin_h(dt_h) * 3600.0
        per_day = round(24.0 / self.bin_h(dt_h))
        sod = np.minimum(np.floor(np.asarray(seconds, dtype=float) / width_s).astype(np.int64), per_day - 1)
        return np.asarray(local.day_of_week >= 5, dtype=np.int64), sod

    def observe(self, snapshot: Snapshot) -> None:
        """Take in the snapshot of the next step (a snapshot of the step already seen changes nothing)."""
        if snapshot.step_index == self._step and self._present is not None:
            return
        st = snapshot.state
        dt = float(st.dt_h)
        present = np.asarray(st.ev_present, dtype=bool)
        left = np.asarray(st.time_left_h, dtype=float)
        per_day = round(24.0 / self.bin_h(dt))
        if self._kwh is None or self._days is None or self._kwh.shape[1] != per_day:
            self._kwh, self._days = np.zeros((2, per_day)), np.zeros((2, per_day))
            self._stays = np.zeros((2, 2, per_day))
            if self.prior is not None:
                self._seed(self.prior, dt)
        stays = self._stays
        assert stays is not None
        if self._present is not None and self._left is not None and len(self._present) == len(present):
            # new: plugged in now, or a new EV on the same charger (its time left jumped up)
            new = present & (~self._present | (left > self._left + 1e-6))
            kind, sod = self._slots(pd.DatetimeIndex([pd.Timestamp(snapshot.timestamp, tz="UTC")]), dt)
            asked = float(np.maximum(np.asarray(st.energy_needed_kwh, dtype=float), 0.0)[new].sum())
            self._kwh[kind[0], sod[0]] += asked
            self._days[kind[0], sod[0]] += dt / self.bin_h(dt)  # the share of the bin seen
            stay_h, count = float(left[new].sum()), int(new.sum())
            stays[:, kind[0], sod[0]] += (stay_h, count)
            self._recent.append(asked)
            while len(self._recent) > max(round(1.0 / dt), 1):
                self._recent.popleft()
            self.arrivals += int(new.sum())
            self.asked_kwh += asked
            self.stay_h += float(left[new].sum())
        self._step = snapshot.step_index
        self._present, self._left = present.copy(), left.copy()

    def _seed(self, prior: ProfileDemand, dt: float) -> None:
        """Count the sessions of ``prior`` as arrivals seen, its days as days seen."""
        assert self._kwh is not None and self._days is not None and self._stays is not None
        per_day = self._kwh.shape[1]
        kind = np.where(prior.workday, 0, 1)
        sod = np.minimum(np.floor(prior.arrival_h / self.bin_h(dt)).astype(np.int64), per_day - 1)
        # an average past day of each kind, weighing as one day seen: the site's own days soon outweigh it
        days = np.asarray(prior.days, dtype=float)
        np.add.at(self._kwh, (kind, sod), prior.energy_kwh / np.maximum(days, 1.0)[kind])
        self._days += np.minimum(days, 1.0)[:, None]
        np.add.at(self._stays[0], (kind, sod), prior.stay_h)
        np.add.at(self._stays[1], (kind, sod), 1.0)
        self.arrivals += len(prior.energy_kwh)
        self.asked_kwh += float(prior.energy_kwh.sum())
        self.stay_h += float(prior.stay_h.sum())

    def stay_steps(self, dt_h: float) -> int:
        """Steps an arriving EV is expected to stay (the mean declared stay seen; 0 before any arrival)."""
        return 0 if self.arrivals == 0 else max(round(self.stay_h / self.arrivals / dt_h), 1)

    def stays_ahead(self, snapshot: Snapshot, horizon: int) -> IntArray:
        """(horizon,) steps an EV arriving in each coming step is expected to stay: the mean declared stay
        of the EVs seen arriving at that time of day (a workplace's late arrivals leave the same evening,
        its morning ones stay the day); where none was seen, of all arrivals seen."""
        dt = float(snapshot.state.dt_h)
        overall = self.stay_steps(dt)
        if self._stays is None:
            return np.full(horizon, overall, dtype=np.int64)
        times = pd.date_range(
            pd.Timestamp(snapshot.timestamp, tz="UTC"), periods=horizon, freq=pd.Timedelta(hours=dt)
        )
        kind, sod = self._slots(times, dt)
        total, count = self._stays[0, kind, sod], self._stays[1, kind, sod]
        mean = np.divide(total, count, out=np.zeros(horizon), where=count > 0) / dt
        return np.where(count > 0, np.maximum(np.round(mean), 1), overall).astype(np.int64)

    def expected_kwh(self, snapshot: Snapshot, horizon: int) -> FloatArray:
        """(horizon,) energy the EVs arriving in each coming step are expected to ask for, kWh (the step now
        holds 0: its arrivals are present)."""
        out = np.zeros(horizon)
        if self._kwh is None or self._days is None or horizon <= 1:
            return out
        st = snapshot.state
        dt = float(st.dt_h)
        # a step of the day not seen yet: for the next hour, the arrivals of the last hour again, at most as
        # many EVs as there are free chargers, each asking the mean of what arrivals asked
        # (a charger an EV leaves is free for the next: at a full site the arrivals come as EVs leave)
        rate = sum(self._recent) / max(len(self._recent), 1)
        present = np.asarray(st.ev_present, dtype=bool)
        left = np.asarray(st.time_left_h, dtype=float)[present]
        steps = np.arange(horizon)
        freed = (np.ceil(left / dt - 1e-9)[None, :] <= steps[:, None]).sum(axis=1)
        cap = (int((~present).sum()) + freed) * (self.asked_kwh / self.arrivals if self.arrivals else 0.0)
        reach = np.minimum(steps, len(self._recent))  # the next hour only
        nowcast = np.diff(np.minimum(rate * reach, cap), prepend=0.0)
        start = pd.Timestamp(snapshot.timestamp, tz="UTC")
        times = pd.date_range(start, periods=horizon, freq=pd.Timedelta(hours=dt))
        kind, sod = self._slots(times, dt)
        days = self._days[kind, sod]
        per_bin = np.divide(self._kwh[kind, sod], days, out=np.zeros(horizon), where=days > 0)
        learned = per_bin * (dt / self.bin_h(dt))
        out = np.where(days > 0, learned, nowcast)
        out[0] = 0.0
        return out


def arrivals_due_kwh(arriving_kwh: FloatArray, stay_steps: int | IntArray, ks: IntArray) -> FloatArray:
    """(K,) energy the expected arrivals (``arriving_kwh``, ``(H,)``, arriving at the start of each step)
    want by step ``k`` for each ``k`` of ``ks`` (steps from now), each staying ``stay_steps`` (one for all,
    or ``(H,)``: by the step they arrive in)."""
    due_step = np.arange(len(arriving_kwh)) + np.maximum(stay_steps, 1)
    return np.asarray((arriving_kwh[None, :] * (due_step[None, :] <= ks[:, None])).sum(axis=1))
