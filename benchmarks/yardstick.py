"""Is the optimum the yardstick on generated sites? ``python -m benchmarks.yardstick [--json] [--kinds K,...]
[--seeds 0-12] [--chargers 10] [--days 2] [--penalty EUR_PER_KWH] [--policies P,...]``

For each generated scenario it runs the perfect-foresight optimum and every registered non-learned policy
through the environment and reports the policies that cost less than the optimum by more than 0.1 % (the
yardstick beaten: none should be) and those that deliver more energy than it (toward the needs of the EVs
that leave), with how much more they cost, and whether the optimum's plan costs its objective executed.
``--penalty`` replaces the generator's missing-energy penalty (1 EUR/kWh), e.g. with the real weeks' 20: at
a low penalty leaving energy undelivered can be the cheaper plan (docs/policies.md, *Delivered energy*).
No assertions: it prints what it finds; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

TOL = 1e-3
"""a policy cheaper than the optimum by more than this share beats the yardstick (issue 13: 0.1 %)"""


def seeds_of(text: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def scenario_figures(
    kind: str, seed: int, chargers: int, days: int, penalty: float | None, policies: list[str]
) -> dict[str, Any]:
    """The optimum and ``policies`` on one generated scenario (see the module docstring)."""
    from agents.optimum import PerfectForesightOptimum
    from envs.generate import generate_scenario
    from envs.scenario import make_scenario
    from training.evaluate import run_episode

    sc = generate_scenario(kind, chargers=chargers, days=days, seed=seed)  # type: ignore[arg-type]
    if penalty is not None:
        tariff = sc.site.tariff.model_copy(update={"missing_energy_penalty_per_kwh": penalty})
        site = sc.site.model_copy(update={"tariff": tariff})
        sessions, series = sc.sessions.reset_index(drop=True), sc.timeseries.reset_index()
        sc = make_scenario(site, sessions, series, name=sc.name)
    t0 = time.perf_counter()
    opt = PerfectForesightOptimum()
    best = run_episode(opt, sc).row
    out: dict[str, Any] = {
        "scenario": sc.name,
        "kind": kind,
        "seed": seed,
        "optimum_cost": best.cost_total,
        "plan_objective": opt.solution.objective if opt.solution is not None else float("nan"),
        "bound": opt.bound,
        "plan_kind": opt.plan_kind,
        "optimum_delivered_pct": best.energy_delivered_pct,
        "optimum_short_kwh": best.evs_short_kwh,
        "optimum_s": time.perf_counter() - t0,
        "cheaper": [],
        "delivers_more": [],
    }
    for name in policies:
        row = run_episode(name, sc).row
        gap = 100.0 * (row.cost_total - best.cost_total) / max(abs(best.cost_total), 1e-9)
        if row.cost_total < best.cost_total - TOL * abs(best.cost_total):
            out["cheaper"].append({"policy": name, "gap_pct": gap})
        more = row.energy_delivered_kwh - best.energy_delivered_kwh
        if more > 1e-6:
            out["delivers_more"].append({"policy": name, "kwh": more, "gap_pct": gap})
    return out


def run(
    kinds: list[str], seeds: list[int], chargers: int, days: int, penalty: float | None, policies: list[str]
) -> dict[str, Any]:
    scenarios = []
    for kind in kinds:
        for seed in seeds:
            fig = scenario_figures(kind, seed, chargers, days, penalty, policies)
            scenarios.append(fig)
            beaten = ", ".join(f"{c['policy']} {c['gap_pct']:+.3f} %" for c in fig["cheaper"]) or "none"
            more = ", ".join(
                f"{m['policy']} +{m['kwh']:.3f} kWh at {m['gap_pct']:+.2f} %" for m in fig["delivers_more"]
            )
            print(
                f"{fig['scenario']}: optimum {fig['optimum_cost']:.2f} EUR "
                f"(+{100.0 * (fig['optimum_cost'] / fig['bound'] - 1.0):.3f} % over its bound, "
                f"{fig['optimum_delivered_pct']:.3f} % delivered, {fig['optimum_s']:.0f} s); "
                f"cheaper: {beaten}; delivering more: {more or 'none'}",
                file=sys.stderr,
                flush=True,
            )
    return {
        "chargers": chargers,
        "days": days,
        "penalty_per_kwh": penalty,
        "scenarios": scenarios,
        "beaten": sum(bool(s["cheaper"]) for s in scenarios),
        # the plan executed as planned: its replay through the environment costs its objective
        "off_plan": sum(
            abs(s["optimum_cost"] - s["plan_objective"]) > TOL * abs(s["plan_objective"]) for s in scenarios
        ),
        "out_delivered": sum(bool(s["delivers_more"]) for s in scenarios),
    }


def main(argv: list[str] | None = None) -> None:
    from agents.registry import NON_LEARNED

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--kinds", default="depot,residential,workplace")
    parser.add_argument("--seeds", default="0-4", help="generator seeds: comma-separated, ranges as 0-12")
    parser.add_argument("--chargers", type=int, default=10)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--penalty", type=float, default=None, help="missing-energy penalty, EUR per kWh")
    others = [p for p in NON_LEARNED if p not in ("optimum", "optimum_lp")]
    parser.add_argument("--policies", default=",".join(others), help="comma-separated policy names")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    res = run(kinds, seeds_of(args.seeds), args.chargers, args.days, args.penalty, policies)
    if args.json:
        print(json.dumps(res, default=float))
    else:
        print(
            f"{len(res['scenarios'])} scenarios ({args.chargers} chargers x {args.days} days): the optimum "
            f"beaten by more than {100 * TOL:.1f} % in {res['beaten']}, a policy delivering more in "
            f"{res['out_delivered']}, its plan not executed as planned (by more than {100 * TOL:.1f} %) in "
            f"{res['off_plan']}"
        )


if __name__ == "__main__":
    main()
