"""Unit tests of the serving building blocks: config, profiles, units, deadband, controller fallbacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocpp.messages import Call, _validate_payload
from ocpp.v16 import call as call16

from envs.config import ConfigError, site_from_dict
from envs.core import SiteArrays, SiteState
from envs.projection import ProjectionPlan, project
from envs.share import kw_to_profile as limits_in_unit
from envs.share import kw_to_profile_one as limit_in_unit
from envs.share import safe_static_share_kw
from serving.config import connector_map, load_passwords, load_serving_config, password_env_name
from serving.control import Controller, FixedLoad, fixed_load_view
from serving.csms import Station16, parse_basic_auth, sampled_values
from serving.dispatch import select_updates
from serving.live import LiveSite, build_snapshot
from serving.meter import decode_float32, encode_float32
from serving.metrics import Metrics
from serving.profiles import set_charging_profile
from stationsim.simulator import station_layout
from tests.test_serving_helpers import (
    FullPower,
    NaNPolicy,
    Raising,
    Slow,
    drawing_live,
    feeder_site,
    serving_config,
    small_site,
)


def _payload(req: Any) -> dict[str, Any]:
    from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case

    return dict(snake_to_camel_case(remove_nones(serialize_as_dict(req))))


# --------------------------------------------------------------------------- profiles


def test_tx_profile_16_exact_json_and_schema_valid() -> None:
    req = set_charging_profile("1.6", "TxProfile", 2, 13.7, "A", 3, transaction_id="42")
    payload = _payload(req)
    assert payload == {
        "connectorId": 2,
        "csChargingProfiles": {
            "chargingProfileId": 102,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 13.7, "numberPhases": 3}],
            },
            "transactionId": 42,
        },
    }
    _validate_payload(Call("1", "SetChargingProfile", payload), "1.6")


def test_max_profile_201_is_station_wide_and_schema_valid() -> None:
    from datetime import UTC, datetime

    req = set_charging_profile("2.0.1", "ChargePointMaxProfile", 0, 7400.0, "W", 1, now=datetime.now(UTC))
    payload = _payload(req)
    prof = payload["chargingProfile"]
    assert payload["evseId"] == 0
    assert prof["chargingProfilePurpose"] == "ChargingStationMaxProfile"
    assert prof["chargingSchedule"][0]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 7400.0, "numberPhases": 1}
    ]
    _validate_payload(Call("1", "SetChargingProfile", payload), "2.0.1")
    tx = _payload(set_charging_profile("2.0.1", "TxProfile", 1, 10.0, "A", 3, transaction_id="abc"))
    assert tx["chargingProfile"]["transactionId"] == "abc"
    _validate_payload(Call("2", "SetChargingProfile", tx), "2.0.1")


def test_profile_argument_errors() -> None:
    with pytest.raises(ValueError, match="transaction id"):
        set_charging_profile("1.6", "TxProfile", 1, 10.0, "A", 3)
    with pytest.raises(ValueError, match="EVSE 0"):
        set_charging_profile("1.6", "ChargePointMaxProfile", 1, 10.0, "A", 3)


def test_limits_round_down_to_one_decimal_in_the_chargers_unit() -> None:
    site = SiteArrays.from_config(small_site())
    kw_per_a = 3 * 230 / 1000
    assert limit_in_unit(site, 0, 10.0) == pytest.approx(np.floor(10.0 / kw_per_a * 10) / 10)
    assert limit_in_unit(site, 0, -3.0) == 0.0
    w_site = SiteArrays.from_config(small_site(rate_unit="W"))
    assert limit_in_unit(w_site, 0, 7.36789) == pytest.approx(7367.8)


@given(kw=st.floats(0.0, 50.0))
def test_rounded_limit_never_exceeds_the_request(kw: float) -> None:
    site = SiteArrays.from_config(small_site())
    value = limit_in_unit(site, 0, kw)
    assert value * float(site.kw_per_a[0]) <= kw + 1e-9
    assert kw - value * float(site.kw_per_a[0]) < 0.1 * float(site.kw_per_a[0]) + 1e-9


def _state(n: int, present: list[bool], base_kw: float = 5.0) -> SiteState:
    return SiteState(
        ev_present=np.array(present),
        ev_max_charge_kw=np.where(present, np.inf, 0.0),
        ev_max_discharge_kw=np.zeros(n),
        energy_needed_kwh=np.full(n, 50.0),
        energy_room_kwh=np.full(n, 50.0),
        energy_dischargeable_kwh=np.zeros(n),
        time_left_h=np.full(n, 5.0),
        base_load_kw=base_kw,
        pv_kw=0.0,
        dt_h=10 / 3600,
    )


def test_deadband_holds_small_changes_but_never_an_infeasible_old_limit() -> None:
    site = SiteArrays.from_config(small_site())
    state = _state(4, [True] * 4)
    active = np.ones(4, dtype=bool)
    new = np.full(4, 6.0)
    value = limit_in_unit(site, 0, 6.0)
    # within the deadband of 0.5 A: nothing to send
    assert select_updates(site, state, new, [value + 0.3] * 4, active, 0.5, 300.0) == []
    # beyond it: resend those
    assert select_updates(site, state, new, [value + 0.3, value + 2, value, None], active, 0.5, 300.0) == [
        1,
        3,
    ]
    # old limits within the deadband that together break the 30 kW connection: every decrease is sent
    new = np.full(4, 6.2)
    high = limit_in_unit(site, 0, 6.2) + 0.4
    ups = select_updates(site, state, new, [high] * 4, active, 0.5, 300.0)
    assert 5.0 + 4 * high * float(site.kw_per_a[0]) > 30.0
    assert ups == [0, 1, 2, 3]
    # each only one step (0.1 A) above its new limit, the site at its limit: together 0.28 kW over, which
    # the projection's tolerance of a step per charger let through (the V2G benchmark's node ticks)
    kw_per_a = float(site.kw_per_a[0])
    new = np.full(4, 9.0 * kw_per_a)
    at_limit = _state(4, [True] * 4, base_kw=30.0 - float(new.sum()))
    assert select_updates(site, at_limit, new, [9.1] * 4, active, 0.5, 300.0) == [0, 1, 2, 3]
    assert select_updates(site, at_limit, new, [8.9] * 4, active, 0.5, 300.0) == []  # below: they stay


@settings(max_examples=60, deadline=None)
@given(
    mask=st.lists(st.booleans(), min_size=4, max_size=4),
    draw=st.lists(st.floats(0.0, 11.04), min_size=4, max_size=4),
    request_kw=st.lists(st.floats(0.0, 11.04), min_size=4, max_size=4),
    base_kw=st.floats(0.0, 20.0),
)
def test_fixed_load_view_keeps_every_node_and_the_site_within_limits(
    mask: list[bool], draw: list[float], request_kw: list[float], base_kw: float
) -> None:
    """Whatever the uncontrollable draws, others + draws respect every limit, or the others are off."""
    site = SiteArrays.from_config(feeder_site(feeder_kw=27.0, import_limit_kw=40.0))
    plan = ProjectionPlan.from_site(site)
    fixed_mask = np.array(mask)
    fixed = FixedLoad(fixed_mask, np.where(fixed_mask, draw, 0.0), np.zeros(4))
    state = _state(4, [True] * 4, base_kw=base_kw)
    view_plan, view_state = fixed_load_view(plan, state, fixed)
    res = project(site, view_state, np.where(fixed_mask, 0.0, request_kw), 0.0, plan=view_plan)
    others = np.asarray(res.charger_kw)
    assert np.all(others[fixed_mask] == 0.0)
    total = np.where(fixed_mask, draw, others)
    node_kw = site.node_power_kw(total)
    for j in range(site.m):
        members = site.membership[:, j] > 0.5
        assert node_kw[j] <= site.node_limit_kw[j] + 1e-6 or np.all(others[members] == 0.0)
    assert base_kw + total.sum() <= 40.0 + 1e-6 or np.all(others == 0.0)


def test_limits_in_unit_matches_the_scalar_rounding() -> None:
    site = SiteArrays.from_config(small_site())
    w_site = SiteArrays.from_config(small_site(rate_unit="W"))
    kw = np.array([10.0, -3.0, 7.36789, 11.04])
    for s in (site, w_site):
        assert list(limits_in_unit(s, kw)) == [limit_in_unit(s, i, float(kw[i])) for i in range(4)]


# --------------------------------------------------------------------------- config and secrets


def test_connector_map_default_and_explicit(tmp_path: Path) -> None:
    site = small_site()
    cfg = serving_config(tmp_path)
    assert connector_map(cfg, site) == {
        ("CP1", 1): "CP1-1",
        ("CP1", 2): "CP1-2",
        ("CP2", 1): "CP2-1",
        ("CP2", 2): "CP2-2",
    }
    explicit = serving_config(tmp_path, stations=[{"id": "A", "connectors": {1: "CP2-2"}}])
    assert connector_map(explicit, site) == {("A", 1): "CP2-2"}
    with pytest.raises(ConfigError, match="unknown charger"):
        connector_map(serving_config(tmp_path, stations=[{"id": "A", "connectors": {1: "nope"}}]), site)
    twice = serving_config(tmp_path, stations=[{"id": "A", "connectors": {1: "CP1-1"}}, {"id": "CP1"}])
    with pytest.raises(ConfigError, match="charger 'CP1-1' is mapped twice"):
        connector_map(twice, site)


def test_station_ids_with_dashes_are_never_split(tmp_path: Path) -> None:
    site = site_from_dict(
        {
            "name": "dashes",
            "grid": {"import_limit_kw": 50.0},
            "nodes": [{"id": "main", "max_power_kw": 50.0}],
            "chargers": [
                {"id": cid, "node": "main", "max_current_a": 16.0} for cid in ("CP-00001", "CP-00002", "X")
            ],
        }
    )
    stations = [{"id": "CP-00001"}, {"id": "CP-00002"}, {"id": "X"}]
    cfg = serving_config(tmp_path, stations=stations)
    # each operator id is a station of its own, connector 1 (not station 'CP', connectors 1 and 2)
    assert connector_map(cfg, site) == {
        ("CP-00001", 1): "CP-00001",
        ("CP-00002", 1): "CP-00002",
        ("X", 1): "X",
    }
    # the simulator and 'serve --site' lay the site out the same way
    assert station_layout(SiteArrays.from_config(site), None) == connector_map(cfg, site)
    # a station 'CP' would claim CP-00001 and CP-00002 as connectors 1 and 2: ambiguous, named
    ambiguous = serving_config(tmp_path, stations=[*stations, {"id": "CP"}])
    with pytest.raises(ConfigError, match=r"charger 'CP-00001' is mapped twice .*station 'CP'"):
        connector_map(ambiguous, site)
    # a station whose own id and '<id>-1' are both chargers: which is connector 1?
    both = site_from_dict(
        {
            "name": "both",
            "grid": {"import_limit_kw": 50.0},
            "nodes": [{"id": "main", "max_power_kw": 50.0}],
            "chargers": [{"id": cid, "node": "main", "max_current_a": 16.0} for cid in ("S", "S-1")],
        }
    )
    with pytest.raises(ConfigError, match="chargers 'S' and 'S-1' would both be connector 1"):
        connector_map(serving_config(tmp_path, stations=[{"id": "S"}]), both)


def test_serving_yaml_rejects_passwords_and_resolves_paths(tmp_path: Path) -> None:
    (tmp_path / "serve.yaml").write_text("site: site.yaml\nstations: [{id: CP1}]\npasswords: {CP1: x}\n")
    with pytest.raises(ConfigError, match="never go in the YAML"):
        load_serving_config(tmp_path / "serve.yaml")
    (tmp_path / "serve.yaml").write_text("site: site.yaml\nstations: [{id: CP1}]\nsecrets_file: s.yaml\n")
    cfg = load_serving_config(tmp_path / "serve.yaml")
    assert cfg.site == tmp_path / "site.yaml"
    (tmp_path / "s.yaml").write_text("CP1: from-file\nCP2: two\n")
    assert load_passwords(cfg, environ={}) == {"CP1": "from-file", "CP2": "two"}
    env = {password_env_name("CP1"): "from-env"}
    assert load_passwords(cfg, environ=env)["CP1"] == "from-env"
    (tmp_path / "serve.yaml").write_text("site: site.yaml\nstations: [{id: CP1}]\ncontrol_interval_s: -1\n")
    with pytest.raises(ConfigError, match="control_interval_s"):
        load_serving_config(tmp_path / "serve.yaml")


def test_the_example_config_loads() -> None:
    from envs.config import load_site

    cfg = load_serving_config(Path("configs/serving/demo.yaml"))
    site = load_site(cfg.site)
    mapping = connector_map(cfg, site)
    assert len(mapping) == site.n_chargers


def test_basic_auth_header_parsing() -> None:
    import base64

    good = "Basic " + base64.b64encode(b"CP1:pa:ss").decode()
    assert parse_basic_auth(good) == ("CP1", "pa:ss")
    assert parse_basic_auth("Basic !!!") is None
    assert parse_basic_auth("Bearer x") is None
    assert parse_basic_auth(None) is None


# --------------------------------------------------------------------------- meter values


def test_sampled_values_both_versions_and_units() -> None:
    v16 = [
        {
            "sampled_value": [
                {"value": "7.2", "measurand": "Power.Active.Import", "unit": "kW"},
                {"value": "1234.5", "unit": "Wh"},
                {"value": "10", "measurand": "Power.Active.Import", "phase": "L1", "unit": "W"},
            ]
        }
    ]
    assert sampled_values(v16) == (7200.0, None, 1234.5)
    v201 = [
        {
            "sampled_value": [
                {"value": 3.5, "measurand": "Power.Active.Export", "unit_of_measure": {"unit": "kW"}},
                {
                    "value": 2.0,
                    "measurand": "Energy.Active.Import.Register",
                    "unit_of_measure": {"unit": "kWh"},
                },
                {"value": "bad", "measurand": "Power.Active.Import"},
            ]
        }
    ]
    assert sampled_values(v201) == (None, 3500.0, 2000.0)


@given(x=st.floats(-1e6, 1e6, allow_nan=False, width=32))
def test_modbus_float32_round_trip(x: float) -> None:
    assert decode_float32(encode_float32(x)) == x


def test_modbus_decode_known_registers() -> None:
    assert decode_float32([0x4148, 0x0000]) == 12.5
    with pytest.raises(ValueError):
        decode_float32([1])


# --------------------------------------------------------------------------- controller and fallbacks


def _controller(policy: Any, site: SiteArrays, budget_s: float = 0.1) -> Controller:
    from agents.rule_based import RuleBasedDLM

    fb = RuleBasedDLM()
    fb.reset(site)
    if policy is not None:
        policy.reset(site)
    return Controller(site, policy, fb, safe_static_share_kw(site, 5.0), budget_s)


def _snapshot(tmp_path: Path, site: SiteArrays, stale: bool = False, active: int = 4) -> Any:
    cfg = serving_config(tmp_path)
    live = LiveSite.build(site, connector_map(cfg, site.config), ["CP1", "CP2"])
    for k, c in enumerate(live.connectors[:active]):
        c.tx_pk, c.ocpp_tx_id = k + 1, str(k + 1)
    if not stale:
        from serving.live import SiteMeterReading

        live.meter = SiteMeterReading(5.0, None, 0.0)
    return build_snapshot(live, cfg, 1, np.full(site.n, np.inf), now_mono=1.0 if not stale else 100.0)


def test_safe_share_is_feasible_with_everyone_charging() -> None:
    site = SiteArrays.from_config(small_site())
    share = safe_static_share_kw(site, 5.0)
    assert share.shape == (4,)
    assert 5.0 + share.sum() <= 30.0 + 1e-6
    assert np.allclose(share, share[0]) and share[0] > 6.0


@pytest.mark.parametrize(
    ("policy", "reason"),
    [(Raising(), "raised"), (NaNPolicy(), "non_finite"), (Slow(), "timeout"), (None, "no_policy")],
)
async def test_policy_failures_fall_back_to_the_rule_based_dlm(
    tmp_path: Path, policy: Any, reason: str
) -> None:
    site = SiteArrays.from_config(small_site())
    ctl = _controller(policy, site)
    snap, info = _snapshot(tmp_path, site)
    out = await ctl.decide(snap, info.meter_stale)
    ctl.close()
    assert out.fallback_reason == reason
    assert out.policy == "rule_based"
    assert np.all(np.isfinite(out.limits_kw))
    assert 5.0 + out.limits_kw.sum() <= 30.0 + 1e-6


async def test_good_policy_is_used_and_projected(tmp_path: Path) -> None:
    site = SiteArrays.from_config(small_site())
    ctl = _controller(FullPower(), site)
    snap, info = _snapshot(tmp_path, site)
    out = await ctl.decide(snap, info.meter_stale)
    ctl.close()
    assert out.fallback_reason is None and out.policy == "full_power"
    # asked 4 x 11 kW on a 30 kW connection with 5 kW base load: cut to 25 kW
    assert out.limits_kw.sum() == pytest.approx(25.0, abs=0.5)
    assert out.planned_import_kw <= 30.0 + 1e-6
    ref = project(site, snap.state, site.rated_kw.copy(), 0.0)
    assert np.allclose(out.limits_kw, np.maximum(ref.charger_kw, 0))


class _Idle(FullPower):
    """Asks for nothing: only the projection's departure floor can make an EV charge."""

    name = "idle"

    def act(self, snapshot: Any) -> Any:
        from agents.base import Decision

        return Decision(np.zeros(self.site.n))


@pytest.mark.parametrize("floor", [True, False])
async def test_departure_floor_charges_an_ev_the_policy_would_strand(tmp_path: Path, floor: bool) -> None:
    import dataclasses

    site = SiteArrays.from_config(small_site())
    policy = _Idle()
    policy.reset(site)
    ctl = Controller(site, policy, None, safe_static_share_kw(site, 5.0), 0.1, departure_floor=floor)
    snap, info = _snapshot(tmp_path, site, active=1)
    st = snap.state
    need = np.where(st.ev_present, 2.0, 0.0)  # 2 kWh in 10 min: more than the charger can do after this cycle
    state = dataclasses.replace(
        st,
        energy_needed_kwh=need,
        energy_room_kwh=need + 10.0,
        time_left_h=np.where(st.ev_present, 1 / 6, 0.0),
    )
    out = await ctl.decide(dataclasses.replace(snap, state=state), info.meter_stale)
    ctl.close()
    ev = np.flatnonzero(state.ev_present)
    assert ev.size == 1
    if floor:
        assert out.limits_kw[ev[0]] >= 6.0  # the departure floor (the rest of 2 kWh before it leaves)
        assert 5.0 + out.limits_kw.sum() <= 30.0 + 1e-6
    else:
        assert out.limits_kw.sum() == 0.0


async def test_stale_meter_caps_every_limit_at_the_safe_share(tmp_path: Path) -> None:
    site = SiteArrays.from_config(small_site())
    ctl = _controller(FullPower(), site)
    fresh, info = _snapshot(tmp_path, site, active=2)
    out_fresh = await ctl.decide(fresh, info.meter_stale)
    stale, sinfo = _snapshot(tmp_path, site, stale=True, active=2)
    assert sinfo.meter_stale and not info.meter_stale
    out_stale = await ctl.decide(stale, sinfo.meter_stale)
    ctl.close()
    assert out_fresh.limits_kw.max() > ctl.safe_share_kw.max() + 1.0  # headroom used while fresh
    assert np.all(out_stale.limits_kw <= ctl.safe_share_kw + 1e-9)


def test_snapshot_estimates_base_load_and_reports_offender_overdraw(tmp_path: Path) -> None:
    from serving.live import SiteMeterReading

    live, cfg = drawing_live(tmp_path)
    live.connectors[0].power_kw, live.connectors[0].offender = 11.0, True
    live.meter = SiteMeterReading(5.0 + 11.0 + 18.0, None, 1.0)
    _, info = build_snapshot(live, cfg, 1, np.full(4, np.inf), now_mono=1.0, correction_kw=2.5)
    assert info.offender_overdraw_kw == pytest.approx(5.0)
    # base load = import - measured chargers, plus the closed-loop correction
    assert info.base_load_kw == pytest.approx(5.0 + 2.5)


# --------------------------------------------------------------------------- robustness of the message loop


class _FakeConnection:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, message: str) -> None:
        self.sent.append(message)

    async def recv(self) -> str:  # pragma: no cover - not used
        raise AssertionError


class _FakeService:
    """The narrow :class:`serving.events.StationEvents` the handlers see."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.heartbeat_interval_s = 60
        self.response_timeout_s = 5.0
        self.seen_count = 0

    def seen(self, sid: str) -> None:
        self.seen_count += 1

    def status_changed(self, event: Any) -> None:
        self.seen_count += 1

    def meter_reading(self, event: Any) -> None:
        self.seen_count += 1

    async def booted(self, event: Any) -> None:
        self.seen_count += 1

    def registered(self, sid: str) -> None:
        self.seen_count += 1

    def transaction_answered(self, sid: str, k: int) -> None:
        self.seen_count += 1


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    return st.recursive(
        scalars,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    )


ACTIONS = st.sampled_from(["Heartbeat", "StatusNotification", "MeterValues", "BootNotification", "Nope", ""])
FRAMES = st.one_of(
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
    _json_values().map(json.dumps),
    st.tuples(
        st.sampled_from([2, 3, 4, 5, "2"]), st.text(max_size=5) | st.integers(), ACTIONS, _json_values()
    ).map(lambda t: json.dumps(list(t))),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=FRAMES)
def test_fuzz_bad_frames_never_raise_and_errors_answer_the_right_id(frame: str) -> None:
    import asyncio

    conn = _FakeConnection()
    cp = Station16("CP1", conn, _FakeService())  # type: ignore[arg-type]

    async def go() -> None:
        await cp.route_message(frame)
        # the same station still answers a well-formed Heartbeat afterwards
        await cp.route_message(json.dumps([2, "ok-1", "Heartbeat", {}]))

    asyncio.run(go())
    assert conn.sent, "the heartbeat was not answered"
    last = json.loads(conn.sent[-1])
    assert last[0] == 3 and last[1] == "ok-1" and "currentTime" in last[2]
    for raw in conn.sent[:-1]:
        msg = json.loads(raw)
        assert msg[0] in (3, 4)
        if msg[0] == 4:
            assert isinstance(msg[2], str) and msg[2]  # an error code, whatever it is


def test_schema_invalid_call_gets_a_call_error() -> None:
    import asyncio

    conn = _FakeConnection()
    cp = Station16("CP1", conn, _FakeService())  # type: ignore[arg-type]
    asyncio.run(cp.route_message(json.dumps([2, "x1", "StatusNotification", {"connectorId": "one"}])))
    asyncio.run(cp.route_message(json.dumps([2, "x2", "NoSuchAction", {}])))
    replies = [json.loads(m) for m in conn.sent]
    assert [r[0] for r in replies] == [4, 4]
    assert [r[1] for r in replies] == ["x1", "x2"]


class _Recorder(_FakeService):
    """Keeps every typed event the handlers hand over."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Any] = []

    async def transaction_updated(self, event: Any) -> None:
        self.events.append(event)

    def charging_needs(self, event: Any) -> None:
        self.events.append(event)


def test_ocpp201_payloads_become_typed_events_at_the_edge() -> None:
    import asyncio
    from datetime import UTC, datetime

    from serving.csms import Station201
    from serving.events import ChargingNeeds, MeterReading, TransactionUpdated

    conn = _FakeConnection()
    events = _Recorder()
    cp = Station201("CP1", conn, events)  # type: ignore[arg-type]
    started = {
        "eventType": "Started",
        "timestamp": "2026-01-01T08:00:00Z",
        "triggerReason": "CablePluggedIn",
        "seqNo": 1,
        "transactionInfo": {"transactionId": "tx-1"},
        "evse": {"id": 2, "connectorId": 1},
        "idToken": {"idToken": "TAG", "type": "Central"},
        "meterValue": [
            {
                "timestamp": "2026-01-01T08:00:00Z",
                "sampledValue": [
                    {"value": 3.5, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW"}},
                    {"value": 1234.5, "measurand": "Energy.Active.Import.Register"},
                ],
            }
        ],
    }
    needs = {
        "evseId": 2,
        "chargingNeeds": {
            "requestedEnergyTransfer": "AC_three_phase",
            "departureTime": "2026-01-01T17:00:00Z",
            "acChargingParameters": {
                "energyAmount": 20000,
                "evMinCurrent": 6,
                "evMaxCurrent": 16,
                "evMaxVoltage": 400,
            },
        },
    }
    asyncio.run(cp.route_message(json.dumps([2, "t1", "TransactionEvent", started])))
    asyncio.run(cp.route_message(json.dumps([2, "t2", "NotifyEVChargingNeeds", needs])))
    assert [json.loads(m)[0] for m in conn.sent] == [3, 3]
    at = datetime(2026, 1, 1, 8, tzinfo=UTC)
    reading = MeterReading("CP1", 2, 3500.0, None, 1234.5, taken=at)
    assert events.events == [
        TransactionUpdated("CP1", "tx-1", 2, "TAG", 1234.5, at, reading),
        ChargingNeeds("CP1", 2, 20000.0, 16.0, None, datetime(2026, 1, 1, 17, tzinfo=UTC)),
    ]


def test_call16_payload_classes_exist() -> None:
    # the simulator and the service build these; a renamed class in a new ocpp release must fail loudly
    assert call16.SetChargingProfile(connector_id=1, cs_charging_profiles={}).connector_id == 1


def test_metrics_render_prometheus_text() -> None:
    m = Metrics()
    m.inc("fallbacks_total", reason="raised")
    m.inc("fallbacks_total", reason="raised")
    m.set("stations_connected", 3)
    m.loop_latency_s.observe(0.004)
    m.loop_latency_s.observe(0.3)
    text = m.render()
    assert 'evdlm_fallbacks_total{reason="raised"} 2' in text
    assert "evdlm_stations_connected 3" in text
    assert 'evdlm_loop_latency_seconds_bucket{le="0.005"} 1' in text
    assert 'evdlm_loop_latency_seconds_bucket{le="+Inf"} 2' in text
    assert m.count("fallbacks_total") == 2
    assert m.loop_latency_s.quantile(0.99) == 0.3
