"""Forecasters with one interface: ``fit(history)`` then ``predict(now, horizon)``.

* :class:`Persistence` - the last value, flat.
* :class:`SeasonalNaive` - the same time of day one day (or one week) before, the most recent one known.
* :class:`GradientBoostingForecaster` - scikit-learn ``HistGradientBoostingRegressor`` with
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
from typing import TYPE_CHECKING, Literal, Protocol, Self

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

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingRegressor

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
        ctx = _make_context(self.spec, clean, horizon, self.uses_clear_sky)
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
        return _make_context(self.spec, clean, n_future, self.uses_clear_sky)

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


# --------------------------------------------------------------------------- gradient boosting


@dataclass(frozen=True)
class GBRParams:
    """Settings of :class:`GradientBoostingForecaster` (``HistGradientBoostingRegressor`` per quantile)."""

    quantile_levels: tuple[float, ...] = (0.1, 0.5, 0.9)
    max_iter: int = 50
    learning_rate: float = 0.1
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 500
    l2_regularization: float = 0.0
    max_rows: int = 60_000
    """training rows (origin, lead) are sampled down to at most this many"""
    origin_stride_steps: int = 8
    """training origins every this many steps (then sampled down to ``max_rows``)"""
    horizon_steps: int | None = None
    """longest lead trained for (default: one day)"""
    target: Literal["level", "clear_sky_ratio"] = "level"
    count_data: bool = False
    """the series counts events (EV arrivals): quantiles by jittering (Machado & Santos Silva, 2005)"""
    weight_by_clear_sky: bool = False
    """weight PV rows by clear-sky irradiance (errors in kW, not in weather factor; about 2x slower)"""
    residual_to: Literal["none", "profile_day_type_14d", "profile_14d"] = "profile_day_type_14d"
    """the trees forecast the difference to this profile feature (same slot on recent days)"""
    features: tuple[str, ...] | None = ("hour", "day_type", "lead_h", "anomaly_last_hour")
    """the features the trees see (None = all of :data:`FEATURE_NAMES`). The default is small on purpose:
    rows of one target day recur for many origins, and noisy lag features let the trees memorise days
    (backtests got worse with all features); the profile baseline carries the recent history."""
    seed: int = 0

    def __post_init__(self) -> None:
        if 0.5 not in self.quantile_levels:
            raise ValueError("quantile_levels must contain 0.5 (the point forecast)")
        if any(not 0 < q < 1 for q in self.quantile_levels):
            raise ValueError("quantile levels must lie in (0, 1)")
        unknown = set(self.features or ()) - set(FEATURE_NAMES)
        if unknown:
            raise ValueError(f"unknown features {sorted(unknown)}; choose from {FEATURE_NAMES}")


FEATURE_NAMES = (
    "hour",
    "weekday",
    "holiday",
    "day_type",
    "clear_sky",
    "lead_h",
    "mean_last_step",
    "mean_last_hour",
    "mean_last_day",
    "lag_day",
    "lag_day_smooth",
    "profile_7d",
    "lag_week",
    "lag_2week",
    "profile_4week",
    "profile_day_type_14d",
    "profile_14d",
    "anomaly_last_hour",
)
BASELINE_FALLBACK = ("profile_7d", "lag_day", "mean_last_day", "mean_last_step")
"""where the preferred baseline is missing (short history), the first of these that is known"""


def _prefix(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Prefix sums of the finite values of ``x`` and of their count (length ``n + 1``)."""
    finite = np.isfinite(x)
    s = np.concatenate([[0.0], np.cumsum(np.where(finite, x, 0.0))])
    c = np.concatenate([[0.0], np.cumsum(finite.astype(float))])
    return s, c


def _window_mean(s: FloatArray, c: FloatArray, a: IntArray, b: IntArray) -> FloatArray:
    """Mean over ``[a, b)`` from prefix sums (indices clipped into range; NaN for an empty window)."""
    n = len(s) - 1
    a = np.clip(a, 0, n)
    b = np.clip(b, 0, n)
    count = c[b] - c[a]
    total = s[b] - s[a]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1.0), np.nan)


class GradientBoostingForecaster(_BaseForecaster):
    """Direct multi-horizon quantile gradient boosting (see the module docstring for the design)."""

    name = "gbr"

    def __init__(self, spec: SeriesSpec, params: GBRParams | None = None) -> None:
        super().__init__(spec)
        self.params = GBRParams() if params is None else params
        self.quantile_levels = self.params.quantile_levels
        self.uses_clear_sky = self.params.target == "clear_sky_ratio"
        # history the features reach back to: four weeks for ``profile_4week``, else two weeks and a day
        feats = FEATURE_NAMES if self.params.features is None else self.params.features
        self.lookback_days = 29 if "profile_4week" in feats else 15
        self.models_: list[HistGradientBoostingRegressor] = []
        self.feature_mask_: NDArray[np.bool_] = np.ones(len(FEATURE_NAMES), dtype=bool)
        self.jitter_: float = 0.0
        self.n_train_rows_: int = 0

    def _reset(self) -> None:
        self.models_ = []
        self.feature_mask_ = np.ones(len(FEATURE_NAMES), dtype=bool)
        self.n_train_rows_ = 0

    # -- features

    def _z(self, ctx: _Context, n: int) -> FloatArray:
        """The modelled quantity over ``y[:n]``: the value, or the weather factor PV / clear sky."""
        y = ctx.y[:n]
        if not self.uses_clear_sky:
            return y
        cs = ctx.clear_sky[:n]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(cs >= CLEAR_SKY_MIN_KW_PER_M2, y / cs, np.nan)

    def _rows(self, ctx: _Context, n_hist: int, origins: IntArray, leads: IntArray) -> FloatArray:
        """Feature rows for every (origin, lead) pair, origins-major: ``(len(origins) * len(leads), F)``.

        Reads ``y[:origin]`` for each origin only: every history index below is ``< origin`` or masked.
        """
        day = ctx.steps_per_day
        week = 7 * day
        o = origins[:, None]
        lead = leads[None, :]
        pos = o + lead  # target positions
        z = self._z(ctx, n_hist)
        zs, zc = _prefix(z)
        zpad = np.concatenate([z, [np.nan]])  # index -1 -> NaN below

        def at(idx: IntArray) -> FloatArray:
            ok = (idx >= 0) & (idx < o)
            return np.where(ok, zpad[np.where(ok, idx, n_hist)], np.nan)

        if self.uses_clear_sky:
            ys, _ = _prefix(ctx.y[:n_hist])
            css, _ = _prefix(ctx.clear_sky[:n_hist])

            def recent(w: int) -> FloatArray:
                a = np.clip(origins - w, 0, n_hist)
                b = np.clip(origins, 0, n_hist)
                den = css[b] - css[a]
                with np.errstate(invalid="ignore", divide="ignore"):
                    return np.where(den >= CLEAR_SKY_MIN_KW_PER_M2 * w * 0.5, (ys[b] - ys[a]) / den, np.nan)
        else:
            ys, yc = _prefix(ctx.y[:n_hist])

            def recent(w: int) -> FloatArray:
                return _window_mean(ys, yc, origins - w, origins)

        k = lead // day + 1
        lag1 = pos - k * day
        b_smooth = np.minimum(lag1 + 3, o)
        smooth = _window_mean(zs, zc, lag1 - 2, b_smooth)
        prof_sum = np.zeros(pos.shape)
        prof_cnt = np.zeros(pos.shape)
        for j in range(7):
            v = at(lag1 - j * day)
            ok = np.isfinite(v)
            prof_sum += np.where(ok, v, 0.0)
            prof_cnt += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            profile = np.where(prof_cnt > 0, prof_sum / np.maximum(prof_cnt, 1.0), np.nan)
        prof_sum = np.zeros(pos.shape)
        prof_cnt = np.zeros(pos.shape)
        for j in range(1, 5):
            v = at(pos - j * week)
            ok = np.isfinite(v)
            prof_sum += np.where(ok, v, 0.0)
            prof_cnt += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            profile_week = np.where(prof_cnt > 0, prof_sum / np.maximum(prof_cnt, 1.0), np.nan)
        # same slot on the last 14 days of the target's day type (workday, Saturday, Sunday/holiday)
        day_type = ctx.time_features[:, 3]
        target_type = day_type[np.minimum(pos, len(day_type) - 1)]
        prof_sum = np.zeros(pos.shape)
        prof_cnt = np.zeros(pos.shape)
        all_sum = np.zeros(pos.shape)
        all_cnt = np.zeros(pos.shape)
        for j in range(1, 15):
            idx = pos - j * day
            v = at(idx)
            known = np.isfinite(v)
            ok = known & (day_type[np.maximum(idx, 0)] == target_type)
            prof_sum += np.where(ok, v, 0.0)
            prof_cnt += ok
            all_sum += np.where(known, v, 0.0)
            all_cnt += known
        with np.errstate(invalid="ignore", divide="ignore"):
            profile_type = np.where(prof_cnt > 0, prof_sum / np.maximum(prof_cnt, 1.0), np.nan)
            profile_all = np.where(all_cnt > 0, all_sum / np.maximum(all_cnt, 1.0), np.nan)
        m, h = pos.shape
        shape = (m, h)
        tpos = np.minimum(pos, len(ctx.clear_sky) - 1)  # rows past the end are dropped by the caller
        cols = [
            *(ctx.time_features[tpos, c] for c in range(ctx.time_features.shape[1])),
            ctx.clear_sky[tpos],
            np.broadcast_to(lead * (ctx.step / pd.Timedelta("1h")), shape),
            np.broadcast_to(recent(1)[:, None], shape),
            np.broadcast_to(recent(4)[:, None], shape),
            np.broadcast_to(recent(day)[:, None], shape),
            at(lag1),
            smooth,
            profile,
            at(pos - week),
            at(pos - 2 * week),
            profile_week,
            profile_type,
            profile_all,
            # how far the last hour was above its usual level (the usual level at the origin's slot)
            np.broadcast_to(
                recent(4)[:, None] - (profile_all if self.uses_clear_sky else profile_type)[:, :1], shape
            ),
        ]
        return np.stack([np.asarray(c, dtype=float).reshape(-1) for c in cols], axis=1)

    def _baseline(self, X: FloatArray) -> FloatArray:
        """What the trees correct (in the modelled quantity): the preferred profile feature, else the
        first known of :data:`BASELINE_FALLBACK`, else 0."""
        if self.params.residual_to == "none":
            return np.zeros(len(X))
        base = X[:, FEATURE_NAMES.index(self.params.residual_to)].copy()
        for name in BASELINE_FALLBACK:
            gap = ~np.isfinite(base)
            if not gap.any():
                break
            base[gap] = X[gap, FEATURE_NAMES.index(name)]
        return np.where(np.isfinite(base), base, 0.0)

    # -- fit / predict

    def _fit_clean(self, clean: CleanSeries) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor

        p = self.params
        ctx = _make_context(self.spec, clean, 0, self.uses_clear_sky)
        n = len(ctx.y)
        day = ctx.steps_per_day
        horizon = p.horizon_steps or day
        if n < day + 2:
            raise InsufficientHistoryError(
                f"{self.spec.name}: gradient boosting needs more than one day of history, got {n} steps"
            )
        origins = np.arange(4, n, p.origin_stride_steps, dtype=np.int64)
        leads = np.arange(horizon, dtype=np.int64)
        pos = (origins[:, None] + leads[None, :]).reshape(-1)
        valid = pos < n
        X = self._rows(ctx, n, origins, leads)[valid]
        pos = pos[valid]
        if self.uses_clear_sky:
            cs = ctx.clear_sky[pos]
            daylight = cs >= CLEAR_SKY_MIN_KW_PER_M2
            X, pos, cs = X[daylight], pos[daylight], cs[daylight]
            target = ctx.y[pos] / cs
            weight: FloatArray | None = cs if p.weight_by_clear_sky else None
        else:
            target = ctx.y[pos]
            weight = None
        target = target - self._baseline(X)
        rng = np.random.default_rng(p.seed)
        if len(target) > p.max_rows:
            pick = np.sort(rng.choice(len(target), size=p.max_rows, replace=False))
            X, target = X[pick], target[pick]
            weight = None if weight is None else weight[pick]
        # sklearn's quantile boosting does not move off ties (a zero-inflated series stays at 0), so the
        # target is jittered: counts by U(0, 1) (quantile q of Y is ceil(quantile q of Y + U) - 1), other
        # series by a negligible amount.
        if p.count_data:
            target = target + rng.uniform(0.0, 1.0, len(target))
        else:
            scale = float(np.std(target)) or 1.0
            self.jitter_ = 1e-6 * scale
            target = target + rng.uniform(-self.jitter_, self.jitter_, len(target))
        # features with fewer than two distinct values carry nothing (a two-week lag in two weeks of
        # history is all NaN) and sklearn cannot bin them: leave them out, here and when predicting
        wanted = FEATURE_NAMES if p.features is None else p.features
        keep = np.array(
            [
                name in wanted and len(np.unique(col[np.isfinite(col)])) >= 2
                for name, col in zip(FEATURE_NAMES, X.T, strict=True)
            ]
        )
        X = X[:, keep]
        if len(target) < 50:
            raise InsufficientHistoryError(f"{self.spec.name}: only {len(target)} training rows")
        models = []
        for q in p.quantile_levels:
            model = HistGradientBoostingRegressor(
                loss="quantile",
                quantile=q,
                max_iter=p.max_iter,
                learning_rate=p.learning_rate,
                max_leaf_nodes=p.max_leaf_nodes,
                min_samples_leaf=p.min_samples_leaf,
                l2_regularization=p.l2_regularization,
                early_stopping=False,
                random_state=int(rng.integers(2**31 - 1)),
            )
            model.fit(X, target, sample_weight=weight)
            models.append(model)
        self.models_ = models
        self.feature_mask_ = keep
        self.n_train_rows_ = len(target)

    def _predict_block(self, ctx: _Context, origins: IntArray, horizon: int) -> tuple[FloatArray, FloatArray]:
        if not self.models_:
            raise NotFittedError(f"{self.name}: call fit() before predict()")
        m = len(origins)
        leads = np.arange(horizon, dtype=np.int64)
        X = self._rows(ctx, int(origins.max()), origins, leads)
        base = self._baseline(X)
        X = X[:, self.feature_mask_]
        preds = np.stack([np.asarray(model.predict(X), dtype=np.float64) + base for model in self.models_])
        preds = preds.reshape(len(self.models_), m, horizon).transpose(1, 0, 2)  # (m, Q, H)
        if self.uses_clear_sky:
            cs = ctx.clear_sky[origins[:, None] + leads[None, :]]
            preds = np.maximum(preds, 0.0) * cs[:, None, :]
        if self.params.count_data:
            preds = np.maximum(np.ceil(preds) - 1.0, 0.0)
        else:  # undo the jitter where it is all there is (zero-inflated series: an exact 0, not 1e-7)
            preds = np.where(np.abs(preds) <= 4.0 * self.jitter_, 0.0, preds)
        preds = np.sort(preds, axis=1)  # no quantile crossing
        point = preds[:, self.params.quantile_levels.index(0.5), :]
        return point, preds


# --------------------------------------------------------------------------- construction by name

ModelName = Literal["gbr", "seasonal_naive", "seasonal_naive_week", "persistence"]
MODEL_NAMES: tuple[str, ...] = ("gbr", "seasonal_naive", "seasonal_naive_week", "persistence")


def make_forecaster(model: str, spec: SeriesSpec, params: GBRParams | None = None) -> _BaseForecaster:
    """A forecaster by name: ``gbr``, ``seasonal_naive`` (daily), ``seasonal_naive_week``, ``persistence``."""
    if model == "gbr":
        return GradientBoostingForecaster(spec, params)
    if model == "seasonal_naive":
        return SeasonalNaive(spec, "day")
    if model == "seasonal_naive_week":
        return SeasonalNaive(spec, "week")
    if model == "persistence":
        return Persistence(spec)
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)}")


__all__ = [
    "FEATURE_NAMES",
    "MODEL_NAMES",
    "Forecast",
    "ForecastError",
    "Forecaster",
    "GBRParams",
    "GradientBoostingForecaster",
    "NotFittedError",
    "Persistence",
    "SeasonalNaive",
    "SeriesSpec",
    "make_forecaster",
]
