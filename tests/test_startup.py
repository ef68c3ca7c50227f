"""Fast start (issue 16 item 4): the warm-up leaves ``evdlm serve`` nothing to compile, and a station that
starts connecting at launch is answered.

No test here is timed (``python -m benchmarks.startup`` prints the figures); they check what makes the
start fast: after ``python -m evdlm.warmup`` into an empty numba cache, building the live service for a
shipped site and running its control cycle loads every kernel from the cache and compiles none.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SERVE_ONE_CYCLE = """
import asyncio, inspect, json, logging
from pathlib import Path
from numba.core.registry import CPUDispatcher
import envs._kernel, envs._sim_kernel, envs.costs, envs.obs, envs.physics, envs.wrappers
from agents.registry import load_policy
from envs.config import load_site
from evdlm.cli.serve import default_serving_config
from serving.service import Service

logging.disable(logging.WARNING)
path = Path("configs/sites/depot_20.yaml")
site = load_site(path)
cfg = default_serving_config(path, site, None).model_copy(update={"database_url": "sqlite:///:memory:"})

async def main():
    svc = Service(cfg, site, load_policy("rule_based"), {})
    await svc.loop.run_cycle()
    await svc.stop()

asyncio.run(main())
stats = {}
for mod in (envs._kernel, envs._sim_kernel, envs.costs, envs.obs, envs.physics, envs.wrappers):
    for name, obj in vars(mod).items():
        if isinstance(obj, CPUDispatcher) and obj.__module__ == mod.__name__:
            s = obj.stats
            stats[f"{mod.__name__}.{name}"] = [sum(s.cache_hits.values()), sum(s.cache_misses.values())]
print(json.dumps(stats))
"""


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["NUMBA_CACHE_DIR"] = str(cache)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def test_after_the_warmup_the_service_compiles_nothing(tmp_path: Path) -> None:
    env = _env(tmp_path / "numba-cache")
    warm = subprocess.run(
        [sys.executable, "-m", "evdlm.warmup"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert warm.returncode == 0, warm.stderr
    assert "compiled and cached" in warm.stdout
    run = subprocess.run(
        [sys.executable, "-c", SERVE_ONE_CYCLE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    stats = json.loads(run.stdout.strip().splitlines()[-1])
    compiled = {name: misses for name, (_, misses) in stats.items() if misses}
    assert not compiled, f"compiled at start although warmed up: {compiled}"
    loaded = {name for name, (hits, _) in stats.items() if hits}
    assert (
        "envs._kernel.project_batch" in loaded
    )  # the projection (failsafe share, every cycle) came from disk


def test_a_station_connecting_at_launch_is_accepted() -> None:
    """``evdlm serve`` as launched by the benchmark: the station retries until the service listens, then
    its BootNotification is answered Accepted."""
    from benchmarks.startup import measure

    got = measure(fresh=False)
    assert math.isfinite(got["first_boot_s"]) and got["first_boot_s"] > 0
    assert 0 < got["listen_s"] < got["first_boot_s"] + 1.0  # the port is open when the boot is answered
    assert got["listen_cpu_s"] > 0
