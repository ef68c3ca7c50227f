"""The rule-based DLM's record of arrivals (:class:`agents.rule_arrivals.ArrivalRecord`): what arrives in a
step of the day on the days seen is what it expects in that step of the coming days."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agents.rule_arrivals import ArrivalRecord, arrivals_due_kwh
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


def test_on_the_first_day_the_next_hour_brings_what_the_last_hour_brought_as_far_as_chargers_are_free() -> (
    None
):
    # two chargers; one EV arrives at step 2 asking 3 kWh, and a second asks 5 kWh at step 6: one hour
    # after the first, the other charger is still free
    rows = [
        {"charger_id": "c0", "arrival": 2, "departure": 40, "energy_kwh": 3.0},
        {"charger_id": "c1", "arrival": 6, "departure": 40, "energy_kwh": 5.0},
    ]
    sc = tiny_scenario(48, rows, import_limit_kw=100.0)
    env = ChargingSiteEnv(scenario=sc, step=None)
    env.reset(seed=0)
    record = ArrivalRecord(sc.site.timezone)
    for _ in range(4):
        snap = env.snapshot()
        record.observe(snap)
        env.step(np.zeros(env.site.n))
    snap = env.snapshot()
    record.observe(snap)
    got = record.expected_kwh(snap, 12)
    # 3 kWh came in the last hour (4 steps): 0.75 kWh a step for the next hour, at most 1 free x 3 kWh
    assert got[0] == 0.0
    assert got[1:5] == pytest.approx(np.full(4, 0.75))
    assert got.sum() == pytest.approx(3.0)
    assert record.stay_steps(0.25) == 38
    for _ in range(2):  # the second EV comes: no charger is free, no arrival expected
        env.step(np.zeros(env.site.n))
        snap = env.snapshot()
        record.observe(snap)
    assert record.expected_kwh(snap, 12).sum() == 0.0


def test_arrivals_are_due_a_stay_after_they_arrive() -> None:
    arriving = np.array([0.0, 2.0, 0.0, 5.0])
    assert arrivals_due_kwh(arriving, 3, np.array([3, 4, 6, 9])) == pytest.approx([0.0, 2.0, 7.0, 7.0])


def test_a_charger_an_ev_leaves_within_the_hour_takes_an_arrival_on_the_first_day() -> None:
    # two chargers, both taken at step 2 by EVs asking 3 kWh each; the one on c0 leaves at step 7: the
    # next hour may bring another EV once it left (the site is full now, not then)
    rows = [
        {"charger_id": "c0", "arrival": 2, "departure": 7, "energy_kwh": 3.0},
        {"charger_id": "c1", "arrival": 2, "departure": 40, "energy_kwh": 3.0},
    ]
    sc = tiny_scenario(48, rows, import_limit_kw=100.0)
    env = ChargingSiteEnv(scenario=sc, step=None)
    env.reset(seed=0)
    record = ArrivalRecord(sc.site.timezone)
    for _ in range(4):
        record.observe(env.snapshot())
        env.step(np.zeros(env.site.n))
    snap = env.snapshot()  # step 4: the EV on c0 leaves in 3 steps
    record.observe(snap)
    got = record.expected_kwh(snap, 12)
    # 6 kWh came in the last hour (1.5 kWh a step), as far as 1 freed charger x 3 kWh, once it is free
    assert got[:3] == pytest.approx(np.zeros(3))
    assert got[3] == pytest.approx(3.0)
    assert got.sum() == pytest.approx(3.0)


def test_a_record_started_from_past_sessions_expects_their_arrivals_on_the_first_day() -> None:
    from agents.mpc_demand import ProfileDemand

    rows = [{"charger_id": "c0", "arrival": 40, "departure": 60, "energy_kwh": 1.0}]
    sc = tiny_scenario(STEPS_PER_DAY, rows, import_limit_kw=100.0)
    tz = sc.site.timezone
    start = sc.timeseries.index[0].tz_convert(tz)
    # a past day a week before (the same day of the week), with one EV at 02:00 local asking 8 kWh for 4 h
    past = start.normalize() - pd.Timedelta(days=7)
    arrival = past + pd.Timedelta(hours=2)
    history = pd.DataFrame(
        {"arrival": [arrival], "departure": [arrival + pd.Timedelta(hours=4)], "energy_kwh": [8.0]}
    )
    prior = ProfileDemand.fit(history, tz, past, past + pd.Timedelta(days=1), 11.0)
    env = ChargingSiteEnv(scenario=sc, step=None)
    env.reset(seed=0)
    record = ArrivalRecord(tz, prior)
    snap = env.snapshot()
    record.observe(snap)
    got = record.expected_kwh(snap, 16)
    local = pd.date_range(start, periods=16, freq="15min")
    at_two = np.flatnonzero((local.hour == 2) & (local.minute == 0))
    assert len(at_two) == 1 and at_two[0] > 0
    assert got[at_two[0]] == pytest.approx(8.0)  # the past day's arrival, with nothing seen yet
    assert np.delete(got, at_two[0]) == pytest.approx(np.zeros(15))
    assert record.stay_steps(0.25) == 16  # the past sessions' stays


def test_arrivals_are_expected_to_stay_as_long_as_those_seen_at_that_time_of_day() -> None:
    # day 1: an EV at step 8 stays 12 steps, one at step 40 stays 4; on day 2 each time keeps its stay
    rows = [
        {"charger_id": "c0", "arrival": 8, "departure": 20, "energy_kwh": 5.0},
        {"charger_id": "c1", "arrival": 40, "departure": 44, "energy_kwh": 2.0},
    ]
    sc = tiny_scenario(2 * STEPS_PER_DAY, rows, import_limit_kw=100.0)
    env = ChargingSiteEnv(scenario=sc, step=None)
    env.reset(seed=0)
    record = ArrivalRecord(sc.site.timezone)
    for _ in range(STEPS_PER_DAY):
        record.observe(env.snapshot())
        env.step(np.zeros(env.site.n))
    snap = env.snapshot()
    record.observe(snap)
    stays = record.stays_ahead(snap, 48)
    assert stays[8] == 12 and stays[40] == 4
    assert record.stay_steps(0.25) == 8  # elsewhere: the mean of all (no arrival in the last hour)
    assert np.delete(stays, [8, 40]) == pytest.approx(np.full(46, 8))
    due = arrivals_due_kwh(np.where(np.isin(np.arange(48), [8, 40]), 1.0, 0.0), stays, np.array([20, 44, 47]))
    assert due == pytest.approx([1.0, 2.0, 2.0])
