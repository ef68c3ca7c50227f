"""The small MILPs of the executable plan on the chargers' grid (:func:`run_milp`).

The grid polish and its passes (:mod:`agents.lp_executable`, :mod:`agents.lp_serve`) fix most of the site
model's columns: every charging column that is off, or already on a grid point its band does not widen,
sits at one value. HiGHS's presolve takes such columns out itself, but it does so on the whole model
every time (at 1,000 chargers x 1 day some 31,000 columns and 355,000 entries, to keep 50-7,000 columns):
the model passed is the site model with those columns already out, their contribution moved into the row
bounds (:func:`_fixed_out`). The schedule returned is over every column of the site model.
"""

from __future__ import annotations

import time
from dataclasses import replace

import highspy
import numpy as np
import scipy.sparse as sp

from agents.lp import LPError, LPSolution, SiteLP, _highs_lp, _new_highs, _solution
from agents.lp_exact import on_grid
from envs.core import BoolArray, FloatArray

_SEMI = 2
"""``kinds`` from this value on are semi-continuous or semi-integer (off, or within the bounds)"""


def run_milp(
    lp: SiteLP,
    scale: FloatArray,
    kinds: np.ndarray,
    lo_u: FloatArray,
    hi_u: FloatArray,
    cost: FloatArray,
    rlo: FloatArray,
    rhi: FloatArray,
    start_u: FloatArray | None,
    node_limit: int,
    gap: float,
    fixed_out: bool = True,
) -> LPSolution:
    """Solve the scaled site model with integrality ``kinds`` in HiGHS within ``node_limit`` nodes (from the
    integer columns of ``start_u`` where given); the schedule, kW. ``lp.last_v`` / ``lp.last_x`` are its.
    ``fixed_out``: the columns with one value left out of the model passed (:func:`_fixed_out`)."""
    kinds = np.asarray(kinds)
    fixed = _fixed_out(kinds, lo_u, hi_u) if fixed_out else np.zeros(len(kinds), dtype=bool)
    free = np.flatnonzero(~fixed)
    value = np.where(fixed, lo_u, 0.0)
    scaled = lp.matrix @ sp.diags(scale)
    # the fixed columns' activity moves into the row bounds (a row left without a column stays: HiGHS
    # drops it, or finds the model infeasible where its bounds cannot hold, as with the columns in)
    shift = scaled @ value
    matrix = sp.csc_matrix(scaled[:, free])
    h = _new_highs()
    h.setOptionValue("threads", 1)
    h.setOptionValue("mip_rel_gap", float(gap))
    h.setOptionValue("mip_max_nodes", int(node_limit))
    model = _highs_lp(matrix, (cost * scale)[free], lo_u[free], hi_u[free], rlo - shift, rhi - shift)
    types = list(highspy.HighsVarType.__members__.values())
    model.integrality_ = [types[k] for k in kinds[free].tolist()]
    h.passModel(model)
    if start_u is not None:
        given = np.flatnonzero(kinds[free] % 2 == 1)
        h.setSolution(len(given), given.astype(np.int32), np.round(start_u[free][given]))
    t0 = time.perf_counter()
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    if status != highspy.HighsModelStatus.kOptimal and info.primal_solution_status != 2:
        raise LPError(f"site MILP not solved: {h.modelStatusToString(status)}")
    value[free] = np.asarray(h.getSolution().col_value)
    col = on_grid(value, kinds) * scale
    lp._highs = None
    lp.last_v = col
    lp.last_x = col[lp.col["x"] : lp.col["x"] + lp.sizes["x"]].copy()
    return replace(_solution(lp, col, cost, time.perf_counter() - t0), mip_gap=float(info.mip_gap))


def _fixed_out(kinds: np.ndarray, lo_u: FloatArray, hi_u: FloatArray) -> BoolArray:
    """The columns with one value: equal bounds, not semi (a semi column is also off), and an integer
    column's value integral (else it stays in, for HiGHS to find the model infeasible)."""
    one = (lo_u == hi_u) & (kinds < _SEMI)
    return one & ((kinds % 2 == 0) | (np.round(lo_u) == lo_u))
