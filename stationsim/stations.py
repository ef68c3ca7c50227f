"""The simulated stations' OCPP side: each version's charge point, which answers the central system's
requests (profiles, variables) and refuses them before its boot was accepted."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ocpp.exceptions import SecurityError
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as CP16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v21 import ChargePoint as CP21
from ocpp.v21 import call_result as result21
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201

if TYPE_CHECKING:
    from stationsim.physics import SimConnector
    from stationsim.simulator import SiteSimulator


def _auth_header(station: str, password: str | None) -> dict[str, str]:
    if password is None:
        return {}
    token = base64.b64encode(f"{station}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class _Conforming:
    """A station that refuses every request of the central system before its BootNotification was
    answered Accepted on this connection (OCPP 1.6 section 4.2, 2.0.1 B01/B02): it answers a CallError
    ``SecurityError`` and counts the request in :attr:`SiteSimulator.refused_unregistered`.

    The answer is recognised in the message loop itself (a CallResult with ``status``, ``currentTime``
    and ``interval`` is the BootNotification's), so a request that follows it on the wire is accepted
    even before the boot coroutine resumes.
    """

    sim: SiteSimulator
    station: str
    registered: bool = False

    async def route_message(self, raw_msg: Any) -> None:
        with contextlib.suppress(TypeError, ValueError):
            frame = json.loads(raw_msg)
            if isinstance(frame, list) and len(frame) == 3 and frame[0] == 3 and isinstance(frame[2], dict):
                body = frame[2]
                if body.get("status") == "Accepted" and "currentTime" in body and "interval" in body:
                    self.registered = True
                    if self.sim.first_boot_accepted_utc is None:
                        self.sim.first_boot_accepted_utc = datetime.now(UTC).isoformat()
        await super().route_message(raw_msg)  # type: ignore[misc]

    def attach(self, sim: SiteSimulator, station: str) -> None:
        """This connection is ``station``'s of ``sim``; without ``sim.opt.check_schemas`` the requests it
        receives are not checked against the schemas."""
        self.sim, self.station = sim, station
        if not sim.opt.check_schemas:
            for handlers in self.route_map.values():  # type: ignore[attr-defined]
                handlers["_skip_schema_validation"] = True

    def check_registered(self) -> None:
        if not self.registered:
            self.sim.refused_unregistered += 1
            raise SecurityError(description="not registered: BootNotification not accepted yet")

    def _triggered(self, requested_message: str, connector_id: int | None) -> SimConnector | None:
        """The connector whose MeterValues a TriggerMessage asks of this station (None: nothing to send)."""
        if requested_message != "MeterValues" or self.station in self.sim.opt.no_trigger:
            return None
        return self.sim.connectors.get((self.station, connector_id or 0))

    def trigger_status(self, requested_message: str, connector_id: int | None) -> str:
        """TriggerMessage: MeterValues of a connector in a transaction is sent (after the answer);
        anything else is Rejected; a station of ``no_trigger`` answers NotImplemented."""
        self.check_registered()
        self.sim.triggers_received[self.station] += 1
        if self.station in self.sim.opt.no_trigger:
            return "NotImplemented"
        c = self._triggered(requested_message, connector_id)
        return "Accepted" if c is not None and c.tx_id is not None else "Rejected"

    def send_triggered(self, requested_message: str, connector_id: int | None) -> None:
        if (c := self._triggered(requested_message, connector_id)) is not None:
            self.sim.queues[self.station].put_nowait(("trigger", c))


class _SimCP16(_Conforming, CP16):
    @on(Action16.set_charging_profile)
    def on_set_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any) -> Any:
        self.check_registered()
        ok = self.sim.install_profile(self.station, connector_id, cs_charging_profiles, "1.6")
        return result16.SetChargingProfile(status="Accepted" if ok else "Rejected")

    @on(Action16.clear_charging_profile)
    def on_clear(self, **_: Any) -> Any:
        self.check_registered()
        return result16.ClearChargingProfile(status="Accepted")

    @on(Action16.trigger_message)
    def on_trigger(self, requested_message: str, connector_id: int | None = None, **_: Any) -> Any:
        return result16.TriggerMessage(status=self.trigger_status(requested_message, connector_id))

    @after(Action16.trigger_message)
    def after_trigger(self, requested_message: str, connector_id: int | None = None, **_: Any) -> None:
        self.send_triggered(requested_message, connector_id)


class _Triggers2x(_Conforming):
    """TriggerMessage as 2.0.1 and 2.1 stations answer it (an EVSE where 1.6 names a connector)."""

    trigger_result: Any = result201.TriggerMessage

    @on(Action201.trigger_message)
    def on_trigger(self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any) -> Any:
        status = self.trigger_status(requested_message, None if evse is None else int(evse["id"]))
        return self.trigger_result(status=status)

    @after(Action201.trigger_message)
    def after_trigger(self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any) -> None:
        self.send_triggered(requested_message, None if evse is None else int(evse["id"]))


class _SimCP201(_Triggers2x, CP201):
    @on(Action201.set_charging_profile)
    def on_set_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        self.check_registered()
        ok = self.sim.install_profile(self.station, evse_id, charging_profile, "2.0.1")
        return result201.SetChargingProfile(status="Accepted" if ok else "Rejected")

    @on(Action201.clear_charging_profile)
    def on_clear(self, **_: Any) -> Any:
        self.check_registered()
        return result201.ClearChargingProfile(status="Accepted")


class _SimCP21(_Triggers2x, CP21):
    trigger_result = result21.TriggerMessage

    @on(Action201.set_charging_profile)
    def on_set_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        self.check_registered()
        ok = self.sim.install_profile(self.station, evse_id, charging_profile, "2.1")
        return result21.SetChargingProfile(status="Accepted" if ok else "Rejected")

    @on(Action201.clear_charging_profile)
    def on_clear(self, **_: Any) -> Any:
        self.check_registered()
        return result21.ClearChargingProfile(status="Accepted")

    @on(Action201.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        self.check_registered()
        out = []
        for item in get_variable_data:
            comp, var = item["component"], item["variable"]
            known = comp.get("name") == "V2XChargingCtrlr" and var.get("name") == "SupportedOperationModes"
            value = "ChargingOnly" if self.station in self.sim.opt.no_v2x else self.sim.opt.v2x_modes
            out.append(
                {"attribute_status": "Accepted", "attribute_value": value, "component": comp, "variable": var}
                if known
                else {"attribute_status": "UnknownComponent", "component": comp, "variable": var}
            )
        return result21.GetVariables(get_variable_result=out)


SimCP = _SimCP16 | _SimCP201 | _SimCP21
