"""Learn a policy for a real site from its own history, and score it on later weeks it never saw.

``python -m benchmarks.site_learning [--minutes M] [--json] [--sites caltech,jpl] [--policies ...]``

For each of two real sites of the real-data benchmark (:mod:`benchmarks.real`: the Caltech and the JPL
garage) one history is built from one allowed ACN-Data period (Caltech 2019-05-01..2019-08-31, JPL
2019-09-01..2019-12-31; the held-out periods are never opened): the sessions through the ``acn-csv``
importer (:func:`envs.loaders.load_acn_csv`, the code of ``evdlm scenario import --format acn-csv``) on the
garage's site (:func:`benchmarks.real.site_config`, one import limit for the whole history, sized as
``benchmarks.real`` sizes a week's), with the Dutch prices, PV and household load of
:mod:`benchmarks.real_data`. The history is split in time order (:class:`envs.history.SiteHistory`): training
on the earlier months, validation (checkpoint choice) on the next :data:`VALIDATION_DAYS`, test on the last
:data:`TEST_DAYS` (three weeks).

A PPO policy trains for ``--minutes`` of wall time per site (:func:`training.train.train`, on 2 env copies:
the 2 cores the target names) with the ``rule_setpoint_hedged`` action: site-level lifts of the rule-based
DLM's import on the rule-based DLM exactly as registered, so the untrained policy *is* the rule (the same
costs on every week) and the checkpoint chosen on the validation weeks (step 0 included) is never worse
than the rule there. It observes forecasts of a model fitted on the
training part only and the drivers' declared departures and energies. Then the chosen policy, the
rule-based DLM, MPC (the same fitted forecasts and declarations) and the optimum (hindsight: the bound) run
on the test weeks. The table gives each policy's mean cost per test week, its gap to the rule-based DLM
and to the optimum, the EVs that left short and the limit violations, and checks the targets: learned mean
cost at least 1 % below the rule's, no more EVs short than the rule, 0 violations.

The learning curve (gap to the optimum on the validation weeks against training minutes, both sites) is
written to ``--png`` (default ``docs/site_learning.png``, shown in ``docs/learning.md``) and logged to
MLflow with the table (experiment ``evdlm-site-learning``; each site's training run logs its own curve,
split and forecaster there too). Progress goes to stderr. Histories are cached in ``.evdlm/site_learning``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from benchmarks import real, real_data

if TYPE_CHECKING:
    from training.held_out import EvalPoint
    from training.rl_config import TrainConfig

CACHE = Path(".evdlm") / "site_learning" / "v1"
VALIDATION_DAYS = 14
TEST_DAYS = 21
WINDOW_DAYS = 7
DEFAULT_POLICIES = ("rule_based", "mpc", "optimum")
TARGET_BELOW_RULE_PCT = 1.0


@dataclass(frozen=True)
class Site:
    """One real site: ``site`` and ``period`` name an allowed ACN-Data period (:data:`real.PERIODS`)."""

    site: str
    period: str

    @property
    def name(self) -> str:
        return f"{self.site}-{self.period.split()[0]}"


SITES: tuple[Site, ...] = (
    Site("caltech", "2019-05-01 2019-08-31"),
    Site("jpl", "2019-09-01 2019-12-31"),
)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_history(site: Site, cache: Path = CACHE, rebuild: bool = False) -> Path:
    """The history folder of ``site`` (site.yaml, sessions.csv, timeseries.csv), built once and cached."""
    from envs.config import dump_site
    from envs.loaders import load_acn_csv
    from envs.scenario import save_scenario, spread_load_kw, uncontrolled_load_kw

    folder = cache / site.name
    if not rebuild and (folder / "sessions.csv").exists():
        return folder
    if site.period not in real.PERIODS.get(site.site, ()):
        raise ValueError(f"{site.site}/{site.period} is not an allowed period {real.PERIODS}")
    first, last = site.period.split()
    start = pd.Timestamp(first, tz=real.TIMEZONE)
    end = pd.Timestamp(last, tz=real.TIMEZONE) + pd.Timedelta(days=1)
    index = pd.date_range(start.tz_convert("UTC"), end.tz_convert("UTC"), freq=real.STEP, inclusive="left")
    ids = real.stations(site.site)
    ts = real.site_timeseries(index, len(ids))
    work = cache / f"{site.name}-inputs"
    work.mkdir(parents=True, exist_ok=True)
    ts_path = work / "timeseries.csv"
    ts.to_csv(ts_path, index_label="timestamp")
    sessions_file = real.period_file(site.site, site.period)
    # first with no binding limit, to size the site's one import limit as benchmarks.real sizes a week's
    draft_site = work / "draft-site.yaml"
    dump_site(real.site_config(f"acn-{site.site}", ids, 1e6), draft_site)
    draft = load_acn_csv(sessions_file, draft_site, None, ts_path, real.STEP).scenario
    net = draft.timeseries["base_load_kw"] - draft.timeseries["pv_kw"]
    unc = float((net + uncontrolled_load_kw(draft)).max())
    spread = float((net + spread_load_kw(draft)).max())
    limit = float(math.ceil(spread + real.LIMIT_SHARE * max(unc - spread, 0.0)))
    site_path = work / "site.yaml"
    dump_site(real.site_config(f"acn-{site.site}", ids, limit), site_path)
    result = load_acn_csv(sessions_file, site_path, None, ts_path, real.STEP)
    save_scenario(result.scenario, folder)
    _log(f"  built {folder}: {len(result.scenario.sessions)} sessions ({len(result.dropped)} dropped), "
         f"limit {limit:.0f} kW (spread {spread:.0f}, uncontrolled {unc:.0f})")  # fmt: skip
    return folder


def site_config(site: Site, folder: Path, minutes: float, eval_every: int, seed: int) -> TrainConfig:
    """The training config of one site (see the module docstring)."""
    from training.rl_config import config_from_dict

    data = {
        "name": f"site-{site.name}",
        "seed": seed,
        "env": {
            "history": {
                "folders": [str(folder.resolve())],
                "window_days": WINDOW_DAYS,
                "validation_days": VALIDATION_DAYS,
                "test_days": TEST_DAYS,
                "step": real.STEP,
                "augment": {"resample_days": True, "arrival_jitter_min": 15.0, "energy_jitter_pct": 10.0},
            },
            "action_mode": "rule_setpoint_hedged",
            "residual_scale": 0.5,
            "allow_discharge": False,
            "forecast": {"provider": "model", "horizon_steps": 16},
        },
        "algorithm": {
            "name": "PPO",
            "learning_rate": 3e-4,
            "n_steps": 672,
            "batch_size": 672,
            "n_epochs": 10,
            "gamma": 0.995,
            "log_std_init": -0.5,
            "net_arch": [64, 64],
        },
        "training": {
            "total_timesteps": 50_000_000,
            "max_minutes": minutes,
            "n_envs": 2,
            "vec_env": "dummy",
            "checkpoint_every_steps": None,
        },
        "evaluation": {"every_steps": eval_every, "baselines": ["rule_based", "optimum"]},
        "tracking": {"experiment": "evdlm-site-learning", "registered_model": f"evdlm-site-{site.site}"},
    }
    return config_from_dict(data, f"<site_learning {site.name}>")


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def run_site(
    site: Site, minutes: float, policies: list[str], eval_every: int, seed: int, tracking_uri: str | None
) -> dict[str, Any]:
    """Build, train, and score one site on its test weeks; progress on stderr."""
    from training.evaluate import EnvOptions, evaluate
    from training.train import train

    t0 = time.perf_counter()
    folder = build_history(site)
    config = site_config(site, folder, minutes, eval_every, seed)
    _log(f"[{site.name}] training for {minutes:g} min (PPO, rule_setpoint_hedged, fitted forecasts)")
    result = train(config, tracking_uri=tracking_uri, progress=sys.stderr.isatty())
    assert result.history is not None
    th = result.history
    tests = th.test_scenarios()
    _log(f"[{site.name}] scoring on {len(tests)} test weeks: {', '.join(s.name for s in tests)}")
    options = EnvOptions(forecast=th.forecast, forecast_horizon=th.episodes.horizon)
    learned = str(result.bundle_dir)
    report = evaluate([*policies, learned], tests, options=options, on_result=real._progress_line())
    per_policy: dict[str, dict[str, Any]] = {}
    for r in report.rows:
        name = "learned" if r.policy == learned else r.policy
        entry = per_policy.setdefault(name, {"costs": [], "evs_short": 0, "violations": 0, "weeks": []})
        entry["costs"].append(r.cost_total)
        entry["evs_short"] += r.evs_short
        entry["violations"] += r.violations
        entry["weeks"].append(r.scenario)
    summary = {
        name: {
            "mean_cost": _mean(e["costs"]),
            "costs": e["costs"],
            "evs_short": e["evs_short"],
            "violations": e["violations"],
        }
        for name, e in per_policy.items()
    }
    rule = summary.get("rule_based", {}).get("mean_cost")
    opt = summary.get("optimum", {}).get("mean_cost")
    for s in summary.values():
        s["vs_rule_pct"] = None if rule is None else 100.0 * (s["mean_cost"] - rule) / max(abs(rule), 1e-9)
        s["gap_to_optimum_pct"] = (
            None if opt is None else 100.0 * (s["mean_cost"] - opt) / max(abs(opt), 1e-9)
        )
    mine = summary.get("learned", {})
    checks = {
        "cost_1pct_below_rule": mine.get("vs_rule_pct") is not None
        and mine["vs_rule_pct"] <= -TARGET_BELOW_RULE_PCT,
        "no_more_evs_short_than_rule": "rule_based" in summary
        and mine.get("evs_short", 1 << 30) <= summary["rule_based"]["evs_short"],
        "zero_violations": mine.get("violations") == 0,
        "within_30_min_training": result.wall_s <= 30 * 60,
    }
    return {
        "site": site.name,
        "split": th.split_lines(),
        "train_minutes": result.wall_s / 60.0,
        "timesteps": result.timesteps,
        "selected_timesteps": result.selected.timesteps if result.selected else None,
        "model_uri": result.model_uri,
        "run_id": result.run_id,
        "test_weeks": [s.name for s in tests],
        "policies": summary,
        "checks": checks,
        "curve": [_curve_point(p) for p in result.evaluations],
        "wall_s": time.perf_counter() - t0,
    }


def _curve_point(p: EvalPoint) -> dict[str, float | None]:
    return {
        "minutes": p.wall_s / 60.0,
        "timesteps": float(p.timesteps),
        "gap_to_optimum_pct": p.gap_to_optimum_pct,
        "rule_gap_to_optimum_pct": p.rule_based_gap_to_optimum_pct,
    }


def plot_curves(results: list[dict[str, Any]], path: Path) -> Path:
    """Gap to the optimum on the validation weeks against training minutes, one line per site, with each
    site's rule-based DLM dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for k, res in enumerate(results):
        color = f"C{k}"
        xs = [c["minutes"] for c in res["curve"]]
        ys = [math.nan if c["gap_to_optimum_pct"] is None else c["gap_to_optimum_pct"] for c in res["curve"]]
        ax.plot(xs, ys, marker="o", color=color, label=f"{res['site']} learned")
        rule = next(
            (c["rule_gap_to_optimum_pct"] for c in res["curve"] if c["rule_gap_to_optimum_pct"]), None
        )
        if rule is not None:
            ax.axhline(rule, color=color, linestyle="--", alpha=0.7, label=f"{res['site']} rule-based DLM")
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("cost gap to optimum on validation weeks (%)")
    ax.set_title("Learning a real site from its own history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    for res in results:
        lines.extend(res["split"])
        lines.append(
            f"trained {res['train_minutes']:.1f} min, {res['timesteps']:,} steps (chosen: step "
            f"{res['selected_timesteps']:,}); test weeks {', '.join(res['test_weeks'])}"
        )
        lines.append(
            f"  {'policy':<12}{'mean cost':>11}{'vs rule %':>11}{'gap opt %':>11}{'EVs short':>11}{'viol':>6}"
        )
        for name, s in res["policies"].items():
            keys = ("mean_cost", "vs_rule_pct", "gap_to_optimum_pct")
            cells = "".join(real.fmt_cell(s[k], "11.2f") for k in keys)
            lines.append(f"  {name:<12}{cells}{s['evs_short']:>11}{s['violations']:>6}")
        checks = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in res["checks"].items())
        lines.append(f"  targets: {checks}")
        lines.append("")
    return "\n".join(lines)


def _log_to_mlflow(results: list[dict[str, Any]], png: Path, tracking_uri: str | None) -> None:
    import mlflow

    from training.tracking import ensure_experiment, tracking_location

    uri, root = tracking_location(tracking_uri)
    mlflow.set_tracking_uri(uri)
    experiment_id = ensure_experiment("evdlm-site-learning", uri, root)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name="site-learning", tags={"evdlm.kind": "benchmark"}
    ):
        for res in results:
            for name, s in res["policies"].items():
                for key in ("mean_cost", "vs_rule_pct", "gap_to_optimum_pct", "evs_short", "violations"):
                    if s[key] is not None:
                        mlflow.log_metric(f"{res['site']}.{name}.{key}", float(s[key]))
            mlflow.log_metric(f"{res['site']}.train_minutes", res["train_minutes"])
        mlflow.log_artifact(str(png), "plots")
        mlflow.log_dict({"sites": results}, "site_learning.json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--minutes", type=float, default=30.0, help="training wall time per site (default 30)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--sites", default=",".join(s.site for s in SITES), help="caltech,jpl")
    parser.add_argument("--policies", default=",".join(DEFAULT_POLICIES), help="baselines on the test weeks")
    parser.add_argument("--eval-every", type=int, default=5376, help="validation every N env steps (8 weeks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", type=Path, default=Path("docs") / "site_learning.png")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    wanted = {s.strip() for s in args.sites.split(",") if s.strip()}
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    results = []
    try:
        for site in SITES:
            if site.site in wanted:
                results.append(
                    run_site(site, args.minutes, policies, args.eval_every, args.seed, args.tracking_uri)
                )
    except real_data.MissingBenchData as err:
        raise SystemExit(f"error: {err}") from None
    png = plot_curves(results, args.png)
    _log_to_mlflow(results, png, args.tracking_uri)
    _log(f"learning curve: {png}")
    if args.json:
        print(json.dumps(results, indent=2, default=float))
    else:
        print(table(results))


if __name__ == "__main__":
    main()
