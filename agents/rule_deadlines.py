"""The deadline rule of the rule-based DLM (:mod:`agents.rule_based`): what each present EV, and each node of
the limit tree and the connection under the peak target, forces to be charged now so that every EV can
still finish."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.allocate import Resources
from envs.core import BoolArray, FloatArray, IntArray


@dataclass(frozen=True, eq=False)
class Deadlines:
    """What deadlines force, per present EV that still needs energy (``idx``) and per departure step ``k``
    among them (``ks``): the grid-side energy each must have had by step ``k``, i.e. what it could not get
    after ``k`` at its hedged full power."""

    idx: IntArray
    pos: IntArray
    """(n,) position of each charger in ``idx``, -1 where not active"""
    steps: IntArray
    """(a,) steps to departure"""
    ks: IntArray
    """(K,) distinct departure steps (the shortfall through a resource peaks at one of them)"""
    by_k: FloatArray
    """(a, K) kWh each EV must have by step ``k``"""
    own_kw: FloatArray
    """(a,) kW each EV must draw now on its own (``must_kw`` of :func:`envs.physics.ev_terms`)"""
    site_kwh: FloatArray
    """(K,) the sum over EVs of ``by_k``"""

    @classmethod
    def of(
        cls,
        need_grid_kwh: FloatArray,
        later_step_kwh: FloatArray,
        steps_left: IntArray,
        must_kw: FloatArray,
        active: BoolArray,
        usable: FloatArray | None = None,
    ) -> Deadlines:
        """``usable``: where only some later steps count as charging time (V2G keeps to the steps whose
        recharge pays, :func:`agents.rule_storage.ev_discharge_kw`), ``usable[j]`` is how many of steps
        ``0 .. j - 1`` count (length over the longest stay); None: every step after now counts."""
        idx = np.flatnonzero(active)
        pos = np.full(len(active), -1, dtype=np.int64)
        pos[idx] = np.arange(len(idx))
        g, later, sl = need_grid_kwh[idx], later_step_kwh[idx], steps_left[idx]
        ks = np.unique(sl)
        after_k = sl[:, None] - ks[None, :] if usable is None else usable[sl][:, None] - usable[ks][None, :]
        by_k = np.maximum(g[:, None] - later[:, None] * np.maximum(after_k, 0), 0.0)
        return cls(idx, pos, sl, ks, by_k, must_kw[idx], by_k.sum(axis=0))


def shortfall_kwh(
    res: Resources,
    dl: Deadlines,
    site_room_kwh: FloatArray,
    dt: float,
    node_margin: float,
    node_steps: FloatArray | IntArray | None = None,
) -> FloatArray:
    """(R, K) energy deadlines force through each resource by each departure step ``k`` of ``dl.ks`` beyond
    what it can carry in the steps after now before ``k``: a node ``node_margin`` of its limit in each of
    ``node_steps`` (default ``k - 1``) steps, the connection ``site_room_kwh`` (``(K,)``, under the peak
    target); positive: it must flow now."""
    short = np.asarray(res.coef[dl.idx].T @ dl.by_k)
    steps = dl.ks - 1 if node_steps is None else node_steps
    short[:-1] -= (node_margin * res.static_limit * dt)[:, None] * np.asarray(steps)[None, :]
    short[-1] -= site_room_kwh
    return short


def forced_kw(
    res: Resources,
    dl: Deadlines,
    caps: FloatArray,
    site_room_kwh: FloatArray,
    dt: float,
    node_margin: float,
) -> FloatArray:
    """What deadlines force now (kW per charger).

    Each EV that could not finish at ``hedge`` of its full power in its later steps must charge the
    difference now. That is not enough where EVs share a node of the limit tree (or the connection
    under the peak target): for every resource and every departure step ``k`` among the present EVs,
    the energy the EVs below it must have by step ``k`` (what they cannot get after ``k`` at hedged
    full power) has to fit through the resource in the ``k - 1`` later steps at ``node_margin`` of its
    limit (the connection: under the peak target, ``site_room_kwh``); what does not fit must flow now,
    and goes to the EVs below the resource that leave first.
    """
    n = len(caps)
    forced = np.zeros(n)
    idx = dl.idx
    if len(idx) == 0:
        return forced
    forced[idx] = np.minimum(dl.own_kw, caps[idx])
    ei, er, ec = res.entries
    keep = dl.pos[ei] >= 0
    ei, er, ec = ei[keep], er[keep], ec[keep]
    pe = dl.pos[ei]
    R = len(res.static_limit) + 1
    # (R, K) energy forced through each resource by each departure step, minus the room after now
    short = shortfall_kwh(res, dl, site_room_kwh, dt, node_margin)
    k_star = np.argmax(short, axis=1)
    need_now = np.max(short, axis=1) / dt  # (R,) resource units that must flow now
    # hand each resource's shortfall to its EVs that leave first, twice (a parent sees its children's)
    srt = np.lexsort((dl.steps[pe], er))
    ei, er, ec, pe = ei[srt], er[srt], ec[srt], pe[srt]
    useful_kw = np.minimum(caps[ei], dl.by_k[pe, k_star[er]] / dt)
    for _ in range(2):
        deficit = need_now - np.bincount(er, weights=forced[ei] * ec, minlength=R)
        on = deficit[er] > 1e-9
        if not on.any():
            break
        e_i, e_r, e_c = ei[on], er[on], ec[on]
        extra = np.maximum(useful_kw[on] - forced[e_i], 0.0) * e_c
        cs = np.cumsum(extra)
        first = np.flatnonzero(np.r_[True, e_r[1:] != e_r[:-1]])
        start = np.repeat(cs[first] - extra[first], np.diff(np.r_[first, len(e_r)]))
        take = np.clip(deficit[e_r] - (cs - extra - start), 0.0, extra) / e_c
        add = np.zeros(n)
        np.maximum.at(add, e_i, take)
        forced += add
    return np.minimum(forced, caps)
