"""Train a learned DLM policy with stable-baselines3: ``train(config) -> TrainResult``.

The agent trains on :class:`envs.env.ChargingSiteEnv` seen through :func:`agents.learned.learned_env`
(a new generated scenario per episode, on the site the policy is for; :mod:`training.learner` builds it
and the model, :mod:`training.held_out` scores the policy), ``n_envs`` copies in a
``DummyVecEnv`` or ``SubprocVecEnv``, with observation (and reward) normalisation by ``VecNormalize``.
Every ``evaluation.every_steps`` the current policy runs on held-out generated scenarios (seeds never used
in training) through :func:`training.evaluate.evaluate`, beside the rule-based DLM and the optimum, which
are evaluated once. Everything goes to one MLflow run: the config as params, SB3's learning curves, the
held-out metrics against training steps and wall time, the curve of the cost gap to the optimum (PNG),
the final table, and the policy as a registered ``mlflow.pyfunc`` model (:mod:`training.mlflow_model`).

Checkpoints (model + VecNormalize statistics) are written every ``training.checkpoint_every_steps``;
``train(config, resume_from=CHECKPOINT.zip)`` continues from one. Runs are deterministic given the
config's seed as far as torch allows on CPU (one torch thread, seeded SB3, seeded envs).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.learned import LearnedPolicy, detached_statistics
from training.held_out import EvalPoint, HeldOutEvaluator, held_out_scenarios, summarise
from training.learner import build_model, build_vec_env, make_env, policy_meta
from training.rl_config import TrainConfig
from training.tracking import PROJECT_DIR_NAME, TrackingRun, start_run

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv, VecNormalize

    from training.evaluate import EvaluationReport
    from training.site_history import TrainingHistory


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    config: TrainConfig
    run_id: str
    tracking_uri: str
    experiment_id: str
    run_model_uri: str
    """``runs:/<run_id>/policy``"""
    model_uri: str
    """``models:/<name>/<version>`` in the model registry"""
    bundle_dir: Path
    """the saved policy bundle (:class:`agents.learned.LearnedPolicy`)"""
    out_dir: Path
    timesteps: int
    wall_s: float
    evaluations: tuple[EvalPoint, ...] = field(default_factory=tuple)
    selected: EvalPoint | None = None
    """the evaluation of the registered policy (the best one with ``evaluation.keep_best``)"""
    history: TrainingHistory | None = None
    """with ``env.history``: the history, its split and forecast (the test days are scored with it)"""
    test: EvalPoint | None = None
    """with ``env.history``: the registered policy on the test days beside the rule-based DLM"""

    @property
    def final(self) -> EvalPoint:
        """The evaluation at the end of training."""
        if not self.evaluations:
            raise ValueError("the run has no evaluation")
        return self.evaluations[-1]


# --------------------------------------------------------------------------- callbacks


def _callbacks(
    config: TrainConfig,
    evaluator: HeldOutEvaluator | None,
    on_eval: Callable[[EvalPoint, LearnedPolicy, EvaluationReport], None],
    make_policy: Callable[[BaseAlgorithm, VecNormalize | None, int], LearnedPolicy],
    clock: _Clock,
    checkpoint_dir: Path,
    start_timesteps: int,
) -> list[Any]:
    from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
    from stable_baselines3.common.vec_env import VecNormalize

    class PeriodicEvaluation(BaseCallback):
        """Evaluates the current policy on the held-out scenarios every ``every`` env steps."""

        def __init__(self, every: int) -> None:
            super().__init__()
            self.every = every
            self.next_at = (start_timesteps // every + 1) * every

        def _on_step(self) -> bool:
            if evaluator is None or self.num_timesteps < self.next_at:
                return True
            self.next_at = (self.num_timesteps // self.every + 1) * self.every
            venv = self.model.get_env()
            stats = venv if isinstance(venv, VecNormalize) else None
            with clock.paused():
                policy = make_policy(self.model, stats, self.num_timesteps)
                point, report = evaluator.point(policy, self.num_timesteps, clock())
                on_eval(point, policy, report)
            return True

    class TimeBudget(BaseCallback):
        """Stops training after ``minutes`` of wall time (evaluation excluded)."""

        def __init__(self, minutes: float) -> None:
            super().__init__()
            self.limit_s = minutes * 60.0

        def _on_step(self) -> bool:
            return clock() < self.limit_s

    out: list[Any] = []
    every = config.evaluation.every_steps
    if every is not None:
        out.append(PeriodicEvaluation(every))
    if config.training.max_minutes is not None:
        out.append(TimeBudget(config.training.max_minutes))
    ck = config.training.checkpoint_every_steps
    if ck is not None:
        freq = max(ck // config.training.n_envs, 1)
        out.append(CheckpointCallback(freq, str(checkpoint_dir), name_prefix="ckpt", save_vecnormalize=True))
    return out


def _budget_s(max_minutes: float | None) -> float | None:
    return None if max_minutes is None else max_minutes * 60.0


class _Clock:
    """Training wall time, with what runs inside :meth:`paused` (evaluation) taken out."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.paused_s = 0.0

    def __call__(self) -> float:
        return time.perf_counter() - self.start - self.paused_s

    def restart(self) -> None:
        self.start = time.perf_counter()
        self.paused_s = 0.0

    @contextmanager
    def paused(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.paused_s += time.perf_counter() - t0


def checkpoint_stats_path(checkpoint: Path) -> Path:
    """The VecNormalize file SB3's CheckpointCallback writes beside ``ckpt_<N>_steps.zip``."""
    m = re.match(r"^(?P<prefix>.+)_(?P<steps>\d+)_steps\.zip$", checkpoint.name)
    if m is None:
        raise ValueError(f"{checkpoint}: not a checkpoint written by training (<prefix>_<N>_steps.zip)")
    return checkpoint.with_name(f"{m['prefix']}_vecnormalize_{m['steps']}_steps.pkl")


# --------------------------------------------------------------------------- the run


def train(
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    resume_from: str | Path | None = None,
    progress: bool = False,
    report: Callable[[EvalPoint], None] | None = None,
    register: bool = True,
    parent_run_id: str | None = None,
) -> TrainResult:
    """Train, evaluate on held-out scenarios, log everything to MLflow and register the policy.

    ``report`` is called with every held-out evaluation (Ray Tune reports through it). ``resume_from`` is
    a checkpoint ``.zip`` written by an earlier run; training continues up to
    ``training.total_timesteps``.
    """
    import torch
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.utils import set_random_seed
    from stable_baselines3.common.vec_env import VecNormalize

    from training.mlflow_model import log_policy

    torch.set_num_threads(config.training.torch_threads)
    set_random_seed(config.seed)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = (
        Path(out_dir)
        if out_dir is not None
        else Path.cwd() / PROJECT_DIR_NAME / "runs" / f"{config.name}-{stamp}"
    )
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = out / "checkpoints"

    history = None
    if config.env.history is not None:
        from training.site_history import training_history

        history = training_history(config, out)
        split = history.split_lines()
        print("\n".join(split), file=sys.stderr, flush=True)
        (out / "split.txt").write_text("\n".join(split) + "\n")
    venv: VecEnv = build_vec_env(config, history)
    probe = make_env(config, history=history)
    site_config = probe.observing.site_env.site.config
    t_cfg = config.training
    if resume_from is not None:
        ckpt = Path(resume_from)
        stats_path = checkpoint_stats_path(ckpt)
        if t_cfg.normalize_obs or t_cfg.normalize_reward:
            venv = VecNormalize.load(str(stats_path), venv)
            venv.training = True
        from agents.learned import algorithm_class

        model = algorithm_class(config.algorithm.name).load(ckpt, env=venv, device="cpu")
        model.set_random_seed(config.seed)
    else:
        if t_cfg.normalize_obs or t_cfg.normalize_reward:
            venv = VecNormalize(
                venv,
                norm_obs=t_cfg.normalize_obs,
                norm_reward=t_cfg.normalize_reward,
                clip_obs=t_cfg.clip_obs,
                gamma=config.algorithm.gamma,
            )
        model = build_model(config, venv, config.seed)
    start_steps = int(model.num_timesteps)

    def make_policy(m: BaseAlgorithm, stats: VecNormalize | None, steps: int) -> LearnedPolicy:
        frozen = detached_statistics(stats) if stats is not None and stats.norm_obs else None
        return LearnedPolicy(m, policy_meta(config, probe, steps), frozen, site_config)

    evaluator = HeldOutEvaluator(config, history)
    clock = _Clock()
    points: list[EvalPoint] = []
    run_name = f"train-{config.name}"
    tags = {"evdlm.kind": "train", "evdlm.config": config.name}
    if resume_from is not None:
        tags["evdlm.resumed_from"] = str(resume_from)
    if config.research_only:
        tags["evdlm.research_only"] = "true"
    with start_run(tracking_uri, config.tracking.experiment, run_name, tags, parent_run_id) as run:
        run.log_params(config.flat_params())
        if history is not None:
            run.log_params(history.history.split_params())
            run.log_artifact(out / "split.txt")
            if history.forecaster_path is not None:
                run.log_artifact(history.forecaster_path)
        model.set_logger(Logger(folder=None, output_formats=[run.sb3_output()]))

        best: list[tuple[EvalPoint, Path, EvaluationReport]] = []

        def on_eval(point: EvalPoint, policy: LearnedPolicy, rep: EvaluationReport) -> None:
            points.append(point)
            run.log_metrics_at(point.metrics(), "eval/", point.timesteps)
            if config.evaluation.keep_best and (not best or point.cost_total < best[0][0].cost_total):
                best[:] = [(point, policy.save_bundle(out / "best"), rep)]
            if report is not None:
                report(point)

        evaluator.baselines()  # once, before the clock starts
        callbacks = _callbacks(config, evaluator, on_eval, make_policy, clock, checkpoint_dir, start_steps)
        clock.restart()
        if config.evaluation.at_start and resume_from is None:
            with clock.paused():
                stats0 = venv if isinstance(venv, VecNormalize) else None
                initial = make_policy(model, stats0, start_steps)
                point0, report0 = evaluator.point(initial, start_steps, 0.0)
                on_eval(point0, initial, report0)
        remaining = max(t_cfg.total_timesteps - start_steps, 0)
        if remaining > 0:
            from training.progress import TrainingProgress

            bar = [TrainingProgress(remaining, _budget_s(t_cfg.max_minutes), clock)] if progress else []
            model.learn(
                total_timesteps=remaining,
                callback=[*callbacks, *bar],
                reset_num_timesteps=resume_from is None,
            )
        wall_s = clock()
        steps = int(model.num_timesteps)
        stats = venv if isinstance(venv, VecNormalize) else None
        final = make_policy(model, stats, steps)
        bundle = final.save_bundle(out / "policy")
        if not points or points[-1].timesteps != steps:
            point, rep = evaluator.point(final, steps, wall_s)
            on_eval(point, final, rep)
        else:
            rep = evaluator.report(final)
        selected = points[-1]
        if best and best[0][0].cost_total < selected.cost_total:
            selected, bundle, rep = best[0]
        _log_artifacts(config, points, rep, out, run)
        run.log_metrics({"train/wall_s": wall_s, "train/timesteps": float(steps)})
        run.log_metrics_at(selected.metrics(), "selected/", selected.timesteps)
        run.set_tag("evdlm.selected_timesteps", str(selected.timesteps))
        test = None
        if history is not None:
            from training.site_history import score_test

            test = score_test(history, str(bundle), selected.timesteps, wall_s)
            run.log_metrics_at(test.metrics(), "test/", selected.timesteps)
        logged = log_policy(
            bundle,
            config.registered_model_name if register else None,
            config,
            forecaster=None if history is None else history.forecaster_path,
        )
        venv.close()
    return TrainResult(
        config=config,
        run_id=run.run_id,
        tracking_uri=run.tracking_uri,
        experiment_id=run.experiment_id,
        run_model_uri=logged.run_model_uri,
        model_uri=logged.registered_model_uri or logged.run_model_uri,
        bundle_dir=bundle,
        out_dir=out,
        timesteps=steps,
        wall_s=wall_s,
        evaluations=tuple(points),
        selected=selected,
        history=history,
        test=test,
    )


def _log_artifacts(
    config: TrainConfig, points: Sequence[EvalPoint], rep: EvaluationReport, out: Path, run: TrackingRun
) -> None:
    """The config, the held-out table and the curve of the gap to the optimum against training time."""
    import yaml

    cfg_path = out / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    table = out / "evaluation.csv"
    rep.frame().to_csv(table, index=False)
    curve = out / "learning_curve.csv"
    import pandas as pd

    pd.DataFrame([asdict(p) for p in points]).to_csv(curve, index=False)
    for p in (cfg_path, table, curve):
        run.log_artifact(p)
    if not config.tracking.log_plots:
        return
    from training.plots import comparison_chart, import_plot

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    if points:
        run.log_artifact(plot_gap_curve(points, plots / "gap_vs_time.png", title=config.name), "plots")
    for k, scenario in enumerate(rep.scenarios()):
        run.log_artifact(comparison_chart(rep, scenario, plots / f"comparison_{k}.png"), "plots")
    for (scenario, policy, seed), trace in rep.traces.items():
        png = import_plot(trace, f"{policy} on {scenario}", plots / f"import_{policy}_{scenario}_{seed}.png")
        run.log_artifact(png, "plots")


def plot_gap_curve(points: Sequence[EvalPoint], path: Path, title: str = "") -> Path:
    """Cost gap to the optimum (%) against training wall time, with the rule-based DLM's gap for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p.wall_s / 60.0 for p in points]
    ys = [np.nan if p.gap_to_optimum_pct is None else p.gap_to_optimum_pct for p in points]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs, ys, marker="o", label="learned policy")
    rule = next(
        (p.rule_based_gap_to_optimum_pct for p in points if p.rule_based_gap_to_optimum_pct is not None), None
    )
    if rule is not None:
        ax.axhline(rule, color="tab:red", linestyle="--", label="rule-based DLM")
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("cost gap to optimum (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- the short demo


def quick_demo(
    minutes: float = 2.0,
    chargers: int = 10,
    eval_days: int = 2,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """``make run``'s learned part: a short PPO run of the peak-shaving config on a small depot.

    Trains for ``minutes`` (wall time) on generated weeks of a ``chargers``-charger depot, evaluates on a
    held-out ``eval_days`` scenario beside the rule-based DLM and the optimum, and registers the model as
    ``evdlm-demo``. The registered policy controls any generated depot of ``chargers`` chargers (15-minute
    steps), e.g. ``evaluate(["rule_based", result.model_uri], [generate_scenario("depot", chargers)])``.
    Print :func:`describe_result` for a summary.
    """
    from training.rl_config import load_train_config, shipped_config

    base = load_train_config(shipped_config("peak_shaving"))
    config = base.with_overrides(
        {
            "name": "demo",
            "env.generator.chargers": chargers,
            "training.max_minutes": minutes,
            "training.total_timesteps": 10_000_000,
            "training.n_envs": 2,
            "training.checkpoint_every_steps": None,
            "evaluation.every_steps": None,
            "evaluation.seeds": (1,),
            "evaluation.days": eval_days,
            "tracking.registered_model": "evdlm-demo",
        }
    )
    return train(config, tracking_uri=tracking_uri, progress=progress)


# --------------------------------------------------------------------------- command line


def describe_result(result: TrainResult) -> str:
    """A short human summary: held-out figures of the registered policy and where everything is."""
    p = result.selected or result.final

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.2f} %"

    if result.config.env.history is not None:
        held_out = "the validation days of the history (see split.txt)"
    else:
        held_out = ", ".join(s.name for s in held_out_scenarios(result.config))
    lines = [
        f"trained {result.config.name}: {result.timesteps:,} steps in {result.wall_s / 60:.1f} min "
        f"(registered policy from step {p.timesteps:,})",
        f"  on held-out scenario(s) {held_out}:",
        f"  cost {p.cost_total:.2f}, gap to optimum {pct(p.gap_to_optimum_pct)} "
        f"(rule-based DLM {pct(p.rule_based_gap_to_optimum_pct)}), "
        f"vs rule-based {pct(p.gap_to_rule_based_pct)}",
        f"  energy delivered {p.energy_delivered_pct:.2f} %, violations {p.violations}, "
        f"V2G {p.v2g_exported_kwh:.1f} kWh",
        *(
            [
                f"  on the test days (never seen): cost {result.test.cost_total:.2f}, vs rule-based "
                f"{pct(result.test.gap_to_rule_based_pct)}, EVs short {result.test.evs_short}, "
                f"violations {result.test.violations}"
            ]
            if result.test is not None
            else []
        ),
        f"  model: {result.model_uri}  (run {result.run_id})",
        f"  bundle: {result.bundle_dir}",
        f"  MLflow: {result.tracking_uri}  -> mlflow ui --backend-store-uri {result.tracking_uri}",
    ]
    return "\n".join(lines)


def train_command(
    config_path: Path,
    *,
    tracking_uri: str | None = None,
    resume: Path | None = None,
    out_dir: Path | None = None,
) -> TrainResult:
    """``evdlm train``: load the config (errors name file and field), train with a progress bar, print."""
    import typer

    from envs.config import ConfigError
    from training.rl_config import load_train_config

    try:
        config = load_train_config(config_path)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    result = train(config, out_dir=out_dir, tracking_uri=tracking_uri, resume_from=resume, progress=True)
    typer.echo(describe_result(result))
    return result


__all__ = [
    "EvalPoint",
    "HeldOutEvaluator",
    "TrainResult",
    "build_model",
    "build_vec_env",
    "describe_result",
    "held_out_scenarios",
    "make_env",
    "plot_gap_curve",
    "quick_demo",
    "summarise",
    "train",
    "train_command",
]
