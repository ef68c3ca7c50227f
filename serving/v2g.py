"""Which transactions may discharge (V2G over OCPP 2.1), in which 2.1 operation mode, and why.

A transaction discharges only when every party allows it: the site charger is configured bidirectional
(``max_discharge_kw > 0``), its station speaks OCPP 2.1 and reports an operation mode the central system
can drive (``CentralSetpoint``: a setpoint per period, preferred; else ``ExternalLimits``: a charge limit
and a discharge limit per period), and the EV offered discharge in ``NotifyEVChargingNeeds`` (a
bidirectional transfer mode and a discharge power or current above 0). Anything else is charge-only,
exactly as with 1.6 and 2.0.1. :func:`choose_mode` is a pure function of those facts; the mode and its
reason are stored per transaction (:meth:`serving.store.Store.record_v2g_mode`).
"""

from __future__ import annotations

from typing import Literal

from serving.events import V2XNeeds

V2GMode = Literal["charge_only", "CentralSetpoint", "ExternalLimits"]
DRIVEN_MODES: tuple[V2GMode, ...] = ("CentralSetpoint", "ExternalLimits")
"""2.1 operation modes the central system drives, in order of preference"""


def choose_mode(
    bidirectional: bool, version: str | None, station_modes: tuple[str, ...] | None, ev: V2XNeeds | None
) -> tuple[V2GMode, str]:
    """``(mode, reason)`` for one transaction (see the module docstring)."""
    if not bidirectional:
        return "charge_only", "charger_not_bidirectional"
    if version != "2.1":
        return "charge_only", f"ocpp_{version or 'unknown'}_has_no_discharge"
    if station_modes is None:
        return "charge_only", "station_modes_unknown"
    mode = next((m for m in DRIVEN_MODES if m in station_modes), None)
    if mode is None:
        return "charge_only", "station_reports_no_driven_v2x_mode"
    if ev is None:
        return "charge_only", "ev_sent_no_v2x_parameters"
    if not ev.offered:
        return "charge_only", "ev_does_not_offer_discharge"
    return mode, "station_and_ev_allow_v2x"
