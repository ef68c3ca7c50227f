"""The hard safety projection: any requested allocation in, a feasible one out.

Every allocator, the environment and the live service send their request through :func:`project`, which
returns the allocation that satisfies **every** limit at once and is close to the request (the rule is
documented in ``docs/projection.md``):

* per charger: charger rating, the EV's own limit, no charging past full, no EV no power; discharge only
  where the charger is bidirectional and the session allows it, above the EV's SoC floor, and never so
  much that the EV can no longer reach its departure energy in the time left (:func:`charger_bounds`);
* every node of the limit tree in both directions: kW and per-phase current (single-phase chargers count on
  their own phase);
* the site import and export limits after base load and PV; PV that would push export over the limit is
  curtailed (and reported) before any charger is forced to change; the stationary battery counts here;
* the minimum current: a charger is off or at least at its minimum; when capacity cannot give every EV its
  minimum, those with the most slack pause first;
* the chargers' resolution: the output is already on each charger's grid (rounded toward zero) and still
  feasible.

The closest-point rule is a minimal-change rule: sequential exact water-filling projections onto each
violated constraint, in a fixed order (tree levels leaves to root, kW then phases L1..L3 per level, then
the site), repeated up to three passes; a pass that still leaves a violation is finished by moving along
the segment to a known safe allocation. Its distance to the request is within a documented, tested factor
of the exact Euclidean projection (``docs/projection.md``).

Everything is vectorised over the chargers and over a batch of states ``(B, n)``; loops run only over the
few tree levels and phases. Build a :class:`ProjectionPlan` once per site and pass it for speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from envs.core import BoolArray, FloatArray, IntArray, SiteArrays, SiteState

_TOL_KW = 1e-9
"""violation threshold used inside the projection, kW (or A for phase rows)"""
_GRID_EPS = 1e-9
"""relative slack when snapping to a charger's resolution grid (absorbs float noise in ``k * res``)"""
_MAX_PASSES = 3
_LEXSORT_BELOW = 256
"""member count from which the water-filling sorts complex keys instead of calling ``np.lexsort``"""
_ZERO = np.zeros(1, dtype=np.intp)
"""``starts`` of a single segment, for ``np.add.reduceat``"""
_BIG = float(np.finfo(np.float64).max)
_ALL_FEASIBLE = np.ones(1, dtype=bool)
_ALL_FEASIBLE.flags.writeable = False
"""laxity of an empty slot (what ``np.nan_to_num`` makes of an infinite slack)"""
_SPARSE_ABOVE = 40_000
"""row products go through scipy.sparse when the dense weight matrix has more entries than this"""


# ---------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True, eq=False)
class _Layer:
    """Constraint rows with disjoint supports, water-filled together.

    Members are sorted by row: ``seg`` is non-decreasing and row ``r`` owns ``idx[starts[r]:starts[r+1]]``.
    """

    cols: slice
    """the rows' columns in :attr:`ProjectionPlan.weights`"""
    idx: IntArray
    """(M,) coordinate of each member (a charger index, or ``n`` for the battery)"""
    w: FloatArray
    """(M,) member weight (1 for kW rows, A per kW for phase rows)"""
    seg: IntArray
    """(M,) local row index of each member"""
    starts: IntArray
    """(R,) first member of each row"""
    first: int = 0
    """index of the layer's first row in :attr:`ProjectionPlan.weights`"""


@dataclass(frozen=True, eq=False)
class ProjectionPlan:
    """Per-site index structures for the projection, built once with :meth:`from_site`.

    Coordinates are the ``n`` chargers followed by the stationary battery (always present; its box is
    ``[0, 0]`` without a battery). Rows are the non-redundant node constraints (``|w . x| <= limit``) in
    processing order, followed by the site row (all coordinates, bounds from the state).
    """

    site: SiteArrays
    n: int
    weights: FloatArray
    """(n + 1, K + 1) row weights; the last column is the site row"""
    member: FloatArray
    """(n + 1, K + 1) 1.0 where a coordinate is in a row"""
    row_limit: FloatArray
    """(K,) symmetric limit of each node row (kW for kW rows, A for phase rows)"""
    row_node: IntArray
    """(K,) node index of each row"""
    row_phase: IntArray
    """(K,) -1 for a kW row, 0..2 for a phase row"""
    layers: tuple[_Layer, ...]
    """node layers in processing order, then the site layer"""
    resolution_kw: FloatArray
    """(n + 1,) grid of each coordinate, 0 for the battery (continuous)"""
    min_kw: FloatArray
    pv_curtailable: bool
    weights_t: sparse.csr_array | None = None
    """sparse ``weights.T`` for large sites (None: the dense products are faster)"""
    member_s: sparse.csr_array | None = None
    # derived in __post_init__ (per-site constants of the hot path)
    layer_starts: IntArray = field(init=False, repr=False)
    """(L,) first row of each layer (for one reduction that flags the violated layers)"""
    grid_ok: bool = field(init=False, repr=False)
    """every charger has a positive resolution (then the grid helpers skip their ``res > 0`` masks)"""
    res_c: FloatArray = field(init=False, repr=False)
    """(n,) charger resolutions, kW"""
    keep_tol_c: FloatArray = field(init=False, repr=False)
    """(n,) tolerance within which a value counts as on its charger's grid"""
    min_grid_kw: FloatArray = field(init=False, repr=False)
    """(n,) minimum power rounded up to the grid"""
    any_bidirectional: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "layer_starts", np.array([ly.first for ly in self.layers], dtype=np.int64))
        res_c = self.resolution_kw[: self.n]
        set_(self, "grid_ok", bool((res_c > 0).all()))
        set_(self, "res_c", res_c)
        set_(self, "keep_tol_c", _GRID_EPS * np.maximum(res_c, 1e-300))
        set_(self, "min_grid_kw", _ceil_grid(self.min_kw, res_c))
        set_(self, "any_bidirectional", bool(self.site.bidirectional.any()))

    @property
    def n_rows(self) -> int:
        """Number of rows including the site row."""
        return int(self.weights.shape[1])

    def rows(self, x: FloatArray) -> FloatArray:
        """Row values ``(B, N) -> (B, K + 1)``."""
        if self.weights_t is None:
            return np.asarray(x @ self.weights)
        return np.asarray((self.weights_t @ x.T).T)

    def touched(self, rows: BoolArray) -> BoolArray:
        """Coordinates in any of the flagged rows: ``(B, K + 1) -> (B, N)``."""
        if self.member_s is None:
            return np.asarray((rows.astype(np.float64) @ self.member.T) > 0)
        return np.asarray((self.member_s @ rows.T.astype(np.float64)).T > 0)

    @classmethod
    def from_site(cls, site: SiteArrays, sparse_rows: bool | None = None) -> ProjectionPlan:
        """Build the plan; ``sparse_rows`` forces sparse (True) or dense (False) row products, None picks
        by size."""
        n, m = site.n, site.m
        cap_kw = np.maximum(site.rated_kw, site.max_discharge_kw)  # largest |kW| a charger can carry
        member = site.membership > 0.5  # (n, m)
        volt_v = [c.voltage_v for c in site.config.chargers]
        rows: list[tuple[int, int, int, FloatArray, float]] = []  # (depth, kind, node, weights(n,), limit)
        for j in range(m):
            inside = member[:, j]
            if not inside.any():
                continue
            kw_limit = float(site.node_limit_kw[j])
            amps = float(site.node_limit_a[j])
            phase_rows: list[tuple[int, FloatArray]] = []
            merged = False
            if np.isfinite(amps):
                for p in range(3):
                    a = np.where(inside, site.phase_a_per_kw[:, p], 0.0)
                    on = a > 0
                    if not on.any() or float(np.sum(a * cap_kw)) <= amps:
                        continue  # nobody on this phase, or it can never bind
                    if np.array_equal(on, inside) and np.allclose(a[on], a[on][0], rtol=1e-12, atol=0.0):
                        kw_limit = min(kw_limit, amps / float(a[on][0]))  # a multiple of the kW row
                        merged = True
                    else:
                        phase_rows.append((p, a))
            depth = int(site.node_depth[j])
            ones = inside.astype(np.float64)
            volts = {volt_v[i] for i in np.flatnonzero(inside)}
            if np.isfinite(amps) and not merged and len(volts) == 1:
                # |kW| = V/1000 * |I1 + I2 + I3| <= 3 A V / 1000: the phase rows imply the kW row
                implied = kw_limit >= 3.0 * amps * volts.pop() / 1000.0
            else:
                implied = False
            if float(np.sum(cap_kw[inside])) > kw_limit and not implied:
                rows.append((depth, -1, j, ones, kw_limit))
            for p, a in phase_rows:
                rows.append((depth, p, j, a, amps))
        rows.sort(key=lambda r: (-r[0], r[1], r[2]))  # leaves first; kW, then L1..L3; config order
        k = len(rows)
        weights = np.zeros((n + 1, k + 1))
        for c, (_, _, _, w, _) in enumerate(rows):
            weights[:n, c] = w
        weights[:, k] = 1.0
        layers: list[_Layer] = []
        c0 = 0
        while c0 < k:
            c1 = c0
            while c1 < k and rows[c1][:2] == rows[c0][:2]:
                c1 += 1
            layers.append(_make_layer(weights, slice(c0, c1)))
            c0 = c1
        layers.append(_make_layer(weights, slice(k, k + 1)))
        pv = site.config.pv
        member_d = (weights > 0).astype(np.float64)
        big = weights.size > _SPARSE_ABOVE if sparse_rows is None else sparse_rows
        return cls(
            site=site,
            n=n,
            weights=weights,
            member=member_d,
            row_limit=np.array([r[4] for r in rows], dtype=np.float64),
            row_node=np.array([r[2] for r in rows], dtype=np.int64),
            row_phase=np.array([r[1] for r in rows], dtype=np.int64),
            layers=tuple(layers),
            resolution_kw=np.append(site.resolution_kw, 0.0),
            min_kw=site.min_kw.copy(),
            pv_curtailable=pv is None or pv.curtailable,
            weights_t=sparse.csr_array(weights.T) if big else None,
            member_s=sparse.csr_array(member_d) if big else None,
        )


def _make_layer(weights: FloatArray, cols: slice) -> _Layer:
    block = weights[:, cols]  # (N, R)
    seg, idx = np.nonzero(block.T > 0)  # row-major over rows: members sorted by row
    w = block[idx, seg]
    starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    return _Layer(
        cols=cols,
        idx=idx.astype(np.int64),
        w=w,
        seg=seg.astype(np.int64),
        starts=starts,
        first=int(cols.start),
    )


# ---------------------------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class ProjectionResult:
    """A feasible allocation. Arrays are ``(n,)`` or ``(B, n)``, site values ``()`` or ``(B,)``."""

    charger_kw: FloatArray
    """per-charger power after projection and rounding, kW (+ charge, - discharge)"""
    battery_kw: FloatArray
    """stationary battery power, kW (+ charge)"""
    pv_curtailed_kw: FloatArray
    """PV curtailed to respect the export limit, kW"""
    site_import_kw: FloatArray
    """net grid import with this allocation, kW (negative = export)"""
    feasible: BoolArray
    """False where no allocation can satisfy the site limits (then the safest one is returned)"""
    moved_kw: FloatArray
    """Euclidean distance between request and result over chargers and battery, kW"""
    paused: BoolArray
    """chargers an allocation was asked for but switched off by the minimum-current rule"""


# ---------------------------------------------------------------------------------------------- bounds


@dataclass(frozen=True, eq=False)
class _Bounds:
    lo: FloatArray
    """(B, n + 1) lower box (<= 0), battery last"""
    hi: FloatArray
    """(B, n + 1) upper box (>= 0)"""
    laxity_h: FloatArray
    """(B, n) hours of slack: time left minus the time to deliver the need at full rate (inf: no EV)"""


def _ev_bounds(
    site: SiteArrays, state: SiteState, batch: tuple[int, ...]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    shape = (*batch, site.n)
    present = np.asarray(state.ev_present)
    dt_h = float(state.dt_h)
    eff = site.efficiency
    rate_kw = np.minimum(site.rated_kw, state.ev_max_charge_kw)
    room_kw = np.asarray(state.energy_room_kwh) / (eff * dt_h)
    hi = np.where(present, np.maximum(np.minimum(rate_kw, room_kw), 0.0), 0.0)
    need = np.asarray(state.energy_needed_kwh)
    time_left = np.asarray(state.time_left_h)
    full_rate = rate_kw * eff
    if site.bidirectional.any():
        floor_kw = np.asarray(state.energy_dischargeable_kwh) * eff / dt_h
        future_kwh = full_rate * np.maximum(time_left - dt_h, 0.0)
        departure_kw = (future_kwh - need) * eff / dt_h
        dis = np.minimum(np.minimum(site.max_discharge_kw, state.ev_max_discharge_kw), floor_kw)
        np.minimum(dis, departure_kw, out=dis)
        lo = np.where(present & site.bidirectional, -np.maximum(dis, 0.0), 0.0)
    else:
        lo = np.zeros(hi.shape)  # what the formula gives where no charger is bidirectional
    if (full_rate > 0.0).all():  # the common case: no division by zero to silence
        to_go_h = np.where(need > 0, need / full_rate, 0.0)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            to_go_h = np.where(need > 0, need / full_rate, 0.0)
    laxity = np.where(present, time_left - to_go_h, _BIG)  # no EV: infinite slack (as nan_to_num maps it)
    if not np.isfinite(laxity).all():
        laxity = np.nan_to_num(laxity, nan=np.inf)
    if lo.shape != shape or lo.dtype != np.float64:
        lo = np.broadcast_to(lo, shape).astype(np.float64)
    if hi.shape != shape or hi.dtype != np.float64:
        hi = np.broadcast_to(hi, shape).astype(np.float64)
    if laxity.shape != shape or laxity.dtype != np.float64:
        laxity = np.broadcast_to(laxity, shape).astype(np.float64)
    return lo, hi, laxity


def charger_bounds(site: SiteArrays, state: SiteState) -> tuple[FloatArray, FloatArray]:
    """Per-charger box ``(lo, hi)`` in kW from charger, EV, energy and departure limits.

    ``hi = min(rated, EV max, room / (eff * dt))`` where an EV is present, else 0. ``lo = -min(charger
    discharge max, EV discharge max, dischargeable * eff / dt, departure margin)`` where the charger is
    bidirectional and an EV is present, else 0; the departure margin keeps ``need + d * dt / eff <=
    min(rated, EV max) * eff * (time_left - dt)``. Always ``lo <= 0 <= hi``. Shapes follow the state.
    """
    lo, hi, _ = _ev_bounds(site, state, state.batch_shape)
    return lo, hi


@dataclass(frozen=True, eq=False)
class ChargerBox:
    """The per-charger box of one state (:func:`charger_box`), which :func:`project` can reuse.

    Arrays are shaped like the state's per-charger arrays. ``project(..., box=b)`` accepts it only for the
    very state (and site) it was computed from, so a stale box can never be applied.
    """

    site: SiteArrays
    state: SiteState
    lo_kw: FloatArray
    """lower bound of each charger's power, kW (<= 0)"""
    hi_kw: FloatArray
    """upper bound of each charger's power, kW (>= 0)"""
    laxity_h: FloatArray
    """hours of slack: time left minus the time to deliver the need at full rate (huge where no EV)"""


def charger_box(site: SiteArrays, state: SiteState) -> ChargerBox:
    """The box of :func:`charger_bounds` with the EVs' laxity, reusable by :func:`project` (``box=``)
    when the same state is projected: callers that need the bounds themselves (the environment's action
    mapping) then compute them once per step."""
    lo, hi, laxity = _ev_bounds(site, state, state.batch_shape)
    return ChargerBox(site=site, state=state, lo_kw=lo, hi_kw=hi, laxity_h=laxity)


def _battery_box(site: SiteArrays, state: SiteState, batch: tuple[int, ...]) -> tuple[FloatArray, FloatArray]:
    if not site.has_battery:
        z = np.zeros(batch)
        return z, z.copy()
    dt_h = float(state.dt_h)
    eff = site.battery_efficiency
    soc = np.broadcast_to(np.asarray(state.battery_soc_kwh, dtype=np.float64), batch)
    up = np.minimum(
        site.battery_max_charge_kw, np.maximum(site.battery_soc_max_kwh - soc, 0.0) / (eff * dt_h)
    )
    down = np.minimum(
        site.battery_max_discharge_kw, np.maximum(soc - site.battery_soc_min_kwh, 0.0) * eff / dt_h
    )
    return -down, up


# ---------------------------------------------------------------------------------------------- grid


def _floor_grid(v: FloatArray, res: FloatArray) -> FloatArray:
    """Largest grid point ``k * res <= v`` for ``v >= 0`` (``res == 0``: unchanged)."""
    safe = np.where(res > 0, res, 1.0)
    out = np.floor(v / safe + _GRID_EPS) * safe
    return np.where(res > 0, out, v)


def _ceil_grid(v: FloatArray, res: FloatArray) -> FloatArray:
    safe = np.where(res > 0, res, 1.0)
    out = np.ceil(v / safe - _GRID_EPS) * safe
    return np.where(res > 0, out, v)


def _round_toward_zero(x: FloatArray, res: FloatArray) -> FloatArray:
    y = np.copysign(_floor_grid(np.abs(x), res), x)
    keep = np.abs(x - y) <= _GRID_EPS * np.maximum(res, 1e-300)  # already on the grid: keep bit-exact
    return np.where(keep, x, y)


def _round_away(x: FloatArray, res: FloatArray) -> FloatArray:
    return np.copysign(_ceil_grid(np.abs(x), res), x)


# ---------------------------------------------------------------------------------------------- core


def _violations(vals: FloatArray, rlo: FloatArray, rhi: FloatArray) -> BoolArray:
    return np.asarray((vals > rhi + _TOL_KW) | (vals < rlo - _TOL_KW))


def _outside(vals: FloatArray, rlo_t: FloatArray, rhi_t: FloatArray) -> BoolArray:
    """:func:`_violations` with the tolerance applied: ``rlo_t = rlo - tol``, ``rhi_t = rhi + tol``."""
    out = vals > rhi_t
    out |= vals < rlo_t
    return out


def _waterfill(
    x: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    layer: _Layer,
    vals: FloatArray,
    rlo: FloatArray,
    rhi: FloatArray,
) -> None:
    """Exact projection of ``x`` (in place) onto each violated row of ``layer`` intersected with the box.

    For a row violated above, members move to ``max(x - mu * w, lo)`` with the ``mu >= 0`` that brings the
    row exactly to its limit (below: ``min(x + mu * w, hi)``). Vectorised over the batch and the rows:
    members are sorted by the multiplier at which they hit their bound and ``mu`` is read off the prefix
    sums of the piecewise-linear row value. (``np.add.accumulate`` is ``np.cumsum`` without its wrapper.)
    """
    over = vals - rhi
    under = rlo - vals
    up = over > _TOL_KW
    viol = up | (under > _TOL_KW)
    n_rows = vals.shape[1]
    if x.shape[0] == 1:  # one state: no batch offsets
        mi = np.nonzero(viol[0, layer.seg])[0]
        n_mem = mi.size
        if n_mem == 0:
            return
        flat = layer.idx[mi]
        w = layer.w[mi]
        code = layer.seg[mi]
    else:
        bi, mi = np.nonzero(viol[:, layer.seg])
        n_mem = bi.size
        if n_mem == 0:
            return
        flat = bi * x.shape[1] + layer.idx[mi]
        w = layer.w[mi]
        code = bi * n_rows + layer.seg[mi]  # non-decreasing
    xs = x.reshape(-1)
    xv = xs[flat]
    if code[0] == code[-1]:  # one violated row: the same arithmetic with scalars for the row values
        c = int(code[0])
        row_up = bool(up.ravel()[c])
        excess1 = over.ravel()[c] if row_up else under.ravel()[c]
        s1 = 1.0 if row_up else -1.0
        bound = lo.reshape(-1)[flat] if row_up else hi.reshape(-1)[flat]
        u = np.maximum(s1 * (xv - bound) / w, 0.0)
        order = np.argsort(u, kind="stable")
        us = u[order]
        w2 = (w * w)[order]
        wu = w2 * us
        a = np.add.accumulate(wu) - wu  # sum of w^2 u over members clamped before this one
        tot_w2 = np.add.reduceat(w2, _ZERO)[0]
        sfx = tot_w2 - (np.add.accumulate(w2) - w2)  # sum of w^2 over this one and later ones
        f = a + us * sfx
        k1 = int(np.count_nonzero(f < excess1))
        if k1 < n_mem:
            mu1 = (excess1 - a[k1]) / sfx[k1]
        else:
            mu1 = np.inf
        xs[flat] = np.where(u > mu1, xv - s1 * mu1 * w, bound)
        return
    first = np.empty(n_mem, dtype=bool)
    first[0] = True
    np.not_equal(code[1:], code[:-1], out=first[1:])
    pid = np.add.accumulate(first, dtype=np.int64) - 1
    starts = np.nonzero(first)[0]
    pcode = code[starts]
    up_pair = up.ravel()[pcode]
    excess = np.where(up_pair, over.ravel()[pcode], under.ravel()[pcode])
    s = np.where(up_pair, 1.0, -1.0)[pid]
    bound = np.where(s > 0, lo.reshape(-1)[flat], hi.reshape(-1)[flat])
    u = np.maximum(s * (xv - bound) / w, 0.0)  # multiplier at which each member reaches its bound
    if n_mem > _LEXSORT_BELOW:
        # np.lexsort((u, pid)) in a third of the time: a stable sort of complex keys orders by the real part
        # (the row), then by the imaginary part (u >= 0, finite), ties by position, exactly like lexsort
        order = np.argsort(pid + 1j * u, kind="stable")
    else:
        order = np.lexsort((u, pid))
    us = u[order]
    w2 = (w * w)[order]
    wu = w2 * us
    excl_wu = np.add.accumulate(wu) - wu
    excl_w2 = np.add.accumulate(w2) - w2
    a = excl_wu - excl_wu[starts][pid]  # sum of w^2 u over members clamped before this one
    tot_w2 = np.add.reduceat(w2, starts)
    sfx = tot_w2[pid] - (excl_w2 - excl_w2[starts][pid])  # sum of w^2 over this one and later ones
    f = a + us * sfx
    cnt = np.add.reduceat((f < excess[pid]).astype(np.int64), starts)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = n_mem
    size = ends - starts
    j = starts + np.minimum(cnt, size - 1)
    mu = np.where(cnt < size, (excess - a[j]) / sfx[j], np.inf)
    mu_m = mu[pid]
    xs[flat] = np.where(u > mu_m, xv - s * mu_m * w, bound)


def _sequential(
    plan: ProjectionPlan,
    x: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    rlo: FloatArray,
    rhi: FloatArray,
    anchor: FloatArray,
    rlo_t: FloatArray | None = None,
    rhi_t: FloatArray | None = None,
) -> FloatArray:
    """Sequential water-filling passes, then a blend toward ``anchor`` (feasible) if anything is left.

    ``rlo_t``/``rhi_t``: ``rlo - tol``/``rhi + tol`` when the caller has them."""
    if rlo_t is None or rhi_t is None:
        rlo_t = rlo - _TOL_KW
        rhi_t = rhi + _TOL_KW
    vals = plan.rows(x)
    viol = _outside(vals, rlo_t, rhi_t)
    if not viol.any():
        return x
    layers = plan.layers
    starts = plan.layer_starts
    hit = np.logical_or.reduceat(viol.any(axis=0), starts).tolist()  # violated layers (the site last)
    for _ in range(_MAX_PASSES):
        if not any(hit):
            return x
        for i, layer in enumerate(layers):
            if not hit[i]:
                continue
            cols = layer.cols
            _waterfill(x, lo, hi, layer, vals[:, cols], rlo[:, cols], rhi[:, cols])
            vals = plan.rows(x)
            viol = _outside(vals, rlo_t, rhi_t)
            hit = np.logical_or.reduceat(viol.any(axis=0), starts).tolist()
    if not viol.any():
        return x
    # what the passes left: the longest step from the safe anchor toward x that keeps every row
    va = plan.rows(anchor)
    d = vals - va
    with np.errstate(divide="ignore", invalid="ignore"):
        t_hi = np.where(vals > rhi_t, (rhi - va) / d, 1.0)
        t_lo = np.where(vals < rlo_t, (rlo - va) / d, 1.0)
    t = np.clip(np.nan_to_num(np.minimum(t_hi, t_lo).min(axis=1), nan=0.0), 0.0, 1.0)
    return anchor + t[:, None] * (x - anchor)


def _fill(
    plan: ProjectionPlan,
    base: FloatArray,
    caps: FloatArray,
    rank: IntArray,
    direction: float,
    rlo: FloatArray,
    rhi: FloatArray,
    res: FloatArray | None,
    all_or_nothing: bool = False,
    passes: int = 2,
) -> FloatArray:
    """Greedy fill in ``rank`` order: magnitudes ``a`` with ``base + direction * a`` inside every row.

    Each coordinate takes up to its cap within the headroom left in each of its rows by the coordinates
    before it (prefix sums of the caps over the rank order, per row), so the result is feasible without
    a loop over coordinates; a second pass hands out the headroom reserved by coordinates that another row
    held back. ``all_or_nothing``: a coordinate gets its whole cap or nothing. ``res``: magnitudes are
    floored to each coordinate's grid.
    """
    weights = plan.weights
    n_coord = weights.shape[0]
    vals = plan.rows(base)
    head = np.maximum(rhi - vals if direction > 0 else vals - rlo, 0.0)
    total = np.zeros_like(caps)
    left = caps.copy()
    for _ in range(passes):
        if not (left > 0).any():
            break
        take = left.copy()
        for layer in plan.layers:
            key = layer.seg[None, :] * n_coord + rank[:, layer.idx]
            order = np.argsort(key, axis=1, kind="stable")
            w_sorted = layer.w[order]
            cap_sorted = np.take_along_axis(left[:, layer.idx], order, axis=1)
            cw = cap_sorted * w_sorted
            excl = np.cumsum(cw, axis=1) - cw
            prefix = excl - excl[:, layer.starts][:, layer.seg]
            room = head[:, layer.cols][:, layer.seg]
            if all_or_nothing:
                got = np.where(prefix + cw <= room + _TOL_KW, cap_sorted, 0.0)
            else:
                got = np.clip((room - prefix) / w_sorted, 0.0, cap_sorted)
            allowed = np.empty_like(got)
            np.put_along_axis(allowed, order, got, axis=1)
            take[:, layer.idx] = np.minimum(take[:, layer.idx], allowed)
        if res is not None and not all_or_nothing:
            take = _floor_grid(take, res)
        total += take
        left -= take
        head = np.maximum(head - plan.rows(take), 0.0)
    return total


def _rank(key: FloatArray) -> IntArray:
    order = np.argsort(key, axis=-1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(key.shape[-1]), key.shape), axis=-1)
    return rank


def _local_reset(
    plan: ProjectionPlan,
    x: FloatArray,
    anchor: FloatArray,
    rlo: FloatArray,
    rhi: FloatArray,
    rlo_t: FloatArray | None = None,
    rhi_t: FloatArray | None = None,
) -> FloatArray:
    """Fail-safe: every coordinate of a violated row goes to the anchor's value, until no row is violated.

    ``rlo_t``/``rhi_t``: ``rlo - tol``/``rhi + tol`` when the caller has them."""
    if rlo_t is None or rhi_t is None:
        rlo_t = rlo - _TOL_KW
        rhi_t = rhi + _TOL_KW
    for _ in range(x.shape[1] + 1):
        viol = _outside(plan.rows(x), rlo_t, rhi_t)
        if not viol.any():
            return x
        hit = plan.touched(viol)
        y = np.where(hit, anchor, x)
        if np.array_equal(y, x):  # only rows where even the anchor fails (infeasible) are left
            break
        x = y
    stuck = _outside(plan.rows(x), rlo_t, rhi_t).any(axis=1)
    x[stuck] = anchor[stuck]
    return x


# ---------------------------------------------------------------------------------------------- project


@dataclass(eq=False, slots=True)
class _Setup:
    lo: FloatArray
    hi: FloatArray
    rlo: FloatArray
    rhi: FloatArray
    rlo_t: FloatArray
    """``rlo - tol``"""
    rhi_t: FloatArray
    """``rhi + tol``"""
    laxity_h: FloatArray
    anchor: FloatArray
    feasible: BoolArray
    """(B,) (or a shared read-only ``(1,)`` True when nothing is forced)"""
    base_kw: FloatArray
    pv_kw: FloatArray
    forced: bool
    """the site row forbids the all-zero allocation in some row of the batch (the anchor is not 0)"""


def _setup(
    plan: ProjectionPlan, state: SiteState, batch: int, rounding: bool, box: ChargerBox | None = None
) -> _Setup:
    site = plan.site
    n = plan.n
    if box is None:
        lo_c, hi_c, laxity = _ev_bounds(site, state, (batch,))
    else:
        lo_c, hi_c, laxity = box.lo_kw, box.hi_kw, box.laxity_h
        if laxity.shape != (batch, n):
            laxity = np.broadcast_to(laxity, (batch, n))
    lo = np.empty((batch, n + 1))
    hi = np.empty((batch, n + 1))
    lo[:, :n] = lo_c
    hi[:, :n] = hi_c
    if site.has_battery:
        b_lo, b_hi = _battery_box(site, state, (batch,))
        lo[:, n] = b_lo
        hi[:, n] = b_hi
    else:
        lo[:, n] = 0.0
        hi[:, n] = 0.0
    if rounding:
        if plan.grid_ok:  # the battery (last) is continuous
            safe = plan.res_c
            lo[:, :n] = -(np.floor(-lo[:, :n] / safe + _GRID_EPS) * safe)
            hi[:, :n] = np.floor(hi[:, :n] / safe + _GRID_EPS) * safe
        else:
            res = np.broadcast_to(plan.resolution_kw, lo.shape)
            lo = -_floor_grid(-lo, res)
            hi = _floor_grid(hi, res)
    base = np.empty(batch)
    base[:] = state.base_load_kw
    pv = np.empty(batch)
    pv[:] = state.pv_kw
    np.maximum(pv, 0.0, out=pv)
    site_hi = site.import_limit_kw - base + pv
    site_lo = -site.export_limit_kw - base + (0.0 if plan.pv_curtailable else pv)
    k = plan.n_rows - 1
    rhi = np.empty((batch, k + 1))
    rhi[:, :k] = plan.row_limit
    rhi[:, k] = site_hi
    rlo = np.empty((batch, k + 1))
    rlo[:, :k] = -plan.row_limit
    rlo[:, k] = site_lo
    rlo_t = rlo - _TOL_KW
    rhi_t = rhi + _TOL_KW
    anchor = np.zeros((batch, n + 1))
    feasible = _ALL_FEASIBLE  # replaced below where the anchor is not 0; never written to
    forced = bool(np.fmin.reduce(site_hi) < 0.0 or np.fmax.reduce(site_lo) > 0.0)  # fmin: skips NaN
    if forced:
        res = np.broadcast_to(plan.resolution_kw, lo.shape)
        need_down = site_hi < 0.0  # base load above import limit + PV: discharge is forced
        need_up = site_lo > 0.0  # PV that cannot be curtailed above the export limit: charging is forced
        for mask, direction in ((need_down, -1.0), (need_up, 1.0)):
            if not mask.any():
                continue
            caps = np.maximum(-lo[mask] if direction < 0 else hi[mask], 0.0)
            key = np.where(np.isfinite(laxity[mask]), laxity[mask], 1e18)
            key = -key if direction < 0 else key  # most slack discharges first, least slack charges first
            rank = _rank(np.concatenate([key, np.full((key.shape[0], 1), -np.inf)], axis=1))  # battery first
            a = _fill(
                plan,
                np.zeros_like(caps),
                caps,
                rank,
                direction,
                rlo[mask],
                rhi[mask],
                res[mask] if rounding else None,
            )
            anchor[mask] = direction * a
        feasible = np.asarray(~_outside(plan.rows(anchor), rlo_t, rhi_t).any(axis=1))
    return _Setup(lo, hi, rlo, rhi, rlo_t, rhi_t, laxity, anchor, feasible, base, pv, forced)


def _grant(
    plan: ProjectionPlan,
    x0: FloatArray,
    want: BoolArray,
    m: FloatArray,
    laxity_h: FloatArray,
    rhi: FloatArray,
) -> BoolArray:
    """Which of the ``want`` chargers get their minimum ``m`` on top of ``x0``, least slack first.

    All-or-nothing prefix sums in laxity order over the rows the minima would overrun (the others never
    refuse): a charger is granted when the minima of the chargers before it and its own fit every row it
    is in. A second pass hands out what the refused ones had reserved.
    """
    n = plan.n
    w_c = plan.weights[:n]
    head = rhi - plan.rows(x0)
    ask = np.zeros((want.shape[0], n + 1))
    ask[:, :n] = np.where(want, m, 0.0)
    binding = plan.rows(ask) > head + _TOL_KW
    if not binding.any():
        return want
    cols = np.flatnonzero(binding.any(axis=0))
    bi, ci = np.nonzero(want)
    if bi.size == 0:
        return want
    order = np.lexsort((laxity_h[bi, ci], bi))
    bi, ci = bi[order], ci[order]
    contrib = w_c[ci][:, cols] * m[bi, ci][:, None]  # (Q, C)
    inside = contrib > 0
    first = np.empty(bi.size, dtype=bool)
    first[0] = True
    np.not_equal(bi[1:], bi[:-1], out=first[1:])
    seg = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    room = head[bi[starts]][:, cols]  # (S, C)
    granted = np.zeros(bi.size, dtype=bool)
    for _ in range(2):
        c = contrib * ~granted[:, None]
        cum = np.cumsum(c, axis=0)
        prefix = cum - (cum[starts] - c[starts])[seg]
        ok = ((prefix <= room[seg] + _TOL_KW) | ~inside).all(axis=1) & ~granted
        if not ok.any():
            break
        room = room - np.add.reduceat(contrib * ok[:, None], starts, axis=0)
        granted |= ok
    out = np.zeros_like(want)
    out[bi[granted], ci[granted]] = True
    return out


def _min_current(
    plan: ProjectionPlan, req: FloatArray, x: FloatArray, su: _Setup, rounding: bool
) -> tuple[FloatArray, BoolArray]:
    """Every charger off or at least at its minimum; when the minima do not all fit, the most slack pause.

    Chargers below their minimum that are nearer to off than to the minimum switch off. Every other
    charging one asks for its minimum; the minima are granted in laxity order (least slack first) while
    they fit every row, the rest pause, and the request is projected again with each charger's on/off
    state fixed (on: ``[min, hi]``, off: ``[lo, 0]``), so freed capacity goes back to the others.
    """
    n = plan.n
    hi_c = su.hi[:, :n]
    m = np.minimum(plan.min_grid_kw if rounding else plan.min_kw, hi_c)
    xc = x[:, :n]
    charging = xc > _TOL_KW
    cand = charging & (xc < m - _TOL_KW)
    if not cand.any():
        return x, cand  # all False
    want = charging & ~(cand & (xc < 0.5 * m))  # nearer to the minimum than to off
    z = x.copy()
    z[:, :n] = np.where(charging, 0.0, xc)
    granted = _grant(plan, z, want, m, su.laxity_h, su.rhi)
    z[:, :n] += np.where(granted, m, 0.0)
    floor = _local_reset(plan, z, su.anchor, su.rlo, su.rhi, su.rlo_t, su.rhi_t)
    on = granted & (floor[:, :n] == z[:, :n])  # granted, and not reset to the safe anchor
    off = charging & ~on
    # rows where nobody switched off and raising the candidates to their minimum fits as it is are done;
    # the others project the request again with every on/off state fixed
    xf = x.copy()
    xf[:, :n] = np.where(cand, np.where(on, m, 0.0), xc)
    has: BoolArray = np.asarray(cand.any(axis=1))
    if not has.all():
        xf[~has] = x[~has]
        off &= has[:, None]
    done = np.asarray(~off.any(axis=1))
    done &= ~_outside(plan.rows(xf), su.rlo_t, su.rhi_t).any(axis=1)
    if done.all():
        return xf, off
    if done.any():
        redo = ~done
        lo2 = su.lo[redo]
        hi2 = su.hi[redo]
        lo2[:, :n] = np.where(on[redo], m[redo], lo2[:, :n])
        hi2[:, :n] = np.where(on[redo], hi_c[redo], 0.0)
        x2 = np.clip(req[redo], lo2, hi2)
        xf[redo] = _sequential(
            plan, x2, lo2, hi2, su.rlo[redo], su.rhi[redo], floor[redo], su.rlo_t[redo], su.rhi_t[redo]
        )
        return xf, off
    # every row is redone (always so for one state): the same without the row selections
    lo2 = su.lo.copy()
    hi2 = su.hi.copy()
    lo2[:, :n] = np.where(on, m, lo2[:, :n])
    hi2[:, :n] = np.where(on, hi_c, 0.0)
    x2 = np.maximum(req, lo2)
    np.minimum(x2, hi2, out=x2)  # np.clip(req, lo2, hi2)
    return _sequential(plan, x2, lo2, hi2, su.rlo, su.rhi, floor, su.rlo_t, su.rhi_t), off


def _round(plan: ProjectionPlan, x: FloatArray, su: _Setup) -> FloatArray:
    """Snap chargers to their grid toward zero; where that breaks a row, round the offending ones away
    from zero, let the battery absorb a site excess, and as the last resort reset to the safe anchor."""
    n = plan.n
    res_c = plan.res_c
    xc = x[:, :n]
    y = x.copy()
    if plan.grid_ok:  # _round_toward_zero with the per-site constants
        yc = np.copysign(np.floor(np.abs(xc) / res_c + _GRID_EPS) * res_c, xc)
        moved = np.abs(xc - yc) > plan.keep_tol_c  # off the grid (else kept bit-exact)
        np.copyto(y[:, :n], yc, where=moved)
    else:
        y[:, :n] = _round_toward_zero(xc, res_c)
    k = plan.n_rows - 1
    for _ in range(3):
        vals = plan.rows(y)
        over = vals > su.rhi_t
        under = vals < su.rlo_t
        if not (over.any() or under.any()):
            return y
        # the battery is continuous: let it take a site excess first
        chargers_kw = vals[:, k] - y[:, n]
        b = np.clip(y[:, n], su.rlo[:, k] - chargers_kw, su.rhi[:, k] - chargers_kw)
        y[:, n] = np.clip(b, su.lo[:, n], su.hi[:, n])
        over[:, k] = chargers_kw + y[:, n] > su.rhi_t[:, k]
        under[:, k] = chargers_kw + y[:, n] < su.rlo_t[:, k]
        in_over = plan.touched(over)[:, :n]
        in_under = plan.touched(under)[:, :n]
        away = _round_away(xc, res_c)
        flip = (in_over & (xc < 0)) | (in_under & (xc > 0))
        y[:, :n] = np.where(flip, np.clip(away, su.lo[:, :n], su.hi[:, :n]), y[:, :n])
    return _local_reset(plan, y, su.anchor, su.rlo, su.rhi, su.rlo_t, su.rhi_t)


def _as_batch(a: FloatArray | float, batch: int, n: int) -> FloatArray:
    return np.array(np.broadcast_to(np.asarray(a, dtype=np.float64), (batch, n)))


def _shape(v: FloatArray | BoolArray | float) -> tuple[int, ...]:
    return v.shape if isinstance(v, np.ndarray) else np.shape(v)


def _batch_size(
    state: SiteState, *arrays: FloatArray | float, battery_kw: FloatArray | float = 0.0
) -> tuple[int, bool]:
    """``(B, batched)`` from the per-charger ``arrays`` ``(n,)``/``(B, n)``, the state and the battery
    request (a scalar or ``(B,)``)."""
    dims = [_shape(state.ev_present)[:-1], _shape(battery_kw)]
    dims += [_shape(a)[:-1] for a in arrays]
    dims += [_shape(state.base_load_kw), _shape(state.pv_kw), _shape(state.battery_soc_kwh)]
    shape: tuple[int, ...] = ()
    for d in dims:  # np.broadcast_shapes(*dims), without its cost in the common cases
        if d and d != shape:
            shape = np.broadcast_shapes(shape, d) if shape else d
    if len(shape) > 1:
        raise ValueError(f"expected (n,) or (B, n) arrays, got batch shape {shape}")
    return (shape[0] if shape else 1), bool(shape)


def project(
    site: SiteArrays,
    state: SiteState,
    charger_kw: FloatArray,
    battery_kw: FloatArray | float = 0.0,
    *,
    plan: ProjectionPlan | None = None,
    enforce_min_current: bool = True,
    round_to_resolution: bool = True,
    box: ChargerBox | None = None,
) -> ProjectionResult:
    """Project a requested allocation onto the feasible set.

    ``charger_kw`` is ``(n,)`` or ``(B, n)`` kW (+ charge, - discharge), ``battery_kw`` a scalar or
    ``(B,)``; the state may be batched the same way. Returns the allocation of the minimal-change rule
    (``docs/projection.md``), feasible for every limit, on the chargers' grid, with every charger off or at
    least at its minimum. Where even the safest allocation (no charging; EV and battery discharge where it
    helps the import limit) breaks the site limit, that allocation is returned with ``feasible=False``.
    ``plan``: a :class:`ProjectionPlan` of this site (built when omitted). The two switches turn off the
    minimum-current rule and the rounding (for comparisons with the continuous problem). ``box``: the
    :func:`charger_box` of this very ``state`` when the caller has it already (saves computing it again).
    """
    if plan is None:
        plan = ProjectionPlan.from_site(site)
    elif plan.site is not site:
        raise ValueError("plan was built for another site")
    if box is not None and (box.state is not state or box.site is not site):
        raise ValueError("box was computed for another state or site")
    n = plan.n
    batch, batched = _batch_size(state, charger_kw, battery_kw=battery_kw)
    req = np.empty((batch, n + 1))
    req[:, :n] = charger_kw
    req[:, n] = battery_kw
    if not np.isfinite(req).all():
        raise ValueError("requested power must be finite")
    su = _setup(plan, state, batch, round_to_resolution, box)
    x = np.maximum(req, su.lo)
    np.minimum(x, su.hi, out=x)  # np.clip(req, lo, hi)
    x = _sequential(plan, x, su.lo, su.hi, su.rlo, su.rhi, su.anchor, su.rlo_t, su.rhi_t)
    if enforce_min_current:
        x, paused = _min_current(plan, req, x, su, round_to_resolution)
    else:
        paused = np.zeros((batch, n), dtype=bool)
    if round_to_resolution:
        x = _round(plan, x, su)
    if su.forced:
        bad = ~su.feasible
        if bad.any():
            x[bad] = su.anchor[bad]
            paused = paused.copy()
            paused[bad] = False
    x += 0.0  # no negative zeros
    return _result(plan, req, x, su, paused, batched)


def _result(
    plan: ProjectionPlan,
    req: FloatArray,
    x: FloatArray,
    su: _Setup,
    paused: BoolArray,
    batched: bool,
) -> ProjectionResult:
    n = plan.n
    site = plan.site
    net_kw = su.base_kw + x.sum(axis=1) - su.pv_kw  # before curtailment
    if plan.pv_curtailable:
        curtailed = np.maximum(-site.export_limit_kw - net_kw, 0.0)
        np.minimum(curtailed, su.pv_kw, out=curtailed)  # np.clip(.., 0, pv)
    else:
        curtailed = np.zeros_like(net_kw)
    d = x - req
    d *= d
    moved = np.sqrt(d.sum(axis=1))
    site_import = net_kw + curtailed
    if batched:
        return ProjectionResult(
            charger_kw=x[:, :n],
            battery_kw=x[:, n].copy(),
            pv_curtailed_kw=curtailed,
            site_import_kw=site_import,
            feasible=su.feasible.copy() if su.forced else np.ones(len(moved), dtype=bool),
            moved_kw=moved,
            paused=paused,
        )
    return ProjectionResult(
        charger_kw=x[0, :n],
        battery_kw=x[0, n],
        pv_curtailed_kw=curtailed[0],
        site_import_kw=site_import[0],
        feasible=su.feasible[0],
        moved_kw=moved[0],
        paused=paused[0],
    )


# ---------------------------------------------------------------------------------------------- priority


def priority_fill(
    site: SiteArrays,
    state: SiteState,
    scores: FloatArray,
    allow_discharge: bool = False,
    *,
    plan: ProjectionPlan | None = None,
    box: ChargerBox | None = None,
) -> ProjectionResult:
    """Fill capacity in descending score order, then project.

    Each charger, highest score first, takes up to its ``hi`` within the headroom its rows have left after
    the chargers before it (a prefix-sum construction, feasible by design). With ``allow_discharge``,
    chargers with a negative score discharge first (most negative first, each down to its ``lo`` within
    the nodes' discharge headroom), and that discharge frees import headroom for the others; an export the
    charging does not take up is left to :func:`project`. The fill always goes through :func:`project`
    (minimum current, rounding, and whatever the greedy fill left). ``box``: the :func:`charger_box` of
    this very ``state``, when the caller has it.
    """
    if plan is None:
        plan = ProjectionPlan.from_site(site)
    if box is not None and (box.state is not state or box.site is not site):
        raise ValueError("box was computed for another state or site")
    n = plan.n
    batch, batched = _batch_size(state, scores)
    sc = _as_batch(scores, batch, n)
    su = _setup(plan, state, batch, rounding=False, box=box)
    pad = np.full((batch, 1), np.inf)
    zero = np.zeros((batch, n + 1))
    start = zero
    charge_ok = np.ones((batch, n), dtype=bool)
    if allow_discharge:
        neg = sc < 0
        if neg.any():
            caps = np.zeros_like(zero)
            caps[:, :n] = np.where(neg, -su.lo[:, :n], 0.0)
            rank = _rank(np.concatenate([np.where(neg, sc, np.inf), pad], axis=1))
            no_export_cap = su.rlo.copy()
            no_export_cap[:, -1] = -np.inf  # the charging filled next takes up what would be exported
            start = -_fill(plan, zero, caps, rank, -1.0, no_export_cap, su.rhi, None)
            charge_ok = ~neg
    caps = np.zeros_like(zero)
    caps[:, :n] = np.where(charge_ok, su.hi[:, :n], 0.0)
    rank = _rank(np.concatenate([np.where(charge_ok, -sc, np.inf), pad], axis=1))
    filled = start + _fill(plan, start, caps, rank, 1.0, su.rlo, su.rhi, None)
    request = filled[:, :n] if batched else filled[0, :n]
    return project(site, state, request, 0.0, plan=plan, box=box)


__all__ = [
    "ChargerBox",
    "ProjectionPlan",
    "ProjectionResult",
    "charger_bounds",
    "charger_box",
    "priority_fill",
    "project",
]
