"""The OCPP calls a simulated station sends, built from its connector's state (pure functions).

1.6J, 2.0.1 and 2.1 payloads of the ``ocpp`` package: status, transaction start/stop (2.0.1
TransactionEvent Started/Updated/Ended with a ``seq_no`` per connector), MeterValues (whole-connector
power in W and the import register in Wh) and the EV charging needs. 2.1 sends the 2.0.1 shapes
(validated against the 2.1 schemas) plus the EV's V2X parameters and the export side of the meter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from ocpp.v16 import call as call16
from ocpp.v21 import call as call21
from ocpp.v201 import call as call201

from envs.core import SiteArrays
from stationsim.physics import SimConnector


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _tag(c: SimConnector) -> str:
    assert c.session is not None
    return f"TAG-{c.session['session_id']}"[:20]


def boot(version: str, connectors: list[SimConnector]) -> list[Any]:  # 2.1: the 2.0.1 shapes
    """BootNotification and one StatusNotification per connector."""
    if version == "1.6":
        out: list[Any] = [call16.BootNotification(charge_point_model="SimCP", charge_point_vendor="evdlm")]
        for c in connectors:
            out.append(status16(c, "Charging" if c.tx_id else "Available"))
        return out
    out = [
        call201.BootNotification(
            charging_station={"model": "SimCS", "vendor_name": "evdlm"}, reason="PowerUp"
        )
    ]
    for c in connectors:
        status = "Occupied" if c.tx_id else "Available"
        out.append(
            call201.StatusNotification(
                timestamp=now_iso(), connector_status=status, evse_id=c.connector_id, connector_id=1
            )
        )
    return out


# --------------------------------------------------------------------------- OCPP 1.6J


def status16(c: SimConnector, status: str) -> call16.StatusNotification:
    return call16.StatusNotification(c.connector_id, "NoError", status)


def start16(c: SimConnector) -> call16.StartTransaction:
    return call16.StartTransaction(
        connector_id=c.connector_id, id_tag=_tag(c), meter_start=int(c.register_wh), timestamp=now_iso()
    )


def stop16(c: SimConnector, tx_id: str) -> call16.StopTransaction:
    return call16.StopTransaction(
        meter_stop=int(c.register_wh), timestamp=now_iso(), transaction_id=int(tx_id), reason="EVDisconnected"
    )


def meter_values16(c: SimConnector, context: str | None = None) -> call16.MeterValues:
    """The connector's power and register; ``context`` ``Trigger`` where a TriggerMessage asked."""
    assert c.tx_id is not None
    sampled: list[dict[str, str]] = [
        {"value": f"{c.power_kw * 1000:.1f}", "measurand": "Power.Active.Import", "unit": "W"},
        {"value": f"{c.register_wh:.1f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
    ]
    if context is not None:
        sampled = [{**sv, "context": context} for sv in sampled]
    return call16.MeterValues(
        connector_id=c.connector_id,
        transaction_id=int(c.tx_id),
        meter_value=[{"timestamp": now_iso(), "sampled_value": sampled}],
    )


# --------------------------------------------------------------------------- OCPP 2.0.1


def tx_id201(c: SimConnector) -> str:
    """The station-assigned transaction id of the connector's session."""
    assert c.session is not None
    return f"{c.station}-{c.connector_id}-{c.session['session_id']}"[:36]


def meter_value201(
    c: SimConnector, include_power: bool = True, export: bool = False, context: str | None = None
) -> dict[str, Any]:
    """Power and import register; with ``export`` (2.1 V2X) also export power and register; ``context``
    on every sampled value where given (``Trigger``: a TriggerMessage asked)."""
    values: list[dict[str, Any]] = [
        {
            "value": round(c.register_wh, 1),
            "measurand": "Energy.Active.Import.Register",
            "unit_of_measure": {"unit": "Wh"},
        }
    ]
    if export:
        values.append(
            {
                "value": round(c.export_wh, 1),
                "measurand": "Energy.Active.Export.Register",
                "unit_of_measure": {"unit": "Wh"},
            }
        )
    if include_power:
        values.insert(
            0,
            {
                "value": round(max(c.power_kw, 0.0) * 1000, 1),
                "measurand": "Power.Active.Import",
                "unit_of_measure": {"unit": "W"},
            },
        )
        if export:
            values.insert(
                1,
                {
                    "value": round(max(-c.power_kw, 0.0) * 1000, 1),
                    "measurand": "Power.Active.Export",
                    "unit_of_measure": {"unit": "W"},
                },
            )
    if context is not None:
        values = [{**sv, "context": context} for sv in values]
    return {"timestamp": now_iso(), "sampled_value": values}


def triggered_meter_values(c: SimConnector, version: str) -> Any:
    """The MeterValues a TriggerMessage asked for: the connector's reading now, context ``Trigger``."""
    if version == "1.6":
        return meter_values16(c, context="Trigger")
    mv = [meter_value201(c, export=version == "2.1", context="Trigger")]
    if version == "2.1":
        return call21.MeterValues(evse_id=c.connector_id, meter_value=mv)
    return call201.MeterValues(evse_id=c.connector_id, meter_value=mv)


def _event201(c: SimConnector, event_type: str, trigger: str, info: dict[str, Any], **kw: Any) -> Any:
    c.seq_no += 1
    return call201.TransactionEvent(
        event_type=event_type, timestamp=now_iso(), trigger_reason=trigger, seq_no=c.seq_no,
        transaction_info=info, **kw,
    )  # fmt: skip


def started201(c: SimConnector, tx_id: str, export: bool = False) -> call201.TransactionEvent:
    """TransactionEvent Started (advances the connector's ``seq_no``)."""
    return _event201(
        c, "Started", "CablePluggedIn", {"transaction_id": tx_id, "charging_state": "Charging"},
        evse={"id": c.connector_id, "connector_id": 1}, id_token={"id_token": _tag(c), "type": "Central"},
        meter_value=[meter_value201(c, include_power=False, export=export)],
    )  # fmt: skip


def updated201(c: SimConnector, export: bool = False) -> call201.TransactionEvent:
    """TransactionEvent Updated with the periodic meter values (advances ``seq_no``)."""
    return _event201(
        c, "Updated", "MeterValuePeriodic", {"transaction_id": c.tx_id},
        meter_value=[meter_value201(c, export=export)],
    )  # fmt: skip


def ended201(c: SimConnector, tx_id: str) -> call201.TransactionEvent:
    """TransactionEvent Ended (advances ``seq_no``)."""
    return _event201(
        c, "Ended", "EVCommunicationLost", {"transaction_id": tx_id, "stopped_reason": "EVDisconnected"},
        meter_value=[meter_value201(c, include_power=False)],
    )  # fmt: skip


def charging_needs201(
    site: SiteArrays, c: SimConnector, departure: datetime
) -> call201.NotifyEVChargingNeeds:
    """The EV's needs: the session's energy, its current limit (its own power limit, else the charger's
    rating, in whole A) and the departure on the wall clock."""
    s = c.session
    assert s is not None
    ev_max = float(s["max_power_kw"]) if np.isfinite(s["max_power_kw"]) else None
    ac: dict[str, Any] = {
        "energy_amount": int(float(s["energy_kwh"]) * 1000),
        "ev_min_current": 6,
        "ev_max_current": int((ev_max or float(site.rated_kw[c.charger])) / float(site.kw_per_a[c.charger])),
        "ev_max_voltage": 400,
    }
    return call201.NotifyEVChargingNeeds(
        evse_id=c.connector_id,
        charging_needs={
            "requested_energy_transfer": "AC_three_phase",
            "departure_time": departure.isoformat().replace("+00:00", "Z"),
            "ac_charging_parameters": ac,
        },
    )


# --------------------------------------------------------------------------- OCPP 2.1


def charging_needs21(
    site: SiteArrays, c: SimConnector, departure: datetime, dischargeable_kwh: float, room_kwh: float
) -> call21.NotifyEVChargingNeeds:
    """The 2.1 EV's needs: those of 2.0.1 and, where the session may discharge (``c.v2x``), a
    bidirectional transfer mode with its V2X parameters: charge and discharge power (W), the energy to
    its target (the session's energy), to its maximum state of charge (``room_kwh``) and to the bottom of
    its V2X range (negative: what it holds above it, ``dischargeable_kwh``)."""
    base = charging_needs201(site, c, departure).charging_needs
    if not c.v2x:
        return call21.NotifyEVChargingNeeds(evse_id=c.connector_id, charging_needs=base)
    s = c.session
    assert s is not None
    ev_max = float(s["max_power_kw"]) if np.isfinite(s["max_power_kw"]) else float(site.rated_kw[c.charger])
    rated = float(site.rated_kw[c.charger])
    dis = min(float(site.max_discharge_kw[c.charger]), ev_max)
    needs = dict(base)
    needs["requested_energy_transfer"] = "AC_BPT"
    needs["available_energy_transfer"] = ["AC_three_phase", "AC_BPT"]
    needs["control_mode"] = "DynamicControl"
    needs["v2x_charging_parameters"] = {
        "max_charge_power": round(min(ev_max, rated) * 1000.0, 1),
        "max_discharge_power": round(dis * 1000.0, 1),
        "ev_target_energy_request": round(float(s["energy_kwh"]) * 1000.0, 1),
        "ev_max_energy_request": round(room_kwh * 1000.0, 1),
        "ev_min_v2x_energy_request": round(-dischargeable_kwh * 1000.0, 1),
    }
    return call21.NotifyEVChargingNeeds(evse_id=c.connector_id, charging_needs=needs)
