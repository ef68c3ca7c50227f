"""Pluggable forecast providers for the environment, MPC and the live service.

A provider is bound to a scenario's time series and then gives, at step ``t``, a
:class:`~envs.core.ForecastWindow` for steps ``t .. t+H-1``. ``PerfectForecast`` reads the truth,
``NoisyForecast`` adds configurable multiplicative error that grows with lead time; the fitted models of
:mod:`forecasting` implement the same protocol and see only data before ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from envs.core import FloatArray, ForecastWindow

COLUMNS = ("base_load_kw", "pv_kw", "import_price_per_kwh", "export_price_per_kwh")


class BoundForecast(Protocol):
    """A provider bound to one time series."""

    def window(self, t: int, horizon: int, rng: np.random.Generator | None = None) -> ForecastWindow:
        """Forecast for steps ``t .. t+horizon-1`` made at the start of step ``t``."""
        ...


class ForecastProvider(Protocol):
    """Something that can be bound to a scenario's time series (validated frame, regular index)."""

    @property
    def name(self) -> str: ...

    def bind(self, timeseries: pd.DataFrame) -> BoundForecast: ...


def _padded_window(values: FloatArray, t: int, horizon: int) -> FloatArray:
    """``values[t:t+horizon]`` along the last axis, padded past the end with the last value."""
    n = values.shape[-1]
    idx = np.minimum(np.arange(t, t + horizon), n - 1)
    return values[..., idx]


@dataclass(frozen=True)
class _BoundTruth:
    data: FloatArray  # (4, T)
    error: float
    error_growth_per_step: float

    def window(self, t: int, horizon: int, rng: np.random.Generator | None = None) -> ForecastWindow:
        w = _padded_window(self.data, t, horizon).copy()
        if self.error > 0:
            if rng is None:
                raise ValueError("a noisy forecast needs an rng")
            lead = np.arange(horizon)
            sigma = self.error * (1.0 + self.error_growth_per_step * lead)
            sigma[0] = 0.0  # the current step is measured, not forecast
            w[:2] *= np.maximum(1.0 + rng.standard_normal((2, horizon)) * sigma, 0.0)
        return ForecastWindow(w[0], w[1], w[2], w[3])


@dataclass(frozen=True)
class PerfectForecast:
    """The truth: what an online policy can at best know."""

    name: str = "perfect"

    def bind(self, timeseries: pd.DataFrame) -> BoundForecast:
        return _BoundTruth(timeseries[list(COLUMNS)].to_numpy(dtype=float).T.copy(), 0.0, 0.0)


@dataclass(frozen=True)
class NoisyForecast:
    """Truth with multiplicative Gaussian error on base load and PV (prices are known day-ahead).

    ``error`` is the relative standard deviation one step ahead; it grows by ``error_growth_per_step``
    (relative) per step of lead time.
    """

    error: float = 0.1
    error_growth_per_step: float = 0.01
    name: str = "noisy"

    def bind(self, timeseries: pd.DataFrame) -> BoundForecast:
        return _BoundTruth(
            timeseries[list(COLUMNS)].to_numpy(dtype=float).T.copy(), self.error, self.error_growth_per_step
        )
