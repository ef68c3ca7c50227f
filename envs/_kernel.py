"""The compiled kernel of the safety projection (:mod:`envs.projection` is its only caller).

One implementation, compiled by numba: the per-charger box, the site rows, the fail-safe anchor, the
sequential water-filling, the minimum-current rule, the rounding to the chargers' grid and the greedy
capacity fill of :func:`envs.projection.priority_fill`. The rule itself is documented in
``docs/projection.md`` and in :mod:`envs.projection`; this module only says how each step is computed.

The constraint rows are in CSR form: row ``r`` has members ``row_idx[row_ptr[r]:row_ptr[r + 1]]`` with
weights ``row_w[...]`` (1 for kW rows, A per kW for phase rows); coordinate ``c`` is in rows
``col_row[col_ptr[c]:col_ptr[c + 1]]`` with weights ``col_w[...]``. Coordinates are the ``n`` chargers
followed by the stationary battery; the last row is the site row (every coordinate, weight 1). Rows of one
layer (``layer_ptr[l]:layer_ptr[l + 1]``) have disjoint members, so water-filling them one after the other
is the same as water-filling them together.

Everything loops over a batch of ``B`` states; no state depends on another. Nothing here allocates
Python objects or holds state between calls (``cache=True`` only stores the compiled code on disk).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from envs.physics import (
    BIG,
    GRID_EPS,
    battery_box_one,
    ceil_grid,
    ev_terms_one,
    floor_grid,
    held_rate_kw,
    least_on_kw_one,
)

Net = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""the site's rows as one tuple: ``(row_ptr, row_idx, row_w, col_ptr, col_row, col_w, layer_ptr)``"""
EVArrays = tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray
]
"""the EVs of ``(B, n)`` states as one tuple: ``(present, ev_max_charge, ev_max_discharge, need, room,
dischargeable, time_left, present_fraction)``"""

Consts = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""the site's constants as one tuple: ``(row_limit, res, min_kw, site_c, site_s)``"""
Now = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(B,)`` site values of the states: ``(base_kw, pv_kw, soc_kwh)``"""
Work = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""one state's scratch as one tuple: ``(lo, hi, rlo, rhi, anchor, vals)``: the box (chargers then battery),
the row bounds, the safe anchor and the row values"""
Grid = tuple[np.ndarray, bool]
"""the chargers' grid: ``(res, rounding)``: step (kW) and whether allocations are rounded to it"""

TOL_KW = 1e-9
"""violation threshold, kW (or A for phase rows)"""
MAX_PASSES = 64

# indices into the per-charger site matrix ``site_c`` (5, n)
C_RATED, C_MAX_DIS, C_EFF, C_BIDIR, C_RES = 0, 1, 2, 3, 4
# indices into the site scalars ``site_s``
(
    S_IMPORT,
    S_EXPORT,
    S_HAS_BATTERY,
    S_B_MAX_CHARGE,
    S_B_MAX_DISCHARGE,
    S_B_SOC_MIN,
    S_B_SOC_MAX,
    S_B_EFF,
    S_PV_CURTAILABLE,
) = range(9)
N_SITE_SCALARS = 9


# ---------------------------------------------------------------------------------------------- bounds


@njit(cache=True)
def ev_bounds(
    site_c: np.ndarray,
    ev: EVArrays,
    dt_h: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-charger box ``(lo, hi)``, laxity (h) and must-charge power (kW) of ``(B, n)`` states
    (``charger_bounds`` documents the box).

    ``hi``, the laxity and the must-charge power are the deadline terms of :func:`envs.physics.ev_terms_one`
    (at ``hedge = 1``): the rate the charger can really hold is ``min(rated, EV max)`` rounded down to its
    grid. The departure margin of the discharge bound is the EV's spare energy there, so an EV allowed to
    discharge now can still finish on the grid it is controlled on. An EV plugged in for a fraction of
    the step (``present_fraction``) charges and discharges at most that fraction of its rates on average.
    """
    present, ev_max_charge, ev_max_discharge, need, room, dischargeable, time_left, frac = ev
    batch, n = present.shape
    lo = np.zeros((batch, n))
    hi = np.zeros((batch, n))
    lax = np.empty((batch, n))
    must = np.zeros((batch, n))
    for b in range(batch):
        for i in range(n):
            if not present[b, i]:
                lax[b, i] = BIG
                continue
            eff = site_c[C_EFF, i]
            _, hi[b, i], lax[b, i], must[b, i], spare = ev_terms_one(
                site_c[C_RATED, i], site_c[C_RES, i], eff, ev_max_charge[b, i], need[b, i], room[b, i],
                time_left[b, i], dt_h, 1.0, frac[b, i],
            )  # fmt: skip
            if site_c[C_BIDIR, i] > 0.5:
                floor_kw = dischargeable[b, i] * eff / dt_h
                departure_kw = spare * eff / dt_h
                dis = min(
                    min(site_c[C_MAX_DIS, i], ev_max_discharge[b, i]) * frac[b, i], floor_kw, departure_kw
                )
                lo[b, i] = -max(dis, 0.0)
    return lo, hi, lax, must


@njit(cache=True)
def _battery_box(site_s: np.ndarray, soc: float, dt_h: float) -> tuple[float, float]:
    """:func:`envs.physics.battery_box_one` of the site scalars ``site_s``."""
    return battery_box_one(
        site_s[S_HAS_BATTERY] > 0.5, site_s[S_B_MAX_CHARGE], site_s[S_B_MAX_DISCHARGE], site_s[S_B_SOC_MIN],
        site_s[S_B_SOC_MAX], site_s[S_B_EFF], soc, dt_h,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- rows


@njit(cache=True)
def _rows(
    row_ptr: np.ndarray, row_idx: np.ndarray, row_w: np.ndarray, x: np.ndarray, out: np.ndarray
) -> None:
    for r in range(out.shape[0]):
        s = 0.0
        for p in range(row_ptr[r], row_ptr[r + 1]):
            s += row_w[p] * x[row_idx[p]]
        out[r] = s


@njit(cache=True)
def _any_outside(vals: np.ndarray, rlo: np.ndarray, rhi: np.ndarray) -> bool:
    for r in range(vals.shape[0]):
        if vals[r] > rhi[r] + TOL_KW or vals[r] < rlo[r] - TOL_KW:
            return True
    return False


@njit(cache=True)
def _local_reset(net: Net, w: Work, x: np.ndarray) -> None:
    """Fail-safe, in place: every coordinate of a violated row goes to the anchor's value until no row is
    violated; where even that fails, the whole allocation becomes the anchor."""
    row_ptr, row_idx, row_w = net[0], net[1], net[2]
    rlo, rhi, anchor, vals = w[2], w[3], w[4], w[5]
    n_rows = vals.shape[0]
    for _ in range(x.shape[0] + 1):
        _rows(row_ptr, row_idx, row_w, x, vals)
        changed = False
        hit = False
        for r in range(n_rows):
            if vals[r] > rhi[r] + TOL_KW or vals[r] < rlo[r] - TOL_KW:
                hit = True
                for p in range(row_ptr[r], row_ptr[r + 1]):
                    c = row_idx[p]
                    if x[c] != anchor[c]:
                        changed = True
                # reset after the scan of every violated row (all rows judged on the same values)
        if not hit:
            return
        if not changed:
            break
        for r in range(n_rows):
            if vals[r] > rhi[r] + TOL_KW or vals[r] < rlo[r] - TOL_KW:
                for p in range(row_ptr[r], row_ptr[r + 1]):
                    c = row_idx[p]
                    x[c] = anchor[c]
    _rows(row_ptr, row_idx, row_w, x, vals)
    if _any_outside(vals, rlo, rhi):
        x[:] = anchor


# ---------------------------------------------------------------------------------------------- water-filling


@njit(cache=True)
def _waterfill_row(
    row_ptr: np.ndarray, row_idx: np.ndarray, row_w: np.ndarray, r: int, x: np.ndarray, lo: np.ndarray,
    hi: np.ndarray, excess: float, up: bool,
) -> None:  # fmt: skip
    """Exact projection of ``x`` (in place) onto row ``r`` at its limit, intersected with the box.

    Above the limit members move to ``max(x - mu * w, lo)`` with the ``mu >= 0`` that removes ``excess``
    (below: ``min(x + mu * w, hi)``): members are sorted by the multiplier at which they reach their bound
    and ``mu`` is read off the prefix sums of the piecewise-linear row value.
    """
    p0 = row_ptr[r]
    m = row_ptr[r + 1] - p0
    if m == 0:
        return
    s = 1.0 if up else -1.0
    u = np.empty(m)
    for j in range(m):
        c = row_idx[p0 + j]
        bound = lo[c] if up else hi[c]
        u[j] = max(s * (x[c] - bound) / row_w[p0 + j], 0.0)
    order = np.argsort(u, kind="mergesort")
    tot_w2 = 0.0
    for j in range(m):
        w = row_w[p0 + j]
        tot_w2 += w * w
    a = 0.0  # sum of w^2 u over members clamped before this one
    done_w2 = 0.0  # sum of w^2 over members before this one
    mu = math.inf
    for k in range(m):
        j = order[k]
        w2 = row_w[p0 + j] * row_w[p0 + j]
        sfx = tot_w2 - done_w2
        if a + u[j] * sfx >= excess:
            mu = (excess - a) / sfx
            break
        a += w2 * u[j]
        done_w2 += w2
    for j in range(m):
        c = row_idx[p0 + j]
        if u[j] > mu:
            x[c] = x[c] - s * mu * row_w[p0 + j]
        else:
            x[c] = lo[c] if up else hi[c]


@njit(cache=True)
def _sequential(net: Net, w: Work, x: np.ndarray) -> None:
    """Sequential water-filling passes over the violated rows, layer by layer (leaves to root, the site
    last), then, if anything is left, the longest step from the feasible ``anchor`` toward ``x``."""
    row_ptr, row_idx, row_w, layer_ptr = net[0], net[1], net[2], net[6]
    lo, hi, rlo, rhi, anchor, vals = w
    _rows(row_ptr, row_idx, row_w, x, vals)
    if not _any_outside(vals, rlo, rhi):
        return
    n_layers = layer_ptr.shape[0] - 1
    for _ in range(MAX_PASSES):
        for lay in range(n_layers):
            moved = False
            for r in range(layer_ptr[lay], layer_ptr[lay + 1]):
                over = vals[r] - rhi[r]
                under = rlo[r] - vals[r]
                if over > TOL_KW:
                    _waterfill_row(row_ptr, row_idx, row_w, r, x, lo, hi, over, True)
                    moved = True
                elif under > TOL_KW:
                    _waterfill_row(row_ptr, row_idx, row_w, r, x, lo, hi, under, False)
                    moved = True
            if moved:
                _rows(row_ptr, row_idx, row_w, x, vals)
        if not _any_outside(vals, rlo, rhi):
            return
    # what the passes left: the longest step from the safe anchor toward x that keeps every row
    va = np.empty_like(vals)
    _rows(row_ptr, row_idx, row_w, anchor, va)
    t = 1.0
    for r in range(vals.shape[0]):
        d = vals[r] - va[r]
        if vals[r] > rhi[r] + TOL_KW:
            t = min(t, (rhi[r] - va[r]) / d if d != 0.0 else 0.0)
        elif vals[r] < rlo[r] - TOL_KW:
            t = min(t, (rlo[r] - va[r]) / d if d != 0.0 else 0.0)
    if math.isnan(t):
        t = 0.0
    t = min(max(t, 0.0), 1.0)
    for c in range(x.shape[0]):
        x[c] = anchor[c] + t * (x[c] - anchor[c])


# ---------------------------------------------------------------------------------------------- greedy fill


@njit(cache=True)
def _fill(
    net: Net, w: Work, grid: Grid, base: np.ndarray, caps: np.ndarray, order: np.ndarray, direction: float,
    min_a: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """Greedy fill in ``order``: magnitudes ``a`` with ``base + direction * a`` inside the rows of ``w``.

    Each coordinate takes up to its cap within the headroom its rows have left after the coordinates before
    it (``rounding``: floored to its grid), or nothing where that is below its minimum ``min_a`` (the
    minimum current of a charging charger), so the result is feasible by construction.
    """
    row_ptr, row_idx, row_w, col_ptr, col_row, col_w = net[0], net[1], net[2], net[3], net[4], net[5]
    rlo, rhi, vals = w[2], w[3], w[5]
    res, rounding = grid
    _rows(row_ptr, row_idx, row_w, base, vals)
    n_rows = vals.shape[0]
    head = np.empty(n_rows)
    for r in range(n_rows):
        head[r] = max(rhi[r] - vals[r] if direction > 0 else vals[r] - rlo[r], 0.0)
    out = np.zeros(caps.shape[0])
    for k in range(order.shape[0]):
        c = order[k]
        a = caps[c]
        if a <= 0.0:
            continue
        for p in range(col_ptr[c], col_ptr[c + 1]):
            a = min(a, head[col_row[p]] / col_w[p])
        a = max(a, 0.0)
        if rounding:
            a = floor_grid(a, res[c])
        if a <= 0.0 or a < min_a[c] - TOL_KW:
            continue
        for p in range(col_ptr[c], col_ptr[c + 1]):
            r = col_row[p]
            head[r] = max(head[r] - col_w[p] * a, 0.0)
        out[c] = a
    return out


# ---------------------------------------------------------------------------------------------- one state


@njit(cache=True)
def _setup_one(
    consts: Consts, now: Now, b: int, lo_c: np.ndarray, hi_c: np.ndarray, dt_h: float, rounding: bool, w: Work
) -> None:
    """Box ``lo, hi`` (chargers, battery) and row bounds ``rlo, rhi`` of state ``b`` (in place in ``w``)."""
    lo, hi, rlo, rhi = w[0], w[1], w[2], w[3]
    row_limit, site_c, site_s = consts[0], consts[3], consts[4]
    base_kw, pv_kw, soc_kwh = now[0][b], now[1][b], now[2][b]
    n = lo_c.shape[0]
    for i in range(n):
        if rounding:
            res = site_c[C_RES, i]
            lo[i] = -floor_grid(-lo_c[i], res)
            hi[i] = floor_grid(hi_c[i], res)
        else:
            lo[i] = lo_c[i]
            hi[i] = hi_c[i]
    b_lo, b_hi = _battery_box(site_s, soc_kwh, dt_h)
    lo[n] = b_lo
    hi[n] = b_hi
    k = row_limit.shape[0]
    for r in range(k):
        rhi[r] = row_limit[r]
        rlo[r] = -row_limit[r]
    pv = max(pv_kw, 0.0)
    rhi[k] = site_s[S_IMPORT] - base_kw + pv
    rlo[k] = -site_s[S_EXPORT] - base_kw + (0.0 if site_s[S_PV_CURTAILABLE] > 0.5 else pv)


@njit(cache=True)
def _anchor(net: Net, w: Work, grid: Grid, lax: np.ndarray, m_kw: np.ndarray) -> bool:
    """The safe allocation (in ``anchor`` of ``w``): all off, or, where the site row forbids all-off, forced
    discharge (most slack first, the battery before any EV) or forced charging (least slack first, each
    charger its minimum ``m_kw`` or more, or nothing). Returns whether it satisfies every row."""
    row_ptr, row_idx, row_w = net[0], net[1], net[2]
    lo, hi, rlo, rhi, anchor, vals = w
    n_coord = anchor.shape[0]
    n = n_coord - 1
    k = rlo.shape[0] - 1
    anchor[:] = 0.0
    if rhi[k] >= 0.0 and rlo[k] <= 0.0:
        return True
    direction = -1.0 if rhi[k] < 0.0 else 1.0
    key = np.empty(n_coord)
    caps = np.empty(n_coord)
    for i in range(n):
        key[i] = (
            -lax[i] if direction < 0 else lax[i]
        )  # most slack discharges first, least slack charges first
        caps[i] = max(-lo[i] if direction < 0 else hi[i], 0.0)
    key[n] = -math.inf  # the battery first
    caps[n] = max(-lo[n] if direction < 0 else hi[n], 0.0)
    order = np.argsort(key, kind="mergesort")
    zero = np.zeros(n_coord)
    min_a = np.zeros(n_coord)
    if direction > 0:
        min_a[:n] = m_kw
    a = _fill(net, w, grid, zero, caps, order, direction, min_a)
    for c in range(n_coord):
        anchor[c] = direction * a[c]
    _rows(row_ptr, row_idx, row_w, anchor, vals)
    return not _any_outside(vals, rlo, rhi)


@njit(cache=True)
def _fleet_terms(
    net: Net, w: Work, grid: Grid, site_c: np.ndarray, ev: EVArrays, b: int, dt_h: float, must: np.ndarray
) -> None:
    """Departure terms with the fleet in view, for state ``b`` (in place on ``must`` and ``lo`` of ``w``).

    Must-charge, per row that the EVs still needing energy could overload (``sum w * rate > limit``; the
    site row's limit is the import headroom now): in order of departure, the energy the first ``k`` EVs
    need (grid side, weighted by the row) minus what the row and their own rates can still deliver after
    this step, ``min(limit * (T_k - dt), sum w * rate * (t_j - dt))``, is the least the row must deliver
    now; the largest such deficit is handed out earliest departure first (each up to its ``hi`` and what it
    still needs: an EV leaving now given the deficit beyond its need, on the V2G benchmark 11.04 kW for
    6.5 Wh, took the room of those whose deadlines made it and the projection discharged another EV to pay)
    and raises those EVs' must-charge power. The same deadline rule as earliest-deadline-first
    scheduling: it forces only what keeps every departure reachable, never a schedule.

    Discharge margin: an EV's future rate is its proportional share of every row its fleet would overload
    (``rate * limit / sum w * rate``), so V2G never counts on capacity the others need.
    """
    row_ptr, row_idx, row_w, col_ptr, col_row, col_w = net[0], net[1], net[2], net[3], net[4], net[5]
    lo, hi, rhi = w[0], w[1], w[3]
    res, rounding = grid
    present, ev_max_charge, need, time_left = ev[0][b], ev[1][b], ev[3][b], ev[6][b]
    n = must.shape[0]
    n_rows = rhi.shape[0]
    load = np.zeros(n_rows)
    rate = np.zeros(n)
    for i in range(n):
        if not present[i] or need[i] <= 0.0:
            continue
        rate[i] = held_rate_kw(site_c[C_RATED, i], ev_max_charge[i], site_c[C_RES, i])
        for p in range(col_ptr[i], col_ptr[i + 1]):
            load[col_row[p]] += col_w[p] * rate[i]
    for r in range(n_rows):
        cap = rhi[r]
        if load[r] <= cap or cap <= 0.0:
            continue  # the row can carry every EV at full rate (their own must-charge covers them)
        p0 = row_ptr[r]
        m = row_ptr[r + 1] - p0
        key = np.empty(m)
        for j in range(m):
            i = row_idx[p0 + j]
            key[j] = time_left[i] if i < n and rate[i] > 0.0 else math.inf
        order = np.argsort(key, kind="mergesort")
        asked = 0.0
        own = 0.0
        deficit = 0.0
        for k in range(m):
            j = order[k]
            if not math.isfinite(key[j]):
                break
            i = row_idx[p0 + j]
            w = row_w[p0 + j]
            after = max(time_left[i] - dt_h, 0.0)
            asked += w * need[i] / site_c[C_EFF, i]
            own += w * rate[i] * after
            deficit = max(deficit, asked - min(cap * after, own))
        left = deficit / dt_h
        for k in range(m):
            if left <= 0.0:
                break
            j = order[k]
            if not math.isfinite(key[j]):
                break
            i = row_idx[p0 + j]
            w = row_w[p0 + j]
            # no more than it still needs: the rest of the deficit is the later EVs' (EDF)
            give = min(w * min(hi[i], need[i] / (site_c[C_EFF, i] * dt_h)), left)
            must[i] = max(must[i], give / w)
            left -= give
    for i in range(n):
        if rate[i] <= 0.0 or lo[i] >= 0.0:
            continue
        share = rate[i]
        for p in range(col_ptr[i], col_ptr[i + 1]):
            r = col_row[p]
            if rhi[r] <= 0.0:
                share = 0.0
            elif load[r] > rhi[r]:
                share = min(share, rate[i] * rhi[r] / load[r])
        eff = site_c[C_EFF, i]
        future = share * eff * max(time_left[i] - dt_h, 0.0)
        margin = max((future - need[i]) * eff / dt_h, 0.0)
        if rounding:
            margin = floor_grid(margin, res[i])
        lo[i] = max(lo[i], -margin)


@njit(cache=True)
def _departure_floor(
    net: Net, w: Work, grid: Grid, must: np.ndarray, m_kw: np.ndarray, lax: np.ndarray
) -> None:
    """Raise the box floor (``lo``) and the anchor of EVs that must charge now to finish (in place in ``w``).

    An EV's floor is its must-charge power rounded up to its grid and to at least its minimum, capped at
    ``hi``; floors are granted least slack first by the greedy :func:`_fill` on top of the anchor (all of
    it, or the part its rows still hold if that is at least the minimum), so the anchor stays feasible
    and the water-filling keeps every granted EV at or above its floor. Only an all-off anchor is raised
    (a forced discharge or charge already decides every charger).
    """
    lo, hi, anchor = w[0], w[1], w[4]
    res, rounding = grid
    n = must.shape[0]
    for c in range(anchor.shape[0]):
        if anchor[c] != 0.0:
            return
    key = np.empty(n)
    caps = np.zeros(anchor.shape[0])
    some = False
    for i in range(n):
        key[i] = math.inf
        if must[i] > TOL_KW:
            some = True
            key[i] = lax[i]
            f = ceil_grid(must[i], res[i]) if rounding else must[i]
            caps[i] = min(max(f, m_kw[i]), hi[i])
    if not some:
        return
    order = np.argsort(key, kind="mergesort")
    got = _fill(net, w, grid, anchor, caps, order, 1.0, m_kw)
    for i in range(n):
        if got[i] > 0.0:
            lo[i] = got[i]
            anchor[i] = got[i]


@njit(cache=True)
def _min_current(
    net: Net, w: Work, res: np.ndarray, m_kw: np.ndarray, lax: np.ndarray, need_kw: np.ndarray,
    req: np.ndarray, x: np.ndarray, paused: np.ndarray,
) -> None:  # fmt: skip
    """Every charger off or at least at its minimum ``m_kw`` (in place on ``x``; ``paused`` flags the
    chargers switched off).

    Chargers below their minimum that are nearer to off than to the minimum switch off, unless they ask
    for all an EV still needs (``need_kw``: the need over one step; else a remainder below half a minimum
    step would be switched off every step until the EV leaves short). Every other charging one asks for its
    minimum; the minima are granted in laxity order (least slack first) while they fit every row, the rest
    pause, and the request is projected again with each charger's on/off state fixed (on: ``[min, hi]``,
    off: ``[lo, 0]``), so freed capacity goes back to the others. A charger whose box starts above 0 (a
    granted departure floor) stays on at its floor.
    """
    row_ptr, row_idx, row_w = net[0], net[1], net[2]
    lo, hi, rlo, rhi, _, vals = w
    n = m_kw.shape[0]
    n_coord = x.shape[0]
    any_cand = False
    for i in range(n):
        # within the tolerance below its minimum counts as at it: put it there, or rounding down to the
        # grid would take it a whole step below its minimum (the solver leaves noise of ~1e-10 kW)
        if TOL_KW < x[i] < m_kw[i] and x[i] >= m_kw[i] - TOL_KW:
            x[i] = m_kw[i]
        if x[i] > TOL_KW and x[i] < m_kw[i] - TOL_KW:
            any_cand = True
            break
    if not any_cand:
        return
    charging = np.zeros(n, dtype=np.bool_)
    cand = np.zeros(n, dtype=np.bool_)
    want = np.zeros(n, dtype=np.bool_)
    z = x.copy()
    fixed = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        charging[i] = x[i] > TOL_KW
        fixed[i] = lo[i] > 0.0  # a granted departure floor (>= the minimum): on, at its floor in the anchor
        cand[i] = charging[i] and x[i] < m_kw[i] - TOL_KW and not fixed[i]
        nearer_off = x[i] < 0.5 * m_kw[i] and x[i] < need_kw[i] - TOL_KW
        want[i] = charging[i] and not fixed[i] and not (cand[i] and nearer_off)
        if charging[i]:
            z[i] = lo[i] if fixed[i] else 0.0
    # grant the minima in laxity order (least slack first) while they fit every row: a greedy fill of the
    # minima on top of z, each all or nothing (its minimum is also the least it may take)
    key = np.empty(n)
    caps = np.zeros(n_coord)
    for i in range(n):
        key[i] = lax[i] if want[i] else math.inf
        if want[i]:
            caps[i] = m_kw[i]
    order = np.argsort(key, kind="mergesort")
    got = _fill(net, w, (res, False), z, caps, order, 1.0, m_kw)
    granted = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        granted[i] = want[i] and (m_kw[i] <= 0.0 or got[i] > 0.0)
    for i in range(n):
        if granted[i]:
            z[i] += m_kw[i]
    floor = z.copy()
    _local_reset(net, w, floor)
    any_off = False
    on = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        # on: a fixed floor, or granted and not reset to the safe anchor, or reset to an anchor that itself
        # charges it at its minimum or more (a forced charge); the anchor's chargers are 0 or >= minimum,
        # so the floor allocation lies in the boxes of the second projection below
        forced_on = floor[i] > TOL_KW and floor[i] >= m_kw[i] - TOL_KW
        on[i] = fixed[i] or (granted[i] and floor[i] == z[i]) or forced_on
        paused[i] = charging[i] and not on[i]
        any_off = any_off or paused[i]
    xf = x.copy()
    for i in range(n):
        if cand[i]:
            xf[i] = m_kw[i] if on[i] else 0.0
    if not any_off:
        _rows(row_ptr, row_idx, row_w, xf, vals)
        if not _any_outside(vals, rlo, rhi):
            x[:] = xf
            return
    # project the request again with every on/off state fixed
    lo2 = lo.copy()
    hi2 = hi.copy()
    for i in range(n):
        if on[i]:
            lo2[i] = max(m_kw[i], lo[i])
        else:
            hi2[i] = 0.0
    for c in range(n_coord):
        x[c] = min(max(req[c], lo2[c]), hi2[c])
    _sequential(net, (lo2, hi2, rlo, rhi, floor, vals), x)


@njit(cache=True)
def _round(net: Net, w: Work, res: np.ndarray, x: np.ndarray) -> None:
    """Snap chargers to their grid toward zero (in place); where that breaks a row, round the offending ones
    away from zero, let the battery absorb a site excess, and as the last resort reset to the safe anchor."""
    row_ptr, row_idx, row_w, col_ptr, col_row = net[0], net[1], net[2], net[3], net[4]
    lo, hi, rlo, rhi, _, vals = w
    n_coord = x.shape[0]
    n = n_coord - 1
    k = vals.shape[0] - 1
    xc = x[:n].copy()
    for i in range(n):
        if res[i] > 0.0:
            y = math.copysign(math.floor(abs(xc[i]) / res[i] + GRID_EPS) * res[i], xc[i])
            if abs(xc[i] - y) > GRID_EPS * res[i]:  # off the grid (else kept bit-exact)
                x[i] = y
    over = np.zeros(k + 1, dtype=np.bool_)
    under = np.zeros(k + 1, dtype=np.bool_)
    for _ in range(3):
        _rows(row_ptr, row_idx, row_w, x, vals)
        bad = False
        for r in range(k + 1):
            over[r] = vals[r] > rhi[r] + TOL_KW
            under[r] = vals[r] < rlo[r] - TOL_KW
            bad = bad or over[r] or under[r]
        if not bad:
            return
        # the battery is continuous: let it take a site excess first
        chargers_kw = vals[k] - x[n]
        bkw = min(max(x[n], rlo[k] - chargers_kw), rhi[k] - chargers_kw)
        x[n] = min(max(bkw, lo[n]), hi[n])
        over[k] = chargers_kw + x[n] > rhi[k] + TOL_KW
        under[k] = chargers_kw + x[n] < rlo[k] - TOL_KW
        for i in range(n):
            in_over = False
            in_under = False
            for p in range(col_ptr[i], col_ptr[i + 1]):
                in_over = in_over or over[col_row[p]]
                in_under = in_under or under[col_row[p]]
            if (in_over and xc[i] < 0.0) or (in_under and xc[i] > 0.0):
                away = math.copysign(ceil_grid(abs(xc[i]), res[i]), xc[i])
                x[i] = min(max(away, lo[i]), hi[i])
    _local_reset(net, w, x)


# ---------------------------------------------------------------------------------------------- entry points


@njit(cache=True)
def _scratch(n_coord: int, n_rows: int) -> Work:
    """Per-state scratch of the entry points (:data:`Work`)."""
    return (
        np.empty(n_coord), np.empty(n_coord), np.empty(n_rows), np.empty(n_rows), np.zeros(n_coord),
        np.empty(n_rows),
    )  # fmt: skip


@njit(cache=True)
def project_batch(
    net: Net,
    consts: Consts,
    ev: EVArrays,
    now: Now,
    dt_h: float,
    req: np.ndarray,
    enforce_min_current: bool,
    rounding: bool,
    departure_floor: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Project ``req`` ``(B, n + 1)`` for ``B`` states; returns ``(x, paused, feasible, curtailed_kw,
    site_import_kw, moved_kw)``. ``departure_floor``: EVs that must charge now to finish get at least that
    (:func:`_departure_floor`)."""
    present, need, frac = ev[0], ev[3], ev[7]
    row_limit, res, min_kw, site_c, site_s = consts
    base_kw, pv_kw = now[0], now[1]
    batch, n_coord = req.shape
    n = n_coord - 1
    n_rows = row_limit.shape[0] + 1
    lo_c, hi_c, lax, must = ev_bounds(site_c, ev, dt_h)
    out = np.empty((batch, n_coord))
    paused = np.zeros((batch, n), dtype=np.bool_)
    feasible = np.ones(batch, dtype=np.bool_)
    curtailed = np.zeros(batch)
    site_import = np.empty(batch)
    moved = np.empty(batch)
    w = _scratch(n_coord, n_rows)
    lo, hi, _, _, anchor, _ = w
    grid = (res, rounding)
    m_kw = np.empty(n)
    need_kw = np.empty(n)
    for b in range(batch):
        _setup_one(consts, now, b, lo_c[b], hi_c[b], dt_h, rounding, w)
        for i in range(n):
            # the least a charger that is on gives its EV: its minimum for the part of the step the EV is
            # plugged in, on the grid, at most what the EV takes (hi)
            m_kw[i] = (
                least_on_kw_one(min_kw[i], res[i] if rounding else 0.0, frac[b, i], hi[i])
                if enforce_min_current
                else 0.0
            )
        feasible[b] = _anchor(net, w, grid, lax[b], m_kw)
        if departure_floor and feasible[b]:
            must_b = must[b].copy()
            _fleet_terms(net, w, grid, site_c, ev, b, dt_h, must_b)
            _departure_floor(net, w, grid, must_b, m_kw, lax[b])
        for i in range(n):
            need_kw[i] = need[b, i] / (site_c[C_EFF, i] * dt_h) if present[b, i] else 0.0
        x = out[b]
        for c in range(n_coord):
            x[c] = min(max(req[b, c], lo[c]), hi[c])
        _sequential(net, w, x)
        if enforce_min_current:
            _min_current(net, w, res, m_kw, lax[b], need_kw, req[b], x, paused[b])
        if rounding:
            _round(net, w, res, x)
        if not feasible[b]:
            x[:] = anchor
            paused[b, :] = False
        total = 0.0
        dist = 0.0
        for c in range(n_coord):
            x[c] += 0.0  # no negative zeros
            total += x[c]
            d = x[c] - req[b, c]
            dist += d * d
        pv = max(pv_kw[b], 0.0)
        net_kw = base_kw[b] + total - pv  # before curtailment
        if site_s[S_PV_CURTAILABLE] > 0.5:
            curtailed[b] = min(max(-site_s[S_EXPORT] - net_kw, 0.0), pv)
        site_import[b] = net_kw + curtailed[b]
        moved[b] = math.sqrt(dist)
    return out, paused, feasible, curtailed, site_import, moved


@njit(cache=True)
def fill_priority(
    net: Net,
    consts: Consts,
    ev: EVArrays,
    now: Now,
    dt_h: float,
    scores: np.ndarray,
    allow_discharge: bool,
) -> np.ndarray:
    """The request of :func:`envs.projection.priority_fill` ``(B, n)``: capacity filled in descending
    score order (negative scores discharge first with ``allow_discharge``); the caller projects it."""
    row_limit, res, site_c = consts[0], consts[1], consts[3]
    batch, n = scores.shape
    n_coord = n + 1
    n_rows = row_limit.shape[0] + 1
    k = n_rows - 1
    lo_c, hi_c, _, _ = ev_bounds(site_c, ev, dt_h)
    out = np.zeros((batch, n))
    w = _scratch(n_coord, n_rows)
    lo, hi, rlo, rhi, anchor, vals = w
    grid = (res, False)
    caps = np.zeros(n_coord)
    key = np.empty(n_coord)
    no_min = np.zeros(n_coord)
    for b in range(batch):
        _setup_one(consts, now, b, lo_c[b], hi_c[b], dt_h, False, w)
        start = np.zeros(n_coord)
        neg_any = False
        if allow_discharge:
            for i in range(n):
                neg = scores[b, i] < 0.0
                neg_any = neg_any or neg
                caps[i] = -lo[i] if neg else 0.0
                key[i] = scores[b, i] if neg else math.inf
            caps[n] = 0.0
            key[n] = math.inf
        if neg_any:
            rlo_free = rlo.copy()
            rlo_free[k] = -math.inf  # the charging filled next takes up what would be exported
            order = np.argsort(key, kind="mergesort")
            a = _fill(net, (lo, hi, rlo_free, rhi, anchor, vals), grid, start, caps, order, -1.0, no_min)
            for c in range(n_coord):
                start[c] = -a[c]
        for i in range(n):
            ok = not (neg_any and scores[b, i] < 0.0)
            caps[i] = hi[i] if ok else 0.0
            key[i] = -scores[b, i] if ok else math.inf
        caps[n] = 0.0
        key[n] = math.inf
        order = np.argsort(key, kind="mergesort")
        a = _fill(net, w, grid, start, caps, order, 1.0, no_min)
        for i in range(n):
            out[b, i] = start[i] + a[i]
    return out
