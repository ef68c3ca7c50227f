"""Bad history made explicit: put a series on its regular grid, detect gaps, NaN and stuck meters, impute
them causally and say so.

The cleaning is *causal*: the cleaned value at step ``j`` depends only on raw values at steps ``<= j``, so
cleaning a whole series and then cutting it at ``t`` gives exactly the cleaned prefix up to ``t`` (the
forecast provider relies on this to clean once per bound series).

Rules, in order:

* a step absent from the grid or NaN/inf is *missing*;
* a run of ``stuck_steps`` or more identical consecutive values is a *stuck meter* from its
  ``stuck_steps``-th value on (runs of exact zeros are allowed where ``allow_zero_runs``: PV at night, no EV
  arrivals); stuck values are treated as missing;
* a missing value is imputed by the last valid value while the gap is at most ``max_fill_steps`` long,
  then by the cleaned value one day earlier (same time of day), or the last valid value in the first day;
* missing values before the first valid one are dropped (nothing to impute them from);
* if more than ``max_imputed_fraction`` of the steps are imputed, or nothing is valid, the history is
  refused with :class:`InsufficientHistoryError` rather than forecast from made-up data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


class InsufficientHistoryError(ValueError):
    """The history is too short, empty, or too damaged to forecast from."""


@dataclass(frozen=True)
class CleaningRules:
    """How missing and stuck values are recognised and imputed."""

    max_fill_steps: int = 4
    """gaps up to this many steps are filled with the last valid value"""
    stuck_steps: int = 8
    """this many identical consecutive values mean a stuck meter (from the last of them on)"""
    allow_zero_runs: bool = False
    """runs of exact zeros are genuine (PV at night, no arrivals), not a stuck meter"""
    max_imputed_fraction: float = 0.5
    """refuse a history with more imputed steps than this fraction"""


@dataclass(frozen=True)
class HistoryQuality:
    """What was wrong with a history and what was done about it (counts of steps)."""

    n_steps: int
    n_missing: int
    """steps absent from the grid, NaN or infinite (imputed)"""
    n_stuck: int
    """steps flagged as a stuck meter (imputed)"""
    n_dropped: int
    """missing steps before the first valid value (dropped)"""
    stale_steps: int
    """steps between the last valid measurement and the forecast origin (0 = up to date)"""

    @property
    def n_imputed(self) -> int:
        return self.n_missing + self.n_stuck

    @property
    def clean(self) -> bool:
        return self.n_imputed == 0 and self.n_dropped == 0 and self.stale_steps == 0

    def flags(self) -> tuple[str, ...]:
        """Short names of what was imputed or dropped: ``missing``, ``stuck``, ``dropped``, ``stale``."""
        out = []
        if self.n_missing:
            out.append("missing")
        if self.n_stuck:
            out.append("stuck")
        if self.n_dropped:
            out.append("dropped")
        if self.stale_steps:
            out.append("stale")
        return tuple(out)


@dataclass(frozen=True, eq=False)
class CleanSeries:
    """A cleaned series on a regular grid: finite ``values`` with ``imputed`` marking made-up steps."""

    start: pd.Timestamp
    step: pd.Timedelta
    values: FloatArray
    imputed: BoolArray
    quality: HistoryQuality

    @property
    def index(self) -> pd.DatetimeIndex:
        return pd.date_range(self.start, periods=len(self.values), freq=self.step)

    @property
    def end(self) -> pd.Timestamp:
        """End of the last step (exclusive)."""
        return self.start + self.step * len(self.values)


def infer_step(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The grid step of ``index``: its frequency, else the smallest spacing between timestamps."""
    if index.freq is not None:
        return pd.Timedelta(pd.tseries.frequencies.to_offset(index.freq).nanos, unit="ns")
    if len(index) < 2:
        raise InsufficientHistoryError("cannot infer the step of a history with fewer than 2 timestamps")
    diffs = np.diff(index.as_unit("ns").asi8)
    positive = diffs[diffs > 0]
    if len(positive) == 0:
        raise InsufficientHistoryError("history timestamps are all equal")
    return pd.Timedelta(int(positive.min()), unit="ns")


def to_grid(series: pd.Series, step: pd.Timedelta, end: pd.Timestamp | None = None) -> pd.Series:
    """Reindex ``series`` onto its regular grid (from its first timestamp), NaN where a step is absent.

    With ``end`` the grid runs up to (excluding) ``end`` so that a history that stops early shows up as
    trailing missing steps. Raises ``ValueError`` for naive timestamps, duplicates, or timestamps off the
    grid.
    """
    if not isinstance(series.index, pd.DatetimeIndex):
        raise ValueError("history must be indexed by a DatetimeIndex")
    if series.index.tz is None:
        raise ValueError("history timestamps must be timezone-aware")
    if not series.index.is_monotonic_increasing:
        series = series.sort_index()
    if series.index.has_duplicates:
        dup = series.index[series.index.duplicated()][0]
        raise ValueError(f"history has duplicate timestamp {dup}")
    if len(series) == 0:
        raise InsufficientHistoryError("history is empty")
    start = pd.Timestamp(series.index[0])
    offsets = (pd.DatetimeIndex(series.index).as_unit("ns").asi8 - start.as_unit("ns").value) % step.value
    if np.any(offsets != 0):
        bad = series.index[np.flatnonzero(offsets)[0]]
        raise ValueError(f"history timestamp {bad} is off the {step} grid starting at {start}")
    stop = pd.Timestamp(series.index[-1]) + step if end is None else end
    n = max(int((stop - start) // step), 0)
    grid = pd.date_range(start, periods=n, freq=step)
    return series.astype(float).reindex(grid)


def clean_values(
    raw: FloatArray, steps_per_day: int, rules: CleaningRules
) -> tuple[FloatArray, BoolArray, int, int, int]:
    """Causally clean ``raw``: returns (values, imputed mask, n_missing, n_stuck, n_dropped).

    Leading missing values are dropped, so ``values`` may be shorter than ``raw`` by ``n_dropped``.
    """
    x = np.asarray(raw, dtype=float).copy()
    missing = ~np.isfinite(x)
    stuck = _stuck_mask(x, missing, rules)
    bad = missing | stuck
    valid = np.flatnonzero(~bad)
    if len(valid) == 0:
        raise InsufficientHistoryError("history has no valid value (all missing or stuck)")
    first = int(valid[0])
    x = x[first:]
    bad = bad[first:]
    n_missing = int(missing[first:].sum())
    n_stuck = int(stuck[first:].sum())
    if bad.any():
        x[bad] = np.nan
        last_valid = 0
        for j in range(len(x)):
            if not bad[j]:
                last_valid = j
                continue
            gap = j - last_valid
            if gap > rules.max_fill_steps and j >= steps_per_day:
                x[j] = x[j - steps_per_day]
            else:
                x[j] = x[last_valid]
    return x, bad, n_missing, n_stuck, first


def _stuck_mask(x: FloatArray, missing: BoolArray, rules: CleaningRules) -> BoolArray:
    n = len(x)
    if n == 0 or rules.stuck_steps <= 1:
        return np.zeros(n, dtype=bool)
    same = np.zeros(n, dtype=bool)
    same[1:] = (x[1:] == x[:-1]) & ~missing[1:] & ~missing[:-1]
    # position of each step in its run of equal values (0 for the first value of a run)
    run_start = np.flatnonzero(~same)
    run_id = np.cumsum(~same) - 1
    pos_in_run = np.arange(n) - run_start[run_id]
    stuck = pos_in_run >= rules.stuck_steps - 1
    if rules.allow_zero_runs:
        stuck &= x != 0.0
    return np.asarray(stuck & ~missing)


def clean_history(
    series: pd.Series,
    rules: CleaningRules,
    *,
    step: pd.Timedelta | None = None,
    now: pd.Timestamp | None = None,
    max_stale_steps: int | None = None,
) -> CleanSeries:
    """Clean ``series`` (observations strictly before ``now`` when given) onto its regular grid.

    Steps between the last observation and ``now`` are imputed like any gap and counted as stale; more
    than ``max_stale_steps`` of them (default: one day) is an :class:`InsufficientHistoryError`.
    """
    step = infer_step(pd.DatetimeIndex(series.index)) if step is None else step
    steps_per_day = int(pd.Timedelta("1D") // step)
    if now is not None:
        series = series[series.index < now]
        if len(series) == 0:
            raise InsufficientHistoryError(f"no history before {now}")
    grid = to_grid(series, step)
    end = grid.index[-1] + step
    stale = 0
    if now is not None and now > end:
        full = to_grid(series, step, end=_grid_ceil(now, grid.index[0], step))
        raw = full.to_numpy(dtype=float)
    else:
        raw = grid.to_numpy(dtype=float)
    finite = np.flatnonzero(np.isfinite(raw))
    if len(finite):
        stale = len(raw) - 1 - int(finite[-1])
    limit = steps_per_day if max_stale_steps is None else max_stale_steps
    if stale > limit:
        raise InsufficientHistoryError(
            f"history is stale: the last valid value is {stale} steps ({stale * step}) before the origin"
        )
    values, imputed, n_missing, n_stuck, n_dropped = clean_values(raw, steps_per_day, rules)
    if len(values) and imputed.mean() > rules.max_imputed_fraction:
        raise InsufficientHistoryError(
            f"{imputed.mean():.0%} of the history is missing or stuck "
            f"(more than {rules.max_imputed_fraction:.0%}): refusing to forecast from imputed data"
        )
    quality = HistoryQuality(len(values), n_missing, n_stuck, n_dropped, stale)
    start = pd.Timestamp(grid.index[0]) + step * n_dropped
    return CleanSeries(start, step, values, imputed, quality)


def _grid_ceil(t: pd.Timestamp, origin: pd.Timestamp, step: pd.Timedelta) -> pd.Timestamp:
    """The first grid point (``origin + k * step``) at or after ``t``."""
    k = -((origin - t) // step)
    return origin + k * step
