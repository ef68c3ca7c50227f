"""Hyperparameter search over a training config with Ray Tune and ASHA early stopping.

``tune_config(config)`` samples ``config.tune.num_samples`` variants of the config from its
``tune.search_space`` (dotted fields -> distributions), trains each with :func:`training.train.train`
as a Ray Tune trial, and lets ASHA stop the trials whose held-out cost gap to the optimum lags after
``grace_period_evals`` evaluations. Every trial is an MLflow run nested under one parent run of the
search; the best trial's policy is registered in the model registry. Local Ray by default (started
with a temp folder under the system's temp dir, a capped object store and no dashboard);
``ray_address`` joins an existing cluster.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.rl_config import Distribution, TrainConfig

OBJECT_STORE_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class TrialOutcome:
    """One trial: its sampled overrides and its last reported held-out figures."""

    overrides: dict[str, Any]
    gap_to_optimum_pct: float | None
    cost_total: float | None
    evaluations: int
    run_model_uri: str | None


@dataclass(frozen=True)
class TuneResult:
    parent_run_id: str
    tracking_uri: str
    metric: str
    best: TrialOutcome
    trials: tuple[TrialOutcome, ...]
    registered_model_uri: str | None

    @property
    def best_config_overrides(self) -> dict[str, Any]:
        return dict(self.best.overrides)


def search_space(space: dict[str, Distribution]) -> dict[str, Any]:
    """The config's search space as Ray Tune sampling objects (keys stay dotted config fields)."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, d in space.items():
        if d.kind == "choice":
            assert d.values is not None
            out[key] = tune.choice(list(d.values))
        else:
            assert d.low is not None and d.high is not None
            if d.kind == "uniform":
                out[key] = tune.uniform(d.low, d.high)
            elif d.kind == "loguniform":
                out[key] = tune.loguniform(d.low, d.high)
            else:
                out[key] = tune.randint(int(d.low), int(d.high))
    return out


def _trainable(config: TrainConfig, tracking_uri: str, parent_run_id: str, root: str) -> Any:
    """The function Ray runs per trial: train with the sampled overrides, report every evaluation."""

    def trial(params: dict[str, Any]) -> None:
        import torch
        from ray import tune

        from training.train import train

        torch.set_num_threads(1)
        trial_config = config.with_overrides(dict(params))
        name = tune.get_context().get_trial_name() or "trial"

        def report(point: Any) -> None:
            gap = point.gap_to_optimum_pct
            tune.report(
                {
                    "gap_to_optimum_pct": math.inf if gap is None else float(gap),
                    "cost_total": float(point.cost_total),
                    "timesteps": int(point.timesteps),
                }
            )

        result = train(
            trial_config,
            out_dir=Path(root) / name,
            tracking_uri=tracking_uri,
            report=report,
            register=False,
            parent_run_id=parent_run_id,
        )
        tune.report(
            {
                "gap_to_optimum_pct": math.inf
                if result.final.gap_to_optimum_pct is None
                else float(result.final.gap_to_optimum_pct),
                "cost_total": float(result.final.cost_total),
                "timesteps": int(result.timesteps),
                "run_model_uri": result.run_model_uri,
            }
        )

    return trial


def _init_ray(address: str | None, num_cpus: int | None) -> bool:
    """Start (or join) Ray unless it is already up; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is not None:
        ray.init(address=address, log_to_driver=False)
        return True
    temp = Path(tempfile.gettempdir()) / "evdlm-ray"
    temp.mkdir(parents=True, exist_ok=True)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        object_store_memory=OBJECT_STORE_BYTES,
        _temp_dir=str(temp),
        log_to_driver=False,
    )
    return True


def tune_config(
    config: TrainConfig,
    *,
    tracking_uri: str | None = None,
    ray_address: str | None = None,
    out_dir: str | Path | None = None,
    num_cpus: int | None = None,
    register: bool = True,
) -> TuneResult:
    """Run the search; every trial lands in MLflow under one parent run, the best policy is registered."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from training.tracking import PROJECT_DIR_NAME, register_model, start_run

    t = config.tune
    if not t.search_space:
        raise ValueError(f"config {config.name!r}: tune.search_space is empty; nothing to search")
    root = Path(out_dir) if out_dir is not None else Path.cwd() / PROJECT_DIR_NAME / "tune" / config.name
    root.mkdir(parents=True, exist_ok=True)
    started_ray = _init_ray(ray_address, num_cpus)
    try:
        with start_run(
            tracking_uri, config.tracking.experiment, f"tune-{config.name}", {"evdlm.kind": "tune"}
        ) as parent:
            parent.log_params({f"tune.{k}": str(v) for k, v in t.model_dump(mode="json").items()})
            scheduler = ASHAScheduler(
                time_attr="training_iteration",
                max_t=10_000,
                grace_period=t.grace_period_evals,
                reduction_factor=t.reduction_factor,
            )
            trainable = _trainable(config, parent.tracking_uri, parent.run_id, str(root / "trials"))
            storage = str((root / "ray").resolve())
            tuner = tune.Tuner(
                tune.with_resources(trainable, {"cpu": t.cpus_per_trial}),
                param_space=search_space(t.search_space),
                tune_config=tune.TuneConfig(
                    metric=t.metric,
                    mode="min",
                    scheduler=scheduler,
                    num_samples=t.num_samples,
                    max_concurrent_trials=t.max_concurrent_trials,
                ),
                run_config=tune.RunConfig(name=config.name, storage_path=storage, verbose=0),
            )
            grid = tuner.fit()
            trials = []
            for i in range(len(grid)):
                m = grid[i].metrics or {}
                trials.append(
                    TrialOutcome(
                        overrides=dict(grid[i].config or {}),
                        gap_to_optimum_pct=m.get("gap_to_optimum_pct"),
                        cost_total=m.get("cost_total"),
                        evaluations=int(m.get("training_iteration", 0)),
                        run_model_uri=m.get("run_model_uri"),
                    )
                )
            finished = [x for x in trials if x.cost_total is not None]
            if not finished:
                raise RuntimeError(f"tune {config.name!r}: no trial reported a result (see {root})")
            best = min(finished, key=_cost if t.metric == "cost_total" else _gap)
            parent.log_params({f"best.{k}": str(v) for k, v in best.overrides.items()})
            if best.gap_to_optimum_pct is not None and math.isfinite(best.gap_to_optimum_pct):
                parent.log_metrics({"best/gap_to_optimum_pct": best.gap_to_optimum_pct})
            registered = None
            if register and best.run_model_uri is not None:
                registered = register_model(best.run_model_uri, config.registered_model_name)
            return TuneResult(parent.run_id, parent.tracking_uri, t.metric, best, tuple(trials), registered)
    finally:
        if started_ray:
            ray.shutdown()


def _cost(trial: TrialOutcome) -> float:
    return math.inf if trial.cost_total is None else float(trial.cost_total)


def _gap(trial: TrialOutcome) -> float:
    g = trial.gap_to_optimum_pct
    return math.inf if g is None else float(g)


def tune_command(
    config_path: Path, *, tracking_uri: str | None = None, ray_address: str | None = None
) -> TuneResult:
    """``evdlm tune``: run the config's search and print the trials and the best one."""
    import typer

    from envs.config import ConfigError
    from training.rl_config import load_train_config

    try:
        config = load_train_config(config_path)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    result = tune_config(config, tracking_uri=tracking_uri, ray_address=ray_address)
    for trial in sorted(result.trials, key=_gap):
        typer.echo(f"  gap {_gap(trial):8.2f} %  evals {trial.evaluations}  {trial.overrides}")
    typer.echo(f"best: {result.best.overrides} -> gap {_gap(result.best):.2f} %")
    typer.echo(f"registered: {result.registered_model_uri}")
    typer.echo(f"MLflow: parent run {result.parent_run_id} at {result.tracking_uri}")
    return result
