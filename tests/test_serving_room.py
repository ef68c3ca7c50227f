"""An EV's room (what it may take before it is full) live as in the environment: a simulated EV of known
battery takes past its request where its limit allows, a 2.1 EV declares its room (``evMaxEnergyRequest``),
and the service's snapshot plans on it; without a declaration the room is the need, as before."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from envs.core import SiteArrays
from serving.csms import parse_charging_needs
from serving.events import V2XNeeds
from serving.live import SiteMeterReading, build_snapshot
from serving.service import Service
from stationsim import messages as msg
from stationsim.physics import SimConnector, ev_energies_kwh
from tests.test_serving_helpers import PASSWORDS, FullPower, drawing_live, serving_config
from tests.test_serving_v2g import _sim, v2g_scenario, v2g_site


def _connector(energy_kwh: float, battery_kwh: float, soc: float, delivered_kwh: float) -> SimConnector:
    session = {
        "energy_kwh": energy_kwh,
        "battery_kwh": battery_kwh,
        "arrival_soc": soc,
        "max_power_kw": np.nan,
    }
    return SimConnector(0, "CP1", 1, [], session=session, delivered_kwh=delivered_kwh, v2x=True)


def ev_room_kwh(c: SimConnector) -> float:
    return float(ev_energies_kwh([c], 0.4)[0][0])


def ev_dischargeable_kwh(c: SimConnector, v2g_min_soc: float) -> float:
    return float(ev_energies_kwh([c], v2g_min_soc)[1][0])


def test_a_simulated_ev_of_known_battery_may_take_past_its_request_up_to_full() -> None:
    # 60 kWh at 60 %: 24 kWh of room, whatever it asked; 1 kWh received -> 23 left
    assert ev_room_kwh(_connector(1.0, 60.0, 0.6, 1.0)) == pytest.approx(23.0)
    assert ev_room_kwh(_connector(1.0, 60.0, 0.6, 30.0)) == 0.0
    # asked more than the battery holds: what it asked (as the environment counts it)
    assert ev_room_kwh(_connector(30.0, 60.0, 0.6, 1.0)) == pytest.approx(29.0)
    # unknown battery: its request is its room
    assert ev_room_kwh(_connector(1.0, math.nan, math.nan, 0.4)) == pytest.approx(0.6)
    # V2G: what it holds above the floor (40 %, or its arrival SoC if lower) plus what it received
    assert ev_dischargeable_kwh(_connector(1.0, 60.0, 0.6, 1.0), 0.4) == pytest.approx(13.0)


def test_the_21_needs_declare_the_room_and_the_service_reads_it() -> None:
    site = SiteArrays.from_config(v2g_site())
    c = _connector(1.0, 60.0, 0.6, 0.0)
    needs = msg.charging_needs21(site, c, pd.Timestamp("2030-01-01T10:00Z").to_pydatetime(), 12.0, 24.0)
    payload = needs.charging_needs
    assert payload["v2x_charging_parameters"]["ev_max_energy_request"] == 24000.0
    parsed = parse_charging_needs("CP1", 1, payload)
    assert parsed.v2x is not None and parsed.v2x.max_energy_wh == 24000.0
    assert parsed.energy_wh == 1000.0  # the request stays the target


def _v2x(max_energy_wh: float | None) -> V2XNeeds:
    return V2XNeeds(True, ("AC_BPT",), 11000.0, None, None, max_energy_wh, -12000.0, None, None, None)


def test_the_snapshot_plans_on_the_declared_room_moved_by_the_energy_since(tmp_path: Path) -> None:
    live, cfg = drawing_live(tmp_path)
    eff = float(live.site.efficiency[0])
    for c in live.connectors:
        c.energy_asked_kwh = 1.0
        c.meter_last_wh = 400.0  # 0.4 kWh through the meter so far
    declared, plain = live.connectors[0], live.connectors[1]
    declared.v2x, declared.v2x_declared_net_kwh = _v2x(20000.0), 0.1  # 20 kWh to full, after 0.1 kWh
    live.meter = SiteMeterReading(5.0 + 24.0, None, 1.0)
    snap, _ = build_snapshot(live, cfg, 1, np.full(4, np.inf), now_mono=1.0)
    room, need = snap.state.energy_room_kwh, snap.state.energy_needed_kwh
    assert need[0] == pytest.approx(1.0 - 0.4 * eff)
    assert room[0] == pytest.approx(20.0 - 0.3 * eff)  # the 0.3 kWh since it declared
    assert room[1] == pytest.approx(need[1])  # no declaration: the need, as before
    # past its request it still has room: the projection's box lets it charge on
    declared.meter_last_wh = plain.meter_last_wh = 2000.0
    snap, _ = build_snapshot(live, cfg, 2, np.full(4, np.inf), now_mono=1.0)
    assert snap.state.energy_needed_kwh[0] == 0.0 and snap.state.energy_room_kwh[0] > 18.0
    assert snap.state.energy_room_kwh[1] == 0.0


async def test_a_v2x_ev_live_takes_what_the_plan_gives_past_its_request(tmp_path: Path) -> None:
    """End to end over loopback: every EV asks 0.05 kWh, the policy asks full power. The V2X EVs (they
    declare their room) charge on past their request, as in the environment; the charge-only EVs
    (no V2X parameters: room = need) are cut at it, within a cycle's overshoot."""
    site = v2g_site(export_limit_kw=15.0)
    cfg = serving_config(tmp_path, schedule_periods=4, schedule_period_s=60.0)
    svc = Service(cfg, site, FullPower(), PASSWORDS)
    await svc.start()
    try:
        v2g = {"CP1-1": True, "CP1-2": False, "CP2-1": True, "CP2-2": False}
        rep = await _sim(svc, v2g_scenario(site, v2g, 0.05), duration_s=3.0).run()
        lag_s = svc.dispatcher.lag_s  # how long its profiles took to be accepted: over loopback, ms
    finally:
        await svc.stop()
    assert 0.0 < lag_s < 0.5
    got = rep.energy_delivered_kwh
    assert got["s0"] > 0.15 and got["s2"] > 0.15  # V2X: three times its request and more
    assert got["s1"] < 0.1 and got["s3"] < 0.1  # charge-only: its request, a cycle's overshoot at most
    assert rep.violation_ticks == 0 and rep.node_violation_ticks == 0


def test_an_ev_past_its_request_with_room_left_is_not_taken_to_have_stopped(tmp_path: Path) -> None:
    """The base load's bracket: an EV that reached its request may have stopped since its reading (its
    draw then no part of the meter's reading), unless it declared room to charge on."""
    from serving.at_meter import draws_at_meter

    live, cfg = drawing_live(tmp_path)  # four chargers read drawing 6 kW at monotonic 0.9
    for c in live.connectors:
        c.energy_asked_kwh, c.meter_last_wh = 1.0, 2000.0  # asked 1 kWh, received 2 kWh through the meter
    live.connectors[0].v2x = _v2x(20000.0)
    meter = SiteMeterReading(5.0 + 24.0, None, 1.0)
    measured = live.measured_kw(1.0, cfg.station_meter_timeout_s)
    draws = draws_at_meter(live, measured, meter, cfg, None)
    assert draws.chargers_high_kw == pytest.approx(24.0)
    assert draws.chargers_kw == pytest.approx(6.0)  # only the EV with room left is sure to draw
