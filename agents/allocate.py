"""Vectorised capacity allocation shared by the baselines and the rule-based DLM.

A site's limits are *resources*: every node of the limit tree in kW, every node and phase in A, and the
grid connection's import headroom in kW. Charger ``i`` uses ``coef[i, r]`` of resource ``r`` per kW it
charges. Two fills share them out, both feasible by construction (the sum on every resource stays within
its limit) and both vectorised over chargers:

* :func:`greedy_fill` serves chargers in a given order, each up to what it wants (EDF, LLF, round robin
  and the rule-based DLM's deadline tiers);
* :func:`fair_fill` raises every charger at the same rate per unit weight until it is served or one of
  its resources is full (progressive filling: max-min fair for equal weights).

Both honour the minimum-current rule the way a real charger does: a charger is off or at least at its
minimum power. :func:`admit_minimum` picks, in order, which chargers can get their minimum at all.

Allocations are requests; every policy's output still goes through :func:`envs.projection.project`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp

from envs.core import FloatArray, IntArray, SiteArrays, SiteState
from envs.limit_rows import LimitRows
from envs.physics import ev_terms

_TOL_KW = 1e-9


@dataclass(frozen=True, eq=False)
class Resources:
    """The limits of a site as resources (built once per site with :meth:`from_site`).

    ``coef`` is ``(n, R)``: use of each resource per kW a charger charges; the last column is the grid
    connection's import, whose limit changes every step (base load, PV, battery).
    """

    coef: sp.csr_matrix
    """(n, R) sparse: a charger sits on a few resources"""
    static_limit: FloatArray
    """(R - 1,) limits of the tree resources (kW or A); the site column's limit is given per step"""
    entries: tuple[IntArray, IntArray, FloatArray]
    """the nonzero entries of ``coef`` (charger, resource, use per kW), charger-major"""

    @classmethod
    def from_site(cls, site: SiteArrays) -> Resources:
        """The site's :class:`envs.limit_rows.LimitRows` (the rows that can bind) and the connection."""
        rows = LimitRows.from_site(site)
        by_node = np.lexsort((rows.phase, rows.node))  # node by node, kW first (the fills' summation order)
        coef = sp.csr_matrix(np.column_stack([rows.weights[:, by_node], np.ones(site.n)]))
        return cls(coef=coef, static_limit=rows.limit[by_node], entries=_entries(coef))

    @property
    def shape(self) -> tuple[int, int]:
        """(n, R) like ``coef``, so the fills take a :class:`Resources` (and its cached entries) directly."""
        return (int(self.coef.shape[0]), int(self.coef.shape[1]))

    def limits(self, site_headroom_kw: float) -> FloatArray:
        """All limits with the grid connection's headroom for this step."""
        return np.append(self.static_limit, max(site_headroom_kw, 0.0))


def site_headroom_kw(
    site: SiteArrays, state: SiteState, battery_kw: float = 0.0, cap_kw: float | None = None
) -> float:
    """What the chargers may draw in total: the import limit (or ``cap_kw``, e.g. a peak target, if lower)
    minus base load and battery charging plus PV."""
    limit = site.import_limit_kw if cap_kw is None else min(site.import_limit_kw, cap_kw)
    return float(limit - np.asarray(state.base_load_kw) + np.asarray(state.pv_kw) - battery_kw)


def charge_caps_kw(site: SiteArrays, state: SiteState) -> FloatArray:
    """The most each charger should draw now (kW, >= 0): the projection's upper bound (charger, EV and
    room limits, ``hi_kw`` of :func:`envs.physics.ev_terms`) and never more than the EV still needs."""
    hi = ev_terms(site, state).hi_kw
    need_kw = np.maximum(np.asarray(state.energy_needed_kwh, dtype=float), 0.0) / (
        site.efficiency * state.dt_h
    )
    return np.maximum(np.minimum(hi, need_kw), 0.0)


Coef: TypeAlias = FloatArray | sp.csr_matrix | Resources
"""resource use per kW: a dense or sparse ``(n, R)`` matrix, or a site's :class:`Resources`"""


def resource_use(coef: Coef, kw: FloatArray) -> FloatArray:
    """(R,) use of each resource by an allocation ``kw`` (n,)."""
    if isinstance(coef, Resources):
        ei, er, ec = coef.entries
        use = np.bincount(er, weights=np.asarray(kw, dtype=float)[ei] * ec, minlength=coef.shape[1])
        return np.asarray(use, dtype=float)
    return np.asarray(coef.T @ np.asarray(kw, dtype=float)).ravel()


def _entries(coef: Coef) -> tuple[IntArray, IntArray, FloatArray]:
    """The nonzero entries of a coefficient matrix (dense or sparse): charger, resource, use per kW."""
    if isinstance(coef, Resources):
        return coef.entries
    if isinstance(coef, sp.spmatrix | sp.sparray):
        coo = sp.coo_matrix(coef)
        return coo.row.astype(np.int64), coo.col.astype(np.int64), np.asarray(coo.data, dtype=float)
    i, r = np.nonzero(coef)
    return i.astype(np.int64), r.astype(np.int64), np.asarray(coef[i, r], dtype=float)


def greedy_fill(
    coef: Coef,
    limit: FloatArray,
    want_kw: FloatArray,
    order: IntArray,
    min_kw: FloatArray | None = None,
    passes: int = 3,
) -> FloatArray:
    """Serve chargers in ``order`` (indices, first served first), each up to ``want_kw``.

    One pass gives charger ``i`` at most what every one of its resources has left after the chargers
    before it took what they *want*; it is feasible but leaves capacity when a charger is cut short by
    another resource, so later passes share out what is left. Chargers not in ``order`` get 0. Works on
    the nonzero entries only (a charger sits on a few resources), so it scales to large trees.
    """
    n = coef.shape[0]
    alloc = np.zeros(n)
    if len(order) == 0:
        return alloc
    pos = np.full(n, -1, dtype=np.int64)
    pos[order] = np.arange(len(order))
    rem_want = np.zeros(n)
    rem_want[order] = np.maximum(np.asarray(want_kw, dtype=float)[order], 0.0)
    ei, er, ec = _entries(coef)
    keep = (pos[ei] >= 0) & (rem_want[ei] > 0)  # chargers that want nothing take nothing
    ei, er, ec = ei[keep], er[keep], ec[keep]
    srt = np.argsort(er * n + pos[ei])  # by resource, then by serving order (unique keys)
    ei, er, ec = ei[srt], er[srt], ec[srt]
    starts = np.flatnonzero(np.r_[True, er[1:] != er[:-1]]) if len(er) else np.zeros(0, dtype=np.int64)
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(er)]))
    rem_limit = np.asarray(limit, dtype=float).copy()
    got = np.zeros(n)
    mins = None if min_kw is None else np.asarray(min_kw, dtype=float)
    for _ in range(passes):
        use = rem_want[ei] * ec
        cs = np.cumsum(use)
        before = cs - use - (cs[group_start] - use[group_start])
        per = np.maximum(rem_limit[er] - before, 0.0) / ec
        cap = np.full(n, np.inf)
        np.minimum.at(cap, ei, per)
        a = np.minimum(cap, rem_want)
        if mins is not None:
            # off or at least the minimum: a charger that would end below its minimum gets nothing
            a = np.where((got == 0) & (a < mins - _TOL_KW) & (a < rem_want - _TOL_KW), 0.0, a)
        a = np.maximum(a, 0.0)
        got += a
        rem_want -= a
        rem_limit = np.maximum(rem_limit - np.bincount(er, weights=a[ei] * ec, minlength=len(rem_limit)), 0.0)
        if not (rem_want > _TOL_KW).any() or not (rem_limit > _TOL_KW).any():
            break
    alloc[order] = got[order]
    return alloc


def fair_fill(
    coef: Coef,
    limit: FloatArray,
    want_kw: FloatArray,
    weight: FloatArray | None = None,
    iterations: int = 12,
) -> FloatArray:
    """Progressive filling: every charger with ``want_kw > 0`` rises at ``weight`` kW per unit of level
    until it is served or one of its resources is full; feasible after every iteration."""
    n = coef.shape[0]
    want = np.maximum(np.asarray(want_kw, dtype=float), 0.0)
    w = np.ones(n) if weight is None else np.asarray(weight, dtype=float)
    alloc = np.zeros(n)
    rem_limit = np.asarray(limit, dtype=float).copy()
    R = len(rem_limit)
    active = want > _TOL_KW
    ei, er, ec = _entries(coef)
    for _ in range(iterations):
        if not active.any():
            break
        demand = np.bincount(er, weights=(w * active)[ei] * ec, minlength=R)  # (R,) use per unit level
        with np.errstate(divide="ignore", invalid="ignore"):
            level_r = np.where(demand > 0, rem_limit / np.where(demand > 0, demand, 1.0), np.inf)
        level_i = np.full(n, np.inf)
        np.minimum.at(level_i, ei, level_r[er])
        delta = np.where(active, np.minimum(w * level_i, want - alloc), 0.0)
        delta = np.maximum(delta, 0.0)
        alloc += delta
        rem_limit = np.maximum(rem_limit - np.bincount(er, weights=delta[ei] * ec, minlength=R), 0.0)
        full_r = rem_limit <= 1e-9 * np.maximum(np.abs(limit), 1.0)
        blocked = np.zeros(n, dtype=bool)
        blocked[ei[full_r[er]]] = True
        active &= (want - alloc > _TOL_KW) & ~blocked
    return alloc


def admit_minimum(
    coef: Coef,
    limit: FloatArray,
    want_kw: FloatArray,
    min_kw: FloatArray,
    order: IntArray,
) -> IntArray:
    """The chargers of ``order`` that can all get their minimum power (served in order), as indices."""
    first = np.minimum(np.asarray(min_kw, dtype=float), np.asarray(want_kw, dtype=float))
    got = greedy_fill(coef, limit, first, order, passes=1)
    ok = got[order] >= first[order] - _TOL_KW
    return order[ok & (first[order] > 0)]


def fair_with_minimum(
    coef: Coef,
    limit: FloatArray,
    want_kw: FloatArray,
    min_kw: FloatArray,
    order: IntArray,
    weight: FloatArray | None = None,
) -> FloatArray:
    """Fair share that respects the minimum current: admit chargers in ``order`` while every admitted one
    can get its minimum, share fairly (by ``weight``) among the admitted ones, and lift any the share left
    below its minimum to it."""
    n = coef.shape[0]
    admitted = admit_minimum(coef, limit, want_kw, min_kw, order)
    want = np.zeros(n)
    want[admitted] = want_kw[admitted]
    alloc = fair_fill(coef, limit, want, weight)
    floor = np.minimum(min_kw, want)
    low = (want > 0) & (alloc < floor - _TOL_KW)
    if low.any():
        # those the weighted share left below their minimum get it; the others share what remains
        base = np.where(low, floor, 0.0)
        rest = np.where(low, 0.0, want)
        alloc = base + fair_fill(coef, np.maximum(limit - resource_use(coef, base), 0.0), rest, weight)
    return alloc
