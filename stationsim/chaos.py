"""Soak behaviour of the simulated stations: random disconnects and reboots, MeterValues sent late."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from stationsim.physics import StationProfiles
from stationsim.stations import SimCP

if TYPE_CHECKING:
    from stationsim.simulator import SiteSimulator


def next_chaos_at(sim: SiteSimulator, sid: str) -> float:
    """monotonic time of the station's next random disconnect or reboot (inf without chaos)"""
    if sim.opt.chaos_per_h <= 0:
        return np.inf
    return time.monotonic() + float(sim._rng(sid).exponential(3600.0 / sim.opt.chaos_per_h))


def reboot(sim: SiteSimulator, sid: str) -> None:
    """A reboot: the station loses its profiles and its running transactions (their stop messages
    are lost); the EVs still plugged in start new transactions after the boot."""
    sim.reboots += 1
    sim.physics.profiles[sid] = StationProfiles()
    for c in sim.stations[sid]:
        if c.tx_id is not None:
            c.tx_id = None
            c.power_kw = 0.0
            sim.dropped += 1


async def send_late(sim: SiteSimulator, cp: SimCP, sid: str) -> None:
    """Send the station's late MeterValues that are due."""
    now = time.monotonic()
    due = [p for t, p in sim._late[sid] if t <= now]
    if due:
        sim._late[sid] = [(t, p) for t, p in sim._late[sid] if t > now]
        for payload in due:
            sim.late_meter_values += 1
            await sim._call(cp, payload)
