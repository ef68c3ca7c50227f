"""``ChargingSiteEnv``: one charging site as a Gymnasium environment (id ``evdlm/ChargingSite-v0``).

The physics (:mod:`envs.sim`), the safety projection (:mod:`envs.projection`) and the costs
(:mod:`envs.costs`) are the same code the baselines, evaluation and the live service use; this module only
projects the kW request it is given, builds observations and reports what happened. Other action spaces (a
normalised box, priority scores, a learned policy's action modes) are Gymnasium wrappers around it
(:mod:`envs.wrappers`, :mod:`agents.learned.wrappers`). See ``docs/environment.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs import projection
from envs.core import ForecastWindow, SiteArrays, SiteState, Snapshot
from envs.episodes import GENERATOR_SEED_SPAN, EnvConfig, EpisodeSource, GeneratorSpec, ScenarioLike
from envs.history import HistoryEpisodes
from envs.obs import F32Array, ObservationLayout
from envs.projection import ProjectionResult
from envs.sim import OUTCOME_COUNTS, OUTCOME_FLOATS, BatchSim, Episode, ForecastSource

__all__ = ["GENERATOR_SEED_SPAN", "ChargingSiteEnv", "EnvConfig", "GeneratorSpec", "kw_action_space"]

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


def kw_action_space(site: SiteArrays, allow_discharge: bool = True) -> spaces.Box:
    """The env's own action space: kW per charger (+ charge, - discharge), then the battery's kW.

    Bounds are the ratings (a bidirectional charger down to minus its rating where discharge is allowed);
    what an EV, the energy room or the limits allow now is the projection's business, not the space's.
    """
    rated = np.asarray(site.rated_kw, dtype=np.float32)
    bidir = np.asarray(site.bidirectional, dtype=bool) & allow_discharge
    low, high = np.where(bidir, -rated, 0.0).astype(np.float32), rated.copy()
    if site.has_battery:
        low = np.append(low, -site.battery_max_discharge_kw if allow_discharge else 0.0).astype(np.float32)
        high = np.append(high, site.battery_max_charge_kw).astype(np.float32)
    return spaces.Box(low, high, dtype=np.float32)


class ChargingSiteEnv(gym.Env[np.ndarray, np.ndarray]):
    """One EV charging site: allocate power to chargers (and a stationary battery) every step.

    ## Action Space
    The kW request: ``Box(low, high, (n_chargers + has_battery,), float32)`` (:func:`kw_action_space`),
    entry ``i`` the kW asked of charger ``i`` (+ charge, - discharge), the last entry, with a battery, the
    battery's kW. Every request goes through :func:`envs.projection.project` (with its departure floor
    where ``departure_floor=True``); ``info["projection_moved_kw"]`` says how far. A normalised
    ``Box(-1, 1)`` is :class:`envs.wrappers.NormalisedAction`, priority scores
    :class:`envs.wrappers.PriorityScores`.

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
    The fields of :class:`EnvConfig`: ``scenario``, ``generator`` or ``history``, ``step``, ``episode_steps``,
    ``forecast``, ``forecast_horizon``, ``allow_discharge``, ``departure_floor``,
    ``v2g_min_soc``, ``price_scale_per_kwh``, ``time_scale_h``.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(
        self,
        scenario: ScenarioLike | Sequence[ScenarioLike] | None = None,
        generator: GeneratorSpec | Mapping[str, object] | None = None,
        *,
        history: HistoryEpisodes | None = None,
        step: str | None = "15min",
        episode_steps: int | None = None,
        forecast: ForecastSource | None = None,
        forecast_horizon: int = 16,
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
            history=history,
            step=step,
            episode_steps=episode_steps,
            forecast=forecast,
            forecast_horizon=forecast_horizon,
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
        self.action_space = kw_action_space(self.site, self.config.allow_discharge)
        self._n, self._has_battery = self.site.n, self.site.has_battery
        self._action_size = self._n + int(self._has_battery)
        self._allow_discharge = self.config.allow_discharge
        self._departure_floor = self.config.departure_floor
        self.plan = projection.ProjectionPlan.from_site(self.site)
        """the site's projection plan, built once (wrappers that project reuse it)"""
        self._sim = BatchSim(self.site, 1, source.dt_h, self.layout.static_size)
        self._obs: F32Array = np.zeros((1, self.layout.size), dtype=np.float32)
        self._episode: Episode | None = None
        self._state: SiteState | None = None
        self._box: projection.ChargerBox | None = None
        self._snapshot: Snapshot | None = None
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
        """Step with the kW request ``action``: per charger (+ charge, - discharge), then the battery.

        The request is projected (:func:`envs.projection.project`); without ``allow_discharge`` the
        battery's request is floored at 0 (the chargers' V2G bound is the projection's).
        """
        state = self._require_state()
        a = np.asarray(action, dtype=float).reshape(-1)
        n = self._n
        if a.shape[0] != self._action_size:
            raise ValueError(f"action must have {self._action_size} entries (kW), got {a.shape[0]}")
        b = float(a[n]) if self._has_battery else 0.0
        if not self._allow_discharge:
            b = max(b, 0.0)
        res = projection.project(
            self.site, state, a[None, :n], np.array([b]), plan=self.plan, box=self._box,
            departure_floor=self._departure_floor,
        )  # fmt: skip
        return self._advance(res)

    def close(self) -> None:
        """Stops the background generation of a generator with ``prefetch`` (nothing else to release)."""
        self.source.close()
        super().close()

    def snapshot(self) -> Snapshot:
        """The current step as a :class:`~envs.core.Snapshot` (what every policy acts on); the same object
        until the next step or reset."""
        if self._snapshot is not None:
            return self._snapshot
        state = self._require_state()
        ep = self._episode
        assert ep is not None
        sim = self._sim
        t = int(sim.t[0])
        fc = ep.forecast[t]
        self._snapshot = Snapshot(
            state=state.row(0),
            timestamp=ep.timestamps[t],
            step_index=ep.start_step + t,
            import_price_per_kwh=float(ep.import_price_per_kwh[t]),
            export_price_per_kwh=float(ep.export_price_per_kwh[t]),
            forecast=ForecastWindow(fc[0].copy(), fc[1].copy(), fc[2].copy(), fc[3].copy()),
            peak_import_kw=float(sim.peak_so_far_kw()[0]),
            battery_kw_last=float(sim.battery_kw_last[0]),
        )
        return self._snapshot

    @property
    def episode(self) -> Episode:
        """The compiled episode being run (after :meth:`reset`)."""
        if self._episode is None:
            raise RuntimeError("call reset() first")
        return self._episode

    @property
    def sim(self) -> BatchSim:
        return self._sim

    @property
    def state(self) -> SiteState:
        """The simulator's state now, as a batch of one (after :meth:`reset`, before the episode ends)."""
        return self._require_state()

    @property
    def charger_box(self) -> projection.ChargerBox:
        """:func:`envs.projection.charger_box` of the state now, computed once a step (the observation,
        the projection and the action wrappers share it)."""
        box = self._box
        if box is None:
            raise RuntimeError("call reset() first (or again: the episode has ended)")
        return box

    # ------------------------------------------------------------------ internals

    def _require_state(self) -> SiteState:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        return self._state

    def _observe(self) -> None:
        self._snapshot = None
        state = self._sim.state()
        box = projection.charger_box(self.site, state, self.plan)
        self.layout.write(self._obs, self._sim, state, box.hi_kw)
        self._state, self._box = state, box

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
            self._state = self._box = None
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
