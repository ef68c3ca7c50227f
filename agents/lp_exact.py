"""The site LP made exact: the simulator's own physics as a MILP in HiGHS.

:func:`exact_model` turns the charging and discharge columns of a :class:`agents.lp.SiteLP` into what the
simulator executes (off or at least the charger's minimum, on its resolution grid); :func:`solve_exact`
solves that MILP from the relaxation's rounded schedule. :meth:`SiteLP.solve` calls it with ``exact=True``.
"""

from __future__ import annotations

import time
from dataclasses import replace

import highspy
import numpy as np
import scipy.sparse as sp

from agents.lp import LPData, LPError, LPSolution, SiteLP, _highs_lp, _new_highs, _solution
from envs.core import FloatArray, IntArray
from envs.physics import GRID_EPS, ceil_to_grid


def solve_exact(
    lp: SiteLP,
    data: LPData,
    lo: FloatArray,
    hi: FloatArray,
    cost: FloatArray,
    rlo: FloatArray,
    rhi: FloatArray,
    time_limit_s: float | None,
    mip_rel_gap: float,
    node_limit: int | None = None,
) -> LPSolution:
    """The MILP of :func:`exact_model`, solved cold with HiGHS (:meth:`SiteLP.solve` with ``exact=True``)."""
    scale, kinds = exact_model(lp, lo, hi)
    matrix = lp.matrix @ sp.diags(scale)
    h = _new_highs()
    h.setOptionValue("threads", 1)
    h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
    if time_limit_s is not None:
        h.setOptionValue("time_limit", float(time_limit_s))
    if node_limit is not None:  # a work limit that, unlike wall time, gives the same answer on any machine
        h.setOptionValue("mip_max_nodes", int(node_limit))
    model = _highs_lp(sp.csc_matrix(matrix), cost * scale, lo / scale, hi / scale, rlo, rhi)
    types = list(highspy.HighsVarType.__members__.values())
    model.integrality_ = [types[k] for k in kinds.tolist()]
    t0 = time.perf_counter()
    # a start: the relaxation's schedule with each charger rounded to off or its minimum and down to the
    # grid (HiGHS fixes the integer columns and solves the rest, the missing-energy slack keeps it
    # feasible), so a time limit still leaves a schedule no worse than the relaxation's repair
    relaxed = lp.solve(data)
    h.passModel(model)
    start = np.zeros(lp.n_cols)
    xs = slice(lp.col["x"], lp.col["x"] + lp.sizes["x"])
    xk = lp.last_x / scale[xs]
    lo_x, hi_x = lo[xs] / scale[xs], hi[xs] / scale[xs]
    xk = np.where(xk < 0.5 * lo_x, 0.0, np.clip(xk, lo_x, hi_x))
    start[xs] = np.where(kinds[xs] % 2 == 1, np.floor(xk + 1e-9), xk)
    sol_start = highspy.HighsSolution()
    sol_start.col_value = start.tolist()
    h.setSolution(sol_start)
    h.run()
    del relaxed
    status = h.getModelStatus()
    info = h.getInfo()
    solve_s = time.perf_counter() - t0
    if status != highspy.HighsModelStatus.kOptimal and not (
        status in (highspy.HighsModelStatus.kTimeLimit, highspy.HighsModelStatus.kSolutionLimit)
        and info.primal_solution_status == 2
    ):
        raise LPError(f"exact site model not solved: {h.modelStatusToString(status)}")
    x = on_grid(np.asarray(h.getSolution().col_value), kinds) * scale
    lp._highs = None  # a MILP model is not a basis to warm-start the LP from
    lp.last_x = x[lp.col["x"] : lp.col["x"] + lp.sizes["x"]].copy()
    sol = _solution(lp, x, cost, solve_s)
    # proven optimal (within mip_rel_gap): HiGHS's own gap can read inf where the objective is ~0
    gap = (
        min(float(info.mip_gap), mip_rel_gap) if status == highspy.HighsModelStatus.kOptimal else info.mip_gap
    )
    return replace(sol, mip_gap=float(gap), bound=float(info.mip_dual_bound))


def on_grid(value_u: FloatArray, kinds: np.ndarray) -> FloatArray:
    """A MILP's column values (scaled: grid points) with its integer and semi-integer columns at the nearest
    integer. HiGHS holds integrality to a tolerance (1e-6): a column of 107 grid points can come back as
    106.99999999, which the projection floors to 106, one grid point less than planned (seen: the generated
    workplace-10c-2d-s6 plan executed 0.07 kW short on a charger in two steps, and an EV left 0.013 kWh
    short that every other policy served)."""
    value = np.asarray(value_u, dtype=float)
    return np.where(np.asarray(kinds) % 2 == 1, np.round(value), value)


def exact_model(lp: SiteLP, lo: FloatArray, hi: FloatArray) -> tuple[FloatArray, IntArray]:
    """The column scaling and integrality that make the site LP the simulator's own physics (in place on
    ``lo``, ``hi``; returns ``(scale, integrality)``).

    * Charging columns: off or at least the charger's minimum (rounded up to its grid, as the projection
      does; the EV's own rate where that is lower), on the resolution grid: the column counts grid points
      (``scale = resolution``, semi-integer) or, where a charger has no grid (W-rated), kW (semi-continuous).
    * Discharge columns (V2G): on the grid (integer grid points), no minimum (the projection has none).
    * (In every solve, :func:`_bounds_and_costs`: an EV may take more than it asked, up to its room; on a
      grid the exact request is often not reachable.)
    """
    nx, ny = lp.sizes["x"], lp.sizes["y"]
    scale = np.ones(lp.n_cols)
    kinds = np.zeros(lp.n_cols, dtype=np.int64)  # kContinuous
    xs = slice(lp.col["x"], lp.col["x"] + nx)
    res = lp.site.resolution_kw[lp.x_charger] if nx else np.zeros(0)
    gridded = res > 0
    on_min = np.minimum(ceil_to_grid(lp.site.min_kw[lp.x_charger], res), hi[xs]) if nx else np.zeros(0)
    on_min = np.where(lo[xs] > 0, np.maximum(lo[xs], on_min), on_min)  # a forced-on column keeps its floor
    scale[xs] = np.where(gridded, res, 1.0)
    # bounds on the grid: the rate is on it already (floored); round away float noise
    top = np.where(gridded, np.floor(hi[xs] / np.where(gridded, res, 1.0) + GRID_EPS) * res, hi[xs])
    hi[xs] = top
    semi = on_min > 1e-9
    lo[xs] = np.where(semi, on_min, 0.0)
    kinds[xs] = np.where(
        gridded,
        np.where(semi, int(highspy.HighsVarType.kSemiInteger), int(highspy.HighsVarType.kInteger)),
        np.where(semi, int(highspy.HighsVarType.kSemiContinuous), int(highspy.HighsVarType.kContinuous)),
    )
    if ny:
        ys = slice(lp.col["y"], lp.col["y"] + ny)
        yres = res[lp.y_of_x]
        yg = yres > 0
        scale[ys] = np.where(yg, yres, 1.0)
        hi[ys] = np.where(yg, np.floor(hi[ys] / np.where(yg, yres, 1.0) + GRID_EPS) * yres, hi[ys])
        kinds[ys] = np.where(yg, int(highspy.HighsVarType.kInteger), int(highspy.HighsVarType.kContinuous))
    return scale, kinds
