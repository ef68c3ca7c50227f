"""Typed configuration of a training run (and of a hyperparameter search), loaded from YAML.

A training config says which sites the agent learns on (a generator of scenarios: a new scenario per
episode, so the policy learns a distribution and not one week), what it observes and how its action is
read, the stable-baselines3 algorithm and its hyperparameters, how long to train, how to evaluate it on
held-out seeds against the baselines, where to track it in MLflow, and (optional) the search space of
``evdlm tune``. YAML is read once, at the edge, into frozen pydantic models; every error names the file
and the field.

Units are in the names: ``_steps`` environment steps (one step of one env), ``_days`` days, ``_kw`` kW.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from envs.config import ConfigError, format_validation_error, read_yaml

ActionMode = Literal[
    "residual", "priority", "continuous", "setpoint", "rule_setpoint", "rule_setpoint_hedged"
]
ForecastKind = Literal["perfect", "noisy", "model"]
SiteKind = Literal["depot", "workplace", "residential", "public"]
Baseline = Literal["rule_based", "optimum"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GeneratorSpec(_Frozen):
    """The scenario generator (:func:`envs.generate.generate_scenario`) the agent trains on.

    Each episode draws a new seed, so the agent sees a new week of sessions, loads and prices; the site
    (its chargers and limits) is the one the policy is for and does not change.
    """

    kind: SiteKind = "depot"
    chargers: int = Field(default=20, ge=1, le=2000)
    days: int = Field(default=7, ge=1, le=366, description="length of each generated scenario, days")
    step: str = Field(default="15min", description="simulation step (pandas offset)")
    v2g: bool = False
    pv: bool = True
    battery: bool = False
    demand_charge_per_kw: float | None = Field(default=None, ge=0)
    prefetch: int = Field(
        default=0,
        ge=0,
        le=16,
        description="generate the next N episodes' scenarios ahead in a background process (envs/prefetch)",
    )

    def generate_kwargs(self, seed: int) -> dict[str, Any]:
        """Keyword arguments of :func:`envs.generate.generate_scenario` for one seed."""
        return {
            "kind": self.kind,
            "chargers": self.chargers,
            "days": self.days,
            "seed": seed,
            "step": self.step,
            "v2g": self.v2g,
            "pv": self.pv,
            "battery": self.battery,
            "demand_charge_per_kw": self.demand_charge_per_kw,
        }


class AugmentSpec(_Frozen):
    """Optional augmentation of each training window of a history (:class:`envs.history.Augmentation`,
    which documents each one); the time series always keep their real shape."""

    resample_days: bool = Field(
        default=False, description="each day's sessions from a training day drawn with replacement"
    )
    arrival_jitter_min: float = Field(
        default=0.0, ge=0, le=120, description="arrivals move by U(-j, j) minutes"
    )
    stay_jitter_pct: float = Field(default=0.0, ge=0, le=50, description="stays x U(1 - p/100, 1 + p/100)")
    energy_jitter_pct: float = Field(
        default=0.0, ge=0, le=50, description="energies x U(1 - p/100, 1 + p/100)"
    )
    fleet_scale: tuple[float, float] = Field(
        default=(1.0, 1.0),
        description="sessions thinned or copied by f ~ U(low, high), 0.5 <= low <= high <= 1.5",
    )

    @model_validator(mode="after")
    def _check_scale(self) -> AugmentSpec:
        lo, hi = self.fleet_scale
        if not 0.5 <= lo <= hi <= 1.5:
            raise ValueError("fleet_scale must be [low, high] with 0.5 <= low <= high <= 1.5")
        return self


class HistorySpec(_Frozen):
    """A site's own history as training data (:class:`envs.history.SiteHistory`): scenario folders of one
    site, cut into whole local days and split in time order: training on the earliest days, validation
    (checkpoint choice) on the next ``validation_days``, test on the last ``test_days``."""

    folders: tuple[str, ...] = Field(
        min_length=1, description="scenario folders (relative: from the working directory)"
    )
    window_days: int = Field(default=7, ge=1, le=366, description="days per training episode")
    validation_days: int = Field(
        default=14, ge=1, description="days after the training part, to choose the checkpoint"
    )
    test_days: int = Field(default=21, ge=1, description="the last days, to score the chosen policy")
    step: str = Field(default="15min", description="simulation step (pandas offset)")
    augment: AugmentSpec = AugmentSpec()


class ForecastSpec(_Frozen):
    """The forecast window in the observation (and in the rule inside the action).

    ``perfect``: the scenario's own series; ``noisy``: those with a growing relative error; ``model``: a
    forecaster fitted by ``evdlm forecast fit --out FILE`` (:class:`forecasting.provider.ModelForecast`),
    loaded from ``model_path`` (relative paths from the working directory); with ``env.history`` and no
    ``model_path``, one fitted on the history's training part when training starts.
    """

    provider: ForecastKind = "perfect"
    horizon_steps: int = Field(default=16, ge=1, le=672)
    error: float = Field(default=0.1, ge=0, le=2, description="noisy provider: relative error one step ahead")
    error_growth_per_step: float = Field(default=0.01, ge=0, le=1)
    model_path: str | None = Field(default=None, description="model provider: the fitted forecaster (joblib)")


class EnvSpec(_Frozen):
    """What the agent trains on, sees and controls: generated scenarios (``generator``) or a site's own
    history (``history``), not both."""

    generator: GeneratorSpec = GeneratorSpec()
    history: HistorySpec | None = None
    train_seed_offset: int = Field(
        default=10_000,
        ge=0,
        description="training scenarios use seeds >= this (held-out seeds must lie below)",
    )
    action_mode: ActionMode = Field(
        default="residual",
        description=(
            "residual: per-charger kW correction on top of the rule-based DLM; setpoint: a few site-level "
            "numbers (import level, V2G share) filled by a deadline-first rule; rule_setpoint: site-level "
            "corrections (import lift, V2G share) of the rule-based DLM's decision; rule_setpoint_hedged: "
            "the same on the rule-based DLM as registered (not betting on declared departures); priority: "
            "per-charger scores filled in order by the projection; continuous: a fraction of each charger's "
            "range"
        ),
    )
    residual_scale: float = Field(
        default=0.5, gt=0, le=2, description="residual mode: action 1.0 adds this fraction of the rated kW"
    )
    allow_discharge: bool = Field(default=True, description="V2G and battery discharge allowed to the agent")
    forecast: ForecastSpec = ForecastSpec()

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("history") is not None and "generator" in data:
            gen = data["generator"]
            default = GeneratorSpec()
            if gen != default and gen != default.model_dump(mode="python"):
                raise ValueError("give env.generator or env.history, not both")
            data = {k: v for k, v in data.items() if k != "generator"}  # a dumped config's default
        return data

    @model_validator(mode="after")
    def _check_model(self) -> EnvSpec:
        if self.forecast.provider == "model" and not self.forecast.model_path and self.history is None:
            raise ValueError(
                "env.forecast.provider 'model' needs model_path (a file written by `evdlm forecast fit "
                "--out`), or env.history (then a forecaster is fitted on its training part)"
            )
        return self

    @property
    def step(self) -> str:
        """The simulation step: the history's or the generator's."""
        return self.history.step if self.history is not None else self.generator.step


class _AlgoBase(_Frozen):
    learning_rate: float = Field(default=3e-4, gt=0, le=1)
    gamma: float = Field(default=0.99, gt=0, le=1)
    net_arch: tuple[int, ...] = Field(default=(128, 128), min_length=1)
    device: Literal["cpu", "cuda", "auto"] = "cpu"


class PPOSpec(_AlgoBase):
    """Proximal policy optimisation (on-policy; the default)."""

    name: Literal["PPO"] = "PPO"
    n_steps: int = Field(default=512, ge=8, description="rollout steps per env between updates")
    batch_size: int = Field(default=256, ge=8)
    n_epochs: int = Field(default=5, ge=1, le=100)
    gae_lambda: float = Field(default=0.95, gt=0, le=1)
    clip_range: float = Field(default=0.2, gt=0, le=1)
    ent_coef: float = Field(default=0.0, ge=0, le=1)
    vf_coef: float = Field(default=0.5, gt=0, le=10)
    max_grad_norm: float = Field(default=0.5, gt=0)
    log_std_init: float = Field(default=-1.0, ge=-10, le=2, description="initial log std of the Gaussian")
    target_kl: float | None = Field(
        default=None,
        gt=0,
        description="stop an update's epochs early when the KL to the old policy passes this",
    )


class _OffPolicyBase(_AlgoBase):
    """What SAC and TD3 share: a replay buffer and its update schedule."""

    buffer_size: int = Field(default=200_000, ge=1_000)
    batch_size: int = Field(default=256, ge=8)
    learning_starts: int = Field(default=1_000, ge=0)
    tau: float = Field(default=0.005, gt=0, le=1)
    train_freq: int = Field(default=4, ge=1)
    gradient_steps: int = Field(default=1, ge=-1)

    def replay_kwargs(self) -> dict[str, Any]:
        """These fields as stable-baselines3 keyword arguments."""
        return {
            name: getattr(self, name)
            for name in _OffPolicyBase.model_fields
            if name not in _AlgoBase.model_fields
        }


class SACSpec(_OffPolicyBase):
    """Soft actor-critic (off-policy)."""

    name: Literal["SAC"] = "SAC"
    ent_coef: str = "auto"


class TD3Spec(_OffPolicyBase):
    """Twin delayed DDPG (off-policy)."""

    name: Literal["TD3"] = "TD3"
    action_noise_std: float = Field(default=0.1, ge=0, le=2)


AlgorithmSpec = Annotated[PPOSpec | SACSpec | TD3Spec, Field(discriminator="name")]


class TrainingSpec(_Frozen):
    """How long and how to train."""

    total_timesteps: int = Field(default=200_000, ge=1, description="env steps over all envs")
    max_minutes: float | None = Field(default=None, gt=0, description="stop earlier after this wall time")
    n_envs: int = Field(default=4, ge=1, le=256)
    vec_env: Literal["dummy", "subproc"] = Field(
        default="dummy", description="dummy: envs stepped in this process; subproc: one process per env"
    )
    normalize_obs: bool = True
    normalize_reward: bool = True
    clip_obs: float = Field(default=10.0, gt=0)
    checkpoint_every_steps: int | None = Field(default=None, ge=1)
    torch_threads: int = Field(default=1, ge=1, le=64)


class EvaluationSpec(_Frozen):
    """Periodic evaluation on held-out generated scenarios (seeds never used in training)."""

    every_steps: int | None = Field(default=None, ge=1, description="None: only at the end")
    seeds: tuple[int, ...] = Field(default=(1, 2, 3), min_length=1)
    days: int | None = Field(default=None, ge=1, description="None: the generator's days")
    baselines: tuple[Baseline, ...] = ("rule_based", "optimum")
    at_start: bool = Field(default=True, description="also evaluate the untrained policy (step 0)")
    keep_best: bool = Field(
        default=True, description="register the evaluated policy with the lowest held-out cost, not the last"
    )


class TrackingSpec(_Frozen):
    """Where the run lands in MLflow."""

    experiment: str = Field(default="evdlm-train", min_length=1)
    registered_model: str | None = Field(default=None, description="model registry name; None: the config's")
    log_plots: bool = True


class Distribution(_Frozen):
    """One dimension of a search space: ``uniform``/``loguniform`` over [low, high], or ``choice``."""

    kind: Literal["uniform", "loguniform", "choice", "randint"]
    low: float | None = None
    high: float | None = None
    values: tuple[float | int | str | bool, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> Distribution:
        if self.kind == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty 'values'")
        else:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"{self.kind} needs low < high")
            if self.kind == "loguniform" and self.low <= 0:
                raise ValueError("loguniform needs low > 0")
        return self


class TuneSpec(_Frozen):
    """Hyperparameter search with Ray Tune and ASHA early stopping.

    ``search_space`` maps a dotted field of this config (``algorithm.learning_rate``) to a distribution.
    Each trial reports its held-out gap to the optimum after every evaluation; ASHA stops the worst ones.
    """

    num_samples: int = Field(default=8, ge=1)
    max_concurrent_trials: int = Field(default=2, ge=1)
    cpus_per_trial: float = Field(default=1.0, gt=0)
    grace_period_evals: int = Field(default=1, ge=1, description="evaluations before ASHA may stop a trial")
    reduction_factor: int = Field(default=3, ge=2)
    metric: Literal["gap_to_optimum_pct", "cost_total"] = "gap_to_optimum_pct"
    search_space: dict[str, Distribution] = Field(default_factory=dict)


class TrainConfig(_Frozen):
    """A whole training run (see ``configs/train/*.yaml``)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(default=0, ge=0)
    research_only: bool = Field(
        default=False,
        description=(
            "allows a perfect forecast with tracking.registered_model: the registered policy saw the future "
            "and is for research, not for a site (tagged evdlm.research_only in MLflow)"
        ),
    )
    env: EnvSpec = EnvSpec()
    algorithm: AlgorithmSpec = PPOSpec()
    training: TrainingSpec = TrainingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    tracking: TrackingSpec = TrackingSpec()
    tune: TuneSpec = TuneSpec()

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if (
            self.env.forecast.provider == "perfect"
            and self.tracking.registered_model is not None
            and not self.research_only
        ):
            raise ValueError(
                "env.forecast.provider: 'perfect' sees the future, which no site can, and "
                f"tracking.registered_model {self.tracking.registered_model!r} would register the policy as "
                "deployable: use provider 'model' (fitted on the training part) or set research_only: true"
            )
        clash = [s for s in self.evaluation.seeds if s >= self.env.train_seed_offset]
        if clash:
            raise ValueError(
                f"evaluation.seeds {clash} are not held out: training draws scenario seeds >= "
                f"env.train_seed_offset ({self.env.train_seed_offset})"
            )
        if isinstance(self.algorithm, PPOSpec):
            rollout = self.algorithm.n_steps * self.training.n_envs
            if self.algorithm.batch_size > rollout:
                raise ValueError(
                    f"algorithm.batch_size {self.algorithm.batch_size} exceeds a rollout of "
                    f"n_steps * n_envs = {rollout}"
                )
        for key in self.tune.search_space:
            _check_path(self, key)
        return self

    @property
    def registered_model_name(self) -> str:
        return self.tracking.registered_model or f"evdlm-{self.name}"

    @property
    def eval_days(self) -> int:
        return self.evaluation.days or self.env.generator.days

    def history_folders(self, base: Path | None = None) -> list[Path]:
        """The history's folders, relative ones from ``base`` (default: the working directory)."""
        if self.env.history is None:
            return []
        root = base or Path.cwd()
        return [Path(f) if Path(f).is_absolute() else root / f for f in self.env.history.folders]

    def flat_params(self) -> dict[str, str]:
        """Every leaf field as a dotted name and a short string (MLflow params)."""
        out: dict[str, str] = {}
        _flatten(self.model_dump(mode="json", exclude={"tune"}), "", out)
        return out

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with dotted fields replaced (``{"algorithm.learning_rate": 1e-4}``), validated again."""
        data = self.model_dump(mode="python")
        for key, value in overrides.items():
            _check_path(self, key)
            node = data
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        return config_from_dict(data, "<overrides>")


def _flatten(data: object, prefix: str, out: dict[str, str]) -> None:
    if isinstance(data, dict):
        for k, v in data.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out[prefix] = str(data)[:500]


def _check_path(config: BaseModel, dotted: str) -> None:
    node: object = config
    for part in dotted.split("."):
        if not isinstance(node, BaseModel) or part not in type(node).model_fields:
            raise ValueError(f"unknown config field {dotted!r}")
        node = getattr(node, part)
    if isinstance(node, BaseModel):
        raise ValueError(f"{dotted!r} is a section, not a field")


def config_from_dict(data: object, source: str = "<dict>") -> TrainConfig:
    """Validate a mapping (parsed YAML) into a :class:`TrainConfig`; errors name ``source`` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_train_config(path: str | Path) -> TrainConfig:
    """Load a training YAML file (``configs/train/*.yaml``) into a validated :class:`TrainConfig`."""
    return config_from_dict(read_yaml(path), str(path))


def shipped_config(name: str) -> Path:
    """Path of a configuration shipped in ``configs/train`` (``"peak_shaving"``, ``"v2g"``, ``"smoke"``)."""
    path = Path(__file__).resolve().parent.parent / "configs" / "train" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"{path}: no shipped training config {name!r} (known: {known})")
    return path
