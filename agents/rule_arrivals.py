"""What the rule-based DLM (:mod:`agents.rule_based`) learns about arrivals: how much energy EVs that are not
here yet will ask for, by time of day, from the days it has seen.

A site's EVs do not all arrive at once: at a workplace most arrive within a couple of morning hours. A rule
that plans only on the EVs present defers their energy to the cheap hours of their stay, then finds those
hours shared with the EVs that came after, and has to raise the peak to keep every deadline. The record
counts the energy each arriving EV asks for in the step of the day it arrives, apart for workdays and
weekends (local time of the site), and gives the mean over the days seen as the expected arrivals of the
coming steps. Until a day was seen it expects none (the rule then plans on the present EVs alone).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from envs.core import BoolArray, FloatArray, Snapshot


class ArrivalRecord:
    """Energy asked by arriving EVs, kWh, per step of the day and day type (workday, weekend)."""

    def __init__(self, timezone: str) -> None:
        self.timezone = timezone
        self._kwh: FloatArray | None = None
        """(2, steps per day) energy asked by the EVs that arrived in each step of the day, summed"""
        self._days: FloatArray | None = None
        """(2, steps per day) days seen in each step of the day"""
        self._step = -2
        self._present: BoolArray | None = None
        self._left: FloatArray | None = None

    def _slot(self, timestamp: np.datetime64, dt_h: float) -> tuple[int, int]:
        """(day type, step of the day) of a step starting at ``timestamp`` (UTC), in local time."""
        local = pd.Timestamp(timestamp, tz="UTC").tz_convert(self.timezone)
        per_day = round(24.0 / dt_h)
        sod = int((local.hour * 60 + local.minute) // round(dt_h * 60)) % per_day
        return int(local.day_of_week >= 5), sod

    def observe(self, snapshot: Snapshot) -> None:
        """Take in the snapshot of the next step (a snapshot of the step already seen changes nothing)."""
        if snapshot.step_index == self._step and self._present is not None:
            return
        st = snapshot.state
        dt = float(st.dt_h)
        present = np.asarray(st.ev_present, dtype=bool)
        left = np.asarray(st.time_left_h, dtype=float)
        per_day = round(24.0 / dt)
        if self._kwh is None or self._days is None or self._kwh.shape[1] != per_day:
            self._kwh, self._days = np.zeros((2, per_day)), np.zeros((2, per_day))
        if self._present is not None and self._left is not None and len(self._present) == len(present):
            # new: plugged in now, or a new EV on the same charger (its time left jumped up)
            new = present & (~self._present | (left > self._left + 1e-6))
            kind, sod = self._slot(snapshot.timestamp, dt)
            need = np.maximum(np.asarray(st.energy_needed_kwh, dtype=float), 0.0)
            self._kwh[kind, sod] += float(need[new].sum())
            self._days[kind, sod] += 1.0
        self._step = snapshot.step_index
        self._present, self._left = present.copy(), left.copy()

    def expected_kwh(self, snapshot: Snapshot, horizon: int) -> FloatArray:
        """(horizon,) energy the EVs arriving in each coming step are expected to ask for, kWh (the step now
        holds 0: its arrivals are present)."""
        out = np.zeros(horizon)
        if self._kwh is None or self._days is None or horizon <= 1:
            return out
        dt = float(snapshot.state.dt_h)
        per_day = self._kwh.shape[1]
        mean = np.divide(self._kwh, self._days, out=np.zeros_like(self._kwh), where=self._days > 0)
        start = pd.Timestamp(snapshot.timestamp, tz="UTC")
        steps = pd.date_range(
            start + pd.Timedelta(hours=dt), periods=horizon - 1, freq=pd.Timedelta(hours=dt)
        )
        local = steps.tz_convert(self.timezone)
        kind = (local.day_of_week >= 5).astype(int)
        sod = ((local.hour * 60 + local.minute) // round(dt * 60)) % per_day
        out[1:] = mean[kind, sod]
        return out
