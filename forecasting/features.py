"""Calendar and clear-sky features of target times: pure functions over tz-aware timestamps.

Calendar features are taken in the site's local time zone (people keep local hours), the clear-sky shape
from pvlib's solar geometry (Spencer 1971 declination and equation of time, analytical zenith) and the
Haurwitz clear-sky irradiance model: cheap enough to compute per forecast (well under 1 ms for a day).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

# Fixed-date public holidays common to most of Europe (month, day). Movable feasts (Easter, Ascension,
# Whit Monday) are left to ``extra_holidays`` of :class:`Calendar`.
FIXED_HOLIDAYS: tuple[tuple[int, int], ...] = ((1, 1), (5, 1), (12, 25), (12, 26))

# Approximate coordinates of the capitals of common site time zones (latitude, longitude in degrees).
TIMEZONE_LOCATIONS: dict[str, tuple[float, float]] = {
    "Europe/Amsterdam": (52.37, 4.90),
    "Europe/Berlin": (52.52, 13.40),
    "Europe/Brussels": (50.85, 4.35),
    "Europe/Paris": (48.86, 2.35),
    "Europe/London": (51.51, -0.13),
    "Europe/Dublin": (53.35, -6.26),
    "Europe/Madrid": (40.42, -3.70),
    "Europe/Lisbon": (38.72, -9.14),
    "Europe/Rome": (41.90, 12.50),
    "Europe/Vienna": (48.21, 16.37),
    "Europe/Zurich": (47.38, 8.54),
    "Europe/Copenhagen": (55.68, 12.57),
    "Europe/Stockholm": (59.33, 18.07),
    "Europe/Oslo": (59.91, 10.75),
    "Europe/Helsinki": (60.17, 24.94),
    "Europe/Warsaw": (52.23, 21.01),
    "Europe/Prague": (50.08, 14.44),
    "America/New_York": (40.71, -74.01),
    "America/Chicago": (41.88, -87.63),
    "America/Denver": (39.74, -104.99),
    "America/Los_Angeles": (34.05, -118.24),
    "Asia/Tokyo": (35.68, 139.69),
    "Australia/Sydney": (-33.87, 151.21),
}
DEFAULT_LOCATION = TIMEZONE_LOCATIONS["Europe/Amsterdam"]


@dataclass(frozen=True)
class Location:
    """Where the PV sits: latitude and longitude in degrees (north and east positive)."""

    latitude_deg: float
    longitude_deg: float

    @classmethod
    def for_timezone(cls, timezone: str) -> Location:
        """The capital of ``timezone`` when known, else Amsterdam (a site config has no coordinates)."""
        lat, lon = TIMEZONE_LOCATIONS.get(timezone, DEFAULT_LOCATION)
        return cls(lat, lon)


@dataclass(frozen=True)
class Calendar:
    """Local time zone and holidays of a site."""

    timezone: str = "UTC"
    extra_holidays: tuple[str, ...] = ()
    """extra holiday dates, ISO ``YYYY-MM-DD`` in local time"""

    def features(self, times: pd.DatetimeIndex) -> FloatArray:
        """``(n, 4)``: local hour of day (fractional, 0..24), weekday (0 = Monday), holiday flag, and
        day type (0 workday, 1 Saturday, 2 Sunday or holiday)."""
        local = times.tz_convert(self.timezone)
        hour = (local.hour + local.minute / 60.0).to_numpy(dtype=float)
        weekday = local.day_of_week.to_numpy(dtype=float)
        holiday = self.is_holiday(local).astype(float)
        day_type = np.where((weekday == 6) | (holiday > 0), 2.0, np.where(weekday == 5, 1.0, 0.0))
        return np.column_stack([hour, weekday, holiday, day_type])

    def is_holiday(self, local: pd.DatetimeIndex) -> NDArray[np.bool_]:
        month = local.month.to_numpy()
        day = local.day.to_numpy()
        out = np.zeros(len(local), dtype=bool)
        for m, d in FIXED_HOLIDAYS:
            out |= (month == m) & (day == d)
        if self.extra_holidays:
            dates = np.asarray(local.strftime("%Y-%m-%d"))
            out |= np.isin(dates, np.asarray(self.extra_holidays))
        return out


def clear_sky_shape(
    times: pd.DatetimeIndex, location: Location, step: pd.Timedelta | None = None
) -> FloatArray:
    """Clear-sky global horizontal irradiance at ``times`` in kW/m² (about 0..1; 0 at night).

    With ``step``, ``times`` are step starts and the sun is taken at the middle of each step (a 15-minute
    step is represented by its mean sun position, not its first instant).
    """
    from pvlib import clearsky, solarposition

    if len(times) == 0:
        return np.zeros(0)
    utc = times.tz_convert("UTC")
    if step is not None:
        utc = utc + step / 2
    doy = utc.day_of_year.to_numpy()
    declination = solarposition.declination_spencer71(doy)
    eot_min = solarposition.equation_of_time_spencer71(doy)
    # pvlib's hour_angle localises timestamp by timestamp; the same formula vectorised (UTC hours)
    ns = utc.as_unit("ns").asi8
    hours_utc = (ns % 86_400_000_000_000) / 3_600_000_000_000
    hour_angle_deg = 15.0 * (hours_utc - 12.0) + location.longitude_deg + eot_min / 4.0
    zenith_rad = solarposition.solar_zenith_analytical(
        np.radians(location.latitude_deg), np.radians(hour_angle_deg), declination
    )
    ghi = clearsky.haurwitz(pd.Series(np.degrees(np.asarray(zenith_rad, dtype=float))))
    return np.asarray(ghi["ghi"], dtype=float) / 1000.0
