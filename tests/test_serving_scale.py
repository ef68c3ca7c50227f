"""What keeps the service and the simulator up with many stations: unit conversions on plain floats and
arrays that give the same values as the site-wide conversion, TxProfiles valid without the library's
check, the control cycle's CPU time beside its wall time, and simulated stations that reconnect, drop off
on time and may leave the schema checks to the tests."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.base import Decision
from envs.config import site_from_dict
from envs.core import SiteArrays, Snapshot
from envs.share import (
    RateUnit,
    amps_mask,
    kw_to_profile,
    kw_to_profile_at,
    kw_to_profile_one,
    profile_to_kw,
    profile_to_kw_at,
    profile_to_kw_one,
)
from serving.config import connector_map
from serving.dispatch import Batch, signed_profile, signed_profile_row, tx_values
from serving.metrics import Metrics
from serving.profiles import set_charging_profile
from serving.service import Service
from stationsim.simulator import SimOptions, SiteSimulator
from tests.test_serving_helpers import PASSWORDS, FullPower, serving_config, small_scenario, small_site

SPEED = 600.0


def _mixed_site() -> SiteArrays:
    """A charger of each kind: A on one phase, A on three, W on three, W on one; all bidirectional."""
    kinds = [("A", 1), ("A", 3), ("W", 3), ("W", 1)]
    chargers = [
        {
            "id": f"c{i}", "node": "main", "max_current_a": 16.0 + 4 * i, "rate_unit": unit, "phases": ph,
            "bidirectional": True, "max_discharge_kw": 7.0 + i, **({"phase": "L2"} if ph == 1 else {}),
        }
        for i, (unit, ph) in enumerate(kinds)
    ]  # fmt: skip
    cfg = {
        "name": "mixed",
        "grid": {"import_limit_kw": 100.0},
        "nodes": [{"id": "main", "max_power_kw": 100.0}],
    }
    return SiteArrays.from_config(site_from_dict({**cfg, "chargers": chargers}))


_KW = st.one_of(
    st.floats(-40.0, 40.0, allow_nan=False),
    st.integers(-400, 400).map(lambda t: t / 10.0 * 0.23),  # exactly on a 0.1 A step of one phase
    st.integers(-400, 400).map(lambda t: t / 10.0 * 0.69),
    st.integers(-40000, 40000).map(lambda w: w / 1000.0),  # exactly on a W
    st.sampled_from([0.0, -0.0, np.inf, -np.inf]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_KW, min_size=4, max_size=4))
def test_one_charger_conversions_are_the_site_wide_ones(kw: list[float]) -> None:
    site = _mixed_site()
    amps = amps_mask(site)
    values = np.asarray(kw, dtype=float)
    site_profile = kw_to_profile(site, values, amps)
    site_kw = profile_to_kw(site, values, amps)
    for i in range(site.n):
        assert kw_to_profile_one(site, i, kw[i]) == site_profile[i]
        assert profile_to_kw_one(site, i, kw[i]) == site_kw[i]
        # a limit in the other unit (a station's profile may be in either)
        other: RateUnit = "W" if amps[i] else "A"
        flipped = profile_to_kw(site, values, ~amps)
        assert profile_to_kw_one(site, i, kw[i], other) == flipped[i]
        row = np.full(3, kw[i])
        assert np.array_equal(kw_to_profile_at(site, i, row), np.full(3, site_profile[i]))
        assert np.array_equal(profile_to_kw_at(site, i, row), np.full(3, site_kw[i]))


def test_one_charger_conversion_keeps_nan() -> None:
    site = _mixed_site()
    assert np.isnan(kw_to_profile_one(site, 0, float("nan")))
    assert np.isnan(kw_to_profile(site, np.full(site.n, np.nan))).all()


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 3),
    st.lists(
        st.tuples(_KW.filter(np.isfinite), st.sampled_from(["zero", "down", "up"])), min_size=1, max_size=12
    ),
)
def test_a_plan_converted_at_once_is_each_period_converted_alone(
    i: int, periods: list[tuple[float, Any]]
) -> None:
    site = _mixed_site()
    kw = np.array([p for p, _ in periods])
    rounding = [r for _, r in periods]
    row = signed_profile_row(site, i, kw, rounding)
    alone = [signed_profile(site, i, float(p), r) for p, r in periods]
    assert row.tolist() == alone
    top, bottom = (
        kw_to_profile_one(site, i, float(site.rated_kw[i])),
        -kw_to_profile_one(site, i, float(site.max_discharge_kw[i])),
    )
    directed = np.array([r != "zero" for r in rounding])
    assert np.all(row[directed] <= top) and np.all(row[directed] >= bottom)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 3),
    st.sampled_from([("1.6", "charge_only"), ("2.0.1", "charge_only"), ("2.1", "charge_only"),
                     ("2.1", "CentralSetpoint"), ("2.1", "ExternalLimits")]),
    st.lists(st.floats(-1.2, 1.2, allow_nan=False), min_size=1, max_size=30),
    st.sampled_from(["down", "up"]),
)  # fmt: skip
def test_every_tx_profile_the_dispatcher_builds_is_schema_valid(
    i: int, version_mode: tuple[Any, str], share: list[float], rounding: Any
) -> None:
    """The dispatcher sends its TxProfiles without the library's schema check (2 ms each): whatever plan
    it converts (values from a full discharge to the rating, 1 to 30 periods, either rounding), the
    request is valid for its OCPP version."""
    from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
    from ocpp.messages import Call, _validate_payload

    site = _mixed_site()
    version, mode = version_mode
    row = np.array(share) * float(site.rated_kw[i])
    if mode == "charge_only":
        row = np.maximum(row, 0.0)
    batch = Batch(datetime.now(UTC), time.monotonic(), (rounding,))
    value, periods = tx_values(site, i, float(row[0]), row, batch, 10.0)
    ch = site.config.chargers[i]
    req = set_charging_profile(
        version, "TxProfile", 1, value, ch.rate_unit, ch.phases, "42", now=batch.start_utc, periods=periods,
        v2g_mode=mode, duration_s=None if periods is None else round(periods[-1][0] + 10.0),
    )  # fmt: skip
    payload = remove_nones(snake_to_camel_case(serialize_as_dict(req)))
    _validate_payload(Call("1", "SetChargingProfile", payload), version)


# --------------------------------------------------------------------------- the cycle's CPU time


BURN_S = 0.03


class Burning(FullPower):
    """Spends :data:`BURN_S` of its thread's CPU time on every decision (the policy's worker thread)."""

    name = "burning"

    def act(self, snapshot: Snapshot) -> Decision:
        t0 = time.thread_time()
        x = 0
        while time.thread_time() - t0 < BURN_S:
            x += 1
        return super().act(snapshot)


def test_metrics_render_the_cpu_histogram_beside_the_latency() -> None:
    m = Metrics()
    m.loop_latency_s.observe(0.3)
    m.loop_cpu_s.observe(0.004)
    m.loop_cpu_s.observe(0.02)
    text = m.render()
    assert "# TYPE evdlm_loop_cpu_seconds histogram" in text
    assert 'evdlm_loop_cpu_seconds_bucket{le="0.005"} 1' in text
    assert 'evdlm_loop_cpu_seconds_bucket{le="0.025"} 2' in text
    assert "evdlm_loop_cpu_seconds_count 2" in text
    assert "evdlm_loop_latency_seconds_count 1" in text
    assert m.loop_cpu_s.quantile(0.99) == 0.02


async def test_loop_cpu_time_counts_the_policy_worker_and_stays_within_the_wall_time(tmp_path: Path) -> None:
    site = small_site()
    cfg = serving_config(tmp_path, policy_budget_s=5.0, control_interval_s=0.1)
    svc = Service(cfg, site, Burning(), PASSWORDS)
    await svc.start()
    try:
        for _ in range(200):
            if svc.metrics.loop_cpu_s.n >= 3:
                break
            await asyncio.sleep(0.05)
        state = svc.state()
        text = svc.metrics.render()
    finally:
        await svc.stop()
    cpu, wall = svc.metrics.loop_cpu_s, svc.metrics.loop_latency_s
    assert cpu.n >= 3 and cpu.n == wall.n
    assert svc.metrics.count("fallbacks_total") == 0  # every cycle was the burning policy's
    for c, w in zip(cpu.window, wall.window, strict=True):
        assert BURN_S <= c <= w + 1e-3  # the worker's CPU is in it; no more CPU than the cycle's wall time
    assert state["loop"]["p99_cpu_ms"] >= 1000 * BURN_S
    assert f"evdlm_loop_cpu_seconds_count {cpu.n}" in text
    # the wall time by phase: the policy's in decide, the phases within the cycles' wall time
    phases = {p: svc.metrics.count("loop_phase_seconds_total", phase=p) for p in ("read", "decide", "write")}
    assert phases["decide"] >= BURN_S * cpu.n
    assert phases["read"] > 0 and phases["write"] > 0
    assert sum(phases.values()) <= wall.total + 1e-3
    assert 'evdlm_loop_phase_seconds_total{phase="decide"}' in text


# --------------------------------------------------------------------------- simulated stations


def _sim(svc: Service, site: Any, **kw: Any) -> SiteSimulator:
    scenario = small_scenario(site)
    opts = SimOptions(
        speed=SPEED, tick_s=0.05, passwords=PASSWORDS, warmup_s=0.3, version="1.6",
        meter_push_url=f"http://127.0.0.1:{svc.http_port}/api/meter", **kw,
    )  # fmt: skip
    return SiteSimulator(scenario, f"ws://127.0.0.1:{svc.ocpp_port}", opts, connector_map(svc.cfg, site))


async def test_a_station_whose_connection_is_lost_reconnects(tmp_path: Path) -> None:
    """A station that waits for its next reading (every 100 s) notices at once that the central system
    closed its connection, and connects again."""
    site = small_site()
    svc = Service(serving_config(tmp_path, time_scale=SPEED), site, FullPower(), PASSWORDS)
    await svc.start()
    try:
        sim = _sim(svc, site, meter_interval_s=100.0, duration_s=2.5)
        run = asyncio.create_task(sim.run())
        for _ in range(200):
            if svc.live.stations["CP1"].registered and sim._wall0 < time.monotonic():
                break
            await asyncio.sleep(0.05)
        first = svc.metrics.count("connections_total")
        await svc.dispatcher.connections["CP1"]._connection.close()
        for _ in range(40):
            if svc.metrics.count("connections_total") > first:
                break
            await asyncio.sleep(0.05)
        again = svc.metrics.count("connections_total") - first
        rep = await run
    finally:
        await svc.stop()
    assert first == 2 and again == 1  # CP1 back within 2 s, not at its next reading 100 s later
    assert rep.connected_at_end == 2


async def test_a_drop_off_is_timed_from_the_clock_start(tmp_path: Path) -> None:
    """``drop_off`` (s after the simulated clock starts): the station drops off on time and comes back."""
    site = small_site()
    svc = Service(serving_config(tmp_path, time_scale=SPEED), site, FullPower(), PASSWORDS)
    await svc.start()
    try:
        rep = await _sim(
            svc, site, meter_interval_s=100.0, duration_s=2.5, drop_off={"CP2": (0.3, 0.3)}
        ).run()
        connections = svc.metrics.count("connections_total")
    finally:
        await svc.stop()
    assert connections == 3  # CP2 dropped off and came back within the 2.5 s run
    assert rep.connected_at_end == 2


@pytest.mark.parametrize("check", [True, False])
def test_stations_check_the_central_systems_requests_unless_told_not_to(check: bool) -> None:
    from stationsim.stations import _SimCP21

    site = SiteArrays.from_config(small_site())
    sim = SiteSimulator(small_scenario(site.config), "ws://127.0.0.1:1", SimOptions(check_schemas=check))
    cp = _SimCP21("CP1", None, response_timeout=1.0)
    cp.attach(sim, "CP1")
    assert cp.sim is sim and cp.station == "CP1"
    skipped = {action for action, h in cp.route_map.items() if h.get("_skip_schema_validation", False)}
    assert "SetChargingProfile" in cp.route_map
    assert skipped == (set() if check else set(cp.route_map))


@settings(max_examples=200, deadline=None)
@given(
    now=st.floats(0.0, 1e6),
    ahead=st.floats(-10.0, 100.0),
    poll=st.sampled_from([0.05, 0.1, 0.25]),
)
def test_a_station_wakes_where_its_polls_would_first_have_seen_the_deadline(
    now: float, ahead: float, poll: float
) -> None:
    """A sleeping station wakes on its poll grid from now: whole steps (at least one), the first at or past
    the deadline, so a reading comes as late after its time as when the station polled every step."""
    from stationsim.simulator import wake_in_s

    wait = wake_in_s(now, now + ahead, poll)
    steps = round(wait / poll)
    assert steps >= 1 and abs(wait - steps * poll) < 1e-9
    assert wait >= ahead - 1e-6  # never before the deadline ...
    assert steps == 1 or wait - poll < ahead + 1e-6  # ... and no step later than the first past it
    assert wake_in_s(now, float("inf"), poll) >= 600.0  # no deadline: only an event wakes it


class _Answers:
    """A connection on which the central system answers every request at once with an Accepted boot."""

    def __init__(self) -> None:
        self.cp: Any = None

    async def send(self, message: str) -> None:
        import json

        unique_id = json.loads(message)[1]
        answer = [3, unique_id, {"currentTime": "2026-01-01T00:00:00Z", "interval": 10, "status": "Accepted"}]
        asyncio.get_running_loop().call_soon(
            lambda: asyncio.ensure_future(self.cp.route_message(json.dumps(answer)))
        )


@pytest.mark.parametrize("check", [True, False])
def test_stations_check_their_own_requests_on_the_librarys_threads_unless_told_not_to(check: bool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from stationsim import messages as msg
    from stationsim.stations import _SimCP21

    class NoThreads(ThreadPoolExecutor):
        def submit(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a schema check went to a thread")

    site = SiteArrays.from_config(small_site())
    sim = SiteSimulator(small_scenario(site.config), "ws://127.0.0.1:1", SimOptions(check_schemas=check))
    conn = _Answers()
    cp = conn.cp = _SimCP21("CP1", conn, response_timeout=2.0)
    cp.attach(sim, "CP1")

    async def go() -> Any:
        asyncio.get_running_loop().set_default_executor(NoThreads())
        return await sim._call(cp, msg.boot("2.1", sim.stations["CP1-1"])[0])

    res = asyncio.run(go())
    assert (sim.calls_failed, sim.calls_answered) == ((1, 0) if check else (0, 1))
    assert check or res.status == "Accepted"
