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
the site), repeated until nothing is violated (up to 64 passes); what is left is finished by moving along
the segment to a known safe allocation. Its distance to the request is within a documented, tested factor
of the exact Euclidean projection (``docs/projection.md``).

The computation is one compiled kernel (:mod:`envs._kernel`, numba) over a batch of states ``(B, n)``:
the rule needs a sort per violated row and a handful of passes, which in plain numpy cost some sixty small
array operations per violated layer (0.5 ms at 100 chargers); compiled, a call at 100 chargers takes a few
tens of microseconds. This module builds the per-site plan (numpy), checks and shapes the inputs, and
wraps the kernel's output. Build a :class:`ProjectionPlan` once per site and pass it for speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from envs import _kernel, physics
from envs.core import BoolArray, FloatArray, IntArray, SiteArrays, SiteState
from envs.limit_rows import LimitRows, can_bind, reach_kw

_SPARSE_ABOVE = 40_000
""":meth:`ProjectionPlan.rows` goes through scipy.sparse when the dense weight matrix has more entries"""


# ---------------------------------------------------------------------------------------------- plan


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
    row_limit: FloatArray
    """(K,) symmetric limit of each node row (kW for kW rows, A for phase rows)"""
    layer_ptr: IntArray
    """(L + 1,) rows ``layer_ptr[l]:layer_ptr[l + 1]`` form layer ``l`` (disjoint members); the site row is
    the last layer"""
    resolution_kw: FloatArray
    """(n + 1,) grid of each coordinate, 0 for the battery (continuous)"""
    min_kw: FloatArray
    pv_curtailable: bool
    weights_t: sparse.csr_array | None = None
    """sparse ``weights.T`` for large sites (None: the dense products are faster)"""
    # derived in __post_init__: the kernel's view of the site
    row_ptr: IntArray = field(init=False, repr=False)
    """(K + 2,) CSR row pointers: row ``r`` has members ``row_idx[row_ptr[r]:row_ptr[r + 1]]``"""
    row_idx: IntArray = field(init=False, repr=False)
    row_w: FloatArray = field(init=False, repr=False)
    col_ptr: IntArray = field(init=False, repr=False)
    """(n + 2,) coordinate ``c`` is in rows ``col_row[col_ptr[c]:col_ptr[c + 1]]``"""
    col_row: IntArray = field(init=False, repr=False)
    col_w: FloatArray = field(init=False, repr=False)
    site_c: FloatArray = field(init=False, repr=False)
    """(5, n) per-charger constants: rating, discharge max, efficiency, bidirectional, resolution"""
    site_s: FloatArray = field(init=False, repr=False)
    """site constants (grid limits, battery, PV curtailable), indexed by ``envs._kernel.S_*``"""
    net: _kernel.Net = field(init=False, repr=False)
    """the rows as the kernel takes them: ``(row_ptr, row_idx, row_w, col_ptr, col_row, col_w, layer_ptr)``"""
    consts: _kernel.Consts = field(init=False, repr=False)
    """the constants as the kernel takes them: ``(row_limit, resolution_kw, min_kw, site_c, site_s)``"""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        nz_col, nz_row = np.nonzero(self.weights.T > 0)  # row-major over rows
        set_(self, "row_ptr", np.searchsorted(nz_col, np.arange(self.n_rows + 1)).astype(np.int64))
        set_(self, "row_idx", nz_row.astype(np.int64))
        set_(self, "row_w", np.ascontiguousarray(self.weights[nz_row, nz_col]))
        nz_c, nz_r = np.nonzero(self.weights > 0)  # row-major over coordinates
        set_(self, "col_ptr", np.searchsorted(nz_c, np.arange(self.n + 2)).astype(np.int64))
        set_(self, "col_row", nz_r.astype(np.int64))
        set_(self, "col_w", np.ascontiguousarray(self.weights[nz_c, nz_r]))
        site = self.site
        set_(self, "site_c", _site_c(site))
        site_s = np.zeros(_kernel.N_SITE_SCALARS)
        site_s[_kernel.S_IMPORT] = site.import_limit_kw
        site_s[_kernel.S_EXPORT] = site.export_limit_kw
        site_s[_kernel.S_HAS_BATTERY] = float(site.has_battery)
        site_s[_kernel.S_B_MAX_CHARGE] = site.battery_max_charge_kw
        site_s[_kernel.S_B_MAX_DISCHARGE] = site.battery_max_discharge_kw
        site_s[_kernel.S_B_SOC_MIN] = site.battery_soc_min_kwh
        site_s[_kernel.S_B_SOC_MAX] = site.battery_soc_max_kwh
        site_s[_kernel.S_B_EFF] = site.battery_efficiency if site.has_battery else 1.0
        site_s[_kernel.S_PV_CURTAILABLE] = float(self.pv_curtailable)
        set_(self, "site_s", site_s)
        set_(
            self,
            "net",
            (self.row_ptr, self.row_idx, self.row_w, self.col_ptr, self.col_row, self.col_w, self.layer_ptr),
        )
        set_(self, "consts", (self.row_limit, self.resolution_kw, self.min_kw, self.site_c, site_s))

    @property
    def n_rows(self) -> int:
        """Number of rows including the site row."""
        return int(self.weights.shape[1])

    def rows(self, x: FloatArray) -> FloatArray:
        """Row values ``(B, N) -> (B, K + 1)``."""
        if self.weights_t is None:
            return np.asarray(x @ self.weights)
        return np.asarray((self.weights_t @ x.T).T)

    @classmethod
    def from_site(cls, site: SiteArrays, sparse_rows: bool | None = None) -> ProjectionPlan:
        """Build the plan; ``sparse_rows`` forces sparse (True) or dense (False) row products, None picks
        by size."""
        n, m = site.n, site.m
        cap_kw = reach_kw(site)  # largest |kW| a charger can carry
        tree = LimitRows.from_site(site)  # the rows that can bind
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
            for r in np.flatnonzero((tree.node == j) & (tree.phase >= 0)):
                a = tree.weights[:, r]
                on = a > 0
                if np.array_equal(on, inside) and np.allclose(a[on], a[on][0], rtol=1e-12, atol=0.0):
                    kw_limit = min(kw_limit, amps / float(a[on][0]))  # a multiple of the kW row
                    merged = True
                else:
                    phase_rows.append((int(tree.phase[r]), a))
            depth = int(site.node_depth[j])
            ones = inside.astype(np.float64)
            volts = {volt_v[i] for i in np.flatnonzero(inside)}
            if np.isfinite(amps) and not merged and len(volts) == 1:
                # |kW| = V/1000 * |I1 + I2 + I3| <= 3 A V / 1000: the phase rows imply the kW row
                implied = kw_limit >= 3.0 * amps * volts.pop() / 1000.0
            else:
                implied = False
            if can_bind(float(np.sum(cap_kw[inside])), kw_limit) and not implied:
                rows.append((depth, -1, j, ones, kw_limit))
            for p, a in phase_rows:
                rows.append((depth, p, j, a, amps))
        rows.sort(key=lambda r: (-r[0], r[1], r[2]))  # leaves first; kW, then L1..L3; config order
        k = len(rows)
        weights = np.zeros((n + 1, k + 1))
        for c, (_, _, _, w, _) in enumerate(rows):
            weights[:n, c] = w
        weights[:, k] = 1.0
        layer_ptr = [0]  # a layer: the rows of one tree level and kind (kW, L1, L2, L3); the site row last
        for c in range(1, k + 1):
            if c == k or rows[c][:2] != rows[c - 1][:2]:
                layer_ptr.append(c)
        layer_ptr.append(k + 1)
        pv = site.config.pv
        big = weights.size > _SPARSE_ABOVE if sparse_rows is None else sparse_rows
        return cls(
            site=site,
            n=n,
            weights=weights,
            row_limit=np.array([r[4] for r in rows], dtype=np.float64),
            layer_ptr=np.array(sorted(set(layer_ptr)), dtype=np.int64),
            resolution_kw=np.append(site.resolution_kw, 0.0),
            min_kw=site.min_kw.copy(),
            pv_curtailable=pv is None or pv.curtailable,
            weights_t=sparse.csr_array(weights.T) if big else None,
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


_A = np.ndarray
_Eight = tuple[_A, _A, _A, _A, _A, _A, _A, _A]


class _StateArrays:
    """A state's per-charger arrays as the kernel takes them (C-contiguous ``(B, n)``) and its step."""

    __slots__ = ("charger", "dt_h")

    def __init__(self, state: SiteState, batch: int, n: int) -> None:
        self.charger: _Eight = (
            _per_charger(state.ev_present, batch, n, np.bool_),
            _per_charger(state.ev_max_charge_kw, batch, n, np.float64),
            _per_charger(state.ev_max_discharge_kw, batch, n, np.float64),
            _per_charger(state.energy_needed_kwh, batch, n, np.float64),
            _per_charger(state.energy_room_kwh, batch, n, np.float64),
            _per_charger(state.energy_dischargeable_kwh, batch, n, np.float64),
            _per_charger(state.time_left_h, batch, n, np.float64),
            _per_charger(
                1.0 if state.present_fraction is None else state.present_fraction, batch, n, np.float64
            ),
        )
        self.dt_h = float(state.dt_h)


def _site_values(state: SiteState, batch: int) -> tuple[_A, _A, _A]:
    """Base load, PV and battery energy of a state as ``(B,)`` arrays."""
    return (
        _per_site(state.base_load_kw, batch),
        _per_site(state.pv_kw, batch),
        _per_site(state.battery_soc_kwh, batch),
    )


def _per_charger(v: object, batch: int, n: int, dtype: type) -> np.ndarray:
    a: np.ndarray = np.asarray(v, dtype=dtype)
    if a.shape != (batch, n):
        # (n,) with one state: a view; anything else (a (n,) state for a batched request): broadcast
        a = a.reshape(1, n) if batch == 1 and a.size == n else np.broadcast_to(a, (batch, n))
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return a


def _per_site(v: object, batch: int) -> np.ndarray:
    if isinstance(v, np.ndarray) and v.shape == (batch,) and v.dtype == np.float64 and v.flags.c_contiguous:
        return v
    return np.full(batch, v, dtype=np.float64)


def _plan_of(site: SiteArrays, plan: ProjectionPlan | None) -> ProjectionPlan:
    if plan is None:
        return ProjectionPlan.from_site(site)
    if plan.site is not site:
        raise ValueError("plan was built for another site")
    return plan


def _site_c(site: SiteArrays) -> FloatArray:
    """(5, n) per-charger constants of the kernel (see :attr:`ProjectionPlan.site_c`)."""
    site_c = np.empty((5, site.n))
    site_c[_kernel.C_RATED] = site.rated_kw
    site_c[_kernel.C_MAX_DIS] = site.max_discharge_kw
    site_c[_kernel.C_EFF] = site.efficiency
    site_c[_kernel.C_BIDIR] = site.bidirectional
    site_c[_kernel.C_RES] = site.resolution_kw
    return site_c


def _ev_bounds(
    site: SiteArrays, state: SiteState, plan: ProjectionPlan | None = None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    batch_shape = state.batch_shape
    batch = batch_shape[0] if batch_shape else 1
    sa = _StateArrays(state, batch, site.n)
    site_c = _plan_of(site, plan).site_c if plan is not None else _site_c(site)
    lo, hi, lax, _ = _kernel.ev_bounds(site_c, sa.charger, sa.dt_h)
    if not batch_shape:
        return lo[0], hi[0], lax[0]
    return lo, hi, lax


def charger_bounds(site: SiteArrays, state: SiteState) -> tuple[FloatArray, FloatArray]:
    """Per-charger box ``(lo, hi)`` in kW from charger, EV, energy and departure limits.

    ``hi = min(rated, EV max, room / (eff * dt))`` where an EV is present, else 0. ``lo = -min(charger
    discharge max, EV discharge max, dischargeable * eff / dt, departure margin)`` where the charger is
    bidirectional and an EV is present, else 0; the departure margin keeps ``need + d * dt / eff <=
    full * eff * (time_left - dt)``, where ``full`` is ``min(rated, EV max)`` rounded down to the
    charger's resolution (the rate it can really be held at). Always ``lo <= 0 <= hi``. Shapes follow the
    state.
    """
    lo, hi, _ = _ev_bounds(site, state)
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


def charger_box(site: SiteArrays, state: SiteState, plan: ProjectionPlan | None = None) -> ChargerBox:
    """The box of :func:`charger_bounds` with the EVs' laxity, reusable by :func:`project` (``box=``)
    when the same state is projected: callers that need the bounds themselves (the environment's action
    mapping) compute them once per step. ``plan``: this site's plan, when the caller has one (saves
    gathering the chargers' constants)."""
    lo, hi, laxity = _ev_bounds(site, state, plan)
    return ChargerBox(site=site, state=state, lo_kw=lo, hi_kw=hi, laxity_h=laxity)


# ---------------------------------------------------------------------------------------------- project


def _batch_size(
    state: SiteState, *arrays: FloatArray | float, battery_kw: FloatArray | float = 0.0
) -> tuple[int, bool]:
    """``(B, batched)`` from the per-charger ``arrays`` ``(n,)``/``(B, n)``, the state and the battery
    request (a scalar or ``(B,)``)."""
    shape: tuple[int, ...] = ()

    def merge(d: tuple[int, ...]) -> None:
        nonlocal shape
        if d and d != shape:  # np.broadcast_shapes, without its cost in the common cases
            shape = np.broadcast_shapes(shape, d) if shape else d

    for v in (state.ev_present, *arrays):
        if isinstance(v, np.ndarray):
            if v.ndim > 1:
                merge(v.shape[:-1])
        elif np.ndim(v) > 1:
            merge(np.shape(v)[:-1])
    for v in (battery_kw, state.base_load_kw, state.pv_kw, state.battery_soc_kwh):
        if isinstance(v, np.ndarray):
            if v.ndim:
                merge(v.shape)
        elif not isinstance(v, float | int):
            merge(np.shape(v))
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
    departure_floor: bool = False,
) -> ProjectionResult:
    """Project a requested allocation onto the feasible set.

    ``charger_kw`` is ``(n,)`` or ``(B, n)`` kW (+ charge, - discharge), ``battery_kw`` a scalar or
    ``(B,)``; the state may be batched the same way. Returns the allocation of the minimal-change rule
    (``docs/projection.md``), feasible for every limit, on the chargers' grid, with every charger off or at
    least at its minimum. Where even the safest allocation (no charging; EV and battery discharge where it
    helps the import limit) breaks the site limit, that allocation is returned with ``feasible=False``.
    ``plan``: a :class:`ProjectionPlan` of this site (built when omitted). The two switches turn off the
    minimum-current rule and the rounding (for comparisons with the continuous problem). ``box``: the
    :func:`charger_box` of this very ``state`` (accepted for callers that have it; the kernel computes the
    box itself, which costs less than passing it). ``departure_floor``: guarantee departures, too: an EV
    that must charge now to reach its need by its departure (at the rate its charger can hold on its grid)
    gets at least that power, least slack first while the limits allow (``docs/projection.md``).
    """
    plan = _plan_of(site, plan)
    if box is not None and (box.state is not state or box.site is not site):
        raise ValueError("box was computed for another state or site")
    n = plan.n
    batch, batched = _batch_size(state, charger_kw, battery_kw=battery_kw)
    req = np.empty((batch, n + 1))
    req[:, :n] = charger_kw
    req[:, n] = battery_kw
    if not np.isfinite(req).all():
        raise ValueError("requested power must be finite")
    sa = _StateArrays(state, batch, n)
    x, paused, feasible, curtailed, site_import, moved = _kernel.project_batch(
        plan.net,
        plan.consts,
        sa.charger,
        _site_values(state, batch),
        sa.dt_h,
        req,
        bool(enforce_min_current),
        bool(round_to_resolution),
        bool(departure_floor),
    )
    if batched:
        return ProjectionResult(
            charger_kw=x[:, :n],
            battery_kw=x[:, n].copy(),
            pv_curtailed_kw=curtailed,
            site_import_kw=site_import,
            feasible=feasible,
            moved_kw=moved,
            paused=paused,
        )
    return ProjectionResult(
        charger_kw=x[0, :n],
        battery_kw=x[0, n],
        pv_curtailed_kw=curtailed[0],
        site_import_kw=site_import[0],
        feasible=feasible[0],
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
    departure_floor: bool = False,
) -> ProjectionResult:
    """Fill capacity in descending score order, then project.

    Each charger, highest score first, takes up to its ``hi`` within the headroom its rows have left after
    the chargers before it (a greedy fill, feasible by construction). With ``allow_discharge``, chargers
    with a negative score discharge first (most negative first, each down to its ``lo`` within the nodes'
    discharge headroom), and that discharge frees import headroom for the others; an export the charging
    does not take up is left to :func:`project`. The fill always goes through :func:`project` (minimum
    current, rounding, and whatever the greedy fill left). ``box``: the :func:`charger_box` of this very
    ``state``, when the caller has it.
    """
    plan = _plan_of(site, plan)
    if box is not None and (box.state is not state or box.site is not site):
        raise ValueError("box was computed for another state or site")
    n = plan.n
    batch, batched = _batch_size(state, scores)
    sc = np.ascontiguousarray(np.broadcast_to(np.asarray(scores, dtype=np.float64), (batch, n)))
    sa = _StateArrays(state, batch, n)
    filled = _kernel.fill_priority(
        plan.net,
        plan.consts,
        sa.charger,
        _site_values(state, batch),
        sa.dt_h,
        sc,
        bool(allow_discharge),
    )
    request = filled if batched else filled[0]
    return project(site, state, request, 0.0, plan=plan, box=box, departure_floor=departure_floor)


ceil_to_grid = physics.ceil_to_grid
"""``ceil_to_grid(kw, resolution_kw)``: the smallest point of each charger's grid at or above ``kw``"""
floor_to_grid = physics.floor_to_grid
"""``floor_to_grid(kw, resolution_kw)``: the largest point of each charger's grid at or below ``kw``; the
projection rounds its output this way (toward zero for positive values). Both are numpy ufuncs."""
least_on_kw = physics.least_on_kw
"""``least_on_kw(min_kw, resolution_kw, present_fraction, hi_kw)``: the least step-average power a charger
that is on gives its EV, the projection's minimum current (a ufunc; :func:`envs.physics.least_on_kw_one`)"""

__all__ = [
    "ChargerBox",
    "ProjectionPlan",
    "ProjectionResult",
    "ceil_to_grid",
    "charger_bounds",
    "charger_box",
    "floor_to_grid",
    "least_on_kw",
    "priority_fill",
    "project",
]
