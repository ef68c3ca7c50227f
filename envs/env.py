"""``ChargingSiteEnv``: one charging site as a Gymnasium environment (id ``evdlm/ChargingSite-v0``).

The physics (:mod:`envs.sim`), the safety projection (:mod:`envs.projection`) and the costs
(:mod:`envs.costs`) are the same code the baselines, evaluation and the live service use; this module only
maps actions to kW requests, builds observations and reports what happened. See ``docs/environment.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces
from numba import njit

from envs import projection
from envs.core import FloatArray, ForecastWindow, SiteArrays, SiteState, Snapshot
from envs.forecast import PerfectForecast
from envs.obs import F32Array, ObservationLayout
from envs.projection import ProjectionResult
from envs.scenario import Scenario, load_scenario, resample_timeseries
from envs.sim import (
    OUTCOME_COUNTS,
    OUTCOME_FLOATS,
    BatchSim,
    Episode,
    ForecastSource,
    compile_episode,
)

ActionMode = Literal["continuous", "priority"]
ACTION_MODES: tuple[ActionMode, ...] = ("continuous", "priority")
_OUTCOME_NAMES = (
    (
        "site_import_kw", "import_price_per_kwh", "export_price_per_kwh", "peak_before_kw",
        "ev_discharged_kwh", "battery_discharged_kwh", "missing_kwh", "energy", "export_revenue",
        "demand_charge", "missing_energy", "degradation", "reward", "battery_kw", "delivered_kwh",
        "peak_import_kw", "battery_soc_kwh", "delivered_total_kwh", "missing_total_kwh",
    ),
    ("departures", "arrivals", "terminated", "step_index"),
)  # fmt: skip
"""the order in which ``ChargingSiteEnv._advance`` unpacks a step's outcome"""
if _OUTCOME_NAMES != (OUTCOME_FLOATS, OUTCOME_COUNTS):
    raise ImportError("envs.env unpacks StepOutcome.table/.counts in another order than envs.sim writes")
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
    per episode) and ``generator`` (a :class:`GeneratorSpec` or a mapping with its keys).
    """

    scenario: ScenarioLike | tuple[ScenarioLike, ...] | None = None
    generator: GeneratorSpec | None = None
    step: str | None = "15min"
    """simulation step (pandas offset); time series are resampled to it. None: the scenario's own step"""
    episode_steps: int | None = None
    """None: an episode is the whole scenario; else a window of this many steps at a random start"""
    forecast: ForecastSource = field(default_factory=PerfectForecast)
    forecast_horizon: int = 16
    """H: forecast steps in the observation"""
    action_mode: ActionMode = "continuous"
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
        if (self.scenario is None) == (self.generator is None):
            raise ValueError("give exactly one of scenario= and generator=")
        if self.generator is not None:
            self.generator.validate()
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {self.action_mode!r}")
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
        if c.generator is not None:
            seed = opts.pop("scenario_seed", None)
            pool = c.generator.pool
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


def action_space_for(site: SiteArrays) -> spaces.Box:
    return spaces.Box(-1.0, 1.0, shape=(site.n + int(site.has_battery),), dtype=np.float32)


@njit(cache=True, error_model="numpy")
def _unit(v: float) -> float:
    """``np.minimum(np.maximum(v, -1.0), 1.0)`` of one value (NaN propagates)."""
    v = v if (v >= -1.0 or v != v) else -1.0
    return v if (v <= 1.0 or v != v) else 1.0


@njit(cache=True, error_model="numpy")
def _battery_request(a: FloatArray, n: int, battery_c: FloatArray, out: FloatArray) -> None:
    """``out[b]``: the battery's kW request from ``a[b, n]`` (0 without a battery)."""
    for b in range(a.shape[0]):
        if battery_c[0] > 0.0:
            ab = _unit(a[b, n])
            out[b] = ab * battery_c[1] if ab >= 0 else ab * battery_c[2]
        else:
            out[b] = 0.0


@njit(cache=True, error_model="numpy")
def _request(
    a: FloatArray,
    lo_kw: FloatArray,
    hi_kw: FloatArray,
    battery_c: FloatArray,
    charger_kw: FloatArray,
    battery_kw: FloatArray,
) -> None:
    """Continuous mode: ``a >= 0`` asks ``a * hi``, ``a < 0`` asks ``-a * lo`` (``a`` clipped to [-1, 1])."""
    B, n = charger_kw.shape
    for b in range(B):
        for i in range(n):
            v = _unit(a[b, i])
            charger_kw[b, i] = v * hi_kw[b, i] if v >= 0 else -v * lo_kw[b, i]
    _battery_request(a, n, battery_c, battery_kw)


class ActionMapper:
    """Turns normalised actions ``(B, n [+1])`` into a projected allocation, batched.

    continuous: ``a >= 0`` asks for ``a * hi`` kW and ``a < 0`` for ``-a * lo`` kW, where ``[lo, hi]`` is
    the charger's feasible range now (:func:`envs.projection.charger_bounds`: charger rating, EV limits,
    energy room, V2G allowance); the battery's ``a`` maps to ``a * max_charge_kw`` or
    ``a * max_discharge_kw``. priority: the charger entries are scores, filled in descending order by
    :func:`envs.projection.priority_fill`; the battery entry is mapped as in continuous mode and the
    result projected again. Every path ends in the projection.
    """

    def __init__(
        self, site: SiteArrays, mode: ActionMode, allow_discharge: bool, departure_floor: bool = False
    ) -> None:
        self.site = site
        self.mode = mode
        self.allow_discharge = allow_discharge
        self.departure_floor = departure_floor
        self.n = site.n
        self.has_battery = site.has_battery
        self.plan = projection.ProjectionPlan.from_site(site)
        low = site.battery_max_discharge_kw if allow_discharge else 0.0
        self._battery_c = np.array([float(site.has_battery), site.battery_max_charge_kw, low])
        """has battery, its kW per unit of action when charging and when discharging"""

    def battery_kw(self, a: FloatArray) -> FloatArray:
        """(B,) battery request from its action entry (zeros without a battery)."""
        out = np.empty(a.shape[0])
        _battery_request(a, self.n, self._battery_c, out)
        return out

    def request(
        self, state: SiteState, lo_kw: FloatArray, hi_kw: FloatArray, a: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """The continuous mode's kW request ``(B, n)``, ``(B,)`` of the actions ``a`` ``(B, n [+1])``."""
        B = a.shape[0]
        charger_kw = np.empty((B, self.n))
        battery_kw = np.empty(B)
        _request(a, lo_kw, hi_kw, self._battery_c, charger_kw, battery_kw)
        return charger_kw, battery_kw

    def project(
        self, state: SiteState, a: FloatArray, *, box: projection.ChargerBox | None = None
    ) -> ProjectionResult:
        """Project the actions ``a`` taken in ``state``. ``box``: :func:`envs.projection.charger_box` of
        ``state`` when the caller has it (the continuous mode maps onto it; computed here otherwise)."""
        if self.mode == "priority":
            floor = self.departure_floor
            res = projection.priority_fill(
                self.site, state, a[:, : self.n], self.allow_discharge, plan=self.plan, box=box,
                departure_floor=floor,
            )  # fmt: skip
            if self.has_battery:
                res = projection.project(
                    self.site, state, res.charger_kw, self.battery_kw(a), plan=self.plan, box=box,
                    departure_floor=floor,
                )  # fmt: skip
            return res
        if box is None:
            box = projection.charger_box(self.site, state, self.plan)
        charger_kw, battery_kw = self.request(state, box.lo_kw, box.hi_kw, a)
        return self.project_kw(state, charger_kw, battery_kw, box=box)

    def project_kw(
        self,
        state: SiteState,
        charger_kw: FloatArray,
        battery_kw: FloatArray,
        *,
        box: projection.ChargerBox | None = None,
    ) -> ProjectionResult:
        """Project a kW request ``(B, n)``, ``(B,)`` (the path of every action and of ``step_kw``)."""
        return projection.project(
            self.site,
            state,
            charger_kw,
            battery_kw,
            plan=self.plan,
            box=box,
            departure_floor=self.departure_floor,
        )


def observe(
    sim: BatchSim, mapper: ActionMapper, layout: ObservationLayout, obs: F32Array
) -> tuple[SiteState, projection.ChargerBox]:
    """The simulator's state now and its charger box, with the observation written into ``obs``.

    The box is computed once a step for everything that needs it: the observation (``hi``), the action
    mapping and the projection (``box=``). Shared by :class:`ChargingSiteEnv` and the vector env.
    """
    state = sim.state()
    box = projection.charger_box(mapper.site, state, mapper.plan)
    layout.write(obs, sim, state, box.hi_kw)
    return state, box


class ChargingSiteEnv(gym.Env[np.ndarray, np.ndarray]):
    """One EV charging site: allocate power to chargers (and a stationary battery) every step.

    ## Action Space
    ``Box(-1, 1, (n_chargers + has_battery,), float32)``. ``action_mode="continuous"``: entry ``i`` asks
    charger ``i`` for ``a * hi`` kW when ``a >= 0`` and ``-a * lo`` kW when ``a < 0``, ``[lo, hi]`` being its
    feasible range now (rating, EV limits, energy room, V2G allowance; ``lo = 0`` without V2G).
    ``action_mode="priority"``: entries are scores; capacity is filled in descending score order. The last
    entry, with a battery, asks ``a * max_charge_kw`` (``a >= 0``) or ``a * max_discharge_kw``. Every
    request goes through :func:`envs.projection.project` (with its departure floor where
    ``departure_floor=True``); ``info["projection_moved_kw"]`` says how far.

    ## Observation Space
    A flat float32 ``Box`` described by :class:`envs.obs.ObservationLayout` (``env.layout``): per charger
    EV present, energy needed, time to departure, laxity, SoC, max power now, V2G allowed; per site the
    billing-period peak so far, battery SoC, time of day and week (sin/cos), base load, PV, prices,
    headroom; then an ``H``-step forecast of base load, PV and prices. Normalised and clipped to its bounds.

    ## Rewards
    Minus the step's cost from :func:`envs.costs.step_cost`: import cost - export revenue + demand charge
    on the increase of the billing-period peak + missing-energy penalty at departures + degradation.
    ``info["cost"]`` holds the parts; they sum to ``-reward``.

    ## Episode End
    ``terminated`` after the last step of the scenario or window; never ``truncated`` (use a
    ``TimeLimit`` wrapper for that). EVs still plugged in at the end are not penalised.

    ## Arguments
    The fields of :class:`EnvConfig`: ``scenario`` or ``generator``, ``step``, ``episode_steps``,
    ``forecast``, ``forecast_horizon``, ``action_mode``, ``allow_discharge``, ``departure_floor``,
    ``v2g_min_soc``, ``price_scale_per_kwh``, ``time_scale_h``.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(
        self,
        scenario: ScenarioLike | Sequence[ScenarioLike] | None = None,
        generator: GeneratorSpec | Mapping[str, object] | None = None,
        *,
        step: str | None = "15min",
        episode_steps: int | None = None,
        forecast: ForecastSource | None = None,
        forecast_horizon: int = 16,
        action_mode: ActionMode = "continuous",
        allow_discharge: bool = True,
        departure_floor: bool = False,
        v2g_min_soc: float = 0.2,
        price_scale_per_kwh: float = 0.25,
        time_scale_h: float = 24.0,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None:
            raise ValueError("ChargingSiteEnv does not render")
        self.config = EnvConfig.from_kwargs(
            scenario=scenario,
            generator=generator,
            step=step,
            episode_steps=episode_steps,
            forecast=forecast,
            forecast_horizon=forecast_horizon,
            action_mode=action_mode,
            allow_discharge=allow_discharge,
            departure_floor=departure_floor,
            v2g_min_soc=v2g_min_soc,
            price_scale_per_kwh=price_scale_per_kwh,
            time_scale_h=time_scale_h,
        )
        self._init_from(EpisodeSource(self.config))

    @classmethod
    def from_config(cls, config: EnvConfig) -> ChargingSiteEnv:
        config.validate()
        env = cls.__new__(cls)
        env.config = config
        env._init_from(EpisodeSource(config))
        return env

    def _init_from(self, source: EpisodeSource) -> None:
        self.render_mode = None
        self.source = source
        self.site: SiteArrays = source.site
        self.layout: ObservationLayout = source.layout()
        self.observation_space = self.layout.space()
        self.action_space = action_space_for(self.site)
        self._action_size = self.site.n + int(self.site.has_battery)
        self._mapper = ActionMapper(
            self.site, self.config.action_mode, self.config.allow_discharge, self.config.departure_floor
        )
        self._sim = BatchSim(self.site, 1, source.dt_h, self.layout.static_size)
        self._obs: F32Array = np.zeros((1, self.layout.size), dtype=np.float32)
        self._episode: Episode | None = None
        self._state: SiteState | None = None
        self._box: projection.ChargerBox | None = None
        self._import_limit = float(self.site.import_limit_kw)

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        episode = self.source.sample(self.np_random, options)
        self._episode = episode
        self._sim.load(0, episode, self.layout.static_block(episode))
        self._observe()
        info = {
            "scenario": episode.name,
            "start_step": episode.start_step,
            "n_steps": episode.n_steps,
            "sessions": episode.sessions.size,
            "dropped_sessions": episode.dropped_sessions,
            "import_limit_kw": self._import_limit,
        }
        return self._obs[0].copy(), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        state = self._require_state()
        a = np.asarray(action, dtype=float).reshape(1, -1)
        if a.shape[1] != self._action_size:
            raise ValueError(f"action must have {self._action_size} entries, got {a.shape[1]}")
        return self._advance(self._mapper.project(state, a, box=self._box))

    def step_kw(
        self, charger_kw: FloatArray | Sequence[float], battery_kw: float = 0.0
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Step with a request in kW per charger (+ charge, - discharge) and for the battery.

        The request is projected exactly like a normalised action: this is how rule-based, MPC and
        baseline policies (acting on :meth:`snapshot`) drive the env.
        """
        state = self._require_state()
        req = np.asarray(charger_kw, dtype=float).reshape(1, -1)
        if req.shape[1] != self.site.n:
            raise ValueError(f"charger_kw must have {self.site.n} entries, got {req.shape[1]}")
        b = float(battery_kw) if self.site.has_battery else 0.0
        if not self.config.allow_discharge:
            b = max(b, 0.0)
        return self._advance(self._mapper.project_kw(state, req, np.array([b]), box=self._box))

    def snapshot(self) -> Snapshot:
        """The current step as a :class:`~envs.core.Snapshot` (what rule-based and MPC policies act on)."""
        state = self._require_state()
        ep = self._episode
        assert ep is not None
        sim = self._sim
        t = int(sim.t[0])
        fc = ep.forecast[t]
        return Snapshot(
            state=state.row(0),
            timestamp=ep.timestamps[t],
            step_index=ep.start_step + t,
            import_price_per_kwh=float(ep.import_price_per_kwh[t]),
            export_price_per_kwh=float(ep.export_price_per_kwh[t]),
            forecast=ForecastWindow(fc[0].copy(), fc[1].copy(), fc[2].copy(), fc[3].copy()),
            peak_import_kw=float(sim.peak_so_far_kw()[0]),
            battery_kw_last=float(sim.battery_kw_last[0]),
        )

    @property
    def episode(self) -> Episode:
        """The compiled episode being run (after :meth:`reset`)."""
        if self._episode is None:
            raise RuntimeError("call reset() first")
        return self._episode

    @property
    def sim(self) -> BatchSim:
        return self._sim

    # ------------------------------------------------------------------ internals

    def _require_state(self) -> SiteState:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        return self._state

    def _observe(self) -> None:
        self._state, self._box = observe(self._sim, self._mapper, self.layout, self._obs)

    def _advance(self, result: ProjectionResult) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        out = self._sim.apply(result)
        self._observe()
        # row 0 of the outcome, converted to Python numbers at once (names: _OUTCOME_NAMES)
        (
            site_import, _, _, _, ev_dis, batt_dis, missing, energy, export, demand, missing_cost,
            degradation, reward, battery_kw, delivered, peak, soc, delivered_total, missing_total,
        ) = out.table[:, 0].tolist()  # fmt: skip
        departures, arrivals, terminated, step_index = out.counts[:, 0].tolist()
        if terminated:
            self._state = None
        info = {
            "site_import_kw": site_import,
            "import_limit_kw": self._import_limit,
            "charger_power_kw": out.charger_kw[0].copy(),
            "battery_kw": battery_kw,
            "battery_soc_kwh": soc,
            "cost": {
                "energy": energy,
                "export_revenue": -export,
                "demand_charge": demand,
                "missing_energy": missing_cost,
                "degradation": degradation,
            },
            "projection_moved_kw": float(out.moved_kw[0]),
            "feasible": bool(out.feasible[0]),
            "pv_curtailed_kw": float(out.pv_curtailed_kw[0]),
            "energy_delivered_kwh": delivered,
            "energy_delivered_total_kwh": delivered_total,
            "energy_missing_kwh": missing,
            "energy_missing_total_kwh": missing_total,
            "ev_discharged_kwh": ev_dis,
            "battery_discharged_kwh": batt_dis,
            "departures": departures,
            "arrivals": arrivals,
            "peak_import_kw": peak,
            "step_index": step_index,
        }
        return self._obs[0].copy(), reward, bool(terminated), False, info
