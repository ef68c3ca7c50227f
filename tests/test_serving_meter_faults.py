"""Meter plausibility (issue 16 item 3): readings no charger or site could produce are meter faults.

Each kind of fault is judged by :mod:`serving.plausibility`; in the service a faulty reading is counted,
flagged, ignored, and the charger assumed at its sent limit, so it never takes headroom from the others.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from serving.events import MeterReading, TransactionStarted
from serving.plausibility import charger_power_fault, register_fault, register_is_late, site_meter_fault
from serving.service import Service
from tests.test_serving_helpers import PASSWORDS, FullPower, serving_config, small_site

RATED_KW = 11.04


@pytest.mark.parametrize(
    ("import_kw", "export_kw", "can_discharge", "fault"),
    [
        (11.0, None, False, None),
        (13.1, None, False, None),  # within 10 % + 1 kW of the rating
        (13.3, None, False, "above_rating"),
        (7360.0, None, False, "above_rating"),  # watts labelled kW
        (-0.5, None, False, None),
        (-2.0, None, False, "negative"),
        (0.0, 3.0, False, "negative"),  # export from a charge-only charger
        (0.0, 3.0, True, None),  # a bidirectional charger may export
        (None, None, False, None),
    ],
)
def test_charger_power_faults(
    import_kw: float | None, export_kw: float | None, can_discharge: bool, fault: str | None
) -> None:
    assert charger_power_fault(import_kw, export_kw, RATED_KW, can_discharge, 0.1, 1.0) == fault


def test_register_faults() -> None:
    # 10 s at 11 kW is about 31 Wh; a minute of slack allows about 200 Wh more
    assert register_fault(None, 5e6, 10.0, RATED_KW, 0.1, 1.0) is None  # nothing to compare with
    assert register_fault(1000.0, 1030.0, 10.0, RATED_KW, 0.1, 1.0) is None
    assert register_fault(1000.0, 1000.0 + 11.04 * 1.1 * 1000.0, 3600.0, RATED_KW, 0.1, 1.0) is None
    assert register_fault(1000.0, 1000.0 + 1000.0, 10.0, RATED_KW, 0.1, 1.0) == "register_jump"  # Wh as kWh
    assert register_fault(1000.0, 900.0, 10.0, RATED_KW, 0.1, 1.0) == "register_jump"  # ran backwards
    # a reading behind by what 60 s at the rating adds is late, not a fault; far behind is not late
    assert register_is_late(1000.0, 900.0, RATED_KW, 0.1, 60.0)
    assert not register_is_late(1000.0, 1000.0, RATED_KW, 0.1, 60.0)
    assert not register_is_late(500_000.0, 100.0, RATED_KW, 0.1, 60.0)


def test_site_meter_faults() -> None:
    # 30 kW connection, 4 x 11.04 kW chargers: beyond 2 x 74.16 kW either way is no site's reading
    assert site_meter_fault(45.0, 30.0, 44.16, 2.0) is None
    assert site_meter_fault(-40.0, 30.0, 44.16, 2.0) is None  # PV export
    assert site_meter_fault(45_000.0, 30.0, 44.16, 2.0) == "site_above_physical"
    assert site_meter_fault(-200.0, 30.0, 44.16, 2.0) == "site_above_physical"


async def test_a_faulty_charger_meter_never_takes_headroom_from_the_others(tmp_path: Path) -> None:
    svc = Service(serving_config(tmp_path), small_site(), FullPower(), PASSWORDS)
    await svc.start(http=False, loop=False)
    try:
        now = datetime.now(UTC)
        for sid, k in (("CP1", 1), ("CP1", 2), ("CP2", 1), ("CP2", 2)):
            await svc.updater.transaction_started(TransactionStarted(sid, k, None, "tag", 0.0, now))
        for c in svc.live.connectors:
            c.limit_kw, c.limit_value, c.limit_sent_at = 5.0, 7.2, -1e9  # as if sent and accepted long ago
            c.started_at -= 60.0  # and started long ago: the site reading below is of them drawing
        svc.on_site_meter(5.0 + 4 * 5.0, None)
        for sid, k in (("CP1", 2), ("CP2", 1), ("CP2", 2)):
            svc.updater.meter_reading(MeterReading(sid, k, 5000.0, None, None))
        # a station reporting watts labelled kW: 7,360 "kW" on an 11 kW charger
        svc.updater.meter_reading(MeterReading("CP1", 1, 7360.0 * 1000.0, None, None))
        out = await svc.run_cycle()
        state = svc.state()
        # a site meter reading in watts labelled kW is ignored too
        svc.on_site_meter(25_000.0, None)
        site_state = svc.state()["site"]
    finally:
        await svc.stop()
    faulty = state["chargers"][0]
    assert faulty["flags"]["meter_fault"] is True and faulty["meter_fault"] == "above_rating"
    assert faulty["flags"]["not_following_profile"] is False  # not an offender
    assert faulty["power_kw"] == pytest.approx(5.0)  # assumed at its sent limit
    assert svc.metrics.count("meter_faults_total", kind="above_rating") == 1
    assert svc.metrics.count("offenders_total") == 0
    # every other charger still gets a share of the 30 kW (base load 5 kW)
    assert all(out.outcome.limits_kw[i] > 5.0 for i in (1, 2, 3))
    assert 5.0 + float(out.outcome.limits_kw.sum()) <= 30.0 + 1e-6
    assert site_state["meter_fault"] == "site_above_physical" and site_state["site_import_kw"] == 25.0
    assert svc.metrics.count("meter_faults_total", kind="site_above_physical") == 1


async def test_a_register_jump_is_one_fault_not_a_stuck_meter(tmp_path: Path) -> None:
    svc = Service(serving_config(tmp_path), small_site(), FullPower(), PASSWORDS)
    await svc.start(http=False, loop=False)
    try:
        await svc.updater.transaction_started(TransactionStarted("CP1", 1, None, "t", 0.0, datetime.now(UTC)))
        c = svc.live.connectors[0]
        read = svc.updater.meter_reading
        read(MeterReading("CP1", 1, 5000.0, None, 500_000.0))
        read(MeterReading("CP1", 1, 3000.0, None, 499_950.0))  # 50 Wh behind: a late reading, ignored
        assert c.meter_fault is None and c.power_kw == pytest.approx(5.0)
        read(MeterReading("CP1", 1, 5000.0, None, 100.0))  # the register ran backwards (a meter swap)
        assert c.meter_fault == "register_jump" and c.delivered_kwh == pytest.approx(500.0)
        read(MeterReading("CP1", 1, 5000.0, None, 110.0))  # plausible against the new baseline
        assert c.meter_fault is None and c.power_kw == pytest.approx(5.0)
    finally:
        await svc.stop()
    assert svc.metrics.count("meter_faults_total") == 1 and svc.metrics.count("meter_late_total") == 1
