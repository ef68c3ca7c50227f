"""The trained policy as an MLflow model: one artifact from training to the site, registered.

A learned policy is saved as a *bundle* folder (:mod:`agents.learned`: the SB3 model, the VecNormalize
statistics (the observation normaliser), the site configuration it was trained for, ``policy.json`` with
the fingerprints of the observation layout and the site and the step it decides on). :func:`log_policy`
first attaches the training config and a copy of the fitted forecaster (``provider: model``) to the
bundle (:func:`agents.learned.bundle.attach_training`), then logs that bundle as an ``mlflow.pyfunc``
model and registers it, so that ``models:/<name>/<version>`` and ``runs:/<run_id>/policy`` load it back
anywhere: as a pyfunc model that maps raw observations to actions (the signature says their shapes), or,
through :func:`agents.registry.load_policy` (which downloads the bundle, nothing of this module), as a
:class:`~agents.learned.LearnedPolicy` acting on snapshots. This module is the logging half only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import Schema, TensorSpec

from agents.learned import LearnedPolicy
from agents.learned.bundle import attach_training
from training.rl_config import TrainConfig

ARTIFACT_NAME = "policy"
"""name of the MLflow model inside its run: ``runs:/<run_id>/policy``"""
_REQUIREMENTS = ("stable-baselines3", "torch", "numpy", "pandas", "gymnasium", "pydantic", "pyyaml")


class EvdlmPolicyModel(PythonModel):
    """pyfunc model: raw (unnormalised) observations ``(B, obs_dim)`` -> actions ``(B, act_dim)``.

    The input may be a float array, a DataFrame whose columns are the observation in order, or a mapping
    with the array under ``"observation"``.
    """

    def __init__(self) -> None:
        self._policy: LearnedPolicy | None = None

    def load_context(self, context: PythonModelContext) -> None:
        self._policy = LearnedPolicy.from_bundle(context.artifacts["bundle"])

    @property
    def policy(self) -> LearnedPolicy:
        if self._policy is None:
            raise RuntimeError("the model is not loaded (load it with mlflow.pyfunc.load_model)")
        return self._policy

    def predict(self, context, model_input, params=None):
        # untyped on purpose: MLflow reads type hints here as a schema, the signature already gives one
        if isinstance(model_input, dict):
            model_input = model_input["observation"]
        obs = model_input.to_numpy() if isinstance(model_input, pd.DataFrame) else np.asarray(model_input)
        return self.policy.predict_observation(obs.astype(np.float32))


@dataclass(frozen=True)
class LoggedPolicy:
    """Where a logged policy landed."""

    run_model_uri: str
    """``runs:/<run_id>/policy``"""
    registered_model_uri: str | None
    """``models:/<name>/<version>`` (None when not registered)"""
    name: str | None
    version: str | None


def _pip_requirements() -> list[str]:
    out = []
    for dist in _REQUIREMENTS:
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(dist)
    return out


def training_config_yaml(config: TrainConfig) -> str:
    """The training config as YAML text (what the bundle's ``train.yaml`` holds)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def forecaster_path(config: TrainConfig) -> Path | None:
    """The fitted forecaster the config's observation window comes from (``provider: model``), else None."""
    fc = config.env.forecast
    return Path(fc.model_path) if fc.provider == "model" and fc.model_path else None


def log_policy(
    bundle_dir: str | Path,
    registered_model_name: str | None = None,
    config: TrainConfig | None = None,
    forecaster: Path | None = None,
) -> LoggedPolicy:
    """Log a policy bundle as a pyfunc model in the active MLflow run and register it under the name.

    With ``config``, the training config and a copy of its fitted forecaster are put into the bundle
    first, so the registered model is all a site needs; ``forecaster``: the fitted forecaster when the config
    names none (a history run fits one on its training part). Needs an active run (``mlflow.start_run``).
    Requirements are pinned to the versions installed here, so logging does not spend time inferring them.
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_policy needs an active MLflow run")
    if config is not None:
        attach_training(bundle_dir, training_config_yaml(config), forecaster or forecaster_path(config))
    policy = LearnedPolicy.from_bundle(bundle_dir)
    meta = policy.meta
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, meta.obs_dim))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, meta.act_dim))]),
    )
    with warnings.catch_warnings():
        # MLflow nags about type hints, input examples and cloudpickle; the signature covers the schema
        warnings.simplefilter("ignore", UserWarning)
        info = mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME,
            python_model=EvdlmPolicyModel(),
            artifacts={"bundle": str(bundle_dir)},
            signature=signature,
            pip_requirements=_pip_requirements(),
            registered_model_name=registered_model_name,
            metadata={"evdlm": meta.to_json_dict()},
        )
    version = info.registered_model_version
    run_uri = f"runs:/{run.info.run_id}/{ARTIFACT_NAME}"
    if registered_model_name is None or version is None:
        return LoggedPolicy(run_uri, None, None, None)
    return LoggedPolicy(
        run_uri, f"models:/{registered_model_name}/{version}", registered_model_name, str(version)
    )
