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
import pytest

from agents.base import Policy
from agents.baselines import llf
from agents.rollout import rollout
from agents.rule_based import RuleBasedDLM
from envs.env import ChargingSiteEnv
from tests.test_env_support import at, tiny_scenario

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


def _short_kwh(pol: Policy) -> dict[str, float]:
    """What each EV left without (kWh of its need) under ``pol``; the connection (13 kW, 2 kW base load)
    holds one charger at full power."""
    sc = tiny_scenario(STEPS, _sessions(), import_limit_kw=13.0, penalty_per_kwh=20.0)
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
