"""One artifact from training to the site, served on the step it learned (issue 14 items 3 and 4).

A tiny policy is trained on 15-minute steps with a forecaster fitted here (``provider: model``) and
registered in a temporary MLflow store; ``models:/NAME/1`` then loads the same bundle in evaluation and in
the serving loop, and for the same state the live decision equals the env's. The serving side of item 4
(:mod:`serving.policy_step`): decide on the policy's grid, hold, re-project every cycle, re-decide early
on an arrival or a departure.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.base import Decision
from agents.learned import LearnedPolicy
from agents.learned.bundle import CONFIG_FILE, FORECASTER_FILE, site_fingerprint
from agents.rollout import kw_request
from envs.config import SiteConfig, dump_site
from envs.core import SiteArrays, Snapshot
from envs.env import ChargingSiteEnv
from envs.generate import generate_scenario
from envs.projection import project
from envs.scenario import Scenario
from envs.share import safe_static_share_kw
from evdlm.cli.serve import default_serving_config, policy_site_and_forecast
from forecasting.provider import ModelForecast, SiteForecaster
from serving.config import ServingConfig, connector_map
from serving.control import Controller
from serving.forecast import HistoryStep, LiveForecast
from serving.forecast_refresh import make_live_forecast
from serving.live import LiveSite, SiteMeterReading, build_snapshot
from serving.metrics import Metrics
from serving.policy_step import OwnStepPolicy, on_own_step
from serving.service import load_policy_strict
from training.rl_config import config_from_dict
from training.train import TrainResult

STEP = "15min"
HORIZON = 4
NAME = "artifact-test"
URI = f"models:/evdlm-{NAME}/1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, Path]:
    """A few hundred PPO steps on 15-minute steps, its window from a forecaster fitted here."""
    from training.train import train

    root = tmp_path_factory.mktemp("artifact")
    fit_on = generate_scenario("public", chargers=3, days=3, seed=5, step=STEP)
    forecaster = SiteForecaster.fit_scenario(fit_on, "persistence", columns=("base_load_kw", "pv_kw"))
    fc_path = forecaster.save(root / "fit" / "forecaster.joblib")
    cfg = config_from_dict(
        {
            "name": NAME,
            "env": {
                "generator": {"kind": "public", "chargers": 3, "days": 1, "step": STEP},
                "action_mode": "residual",
                "allow_discharge": False,
                "forecast": {"provider": "model", "model_path": str(fc_path), "horizon_steps": HORIZON},
            },
            "algorithm": {"name": "PPO", "n_steps": 32, "batch_size": 32, "n_epochs": 1, "net_arch": [8]},
            "training": {"total_timesteps": 64, "n_envs": 1, "vec_env": "dummy"},
            "evaluation": {"every_steps": None, "seeds": [1], "baselines": ["rule_based"], "at_start": False},
            "tracking": {"experiment": NAME, "log_plots": False},
        }
    )
    result = train(cfg, out_dir=root / "out", tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    fc_path.unlink()  # the site has no training folder: the bundle must carry its own copy
    return result, root


@pytest.fixture
def registered(trained: tuple[TrainResult, Path]) -> LearnedPolicy:
    import mlflow

    mlflow.set_tracking_uri(trained[0].tracking_uri)
    uri = trained[0].model_uri
    assert uri == f"models:/evdlm-{NAME}/1"  # the registry name of a config without one
    policy = load_policy_strict(uri)
    assert isinstance(policy, LearnedPolicy)
    return policy


def test_the_registered_model_carries_config_forecaster_normaliser_and_fingerprint(
    registered: LearnedPolicy, tmp_path: Path
) -> None:
    p = registered
    assert p.meta.step_s == 900.0
    assert p.vecnormalize is not None and p.vecnormalize.obs_rms.count > 1  # the fitted normaliser
    assert p.training_config is not None and f"name: {NAME}" in p.training_config
    assert p.forecaster_file is not None and p.forecaster_file.name == FORECASTER_FILE
    assert p.forecaster_file.is_file() and (p.forecaster_file.parent / CONFIG_FILE).is_file()
    fitted = p.forecaster()
    assert fitted is not None and fitted.step == pd.Timedelta(STEP)
    assert p.trained_site is not None and p.meta.site_fingerprint == site_fingerprint(p.trained_site)
    assert p.site_matches(p.trained_site)
    other = p.trained_site.model_copy(
        update={"grid": p.trained_site.grid.model_copy(update={"import_limit_kw": 1.0})}
    )
    assert not p.site_matches(other)

    # a bundle saved again (e.g. copied to the site) keeps its config and forecaster
    copy = LearnedPolicy.from_bundle(p.save_bundle(tmp_path / "copy"))
    assert copy.training_config == p.training_config and copy.meta == p.meta
    assert copy.forecaster_file == tmp_path / "copy" / FORECASTER_FILE
    assert copy.forecaster_file.read_bytes() == p.forecaster_file.read_bytes()


def test_evaluate_loads_the_registered_model_and_shows_it_its_own_forecast(registered: LearnedPolicy) -> None:
    from training.evaluate import EnvOptions, evaluate, run_episode

    scenario = _test_scenario(registered)
    report = evaluate([URI, "rule_based"], [scenario])
    rows = {r.policy: r for r in report.rows}
    assert set(rows) == {URI, "rule_based"} and rows[URI].energy_delivered_kwh > 0
    # whatever window the evaluator's provider gives, the policy sees its own forecaster's, as in training
    fitted = registered.forecaster()
    assert fitted is not None
    own = run_episode(registered, scenario, options=EnvOptions(forecast=ModelForecast(fitted)))
    assert own.row.cost_total == pytest.approx(rows[URI].cost_total, rel=1e-9)
    assert own.row.energy_delivered_kwh == pytest.approx(rows[URI].energy_delivered_kwh, rel=1e-9)


def _test_scenario(policy: LearnedPolicy) -> Scenario:
    """A day of another seed, rebuilt from the training config the bundle carries, on the site the policy
    was trained for (the generator sizes a site's grid from each draw)."""
    import yaml

    assert policy.training_config is not None
    cfg = config_from_dict(yaml.safe_load(policy.training_config))
    kwargs = cfg.env.generator.generate_kwargs(cfg.env.train_seed_offset)
    drawn = generate_scenario(**{**kwargs, "seed": cfg.env.train_seed_offset + 2})
    assert policy.trained_site is not None
    # no battery sizes: a live site knows what the driver declared, not how full the EV is (the room is the
    # need, in the env as in serving)
    sessions = drawn.sessions.assign(battery_kwh=np.nan, arrival_soc=np.nan, departure_soc=np.nan)
    sc = Scenario(policy.trained_site, sessions, drawn.timeseries, "another-day")
    assert site_fingerprint(sc.site) == policy.meta.site_fingerprint
    return sc


# --------------------------------------------------------------------------- the live decision = the env's


def _serving_config(tmp_path: Path, site: SiteConfig, scenario: Scenario) -> ServingConfig:
    """A serving config for ``site`` with the scenario's prices as a price CSV (its tariff, live)."""
    dump_site(site, tmp_path / "site.yaml")
    ts = scenario.timeseries
    prices = pd.DataFrame(
        {
            "timestamp": [t.isoformat() for t in ts.index],
            "import_price_per_kwh": ts["import_price_per_kwh"].to_numpy(),
            "export_price_per_kwh": ts["export_price_per_kwh"].to_numpy(),
        }
    )
    prices.to_csv(tmp_path / "prices.csv", index=False)
    cfg = default_serving_config(tmp_path / "site.yaml", site, None)
    data = cfg.model_dump(by_alias=True)
    data.update(
        control_interval_s=10.0, prices={"csv": tmp_path / "prices.csv"}, forecast={"refresh_every_s": 900}
    )
    return type(cfg).model_validate(data)


def _live_from_env(
    site: SiteArrays, cfg: ServingConfig, site_cfg: SiteConfig, snap: Snapshot, now_mono: float
) -> LiveSite:
    """The serving loop's live state for the env's snapshot: the same EVs with their declared energy
    (need + what their batteries received), declared departure and EV limit, the same meter, the same peak."""
    live = LiveSite.build(site, connector_map(cfg, site_cfg), [s.id for s in cfg.stations])
    st = snap.state
    utc = pd.Timestamp(snap.timestamp).tz_localize(UTC).to_pydatetime()
    delivered = 1.0
    for c in live.connectors:
        i = c.index
        if not bool(st.ev_present[i]):
            continue
        c.tx_pk, c.tx_start = i + 1, utc - timedelta(hours=1)
        # the meter is on the grid side: the battery received ``delivered`` at the charger's efficiency
        c.energy_asked_kwh = float(st.energy_needed_kwh[i]) + delivered * float(site.efficiency[i])
        c.meter_start_wh, c.meter_last_wh = 0.0, delivered * 1000.0
        c.departure = utc + timedelta(hours=float(st.time_left_h[i]))
        ev_max = float(st.ev_max_charge_kw[i])
        c.ev_max_kw = ev_max if np.isfinite(ev_max) else None
        c.power_kw, c.power_at = 0.0, now_mono
    base, pv = float(st.base_load_kw), float(st.pv_kw)
    live.meter = SiteMeterReading(import_kw=base - pv, pv_kw=pv, at=now_mono)
    live.peak_import_kw = snap.peak_import_kw
    return live


def _seeded_forecast(cfg: ServingConfig, site: SiteConfig, scenario: Scenario, t: int) -> LiveForecast:
    """The live forecast with the bundle's forecaster, its history the site meter's steps before ``t``,
    refreshed at the start of step ``t`` (as the env's forecaster is, every step)."""
    fc = make_live_forecast(cfg, site.timezone, None, Metrics())
    assert fc is not None and fc.model is not None
    ts = scenario.timeseries
    fc.history.seed(
        [
            HistoryStep(i.to_pydatetime(), float(b), float(p))
            for i, b, p in zip(ts.index[:t], ts["base_load_kw"][:t], ts["pv_kw"][:t], strict=True)
        ]
    )
    origin = pd.Timestamp(ts.index[t]).tz_convert(UTC)
    fc.install(fc.compute(origin, fc.history_frame(origin)))
    return fc


def test_for_the_same_state_the_live_decision_equals_the_envs(
    registered: LearnedPolicy, tmp_path: Path
) -> None:
    policy = registered
    scenario = _test_scenario(policy)
    fitted = policy.forecaster()
    assert fitted is not None
    env = ChargingSiteEnv(scenario=scenario, step=None, forecast=ModelForecast(fitted), forecast_horizon=16)
    env.reset(seed=0)
    site = env.site
    policy.reset(site, scenario)
    live_policy = load_policy_strict(URI)
    site_cfg = scenario.site
    cfg = policy_site_and_forecast(_serving_config(tmp_path, site_cfg, scenario), site_cfg, live_policy)
    assert cfg.forecast is not None and cfg.forecast.model == policy.forecaster_file
    served = on_own_step(live_policy, cfg)
    assert isinstance(served, OwnStepPolicy) and served.grid_ns == 900 * 10**9
    compared = 0
    for t in range(int(env.episode.n_steps) - 1):
        snap = env.snapshot()
        decision = policy.act(snap)
        if t >= 8 and t % 5 == 0 and int(np.sum(snap.state.ev_present)) >= 1 and _whole_step(snap):
            live_decision, live_snap, limits_kw = _served_decision(
                served, site, site_cfg, cfg, scenario, t, snap
            )
            np.testing.assert_allclose(live_decision.charger_kw, decision.charger_kw, rtol=1e-5, atol=1e-5)
            # the same projection: on the env's state, and the serving loop's on its live state
            a = project(site, snap.state, decision.charger_kw, decision.battery_kw)
            b = project(site, snap.state, live_decision.charger_kw, live_decision.battery_kw)
            np.testing.assert_allclose(b.charger_kw, a.charger_kw, rtol=1e-5, atol=1e-5)
            live_state = live_snap.state
            c = project(site, live_state, decision.charger_kw, 0.0, departure_floor=cfg.departure_floor)
            expected = np.where(
                live_state.ev_present, np.maximum(np.asarray(c.charger_kw, dtype=float), 0.0), 0.0
            )
            np.testing.assert_allclose(limits_kw, expected, rtol=1e-5, atol=1e-5)
            compared += 1
        env.step(kw_request(decision, site))
    assert compared >= 3


def _whole_step(snap: Snapshot) -> bool:
    """No EV arrives or leaves within this step: a state the live loop meets at a decision (live, an
    arrival is decided on when it happens, and the EV is then present for the rest of the step)."""
    frac = snap.state.present_fraction
    return frac is None or bool(np.all((np.asarray(frac) == 0) | (np.asarray(frac) == 1)))


def _served_decision(
    served: OwnStepPolicy,
    site: SiteArrays,
    site_cfg: SiteConfig,
    cfg: ServingConfig,
    scenario: Scenario,
    t: int,
    snap: Snapshot,
) -> tuple[Decision, Snapshot, np.ndarray]:
    """The served policy's decision for the env's state through the serving loop's read (the live state
    frozen by ``build_snapshot``) and decide (the controller, which projects it on the live state)."""
    now_mono = time.monotonic()
    live = _live_from_env(site, cfg, site_cfg, snap, now_mono)
    forecast = _seeded_forecast(cfg, site_cfg, scenario, t)
    utc = pd.Timestamp(snap.timestamp).tz_localize(UTC).to_pydatetime()
    live_snap, info = build_snapshot(live, cfg, t, np.full(site.n, np.inf), now_mono, utc, 0.0, forecast)
    assert info.forecast_source == "model" and not info.meter_stale
    served.reset(site)
    share = safe_static_share_kw(site, cfg.failsafe_base_load_kw)
    ctl = Controller(site, served, None, share, 5.0, departure_floor=cfg.departure_floor)
    try:
        outcome = asyncio.run(ctl.decide(live_snap, meter_stale=False))
    finally:
        ctl.close()
    assert outcome.fallback_reason is None and served.decisions == {"start": 1}
    return served.act(live_snap), live_snap, outcome.limits_kw  # the held decision
