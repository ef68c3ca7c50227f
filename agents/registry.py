"""Policy names -> factories, and the hook that resolves a learned policy named by path or MLflow URI.

``make_policy("edf")`` builds a fresh policy; :data:`NON_LEARNED` is what ``evdlm evaluate`` runs by
default. :func:`load_policy` is the single entry point evaluation and serving use for any spec: a known
name, or (once the RL part registers its loader with :func:`register_loader`) a saved learned policy. The
registry is an explicit object, not module-level mutable state: :func:`default_registry` builds a fresh
one every call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from agents.base import Policy
from agents.baselines import EqualShare, PriorityShare, RoundRobin, StaticShare, Uncontrolled, edf, llf
from agents.mpc import ModelPredictiveControl
from agents.optimum import PerfectForesightOptimum
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
    _register_learned_loaders(reg)
    return reg


def _register_learned_loaders(reg: PolicyRegistry) -> None:
    """Loaders for learned policies (the RL part adds its own here)."""
    from agents.learned import learned_loader  # bundle folder, MLflow model folder, models:/ or runs:/ URI

    reg.register_loader(learned_loader)


def make_policy(name: str) -> Policy:
    """A fresh non-learned policy by name."""
    return default_registry().make(name)


def load_policy(spec: str) -> Policy:
    """Any policy: a known name, or a learned policy by path / MLflow URI through the registered loaders."""
    return default_registry().make(spec)
