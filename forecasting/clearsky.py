"""PV through its clear-sky index: the site's own clear-sky envelope times a forecast index from recent days.

A day-ahead PV forecast is "how much sun will there be" times "what does this array make under a clear
sky". The second part is geometry and the site: pvlib knows the sun, but a site configuration has no
coordinates (the location is the capital of the time zone), no tilt, azimuth or shading. So the envelope is
learned from the site's own recent history, which carries all of that:

* **envelope** ``E(slot)``: at each time slot of the day, a high quantile (fitted: 0.9 or 1.0) of PV over
  the last ``window_days`` days (the output on the clear days), scaled by the change in pvlib's clear-sky
  energy from those days to the target day (the season moves the sun between them);
* **clear-sky index** of each recent day ``k_b = PV energy / envelope energy``; the forecast index is
  ``w * k_yesterday + (1 - w) * quantile(k_b)``, ``w`` and the quantile fitted on the history (how much
  yesterday's weather persists; or, in ``slot`` mode, the same blend of the recent days slot by slot);
  within a few hours of the origin it moves towards the index of the last hour (fading with the lead
  time, time constant :attr:`ClearSkyIndexParams.intraday_tau_h`);
* **forecast** ``index x E(slot)``, 0 where the envelope is 0 (night); quantiles from the spread of the
  recent days' indices around their median;
* **settings** are chosen on the history by the MAE of in-sample day-ahead forecasts, recent origins
  weighted more: an origin's weight fades as ``exp(-age / memory)``, and the memory (1.5, 3 or 7 days, or
  none) is itself chosen walk-forward inside the history (at each in-sample origin, the settings the
  earlier origins chose, scored on that origin's day ahead);
* **between refits** (``adapt``) each forecast switches its index quantile and yesterday's weight to the
  pair whose day-ahead forecasts from the last four days' origins (each over by the origin) were best,
  with the same memory: a grey spell that turns sunny is followed within a day, not at the next refit.

Everything a forecast at origin ``o`` reads is ``y[:o]`` (blocks of whole days counted back from the
origin) and pvlib geometry of the target times.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from forecasting.base import FloatArray, IntArray, SeriesSpec, _BaseForecaster, _Context, _make_context
from forecasting.history import CleanSeries, InsufficientHistoryError
from forecasting.weather import weather_columns, weather_index


@dataclass(frozen=True)
class ClearSkyIndexParams:
    """Settings of :class:`ClearSkyIndexForecaster`; each ``None`` is chosen on the history at ``fit``
    (the setting with the least in-sample MAE of day-ahead forecasts from origins every 6 h)."""

    window_days: int | None = None
    """days of history the envelope and the index distribution come from (None: 7, 14 or 21)"""
    envelope_quantile: float | None = None
    """quantile of the recent days at each slot that stands for a clear day (None: 0.8, 0.9 or 1.0)"""
    index_quantile: float | None = None
    """quantile of the recent days' indices forecast for a day (None: 0.4 to 0.7; 0.5 is the median,
    MAE-optimal when the days are alike; the season's trend moves it)"""
    persistence_weight: float | None = None
    """weight of yesterday's index against the recent quantile (None: 0 to 1)"""
    intraday_tau_h: float | None = None
    """the last hour's index fades into the day's forecast index with this time constant (None: 1 to 8 h)"""
    day_mode: Literal["index", "slot"] | None = None
    """the forecast day: ``index`` = an index quantile times the envelope, ``slot`` = the recent days'
    quantile at each slot (None: whichever fits the history better)"""
    memory_days: float | None = None
    """how fast the in-sample judgement of the settings forgets, days (None: chosen walk-forward on the
    history from :data:`MEMORY_GRID_DAYS`; ``inf``: all origins alike)"""
    adapt: bool = True
    """at each origin, switch the index quantile and yesterday's weight to the pair whose forecasts of the
    last days were best (weighted by the memory): the weather's regime between refits"""
    max_window_days: int = 21
    quantile_levels: tuple[float, ...] = (0.1, 0.5, 0.9)

    def __post_init__(self) -> None:
        if self.window_days is not None and not 2 <= self.window_days <= self.max_window_days:
            raise ValueError(f"window_days must lie in 2..{self.max_window_days}")
        if 0.5 not in self.quantile_levels or any(not 0 < q < 1 for q in self.quantile_levels):
            raise ValueError("quantile_levels must lie in (0, 1) and contain 0.5")
        for name in ("envelope_quantile", "index_quantile", "persistence_weight"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
        if self.memory_days is not None and not self.memory_days > 0:
            raise ValueError("memory_days must be positive")
        if self.intraday_tau_h is not None and self.intraday_tau_h <= 0:
            raise ValueError("intraday_tau_h must be positive")


WINDOW_GRID = (7, 14, 21)
ENVELOPE_GRID = (0.9, 1.0)
INDEX_GRID = (0.5, 0.6, 0.7)
WEIGHT_GRID = (0.0, 0.2, 0.4, 0.7)
TAU_GRID = (1.0, 3.0, 8.0)
MODE_GRID: tuple[Literal["index", "slot"], ...] = ("index", "slot")
DEFAULTS = {
    "window_days": 14,
    "envelope_quantile": 0.9,
    "index_quantile": 0.5,
    "persistence_weight": 0.3,
    "intraday_tau_h": 2.0,
}


ADAPT_GRID = tuple((q, w) for q in (0.5, 0.6, 0.7) for w in (0.0, 0.2, 0.4, 0.7, 1.0))
"""(index quantile, weight of yesterday) pairs a forecast may switch to at its origin
(:attr:`ClearSkyIndexParams.adapt`)"""
ADAPT_DAYS = 4
"""days of past day-ahead forecasts that judge the switch"""
NO_WEATHER = (1.0, 0.0, 0.0)
"""the weather blend that ignores the weather"""
MEMORY_GRID_DAYS = (1.5, 3.0, 7.0, np.inf)
"""how far back the settings are judged: the weight of an in-sample origin fades as exp(-age / memory)"""


def recency_weights(origins: IntArray, end: IntArray, now: int, d: int, memory_days: float) -> FloatArray:
    """(m,) weights of in-sample origins for a choice made at step ``now``: 0 where the origin's day
    ahead is not over by ``now``, else ``exp(-(now - end) / memory)``, summing to 1 (0 where none)."""
    known = end <= now
    age_days = np.maximum(now - end, 0) / d
    w = np.where(known, np.exp(-age_days / memory_days) if np.isfinite(memory_days) else 1.0, 0.0)
    total = w.sum()
    return np.asarray(w / total if total > 0 else w, dtype=float)


def choose_memory(
    err: FloatArray, origins: IntArray, end: IntArray, now: int, d: int, fixed: float | None
) -> float:
    """The memory (days) whose choices of settings, made walk-forward inside the history (at each
    in-sample origin, from the origins whose day ahead was over by then), forecast the later origins best:
    how fast the weather's regime changes at this site, judged on the history alone."""
    if fixed is not None:
        return fixed
    best, best_err = float(np.inf), np.inf
    judged = origins >= origins[0] + 3 * d  # at least three days of earlier forecasts to choose from
    if not judged.any():
        return best
    for memory in MEMORY_GRID_DAYS:
        total = 0.0
        for j in np.flatnonzero(judged):
            w = recency_weights(origins, end, int(origins[j]), d, memory)
            if w.sum() <= 0:
                continue
            total += float(err[int(np.argmin(err @ w)), j])
        if total < best_err - 1e-12:
            best, best_err = float(memory), total
    return best


@dataclass(frozen=True, eq=False)
class _Parts:
    """What a forecast from each of ``m`` origins is made of (one window and envelope quantile)."""

    envelope: FloatArray
    """(m, d) clear-day output at each slot of the day, counted from the origin"""
    indices: FloatArray
    """(m, K) clear-sky index of each of the K days before the origin (NaN: not in the history)"""
    season: FloatArray
    """(m, H) pvlib clear-sky energy of the target's day over that of the window's days"""
    index_now: FloatArray
    """(m,) clear-sky index of the last hour (NaN where the envelope has no sun in it)"""
    blocks: FloatArray
    """(m, K, d) the K days before the origin (NaN before the history)"""
    yesterday: FloatArray
    """(m, d) the day before the origin (the envelope where unknown)"""


def _quiet_nanquantile(x: FloatArray, q: float | FloatArray, axis: int) -> FloatArray:
    """``np.nanquantile`` (linear interpolation) along ``axis``, vectorised (numpy's loops over every
    other index in Python); NaN where a slice has no finite value. A sequence ``q`` adds a first axis."""
    moved = np.sort(np.moveaxis(np.asarray(x, dtype=float), axis, -1), axis=-1)  # NaN sort last
    count = np.isfinite(moved).sum(axis=-1)
    qs = np.atleast_1d(np.asarray(q, dtype=float))
    out = np.empty((len(qs), *moved.shape[:-1]))
    last = np.maximum(count - 1, 0)
    for j, level in enumerate(qs):
        pos = level * last
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, last)
        frac = pos - lo
        v_lo = np.take_along_axis(moved, lo[..., None], axis=-1)[..., 0]
        v_hi = np.take_along_axis(moved, hi[..., None], axis=-1)[..., 0]
        out[j] = np.where(count > 0, v_lo + frac * (v_hi - v_lo), np.nan)
    return out[0] if np.ndim(q) == 0 else out


class ClearSkyIndexForecaster(_BaseForecaster):
    """PV = forecast clear-sky index x the site's clear-sky envelope (see the module docstring)."""

    name = "clear_sky_index"
    clear_sky_days_ahead = 1

    def __init__(
        self, spec: SeriesSpec, params: ClearSkyIndexParams | None = None, weather: pd.DataFrame | None = None
    ) -> None:
        super().__init__(spec)
        self.params = ClearSkyIndexParams() if params is None else params
        self.weather = weather if weather_columns(weather) else None
        """the site's weather-forecast columns (:mod:`forecasting.weather`) over the times it forecasts"""
        self.weather_coef_: tuple[float, ...] = NO_WEATHER
        """weights of the forecast, the envelope x the weather's index, and its irradiance"""
        self.quantile_levels = self.params.quantile_levels
        self.uses_clear_sky = True
        self.lookback_days = self.params.max_window_days + 1
        self.settings_: dict[str, float] = {}
        self.mode_: Literal["index", "slot"] = "index"
        self.memory_days_: float = float(np.inf)
        self._reset()

    def with_weather(self, weather: pd.DataFrame | None) -> ClearSkyIndexForecaster:
        """A copy (fitted state kept) that reads ``weather`` (the weather-forecast columns over the times it
        will forecast) in place of its own."""
        out = copy.copy(self)
        out.weather = weather if weather_columns(weather) else None
        return out

    def _weather_k(self, ctx: _Context) -> FloatArray | None:
        """(n_total,) the weather forecast's clear-sky index over ``ctx`` (None without weather)."""
        if self.weather is None:
            return None
        times = pd.date_range(ctx.start, periods=len(ctx.clear_sky), freq=ctx.step)
        return weather_index(self.weather, times, ctx.clear_sky)

    def _weather_terms(
        self, ctx: _Context, origins: IntArray, parts: _Parts, point: FloatArray
    ) -> FloatArray | None:
        """``(3, m, H)`` the blend's regressors: the forecast itself, envelope x season x the weather's
        index (the site's own clear-day shape) and the weather's irradiance (index x clear sky, kW/m²);
        NaN where the weather has no index. None without weather."""
        k_all = self._weather_k(ctx)
        if k_all is None:
            return None
        horizon = point.shape[1]
        d = ctx.steps_per_day
        at = np.minimum(origins[:, None] + np.arange(horizon)[None, :], len(k_all) - 1)
        k = k_all[at]
        shape = parts.envelope[:, np.arange(horizon) % d] * parts.season
        return np.stack([np.where(np.isfinite(k), point, np.nan), shape * k, ctx.clear_sky[at] * k])

    def _weather_blend(
        self, ctx: _Context, origins: IntArray, parts: _Parts, point: FloatArray, coef: tuple[float, ...]
    ) -> FloatArray:
        """``coef . regressors`` (:meth:`_weather_terms`) where the weather has an index, ``point``
        elsewhere."""
        if coef == NO_WEATHER:
            return point
        terms = self._weather_terms(ctx, origins, parts, point)
        if terms is None:
            return point
        blended = np.tensordot(np.asarray(coef), terms, axes=1)
        return np.asarray(np.where(np.isfinite(blended), np.maximum(blended, 0.0), point))

    def _fit_weather(self, ctx: _Context, origins: IntArray, truth: FloatArray) -> None:
        """Non-negative least squares of the truth on :meth:`_weather_terms` over the in-sample day-ahead
        forecasts: how much the weather columns add at this site (nothing: ``(1, 0, 0)``)."""
        from scipy.optimize import nnls

        self.weather_coef_ = NO_WEATHER
        if self.weather is None or len(origins) == 0:
            return
        d = ctx.steps_per_day
        point, parts = self._point_parts(ctx, origins, d)
        terms = self._weather_terms(ctx, origins, parts, point)
        if terms is None:
            return
        ok = np.all(np.isfinite(terms), axis=0) & np.isfinite(truth)
        if ok.sum() < d:
            return
        coef, _ = nnls(terms[:, ok].T, truth[ok])
        fitted = float(np.abs(coef @ terms[:, ok] - truth[ok]).mean())
        if fitted < float(np.abs(point[ok] - truth[ok]).mean()):
            self.weather_coef_ = (float(coef[0]), float(coef[1]), float(coef[2]))

    def _reset(self) -> None:
        self.weather_coef_ = NO_WEATHER
        self.settings_ = {
            name: float(default if getattr(self.params, name) is None else getattr(self.params, name))
            for name, default in DEFAULTS.items()
        }
        self.mode_ = "index" if self.params.day_mode is None else self.params.day_mode

    # -- the pieces, for many origins at once

    def _parts(self, ctx: _Context, origins: IntArray, horizon: int, window: int, level: float) -> _Parts:
        d = ctx.steps_per_day
        # the K whole days before each origin: block b = y[o-(b+1)d : o-bd], NaN before the history
        idx = (
            origins[:, None, None] - (np.arange(window)[None, :, None] + 1) * d + np.arange(d)[None, None, :]
        )
        ok = (idx >= 0) & (idx < origins[:, None, None])
        ypad = np.concatenate([ctx.y, [np.nan]])
        blocks = np.where(ok, ypad[np.where(ok, idx, len(ctx.y))], np.nan)
        env = _quiet_nanquantile(blocks, level, axis=1)
        env = np.where(np.isfinite(env), np.maximum(env, 0.0), 0.0)
        total = env.sum(axis=1, keepdims=True)
        known = np.isfinite(blocks).all(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            indices = np.where(known & (total > 0), np.nansum(blocks, axis=2) / total, np.nan)
        # season: pvlib clear-sky energy of the target's day-block over the mean of the window's blocks
        cs = np.concatenate([[0.0], np.cumsum(ctx.clear_sky)])
        n = len(ctx.clear_sky)

        def day_energy(start: IntArray) -> FloatArray:
            return np.asarray(cs[np.clip(start + d, 0, n)] - cs[np.clip(start, 0, n)], dtype=float)

        target = day_energy(origins[:, None] + (np.arange(horizon) // d)[None, :] * d)
        starts = origins[:, None] - (np.arange(window)[None, :] + 1) * d
        past = np.where(starts >= 0, day_energy(starts), np.nan)
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_past = np.nanmean(past, axis=1)[:, None]
            season = np.where(mean_past > 0, target / mean_past, 1.0)
        season = np.where(np.isfinite(season), np.clip(season, 0.5, 2.0), 1.0)
        # the last hour's index, where the envelope has sun in it
        hour = max(round(d / 24), 1)
        last = ctx.y[np.clip(origins[:, None] - hour + np.arange(hour)[None, :], 0, max(len(ctx.y) - 1, 0))]
        env_last = env[:, (d - hour + np.arange(hour)) % d].sum(axis=1)
        sunny = (env_last >= 0.05 * hour * env.max(axis=1)) & (env_last > 0) & (origins >= hour)
        with np.errstate(invalid="ignore", divide="ignore"):
            index_now = np.where(sunny, last.sum(axis=1) / env_last, np.nan)
        yesterday = np.where(np.isfinite(blocks[:, 0, :]), blocks[:, 0, :], env)
        return _Parts(env, np.asarray(indices, dtype=float), season, index_now, blocks, yesterday)

    def _day(self, parts: _Parts, blocks_q: FloatArray | None, index_q: float, weight: float) -> FloatArray:
        """``(m, d)`` the forecast day (kW per slot, before the season factor): the recent days' index
        quantile times the envelope, or (``blocks_q`` given) the recent days' quantile at each slot; each
        blended with yesterday by ``weight``."""
        if blocks_q is not None:
            return np.asarray(weight * parts.yesterday + (1.0 - weight) * blocks_q)
        k = parts.indices
        centre = _quiet_nanquantile(k, index_q, axis=1)
        centre = np.where(np.isfinite(centre), centre, 1.0)
        yesterday = np.where(np.isfinite(k[:, 0]), k[:, 0], centre)
        return np.asarray((weight * yesterday + (1.0 - weight) * centre)[:, None] * parts.envelope)

    @staticmethod
    def _lead(parts: _Parts, day: FloatArray, horizon: int, tau_h: float) -> FloatArray:
        """``(m, H)`` point forecasts: the last hour's index times the envelope fading into ``day``."""
        d = day.shape[1]
        slot = np.arange(horizon) % d
        fade = np.exp(-(np.arange(horizon) * 24.0 / d) / tau_h)[None, :]
        now = np.where(np.isfinite(parts.index_now)[:, None], parts.index_now[:, None] * parts.envelope, day)
        return np.asarray(np.maximum(fade * now[:, slot] + (1.0 - fade) * day[:, slot], 0.0) * parts.season)

    def _candidate_days(self, ctx: _Context, origins: IntArray, parts: _Parts) -> FloatArray:
        """``(C, m, d)`` the forecast day of every :data:`ADAPT_GRID` candidate (index quantile, weight of
        yesterday) with the fitted window, envelope, mode."""
        out = []
        for index_q, weight in ADAPT_GRID:
            bq = None
            if self.mode_ == "slot":
                bq = _quiet_nanquantile(parts.blocks, index_q, axis=1)
                bq = np.where(np.isfinite(bq), bq, parts.envelope)
            out.append(self._day(parts, bq, index_q, weight))
        return np.stack(out)

    def _adapted_day(self, ctx: _Context, origins: IntArray, parts: _Parts, fitted: FloatArray) -> FloatArray:
        """``(m, d)`` per origin, the forecast day of the :data:`ADAPT_GRID` candidate whose day-ahead
        forecasts from the origins of the last :data:`ADAPT_DAYS` days (every 6 h, each over by the origin)
        were best, weighted by the fitted memory; the fitted day where there are none."""
        s = self.settings_
        d = ctx.steps_per_day
        every = max(d // 4, 1)
        lags = d + every * np.arange(ADAPT_DAYS * 4)  # a past origin's day ahead is over by the origin
        past = (origins[:, None] - lags[None, :]).ravel()
        ok = past >= 3 * d
        if not ok.any():
            return fitted
        safe = np.where(ok, past, 3 * d)
        pparts = self._parts(ctx, safe, d, int(s["window_days"]), s["envelope_quantile"])
        truth = ctx.y[np.minimum(safe[:, None] + np.arange(d)[None, :], len(ctx.y) - 1)]
        errs = []
        for day in self._candidate_days(ctx, safe, pparts):
            errs.append(np.abs(self._lead(pparts, day, d, s["intraday_tau_h"]) - truth).mean(axis=1))
        err = np.stack(errs).reshape(len(ADAPT_GRID), len(origins), len(lags))  # (C, m, L)
        age_days = (lags - d) / d
        w = np.where(ok.reshape(len(origins), len(lags)), np.exp(-age_days / self.memory_days_)[None, :], 0.0)
        score = (err * w[None]).sum(axis=2)  # (C, m)
        best = np.argmin(score, axis=0)
        days = self._candidate_days(ctx, origins, parts)
        chosen = days[best, np.arange(len(origins))]
        return np.asarray(np.where((w.sum(axis=1) > 0)[:, None], chosen, fitted))

    # -- fit / predict

    def _fit_clean(self, clean: CleanSeries) -> None:
        ctx = _make_context(self.spec, clean, 0, True)
        d = ctx.steps_per_day
        n = len(ctx.y)
        if n < d:
            raise InsufficientHistoryError(
                f"{self.spec.name}: the clear-sky-index model needs a day of history"
            )
        p = self.params
        self._reset()
        free = [name for name in DEFAULTS if getattr(p, name) is None]
        # in-sample day-ahead forecasts from origins every 6 h (counted back from the end of the history)
        # with at least 3 days behind them and a day ahead of them
        origins = np.arange(n - d, 3 * d - 1, -max(d // 4, 1), dtype=np.int64)[::-1]
        if len(origins) < 4:
            return
        truth = ctx.y[origins[:, None] + np.arange(d)[None, :]]
        if not free:
            self._fit_weather(ctx, origins, truth)
            return

        def grid(name: str, values: tuple[float, ...]) -> tuple[float, ...]:
            v = getattr(p, name)
            return values if v is None else (float(v),)

        windows = tuple(w for w in grid("window_days", WINDOW_GRID) if w <= p.max_window_days)
        modes = MODE_GRID if p.day_mode is None else (p.day_mode,)
        combos: list[tuple[Literal["index", "slot"], dict[str, float]]] = []
        errors: list[FloatArray] = []  # per combination: the MAE of each origin's day-ahead forecast
        for window in windows:
            for level in grid("envelope_quantile", ENVELOPE_GRID):
                parts = self._parts(ctx, origins, d, int(window), level)
                for mode in modes:
                    for index_q in grid("index_quantile", INDEX_GRID):
                        bq = None if mode == "index" else _quiet_nanquantile(parts.blocks, index_q, axis=1)
                        bq = None if bq is None else np.where(np.isfinite(bq), bq, parts.envelope)
                        for weight in grid("persistence_weight", WEIGHT_GRID):
                            day = self._day(parts, bq, index_q, weight)
                            for tau in grid("intraday_tau_h", TAU_GRID):
                                errors.append(np.abs(self._lead(parts, day, d, tau) - truth).mean(axis=1))
                                combos.append(
                                    (
                                        mode,
                                        {
                                            "window_days": float(window),
                                            "envelope_quantile": level,
                                            "index_quantile": index_q,
                                            "persistence_weight": weight,
                                            "intraday_tau_h": tau,
                                        },
                                    )
                                )
        err = np.stack(errors)  # (combinations, origins)
        end = origins + d  # the day-ahead forecast of an origin is known from here on
        memory = choose_memory(err, origins, end, n, d, p.memory_days)
        self.memory_days_ = memory
        mode, settings = combos[int(np.argmin(err @ recency_weights(origins, end, n, d, memory)))]
        self.mode_, self.settings_ = mode, settings
        self._fit_weather(ctx, origins, truth)

    def _point_parts(self, ctx: _Context, origins: IntArray, horizon: int) -> tuple[FloatArray, _Parts]:
        """``(m, H)`` point forecasts without the weather, and their parts, with the fitted settings."""
        s = self.settings_
        parts = self._parts(ctx, origins, horizon, int(s["window_days"]), s["envelope_quantile"])
        bq = None
        if self.mode_ == "slot":
            bq = _quiet_nanquantile(parts.blocks, s["index_quantile"], axis=1)
            bq = np.where(np.isfinite(bq), bq, parts.envelope)
        day = self._day(parts, bq, s["index_quantile"], s["persistence_weight"])
        if self.params.adapt and np.isfinite(self.memory_days_):
            day = self._adapted_day(ctx, origins, parts, day)
        return self._lead(parts, day, horizon, s["intraday_tau_h"]), parts

    def _predict_block(self, ctx: _Context, origins: IntArray, horizon: int) -> tuple[FloatArray, FloatArray]:
        point, parts = self._point_parts(ctx, origins, horizon)
        point = self._weather_blend(ctx, origins, parts, point, self.weather_coef_)
        # quantiles: the spread of the recent days' indices around their median, times the envelope
        k = parts.indices
        qs = _quiet_nanquantile(k, np.asarray(self.quantile_levels), axis=1).T  # (m, Q)
        median = _quiet_nanquantile(k, 0.5, axis=1)[:, None]
        spread = np.where(np.isfinite(qs) & np.isfinite(median), qs - median, 0.0)
        d = ctx.steps_per_day
        shape = parts.envelope[:, np.arange(horizon) % d] * parts.season  # (m, H)
        quantiles = np.maximum(point[:, None, :] + spread[:, :, None] * shape[:, None, :], 0.0)
        quantiles[:, self.quantile_levels.index(0.5), :] = point
        return point, np.sort(quantiles, axis=1)
