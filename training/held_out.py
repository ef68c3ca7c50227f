"""The held-out evaluation of a training run: generated scenarios never trained on, the baselines scored once,
the learned policy on demand, and one :class:`EvalPoint` of sums per evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from agents.learned import LearnedPolicy
from envs.scenario import Scenario
from training.learner import forecast_provider
from training.rl_config import TrainConfig

if TYPE_CHECKING:
    from training.evaluate import EvalRow, EvaluationReport
    from training.site_history import TrainingHistory


@dataclass(frozen=True)
class EvalPoint:
    """The policy on the held-out scenarios at one point of training (sums over scenarios)."""

    timesteps: int
    wall_s: float
    """training wall time so far, s (evaluation time excluded)"""
    cost_total: float
    optimum_cost: float | None
    rule_based_cost: float | None
    gap_to_optimum_pct: float | None
    """100 * (cost - optimum) / |optimum|"""
    rule_based_gap_to_optimum_pct: float | None
    gap_to_rule_based_pct: float | None
    """negative = cheaper than the rule-based DLM"""
    energy_delivered_pct: float
    evs_short: int
    violations: int
    v2g_exported_kwh: float

    def metrics(self) -> dict[str, float]:
        """Numeric fields for MLflow (None left out)."""
        return {k: float(v) for k, v in asdict(self).items() if v is not None}


def held_out_scenarios(config: TrainConfig, history: TrainingHistory | None = None) -> list[Scenario]:
    """The generated evaluation scenarios (seeds below ``env.train_seed_offset``: never trained on); with
    ``env.history``, the history's validation days (after the training part, before the test part)."""
    from envs.generate import generate_scenario

    if history is not None:
        return history.validation_scenarios()

    g = config.env.generator
    out = []
    for seed in config.evaluation.seeds:
        kwargs = g.generate_kwargs(seed)
        kwargs["days"] = config.eval_days
        out.append(generate_scenario(**kwargs))
    return out


def summarise(
    rows: Sequence[EvalRow], policy: str, baseline_rows: Sequence[EvalRow], timesteps: int, wall_s: float
) -> EvalPoint:
    """Sum one policy's rows over the scenarios and compare with the baselines on the same scenarios."""
    mine = [r for r in rows if r.policy == policy]
    if not mine:
        raise ValueError(f"no evaluation rows for policy {policy!r}")
    keys = {(r.scenario, r.seed) for r in mine}

    def total(name: str) -> float | None:
        sel = [r.cost_total for r in baseline_rows if r.policy == name and (r.scenario, r.seed) in keys]
        return float(sum(sel)) if len(sel) == len(keys) else None

    cost = float(sum(r.cost_total for r in mine))
    opt, rule = total("optimum"), total("rule_based")

    def gap(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else 100.0 * (a - b) / max(abs(b), 1e-9)

    asked = sum(r.energy_asked_kwh for r in mine)
    delivered = sum(r.energy_delivered_kwh for r in mine)
    return EvalPoint(
        timesteps=timesteps,
        wall_s=wall_s,
        cost_total=cost,
        optimum_cost=opt,
        rule_based_cost=rule,
        gap_to_optimum_pct=gap(cost, opt),
        rule_based_gap_to_optimum_pct=gap(rule, opt),
        gap_to_rule_based_pct=gap(cost, rule),
        energy_delivered_pct=100.0 * delivered / asked if asked > 0 else 100.0,
        evs_short=int(sum(r.evs_short for r in mine)),
        violations=int(sum(r.violations for r in mine)),
        v2g_exported_kwh=float(sum(r.v2g_exported_kwh for r in mine)),
    )


class HeldOutEvaluator:
    """Runs policies on the held-out scenarios; the baselines once, the learned policy on demand."""

    def __init__(self, config: TrainConfig, history: TrainingHistory | None = None) -> None:
        from training.evaluate import DEFAULT_HORIZON, EnvOptions

        self.config = config
        self.scenarios = held_out_scenarios(config, history)
        self.options = EnvOptions(
            forecast=history.forecast if history is not None else forecast_provider(config.env.forecast),
            forecast_horizon=max(DEFAULT_HORIZON, config.env.forecast.horizon_steps),
            step=config.env.step,
        )
        self._baselines: list[EvalRow] | None = None

    def baselines(self) -> list[EvalRow]:
        from training.evaluate import evaluate

        if self._baselines is None:
            names = list(self.config.evaluation.baselines)
            self._baselines = evaluate(names, self.scenarios, options=self.options).rows if names else []
        return self._baselines

    def report(self, policy: LearnedPolicy) -> EvaluationReport:
        from training.evaluate import EvaluationReport, evaluate, with_gaps

        mine = evaluate([policy], self.scenarios, options=self.options)
        out = EvaluationReport()
        out.rows = with_gaps([*self.baselines(), *mine.rows])
        out.traces = dict(mine.traces)
        return out

    def point(
        self, policy: LearnedPolicy, timesteps: int, wall_s: float
    ) -> tuple[EvalPoint, EvaluationReport]:
        report = self.report(policy)
        return summarise(report.rows, policy.name, self.baselines(), timesteps, wall_s), report
