"""When a reading was taken (:mod:`serving.taken`): a reading's own time narrows the window the slack
leaves, never widens it, and a source whose clock runs ahead of ours is caught by the readings it stamps
after they arrive. Narrower windows make the base load tighter (:func:`serving.at_meter.draws_at_meter`)
without ever taking off the site meter more than the chargers drew when it read."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.core import SiteArrays
from serving.at_meter import draws_at_meter
from serving.config import connector_map
from serving.csms import parse_meter_reading
from serving.events import MeterReading, TransactionStarted
from serving.live import ConnectorLive, LiveSite, SiteMeterReading
from serving.service import Service
from serving.taken import reading_slack_s, taken_from
from tests.test_serving_helpers import PASSWORDS, FullPower, serving_config, small_site

T0 = datetime(2026, 12, 4, 22, 0, tzinfo=UTC)
SLACK_S = 2.5  # reading_slack_s at a 10 s control interval, the V2G benchmark's


def test_a_stamp_narrows_the_window_and_never_widens_it(tmp_path: Path) -> None:
    cfg = serving_config(tmp_path, control_interval_s=10.0)
    assert reading_slack_s(cfg) == SLACK_S
    assert taken_from(100.0, T0, None, cfg) == (100.0 - SLACK_S, 0.0)
    # taken 0.2 s before it arrived: no earlier than that less the clock tolerance (0.5 s)
    assert taken_from(100.0, T0, T0 - timedelta(seconds=0.2), cfg) == pytest.approx((99.3, 0.0))
    # stamped a minute before: a clock behind ours (or a reading held back) is no older than the slack
    assert taken_from(100.0, T0, T0 - timedelta(minutes=1), cfg) == (100.0 - SLACK_S, 0.0)
    # without a tolerance configured, stamps are not trusted
    blind = serving_config(tmp_path, control_interval_s=10.0, clock_tolerance_s=None)
    assert taken_from(100.0, T0, T0 - timedelta(seconds=0.2), blind) == (100.0 - SLACK_S, 0.0)


def test_a_clock_seen_ahead_of_ours_moves_every_later_reading_back(tmp_path: Path) -> None:
    """A station whose clock runs 1.2 s ahead stamps a reading after it arrived: it may have been taken
    just before it arrived (the tolerance), and each later reading of that station 1.2 s earlier than
    its stamp says."""
    cfg = serving_config(tmp_path, control_interval_s=10.0)
    earliest, ahead = taken_from(100.0, T0, T0 + timedelta(seconds=1.2), cfg)
    assert (earliest, ahead) == pytest.approx((99.5, 1.2))
    # 0.9 s "before" arrival by its clock: 2.1 s by ours, plus the tolerance, within the slack of 2.5 s
    earliest, ahead = taken_from(200.0, T0, T0 - timedelta(seconds=0.9), cfg, ahead)
    assert (earliest, ahead) == pytest.approx((200.0 - 2.5, 1.2))
    earliest, _ = taken_from(200.0, T0, T0 - timedelta(seconds=0.1), cfg, ahead)
    assert earliest == pytest.approx(200.0 - 1.8)


def test_meter_values_are_taken_at_their_earliest_stamp() -> None:
    power = {"value": 4000.0, "measurand": "Power.Active.Import"}
    values = [
        {"timestamp": "2026-12-04T22:00:01.5Z", "sampled_value": [power]},
        {"timestamp": "2026-12-04T22:00:01Z", "sampled_value": [{"value": 1200.0}]},
    ]
    reading = parse_meter_reading("CP1", 1, values)
    assert (reading.power_import_w, reading.energy_import_wh) == (4000.0, 1200.0)
    assert reading.taken == T0 + timedelta(seconds=1)
    assert parse_meter_reading("CP1", 1, [{"timestamp": "soon", "sampled_value": []}]).taken is None


def _finishing(tmp_path: Path, cfg_kw: dict[str, object]) -> tuple[LiveSite, ConnectorLive]:
    """CP1-1 charging at 11.04 kW with 8 Wh left of what its EV asked, read at monotonic 99.0 s."""
    site = small_site()
    cfg = serving_config(tmp_path, **cfg_kw)
    live = LiveSite.build(SiteArrays.from_config(site), connector_map(cfg, site), ["CP1", "CP2"])
    c = live.connectors[0]
    c.tx_pk, c.started_at, c.limit_kw = 1, 0.0, 11.04
    c.note_limit(50.0)
    eff = float(live.site.efficiency[0])
    c.meter_last_wh = 10_000.0
    c.energy_asked_kwh = c.received_kwh(eff) + 0.008
    c.power_kw, c.power_at = 11.04, 99.0
    c.readings.append((99.0, 11.04, -np.inf))
    return live, c


def test_an_ev_read_just_before_the_site_meter_still_drew_when_it_read(tmp_path: Path) -> None:
    """8 Wh from its asked energy, an EV at 11.04 kW stops within 3 s of its reading. Without times the
    reading (arrived at 99.0 s) and the site meter's (arrived at 100.0 s) are each up to the 2.5 s slack
    old: the EV may have stopped before the meter read, its 11.04 kW base load. Stamped 0.1 s before
    each arrived, the EV was read no earlier than 98.4 s and the meter no later than 100.0 s: it could
    not have taken 8 Wh in 1.6 s, so it drew its 11.04 kW when the meter read."""
    live, c = _finishing(tmp_path, {"control_interval_s": 10.0})
    cfg = serving_config(tmp_path, control_interval_s=10.0)
    measured = live.measured_kw(100.5, 60.0)
    assert draws_at_meter(live, measured, SiteMeterReading(0.0, None, 100.0), cfg, None).chargers_kw == 0.0
    c.power_from = taken_from(99.0, T0, T0 - timedelta(seconds=0.1), cfg)[0]
    c.readings[-1] = (99.0, 11.04, c.power_from)
    meter_from = taken_from(100.0, T0, T0 - timedelta(seconds=0.1), cfg)[0]
    meter = SiteMeterReading(0.0, None, 100.0, meter_from)
    then = draws_at_meter(live, measured, meter, cfg, None)
    assert (then.chargers_kw, then.chargers_high_kw) == (11.04, 11.04)
    # read 4 s before the meter, it may have finished in between: its draw is again no base load
    c.power_from = 96.0
    assert draws_at_meter(live, measured, meter, cfg, None).chargers_kw == 0.0


def test_a_stamped_site_meter_read_after_a_cut_sees_it(tmp_path: Path) -> None:
    """The cycle after a step's profiles: the charger was cut to 4.14 kW at 99.0 s and read at it just
    after. A site meter arriving at 100.0 s may have read up to the slack before, so before the cut: the
    charger counts as drawing 4.14 (its lowest) while its 11.04 kW may be in the import, the base load up
    to 6.9 kW high. Stamped 0.1 s before it arrived, it read after the cut: 4.14 kW on both sides."""
    live, c = _finishing(tmp_path, {"control_interval_s": 10.0})
    cfg = serving_config(tmp_path, control_interval_s=10.0)
    c.energy_asked_kwh = None  # no need to finish: only the cut
    c.limit_kw = 4.14
    c.note_limit(99.0)
    c.power_kw, c.power_at, c.power_from = 4.14, 99.4, 99.2
    c.readings.append((99.4, 4.14, 99.2))
    measured = live.measured_kw(100.5, 60.0)
    assert c.draw_bounds_kw(100.0, SLACK_S) == (4.14, 11.04)
    meter_from = taken_from(100.0, T0, T0 - timedelta(seconds=0.1), cfg)[0]
    assert c.draw_bounds_kw(100.0, SLACK_S, meter_from) == (4.14, 4.14)
    meter = SiteMeterReading(0.0, None, 100.0, meter_from)
    assert draws_at_meter(live, measured, meter, cfg, None)[::2] == (4.14, 4.14)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    changes=st.lists(
        st.tuples(st.floats(0.0, 5.0), st.sampled_from([0.0, 1.4, 4.14, 6.21, 7.4])), min_size=1, max_size=8
    ),
    reads=st.lists(st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0)), max_size=8),
    meter=st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
)
def test_the_bounds_hold_the_draw_whatever_the_stamps_say(
    changes: list[tuple[float, float]],
    reads: list[tuple[float, float, float]],
    meter: tuple[float, float, float],
) -> None:
    """Each reading (and the site meter's) taken somewhere in the window its stamp leaves (from
    ``arrived - window * slack`` to ``arrived``, ``window`` drawn): whatever the windows and the changes,
    the bounds hold what the charger drew when the site meter read."""
    site = small_site()
    cfg = serving_config(Path("never-written"))
    slack = reading_slack_s(cfg)
    live = LiveSite.build(SiteArrays.from_config(site), connector_map(cfg, site), ["CP1", "CP2"])
    c = live.connectors[0]
    c.tx_pk, c.started_at = 1, -10.0
    for at, kw in [(-1.0, 6.21), *sorted(changes)]:
        c.limit_kw = kw
        c.note_limit(at)

    def drew(t: float) -> float:
        return [kw for at, kw in c.limit_log if at <= t][-1]

    c.power_kw, c.power_at = drew(-0.5), -0.5  # a reading before everything
    c.readings.append((-0.5, c.power_kw, -np.inf))
    for arrived, window, lag in sorted(reads):
        earliest = arrived - window * slack
        c.power_kw, c.power_at, c.power_from = drew(earliest + lag * (arrived - earliest)), arrived, earliest
        c.readings.append((arrived, c.power_kw, earliest))
    arrived, window, lag = meter
    meter_from = arrived - window * slack
    bounds = c.draw_bounds_kw(arrived, slack, meter_from)
    assert bounds is not None
    assert bounds[0] <= drew(meter_from + lag * (arrived - meter_from)) <= bounds[1]


async def test_a_pushed_reading_with_its_time_is_taken_then(tmp_path: Path) -> None:
    """``POST /api/meter`` with a ``timestamp``: the reading was taken no earlier than it (less the
    tolerance); without one, up to the slack before it arrived; an unreadable or zoneless one is refused
    with 400, and so are a station's MeterValues stamps used for its charger."""
    cfg = serving_config(tmp_path, control_interval_s=10.0, meter_timeout_s=30.0)
    svc = Service(cfg, small_site(), FullPower(), PASSWORDS)
    await svc.start(loop=False)
    url = f"http://127.0.0.1:{svc.http_port}/api/meter"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json={"import_kw": 7.0}) as resp:
                assert resp.status == 200
            meter = svc.live.meter
            assert meter is not None and meter.earliest(cfg) == pytest.approx(meter.at - SLACK_S)
            stamp = (datetime.now(UTC) - timedelta(seconds=0.3)).isoformat().replace("+00:00", "Z")
            async with http.post(url, json={"import_kw": 8.0, "timestamp": stamp}) as resp:
                assert resp.status == 200
            meter = svc.live.meter
            assert meter is not None and meter.import_kw == 8.0
            assert 0.79 <= meter.at - meter.earliest(cfg) <= 1.0  # 0.3 s old + the 0.5 s tolerance
            for bad in ("yesterday", "2026-12-04T22:00:00"):
                async with http.post(url, json={"import_kw": 9.0, "timestamp": bad}) as resp:
                    assert resp.status == 400
            assert svc.live.meter is not None and svc.live.meter.import_kw == 8.0
        now = datetime.now(UTC)
        await svc.updater.transaction_started(TransactionStarted("CP1", 1, None, "tag", 0.0, now))
        reading = MeterReading("CP1", 1, 4000.0, None, 10.0, taken=now - timedelta(seconds=0.2))
        svc.updater.meter_reading(reading)
        c = svc.live.connector("CP1", 1)
        assert c is not None and c.power_from is not None
        assert 0.69 <= c.power_at - c.power_from <= 0.9
        assert c.readings[-1][2] == c.power_from
        assert c.power_at <= time.monotonic()
    finally:
        await svc.stop()
