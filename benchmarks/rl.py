"""Train the shipped learned policies within a time budget and score them on unseen scenarios.

``python -m benchmarks.rl [--json] [--minutes M] [--configs peak_shaving,v2g] [--chargers 20,50] [--days D]``

For each config and each site size of ``--chargers`` (a policy is tied to its charger count, so each size
is trained on its own, registered as the config's model name, suffixed ``-<n>`` for sizes other than the
config's): train with ``training.max_minutes = M`` (periodic evaluation on the config's validation
seeds gives the curve of the cost gap to the optimum against training time: PNG and MLflow), then run
the registered policy, the rule-based DLM and the perfect-foresight optimum on *test* scenarios whose
seeds were used neither in training nor in validation, and print per config: cost gap to the optimum
(learned and rule-based), cost vs the rule-based DLM, energy delivered, EVs leaving short, limit
violations, and for configs with discharge the V2G contribution (cost of the same policy with discharge
disabled minus its cost; positive = V2G pays) and the EVs that left short although their request was
feasible: a request is feasible when the perfect-foresight optimum delivers it on the same scenario (it
misses at most ``SHORT_KWH``), and such an EV is counted for the learned policy (and the rule-based DLM, for
reference) when it leaves missing more than ``SHORT_KWH``. The figures are also logged to the training run.
Targets (issue 6): peak_shaving <= 8 % above the optimum, below the rule-based DLM, >= 99 % energy, 0
violations; v2g: positive V2G contribution, every feasible request met, 0 violations.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from training.evaluate import SHORT_KWH

if TYPE_CHECKING:
    from envs.core import FloatArray
    from training.evaluate import EpisodeResult

TEST_SEEDS = (501, 502, 503)
DEFAULT_CHARGERS = (20, 50)


@dataclass(frozen=True)
class ConfigFigures:
    config: str
    chargers: int
    days: int
    train_minutes: float
    timesteps: int
    selected_timesteps: int
    test_scenarios: int
    cost_learned: float
    cost_rule_based: float
    cost_optimum: float
    gap_to_optimum_pct: float
    rule_based_gap_to_optimum_pct: float
    gap_to_rule_based_pct: float
    energy_delivered_pct: float
    evs_short: int
    evs_short_feasible: int
    """EVs that left missing > SHORT_KWH although the optimum delivered their request (<= SHORT_KWH short)"""
    evs_short_feasible_kwh: float
    rule_based_evs_short_feasible: int
    rule_based_evs_short_feasible_kwh: float
    evs_feasible: int
    """EVs that left within the test scenarios with a request the optimum delivered"""
    evs_departed: int
    violations: int
    v2g_exported_kwh: float
    v2g_contribution: float | None
    """cost of the same policy with discharge disabled minus its cost (currency; > 0: V2G pays)"""
    curve: list[tuple[float, float | None]]
    """(training minutes, validation gap to optimum %)"""
    model_uri: str
    run_id: str
    wall_s: float


def short_feasible(
    policy_short_kwh: FloatArray, optimum_short_kwh: FloatArray, tol_kwh: float = SHORT_KWH
) -> tuple[int, float, int]:
    """(EVs short, their missing kWh, EVs feasible) among sessions that left (non-NaN in both arrays):
    feasible = the optimum misses at most ``tol_kwh``; short = the policy misses more than ``tol_kwh``."""
    pol = np.asarray(policy_short_kwh, dtype=float)
    opt = np.asarray(optimum_short_kwh, dtype=float)
    if pol.shape != opt.shape:
        raise ValueError(f"session arrays differ in shape: {pol.shape} vs {opt.shape}")
    feasible = np.isfinite(pol) & np.isfinite(opt) & (opt <= tol_kwh)
    short = feasible & (pol > tol_kwh)
    return int(short.sum()), float(pol[short].sum()), int(feasible.sum())


def run_config(
    name: str,
    minutes: float,
    days: int | None,
    tracking_uri: str | None,
    eval_every: int,
    chargers: int | None = None,
) -> ConfigFigures:
    from mlflow.tracking import MlflowClient

    from agents.learned import LearnedPolicy
    from envs.generate import generate_scenario
    from training.evaluate import EnvOptions, evaluate
    from training.held_out import summarise
    from training.learner import forecast_provider
    from training.rl_config import load_train_config, shipped_config
    from training.train import train

    t0 = time.perf_counter()
    base = load_train_config(shipped_config(name))
    every = max(1_000, eval_every)
    overrides: dict[str, Any] = {
        "training.max_minutes": minutes,
        "training.total_timesteps": 50_000_000,
        "evaluation.every_steps": every,
    }
    if chargers is not None and chargers != base.env.generator.chargers:
        overrides["env.generator.chargers"] = chargers
        overrides["tracking.registered_model"] = f"{base.registered_model_name}-{chargers}"
    config = base.with_overrides(overrides)
    result = train(config, tracking_uri=tracking_uri, progress=False)
    policy = LearnedPolicy.from_bundle(result.bundle_dir)
    g = config.env.generator
    test_days = days or g.days
    scenarios = []
    for seed in TEST_SEEDS:
        kwargs = g.generate_kwargs(seed)
        kwargs["days"] = test_days
        scenarios.append(generate_scenario(**kwargs))
    opts = EnvOptions(forecast=forecast_provider(config.env.forecast), step=g.step)
    policies: list[Any] = [policy, "rule_based", "optimum"]
    no_discharge = policy.without_discharge() if config.env.allow_discharge and g.v2g else None
    if no_discharge is not None:
        policies.append(no_discharge)
    sessions: dict[tuple[str, str], FloatArray] = {}

    def keep(res: EpisodeResult) -> None:
        if res.session_short_kwh is not None:
            sessions[(res.row.scenario, res.row.policy)] = res.session_short_kwh

    report = evaluate(policies, scenarios, options=opts, on_result=keep)
    feasible_counts = {}
    for pol_name in (policy.name, "rule_based"):
        n_short, kwh, n_feasible = 0, 0.0, 0
        for sc in report.scenarios():
            s_, k_, f_ = short_feasible(sessions[(sc, pol_name)], sessions[(sc, "optimum")])
            n_short, kwh, n_feasible = n_short + s_, kwh + k_, n_feasible + f_
        feasible_counts[pol_name] = (n_short, kwh, n_feasible)
    baselines = [r for r in report.rows if r.policy in ("rule_based", "optimum")]
    point = summarise(report.rows, policy.name, baselines, result.timesteps, result.wall_s)
    contribution = None
    if no_discharge is not None:
        without = sum(r.cost_total for r in report.rows if r.policy == no_discharge.name)
        contribution = float(without - point.cost_total)
    assert point.optimum_cost is not None and point.rule_based_cost is not None
    selected = result.selected or result.final
    figures = ConfigFigures(
        config=name,
        chargers=g.chargers,
        days=test_days,
        train_minutes=result.wall_s / 60.0,
        timesteps=result.timesteps,
        selected_timesteps=selected.timesteps,
        test_scenarios=len(scenarios),
        cost_learned=point.cost_total,
        cost_rule_based=point.rule_based_cost,
        cost_optimum=point.optimum_cost,
        gap_to_optimum_pct=float(point.gap_to_optimum_pct or 0.0),
        rule_based_gap_to_optimum_pct=float(point.rule_based_gap_to_optimum_pct or 0.0),
        gap_to_rule_based_pct=float(point.gap_to_rule_based_pct or 0.0),
        energy_delivered_pct=point.energy_delivered_pct,
        evs_short=point.evs_short,
        evs_short_feasible=feasible_counts[policy.name][0],
        evs_short_feasible_kwh=feasible_counts[policy.name][1],
        rule_based_evs_short_feasible=feasible_counts["rule_based"][0],
        rule_based_evs_short_feasible_kwh=feasible_counts["rule_based"][1],
        evs_feasible=feasible_counts[policy.name][2],
        evs_departed=sum(r.evs_departed for r in report.rows if r.policy == policy.name),
        violations=point.violations,
        v2g_exported_kwh=point.v2g_exported_kwh,
        v2g_contribution=contribution,
        curve=[(p.wall_s / 60.0, p.gap_to_optimum_pct) for p in result.evaluations],
        model_uri=result.model_uri,
        run_id=result.run_id,
        wall_s=time.perf_counter() - t0,
    )
    client = MlflowClient(result.tracking_uri)
    for key in (
        "gap_to_optimum_pct",
        "rule_based_gap_to_optimum_pct",
        "gap_to_rule_based_pct",
        "energy_delivered_pct",
        "evs_short_feasible",
        "evs_short_feasible_kwh",
        "violations",
    ):
        client.log_metric(result.run_id, f"test/{key}", float(getattr(figures, key)))
    if contribution is not None:
        client.log_metric(result.run_id, "test/v2g_contribution", contribution)
    return figures


def _print(figs: list[ConfigFigures]) -> None:
    for f in figs:
        print(
            f"{f.config}: {f.chargers} chargers, {len(TEST_SEEDS)} unseen scenarios x {f.days} days; "
            f"trained {f.train_minutes:.1f} min / {f.timesteps} steps "
            f"(policy from step {f.selected_timesteps})"
        )
        print(
            f"  cost: learned {f.cost_learned:.2f}, rule-based {f.cost_rule_based:.2f}, "
            f"optimum {f.cost_optimum:.2f}"
        )
        print(
            f"  gap to optimum: learned {f.gap_to_optimum_pct:+.2f} %, rule-based "
            f"{f.rule_based_gap_to_optimum_pct:+.2f} %; "
            f"learned vs rule-based {f.gap_to_rule_based_pct:+.2f} %"
        )
        print(
            f"  energy delivered {f.energy_delivered_pct:.2f} %, EVs short {f.evs_short}, "
            f"violations {f.violations}, V2G exported {f.v2g_exported_kwh:.1f} kWh"
        )
        print(
            f"  feasible requests (optimum delivers them): {f.evs_feasible} of {f.evs_departed} EVs; "
            f"left short anyway: learned {f.evs_short_feasible} ({f.evs_short_feasible_kwh:.2f} kWh), "
            f"rule-based {f.rule_based_evs_short_feasible} ({f.rule_based_evs_short_feasible_kwh:.2f} kWh)"
        )
        if f.v2g_contribution is not None:
            print(f"  V2G contribution (no-discharge cost - cost): {f.v2g_contribution:+.2f}")
        curve = ", ".join(f"{m:.1f} min: {'n/a' if g is None else f'{g:+.1f} %'}" for m, g in f.curve)
        print(f"  validation gap vs training time: {curve}")
        print(f"  model {f.model_uri} (run {f.run_id})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per config (wall time)")
    parser.add_argument("--configs", default="peak_shaving,v2g", help="comma-separated shipped configs")
    parser.add_argument(
        "--chargers",
        default=",".join(str(n) for n in DEFAULT_CHARGERS),
        help="comma-separated site sizes (chargers); each is trained and tested on its own",
    )
    parser.add_argument(
        "--days", type=int, default=None, help="days of each test scenario (default: config's)"
    )
    parser.add_argument("--eval-every", type=int, default=15_000, help="validation every N training steps")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: project store)")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.chargers.split(",") if n.strip()]
    figs = [
        run_config(name.strip(), args.minutes, args.days, args.tracking_uri, args.eval_every, n)
        for name in args.configs.split(",")
        if name.strip()
        for n in sizes
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "minutes": args.minutes,
                    "test_seeds": list(TEST_SEEDS),
                    "chargers": sizes,
                    "configs": [asdict(f) for f in figs],
                }
            )
        )
    else:
        _print(figs)


if __name__ == "__main__":
    main()
