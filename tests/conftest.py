"""Shared test fixtures. Ray is started at most once per test session, and only by tests that need it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


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
