"""An EV's deadline terms and the stationary battery's box, written once.

Every place that reasons about "can this EV still finish" uses :func:`ev_terms`: the safety projection's
kernel (:func:`envs._kernel.ev_bounds`, through the scalar :func:`ev_terms_one`), the rule-based DLM, the
learned policies' allocators, least-laxity-first and the charge caps of :mod:`agents.allocate`. Likewise
:func:`battery_box` for the stationary battery (the kernel calls :func:`battery_box_one`).

The arithmetic lives in the compiled scalar functions; the public batched functions loop over them, so
there is one copy of each formula. The conventions, chosen once:

* the **holdable rate** is ``min(rated, EV max)`` rounded *down* to the charger's resolution grid: the
  projection rounds every output toward zero, so that is the most the EV can really be held at;
* time is the **hours** to departure (``time_left_h``): the energy an EV can still get after this step is
  ``rate * eff * max(time_left - dt, 0)``, which holds for step-aligned departures and for sessions that
  leave mid-step alike (a partial last step counts for its fraction); ``steps_left`` is given for rules
  that index a forecast;
* **sub-step presence**: an EV plugged in for a fraction of the current step (it arrives or leaves
  mid-step; ``state.present_fraction``) draws at most that fraction of its rate on average over the step
  (``hi_kw``), and a charger that is on gives it at least its minimum for that fraction
  (:func:`least_on_kw`, capped by ``hi_kw``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, vectorize

from envs.core import BoolArray, FloatArray, IntArray, SiteArrays, SiteState

GRID_EPS = 1e-9
"""relative slack when snapping to a charger's resolution grid (absorbs float noise in ``k * res``)"""
BIG = float(np.finfo(np.float64).max)
"""laxity of an empty slot"""
STEP_EPS = 1e-6
"""slack when counting whole steps in ``time_left / dt`` (absorbs float noise in ``k * dt``)"""


# ---------------------------------------------------------------------------------------------- grid


@njit(cache=True)
def floor_grid(v: float, res: float) -> float:
    """Largest grid point ``k * res <= v`` for ``v >= 0`` (``res == 0``: unchanged)."""
    if res > 0.0:
        return math.floor(v / res + GRID_EPS) * res
    return v


@njit(cache=True)
def ceil_grid(v: float, res: float) -> float:
    """Smallest grid point ``k * res >= v`` for ``v >= 0`` (``res == 0``: unchanged)."""
    if res > 0.0:
        return math.ceil(v / res - GRID_EPS) * res
    return v


@vectorize(["float64(float64, float64)"], cache=True)
def floor_to_grid(v: float, res: float) -> float:
    """:func:`floor_grid` as a ufunc over arrays (for callers outside the kernel), kW."""
    return floor_grid(v, res)


@vectorize(["float64(float64, float64)"], cache=True)
def ceil_to_grid(v: float, res: float) -> float:
    """:func:`ceil_grid` as a ufunc over arrays (for callers outside the kernel), kW."""
    return ceil_grid(v, res)


# ---------------------------------------------------------------------------------------------- one EV


@njit(cache=True)
def held_rate_kw(rated_kw: float, ev_max_kw: float, res_kw: float) -> float:
    """The grid-side rate a charger can hold an EV at: ``min(rated, EV max)`` floored to its grid, kW."""
    rate = min(rated_kw, ev_max_kw)
    return floor_grid(rate, res_kw) if math.isfinite(rate) else rate


@njit(cache=True)
def ev_terms_one(
    rated_kw: float,
    res_kw: float,
    eff: float,
    ev_max_kw: float,
    need_kwh: float,
    room_kwh: float,
    time_left_h: float,
    dt_h: float,
    hedge: float,
    present_fraction: float,
) -> tuple[float, float, float, float, float]:
    """The deadline terms of one present EV: ``(rate_kw, hi_kw, laxity_h, must_kw, spare_kwh)``.

    ``rate_kw``: :func:`held_rate_kw`. ``hi_kw = max(min(rated, EV max) * present_fraction,
    room / (eff * dt)), 0)``: an EV plugged in for ``present_fraction`` of the step takes at most that
    fraction of its rate on average over the step (sub-step time).
    ``laxity_h``: time left minus the time the need takes at the full holdable rate (clipped to
    ``+-BIG``). With ``future = rate * eff * hedge * max(time_left - dt, 0)`` (battery-side kWh the EV can
    still get after this step at ``hedge`` of its rate): ``must_kw = min((need - future) / (eff * dt), hi)``
    where positive, else 0 (what it must draw now to finish), and ``spare_kwh = future - need`` (what it
    could give now and still finish; negative: it is short).
    """
    rate = min(rated_kw, ev_max_kw)
    held = floor_grid(rate, res_kw) if math.isfinite(rate) else rate
    hi = max(min(rate * present_fraction, room_kwh / (eff * dt_h)), 0.0)
    full = held * eff
    future = full * hedge * max(time_left_h - dt_h, 0.0)
    must = 0.0
    if need_kwh > future:
        must = min((need_kwh - future) / (eff * dt_h), hi)
    if need_kwh > 0.0:
        to_go = need_kwh / full if full > 0.0 else math.inf
    else:
        to_go = 0.0
    v = time_left_h - to_go
    if math.isnan(v):
        v = math.inf
    return held, hi, min(max(v, -BIG), BIG), must, future - need_kwh


@njit(cache=True)
def least_on_kw_one(min_kw: float, res_kw: float, present_fraction: float, hi_kw: float) -> float:
    """The least step-average power, kW, a charger that is on gives its EV this step: its minimum
    (minimum current x voltage x phases, ``min_kw``) for the fraction of the step the EV is plugged in,
    rounded up to the grid ``res_kw`` (0: none), and at most ``hi_kw``, the most the EV takes this step
    (:func:`ev_terms_one`: its rate for that fraction, its room): an EV that takes less than the minimum
    gets what it takes. Times ``eff * dt``: the least energy it gets in the step when on, kWh."""
    return max(min(ceil_grid(min_kw * present_fraction, res_kw), hi_kw), 0.0)


@vectorize(["float64(float64, float64, float64, float64)"], cache=True)
def least_on_kw(min_kw: float, res_kw: float, present_fraction: float, hi_kw: float) -> float:
    """:func:`least_on_kw_one` as a ufunc over arrays (the LP, the MPC), kW."""
    return least_on_kw_one(min_kw, res_kw, present_fraction, hi_kw)


@njit(cache=True)
def battery_box_one(
    has_battery: bool,
    max_charge_kw: float,
    max_discharge_kw: float,
    soc_min_kwh: float,
    soc_max_kwh: float,
    eff: float,
    soc_kwh: float,
    dt_h: float,
) -> tuple[float, float]:
    """The stationary battery's grid-side box ``(lo, hi)`` over one step, kW: charge up to its rating and
    to ``soc_max``, discharge up to its rating and down to ``soc_min`` (one-way efficiency ``eff``)."""
    if not has_battery:
        return 0.0, 0.0
    up = min(max_charge_kw, max(soc_max_kwh - soc_kwh, 0.0) / (eff * dt_h))
    down = min(max_discharge_kw, max(soc_kwh - soc_min_kwh, 0.0) * eff / dt_h)
    return -down, up


# ---------------------------------------------------------------------------------------------- batched


@njit(cache=True)
def _ev_terms_batch(
    rated: np.ndarray,
    res: np.ndarray,
    eff: np.ndarray,
    present: np.ndarray,
    ev_max: np.ndarray,
    need: np.ndarray,
    room: np.ndarray,
    time_left: np.ndarray,
    dt_h: float,
    hedge: float,
    frac: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    batch, n = present.shape
    steps = np.ones((batch, n), dtype=np.int64)
    rate = np.zeros((batch, n))
    hi = np.zeros((batch, n))
    lax = np.full((batch, n), BIG)
    must = np.zeros((batch, n))
    spare = np.zeros((batch, n))
    for b in range(batch):
        for i in range(n):
            steps[b, i] = max(math.floor(time_left[b, i] / dt_h + STEP_EPS), 1)
            if present[b, i]:
                rate[b, i], hi[b, i], lax[b, i], must[b, i], spare[b, i] = ev_terms_one(
                    rated[i], res[i], eff[i], ev_max[b, i], need[b, i], room[b, i], time_left[b, i], dt_h,
                    hedge, frac[b, i],
                )  # fmt: skip
    return steps, rate, hi, lax, must, spare


class EVTerms(NamedTuple):
    """The deadline terms of every charger's EV (:func:`ev_terms`); shaped like the state, ``(n,)`` or
    ``(B, n)``. Where no EV is present: rate, box, must and spare 0, laxity ``BIG``."""

    steps_left: IntArray
    """whole steps to departure, at least 1 (``floor(time_left / dt)``)"""
    rate_kw: FloatArray
    """the grid-side rate the charger can hold the EV at (:func:`held_rate_kw`), kW"""
    hi_kw: FloatArray
    """the most the EV can draw this step (charger, EV and room), kW: the projection's upper bound"""
    laxity_h: FloatArray
    """hours it can still wait: time left minus the need's duration at ``rate_kw``"""
    must_kw: FloatArray
    """grid-side kW it must draw now to finish at ``hedge`` of ``rate_kw`` later (capped at ``hi_kw``)"""
    spare_kwh: FloatArray
    """battery-side kWh above what it needs that it can still get after this step at ``hedge`` of
    ``rate_kw`` (what it could give by V2G now and still finish; negative: short)"""


def ev_terms(
    site: SiteArrays, state: SiteState, need_kwh: FloatArray | None = None, hedge: float = 1.0
) -> EVTerms:
    """The deadline terms of every EV of ``state`` (see :class:`EVTerms` and :func:`ev_terms_one`).

    Arguments:
        site: the site's arrays (ratings, efficiencies, resolution grid).
        state: a :class:`~envs.core.SiteState` (``snapshot.state`` of a :class:`~envs.core.Snapshot`),
            one ``(n,)`` or a batch ``(B, n)``; reads presence, EV max, need, room, time left and ``dt_h``.
        need_kwh: battery-side energy to plan on instead of ``state.energy_needed_kwh`` (e.g. a need with
            small remainders rounded up to a minimum-power step), shaped like the state's.
        hedge: fraction of the holdable rate an EV is assumed to get after this step, in ``(0, 1]``
            (``must_kw`` and ``spare_kwh``; 1 is the projection's departure rule).
    """
    need = state.energy_needed_kwh if need_kwh is None else need_kwh
    arrays = np.broadcast_arrays(
        np.asarray(state.ev_present, dtype=np.bool_),
        np.asarray(state.ev_max_charge_kw, dtype=np.float64),
        np.asarray(need, dtype=np.float64),
        np.asarray(state.energy_room_kwh, dtype=np.float64),
        np.asarray(state.time_left_h, dtype=np.float64),
        np.asarray(1.0 if state.present_fraction is None else state.present_fraction, dtype=np.float64),
    )
    shape = arrays[0].shape
    present, ev_max, nd, room, tl, frac = (np.ascontiguousarray(a.reshape(-1, site.n)) for a in arrays)
    out = _ev_terms_batch(
        site.rated_kw, site.resolution_kw, site.efficiency, present, ev_max, nd, room, tl,
        float(state.dt_h), float(hedge), frac,
    )  # fmt: skip
    steps, rate, hi, lax, must, spare = (a.reshape(shape) for a in out)
    return EVTerms(steps, rate, hi, lax, must, spare)


def battery_box(site: SiteArrays, soc_kwh: float, dt_h: float) -> tuple[float, float]:
    """The stationary battery's grid-side box ``(lo, hi)`` in kW at state of charge ``soc_kwh`` over a step
    of ``dt_h`` hours (``(0, 0)`` without a battery; :func:`battery_box_one`)."""
    return battery_box_one(
        site.has_battery, site.battery_max_charge_kw, site.battery_max_discharge_kw, site.battery_soc_min_kwh,
        site.battery_soc_max_kwh, site.battery_efficiency if site.has_battery else 1.0, float(soc_kwh),
        float(dt_h),
    )  # fmt: skip


def round_trip_pays(
    sell_price_per_kwh: float | FloatArray,
    buy_price_per_kwh: float | FloatArray,
    efficiency: float | FloatArray,
    degradation_per_kwh: float,
) -> BoolArray:
    """Whether a kWh given back now at ``sell_price`` and bought back later at ``buy_price`` earns more than
    the battery's wear: ``sell * eff ** 2 > buy + degradation`` with the one-way ``efficiency`` of the
    charger (per charger: each EV's energy goes through its own charger both ways)."""
    eff = np.asarray(efficiency, dtype=float)
    return np.asarray(sell_price_per_kwh * eff * eff > buy_price_per_kwh + degradation_per_kwh)
