"""When a reading was taken, on the service's monotonic clock.

A reading arrives some time after it was taken: a station queues its messages, a pushed site meter
reading crosses a network. Without a time of its own a reading may have been taken up to the reading
slack (:func:`reading_slack_s`, a quarter control interval) before it arrived. Most readings carry one:
every OCPP meter value has a ``timestamp``, a site meter push may send one, and a Modbus meter the service
polls is read after the request went out. Such a reading was taken no earlier than its own time less
``clock_tolerance_s`` (the clocks of stations and meters are set from ours: OCPP's BootNotification and
Heartbeat, NTP) and less what its source's clock has shown itself ahead of ours (a reading stamped after it
arrived); and never earlier than the slack allows: a stamp only narrows that window (a clock behind ours,
or one that sends whole seconds, would otherwise make each of its readings look old).

Why it matters: the base load is the site meter's import less what the chargers drew *when the site meter
read*; each charger's draw then is judged from its own readings, a limit change between the two, or an EV
that may have finished in between (:func:`serving.at_meter.draws_at_meter`). The wider the window each reading
may have been taken in, the more of the chargers' draw counts as base load: in the V2G benchmark at 1,000
stations 450-1,170 kW of 4,988 in the cycles after the expensive window, EVs near their asked energy that
*may* have finished in 2.5 s of slack on either side.
"""

from __future__ import annotations

from datetime import datetime

from serving.config import ServingConfig


def reading_slack_s(cfg: ServingConfig) -> float:
    """How long before its arrival a reading may have been taken (a quarter control interval), s."""
    return 0.25 * cfg.control_interval_s


def taken_from(
    arrived: float, arrived_utc: datetime, stamp: datetime | None, cfg: ServingConfig, ahead_s: float = 0.0
) -> tuple[float, float]:
    """``(earliest monotonic time the reading was taken, its source's clock lead)`` for a reading that
    arrived at monotonic ``arrived`` (UTC ``arrived_utc``) stamped ``stamp`` by a source whose clock has
    been seen ``ahead_s`` ahead of ours: ``arrived`` less the slack without a stamp (or with
    ``clock_tolerance_s`` None); else less the stamp's age plus the lead and the tolerance, at most the
    slack. The lead returned is the larger of ``ahead_s`` and this stamp's lead (0 without)."""
    slack = reading_slack_s(cfg)
    if stamp is None or cfg.clock_tolerance_s is None:
        return arrived - slack, ahead_s
    age = (arrived_utc - stamp).total_seconds()  # by the two clocks: less its lead
    ahead = max(ahead_s, -age, 0.0)  # so age + ahead >= 0
    return arrived - min(age + ahead + cfg.clock_tolerance_s, slack), ahead
