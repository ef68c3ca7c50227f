"""Synthetic series with known structure, for tests and for benchmarking without a scenario.

Base load: a planted daily profile (office hours, lower on weekends) times a slowly varying level, plus
AR(1) noise. PV: pvlib clear-sky irradiance times a daily weather factor (AR(1) across days, with
intra-day cloud noise). EV demand: Poisson arrivals with a planted time-of-day intensity and an energy
per arrival drawn from a gamma distribution.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.features import Calendar, Location, clear_sky_shape


def daily_profile_kw(hour: np.ndarray, day_type: np.ndarray) -> np.ndarray:
    """The planted base-load shape in kW: a night floor and a workday office bump (half on Saturdays)."""
    office = np.exp(-0.5 * ((hour - 13.0) / 3.0) ** 2)
    evening = 0.4 * np.exp(-0.5 * ((hour - 19.5) / 1.5) ** 2)
    weight = np.where(day_type == 0, 1.0, np.where(day_type == 1, 0.5, 0.25))
    return 20.0 + 40.0 * weight * office + 10.0 * evening


def arrival_rate_per_h(hour: np.ndarray, day_type: np.ndarray) -> np.ndarray:
    """The planted EV arrival intensity (EVs per hour): a morning peak on workdays, a flat day otherwise."""
    morning = 6.0 * np.exp(-0.5 * ((hour - 8.5) / 1.0) ** 2)
    midday = 1.5 * np.exp(-0.5 * ((hour - 14.0) / 3.0) ** 2)
    return np.where(day_type == 0, morning + midday, 0.3 * morning + 1.5 * midday)


def synthetic_site_series(
    days: int = 28,
    seed: int = 0,
    step: str = "15min",
    start: str = "2025-04-07T00:00:00+02:00",
    timezone: str = "Europe/Amsterdam",
    pv_peak_kw: float = 100.0,
    noise_kw: float = 3.0,
) -> pd.DataFrame:
    """Columns ``base_load_kw``, ``pv_kw``, ``ev_arrivals``, ``ev_energy_kwh`` on a regular UTC grid."""
    rng = np.random.default_rng(seed)
    step_td = pd.Timedelta(step)
    n = int(days * (pd.Timedelta("1D") // step_td))
    index = pd.date_range(pd.Timestamp(start).tz_convert("UTC"), periods=n, freq=step_td)
    cal = Calendar(timezone).features(index)
    hour, day_type = cal[:, 0], cal[:, 3]
    steps_per_day = int(pd.Timedelta("1D") // step_td)
    day_of = np.arange(n) // steps_per_day

    level = 1.0 + 0.1 * np.sin(2 * np.pi * np.arange(days) / 11.0)
    ar = np.zeros(n)
    eps = rng.standard_normal(n) * noise_kw
    for j in range(1, n):
        ar[j] = 0.8 * ar[j - 1] + eps[j]
    base = daily_profile_kw(hour, day_type) * level[day_of] + ar

    weather = np.zeros(days)
    w = 0.6
    for d in range(days):
        w = float(np.clip(0.55 * w + 0.45 * rng.uniform(0.1, 1.0), 0.05, 1.0))
        weather[d] = w
    cs = clear_sky_shape(index, Location.for_timezone(timezone), step_td)
    cloud = np.clip(weather[day_of] * (1.0 + 0.15 * rng.standard_normal(n)), 0.0, 1.1)
    pv = pv_peak_kw * 0.85 * cs * cloud

    rate = arrival_rate_per_h(hour, day_type) * (step_td / pd.Timedelta("1h"))
    arrivals = rng.poisson(rate).astype(float)
    energy = np.array([rng.gamma(4.0, 5.0, size=int(k)).sum() for k in arrivals])
    return pd.DataFrame(
        {"base_load_kw": base, "pv_kw": pv, "ev_arrivals": arrivals, "ev_energy_kwh": energy}, index=index
    )
