"""Fix-and-resolve for the minimum-current rule the site LP relaxes (:func:`solve_min_current`).

Columns that come out between 0 and the charger's minimum are forced to 0 or to the minimum and the LP is
re-solved warm, a few times; ``settle`` ends with one solve that fixes every column's on/off state, so no
column of the plan is left below its minimum. The minimum of a column is the one the safety projection
enforces (:meth:`SiteLP.min_x_kw`): below the charger's minimum where the EV takes less.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from agents.lp import LPData, LPError, LPSolution, SiteLP
from agents.lp_grid import need_room_kwh
from envs.core import BoolArray, FloatArray

HOLD_KW = 0.01
"""a repaired plan whose peak is more than this above the relaxation's is tried again held there"""


def solve_min_current(
    lp: SiteLP,
    data: LPData,
    passes: int = 3,
    warm: bool = False,
    columns: BoolArray | None = None,
    time_limit_s: float | None = None,
    settle: bool = False,
    up_share: float = 0.5,
    on: BoolArray | None = None,
    hold: BoolArray | None = None,
    strict: bool = False,
) -> LPSolution:
    """Solve ``lp``, then re-solve with the charging columns that came out between 0 and the charger's minimum
    forced to 0, up to ``passes`` times (a fix-and-resolve heuristic for the minimum-current rule the LP
    relaxes; each re-solve is warm). ``columns`` limits the repair to some charging columns (MPC: the
    first step). ``settle``: a last solve with every column's on/off state fixed (the columns still below
    the minimum on at it, where the slot's room takes it), so that no column is left below its minimum.
    ``up_share``: a column goes on at the minimum from this share of it (else off).
    ``on``: columns on at the minimum from the start (MPC: an EV that cannot get its need after this step).
    ``hold`` (slots): where the repair lifted the plan's peak above the relaxation's, the repair runs again
    with each period's peak capped at the relaxation's, and that plan is kept where the ``hold`` slots miss
    no more energy in it (the rounding then moves charging off the peak's steps instead of raising the
    peak, as the optimum's :func:`agents.lp_peak.held_to_peak` does for a whole plan). Held, the settling
    solve may find that the minima do not fit under the cap: unless ``strict``, the plan is then kept as the
    passes left it (the MPC: later steps below their minimum, re-planned and repaired step by step; settled
    only where they fit, the generated workplace weeks s0 / s2 came out +1.5 / +1.3 % over the optimum
    against +0.4 / +0.3 %).
    ``strict``: where the settling solve finds the minima do not fit the limits together, raise
    :class:`~agents.lp.LPError` (else the plan before it is returned, some columns below their minimum).
    Returns the last solution; its ``solve_s`` is the total."""
    forced = np.zeros(lp.sizes["x"], dtype=bool) if on is None else np.asarray(on, dtype=bool).copy()
    x_on = forced if forced.any() else None
    sol = lp.solve(data, warm=warm, time_limit_s=time_limit_s, x_on=x_on)
    relaxed_kw = sol.peak_kw.copy()
    args = (passes, columns, time_limit_s, settle, up_share, forced, strict)
    sol = _repair(lp, data, sol, *args)
    if hold is None or not len(relaxed_kw) or not np.any(sol.peak_kw > relaxed_kw + HOLD_KW):
        return sol
    kept_x, kept_v = lp.last_x, lp.last_v
    held_data = replace(data, peak_cap_kw=relaxed_kw)
    try:
        held = lp.solve(held_data, warm=True, time_limit_s=time_limit_s, x_on=x_on)
        held = _repair(lp, held_data, held, *args)
    except LPError:
        held = None
    if held is None or held.missing_kwh[hold].sum() > sol.missing_kwh[hold].sum() + 1e-3:
        lp.last_x, lp.last_v = kept_x, kept_v
        return replace(sol, solve_s=sol.solve_s + (held.solve_s if held is not None else 0.0))
    return replace(held, solve_s=sol.solve_s + held.solve_s)


def _repair(
    lp: SiteLP,
    data: LPData,
    sol: LPSolution,
    passes: int,
    columns: BoolArray | None,
    time_limit_s: float | None,
    settle: bool,
    up_share: float,
    forced: BoolArray,
    strict: bool,
) -> LPSolution:
    """The passes and the settling solve of :func:`solve_min_current` after its first solve (``sol``)."""
    must_on = forced.copy()
    total = sol.solve_s
    min_x = lp.min_x_kw(data)
    eff_dt = lp._eff_x * lp.dt_h
    need, room = need_room_kwh(data)
    off = np.zeros(lp.sizes["x"], dtype=bool)
    on = forced.copy()
    for _ in range(passes):
        small = (lp.last_x > 1e-6) & (lp.last_x < min_x - 1e-6)
        if columns is not None:
            small &= columns
        if not small.any():
            break
        # from half the minimum up: on at the minimum, where the slot's room takes it; else off. A slot
        # whose whole need is below one minimum step is on wherever the LP put any of it (else its
        # sliver would be moved on and switched off every step until the EV leaves short)
        sliver = need[lp.x_slot] < min_x * eff_dt + 1e-9
        up = _within_room(lp, small & ((lp.last_x >= up_share * min_x) | sliver), on, min_x * eff_dt, room)
        on |= up
        # a column the caller forced on stays on, at what its bound allows where that is below the minimum
        # (an EV in the fraction of its last step it is still plugged in)
        off |= small & ~up & ~must_on
        try:
            sol = lp.solve(data, warm=True, time_limit_s=time_limit_s, x_off=off, x_on=on)
        except LPError:
            # the new minima do not fit the limits together (two chargers at their minimum over a small
            # connection): those columns go off instead, which the LP's missing-energy slack always admits
            lp._highs = None
            on &= ~up | must_on
            off |= up & ~must_on
            sol = lp.solve(data, warm=False, time_limit_s=time_limit_s, x_off=off, x_on=on)
        total += sol.solve_s
    if settle:
        # every column's on/off state fixed as it came out (the small ones on at the minimum where the
        # slot's room takes it): the plan then keeps the rule everywhere, only amounts move
        small = (lp.last_x > 1e-6) & (lp.last_x < min_x - 1e-6)
        if small.any():
            # the columns at or above the minimum stay on (else the re-solve moves some below it again)
            big = lp.last_x >= min_x - 1e-6
            fits = _within_room(lp, small, on | big, min_x * eff_dt, room)
            kept, kept_x, kept_v = sol, lp.last_x, lp.last_v
            try:
                sol = lp.solve(
                    data,
                    warm=True,
                    time_limit_s=time_limit_s,
                    x_off=~(on | big | fits),
                    x_on=on | big | fits,
                )
            except LPError:  # the minima do not fit the limits together: keep the last plan (solved already)
                if strict:
                    raise
                lp.last_x, lp.last_v = kept_x, kept_v
                return replace(kept, solve_s=total)
            total += sol.solve_s
    return replace(sol, solve_s=total)


def _within_room(
    lp: SiteLP, cand: BoolArray, on: BoolArray, step_kwh: FloatArray, room: FloatArray
) -> BoolArray:
    """The candidate columns that can be on at the minimum (``step_kwh`` each) on top of the ``on`` ones
    within their slot's room, the largest planned first: a slot whose need the LP spread thinly over
    many steps gets it in its few largest rather than in none."""
    used = np.bincount(lp.x_slot, weights=np.where(on & ~cand, step_kwh, 0.0), minlength=lp.K)
    idx = np.flatnonzero(cand)
    if not len(idx):
        return cand.copy()
    order = idx[np.lexsort((-lp.last_x[idx], lp.x_slot[idx]))]  # by slot, largest first
    slot = lp.x_slot[order]
    cum = np.cumsum(step_kwh[order])
    first = np.searchsorted(slot, slot, side="left")  # start of each slot's run
    before = np.concatenate([[0.0], cum])[first]
    within = cum - before + used[slot] <= room[slot] + 1e-9
    out = np.zeros_like(cand)
    out[order[within]] = True
    return out
