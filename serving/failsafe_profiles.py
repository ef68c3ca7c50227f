"""The failsafe profiles a station holds (pure functions over the site and the failsafe's day).

A station's failsafe is its ``ChargePointMaxProfile`` (2.0.1 ``ChargingStationMaxProfile``) at the sum of
its connectors' failsafe values, or one ``TxDefaultProfile`` per connector. Where the failsafe is the same
all day (the static safe share) it is one period, absolute from now; where it rotates
(:mod:`envs.rotation`) it is ``Recurring`` ``Daily`` from UTC midnight over the rotation's periods,
merged where the station's (or the connector's) value does not change, so the station keeps taking turns
without the central system.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast

import numpy as np

from envs.core import FloatArray, SiteArrays
from envs.share import kw_to_profile, kw_to_profile_one
from serving.live import StationLive
from serving.profiles import Purpose, Version, set_charging_profile


def merged(periods: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """``(start, value)`` periods with each run of equal values kept once (its first start)."""
    out: list[tuple[int, float]] = []
    for t, value in periods:
        if not out or out[-1][1] != value:
            out.append((int(t), float(value)))
    return out


def station_safe_limit(
    site: SiteArrays, station: StationLive, share_kw: FloatArray
) -> tuple[float, Literal["A", "W"], int]:
    """Station-wide failsafe limit: the sum of its connectors' ``share_kw``, in A when all agree."""
    idx = [c.index for c in station.connectors.values()]
    chargers = [site.config.chargers[i] for i in idx]
    total_kw = float(sum(share_kw[i] for i in idx))
    same = len({(c.rate_unit, c.phases, c.voltage_v) for c in chargers}) == 1
    if same and chargers[0].rate_unit == "A":
        amps = sum(kw_to_profile_one(site, i, float(share_kw[i])) for i in idx)
        return amps, "A", chargers[0].phases
    watts = float(kw_to_profile(site, np.array([total_kw]), np.zeros(1, dtype=bool))[0])
    return watts, "W", max(c.phases for c in chargers)


def failsafe_requests(
    site: SiteArrays,
    day: list[tuple[int, FloatArray]],
    version: str,
    station: StationLive,
    purpose: Purpose,
    now: datetime,
) -> list[Any]:
    """The ``SetChargingProfile`` requests of a station's failsafe over ``day`` (``(start s after UTC
    midnight, (n,) kW)``, the first at 0): one maximum profile, or one TxDefault profile per connector;
    daily recurring where the value changes over the day, else one period."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    v = cast(Version, version)
    if purpose == "ChargePointMaxProfile":
        values = [(t, *station_safe_limit(site, station, kw)) for t, kw in day]
        periods = merged([(t, value) for t, value, _, _ in values])
        _, _, unit, phases = values[0]
        if len(periods) == 1:
            return [set_charging_profile(v, purpose, 0, periods[0][1], unit, phases, now=now)]
        return [
            set_charging_profile(v, purpose, 0, 0.0, unit, phases, now=midnight, periods=periods, daily=True)
        ]
    reqs = []
    for k, c in sorted(station.connectors.items()):
        ch = site.config.chargers[c.index]
        periods = merged([(t, kw_to_profile_one(site, c.index, float(kw[c.index]))) for t, kw in day])
        if len(periods) == 1:
            reqs.append(set_charging_profile(v, purpose, k, periods[0][1], ch.rate_unit, ch.phases))
        else:
            reqs.append(
                set_charging_profile(
                    v, purpose, k, 0.0, ch.rate_unit, ch.phases, now=midnight, periods=periods, daily=True
                )
            )
    return reqs


__all__ = ["failsafe_requests", "merged", "station_safe_limit"]
