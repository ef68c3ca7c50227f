"""The order in which the rule-based DLM (:class:`agents.rule_based.RuleBasedDLM`) serves EVs on a full
connection: least laxity first on the time left the drivers declared, as LLF, not on the stay it plans.

Once drivers are seen to leave before the departure they declared, the rule plans every EV on its declared
stay less the share drivers are seen to cut (:meth:`agents.rule_drivers.DriverRecord.planned_left_h`). That
cut scales with the stay: an EV with a long stay and a large need gets a planned laxity below that of an
EV whose driver leaves now (or is past the departure declared, shown as leaving at the end of each step).
Served in that order on a full connection, the EV that leaves now left short: on the real week
jpl-2021-08-02 (declared mode) the rule left 74 EVs short of their declaration against LLF's 66."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agents.allocate import Resources
from agents.base import Policy
from agents.baselines import llf
from agents.rollout import rollout
from agents.rule_based import RuleBasedDLM, in_order
from envs.config import site_from_dict
from envs.env import ChargingSiteEnv
from envs.scenario import Scenario, make_scenario
from tests.test_agents import make_site
from tests.test_env_support import at, flat_timeseries, tiny_scenario, tiny_site

STEPS = 48
LONG_KWH = 30.0
"""EV ``long`` on c0 (11 kW, efficiency 0.9): 8 h declared and kept, 3.03 h of charging at full power"""
LATE_KWH = 8.0
"""EV ``late`` on c1 (11 kW, efficiency 1): declared 15 minutes, stays 1.5 h, 0.73 h of charging"""


def _sessions() -> list[dict[str, object]]:
    """Four 1 kWh EVs whose drivers leave 6 steps before the departure they declared (the rule's record
    then plans on a quarter of each declared stay), then, from step 6 on, ``long`` and ``late``."""
    early = [
        {
            "charger_id": c,
            "arrival": a,
            "departure": a + 2,
            "declared_departure": at(a + 8),
            "energy_kwh": 1.0,
        }
        for c, a in (("c0", 0), ("c1", 0), ("c0", 2), ("c1", 2))
    ]
    return [
        *early,
        {
            "session_id": "long",
            "charger_id": "c0",
            "arrival": 6,
            "departure": 38,
            "declared_departure": at(38),
            "energy_kwh": LONG_KWH,
        },
        {
            "session_id": "late",
            "charger_id": "c1",
            "arrival": 6,
            "departure": 12,
            "declared_departure": at(7),
            "energy_kwh": LATE_KWH,
        },
    ]


def _short_kwh(pol: Policy, scenario: Scenario | None = None) -> dict[str, float]:
    """What each EV left without (kWh of its need) under ``pol`` on ``scenario`` (default: :func:`_sessions`
    on a connection, 13 kW with 2 kW base load, that holds one charger at full power)."""
    sc = scenario or tiny_scenario(STEPS, _sessions(), import_limit_kw=13.0, penalty_per_kwh=20.0)
    env = ChargingSiteEnv(scenario=sc, step=None)
    env.reset(seed=0)
    pol.reset(env.site, sc)
    for _ in rollout(pol, env, STEPS):
        pass
    ids = env.episode.sessions.session_ids
    out = env.sim.session_out[0, 0, : len(ids)]
    assert np.isfinite(out).all()  # every EV left inside the episode
    return {sid: float(v) for sid, v in zip(ids, out, strict=True)}


def test_on_a_full_connection_the_ev_leaving_now_goes_before_one_with_a_long_stay() -> None:
    short = _short_kwh(RuleBasedDLM(v2g=False))
    assert short["late"] == pytest.approx(0.0, abs=0.1)
    assert short["long"] == pytest.approx(0.0, abs=0.1)


def test_the_rule_leaves_no_ev_shorter_than_llf_when_drivers_leave_early() -> None:
    rule, base = _short_kwh(RuleBasedDLM(v2g=False)), _short_kwh(llf())
    assert base["late"] == pytest.approx(0.0, abs=0.1)  # LLF serves the EV leaving now first
    for sid, kwh in rule.items():
        assert kwh <= base[sid] + 0.1, sid


FORCED_KWH = 10.0
"""EV ``forced`` on c0 (11 kW, efficiency 0.9): arrives at step 0 declaring 12 h and keeps it, waits 2 h
behind ``blocker``; then 10 h are left, 1 h of them planned (the record cuts 75 % of its declared stay),
less than the 1.01 h it needs at full power: its plan forces it, with 9 h of declared laxity"""
SHORT_KWH = 6.0
"""EV ``short`` on c1 (11 kW, efficiency 1): arrives at step 8 declaring 8 h (7.45 h of laxity, 2 h planned:
its plan forces nothing) and leaves after 45 minutes"""


def _forced_scenario() -> Scenario:
    """Three chargers on a connection that holds one at full power (13 kW, 2 kW base load). ``blocker`` (c2)
    takes it for the first 2 h with no laxity; meanwhile four 0.5 kWh EVs on c1 leave 6 steps before the
    departure they declared (the rule's record then cuts 75 % of every declared stay); then ``forced`` and
    ``short`` share the connection."""
    site = tiny_site(import_limit_kw=13.0, penalty_per_kwh=20.0)
    chargers = site["chargers"]
    assert isinstance(chargers, list)
    site["chargers"] = [*chargers, {**chargers[0], "id": "c2", "efficiency": 1.0}]
    rows: list[dict[str, object]] = [
        {"session_id": f"early{a}", "charger_id": "c1", "arrival": a, "departure": a + 2,
         "declared_departure": at(a + 8), "energy_kwh": 0.5}
        for a in (0, 2, 4, 6)
    ]  # fmt: skip
    rows += [
        {"session_id": "blocker", "charger_id": "c2", "arrival": 0, "departure": 8, "energy_kwh": 22.0},
        {"session_id": "forced", "charger_id": "c0", "arrival": 0, "departure": 48,
         "declared_departure": at(48), "energy_kwh": FORCED_KWH},
        {"session_id": "short", "charger_id": "c1", "arrival": 8, "departure": 11,
         "declared_departure": at(40), "energy_kwh": SHORT_KWH},
    ]  # fmt: skip
    for r in rows:
        r["arrival"], r["departure"] = at(float(r["arrival"])), at(float(r["departure"]))  # type: ignore[arg-type]
        r.setdefault("declared_departure", r["departure"])
    return make_scenario(site_from_dict(site), pd.DataFrame(rows), flat_timeseries(STEPS), "forced")


def test_what_the_planned_stay_forces_goes_out_in_llf_order() -> None:
    """The planned stay cuts every EV's by a share of its declared stay, so it forces an EV that declared a
    long stay (``forced``, 9 h of declared laxity) and not one with a shorter stay and less laxity
    (``short``, 7.45 h). Forced energy served first took the whole connection, and ``short``, whose driver
    left after 45 minutes, left with nothing. The rule draws what its plan forces, but hands it out in
    LLF's order: ``short`` first, then ``forced``, with hours to spare."""
    sc = _forced_scenario()
    rule, base = _short_kwh(RuleBasedDLM(v2g=False), sc), _short_kwh(llf(), sc)
    assert base["short"] == pytest.approx(0.0, abs=0.1)
    assert rule["short"] == pytest.approx(0.0, abs=0.1)
    assert rule["forced"] == pytest.approx(0.0, abs=0.1)
    for sid, kwh in rule.items():
        assert kwh <= base[sid] + 0.1, sid


def test_llfs_order_also_hands_out_the_room_the_fills_left_under_the_target() -> None:
    """The fills leave room under the target where it is below the minimum power of the EV that wanted it
    (on the real week: 1.1 kW left, 1.3 kW wanted, a 1.25 kW minimum). Handed out again in LLF's order (c1
    first), c1 takes the 6.6 kW it wanted from c0, which may then take that room: on jpl-2021-08-02
    (declared mode) the rule left 0.6-1.1 kW of a full connection unused in congested steps, LLF did not."""
    site = make_site(3, import_kw=100.0, feeder_kw=100.0)
    res = Resources.from_site(site)
    alloc = np.array([6.6, 5.3, 0.0])
    want = np.array([6.6, 6.6, 0.0])
    order = np.array([1, 0])
    spare = np.zeros(res.shape[1])
    spare[-1] = 1.1  # room left under the target at the connection
    kept = in_order(res, alloc, want, order, site.min_kw)
    np.testing.assert_allclose(kept, [5.3, 6.6, 0.0])  # the same load: c0 gives c1 what it wanted
    np.testing.assert_allclose(in_order(res, alloc, want, order, site.min_kw, spare), [6.4, 6.6, 0.0])
    # never beyond what an EV wants, nor the room
    np.testing.assert_allclose(in_order(res, alloc, want, order, site.min_kw, 10 * spare), [6.6, 6.6, 0.0])
