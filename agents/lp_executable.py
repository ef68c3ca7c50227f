"""A schedule of the site LP that the simulator executes as it is (:func:`executable_plan`).

Where the exact model (:mod:`agents.lp_exact`) is too large to solve, the optimum plans with the
relaxation and makes the plan executable in three steps, each of which the simulator's own rules dictate:

* **Energy quanta.** A charger on a resolution grid delivers ``k * res * eff * dt`` kWh per step, so an EV
  that leaves within the scenario can get at most its request rounded down to that quantum; the rest is
  missed by every policy. The plan asks for the rounded request (:func:`quantised_need`) and the
  objective adds the penalty on the rest (``residue_cost``), which makes it a tighter bound too.
* **Minimum current.** Fix-and-resolve with every column's on/off state settled
  (:func:`agents.lp_repair.solve_min_current` with ``settle``): every column is off or at least the
  charger's minimum (or all a partly present EV can take that step).
* **Resolution grid.** Each slot's columns are rounded down to the grid and the lost grid points given back
  to the columns with the largest remainders, within what the projection lets the charger hold that step
  (:func:`round_to_grid`); the slot's total stays what the plan delivers.

Replayed as it is, such a plan costs its objective up to the rounding (a grid point per charger and step on
the peak); :class:`agents.optimum.PerfectForesightOptimum` measures both (``replayed_costs``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import NamedTuple

import highspy
import numpy as np

from agents.lp import LPData, LPError, LPSolution, SiteLP, _bounds_and_costs
from agents.lp_exact import exact_model
from agents.lp_grid import finishing_tails, held_kw, need_room_kwh, round_to_grid
from agents.lp_milp import run_milp
from agents.lp_repair import solve_min_current
from envs.core import FloatArray, IntArray


def quantised_need(lp: SiteLP, data: LPData) -> tuple[FloatArray, FloatArray]:
    """Each slot's need rounded down to the energy quantum of its charger's grid, or up where its room
    takes the next quantum (V2G slots, which may take more than their need, and slots without a grid keep
    theirs); and the energy every policy misses, kWh."""
    need, room = need_room_kwh(data)
    c = lp.slot_charger
    q = lp.site.resolution_kw[c] * lp.site.efficiency[c] * lp.dt_h
    on_grid = (q > 0) & ~lp.slot_v2g
    safe_q = np.where(on_grid, q, 1.0)
    floored = np.where(on_grid, np.floor(need / safe_q + 1e-6) * safe_q, need)
    floored = np.minimum(floored, need)
    # an EV with room above its request can take the next quantum and miss nothing
    ceiled = np.ceil(need / safe_q - 1e-6) * safe_q
    over = on_grid & (ceiled <= room + 1e-9) & (floored < need - 1e-12)
    out = np.where(over, np.maximum(ceiled, need), floored)
    return out, np.where(over, 0.0, need - floored)


def grid_relaxation(lp: SiteLP, data: LPData, departs: np.ndarray | None = None) -> tuple[float, FloatArray]:
    """A lower bound on every policy's cost, and the peak of each billing period in that relaxation, kW
    (P,). The bound: the relaxation with each slot asking only what its grid can deliver
    (:func:`quantised_need`, rounded down; the others ask their request) plus the penalty on the rest for
    the EVs that leave within the scenario (``departs``; default all), which no policy escapes. (Adding
    that penalty to the plain relaxation would count it twice where the relaxation leaves the slot short
    anyway.) The peak: what a plan more than :data:`agents.lp_peak.HOLD_FROM` above the bound is held to
    (:func:`best_executable_plan`'s ``peak_cap_kw``)."""
    need_q, residue = quantised_need(lp, data)
    need = np.where(residue > 0, need_q, np.maximum(np.asarray(data.need_kwh, dtype=float), 0.0))
    lp._highs = None
    sol = lp.solve(replace(data, need_kwh=need, room_kwh=_room(data, need)))
    lp._highs = None
    return sol.objective + _residue_cost(residue, departs, lp), np.asarray(sol.peak_kw, dtype=float)


def executable_plan(
    lp: SiteLP,
    data: LPData,
    rate_kw: FloatArray,
    passes: int = 4,
    departs: np.ndarray | None = None,
    node_limit: int = 200,
    up_share: float = 0.5,
    switch_on: bool = True,
) -> tuple[LPSolution, float]:
    """The settled, quantised, grid-rounded plan (see the module) and the penalty on the energy no policy
    can deliver (``departs``: slots whose EV leaves within the scenario, the only ones the simulator
    penalises; default all). ``rate_kw``: each slot's ``min(rated, EV max)`` before the grid; the
    projection holds a charger at most at that times the EV's presence that step, rounded down to the grid,
    and so does the plan. ``switch_on``: the EVs it leaves short finished (:func:`finish_plan`)."""
    u = _executable(lp, data, rate_kw, passes, departs, node_limit, up_share)
    return finish_plan(lp, u, departs, node_limit) if switch_on else (u.plan, u.residue_cost)


class Unfinished(NamedTuple):
    """A variant's plan (with the grid's residue) and what :func:`finish_plan` needs to finish the EVs it
    leaves short: the plan before the residue (priced as ``data``), its data, grid model and vector, and
    each slot's need before quantising (:func:`quantised_need`)."""

    plan: LPSolution
    residue_cost: float
    sol: LPSolution
    data: LPData
    model: GridModel
    v: FloatArray
    need_kwh: FloatArray


def finish_plan(
    lp: SiteLP, u: Unfinished, departs: np.ndarray | None, node_limit: int
) -> tuple[LPSolution, float]:
    """``u``'s plan with the EVs it leaves short raised and switched on (:func:`_finished`), where that is
    cheaper at the tariff's penalty (else ``u``'s plan); then the EVs still short served where that costs
    at most a hair more (:func:`agents.lp_serve.served`)."""
    if departs is None:
        return u.plan, u.residue_cost
    from agents.lp_serve import served  # it builds on this module's polish

    lp.last_v = u.v.copy()
    out = at_tariff(lp, u, _finished(lp, u.data, u.model, u.sol, node_limit, departs))
    if out.objective >= u.plan.objective - 1e-9:
        out, lp.last_v = u.plan, u.v.copy()
    return served(lp, u, out, departs, node_limit), u.residue_cost


def at_tariff(lp: SiteLP, u: Unfinished, sol: LPSolution) -> LPSolution:
    """``sol`` (a solve of ``u.data``) priced at the tariff's penalty, with the grid's residue."""
    if u.data.missing_penalty_per_kwh is not None:
        extra = np.asarray(u.data.missing_penalty_per_kwh) - lp.tariff.missing_energy_penalty_per_kwh
        sol = replace(sol, objective=sol.objective - float(extra @ sol.missing_kwh))
    residue = u.plan.missing_kwh - u.sol.missing_kwh
    return replace(sol, objective=sol.objective + u.residue_cost, missing_kwh=sol.missing_kwh + residue)


def _executable(
    lp: SiteLP,
    data: LPData,
    rate_kw: FloatArray,
    passes: int,
    departs: np.ndarray | None,
    node_limit: int,
    up_share: float,
) -> Unfinished:
    need_q, residue = quantised_need(lp, data)
    hi_kw, frac = held_kw(lp, data, rate_kw)
    qdata = replace(data, need_kwh=need_q, room_kwh=_room(data, need_q), present_fraction=frac)
    # strict: a plan whose minima do not fit the limits together is no plan (seen held to a peak cap:
    # columns left below their minimum, replayed 1 % dearer than its objective)
    sol = solve_min_current(lp, qdata, passes=passes, settle=True, up_share=up_share, strict=True)
    short_dis = _short_discharging(lp, lp.last_v, sol.missing_kwh)
    if short_dis.any():
        qdata = _no_discharge(lp, qdata, short_dis)
        sol = solve_min_current(lp, qdata, passes=passes, settle=True, up_share=up_share, strict=True)
    v = lp.last_v.copy()
    x = round_to_grid(lp, qdata, v, hi_kw)
    # the polish fails (LPError) where rounding cannot keep the plan within the limits and the V2G
    # energy bounds: the candidate is dropped, not replayed off its objective
    model = grid_model(lp, qdata)
    polished = _with_tails(lp, qdata, model, polish_on_grid(lp, model, v, x, node_limit), node_limit, departs)
    return _unfinished(lp, polished, polished, residue, departs, qdata, model, data)


REPAIRS: tuple[tuple[float, int], ...] = ((0.5, 4), (0.5, 10), (0.75, 4), (0.75, 10), (1.0, 4), (1.0, 10))
"""the fix-and-resolve variants tried, ``(up_share, passes)``: which columns go on at the minimum rather
than off decides the plan's peak, and no one rule wins on every site (seen: 0.5 on real weeks, 1.0 on a
generated depot with a high minimum and demand charge)"""


GOOD_ENOUGH = 5e-4
"""a plan within this share of the bound (:func:`grid_relaxation`) is kept without searching further: no
policy can beat it by more (a fifth of the 0.1 % the optimum is held to)"""


def best_executable_plan(
    lp: SiteLP,
    data: LPData,
    rate_kw: FloatArray,
    departs: np.ndarray | None = None,
    node_limit: int = 200,
    repairs: tuple[tuple[float, int], ...] = REPAIRS,
    neighbourhood_nodes: int = 500,
    bound: float | None = None,
    good_enough: float = GOOD_ENOUGH,
    peak_cap_kw: FloatArray | None = None,
) -> tuple[LPSolution, float]:
    """:func:`executable_plan` for each repair of ``repairs`` and :func:`neighbourhood_plan` after the
    first; the cheapest (its objective is what it costs executed, so no replay is needed to compare). The
    search stops once a plan is within ``good_enough`` of ``bound`` (:func:`grid_relaxation`). Then the
    EVs the cheapest leaves short are finished (:func:`finish_plan`, kept where cheaper): the search
    itself runs without it, so it stops where it did and the plan never costs more than it found. With
    ``peak_cap_kw`` (:func:`grid_relaxation`'s peak) a plan that a policy could beat by more than the
    optimum is held to, whose peak is above it, is searched again held to it (:mod:`agents.lp_peak`).
    Deterministic: the same variants in the same order, ties to the first, no clock."""
    best: Unfinished | None = None
    # (-1, 0), (-2, 0): the neighbourhood MILP, after the first repair (-2: serving the short EVs it
    # discharges rather than banning their discharge)
    tries: list[tuple[float, int]] = [*repairs[:1], (-1.0, 0), (-2.0, 0), *repairs[1:]]

    def good(objective: float) -> bool:  # within a hair of the relaxation: no other plan gains more
        return bound is not None and objective - bound <= good_enough * abs(bound)

    for u in variants(lp, data, rate_kw, departs, node_limit, neighbourhood_nodes, tries):
        if best is None or u.plan.objective < best.plan.objective - 1e-9:
            best = u
        if good(best.plan.objective):
            break
    if best is None:
        raise LPError("no executable plan")
    out = finish_plan(lp, best, departs, node_limit)
    if peak_cap_kw is None:
        return out
    from agents.lp_peak import held_to_peak  # it builds on this module's variants

    return held_to_peak(
        lp, data, rate_kw, out, peak_cap_kw, departs, node_limit, neighbourhood_nodes, tries, bound, good
    )


def variants(
    lp: SiteLP,
    data: LPData,
    rate_kw: FloatArray,
    departs: np.ndarray | None,
    node_limit: int,
    neighbourhood_nodes: int,
    tries: Sequence[tuple[float, int]],
) -> Iterator[Unfinished]:
    """The plan of each variant of ``tries`` that finds one, in order, each solved only when asked for (a
    search that has what it needs stops asking): ``(up_share, passes)`` the fix-and-resolve repair
    (:func:`executable_plan`), up_share -1 and -2 the neighbourhood MILP (-2 serving, with
    ``SERVE_NODES`` times the nodes; none without ``neighbourhood_nodes``)."""
    for up_share, passes in tries:
        if up_share < 0 and neighbourhood_nodes <= 0:
            continue
        lp._highs = None
        try:
            if up_share < 0:
                serve = up_share < -1.5
                nodes = neighbourhood_nodes * (SERVE_NODES if serve else 1)
                u = _neighbourhood_plan(lp, data, rate_kw, departs, nodes, serve)
            else:
                u = _executable(lp, data, rate_kw, passes, departs, node_limit, up_share)
        except LPError:
            continue
        yield u


def neighbourhood_plan(
    lp: SiteLP,
    data: LPData,
    rate_kw: FloatArray,
    departs: np.ndarray | None,
    node_limit: int,
    serve: bool = False,
    switch_on: bool = True,
) -> tuple[LPSolution, float]:
    """The exact model around the (quantised) relaxation: a column the relaxation leaves off stays off, one
    it puts at or above the minimum stays on, only the ones in between choose (off, or on from the
    minimum), all on the grid; HiGHS with ``node_limit`` nodes (deterministic). Few columns choose, so it
    solves where the whole exact model does not. An EV the plan leaves short may not discharge (the
    projection's rule): with ``serve`` the plan first tries to serve such EVs (:func:`_must_serve`), then
    bans their discharge. ``switch_on``: as in :func:`executable_plan`."""
    u = _neighbourhood_plan(lp, data, rate_kw, departs, node_limit, serve)
    return finish_plan(lp, u, departs, node_limit) if switch_on else (u.plan, u.residue_cost)


def _neighbourhood_plan(
    lp: SiteLP, data: LPData, rate_kw: FloatArray, departs: np.ndarray | None, node_limit: int, serve: bool
) -> Unfinished:
    need_q, residue = quantised_need(lp, data)
    _, frac = held_kw(lp, data, rate_kw)
    qdata = replace(data, need_kwh=need_q, room_kwh=_room(data, need_q), present_fraction=frac)
    pen = lp.tariff.missing_energy_penalty_per_kwh
    served = np.zeros(lp.K, dtype=bool)
    for _ in range(4):
        model = grid_model(lp, qdata)
        priced = _with_tails(
            lp, qdata, model, _neighbourhood(lp, qdata, model, node_limit), node_limit, departs
        )
        sol = priced
        if qdata.missing_penalty_per_kwh is not None:  # the objective at the tariff's penalty
            extra = np.asarray(qdata.missing_penalty_per_kwh) - pen
            sol = replace(sol, objective=sol.objective - float(extra @ sol.missing_kwh))
        short_dis = _short_discharging(lp, lp.last_v, sol.missing_kwh)
        if not short_dis.any():
            return _unfinished(lp, sol, priced, residue, departs, qdata, model, data)
        if serve and not served.any():
            qdata = _must_serve(lp, qdata, short_dis)
            served = short_dis  # once: a slot it still leaves short may not discharge
        else:
            qdata = _no_discharge(lp, qdata, short_dis)
    raise LPError("the neighbourhood plan discharges an EV it leaves short")


class GridModel(NamedTuple):
    """The site model of one :class:`LPData` on the chargers' grid: the bounds and costs of
    :func:`agents.lp._bounds_and_costs` as :func:`agents.lp_exact.exact_model` leaves them, its column
    scaling and integrality (built once per data, :func:`grid_model`)."""

    lo: FloatArray
    hi: FloatArray
    cost: FloatArray
    row_lo: FloatArray
    row_hi: FloatArray
    scale: FloatArray
    kinds: IntArray


def grid_model(lp: SiteLP, data: LPData) -> GridModel:
    """:class:`GridModel` of ``data``."""
    lo, hi, cost, rlo, rhi = _bounds_and_costs(lp, data)
    scale, kinds = exact_model(lp, lo, hi)
    return GridModel(lo, hi, cost, rlo, rhi, scale, kinds)


def _finished(
    lp: SiteLP, data: LPData, model: GridModel, sol: LPSolution, node_limit: int, departs: np.ndarray
) -> LPSolution:
    """``sol`` (the last solve, on the grid; ``model``: :func:`grid_model` of ``data``) with the EVs it
    leaves short (after their tails, :func:`_with_tails`) finished where that pays: their columns raised
    (:func:`_raised`), then one of their off columns switched on (:func:`_switched_on`), each kept where it
    is cheaper (and discharges no EV it leaves short). ``lp.last_v`` is the returned schedule's."""
    xs = slice(lp.col["x"], lp.col["x"] + lp.sizes["x"])
    for step in (_raised, _switched_on):
        v = lp.last_v.copy()
        new = step(lp, data, model, sol, node_limit, departs)
        if (
            new is None
            or new.objective > sol.objective - 1e-9
            or _short_discharging(lp, lp.last_v, new.missing_kwh).any()  # not what the projection runs
        ):
            lp.last_v, lp.last_x = v, v[xs].copy()
        else:
            sol = new
    return sol


def _raised(
    lp: SiteLP, data: LPData, model: GridModel, sol: LPSolution, node_limit: int, departs: np.ndarray
) -> LPSolution | None:
    """The grid polish of ``sol`` again with the charging columns of the EVs it leaves short free to go up
    to their held rate (not just to the grid point above the plan): a V2G EV, whose need is not quantised,
    can end a sliver short with every column on a grid point (seen on jpl-2021-06-07-v2g: 0.0006 kWh the
    rule-based DLM delivered). ``None`` where none is short or it fails."""
    short = (np.asarray(sol.missing_kwh) > 1e-6) & np.asarray(departs, dtype=bool)
    if not lp.sizes["x"] or not short.any():
        return None
    v = lp.last_v.copy()
    try:
        return polish_on_grid(
            lp, model, v, v[lp.col["x"] : lp.col["x"] + lp.sizes["x"]], node_limit, up=short
        )
    except LPError:
        return None


def _with_tails(
    lp: SiteLP, data: LPData, model: GridModel, sol: LPSolution, node_limit: int, departs: np.ndarray | None
) -> LPSolution:
    """``sol`` with the EVs it leaves short finished where that pays: the grid polish again with every
    column where ``sol`` has it and :func:`finishing_tails` to choose (a small MILP: only the tails are
    integer choices). ``sol`` where there is no tail, it fails or ``departs`` is None."""
    if departs is None:
        return sol
    v = lp.last_v.copy()
    scale, hi = model.scale, model.hi
    xs = slice(lp.col["x"], lp.col["x"] + lp.sizes["x"])
    tails = finishing_tails(lp, data, np.round(v[xs] / scale[xs]), hi[xs] / scale[xs], departs)
    if not len(tails[0]):
        return sol
    try:
        return polish_on_grid(lp, model, v, v[xs], node_limit, tails)
    except LPError:
        lp.last_v = v
        return sol


def _switched_on(
    lp: SiteLP, data: LPData, model: GridModel, sol: LPSolution, node_limit: int, departs: np.ndarray
) -> LPSolution | None:
    """The plan again with one off column of each EV ``sol`` leaves short switched on (from the minimum),
    every other column's on/off state as in ``sol``: settled LP, grid rounding, polish and tails as in
    :func:`executable_plan`. The polish keeps on/off states and moves a column only to a grid point next to
    it, and tails come only after an EV's last charging step, so an EV at its rate in every step but an off
    one stays short where that one on at the minimum overshoots its need unless the others make way (seen
    on jpl-2021-08-02: 0.06 kWh the rule-based DLM delivered). The column: the one at the step of least
    planned import (then the earliest). ``None`` where none is short or has an off column, or it fails."""
    xs = slice(lp.col["x"], lp.col["x"] + lp.sizes["x"])
    short = (np.asarray(sol.missing_kwh) > 1e-6) & np.asarray(departs, dtype=bool)
    if not lp.sizes["x"] or not short.any():
        return None
    scale = model.scale[xs]
    units, lo_u, hi_u = lp.last_v[xs] / scale, model.lo[xs] / scale, model.hi[xs] / scale
    on = units > 1e-6
    tail = on & (units < lo_u - 1e-6)  # below the minimum: finished again by the tails afterwards
    cand = np.flatnonzero(short[lp.x_slot] & ~on & (hi_u > 1e-6) & (hi_u >= lo_u - 1e-6))
    if not len(cand):
        return None
    order = cand[np.lexsort((lp.x_step[cand], sol.site_import_kw[lp.x_step[cand]], lp.x_slot[cand]))]
    first = np.concatenate([[True], lp.x_slot[order][1:] != lp.x_slot[order][:-1]])
    x_on = on & ~tail
    x_on[order[first]] = True
    lp._highs = None
    try:
        lp.solve(data, x_off=~x_on, x_on=x_on)
        w = lp.last_v.copy()
        polished = polish_on_grid(lp, model, w, round_to_grid(lp, data, w, model.hi[xs]), node_limit)
    except LPError:
        return None
    finally:
        lp._highs = None
    return _with_tails(lp, data, model, polished, node_limit, departs)


def _must_serve(lp: SiteLP, data: LPData, slots: np.ndarray) -> LPData:
    """``data`` with ``slots`` served where they can be (their missing energy priced at
    ``SERVE_PENALTY`` times the tariff's): the other way to keep a plan from discharging an EV it leaves
    short, often far cheaper than no discharge at all (an EV a kWh short that sells all week)."""
    pen = lp.tariff.missing_energy_penalty_per_kwh
    cur = np.full(lp.K, pen) if data.missing_penalty_per_kwh is None else data.missing_penalty_per_kwh.copy()
    cur[slots] = max(SERVE_PENALTY * pen, SERVE_PENALTY)
    lp._highs = None
    return replace(data, missing_penalty_per_kwh=cur)


SERVE_PENALTY = 100.0
SERVE_NODES = 6
"""the serving variant searches ``SERVE_NODES`` times the neighbourhood's nodes (seen: a generated V2G
workplace 364.40 EUR with 500 nodes and one EV a sliver short, 355.36 with 3,000 and all served)"""


def _neighbourhood(lp: SiteLP, qdata: LPData, model: GridModel, node_limit: int) -> LPSolution:
    lp.solve(qdata)
    v = lp.last_v.copy()
    lo, hi, cost, rlo, rhi, scale, kinds = model
    xs = slice(lp.col["x"], lp.col["x"] + lp.sizes["x"])
    lo_u, hi_u = lo / scale, hi / scale
    units = v / scale
    x_on = np.zeros(lp.n_cols, dtype=bool)
    x_on[xs] = units[xs] >= lo_u[xs] - 1e-6
    x_off = np.zeros(lp.n_cols, dtype=bool)
    x_off[xs] = v[xs] <= 1e-6
    if lp.sizes["y"]:
        ys = lp.col["y"] + np.arange(lp.sizes["y"])
        x_off[ys] = v[lp.col["x"] + lp.y_of_x] > 1e-6  # no discharge where the relaxation charges
    new_hi = np.where(x_off, 0.0, hi_u)
    new_lo = np.where(x_off, 0.0, lo_u)
    # forced on: an integer (or continuous) column from its floor, no longer semi
    kinds = np.where(x_on & (kinds >= 2), kinds - 2, kinds)
    kinds = np.where(x_off, int(highspy.HighsVarType.kContinuous), kinds)
    # the whole model (its B&B over hundreds of nodes follows HiGHS's own presolve: with the fixed
    # columns taken out beforehand, a generated V2G workplace's serving variant ended 2.5 % dearer)
    return run_milp(lp, scale, kinds, new_lo, new_hi, cost, rlo, rhi, None, node_limit, 1e-4, fixed_out=False)


def _no_discharge(lp: SiteLP, data: LPData, slots: np.ndarray) -> LPData:
    """``data`` with no discharge for ``slots`` (the projection lets an EV discharge only while it can
    still finish: an EV the plan leaves short, where the penalty is below the price it sells at, may not
    discharge at all)."""
    cap = np.full(lp.sizes["y"], np.inf) if data.discharge_cap_kw is None else data.discharge_cap_kw.copy()
    cap[slots[lp.x_slot[lp.y_of_x]]] = 0.0
    lp._highs = None
    return replace(data, discharge_cap_kw=cap)


def _short_discharging(lp: SiteLP, v: FloatArray, missing_kwh: FloatArray) -> np.ndarray:
    """The V2G slots the solution ``v`` leaves short that it also discharges, (K,) bool."""
    out = np.zeros(lp.K, dtype=bool)
    if not lp.sizes["y"]:
        return out
    y = v[lp.col["y"] : lp.col["y"] + lp.sizes["y"]]
    dis = np.bincount(lp.x_slot[lp.y_of_x], weights=y, minlength=lp.K) > 1e-6
    return dis & (np.asarray(missing_kwh) > 1e-6)


def _residue_cost(residue: FloatArray, departs: np.ndarray | None, lp: SiteLP) -> float:
    penalised = residue if departs is None else np.where(departs, residue, 0.0)
    return float(penalised.sum()) * lp.tariff.missing_energy_penalty_per_kwh


def _with_residue(sol: LPSolution, residue: FloatArray, departs: np.ndarray | None, lp: SiteLP) -> LPSolution:
    cost = _residue_cost(residue, departs, lp)
    return replace(sol, objective=sol.objective + cost, missing_kwh=sol.missing_kwh + residue)


def _unfinished(
    lp: SiteLP,
    sol: LPSolution,
    priced: LPSolution,
    residue: FloatArray,
    departs: np.ndarray | None,
    qdata: LPData,
    model: GridModel,
    data: LPData,
) -> Unfinished:
    """``sol`` with the grid's ``residue`` and what :func:`finish_plan` needs (the plan as ``priced`` at
    ``qdata``'s penalties, the solver's vector, the slots' need before quantising, from ``data``)."""
    cost, need = _residue_cost(residue, departs, lp), np.asarray(data.need_kwh, dtype=float)
    return Unfinished(
        _with_residue(sol, residue, departs, lp), cost, priced, qdata, model, lp.last_v.copy(), need
    )


POLISH_GAP = 1e-4
"""the grid polish stops once proven within 0.01 % of its own bound (a tenth of the 0.1 % the optimum is
held to): on the generated 50 x 7 d depot at 1e-5 it spent its 200 nodes (3.5 s of 3.9 s) to gain 0.001 %"""


def polish_on_grid(
    lp: SiteLP,
    model: GridModel,
    v: FloatArray,
    x_start: FloatArray,
    node_limit: int,
    tails: tuple[np.ndarray, FloatArray] | None = None,
    up: np.ndarray | None = None,
    spread: int = 0,
) -> LPSolution:
    """The settled plan ``v`` on the grid at least cost: a small MILP in which every charging (and
    discharge) column keeps its on/off state and lies between its grid points below and above the plan
    (on at least the charger's minimum), the rest of the site (battery, peak, missed energy) free.
    ``x_start`` (the rounded plan) is its first schedule; ``node_limit`` bounds the search (deterministic).
    Its objective is what the schedule costs when executed.

    ``tails`` (:func:`finishing_tails` of the rounded plan: charging columns and grid points) finish
    the EVs it leaves short: each tail column is off or exactly its grid points (below the minimum if need
    be, as the projection allows an EV that takes less than the minimum), its slot's other columns as
    rounded. ``up``: slots whose columns may rise to their held rate. ``spread``: every charging column
    on at its minimum or more (in the steps of ``up``'s columns where given) may also move this many grid
    points beyond its band (not below the minimum). ``model``:
    :func:`grid_model` of the plan's data."""
    lo, hi, cost, rlo, rhi, scale, kinds = model
    xs = slice(lp.col["x"], lp.col["x"] + lp.sizes["x"])
    units = v / scale
    lo_u, hi_u = lo / scale, hi / scale
    on = np.zeros(lp.n_cols, dtype=bool)
    on[xs] = v[xs] > 1e-6
    band_lo = np.maximum(np.floor(units + 1e-6), np.where(on, lo_u, 0.0))
    band_hi = np.minimum(np.ceil(units - 1e-6), hi_u)
    if spread:  # the columns on at their minimum or more, tails below it kept, in the steps of ``up``'s stays
        wide = on[xs] & (units[xs] >= lo_u[xs] - 1e-6)
        if up is not None:
            steps = np.zeros(lp.T, dtype=bool)
            steps[lp.x_step[up[lp.x_slot]]] = True
            wide &= steps[lp.x_step]
        band_lo[xs] = np.where(wide, np.maximum(band_lo[xs] - spread, lo_u[xs]), band_lo[xs])
        band_hi[xs] = np.where(wide, np.minimum(band_hi[xs] + spread, hi_u[xs]), band_hi[xs])
    if up is not None:  # the columns of these slots (K,) up to their held rate, tails below the minimum kept
        band_hi[xs] = np.where(up[lp.x_slot] & (units[xs] >= lo_u[xs] - 1e-6), hi_u[xs], band_hi[xs])
    band_lo = np.minimum(band_lo, band_hi)
    integer = kinds % 2 == 1
    fixed_x = np.zeros(lp.n_cols, dtype=bool)
    fixed_x[xs] = ~integer[xs]  # chargers without a grid: as planned
    new_lo = np.where(integer, band_lo, np.where(fixed_x, units, lo_u))
    new_hi = np.where(integer, band_hi, np.where(fixed_x, units, hi_u))
    off = np.zeros(lp.n_cols, dtype=bool)
    off[xs] = ~on[xs]
    if lp.sizes["y"]:
        # a charger charges or discharges in a step, not both (it executes the net): no discharge where on
        ys = lp.col["y"] + np.arange(lp.sizes["y"])
        off[ys] = on[lp.col["x"] + lp.y_of_x] | (v[ys] <= 1e-6)
    new_lo = np.where(off, 0.0, new_lo)
    new_hi = np.where(off, 0.0, new_hi)
    kinds = np.where(integer, int(highspy.HighsVarType.kInteger), int(highspy.HighsVarType.kContinuous))
    start = np.clip(units, new_lo, new_hi)
    start[xs] = np.clip(x_start / scale[xs], new_lo[xs], new_hi[xs])
    if tails is not None:
        col, tail_units = tails
        if len(col):
            # the slot's other columns as rounded (what it has taken decides what fills it), the tail
            # column off or exactly the rest (semi-integer: 0 or ``tail_units``), off at the start
            fixed = np.isin(lp.x_slot, lp.x_slot[col])
            x_lo, x_hi = new_lo[xs], new_hi[xs]
            x_lo[fixed] = x_hi[fixed] = start[xs][fixed]
            x_lo[col] = x_hi[col] = tail_units
            start[lp.col["x"] + col] = 0.0
            kinds[lp.col["x"] + col] = int(highspy.HighsVarType.kSemiInteger)
    return run_milp(lp, scale, kinds, new_lo, new_hi, cost, rlo, rhi, start, node_limit, POLISH_GAP)


def _room(data: LPData, need: FloatArray) -> FloatArray | None:
    if data.room_kwh is None:
        return None
    room = np.asarray(data.room_kwh, dtype=float)
    # a slot that may take no more than it asked: its room is its (quantised) need
    return np.where(room <= np.asarray(data.need_kwh, dtype=float) + 1e-12, need, room)
