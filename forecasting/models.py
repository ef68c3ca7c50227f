"""Forecasters with one interface, by name: ``fit(history)`` then ``predict(now, horizon)``.

The shared machinery, :class:`Persistence` and :class:`SeasonalNaive` live in :mod:`forecasting.base`,
:class:`GradientBoostingForecaster` in :mod:`forecasting.gbr`; this module names them (``make_forecaster``)
and keeps every public name importable from one place.
"""

from __future__ import annotations

from typing import Literal

from forecasting.base import (
    Forecast,
    Forecaster,
    ForecastError,
    NotFittedError,
    Persistence,
    SeasonalNaive,
    SeriesSpec,
    _BaseForecaster,
    _Context,
)
from forecasting.clearsky import ClearSkyIndexForecaster, ClearSkyIndexParams
from forecasting.gbr import FEATURE_NAMES, GBRParams, GradientBoostingForecaster

ModelName = Literal["gbr", "clear_sky_index", "seasonal_naive", "seasonal_naive_week", "persistence"]
MODEL_NAMES: tuple[str, ...] = (
    "gbr",
    "clear_sky_index",
    "seasonal_naive",
    "seasonal_naive_week",
    "persistence",
)


def make_forecaster(model: str, spec: SeriesSpec, params: GBRParams | None = None) -> _BaseForecaster:
    """A forecaster by name: ``gbr``, ``clear_sky_index`` (PV), ``seasonal_naive`` (daily),
    ``seasonal_naive_week``, ``persistence``."""
    if model == "gbr":
        return GradientBoostingForecaster(spec, params)
    if model == "clear_sky_index":
        return ClearSkyIndexForecaster(spec)
    if model == "seasonal_naive":
        return SeasonalNaive(spec, "day")
    if model == "seasonal_naive_week":
        return SeasonalNaive(spec, "week")
    if model == "persistence":
        return Persistence(spec)
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)}")


__all__ = [  # the private two too: fitted forecasters saved before the split name this module
    "FEATURE_NAMES",
    "MODEL_NAMES",
    "ClearSkyIndexForecaster",
    "ClearSkyIndexParams",
    "Forecast",
    "ForecastError",
    "Forecaster",
    "GBRParams",
    "GradientBoostingForecaster",
    "NotFittedError",
    "Persistence",
    "SeasonalNaive",
    "SeriesSpec",
    "_BaseForecaster",
    "_Context",
    "make_forecaster",
]
