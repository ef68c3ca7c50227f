"""Learned policies: a trained stable-baselines3 model behind the one :class:`~agents.base.Policy` protocol.

A learned policy acts on a :class:`~envs.core.Snapshot`, like every other policy, so evaluation and the
live service treat it alike. Three pieces, shared by training and acting so that both run the same code:

* :class:`SnapshotObserver` builds the environment's observation from a snapshot: the features are
  computed by :class:`envs.obs.ObservationLayout` (the env's own code); this module only presents the
  snapshot to it. A snapshot does not carry the EVs' state of charge, so that feature reads "unknown".
* :class:`ActionAdapter` turns the agent's action into a :class:`~agents.base.Decision`:
  ``residual`` (the default) adds a per-charger kW correction (and one for the stationary battery) to the
  rule-based DLM's decision; ``priority`` and ``continuous`` map the action with the env's own
  :class:`envs.env.ActionMapper`. The decision then goes through the safety projection as always.
* :class:`SnapshotControlEnv` wraps :class:`envs.env.ChargingSiteEnv` so that the agent trains on exactly
  these observations and decisions.

A trained policy is saved as a *bundle* folder: ``model.zip`` (SB3), ``vecnormalize.pkl`` (observation
statistics), ``site.yaml`` (the site it was trained for) and ``policy.json`` (:class:`PolicyMeta`, with a
fingerprint of the observation layout). :meth:`LearnedPolicy.reset` refuses a site whose charger count or
observation layout differs from the one it was trained for (:class:`SiteMismatchError`).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from zoneinfo import ZoneInfo

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from agents.base import Decision
from agents.rule_based import RuleBasedDLM
from envs.config import SiteConfig, dump_site, load_site
from envs.core import FloatArray, SiteArrays, SiteState, Snapshot
from envs.obs import F32Array, ObservationLayout
from envs.projection import charger_bounds
from envs.scenario import Scenario

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecNormalize

    from envs.env import ChargingSiteEnv
    from envs.sim import BatchSim, Episode

ActionMode = Literal["residual", "priority", "continuous"]
BUNDLE_META = "policy.json"
MODEL_FILE = "model.zip"
VECNORM_FILE = "vecnormalize.pkl"
SITE_FILE = "site.yaml"
BUNDLE_FORMAT = 1


class SiteMismatchError(ValueError):
    """The site a learned policy is asked to control is not the kind of site it was trained for."""


# --------------------------------------------------------------------------- observation


@dataclass(frozen=True)
class ObservationSpec:
    """What fixes the observation besides the site: the forecast horizon and the scales."""

    horizon: int = 16
    price_scale_per_kwh: float = 0.25
    time_scale_h: float = 24.0


def layout_for(site: SiteArrays, spec: ObservationSpec) -> ObservationLayout:
    """The env's observation layout for ``site`` (as :class:`envs.env.ChargingSiteEnv` builds it)."""
    return ObservationLayout(
        n_chargers=site.n,
        horizon=spec.horizon,
        power_scale_kw=site.import_limit_kw,
        price_scale_per_kwh=spec.price_scale_per_kwh,
        time_scale_h=spec.time_scale_h,
        rated_kw=site.rated_kw,
        efficiency=site.efficiency,
        import_limit_kw=site.import_limit_kw,
        has_battery=site.has_battery,
        battery_soc_min_kwh=site.battery_soc_min_kwh,
        battery_soc_max_kwh=site.battery_soc_max_kwh,
    )


def action_dim(site: SiteArrays) -> int:
    """One entry per charger, plus one for the stationary battery if the site has one."""
    return site.n + int(site.has_battery)


def layout_fingerprint(layout: ObservationLayout, mode: ActionMode, act_dim: int) -> str:
    """A short hash of everything that fixes what each observation and action entry means."""
    desc = {
        "names": layout.names(),
        "n_chargers": layout.n_chargers,
        "horizon": layout.horizon,
        "price_scale_per_kwh": layout.price_scale_per_kwh,
        "time_scale_h": layout.time_scale_h,
        "has_battery": layout.has_battery,
        "action_mode": mode,
        "act_dim": act_dim,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


def _time_features(timestamp: np.datetime64, timezone: ZoneInfo) -> FloatArray:
    """(1, 4) sin/cos of the site-local time of day and week, as :func:`envs.sim.compile_episode` has them."""
    seconds = int(np.asarray(timestamp).astype("datetime64[us]").astype(np.int64)) / 1e6
    local = datetime.fromtimestamp(seconds, tz=UTC).astimezone(timezone)
    hours = local.hour + local.minute / 60.0 + (local.second + local.microsecond / 1e6) / 3600.0
    week_h = local.weekday() * 24.0 + hours
    tod, tow = 2 * np.pi * hours / 24.0, 2 * np.pi * week_h / 168.0
    return np.array([[np.sin(tod), np.cos(tod), np.sin(tow), np.cos(tow)]])


@dataclass(frozen=True, eq=False)
class _StepWindow:
    """One step as the part of :class:`envs.sim.Episode` that the observation's static block reads."""

    time_features: FloatArray
    base_load_kw: FloatArray
    pv_kw: FloatArray
    import_price_per_kwh: FloatArray
    export_price_per_kwh: FloatArray
    forecast: FloatArray


class _SnapshotView:
    """A one-row view of a snapshot with the attributes :meth:`ObservationLayout.write` reads of a
    :class:`envs.sim.BatchSim`: what the snapshot's state says, nothing delivered yet in its books, and
    the state of charge unknown (a snapshot does not carry it)."""

    batch = 1

    def __init__(self, site: SiteArrays, state: SiteState, peak_kw: float, static: F32Array) -> None:
        present = np.asarray(state.ev_present, dtype=bool)[None, :]
        self.present = present
        self.present_f = present.astype(float)
        self.request_kwh = np.asarray(state.energy_needed_kwh, dtype=float)[None, :]
        self.net_kwh = np.zeros_like(self.request_kwh)
        self.ev_max_charge_kw = np.asarray(state.ev_max_charge_kw, dtype=float)[None, :]
        self.ev_max_discharge_kw = np.asarray(state.ev_max_discharge_kw, dtype=float)[None, :]
        self.v2g = (self.ev_max_discharge_kw > 0).astype(float)
        rate_kw = np.minimum(site.rated_kw, self.ev_max_charge_kw) * site.efficiency
        self.h_per_kwh = np.where(present, 1.0 / np.where(present, rate_kw, 1.0), 0.0)
        self.soc_base = np.where(present, -1.0, 0.0)
        self.inv_battery = np.zeros_like(self.request_kwh)
        self.peak_kw = np.array([peak_kw])
        self.battery_soc_kwh = np.array([float(np.asarray(state.battery_soc_kwh))])
        self._time_left = np.where(present, np.asarray(state.time_left_h, dtype=float)[None, :], 0.0)
        self._static = static

    def time_left_h(self) -> FloatArray:
        return self._time_left

    def energy_needed_kwh(self) -> FloatArray:
        return self.request_kwh

    def soc(self) -> FloatArray:
        return self.soc_base

    def peak_so_far_kw(self) -> FloatArray:
        return self.peak_kw

    def static_obs(self) -> F32Array:
        return self._static


def batched(state: SiteState) -> SiteState:
    """A one-row batch ``(1, n)`` of an unbatched :class:`SiteState`."""

    def row(x: object) -> Any:
        return np.asarray(x)[None, ...]

    return SiteState(
        ev_present=row(state.ev_present),
        ev_max_charge_kw=row(state.ev_max_charge_kw),
        ev_max_discharge_kw=row(state.ev_max_discharge_kw),
        energy_needed_kwh=row(state.energy_needed_kwh),
        energy_room_kwh=row(state.energy_room_kwh),
        energy_dischargeable_kwh=row(state.energy_dischargeable_kwh),
        time_left_h=row(state.time_left_h),
        base_load_kw=row(state.base_load_kw),
        pv_kw=row(state.pv_kw),
        battery_soc_kwh=row(state.battery_soc_kwh),
        dt_h=state.dt_h,
        priority=None if state.priority is None else row(state.priority),
    )


@dataclass(frozen=True, eq=False)
class Observed:
    """A snapshot as the agent sees it, with the batched state and charger bounds the action needs."""

    obs: F32Array
    """(size,) the observation"""
    state: SiteState
    """the snapshot's state as a batch of one"""
    lo_kw: FloatArray
    hi_kw: FloatArray


class SnapshotObserver:
    """Builds the env's observation (:class:`envs.obs.ObservationLayout`) from a :class:`Snapshot`."""

    def __init__(self, site: SiteArrays, spec: ObservationSpec) -> None:
        self.site = site
        self.spec = spec
        self.layout = layout_for(site, spec)
        self._timezone = ZoneInfo(site.config.timezone)

    def observe(self, snapshot: Snapshot) -> Observed:
        H = self.layout.horizon
        fc = snapshot.forecast
        if fc.horizon < H + 1:
            raise ValueError(
                f"the snapshot's forecast covers {fc.horizon} steps; this policy needs {H + 1} (now + {H})"
            )
        st = snapshot.state
        window = np.stack(
            [
                np.asarray(fc.base_load_kw, dtype=float)[: H + 1],
                np.asarray(fc.pv_kw, dtype=float)[: H + 1],
                np.asarray(fc.import_price_per_kwh, dtype=float)[: H + 1],
                np.asarray(fc.export_price_per_kwh, dtype=float)[: H + 1],
            ]
        )[None, :, :]
        step = _StepWindow(
            time_features=_time_features(snapshot.timestamp, self._timezone),
            base_load_kw=np.array([float(np.asarray(st.base_load_kw))]),
            pv_kw=np.array([float(np.asarray(st.pv_kw))]),
            import_price_per_kwh=np.array([snapshot.import_price_per_kwh]),
            export_price_per_kwh=np.array([snapshot.export_price_per_kwh]),
            forecast=window,
        )
        static = self.layout.static_block(cast("Episode", step))
        state = batched(st)
        lo, hi = charger_bounds(self.site, state)
        out = np.zeros((1, self.layout.size), dtype=np.float32)
        view = _SnapshotView(self.site, st, snapshot.peak_import_kw, static)
        self.layout.write(out, cast("BatchSim", view), state, np.asarray(hi, dtype=float))
        return Observed(out[0], state, np.asarray(lo, dtype=float), np.asarray(hi, dtype=float))


# --------------------------------------------------------------------------- action


@dataclass(frozen=True)
class _EpisodeEnd:
    """The one thing :meth:`RuleBasedDLM.reset` reads of a scenario: its end."""

    end: pd.Timestamp


class ActionAdapter:
    """Turns a normalised action ``(act_dim,)`` in ``[-1, 1]`` into a :class:`Decision` (see module doc).

    residual: charger ``i`` asks the rule-based DLM's kW plus ``a_i * residual_scale * rated_kw_i``; the
    battery entry adds ``a * residual_scale`` times its charge (``a >= 0``) or discharge rating.
    """

    def __init__(
        self, site: SiteArrays, mode: ActionMode, allow_discharge: bool = True, residual_scale: float = 0.5
    ) -> None:
        from envs.env import ActionMapper

        self.site = site
        self.mode = mode
        self.allow_discharge = allow_discharge
        self.residual_scale = residual_scale
        self.act_dim = action_dim(site)
        self._mapper = ActionMapper(site, "priority" if mode == "priority" else "continuous", allow_discharge)
        self._base = RuleBasedDLM(v2g=allow_discharge, use_battery=True) if mode == "residual" else None

    def reset(self, episode_end: pd.Timestamp | None = None) -> None:
        """Start of an episode; ``episode_end`` (tz-aware), when known, tells the rule-based base how long
        the episode's billing horizon is (as the scenario tells the rule-based DLM in evaluation)."""
        if self._base is not None:
            known = None if episode_end is None else cast("Scenario", _EpisodeEnd(episode_end))
            self._base.reset(self.site, known)

    def decide(self, snapshot: Snapshot, observed: Observed, action: FloatArray) -> Decision:
        a = np.clip(np.asarray(action, dtype=float).reshape(1, -1), -1.0, 1.0)
        if a.shape[1] != self.act_dim:
            raise ValueError(f"action must have {self.act_dim} entries, got {a.shape[1]}")
        site = self.site
        if self._base is not None:
            base = self._base.act(snapshot)
            request_kw = np.asarray(base.charger_kw, dtype=float) + a[0, : site.n] * (
                self.residual_scale * site.rated_kw
            )
            if not self.allow_discharge:
                request_kw = np.maximum(request_kw, 0.0)
            battery_kw = float(base.battery_kw) + float(self._mapper.battery_kw(a)[0]) * self.residual_scale
            return Decision(request_kw, battery_kw)
        if self.mode == "priority":
            res = self._mapper.project(observed.state, observed.lo_kw, observed.hi_kw, a)
            return Decision(
                np.asarray(res.charger_kw, dtype=float)[0].copy(), float(np.asarray(res.battery_kw)[0])
            )
        req_kw, req_battery_kw = self._mapper.request(observed.state, observed.lo_kw, observed.hi_kw, a)
        return Decision(np.asarray(req_kw, dtype=float)[0].copy(), float(np.asarray(req_battery_kw)[0]))


# --------------------------------------------------------------------------- training wrapper


class SnapshotControlEnv(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """:class:`envs.env.ChargingSiteEnv` seen through a learned policy's observer and action adapter.

    Observations are built from ``env.snapshot()`` and actions become kW requests stepped with
    ``env.step_kw`` (projected there), so training sees exactly what :class:`LearnedPolicy` sees when it
    acts on snapshots in evaluation or serving. Reward, termination and ``info`` are the env's.
    """

    def __init__(
        self,
        env: ChargingSiteEnv,
        mode: ActionMode,
        allow_discharge: bool = True,
        residual_scale: float = 0.5,
    ) -> None:
        super().__init__(env)
        self.site_env = env
        spec = ObservationSpec(
            horizon=env.config.forecast_horizon,
            price_scale_per_kwh=env.config.price_scale_per_kwh,
            time_scale_h=env.config.time_scale_h,
        )
        self.observer = SnapshotObserver(env.site, spec)
        self.adapter = ActionAdapter(env.site, mode, allow_discharge, residual_scale)
        self.observation_space = self.observer.layout.space()
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.adapter.act_dim,), dtype=np.float32)
        self._snapshot: Snapshot | None = None
        self._observed: Observed | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        _, info = self.site_env.reset(seed=seed, options=options)
        end = self.site_env.episode.timestamps[-1]  # the window end, UTC
        self.adapter.reset(pd.Timestamp(end).tz_localize("UTC"))
        return self._observe(), info

    def _observe(self) -> np.ndarray:
        self._snapshot = self.site_env.snapshot()
        self._observed = self.observer.observe(self._snapshot)
        return self._observed.obs.copy()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._snapshot is None or self._observed is None:
            raise RuntimeError("call reset() before step()")
        decision = self.adapter.decide(self._snapshot, self._observed, action)
        _, reward, terminated, truncated, info = self.site_env.step_kw(
            decision.charger_kw, decision.battery_kw
        )
        if terminated:
            obs = self._observed.obs.copy()  # no bootstrapping past a terminal step: any valid obs will do
            self._snapshot = self._observed = None
        else:
            obs = self._observe()
        return obs, reward, terminated, truncated, info


# --------------------------------------------------------------------------- the policy


@dataclass(frozen=True)
class PolicyMeta:
    """What a learned policy was trained for (``policy.json`` in its bundle)."""

    name: str
    algorithm: str
    action_mode: ActionMode
    residual_scale: float
    allow_discharge: bool
    n_chargers: int
    has_battery: bool
    horizon: int
    price_scale_per_kwh: float
    time_scale_h: float
    obs_dim: int
    act_dim: int
    layout_fingerprint: str
    trained_timesteps: int = 0
    site_name: str = ""
    format: int = BUNDLE_FORMAT

    @property
    def observation(self) -> ObservationSpec:
        return ObservationSpec(self.horizon, self.price_scale_per_kwh, self.time_scale_h)

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], source: str = "policy.json") -> PolicyMeta:
        if data.get("format") != BUNDLE_FORMAT:
            raise ValueError(
                f"{source}: bundle format {data.get('format')!r}, this evdlm reads {BUNDLE_FORMAT}"
            )
        try:
            return cls(**data)
        except TypeError as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def describe(
        cls,
        name: str,
        algorithm: str,
        site: SiteArrays,
        spec: ObservationSpec,
        mode: ActionMode,
        allow_discharge: bool,
        residual_scale: float,
        trained_timesteps: int = 0,
    ) -> PolicyMeta:
        layout = layout_for(site, spec)
        act = action_dim(site)
        return cls(
            name=name,
            algorithm=algorithm,
            action_mode=mode,
            residual_scale=residual_scale,
            allow_discharge=allow_discharge,
            n_chargers=site.n,
            has_battery=site.has_battery,
            horizon=spec.horizon,
            price_scale_per_kwh=spec.price_scale_per_kwh,
            time_scale_h=spec.time_scale_h,
            obs_dim=layout.size,
            act_dim=act,
            layout_fingerprint=layout_fingerprint(layout, mode, act),
            trained_timesteps=trained_timesteps,
            site_name=site.config.name,
        )


def detached_statistics(vecnorm: VecNormalize) -> VecNormalize:
    """A copy of VecNormalize's statistics without its env, frozen (not updating), picklable again."""
    return _frozen(pickle.loads(pickle.dumps(vecnorm)))


def _frozen(unpickled: VecNormalize) -> VecNormalize:
    """Make unpickled statistics usable (and picklable) without an env; stop them updating."""
    unpickled.training = False
    unpickled.class_attributes = {}
    unpickled.returns = np.zeros(1)
    return unpickled


def _algorithm_class(name: str) -> type[BaseAlgorithm]:
    from stable_baselines3 import PPO, SAC, TD3

    classes: dict[str, type[BaseAlgorithm]] = {"PPO": PPO, "SAC": SAC, "TD3": TD3}
    if name not in classes:
        raise ValueError(f"unknown algorithm {name!r} (known: {sorted(classes)})")
    return classes[name]


class LearnedPolicy:
    """A trained SB3 model acting on snapshots (see the module doc). Deterministic: the mean action.

    ``vecnormalize`` holds the observation statistics the model was trained with (None: raw
    observations). ``site`` is the configuration it was trained for, kept for reference and serving.
    """

    def __init__(
        self,
        model: BaseAlgorithm,
        meta: PolicyMeta,
        vecnormalize: VecNormalize | None = None,
        site: SiteConfig | None = None,
    ) -> None:
        self.model = model
        self.meta = meta
        self.vecnormalize = vecnormalize
        self.trained_site = site
        self.name = meta.name
        self._observer: SnapshotObserver | None = None
        self._adapter: ActionAdapter | None = None

    def without_discharge(self) -> LearnedPolicy:
        """The same trained policy with V2G and battery discharge disabled (to measure what V2G adds)."""
        from dataclasses import replace

        meta = replace(self.meta, name=f"{self.meta.name}-no-discharge", allow_discharge=False)
        return LearnedPolicy(self.model, meta, self.vecnormalize, self.trained_site)

    # ------------------------------------------------------------------ persistence

    @classmethod
    def from_bundle(cls, path: str | Path) -> LearnedPolicy:
        folder = Path(path)
        meta_path = folder / BUNDLE_META
        if not meta_path.exists():
            raise FileNotFoundError(f"{folder}: not a learned-policy bundle (no {BUNDLE_META})")
        meta = PolicyMeta.from_json_dict(json.loads(meta_path.read_text()), str(meta_path))
        model = _algorithm_class(meta.algorithm).load(folder / MODEL_FILE, device="cpu")
        vecnorm = None
        if (folder / VECNORM_FILE).exists():
            with open(folder / VECNORM_FILE, "rb") as fh:
                vecnorm = _frozen(pickle.load(fh))
        site = load_site(folder / SITE_FILE) if (folder / SITE_FILE).exists() else None
        return cls(model, meta, vecnorm, site)

    def save_bundle(self, path: str | Path) -> Path:
        """Write the bundle folder (model, statistics, site, ``policy.json``)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / MODEL_FILE)
        if self.vecnormalize is not None:
            with open(folder / VECNORM_FILE, "wb") as fh:
                pickle.dump(self.vecnormalize, fh)
        if self.trained_site is not None:
            dump_site(self.trained_site, folder / SITE_FILE)
        (folder / BUNDLE_META).write_text(
            json.dumps(self.meta.to_json_dict(), indent=2, sort_keys=True) + "\n"
        )
        return folder

    # ------------------------------------------------------------------ acting

    def predict_observation(self, obs: np.ndarray) -> F32Array:
        """Actions ``(B, act_dim)`` (float32, in ``[-1, 1]``) for raw observations ``(B, obs_dim)``."""
        x = np.asarray(obs, dtype=np.float32)
        x2 = x.reshape(1, -1) if x.ndim == 1 else x
        if x2.shape[-1] != self.meta.obs_dim:
            raise SiteMismatchError(
                f"{self.name}: observation has {x2.shape[-1]} entries, the policy was trained on "
                f"{self.meta.obs_dim}"
            )
        if self.vecnormalize is not None:
            x2 = np.asarray(self.vecnormalize.normalize_obs(x2), dtype=np.float32)
        action, _ = self.model.predict(x2, deterministic=True)
        return np.clip(np.asarray(action, dtype=np.float32).reshape(len(x2), -1), -1.0, 1.0)

    def check_site(self, site: SiteArrays) -> None:
        """Raise :class:`SiteMismatchError` unless ``site`` has the charger count and observation layout
        this policy was trained for."""
        m = self.meta
        if site.n != m.n_chargers:
            raise SiteMismatchError(
                f"policy {m.name!r} was trained for a site with {m.n_chargers} chargers; site "
                f"{site.config.name!r} has {site.n}"
            )
        layout = layout_for(site, m.observation)
        fp = layout_fingerprint(layout, m.action_mode, action_dim(site))
        if fp != m.layout_fingerprint:
            why = []
            if site.has_battery != m.has_battery:
                why.append(f"stationary battery: trained {m.has_battery}, site {site.has_battery}")
            if layout.size != m.obs_dim:
                why.append(f"observation size: trained {m.obs_dim}, site {layout.size}")
            raise SiteMismatchError(
                f"policy {m.name!r} does not fit site {site.config.name!r}: observation layout fingerprint "
                f"{fp} != trained {m.layout_fingerprint}" + (f" ({'; '.join(why)})" if why else "")
            )

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        self.check_site(site)
        m = self.meta
        self._observer = SnapshotObserver(site, m.observation)
        self._adapter = ActionAdapter(site, m.action_mode, m.allow_discharge, m.residual_scale)
        self._adapter.reset(None if scenario is None else scenario.end)

    def act(self, snapshot: Snapshot) -> Decision:
        if self._observer is None or self._adapter is None:
            raise RuntimeError(f"{self.name}: call reset(site) before act()")
        observed = self._observer.observe(snapshot)
        action = self.predict_observation(observed.obs)[0]
        return self._adapter.decide(snapshot, observed, action)


def is_learned_spec(spec: str) -> bool:
    """True for a spec that names a learned policy: an MLflow URI or a folder holding one."""
    if spec.startswith(("models:/", "runs:/")):
        return True
    path = Path(spec)
    return path.is_dir() and ((path / BUNDLE_META).exists() or (path / "MLmodel").exists())


def learned_loader(spec: str) -> LearnedPolicy | None:
    """Registry loader (:mod:`agents.registry`): a learned policy by bundle folder, MLflow model folder or
    ``models:/`` / ``runs:/`` URI; None for any other spec."""
    if not is_learned_spec(spec):
        return None
    if (Path(spec) / BUNDLE_META).exists():
        return LearnedPolicy.from_bundle(spec)
    from training.mlflow_model import load_learned_policy

    return load_learned_policy(spec)
