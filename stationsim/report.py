"""The report of a simulated site's run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from stationsim.simulator import SiteSimulator


@dataclass
class SimReport:
    """What the simulated site saw. Violations are ticks where the physical site exceeded a limit."""

    energy_asked_kwh: dict[str, float]
    energy_delivered_kwh: dict[str, float]
    import_limit_kw: float
    max_site_import_kw: float
    violation_ticks: int
    node_violation_ticks: int
    max_excess_kw: float
    longest_violation_s: float
    ticks: int
    calls_sent: int
    calls_answered: int
    calls_failed: int
    """calls that timed out or got a CallError"""
    calls_cancelled: int
    """calls still in flight when the run ended"""
    messages_dropped_offline: int
    profiles_received: int
    garbage_sent: int
    connected_at_end: int
    stations: int
    last_violation_utc: str | None = None
    """wall-clock time (ISO, UTC) of the last tick with the site or a node above its limit"""
    energy_exported_kwh: float = 0.0
    """energy the EVs gave back to the site (V2G), kWh at the grid side"""
    refused_unregistered: int = 0
    """requests of the central system that came before the station's boot was accepted (refused)"""
    worst_profile_delay_s: float = 0.0
    """longest wall time a transaction charged before any profile limited it (tick resolution)"""
    transactions_unprotected_at_end: int = 0
    """charging transactions that never had a profile in force"""
    transactions_seen: int = 0
    disconnects: int = 0
    """soak: random disconnects"""
    reboots: int = 0
    """soak: random reboots"""
    late_meter_values: int = 0
    """soak: MeterValues sent late"""
    first_boot_accepted_utc: str | None = None
    """wall-clock time (ISO, UTC) the first BootNotification was accepted"""
    battery_charged_kwh: float | None = None
    """energy into the simulated site battery (grid side; None without one)"""
    battery_discharged_kwh: float | None = None
    battery_soc_end: float | None = None
    """its state of charge at the end, 0..1"""
    cpu_s: float = 0.0
    """CPU time of the simulator's process, s (it shares the machine with the central system)"""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def build_report(sim: SiteSimulator, connected: int) -> SimReport:
    """The report of a finished run (``connected``: stations connected at its end)."""
    phys = sim.physics
    return SimReport(
        energy_asked_kwh=phys.asked,
        energy_delivered_kwh={k: round(v, 4) for k, v in phys.delivered.items()},
        import_limit_kw=sim.site.import_limit_kw,
        max_site_import_kw=float(phys.max_import),
        violation_ticks=phys.violation_ticks,
        node_violation_ticks=phys.node_violation_ticks,
        max_excess_kw=float(phys.max_excess),
        longest_violation_s=phys.longest_violation_s,
        ticks=phys.ticks,
        calls_sent=sim.calls_sent,
        calls_answered=sim.calls_answered,
        calls_failed=sim.calls_failed,
        calls_cancelled=sim.calls_cancelled,
        messages_dropped_offline=sim.dropped,
        profiles_received=sum(p.received for p in phys.profiles.values()),
        garbage_sent=sim.garbage_sent,
        connected_at_end=connected,
        stations=len(sim.stations),
        last_violation_utc=_utc_of(max(phys.last_violation_at, phys.last_node_violation_at)),
        energy_exported_kwh=round(phys.exported_kwh, 4),
        refused_unregistered=sim.refused_unregistered,
        worst_profile_delay_s=round(phys.protection.worst_profile_delay_s, 3),
        transactions_unprotected_at_end=phys.protection.unprotected_now,
        transactions_seen=phys.protection.transactions_seen,
        disconnects=sim.disconnects,
        reboots=sim.reboots,
        late_meter_values=sim.late_meter_values,
        first_boot_accepted_utc=sim.first_boot_accepted_utc,
        battery_charged_kwh=None if sim.battery is None else round(sim.battery.energy_in_kwh, 4),
        battery_discharged_kwh=None if sim.battery is None else round(sim.battery.energy_out_kwh, 4),
        battery_soc_end=None if sim.battery is None else round(sim.battery.soc_frac, 4),
        cpu_s=round(time.process_time(), 2),
    )


def _utc_of(mono: float) -> str | None:
    """The wall-clock UTC time of a monotonic time (None where it never happened)."""
    if not np.isfinite(mono):
        return None
    return (datetime.now(UTC) - timedelta(seconds=time.monotonic() - mono)).isoformat()
