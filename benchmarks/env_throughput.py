"""Throughput of the charging-site environment: single env and vectorised, 10 / 50 / 200 chargers.

``python -m benchmarks.env_throughput [--json] [--steps N] [--batch B]``

For each size it reports single-env steps/s (random actions, ``ChargingSiteEnv`` without wrappers), the
time of one step split into the safety projection (``envs.projection.project``), the charger bounds
(``charger_box``, computed once per step for the action mapping, the observation and the projection) and
the rest of the env (action mapping, simulation, observation, costs, info), measured by timing those calls
during a second run; of the rest, ``sim`` is the simulator's step and state (``BatchSim.apply`` with the
costs, ``BatchSim.state``) and ``obs`` the observation (``ObservationLayout.write``), timed in a third;
and the vector env's charger-steps/s for a batch of ``B`` sites. Memory: the simulator's arrays (bytes
per site) and the process's peak RSS.

Targets of the issue: >= 20,000 single-env steps/s at 50 chargers, vectorised >= 5x that in
charger-steps/s (5,000,000). Run on one core (``OMP_NUM_THREADS=1``); times are process CPU time, the
best of ``CHUNKS`` equal chunks of the timed steps, so other load on the machine inflates them less than a
wall-time mean (the split of a step is the mean over a second run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

SIZES = (10, 50, 200)
TARGET_SINGLE_STEPS_PER_S = 20_000
TARGET_VECTOR_FACTOR = 5
CHUNKS = 5


def _generator(n: int) -> dict[str, Any]:
    return {"kind": "depot", "chargers": n, "days": 7, "seed": 0, "v2g": True, "pool": 4}


def _sim_bytes(sim: Any) -> int:
    """Bytes of the simulator's arrays, each buffer once (some attributes are views of one stacked array)."""
    owners: dict[int, int] = {}
    for v in vars(sim).values():
        if isinstance(v, np.ndarray):
            owner = v if v.base is None else v.base
            owners[id(owner)] = owner.nbytes if isinstance(owner, np.ndarray) else v.nbytes
    return sum(owners.values())


class _Timed:
    """Wraps a function and adds up the process CPU time spent in it."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.process_time()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.process_time() - t0


def _best_chunk_s(step: Callable[[int], Any], steps: int) -> float:
    """CPU seconds per call of ``step(k)``: ``steps`` calls in ``CHUNKS`` equal chunks, the best chunk."""
    chunk = max(1, steps // CHUNKS)
    best = float("inf")
    for c in range(CHUNKS):
        t0 = time.process_time()
        for k in range(c * chunk, (c + 1) * chunk):
            step(k)
        best = min(best, (time.process_time() - t0) / chunk)
    return best


def bench_single(n: int, steps: int) -> dict[str, float]:
    from envs import projection
    from envs.env import ChargingSiteEnv

    env = ChargingSiteEnv(generator=_generator(n))
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    size = env.site.n + int(env.site.has_battery)
    actions = rng.uniform(-1, 1, (64, size)).astype(np.float32)
    for k in range(20):  # warm up
        env.step(actions[k % 64])
    steps = min(steps, (env.episode.n_steps - 21) // 2)
    step_s = _best_chunk_s(lambda k: env.step(actions[k % 64]), steps)

    # the same kind of steps again, with the projection's entry points timed
    project, bounds = _Timed(projection.project), _Timed(projection.charger_box)
    projection.project, projection.charger_box = project, bounds
    t0 = time.process_time()
    try:
        for k in range(steps):
            env.step(actions[k % 64])
    finally:
        projection.project, projection.charger_box = project.fn, bounds.fn
    mean_s = (time.process_time() - t0) / steps  # the timers' own cost is counted in the parts they time
    project_s, bounds_s = project.seconds / steps, bounds.seconds / steps

    # and a third run with the simulator's step and the observation timed (parts of the rest)
    env.reset(seed=1)
    sim = env.sim
    apply, state, write = _Timed(sim.apply), _Timed(sim.state), _Timed(env.layout.write)
    sim.apply, sim.state = apply, state  # type: ignore[method-assign]
    object.__setattr__(env.layout, "write", write)  # a frozen dataclass: shadow the method on the instance
    try:
        for k in range(steps):
            env.step(actions[k % 64])
    finally:
        del sim.apply, sim.state
        object.__delattr__(env.layout, "write")
    sim_s, obs_s = (apply.seconds + state.seconds) / steps, write.seconds / steps
    return {
        "chargers": n,
        "steps_per_s": 1.0 / step_s,
        "charger_steps_per_s": n / step_s,
        "step_us": step_s * 1e6,
        "projection_us": project_s * 1e6,
        "bounds_us": bounds_s * 1e6,
        "env_rest_us": max(mean_s - project_s - bounds_s, 0.0) * 1e6,
        "sim_us": sim_s * 1e6,
        "obs_us": obs_s * 1e6,
        "mean_step_us": mean_s * 1e6,
        "sim_bytes": _sim_bytes(env.sim),
    }


def bench_vector(n: int, batch: int, steps: int) -> dict[str, float]:
    from envs.vector import ChargingSiteVectorEnv

    venv = ChargingSiteVectorEnv(batch, generator=_generator(n))
    t0 = time.perf_counter()
    venv.reset(seed=0)
    reset_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    size = venv.site.n + int(venv.site.has_battery)
    actions = rng.uniform(-1, 1, (8, batch, size)).astype(np.float32)
    for k in range(3):
        venv.step(actions[k % 8])
    step_s = _best_chunk_s(lambda k: venv.step(actions[k % 8]), steps)
    return {
        "chargers": n,
        "batch": batch,
        "vector_steps_per_s": 1.0 / step_s,
        "charger_steps_per_s": batch * n / step_s,
        "step_ms": step_s * 1e3,
        "reset_s": reset_s,
        "sim_bytes_per_site": _sim_bytes(venv.sim) / batch,
    }


def run(steps: int, batch: int, vector_steps: int) -> dict[str, Any]:
    single = [bench_single(n, steps) for n in SIZES]
    vector = [bench_vector(n, batch, vector_steps) for n in SIZES]
    at50 = next(s for s in single if s["chargers"] == 50)
    v50 = next(v for v in vector if v["chargers"] == 50)
    target_vec = TARGET_VECTOR_FACTOR * TARGET_SINGLE_STEPS_PER_S * 50
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "single": single,
        "vector": vector,
        "summary": {
            "single_steps_per_s_at_50": at50["steps_per_s"],
            "single_target_steps_per_s": TARGET_SINGLE_STEPS_PER_S,
            "projection_share_at_50": (at50["projection_us"] + at50["bounds_us"]) / at50["mean_step_us"],
            "vector_charger_steps_per_s_at_50": v50["charger_steps_per_s"],
            "vector_target_charger_steps_per_s": target_vec,
            "vector_over_single_at_50": v50["charger_steps_per_s"] / at50["charger_steps_per_s"],
            "peak_rss_mb": rss_kb / 1024.0,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
    }


def _print(result: dict[str, Any]) -> None:
    print("single env (ChargingSiteEnv, random continuous actions, depot site with V2G)")
    print("(step us: best chunk; project / bounds / rest: the mean step of a second run, split; sim and obs")
    print(" are parts of the rest)")
    head = ("chargers", "steps/s", "step us", "project", "bounds", "rest", "sim", "obs", "sim KiB")
    print("{:>8} {:>9} {:>8} {:>8} {:>7} {:>6} {:>5} {:>5} {:>8}".format(*head))
    for s in result["single"]:
        print(
            f"{s['chargers']:>8} {s['steps_per_s']:>9.0f} {s['step_us']:>8.0f} {s['projection_us']:>8.0f} "
            f"{s['bounds_us']:>7.0f} {s['env_rest_us']:>6.0f} {s['sim_us']:>5.0f} {s['obs_us']:>5.0f} "
            f"{s['sim_bytes'] / 1024:>8.0f}"
        )
    print("vector env (ChargingSiteVectorEnv)")
    vhead = ("chargers", "batch", "vec steps/s", "charger-steps/s", "reset s", "KiB/site")
    print("{:>8} {:>6} {:>12} {:>16} {:>8} {:>9}".format(*vhead))
    for v in result["vector"]:
        print(
            f"{v['chargers']:>8} {v['batch']:>6} {v['vector_steps_per_s']:>12.1f} "
            f"{v['charger_steps_per_s']:>16,.0f} {v['reset_s']:>8.2f} {v['sim_bytes_per_site'] / 1024:>9.0f}"
        )
    s = result["summary"]
    print(
        f"at 50 chargers: single {s['single_steps_per_s_at_50']:,.0f} steps/s "
        f"(target {s['single_target_steps_per_s']:,}; projection + bounds = "
        f"{100 * s['projection_share_at_50']:.0f} % of a step); vector "
        f"{s['vector_charger_steps_per_s_at_50']:,.0f} charger-steps/s "
        f"(target {s['vector_target_charger_steps_per_s']:,}; {s['vector_over_single_at_50']:.1f}x single)"
    )
    print(f"peak RSS {s['peak_rss_mb']:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--steps", type=int, default=400, help="timed single-env steps per size")
    parser.add_argument("--batch", type=int, default=64, help="sites in the vector env")
    parser.add_argument("--vector-steps", type=int, default=40, help="timed vector steps per size")
    args = parser.parse_args(argv)
    result = run(args.steps, args.batch, args.vector_steps)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
