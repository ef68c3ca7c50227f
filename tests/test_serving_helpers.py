"""Shared builders for the serving tests: a 4-charger site, a short scenario, a serving config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.base import Decision
from envs.config import SiteConfig, site_from_dict
from envs.core import SiteArrays, Snapshot
from envs.scenario import Scenario, make_scenario
from serving.config import ServingConfig, connector_map
from serving.live import LiveSite

PASSWORDS = {"CP1": "secret-one", "CP2": "secret-two"}


def small_site(import_limit_kw: float = 30.0, rate_unit: str = "A") -> SiteConfig:
    """Two stations with two 16 A three-phase connectors each (11.04 kW), one 30 kW connection."""
    return site_from_dict(
        {
            "name": "test-site",
            "grid": {"import_limit_kw": import_limit_kw},
            "nodes": [{"id": "main", "max_power_kw": import_limit_kw}],
            "chargers": [
                {"id": cid, "node": "main", "max_current_a": 16.0, "rate_unit": rate_unit}
                for cid in ("CP1-1", "CP1-2", "CP2-1", "CP2-2")
            ],
        }
    )


def feeder_site(feeder_kw: float = 30.0, import_limit_kw: float = 60.0) -> SiteConfig:
    """:func:`small_site` with a feeder: CP1-1, CP1-2 and CP2-1 on ``f1``, CP2-2 on ``f2``, both
    ``feeder_kw``, under a connection of ``import_limit_kw`` (60 kW: never the binding limit)."""
    feeders = {"CP1-1": "f1", "CP1-2": "f1", "CP2-1": "f1", "CP2-2": "f2"}
    return site_from_dict(
        {
            "name": "feeder-site",
            "grid": {"import_limit_kw": import_limit_kw},
            "nodes": [
                {"id": "main", "max_power_kw": import_limit_kw},
                {"id": "f1", "parent": "main", "max_power_kw": feeder_kw},
                {"id": "f2", "parent": "main", "max_power_kw": feeder_kw},
            ],
            "chargers": [
                {"id": cid, "node": node, "max_current_a": 16.0, "rate_unit": "A"}
                for cid, node in feeders.items()
            ],
        }
    )


def small_scenario(
    site: SiteConfig, hours: float = 4.0, energy_kwh: float = 30.0, base_kw: float = 5.0, chargers: int = 4
) -> Scenario:
    start = pd.Timestamp("2025-06-02T08:00:00+00:00")
    idx = pd.date_range(start, periods=int(hours * 4) + 4, freq="15min")
    ts = pd.DataFrame(
        {
            "timestamp": idx,
            "base_load_kw": base_kw,
            "pv_kw": 0.0,
            "import_price_per_kwh": 0.25,
            "export_price_per_kwh": 0.05,
        }
    )
    ids = list(site.charger_ids)[:chargers]
    sessions = pd.DataFrame(
        {
            "session_id": [f"s{i}" for i in range(len(ids))],
            "charger_id": ids,
            "arrival": [start + pd.Timedelta(minutes=1 + i) for i in range(len(ids))],
            "departure": [start + pd.Timedelta(hours=hours) for _ in ids],
            "energy_kwh": energy_kwh,
        }
    )
    return make_scenario(site, sessions, ts, "test")


def serving_config(tmp_path: Path, **overrides: Any) -> ServingConfig:
    data: dict[str, Any] = {
        "site": tmp_path / "site.yaml",
        "stations": [{"id": "CP1"}, {"id": "CP2"}],
        "control_interval_s": 0.2,
        "policy_budget_s": 0.15,
        "meter": {"source": "http"},
        "meter_timeout_s": 2.0,
        "failsafe_base_load_kw": 5.0,
        "ocpp_port": 0,
        "http_port": 0,
        "database_url": f"sqlite:///{tmp_path / 'serving.db'}",
        "response_timeout_s": 3.0,
    }
    data.update(overrides)
    return ServingConfig.model_validate(data)


def drawing_live(tmp_path: Path, kw: float = 6.0, at: float = 0.9) -> tuple[LiveSite, ServingConfig]:
    """:func:`small_site` live, every charger in a transaction at a ``kw`` limit and read drawing it at
    monotonic ``at``; with the helpers' serving config."""
    site = SiteArrays.from_config(small_site())
    cfg = serving_config(tmp_path)
    live = LiveSite.build(site, connector_map(cfg, site.config), ["CP1", "CP2"])
    for k, c in enumerate(live.connectors):
        c.tx_pk, c.ocpp_tx_id = k + 1, str(k + 1)
        c.limit_kw, c.power_kw, c.power_at = kw, kw, at
    return live, cfg


class FullPower:
    """A tiny policy: every present EV at its charger's rating (the projection must cut it)."""

    name = "full_power"

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        self.site = site

    def act(self, snapshot: Snapshot) -> Decision:
        return Decision(np.where(snapshot.state.ev_present, self.site.rated_kw, 0.0))


class Raising(FullPower):
    name = "raising"

    def act(self, snapshot: Snapshot) -> Decision:
        raise RuntimeError("model exploded")


class NaNPolicy(FullPower):
    name = "nan"

    def act(self, snapshot: Snapshot) -> Decision:
        return Decision(np.full(self.site.n, np.nan))


class Slow(FullPower):
    name = "slow"

    def act(self, snapshot: Snapshot) -> Decision:
        import time

        time.sleep(0.5)
        return super().act(snapshot)
