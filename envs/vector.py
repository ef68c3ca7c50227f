"""A batched environment: ``B`` charging sites of one configuration stepped together in numpy.

:class:`ChargingSiteVectorEnv` is a :class:`gymnasium.vector.VectorEnv` whose rows are episodes of the
same site (new generated scenarios, or other windows/scenarios of the same site), stepped by one
:class:`~envs.sim.BatchSim` and one batched call of the safety projection: no Python loop over chargers
or rows in a step. Rows reset themselves when their episode ends (``autoreset_mode`` ``SAME_STEP``: the
returned observation is the new episode's first, the terminal one is in ``info["final_obs"]``).

It behaves exactly like a :class:`gymnasium.vector.SyncVectorEnv` of :class:`~envs.env.ChargingSiteEnv`
with the same autoreset mode: ``reset(seed=s)`` seeds row ``i`` with ``s + i``.

:func:`make_vec_env` wraps it as a stable-baselines3 ``VecEnv`` (:class:`SB3VecEnv`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs import projection
from envs.env import ActionMapper, EnvConfig, EpisodeSource, action_space_for, observe
from envs.obs import F32Array
from envs.sim import BatchSim, StepOutcome

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv


def _per_row(options: Mapping[str, Any] | None, b: int, n: int) -> dict[str, Any] | None:
    """Options for row ``b``: a sequence value of length ``n`` gives one entry per row."""
    if not options:
        return None
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, Sequence | np.ndarray) and not isinstance(value, str):
            if len(value) != n:
                raise ValueError(f"reset option {key!r}: expected {n} values (one per env), got {len(value)}")
            out[key] = value[b]
        else:
            out[key] = value
    return out


class ChargingSiteVectorEnv(VectorEnv[np.ndarray, np.ndarray, np.ndarray]):
    """``num_envs`` episodes of one charging site, stepped together.

    Spaces, action mapping, rewards and observations are those of :class:`~envs.env.ChargingSiteEnv`
    (``single_observation_space``, ``single_action_space``). ``infos`` from :meth:`step` is a dict of
    arrays over rows: ``site_import_kw``, ``charger_power_kw`` ``(B, n)``, ``battery_kw``,
    ``projection_moved_kw``, ``feasible``, ``pv_curtailed_kw``, ``energy_delivered_kwh``,
    ``energy_missing_kwh``, ``ev_discharged_kwh``, ``peak_import_kw``, ``cost`` (a dict of ``(B,)`` parts
    summing to ``-rewards``), and, for rows whose episode ended, ``final_obs`` / ``final_info`` (with the
    ``_final_obs`` / ``_final_info`` masks) where ``final_info`` holds each finished episode's totals.
    """

    metadata: dict[str, Any] = {  # noqa: RUF012 (gymnasium's class attribute)
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": [],
    }

    def __init__(self, num_envs: int, config: EnvConfig | None = None, **kwargs: Any) -> None:
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        if config is None:
            config = EnvConfig.from_kwargs(**kwargs)
        elif kwargs:
            raise ValueError("give either config= or keyword arguments, not both")
        config.validate()
        self.config = config
        self.num_envs = num_envs
        self.source = EpisodeSource(config)
        self.site = self.source.site
        self.layout = self.source.layout()
        self.single_observation_space = self.layout.space()
        self.single_action_space = action_space_for(self.site)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._mapper = ActionMapper(
            self.site, config.action_mode, config.allow_discharge, config.departure_floor
        )
        self._sim = BatchSim(self.site, num_envs, self.source.dt_h, self.layout.static_size)
        self._obs: F32Array = np.zeros((num_envs, self.layout.size), dtype=np.float32)
        self._rngs = [seeding.np_random(None)[0] for _ in range(num_envs)]
        self._episode_return = np.zeros(num_envs)
        self._episode_len = np.zeros(num_envs, dtype=np.int64)
        self._ready = False
        self._box: projection.ChargerBox | None = None

    @property
    def sim(self) -> BatchSim:
        return self._sim

    # ------------------------------------------------------------------ API

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every row. ``seed``: an int seeds row ``i`` with ``seed + i``; a sequence gives each row's
        seed (None keeps that row's generator); omitted, rows continue their own generators. ``options``
        are those of :meth:`ChargingSiteEnv.reset`; a sequence value gives one entry per row."""
        B = self.num_envs
        if isinstance(seed, int | np.integer):
            seeds: list[int | None] = [int(seed) + b for b in range(B)]
        elif seed is None:
            seeds = [None] * B
        else:
            seeds = list(seed)
            if len(seeds) != B:
                raise ValueError(f"expected {B} seeds, got {len(seeds)}")
        for b, s in enumerate(seeds):
            if s is not None:
                self._rngs[b] = seeding.np_random(s)[0]
        names, starts = [], np.zeros(B, dtype=np.int64)
        for b in range(B):
            name, starts[b] = self._load_row(b, _per_row(options, b, B))
            names.append(name)
        self._observe()
        self._ready = True
        self._episode_return[:] = 0.0
        self._episode_len[:] = 0
        return self._obs.copy(), {"scenario": np.array(names, dtype=object), "start_step": starts}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._ready:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(actions, dtype=float).reshape(self.num_envs, -1)
        size = self.site.n + int(self.site.has_battery)
        if a.shape[1] != size:
            raise ValueError(f"actions must be ({self.num_envs}, {size})")
        result = self._mapper.project(self._state, a, box=self._box)
        out = self._sim.apply(result)
        self._episode_return += out.reward
        self._episode_len += 1
        infos = self._infos(out)
        done = out.terminated
        if done.any():
            self._observe()  # terminal observations of the finished rows
            rows = np.flatnonzero(done)
            final_obs = np.full(self.num_envs, None, dtype=object)
            for b in rows:
                final_obs[b] = self._obs[b].copy()
            infos["final_obs"] = final_obs
            infos["_final_obs"] = done.copy()
            infos["final_info"] = {
                "episode_return": np.where(done, self._episode_return, 0.0),
                "episode_length": np.where(done, self._episode_len, 0),
                "energy_delivered_total_kwh": np.where(done, self._sim.delivered_total_kwh, 0.0),
                "energy_missing_total_kwh": np.where(done, self._sim.missing_total_kwh, 0.0),
                "cost_total": np.where(done, self._sim.cost_total, 0.0),
                "peak_import_kw": np.where(done, self._sim.peak_kw, 0.0),
            }
            infos["_final_info"] = done.copy()
            for b in rows:
                self._load_row(int(b), None)
            self._episode_return[done] = 0.0
            self._episode_len[done] = 0
        self._observe()
        return (
            self._obs.copy(),
            out.reward.copy(),
            done.copy(),
            np.zeros(self.num_envs, dtype=bool),
            infos,
        )

    def close_extras(self, **kwargs: Any) -> None:
        self._ready = False

    # ------------------------------------------------------------------ internals

    def _load_row(self, b: int, options: Mapping[str, Any] | None) -> tuple[str, int]:
        episode = self.source.sample(self._rngs[b], options)
        self._sim.load(b, episode, self.layout.static_block(episode))
        return episode.name, episode.start_step

    def _observe(self) -> None:
        self._state, self._box = observe(self._sim, self._mapper, self.layout, self._obs)

    def _infos(self, out: StepOutcome) -> dict[str, Any]:
        c = out.cost
        B = self.num_envs
        return {
            "site_import_kw": out.site_import_kw.copy(),
            "import_limit_kw": np.full(B, self.site.import_limit_kw),
            "charger_power_kw": out.charger_kw.copy(),
            "battery_kw": out.battery_kw.copy(),
            "projection_moved_kw": out.moved_kw.copy(),
            "feasible": out.feasible.copy(),
            "pv_curtailed_kw": out.pv_curtailed_kw.copy(),
            "energy_delivered_kwh": out.delivered_kwh,
            "energy_missing_kwh": out.missing_kwh,
            "ev_discharged_kwh": out.ev_discharged_kwh,
            "battery_discharged_kwh": np.asarray(out.battery_discharged_kwh),
            "peak_import_kw": out.peak_import_kw.copy(),
            "cost": {
                "energy": np.broadcast_to(c.energy, (B,)).copy(),
                "export_revenue": -np.broadcast_to(c.export_revenue, (B,)),
                "demand_charge": np.broadcast_to(c.demand_charge, (B,)).copy(),
                "missing_energy": np.broadcast_to(c.missing_energy, (B,)).copy(),
                "degradation": np.broadcast_to(c.degradation, (B,)).copy(),
            },
        }


@functools.cache
def sb3_adapter_class() -> Callable[..., VecEnv]:
    """The :class:`SB3VecEnv` class (defined on first use: importing stable-baselines3 loads torch)."""
    from stable_baselines3.common.vec_env import VecEnv as _VecEnv

    return _define_sb3_adapter(_VecEnv)


def __getattr__(name: str) -> Any:
    if name == "SB3VecEnv":
        return sb3_adapter_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _define_sb3_adapter(base: type) -> type:
    class SB3VecEnv(base):
        """A stable-baselines3 ``VecEnv`` over :class:`ChargingSiteVectorEnv` (same-step autoreset).

        ``infos[i]`` is empty except at an episode end, where it holds ``terminal_observation``,
        ``TimeLimit.truncated`` (False) and the episode totals (``episode_return``, ``cost_total``,
        ``energy_missing_total_kwh`` ...). With ``full_info=True`` every step's per-row info is given.
        """

        def __init__(self, venv: ChargingSiteVectorEnv, full_info: bool = False) -> None:
            self.venv = venv
            self.full_info = full_info
            self._actions: np.ndarray | None = None
            super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

        def reset(self) -> np.ndarray:
            seeds = self._seeds if any(s is not None for s in self._seeds) else None
            opts = self._options if any(self._options) else None
            options: dict[str, Any] | None = None
            if opts is not None:
                keys = {k for o in opts for k in o}
                options = {k: [o.get(k) for o in opts] for k in keys}
            obs, infos = self.venv.reset(seed=seeds, options=options)
            self.reset_infos = [{"scenario": infos["scenario"][i]} for i in range(self.num_envs)]
            self._reset_seeds()
            self._reset_options()
            return obs

        def step_async(self, actions: np.ndarray) -> None:
            self._actions = actions

        def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
            assert self._actions is not None, "step_async first"
            obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
            dones = terminated | truncated
            if self.full_info:
                per_env = [_row_info(infos, i) for i in range(self.num_envs)]
            else:
                per_env = [{} for _ in range(self.num_envs)]
            if dones.any():
                final = infos["final_info"]
                for i in np.flatnonzero(dones):
                    per_env[i]["terminal_observation"] = infos["final_obs"][i]
                    per_env[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                    for key, values in final.items():
                        per_env[i][key] = values[i].item()
            return obs, rewards.astype(np.float32), dones, per_env

        def close(self) -> None:
            self.venv.close()

        def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
            return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

        def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
            raise AttributeError(
                "the rows of a ChargingSiteVectorEnv share one simulator; set_attr is not supported"
            )

        def env_method(
            self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
        ) -> list[Any]:
            raise AttributeError("the rows of a ChargingSiteVectorEnv are not separate envs; use .venv")

        def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
            return [False for _ in self._get_indices(indices)]

    return SB3VecEnv


def _row_info(infos: Mapping[str, Any], i: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        if isinstance(value, Mapping):
            out[key] = {k: float(v[i]) for k, v in value.items()}
        else:
            v = value[i]
            out[key] = v.copy() if isinstance(v, np.ndarray) else v.item()
    return out


def make_vector_env(config: EnvConfig | Mapping[str, Any], n_envs: int) -> ChargingSiteVectorEnv:
    """A :class:`ChargingSiteVectorEnv` from an :class:`EnvConfig` or the env's keyword arguments."""
    if isinstance(config, EnvConfig):
        return ChargingSiteVectorEnv(n_envs, config)
    return ChargingSiteVectorEnv(n_envs, **dict(config))


def make_vec_env(
    config: EnvConfig | Mapping[str, Any], n_envs: int, seed: int | None = None, full_info: bool = False
) -> VecEnv:
    """A stable-baselines3 ``VecEnv`` of ``n_envs`` sites stepped in numpy.

    ``seed`` seeds env ``i`` with ``seed + i`` at the first ``reset()`` (as SB3's own ``make_vec_env``).
    Wrap it with ``VecNormalize`` / ``VecMonitor`` as usual.
    """
    venv = make_vector_env(config, n_envs)
    adapter = sb3_adapter_class()(venv, full_info=full_info)
    if seed is not None:
        adapter.seed(seed)
    return adapter
