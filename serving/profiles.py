"""Charging profiles as OCPP 1.6 and 2.0.1 ``SetChargingProfile`` requests (pure functions).

Profile ids are stable, so a new profile replaces the previous one of the same purpose and connector:
the failsafe maximum profile is id 1, per-connector TxDefault profiles are ``10 + connector`` and the
transaction profiles are ``100 + connector``. Limits carry one decimal and ``numberPhases``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

Version = Literal["1.6", "2.0.1"]
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


def set_charging_profile(
    version: Version,
    purpose: Purpose,
    connector_id: int,
    limit: float,
    unit: Literal["A", "W"],
    number_phases: int,
    transaction_id: str | None = None,
    now: datetime | None = None,
) -> call16.SetChargingProfile | call201.SetChargingProfile:
    """One ``SetChargingProfile`` request.

    ``connector_id`` is the 1.6 connector or the 2.0.1 EVSE id (0 for the station-wide maximum profile).
    A TxProfile needs ``transaction_id``; the maximum profile is absolute from ``now``, the others are
    relative to the transaction start and hold until replaced.
    """
    if purpose == "TxProfile" and transaction_id is None:
        raise ValueError("a TxProfile needs the transaction id")
    if purpose == "ChargePointMaxProfile" and connector_id != 0:
        raise ValueError("the maximum profile goes on connector / EVSE 0")
    if purpose != "ChargePointMaxProfile" and connector_id < 1:
        raise ValueError("Tx and TxDefault profiles go on a connector / EVSE > 0")
    pid = profile_id(purpose, connector_id)
    stack = STACK_TX if purpose == "TxProfile" else STACK_FAILSAFE
    kind = "Absolute" if purpose == "ChargePointMaxProfile" else "Relative"
    period = {"start_period": 0, "limit": _round1(limit), "number_phases": number_phases}
    if version == "1.6":
        schedule16: dict[str, object] = {"charging_rate_unit": unit, "charging_schedule_period": [period]}
        if kind == "Absolute" and now is not None:
            schedule16["start_schedule"] = _iso(now)
        profile16: dict[str, object] = {
            "charging_profile_id": pid,
            "stack_level": stack,
            "charging_profile_purpose": purpose,
            "charging_profile_kind": kind,
            "charging_schedule": schedule16,
        }
        if purpose == "TxProfile":
            assert transaction_id is not None
            profile16["transaction_id"] = int(transaction_id)
        return call16.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=profile16)
    purpose201 = "ChargingStationMaxProfile" if purpose == "ChargePointMaxProfile" else purpose
    schedule201: dict[str, object] = {
        "id": pid,
        "charging_rate_unit": unit,
        "charging_schedule_period": [period],
    }
    if kind == "Absolute" and now is not None:
        schedule201["start_schedule"] = _iso(now)
    profile201: dict[str, object] = {
        "id": pid,
        "stack_level": stack,
        "charging_profile_purpose": purpose201,
        "charging_profile_kind": kind,
        "charging_schedule": [schedule201],
    }
    if purpose == "TxProfile":
        profile201["transaction_id"] = transaction_id
    return call201.SetChargingProfile(evse_id=connector_id, charging_profile=profile201)
