"""What defines a :class:`~envs.env.ChargingSiteEnv` and where its episodes come from.

:class:`EnvConfig` holds the env's arguments; :class:`GeneratorSpec` a new generated scenario per episode;
:class:`EpisodeSource` draws each episode (the scenario, the window, the forecast) from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from envs.core import SiteArrays
from envs.forecast import PerfectForecast
from envs.history import HistoryEpisodes
from envs.obs import ObservationLayout
from envs.prefetch import ScenarioPrefetch
from envs.scenario import Scenario, load_scenario, resample_timeseries
from envs.sim import Episode, ForecastSource, compile_episode

GENERATOR_SEED_SPAN = 2**31
"""each generated episode uses scenario seed ``generator.seed + k`` with ``k`` drawn from ``[0, 2**31)``"""


@dataclass(frozen=True)
class GeneratorSpec:
    """Arguments of :func:`envs.generate.generate_scenario` for a new scenario per episode.

    ``seed`` generates the scenario that fixes the site (chargers, limits, tariff) at construction; each
    episode then generates a scenario with seed ``seed + k``, ``k`` drawn from the env's ``np_random`` in
    ``[0, 2**31)`` (or given as ``reset(options={"scenario_seed": s})``), and uses its sessions and time
    series on that fixed site.

    ``pool``: draw ``k`` from ``[0, pool)`` instead and keep those scenarios in memory. Generating a
    scenario takes 50-100 ms, far longer than simulating a day of it, so with short episodes (``days``
    large and ``episode_steps`` small: every episode a random window) a pool keeps the simulator busy.

    ``prefetch``: generate the next ``prefetch`` episodes' scenarios ahead in one background process
    (:mod:`envs.prefetch`), so a reset of a fresh scenario costs about what a window of a loaded one does.
    Not with ``pool``.
    """

    kind: Literal["depot", "workplace", "residential", "public"] = "depot"
    chargers: int = 20
    days: int = 7
    seed: int = 0
    v2g: bool = False
    pv: bool = True
    battery: bool = False
    demand_charge_per_kw: float | None = None
    start: str | None = None
    pool: int | None = None
    prefetch: int = 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> GeneratorSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"generator: unknown key(s) {unknown}; known: {sorted(known)}")
        spec = cls(**data)  # type: ignore[arg-type]
        spec.validate()
        return spec

    def validate(self) -> None:
        for name in ("chargers", "days", "seed"):
            if not isinstance(getattr(self, name), int | np.integer):
                raise ValueError(f"generator: {name} must be an integer, got {getattr(self, name)!r}")
        if self.chargers < 1 or self.days < 1 or self.seed < 0:
            raise ValueError("generator: chargers and days must be >= 1, seed >= 0")
        if self.pool is not None and self.pool < 1:
            raise ValueError("generator: pool must be >= 1")
        if self.prefetch < 0 or (self.prefetch and self.pool is not None):
            raise ValueError("generator: prefetch must be >= 0, and 0 with a pool")

    def generate(self, seed: int, step: str | None) -> Scenario:
        from envs.generate import generate_scenario

        kwargs: dict[str, Any] = {
            "kind": self.kind,
            "chargers": self.chargers,
            "days": self.days,
            "seed": seed,
            "v2g": self.v2g,
            "pv": self.pv,
            "battery": self.battery,
            "demand_charge_per_kw": self.demand_charge_per_kw,
        }
        if step is not None:
            kwargs["step"] = step
        if self.start is not None:
            kwargs["start"] = self.start
        return generate_scenario(**kwargs)


ScenarioLike = Scenario | str | Path


@dataclass(frozen=True)
class EnvConfig:
    """Everything that defines a :class:`ChargingSiteEnv` (the keyword arguments of its constructor).

    Give exactly one of ``scenario`` (a folder, a :class:`Scenario`, or a sequence of them: one is drawn
    per episode), ``generator`` (a :class:`GeneratorSpec` or a mapping with its keys) and ``history``
    (:class:`envs.history.HistoryEpisodes`: windows of a site's history; its own ``window_days`` set the
    episode length, its forecast provider the forecast windows).
    """

    scenario: ScenarioLike | tuple[ScenarioLike, ...] | None = None
    generator: GeneratorSpec | None = None
    history: HistoryEpisodes | None = None
    step: str | None = "15min"
    """simulation step (pandas offset); time series are resampled to it. None: the scenario's own step"""
    episode_steps: int | None = None
    """None: an episode is the whole scenario; else a window of this many steps at a random start"""
    forecast: ForecastSource = field(default_factory=PerfectForecast)
    forecast_horizon: int = 16
    """H: forecast steps in the observation"""
    allow_discharge: bool = True
    """V2G (where session and charger allow it) and stationary battery discharge"""
    departure_floor: bool = False
    """the projection's departure floor (``docs/projection.md``): an EV that must charge now to reach its
    need by its departure gets at least that power, least slack first while every limit holds"""
    v2g_min_soc: float = 0.2
    """V2G never takes an EV of known battery below this SoC (or its SoC on arrival, if lower)"""
    price_scale_per_kwh: float = 0.25
    """observation scale of prices"""
    time_scale_h: float = 24.0
    """observation scale of durations (time to departure, laxity, energy needed in hours at full power)"""

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EnvConfig:
        if "action_mode" in kwargs:
            raise ValueError(
                "action_mode is gone: the env's action is the kW request; wrap the env in "
                "envs.wrappers.NormalisedAction (the former 'continuous') or PriorityScores ('priority')"
            )
        gen = kwargs.get("generator")
        if isinstance(gen, Mapping):
            kwargs["generator"] = GeneratorSpec.from_mapping(gen)
        scen = kwargs.get("scenario")
        if isinstance(scen, list):
            kwargs["scenario"] = tuple(scen)
        if kwargs.get("forecast") is None:
            kwargs.pop("forecast", None)
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> None:
        given = [x is not None for x in (self.scenario, self.generator, self.history)]
        if sum(given) != 1:
            raise ValueError("give exactly one of scenario=, generator= and history=")
        if self.history is not None and self.episode_steps is not None:
            raise ValueError("history= sets its own episode length (window_days): leave episode_steps out")
        if self.generator is not None:
            self.generator.validate()
        if self.forecast_horizon < 1:
            raise ValueError("forecast_horizon must be >= 1")
        if self.episode_steps is not None and self.episode_steps < 1:
            raise ValueError("episode_steps must be >= 1")
        if not 0.0 <= self.v2g_min_soc <= 1.0:
            raise ValueError("v2g_min_soc must lie in [0, 1]")
        if self.price_scale_per_kwh <= 0 or self.time_scale_h <= 0:
            raise ValueError("price_scale_per_kwh and time_scale_h must be > 0")


def _resampled(scenario: Scenario, step: str | None) -> Scenario:
    if step is None or scenario.step == pd.Timedelta(step):
        return scenario
    return scenario.with_timeseries(resample_timeseries(scenario.timeseries, step))


class EpisodeSource:
    """Draws the episodes of an :class:`EnvConfig`: the scenario, the window, the forecast."""

    def __init__(self, config: EnvConfig) -> None:
        self.config = config
        self.scenarios: tuple[Scenario, ...] = ()
        if config.generator is not None:
            first = config.generator.generate(config.generator.seed, config.step)
            self.scenarios = ()
        elif config.history is not None:
            first = config.history.first
            if config.step is not None and first.step != pd.Timedelta(config.step):
                raise ValueError(f"history step {first.step} differs from step {config.step}")
        else:
            raw = config.scenario if isinstance(config.scenario, tuple) else (config.scenario,)
            loaded = []
            for item in raw:
                if isinstance(item, Scenario):
                    loaded.append(_resampled(item, config.step))
                elif isinstance(item, str | Path):
                    loaded.append(load_scenario(item, step=config.step))
                else:
                    raise TypeError(f"scenario must be a folder or a Scenario, got {type(item).__name__}")
            if not loaded:
                raise ValueError("scenario= is an empty sequence")
            self.scenarios = tuple(loaded)
            first = loaded[0]
        self.first = first
        self._pool: dict[int, Scenario] = {}
        self.prefetch: ScenarioPrefetch | None = None
        if config.generator is not None and config.generator.prefetch:
            self.prefetch = ScenarioPrefetch(
                config.generator, config.step, config.generator.prefetch, GENERATOR_SEED_SPAN
            )
        self.site = SiteArrays.from_config(first.site)
        self.dt_h = first.dt_h
        for s in self.scenarios[1:]:
            if s.site.charger_ids != first.site.charger_ids or abs(s.dt_h - self.dt_h) > 1e-12:
                raise ValueError(f"scenario {s.name!r}: every scenario must have the same chargers and step")
        if config.episode_steps is not None and config.episode_steps > first.n_steps:
            raise ValueError(
                f"episode_steps {config.episode_steps} exceeds the scenario's {first.n_steps} steps"
            )

    def layout(self) -> ObservationLayout:
        c = self.config
        return ObservationLayout.for_site(
            self.site, c.forecast_horizon, c.price_scale_per_kwh, c.time_scale_h
        )

    def sample(self, rng: np.random.Generator, options: Mapping[str, Any] | None = None) -> Episode:
        """A new episode. ``options``: ``scenario_seed`` (generator), ``scenario_index`` (a sequence of
        scenarios), ``start_step`` (with ``episode_steps``)."""
        opts = dict(options or {})
        c = self.config
        if c.history is not None:
            return c.history.sample(
                self.site,
                rng,
                opts,
                horizon=c.forecast_horizon,
                allow_discharge=c.allow_discharge,
                v2g_min_soc=c.v2g_min_soc,
            )
        if c.generator is not None:
            seed = opts.pop("scenario_seed", None)
            pool = c.generator.pool
            if self.prefetch is not None:
                seed = self.prefetch.next_seed(rng) if seed is None else int(seed)
                return self._compile(self.prefetch.take(seed), rng, opts)
            if seed is None:
                seed = c.generator.seed + int(rng.integers(pool or GENERATOR_SEED_SPAN))
            seed = int(seed)
            cached = self._pool.get(seed)
            if cached is None:
                cached = c.generator.generate(seed, c.step)
                if pool is not None and len(self._pool) < pool:
                    self._pool[seed] = cached
            scenario = cached
        else:
            k = opts.pop("scenario_index", None)
            if k is None:
                k = int(rng.integers(len(self.scenarios))) if len(self.scenarios) > 1 else 0
            scenario = self.scenarios[int(k)]
        return self._compile(scenario, rng, opts)

    def close(self) -> None:
        """Stop the background generation (if any)."""
        if self.prefetch is not None:
            self.prefetch.close()

    def _compile(self, scenario: Scenario, rng: np.random.Generator, opts: dict[str, Any]) -> Episode:
        c = self.config
        total = scenario.n_steps
        start = opts.pop("start_step", None)
        if c.episode_steps is None:
            n_steps = total - (0 if start is None else int(start))
            start = 0 if start is None else int(start)
        else:
            n_steps = c.episode_steps
            if n_steps > total:
                raise ValueError(
                    f"episode_steps {n_steps} exceeds scenario {scenario.name!r}'s {total} steps"
                )
            start = int(rng.integers(total - n_steps + 1)) if start is None else int(start)
        if opts:
            raise ValueError(f"unknown reset option(s) {sorted(opts)}")
        return compile_episode(
            scenario,
            self.site,
            start_step=start,
            n_steps=n_steps,
            forecast=c.forecast,
            horizon=c.forecast_horizon,
            rng=rng,
            allow_discharge=c.allow_discharge,
            v2g_min_soc=c.v2g_min_soc,
        )
