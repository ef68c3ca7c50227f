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
  lower bound. Left out, a column is at zero, as it would be in the model. The rows left with no entry
  (the limit rows of the steps where no charger under the node has an EV) leave with them where their
  slack is basic, and come back, basic, before a column with an entry in them.
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
    """The HiGHS model ``h`` of a structure: ``live`` are the structure's columns in the model, in its order,
    and ``rows`` its rows (None: all of them, in order); ``passed`` are the bounds and costs it holds. A
    compact model holds every row with an entry in a column it holds (the others are empty)."""

    h: highspy.Highs
    live: IntArray | None
    rows: IntArray | None
    passed: Arrays

    @classmethod
    def load(
        cls, h: highspy.Highs, matrix: sp.csc_matrix, new: Arrays, leave_out: BoolArray | None
    ) -> WarmModel:
        """Pass the structure's model with the bounds and costs ``new`` to ``h`` (without the columns of
        ``leave_out`` and the rows then empty, where given)."""
        lo, hi, cost, rlo, rhi = new
        live = rows = None
        if leave_out is not None:
            live = np.flatnonzero(~leave_out)
            rows = np.flatnonzero(_rows_of(matrix, live))
            matrix = matrix[:, live][rows, :].tocsc()
            lo, hi, cost, rlo, rhi = lo[live], hi[live], cost[live], rlo[rows], rhi[rows]
        h.passModel(_highs_lp(matrix, cost, lo, hi, rlo, rhi))
        return cls(h, live, rows, new)

    def update(self, matrix: sp.csc_matrix, new: Arrays, leave_out: BoolArray | None, drop: bool) -> None:
        """Bring the model to the bounds and costs ``new``. ``leave_out`` (compact models): the columns that
        may be left out; with ``drop`` those of them that are in the model and nonbasic leave it, and the
        rows left empty whose slack is basic (else only the columns needed are added, with their rows: a
        repair's columns switched off stay for the next plan)."""
        hx: Any = self.h  # the stubs lack some of the methods Highs has
        lo, hi, cost, rlo, rhi = new
        if self.live is not None and self.rows is not None and leave_out is not None:
            self._restructure(matrix, new, leave_out, drop)
        cols = slice(None) if self.live is None else self.live
        rows = slice(None) if self.rows is None else self.rows
        lo0, hi0, cost0, rlo0, rhi0 = self.passed
        c = np.flatnonzero(cost[cols] != cost0[cols]).astype(np.int32)
        if len(c):
            hx.changeColsCost(len(c), c, cost[cols][c])
        b = np.flatnonzero((lo[cols] != lo0[cols]) | (hi[cols] != hi0[cols])).astype(np.int32)
        if len(b):
            hx.changeColsBounds(len(b), b, lo[cols][b], hi[cols][b])
        r = np.flatnonzero((rlo[rows] != rlo0[rows]) | (rhi[rows] != rhi0[rows])).astype(np.int32)
        if len(r):
            hx.changeRowsBounds(len(r), r, rlo[rows][r], rhi[rows][r])
        self.passed = new

    def _restructure(self, matrix: sp.csc_matrix, new: Arrays, leave_out: BoolArray, drop: bool) -> None:
        hx: Any = self.h
        lo, hi, cost, rlo, rhi = new
        live, rows = self.live, self.rows
        assert live is not None and rows is not None
        n_cols, n_rows = matrix.shape[1], matrix.shape[0]
        if drop:
            basis = hx.getBasis()
            basic_col = np.zeros(len(live), dtype=bool)
            basic_row = np.zeros(len(rows), dtype=bool)
            if basis.valid:
                kb = int(highspy.HighsBasisStatus.kBasic)
                basic_col = np.fromiter((int(s) for s in basis.col_status), np.int64, len(live)) == kb
                basic_row = np.fromiter((int(s) for s in basis.row_status), np.int64, len(rows)) == kb
            gone = leave_out[live] & ~basic_col
            if gone.any():
                idx = np.flatnonzero(gone).astype(np.int32)
                hx.deleteCols(len(idx), idx)
                live = live[~gone]
        inside = np.zeros(n_cols, dtype=bool)
        inside[live] = True
        add = np.flatnonzero(~leave_out & ~inside)
        needed = _rows_of(matrix, np.concatenate([live, add]))
        if drop:
            empty = ~needed[rows] & basic_row
            if empty.any():
                idx = np.flatnonzero(empty).astype(np.int32)
                hx.deleteRows(len(idx), idx)
                rows = rows[~empty]
        held = np.zeros(n_rows, dtype=bool)
        held[rows] = True
        new_rows = np.flatnonzero(needed & ~held)
        if len(new_rows):  # empty for now: their entries come with the columns added below
            none_i, none_v = np.zeros(0, dtype=np.int32), np.zeros(0)
            hx.addRows(len(new_rows), rlo[new_rows], rhi[new_rows], 0, none_i, none_i, none_v)
            rows = np.concatenate([rows, new_rows])
        if len(add):
            position = np.full(n_rows, -1, dtype=np.int64)
            position[rows] = np.arange(len(rows))
            sub = matrix[:, add]
            index = position[sub.indices]
            assert np.all(index >= 0)
            hx.addCols(
                len(add),
                cost[add],
                lo[add],
                hi[add],
                sub.nnz,
                sub.indptr[:-1].astype(np.int32),
                index.astype(np.int32),
                np.asarray(sub.data, dtype=float),
            )
            live = np.concatenate([live, add])
        self.live, self.rows = live, rows

    def values(self, n_cols: int) -> FloatArray:
        """The solved value of every column of the structure (those left out at zero)."""
        x = np.asarray(self.h.getSolution().col_value, dtype=float)
        if self.live is None:
            return x
        v = np.zeros(n_cols)
        v[self.live] = x
        return v


def _rows_of(matrix: sp.csc_matrix, cols: IntArray) -> BoolArray:
    """The rows with an entry in some column of ``cols``."""
    out = np.zeros(matrix.shape[0], dtype=bool)
    if not len(cols):
        return out
    starts, stops = matrix.indptr[cols], matrix.indptr[cols + 1]
    counts = stops - starts
    idx = np.repeat(starts - np.cumsum(np.concatenate([[0], counts[:-1]])), counts) + np.arange(counts.sum())
    out[matrix.indices[idx]] = True
    return out


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
