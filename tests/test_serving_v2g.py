"""OCPP 2.1 and bidirectional control over loopback: who may discharge, schedules that outlive the link."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.base import Decision
from envs.config import SiteConfig, site_from_dict
from envs.core import ForecastWindow, SiteArrays, SiteState, Snapshot
from envs.projection import ProjectionPlan, project
from envs.scenario import Scenario, make_scenario
from serving.config import connector_map
from serving.csms import parse_charging_needs
from serving.events import V2XNeeds
from serving.profiles import set_charging_profile
from serving.schedule import plan_moved, plan_schedule
from serving.service import Service
from serving.v2g import choose_mode
from stationsim.simulator import SimOptions, SiteSimulator
from tests.test_serving_helpers import PASSWORDS, FullPower, serving_config
from training.evaluate import SHORT_KWH

SPEED = 60.0


CHARGER = {
    "node": "main",
    "max_current_a": 16.0,
    "rate_unit": "A",
    "bidirectional": True,
    "max_discharge_kw": 11.0,
}


def v2g_site(export_limit_kw: float = 15.0) -> SiteConfig:
    """Two 2.1 stations with two bidirectional 16 A three-phase connectors each (11.04 kW both ways)."""
    return site_from_dict(
        {
            "name": "v2g-site",
            "grid": {"import_limit_kw": 30.0, "export_limit_kw": export_limit_kw},
            "nodes": [{"id": "main", "max_power_kw": 30.0}],
            "chargers": [
                {
                    "id": cid,
                    "node": "main",
                    "max_current_a": 16.0,
                    "rate_unit": "A",
                    "bidirectional": True,
                    "max_discharge_kw": 11.0,
                }
                for cid in ("CP1-1", "CP1-2", "CP2-1", "CP2-2")
            ],
        }
    )


def v2g_scenario(site: SiteConfig, v2g: dict[str, bool], energy_kwh: float = 1.0) -> Scenario:
    start = pd.Timestamp("2025-06-02T08:00:00+00:00")
    idx = pd.date_range(start, periods=40, freq="15min")
    ts = pd.DataFrame(
        {
            "timestamp": idx, "base_load_kw": 2.0, "pv_kw": 0.0, "import_price_per_kwh": 0.25,
            "export_price_per_kwh": 0.05,
        }
    )  # fmt: skip
    ids = list(site.charger_ids)
    sessions = pd.DataFrame(
        {
            "session_id": [f"s{i}" for i in range(len(ids))],
            "charger_id": ids,
            "arrival": [start + pd.Timedelta(seconds=10 + i) for i in range(len(ids))],
            "departure": [start + pd.Timedelta(hours=8) for _ in ids],
            "energy_kwh": energy_kwh,
            "battery_kwh": 60.0,
            "arrival_soc": 0.6,
            "v2g": [v2g[c] for c in ids],
        }
    )
    return make_scenario(site, sessions, ts, "v2g-test")


class Discharge(FullPower):
    """Asks every EV allowed to discharge for its full discharge, the others for full charge."""

    name = "discharge"

    def act(self, snapshot: Snapshot) -> Decision:
        st = snapshot.state
        ask = np.where(st.ev_max_discharge_kw > 0, -self.site.max_discharge_kw, self.site.rated_kw)
        return Decision(np.where(st.ev_present, ask, 0.0))


def _sim(svc: Service, scenario: Scenario, **kw: Any) -> SiteSimulator:
    opts = SimOptions(
        speed=SPEED, tick_s=0.05, meter_interval_s=0.2, passwords=PASSWORDS, version="2.1",
        meter_push_url=f"http://127.0.0.1:{svc.http_port}/api/meter", warmup_s=0.5, **kw,
    )  # fmt: skip
    mapping = connector_map(svc.cfg, scenario.site)  # the stations as the service has them
    return SiteSimulator(scenario, f"ws://127.0.0.1:{svc.ocpp_port}", opts, mapping)


def _record_profiles(sim: SiteSimulator) -> list[tuple[str, int, dict[str, Any]]]:
    seen: list[tuple[str, int, dict[str, Any]]] = []
    install = sim.install_profile

    def recording(station: str, connector_id: int, profile: dict[str, Any], version: str) -> bool:
        seen.append((station, connector_id, profile))
        return install(station, connector_id, profile, version)

    sim.install_profile = recording  # type: ignore[method-assign]
    return seen


def _tx_periods(seen: list[tuple[str, int, dict[str, Any]]], charger: str) -> list[dict[str, Any]]:
    sid, k = charger.split("-")
    out = []
    for station, conn, prof in seen:
        if station == sid and conn == int(k) and prof["charging_profile_purpose"] == "TxProfile":
            out += prof["charging_schedule"][0]["charging_schedule_period"]
    return out


# --------------------------------------------------------------------------- the decision, pure


def test_choose_mode_needs_charger_station_and_ev() -> None:
    ev = V2XNeeds(True, ("AC_BPT",), 11000.0, None, None, None, -5000.0, None, None, None)
    ev_no = V2XNeeds(False, ("AC_three_phase",), None, None, None, None, None, None, None, None)
    both = ("ChargingOnly", "CentralSetpoint", "ExternalLimits")
    assert choose_mode(True, "2.1", both, ev) == ("CentralSetpoint", "station_and_ev_allow_v2x")
    assert choose_mode(True, "2.1", ("ExternalLimits",), ev)[0] == "ExternalLimits"
    assert choose_mode(False, "2.1", both, ev)[0] == "charge_only"
    assert choose_mode(True, "2.0.1", both, ev)[0] == "charge_only"
    assert choose_mode(True, "2.1", ("ChargingOnly",), ev)[0] == "charge_only"
    assert choose_mode(True, "2.1", None, ev)[0] == "charge_only"
    assert choose_mode(True, "2.1", both, ev_no) == ("charge_only", "ev_does_not_offer_discharge")
    assert choose_mode(True, "2.1", both, None)[0] == "charge_only"


def test_parse_21_charging_needs_keeps_the_declared_v2x_values() -> None:
    needs = {
        "requested_energy_transfer": "AC_BPT",
        "departure_time": "2030-01-01T10:00:00Z",
        "v2x_charging_parameters": {
            "max_charge_power": 11000.0, "max_discharge_power": 7000.0, "ev_target_energy_request": 9000.0,
            "ev_min_v2x_energy_request": -12000.0, "ev_min_energy_request": 1000.0, "target_soc": 80,
        },
    }  # fmt: skip
    ev = parse_charging_needs("CP1", 1, needs)
    assert ev.energy_wh == 9000.0 and ev.ev_max_power_w == 11000.0
    assert ev.departure == datetime(2030, 1, 1, 10, tzinfo=UTC)
    assert ev.v2x is not None and ev.v2x.offered and ev.v2x.max_discharge_w == 7000.0
    assert ev.v2x.min_v2x_energy_wh == -12000.0 and ev.v2x.min_energy_wh == 1000.0 and ev.v2x.target_soc == 80
    # no bidirectional transfer mode, or no discharge power: no offer
    assert not parse_charging_needs(
        "CP1", 1, {**needs, "requested_energy_transfer": "AC_three_phase"}
    ).v2x.offered  # type: ignore[union-attr]
    zero = {**needs, "v2x_charging_parameters": {"max_discharge_power": 0.0}}
    assert not parse_charging_needs("CP1", 1, zero).v2x.offered  # type: ignore[union-attr]
    # a 2.0.1 payload has no V2X part
    assert parse_charging_needs("CP1", 1, {"requested_energy_transfer": "AC_three_phase"}).v2x is None


def test_21_profiles_carry_setpoint_or_discharge_limit_only_in_2_1() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    periods = [(0, -12.3), (900, 5.0), (1800, 0.0)]
    req = set_charging_profile(
        "2.1", "TxProfile", 1, -12.3, "A", 3, "tx", now=now, periods=periods, v2g_mode="CentralSetpoint"
    )
    sched = req.charging_profile["charging_schedule"][0]
    assert req.charging_profile["charging_profile_kind"] == "Absolute" and sched["duration"] == 2700
    p0, p1 = sched["charging_schedule_period"][:2]
    assert p0 == {
        "start_period": 0, "setpoint": -12.3, "limit": 0.0, "discharge_limit": -12.3,
        "operation_mode": "CentralSetpoint", "number_phases": 3,
    }  # fmt: skip
    assert p1["setpoint"] == 5.0 and p1["limit"] == 5.0 and p1["discharge_limit"] == 0.0
    ext = set_charging_profile("2.1", "TxProfile", 1, -3.0, "W", 3, "tx", v2g_mode="ExternalLimits")
    assert (
        ext.charging_profile["charging_schedule"][0]["charging_schedule_period"][0]["discharge_limit"] == -3.0
    )
    with pytest.raises(ValueError):
        set_charging_profile("2.0.1", "TxProfile", 1, -3.0, "W", 3, "tx", v2g_mode="CentralSetpoint")
    # charge-only: never a negative value, also on 2.1
    plain = set_charging_profile("2.1", "TxProfile", 1, -3.0, "W", 3, "tx")
    assert plain.charging_profile["charging_schedule"][0]["charging_schedule_period"][0] == {
        "start_period": 0, "limit": 0.0, "number_phases": 3,
    }  # fmt: skip


def test_every_planned_period_is_feasible_and_discharge_respects_the_departure_margin() -> None:
    site = SiteArrays.from_config(v2g_site(export_limit_kw=6.0))
    n = site.n
    present = np.array([True, True, True, False])
    state = SiteState(
        ev_present=present,
        ev_max_charge_kw=np.where(present, np.inf, 0.0),
        ev_max_discharge_kw=np.array([11.0, 11.0, 0.0, 0.0]),
        energy_needed_kwh=np.array([2.0, 20.0, 5.0, 0.0]),
        energy_room_kwh=np.array([2.0, 20.0, 5.0, 0.0]),
        energy_dischargeable_kwh=np.array([30.0, 30.0, 0.0, 0.0]),
        time_left_h=np.array([3.0, 2.5, 1.0, 0.0]),
        base_load_kw=1.0,
        pv_kw=0.0,
        dt_h=10 / 3600,
    )
    plan = ProjectionPlan.from_site(site)
    ask = np.array([-11.0, -11.0, 11.0, 0.0])
    now = np.asarray(project(site, state, ask, 0.0, plan=plan).charger_kw)
    h = 12
    window = ForecastWindow(
        np.full(h * 90, 1.0), np.zeros(h * 90), np.full(h * 90, 0.2), np.full(h * 90, 0.05)
    )
    sched = plan_schedule(site, plan, state, window, now, h, 900.0, 10.0)
    assert sched.shape == (n, h)
    # now: the decision, its discharge cut to what a whole period allows
    assert np.array_equal(sched[2:, 0], now[2:]) and np.all(sched[:2, 0] >= now[:2])
    site_kw = sched.sum(axis=0) + 1.0
    assert np.all(site_kw <= site.import_limit_kw + 1e-6) and np.all(site_kw >= -6.0 - 1e-6)
    assert np.all(sched[2:] >= 0.0)  # no discharge where the EV does not allow it (and no EV: 0)
    assert np.all(sched[3] == 0.0)
    # no later period further from 0 than now: charging never rises, discharge never deepens
    for i in range(n):
        lo, hi = min(sched[i, 0], 0.0), max(sched[i, 0], 0.0)
        assert np.all((sched[i, 1:] >= lo - 1e-9) & (sched[i, 1:] <= hi + 1e-9))
    # an EV that must charge keeps charging until its need is met, then stops; gone after its departure
    eff = site.efficiency[2]
    got = np.cumsum(sched[2] * eff * 0.25)
    assert got[3] >= 5.0 - SHORT_KWH and np.all(sched[2, 4:] == 0.0)
    # the EV discharging now stops before its departure margin is gone
    assert np.all(sched[1, 10:] == 0.0)
    # a plan moved beyond the band is resent; the same plan later is not
    assert not plan_moved(sched[0], 0.0, sched[0], 900.0, 0.5)
    assert plan_moved(sched[0], 0.0, sched[0] + np.r_[0.0, np.ones(h - 1)], 900.0, 0.5)
    assert plan_moved(sched[0], 900.0 * (h // 2 + 1), sched[0], 900.0, 0.5)  # less than half left


def test_schedule_periods_move_the_stations_energy_when_time_is_scaled() -> None:
    """``--time-scale N`` against ``evdlm simulate --speed N``: a station steps through its periods on the
    wall clock (``startPeriod`` in wall seconds), while one wall second moves N seconds of energy. The
    plan of 6 s periods at N = 600 is the plan of 3600 s periods at N = 1, and an EV needing 5 kWh at
    11 kW is done after its first 1-hour period (6 wall s), not after 600 of them."""
    site = SiteArrays.from_config(v2g_site(export_limit_kw=6.0))
    present = np.array([True, True, False, False])
    state = SiteState(
        ev_present=present,
        ev_max_charge_kw=np.where(present, np.inf, 0.0),
        ev_max_discharge_kw=np.zeros(4),
        energy_needed_kwh=np.array([5.0, 30.0, 0.0, 0.0]),
        energy_room_kwh=np.array([5.0, 30.0, 0.0, 0.0]),
        energy_dischargeable_kwh=np.zeros(4),
        time_left_h=np.array([4.0, 2.5, 0.0, 0.0]),
        base_load_kw=1.0,
        pv_kw=0.0,
        dt_h=600 * 0.2 / 3600,
    )
    plan = ProjectionPlan.from_site(site)
    now = np.asarray(project(site, state, np.array([11.0, 11.0, 0.0, 0.0]), 0.0, plan=plan).charger_kw)
    window = ForecastWindow(np.full(400, 1.0), np.zeros(400), np.full(400, 0.2), np.full(400, 0.05))
    scaled = plan_schedule(site, plan, state, window, now, 4, 6.0, 0.2, time_scale=600.0)
    wall = plan_schedule(site, plan, state, window, now, 4, 3600.0, 120.0)
    assert np.allclose(scaled, wall)
    assert scaled[0, 0] > 4.0 and np.all(scaled[0, 1:] == 0.0)  # 5 kWh done in the first hour
    assert np.all(scaled[1, :2] > 4.0) and np.all(scaled[1, 3:] == 0.0)  # gone after 2.5 h
    unscaled = plan_schedule(site, plan, state, window, now, 4, 6.0, 0.2)  # as before: 6 s of energy
    assert np.all(unscaled[0] > 4.0)  # it would plan to keep charging a full EV


async def test_an_over_estimated_base_load_never_makes_the_site_discharge_past_its_export_limit() -> None:
    """The V2G benchmark's first metered cycle: the site meter read 50 EVs before their transactions were
    known, so the base load errs high (here 40 kW on a 30 kW limit) and the projection discharged EVs to
    'relieve' it; with the base load the meter also allows (5 kW), that is 39 kW of export on a 6 kW
    limit. The decision is made again without discharge."""
    from serving.control import Controller

    site = SiteArrays.from_config(v2g_site(export_limit_kw=6.0))
    policy = Discharge()
    policy.reset(site)
    ctl = Controller(site, policy, None, np.full(site.n, 5.0), 1.0)
    try:
        present = np.ones(site.n, dtype=bool)
        state = SiteState(
            ev_present=present, ev_max_charge_kw=np.full(site.n, np.inf),
            ev_max_discharge_kw=np.full(site.n, 11.0), energy_needed_kwh=np.full(site.n, 1.0),
            energy_room_kwh=np.full(site.n, 1.0), energy_dischargeable_kwh=np.full(site.n, 20.0),
            time_left_h=np.full(site.n, 4.0), base_load_kw=40.0, pv_kw=0.0, dt_h=10 / 3600,
        )  # fmt: skip
        window = ForecastWindow(np.full(8, 40.0), np.zeros(8), np.full(8, 0.2), np.full(8, 0.05))
        snap = Snapshot(state, np.datetime64("2025-06-02T08:00:00"), 1, 0.2, 0.05, window, 0.0)
        hi = await ctl.decide(snap, False)  # the base load as the snapshot has it: discharge
        assert float(hi.limits_kw.sum()) < -10.0
        out = await ctl.decide(snap, False, base_low_kw=40.0)  # no doubt about it: the same
        assert np.array_equal(out.limits_kw, hi.limits_kw)
        out = await ctl.decide(snap, False, base_low_kw=5.0)
        assert np.all(out.limits_kw >= 0.0) and ctl.no_discharge_cycles == 1
        assert 5.0 + float(out.limits_kw.sum()) >= -6.0
    finally:
        ctl.close()


def _discharge_snapshot(site: SiteArrays, base_kw: float) -> Snapshot:
    present = np.ones(site.n, dtype=bool)
    state = SiteState(
        ev_present=present, ev_max_charge_kw=np.full(site.n, np.inf),
        ev_max_discharge_kw=np.full(site.n, 11.0), energy_needed_kwh=np.full(site.n, 1.0),
        energy_room_kwh=np.full(site.n, 1.0), energy_dischargeable_kwh=np.full(site.n, 20.0),
        time_left_h=np.full(site.n, 4.0), base_load_kw=base_kw, pv_kw=0.0, dt_h=10 / 3600,
    )  # fmt: skip
    window = ForecastWindow(np.full(8, base_kw), np.zeros(8), np.full(8, 0.2), np.full(8, 0.05))
    return Snapshot(state, np.datetime64("2025-06-02T08:00:00"), 1, 0.2, 0.05, window, 0.0)


async def test_load_the_meter_does_not_vouch_for_narrows_the_export_instead_of_stopping_discharge() -> None:
    """Issue 15: after an overload tick the closed-loop correction raises the snapshot's base load (12 kW
    here, 4 kW of it measured at the least); the projection discharged 27 kW into a 15 kW export limit
    on it, 23 kW of export at the low side. The cycle used to be decided again with no discharge at all
    (the live V2G energy fell short of the evaluation's); now it discharges what the export limit allows
    at the low side: 19 kW."""
    from serving.control import Controller

    site = SiteArrays.from_config(v2g_site(export_limit_kw=15.0))
    policy = Discharge()
    policy.reset(site)
    ctl = Controller(site, policy, None, np.full(site.n, 5.0), 1.0)
    try:
        out = await ctl.decide(_discharge_snapshot(site, 12.0), False, base_low_kw=4.0)
    finally:
        ctl.close()
    export_low = -(4.0 + float(out.limits_kw.sum()))
    assert export_low <= 15.0 + 1e-6
    assert export_low >= 15.0 - float(site.resolution_kw.max()) * site.n  # within rounding of the limit
    assert ctl.no_discharge_cycles == 0 and ctl.export_narrowed_cycles == 1


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    base_kw=st.floats(0.0, 40.0),
    unsure_kw=st.floats(0.0, 30.0),
    export_kw=st.floats(0.0, 40.0),
)
def test_no_decision_exports_past_the_limit_at_the_lowest_base_load(
    base_kw: float, unsure_kw: float, export_kw: float
) -> None:
    """Safety: whatever the snapshot's base load and the lowest the meter allows, the decided limits keep
    the site within its export limit at that lowest base load (and discharge where they can)."""
    from serving.control import Controller

    site = SiteArrays.from_config(v2g_site(export_limit_kw=export_kw))
    policy = Discharge()
    policy.reset(site)
    ctl = Controller(site, policy, None, np.full(site.n, 5.0), 1.0)
    low = max(base_kw - unsure_kw, 0.0)
    try:
        out = asyncio.run(ctl.decide(_discharge_snapshot(site, base_kw), False, base_low_kw=low))
    finally:
        ctl.close()
    assert -(low + float(out.limits_kw.sum())) <= export_kw + 1e-6
    # room to discharge at the low side, and the snapshot's base load more than an EV's minimum current
    # (4.2 kW) under the import limit: some EV does (base 29, low 25 discharged nothing, as at base 29 alone)
    if export_kw > base_kw - low + 4 * 4.2 and base_kw < 30.0 - 4.2:
        assert float(out.limits_kw.min()) < 0.0


# --------------------------------------------------------------------------- over loopback


async def test_only_a_v2x_ev_on_a_v2x_station_gets_discharge_periods(tmp_path: Path) -> None:
    site = v2g_site()
    cfg = serving_config(tmp_path, schedule_periods=4, schedule_period_s=60.0)
    svc = Service(cfg, site, Discharge(), PASSWORDS)
    await svc.start()
    try:
        # CP1-1: V2X EV on a V2X station; CP1-2: charge-only EV; CP2: a station that reports ChargingOnly
        v2g = {"CP1-1": True, "CP1-2": False, "CP2-1": True, "CP2-2": False}
        # the EVs need little: the departure margin leaves room to discharge (charging is capped at the
        # failsafe share, 6.2 kW, and the stay is 8 simulated hours = 8 wall minutes)
        sim = _sim(svc, v2g_scenario(site, v2g, 0.3), duration_s=3.0, no_v2x=frozenset({"CP2"}))
        seen = _record_profiles(sim)
        rep = await sim.run()
        state = svc.state()
        triggered = svc.metrics.counters.get(("triggered_readings_total", ()), 0.0)
        await asyncio.sleep(0.3)
        modes = {}
        for c in svc.live.connectors:
            if c.tx_pk is not None:
                modes[c.charger_id] = await svc.store.run(svc.store.store.v2g_modes, c.tx_pk)
    finally:
        await svc.stop()
    assert {s["ocpp_version"] for s in state["stations"]} == {"2.1"}
    discharging = _tx_periods(seen, "CP1-1")
    assert discharging and any(p.get("setpoint", 0.0) < 0 for p in discharging)
    # (its first profile may precede the EV's needs: charge-only until they arrive)
    assert all(p.get("operation_mode", "CentralSetpoint") == "CentralSetpoint" for p in discharging)
    assert len(discharging) >= 4  # a schedule, not a single limit
    for cid in ("CP1-2", "CP2-1", "CP2-2"):
        periods = _tx_periods(seen, cid)
        assert periods, cid
        assert all(p["limit"] >= 0 and "setpoint" not in p and "discharge_limit" not in p for p in periods)
    # the physical site: the V2X EV gave energy back, nothing over the import or export limit
    assert rep.energy_exported_kwh > 0.0
    assert rep.violation_ticks == 0 and rep.node_violation_ticks == 0
    assert rep.calls_failed == 0
    # 2.1 stations answer the TriggerMessage after a change with a reading known as asked for
    assert sim.triggers_received["CP1"] >= 1 and triggered >= 1
    # the mode and why, per transaction
    assert modes["CP1-1"][-1] == ("CentralSetpoint", "station_and_ev_allow_v2x")
    assert modes["CP1-2"][-1] == ("charge_only", "ev_sent_no_v2x_parameters")
    assert modes["CP2-1"][-1] == ("charge_only", "station_reports_no_driven_v2x_mode")
    chargers = {c["id"]: c for c in state["chargers"]}
    assert chargers["CP1-1"]["v2g_mode"] == "CentralSetpoint" and chargers["CP1-1"]["limit_kw"] < 0


async def test_a_station_that_loses_its_central_system_follows_its_last_schedule(tmp_path: Path) -> None:
    site = v2g_site()
    # 1 s periods: the plan is 6 s long, then the station falls back to its failsafe profiles
    cfg = serving_config(tmp_path, schedule_periods=6, schedule_period_s=1.0)
    svc = Service(cfg, site, FullPower(), PASSWORDS)
    await svc.start()
    v2g = dict.fromkeys(site.charger_ids, False)
    sim = _sim(svc, v2g_scenario(site, v2g, energy_kwh=20.0), duration_s=7.0)
    run = asyncio.create_task(sim.run())
    await asyncio.sleep(2.5)
    await svc.stop()  # the central system is gone
    stopped = time.monotonic()
    followed = []
    for _ in range(12):
        await asyncio.sleep(0.4)
        now = datetime.now(UTC)
        for sid, conns in sim.stations.items():
            for c in conns:
                period = sim.physics.period_now(sid, c, now)
                if period is not None:
                    # the power is the last tick's: the period then may have allowed more than the one now
                    then = sim.physics.period_now(sid, c, now - timedelta(seconds=3 * sim.opt.tick_s))
                    lim = period.limit_kw if then is None else max(period.limit_kw, then.limit_kw)
                    followed.append((c.power_kw, lim))
    rep = await run
    assert followed, "no station kept a schedule"
    assert all(p <= lim + 1e-6 for p, lim in followed)
    # a plan sent just before the stop runs its 6 s to the end: wait until the last one must have lapsed
    await asyncio.sleep(max(0.0, stopped + 6.0 + 0.5 - time.monotonic()))
    # every schedule lapsed after its plan: the stations are back on the failsafe maximum profile
    for sid, conns in sim.stations.items():
        assert all(sim.physics.period_now(sid, c) is None for c in conns)
        assert sim.physics.profiles[sid].max_kw is not None
    assert rep.violation_ticks == 0 and rep.node_violation_ticks == 0
    assert rep.max_site_import_kw <= 30.0 + 1e-6


def test_a_plan_about_to_step_away_from_the_decision_is_resent(tmp_path: Path) -> None:
    """Periods as long as the control interval: a plan sent 9.5 s ago steps into its next period within
    the next cycle; where that period is further than the deadband from this cycle's decision the
    decision goes out now (the deadband alone compares with the period in force now)."""
    from serving.live import LiveSite
    from serving.plans import plans_step_away

    site_cfg = v2g_site()
    site = SiteArrays.from_config(site_cfg)
    cfg = serving_config(tmp_path, control_interval_s=10.0, schedule_period_s=10.0, schedule_periods=4)
    live = LiveSite.build(site, connector_map(cfg, site_cfg), ["CP1", "CP2"])
    for c, plan in zip(live.connectors, ([-11.0, 0.0, 0.0, 0.0], [-11.0, -11.0, -11.0, 0.0]), strict=False):
        c.tx_pk, c.limit_kw, c.plan_kw, c.plan_start = 1, plan[0], np.array(plan), 100.0
    decision = np.array([-11.0, -11.0, 0.0, 0.0])
    assert plans_step_away(site, live.connectors, cfg, decision, 109.5) == [0]  # would stop discharging
    assert plans_step_away(site, live.connectors, cfg, decision, 101.0) == []  # its next period is far
    assert plans_step_away(site, live.connectors, cfg, np.array([0.0, -11.0, 0, 0]), 109.5) == []
    # cycles on the plan's grid (issue 15): the cycle read at 109.95 s, its station stepped at 110 s into
    # the period that stops the discharge, before the write at 110.05 s; the decision goes out
    assert plans_step_away(site, live.connectors, cfg, decision, 110.05, read_at=109.95) == [0]
    assert plans_step_away(site, live.connectors, cfg, decision, 110.05, read_at=110.01) == []  # it read it


def test_a_discharge_plan_keeps_discharging_while_the_departure_margin_allows() -> None:
    """Issue 15: the later periods capped an EV discharging now at 0 kW of charge, and the V2G departure
    margin counts on charging back, so they discharged nothing: every discharge plan stopped after its
    first period, and a station whose cycle did not resend it in time stopped for a whole interval."""
    site = SiteArrays.from_config(v2g_site(export_limit_kw=30.0))
    n = site.n
    present = np.ones(n, dtype=bool)
    state = SiteState(
        ev_present=present, ev_max_charge_kw=np.full(n, np.inf), ev_max_discharge_kw=np.full(n, 11.0),
        energy_needed_kwh=np.array([0.2, 0.2, 3.0, 0.2]), energy_room_kwh=np.array([0.2, 0.2, 3.0, 0.2]),
        energy_dischargeable_kwh=np.full(n, 18.0), time_left_h=np.full(n, 0.5), base_load_kw=2.0,
        pv_kw=0.0, dt_h=10 / 3600,
    )  # fmt: skip
    plan = ProjectionPlan.from_site(site)
    now = np.asarray(project(site, state, np.array([-9.0, -9.0, 5.0, 0.0]), 0.0, plan=plan).charger_kw)
    window = ForecastWindow(np.full(40, 2.0), np.zeros(40), np.full(40, 0.6), np.full(40, 0.5))
    sched = plan_schedule(site, plan, state, window, now, 30, 10.0, 10.0)
    assert now[0] < -8.0 and now[1] < -8.0
    assert np.allclose(sched[:2, :], now[:2, None])  # 5 minutes of it leave its departure energy
    assert np.all((sched[2] >= 0.0) & (sched[2] <= now[2] + 1e-9)) and np.all(sched[3] == 0.0)


def test_16_and_201_profiles_carry_the_plan_for_charging() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    periods = [(0, 16.0), (900, 10.0), (1800, 6.0)]
    p16 = set_charging_profile(
        "1.6", "TxProfile", 2, 16.0, "A", 3, "7", now=now, periods=periods, duration_s=2700
    )
    s16 = p16.cs_charging_profiles["charging_schedule"]
    assert p16.cs_charging_profiles["charging_profile_kind"] == "Absolute"
    assert s16["start_schedule"] == "2030-01-01T00:00:00Z" and s16["duration"] == 2700
    assert [p["limit"] for p in s16["charging_schedule_period"]] == [16.0, 10.0, 6.0]
    p201 = set_charging_profile("2.0.1", "TxProfile", 2, 16.0, "A", 3, "tx", now=now, periods=periods)
    s201 = p201.charging_profile["charging_schedule"][0]
    assert [p["start_period"] for p in s201["charging_schedule_period"]] == [0, 900, 1800]
    assert all(set(p) == {"start_period", "limit", "number_phases"} for p in s201["charging_schedule_period"])
