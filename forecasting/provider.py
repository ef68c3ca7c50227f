"""Fitted forecasters for a whole site, saved with joblib, and the forecast provider the environment, the
MPC and the live service use (:class:`envs.forecast.ForecastProvider`).

``ModelForecast(site_forecaster).bind(timeseries).window(t, H)`` gives the :class:`~envs.core.ForecastWindow`
for steps ``t .. t+H-1``:

* base load and PV come from the fitted models, forecast from an origin at or before ``t`` with the
  history strictly before that origin. With ``measured_current_step`` (default) the first element is the
  value measured in step ``t`` itself, as a live controller reads its meters before deciding (the
  environment's state holds the same value), and the rest is forecast;
* prices are passed through from the time series: they are known day-ahead;
* forecasts are refreshed every ``refresh_every_steps`` steps (a window between refreshes is the last
  forecast shifted), and computed for a day of origins in one model call, then cached: binding once and
  asking every step costs little;
* if the fitted history ends right where the bound series starts, it is used as warm-up history, so the
  first steps are forecast from real lags; otherwise the first step (no history at all) is a flat
  persistence of the measured value, and the lag features of early steps are missing (the models were
  trained to cope with that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from envs.core import FloatArray, ForecastWindow
from envs.forecast import COLUMNS
from envs.scenario import Scenario
from forecasting.base import Forecast, _BaseForecaster, _Context
from forecasting.clearsky import ClearSkyIndexForecaster
from forecasting.data import ALL_SERIES, gbr_params, scenario_series, series_spec, site_model
from forecasting.history import CleanSeries, HistoryQuality, clean_values
from forecasting.models import GBRParams, make_forecaster
from forecasting.weather import weather_columns

FORMAT_VERSION = 1


def _with_weather(f: _BaseForecaster, timeseries: pd.DataFrame) -> _BaseForecaster:
    """A PV model reading the weather-forecast columns of the series it is bound to (none: none)."""
    if not isinstance(f, ClearSkyIndexForecaster):
        return f
    cols = weather_columns(timeseries)
    return f.with_weather(timeseries[list(cols)] if cols else None)


@dataclass(eq=False)
class SiteForecaster:
    """One fitted forecaster per series of a site (:data:`forecasting.data.ALL_SERIES`)."""

    forecasters: dict[str, _BaseForecaster]
    timezone: str
    step: pd.Timedelta
    trained_on: str = ""
    """name of the scenario it was fitted on"""
    trained_until: pd.Timestamp | None = None
    format_version: int = FORMAT_VERSION

    @classmethod
    def fit_scenario(
        cls,
        scenario: Scenario,
        model: str = "gbr",
        params: GBRParams | None = None,
        columns: tuple[str, ...] = ALL_SERIES,
    ) -> SiteForecaster:
        """Fit ``model`` on each series of ``scenario`` (EV demand derived from its sessions; with ``gbr``,
        PV through its clear-sky index, :func:`forecasting.data.site_model`)."""
        data = scenario_series(scenario)
        out: dict[str, _BaseForecaster] = {}
        for col in columns:
            spec = series_spec(col, scenario.site.timezone)
            name = site_model(col, model)
            f = make_forecaster(name, spec, gbr_params(col, params) if name == "gbr" else None)
            if isinstance(f, ClearSkyIndexForecaster):  # weather-forecast columns where the scenario has them
                f = f.with_weather(scenario.timeseries[list(weather_columns(scenario.timeseries))])
            out[col] = f.fit(data[col])
        return cls(out, scenario.site.timezone, scenario.step, scenario.name, scenario.end)

    def forecaster(self, column: str) -> _BaseForecaster:
        try:
            return self.forecasters[column]
        except KeyError:
            raise KeyError(f"no fitted forecaster for {column!r}; have {sorted(self.forecasters)}") from None

    def predict(
        self, column: str, now: pd.Timestamp, horizon: int, history: pd.Series | None = None
    ) -> Forecast:
        return self.forecaster(column).predict(now, horizon, history)

    def save(self, path: str | Path) -> Path:
        import joblib

        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, out, compress=3)
        return out

    @classmethod
    def load(cls, path: str | Path) -> SiteForecaster:
        import joblib

        obj = joblib.load(Path(path))
        if not isinstance(obj, cls):
            raise TypeError(f"{path}: not a fitted SiteForecaster (got {type(obj).__name__})")
        if obj.format_version != FORMAT_VERSION:
            raise ValueError(f"{path}: format version {obj.format_version}, expected {FORMAT_VERSION}")
        return obj


@dataclass(frozen=True)
class ModelForecast:
    """Forecast provider wrapping a fitted :class:`SiteForecaster` (see the module docstring)."""

    site: SiteForecaster
    refresh_every_steps: int = 1
    measured_current_step: bool = True
    block_origins: int = 96
    """origins forecast together in one model call (then cached)"""
    name: str = "model"

    def __post_init__(self) -> None:
        if self.refresh_every_steps < 1 or self.block_origins < 1:
            raise ValueError("refresh_every_steps and block_origins must be >= 1")

    @classmethod
    def load(cls, path: str | Path, **kwargs: int | bool | str) -> ModelForecast:
        return cls(SiteForecaster.load(path), **kwargs)  # type: ignore[arg-type]

    def bind(self, timeseries: pd.DataFrame) -> _BoundModel:
        return _BoundModel(self, timeseries)


@dataclass(eq=False)
class _Series:
    forecaster: _BaseForecaster
    offset: int
    """warm-up steps before the bound series' first step"""
    clean: CleanSeries
    truth: FloatArray
    """cleaned values of the bound series (measured current step)"""
    ctx: _Context | None = None
    cache: dict[int, FloatArray] = field(default_factory=dict)
    """first origin of a block -> point forecasts (block, horizon)"""
    cache_horizon: int = 0


class _BoundModel:
    """A :class:`ModelForecast` bound to one time series (a cache per bound series, nothing global)."""

    def __init__(self, provider: ModelForecast, timeseries: pd.DataFrame) -> None:
        self.provider = provider
        index = pd.DatetimeIndex(timeseries.index)
        if len(index) < 2:
            raise ValueError("a bound time series needs at least two steps")
        step = pd.Timedelta(index[1] - index[0])
        if step != provider.site.step:
            raise ValueError(f"time series step {step} differs from the forecaster's {provider.site.step}")
        self.n = len(index)
        self.prices = timeseries[list(COLUMNS[2:])].to_numpy(dtype=float).T.copy()  # (2, T)
        self.series = {
            col: self._prepare(
                _with_weather(provider.site.forecaster(col), timeseries), timeseries[col], index, step
            )
            for col in ("base_load_kw", "pv_kw")
        }

    @staticmethod
    def _prepare(
        f: _BaseForecaster, values: pd.Series, index: pd.DatetimeIndex, step: pd.Timedelta
    ) -> _Series:
        warm = f.history_tail
        offset = 0
        raw = values.to_numpy(dtype=float)
        if warm is not None and len(warm) and pd.Timestamp(warm.index[-1]) + step == index[0]:
            offset = len(warm)
            raw = np.concatenate([warm.to_numpy(dtype=float), raw])
        day = int(pd.Timedelta("1D") // step)
        # causal cleaning: the cleaned prefix up to t is what cleaning the history before t gives
        vals, imputed, n_missing, n_stuck, n_dropped = clean_values(raw, day, f.spec.rules)
        if n_dropped:
            raise ValueError(f"{f.spec.name}: the bound series starts with {n_dropped} missing steps")
        start = pd.Timestamp(index[0]) - step * offset
        clean = CleanSeries(start, step, vals, imputed, HistoryQuality(len(vals), n_missing, n_stuck, 0, 0))
        return _Series(f, offset, clean, vals[offset:])

    def _point(self, s: _Series, origin: int, length: int) -> FloatArray:
        """Point forecast of ``length`` steps from bound step ``origin`` (history strictly before it)."""
        k = self.provider.refresh_every_steps
        block = self.provider.block_origins
        if length > s.cache_horizon or s.ctx is None:
            s.cache.clear()
            s.cache_horizon = max(length + k - 1, s.cache_horizon)
            s.ctx = s.forecaster.context(s.clean, s.cache_horizon)
        b, j = divmod(origin, k * block)
        if origin % k or b not in s.cache:
            if origin % k:  # an off-grid origin (only at the very start): alone, not cached
                point, _ = s.forecaster.forecast_block(s.ctx, np.array([origin + s.offset]), s.cache_horizon)
                return point[0, :length]
            origins = np.arange(b * k * block, (b + 1) * k * block, k)
            ok = (origins + s.offset >= 1) & (origins <= self.n)
            table = np.full((block, s.cache_horizon), np.nan)
            if ok.any():
                point, _ = s.forecaster.forecast_block(s.ctx, origins[ok] + s.offset, s.cache_horizon)
                table[ok] = point
            if len(s.cache) >= 16:
                s.cache.clear()
            s.cache[b] = table
        return s.cache[b][j // k, :length]

    def window(self, t: int, horizon: int, rng: np.random.Generator | None = None) -> ForecastWindow:
        """Forecast for steps ``t .. t+horizon-1`` made at the start of step ``t`` (``rng`` is unused: the
        forecast is deterministic)."""
        if t < 0 or horizon < 1:
            raise ValueError("need t >= 0 and horizon >= 1")
        k = self.provider.refresh_every_steps
        out = []
        for s in self.series.values():
            t_eff = min(t, self.n)  # past the end: the last possible origin, shifted
            if t_eff + s.offset < 1:  # nothing measured before: flat persistence of the current value
                w = np.full(horizon, s.truth[0])
            else:
                origin = t_eff - t_eff % k
                if origin + s.offset < 1:
                    origin = t_eff
                shift = t - origin
                w = self._point(s, origin, shift + horizon)[shift:].copy()
            if self.provider.measured_current_step and t < self.n:
                w[0] = s.truth[t]
            out.append(w)
        idx = np.minimum(np.arange(t, t + horizon), self.n - 1)
        return ForecastWindow(out[0], out[1], self.prices[0, idx].copy(), self.prices[1, idx].copy())
