"""The rule-based DLM's top-up (:func:`agents.rule_based.top_up_kw`): drivers declare a
little less than their EV takes, and a rule that stops at the declared energy leaves them short of what
they needed.

Where the site's log shows EVs taking more than declared, every EV whose declared energy is in is offered
up to what EVs were seen to take beyond their declaration, with what is left under the peak target. The
rule does not know how much more an EV takes (only the simulator does): its offers are the same whatever the
EV's actual need, an EV that is full takes no more, and a battery with room to spare gets at most the
top-up."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.allocate import Resources, resource_use, site_headroom_kw
from agents.rollout import rollout
from agents.rule_based import RuleBasedDLM
from agents.rule_drivers import OfferRecord, under_declared_kwh
from envs.env import ChargingSiteEnv
from envs.projection import charger_bounds
from tests.test_agents import make_site, make_snapshot, make_state
from tests.test_env_support import tiny_scenario

STEPS = 16
DECLARED_KWH = 5.0


class Episode(NamedTuple):
    imports_kw: np.ndarray
    """site import per step"""
    delivered_kwh: float
    missing_kwh: float
    """what the EV left without, of its actual need"""
    charger_kw: np.ndarray
    """the rule's decisions, (steps, chargers)"""
    offers_kwh: np.ndarray
    """the top-up's offers, (steps, chargers)"""


def _run(actual_kwh: float, top_up_kwh: float, battery_kwh: float = float("nan")) -> Episode:
    """One EV on the 11 kW charger c1 (efficiency 1) for 4 h whose driver declared :data:`DECLARED_KWH`; a
    2 kW base load, a demand charge, a flat price (0.2 per kWh) and a missing-energy penalty of 1 per
    kWh."""
    row: dict[str, object] = {
        "charger_id": "c1",
        "arrival": 0,
        "departure": STEPS,
        "energy_kwh": actual_kwh,
        "declared_energy_kwh": DECLARED_KWH,
        "battery_kwh": battery_kwh,
        "arrival_soc": 0.2 if np.isfinite(battery_kwh) else float("nan"),
    }
    sc = tiny_scenario(STEPS + 4, [row], import_limit_kw=40.0, demand_charge_per_kw=10.0)
    env = ChargingSiteEnv(scenario=sc, step=None)
    env.reset(seed=0)
    pol = RuleBasedDLM(top_up_kwh=top_up_kwh, v2g=False)
    pol.reset(env.site, sc)
    imports, decisions, offers = [], [], []
    for s in rollout(pol, env, STEPS + 4):
        imports.append(float(s.info["site_import_kw"]))
        decisions.append(np.asarray(s.decision.charger_kw, dtype=float))
        offers.append(pol.offers.last_offer_kwh)
    return Episode(
        np.array(imports),
        float(s.info["energy_delivered_total_kwh"]),
        float(env.sim.missing_total_kwh[0]),
        np.array(decisions),
        np.array(offers),
    )


def test_a_rule_that_stops_at_the_declared_energy_leaves_an_under_declared_ev_short() -> None:
    run = _run(actual_kwh=DECLARED_KWH + 1.0, top_up_kwh=0.0)
    assert run.delivered_kwh == pytest.approx(DECLARED_KWH, abs=0.05)
    assert run.missing_kwh == pytest.approx(1.0, abs=0.05)


def test_where_evs_are_seen_to_take_more_than_declared_the_rule_tops_up_without_raising_the_peak() -> None:
    stop = _run(actual_kwh=DECLARED_KWH + 1.0, top_up_kwh=0.0)
    top = _run(actual_kwh=DECLARED_KWH + 1.0, top_up_kwh=2.0)
    assert top.missing_kwh == pytest.approx(0.0, abs=1e-6)
    assert top.delivered_kwh == pytest.approx(
        DECLARED_KWH + 1.0, abs=1e-6
    )  # the EV is full: it takes no more
    assert top.imports_kw.max() <= stop.imports_kw.max() + 1e-6


def test_a_battery_with_room_to_spare_gets_at_most_the_top_up() -> None:
    # the EV needs what was declared; its 40 kWh battery (20 % full) has 27 kWh more room: the rule cannot
    # know that it needs no more, and offers it what EVs were seen to take beyond their declaration
    run = _run(actual_kwh=DECLARED_KWH, top_up_kwh=2.0, battery_kwh=40.0)
    assert run.missing_kwh == pytest.approx(0.0, abs=1e-6)
    assert DECLARED_KWH + 1.0 < run.delivered_kwh <= DECLARED_KWH + 2.0 + 1e-6


def test_the_rule_decides_the_same_whatever_the_ev_takes_beyond_its_declaration() -> None:
    # same declarations, different actual energy (only the simulator knows it): the same first decision
    # and the same offers every step; what the EV takes of them is the physics
    runs = [_run(actual_kwh=DECLARED_KWH + extra, top_up_kwh=2.0) for extra in (0.0, 0.5, 1.0, 4.0)]
    for run in runs[1:]:
        np.testing.assert_array_equal(run.charger_kw[0], runs[0].charger_kw[0])
        # (to rounding: an EV full at its declared energy takes its last declared sliver unrounded)
        np.testing.assert_allclose(run.offers_kwh, runs[0].offers_kwh, rtol=0, atol=1e-9)
    assert 1.0 < runs[0].offers_kwh.sum() <= 2.0 + 1e-9  # it offers the top-up (as the peak allows), no more
    delivered = [run.delivered_kwh - DECLARED_KWH for run in runs]
    assert delivered == pytest.approx([0.0, 0.5, 1.0, runs[0].offers_kwh.sum()], abs=1e-6)


def test_an_ev_full_at_its_declared_energy_takes_none_of_the_offer_and_nothing_changes() -> None:
    base = _run(actual_kwh=DECLARED_KWH, top_up_kwh=0.0)
    top = _run(actual_kwh=DECLARED_KWH, top_up_kwh=2.0)
    np.testing.assert_array_equal(base.imports_kw, top.imports_kw)
    assert (base.delivered_kwh, base.missing_kwh) == (top.delivered_kwh, top.missing_kwh)


def test_where_drivers_declare_the_top_up_is_at_least_one_minimum_power_step() -> None:
    # a log of a few days may show no EV taking more than declared (top_up_kwh 0); the least a charger can
    # add is one step at its minimum (make_site: 6 A on three phases, 4.14 kW, 1.035 kWh in 15 minutes), and
    # the projection lifts any smaller request to it (LLF's last sliver, rounded down on the grid, gives
    # such a step to an EV by chance): the rule offers it to an EV whose declared energy is in this step
    site = make_site(n=2, import_kw=30.0)
    step_kwh = float(site.min_kw[0]) * 0.25
    state = make_state(site, [1.2, -1.0], [0.25, 0.0])  # 4.8 kW finish it now; 20 kWh of room beyond

    def act(top_up_kwh: float, min_steps: float) -> tuple[np.ndarray, np.ndarray]:
        pol = RuleBasedDLM(top_up_kwh=top_up_kwh, top_up_min_steps=min_steps)
        pol.reset(site)
        kw = np.asarray(pol.act(make_snapshot(state, peak_kw=30.0)).charger_kw, dtype=float)
        return kw, pol.offers.last_offer_kwh

    stop, none = act(0.0, 0.0)
    top, offer = act(0.0, 1.0)
    assert none.sum() == 0.0 and stop[0] == pytest.approx(4.8, abs=0.07)
    assert offer[0] == pytest.approx(step_kwh, abs=1e-9)
    assert top[0] - stop[0] == pytest.approx(step_kwh / 0.25, abs=1e-9)
    # where the log shows more, the log's top-up stands (the step is a floor, not an addition)
    log, log_offer = act(1.5, 0.0)
    both, both_offer = act(1.5, 1.0)
    np.testing.assert_array_equal(both, log)
    assert both_offer[0] == log_offer[0] == pytest.approx(1.5, abs=0.069 * 0.25)  # on the grid


def test_the_log_gives_the_quantile_of_what_under_declared_evs_took_beyond_their_declaration() -> None:
    log = pd.DataFrame(
        {
            "energy_kwh": [5.0, 3.0, 6.0, 7.0, 12.0, 4.05, 8.0],
            "declared_energy_kwh": [4.0, 10.0, 5.0, 5.0, 6.0, 4.0, np.nan],
        }
    )
    # excess over 0.1 kWh: 1, 1, 2, 6 (4.05 - 4 is not; a missing declaration is what was taken)
    assert under_declared_kwh(log, quantile=0.5) == pytest.approx(1.5)
    assert under_declared_kwh(log, quantile=1.0) == pytest.approx(6.0)
    assert under_declared_kwh(log.iloc[[1, 5, 6]]) == 0.0
    assert under_declared_kwh(log.iloc[:0]) == 0.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    need=st.lists(st.one_of(st.just(-1.0), st.floats(0.0, 8.0)), min_size=6, max_size=6),
    extra=st.lists(st.floats(0.0, 6.0), min_size=6, max_size=6),
    more=st.lists(st.floats(0.0, 6.0), min_size=6, max_size=6),
    time_left=st.lists(st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0, 8.0]), min_size=6, max_size=6),
    base_kw=st.floats(0.0, 25.0),
    pv_kw=st.floats(0.0, 30.0),
    prices=st.lists(st.floats(0.05, 0.5), min_size=8, max_size=8),
    top_up_kwh=st.floats(0.0, 4.0),
    peak_kw=st.floats(20.0, 40.0),  # a peak already paid for: room under the target to top up in
)
def test_the_top_up_only_adds_within_every_limit_to_evs_whose_declared_need_is_in_whatever_their_room(
    need: list[float],
    extra: list[float],
    more: list[float],
    time_left: list[float],
    base_kw: float,
    pv_kw: float,
    prices: list[float],
    top_up_kwh: float,
    peak_kw: float,
) -> None:
    site = make_site(n=6, import_kw=40.0, feeder_kw=25.0, feeder_a=35.0)
    state = make_state(site, need, time_left, base_kw=base_kw, pv_kw=pv_kw)
    eff, dt = site.efficiency, float(state.dt_h)

    def act(policy: RuleBasedDLM, extra_kwh: list[float]) -> np.ndarray:
        room = np.where(
            state.ev_present, np.maximum(state.energy_needed_kwh, 0.0) + np.asarray(extra_kwh), 0.0
        )
        policy.reset(site)
        return np.asarray(
            policy.act(
                make_snapshot(dataclasses.replace(state, energy_room_kwh=room), prices, peak_kw=peak_kw)
            ).charger_kw
        )

    stop, top = RuleBasedDLM(), RuleBasedDLM(top_up_kwh=top_up_kwh)
    kw_stop = act(stop, extra)
    kw_top = act(top, extra)
    offer_kwh = top.offers.last_offer_kwh
    added = kw_top - kw_stop
    assert (added >= -1e-9).all()  # it takes nothing from a declared need
    assert (added <= offer_kwh / (eff * dt) + 1e-9).all()  # nor more than it offers
    met = state.ev_present & (state.energy_needed_kwh <= kw_stop * eff * dt + 1e-9)
    assert (offer_kwh[~met] == 0).all()  # offered only to EVs whose declared energy is in by the step's end
    assert (offer_kwh <= top_up_kwh + site.resolution_kw * eff * dt + 1e-9).all()  # the top-up, on the grid
    room = np.where(state.ev_present, np.maximum(state.energy_needed_kwh, 0.0) + np.asarray(extra), 0.0)
    _, hi_kw = charger_bounds(site, dataclasses.replace(state, energy_room_kwh=room))
    assert (kw_top <= hi_kw + 1e-9).all()  # never beyond the room
    res = Resources.from_site(site)
    assert (resource_use(res, kw_top) <= res.limits(site_headroom_kw(site, state)) + 1e-6).all()
    # the room above the declared need is what the EV would take: it changes no offer (where it changes
    # nothing the declared energy is planned on: the room caps a remainder's minimum-power step)
    more_room = list(np.add(extra, more))
    if np.array_equal(act(RuleBasedDLM(), more_room), kw_stop):
        act(top, more_room)
        np.testing.assert_allclose(top.offers.last_offer_kwh, offer_kwh, rtol=0, atol=1e-9)


def test_the_record_of_offers_counts_each_step_once_and_starts_again_for_a_new_ev() -> None:
    site = make_site(n=2)
    snap = make_snapshot(make_state(site, [3.0, 3.0], [4.0, 4.0]), [0.2] * 8)
    at = [dataclasses.replace(snap, step_index=k) for k in range(4)]
    none, first = np.zeros(2, dtype=bool), np.array([True, False])
    record = OfferRecord()
    np.testing.assert_array_equal(record.offered_kwh(at[0], none), [0.0, 0.0])
    record.offer(np.array([0.5, 1.0]))
    record.offer(np.array([0.7, 1.0]))  # the step decided again: its last offer counts
    np.testing.assert_array_equal(record.offered_kwh(at[1], none), [0.7, 1.0])
    np.testing.assert_array_equal(record.offered_kwh(at[1], none), [0.7, 1.0])  # the same step again
    record.offer(np.array([0.3, 0.0]))
    np.testing.assert_array_equal(record.offered_kwh(at[2], first), [0.0, 1.0])  # a new EV on the first
    record.offer(np.array([0.2, 0.5]))
    np.testing.assert_allclose(record.offered_kwh(at[3], none), [0.2, 1.5])
