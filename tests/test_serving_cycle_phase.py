"""With ``cycle_phase_s`` the control loop runs on the UTC clock's grid (a tariff's or a scenario's steps), so
a benchmark compares the live service with the environment stepping on the same grid."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from serving.loop import CycleSummary
from serving.service import Service
from tests.test_serving_helpers import PASSWORDS, FullPower, serving_config
from tests.test_serving_v2g import v2g_site


async def test_cycles_run_at_their_phase_on_the_utc_grid(tmp_path: Path) -> None:
    interval, phase = 0.5, 0.2
    cfg = serving_config(tmp_path, control_interval_s=interval, cycle_phase_s=phase)
    svc = Service(cfg, v2g_site(), FullPower(), PASSWORDS)
    started: list[float] = []
    run_cycle = svc.run_cycle

    async def timed() -> CycleSummary:
        started.append(time.time())
        return await run_cycle()

    svc.run_cycle = timed  # type: ignore[method-assign]
    await svc.start()
    try:
        await asyncio.sleep(2.2)
    finally:
        await svc.stop()
    assert len(started) >= 3
    for t in started:
        off = (t - phase) % interval
        assert min(off, interval - off) < 0.08, off  # on the grid, within the event loop's jitter
