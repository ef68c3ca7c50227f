"""Where MLflow runs and models live: the one rule every command and library follows.

``--tracking-uri`` (an explicit URI) first, then the ``MLFLOW_TRACKING_URI`` environment variable, then
the project's SQLite store ``.evdlm/mlflow.db`` in the working directory, artifacts in ``.evdlm/mlartifacts``.
A ``sqlite:///`` store keeps its artifacts in ``mlartifacts`` beside the database file; a server decides
itself. Training, evaluation, tuning, forecasting backtests and serving all resolve the store here, so a
model registered by ``evdlm train`` (or ``make run``) is found by ``evdlm evaluate`` and ``evdlm serve``.

This module imports neither mlflow nor any evdlm package, so that ``agents``, ``serving``, ``forecasting`` and
``training`` may all use it without breaking a package rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR_NAME = ".evdlm"
ENV_VAR = "MLFLOW_TRACKING_URI"
_SQLITE = "sqlite:///"


@dataclass(frozen=True)
class TrackingStore:
    """An MLflow tracking store: its URI, where new experiments keep artifacts, and why it was chosen."""

    uri: str
    artifact_location: str | None
    """``file://`` URI of the artifact folder for new experiments; None where the server decides"""
    source: str
    """``--tracking-uri``, ``MLFLOW_TRACKING_URI`` or ``project default``"""

    def describe(self) -> str:
        return f"{self.uri} ({self.source})"


def resolve_tracking_store(
    tracking_uri: str | None = None, project_dir: str | Path | None = None
) -> TrackingStore:
    """The store for ``tracking_uri`` (explicit), else ``MLFLOW_TRACKING_URI``, else
    ``<project_dir or cwd>/.evdlm/mlflow.db``. The folder of a SQLite store is created."""
    if tracking_uri:
        uri, source = tracking_uri, "--tracking-uri"
    elif os.environ.get(ENV_VAR):
        uri, source = os.environ[ENV_VAR], ENV_VAR
    else:
        root = Path(project_dir) if project_dir is not None else Path.cwd()
        uri, source = f"{_SQLITE}{(root / PROJECT_DIR_NAME / 'mlflow.db').resolve()}", "project default"
    artifacts = None
    if uri.startswith(_SQLITE):
        db = Path(uri.removeprefix(_SQLITE))
        folder = db.resolve().parent / "mlartifacts"
        folder.mkdir(parents=True, exist_ok=True)
        artifacts = folder.as_uri()
    return TrackingStore(uri, artifacts, source)


def use_tracking_store(tracking_uri: str | None = None) -> TrackingStore:
    """Resolve the store and make it this process's (and its children's: Ray workers, subprocesses) MLflow
    store, through ``MLFLOW_TRACKING_URI`` and, if mlflow is already imported, ``mlflow.set_tracking_uri``.
    Every ``evdlm`` command that reads or writes runs or models calls this first."""
    import sys

    store = resolve_tracking_store(tracking_uri)
    os.environ[ENV_VAR] = store.uri
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(store.uri)
    return store
