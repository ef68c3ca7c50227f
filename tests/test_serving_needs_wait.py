"""A 2.1 transaction whose EV has not reported its needs yet is held at its failsafe share, not decided on
the defaults, and the step is decided again once the needs arrive (issue 15: a 2.1 station sends
``NotifyEVChargingNeeds`` after its ``TransactionEvent`` is answered; a cycle in between took an EV that asked
for 0.35 kWh in 8 minutes for one asking 20 kWh in 8 hours)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from serving.events import ChargingNeeds, TransactionStarted
from serving.needs import pause
from serving.service import Service
from tests.test_serving_helpers import PASSWORDS, FullPower, serving_config, small_site

BASE_KW = 5.0
IMPORT_KW = 30.0
EV_MAX_A = 8.0
"""what the EV declares it takes per phase (5.52 kW); the defaults know nothing of it (11.04 kW)"""


async def _start(tmp_path: Path, version: str, wait_s: float) -> Service:
    """A service (no loop, no network) with CP1-1 in a transaction on a station of ``version`` since 0.5 s,
    no needs."""
    svc = Service(
        serving_config(tmp_path, needs_wait_s=wait_s), small_site(IMPORT_KW), FullPower(), PASSWORDS
    )
    await svc.start(http=False, loop=False)
    svc.live.stations["CP1"].ocpp_version = version
    now = datetime.now(UTC)
    await svc.updater.transaction_started(TransactionStarted("CP1", 1, "t1", "tag", 0.0, now))
    svc.live.connectors[0].started_at = time.monotonic() - 0.5  # past the arrival reserve's window
    svc.on_site_meter(BASE_KW, None)
    return svc


def _needs() -> ChargingNeeds:
    return ChargingNeeds("CP1", 1, 1000.0, EV_MAX_A, None, None)


async def test_a_21_transaction_without_needs_is_held_then_decided_again_when_they_arrive(
    tmp_path: Path,
) -> None:
    svc = await _start(tmp_path, "2.1", wait_s=5.0)
    try:
        first = await svc.run_cycle()
        share = float(np.minimum(svc.dispatcher.failsafe_kw(), svc.dispatcher.cap_kw())[0])
        held = svc.loop.held.copy()
        cycle = svc.loop.cycle
        waiting = asyncio.create_task(pause(svc.loop, time.monotonic() + 3.0))
        await asyncio.sleep(0.2)
        assert svc.loop.cycle == cycle and svc.loop.last is first  # nothing decided while it waits
        svc.updater.charging_needs(_needs())
        await asyncio.sleep(0.3)
        second = svc.loop.last
        waiting.cancel()
    finally:
        await svc.stop()
    assert held[0] and not held[1:].any()
    assert first.outcome.limits_kw[0] == 0.0  # no EV of the decision: no profile, its failsafe share
    # its share stays reserved for it: the decision plus what it draws meanwhile fits the connection
    assert BASE_KW + share + float(first.outcome.assumed_kw.sum()) <= IMPORT_KW + 1e-6
    assert second is not None and second is not first
    assert second.cycle == cycle  # the same step, decided again
    assert second.outcome.limits_kw[0] == pytest.approx(EV_MAX_A * 0.69, abs=0.1)  # what the EV declared
    assert not svc.loop.held.any()


async def test_a_held_transaction_is_decided_on_the_defaults_once_its_wait_runs_out(tmp_path: Path) -> None:
    svc = await _start(tmp_path, "2.1", wait_s=1.0)
    try:
        first = await svc.run_cycle()
        await pause(svc.loop, time.monotonic() + 1.2)
        second = svc.loop.last
    finally:
        await svc.stop()
    assert first.outcome.limits_kw[0] == 0.0
    assert second is not None and second is not first and second.cycle == first.cycle
    assert second.outcome.limits_kw[0] == pytest.approx(11.04, abs=0.1)  # the defaults: its rating


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_16_or_201_transaction_is_never_held(tmp_path: Path, version: str) -> None:
    """Their EVs may never send needs: decided at once on the defaults, as before."""
    svc = await _start(tmp_path, version, wait_s=5.0)
    try:
        out = await svc.run_cycle()
        held = svc.loop.held.copy()
    finally:
        await svc.stop()
    assert not held.any()
    assert out.outcome.limits_kw[0] == pytest.approx(11.04, abs=0.1)


async def test_a_21_transaction_that_starts_after_a_cycle_is_decided_when_its_needs_arrive(
    tmp_path: Path,
) -> None:
    """EVs arriving together reach the central system one after another: one that starts after the cycle
    is decided as soon as its needs arrive, not at the next cycle (a control interval at its failsafe
    share)."""
    svc = Service(serving_config(tmp_path, needs_wait_s=5.0), small_site(IMPORT_KW), FullPower(), PASSWORDS)
    await svc.start(http=False, loop=False)
    try:
        svc.live.stations["CP1"].ocpp_version = "2.1"
        svc.on_site_meter(BASE_KW, None)
        first = await svc.run_cycle()  # no transaction yet
        waiting = asyncio.create_task(pause(svc.loop, time.monotonic() + 3.0))
        await svc.updater.transaction_started(
            TransactionStarted("CP1", 1, "t1", "tag", 0.0, datetime.now(UTC))
        )
        await asyncio.sleep(0.2)
        assert svc.loop.last is first  # started, its needs not in: nothing decided on the defaults
        svc.updater.charging_needs(_needs())
        await asyncio.sleep(0.3)
        second = svc.loop.last
        waiting.cancel()
    finally:
        await svc.stop()
    assert second is not None and second is not first and second.cycle == first.cycle
    assert second.outcome.limits_kw[0] == pytest.approx(EV_MAX_A * 0.69, abs=0.1)


async def test_the_step_decided_again_waits_for_a_site_meter_reading_after_the_start(tmp_path: Path) -> None:
    """A site meter reading that may predate a start counts the new EV's draw as base load, and the EV is
    also one of the decision: decided on it, the EVs would share what is left after counting that draw
    twice. The step is decided again once the meter has read after the start (its reading arrived a slack,
    a quarter control interval, after it), not as soon as the needs are in."""
    cfg = serving_config(tmp_path, needs_wait_s=5.0, control_interval_s=4.0)  # slack 1 s, waited <= 2 s
    svc = Service(cfg, small_site(IMPORT_KW), FullPower(), PASSWORDS)
    await svc.start(http=False, loop=False)
    try:
        svc.live.stations["CP1"].ocpp_version = "2.1"
        svc.on_site_meter(BASE_KW, None)
        first = await svc.run_cycle()
        waiting = asyncio.create_task(pause(svc.loop, time.monotonic() + 5.0))
        await svc.updater.transaction_started(
            TransactionStarted("CP1", 1, "t1", "tag", 0.0, datetime.now(UTC))
        )
        t0 = time.monotonic()
        svc.updater.charging_needs(_needs())
        await asyncio.sleep(0.1)
        svc.on_site_meter(BASE_KW, None)  # within the slack of the start: may have been read before it
        await asyncio.sleep(0.4)
        before = svc.loop.last
        await asyncio.sleep(max(t0 + 1.2 - time.monotonic(), 0.0))
        svc.on_site_meter(BASE_KW, None)  # 1.2 s after the start: read after it
        await asyncio.sleep(0.4)
        second = svc.loop.last
        waiting.cancel()
    finally:
        await svc.stop()
    assert before is first  # needs in, the meter not yet read after the start: nothing decided
    assert second is not None and second is not first and second.cycle == first.cycle
    assert second.outcome.limits_kw[0] == pytest.approx(EV_MAX_A * 0.69, abs=0.1)


async def test_a_start_the_site_meter_may_not_show_is_held_until_a_reading_does(tmp_path: Path) -> None:
    """A step's regular cycle does not wait for the meter: a transaction whose start the reading may
    predate is held at its failsafe share (no EV of the decision, no profile) rather than given what is
    left after its draw was taken for base load (107 EVs at 0 kW for 5 s at 1,000 stations); a reading
    stamped after the start (its time less the 0.5 s clock tolerance) shows it, and the cycle decides it.
    A 2.0.1 station: never held for its needs."""
    cfg = serving_config(tmp_path, control_interval_s=4.0)  # slack 1 s: held for at most 2 s
    svc = Service(cfg, small_site(IMPORT_KW), FullPower(), PASSWORDS)
    await svc.start(http=False, loop=False)
    try:
        svc.live.stations["CP1"].ocpp_version = "2.0.1"
        await svc.updater.transaction_started(
            TransactionStarted("CP1", 1, "t1", "tag", 0.0, datetime.now(UTC))
        )
        svc.on_site_meter(BASE_KW, None)  # no time of its own: up to the 1 s slack old
        held = await svc.run_cycle()
        held_mask = svc.loop.held.copy()
        await asyncio.sleep(0.6)
        svc.on_site_meter(BASE_KW, None)  # 0.6 s after the start, still maybe before it
        still = await svc.run_cycle()
        still_mask = svc.loop.held.copy()
        svc.on_site_meter(BASE_KW, None, datetime.now(UTC))  # stamped: read after the start
        decided = await svc.run_cycle()
        decided_mask = svc.loop.held.copy()
    finally:
        await svc.stop()
    assert held_mask[0] and still_mask[0] and not decided_mask[0]
    assert held.outcome.limits_kw[0] == 0.0 and still.outcome.limits_kw[0] == 0.0
    assert decided.outcome.limits_kw[0] > 5.0  # the idle chargers' shares kept free after a start
