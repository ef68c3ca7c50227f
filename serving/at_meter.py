"""What the chargers and the site battery drew when the site meter read: the base load is the meter's
import less that (:func:`serving.live.build_snapshot`).

A charger's readings and the site meter's are taken at different times. Between them a limit may have
changed, a transaction may have started, an EV may have received all it asked for and stopped: each makes
the draw then a bracket, not a number. The low side of every bracket is taken off the meter for the base
load (it errs high: safe for the import limit), the high side for its low estimate (safe for the export
limit). How narrow the brackets are depends on when each reading was taken (:mod:`serving.taken`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from envs.core import FloatArray
from serving.config import ServingConfig
from serving.taken import reading_slack_s

if TYPE_CHECKING:
    from serving.battery import BatteryStatus
    from serving.live import ConnectorLive, LiveSite, SiteMeterReading


class DrawsAtMeter(NamedTuple):
    """The controllable draws to take off a site meter reading, kW: ``low`` sums err low (the base load
    errs high: safe for the import limit), ``high`` sums err high (for the export limit)."""

    chargers_kw: float
    battery_kw: float
    chargers_high_kw: float
    battery_high_kw: float


def _may_have_finished(
    live: LiveSite, c: ConnectorLive, ceiling_kw: float, meter_at: float, cfg: ServingConfig
) -> bool:
    """Whether the EV on ``c`` may have become full (and stopped drawing) between its last reading (taken
    at the earliest :meth:`ConnectorLive.power_taken_from`) and the site meter's (arrived at monotonic
    ``meter_at``), charging at up to ``ceiling_kw``: its room at the reading (battery side: what it
    declared to its maximum state of charge, else what it asked for) no more than that. An EV finishing
    inside a control interval stops on its own; its reading from before then is no draw when the site
    meter read (the base load erred 1.9 kW low in the V2G benchmark)."""
    if ceiling_kw <= 0 or c.energy_asked_kwh is None:
        return False
    eff = float(live.site.efficiency[c.index])
    room = c.room_kwh(eff)
    left = max(c.energy_asked_kwh - c.received_kwh(eff), 0.0) if room is None else room
    hours = max(meter_at - c.power_taken_from(reading_slack_s(cfg)), 0.0) * cfg.time_scale / 3600.0
    return left <= ceiling_kw * eff * hours


def draws_at_meter(
    live: LiveSite,
    measured: FloatArray,
    meter: SiteMeterReading,
    cfg: ServingConfig,
    battery: BatteryStatus | None,
) -> DrawsAtMeter:
    """The chargers' and the battery's power as they may have been when the site meter read (``meter``:
    arrived at ``meter.at``, taken no earlier than :meth:`~serving.live.SiteMeterReading.earliest`), to
    find the base load: per measured charger (``measured`` finite) its :meth:`ConnectorLive.draw_bounds_kw`,
    and the battery's ``power_floor_kw`` (and ``power_ceiling_kw``). A reading older or newer than the
    site meter's, across a limit or setpoint change, would otherwise make the base load look smaller
    than it is."""
    slack, meter_at, meter_from = reading_slack_s(cfg), meter.at, meter.earliest(cfg)
    low = high = 0.0
    for c in live.connectors:
        if not c.active or not np.isfinite(measured[c.index]):
            continue
        kw = float(measured[c.index])  # its measurement: draw_bounds_kw has one
        floor, ceiling = c.draw_bounds_kw(meter_at, slack, meter_from) or (kw, kw)
        if meter_from < c.started_at:
            # the site meter may have read before the transaction started drawing: a reading arrives up to
            # the slack after it was taken (the V2G benchmark: 20 kW read before the EVs plugged in, pushed
            # after their TransactionEvents, less one EV's first 4.14 kW: 272.5 kW on 268.4)
            floor = min(floor, 0.0)
        if _may_have_finished(live, c, ceiling, meter_at, cfg):
            floor = min(floor, 0.0)  # its EV may have stopped since its reading, when full
        low += floor
        high += ceiling
    b_low = b_high = 0.0
    if battery is not None:
        now = float(battery.power_kw or 0.0)
        b_low = now if battery.power_floor_kw is None else battery.power_floor_kw
        b_high = now if battery.power_ceiling_kw is None else battery.power_ceiling_kw
    return DrawsAtMeter(low, b_low, high, b_high)
