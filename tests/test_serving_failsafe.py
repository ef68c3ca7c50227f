"""The failsafe in protocol order, against a strict station written here (not stationsim).

The station refuses (CallError SecurityError) every request before its BootNotification is answered
Accepted, records when each request came, and refuses the failsafe profiles a few times, so the service
must retry with backoff; a transaction it starts meanwhile must be covered by a TxProfile at once.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

from ocpp.exceptions import SecurityError
from ocpp.routing import on
from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from envs.core import SiteArrays
from envs.share import kw_to_profile_one, safe_static_share_kw
from serving.service import Service, starved_chargers
from tests.test_serving_helpers import PASSWORDS, FullPower, serving_config, small_site


class StrictStation(CP16):
    """Refuses requests before registration; rejects the failsafe ``refuse_failsafe`` times."""

    registered = False
    refuse_failsafe = 0

    def setup(self, refuse_failsafe: int) -> None:
        self.refuse_failsafe = refuse_failsafe
        self.requests: list[tuple[float, str, bool, dict[str, Any]]] = []
        """(monotonic time, purpose, registered then, profile)"""

    @on(Action.set_charging_profile)
    def on_set_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any) -> Any:
        purpose = cs_charging_profiles["charging_profile_purpose"]
        self.requests.append((time.monotonic(), purpose, self.registered, cs_charging_profiles))
        if not self.registered:
            raise SecurityError(description="not registered")
        if purpose != "TxProfile" and self.refuse_failsafe > 0:
            self.refuse_failsafe -= 1 if purpose == "TxDefaultProfile" else 0
            return result16.SetChargingProfile(status="Rejected")
        return result16.SetChargingProfile(status="Accepted")


def _auth(sid: str) -> dict[str, str]:
    token = base64.b64encode(f"{sid}:{PASSWORDS[sid]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_nothing_before_boot_failsafe_retried_and_an_early_transaction_covered_at_once(
    tmp_path: Path,
) -> None:
    # a long control interval and no loop: only the event-triggered path can send a TxProfile
    cfg = serving_config(tmp_path, control_interval_s=60.0, failsafe_retry_s=0.1)
    svc = Service(cfg, small_site(), FullPower(), PASSWORDS)
    await svc.start(loop=False)
    try:
        async with connect(
            f"ws://127.0.0.1:{svc.ocpp_port}/CP1",
            subprotocols=[Subprotocol("ocpp1.6")],
            additional_headers=_auth("CP1"),
        ) as ws:
            cp = StrictStation("CP1", ws, response_timeout=5)
            cp.setup(refuse_failsafe=3)  # three rounds of (max profile, TxDefault) rejected
            reader = asyncio.create_task(cp.start())
            await asyncio.sleep(1.0)  # connected, not booted: the service must stay silent
            assert cp.requests == []
            assert svc.state()["stations"][0]["failsafe"] is None
            boot = await cp.call(call16.BootNotification(charge_point_model="m", charge_point_vendor="v"))
            assert boot.status == "Accepted"
            booted_at = time.monotonic()
            cp.registered = True  # the answer is in: from now on requests are welcome
            start = await cp.call(
                call16.StartTransaction(
                    connector_id=1, id_tag="tag", meter_start=0, timestamp="2025-06-02T08:00:00Z"
                )
            )
            started_at = time.monotonic()
            tx_id = start.transaction_id
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and svc.live.stations["CP1"].failsafe is None:
                await asyncio.sleep(0.05)
            state = svc.state()
            reader.cancel()
    finally:
        await svc.stop()
    # no request came before the boot was answered (none refused)
    assert all(registered for _, _, registered, _ in cp.requests)
    assert cp.requests[0][0] >= booted_at - 0.05
    # the failsafe was retried until accepted: 3 refused rounds of both purposes, then the max profile
    failsafe = [p for _, p, _, _ in cp.requests if p != "TxProfile"]
    assert failsafe == ["ChargePointMaxProfile", "TxDefaultProfile"] * 3 + ["ChargePointMaxProfile"]
    station = state["stations"][0]
    assert station["failsafe"] == "ChargePointMaxProfile" and station["failsafe_attempts"] >= 4
    assert station["registered"] is True
    # the transaction started while no failsafe was held: its TxProfile came at once, at the safe share
    tx = [(t, prof) for t, p, _, prof in cp.requests if p == "TxProfile"]
    assert len(tx) == 1
    t_tx, prof = tx[0]
    assert prof["transaction_id"] == tx_id
    assert t_tx - started_at < 1.0
    limit_a = prof["charging_schedule"]["charging_schedule_period"][0]["limit"]
    assert limit_a == kw_to_profile_one(svc.site, 0, float(svc.safe_share_kw[0])) > 0
    charger = state["chargers"][0]
    assert charger["limit_value"] == limit_a


# --------------------------------------------------------------------------- start-up errors


def test_serve_refuses_to_start_when_the_policy_cannot_be_loaded(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from envs.config import dump_site
    from evdlm.cli import app

    dump_site(small_site(), tmp_path / "site.yaml")
    args = ["serve", "--site", str(tmp_path / "site.yaml"), "--policy", "models:/no-such-model/1"]
    args += ["--database-url", f"sqlite:///{tmp_path / 'db.sqlite'}", "--ocpp-port", "0", "--http-port", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "error: policy 'models:/no-such-model/1' cannot be loaded" in result.output
    assert "--allow-fallback" in result.output


def test_chargers_starved_by_the_static_safe_share_are_named() -> None:
    # 30 kW, 4 x 11.04 kW: with 24 kW of building load reserved, 6 kW cannot give four chargers 6 A each
    site = small_site()
    share = safe_static_share_kw(SiteArrays.from_config(site), 24.0)
    starved = starved_chargers(SiteArrays.from_config(site), share)
    assert starved and all(share[site.charger_ids.index(c)] == 0.0 for c in starved)
    assert (
        starved_chargers(
            SiteArrays.from_config(site), safe_static_share_kw(SiteArrays.from_config(site), 5.0)
        )
        == []
    )
