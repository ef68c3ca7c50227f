"""The bundle of a learned policy, and where one is found: a folder, an MLflow model, a ``models:/`` URI.

A bundle is a folder: ``model.zip`` (SB3), ``vecnormalize.pkl`` (the observation normaliser: VecNormalize
statistics), ``site.yaml`` (the site it was trained for), ``policy.json`` (:class:`PolicyMeta`: the
fingerprints of the observation layout and of the site, the step it decides on), and, once training
attached them (:func:`attach_training`), ``train.yaml`` (the training config) and ``forecaster.joblib``
(the fitted forecaster its observation's window came from, when the config used ``provider: model``), so
that the site needs nothing of the training folder. Training logs the bundle as an MLflow model
(:mod:`training.mlflow_model`);
:func:`bundle_folder` finds it again, in a folder or behind a ``models:/`` / ``runs:/`` URI, by downloading
the model's artifacts only (MLflow imported when a URI is given, nothing of the logging code loaded).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.learned.actions import action_dim
from agents.learned.observation import ObservationSpec, layout_for
from envs.config import SiteConfig, dump_site, load_site
from envs.core import SiteArrays
from envs.obs import ObservationLayout

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecNormalize

BUNDLE_META = "policy.json"
MODEL_FILE = "model.zip"
VECNORM_FILE = "vecnormalize.pkl"
SITE_FILE = "site.yaml"
CONFIG_FILE = "train.yaml"
"""the training config the policy was trained with (text, as training wrote it)"""
FORECASTER_FILE = "forecaster.joblib"
"""the fitted forecaster of the policy's observation window (``provider: model``), a copy"""
DEFAULT_STEP_S = 900.0
"""the decision step of a bundle written before ``step_s`` was recorded (the generator's 15 minutes)"""
BUNDLE_FORMAT = 1
MLFLOW_MODEL_FILE = "MLmodel"
"""the file that marks an MLflow model folder"""


class SiteMismatchError(ValueError):
    """The site a learned policy is asked to control is not the kind of site it was trained for."""


def layout_fingerprint(layout: ObservationLayout, mode: str, act_dim: int) -> str:
    """A short hash of everything that fixes what each observation and action entry means."""
    desc = {
        "names": layout.names(),
        "n_chargers": layout.n_chargers,
        "horizon": layout.horizon,
        "price_scale_per_kwh": layout.price_scale_per_kwh,
        "time_scale_h": layout.time_scale_h,
        "has_battery": layout.has_battery,
        "action_mode": mode,
        "act_dim": act_dim,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


def site_fingerprint(site: SiteConfig) -> str:
    """A short hash of a site's physics (grid, limit tree, chargers, battery, PV, tariff; not its name)."""
    data = site.model_dump(mode="json", exclude_none=True)
    data.pop("name", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PolicyMeta:
    """What a learned policy was trained for (``policy.json`` in its bundle)."""

    name: str
    algorithm: str
    action_mode: str
    residual_scale: float
    allow_discharge: bool
    n_chargers: int
    has_battery: bool
    horizon: int
    price_scale_per_kwh: float
    time_scale_h: float
    obs_dim: int
    act_dim: int
    layout_fingerprint: str
    trained_timesteps: int = 0
    site_name: str = ""
    format: int = BUNDLE_FORMAT
    step_s: float = DEFAULT_STEP_S
    """the step it was trained on, s: the grid it decides on when served (:mod:`serving.policy_step`)"""
    site_fingerprint: str = ""
    """:func:`site_fingerprint` of the site it was trained for ("" in bundles written before)"""

    @property
    def observation(self) -> ObservationSpec:
        return ObservationSpec(self.horizon, self.price_scale_per_kwh, self.time_scale_h)

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], source: str = "policy.json") -> PolicyMeta:
        if data.get("format") != BUNDLE_FORMAT:
            raise ValueError(
                f"{source}: bundle format {data.get('format')!r}, this evdlm reads {BUNDLE_FORMAT}"
            )
        try:
            return cls(**data)
        except TypeError as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def describe(
        cls,
        name: str,
        algorithm: str,
        site: SiteArrays,
        spec: ObservationSpec,
        mode: str,
        allow_discharge: bool,
        residual_scale: float,
        trained_timesteps: int = 0,
        step_s: float = DEFAULT_STEP_S,
    ) -> PolicyMeta:
        layout = layout_for(site, spec)
        act = action_dim(site, mode)
        return cls(
            name=name,
            algorithm=algorithm,
            action_mode=mode,
            residual_scale=residual_scale,
            allow_discharge=allow_discharge,
            n_chargers=site.n,
            has_battery=site.has_battery,
            horizon=spec.horizon,
            price_scale_per_kwh=spec.price_scale_per_kwh,
            time_scale_h=spec.time_scale_h,
            obs_dim=layout.size,
            act_dim=act,
            layout_fingerprint=layout_fingerprint(layout, mode, act),
            trained_timesteps=trained_timesteps,
            site_name=site.config.name,
            step_s=float(step_s),
            site_fingerprint=site_fingerprint(site.config),
        )


def detached_statistics(vecnorm: VecNormalize) -> VecNormalize:
    """A copy of VecNormalize's statistics without its env, frozen (not updating), picklable again."""
    return _frozen(pickle.loads(pickle.dumps(vecnorm)))


def _frozen(unpickled: VecNormalize) -> VecNormalize:
    """Make unpickled statistics usable (and picklable) without an env; stop them updating."""
    unpickled.training = False
    unpickled.class_attributes = {}
    unpickled.returns = np.zeros(1)
    return unpickled


def algorithm_class(name: str) -> type[BaseAlgorithm]:
    from stable_baselines3 import PPO, SAC, TD3

    classes: dict[str, type[BaseAlgorithm]] = {"PPO": PPO, "SAC": SAC, "TD3": TD3}
    if name not in classes:
        raise ValueError(f"unknown algorithm {name!r} (known: {sorted(classes)})")
    return classes[name]


@dataclass(frozen=True, eq=False)
class Bundle:
    """A bundle's contents, loaded."""

    model: BaseAlgorithm
    meta: PolicyMeta
    vecnormalize: VecNormalize | None
    site: SiteConfig | None
    training_config: str | None = None
    """the training config (YAML text) it was trained with, when attached"""
    forecaster_file: Path | None = None
    """the fitted forecaster of its observation window, when it was trained on one"""


def read_bundle(path: str | Path) -> Bundle:
    """Load the bundle folder ``path``."""
    folder = Path(path)
    meta_path = folder / BUNDLE_META
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder}: not a learned-policy bundle (no {BUNDLE_META})")
    meta = PolicyMeta.from_json_dict(json.loads(meta_path.read_text()), str(meta_path))
    model = algorithm_class(meta.algorithm).load(folder / MODEL_FILE, device="cpu")
    vecnorm = None
    if (folder / VECNORM_FILE).exists():
        with open(folder / VECNORM_FILE, "rb") as fh:
            vecnorm = _frozen(pickle.load(fh))
    site = load_site(folder / SITE_FILE) if (folder / SITE_FILE).exists() else None
    config = (folder / CONFIG_FILE).read_text() if (folder / CONFIG_FILE).exists() else None
    forecaster = folder / FORECASTER_FILE if (folder / FORECASTER_FILE).exists() else None
    return Bundle(model, meta, vecnorm, site, config, forecaster)


def write_bundle(bundle: Bundle, path: str | Path) -> Path:
    """Write the bundle folder (model, statistics, site, ``policy.json``)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    bundle.model.save(folder / MODEL_FILE)
    if bundle.vecnormalize is not None:
        with open(folder / VECNORM_FILE, "wb") as fh:
            pickle.dump(bundle.vecnormalize, fh)
    if bundle.site is not None:
        dump_site(bundle.site, folder / SITE_FILE)
    attach_training(folder, bundle.training_config, bundle.forecaster_file)
    (folder / BUNDLE_META).write_text(json.dumps(bundle.meta.to_json_dict(), indent=2, sort_keys=True) + "\n")
    return folder


def attach_training(folder: str | Path, config_yaml: str | None, forecaster: str | Path | None) -> None:
    """Put the training config (YAML text) and a copy of the fitted forecaster file into the bundle
    ``folder``, so the bundle alone is what evaluation and the site load (None: leave that part out)."""
    out = Path(folder)
    if config_yaml is not None:
        (out / CONFIG_FILE).write_text(config_yaml)
    if forecaster is not None:
        src, dst = Path(forecaster), out / FORECASTER_FILE
        if not src.is_file():
            raise FileNotFoundError(f"{src}: the policy's forecaster is not a file")
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)


def is_model_uri(spec: str) -> bool:
    """True for MLflow model URIs (``models:/...``, ``runs:/...``)."""
    return spec.startswith(("models:/", "runs:/"))


def is_learned_spec(spec: str) -> bool:
    """True for a spec that names a learned policy: an MLflow URI or a folder holding one."""
    if is_model_uri(spec):
        return True
    path = Path(spec)
    return path.is_dir() and ((path / BUNDLE_META).exists() or (path / MLFLOW_MODEL_FILE).exists())


def bundle_folder(spec: str | Path) -> Path:
    """The bundle folder a spec names: the folder itself, the bundle inside an MLflow model folder, or the
    bundle inside the artifacts of a ``models:/`` / ``runs:/`` URI (downloaded from the tracking server the
    environment names, ``MLFLOW_TRACKING_URI``)."""
    text = str(spec)
    if is_model_uri(text):
        import mlflow

        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=text))
    else:
        folder = Path(text)
        if (folder / BUNDLE_META).exists():
            return folder
    if not (folder / MLFLOW_MODEL_FILE).exists():
        raise FileNotFoundError(
            f"{text}: not a learned policy (expected a bundle with {BUNDLE_META}, an MLflow model "
            "folder, or a models:/ or runs:/ URI)"
        )
    found = sorted(p.parent for p in folder.rglob(BUNDLE_META))
    if len(found) != 1:
        raise TypeError(
            f"{text}: is an MLflow model, but not an evdlm policy (it holds {len(found)} {BUNDLE_META} files)"
        )
    return found[0]
