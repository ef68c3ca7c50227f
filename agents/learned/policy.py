"""A trained stable-baselines3 model behind the one :class:`~agents.base.Policy` protocol.

A learned policy acts on a :class:`~envs.core.Snapshot`, like every other policy, so evaluation and the
live service treat it alike: :class:`~agents.learned.observation.SnapshotObserver` builds the observation,
the model predicts, the bundle's action mode (:mod:`agents.learned.actions`) makes the decision.
:meth:`LearnedPolicy.reset` refuses a site whose charger count or observation layout differs from the one it
was trained for (:class:`~agents.learned.bundle.SiteMismatchError`).

A policy trained on a fitted forecaster (``provider: model``) carries it in its bundle and sees its own
forecast wherever it acts: in evaluation (:meth:`LearnedPolicy.reset` with a scenario) its forecaster is
bound to the scenario's time series, exactly as the training env bound it, and replaces the base load
and PV of every snapshot's window; live (no scenario) the service builds the window from the same
forecaster (:mod:`serving.policy_step`). It decides on the step it was trained on
(:attr:`PolicyMeta.step_s <agents.learned.bundle.PolicyMeta.step_s>`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agents.base import Decision
from agents.learned.actions import ActionMode, action_dim, action_mode
from agents.learned.bundle import (
    Bundle,
    PolicyMeta,
    SiteMismatchError,
    bundle_folder,
    is_learned_spec,
    layout_fingerprint,
    read_bundle,
    site_fingerprint,
    write_bundle,
)
from agents.learned.observation import SnapshotObserver, layout_for
from envs.config import SiteConfig
from envs.core import ForecastWindow, SiteArrays, Snapshot
from envs.forecast import BoundForecast
from envs.obs import F32Array
from envs.scenario import Scenario

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecNormalize

    from forecasting.provider import SiteForecaster


class LearnedPolicy:
    """A trained SB3 model acting on snapshots (see the module doc). Deterministic: the mean action.

    ``vecnormalize`` holds the observation statistics the model was trained with (None: raw
    observations). ``site`` is the configuration it was trained for, kept for reference and serving.
    ``training_config``: the training config (YAML text); ``forecaster_file``: the fitted forecaster its
    observation's window comes from (None: the window it is given).
    """

    def __init__(
        self,
        model: BaseAlgorithm,
        meta: PolicyMeta,
        vecnormalize: VecNormalize | None = None,
        site: SiteConfig | None = None,
        training_config: str | None = None,
        forecaster_file: Path | None = None,
    ) -> None:
        self.model = model
        self.meta = meta
        self.vecnormalize = vecnormalize
        self.trained_site = site
        self.training_config = training_config
        self.forecaster_file = forecaster_file
        self.name = meta.name
        self._observer: SnapshotObserver | None = None
        self._action: ActionMode | None = None
        self._forecaster: SiteForecaster | None = None
        self._bound: BoundForecast | None = None

    @property
    def step_s(self) -> float:
        """The step it was trained on (s): it decides once per step of this length."""
        return self.meta.step_s

    def forecaster(self) -> SiteForecaster | None:
        """Its fitted forecaster (loaded once), None when it was trained without one."""
        if self.forecaster_file is None:
            return None
        if self._forecaster is None:
            from forecasting.provider import SiteForecaster

            self._forecaster = SiteForecaster.load(self.forecaster_file)
        return self._forecaster

    def site_matches(self, site: SiteConfig) -> bool:
        """True when ``site`` is the site it was trained for (same physics; unknown in old bundles)."""
        return not self.meta.site_fingerprint or self.meta.site_fingerprint == site_fingerprint(site)

    def without_discharge(self) -> LearnedPolicy:
        """The same trained policy with V2G and battery discharge disabled (to measure what V2G adds)."""
        from dataclasses import replace

        meta = replace(self.meta, name=f"{self.meta.name}-no-discharge", allow_discharge=False)
        return LearnedPolicy(
            self.model, meta, self.vecnormalize, self.trained_site, self.training_config, self.forecaster_file
        )

    # ------------------------------------------------------------------ persistence

    @classmethod
    def from_bundle(cls, path: str | Path) -> LearnedPolicy:
        """The policy of a bundle folder (:func:`agents.learned.bundle.read_bundle`)."""
        b = read_bundle(path)
        return cls(b.model, b.meta, b.vecnormalize, b.site, b.training_config, b.forecaster_file)

    @classmethod
    def load(cls, spec: str | Path) -> LearnedPolicy:
        """The policy a bundle folder, an MLflow model folder or a ``models:/`` / ``runs:/`` URI names."""
        return cls.from_bundle(bundle_folder(spec))

    def save_bundle(self, path: str | Path) -> Path:
        """Write the bundle folder (model, statistics, site, ``policy.json``)."""
        bundle = Bundle(
            self.model, self.meta, self.vecnormalize, self.trained_site, self.training_config,
            self.forecaster_file,
        )  # fmt: skip
        return write_bundle(bundle, path)

    # ------------------------------------------------------------------ acting

    def predict_observation(self, obs: np.ndarray) -> F32Array:
        """Actions ``(B, act_dim)`` (float32, in ``[-1, 1]``) for raw observations ``(B, obs_dim)``."""
        x = np.asarray(obs, dtype=np.float32)
        x2 = x.reshape(1, -1) if x.ndim == 1 else x
        if x2.shape[-1] != self.meta.obs_dim:
            raise SiteMismatchError(
                f"{self.name}: observation has {x2.shape[-1]} entries, the policy was trained on "
                f"{self.meta.obs_dim}"
            )
        if self.vecnormalize is not None:
            x2 = np.asarray(self.vecnormalize.normalize_obs(x2), dtype=np.float32)
        action, _ = self.model.predict(x2, deterministic=True)
        return np.clip(np.asarray(action, dtype=np.float32).reshape(len(x2), -1), -1.0, 1.0)

    def check_site(self, site: SiteArrays) -> None:
        """Raise :class:`SiteMismatchError` unless ``site`` has the charger count and observation layout
        this policy was trained for."""
        m = self.meta
        if site.n != m.n_chargers:
            raise SiteMismatchError(
                f"policy {m.name!r} was trained for a site with {m.n_chargers} chargers; site "
                f"{site.config.name!r} has {site.n}"
            )
        layout = layout_for(site, m.observation)
        fp = layout_fingerprint(layout, m.action_mode, action_dim(site, m.action_mode))
        if fp != m.layout_fingerprint:
            why = []
            if site.has_battery != m.has_battery:
                why.append(f"stationary battery: trained {m.has_battery}, site {site.has_battery}")
            if layout.size != m.obs_dim:
                why.append(f"observation size: trained {m.obs_dim}, site {layout.size}")
            raise SiteMismatchError(
                f"policy {m.name!r} does not fit site {site.config.name!r}: observation layout fingerprint "
                f"{fp} != trained {m.layout_fingerprint}" + (f" ({'; '.join(why)})" if why else "")
            )

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        self.check_site(site)
        m = self.meta
        self._observer = SnapshotObserver(site, m.observation)
        self._action = action_mode(m.action_mode, site, m.allow_discharge, m.residual_scale)
        self._action.reset(None if scenario is None else scenario.end)
        self._bound = None
        forecaster = self.forecaster()
        if forecaster is not None and scenario is not None:
            from forecasting.provider import ModelForecast

            try:
                self._bound = ModelForecast(forecaster).bind(scenario.timeseries)
            except ValueError as err:
                raise SiteMismatchError(
                    f"policy {m.name!r}, its forecaster on {scenario.name!r}: {err}"
                ) from None

    def _own_forecast(self, snapshot: Snapshot) -> Snapshot:
        """``snapshot`` with the base load and PV of its window from this policy's own forecaster (bound to
        the scenario at :meth:`reset`), as the training env showed them; unchanged live."""
        if self._bound is None:
            return snapshot
        fc = snapshot.forecast
        own = self._bound.window(snapshot.step_index, fc.horizon)
        window = ForecastWindow(own.base_load_kw, own.pv_kw, fc.import_price_per_kwh, fc.export_price_per_kwh)
        return dataclasses.replace(snapshot, forecast=window)

    def act(self, snapshot: Snapshot) -> Decision:
        if self._observer is None or self._action is None:
            raise RuntimeError(f"{self.name}: call reset(site) before act()")
        snapshot = self._own_forecast(snapshot)
        observed = self._observer.observe(snapshot)
        action = self.predict_observation(observed.obs)[0]
        return self._action.decide(snapshot, observed, action)


def learned_loader(spec: str) -> LearnedPolicy | None:
    """Registry loader (:mod:`agents.registry`): a learned policy by bundle folder, MLflow model folder or
    ``models:/`` / ``runs:/`` URI; None for any other spec."""
    return LearnedPolicy.load(spec) if is_learned_spec(spec) else None
