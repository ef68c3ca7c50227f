"""The gradient boosting forecaster: scikit-learn ``HistGradientBoostingRegressor`` with ``loss="quantile"``
(P10/P50/P90 by default), a *direct multi-horizon* design (see :mod:`forecasting.base` for the interface and
the history rules every forecaster follows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from forecasting.base import (
    CLEAR_SKY_MIN_KW_PER_M2,
    FloatArray,
    IntArray,
    NotFittedError,
    SeriesSpec,
    _BaseForecaster,
    _Context,
    _make_context,
)
from forecasting.history import CleanSeries, InsufficientHistoryError

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingRegressor


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
