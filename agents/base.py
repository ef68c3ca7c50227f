"""One protocol for every policy, learned or not, so evaluation and serving treat them alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from envs.core import FloatArray, SiteArrays, Snapshot
from envs.scenario import Scenario


@dataclass(frozen=True)
class Decision:
    """A policy's request, before the safety projection: kW per charger (+ charge, - discharge) and the
    stationary battery's kW (+ charge)."""

    charger_kw: FloatArray
    battery_kw: float = 0.0


@runtime_checkable
class Policy(Protocol):
    """Acts on a :class:`~envs.core.Snapshot`; its output always goes through the safety projection.

    ``reset`` is called once per episode (simulation) or at start-up (serving). ``scenario`` is given
    only in simulation; a policy that needs it (the perfect-foresight optimum) raises without it.
    """

    name: str

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None: ...

    def act(self, snapshot: Snapshot) -> Decision: ...
