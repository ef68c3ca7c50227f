"""Planning against what the policy knows: slivers below one minimum step, the replay of a relaxed plan,
and the real benchmark's two information modes (:mod:`benchmarks.real_modes`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.lp_repair import solve_min_current
from agents.mpc import ModelPredictiveControl
from agents.optimum import build_scenario_lp, off_or_minimum
from benchmarks import real
from benchmarks.real_modes import MODES, check_modes, perfect_scenario
from envs.config import site_from_dict
from envs.core import SiteArrays
from envs.loaders import load_acn_csv
from envs.scenario import Scenario, make_scenario
from training.evaluate import EnvOptions, run_episode

FIX = Path(__file__).parent / "fixtures"


def sliver_scenario(energy_kwh: float = 0.2) -> Scenario:
    """One 230 V three-phase charger with a 6 A minimum (4.14 kW: 1.04 kWh per 15-minute step), one EV
    that needs less than one minimum step and takes no more (no battery size: its room is its need)."""
    site = site_from_dict(
        {
            "name": "sliver",
            "timezone": "UTC",
            "grid": {"import_limit_kw": 50.0},
            "nodes": [{"id": "root", "max_power_kw": 50.0}],
            "chargers": [{"id": "a", "node": "root", "max_current_a": 16.0, "min_current_a": 6.0}],
            "tariff": {
                "demand_charge_per_kw": 1.0,
                "billing_period": "episode",
                "missing_energy_penalty_per_kwh": 20.0,
            },
        }
    )
    t0 = pd.Timestamp("2025-06-02T08:00:00Z")
    index = pd.date_range(t0, periods=16, freq="15min")
    ts = pd.DataFrame(
        {
            "timestamp": index,
            "base_load_kw": 0.0,
            "pv_kw": 0.0,
            "import_price_per_kwh": np.linspace(0.4, 0.1, 16),
            "export_price_per_kwh": 0.0,
        }
    )
    sessions = pd.DataFrame(
        {
            "session_id": ["A"],
            "charger_id": ["a"],
            "arrival": [t0],
            "departure": [t0 + pd.Timedelta(hours=3, minutes=10)],
            "energy_kwh": [energy_kwh],
        }
    )
    return make_scenario(site, sessions, ts, name="sliver")


def test_a_column_may_charge_a_sliver_below_the_minimum_where_that_is_all_the_ev_takes() -> None:
    # the minimum step (1.04 kWh) is more than the EV's room (0.2 kWh): the projection charges such an EV
    # below the minimum, so the fix-and-resolve repair must not switch it off every step until it leaves
    sc = sliver_scenario(0.2)
    site = SiteArrays.from_config(sc.site)
    lp, data, _ = build_scenario_lp(site, sc)
    min_x = lp.min_x_kw(data)
    assert min_x == pytest.approx(np.full(lp.sizes["x"], 0.2 / (site.efficiency[0] * lp.dt_h)))
    big = replace(data, need_kwh=np.array([5.0]), room_kwh=np.array([5.0]))
    assert lp.min_x_kw(big) == pytest.approx(np.full(lp.sizes["x"], site.min_kw[0]))
    sol = solve_min_current(lp, data, passes=3, settle=True)
    assert float(sol.missing_kwh.sum()) == pytest.approx(0.0, abs=1e-6)
    row = run_episode(ModelPredictiveControl(horizon=16), sc, options=EnvOptions(forecast_horizon=16)).row
    assert row.evs_departed == 1 and row.evs_short == 0


def test_a_replay_target_that_is_all_the_ev_needs_is_kept_below_half_the_minimum() -> None:
    plan = np.array([0.0, 0.0, 0.0])
    target = np.array([0.4, 0.4, 0.4])
    min_kw = np.full(3, 1.248)
    need_kw = np.array([0.4, 3.0, 0.2])
    kw = off_or_minimum(plan, target, min_kw, need_kw=need_kw, finish_kw=need_kw)
    # all the EV needs: asked for as it is (the projection holds it there); a part of a larger need below
    # half the minimum: off (carried to later steps); more than the need: capped at it
    assert kw.tolist() == pytest.approx([0.4, 0.0, 0.2])


def test_perfect_mode_shows_the_policies_the_actual_sessions() -> None:
    sc = load_acn_csv(FIX / "acn_jpl_2019-11-01.csv", FIX / "acn_csv_site.yaml").scenario
    s = sc.sessions
    assert (s["declared_departure"] != s["departure"]).any()  # the fixture declares other values
    p = perfect_scenario(sc).sessions
    assert (p["declared_departure"] == p["departure"]).all()
    assert np.array_equal(p["declared_energy_kwh"].to_numpy(), p["energy_kwh"].to_numpy())
    # the truth the simulator scores is untouched, and the input is not modified
    pd.testing.assert_frame_equal(
        p.drop(columns=["declared_departure", "declared_energy_kwh"]),
        s.drop(columns=["declared_departure", "declared_energy_kwh"]),
    )
    assert (sc.sessions["declared_departure"] != sc.sessions["departure"]).any()


def test_modes_are_checked_and_the_table_labels_each() -> None:
    assert check_modes(["perfect"]) == ["perfect"]
    with pytest.raises(ValueError, match="choose from perfect, declared"):
        check_modes(["oracle"])
    row = {f: 0 for f in real.ROW_FIELDS} | {"policy": "mpc", "cost_total": 1.0, "gap_to_optimum_pct": 2.5}
    week = {
        "week": "w",
        "sessions": 1,
        "dropped": 0,
        "undeliverable_sessions": 0,
        "v2g_sessions": 0,
        "energy_kwh": 1.0,
        "declared_energy_kwh": 1.0,
        "declared_departure_early_pct": 0.0,
        "max_concurrent_evs": 1,
        "import_limit_kw": 1.0,
        "spread_site_peak_kw": 1.0,
        "uncontrolled_site_peak_kw": 1.0,
        "modes": {m: [row] for m in MODES},
    }
    text = real.table([week])
    assert text.count("    mpc ") == len(MODES)
    assert "perfect: policies see the actual" in text and "declared: policies see the drivers'" in text
    assert max(len(line) for line in text.splitlines()) <= 120 or "w: 1 sessions" in text
