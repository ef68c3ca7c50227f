"""Learned policies: a trained stable-baselines3 model behind the one :class:`~agents.base.Policy` protocol.

* :mod:`agents.learned.observation`: the observation, built from a snapshot by the env's own code;
* :mod:`agents.learned.actions`: the action modes (residual, setpoint, rule setpoint, ...), one class each;
* :mod:`agents.learned.bundle`: the saved bundle and where one is found (folder, MLflow model, URI);
* :mod:`agents.learned.policy`: :class:`LearnedPolicy`, acting on snapshots;
* :mod:`agents.learned.wrappers`: the Gymnasium wrappers training sees the env through.
"""

from agents.learned.actions import ACTION_MODES, ActionMode, action_dim, action_mode
from agents.learned.bundle import (
    BUNDLE_META,
    PolicyMeta,
    SiteMismatchError,
    algorithm_class,
    bundle_folder,
    detached_statistics,
    is_learned_spec,
    layout_fingerprint,
)
from agents.learned.observation import ChargerRange, ObservationSpec, Observed, SnapshotObserver, layout_for
from agents.learned.policy import LearnedPolicy, learned_loader
from agents.learned.wrappers import LearnedAction, SnapshotObservation, learned_env

__all__ = [
    "ACTION_MODES",
    "BUNDLE_META",
    "ActionMode",
    "ChargerRange",
    "LearnedAction",
    "LearnedPolicy",
    "ObservationSpec",
    "Observed",
    "PolicyMeta",
    "SiteMismatchError",
    "SnapshotObservation",
    "SnapshotObserver",
    "action_dim",
    "action_mode",
    "algorithm_class",
    "bundle_folder",
    "detached_statistics",
    "is_learned_spec",
    "layout_fingerprint",
    "layout_for",
    "learned_env",
    "learned_loader",
]
