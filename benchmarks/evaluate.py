"""Benchmark of the DLM policies against the perfect-foresight optimum.

``python -m benchmarks.evaluate [--json] [--chargers 50] [--days 7] [--kinds depot,workplace,residential]``

On generated scenarios (PV and a demand charge) it reports, per kind: the cost gap of the rule-based DLM,
the MPC (perfect forecasts) and every simple baseline to the optimum, and the energy each delivers; then the
optimum's solve time at 50 chargers x 7 days and 1,000 chargers x 1 day (15-minute steps; a workplace day,
since depot and residential stays cross midnight), and the rule-based DLM's decision time at 1,000
chargers. The targets from the issue are printed next to each figure with whether they are met. No
assertions: it prints what it reaches.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

TARGETS = {
    "rule_based_gap_pct": 10.0,
    "rule_based_delivered_pct": 99.0,
    "mpc_gap_pct": 3.0,
    "optimum_50x7_s": 3.0,
    "optimum_1000x1_s": 15.0,
    "rule_based_ms_1000": 5.0,
}


def _kind_figures(kind: str, chargers: int, days: int, seed: int, with_mpc: bool) -> dict[str, Any]:
    from agents.registry import SIMPLE_BASELINES
    from envs.generate import generate_scenario
    from training.evaluate import evaluate

    sc = generate_scenario(kind, chargers=chargers, days=days, seed=seed)  # type: ignore[arg-type]
    policies = [*SIMPLE_BASELINES, "rule_based", *(["mpc"] if with_mpc else []), "optimum"]
    t0 = time.perf_counter()
    report = evaluate(policies, [sc])
    rows = {r.policy: r for r in report.rows}
    rb = rows["rule_based"]
    cheapest_baseline = min(rows[p].cost_total for p in SIMPLE_BASELINES)
    out: dict[str, Any] = {
        "scenario": sc.name,
        "optimum_cost": rows["optimum"].cost_total,
        "optimum_delivered_pct": rows["optimum"].energy_delivered_pct,
        "rule_based_gap_pct": rb.gap_to_optimum_pct,
        "rule_based_delivered_pct": rb.energy_delivered_pct,
        "rule_based_cheaper_than_every_baseline": rb.cost_total < cheapest_baseline,
        "baseline_gaps_pct": {p: rows[p].gap_to_optimum_pct for p in SIMPLE_BASELINES},
        "baseline_delivered_pct": {p: rows[p].energy_delivered_pct for p in SIMPLE_BASELINES},
        "violations": {p: r.violations for p, r in rows.items()},
        "wall_s": time.perf_counter() - t0,
    }
    if with_mpc:
        out["mpc_gap_pct"] = rows["mpc"].gap_to_optimum_pct
        out["mpc_delivered_pct"] = rows["mpc"].energy_delivered_pct
        out["mpc_ms_p50"] = rows["mpc"].decision_ms_p50
    return out


def _optimum_solve_s(kind: str, chargers: int, days: int, seed: int) -> dict[str, float]:
    from agents.optimum import build_scenario_lp
    from envs.core import SiteArrays
    from envs.generate import generate_scenario

    sc = generate_scenario(kind, chargers=chargers, days=days, seed=seed)  # type: ignore[arg-type]
    site = SiteArrays.from_config(sc.site)
    t0 = time.perf_counter()
    lp, data, _ = build_scenario_lp(site, sc)
    if lp.sizes["x"] > 150 * max(lp.T, 1):  # the optimum's own choice (agents/optimum.py)
        lp.highs_options["simplex_strategy"] = 4
    build_s = time.perf_counter() - t0
    sol = lp.solve(data)
    return {
        "build_s": build_s,
        "solve_s": sol.solve_s,
        "total_s": build_s + sol.solve_s,
        "columns": float(lp.n_cols),
        "rows": float(lp.n_rows),
        "nonzeros": float(lp.matrix.nnz),
    }


def _rule_based_ms(chargers: int, seed: int, steps: int = 60) -> dict[str, float]:
    from agents.rule_based import RuleBasedDLM
    from envs.env import ChargingSiteEnv
    from envs.generate import generate_scenario

    sc = generate_scenario("workplace", chargers=chargers, days=1, seed=seed)
    env = ChargingSiteEnv(scenario=sc, step=None, forecast_horizon=96)
    env.reset(seed=0)
    pol = RuleBasedDLM()
    pol.reset(env.site, sc)
    times = []
    for t in range(min(steps * 2, env.episode.n_steps)):
        snap = env.snapshot()
        t0 = time.perf_counter()
        d = pol.act(snap)
        if t >= 36:  # from 09:00 local on: most EVs plugged in
            times.append(time.perf_counter() - t0)
        env.step_kw(d.charger_kw, d.battery_kw)
    ms = np.asarray(times) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "steps": float(len(ms)),
    }


def run(chargers: int, days: int, kinds: list[str], seed: int, with_mpc: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"chargers": chargers, "days": days, "targets": TARGETS, "kinds": {}}
    for kind in kinds:
        result["kinds"][kind] = _kind_figures(kind, chargers, days, seed, with_mpc)
    result["optimum_50x7"] = _optimum_solve_s("depot", 50, 7, seed)
    result["optimum_1000x1"] = _optimum_solve_s("workplace", 1000, 1, seed)
    result["rule_based_1000"] = _rule_based_ms(1000, seed)
    return result


def _fmt(v: float | None, unit: str = "") -> str:
    return "-" if v is None else f"{v:.2f}{unit}"


def _print(res: dict[str, Any]) -> None:
    t = res["targets"]
    print(f"evdlm policy benchmark: {res['chargers']} chargers x {res['days']} days, 15-minute steps")
    for k in res["kinds"].values():
        head = f"{k['scenario']}: optimum cost {k['optimum_cost']:.1f}"
        print(f"\n{head} ({k['optimum_delivered_pct']:.2f} % delivered)")
        gap_ok = (k["rule_based_gap_pct"] or 1e9) <= t["rule_based_gap_pct"]
        delivered_ok = k["rule_based_delivered_pct"] >= t["rule_based_delivered_pct"]
        print(
            f"  rule_based  gap {_fmt(k['rule_based_gap_pct'], ' %')}"
            f"  (target <= {t['rule_based_gap_pct']} %: {'met' if gap_ok else 'NOT met'}),"
            f" delivered {k['rule_based_delivered_pct']:.2f} %"
            f" (target >= {t['rule_based_delivered_pct']} %: {'met' if delivered_ok else 'NOT met'}),"
            f" cheaper than every simple baseline: {k['rule_based_cheaper_than_every_baseline']}"
        )
        if "mpc_gap_pct" in k:
            ok = (k["mpc_gap_pct"] or 1e9) <= t["mpc_gap_pct"]
            print(
                f"  mpc         gap {_fmt(k['mpc_gap_pct'], ' %')}  (target <= {t['mpc_gap_pct']} %: "
                f"{'met' if ok else 'NOT met'}), delivered {k['mpc_delivered_pct']:.2f} %, "
                f"{k['mpc_ms_p50']:.1f} ms per step"
            )
        for p, g in k["baseline_gaps_pct"].items():
            print(f"  {p:<14} gap {_fmt(g, ' %'):>9}, delivered {k['baseline_delivered_pct'][p]:.2f} %")
        print(f"  limit violations: {sum(k['violations'].values())}")
    for key, label, target in (
        ("optimum_50x7", "optimum 50 chargers x 7 days", t["optimum_50x7_s"]),
        ("optimum_1000x1", "optimum 1000 chargers x 1 day", t["optimum_1000x1_s"]),
    ):
        o = res[key]
        print(
            f"\n{label}: build {o['build_s']:.2f} s + solve {o['solve_s']:.2f} s = {o['total_s']:.2f} s "
            f"(target < {target} s: {'met' if o['total_s'] < target else 'NOT met'}); "
            f"{int(o['columns'])} columns, {int(o['rows'])} rows, {int(o['nonzeros'])} nonzeros"
        )
    r = res["rule_based_1000"]
    print(
        f"rule_based decision at 1000 chargers: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms "
        f"(target < {t['rule_based_ms_1000']} ms: "
        f"{'met' if r['p50_ms'] < t['rule_based_ms_1000'] else 'NOT met'})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--chargers", type=int, default=50)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--kinds", default="depot,workplace,residential")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-mpc", action="store_true", help="skip the MPC (the slowest part)")
    args = parser.parse_args(argv)
    res = run(args.chargers, args.days, [k for k in args.kinds.split(",") if k], args.seed, not args.no_mpc)
    if args.json:
        print(json.dumps(res, default=float))
    else:
        _print(res)


if __name__ == "__main__":
    main()
