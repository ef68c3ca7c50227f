"""The one door to every policy: names -> factories, and learned policies by bundle, folder or MLflow URI.

``make_policy("edf")`` builds a fresh policy; :data:`NON_LEARNED` is what ``evdlm evaluate`` runs by
default. :func:`load_policy` is the single entry point evaluation and serving use for any spec: a known
name (one spelling each, :data:`NON_LEARNED`), a learned policy's bundle folder, MLflow model folder or
``models:/`` / ``runs:/`` URI (:mod:`agents.learned.bundle`: artifacts downloaded, nothing else of MLflow
used), or, only with ``allow_custom=True``, a ``module:Class`` spec naming a class to import and build. The
registry is an explicit object, not module-level mutable state: :func:`default_registry` builds a fresh
one every call.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from agents.base import Policy
from agents.baselines import EqualShare, PriorityShare, RoundRobin, StaticShare, Uncontrolled, edf, llf
from agents.mpc import ModelPredictiveControl
from agents.optimum import LPRelaxationBound, PerfectForesightOptimum
from agents.rule_based import RuleBasedDLM

PolicyFactory = Callable[[], Policy]
Loader = Callable[[str], Policy | None]
"""resolves a spec (path or URI) to a policy, or returns None when the spec is not its kind"""

NON_LEARNED: tuple[str, ...] = (
    "uncontrolled",
    "static",
    "equal_share",
    "priority_share",
    "edf",
    "llf",
    "round_robin",
    "rule_based",
    "mpc",
    "optimum",
)
SIMPLE_BASELINES: tuple[str, ...] = NON_LEARNED[:7]


class UnknownPolicyError(ValueError):
    """A policy spec that is neither a known name nor resolvable by a registered loader."""


@dataclass
class PolicyRegistry:
    """Factories by name plus loaders for learned policies (tried in registration order)."""

    factories: dict[str, PolicyFactory] = field(default_factory=dict)
    loaders: list[Loader] = field(default_factory=list)

    def register(self, name: str, factory: PolicyFactory) -> None:
        self.factories[name] = factory

    def register_loader(self, loader: Loader) -> None:
        self.loaders.append(loader)

    def names(self) -> tuple[str, ...]:
        return tuple(self.factories)

    def make(self, spec: str) -> Policy:
        if spec in self.factories:
            return self.factories[spec]()
        for loader in self.loaders:
            policy = loader(spec)
            if policy is not None:
                return policy
        known = ", ".join(self.factories)
        raise UnknownPolicyError(
            f"unknown policy {spec!r}: known names are {known}; a learned policy is named by its saved path "
            "or an MLflow model URI (models:/..., runs:/...) once a loader for it is registered"
        )


def default_registry() -> PolicyRegistry:
    """A registry with every non-learned policy."""
    reg = PolicyRegistry()
    reg.register("uncontrolled", Uncontrolled)
    reg.register("static", StaticShare)
    reg.register("equal_share", EqualShare)
    reg.register("priority_share", PriorityShare)
    reg.register("edf", edf)
    reg.register("llf", llf)
    reg.register("round_robin", RoundRobin)
    reg.register("rule_based", RuleBasedDLM)
    reg.register("mpc", ModelPredictiveControl)
    reg.register("optimum", PerfectForesightOptimum)
    reg.register("optimum_lp", LPRelaxationBound)  # the relaxation: a bound, not in NON_LEARNED
    _register_learned_loaders(reg)
    return reg


def _register_learned_loaders(reg: PolicyRegistry) -> None:
    """Loaders for learned policies (the RL part adds its own here)."""
    from agents.learned import learned_loader  # bundle folder, MLflow model folder, models:/ or runs:/ URI

    reg.register_loader(learned_loader)


def make_policy(name: str) -> Policy:
    """A fresh non-learned policy by name."""
    return default_registry().make(name)


CUSTOM_SPEC = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):(?P<cls>[A-Za-z_]\w*)$")
"""``package.module:ClassName``"""


def custom_policy(spec: str) -> Policy:
    """A policy class named ``package.module:ClassName``, imported and built without arguments."""
    m = CUSTOM_SPEC.match(spec)
    if m is None:
        raise UnknownPolicyError(f"{spec!r} is not a module:Class spec")
    policy: Policy = getattr(importlib.import_module(m["module"]), m["cls"])()
    return policy


def load_policy(spec: str, *, allow_custom: bool = False) -> Policy:
    """Any policy: a known name, or a learned policy by path / MLflow URI through the registered loaders.

    ``allow_custom``: also accept ``package.module:ClassName`` (imports that module: only for a spec the
    operator wrote, never one from the outside).
    """
    if allow_custom and CUSTOM_SPEC.match(spec):
        return custom_policy(spec)
    return default_registry().make(spec)
