"""A site's own history as the source of training episodes: a time-ordered split and augmented windows.

:class:`SiteHistory` holds one or more scenario folders of one site (the operator's ``site.yaml`` with
months of sessions and time series), cut into whole local days. The days are split in time order: the
earliest for training, the next ``validation_days`` to choose a checkpoint, the last ``test_days`` to score
the chosen policy; never shuffled across. :class:`HistoryEpisodes` is the env's episode source over the
training part (``ChargingSiteEnv(history=...)``): each episode is a window of ``window_days`` consecutive
training days at a random start, optionally augmented (:class:`Augmentation`). Windows of loaded history are
near free: no scenario is generated, only the window's sessions are cut out and compiled.

Folders whose time series join without a gap form one segment; a window never spans two segments. The site
of the last folder is the site the policy is for (every folder must have its chargers).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from envs.config import SiteConfig
from envs.core import FloatArray, SiteArrays
from envs.episode import Episode, ForecastSource, compile_episode
from envs.forecast import COLUMNS, PerfectForecast
from envs.scenario import MAX_SESSION_ENERGY_KWH, Scenario, load_scenario

MAX_ARRIVAL_JITTER_MIN = 120.0
MAX_JITTER_PCT = 50.0
FLEET_SCALE_BOUNDS = (0.5, 1.5)


@dataclass(frozen=True)
class Augmentation:
    """Optional changes to each training window; the time series always keep their real shape.

    - ``resample_days``: each day of the window takes the sessions of a training day drawn with replacement
      (of the same kind: weekday or weekend, where the training part has one), shifted onto it; EVs already
      plugged in when the window starts stay as recorded;
    - ``arrival_jitter_min``: each arrival moves by ``U(-j, +j)`` minutes (the stay moves with it), ``j`` in
      ``[0, 120]``;
    - ``stay_jitter_pct``: each stay (actual and declared) is multiplied by ``U(1 - p/100, 1 + p/100)``,
      ``p`` in ``[0, 50]``;
    - ``energy_jitter_pct``: each energy (actual and declared) is multiplied by ``U(1 - p/100, 1 + p/100)``,
      ``p`` in ``[0, 50]`` (capped at the format's largest session energy);
    - ``fleet_scale``: a factor ``f ~ U(low, high)`` per episode, both in ``[0.5, 1.5]``: below 1 each session
      is kept with probability ``f``; above 1 each session gets a copy with probability ``f - 1``, on a
      charger drawn at random (where that charger is busy, the simulator moves the copy's arrival to after
      the EV before it leaves, or drops it).
    """

    resample_days: bool = False
    arrival_jitter_min: float = 0.0
    stay_jitter_pct: float = 0.0
    energy_jitter_pct: float = 0.0
    fleet_scale: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.arrival_jitter_min <= MAX_ARRIVAL_JITTER_MIN:
            raise ValueError(f"arrival_jitter_min must lie in [0, {MAX_ARRIVAL_JITTER_MIN:g}] minutes")
        for name in ("stay_jitter_pct", "energy_jitter_pct"):
            if not 0.0 <= getattr(self, name) <= MAX_JITTER_PCT:
                raise ValueError(f"{name} must lie in [0, {MAX_JITTER_PCT:g}] %")
        lo, hi = self.fleet_scale
        if not FLEET_SCALE_BOUNDS[0] <= lo <= hi <= FLEET_SCALE_BOUNDS[1]:
            raise ValueError(
                f"fleet_scale must be [low, high] with {FLEET_SCALE_BOUNDS[0]} <= low <= high <= 1.5"
            )

    @property
    def active(self) -> bool:
        return (
            self.resample_days
            or self.arrival_jitter_min > 0
            or self.stay_jitter_pct > 0
            or self.energy_jitter_pct > 0
            or self.fleet_scale != (1.0, 1.0)
        )


@dataclass(frozen=True)
class HistorySplit:
    """How a history is cut: ``window_days`` per training episode, then the time-ordered parts."""

    window_days: int = 7
    validation_days: int = 14
    test_days: int = 21
    step: str | None = "15min"
    """simulation step (time series are resampled to it); None: the folders' own"""

    def __post_init__(self) -> None:
        if self.window_days < 1 or self.validation_days < 1 or self.test_days < 1:
            raise ValueError("window_days, validation_days and test_days must be >= 1")


@dataclass(frozen=True)
class Day:
    """One whole local day of a history: steps ``[start, stop)`` of segment ``segment``."""

    segment: int
    start: int
    stop: int
    date: pd.Timestamp
    """local midnight"""

    @property
    def weekend(self) -> bool:
        return bool(self.date.day_of_week >= 5)


def _join(parts: Sequence[Scenario], site: SiteConfig, name: str) -> Scenario:
    if len(parts) == 1:
        return Scenario(site, parts[0].sessions, parts[0].timeseries, name)
    sessions = pd.concat([p.sessions for p in parts], ignore_index=True)
    sessions = sessions.sort_values(["arrival", "session_id"], kind="stable").reset_index(drop=True)
    return Scenario(site, sessions, pd.concat([p.timeseries for p in parts]), name)


def _whole_days(scenario: Scenario, tz: str, segment: int) -> list[Day]:
    index = pd.DatetimeIndex(scenario.timeseries.index)
    local = index.tz_convert(tz)
    midnight = np.flatnonzero((local.hour == 0) & (local.minute == 0) & (local.second == 0))
    bounds = [*midnight.tolist()]
    end_local = (index[-1] + scenario.step).tz_convert(tz)
    if end_local.hour == 0 and end_local.minute == 0:
        bounds.append(len(index))
    return [Day(segment, a, b, local[a].normalize()) for a, b in itertools.pairwise(bounds) if b > a]


class SiteHistory:
    """One site's history, cut into whole local days and split in time order (see the module)."""

    def __init__(self, scenarios: Sequence[Scenario], split: HistorySplit, name: str = "history") -> None:
        if not scenarios:
            raise ValueError("a history needs at least one scenario folder")
        ordered = sorted(scenarios, key=lambda s: s.start)
        self.site: SiteConfig = ordered[-1].site
        for s in ordered:
            if s.site.charger_ids != self.site.charger_ids:
                raise ValueError(f"scenario {s.name!r}: a history's folders must all have the same chargers")
            if s.step != ordered[0].step:
                raise ValueError(f"scenario {s.name!r}: a history's folders must all have the same step")
        groups: list[list[Scenario]] = [[ordered[0]]]
        for s in ordered[1:]:
            prev = groups[-1][-1]
            if s.start < prev.end:
                raise ValueError(f"scenario {s.name!r} overlaps {prev.name!r} in time")
            if s.start == prev.end:
                groups[-1].append(s)
            else:
                groups.append([s])
        self.name = name
        self.split = split
        self.segments = tuple(_join(g, self.site, f"{name}-{k}") for k, g in enumerate(groups))
        self.days: tuple[Day, ...] = tuple(
            d for k, seg in enumerate(self.segments) for d in _whole_days(seg, self.site.timezone, k)
        )
        n_days = len(self.days)
        n_train = n_days - split.validation_days - split.test_days
        if n_train < split.window_days:
            raise ValueError(
                f"history {name!r}: {n_days} whole days leave {n_train} for training, fewer than "
                f"window_days {split.window_days} (validation_days {split.validation_days}, "
                f"test_days {split.test_days})"
            )
        self.train_days = self.days[:n_train]
        self.validation_days = self.days[n_train : n_train + split.validation_days]
        self.test_days = self.days[n_train + split.validation_days :]

    @classmethod
    def load(cls, folders: Sequence[str | Path], split: HistorySplit, name: str = "history") -> SiteHistory:
        return cls([load_scenario(f, step=split.step) for f in folders], split, name)

    # ------------------------------------------------------------------ parts as scenarios

    def span(self, days: Sequence[Day], name: str | None = None) -> Scenario:
        """Consecutive days (of one segment) as a scenario: their time series and every session that is
        plugged in during them. An EV that arrived earlier arrives at the start with its energies pro-rated
        to the part of its stay inside (and its arrival SoC raised by what it got before), as a window of
        the whole history would simulate it; so the scenario can be saved and loaded as a folder."""
        if not days or any(d.segment != days[0].segment for d in days):
            raise ValueError("a span needs consecutive days of one segment")
        seg = self.segments[days[0].segment]
        ts = seg.timeseries.iloc[days[0].start : days[-1].stop]
        t0, t1 = ts.index[0], ts.index[-1] + seg.step
        s = seg.sessions
        keep = ((s["arrival"] < t1) & (s["departure"] > t0)).to_numpy()
        label = name or f"{self.site.name}-{days[0].date.strftime('%Y-%m-%d')}"
        return Scenario(self.site, _entered(s[keep].reset_index(drop=True), t0), ts, label)

    def chunks(self, days: Sequence[Day], length: int) -> list[Scenario]:
        """``days`` in consecutive chunks of ``length`` days (a shorter tail chunk is kept), as scenarios."""
        out: list[Scenario] = []
        run: list[Day] = []
        for d in days:
            if run and (d.segment != run[-1].segment or len(run) == length):
                out.append(self.span(run))
                run = []
            run.append(d)
        if run:
            out.append(self.span(run))
        return out

    def training_scenario(self) -> Scenario:
        """The training part's longest run of consecutive days (what a forecaster is fitted on)."""
        runs: dict[int, list[Day]] = {}
        for d in self.train_days:
            runs.setdefault(d.segment, []).append(d)
        best = max(runs.values(), key=len)
        return self.span(best, f"{self.name}-train")

    def split_lines(self) -> list[str]:
        """The split, one line per part (printed and logged by training)."""

        def part(label: str, days: Sequence[Day]) -> str:
            first, last = days[0].date, days[-1].date
            return f"{label:<10} {len(days):>4} days  {first:%Y-%m-%d} .. {last:%Y-%m-%d}"

        return [
            f"history {self.name}: {len(self.days)} whole days in {len(self.segments)} segment(s), "
            f"split in time order (never shuffled across)",
            part("train", self.train_days),
            part("validation", self.validation_days),
            part("test", self.test_days),
        ]

    def split_params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for label, days in (
            ("train", self.train_days),
            ("validation", self.validation_days),
            ("test", self.test_days),
        ):
            out[f"split.{label}.days"] = str(len(days))
            out[f"split.{label}.first"] = f"{days[0].date:%Y-%m-%d}"
            out[f"split.{label}.last"] = f"{days[-1].date:%Y-%m-%d}"
        return out


class HistoryEpisodes:
    """The training windows of a :class:`SiteHistory`, the env's episode source (``history=``).

    ``forecast``: the provider of the episodes' forecast windows. A provider other than the perfect one is
    bound once to each training segment and its windows precomputed for every step (then sliced per
    episode), so a fitted model costs nothing per reset.
    """

    def __init__(
        self,
        history: SiteHistory,
        augmentation: Augmentation | None = None,
        forecast: ForecastSource | None = None,
        horizon: int = 16,
    ) -> None:
        self.history = history
        self.augmentation = augmentation or Augmentation()
        self.forecast = forecast or PerfectForecast()
        self.horizon = horizon
        w = history.split.window_days
        train = history.train_days
        self.starts = np.array(
            [
                k
                for k in range(len(train) - w + 1)
                if all(train[k + j].segment == train[k].segment for j in range(w))
            ],
            dtype=np.int64,
        )
        if not len(self.starts):
            raise ValueError(f"no {w} consecutive training days in one segment")
        weekend = np.array([d.weekend for d in train])
        self._pool_by_kind = {kind: np.flatnonzero(weekend == kind) for kind in (False, True)}
        self._arrival_ns = [_ns(seg.sessions["arrival"]) for seg in history.segments]
        self._departure_ns = [_ns(seg.sessions["departure"]) for seg in history.segments]
        self._stamp_ns = [
            pd.DatetimeIndex(seg.timeseries.index).tz_convert("UTC").tz_localize(None).asi8
            for seg in history.segments
        ]
        self._windows: dict[int, FloatArray] = {}

    @property
    def first(self) -> Scenario:
        """The first training segment (fixes the site and the step of the env)."""
        return self.history.segments[self.history.train_days[0].segment]

    def _forecast_windows(self, segment: int, horizon: int) -> FloatArray | None:
        if type(self.forecast) is PerfectForecast:
            return None
        key = segment * 10_000 + horizon
        if key not in self._windows:
            seg = self.history.segments[segment]
            bound = self.forecast.bind(seg.timeseries)
            rng = np.random.default_rng(0)
            out = np.empty((seg.n_steps + 1, len(COLUMNS), horizon + 1))
            for t in range(seg.n_steps + 1):
                w = bound.window(t, horizon + 1, rng)
                out[t] = (w.base_load_kw, w.pv_kw, w.import_price_per_kwh, w.export_price_per_kwh)
            self._windows[key] = out
        return self._windows[key]

    def _sessions(self, segment: int, t0: int, t1: int) -> pd.DataFrame:
        """Sessions of segment ``segment`` plugged in during steps ``[t0, t1)``."""
        stamps = self._stamp_ns[segment]
        lo = stamps[t0]
        hi = stamps[t1] if t1 < len(stamps) else stamps[-1] + (stamps[1] - stamps[0])
        keep = (self._arrival_ns[segment] < hi) & (self._departure_ns[segment] > lo)
        return self.history.segments[segment].sessions[keep]

    def window_sessions(self, first_day: int, rng: np.random.Generator) -> pd.DataFrame:
        """The (augmented) sessions of the training window starting at training day ``first_day``."""
        train = self.history.train_days
        days = train[first_day : first_day + self.history.split.window_days]
        seg = days[0].segment
        aug = self.augmentation
        if not aug.resample_days:
            frame = self._sessions(seg, days[0].start, days[-1].stop)
        else:
            stamps = self._stamp_ns[seg]
            before = self._sessions(seg, days[0].start, days[0].start + 1)
            before = before[_ns(before["arrival"]) < stamps[days[0].start]]
            parts = [before]
            for j, day in enumerate(days):
                pool = self._pool_by_kind[day.weekend]
                if not len(pool):
                    pool = np.arange(len(train))
                src = train[int(pool[rng.integers(len(pool))])]
                src_stamps = self._stamp_ns[src.segment]
                src_lo = src_stamps[src.start]
                arr = self._arrival_ns[src.segment]
                src_hi = src_lo + (src.stop - src.start) * (src_stamps[1] - src_stamps[0])
                chosen = self.history.segments[src.segment].sessions[(arr >= src_lo) & (arr < src_hi)]
                shift = pd.Timedelta(int(stamps[day.start] - src_lo), unit="ns")
                parts.append(_shifted(chosen, shift, f"#{j}"))
            frame = pd.concat(parts, ignore_index=True)
        return augment_sessions(frame, aug, self.history.site.charger_ids, rng)

    def sample(
        self,
        site: SiteArrays,
        rng: np.random.Generator,
        options: Mapping[str, Any],
        *,
        horizon: int,
        allow_discharge: bool,
        v2g_min_soc: float,
    ) -> Episode:
        """A new training episode; ``options``: ``start_day`` (index into the training days)."""
        opts = dict(options)
        k = opts.pop("start_day", None)
        if opts:
            raise ValueError(f"unknown reset option(s) {sorted(opts)}")
        first_day = int(self.starts[rng.integers(len(self.starts))]) if k is None else int(k)
        if first_day not in set(self.starts.tolist()):
            raise ValueError(f"start_day {first_day} does not start a window of training days")
        days = self.history.train_days[first_day : first_day + self.history.split.window_days]
        seg_index = days[0].segment
        seg = self.history.segments[seg_index]
        sessions = self.window_sessions(first_day, rng)
        scenario = Scenario(
            seg.site, sessions, seg.timeseries, f"{self.history.name}-{days[0].date:%Y-%m-%d}"
        )
        start, n_steps = days[0].start, days[-1].stop - days[0].start
        episode = compile_episode(
            scenario,
            site,
            start_step=start,
            n_steps=n_steps,
            forecast=PerfectForecast(),
            horizon=horizon,
            rng=rng,
            allow_discharge=allow_discharge,
            v2g_min_soc=v2g_min_soc,
        )
        windows = self._forecast_windows(seg_index, horizon)
        if windows is None:
            return episode
        return replace(episode, forecast=np.ascontiguousarray(windows[start : start + n_steps + 1]))


def _entered(sessions: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    """Sessions that arrived before ``start`` moved to arrive at it, pro-rated (:meth:`SiteHistory.span`)."""
    early = (sessions["arrival"] < start).to_numpy()
    if not early.any():
        return sessions
    out = sessions.copy()
    arrival, departure = out["arrival"][early], out["departure"][early]
    frac = ((departure - start) / (departure - arrival)).to_numpy(dtype=float)
    energy = out.loc[early, "energy_kwh"].to_numpy(dtype=float)
    out.loc[early, "energy_kwh"] = energy * frac
    if "declared_energy_kwh" in out.columns:
        out.loc[early, "declared_energy_kwh"] = (
            out.loc[early, "declared_energy_kwh"].to_numpy(dtype=float) * frac
        )
    if "arrival_soc" in out.columns and "battery_kwh" in out.columns:
        soc = out.loc[early, "arrival_soc"].to_numpy(dtype=float)
        battery = out.loc[early, "battery_kwh"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.loc[early, "arrival_soc"] = np.minimum(soc + energy * (1.0 - frac) / battery, 1.0)
    out.loc[early, "arrival"] = start
    return out


def _ns(times: pd.Series) -> np.ndarray:
    """UTC nanoseconds since the epoch of tz-aware timestamps."""
    return np.asarray(pd.DatetimeIndex(times).tz_convert("UTC").asi8, dtype=np.int64)


def _shifted(frame: pd.DataFrame, shift: pd.Timedelta, suffix: str) -> pd.DataFrame:
    out = frame.copy()
    for col in ("arrival", "departure", "declared_departure"):
        if col in out.columns:
            out[col] = out[col] + shift
    out["session_id"] = out["session_id"].astype(str) + suffix
    return out


def augment_sessions(
    sessions: pd.DataFrame, aug: Augmentation, charger_ids: Sequence[str], rng: np.random.Generator
) -> pd.DataFrame:
    """``sessions`` jittered and scaled as ``aug`` says (see :class:`Augmentation`); unchanged when it is
    inactive. Arrivals move by at most ``arrival_jitter_min``; stays and energies change by at most their
    percentages; the count changes only through ``fleet_scale``."""
    if not (
        aug.arrival_jitter_min > 0
        or aug.stay_jitter_pct > 0
        or aug.energy_jitter_pct > 0
        or aug.fleet_scale != (1.0, 1.0)
    ):
        return sessions
    out = sessions.reset_index(drop=True).copy()
    n = len(out)
    lo, hi = aug.fleet_scale
    f = float(rng.uniform(lo, hi)) if hi > lo else lo
    if f < 1.0:
        out = out[rng.random(n) < f].reset_index(drop=True)
    elif f > 1.0:
        extra = out[rng.random(n) < f - 1.0].copy()
        extra["charger_id"] = np.asarray(charger_ids, dtype=object)[
            rng.integers(len(charger_ids), size=len(extra))
        ]
        extra["session_id"] = extra["session_id"].astype(str) + "+copy"
        out = pd.concat([out, extra], ignore_index=True)
    n = len(out)
    if n == 0:
        return out
    arrival = out["arrival"]
    shift = pd.to_timedelta(rng.uniform(-1.0, 1.0, n) * aug.arrival_jitter_min * 60.0, unit="s")
    p = aug.stay_jitter_pct / 100.0
    stay_factor = rng.uniform(1.0 - p, 1.0 + p, n)
    new_arrival = arrival + shift
    out["departure"] = new_arrival + (out["departure"] - arrival) * stay_factor
    if "declared_departure" in out.columns:
        out["declared_departure"] = new_arrival + (out["declared_departure"] - arrival) * stay_factor
    out["arrival"] = new_arrival
    q = aug.energy_jitter_pct / 100.0
    energy_factor = rng.uniform(1.0 - q, 1.0 + q, n)
    out["energy_kwh"] = np.minimum(
        out["energy_kwh"].to_numpy(dtype=float) * energy_factor, MAX_SESSION_ENERGY_KWH
    )
    if "declared_energy_kwh" in out.columns:
        declared = out["declared_energy_kwh"].to_numpy(dtype=float) * energy_factor
        out["declared_energy_kwh"] = np.minimum(declared, MAX_SESSION_ENERGY_KWH)
    return out
