"""The warm HiGHS model of the site LP (agents/lp_warm.py): a compact model (charging columns fixed at zero
left out) re-solved warm step after step gives the optimum a cold solve of the whole model gives, and the
bound check that skips a re-solve never calls a feasible model infeasible."""

from __future__ import annotations

import highspy
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.lp import LPData, LPError, SiteLP
from agents.lp_warm import bounds_infeasible
from envs.config import site_from_dict
from envs.core import SiteArrays

N, T = 6, 12


def _site(node_kw: float = 15.0) -> SiteArrays:
    charger = {"max_power_kw": 11.0, "efficiency": 0.95, "min_current_a": 6.0, "phases": 3}
    return SiteArrays.from_config(
        site_from_dict(
            {
                "name": "warm",
                "timezone": "UTC",
                "grid": {"import_limit_kw": 40.0},
                "nodes": [
                    {"id": "root", "max_power_kw": 60.0},
                    {"id": "a", "parent": "root", "max_power_kw": node_kw},
                ],
                "chargers": [{"id": f"c{i}", "node": "a" if i < 3 else "root", **charger} for i in range(N)],
                "tariff": {"demand_charge_per_kw": 2.0, "billing_period": "episode"},
            }
        )
    )


def _lp(site: SiteArrays) -> SiteLP:
    return SiteLP(
        site,
        site.config.tariff,
        T,
        0.25,
        np.arange(N),
        np.zeros(N, dtype=np.int64),
        np.full(N, T, dtype=np.int64),
    )


def _data(rng: np.random.Generator) -> LPData:
    present = rng.random(N) < 0.6
    return LPData(
        base_load_kw=rng.uniform(0.0, 20.0, T),
        pv_kw=np.zeros(T),
        import_price_per_kwh=rng.uniform(0.1, 0.4, T),
        export_price_per_kwh=np.zeros(T),
        need_kwh=np.where(present, rng.uniform(1.0, 20.0, N), 0.0),
        max_charge_kw=np.where(present, 11.0, 0.0),
        active_stop=np.where(present, rng.integers(2, T + 1, N), 0),
        peak_floor_kw=np.array([rng.uniform(0.0, 30.0)]),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_compact_model_resolved_warm_has_the_optimum_of_a_cold_solve_of_the_whole_model(seed: int) -> None:
    rng = np.random.default_rng(seed)
    site = _site()
    warm, cold = _lp(site), _lp(site)
    warm.compact = True
    left_out = 0
    for _ in range(8):
        data = _data(rng)
        off = rng.random(warm.sizes["x"]) < 0.2  # a repair's re-solve: some columns switched off
        for x_off in (None, off):
            got = warm.solve(data, warm=True, x_off=x_off)
            want = cold.solve(data, warm=False, x_off=x_off)
            assert got.objective == pytest.approx(want.objective, rel=1e-7, abs=1e-7)
            assert got.missing_kwh.sum() == pytest.approx(want.missing_kwh.sum(), abs=1e-6)
            assert warm._warm is not None and warm._warm.live is not None
            left_out = max(left_out, warm.n_cols - len(warm._warm.live))
            # a column left out is fixed at zero in the solution too
            assert np.all(got.charger_kw[data.max_charge_kw == 0.0] == 0.0)
    assert left_out > warm.sizes["x"] // 4  # the columns without an EV were left out of the model


def test_forced_minima_over_a_small_node_fail_without_a_solve_and_keep_the_warm_model() -> None:
    # node "a" (10 kW) feeds chargers 0-2, each at least 6 A x 3 phases x 230 V = 4.14 kW when on: two fit
    # at their minimum in a step, three do not, whatever the other columns do
    site = _site(node_kw=10.0)
    lp = _lp(site)
    lp.compact = True
    data = LPData(
        base_load_kw=np.zeros(T),
        pv_kw=np.zeros(T),
        import_price_per_kwh=np.full(T, 0.2),
        export_price_per_kwh=np.zeros(T),
        need_kwh=np.full(N, 10.0),
        max_charge_kw=np.full(N, 11.0),
        active_stop=np.full(N, T),
    )
    lp.solve(data, warm=True)
    two = (lp.x_step == 0) & (lp.x_charger < 2)
    sol = lp.solve(data, warm=True, x_on=two)
    assert np.all(sol.charger_kw[:2, 0] >= 6.0 * 3 * 0.23 - 1e-6)
    h, passed = lp._highs, lp._warm.passed if lp._warm is not None else None
    with pytest.raises(LPError):
        lp.solve(data, warm=True, x_on=(lp.x_step == 0) & (lp.x_charger < 3))
    # HiGHS was not asked: the model holds the bounds of the last solve, warm for the next one
    assert lp._highs is h and lp._warm is not None and lp._warm.passed is passed
    again = lp.solve(data, warm=True, x_on=two)
    assert again.objective == pytest.approx(sol.objective, rel=1e-9)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 4),
    cols=st.integers(1, 5),
)
def test_the_bound_check_never_calls_a_feasible_model_infeasible(seed: int, rows: int, cols: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(-2, 3, (rows, cols)).astype(float)
    lo = rng.uniform(-2.0, 2.0, cols)
    hi = lo + rng.choice([0.0, 1.0, np.inf], cols) * rng.uniform(0.0, 3.0, cols)
    hi = np.where(np.isnan(hi), np.inf, hi)
    lo = np.where(rng.random(cols) < 0.2, -np.inf, lo)
    rlo = rng.uniform(-6.0, 6.0, rows)
    rhi = rlo + rng.choice([0.0, 2.0, np.inf], rows)
    m = sp.csr_matrix(a)
    said = bounds_infeasible(m.maximum(0).tocsr(), m.minimum(0).tocsr(), lo, hi, rlo, rhi)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.addCols(
        cols, np.zeros(cols), lo, hi, 0, np.zeros(cols, dtype=np.int32), np.zeros(0, np.int32), np.zeros(0)
    )
    for r in range(rows):
        idx = np.flatnonzero(a[r]).astype(np.int32)
        h.addRow(rlo[r], rhi[r], len(idx), idx, a[r, idx])
    h.run()
    feasible = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    if said:
        assert not feasible
