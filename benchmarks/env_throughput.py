"""Throughput of the charging-site environment, 10 / 50 / 200 chargers.

``python -m benchmarks.env_throughput [--json] [--steps N]``

For each size it reports env steps/s (random normalised actions: ``ChargingSiteEnv`` in its
``NormalisedAction`` wrapper, the action mapping onto each charger's range included), the
time of one step split into the safety projection (``envs.projection.project``), the charger bounds
(``charger_box``, computed once per step for the action mapping, the observation and the projection) and
the rest of the env (action mapping, simulation, observation, costs, info), measured by timing those calls
during a second run; of the rest, ``sim`` is the simulator's step and state (``BatchSim.apply`` with the
costs, ``BatchSim.state``) and ``obs`` the observation (``ObservationLayout.write``), timed in a third.
Memory: the simulator's arrays (bytes per site) and the process's peak RSS.

Resets (issue 14 item 5): at 50 chargers, env steps/s over whole 7-day episodes with every reset included
(a fresh scenario each), as a share of pure stepping, for three episode sources: a new generated scenario
made at reset (``generated``), the same generated in a background process ahead of need
(``generated+prefetch``, :mod:`envs.prefetch`), and 7-day windows of a loaded 8-week history
(``history``, :mod:`envs.history`). Target: >= 50 % of pure stepping. These are wall times (the
background process works on another core, which is the point), the median of a few episodes.

Target: >= 20,000 env steps/s at 50 chargers. (The batched vector env is gone: training steps one env
per snapshot-based learned action, where the env's own step is ~5 % of a training step; see
``docs/environment.md``.) Run on one core (``OMP_NUM_THREADS=1``); times are process CPU time, the
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
    from envs.wrappers import NormalisedAction

    base = ChargingSiteEnv(generator=_generator(n))
    env = NormalisedAction(base)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    size = base.site.n + int(base.site.has_battery)
    actions = rng.uniform(-1, 1, (64, size)).astype(np.float32)
    for k in range(20):  # warm up
        env.step(actions[k % 64])
    steps = min(steps, (base.episode.n_steps - 21) // 2)
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
    sim = base.sim
    apply, state, write = _Timed(sim.apply), _Timed(sim.state), _Timed(base.layout.write)
    sim.apply, sim.state = apply, state  # type: ignore[method-assign]
    object.__setattr__(base.layout, "write", write)  # a frozen dataclass: shadow the method on the instance
    try:
        for k in range(steps):
            env.step(actions[k % 64])
    finally:
        del sim.apply, sim.state
        object.__delattr__(base.layout, "write")
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
        "sim_bytes": _sim_bytes(base.sim),
    }


RESET_TARGET_SHARE = 0.5


def _history_episodes(n: int) -> Any:
    from envs.generate import generate_scenario
    from envs.history import HistoryEpisodes, HistorySplit, SiteHistory

    scenario = generate_scenario("depot", n, 56, seed=0, v2g=True, start="2025-06-02T00:00:00+02:00")
    history = SiteHistory([scenario], HistorySplit(7, 7, 7, "15min"), name="generated-history")
    return HistoryEpisodes(history, horizon=16)


def bench_resets(n: int, episodes: int) -> dict[str, Any]:
    """Steps/s over whole episodes with resets, against pure stepping (see the module docstring)."""
    from envs.env import ChargingSiteEnv
    from envs.wrappers import NormalisedAction

    sources: dict[str, dict[str, Any]] = {
        "generated": {"generator": {**_generator(n), "pool": None}},
        "generated+prefetch": {"generator": {**_generator(n), "pool": None, "prefetch": 2}},
        "history": {"history": _history_episodes(n)},
    }
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for name, kwargs in sources.items():
        base = ChargingSiteEnv(**kwargs)
        env = NormalisedAction(base)
        size = base.site.n + int(base.site.has_battery)
        actions = rng.uniform(-1, 1, (64, size)).astype(np.float32)
        env.reset(seed=0)
        for k in range(50):  # warm up (and let a background worker start)
            env.step(actions[k % 64])
        time.sleep(1.0)
        reset_s, step_s, n_steps = [], [], []
        for _ in range(episodes):
            t0 = time.perf_counter()
            env.reset()
            t1 = time.perf_counter()
            done, k = False, 0
            while not done:
                _, _, terminated, truncated, _ = env.step(actions[k % 64])
                done, k = terminated or truncated, k + 1
            reset_s.append(t1 - t0)
            step_s.append(time.perf_counter() - t1)
            n_steps.append(k)
        env.close()
        pure = float(np.median(np.array(n_steps) / np.array(step_s)))
        whole = float(np.median(np.array(n_steps) / (np.array(step_s) + np.array(reset_s))))
        out[name] = {
            "pure_steps_per_s": pure,
            "steps_per_s_with_resets": whole,
            "share": whole / pure,
            "reset_ms": 1000.0 * float(np.median(reset_s)),
            "episode_steps": int(np.median(n_steps)),
        }
    return out


def run(steps: int, episodes: int = 5) -> dict[str, Any]:
    single = [bench_single(n, steps) for n in SIZES]
    resets = bench_resets(50, episodes)
    at50 = next(s for s in single if s["chargers"] == 50)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "single": single,
        "resets_at_50": resets,
        "summary": {
            "reset_share_at_50": {k: v["share"] for k, v in resets.items()},
            "reset_target_share": RESET_TARGET_SHARE,
            "single_steps_per_s_at_50": at50["steps_per_s"],
            "single_target_steps_per_s": TARGET_SINGLE_STEPS_PER_S,
            "projection_share_at_50": (at50["projection_us"] + at50["bounds_us"]) / at50["mean_step_us"],
            "peak_rss_mb": rss_kb / 1024.0,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
    }


def _print(result: dict[str, Any]) -> None:
    print("env (NormalisedAction(ChargingSiteEnv), random actions, depot site with V2G)")
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
    s = result["summary"]
    print(
        f"at 50 chargers: single {s['single_steps_per_s_at_50']:,.0f} steps/s "
        f"(target {s['single_target_steps_per_s']:,}; projection + bounds = "
        f"{100 * s['projection_share_at_50']:.0f} % of a step)"
    )
    print("resets at 50 chargers (whole 7-day episodes, random actions; wall time, median episode):")
    print(
        "{:>20} {:>10} {:>14} {:>7} {:>9}".format("source", "pure st/s", "with resets", "share", "reset ms")
    )
    for name, r in result["resets_at_50"].items():
        print(
            f"{name:>20} {r['pure_steps_per_s']:>10,.0f} {r['steps_per_s_with_resets']:>14,.0f} "
            f"{100 * r['share']:>6.0f}% {r['reset_ms']:>9.1f}"
        )
    print(f"(target: >= {100 * s['reset_target_share']:.0f} % of pure stepping)")
    print(f"peak RSS {s['peak_rss_mb']:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--steps", type=int, default=400, help="timed single-env steps per size")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per source in the reset figure")
    args = parser.parse_args(argv)
    result = run(args.steps, args.episodes)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
