"""Compile every numba kernel once and keep it in numba's on-disk cache: ``python -m evdlm.warmup``.

Every kernel of ``envs/`` is ``@njit(cache=True)``: the first process that calls one compiles it (about a
minute for all of them on one core) and stores the machine code next to its module (``__pycache__``, or
``NUMBA_CACHE_DIR``); every later process loads it in milliseconds. ``make install`` runs this module, so
a fresh clone after the README's set-up command starts ``evdlm serve`` without compiling (issue 16: listening
in under 15 s on a fresh clone).

What it runs is what the programs run, with the same argument types (so the cached code is the code they
look up): the live service's start and one control cycle on a small site (the failsafe's static safe share,
the rule-based DLM, the projection with rounding, the minimum current and the departure floor), and a few
steps of every non-learned policy but the LP-based ones on a generated site with V2G, PV and a battery
(the simulator's kernels, the observation, the costs, the priority fill). It writes nothing but the cache
(the service's store is in memory) and prints how long it took.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path

LP_POLICIES = frozenset({"mpc", "optimum", "optimum_lp"})
"""policies solved by HiGHS, not by the compiled kernels (and slow to warm): left out"""
STEPS = 8


def warm_policies(steps: int = STEPS) -> list[str]:
    """``steps`` steps of every non-learned policy (but :data:`LP_POLICIES`) on a small generated site with
    V2G, PV and a battery; returns the policies run."""
    from agents.registry import NON_LEARNED, load_policy
    from agents.rollout import rollout
    from envs.env import ChargingSiteEnv
    from envs.generate import generate_scenario

    sc = generate_scenario(kind="workplace", chargers=6, days=1, seed=0, v2g=True, battery=True)
    names = [p for p in NON_LEARNED if p not in LP_POLICIES]
    for name in names:
        env = ChargingSiteEnv(scenario=sc, step=None)
        env.reset(seed=0)
        pol = load_policy(name)
        pol.reset(env.site, sc)
        for _ in rollout(pol, env, max_steps=steps):
            pass
    return names


def warm_serving() -> None:
    """Build the live service for a small site with the rule-based DLM (the failsafe share is computed
    there) and run one control cycle, without opening a port."""
    from agents.registry import load_policy
    from envs.generate import generate_scenario
    from evdlm.cli.serve import default_serving_config
    from serving.service import Service

    site = generate_scenario(kind="depot", chargers=6, days=1, seed=0).site
    cfg = default_serving_config(Path("warmup-site.yaml"), site, None)
    cfg = cfg.model_copy(update={"database_url": "sqlite:///:memory:"})

    async def one_cycle() -> None:
        svc = Service(cfg, site, load_policy("rule_based"), {})
        try:
            await svc.loop.run_cycle()
        finally:
            await svc.stop()  # nothing was started: waits for the cycle's journal, closes the store

    asyncio.run(one_cycle())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    logging.getLogger("evdlm").setLevel(logging.ERROR)  # the small site's start-up warnings are not news
    t0 = time.perf_counter()
    warm_serving()
    t1 = time.perf_counter()
    names = warm_policies()
    t2 = time.perf_counter()
    print(
        f"numba kernels compiled and cached: the live service in {t1 - t0:.1f} s, "
        f"{len(names)} policies in {t2 - t1:.1f} s"
    )


if __name__ == "__main__":
    main()
