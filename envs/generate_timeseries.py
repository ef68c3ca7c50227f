"""Generated time series of a site: building load, PV, import and export prices (:func:`generate_timeseries`).

The building load has a weekday/weekend shape per site kind, PV comes from a pvlib clear-sky model times a
random cloud factor per day with intra-day noise, the import price is time-of-use (cheap at night, dear in
the evening peak) and the export price lower and flat. :mod:`envs.generate` sizes a whole scenario around it.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
import pandas as pd

from envs.config import SiteConfig

Kind = Literal["depot", "workplace", "residential", "public"]
KINDS: tuple[Kind, ...] = ("depot", "workplace", "residential", "public")


def _clock_hours(index: pd.DatetimeIndex, timezone: str, step_h: float) -> tuple[np.ndarray, np.ndarray]:
    """Local clock hour of each step's midpoint and its weekday (0 = Monday)."""
    mid = (index + pd.Timedelta(hours=step_h / 2.0)).tz_convert(timezone)
    return np.asarray(mid.hour + mid.minute / 60.0 + mid.second / 3600.0), np.asarray(mid.day_of_week)


def _base_shape(kind: Kind, hour: np.ndarray, weekday: np.ndarray) -> np.ndarray:
    """Building load as a fraction of its peak, by local clock hour, weekday and weekend."""
    k = np.array([0.0, 5.0, 7.0, 9.0, 12.0, 13.0, 17.0, 19.0, 21.0, 24.0])
    shapes = {
        "depot": (
            [0.30, 0.35, 0.75, 1.00, 0.95, 0.90, 0.85, 0.55, 0.35, 0.30],
            [0.30, 0.30, 0.35, 0.40, 0.40, 0.40, 0.38, 0.35, 0.30, 0.30],
        ),
        "workplace": (
            [0.25, 0.28, 0.60, 1.00, 0.95, 0.92, 0.80, 0.40, 0.30, 0.25],
            [0.25, 0.25, 0.27, 0.30, 0.32, 0.32, 0.30, 0.28, 0.26, 0.25],
        ),
        "residential": (
            [0.30, 0.28, 0.60, 0.45, 0.42, 0.45, 0.70, 1.00, 0.80, 0.40],
            [0.32, 0.28, 0.40, 0.60, 0.62, 0.60, 0.72, 1.00, 0.82, 0.42],
        ),
        "public": (
            [0.25, 0.25, 0.55, 0.85, 1.00, 1.00, 0.95, 0.90, 0.70, 0.30],
            [0.25, 0.25, 0.40, 0.80, 1.00, 1.00, 0.95, 0.80, 0.55, 0.30],
        ),
    }
    weekday_shape, weekend_shape = shapes[kind]
    wd = np.interp(hour, k, weekday_shape)
    we = np.interp(hour, k, weekend_shape)
    return np.where(weekday >= 5, we, wd)


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    """A stationary AR(1) series with marginal standard deviation ``sigma``."""
    eps = rng.normal(0.0, sigma * math.sqrt(1.0 - phi * phi), size=n)
    out = np.empty(n)
    prev = rng.normal(0.0, sigma)
    for t in range(n):
        prev = phi * prev + eps[t]
        out[t] = prev
    return out


def _pv_clear_sky_kw_per_kwp(
    index: pd.DatetimeIndex, step_h: float, latitude: float, longitude: float
) -> np.ndarray:
    """Clear-sky PV output per kWp (30 degrees tilt, facing south, performance ratio 0.85), pvlib."""
    from pvlib.irradiance import get_total_irradiance
    from pvlib.location import Location

    mid = index + pd.Timedelta(hours=step_h / 2.0)
    loc = Location(latitude, longitude, tz="UTC")
    with warnings.catch_warnings():  # pvlib still calls pandas accessors that pandas deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        sky = loc.get_clearsky(mid, model="ineichen", linke_turbidity=3.0)
        sun = loc.get_solarposition(mid)
    poa = get_total_irradiance(
        surface_tilt=30.0,
        surface_azimuth=180.0,
        solar_zenith=sun["apparent_zenith"],
        solar_azimuth=sun["azimuth"],
        dni=sky["dni"],
        ghi=sky["ghi"],
        dhi=sky["dhi"],
    )
    return np.clip(np.nan_to_num(poa["poa_global"].to_numpy(float)) / 1000.0 * 0.85, 0.0, 1.0)


def _tou_import_price(hour: np.ndarray, weekday: np.ndarray) -> np.ndarray:
    """Import price per kWh: night 0.17, day 0.26 (weekend 0.22), evening peak 17-21 0.38 (weekend 0.30)."""
    weekend = weekday >= 5
    price = np.where(weekend, 0.22, 0.26)
    price = np.where((hour >= 17.0) & (hour < 21.0), np.where(weekend, 0.30, 0.38), price)
    return np.where((hour < 7.0) | (hour >= 23.0), 0.17, price)


def _timeseries(
    kind: Kind,
    rng: np.random.Generator,
    index: pd.DatetimeIndex,
    timezone: str,
    step_h: float,
    base_peak_kw: float,
    pv_kwp: float,
    latitude: float,
    longitude: float,
) -> pd.DataFrame:
    hour, weekday = _clock_hours(index, timezone, step_h)
    n = len(index)
    day = np.asarray((index + pd.Timedelta(hours=step_h / 2.0)).tz_convert(timezone).normalize().asi8)
    _, day_idx = np.unique(day, return_inverse=True)
    n_days = int(day_idx.max()) + 1
    day_level = rng.normal(1.0, 0.05, size=n_days)[day_idx]
    noise = _ar1(rng, n, phi=0.9, sigma=0.04)
    base_kw = base_peak_kw * _base_shape(kind, hour, weekday) * day_level * (1.0 + noise)
    base: np.ndarray = np.round(np.maximum(base_kw, 0.0), 3)
    if pv_kwp > 0:
        clear = _pv_clear_sky_kw_per_kwp(index, step_h, latitude, longitude)
        clearness = 0.15 + 0.85 * rng.beta(2.2, 1.3, size=n_days)
        variability = (1.0 - clearness + 0.1)[day_idx]
        cloud = np.clip(
            clearness[day_idx] * (1.0 + _ar1(rng, n, phi=0.8, sigma=0.5) * variability), 0.05, 1.0
        )
        pv: np.ndarray = np.round(np.minimum(pv_kwp * clear * cloud, pv_kwp), 3)
    else:
        pv = np.zeros(n)
    return pd.DataFrame(
        {
            "base_load_kw": base,
            "pv_kw": pv,
            "import_price_per_kwh": _tou_import_price(hour, weekday),
            "export_price_per_kwh": np.full(n, 0.06),
        },
        index=index,
    )


def generate_timeseries(
    site: SiteConfig,
    start: pd.Timestamp | str,
    end: pd.Timestamp | str,
    step: str = "15min",
    kind: Kind = "workplace",
    seed: int = 0,
    base_peak_kw: float | None = None,
    latitude: float = 52.1,
    longitude: float = 5.1,
) -> pd.DataFrame:
    """A time series for ``site`` from ``start`` to ``end`` (exclusive), e.g. for imported sessions.

    The building load has the weekday/weekend shape of ``kind`` and peaks near ``base_peak_kw``
    (default: a quarter of the import limit); PV uses the site's kWp (0 without PV); prices are the
    time-of-use import price and the flat export price of :func:`generate_scenario`. Returns a frame
    on a UTC index with the columns of :data:`~envs.scenario.TIMESERIES_COLUMNS`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    step_td = pd.Timedelta(step)
    t0, t1 = pd.Timestamp(start), pd.Timestamp(end)
    if t0.tzinfo is None or t1.tzinfo is None:
        raise ValueError("start and end must carry a UTC offset")
    n_steps = math.ceil((t1 - t0) / step_td)
    if n_steps < 2:
        raise ValueError(f"the period {t0} .. {t1} holds fewer than two steps of {step}")
    index = pd.date_range(t0.tz_convert("UTC"), periods=n_steps, freq=step_td).as_unit("ns")
    peak = 0.25 * site.grid.import_limit_kw if base_peak_kw is None else base_peak_kw
    pv_kwp = site.pv.peak_kw if site.pv is not None else 0.0
    rng = np.random.default_rng(seed)
    step_h = step_td.total_seconds() / 3600.0
    return _timeseries(kind, rng, index, site.timezone, step_h, peak, pv_kwp, latitude, longitude)
