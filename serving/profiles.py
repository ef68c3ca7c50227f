"""Charging profiles as OCPP 1.6, 2.0.1 and 2.1 ``SetChargingProfile`` requests (pure functions).

Profile ids are stable, so a new profile replaces the previous one of the same purpose and connector:
the failsafe maximum profile is id 1, per-connector TxDefault profiles are ``10 + connector`` and the
transaction profiles are ``100 + connector``. Limits carry one decimal and ``numberPhases``.

A TxProfile with a schedule (``periods``: more than one) is ``Absolute`` from ``now`` with a ``duration``
of the whole plan: when it ends without a newer one, the station falls back to the failsafe profiles
below it. On 2.1 a transaction allowed to discharge gets its periods in its V2G mode: ``CentralSetpoint``
periods carry ``setpoint`` (negative = discharge) bounded by ``limit`` and ``dischargeLimit``;
``ExternalLimits`` periods carry ``limit`` and ``dischargeLimit`` (<= 0), the most the EV may charge and
discharge.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from ocpp.v16 import call as call16
from ocpp.v21 import call as call21
from ocpp.v201 import call as call201

Version = Literal["1.6", "2.0.1", "2.1"]
Purpose = Literal["ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"]

MAX_PROFILE_ID = 1
TX_DEFAULT_BASE_ID = 10
TX_PROFILE_BASE_ID = 100
STACK_FAILSAFE = 0
STACK_TX = 1


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _round1(value: float) -> float:
    return round(max(value, 0.0), 1)


def profile_id(purpose: Purpose, connector_id: int) -> int:
    if purpose == "ChargePointMaxProfile":
        return MAX_PROFILE_ID
    if purpose == "TxDefaultProfile":
        return TX_DEFAULT_BASE_ID + connector_id
    return TX_PROFILE_BASE_ID + connector_id


def _period(start_s: int, value: float, number_phases: int, mode: str) -> dict[str, object]:
    """One schedule period; ``value`` signed (negative = discharge, only in a driven V2G mode)."""
    if mode == "CentralSetpoint":
        return {
            "start_period": start_s, "setpoint": round(value, 1), "limit": _round1(value),
            "discharge_limit": round(min(value, 0.0), 1), "operation_mode": mode,
            "number_phases": number_phases,
        }  # fmt: skip
    if mode == "ExternalLimits":
        return {
            "start_period": start_s, "limit": _round1(value), "discharge_limit": round(min(value, 0.0), 1),
            "operation_mode": mode, "number_phases": number_phases,
        }  # fmt: skip
    return {"start_period": start_s, "limit": _round1(value), "number_phases": number_phases}


def set_charging_profile(
    version: Version,
    purpose: Purpose,
    connector_id: int,
    limit: float,
    unit: Literal["A", "W"],
    number_phases: int,
    transaction_id: str | None = None,
    now: datetime | None = None,
    periods: Sequence[tuple[int, float]] | None = None,
    v2g_mode: str = "charge_only",
    duration_s: int | None = None,
    daily: bool = False,
) -> call16.SetChargingProfile | call201.SetChargingProfile | call21.SetChargingProfile:
    """One ``SetChargingProfile`` request.

    ``connector_id`` is the 1.6 connector or the 2.0.1 / 2.1 EVSE id (0 for the station-wide maximum
    profile). A TxProfile needs ``transaction_id``; the maximum profile is absolute from ``now``, a
    single-period Tx / TxDefault profile is relative to the transaction start and holds until replaced.
    ``periods`` (``(start s from now, value)``, values in ``unit``) makes a TxProfile a schedule, absolute
    from ``now`` for ``duration_s`` (default: the last period as long as the one before). ``v2g_mode``
    (2.1 only) is the transaction's V2G mode: values below 0 are sent only in a driven mode.
    ``daily``: a failsafe (maximum or TxDefault) profile ``Recurring`` ``Daily`` from ``now`` (a UTC
    midnight) over ``periods`` (``(start s after midnight, value)``): the failsafe rotation
    (:mod:`envs.rotation`), held by the station without the central system.
    """
    if v2g_mode != "charge_only" and version != "2.1":
        raise ValueError("only OCPP 2.1 carries discharge periods")
    if purpose == "TxProfile" and transaction_id is None:
        raise ValueError("a TxProfile needs the transaction id")
    if purpose == "ChargePointMaxProfile" and connector_id != 0:
        raise ValueError("the maximum profile goes on connector / EVSE 0")
    if purpose != "ChargePointMaxProfile" and connector_id < 1:
        raise ValueError("Tx and TxDefault profiles go on a connector / EVSE > 0")
    if daily and (purpose == "TxProfile" or now is None or not periods):
        raise ValueError("a daily profile is a failsafe profile with periods from a midnight (now)")
    pid = profile_id(purpose, connector_id)
    stack = STACK_TX if purpose == "TxProfile" else STACK_FAILSAFE
    kind = "Absolute" if purpose == "ChargePointMaxProfile" else "Relative"
    plan = list(periods) if periods is not None and purpose == "TxProfile" else [(0, limit)]
    duration: int | None = None
    if daily:
        assert periods is not None
        plan, kind, duration = list(periods), "Recurring", 86_400
    elif len(plan) > 1:
        if now is None:
            raise ValueError("a schedule needs now")
        kind = "Absolute"
        duration = duration_s if duration_s is not None else plan[-1][0] + (plan[-1][0] - plan[-2][0])
    mode = v2g_mode if version == "2.1" else "charge_only"
    period_list = [_period(int(t), v, number_phases, mode) for t, v in plan]
    if version == "1.6":
        schedule16: dict[str, object] = {
            "charging_rate_unit": unit,
            "charging_schedule_period": period_list,
        }
        if kind in ("Absolute", "Recurring") and now is not None:
            schedule16["start_schedule"] = _iso(now)
        if duration is not None:
            schedule16["duration"] = duration
        profile16: dict[str, object] = {
            "charging_profile_id": pid,
            "stack_level": stack,
            "charging_profile_purpose": purpose,
            "charging_profile_kind": kind,
            "charging_schedule": schedule16,
        }
        if daily:
            profile16["recurrency_kind"] = "Daily"
        if purpose == "TxProfile":
            assert transaction_id is not None
            profile16["transaction_id"] = int(transaction_id)
        return call16.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=profile16)
    purpose201 = "ChargingStationMaxProfile" if purpose == "ChargePointMaxProfile" else purpose
    schedule201: dict[str, object] = {
        "id": pid,
        "charging_rate_unit": unit,
        "charging_schedule_period": period_list,
    }
    if kind in ("Absolute", "Recurring") and now is not None:
        schedule201["start_schedule"] = _iso(now)
    if duration is not None:
        schedule201["duration"] = duration
    profile201: dict[str, object] = {
        "id": pid,
        "stack_level": stack,
        "charging_profile_purpose": purpose201,
        "charging_profile_kind": kind,
        "charging_schedule": [schedule201],
    }
    if daily:
        profile201["recurrency_kind"] = "Daily"
    if purpose == "TxProfile":
        profile201["transaction_id"] = transaction_id
    if version == "2.1":
        return call21.SetChargingProfile(evse_id=connector_id, charging_profile=profile201)
    return call201.SetChargingProfile(evse_id=connector_id, charging_profile=profile201)


def trigger_meter_values(
    version: Version, connector_id: int
) -> call16.TriggerMessage | call201.TriggerMessage | call21.TriggerMessage:
    """``TriggerMessage`` asking a station for the MeterValues of one connector (1.6) or EVSE (2.x) now
    (1.6 Remote Trigger profile; 2.0.1 / 2.1 use case F06)."""
    if version == "1.6":
        return call16.TriggerMessage(requested_message="MeterValues", connector_id=connector_id)
    if version == "2.1":
        return call21.TriggerMessage(requested_message="MeterValues", evse={"id": connector_id})
    return call201.TriggerMessage(requested_message="MeterValues", evse={"id": connector_id})
