"""Allocator invariants on small hand-built sites: within every limit, never above an EV's need, and the
deadline behaviour of EDF / LLF / the rule-based DLM on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.allocate import Resources, fair_fill, greedy_fill
from agents.base import Decision, Policy
from agents.registry import NON_LEARNED, UnknownPolicyError, load_policy, make_policy
from agents.rule_based import RuleBasedDLM
from envs.config import site_from_dict
from envs.core import ForecastWindow, SiteArrays, SiteState, Snapshot
from envs.limits import limit_violations
from envs.projection import project

ONLINE = tuple(name for name in NON_LEARNED if name != "optimum")  # every policy that needs no scenario


def make_site(
    n: int = 4,
    import_kw: float = 30.0,
    feeder_kw: float = 20.0,
    feeder_a: float | None = None,
    rated_kw: float = 11.0,
    bidirectional: bool = False,
) -> SiteArrays:
    chargers = []
    for i in range(n):
        c: dict[str, object] = {
            "id": f"c{i}",
            "node": "f1" if i < (n + 1) // 2 else "f2",
            "max_power_kw": rated_kw,
            "efficiency": 1.0,
        }
        if bidirectional:
            c.update(bidirectional=True, max_discharge_kw=rated_kw)
        chargers.append(c)
    nodes: list[dict[str, object]] = [
        {"id": "root", "max_power_kw": 1000.0},
        {"id": "f1", "parent": "root", "max_power_kw": feeder_kw},
        {"id": "f2", "parent": "root", "max_power_kw": feeder_kw},
    ]
    if feeder_a is not None:
        nodes[1]["max_current_a"] = feeder_a
    cfg = site_from_dict(
        {
            "name": "t",
            "grid": {"import_limit_kw": import_kw, "export_limit_kw": 10.0},
            "nodes": nodes,
            "chargers": chargers,
            "tariff": {"demand_charge_per_kw": 5.0},
        }
    )
    return SiteArrays.from_config(cfg)


def make_state(
    site: SiteArrays,
    need_kwh: list[float],
    time_left_h: list[float],
    base_kw: float = 0.0,
    pv_kw: float = 0.0,
    dt_h: float = 0.25,
    priority: list[float] | None = None,
    dischargeable_kwh: float = 0.0,
) -> SiteState:
    need = np.asarray(need_kwh, dtype=float)
    present = need >= 0
    need = np.maximum(need, 0.0)
    return SiteState(
        ev_present=present,
        ev_max_charge_kw=np.where(present, np.inf, 0.0),
        ev_max_discharge_kw=np.where(present & site.bidirectional, site.max_discharge_kw, 0.0),
        energy_needed_kwh=need,
        energy_room_kwh=need + 20.0 * present,
        energy_dischargeable_kwh=np.where(present, dischargeable_kwh, 0.0),
        time_left_h=np.where(present, np.asarray(time_left_h, dtype=float), 0.0),
        base_load_kw=base_kw,
        pv_kw=pv_kw,
        dt_h=dt_h,
        priority=None if priority is None else np.asarray(priority, dtype=float),
    )


def make_snapshot(
    state: SiteState, prices: list[float] | None = None, horizon: int = 8, peak_kw: float = 0.0
) -> Snapshot:
    p = np.asarray(prices if prices is not None else [0.2] * horizon, dtype=float)
    h = len(p)
    base = np.full(h, float(np.asarray(state.base_load_kw)))
    pv = np.full(h, float(np.asarray(state.pv_kw)))
    return Snapshot(
        state=state,
        timestamp=np.datetime64("2025-06-02T10:00"),
        step_index=0,
        import_price_per_kwh=float(p[0]),
        export_price_per_kwh=0.05,
        forecast=ForecastWindow(base, pv, p, np.full(h, 0.05)),
        peak_import_kw=peak_kw,
    )


def run_policy(name: str, site: SiteArrays, snap: Snapshot) -> Decision:
    pol = make_policy(name)
    assert isinstance(pol, Policy)
    pol.reset(site)
    return pol.act(snap)


# --------------------------------------------------------------------------- registry


def test_registry_knows_every_non_learned_policy_and_rejects_unknown_specs() -> None:
    for name in NON_LEARNED:
        assert make_policy(name).name == name
    with pytest.raises(UnknownPolicyError, match=r"unknown policy 'nope'.*MLflow model URI"):
        load_policy("nope")


def test_one_spelling_each_and_custom_classes_only_when_asked() -> None:
    with pytest.raises(UnknownPolicyError):
        load_policy("rule-based")  # one spelling: rule_based
    spec = "agents.baselines:EqualShare"
    with pytest.raises(UnknownPolicyError):
        load_policy(spec)  # a module:Class spec imports code: refused unless the caller allows it
    assert type(load_policy(spec, allow_custom=True)).__name__ == "EqualShare"
    # a URI is never read as module:Class
    with pytest.raises(UnknownPolicyError):
        load_policy("runs:EqualShare", allow_custom=False)


def test_optimum_needs_the_scenario() -> None:
    with pytest.raises(ValueError, match="needs the scenario"):
        make_policy("optimum").reset(make_site())


# --------------------------------------------------------------------------- the fills


def test_greedy_fill_serves_in_order_within_a_shared_limit() -> None:
    coef = np.ones((3, 1))
    alloc = greedy_fill(coef, np.array([15.0]), np.array([10.0, 10.0, 10.0]), np.array([2, 0, 1]))
    np.testing.assert_allclose(alloc, [5.0, 0.0, 10.0])


def test_greedy_fill_skips_chargers_below_their_minimum() -> None:
    coef = np.ones((3, 1))
    alloc = greedy_fill(coef, np.array([12.0]), np.full(3, 10.0), np.array([0, 1, 2]), min_kw=np.full(3, 4.0))
    np.testing.assert_allclose(alloc, [10.0, 0.0, 0.0])  # 2 kW left is below the minimum: off


def test_fair_fill_is_max_min_fair() -> None:
    coef = np.ones((3, 1))
    alloc = fair_fill(coef, np.array([20.0]), np.array([2.0, 10.0, 10.0]))
    np.testing.assert_allclose(alloc, [2.0, 9.0, 9.0])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    want=st.lists(st.floats(0.0, 30.0), min_size=5, max_size=5),
    limits=st.lists(st.floats(0.0, 40.0), min_size=3, max_size=3),
    seed=st.integers(0, 1000),
)
def test_fills_never_exceed_a_resource_or_a_want(want: list[float], limits: list[float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    coef = (rng.random((5, 3)) < 0.6) * rng.uniform(0.5, 2.0, (5, 3))
    w = np.asarray(want)
    lim = np.asarray(limits)
    for alloc in (greedy_fill(coef, lim, w, rng.permutation(5)), fair_fill(coef, lim, w)):
        assert (alloc >= -1e-12).all()
        assert (alloc <= w + 1e-9).all()
        assert (alloc @ coef <= lim + 1e-6).all()


def test_resources_include_only_nodes_that_can_bind() -> None:
    site = make_site(n=4, feeder_kw=20.0, feeder_a=25.0)  # two 11 kW chargers per feeder: 22 > 20 kW
    res = Resources.from_site(site)
    # 2 feeders (kW) + 3 phases of f1 (A: 2 * 11 kW / 0.69 kW/A = 31.9 A > 25 A) + the site column
    assert res.coef.shape == (4, 2 + 3 + 1)


# --------------------------------------------------------------------------- every online policy


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    need=st.lists(st.one_of(st.just(-1.0), st.floats(0.0, 40.0)), min_size=6, max_size=6),
    time_left=st.lists(st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0, 8.0]), min_size=6, max_size=6),
    base_kw=st.floats(0.0, 25.0),
    pv_kw=st.floats(0.0, 30.0),
    prices=st.lists(st.floats(0.05, 0.5), min_size=8, max_size=8),
)
def test_online_policies_stay_within_limits_and_needs(
    need: list[float], time_left: list[float], base_kw: float, pv_kw: float, prices: list[float]
) -> None:
    site = make_site(n=6, import_kw=40.0, feeder_kw=25.0, feeder_a=35.0)
    state = make_state(site, need, time_left, base_kw=base_kw, pv_kw=pv_kw)
    snap = make_snapshot(state, prices)
    need_kw = state.energy_needed_kwh / (site.efficiency * state.dt_h)
    # the rule-based DLM and the MPC round an EV's need up to the charger's grid and plan a remainder below
    # one minimum-power step as that step (the projection would switch the smaller request off)
    min_step_kw = np.ceil(site.min_kw / site.resolution_kw - 1e-9) * site.resolution_kw
    rule_cap_kw = np.where(need_kw > 0, np.maximum(need_kw + site.resolution_kw, min_step_kw), 0.0)
    for name in ONLINE:
        d = run_policy(name, site, snap)
        kw = np.asarray(d.charger_kw)
        assert kw.shape == (site.n,)
        cap_kw = rule_cap_kw if name in ("rule_based", "mpc") else need_kw
        assert (kw <= cap_kw + 1e-6).all(), name  # never above an EV's need
        assert (kw[~state.ev_present] == 0).all(), name
        res = project(site, state, kw, d.battery_kw)
        v = limit_violations(site, state, res.charger_kw, res.battery_kw, res.pv_curtailed_kw)
        assert v.total == 0, (name, v.nonzero())
        if name not in ("uncontrolled", "static", "mpc"):
            # the allocators already respect the site limit themselves (the projection is the safety net)
            imp = float(kw.sum()) + base_kw - pv_kw + d.battery_kw
            assert imp <= max(site.import_limit_kw, base_kw - pv_kw) + 1e-6, name


def test_edf_serves_the_earliest_deadline_first() -> None:
    site = make_site(n=2, import_kw=11.0, feeder_kw=100.0)
    state = make_state(site, [10.0, 10.0], [3.0, 1.0])
    d = run_policy("edf", site, make_snapshot(state))
    np.testing.assert_allclose(d.charger_kw, [0.0, 11.0])


def test_llf_serves_the_least_laxity_first() -> None:
    # EV 0 leaves first but has plenty of slack; EV 1 leaves later with almost none
    site = make_site(n=2, import_kw=16.0, feeder_kw=100.0)
    state = make_state(site, [2.0, 30.0], [2.0, 3.0])
    np.testing.assert_allclose(run_policy("llf", site, make_snapshot(state)).charger_kw, [5.0, 11.0])
    np.testing.assert_allclose(run_policy("edf", site, make_snapshot(state)).charger_kw, [8.0, 8.0])
    # 3 kW left for the second EV is below its minimum (6 A x 3 x 230 V = 4.14 kW): it stays off
    tight = make_site(n=2, import_kw=11.0, feeder_kw=100.0)
    np.testing.assert_allclose(run_policy("edf", tight, make_snapshot(state)).charger_kw, [8.0, 0.0])


def test_equal_share_splits_the_meter_headroom_equally() -> None:
    site = make_site(n=4, import_kw=30.0, feeder_kw=100.0)
    state = make_state(site, [20.0, 20.0, 20.0, -1.0], [4.0] * 4, base_kw=10.0, pv_kw=5.0)
    d = run_policy("equal_share", site, make_snapshot(state))
    np.testing.assert_allclose(d.charger_kw, [25.0 / 3] * 3 + [0.0])


def test_priority_share_weights_by_priority() -> None:
    site = make_site(n=2, import_kw=15.0, feeder_kw=100.0)
    state = make_state(site, [20.0, 20.0], [4.0, 4.0], priority=[1, 0])
    d = run_policy("priority_share", site, make_snapshot(state))
    np.testing.assert_allclose(d.charger_kw, [10.0, 5.0])


def test_round_robin_rotates_who_is_served() -> None:
    site = make_site(n=3, import_kw=11.0, feeder_kw=100.0)
    state = make_state(site, [30.0, 30.0, 30.0], [8.0] * 3)
    pol = make_policy("round_robin")
    pol.reset(site)
    served = [int(np.argmax(pol.act(make_snapshot(state)).charger_kw)) for _ in range(3)]
    assert sorted(served) == [0, 1, 2]


def test_static_caps_each_charger_so_all_fit_the_connection() -> None:
    site = make_site(n=4, import_kw=22.0, feeder_kw=100.0)
    state = make_state(site, [30.0] * 4, [8.0] * 4)
    d = run_policy("static", site, make_snapshot(state))
    # 22 kW / 4 = 5.5 kW, held on the chargers' 0.1 A grid: 7.9 A x 3 x 230 V
    np.testing.assert_allclose(d.charger_kw, [7.9 * 0.69] * 4)


# --------------------------------------------------------------------------- rule-based DLM


def test_rule_based_defers_flexible_energy_to_the_cheap_hours() -> None:
    site = make_site(n=2, import_kw=40.0, feeder_kw=100.0)
    # EV 0 needs 2.7 kWh (one step at the 10.97 kW its 11 kW charger holds on its grid) and stays 2 h;
    # the last step of its stay is cheap
    state = make_state(site, [2.7, -1.0], [2.0, 0.0])
    prices = [0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.1]
    # a rule that trusts the declared departures (a fresh one with nothing seen does not: it charges now)
    trusting = RuleBasedDLM(early_prior=0.0)
    trusting.reset(site)
    assert trusting.act(make_snapshot(state, prices)).charger_kw[0] == 0.0
    d = run_policy("rule_based", site, make_snapshot(state, prices))
    assert d.charger_kw[0] == pytest.approx(10.833, abs=1e-9)
    # without slack it must charge now, cheap or not: at full power, as the projection applies it (11 kW
    # rounded down to the charger's 0.069 kW grid)
    urgent = make_state(site, [2.75, -1.0], [0.25, 0.0])
    np.testing.assert_allclose(
        run_policy("rule_based", site, make_snapshot(urgent, prices)).charger_kw, [10.971, 0.0]
    )


def test_rule_based_keeps_flexible_charging_under_the_peak_target() -> None:
    site = make_site(n=3, import_kw=40.0, feeder_kw=100.0)
    state = make_state(site, [5.0, 5.0, 5.0], [8.0] * 3, base_kw=5.0)
    snap = make_snapshot(state, [0.2] * 32, peak_kw=12.0)
    d = run_policy("rule_based", site, snap)
    assert float(d.charger_kw.sum()) + 5.0 <= 12.0 + 1e-6  # 15 kWh over 8 h fits under the peak so far


def test_rule_based_raises_the_target_only_for_deadlines() -> None:
    site = make_site(n=1, import_kw=40.0, feeder_kw=100.0)
    state = make_state(site, [2.75], [0.25], base_kw=5.0)
    d = run_policy("rule_based", site, make_snapshot(state, [0.2] * 8, peak_kw=6.0))
    np.testing.assert_allclose(d.charger_kw, [10.971])  # the deadline wins over the 6 kW peak (full power)


def test_rule_based_uses_pv_surplus_first() -> None:
    site = make_site(n=2, import_kw=40.0, feeder_kw=100.0)
    state = make_state(site, [10.0, 10.0], [8.0, 8.0], base_kw=2.0, pv_kw=14.0)
    prices = [0.3] * 8 + [0.05] * 24  # later hours are cheaper to import, but PV is free now
    d = run_policy("rule_based", site, make_snapshot(state, prices))
    assert float(d.charger_kw.sum()) >= 12.0 - 1e-6


def test_rule_based_v2g_only_where_the_ev_still_makes_its_departure_energy() -> None:
    site = make_site(n=2, import_kw=40.0, feeder_kw=100.0, bidirectional=True)
    # an expensive hour now, cheap later; EV 0 has lots of slack, EV 1 none
    state = make_state(site, [5.0, 40.0], [8.0, 4.0], base_kw=20.0, dischargeable_kwh=20.0)
    prices = [0.6] * 4 + [0.1] * 28
    pol = RuleBasedDLM(use_battery=False)
    pol.reset(site)
    d = pol.act(make_snapshot(state, prices))
    assert d.charger_kw[0] < 0  # discharging into the expensive hour
    assert d.charger_kw[1] >= 0
    out_kwh = -d.charger_kw[0] * 0.25 / 1.0
    assert 5.0 + out_kwh <= 11.0 * 1.0 * (8.0 - 0.25) + 1e-9


def test_rule_based_reserves_what_deadlines_force_through_a_shared_node() -> None:
    # EVs 0 and 1 sit on feeder f1 (11 kW) and both leave in 1 h needing 5 kWh each: alone, each could
    # wait for the cheap steps, but together 10 kWh must pass 11 kW in 4 steps, so charging starts now
    prices = [0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    tight = make_site(n=4, import_kw=40.0, feeder_kw=11.0)
    state = make_state(tight, [5.0, 5.0, -1.0, -1.0], [1.0, 1.0, 0.0, 0.0])
    trusting = RuleBasedDLM(early_prior=0.0)  # trusts the declared departures (nothing seen yet)
    trusting.reset(tight)
    d = trusting.act(make_snapshot(state, prices, peak_kw=40.0))
    # 10 kWh minus 90 % of the node's 3 later steps (7.425 kWh) must flow now: 10.3 kW
    assert 10.3 - 1e-6 <= float(d.charger_kw[:2].sum()) <= 11.0 + 1e-6
    wide = make_site(n=4, import_kw=40.0, feeder_kw=100.0)
    trusting.reset(wide)
    d_wide = trusting.act(make_snapshot(state, prices, peak_kw=40.0))
    np.testing.assert_allclose(d_wide.charger_kw, 0.0)  # without the shared node it waits for cheap hours


def test_rule_based_starts_early_when_evs_leave_together_under_the_peak_target() -> None:
    # the same two EVs behind an 11 kW connection: what the later steps under the target cannot carry
    # (95 % of 3 steps at 11 kW = 7.84 kWh of the 10 kWh) is charged now
    site = make_site(n=4, import_kw=11.0, feeder_kw=100.0)
    state = make_state(site, [5.0, 5.0, -1.0, -1.0], [1.0, 1.0, 0.0, 0.0])
    prices = [0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    d = run_policy("rule_based", site, make_snapshot(state, prices, peak_kw=11.0))
    assert 8.6 <= float(d.charger_kw.sum()) <= 11.0 + 1e-6


def test_rule_based_plans_a_small_remainder_as_one_minimum_power_step() -> None:
    # 0.2 kWh left (0.8 kW over a step) is less than half the 4.14 kW minimum (6 A x 3 x 230 V): asked
    # as it is, the projection would pause it (or lift it wherever it falls). Planned as one minimum
    # step, it waits for the step with room under the 10 kW peak already paid (base 9 kW, then 5 kW).
    site = make_site(n=1, import_kw=40.0, feeder_kw=100.0)
    base = np.array([9.0, 9.0, 9.0, 5.0] + [9.0] * 8)
    pol = RuleBasedDLM()
    pol.reset(site)
    need, delivered, imports = 0.2, 0.0, []
    for t in range(4):
        state = make_state(site, [need], [1.0 - 0.25 * t], base_kw=float(base[t]))
        window = ForecastWindow(base[t : t + 8], np.zeros(8), np.full(8, 0.2), np.full(8, 0.05))
        snap = Snapshot(
            state=state,
            timestamp=np.datetime64("2025-06-02T10:00") + np.timedelta64(15 * t, "m"),
            step_index=t,
            import_price_per_kwh=0.2,
            export_price_per_kwh=0.05,
            forecast=window,
            peak_import_kw=10.0,
        )
        d = pol.act(snap)
        res = project(site, state, d.charger_kw, d.battery_kw)
        np.testing.assert_allclose(res.charger_kw, d.charger_kw, atol=1e-9)  # the projection keeps it
        kwh = float(res.charger_kw[0]) * 0.25  # efficiency 1
        delivered += kwh
        need = max(need - kwh, 0.0)
        imports.append(float(res.site_import_kw))
    assert delivered == pytest.approx(4.14 * 0.25)  # the EV got its 0.2 kWh, in one minimum-power step
    np.testing.assert_allclose(imports, [9.0, 9.0, 9.0, 9.14])  # in the last step, under the 10 kW peak
