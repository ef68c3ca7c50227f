"""The forecasters' shared machinery and the two reference forecasters (``fit(history)`` then
``predict(now, horizon)``); :mod:`forecasting.gbr` holds the gradient boosting one, :mod:`forecasting.models`
names them all.

* :class:`Persistence` - the last value, flat.
* :class:`SeasonalNaive` - the same time of day one day (or one week) before, the most recent one known.
* :class:`~forecasting.gbr.GradientBoostingForecaster` - scikit-learn ``HistGradientBoostingRegressor`` with
  ``loss="quantile"`` (P10/P50/P90 by default), a *direct multi-horizon* design: one model per quantile,
  each row is an (origin, lead time) pair, the lead time is a feature. Features describe the target time
  (local hour, weekday, holiday, day type, clear-sky irradiance), the lead time, and what is known at the
  origin (recent means, the same time of day on earlier days and weeks). For PV (``clear_sky_ratio``) the
  target is the *weather factor* PV / clear-sky irradiance, trained weighted by the clear-sky irradiance,
  and multiplied back: the trees learn the weather, pvlib gives the sun's geometry.

Every forecaster cleans its history with :mod:`forecasting.history` (gaps, NaN and stuck meters imputed and
reported in :attr:`Forecast.quality`) and only ever reads observations strictly before ``now``: inside,
a forecast at origin ``i`` indexes the cleaned values ``y[:i]`` only. A forecast that is not finite raises
:class:`ForecastError`, never comes back as NaN.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal, Protocol, Self

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from forecasting.features import Calendar, Location, clear_sky_shape
from forecasting.history import (
    CleaningRules,
    CleanSeries,
    HistoryQuality,
    InsufficientHistoryError,
    clean_history,
    infer_step,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

CLEAR_SKY_MIN_KW_PER_M2 = 0.02
"""below this clear-sky irradiance (20 W/m²) the PV weather factor is not learned (dawn, dusk, night)"""


class ForecastError(RuntimeError):
    """A model produced a non-finite forecast (a bug or a degenerate history); never returned silently."""


class NotFittedError(RuntimeError):
    """``predict`` before ``fit``."""


@dataclass(frozen=True, eq=False)
class Forecast:
    """A forecast made at ``index[0]`` for the steps starting at ``index``.

    ``point`` is the point forecast (the P50 for quantile models, MAE-optimal); ``quantiles[q]`` is the
    forecast of quantile ``quantile_levels[q]``, shape ``(Q, H)`` (``Q = 0`` for models without quantiles),
    non-decreasing in ``q`` at every step. Units are those of the series (kW, arrivals, kWh).
    """

    index: pd.DatetimeIndex
    point: FloatArray
    quantile_levels: tuple[float, ...]
    quantiles: FloatArray
    quality: HistoryQuality

    @property
    def horizon(self) -> int:
        return len(self.point)

    def quantile(self, level: float) -> FloatArray:
        """The forecast of one quantile level (``KeyError`` if the model has none)."""
        for q, lv in enumerate(self.quantile_levels):
            if abs(lv - level) < 1e-9:
                return self.quantiles[q]
        raise KeyError(f"no quantile {level} in {self.quantile_levels}")

    def to_frame(self) -> pd.DataFrame:
        data = {"point": self.point}
        for q, lv in enumerate(self.quantile_levels):
            data[f"p{round(lv * 100):02d}"] = self.quantiles[q]
        return pd.DataFrame(data, index=self.index)


@dataclass(frozen=True)
class SeriesSpec:
    """What a forecaster forecasts and how its history is treated.

    ``timezone`` is the site's local zone (calendar features), ``location`` where the PV is (needed by
    ``clear_sky_ratio`` models), ``nonnegative`` clips forecasts at 0 (PV, counts, energies).
    """

    name: str = "value"
    timezone: str = "UTC"
    location: Location | None = None
    rules: CleaningRules = field(default_factory=CleaningRules)
    nonnegative: bool = False
    max_stale_steps: int | None = None
    """more stale steps than this (default: one day) is an error, not a forecast"""
    extra_holidays: tuple[str, ...] = ()

    @property
    def calendar(self) -> Calendar:
        return Calendar(self.timezone, self.extra_holidays)


# --------------------------------------------------------------------------- shared machinery


@dataclass(frozen=True, eq=False)
class _Context:
    """Arrays over a contiguous grid: cleaned history ``y`` (``n`` steps) and, for ``n_total >= n`` steps,
    the target-time features. A forecast at origin ``i`` may read ``y[:i]`` (and prefix sums up to ``i``)
    only."""

    start: pd.Timestamp
    step: pd.Timedelta
    y: FloatArray
    time_features: FloatArray
    """(n_total, 4) calendar features of each step"""
    clear_sky: FloatArray
    """(n_total,) clear-sky irradiance at each step, kW/m² (zeros when the model does not use it)"""
    quality: HistoryQuality

    @property
    def steps_per_day(self) -> int:
        return int(pd.Timedelta("1D") // self.step)


def _make_context(
    spec: SeriesSpec, clean: CleanSeries, n_future: int, use_clear_sky: bool, first: int = 0
) -> _Context:
    """A context over ``clean.values[first:]`` extended by ``n_future`` steps of target-time features."""
    values = clean.values[first:]
    start = clean.start + clean.step * first
    n_total = len(values) + n_future
    times = pd.date_range(start, periods=n_total, freq=clean.step)
    tf = spec.calendar.features(times)
    if use_clear_sky:
        if spec.location is None:
            raise ValueError(f"{spec.name}: a clear-sky model needs a location")
        cs = clear_sky_shape(times, spec.location, clean.step)
    else:
        cs = np.zeros(n_total)
    return _Context(start, clean.step, values, tf, cs, clean.quality)


class Forecaster(Protocol):
    """Anything that fits on a history and forecasts the next steps from an origin ``now``."""

    name: str
    spec: SeriesSpec

    def fit(self, history: pd.Series) -> Self: ...

    def predict(self, now: pd.Timestamp, horizon: int, history: pd.Series | None = None) -> Forecast: ...

    def unfitted(self) -> Self: ...


class _BaseForecaster:
    """Cleaning, grid checks and the ``predict`` wrapper shared by all forecasters."""

    name: str = "base"
    quantile_levels: tuple[float, ...] = ()
    uses_clear_sky: bool = False
    lookback_days: int = 1
    clear_sky_days_ahead: int = 0
    """days of target-time features past the horizon a forecast reads (the clear-sky energy of a target's
    whole day); geometry, not observations"""

    def __init__(self, spec: SeriesSpec) -> None:
        self.spec = spec
        self.step: pd.Timedelta | None = None
        self._history: pd.Series | None = None

    # -- public API

    def fit(self, history: pd.Series) -> Self:
        """Learn from ``history`` (a tz-aware series on a regular grid; gaps/NaN/stuck runs are imputed)."""
        step = infer_step(pd.DatetimeIndex(history.index))
        if pd.Timedelta("1D") % step != pd.Timedelta(0):
            raise ValueError(f"{self.spec.name}: step {step} does not divide a day")
        clean = clean_history(history, self.spec.rules, step=step)
        self.step = step
        self._fit_clean(clean)
        keep = self._lookback_steps()
        self._history = history[history.index >= clean.end - keep * step].copy()
        return self

    def predict(self, now: pd.Timestamp, horizon: int, history: pd.Series | None = None) -> Forecast:
        """Forecast ``horizon`` steps from ``now`` (on the history's grid) using observations before ``now``.

        ``history`` defaults to the tail of the fitted history; pass the latest observations to forecast
        from a later origin. Only values strictly before ``now`` are read.
        """
        if self.step is None or self._history is None:
            raise NotFittedError(f"{self.name}: call fit() before predict()")
        if horizon < 1:
            raise ValueError("horizon must be at least 1 step")
        now = pd.Timestamp(now)
        if now.tz is None:
            raise ValueError("now must be timezone-aware")
        source = self._history if history is None else history
        source = source[source.index < now]
        keep = self._lookback_steps()
        source = source[source.index >= now - keep * self.step]
        if len(source) == 0:
            raise InsufficientHistoryError(
                f"{self.spec.name}: history is stale: no value in the {keep} steps before {now}"
            )
        clean = clean_history(
            source, self.spec.rules, step=self.step, now=now, max_stale_steps=self.spec.max_stale_steps
        )
        if clean.end != now:
            raise ValueError(f"{self.spec.name}: origin {now} is not on the history's {self.step} grid")
        ctx = _make_context(self.spec, clean, horizon + self._days_ahead_steps(), self.uses_clear_sky)
        return self._forecast(ctx, len(ctx.y), horizon, clean.quality)

    @property
    def history_tail(self) -> pd.Series | None:
        """The end of the fitted history (what ``predict`` uses when given none), None before ``fit``."""
        return self._history

    def unfitted(self) -> Self:
        """A copy with the same settings, not fitted."""
        out = copy.copy(self)
        out.step = None
        out._history = None
        out._reset()
        return out

    # -- for the forecast provider: one context over a whole series, then cheap forecasts per origin

    def context(self, clean: CleanSeries, n_future: int) -> _Context:
        if self.step is None:
            raise NotFittedError(f"{self.name}: call fit() first")
        if clean.step != self.step:
            raise ValueError(
                f"{self.spec.name}: series step {clean.step} differs from the model's {self.step}"
            )
        return _make_context(self.spec, clean, n_future + self._days_ahead_steps(), self.uses_clear_sky)

    def forecast_at(self, ctx: _Context, i: int, horizon: int) -> Forecast:
        """Forecast from origin ``i`` of ``ctx`` (reads ``ctx.y[:i]`` only)."""
        return self._forecast(ctx, i, horizon, ctx.quality)

    def forecast_block(self, ctx: _Context, origins: IntArray, horizon: int) -> tuple[FloatArray, FloatArray]:
        """Point forecasts ``(m, H)`` and quantiles ``(m, Q, H)`` from several origins of ``ctx`` at once
        (the forecast from origin ``i`` reads ``ctx.y[:i]`` only; one model call for all of them)."""
        origins = np.asarray(origins, dtype=np.int64)
        if len(origins) == 0:
            return np.zeros((0, horizon)), np.zeros((0, len(self.quantile_levels), horizon))
        if origins.min() < 1 or origins.max() > len(ctx.y):
            raise InsufficientHistoryError(f"{self.spec.name}: origins must lie in 1..{len(ctx.y)}")
        if origins.max() + horizon > len(ctx.clear_sky):
            raise ValueError(f"{self.spec.name}: the context does not reach {horizon} steps past the origins")
        point, quantiles = self._predict_block(ctx, origins, horizon)
        if self.spec.nonnegative:
            point = np.maximum(point, 0.0)
            quantiles = np.maximum(quantiles, 0.0)
        if not (np.all(np.isfinite(point)) and np.all(np.isfinite(quantiles))):
            raise ForecastError(f"{self.name} produced a non-finite forecast for {self.spec.name}")
        return point, quantiles

    # -- internals

    def _forecast(self, ctx: _Context, i: int, horizon: int, quality: HistoryQuality) -> Forecast:
        point, quantiles = self.forecast_block(ctx, np.array([i], dtype=np.int64), horizon)
        index = pd.date_range(ctx.start + ctx.step * i, periods=horizon, freq=ctx.step)
        return Forecast(index, point[0], self.quantile_levels, quantiles[0], quality)

    def _days_ahead_steps(self) -> int:
        assert self.step is not None
        return int(self.clear_sky_days_ahead * (pd.Timedelta("1D") // self.step))

    def _lookback_steps(self) -> int:
        assert self.step is not None
        return int(self.lookback_days * (pd.Timedelta("1D") // self.step)) + 1

    def _fit_clean(self, clean: CleanSeries) -> None:
        """Fit on a cleaned history (baselines have nothing to learn)."""

    def _reset(self) -> None:
        """Drop fitted state beyond the history."""

    def _predict_block(self, ctx: _Context, origins: IntArray, horizon: int) -> tuple[FloatArray, FloatArray]:
        raise NotImplementedError


class Persistence(_BaseForecaster):
    """The last observed value, for every lead time."""

    name = "persistence"
    lookback_days = 1

    def _predict_block(self, ctx: _Context, origins: IntArray, horizon: int) -> tuple[FloatArray, FloatArray]:
        point = np.repeat(ctx.y[origins - 1][:, None], horizon, axis=1)
        return point, np.zeros((len(origins), 0, horizon))


class SeasonalNaive(_BaseForecaster):
    """The value at the same time of day one period before, the most recent period known at the origin
    (a lead of 30 h with a daily period reads two days back). Without a full period of history, the
    most recent value."""

    def __init__(self, spec: SeriesSpec, period: Literal["day", "week"] = "day") -> None:
        super().__init__(spec)
        self.period = period
        self.name = f"seasonal_naive_{period}"
        self.lookback_days = 1 if period == "day" else 7

    def _predict_block(self, ctx: _Context, origins: IntArray, horizon: int) -> tuple[FloatArray, FloatArray]:
        period = ctx.steps_per_day * (7 if self.period == "week" else 1)
        lead = np.arange(horizon)[None, :]
        o = origins[:, None]
        lag_pos = o + lead - period * (lead // period + 1)  # always < origin
        point = np.where(lag_pos >= 0, ctx.y[np.maximum(lag_pos, 0)], ctx.y[o - 1])
        return point, np.zeros((len(origins), 0, horizon))
