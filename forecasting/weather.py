"""Weather-forecast columns: the clear-sky index a weather forecast predicts, and a synthetic one for tests.

A scenario's ``timeseries.csv`` may carry, besides its required columns, the weather forecast for each step
(issued before the step; :data:`envs.scenario_checks.TIMESERIES_WEATHER`):

* ``irradiance_forecast_w_m2`` - forecast global horizontal irradiance, W/m² (0..1500);
* ``cloud_cover_forecast_pct`` - forecast total cloud cover, % (0..100).

Either is optional and neither is ever required. :func:`weather_index` turns them into the clear-sky index
the forecast expects at each step: irradiance over pvlib's clear-sky irradiance where the irradiance is
given, else the Kasten-Czeplak relation ``1 - 0.75 (cloud/100)^3.4`` from the cloud cover. The PV model
(:class:`forecasting.clearsky.ClearSkyIndexForecaster`) blends its own forecast with "envelope x this
index", the blend fitted on the history (where the columns add nothing, the weight of the weather goes
to 0).

:func:`synthetic_irradiance_forecast` makes a *synthetic* forecast column for a generated scenario: the
actual PV output read as irradiance (``1000 W/m² x pv_kw / kWp``) times documented multiplicative noise,
so that the effect of weather columns can be shown where no real weather forecast exists.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.base import FloatArray

WEATHER_COLUMNS = ("irradiance_forecast_w_m2", "cloud_cover_forecast_pct")
MIN_CLEAR_SKY_KW_M2 = 0.05
"""below this clear-sky irradiance (dawn, dusk, night) the forecast index is unknown (NaN)"""
MAX_INDEX = 1.5


def weather_columns(frame: pd.DataFrame | None) -> tuple[str, ...]:
    """The weather-forecast columns present in ``frame`` (none when ``frame`` is None)."""
    return () if frame is None else tuple(c for c in WEATHER_COLUMNS if c in frame.columns)


def weather_index(weather: pd.DataFrame, times: pd.DatetimeIndex, clear_sky_kw_m2: FloatArray) -> FloatArray:
    """(n,) the clear-sky index ``weather`` forecasts at ``times`` (NaN where it has no value or the sun is
    too low: :data:`MIN_CLEAR_SKY_KW_M2`). ``clear_sky_kw_m2`` (n,): the clear-sky irradiance at ``times``."""
    cs = np.asarray(clear_sky_kw_m2, dtype=float)
    frame = weather.reindex(times)
    out = np.full(len(times), np.nan)
    if "cloud_cover_forecast_pct" in frame.columns:
        cloud = np.clip(frame["cloud_cover_forecast_pct"].to_numpy(dtype=float) / 100.0, 0.0, 1.0)
        out = 1.0 - 0.75 * cloud**3.4
    if "irradiance_forecast_w_m2" in frame.columns:
        ghi = frame["irradiance_forecast_w_m2"].to_numpy(dtype=float) / 1000.0
        with np.errstate(invalid="ignore", divide="ignore"):
            from_ghi = np.where(cs > 0, ghi / cs, np.nan)
        out = np.where(np.isfinite(from_ghi), from_ghi, out)
    out = np.where(cs >= MIN_CLEAR_SKY_KW_M2, out, np.nan)
    return np.asarray(np.clip(out, 0.0, MAX_INDEX), dtype=float)


def synthetic_irradiance_forecast(
    pv_kw: pd.Series, kwp: float, rng: np.random.Generator, day_sigma: float = 0.25, step_sigma: float = 0.2
) -> pd.Series:
    """A synthetic ``irradiance_forecast_w_m2`` column: the actual PV read as irradiance
    (``1000 x pv_kw / kwp``) times ``exp(day_sigma x N_day + step_sigma x N_step)``, one normal draw per
    local day and one per step (a day-ahead forecast that is right on average and about 30 % off at a
    step), clipped to 0..1500 W/m². For tests and the benchmark's demonstration only."""
    index = pd.DatetimeIndex(pv_kw.index)
    day = index.normalize()
    days, inverse = np.unique(day.asi8, return_inverse=True)
    noise = day_sigma * rng.standard_normal(len(days))[inverse] + step_sigma * rng.standard_normal(len(index))
    ghi = 1000.0 * pv_kw.to_numpy(dtype=float) / max(kwp, 1e-9) * np.exp(noise)
    return pd.Series(np.clip(ghi, 0.0, 1500.0), index=index, name="irradiance_forecast_w_m2")


__all__ = [
    "WEATHER_COLUMNS",
    "synthetic_irradiance_forecast",
    "weather_columns",
    "weather_index",
]
