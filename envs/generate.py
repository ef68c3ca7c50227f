"""Generated scenarios (CONTRACT STUB: being implemented; the signature is final)."""

from __future__ import annotations

from typing import Literal

from envs.scenario import Scenario

Kind = Literal["depot", "workplace", "residential", "public"]


def generate_scenario(
    kind: Kind = "depot",
    chargers: int = 20,
    days: int = 7,
    seed: int = 0,
    step: str = "15min",
    start: str = "2025-06-02T00:00:00+02:00",
    v2g: bool = False,
    pv: bool = True,
    battery: bool = False,
    demand_charge_per_kw: float | None = None,
) -> Scenario:
    """A plausible scenario of ``kind``; the same arguments give the same scenario (and bytes)."""
    raise NotImplementedError
