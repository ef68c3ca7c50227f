"""Honest violations (issue 16 item 7): attributed, and the README's live demo holds its limits."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.rule_based import RuleBasedDLM
from envs.generate import generate_scenario
from envs.scenario import load_scenario, save_scenario
from evdlm.cli.serve import default_serving_config
from serving.config import connector_map
from serving.events import MeterReading, TransactionStarted
from serving.service import Service
from serving.violations import site_cause
from stationsim.simulator import SimOptions, SiteSimulator
from tests.test_serving_helpers import PASSWORDS, FullPower, serving_config, small_site


@pytest.mark.parametrize(
    ("import_kw", "chargers_kw", "last_other_kw", "last_planned_kw", "cause"),
    [
        (44.0, 20.0, 24.0, 44.0, None),  # within the 45 kW limit
        (52.6, 3.7, 40.0, 43.0, "uncontrollable"),  # 48.9 kW of building load alone
        (50.0, 20.0, 24.0, 44.0, "base_load_rise"),  # the building rose by 6 kW since a plan within
        (50.0, 26.0, 24.0, 44.0, "controllable"),  # the chargers drew 6 kW more than planned
        (50.0, 20.0, 24.0, 47.0, "controllable"),  # the plan itself was over the limit
        (50.0, 20.0, None, None, "controllable"),  # nothing to compare with: assume the chargers could
    ],
)
def test_site_violation_causes(
    import_kw: float,
    chargers_kw: float,
    last_other_kw: float | None,
    last_planned_kw: float | None,
    cause: str,
) -> None:
    assert site_cause(import_kw, 45.0, chargers_kw, last_other_kw, last_planned_kw) == cause


async def test_a_building_load_alone_above_the_limit_is_an_uncontrollable_overload(tmp_path: Path) -> None:
    svc = Service(serving_config(tmp_path), small_site(), FullPower(), PASSWORDS)
    await svc.start(http=False, loop=False)
    try:
        await svc.updater.transaction_started(TransactionStarted("CP1", 1, None, "t", 0.0, datetime.now(UTC)))
        svc.updater.meter_reading(MeterReading("CP1", 1, 2000.0, None, None))
        svc.on_site_meter(33.0, None)  # 31 kW besides the 2 kW charger: over the 30 kW limit on its own
        await svc.run_cycle()
        state = svc.state()
    finally:
        await svc.stop()
    loop = state["loop"]
    assert loop["violations"] == 0 and loop["overloads_uncontrollable"] == 1
    assert loop["last_uncontrollable"] is not None
    (v,) = loop["recent_violations"]
    assert v["limit"] == "site" and v["cause"] == "uncontrollable"
    assert v["excess_kw"] == pytest.approx(3.0) and v["limit_kw"] == 30.0
    assert svc.metrics.count("violations_total", cause="uncontrollable", limit="site") == 1


async def test_the_readme_live_demo_has_no_controllable_violation(tmp_path: Path) -> None:
    """README / docs/serving.md: a generated depot, 'serve --site ... --time-scale 60' and
    'simulate --speed 60' with the meter pushed over HTTP, run for a short while."""
    folder = tmp_path / "demo"
    save_scenario(generate_scenario("depot", chargers=6, days=2), folder)
    scenario = load_scenario(folder)
    cfg = default_serving_config(folder / "site.yaml", scenario.site, None)
    cfg = cfg.model_copy(
        update={
            "ocpp_port": 0, "http_port": 0, "time_scale": 60.0,
            "database_url": f"sqlite:///{tmp_path / 'serving.db'}",
        }
    )  # fmt: skip
    assert cfg.control_interval_s == 10.0 and not cfg.require_auth  # the defaults of 'serve --site'
    svc = Service(cfg, scenario.site, RuleBasedDLM(), {})
    await svc.start()
    try:
        opts = SimOptions(
            speed=60.0, tick_s=0.1, meter_interval_s=10.0, duration_s=32.0, warmup_s=0.5,
            meter_push_url=f"http://127.0.0.1:{svc.http_port}/api/meter",
        )  # fmt: skip
        sim = SiteSimulator(
            scenario, f"ws://127.0.0.1:{svc.ocpp_port}", opts, connector_map(cfg, scenario.site)
        )
        rep = await sim.run()
        state = svc.state()
    finally:
        await svc.stop()
    assert state["loop"]["cycle"] >= 3 and state["loop"]["policy"] == "rule_based"
    assert rep.refused_unregistered == 0 and rep.calls_failed == 0
    assert sum(rep.energy_delivered_kwh.values()) > 0
    # every violation the service saw is attributed; none was the chargers' doing
    assert state["loop"]["violations"] == 0, state["loop"]["recent_violations"]
