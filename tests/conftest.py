"""Shared test fixtures. Ray is started at most once per test session, and only by tests that need it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# The property tests draw the same examples on every run (a CI run is red only for a change, never for a
# draw: a random run of the 28 found a case none of the others had, and that told nothing of the change).
# HYPOTHESIS_PROFILE=explore draws anew each run, to look for more.
settings.register_profile("fixed", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))


@pytest.fixture(autouse=True)
def _mlflow_store_outside_the_repository(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """No test writes MLflow runs into the repository (``mlruns/``, ``.evdlm/``, ``mlflow.db``): unless a
    test says otherwise, the store is a SQLite file in the session's temporary folder; what a test or a
    command sets (``MLFLOW_TRACKING_URI``, MLflow's global URI) is undone after it."""
    import sys

    store = tmp_path_factory.getbasetemp() / "mlflow-default"
    store.mkdir(exist_ok=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """A local Ray (2 CPUs, small object store, scratch under the temp folder), shut down at the end."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    temp = Path(tempfile.gettempdir()) / "evdlm-ray-tests"
    temp.mkdir(parents=True, exist_ok=True)
    ray.init(
        num_cpus=2,
        object_store_memory=128 * 1024 * 1024,
        _temp_dir=str(temp),
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()
