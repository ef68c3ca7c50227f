"""The chargers' grid for the executable plan of :mod:`agents.lp_executable`: what the projection holds a
charger at (:func:`held_kw`), a plan rounded to the grid (:func:`round_to_grid`) and the tails that
finish an EV a plan on the grid leaves short (:func:`finishing_tails`)."""

from __future__ import annotations

import numpy as np

from agents.lp import LPData, SiteLP
from envs.core import FloatArray
from envs.physics import GRID_EPS, ceil_to_grid, floor_to_grid


def need_room_kwh(data: LPData) -> tuple[FloatArray, FloatArray]:
    """Each slot's need (>= 0) and room (at least its need; the need where the room is unknown), kWh."""
    need = np.maximum(np.asarray(data.need_kwh, dtype=float), 0.0)
    room = need if data.room_kwh is None else np.maximum(np.asarray(data.room_kwh, dtype=float), need)
    return need, room


def finishing_tails(
    lp: SiteLP, data: LPData, units: FloatArray, hi_units: FloatArray, departs: np.ndarray
) -> tuple[np.ndarray, FloatArray]:
    """The one-step tails that would finish the EVs a plan on the grid leaves short: ``(columns, grid
    points)``, at most one charging column per slot.

    ``units``: the plan's charging columns in grid points; ``hi_units``: the most each may hold. The
    projection lets an EV whose room left this step is below the charger's minimum take what its room
    takes (rounded down to the grid), and one plugged in for part of the step what that part holds, so a
    slot that leaves short (``departs``; gridded, not V2G) can be finished by one column after its last
    charging one with the grid points left to its room (which the plan's energy row takes, its room being
    at least the plan's need), or as many of them as that column holds: the column that takes the most,
    at the lowest import price among those (the latest among equals)."""
    none = (np.zeros(0, dtype=np.int64), np.zeros(0))
    if not lp.sizes["x"] or not lp.K:
        return none
    c = lp.slot_charger
    q = lp.site.resolution_kw[c] * lp.site.efficiency[c] * lp.dt_h
    gridded = (q > 0) & ~lp.slot_v2g & np.asarray(departs, dtype=bool)
    safe_q = np.where(gridded, q, 1.0)
    need, room = need_room_kwh(data)
    got = np.bincount(lp.x_slot, weights=units, minlength=lp.K)
    need_units = np.floor(need / safe_q + 1e-6)
    rest = np.floor(room / safe_q + 1e-6) - got
    short = gridded & (got < need_units - 0.5) & (rest >= 0.5)
    on = units > 0.5
    last_on = np.full(lp.K, -1, dtype=np.int64)
    np.maximum.at(last_on, lp.x_slot[on], lp.x_step[on])
    k = lp.x_slot
    cand = np.flatnonzero(short[k] & (lp.x_step > last_on[k]) & (hi_units >= 0.5))
    if not len(cand):
        return none
    take = np.minimum(np.floor(hi_units[cand] + 1e-6), rest[k[cand]])
    price = np.asarray(data.import_price_per_kwh, dtype=float)[lp.x_step[cand]]
    order = np.lexsort((-lp.x_step[cand], price, -take, k[cand]))
    first = np.concatenate([[True], k[cand[order]][1:] != k[cand[order]][:-1]])
    return cand[order[first]], take[order[first]]


def held_kw(lp: SiteLP, data: LPData, rate_kw: FloatArray) -> tuple[FloatArray, FloatArray | None]:
    """Per charging column the most the projection lets its charger hold (``rate * presence`` rounded down
    to the grid), kW, and the presence fractions that make the LP's bounds exactly that."""
    res = lp.site.resolution_kw[lp.x_charger]
    rate = np.asarray(rate_kw, dtype=float)[lp.x_slot]
    if data.present_fraction is None:
        return floor_to_grid(rate, res), None
    pf = np.asarray(data.present_fraction, dtype=float)
    hi_kw = floor_to_grid(rate * pf[lp.x_slot, lp.x_step], res)
    frac = pf.copy()
    cap = np.asarray(data.max_charge_kw, dtype=float)[lp.x_slot]
    frac[lp.x_slot, lp.x_step] = np.where(cap > 0, np.minimum(hi_kw / np.where(cap > 0, cap, 1.0), 1.0), 0.0)
    return hi_kw, frac


def round_to_grid(lp: SiteLP, data: LPData, v: FloatArray, hi_kw: FloatArray) -> FloatArray:
    """The charging columns of the solved vector ``v`` on their chargers' grid, slot by slot: each rounded
    down, then the grid points the slot lost given back (largest remainder first) where the column is on
    and below ``hi_kw``; a column on below half its minimum (the projection would switch it off) gives its
    energy to the others. A V2G slot gets back the grid points it lost rounded up (it may take a little
    more than planned, up to its room)."""
    nx = lp.sizes["x"]
    xv = np.maximum(v[lp.col["x"] : lp.col["x"] + nx], 0.0)
    c = lp.x_charger
    res = lp.site.resolution_kw[c]
    gridded = res > 0
    safe = np.where(gridded, res, 1.0)
    top = np.where(gridded, np.floor(hi_kw / safe + GRID_EPS), np.inf)
    units = np.where(gridded, np.floor(xv / safe + GRID_EPS), xv)
    units = np.minimum(units, top)
    m = np.where(gridded, ceil_to_grid(lp.site.min_kw[c], res) / safe, lp.site.min_kw[c])
    m = np.minimum(m, top)  # a partly present EV: all it can take that step
    lone = (units > 0) & (units < 0.5 * m - 1e-9)  # switched off by the projection
    units = np.where(lone, 0.0, units)
    out = np.where(gridded, units * safe, xv)
    frac = np.where(gridded, xv / safe - units, 0.0)
    for k in np.unique(lp.x_slot[gridded]):
        lo_i, hi_i = int(lp.x_off[k]), int(lp.x_off[k + 1])
        idx = np.arange(lo_i, hi_i)
        idx = idx[gridded[idx]]
        lost = float(np.sum(xv[idx] / safe[idx] - units[idx]))
        # a V2G slot may take a little more than planned (its room is above its need): round up
        give = int(np.ceil(lost - 1e-6)) if lp.slot_v2g[k] else int(np.floor(lost + 1e-6))
        if give <= 0:
            continue
        cand = idx[(units[idx] > 0) & (units[idx] < top[idx])]
        order = cand[np.argsort(-frac[cand], kind="stable")]
        for i in order:
            if give <= 0:
                break
            add = min(give, int(top[i] - units[i]))
            units[i] += add
            give -= add
            out[i] = units[i] * safe[i]
    return out
