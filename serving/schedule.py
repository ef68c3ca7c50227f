"""The plan behind each TxProfile: the decision now, then ``schedule_periods - 1`` periods of
``schedule_period_s``.

The first period is the decision of this cycle and lasts one control interval (what it was projected
for: the departure margin of a discharge holds for that long); the periods after it start at
``control_interval_s + (k - 1) * schedule_period_s`` (:func:`period_starts`).

Policies return one decision per snapshot (:class:`agents.base.Decision`), not a trajectory, so the
future periods follow one documented rule, **hold and project**: every charger keeps asking for what was
decided now, and each future period is that request projected (:func:`envs.projection.project`, with the
departure floor and the V2G departure margin, the import, export and node limits) on the state the site
is expected to be in then: each EV's need, room and dischargeable energy moved by the periods before it,
its time left shortened (to whole periods), EVs gone from the period their departure falls in, and the
base load and PV of the snapshot's forecast window at that time (flat where no forecast is configured).
So every period is feasible for the forecast, an EV that must finish gets its departure floor in the
period it needs it, and discharge stops where the departure margin says so. A station that loses its
central system follows this plan until it ends, then its failsafe profiles. With a stale site meter no
period discharges and none exceeds the static safe share.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from envs.core import FloatArray, ForecastWindow, SiteArrays, SiteState
from envs.projection import ProjectionPlan, project


def plan_schedule(
    site: SiteArrays,
    plan: ProjectionPlan,
    state: SiteState,
    window: ForecastWindow,
    now_kw: FloatArray,
    periods: int,
    period_s: float,
    control_interval_s: float,
    departure_floor: bool = True,
    cap_kw: FloatArray | None = None,
) -> FloatArray:
    """(n, periods) kW per charger and period, the first the decision now (``now_kw``, already
    projected); see the module docstring. ``cap_kw``: an upper bound on every period (the static safe
    share on a stale meter, where discharge is off too)."""
    n = site.n
    out = np.zeros((n, periods))
    out[:, 0] = now_kw
    if periods == 1:
        return out
    step_h = period_s / 3600.0
    starts = period_starts(periods, period_s, control_interval_s)
    first_h = starts[1] / 3600.0
    eff = np.asarray(site.efficiency, dtype=float)
    present = np.asarray(state.ev_present, dtype=bool).copy()
    may_discharge = np.asarray(state.ev_max_discharge_kw, dtype=float) > 0
    need = np.asarray(state.energy_needed_kwh, dtype=float).copy()
    room = np.asarray(state.energy_room_kwh, dtype=float).copy()
    dis = np.asarray(state.energy_dischargeable_kwh, dtype=float).copy()
    left = np.asarray(state.time_left_h, dtype=float).copy()
    request = np.where(present, now_kw, 0.0)
    p = np.asarray(now_kw, dtype=float)
    last = len(window.base_load_kw) - 1
    for k in range(1, periods):
        held_h = first_h if k == 1 else step_h  # how long the period before lasts
        moved = np.where(p > 0, p * eff, p / eff) * held_h  # battery side
        need = np.maximum(need - moved, 0.0)
        room = np.maximum(room - moved, 0.0)
        dis = np.maximum(dis + moved, 0.0)
        left = left - held_h
        # whole periods left: an EV leaving inside a period is planned as gone for all of it, so its
        # departure floor lands in the periods it is fully there for
        whole = np.floor(left / step_h + 1e-9) * step_h
        present = present & (whole > 1e-9)
        j = min(round(starts[k] / control_interval_s), last)
        st = dataclasses.replace(
            state,
            ev_present=present,
            ev_max_charge_kw=np.where(present, state.ev_max_charge_kw, 0.0),
            ev_max_discharge_kw=np.where(present & (cap_kw is None), state.ev_max_discharge_kw, 0.0),
            energy_needed_kwh=np.where(present, need, 0.0),
            energy_room_kwh=np.where(present, room, 0.0),
            energy_dischargeable_kwh=np.where(present, dis, 0.0),
            time_left_h=np.where(present, whole, 0.0),
            base_load_kw=float(window.base_load_kw[j]),
            pv_kw=float(window.pv_kw[j]),
            dt_h=step_h,
        )
        res = project(
            site, st, np.where(present, request, 0.0), 0.0, plan=plan, departure_floor=departure_floor
        )
        got = np.asarray(res.charger_kw, dtype=float)
        p = np.where(present, np.where(may_discharge, got, np.maximum(got, 0.0)), 0.0)
        if cap_kw is not None:
            p = np.clip(p, 0.0, cap_kw)
        out[:, k] = p
    return out


def period_starts(periods: int, period_s: float, control_interval_s: float) -> list[float]:
    """Start of each period, s from now: 0, then ``first + (k - 1) * period_s`` where ``first`` is the
    control interval rounded up to whole seconds (OCPP's ``startPeriod`` is in whole seconds)."""
    first = float(math.ceil(control_interval_s - 1e-9))
    return [0.0] + [first + (k - 1) * period_s for k in range(1, periods)]


def plan_moved(
    sent_kw: FloatArray | None,
    sent_age_s: float,
    new_kw: FloatArray,
    period_s: float,
    band_kw: float,
) -> bool:
    """True when the plan sent ``sent_age_s`` ago differs from ``new_kw`` by more than ``band_kw`` in a
    future period (compared at the same times), or when less than half of it is left to run."""
    if sent_kw is None or len(new_kw) <= 1:
        return False
    shift = int(max(sent_age_s, 0.0) // period_s)
    remaining = len(sent_kw) - shift
    if remaining * 2 < len(sent_kw):
        return True
    for k in range(1, len(new_kw)):
        j = shift + k
        if j >= len(sent_kw):
            break
        if abs(float(new_kw[k]) - float(sent_kw[j])) > band_kw:
            return True
    return False
