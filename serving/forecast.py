"""Forecast window and tariff prices of the live snapshot: a fitted forecaster fed by the site meter.

:class:`LiveForecast` gives the control loop, every cycle and cheaply, the
:class:`~envs.core.ForecastWindow` of its :class:`~envs.core.Snapshot` and the prices now:

* **history**: each cycle the measured base load (site import + PV - measured chargers - the site
  battery's measured power, where one is driven over Modbus) and PV (from the site meter, where it
  reports PV) go into a :class:`MeterHistory` of per-step means on the forecaster's grid (``step``,
  aligned to UTC midnight);
* **forecast**: every ``refresh_every_s`` the service takes a copy of the history on the event loop and
  runs :meth:`LiveForecast.compute` (the fitted model's ``predict(origin, horizon)``) on a worker thread,
  then installs the result; the origin is the start of the current step, so the model reads complete
  steps only. With too little history (fewer than ``min_history_steps`` measured steps, or what the model
  itself refuses with :class:`~forecasting.history.InsufficientHistoryError`), a model error, or no model,
  the window is a persistence of the current measurement, and the reason is counted;
* **window**: each cycle reads the cached forecast shifted to now, on the control loop's grid (one value
  per ``control_interval_s``, which is the snapshot's ``dt_h``): element 0 is the measurement now,
  element ``k`` the forecast of the step that contains ``now + k * control_interval_s`` (past the
  forecast's end, its last value);
* **prices**: :class:`PriceSeries` from a CSV and/or a daily time-of-use table in local time, else the
  configured flat prices, for now and every element of the window.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from envs.config import ConfigError
from envs.core import FloatArray, ForecastWindow
from forecasting.history import InsufficientHistoryError
from serving.config import MAX_WINDOW_STEPS, ForecastConfig, PricesConfig, ServingConfig, window_steps

if TYPE_CHECKING:
    from forecasting.provider import SiteForecaster

LOG = logging.getLogger("evdlm.serving")

IntArray = NDArray[np.int64]
SERIES = ("base_load_kw", "pv_kw")
"""the series the live window forecasts (EV demand is known from the running sessions)"""

_OFFSET = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")


# --------------------------------------------------------------------------- prices


@dataclass(frozen=True, eq=False)
class PriceSeries:
    """Import and export prices by time, per kWh: a CSV series where it covers, else a daily
    time-of-use table (local time), else flat prices. Vectorised over times (UTC nanoseconds)."""

    flat_import_per_kwh: float
    flat_export_per_kwh: float
    csv_start_ns: IntArray
    """(m,) start of each CSV row, UTC ns (strictly increasing); empty without a CSV"""
    csv_end_ns: int
    """the CSV covers ``[csv_start_ns[0], csv_end_ns)`` (its last row lasts as long as the one before)"""
    csv_import_per_kwh: FloatArray
    csv_export_per_kwh: FloatArray
    tou_start_min: IntArray
    """(k,) local minute of day each time-of-use period starts, increasing; empty without a table"""
    tou_import_per_kwh: FloatArray
    tou_export_per_kwh: FloatArray
    timezone: str = "UTC"

    @classmethod
    def flat(cls, import_per_kwh: float, export_per_kwh: float) -> PriceSeries:
        empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
        return cls(import_per_kwh, export_per_kwh, empty_i, 0, empty_f, empty_f, empty_i, empty_f, empty_f)

    @property
    def has_csv(self) -> bool:
        return len(self.csv_start_ns) > 0

    @property
    def has_time_of_use(self) -> bool:
        return len(self.tou_start_min) > 0

    def at_ns(self, times_ns: IntArray) -> tuple[FloatArray, FloatArray]:
        """(import, export) price per kWh at each time (UTC ns), shape of ``times_ns``."""
        t = np.asarray(times_ns, dtype=np.int64)
        imp = np.full(t.shape, self.flat_import_per_kwh)
        exp = np.full(t.shape, self.flat_export_per_kwh)
        if self.has_time_of_use:
            local = pd.DatetimeIndex(t.ravel(), tz=UTC).tz_convert(self.timezone)
            minute = np.asarray(local.hour * 60 + local.minute, dtype=np.int64).reshape(t.shape)
            # before the first period of the day, the last one (from the evening before) still runs
            j = np.searchsorted(self.tou_start_min, minute, side="right") - 1
            j = np.where(j < 0, len(self.tou_start_min) - 1, j)
            imp, exp = self.tou_import_per_kwh[j], self.tou_export_per_kwh[j]
        if self.has_csv:
            inside = (t >= self.csv_start_ns[0]) & (t < self.csv_end_ns)
            j = np.clip(
                np.searchsorted(self.csv_start_ns, t, side="right") - 1, 0, len(self.csv_start_ns) - 1
            )
            imp = np.where(inside, self.csv_import_per_kwh[j], imp)
            exp = np.where(inside, self.csv_export_per_kwh[j], exp)
        return np.asarray(imp, dtype=float), np.asarray(exp, dtype=float)

    def at(self, when: datetime) -> tuple[float, float]:
        """(import, export) price per kWh at ``when`` (timezone-aware)."""
        imp, exp = self.at_ns(np.array([_ns(when)], dtype=np.int64))
        return float(imp[0]), float(exp[0])


def read_price_csv(path: Path) -> tuple[IntArray, int, FloatArray, FloatArray]:
    """Row starts (UTC ns), coverage end, import and export prices of a price CSV.

    Raises :class:`ConfigError` naming the file, line and column of the first problem.
    """
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read prices ({err})") from None
    need = ("timestamp", "import_price_per_kwh", "export_price_per_kwh")
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}")
    if len(frame) < 2:
        raise ConfigError(f"{path}: needs at least two rows (each row holds until the next)")
    text = frame["timestamp"].str.strip()
    for i, value in enumerate(text):
        if not _OFFSET.search(value):
            raise ConfigError(f"{path}, line {i + 2}, column timestamp: {value!r} carries no UTC offset")
    times = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    if times.isna().any():
        i = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise ConfigError(f"{path}, line {i + 2}, column timestamp: not a time: {text.iloc[i]!r}")
    ns = pd.DatetimeIndex(times).as_unit("ns").asi8.astype(np.int64)
    if np.any(np.diff(ns) <= 0):
        i = int(np.flatnonzero(np.diff(ns) <= 0)[0]) + 1
        raise ConfigError(f"{path}, line {i + 2}, column timestamp: timestamps must increase strictly")
    prices = []
    for col in need[1:]:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ConfigError(f"{path}, line {i + 2}, column {col}: not a number: {frame[col].iloc[i]!r}")
        prices.append(values)
    end = int(ns[-1] + (ns[-1] - ns[-2]))
    return ns, end, prices[0], prices[1]


def load_prices(
    cfg: PricesConfig | None, site_timezone: str, flat_import_per_kwh: float, flat_export_per_kwh: float
) -> PriceSeries:
    """The price series of a ``prices:`` section (flat prices without one)."""
    flat = PriceSeries.flat(flat_import_per_kwh, flat_export_per_kwh)
    if cfg is None:
        return flat
    csv = read_price_csv(cfg.csv) if cfg.csv is not None else None
    periods = sorted(cfg.time_of_use, key=lambda p: p.minute_of_day)
    return PriceSeries(
        flat_import_per_kwh,
        flat_export_per_kwh,
        csv[0] if csv else flat.csv_start_ns,
        csv[1] if csv else 0,
        csv[2] if csv else flat.csv_import_per_kwh,
        csv[3] if csv else flat.csv_export_per_kwh,
        np.array([p.minute_of_day for p in periods], dtype=np.int64),
        np.array([p.import_price_per_kwh for p in periods], dtype=float),
        np.array([p.export_price_per_kwh for p in periods], dtype=float),
        cfg.timezone or site_timezone,
    )


# --------------------------------------------------------------------------- measured history


class HistoryStep(NamedTuple):
    """One completed step of the measured history: means over the cycles in it, kW."""

    start: datetime
    base_load_kw: float
    pv_kw: float | None
    """None where the site meter reported no PV in this step"""


class MeterHistory:
    """Rolling per-step means of the measured base load and PV, kW, on a grid of ``step`` (UTC-aligned).

    Samples come one per control cycle; a step is complete once a sample of a later step arrived (or, in
    :meth:`frame`, once its end is past). Steps without a sample are simply absent: the forecasting models
    see them as gaps (imputed and flagged, or refused). At most ``max_steps`` completed steps are kept.
    """

    def __init__(self, step: timedelta, max_steps: int) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        self.step = pd.Timedelta(step)
        self.step_ns = int(self.step.value)
        self.max_steps = max_steps
        self.completed_total = 0
        """steps completed since start (grows while the deque is full)"""
        self._steps: deque[tuple[int, float, float]] = deque(maxlen=max_steps)
        """(start ns, base load mean, PV mean or NaN)"""
        self._cur: int | None = None
        self._sum_base = 0.0
        self._n_base = 0
        self._sum_pv = 0.0
        self._n_pv = 0
        self.has_pv = False
        """the site meter reported PV at least once"""

    def __len__(self) -> int:
        """Completed steps held."""
        return len(self._steps)

    def add(self, when: datetime, base_load_kw: float, pv_kw: float | None) -> HistoryStep | None:
        """Record one sample; returns the step it completed, if any. Non-finite values and samples
        older than the current step (a clock stepping back) are ignored."""
        if not math.isfinite(base_load_kw) or (pv_kw is not None and not math.isfinite(pv_kw)):
            return None
        t = _ns(when)
        start = t - t % self.step_ns
        done: HistoryStep | None = None
        if self._cur is not None:
            if start < self._cur:
                return None
            if start > self._cur:
                done = self._close()
        if self._cur is None:
            if self._steps and start <= self._steps[-1][0]:
                return None
            self._cur = start
        self._sum_base += base_load_kw
        self._n_base += 1
        if pv_kw is not None:
            self._sum_pv += pv_kw
            self._n_pv += 1
            self.has_pv = True
        return done

    def _current(self) -> tuple[int, float, float] | None:
        if self._cur is None or self._n_base == 0:
            return None
        pv = self._sum_pv / self._n_pv if self._n_pv else math.nan
        return self._cur, self._sum_base / self._n_base, pv

    def _close(self) -> HistoryStep | None:
        cur = self._current()
        self._cur, self._sum_base, self._n_base, self._sum_pv, self._n_pv = None, 0.0, 0, 0.0, 0
        if cur is None:
            return None
        self._steps.append(cur)
        self.completed_total += 1
        return _step(cur)

    def seed(self, steps: list[HistoryStep]) -> int:
        """Add completed steps from before anything recorded (a restart's persisted history); returns how
        many were taken (off-grid, non-finite, duplicate or too recent ones are skipped)."""
        first = self._steps[0][0] if self._steps else (self._cur if self._cur is not None else None)
        rows: dict[int, tuple[int, float, float]] = {}
        for s in steps:
            t = _ns(s.start)
            if t % self.step_ns or not math.isfinite(s.base_load_kw):
                continue
            if first is not None and t >= first:
                continue
            pv = math.nan if s.pv_kw is None or not math.isfinite(s.pv_kw) else float(s.pv_kw)
            rows[t] = (t, float(s.base_load_kw), pv)
        older = [rows[t] for t in sorted(rows)]
        keep = self.max_steps - len(self._steps)
        older = older[max(len(older) - keep, 0) :]
        self._steps.extendleft(reversed(older))
        self.has_pv = self.has_pv or any(math.isfinite(r[2]) for r in older)
        return len(older)

    def frame(self, before: datetime | pd.Timestamp) -> pd.DataFrame:
        """Completed steps ending at or before ``before``: columns ``base_load_kw`` and ``pv_kw`` (NaN where
        no PV was reported), a UTC index of step starts. A copy: safe to hand to another thread."""
        limit = _ns(before)
        rows = [r for r in self._steps if r[0] + self.step_ns <= limit]
        cur = self._current()
        if cur is not None and cur[0] + self.step_ns <= limit:
            rows.append(cur)
        starts = np.array([r[0] for r in rows], dtype=np.int64)
        index = pd.DatetimeIndex(starts, tz=UTC)
        return pd.DataFrame(
            {
                "base_load_kw": np.array([r[1] for r in rows], dtype=float),
                "pv_kw": np.array([r[2] for r in rows], dtype=float),
            },
            index=index,
        )


def _step(row: tuple[int, float, float]) -> HistoryStep:
    start = pd.Timestamp(row[0], tz=UTC).to_pydatetime()
    return HistoryStep(start, row[1], None if math.isnan(row[2]) else row[2])


def _ns(when: datetime | pd.Timestamp) -> int:
    ts = pd.Timestamp(when)
    if ts.tz is None:
        raise ValueError("times must be timezone-aware")
    return int(ts.as_unit("ns").value)


# --------------------------------------------------------------------------- the live forecast


@dataclass(frozen=True, eq=False)
class ModelRun:
    """A model forecast made from ``origin`` (the start of a step): point forecasts per step, kW."""

    origin: pd.Timestamp
    step: pd.Timedelta
    base_load_kw: FloatArray | None
    """(horizon_steps,); None where this series is not forecast by the model (persistence)"""
    pv_kw: FloatArray | None
    history_steps: int
    """measured steps the model was given"""


class WindowInfo(NamedTuple):
    window: ForecastWindow
    source: str
    """``model`` (the cached model forecast) or ``persistence``"""


class LiveForecast:
    """Forecast window and prices for the live snapshot (see the module docstring).

    Not thread-safe by design: :meth:`observe`, :meth:`window`, :meth:`install` and :meth:`fall_back` run
    on the event loop; only :meth:`compute` runs on a worker thread, on a copy of the history.
    """

    def __init__(
        self,
        cfg: ServingConfig,
        site_timezone: str,
        model: SiteForecaster | None = None,
        model_error: str | None = None,
    ) -> None:
        settings = cfg.planning
        if settings is None:
            raise ValueError("the serving config has neither forecast nor prices")
        self.settings: ForecastConfig = settings
        if model is not None:
            model_step = pd.Timedelta(model.step)
            if settings.step is not None and pd.Timedelta(settings.step) != model_step:
                raise ConfigError(f"forecast.step {settings.step} differs from the model's step {model_step}")
            self.step = model_step
        else:
            self.step = pd.Timedelta(settings.step_or_default)
        self.model = model
        self.model_error = model_error
        """why the configured model is not used (it could not be loaded), else None"""
        self.horizon_steps = settings.horizon_steps
        horizon = (self.step * self.horizon_steps).to_pytimedelta()
        self.window_steps = window_steps(horizon, cfg.control_interval_s)
        if self.window_steps > MAX_WINDOW_STEPS:
            raise ConfigError(
                f"the forecast horizon {horizon} holds {self.window_steps} control intervals (at most "
                f"{MAX_WINDOW_STEPS}): shorten forecast.horizon_steps"
            )
        self.interval_ns = round(cfg.control_interval_s * 1e9)
        self.prices = load_prices(
            cfg.prices, site_timezone, cfg.import_price_per_kwh, cfg.export_price_per_kwh
        )
        self.history = MeterHistory(self.step.to_pytimedelta(), self._history_steps(settings, model))
        self.run: ModelRun | None = None
        self.fallback_reason: str | None = model_error if model_error else (None if model else "no_model")
        """why the window is a persistence now (None while the model forecast is in use)"""
        self._offsets_ns = np.arange(self.window_steps, dtype=np.int64) * self.interval_ns

    def _history_steps(self, settings: ForecastConfig, model: SiteForecaster | None) -> int:
        per_day = int(pd.Timedelta("1D") // self.step)
        days = settings.history_days
        if days is None:
            reach = [1.0]
            if model is not None:
                reach += [float(f.lookback_days) for c, f in model.forecasters.items() if c in SERIES]
            days = max(reach)
        return math.ceil(days * per_day) + 1

    # -- history (event loop)

    def observe(self, when: datetime, base_load_kw: float | None, pv_kw: float | None) -> HistoryStep | None:
        """One cycle's measurement (None: nothing measured this cycle); returns a completed step."""
        if base_load_kw is None:
            return None
        return self.history.add(when, base_load_kw, pv_kw)

    def origin(self, now: datetime) -> pd.Timestamp:
        """The forecast origin for ``now``: the start of its step."""
        return pd.Timestamp(now).tz_convert(UTC).floor(self.step)

    def history_frame(self, origin: pd.Timestamp) -> pd.DataFrame:
        """A copy of the measured history before ``origin`` (PV dropped when the meter reports none)."""
        frame = self.history.frame(origin)
        return frame if self.history.has_pv else frame[["base_load_kw"]]

    # -- the model (worker thread)

    def compute(self, origin: pd.Timestamp, history: pd.DataFrame) -> ModelRun:
        """The model's forecast from ``origin`` with ``history`` (observations before ``origin`` only).

        Raises :class:`InsufficientHistoryError` with fewer than ``min_history_steps`` measured steps or
        when the model refuses the history; other model errors propagate.
        """
        model = self.model
        if model is None:
            raise RuntimeError("no forecasting model")
        history = history[history.index < origin]
        out: dict[str, FloatArray | None] = {}
        n_used = 0
        for col in SERIES:
            if col not in model.forecasters or col not in history.columns:
                out[col] = None
                continue
            series = history[col].dropna()
            if len(series) < self.settings.min_history_steps:
                raise InsufficientHistoryError(
                    f"{col}: {len(series)} measured step(s) of {self.step}; the model is used from "
                    f"{self.settings.min_history_steps}"
                )
            point = model.predict(col, origin, self.horizon_steps, history=series).point
            out[col] = np.asarray(point, dtype=float).copy()
            n_used = max(n_used, len(series))
        return ModelRun(origin, self.step, out["base_load_kw"], out["pv_kw"], n_used)

    # -- results (event loop)

    def install(self, run: ModelRun) -> None:
        self.run = run
        self.fallback_reason = None

    def fall_back(self, reason: str) -> None:
        """Drop the model forecast: persistence until the next successful refresh."""
        self.run = None
        self.fallback_reason = reason

    # -- per cycle (event loop, cheap)

    def window(
        self, now: datetime, base_now_kw: float, pv_now_kw: float, base_ahead_kw: float | None = None
    ) -> WindowInfo:
        """The snapshot's window at ``now`` on the control grid; element 0 is the measurement now, the
        persistence forecast after it ``base_ahead_kw`` (:func:`serving.base_ahead.base_ahead_kw`;
        default the same)."""
        t0 = _ns(now)
        times = t0 + self._offsets_ns
        base = np.full(self.window_steps, float(base_now_kw if base_ahead_kw is None else base_ahead_kw))
        base[0] = base_now_kw
        pv = np.full(self.window_steps, float(pv_now_kw))
        source = "persistence"
        run = self.run
        if run is not None:
            step_ns = int(run.step.value)
            j = (times - int(run.origin.value)) // step_ns
            if 0 <= j[0] < self.horizon_steps:
                jj = np.minimum(j[1:], self.horizon_steps - 1)
                if run.base_load_kw is not None:
                    base[1:] = run.base_load_kw[jj]
                if run.pv_kw is not None:
                    pv[1:] = run.pv_kw[jj]
                source = "model"
        imp, exp = self.prices.at_ns(times)
        return WindowInfo(ForecastWindow(base, pv, imp, exp), source)


def load_forecaster(path: Path) -> SiteForecaster:
    """A fitted forecaster saved by ``evdlm forecast fit`` (raises on any problem)."""
    from forecasting.provider import SiteForecaster

    model = SiteForecaster.load(path)
    if not any(c in model.forecasters for c in SERIES):
        raise ValueError(f"{path}: forecasts none of {', '.join(SERIES)}")
    return model
