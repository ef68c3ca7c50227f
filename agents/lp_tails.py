"""The tails that finish an EV a plan on the grid leaves short (:func:`finishing_tails`), for the grid
polish of :mod:`agents.lp_executable`."""

from __future__ import annotations

import numpy as np

from agents.lp import LPData, SiteLP
from envs.core import FloatArray


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
    need = np.maximum(np.asarray(data.need_kwh, dtype=float), 0.0)
    room = need if data.room_kwh is None else np.maximum(np.asarray(data.room_kwh, dtype=float), need)
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
