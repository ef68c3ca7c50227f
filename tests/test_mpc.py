"""The MPC's execution of its plan (agents/mpc.py): an EV leaving mid-step is charged in the part of its
last step it is still plugged in; a remainder of a few Wh is not served at the charger's minimum; on a
small depot, where the night runs at the peak, no van leaves short that the optimum serves; and rounding the
whole plan to the minimum current does not lift the peak the relaxation kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agents.mpc import ModelPredictiveControl
from envs.config import site_from_dict
from envs.generate import generate_scenario
from envs.scenario import Scenario, make_scenario
from training.evaluate import EnvOptions, run_episode

STEP_H = 0.25


def one_charger_scenario(stay_min: float, energy_kwh: float, steps: int = 8) -> Scenario:
    """One 11 kW three-phase charger (minimum 6 A: 4.14 kW; efficiency 1), 15-minute steps, flat prices and
    no demand charge; one EV from the start for ``stay_min`` minutes asking ``energy_kwh`` (100 kWh room)."""
    site = site_from_dict(
        {
            "name": "one",
            "timezone": "UTC",
            "grid": {"import_limit_kw": 50.0},
            "nodes": [{"id": "root", "max_power_kw": 50.0}],
            "chargers": [
                {"id": "a", "node": "root", "max_power_kw": 11.0, "efficiency": 1.0, "min_current_a": 6.0}
            ],
            "tariff": {"demand_charge_per_kw": 0.0, "billing_period": "episode"},
        }
    )
    t0 = pd.Timestamp("2025-06-02T00:00:00Z")
    ts = pd.DataFrame(
        {
            "timestamp": pd.date_range(t0, periods=steps, freq="15min"),
            "base_load_kw": 0.0,
            "pv_kw": 0.0,
            "import_price_per_kwh": 0.2,
            "export_price_per_kwh": 0.0,
        }
    )
    sessions = pd.DataFrame(
        {
            "session_id": ["A"],
            "charger_id": ["a"],
            "arrival": [t0],
            "departure": [t0 + pd.Timedelta(minutes=stay_min)],
            "energy_kwh": [energy_kwh],
            "battery_kwh": [100.0],
            "arrival_soc": [0.2],
        }
    )
    return make_scenario(site, sessions, ts, name="one-charger")


def test_an_ev_leaving_mid_step_is_charged_in_the_part_of_its_last_step_it_is_there() -> None:
    # two full steps at the held rate give 2 * 10.971 * 0.25 = 5.49 kWh; the EV leaves 2 minutes into the
    # third step, where it can take at most 11 * 2/15 kW on average (0.37 kWh), and asks 1.2 kWh more than
    # the two steps give, so it must charge all it can in that part step. The column's bound (1.47 kW) is
    # below the charger's minimum (4.14 kW): the repair switched it off although the MPC forced it on, and
    # the EV left 1.2 kWh short instead of 0.83.
    sc = one_charger_scenario(stay_min=32.0, energy_kwh=2 * 10.971 * STEP_H + 1.2)
    res = run_episode(ModelPredictiveControl(horizon=8), sc, options=EnvOptions(forecast_horizon=8))
    assert res.session_short_kwh is not None
    assert 1.2 - 11.0 * STEP_H * 2 / 15 - 1e-6 <= res.session_short_kwh[0] <= 1.2 - 0.3


@pytest.mark.parametrize(("left_kwh", "charged"), [(0.01, False), (0.2, True)])
def test_a_remainder_of_a_few_wh_is_done_but_a_real_one_is_served(left_kwh: float, charged: bool) -> None:
    # an EV that has its request but for ``left_kwh``: served, it would hold the charger at its minimum
    # (4.14 kW, 1 kWh in the step, the EV takes it) for a few Wh; a real remainder is still served
    sc = one_charger_scenario(stay_min=120.0, energy_kwh=left_kwh)
    mpc = ModelPredictiveControl(horizon=8)
    res = run_episode(mpc, sc, options=EnvOptions(forecast_horizon=8))
    assert res.session_short_kwh is not None
    if charged:
        assert res.session_short_kwh[0] < 1e-6
        assert res.row.cost_energy > 0.0
    else:
        assert res.session_short_kwh[0] == pytest.approx(left_kwh)
        assert res.row.cost_energy == pytest.approx(0.0, abs=1e-12)


def test_on_a_depot_whose_nights_run_at_the_peak_no_van_is_left_short_that_the_optimum_serves() -> None:
    # 20 vans over three days: the nights run at the peak from the vans' return to their departure. Before
    # the fixes the MPC left 11 vans short here (ghosts at half the penalty, an exact plan under a sunk
    # peak, minimum steps for a few Wh); the optimum leaves none.
    sc = generate_scenario("depot", chargers=20, days=3, seed=0)
    opts = EnvOptions()
    mpc = run_episode(ModelPredictiveControl(), sc, options=opts)
    assert mpc.session_short_kwh is not None
    short = np.nan_to_num(mpc.session_short_kwh) > 0.1
    assert int(short.sum()) == 0
    assert mpc.row.violations == 0


@pytest.mark.parametrize(
    "knob", [{"delay_cost_per_kwh_h": 0.0029}, {"delay_cost_per_kwh_h": 0.0031}, {"need_margin": 0.021}]
)
def test_the_depot_stays_served_when_a_planning_weight_moves_a_little(knob: dict[str, float]) -> None:
    # the same depot. Planned at the scenario's 1 EUR/kWh penalty, the MPC deferred a van to its last
    # hours at full rate; when the morning base load met the sunk peak, the plan gave up the van's last
    # kWh rather than raise a 9 EUR/kW peak (delay cost 0.0031: a van 0.45 kWh short; the optimum serves
    # it). An EV with little slack left is now planned as a requirement (``tight_share``); with it off the
    # 0.0031 case fails again.
    sc = generate_scenario("depot", chargers=20, days=3, seed=0)
    mpc = run_episode(ModelPredictiveControl(**knob), sc, options=EnvOptions())  # type: ignore[arg-type]
    assert mpc.session_short_kwh is not None
    assert int((np.nan_to_num(mpc.session_short_kwh) > 0.1).sum()) == 0
    assert mpc.row.violations == 0


def test_make_runs_depot_leaves_no_van_short_the_optimum_serves() -> None:
    # `evdlm run`'s depot (10 vans, 2 days): the second night ends at the peak with the base load rising.
    # With the minimum current relaxed after the first step, the plan put one van below its minimum in the
    # steps before its departure; executed at the minimum it took the capacity another van's plan counted
    # on, and that van left 0.17 kWh short (the optimum leaves none).
    sc = generate_scenario("depot", chargers=10, days=2, seed=0)
    mpc = run_episode(ModelPredictiveControl(), sc)
    best = run_episode("optimum", sc)
    assert mpc.session_short_kwh is not None and best.session_short_kwh is not None
    served = np.nan_to_num(best.session_short_kwh) <= 0.1
    assert served.all()
    assert np.nan_to_num(mpc.session_short_kwh)[served].max() <= 0.1
    assert mpc.row.violations == 0
    assert mpc.row.cost_total <= best.row.cost_total * 1.01


def test_a_night_at_the_paid_peak_is_not_left_unused_where_the_second_repair_is_not_kept() -> None:
    # a generated depot (10 vans, 2 days, seed 11). Where the plan at the paid peak leaves vans short, the
    # repair is tried again with more first columns on; not cheaper, the first repair was solved again for
    # the next step's warm start, and that re-solve (another plan, dearer) was acted on: its first step
    # 5.5-7.5 kW under the paid 27.24 kW. The vans were left for the morning's base-load ramp: 31.43 kW at
    # 04:00, one van still 0.79 kWh short, +9.8 % over the optimum (which serves it at 27.02 kW).
    sc = generate_scenario("depot", chargers=10, days=2, seed=11)
    mpc = run_episode(ModelPredictiveControl(), sc)
    best = run_episode("optimum", sc)
    assert mpc.session_short_kwh is not None and best.session_short_kwh is not None
    assert np.nan_to_num(best.session_short_kwh).max() <= 1e-6
    assert np.nan_to_num(mpc.session_short_kwh).max() <= 0.1
    assert mpc.row.peak_import_kw < 27.5
    assert mpc.row.cost_total <= best.row.cost_total * 1.01


@pytest.mark.parametrize("knob", [{"delay_cost_per_kwh_h": 0.0031}, {"hedge": 0.89}])
def test_the_make_run_depot_stays_within_one_percent_when_a_planning_weight_moves(
    knob: dict[str, float],
) -> None:
    # the same 10-van depot. Its second night runs at the sunk peak; the min-current repair switched off the
    # first columns of two vans the plan left short, 4 kW under the peak at 05:00, and at 06:15 four vans
    # went on at their minimum: 27.7 -> 30.4 kW (433 EUR, +6.6 %, at either weight before; 406.2 the
    # optimum). The repair is now tried again with those vans on where the peak is paid for already
    # (``second_repair``). The depot stays a knife edge (docs/policies.md: 4 of 12 such weights still fail).
    sc = generate_scenario("depot", chargers=10, days=2, seed=0)
    mpc = run_episode(ModelPredictiveControl(**knob), sc)  # type: ignore[arg-type]
    best = run_episode("optimum", sc)
    assert mpc.session_short_kwh is not None
    assert np.nan_to_num(mpc.session_short_kwh).max() <= 0.1
    assert mpc.row.cost_total <= best.row.cost_total * 1.01


def test_minima_that_do_not_fit_together_go_off_instead_of_failing_the_plan() -> None:
    # workplace seed 17 (2 chargers, 1 day): the repair put both first columns on at the charger's
    # minimum where the connection does not hold both; the LP was infeasible and the MPC raised (found by
    # tests/test_optimum_exact.py's property test). Now those columns go off and the plan goes on.
    sc = generate_scenario("workplace", chargers=2, days=1, seed=17)
    opts = EnvOptions(forecast_horizon=16)
    row = run_episode("mpc", sc, options=opts).row
    best = run_episode("optimum", sc, options=opts).row
    assert row.violations == 0
    assert row.evs_short == 0 and row.energy_delivered_pct == pytest.approx(100.0)
    assert row.cost_total >= best.cost_total * (1 - 1e-3)


def test_rounding_the_whole_plan_does_not_lift_the_peak_the_relaxation_kept() -> None:
    # a generated workplace (10 chargers, 2 days) whose peak is the building's own: settling every column
    # of the plan on or off put charging at the minimum into the peak's steps, and each re-plan found the
    # lift sunk (+10.5 % over the optimum, 42.5 kW against 35.4); held to the relaxation's peak the repair
    # moves that charging off those steps
    sc = generate_scenario("workplace", chargers=10, days=2, seed=3)
    best = run_episode("optimum", sc).row
    held = run_episode(ModelPredictiveControl(), sc).row
    lifted = run_episode(ModelPredictiveControl(hold_peak=False), sc).row
    assert held.evs_short == 0 and held.violations == 0
    assert held.cost_total <= best.cost_total * 1.01
    assert held.peak_import_kw <= best.peak_import_kw + 0.1
    assert lifted.cost_total > best.cost_total * 1.05
