"""The sparse site LP shared by the MPC and the perfect-foresight optimum.

One linear program describes a charging site over ``T`` steps of ``dt_h`` hours: EV charging windows
("slots", one per session or, in the MPC, one per charger), the stationary battery, PV curtailment, the
grid connection and the limit tree. Its objective is the cost model of :mod:`envs.costs`:

* energy import cost minus export revenue per step,
* the demand charge on each billing period's peak import (a peak variable per period, bounded below by the
  peak already reached),
* the missing-energy penalty as a slack per slot at the penalty price,
* degradation per kWh discharged from EVs (V2G) and from the battery.

Constraints (per step ``t``):

* site balance ``import - export = base - (pv - curtailed) + sum(charge - discharge) + battery``,
  ``0 <= import <= import limit``, ``0 <= export <= export limit``, ``0 <= curtailed <= pv``;
* every node of the limit tree in both directions, kW and per-phase current (nodes that cannot bind are
  left out);
* each slot's charge/discharge within its rate while the EV is present, zero otherwise;
* the EV's energy: delivered (battery side, ``efficiency * charge - discharge / efficiency``) plus the
  missing slack equals the energy asked; with V2G, the running energy stays within
  ``[-dischargeable, room]``;
* battery state of charge dynamics with one-way efficiency and SoC bounds.

The minimum-current rule (a charger is off or at least at its minimum current) is a disjunction and is
relaxed: the LP may schedule less than the minimum; the safety projection pauses such requests when a
schedule is replayed.

The matrix is built once with :mod:`scipy.sparse` from the *structure* (which slot covers which steps);
the *data* (prices, forecasts, energies, rates) only sets bounds and costs, so a receding-horizon MPC keeps
one HiGHS model and re-solves it warm each step (:mod:`agents.lp_warm`: only what changed is sent, and the
MPC leaves the columns fixed at zero out of the model).
"""

from __future__ import annotations

from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

from agents.lp_warm import WarmModel, bounds_infeasible
from envs.config import Tariff
from envs.core import BoolArray, FloatArray, IntArray, SiteArrays
from envs.limit_rows import LimitRows, can_bind, reach_kw

INF = highspy.kHighsInf
_EPS_EXPORT = 1e-6
"""a tiny cost on export so the LP never imports and exports in the same step"""
_EPS_LATE = 1e-7
"""a tiny cost per kWh per step of delay: among equally cheap schedules prefer charging early"""


def _new_highs() -> highspy.Highs:
    """A silent HiGHS instance. HiGHS prints a banner from C++ on the first instance of a process, before
    any option can be set; it is sent to /dev/null so that machine-readable output stays clean."""
    import os
    import sys

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdout (captured): nothing to protect
        h = highspy.Highs()
    else:
        sys.stdout.flush()
        saved = os.dup(fd)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), fd)
                h = highspy.Highs()
        finally:
            os.dup2(saved, fd)
            os.close(saved)
    h.setOptionValue("output_flag", False)
    return h


def _expand_rows(coef: sp.csr_matrix, rows: IntArray) -> tuple[IntArray, IntArray, FloatArray]:
    """The nonzero entries of ``coef[rows]`` as (position in ``rows``, column, value), without densifying."""
    indptr = coef.indptr
    counts = np.diff(indptr)[rows]
    k = np.repeat(np.arange(len(rows)), counts)
    first = np.repeat(indptr[rows], counts)
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    idx = first + within
    return k, coef.indices[idx].astype(np.int64), np.asarray(coef.data[idx], dtype=float)


class LPError(RuntimeError):
    """HiGHS did not find an optimal solution."""


@dataclass(frozen=True, eq=False)
class LPData:
    """Everything that changes between solves of the same structure.

    Time series are ``(T,)``; slot arrays are ``(K,)``. Energies are on the EV battery side.
    """

    base_load_kw: FloatArray
    pv_kw: FloatArray
    import_price_per_kwh: FloatArray
    export_price_per_kwh: FloatArray
    need_kwh: FloatArray
    """energy each slot must deliver by the end of its window (the slack makes up the rest)"""
    max_charge_kw: FloatArray
    """grid-side charging limit per slot, kW"""
    active_stop: IntArray
    """each slot is present on steps ``[start, active_stop)`` (<= its structural stop)"""
    room_kwh: FloatArray | None = None
    """upper bound on the running energy of V2G slots (defaults to the need)"""
    dischargeable_kwh: FloatArray | None = None
    """energy above the EV's floor at the start of V2G slots (defaults to 0)"""
    max_discharge_kw: FloatArray | None = None
    """grid-side discharge limit of V2G slots, kW (defaults to 0)"""
    peak_floor_kw: FloatArray | None = None
    """(P,) peak import already reached in each billing period (defaults to 0)"""
    peak_cap_kw: FloatArray | None = None
    """(P,) cap on each billing period's peak, none by default (the optimum: its relaxation's peak)"""
    battery_initial_kwh: float = 0.0
    terminal_battery_value_per_kwh: float = 0.0
    """value of energy left in the battery at the end (MPC: keeps it from emptying at the horizon)"""
    demand_charge_per_kw: float | None = None
    """override of the tariff's demand charge (MPC: spread over the windows left in the period)"""
    delay_cost_per_kwh_h: float | None = None
    """cost per kWh charged per hour after the first step (MPC: capacity used now is not free later, when
    EVs it does not know of yet arrive); None: a tie-breaking epsilon"""
    discharge_cap_kw: FloatArray | None = None
    """per discharge column (see :attr:`SiteLP.y_of_x`) the most it may discharge, kW (the optimum: the
    projection's departure margin, what the EV could still take back after that step; defaults to none)"""
    present_fraction: FloatArray | None = None
    """(K, T) fraction of each step each slot's EV is plugged in (sub-step time: it arrives or leaves
    mid-step); its charge and discharge bounds that step are scaled by it (defaults to 1)"""
    deadline_cost_per_kwh: float = 0.0
    """cost per kWh a slot charges in its last step, from 0 at step 0 in proportion to the step over its
    window (MPC: among equally cheap steps the EVs nearer their departure charge first, so that no EV is
    planned into its last steps with no slack left)"""
    missing_penalty_per_kwh: FloatArray | None = None
    """(K,) penalty per kWh each slot misses (default: the tariff's; MPC: lower for EVs only expected)"""


@dataclass(frozen=True, eq=False)
class LPSolution:
    """A solved schedule."""

    charger_kw: FloatArray
    """(n, T) grid-side kW per charger and step (+ charge, - discharge)"""
    battery_kw: FloatArray
    """(T,) battery kW (+ charge)"""
    site_import_kw: FloatArray
    """(T,) net grid import, kW"""
    pv_curtailed_kw: FloatArray
    missing_kwh: FloatArray
    """(K,) energy each slot misses"""
    peak_kw: FloatArray
    """(P,) peak import per billing period"""
    objective: float
    """the LP's cost (currency), demand charge counted on the whole peak, tie-breaking terms removed"""
    solve_s: float
    mip_gap: float = 0.0
    """exact model: relative gap between the schedule and HiGHS's proven bound (0 for the LP)"""
    bound: float | None = None
    """exact model: HiGHS's proven lower bound on the objective (with the tie-breaking terms)"""


class SiteLP:
    """The structure of the site LP: columns, rows and the sparse matrix, built once.

    ``slot_charger``, ``slot_start``, ``slot_stop`` give each slot's charger and its window of steps
    ``[start, stop)``; ``slot_v2g`` marks slots that may discharge. ``period`` maps each step to its billing
    period ``0..P-1``.
    """

    def __init__(
        self,
        site: SiteArrays,
        tariff: Tariff,
        n_steps: int,
        dt_h: float,
        slot_charger: IntArray,
        slot_start: IntArray,
        slot_stop: IntArray,
        slot_v2g: BoolArray | None = None,
        period: IntArray | None = None,
        pv_curtailable: bool = True,
    ) -> None:
        self.site = site
        self.tariff = tariff
        self.T = int(n_steps)
        self.dt_h = float(dt_h)
        self.pv_curtailable = pv_curtailable
        T = self.T
        self.slot_charger = np.asarray(slot_charger, dtype=np.int64)
        self.slot_start = np.clip(np.asarray(slot_start, dtype=np.int64), 0, T)
        self.slot_stop = np.clip(np.asarray(slot_stop, dtype=np.int64), self.slot_start, T)
        K = len(self.slot_charger)
        self.K = K
        v2g = np.zeros(K, dtype=bool) if slot_v2g is None else np.asarray(slot_v2g, dtype=bool)
        self.slot_v2g = v2g & site.bidirectional[self.slot_charger] if K else v2g
        self.period = np.zeros(T, dtype=np.int64) if period is None else np.asarray(period, dtype=np.int64)
        self.P = int(self.period.max()) + 1 if T else 0
        self.has_peak = tariff.demand_charge_per_kw > 0
        self.has_battery = site.has_battery

        # ---- columns
        lengths = self.slot_stop - self.slot_start
        self.x_off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        nx = int(self.x_off[-1])
        self.x_slot = np.repeat(np.arange(K), lengths)
        self.x_step = (
            np.arange(nx) - np.repeat(self.x_off[:-1], lengths) + np.repeat(self.slot_start, lengths)
        )
        self.x_charger = self.slot_charger[self.x_slot] if nx else np.zeros(0, dtype=np.int64)
        v2g_slots = np.flatnonzero(self.slot_v2g)
        y_mask = self.slot_v2g[self.x_slot] if nx else np.zeros(0, dtype=bool)
        self.y_of_x = np.flatnonzero(y_mask)  # x positions that also have a discharge (and energy) column
        ny = len(self.y_of_x)
        sizes = {
            "x": nx,
            "y": ny,
            "e": ny,
            "gi": T,
            "ge": T,
            "cu": T,
            "bc": T if self.has_battery else 0,
            "bd": T if self.has_battery else 0,
            "soc": T if self.has_battery else 0,
            "pk": self.P if self.has_peak else 0,
            "miss": K,
        }
        self.col: dict[str, int] = {}
        pos = 0
        for name, size in sizes.items():
            self.col[name] = pos
            pos += size
        self.n_cols = pos
        self.sizes = sizes

        eff = site.efficiency[self.x_charger] if nx else np.zeros(0)
        xcol = self.col["x"] + np.arange(nx)
        ycol = self.col["y"] + np.arange(ny)
        ecol = self.col["e"] + np.arange(ny)
        t_range = np.arange(T)
        rows: list[IntArray] = []
        cols: list[IntArray] = []
        vals: list[FloatArray] = []
        row_pos = 0

        def add(r: IntArray, c: IntArray, v: FloatArray | float) -> None:
            rows.append(np.asarray(r, dtype=np.int64))
            cols.append(np.asarray(c, dtype=np.int64))
            vals.append(np.broadcast_to(np.asarray(v, dtype=float), np.shape(r)).copy())

        # ---- site balance: gi - ge - sum x + sum y - bc + bd - cu = base - pv
        self.r_balance = row_pos
        row_pos += T
        add(self.r_balance + t_range, self.col["gi"] + t_range, 1.0)
        add(self.r_balance + t_range, self.col["ge"] + t_range, -1.0)
        add(self.r_balance + t_range, self.col["cu"] + t_range, -1.0)
        add(self.r_balance + self.x_step, xcol, -1.0)
        add(self.r_balance + self.x_step[self.y_of_x], ycol, 1.0)
        if self.has_battery:
            add(self.r_balance + t_range, self.col["bc"] + t_range, -1.0)
            add(self.r_balance + t_range, self.col["bd"] + t_range, 1.0)

        # ---- limit tree: kW per node and current per node and phase, both directions
        used = np.zeros(site.n, dtype=bool)
        used[self.slot_charger] = True
        max_kw = reach_kw(site, used)
        tree = LimitRows.from_site(site, used)
        self.r_limits = row_pos
        bound = tree.limit
        self.limit_row_bound = np.zeros(0)
        self.limit_row_node = np.zeros(0, dtype=np.int64)  # the node of each kept kW row (-1: a phase row)
        n_kept = 0
        if len(tree) and nx:
            coef = sp.csr_matrix(tree.weights)  # (n, L)
            xk, lk, vk = _expand_rows(coef, self.x_charger)  # entries per charging column
            step_k = self.x_step[xk]
            # a (row, step) pair is kept only when the EVs present then could break it
            pair = lk * T + step_k
            reach = np.bincount(pair, weights=vk * max_kw[self.x_charger[xk]], minlength=len(bound) * T)
            keep = can_bind(reach, np.repeat(bound, T))
            row_of_pair = np.full(len(bound) * T, -1, dtype=np.int64)
            n_kept = int(keep.sum())
            row_of_pair[keep] = row_pos + np.arange(n_kept)
            self.limit_row_bound = np.repeat(bound, T)[keep]
            self.limit_row_node = np.repeat(np.where(tree.phase < 0, tree.node, -1), T)[keep]
            r = row_of_pair[pair]
            ok = r >= 0
            add(r[ok], xcol[xk[ok]], vk[ok])
            if ny:
                yk, lky, vky = _expand_rows(coef, self.x_charger[self.y_of_x])
                ry = row_of_pair[lky * T + self.x_step[self.y_of_x[yk]]]
                oky = ry >= 0
                add(ry[oky], ycol[yk[oky]], -vky[oky])
        row_pos += n_kept
        self.n_limit_rows = n_kept

        # ---- peak: gi_t - pk_period(t) <= 0
        self.r_peak = row_pos
        if self.has_peak:
            add(self.r_peak + t_range, self.col["gi"] + t_range, 1.0)
            add(self.r_peak + t_range, self.col["pk"] + self.period, -1.0)
            row_pos += T

        # ---- V2G energy dynamics: e_k,t - e_k,t-1 - eff*dt*x + dt/eff*y = 0
        self.r_v2g = row_pos
        if ny:
            r = self.r_v2g + np.arange(ny)
            xi = self.y_of_x
            add(r, ecol, 1.0)
            first = self.x_step[xi] == self.slot_start[self.x_slot[xi]]
            add(r[~first], ecol[~first] - 1, -1.0)  # previous step of the same slot is adjacent
            add(r, xcol[xi], -eff[xi] * self.dt_h)
            add(r, ycol, self.dt_h / eff[xi])
            row_pos += ny

        # ---- energy asked: delivered + miss = need
        self.r_need = row_pos
        if K:
            plain = ~y_mask
            add(self.r_need + self.x_slot[plain], xcol[plain], eff[plain] * self.dt_h)
            if len(v2g_slots):
                last_e = self.x_off[v2g_slots + 1] - 1  # x position of each V2G slot's last step
                nonempty = self.x_off[v2g_slots + 1] > self.x_off[v2g_slots]
                e_pos = np.searchsorted(self.y_of_x, last_e[nonempty])
                add(self.r_need + v2g_slots[nonempty], ecol[e_pos], 1.0)
            add(self.r_need + np.arange(K), self.col["miss"] + np.arange(K), 1.0)
            row_pos += K

        # ---- battery: soc_t - soc_t-1 - eta*dt*bc + dt/eta*bd = 0 (soc_-1 on the right-hand side)
        self.r_battery = row_pos
        if self.has_battery:
            eta = site.battery_efficiency
            r = self.r_battery + t_range
            add(r, self.col["soc"] + t_range, 1.0)
            add(r[1:], self.col["soc"] + t_range[:-1], -1.0)
            add(r, self.col["bc"] + t_range, -eta * self.dt_h)
            add(r, self.col["bd"] + t_range, self.dt_h / eta)
            row_pos += T
        self.n_rows = row_pos

        self.matrix = sp.csc_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(self.n_rows, self.n_cols),
        )
        self.matrix.sum_duplicates()
        self.matrix.sort_indices()
        self._eff_x = eff
        self._highs: highspy.Highs | None = None
        self._warm: WarmModel | None = None
        """the HiGHS model of :attr:`_highs` with the bounds and costs it holds (:mod:`agents.lp_warm`)"""
        self.compact = False
        """leave the charging columns fixed at zero out of the HiGHS model (:mod:`agents.lp_warm`; the MPC)"""
        self._pos: sp.csr_matrix | None = None
        self._neg: sp.csr_matrix | None = None
        """the matrix's positive and negative entries (:func:`~agents.lp_warm.bounds_infeasible`)"""
        self.highs_options: dict[str, int | float | str | bool] = {}
        """extra HiGHS options for cold solves (e.g. ``simplex_strategy``)"""
        self.last_x: FloatArray = np.zeros(nx)
        """charging columns of the last solution, kW"""
        self.last_v: FloatArray = np.zeros(self.n_cols)
        """every column of the last solution"""

    # ------------------------------------------------------------------ solving

    def solve(
        self,
        data: LPData,
        warm: bool = False,
        time_limit_s: float | None = None,
        x_off: BoolArray | None = None,
        x_on: BoolArray | None = None,
        exact: bool = False,
        mip_rel_gap: float = 1e-4,
        node_limit: int | None = None,
    ) -> LPSolution:
        """Solve for ``data``. With ``warm=True`` the HiGHS model of the previous call is updated in place
        (bounds and costs only) and re-solved from its last basis. ``x_off`` / ``x_on`` (per charging column,
        see :attr:`x_slot` / :attr:`x_step`) force those columns to 0 / to at least the charger's minimum.

        ``exact=True`` solves the MILP of :func:`agents.lp_exact.exact_model` instead (always cold):
        every charging column off or between the charger's minimum and its rate, on the charger's
        resolution grid, and an EV may take more than it asked (up to its room) where the grid makes the
        exact amount impossible. With a ``time_limit_s`` the best schedule found in time is returned
        (``LPSolution.mip_gap`` says how far from proven optimal); ``node_limit`` bounds the branch-and-bound
        nodes instead (the same answer on any machine)."""
        import time

        lo, hi, cost, rlo, rhi = _bounds_and_costs(self, data)
        xs = slice(self.col["x"], self.col["x"] + self.sizes["x"])
        if x_on is not None:
            lo[xs] = np.where(x_on, np.minimum(self.min_x_kw(data), hi[xs]), lo[xs])
        if x_off is not None:
            hi[xs] = np.where(x_off, 0.0, hi[xs])
            lo[xs] = np.where(x_off, 0.0, lo[xs])
        t0 = time.perf_counter()
        h = self._highs
        if exact:
            from agents.lp_exact import solve_exact

            return solve_exact(self, data, lo, hi, cost, rlo, rhi, time_limit_s, mip_rel_gap, node_limit)
        if self._pos is None:
            self._pos, self._neg = self.matrix.maximum(0).tocsr(), self.matrix.minimum(0).tocsr()
        if x_on is not None and bounds_infeasible(self._pos, self._neg, lo, hi, rlo, rhi):
            # a re-solve that only proves what the bounds show (minima forced on over a small connection)
            # costs a whole solve; the model is left as it was, so the next warm solve starts from its
            # last optimal basis
            raise LPError("site LP infeasible: a row cannot meet its bounds within the column bounds")
        new = (lo, hi, cost, rlo, rhi)
        leave_out = None
        if self.compact:
            leave_out = np.zeros(self.n_cols, dtype=bool)
            leave_out[xs] = (lo[xs] == 0.0) & (hi[xs] == 0.0)
        if not warm or h is None or self._warm is None or self._warm.h is not h:
            h = _new_highs()
            for key, value in self.highs_options.items():
                h.setOptionValue(key, value)
            h.setOptionValue("threads", 1)
            live = None if leave_out is None else np.flatnonzero(~leave_out)
            cols = slice(None) if live is None else live
            matrix = self.matrix if live is None else self.matrix[:, live]
            h.passModel(_highs_lp(matrix, cost[cols], lo[cols], hi[cols], rlo, rhi))
            self._highs = h
            self._warm = WarmModel(h, live, new)
        else:
            self._warm.update(self.matrix, new, leave_out, drop=x_off is None)
        if time_limit_s is not None:
            h.setOptionValue("time_limit", float(time_limit_s))
        h.run()
        status = h.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            # an infeasible model is still a good model: the next warm solve changes its bounds (a cold
            # rebuild of the whole model costs more than the solve)
            if status != highspy.HighsModelStatus.kInfeasible:
                self._highs = None
            raise LPError(f"site LP not solved to optimality: {h.modelStatusToString(status)}")
        x = self._warm.values(self.n_cols)
        solve_s = time.perf_counter() - t0
        self.last_x = x[self.col["x"] : self.col["x"] + self.sizes["x"]].copy()
        self.last_v = x.copy()
        return _solution(self, x, cost, solve_s)

    def min_x_kw(self, data: LPData) -> FloatArray:
        """The least power each charging column may have when on: the charger's minimum, or the EV's own
        limit where that is lower, or all its room takes in one step where that is lower still (the safety
        projection holds such a charger to what the EV takes: a sliver below one minimum step is charged
        below the minimum, not switched off)."""
        rate = np.asarray(data.max_charge_kw, dtype=float)[self.x_slot]
        need = np.maximum(np.asarray(data.need_kwh, dtype=float), 0.0)
        room = need if data.room_kwh is None else np.maximum(np.asarray(data.room_kwh, dtype=float), need)
        room_kw = room[self.x_slot] / np.maximum(self._eff_x * self.dt_h, 1e-12)
        return np.minimum(np.minimum(self.site.min_kw[self.x_charger], rate), room_kw)


def _solution(lp: SiteLP, v: FloatArray, cost: FloatArray, solve_s: float) -> LPSolution:
    """The schedule of the solved column values ``v`` (``cost``: the column costs of the solve)."""
    c, T = lp.col, lp.T
    nx, ny = lp.sizes["x"], lp.sizes["y"]
    cells = lp.site.n * T
    flat = np.zeros(cells)
    if nx:
        flat += np.bincount(lp.x_charger * T + lp.x_step, v[c["x"] : c["x"] + nx], minlength=cells)
    if ny:
        xi = lp.y_of_x
        y_cell = lp.x_charger[xi] * T + lp.x_step[xi]
        flat -= np.bincount(y_cell, v[c["y"] : c["y"] + ny], minlength=cells)
    charger_kw = flat.reshape(lp.site.n, T)
    battery = v[c["bc"] : c["bc"] + T] - v[c["bd"] : c["bd"] + T] if lp.has_battery else np.zeros(T)
    gi = v[c["gi"] : c["gi"] + T]
    ge = v[c["ge"] : c["ge"] + T]
    true_cost = cost.copy()
    true_cost[c["x"] : c["x"] + nx] = 0.0
    true_cost[c["ge"] : c["ge"] + T] -= _EPS_EXPORT
    if lp.has_battery:
        true_cost[c["soc"] + T - 1] = 0.0
    return LPSolution(
        charger_kw=charger_kw,
        battery_kw=battery,
        site_import_kw=gi - ge,
        pv_curtailed_kw=v[c["cu"] : c["cu"] + T].copy(),
        missing_kwh=v[c["miss"] : c["miss"] + lp.K].copy(),
        peak_kw=v[c["pk"] : c["pk"] + lp.P].copy() if lp.has_peak else np.zeros(lp.P),
        objective=float(true_cost @ v),
        solve_s=solve_s,
    )


def _highs_lp(
    matrix: sp.csc_matrix, cost: FloatArray, lo: FloatArray, hi: FloatArray, rlo: FloatArray, rhi: FloatArray
) -> highspy.HighsLp:
    """A HiGHS model of the column-wise ``matrix`` with these costs and column and row bounds."""
    n_rows, n_cols = matrix.shape
    lp = highspy.HighsLp()
    lp.num_col_ = n_cols
    lp.num_row_ = n_rows
    lp.col_cost_ = cost
    lp.col_lower_ = lo
    lp.col_upper_ = hi
    lp.row_lower_ = rlo
    lp.row_upper_ = rhi
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = matrix.indptr.astype(np.int32)
    lp.a_matrix_.index_ = matrix.indices.astype(np.int32)
    lp.a_matrix_.value_ = matrix.data
    lp.a_matrix_.num_col_ = n_cols
    lp.a_matrix_.num_row_ = n_rows
    return lp


# ------------------------------------------------------------------ data -> bounds and costs


def _bounds_and_costs(
    lp: SiteLP, d: LPData
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Column bounds, costs and row bounds of ``lp``'s structure for the data ``d``: all that changes
    between solves (``(lo, hi, cost, row_lo, row_hi)``)."""
    site, tariff, T, dt = lp.site, lp.tariff, lp.T, lp.dt_h
    c = lp.col
    lo = np.zeros(lp.n_cols)
    hi = np.full(lp.n_cols, INF)
    cost = np.zeros(lp.n_cols)
    nx, ny = lp.sizes["x"], lp.sizes["y"]
    active_stop = np.minimum(np.asarray(d.active_stop, dtype=np.int64), lp.slot_stop)
    present = lp.x_step < active_stop[lp.x_slot] if nx else np.zeros(0, dtype=bool)
    max_charge = np.asarray(d.max_charge_kw, dtype=float)
    # sub-step presence: the fraction of each step the slot's EV is plugged in scales its bounds
    frac = 1.0 if d.present_fraction is None or not nx else d.present_fraction[lp.x_slot, lp.x_step]
    hi[c["x"] : c["x"] + nx] = np.where(present, max_charge[lp.x_slot] * frac, 0.0) if nx else 0.0
    late = _EPS_LATE if d.delay_cost_per_kwh_h is None else d.delay_cost_per_kwh_h * dt * dt + _EPS_LATE
    cost[c["x"] : c["x"] + nx] = late * lp.x_step
    if d.deadline_cost_per_kwh and nx:
        window = np.maximum(active_stop, 1)[lp.x_slot]
        cost[c["x"] : c["x"] + nx] += d.deadline_cost_per_kwh * dt * lp.x_step / window
    if ny:
        xi = lp.y_of_x
        dis = np.zeros(lp.K) if d.max_discharge_kw is None else np.asarray(d.max_discharge_kw, dtype=float)
        frac_y = 1.0 if d.present_fraction is None else d.present_fraction[lp.x_slot[xi], lp.x_step[xi]]
        hi[c["y"] : c["y"] + ny] = np.where(present[xi], dis[lp.x_slot[xi]] * frac_y, 0.0)
        if d.discharge_cap_kw is not None:
            hi[c["y"] : c["y"] + ny] = np.minimum(hi[c["y"] : c["y"] + ny], d.discharge_cap_kw)
        # degradation is charged per kWh out of the EV battery: grid-side kW * dt / efficiency
        cost[c["y"] : c["y"] + ny] = tariff.ev_degradation_per_kwh * dt / lp._eff_x[xi]
        need = np.asarray(d.need_kwh, dtype=float)
        room = need if d.room_kwh is None else np.maximum(np.asarray(d.room_kwh, dtype=float), need)
        floor = np.zeros(lp.K) if d.dischargeable_kwh is None else np.asarray(d.dischargeable_kwh, float)
        lo[c["e"] : c["e"] + ny] = -floor[lp.x_slot[xi]]
        hi[c["e"] : c["e"] + ny] = room[lp.x_slot[xi]]
    pv = np.asarray(d.pv_kw, dtype=float)
    forced = np.asarray(d.base_load_kw, dtype=float) - pv  # a building above the limit is not ours to fix
    hi[c["gi"] : c["gi"] + T] = np.maximum(site.import_limit_kw, forced)
    hi[c["ge"] : c["ge"] + T] = (
        site.export_limit_kw if lp.pv_curtailable else np.maximum(site.export_limit_kw, -forced)
    )
    cost[c["gi"] : c["gi"] + T] = dt * np.asarray(d.import_price_per_kwh, dtype=float)
    cost[c["ge"] : c["ge"] + T] = -dt * np.asarray(d.export_price_per_kwh, dtype=float) + _EPS_EXPORT
    hi[c["cu"] : c["cu"] + T] = pv if lp.pv_curtailable else 0.0
    if lp.has_battery:
        hi[c["bc"] : c["bc"] + T] = site.battery_max_charge_kw
        hi[c["bd"] : c["bd"] + T] = site.battery_max_discharge_kw
        cost[c["bd"] : c["bd"] + T] = tariff.battery_degradation_per_kwh * dt / site.battery_efficiency
        lo[c["soc"] : c["soc"] + T] = site.battery_soc_min_kwh
        hi[c["soc"] : c["soc"] + T] = site.battery_soc_max_kwh
        cost[c["soc"] + T - 1] = -d.terminal_battery_value_per_kwh
    if lp.has_peak:
        floor_kw = np.zeros(lp.P) if d.peak_floor_kw is None else np.asarray(d.peak_floor_kw, dtype=float)
        lo[c["pk"] : c["pk"] + lp.P] = floor_kw
        hi[c["pk"] : c["pk"] + lp.P] = INF if d.peak_cap_kw is None else np.maximum(d.peak_cap_kw, floor_kw)
        demand = tariff.demand_charge_per_kw if d.demand_charge_per_kw is None else d.demand_charge_per_kw
        cost[c["pk"] : c["pk"] + lp.P] = demand
    cost[c["miss"] : c["miss"] + lp.K] = (
        tariff.missing_energy_penalty_per_kwh
        if d.missing_penalty_per_kwh is None
        else d.missing_penalty_per_kwh
    )
    hi[c["miss"] : c["miss"] + lp.K] = np.maximum(np.asarray(d.need_kwh, dtype=float), 0.0)

    rlo = np.zeros(lp.n_rows)
    rhi = np.zeros(lp.n_rows)
    bal = np.asarray(d.base_load_kw, dtype=float) - pv
    rlo[lp.r_balance : lp.r_balance + T] = bal
    rhi[lp.r_balance : lp.r_balance + T] = bal
    if lp.n_limit_rows:
        lim = lp.limit_row_bound
        rlo[lp.r_limits : lp.r_limits + len(lim)] = -lim
        rhi[lp.r_limits : lp.r_limits + len(lim)] = lim
    if lp.has_peak:
        rlo[lp.r_peak : lp.r_peak + T] = -INF
        rhi[lp.r_peak : lp.r_peak + T] = 0.0
    need = np.maximum(np.asarray(d.need_kwh, dtype=float), 0.0)
    rlo[lp.r_need : lp.r_need + lp.K] = need
    # an EV may take more than it asked, up to its room (the simulator lets it): a charger held at its
    # minimum or on its grid can rarely hit the request exactly
    rhi[lp.r_need : lp.r_need + lp.K] = need if d.room_kwh is None else np.maximum(d.room_kwh, need)
    if lp.has_battery:
        rlo[lp.r_battery] = rhi[lp.r_battery] = d.battery_initial_kwh
    return lo, hi, cost, rlo, rhi
