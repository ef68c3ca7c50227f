"""The live service's failsafe where the static share starves chargers: the rotation (envs/rotation.py)
as the stations' daily recurring failsafe, a warning at start naming the chargers, and the service's own
stale-meter mode following the same turns."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ocpp.v16 import call as call16
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from envs.core import SiteArrays
from envs.rotation import DAY_S, failsafe_rotation
from serving.config import connector_map
from serving.control import Controller
from serving.live import LiveSite, build_snapshot
from serving.service import Service
from tests.test_serving_failsafe import StrictStation, _auth
from tests.test_serving_helpers import PASSWORDS, FullPower, serving_config, small_site

RESERVE_KW = 24.0
"""of the 30 kW connection: room for one 16 A three-phase charger at its 6 A minimum (4.14 kW)"""


def held_a(profile: dict[str, Any], t: int) -> float:
    """The limit (A) a recurring daily profile holds ``t`` seconds after midnight."""
    periods = profile["charging_schedule"]["charging_schedule_period"]
    value = periods[0]["limit"]
    for p in periods:
        if p["start_period"] <= t:
            value = p["limit"]
    return float(value)


async def test_starved_chargers_take_turns_in_the_station_held_failsafe(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = serving_config(tmp_path, control_interval_s=60.0, failsafe_base_load_kw=RESERVE_KW)
    with caplog.at_level(logging.WARNING, logger="evdlm.serving"):
        svc = Service(cfg, small_site(), FullPower(), PASSWORDS)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "4 charger(s)" in warning and all(c in warning for c in ("CP1-1", "CP1-2", "CP2-1", "CP2-2"))
    assert "4 slot(s) of 3600 s" in warning
    await svc.start(loop=False)
    stations: dict[str, StrictStation] = {}
    readers: list[asyncio.Task[Any]] = []
    try:
        for sid in ("CP1", "CP2"):
            ws = await connect(
                f"ws://127.0.0.1:{svc.ocpp_port}/{sid}",
                subprotocols=[Subprotocol("ocpp1.6")],
                additional_headers=_auth(sid),
            )
            cp = StrictStation(sid, ws, response_timeout=5)
            cp.setup(refuse_failsafe=0)
            cp.registered = True
            readers.append(asyncio.get_running_loop().create_task(cp.start()))
            await cp.call(call16.BootNotification(charge_point_model="m", charge_point_vendor="v"))
            stations[sid] = cp
        deadline = asyncio.get_running_loop().time() + 5.0
        while asyncio.get_running_loop().time() < deadline and (
            any(len(cp.requests) < 3 for cp in stations.values())
        ):
            await asyncio.sleep(0.05)
    finally:
        for task in readers:
            task.cancel()
        for cp in stations.values():
            await cp._connection.close()
        await svc.stop()
    site = svc.site
    allowed_a = np.zeros((site.n, DAY_S // 60))  # per charger, per minute of the day
    for sid, cp in stations.items():
        purposes = [p for _, p, _, _ in cp.requests]
        assert purposes == ["ChargePointMaxProfile", "TxDefaultProfile", "TxDefaultProfile"]
        profiles = [prof for _, _, _, prof in cp.requests]
        for prof in profiles:  # daily recurring from a UTC midnight: held by the station on its own
            assert prof["charging_profile_kind"] == "Recurring" and prof["recurrency_kind"] == "Daily"
            assert prof["charging_schedule"]["start_schedule"].endswith("T00:00:00Z")
        station_max, per_connector = profiles[0], profiles[1:]
        for k, prof in enumerate(per_connector, start=1):
            i = site.charger_ids.index(f"{sid}-{k}")
            for m in range(allowed_a.shape[1]):
                allowed_a[i, m] = min(held_a(prof, 60 * m), held_a(station_max, 60 * m))
    kw = allowed_a * site.kw_per_a[:, None]
    # every charger gets its 6 A minimum in its turn: six hours a day less the guard minutes
    assert np.all((allowed_a >= 6.0).sum(axis=1) == 6 * 59)
    # and at no minute do the stations together exceed what the connection has left after the reserve
    assert kw.sum(axis=0).max() <= 30.0 - RESERVE_KW + 1e-9


async def test_the_stale_meter_mode_follows_the_rotation(tmp_path: Path) -> None:
    site = SiteArrays.from_config(small_site())
    rot = failsafe_rotation(site, RESERVE_KW)
    ctl = Controller(site, FullPower(), None, rot.share_kw, 0.1, rotation=rot)
    assert ctl.policy is not None
    ctl.policy.reset(site)
    cfg = serving_config(tmp_path)
    live = LiveSite.build(site, connector_map(cfg, site.config), ["CP1", "CP2"])
    for k, c in enumerate(live.connectors):
        c.tx_pk, c.ocpp_tx_id = k + 1, str(k + 1)
    snap, info = build_snapshot(live, cfg, 1, np.full(site.n, np.inf), now_mono=100.0)
    assert info.meter_stale and np.all(snap.state.ev_present)
    try:
        for hour in range(8):
            when = np.datetime64(f"2025-06-02T{hour:02d}:30:00")
            out = await ctl.decide(dataclasses.replace(snap, timestamp=when), meter_stale=True)
            turn = int(np.flatnonzero(rot.slot_of == hour % rot.n_slots)[0])
            assert np.isclose(out.limits_kw[turn], site.min_kw[turn])  # its turn, even on a stale meter
            assert np.count_nonzero(out.limits_kw) == 1
    finally:
        ctl.close()
