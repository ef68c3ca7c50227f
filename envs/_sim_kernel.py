"""The compiled step kernels of :class:`envs.sim.BatchSim` (numba) and the layout of its stacked arrays.

One step is :func:`_apply_kernel` (energy books, departures and arrivals, battery, peak, prices) and the
state the projection acts on is gathered by :func:`_state_kernel`; both run over preallocated arrays whose
rows are named by the constants below (compile-time constants of the kernels).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from envs.core import BoolArray, FloatArray, IntArray
from envs.costs import FLOW_ROWS, PART_ROWS

_SLOT_FLOATS = (
    "request_kwh",
    "room0_kwh",
    "dischargeable0_kwh",
    "net_kwh",
    "ev_max_charge_kw",
    "ev_max_discharge_kw",
    "v2g",
    "priority",
    "departure_h",
    "present_f",
    "h_per_kwh",
    "soc_base",
    "inv_battery",
)
# their rows in BatchSim._slot_floats (compile-time constants of the kernels)
(
    _REQ,
    _ROOM0,
    _DIS0,
    _NET,
    _MAXC,
    _MAXD,
    _V2G,
    _PRIO,
    _DEP_H,
    _PRES_F,
    _H_PER_KWH,
    _SOC_BASE,
    _INV_BATT,
) = range(len(_SLOT_FLOATS))

_SESSION_FLOATS = ("request", "room", "disch", "max_c", "max_d", "batt", "soc", "prio")
"""rows of BatchSim._s_floats: the :class:`SessionTable` columns the simulator reads, per row and session"""
_S_REQ, _S_ROOM, _S_DIS, _S_MAXC, _S_MAXD, _S_BATT, _S_SOC, _S_PRIO = range(len(_SESSION_FLOATS))

_ROW_FLOATS = (
    "peak_kw",
    "battery_soc_kwh",
    "battery_kw_last",
    "delivered_total_kwh",
    "missing_total_kwh",
    "ev_discharged_total_kwh",
    "cost_total",
    "_peak_now",
)
"""per-row floats (B,) of BatchSim, views of one stacked array ``_row_floats``"""
_R_PEAK, _R_SOC, _R_BKW, _R_DELIV, _R_MISS, _R_EVDIS, _R_COST, _R_PEAK_NOW = range(len(_ROW_FLOATS))

_ROW_INTS = ("t", "n_steps", "start_step")
_I_T, _I_N, _I_START = range(len(_ROW_INTS))

_SERIES = ("_base", "_pv", "_price_in", "_price_out")
_X_BASE, _X_PV, _X_PIN, _X_POUT = range(len(_SERIES))

OUTCOME_FLOATS = (
    *FLOW_ROWS,
    *PART_ROWS,
    "reward",
    "battery_kw",
    "delivered_kwh",
    "peak_import_kw",
    "battery_soc_kwh",
    "delivered_total_kwh",
    "missing_total_kwh",
)
"""rows of :attr:`StepOutcome.table`: the step's flows as :func:`envs.costs.price_rows` reads them, the
cost parts it writes, the reward, the battery power, the energy delivered, the peak after the step and
row totals"""

OUTCOME_COUNTS = ("departures", "arrivals", "terminated", "step_index")
"""rows of :attr:`StepOutcome.counts`: EVs that left and arrived, 1 where the row's episode ended with
this step, and the step's index in its scenario"""
(
    _O_IMPORT,
    _O_PIN,
    _O_POUT,
    _O_PEAK0,
    _O_EVDIS,
    _O_BDIS,
    _O_MISS,
    _O_ENERGY,
    _O_EXPORT,
    _O_DEMAND,
    _O_MISSING,
    _O_DEGR,
    _O_REWARD,
    _O_BKW,
    _O_DELIV,
    _O_PEAK1,
    _O_SOC,
    _O_DELIV_TOT,
    _O_MISS_TOT,
) = range(len(OUTCOME_FLOATS))
_FLOWS = slice(_O_IMPORT, _O_MISS + 1)
_PARTS = slice(_O_ENERGY, _O_DEGR + 1)

_STATE_FLOATS = 7
"""(7, B, n) per-charger floats of a state: EV max charge, EV max discharge, need, room, dischargeable,
time left, priority"""

# --------------------------------------------------------------------------- step kernels (numba)


@njit(cache=True, error_model="numpy")
def _pos(x: float) -> float:
    """``np.maximum(x, 0.0)`` of one value (NaN propagates)."""
    return x if (x >= 0.0 or x != x) else 0.0


_PW_BLOCK = 128
"""numpy's PW_BLOCKSIZE: rows up to this long are summed in one unrolled pass"""


@njit(cache=True, error_model="numpy")
def _pairwise_block(a: FloatArray, lo: int, n: int) -> float:
    """numpy's pairwise sum of ``a[lo : lo + n]`` for ``n <= 128``: eight interleaved partial sums."""
    if n < 8:
        res = -0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    stop = n - n % 8
    while i < stop:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True, error_model="numpy")
def _pairwise_sum(a: FloatArray, n: int) -> float:
    """``a[:n].sum()`` as numpy computes it (``np.add.reduce`` on a contiguous row: pairwise, split in
    halves rounded to multiples of 8 above 128 values), so that a row sum here is bit-identical to
    ``x.sum(axis=-1)``. The halving recursion runs on an explicit stack (cached numba code and recursion
    do not mix)."""
    if n <= _PW_BLOCK:
        return 0.0 + _pairwise_block(a, 0, n)
    st_lo = np.empty(64, dtype=np.int64)
    st_n = np.empty(64, dtype=np.int64)
    st_stage = np.empty(64, dtype=np.int64)
    st_left = np.empty(64)
    d = 0
    st_lo[0], st_n[0], st_stage[0] = 0, n, 0
    ret = 0.0
    while True:
        m = st_n[d]
        if m <= _PW_BLOCK:  # a leaf: hand its sum to the parent
            ret = _pairwise_block(a, st_lo[d], m)
            d -= 1
            continue
        half = m // 2
        half -= half % 8
        if st_stage[d] == 0:  # descend into the left half
            st_stage[d] = 1
            st_lo[d + 1], st_n[d + 1], st_stage[d + 1] = st_lo[d], half, 0
            d += 1
        elif st_stage[d] == 1:  # left half done: keep it, descend into the right half
            st_left[d] = ret
            st_stage[d] = 2
            st_lo[d + 1], st_n[d + 1], st_stage[d + 1] = st_lo[d] + half, m - half, 0
            d += 1
        else:  # both halves done
            ret = st_left[d] + ret
            if d == 0:
                return 0.0 + ret
            d -= 1


@njit(cache=True, error_model="numpy")
def _clear_slot(sf: FloatArray, present: BoolArray, session: IntArray, b: int, i: int) -> None:
    present[b, i] = False
    session[b, i] = -1
    for k in range(sf.shape[0]):
        sf[k, b, i] = 0.0


@njit(cache=True, error_model="numpy")
def _arrive_slot(
    sf: FloatArray,
    present: BoolArray,
    session: IntArray,
    b: int,
    i: int,
    s: int,
    s_floats: FloatArray,
    s_dep: IntArray,
    rated_kw: FloatArray,
    efficiency: FloatArray,
    dt_h: float,
) -> None:
    """Plug session ``s`` of row ``b`` into slot ``i`` (nothing delivered yet)."""
    present[b, i] = True
    sf[_PRES_F, b, i] = 1.0
    session[b, i] = s
    sf[_REQ, b, i] = s_floats[_S_REQ, b, s]
    sf[_ROOM0, b, i] = s_floats[_S_ROOM, b, s]
    sf[_DIS0, b, i] = s_floats[_S_DIS, b, s]
    sf[_NET, b, i] = 0.0
    max_c = s_floats[_S_MAXC, b, s]
    max_d = s_floats[_S_MAXD, b, s]
    sf[_MAXC, b, i] = max_c
    sf[_MAXD, b, i] = max_d
    sf[_V2G, b, i] = 1.0 if max_d > 0 else 0.0
    sf[_PRIO, b, i] = s_floats[_S_PRIO, b, s]
    sf[_DEP_H, b, i] = s_dep[b, s] * dt_h
    r = rated_kw[i]
    rate = r if (r <= max_c or r != r) else max_c  # np.minimum
    sf[_H_PER_KWH, b, i] = 1.0 / (rate * efficiency[i])
    battery = s_floats[_S_BATT, b, s]
    soc = s_floats[_S_SOC, b, s]
    known = np.isfinite(battery) and np.isfinite(soc)
    sf[_SOC_BASE, b, i] = soc if known else -1.0
    sf[_INV_BATT, b, i] = 1.0 / battery if known else 0.0


@njit(cache=True, error_model="numpy")
def _start_row(
    b: int,
    sf: FloatArray,
    present: BoolArray,
    session: IntArray,
    slot: NDArray[np.int32],
    s_floats: FloatArray,
    s_dep: IntArray,
    rated_kw: FloatArray,
    efficiency: FloatArray,
    dt_h: float,
    row_floats: FloatArray,
    new_period: BoolArray,
    static_all: NDArray[np.float32],
    static_now: NDArray[np.float32],
) -> None:
    """Empty every slot of row ``b``, plug in the sessions present at step 0 and set the step's cache."""
    for i in range(present.shape[1]):
        _clear_slot(sf, present, session, b, i)
        s = slot[b, 0, i]
        if s >= 0:
            _arrive_slot(sf, present, session, b, i, s, s_floats, s_dep, rated_kw, efficiency, dt_h)
    _set_now(b, 0, row_floats, new_period, static_all, static_now)


@njit(cache=True, error_model="numpy")
def _set_now(
    b: int,
    t: int,
    row_floats: FloatArray,
    new_period: BoolArray,
    static_all: NDArray[np.float32],
    static_now: NDArray[np.float32],
) -> None:
    """The per-step cache of row ``b`` at step ``t``: peak so far (0 when a period opens), static obs."""
    row_floats[_R_PEAK_NOW, b] = 0.0 if new_period[b, t] else row_floats[_R_PEAK, b]
    for j in range(static_now.shape[1]):
        static_now[b, j] = static_all[b, t, j]


@njit(cache=True, error_model="numpy")
def _apply_kernel(
    p: FloatArray,
    pb: FloatArray,
    site_import: FloatArray,
    sf: FloatArray,
    present: BoolArray,
    session: IntArray,
    site_c: FloatArray,
    battery_c: FloatArray,
    dt_h: float,
    row_floats: FloatArray,
    row_ints: IntArray,
    slot: NDArray[np.int32],
    s_floats: FloatArray,
    s_dep: IntArray,
    series: FloatArray,
    new_period: BoolArray,
    static_all: NDArray[np.float32],
    static_now: NDArray[np.float32],
    vals: FloatArray,
    counts: IntArray,
    scratch: FloatArray,
) -> bool:
    """One step of every row (see :meth:`BatchSim.apply`) but its pricing: ``vals`` gets the flows and
    outcomes (rows :data:`OUTCOME_FLOATS`), ``counts`` the integer ones (:data:`OUTCOME_COUNTS`); False,
    with nothing changed, where a row is past its end.

    ``site_c``: (4, n) ``eff * dt``, ``dt / eff``, rated kW, efficiency; ``battery_c``: has battery,
    ``dt / eff``, ``eff * dt``. Elementwise operations mirror numpy's (``np.maximum`` with NaN, pairwise
    row sums), so the results are bit-identical to the former numpy implementation."""
    B, n = p.shape
    for b in range(B):
        if row_ints[_I_T, b] >= row_ints[_I_N, b]:
            return False
    has_battery = battery_c[0] > 0.0
    for b in range(B):
        t = row_ints[_I_T, b]
        # EV energy books: charging at p puts p * eff * dt in, discharging takes |p| * dt / eff out
        for i in range(n):
            x = p[b, i]
            charge = _pos(x)
            out_of_ev = (charge - x) * site_c[1, i]
            into_ev = charge * site_c[0, i]
            net = sf[_NET, b, i] + into_ev
            sf[_NET, b, i] = net - out_of_ev
            scratch[0, i] = into_ev
            scratch[1, i] = out_of_ev
        delivered = _pairwise_sum(scratch[0], n)
        ev_out = _pairwise_sum(scratch[1], n)

        # stationary battery
        xb = pb[b]
        batt_out = 0.0
        if has_battery:
            b_charge = _pos(xb)
            batt_out = (b_charge - xb) * battery_c[1]
            row_floats[_R_SOC, b] += b_charge * battery_c[2] - batt_out
        row_floats[_R_BKW, b] = xb

        # departures at the end of this step, then arrivals for the next one
        departures = 0
        arrivals = 0
        for i in range(n):
            scratch[2, i] = 0.0
            now = slot[b, t, i]
            nxt = slot[b, t + 1, i]
            if now != nxt:
                if present[b, i]:
                    scratch[2, i] = _pos(sf[_REQ, b, i] - sf[_NET, b, i])
                    departures += 1
                    _clear_slot(sf, present, session, b, i)
                if nxt >= 0:
                    arrivals += 1
                    _arrive_slot(sf, present, session, b, i, nxt, s_floats, s_dep, site_c[2], site_c[3], dt_h)
        missing = _pairwise_sum(scratch[2], n) if departures > 0 else 0.0

        # billing-period peak; the step is priced by envs.costs.price_rows on the flows written here
        imp = site_import[b]
        peak_before = 0.0 if new_period[b, t] else row_floats[_R_PEAK, b]
        peak = peak_before if (peak_before >= imp or peak_before != peak_before) else imp  # np.maximum
        row_floats[_R_PEAK, b] = peak
        row_floats[_R_DELIV, b] += delivered
        row_floats[_R_MISS, b] += missing
        row_floats[_R_EVDIS, b] += ev_out
        row_ints[_I_T, b] = t + 1
        counts[2, b] = 1 if t + 1 >= row_ints[_I_N, b] else 0
        _set_now(b, t + 1, row_floats, new_period, static_all, static_now)

        vals[_O_IMPORT, b] = imp
        vals[_O_PIN, b] = series[_X_PIN, b, t]
        vals[_O_POUT, b] = series[_X_POUT, b, t]
        vals[_O_PEAK0, b] = peak_before
        vals[_O_EVDIS, b] = ev_out
        vals[_O_BDIS, b] = batt_out
        vals[_O_MISS, b] = missing
        vals[_O_DELIV, b] = delivered
        vals[_O_PEAK1, b] = peak
        vals[_O_SOC, b] = row_floats[_R_SOC, b]
        vals[_O_DELIV_TOT, b] = row_floats[_R_DELIV, b]
        vals[_O_MISS_TOT, b] = row_floats[_R_MISS, b]
        vals[_O_BKW, b] = xb
        counts[0, b] = departures
        counts[1, b] = arrivals
        counts[3, b] = row_ints[_I_START, b] + t
    return True


@njit(cache=True, error_model="numpy")
def _state_kernel(
    sf: FloatArray,
    present: BoolArray,
    row_ints: IntArray,
    row_floats: FloatArray,
    series: FloatArray,
    dt_h: float,
    out_f: FloatArray,
    out_present: BoolArray,
    out_site: FloatArray,
) -> None:
    """Fill the arrays of :meth:`BatchSim.state`: ``out_f`` (see ``_STATE_FLOATS``), ``out_present``,
    ``out_site`` (3, B): base load, PV, battery SoC."""
    B, n = present.shape
    for b in range(B):
        t = row_ints[_I_T, b]
        now_h = t * dt_h
        for i in range(n):
            net = sf[_NET, b, i]
            out_present[b, i] = present[b, i]
            out_f[0, b, i] = sf[_MAXC, b, i]
            out_f[1, b, i] = sf[_MAXD, b, i]
            out_f[2, b, i] = _pos(sf[_REQ, b, i] - net)
            out_f[3, b, i] = _pos(sf[_ROOM0, b, i] - net)
            out_f[4, b, i] = _pos(sf[_DIS0, b, i] + net) * sf[_V2G, b, i]
            out_f[5, b, i] = (sf[_DEP_H, b, i] - now_h) * sf[_PRES_F, b, i]
            out_f[6, b, i] = sf[_PRIO, b, i]
        out_site[0, b] = series[_X_BASE, b, t]
        out_site[1, b] = series[_X_PV, b, t]
        out_site[2, b] = row_floats[_R_SOC, b]
