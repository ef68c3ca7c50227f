"""Rolling-origin backtests with no look-ahead, error metrics and skill against seasonal naive.

At each origin ``t`` (every ``origin_every_steps``) the model is (re)fitted every ``refit_every_days`` on
the data strictly before ``t`` and forecasts ``horizon_steps`` from ``t`` given the history strictly
before ``t``: the backtest slices by position, and every forecaster slices again by time. The claim is
checked, not assumed: :func:`check_no_lookahead` corrupts everything from ``t`` on and demands an
identical forecast.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from forecasting.models import Forecast, Forecaster, SeasonalNaive

FloatArray = NDArray[np.float64]


class LookAheadError(AssertionError):
    """A forecast changed when data at or after its origin changed."""


@dataclass(frozen=True)
class BacktestConfig:
    """Where the origins are and how often the model is refitted (``None`` = default)."""

    horizon_steps: int | None = None
    """steps forecast from each origin (default: one day)"""
    origin_every_steps: int | None = None
    """steps between origins (default: 6 hours)"""
    initial_train_days: float = 14.0
    """history before the first origin"""
    refit_every_days: float = 7.0
    max_train_days: float | None = 90.0
    """rolling training window (None = all history before the origin)"""


@dataclass(frozen=True)
class Metrics:
    """Errors over all (origin, lead) pairs with a finite truth, in the series' unit."""

    n: int
    mae: float
    rmse: float
    bias: float
    """mean of forecast - truth"""
    pinball: tuple[tuple[float, float], ...]
    """(quantile level, mean pinball loss) per quantile; empty for point models"""
    coverage: float | None
    """share of truths inside the outermost quantile band (e.g. P10-P90), None without quantiles"""

    @property
    def mean_pinball(self) -> float | None:
        return float(np.mean([v for _, v in self.pinball])) if self.pinball else None


def pinball_loss(truth: FloatArray, forecast: FloatArray, level: float) -> float:
    """Mean pinball (quantile) loss of ``forecast`` as the ``level`` quantile (NaN truths skipped)."""
    diff = truth - forecast
    ok = np.isfinite(diff)
    loss = np.maximum(level * diff[ok], (level - 1.0) * diff[ok])
    return float(loss.mean()) if ok.any() else float("nan")


def compute_metrics(
    truth: FloatArray, point: FloatArray, levels: tuple[float, ...] = (), quantiles: FloatArray | None = None
) -> Metrics:
    """Metrics of point forecasts ``point`` (any shape) and quantiles ``(..., Q, H)`` against ``truth``."""
    err = point - truth
    ok = np.isfinite(err)
    n = int(ok.sum())
    if n == 0:
        raise ValueError("no finite truth to score against")
    e = err[ok]
    pin: list[tuple[float, float]] = []
    coverage = None
    if levels and quantiles is not None:
        for q, lv in enumerate(levels):
            pin.append((lv, pinball_loss(truth, quantiles[..., q, :], lv)))
        lo = quantiles[..., 0, :]
        hi = quantiles[..., -1, :]
        inside = (truth >= lo) & (truth <= hi)
        coverage = float(inside[np.isfinite(truth)].mean())
    return Metrics(
        n=n,
        mae=float(np.abs(e).mean()),
        rmse=float(np.sqrt((e**2).mean())),
        bias=float(e.mean()),
        pinball=tuple(pin),
        coverage=coverage,
    )


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """Forecasts of one model on one series at every origin: arrays ``(origins, H)``."""

    series: str
    model: str
    origins: pd.DatetimeIndex
    step: pd.Timedelta
    truth: FloatArray
    point: FloatArray
    quantile_levels: tuple[float, ...]
    quantiles: FloatArray
    """(origins, Q, H)"""
    n_imputed_origins: int
    """origins whose history had imputed or dropped values"""
    fit_seconds: tuple[float, ...]
    predict_seconds: tuple[float, ...]

    def metrics(self) -> Metrics:
        return compute_metrics(self.truth, self.point, self.quantile_levels, self.quantiles)


def _default_steps(step: pd.Timedelta, config: BacktestConfig) -> tuple[int, int]:
    day = int(pd.Timedelta("1D") // step)
    horizon = config.horizon_steps or day
    every = config.origin_every_steps or max(int(pd.Timedelta("6h") // step), 1)
    return horizon, every


def backtest(
    forecaster: Forecaster, series: pd.Series, config: BacktestConfig | None = None
) -> BacktestResult:
    """Rolling-origin backtest of ``forecaster`` (fitted copies are made; the argument is not changed)."""
    config = BacktestConfig() if config is None else config
    index = pd.DatetimeIndex(series.index)
    if len(index) < 2:
        raise ValueError("series too short to backtest")
    step = pd.Timedelta(index[1] - index[0])
    day = int(pd.Timedelta("1D") // step)
    horizon, every = _default_steps(step, config)
    first = round(config.initial_train_days * day)
    last = len(series) - horizon
    if first > last:
        raise ValueError(
            f"{series.name}: {len(series)} steps are too few for {config.initial_train_days} days of "
            f"training and a {horizon}-step horizon"
        )
    refit_every = max(round(config.refit_every_days * day), 1)
    max_train = None if config.max_train_days is None else round(config.max_train_days * day)
    values = series.to_numpy(dtype=float)
    origins: list[pd.Timestamp] = []
    truths, points, quants = [], [], []
    fit_s: list[float] = []
    pred_s: list[float] = []
    n_imputed = 0
    model: Forecaster | None = None
    fitted_at = -(10**12)
    for i in range(first, last + 1, every):
        if model is None or i - fitted_at >= refit_every:
            lo = 0 if max_train is None else max(0, i - max_train)
            t0 = time.perf_counter()
            model = forecaster.unfitted().fit(series.iloc[lo:i])
            fit_s.append(time.perf_counter() - t0)
            fitted_at = i
        now = pd.Timestamp(index[i])
        t0 = time.perf_counter()
        fc: Forecast = model.predict(now, horizon, history=series.iloc[max(0, i - 30 * day) : i])
        pred_s.append(time.perf_counter() - t0)
        if not fc.quality.clean:
            n_imputed += 1
        origins.append(now)
        truths.append(values[i : i + horizon])
        points.append(fc.point)
        quants.append(fc.quantiles)
    levels = tuple(getattr(model, "quantile_levels", ()))
    return BacktestResult(
        series=str(series.name),
        model=forecaster.name,
        origins=pd.DatetimeIndex(origins),
        step=step,
        truth=np.stack(truths),
        point=np.stack(points),
        quantile_levels=levels,
        quantiles=np.stack(quants),
        n_imputed_origins=n_imputed,
        fit_seconds=tuple(fit_s),
        predict_seconds=tuple(pred_s),
    )


@dataclass(frozen=True, eq=False)
class BacktestReport:
    """A model's backtest and the seasonal-naive references on the same origins."""

    result: BacktestResult
    metrics: Metrics
    references: tuple[tuple[str, Metrics], ...]

    def skill(self, reference: str = "seasonal_naive_day") -> float:
        """``1 - MAE / MAE_reference`` (positive = better than the reference)."""
        for name, m in self.references:
            if name == reference:
                return 1.0 - self.metrics.mae / m.mae if m.mae > 0 else float("nan")
        raise KeyError(f"no reference {reference!r}")


def backtest_with_skill(
    forecaster: Forecaster, series: pd.Series, config: BacktestConfig | None = None
) -> BacktestReport:
    """Backtest ``forecaster`` and the daily and weekly seasonal naive forecasts on the same origins."""
    result = backtest(forecaster, series, config)
    refs = []
    for period in ("day", "week"):
        ref = SeasonalNaive(forecaster.spec, period)
        r = result if forecaster.name == ref.name else backtest(ref, series, config)
        refs.append((ref.name, r.metrics()))
    return BacktestReport(result, result.metrics(), tuple(refs))


def check_no_lookahead(
    forecaster: Forecaster,
    series: pd.Series,
    now: pd.Timestamp,
    horizon: int,
    rng: np.random.Generator,
) -> Forecast:
    """Forecast at ``now`` twice, from ``series`` and from a copy corrupted at and after ``now`` (random
    values, NaN, a shifted level); raise :class:`LookAheadError` unless the two forecasts are identical.
    ``forecaster`` must be fitted on data before ``now``."""
    corrupted = series.copy()
    late = corrupted.index >= now
    k = int(late.sum())
    noise = rng.normal(0.0, 1.0 + float(np.nanstd(series.to_numpy(dtype=float))), k) * 10.0
    corrupted[late] = np.where(rng.random(k) < 0.2, np.nan, noise + 1e3)
    a = forecaster.predict(now, horizon, history=series)
    b = forecaster.predict(now, horizon, history=corrupted)
    if not (np.array_equal(a.point, b.point) and np.array_equal(a.quantiles, b.quantiles)):
        raise LookAheadError(
            f"{forecaster.name}: the forecast at {now} changed when the data from {now} on changed"
        )
    return a


def plot_backtest(result: BacktestResult, path: str | Path, max_days: float = 14.0) -> Path:
    """PNG of forecasts against truth: non-overlapping forecasts (origins one horizon apart) chained over
    the last ``max_days``, with the outer quantile band when the model has quantiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    horizon = result.point.shape[1]
    spacing = (result.origins[1] - result.origins[0]) if len(result.origins) > 1 else result.step * horizon
    stride = max(int((result.step * horizon) // spacing), 1)
    n_keep = max(int(pd.Timedelta(days=max_days) // (result.step * horizon)), 1)
    pick = np.arange(0, len(result.origins), stride)[-n_keep:]
    times = np.concatenate(
        [pd.date_range(result.origins[j], periods=horizon, freq=result.step).to_numpy() for j in pick]
    )
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.plot(times, result.truth[pick].reshape(-1), color="black", lw=1.0, label="truth")
    ax.plot(times, result.point[pick].reshape(-1), color="tab:blue", lw=1.0, label=f"{result.model} point")
    if result.quantile_levels:
        lo = result.quantiles[pick, 0, :].reshape(-1)
        hi = result.quantiles[pick, -1, :].reshape(-1)
        band = f"P{round(result.quantile_levels[0] * 100)}-P{round(result.quantile_levels[-1] * 100)}"
        ax.fill_between(times, lo, hi, color="tab:blue", alpha=0.2, label=band)
    for j in pick:
        ax.axvline(result.origins[j].to_numpy(), color="grey", lw=0.5, alpha=0.5)
    ax.set_title(f"{result.series}: {result.model}, {horizon}-step forecasts from each origin (grey)")
    ax.set_ylabel(result.series)
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
