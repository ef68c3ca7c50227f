"""One HiGHS model of a :class:`~agents.lp.SiteLP` kept warm between solves (:class:`WarmModel`).

A receding-horizon MPC re-solves the same structure every step with new bounds and costs, and repairs the
minimum current by re-solves that move a few bounds. HiGHS's cost of a re-solve has a part that grows with
the model (it checks the whole matrix, rebuilds its row-wise copy and its random vectors, checks the KKT
conditions of every column) and a part that grows with the entries changed, on top of the iterations. So:

* only the bounds and costs that changed since the last solve are sent;
* with ``compact``, the charging columns fixed at zero (no EV plugged in then; a ghost slot the window
  does not use) are left out of the HiGHS model: on a 50-charger workplace day at 24 h they are some nine
  in ten of the model's columns. A column that leaves is nonbasic (a basic one stays, so the basis stays
  valid and the re-solve warm); a column that is no longer fixed at zero is added back, nonbasic at its
  lower bound. Left out, a column is at zero, as it would be in the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np
import scipy.sparse as sp

from envs.core import BoolArray, FloatArray, IntArray

Arrays = tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]
"""``(lo, hi, cost, row_lo, row_hi)`` over the whole structure"""


@dataclass(eq=False)
class WarmModel:
    """The HiGHS model ``h`` of a structure: ``live`` are the structure's columns in the model, in its order
    (None: all of them, in order); ``passed`` are the bounds and costs the model holds."""

    h: highspy.Highs
    live: IntArray | None
    passed: Arrays

    def update(self, matrix: sp.csc_matrix, new: Arrays, leave_out: BoolArray | None, drop: bool) -> None:
        """Bring the model to the bounds and costs ``new``. ``leave_out`` (compact models): the columns that
        may be left out; with ``drop`` those of them that are in the model and nonbasic leave it (else only
        the columns needed are added: a repair's columns switched off stay for the next plan)."""
        hx: Any = self.h  # the stubs lack some of the methods Highs has
        lo, hi, cost, rlo, rhi = new
        if self.live is not None and leave_out is not None:
            live = self.live
            if drop:
                basis = hx.getBasis()
                basic = np.zeros(len(live), dtype=bool)
                if basis.valid:
                    status = np.fromiter((int(s) for s in basis.col_status), dtype=np.int64, count=len(live))
                    basic = status == int(highspy.HighsBasisStatus.kBasic)
                gone = leave_out[live] & ~basic
                if gone.any():
                    idx = np.flatnonzero(gone).astype(np.int32)
                    hx.deleteCols(len(idx), idx)
                    live = live[~gone]
            inside = np.zeros(len(lo), dtype=bool)
            inside[live] = True
            add = np.flatnonzero(~leave_out & ~inside)
            if len(add):
                sub = matrix[:, add]
                hx.addCols(
                    len(add),
                    cost[add],
                    lo[add],
                    hi[add],
                    sub.nnz,
                    sub.indptr[:-1].astype(np.int32),
                    sub.indices.astype(np.int32),
                    np.asarray(sub.data, dtype=float),
                )
                live = np.concatenate([live, add])
            self.live = live
        cols = slice(None) if self.live is None else self.live
        lo0, hi0, cost0, rlo0, rhi0 = self.passed
        c = np.flatnonzero(cost[cols] != cost0[cols]).astype(np.int32)
        if len(c):
            hx.changeColsCost(len(c), c, cost[cols][c])
        b = np.flatnonzero((lo[cols] != lo0[cols]) | (hi[cols] != hi0[cols])).astype(np.int32)
        if len(b):
            hx.changeColsBounds(len(b), b, lo[cols][b], hi[cols][b])
        r = np.flatnonzero((rlo != rlo0) | (rhi != rhi0)).astype(np.int32)
        if len(r):
            hx.changeRowsBounds(len(r), r, rlo[r], rhi[r])
        self.passed = new

    def values(self, n_cols: int) -> FloatArray:
        """The solved value of every column of the structure (those left out at zero)."""
        x = np.asarray(self.h.getSolution().col_value, dtype=float)
        if self.live is None:
            return x
        v = np.zeros(n_cols)
        v[self.live] = x
        return v


def bounds_infeasible(
    pos: sp.csr_matrix, neg: sp.csr_matrix, lo: FloatArray, hi: FloatArray, rlo: FloatArray, rhi: FloatArray
) -> bool:
    """Whether some row of the matrix ``pos + neg`` (its positive and negative entries) cannot meet its
    bounds for any column values within theirs: the least activity the column bounds allow is above its
    upper bound (or the most below its lower one)."""
    a, b = np.minimum(lo, hi), np.maximum(lo, hi)
    a_inf, b_inf = np.isinf(a), np.isinf(b)  # a row with an infinite term is not checked on that side
    a, b = np.where(a_inf, 0.0, a), np.where(b_inf, 0.0, b)
    least = np.where((pos @ a_inf) - (neg @ b_inf) > 0, -np.inf, pos @ a + neg @ b)
    most = np.where((pos @ b_inf) - (neg @ a_inf) > 0, np.inf, pos @ b + neg @ a)
    tol = 1e-6 * np.maximum(1.0, np.minimum(np.abs(rlo), np.abs(rhi)))
    with np.errstate(invalid="ignore"):  # inf - inf on a free row: no
        return bool(np.any((least - rhi > tol) | (rlo - most > tol)))
