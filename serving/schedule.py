"""The plan behind each TxProfile: ``schedule_periods`` periods of ``schedule_period_s`` from now.

Policies return one decision per snapshot (:class:`agents.base.Decision`), not a trajectory, so the
future periods follow one documented rule, **hold and project**: every charger keeps asking for what was
decided now, and each period is that request projected (:func:`envs.projection.project`, with the
departure floor and the V2G departure margin, the import, export and node limits, ``dt`` = the period) on
the state the site is expected to be in then: each EV's need, room and dischargeable energy moved by the
periods before it, its time left shortened, EVs gone once departed (an EV leaving inside a period is
asked for its need within the part it is there for), and the base load and PV of the snapshot's forecast
window at that time (flat where no forecast is configured). So every period is feasible for the
forecast, an EV that must finish gets its departure floor in the period it needs it, and discharge stops
where the departure margin says so.

The first period is the decision now, except that a discharge is cut to what the departure margin
allows for a whole period: a station may lose its central system at any moment and then holds the first
period for all of it. No later period is further from 0 than the first (charging never rises, discharge
never deepens): a station steps into its next period on its own, and the central system, which keeps
every station's current limit feasible together, must not be surprised by a rise. The price: an EV
not charging now is not started later by its plan, so a station cut off in an expensive hour can leave
its EV short; online, the next cycles start it. A station that loses its central system follows the
plan until it ends, then its failsafe profiles. With a stale site meter no period discharges and none
exceeds the static safe share.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from envs.core import BoolArray, FloatArray, ForecastWindow, SiteArrays, SiteState
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
    time_scale: float = 1.0,
) -> FloatArray:
    """(n, periods) kW per charger and period, the first the decision now (``now_kw``, already
    projected) with any discharge cut to what a whole period allows; see the module docstring.
    ``cap_kw``: an upper bound on every period (the static safe share on a stale meter, where discharge
    is off too). ``period_s`` and ``control_interval_s`` are wall seconds (a station steps through its
    periods on its clock, which is the wall clock, also in ``evdlm simulate --speed N``);
    ``time_scale``: the stations' (energy) seconds per wall second, so one period moves
    ``period_s * time_scale`` seconds' worth of energy, as ``state.dt_h`` does for the control interval."""
    n = site.n
    out = np.zeros((n, periods))
    step_h = period_s * time_scale / 3600.0
    eff = np.asarray(site.efficiency, dtype=float)
    present0 = np.asarray(state.ev_present, dtype=bool)
    may_discharge = (np.asarray(state.ev_max_discharge_kw, dtype=float) > 0) & (cap_kw is None)
    need = np.asarray(state.energy_needed_kwh, dtype=float).copy()
    room = np.asarray(state.energy_room_kwh, dtype=float).copy()
    dis = np.asarray(state.energy_dischargeable_kwh, dtype=float).copy()
    left0 = np.asarray(state.time_left_h, dtype=float)
    request = np.where(present0, now_kw, 0.0)
    last = len(window.base_load_kw) - 1
    p = np.zeros(n)
    first = np.zeros(n)
    for k in range(periods):
        if k > 0:
            moved = np.where(p > 0, p * eff, p / eff) * step_h  # battery side
            need = np.maximum(need - moved, 0.0)
            room = np.maximum(room - moved, 0.0)
            dis = np.maximum(dis + moved, 0.0)
        left = left0 - k * step_h
        present = present0 & (left > 1e-9)
        # an EV leaving inside this period: its need (and room) as power over the part it is there for
        scale = np.where(present & (left < step_h), step_h / np.maximum(left, 1e-9), 1.0)
        j = min(round(k * period_s / control_interval_s), last)
        max_charge = np.asarray(state.ev_max_charge_kw, dtype=float)
        max_dis = np.asarray(state.ev_max_discharge_kw, dtype=float)
        if k > 0:
            # never further from 0 than now (see the module docstring): the box of every later period;
            # an EV discharging now keeps its charge rate, which the V2G departure margin counts on to
            # bring its energy back (capped at 0, it could discharge nothing after the first period, and
            # its station would stop at the period's end unless a cycle resends it first): the clip below
            # keeps it from charging in the plan
            max_charge = np.where(first < 0, max_charge, np.minimum(max_charge, np.maximum(first, 0.0)))
            max_dis = np.minimum(max_dis, np.maximum(-first, 0.0))
        st = dataclasses.replace(
            state,
            ev_present=present,
            ev_max_charge_kw=np.where(present, max_charge, 0.0),
            ev_max_discharge_kw=np.where(present & may_discharge, max_dis, 0.0),
            energy_needed_kwh=np.where(present, need * scale, 0.0),
            energy_room_kwh=np.where(present, room * scale, 0.0),
            energy_dischargeable_kwh=np.where(present, dis, 0.0),
            time_left_h=np.where(present, np.maximum(left, step_h), 0.0),
            base_load_kw=float(window.base_load_kw[j]),
            pv_kw=float(window.pv_kw[j]),
            dt_h=step_h,
        )
        p = _project_period(site, plan, st, request, present, may_discharge, departure_floor)
        stop = (first < 0) & (p > 0) if k > 0 else np.zeros(n, dtype=bool)
        while stop.any():
            # an EV discharging now that the margin would have charge: the plan never charges it, so it
            # stops (its charge would have balanced the others' export in the projection)
            st = dataclasses.replace(
                st,
                ev_max_charge_kw=np.where(stop, 0.0, st.ev_max_charge_kw),
                ev_max_discharge_kw=np.where(stop, 0.0, st.ev_max_discharge_kw),
            )
            p = _project_period(site, plan, st, request, present, may_discharge, departure_floor)
            stop = (first < 0) & (p > 0)
        if k == 0:
            # the decision now; a discharge no deeper than a whole period allows
            p = np.where(np.asarray(now_kw) < 0, np.maximum(now_kw, np.minimum(p, 0.0)), now_kw)
            first = p.copy()
        else:
            p = np.clip(p, np.minimum(first, 0.0), np.maximum(first, 0.0))  # no charging where discharging
        if cap_kw is not None:
            p = np.clip(p, 0.0, cap_kw)
        out[:, k] = p
    return out


def _project_period(
    site: SiteArrays,
    plan: ProjectionPlan,
    state: SiteState,
    request: FloatArray,
    present: BoolArray,
    may_discharge: BoolArray,
    departure_floor: bool,
) -> FloatArray:
    """(n,) one period's projection of ``request``: discharge only where allowed, 0 where no EV is."""
    res = project(site, state, request, 0.0, plan=plan, departure_floor=departure_floor)
    got = np.asarray(res.charger_kw, dtype=float)
    return np.asarray(np.where(present, np.where(may_discharge, got, np.maximum(got, 0.0)), 0.0))


def period_starts(periods: int, period_s: float) -> list[int]:
    """Start of each period, whole seconds from now (OCPP's ``startPeriod``)."""
    return [round(k * period_s) for k in range(periods)]


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
