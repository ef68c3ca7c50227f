"""The rule-based DLM's record of arrivals (:class:`agents.rule_arrivals.ArrivalRecord`): what arrives in a
step of the day on the days seen is what it expects in that step of the coming days."""

from __future__ import annotations

import numpy as np
import pytest

from agents.rule_arrivals import ArrivalRecord
from envs.env import ChargingSiteEnv
from tests.test_env_support import tiny_scenario

STEPS_PER_DAY = 96


def test_the_record_expects_what_arrived_at_that_time_on_the_days_seen() -> None:
    # one EV a day, plugged in at step 8 of the day (02:00 local), asking 5 kWh on day 1 and 7 kWh on day 2
    rows = [
        {"charger_id": "c0", "arrival": 8, "departure": 20, "energy_kwh": 5.0},
        {
            "charger_id": "c0",
            "arrival": STEPS_PER_DAY + 8,
            "departure": STEPS_PER_DAY + 20,
            "energy_kwh": 7.0,
        },
    ]
    sc = tiny_scenario(3 * STEPS_PER_DAY, rows, import_limit_kw=100.0)
    env = ChargingSiteEnv(scenario=sc, step=None)
    env.reset(seed=0)
    record = ArrivalRecord(sc.site.timezone)
    seen: dict[int, np.ndarray] = {}
    for t in range(2 * STEPS_PER_DAY + 1):
        snap = env.snapshot()
        record.observe(snap)
        if t in (0, STEPS_PER_DAY, 2 * STEPS_PER_DAY):
            seen[t] = record.expected_kwh(snap, 16)
        env.step(np.zeros(env.site.n))
    assert not seen[0].any()  # nothing seen yet: no arrivals expected
    assert seen[STEPS_PER_DAY][8] == pytest.approx(5.0)  # what came at step 8 of day 1
    assert seen[2 * STEPS_PER_DAY][8] == pytest.approx(6.0)  # the mean over both days
    assert np.delete(seen[2 * STEPS_PER_DAY], 8) == pytest.approx(np.zeros(15))
