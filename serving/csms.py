"""The OCPP side of the central system: handshake checks and message handlers for 1.6J, 2.0.1 and 2.1.

This is the protocol edge: every 1.6J, 2.0.1 and 2.1 payload is parsed here into a typed event of
:mod:`serving.events` and handed to a :class:`~serving.events.StationEvents` (the service's live-state
updater); nothing past this module sees a raw OCPP dict, and the handlers never decide limits.

Frames that are not valid OCPP never close a connection: a parseable Call gets a CallError, anything else
is logged, counted and dropped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from ocpp.charge_point import ChargePoint as _BaseChargePoint
from ocpp.exceptions import FormatViolationError, OCPPError, ProtocolError
from ocpp.messages import Call, CallError, CallResult, MessageType
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v21 import call as call21
from ocpp.v21 import call_result as result21
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from serving.events import (
    Booted,
    ChargingNeeds,
    MeterReading,
    OperationModes,
    StationEvents,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
    TransactionUpdated,
    V2XNeeds,
)
from serving.profiles import Version
from serving.schema_check import check_payload

LOG = logging.getLogger("evdlm.serving.ocpp")
SUBPROTOCOLS = ("ocpp2.1", "ocpp2.0.1", "ocpp1.6")
"""offered in this order of preference: a station offering several gets the newest"""
VERSION_OF = {"ocpp1.6": "1.6", "ocpp2.0.1": "2.0.1", "ocpp2.1": "2.1"}
BPT_TRANSFERS = frozenset({"AC_BPT", "AC_BPT_DER", "DC_BPT", "DC_ACDP_BPT"})
"""2.1 energy transfer modes with bidirectional power transfer (the EV may discharge)"""


def station_id_from_path(path: str) -> str:
    """The station id is the last segment of the websocket path (``/ocpp/CP001`` -> ``CP001``)."""
    return path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep else None


def make_process_request(
    known: set[str], passwords: dict[str, str], require_auth: bool, on_refused: Callable[[str], None]
) -> Callable[[ServerConnection, Request], Response | None]:
    """websockets ``process_request``: unknown station -> 404, bad credentials -> 401 (at the handshake)."""

    def refuse(conn: ServerConnection, status: HTTPStatus, why: str) -> Response:
        on_refused(why)
        resp = conn.respond(status, f"{status.phrase}\n")
        if status == HTTPStatus.UNAUTHORIZED:
            resp.headers["WWW-Authenticate"] = 'Basic realm="evdlm", charset="UTF-8"'
        return resp

    def process_request(conn: ServerConnection, request: Request) -> Response | None:
        sid = station_id_from_path(request.path)
        if sid not in known:
            LOG.warning("refused unknown station %r", sid)
            return refuse(conn, HTTPStatus.NOT_FOUND, "unknown_station")
        if not require_auth:
            return None
        creds = parse_basic_auth(Headers(request.headers).get("Authorization"))
        expected = passwords.get(sid)
        if creds is None or expected is None:
            LOG.warning("refused station %r: no or malformed credentials", sid)
            return refuse(conn, HTTPStatus.UNAUTHORIZED, "no_credentials")
        user, password = creds
        ok_user = hmac.compare_digest(user.encode(), sid.encode())
        ok_pw = hmac.compare_digest(password.encode(), expected.encode())
        if not (ok_user and ok_pw):
            LOG.warning("refused station %r: wrong credentials", sid)
            return refuse(conn, HTTPStatus.UNAUTHORIZED, "bad_credentials")
        return None

    return process_request


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def sampled_values(meter_value: list[dict[str, Any]]) -> tuple[float | None, float | None, float | None]:
    """``(import power W, export power W, import energy register Wh)`` from OCPP meter values.

    Accepts both versions' shapes (1.6 values are strings, 2.0.1 numbers; units W/kW, Wh/kWh). Only
    whole-connector values count (per-phase values are ignored).
    """
    p_imp: float | None = None
    p_exp: float | None = None
    e_imp: float | None = None
    for mv in meter_value or []:
        for sv in mv.get("sampled_value", []) or []:
            if sv.get("phase"):
                continue
            measurand = sv.get("measurand", "Energy.Active.Import.Register")
            unit = sv.get("unit") or (sv.get("unit_of_measure") or {}).get("unit")
            multiplier = 10 ** int((sv.get("unit_of_measure") or {}).get("multiplier", 0) or 0)
            try:
                value = float(sv["value"]) * multiplier
            except (KeyError, TypeError, ValueError):
                continue
            if unit in ("kW", "kWh"):
                value *= 1000.0
            if measurand == "Power.Active.Import":
                p_imp = value
            elif measurand == "Power.Active.Export":
                p_exp = value
            elif measurand == "Energy.Active.Import.Register":
                e_imp = value
    return p_imp, p_exp, e_imp


class _Robust(_BaseChargePoint):
    """Message loop that survives any frame: bad JSON is dropped, bad Calls get a CallError.

    It also knows when the station is registered on this connection (OCPP 1.6 section 4.2, 2.0.1 B01):
    once its BootNotification was answered Accepted, or - a station reconnecting without rebooting does
    not boot again - once it sent any other request (a conforming station sends none before it is
    accepted). :meth:`StationEvents.registered` is called then, after the answer is on the wire; the
    central system sends the station nothing before.
    """

    events: StationEvents
    version: Version
    registered: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._checked = {a for a, h in self.route_map.items() if not h.get("_skip_schema_validation", False)}
        """the actions whose requests and answers are checked against the schemas: here, on the event loop
        (:meth:`route_message`, :meth:`_send`), where the library checks each on its thread pool (1,000
        stations: their threads took the GIL from the control cycle, which waited for them)"""
        for action in self._checked:
            self.route_map[action]["_skip_schema_validation"] = True
        self._answering: str | None = None
        """the action of the request being answered (its answer is checked in :meth:`_send`)"""

    async def _send(self, message: str) -> None:
        if self._answering is not None and message.startswith("[3,"):
            frame = json.loads(message)
            check_payload(CallResult(frame[1], frame[2], self._answering), self._ocpp_version)
        await super()._send(message)

    def _now_registered(self) -> None:
        if not self.registered:
            self.registered = True
            self.events.registered(self.id)

    async def start(self) -> None:
        while True:
            try:
                message = await self._connection.recv()
            except ConnectionClosed:
                return
            try:
                await self.route_message(message)
            except ConnectionClosed:
                return
            except Exception as err:  # never let one frame end the connection
                LOG.exception("%s: unhandled error on a frame: %s", self.id, err)
                self.events.metrics.inc("messages_total", action="?", outcome="internal_error")

    async def route_message(self, raw_msg: Any) -> None:
        metrics = self.events.metrics
        try:
            msg = json.loads(raw_msg)
        except (TypeError, ValueError):
            LOG.warning("%s: dropped a frame that is not JSON", self.id)
            metrics.inc("messages_total", action="?", outcome="malformed")
            return
        if not isinstance(msg, list) or not msg or msg[0] not in (2, 3, 4) or isinstance(msg[0], bool):
            LOG.warning("%s: dropped a frame that is not an OCPP message", self.id)
            metrics.inc("messages_total", action="?", outcome="malformed")
            return
        if msg[0] == MessageType.Call:
            well_formed = (
                len(msg) == 4
                and isinstance(msg[1], str)
                and isinstance(msg[2], str)
                and isinstance(msg[3], dict)
            )
            if not well_formed:
                metrics.inc("messages_total", action="?", outcome="malformed")
                if len(msg) >= 2 and isinstance(msg[1], str):
                    err = ProtocolError(details={"cause": "a Call is [2, id, action, {payload}]"})
                    await self._send(Call(msg[1], "?", {}).create_call_error(err).to_json())
                return
            action = msg[2]
            call = Call(msg[1], action, msg[3])
            try:
                if action in self._checked:  # the library's order: an unknown action is refused first
                    check_payload(call, self._ocpp_version)
                    self._answering = action
                await self._handle_call(call)
            except OCPPError as error:
                metrics.inc("messages_total", action=_safe_label(action), outcome="call_error")
                await self._send(Call(msg[1], action, msg[3]).create_call_error(error).to_json())
                return
            finally:
                self._answering = None
            metrics.inc("messages_total", action=_safe_label(action), outcome="ok")
            if action != "BootNotification":
                self._now_registered()  # a station that did not boot again on this connection
            return
        if len(msg) < 3 or not isinstance(msg[1], str):
            metrics.inc("messages_total", action="?", outcome="malformed")
            return
        await super().route_message(raw_msg)


def _safe_label(action: str) -> str:
    return action if action.isidentifier() and len(action) <= 40 else "?"


def parse_meter_reading(
    station_id: str, connector_id: int, meter_value: list[dict[str, Any]] | None
) -> MeterReading:
    """The typed reading of one MeterValues list (see :func:`sampled_values`), taken at its entries'
    earliest ``timestamp``."""
    values = meter_value or []
    p_imp, p_exp, e_imp = sampled_values(values)
    stamps = [t for mv in values if (t := parse_time(mv.get("timestamp"))) is not None]
    return MeterReading(
        station_id, connector_id, p_imp, p_exp, e_imp, export_register(values), is_triggered(values),
        min(stamps, default=None),  # the earliest: the values may come from any of the entries
    )  # fmt: skip


def is_triggered(meter_value: list[dict[str, Any]]) -> bool:
    """Whether a station sent these meter values because it was asked to: a sampled value's ``context``
    is ``Trigger`` (1.6 ReadingContext, 2.0.1 ReadingContextEnumType)."""
    return any(sv.get("context") == "Trigger" for mv in meter_value for sv in mv.get("sampled_value") or [])


def export_register(meter_value: list[dict[str, Any]]) -> float | None:
    """The whole-connector ``Energy.Active.Export.Register`` in Wh (V2G), None where not reported."""
    out: float | None = None
    for mv in meter_value or []:
        for sv in mv.get("sampled_value", []) or []:
            if sv.get("phase") or sv.get("measurand") != "Energy.Active.Export.Register":
                continue
            unit = sv.get("unit") or (sv.get("unit_of_measure") or {}).get("unit")
            multiplier = 10 ** int((sv.get("unit_of_measure") or {}).get("multiplier", 0) or 0)
            try:
                out = float(sv["value"]) * multiplier * (1000.0 if unit == "kWh" else 1.0)
            except (KeyError, TypeError, ValueError):
                continue
    return out


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def parse_charging_needs(station_id: str, evse_id: int, needs: dict[str, Any]) -> ChargingNeeds:
    """The typed 2.0.1 / 2.1 ``chargingNeeds``: AC parameters first, DC where there are none.

    2.1 adds ``v2xChargingParameters`` and the energy transfer modes: the EV offers discharge when its
    requested or available transfer modes include a bidirectional one (``*_BPT``) and it declares a
    discharge power or current above 0. Its declared energies (target / min / max, min / max V2X) and
    target SoC are kept as declared values.
    """
    ac = needs.get("ac_charging_parameters") or {}
    dc = needs.get("dc_charging_parameters") or {}
    v2x = needs.get("v2x_charging_parameters") or {}
    transfers = {str(needs.get("requested_energy_transfer") or "")}
    transfers.update(str(t) for t in needs.get("available_energy_transfer") or [])
    max_dis_w = _float(v2x.get("max_discharge_power"))
    max_dis_a = _float(v2x.get("max_discharge_current"))
    bpt = bool(transfers & BPT_TRANSFERS)
    offers = bpt and ((max_dis_w or 0.0) > 0 or (max_dis_a or 0.0) > 0)
    energy = ac.get("energy_amount", dc.get("energy_amount"))
    if energy is None:
        energy = v2x.get("ev_target_energy_request")
    return ChargingNeeds(
        station_id=station_id,
        connector_id=evse_id,
        energy_wh=_float(energy),
        ev_max_current_a=_float(ac.get("ev_max_current")) or _float(v2x.get("max_charge_current")) or None,
        ev_max_power_w=_float(dc.get("ev_max_power")) or _float(v2x.get("max_charge_power")) or None,
        departure=parse_time(needs.get("departure_time")),
        v2x=V2XNeeds(
            offered=offers,
            transfer_modes=tuple(sorted(t for t in transfers if t)),
            max_discharge_w=max_dis_w,
            max_discharge_a=max_dis_a,
            min_energy_wh=_float(v2x.get("ev_min_energy_request")),
            max_energy_wh=_float(v2x.get("ev_max_energy_request")),
            min_v2x_energy_wh=_float(v2x.get("ev_min_v2x_energy_request")),
            max_v2x_energy_wh=_float(v2x.get("ev_max_v2x_energy_request")),
            target_soc=_float(v2x.get("target_soc")),
            control_mode=needs.get("control_mode"),
        )
        if v2x or bpt
        else None,
    )


class Station16(_Robust, ChargePoint16):
    """OCPP 1.6J handlers of one connected station."""

    def __init__(self, station_id: str, connection: Any, events: StationEvents) -> None:
        super().__init__(station_id, connection, response_timeout=events.response_timeout_s)
        self.events = events
        self.version: Version = "1.6"

    @on(Action16.boot_notification)
    async def on_boot(self, charge_point_vendor: str, charge_point_model: str, **_: Any) -> Any:
        self.registered = False  # a (re)boot: registered again once this answer is out
        await self.events.booted(Booted(self.id, self.version, charge_point_vendor, charge_point_model))
        return result16.BootNotification(
            current_time=_now_iso(), interval=self.events.heartbeat_interval_s, status="Accepted"
        )

    @after(Action16.boot_notification)
    def after_boot(self, **_: Any) -> None:
        self._now_registered()  # the Accepted answer is on the wire

    @on(Action16.heartbeat)
    def on_heartbeat(self, **_: Any) -> Any:
        self.events.seen(self.id)
        return result16.Heartbeat(current_time=_now_iso())

    @on(Action16.status_notification)
    def on_status(self, connector_id: int, status: str, **_: Any) -> Any:
        self.events.status_changed(StatusChanged(self.id, connector_id, status))
        return result16.StatusNotification()

    @on(Action16.authorize)
    def on_authorize(self, id_tag: str, **_: Any) -> Any:
        self.events.seen(self.id)
        return result16.Authorize(id_tag_info={"status": "Accepted"})

    @on(Action16.start_transaction)
    async def on_start(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any
    ) -> Any:
        event = TransactionStarted(
            self.id, connector_id, None, id_tag, float(meter_start), parse_time(timestamp)
        )
        tx = await self.events.transaction_started(event)
        if tx is None:
            return result16.StartTransaction(transaction_id=0, id_tag_info={"status": "Invalid"})
        return result16.StartTransaction(transaction_id=int(tx), id_tag_info={"status": "Accepted"})

    @on(Action16.stop_transaction)
    async def on_stop(
        self, meter_stop: int, timestamp: str, transaction_id: int, reason: str | None = None, **_: Any
    ) -> Any:
        event = TransactionEnded(
            self.id, str(transaction_id), float(meter_stop), parse_time(timestamp), reason
        )
        await self.events.transaction_ended(event)
        return result16.StopTransaction(id_tag_info={"status": "Accepted"})

    @after(Action16.start_transaction)
    def after_start(self, connector_id: int, **_: Any) -> None:
        self.events.transaction_answered(self.id, connector_id)  # its transactionId is on the wire

    @on(Action16.meter_values)
    def on_meter_values(self, connector_id: int, meter_value: list[dict[str, Any]], **_: Any) -> Any:
        self.events.meter_reading(parse_meter_reading(self.id, connector_id, meter_value))
        return result16.MeterValues()


class Station201(_Robust, ChargePoint201):
    """OCPP 2.0.1 handlers of one connected station (EVSE ids play the role of 1.6 connector ids)."""

    def __init__(self, station_id: str, connection: Any, events: StationEvents) -> None:
        super().__init__(station_id, connection, response_timeout=events.response_timeout_s)
        self.events = events
        self.version: Version = "2.0.1"

    @on(Action201.boot_notification)
    async def on_boot(self, charging_station: dict[str, Any], reason: str, **_: Any) -> Any:
        vendor, model = charging_station.get("vendor_name"), charging_station.get("model")
        self.registered = False  # a (re)boot: registered again once this answer is out
        await self.events.booted(Booted(self.id, self.version, vendor, model))
        return result201.BootNotification(
            current_time=_now_iso(), interval=self.events.heartbeat_interval_s, status="Accepted"
        )

    @after(Action201.boot_notification)
    def after_boot(self, **_: Any) -> None:
        self._now_registered()  # the Accepted answer is on the wire

    @on(Action201.heartbeat)
    def on_heartbeat(self, **_: Any) -> Any:
        self.events.seen(self.id)
        return result201.Heartbeat(current_time=_now_iso())

    @on(Action201.status_notification)
    def on_status(self, evse_id: int, connector_status: str, **_: Any) -> Any:
        self.events.status_changed(StatusChanged(self.id, evse_id, connector_status))
        return result201.StatusNotification()

    @on(Action201.authorize)
    def on_authorize(self, id_token: dict[str, Any], **_: Any) -> Any:
        self.events.seen(self.id)
        return result201.Authorize(id_token_info={"status": "Accepted"})

    @on(Action201.transaction_event)
    async def on_transaction_event(
        self,
        event_type: str,
        timestamp: str,
        transaction_info: dict[str, Any],
        meter_value: list[dict[str, Any]] | None = None,
        evse: dict[str, Any] | None = None,
        id_token: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        tx_id = str(transaction_info["transaction_id"])
        energy_wh = sampled_values(meter_value or [])[2]
        when = parse_time(timestamp)
        if event_type == "Ended":
            reason = transaction_info.get("stopped_reason")
            await self.events.transaction_ended(TransactionEnded(self.id, tx_id, energy_wh, when, reason))
            return result201.TransactionEvent()
        evse_id = None if evse is None else int(evse["id"])
        # the reading's connector is the transaction's; the service maps it (the event may name no EVSE)
        reading = parse_meter_reading(self.id, evse_id or 0, meter_value) if meter_value else None
        tag = (id_token or {}).get("id_token")
        await self.events.transaction_updated(
            TransactionUpdated(self.id, tx_id, evse_id, tag, energy_wh, when, reading)
        )
        return result201.TransactionEvent(id_token_info={"status": "Accepted"} if id_token else None)

    @after(Action201.transaction_event)
    def after_transaction_event(self, event_type: str, evse: dict[str, Any] | None = None, **_: Any) -> None:
        if event_type != "Ended" and evse is not None:
            self.events.transaction_answered(self.id, int(evse["id"]))

    @on(Action201.notify_ev_charging_needs)
    def on_charging_needs(self, charging_needs: dict[str, Any], evse_id: int, **_: Any) -> Any:
        self.events.charging_needs(parse_charging_needs(self.id, evse_id, charging_needs))
        return result201.NotifyEVChargingNeeds(status="Accepted")

    @on(Action201.meter_values)
    def on_meter_values(self, evse_id: int, meter_value: list[dict[str, Any]], **_: Any) -> Any:
        self.events.meter_reading(parse_meter_reading(self.id, evse_id, meter_value))
        return result201.MeterValues()


class Station21(Station201):
    """OCPP 2.1 handlers of one connected station: the 2.0.1 handlers (boot, authorisation, status,
    transactions, meter values, charging needs with its V2X parameters), validated against the 2.1
    schemas. Only the calls sent differ (:mod:`serving.profiles` builds 2.1 ``SetChargingProfile``)."""

    _call = call21
    _call_result = result21
    _ocpp_version = "2.1"

    def __init__(self, station_id: str, connection: Any, events: StationEvents) -> None:
        super().__init__(station_id, connection, events)
        self.version = "2.1"

    async def operation_modes(self) -> OperationModes:
        """The V2X operation modes the station reports (``V2XChargingCtrlr.SupportedOperationModes``,
        GetVariables); empty where it reports none, refuses, or does not answer."""
        req = call21.GetVariables(
            get_variable_data=[
                {
                    "component": {"name": "V2XChargingCtrlr"},
                    "variable": {"name": "SupportedOperationModes"},
                }
            ]
        )
        try:
            res = await self.call(req, suppress=False)
        except Exception as err:
            LOG.info("station %s: no V2X operation modes (%s)", self.id, err)
            return OperationModes(self.id, ())
        modes: list[str] = []
        for item in getattr(res, "get_variable_result", None) or []:
            if str(item.get("attribute_status")) == "Accepted" and item.get("attribute_value"):
                modes += [m.strip() for m in str(item["attribute_value"]).split(",") if m.strip()]
        return OperationModes(self.id, tuple(modes))


Station = Station16 | Station201 | Station21


def station_class(version: str) -> type[Station16] | type[Station201] | type[Station21]:
    """The handler class of a negotiated version (``1.6``, ``2.0.1``, ``2.1``)."""
    return {"1.6": Station16, "2.0.1": Station201, "2.1": Station21}[version]


def call_error_frame(unique_id: str, error: OCPPError) -> str:
    return CallError(unique_id, error.code, error.description, error.details).to_json()


__all__ = [
    "SUBPROTOCOLS",
    "VERSION_OF",
    "FormatViolationError",
    "Station",
    "Station16",
    "Station21",
    "Station201",
    "asyncio",
    "call_error_frame",
    "make_process_request",
    "parse_basic_auth",
    "parse_charging_needs",
    "parse_meter_reading",
    "sampled_values",
    "station_class",
    "station_id_from_path",
]
