"""Saved rollouts of every registered policy, to prove that a structural change changes no number.

``python -m benchmarks.rollouts --save DIR`` runs every non-learned registered policy on a fixed set of
generated benchmark scenarios (depot, workplace with V2G and a battery, residential) and saves, per policy and
scenario, the per-step arrays that matter: applied charger kW, battery kW, site import, PV curtailed and the
step's cost parts. ``--compare DIR`` runs the same again and prints, per policy and scenario, whether every
array is bit-identical to the saved one and, where not, the largest absolute difference. ``--json`` prints
the comparison as one JSON object.

It drives the environment the way evaluation does (:func:`agents.rollout.rollout`: snapshot -> policy ->
projection -> step; a policy spec may also be a learned policy's bundle folder), so any change to
the physics, the projection, a policy or the env's plumbing shows up here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

SCENARIOS: tuple[dict[str, Any], ...] = (
    {"kind": "depot", "chargers": 20, "days": 2, "seed": 11},
    {"kind": "workplace", "chargers": 16, "days": 2, "seed": 12, "v2g": True, "battery": True},
    {"kind": "residential", "chargers": 12, "days": 2, "seed": 13},
)
ARRAYS = ("charger_kw", "battery_kw", "site_import_kw", "pv_curtailed_kw", "cost")


def _scenario_name(spec: dict[str, Any]) -> str:
    return "-".join(str(spec[k]) for k in ("kind", "chargers", "days", "seed")) + (
        "-v2g" if spec.get("v2g") else ""
    )


def rollout_arrays(policy: str, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per-step arrays of one policy on one generated scenario (deterministic)."""
    from agents.registry import load_policy
    from agents.rollout import rollout
    from envs.env import ChargingSiteEnv
    from envs.generate import generate_scenario

    sc = generate_scenario(**spec)
    env = ChargingSiteEnv(scenario=sc, step=None)
    env.reset(seed=0)
    pol = load_policy(policy)
    pol.reset(env.site, sc)
    rows: dict[str, list[Any]] = {k: [] for k in ARRAYS}
    for step in rollout(pol, env):
        info = step.info
        rows["charger_kw"].append(np.asarray(info["charger_power_kw"], dtype=float).copy())
        rows["battery_kw"].append(float(info["battery_kw"]))
        rows["site_import_kw"].append(float(info["site_import_kw"]))
        rows["pv_curtailed_kw"].append(float(info["pv_curtailed_kw"]))
        rows["cost"].append([float(v) for _, v in sorted(info["cost"].items())])
    return {k: np.asarray(v, dtype=float) for k, v in rows.items()}


def _policies() -> tuple[str, ...]:
    from agents.registry import NON_LEARNED

    return tuple(NON_LEARNED)


def save(out: Path, policies: tuple[str, ...]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for spec in SCENARIOS:
        for pol in policies:
            arrays = rollout_arrays(pol, spec)
            np.savez(out / f"{_scenario_name(spec)}__{pol}.npz", allow_pickle=False, **arrays)
            print(f"saved {_scenario_name(spec)} {pol}: {arrays['charger_kw'].shape[0]} steps", flush=True)


def compare(saved: Path, policies: tuple[str, ...]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for spec in SCENARIOS:
        for pol in policies:
            key = f"{_scenario_name(spec)}__{pol}"
            path = saved / f"{key}.npz"
            if not path.is_file():
                result[key] = {"identical": False, "missing": True}
                continue
            before = np.load(path)
            after = rollout_arrays(pol, spec)
            diffs: dict[str, float] = {}
            same = True
            for name in ARRAYS:
                a, b = before[name], after[name]
                if a.shape != b.shape:
                    diffs[name] = float("inf")
                    same = False
                elif not np.array_equal(a, b):
                    diffs[name] = float(np.max(np.abs(a - b)))
                    same = False
            result[key] = {"identical": same, "max_abs_diff": diffs}
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path, help="folder to save the rollouts to")
    group.add_argument("--compare", type=Path, help="folder of saved rollouts to compare with")
    ap.add_argument("--policies", default="", help="comma-separated policy names (default: all non-learned)")
    ap.add_argument("--json", action="store_true", help="print the comparison as one JSON object")
    args = ap.parse_args(argv)
    policies = tuple(p for p in args.policies.split(",") if p) or _policies()
    if args.save is not None:
        save(args.save, policies)
        return
    result = compare(args.compare, policies)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, r in result.items():
        status = "identical" if r["identical"] else f"DIFFERS {r.get('max_abs_diff', 'missing')}"
        print(f"{key:55s} {status}")
    n_same = sum(r["identical"] for r in result.values())
    print(f"{n_same} of {len(result)} rollouts bit-identical")


if __name__ == "__main__":
    main()
