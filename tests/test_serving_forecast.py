"""The live service's forecast window (a fitted forecaster fed by the site meter) and tariff prices."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.base import Decision
from envs.config import ConfigError, dump_site
from envs.core import SiteArrays, Snapshot
from envs.scenario import Scenario
from forecasting.data import gbr_params, series_spec
from forecasting.history import InsufficientHistoryError
from forecasting.models import GBRParams, make_forecaster
from forecasting.provider import SiteForecaster
from forecasting.synthetic import synthetic_site_series
from serving.config import connector_map, load_serving_config
from serving.forecast import HistoryStep, LiveForecast, MeterHistory, PriceSeries, load_prices
from serving.live import LiveSite, SiteMeterReading, build_snapshot
from serving.service import HISTORY_SOURCE, Service
from serving.store import MeterSample, Store
from tests.test_serving_helpers import serving_config, small_site

TZ = "Europe/Amsterdam"
STEP = pd.Timedelta("15min")
FAST = GBRParams(max_iter=15, max_rows=6_000, origin_stride_steps=8)
HORIZON = 16


@pytest.fixture(scope="module")
def series() -> pd.DataFrame:
    return synthetic_site_series(days=10, seed=3, timezone=TZ)


@pytest.fixture(scope="module")
def model(series: pd.DataFrame) -> SiteForecaster:
    """Gradient boosting on the first 8 days (base load and PV), like ``evdlm forecast fit`` saves."""
    train = series.iloc[: 8 * 96]
    fitted = {
        col: make_forecaster("gbr", series_spec(col, TZ), gbr_params(col, FAST)).fit(train[col])
        for col in ("base_load_kw", "pv_kw")
    }
    return SiteForecaster(fitted, TZ, STEP, "synthetic", pd.Timestamp(train.index[-1]))


@pytest.fixture(scope="module")
def model_file(model: SiteForecaster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model.save(tmp_path_factory.mktemp("forecaster") / "forecaster.joblib")


class Recording:
    """A policy that keeps the snapshots it is given and asks for nothing."""

    name = "recording"

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        self.n = site.n

    def act(self, snapshot: Snapshot) -> Decision:
        self.snapshots.append(snapshot)
        return Decision(np.zeros(self.n))


def _feed(fc: LiveForecast, values: pd.DataFrame, per_step: int = 3) -> None:
    """Observe ``per_step`` cycles in each step of ``values`` whose mean is the step's value."""
    spread = np.linspace(-1.0, 1.0, per_step)
    base = values["base_load_kw"].to_numpy(dtype=float)
    pv = values["pv_kw"].to_numpy(dtype=float)
    for i, t in enumerate(pd.DatetimeIndex(values.index)):
        for k, d in enumerate(spread):
            when = t.to_pydatetime() + k * STEP.to_pytimedelta() / per_step
            fc.observe(when, float(base[i] + d), float(pv[i] + d))


def _expected(point: np.ndarray, origin: pd.Timestamp, now: pd.Timestamp, dt_s: float, n: int) -> np.ndarray:
    """The model's point forecast on the control grid: step of ``now + k dt`` (k >= 1), held at the end."""
    offsets = now - origin + pd.to_timedelta(np.arange(1, n) * dt_s, unit="s")
    j = np.minimum(np.asarray(offsets // STEP, dtype=int), len(point) - 1)
    return point[j]


# --------------------------------------------------------------------------- the window


def test_window_is_the_models_forecast_once_history_suffices(
    tmp_path: Path, model: SiteForecaster, series: pd.DataFrame
) -> None:
    cfg = serving_config(
        tmp_path, control_interval_s=60.0, forecast={"horizon_steps": HORIZON, "min_history_steps": 8}
    )
    fc = LiveForecast(cfg, TZ, model)
    assert fc.step == STEP and fc.window_steps == HORIZON * 15
    origin = pd.Timestamp(series.index[9 * 96 + 37])
    now = origin + pd.Timedelta(minutes=7, seconds=13)

    # 5 measured steps: too few for the model (min_history_steps 8); the window stays a persistence
    _feed(fc, series.iloc[9 * 96 + 32 : 9 * 96 + 37])
    with pytest.raises(InsufficientHistoryError, match="5 measured"):
        fc.compute(fc.origin(now.to_pydatetime()), fc.history_frame(origin))
    w, source = fc.window(now.to_pydatetime(), 30.0, 2.0)
    assert source == "persistence"
    assert np.all(w.base_load_kw == 30.0) and np.all(w.pv_kw == 2.0)

    # a day and a half of history: the window is the model's forecast, shifted to now
    fc2 = LiveForecast(cfg, TZ, model)
    _feed(fc2, series.iloc[8 * 96 - 10 : 9 * 96 + 37])
    hist = fc2.history_frame(fc2.origin(now.to_pydatetime()))
    truth = series.iloc[8 * 96 - 10 : 9 * 96 + 37]
    np.testing.assert_allclose(hist["base_load_kw"].to_numpy(), truth["base_load_kw"].to_numpy(), atol=1e-9)
    assert hist.index[-1] + STEP == origin  # complete steps only, none at or after the origin
    fc2.install(fc2.compute(fc2.origin(now.to_pydatetime()), hist))
    w, source = fc2.window(now.to_pydatetime(), 30.0, 2.0)
    assert source == "model" and w.horizon == HORIZON * 15
    assert w.base_load_kw[0] == 30.0 and w.pv_kw[0] == 2.0  # now is measured, not forecast
    for col, got in (("base_load_kw", w.base_load_kw), ("pv_kw", w.pv_kw)):
        direct = model.predict(col, origin, HORIZON, history=hist[col]).point
        np.testing.assert_allclose(got[1:], _expected(direct, origin, now, 60.0, len(got)), rtol=1e-9)
    assert np.ptp(w.base_load_kw[1:]) > 1.0  # a real forecast, not a flat line

    # an hour later the same cached forecast is read shifted; past its horizon it is a persistence again
    later = now + pd.Timedelta(hours=1)
    w_later, _ = fc2.window(later.to_pydatetime(), 30.0, 2.0)
    direct = model.predict("base_load_kw", origin, HORIZON, history=hist["base_load_kw"]).point
    np.testing.assert_allclose(
        w_later.base_load_kw[1:], _expected(direct, origin, later, 60.0, len(w.base_load_kw))
    )
    _, gone = fc2.window((origin + HORIZON * STEP).to_pydatetime(), 30.0, 2.0)
    assert gone == "persistence"


def test_snapshot_carries_the_window_and_the_prices_now(tmp_path: Path, model: SiteForecaster) -> None:
    csv = tmp_path / "prices.csv"
    csv.write_text(
        "timestamp,import_price_per_kwh,export_price_per_kwh\n"
        "2025-06-02T10:00:00+02:00,0.31,0.07\n2025-06-02T10:30:00+02:00,0.12,0.02\n"
    )
    cfg = serving_config(
        tmp_path, control_interval_s=60.0, forecast={"horizon_steps": 4}, prices={"csv": csv}
    )
    site = SiteArrays.from_config(small_site())
    live = LiveSite.build(site, connector_map(cfg, site.config), ["CP1", "CP2"])
    live.meter = SiteMeterReading(12.0, 3.0, 100.0)
    fc = LiveForecast(cfg, TZ, model)
    now = datetime(2025, 6, 2, 8, 29, 30, tzinfo=UTC)  # 10:29:30 local
    snap, info = build_snapshot(live, cfg, 1, np.full(site.n, np.inf), 100.0, now, forecast=fc)
    assert info.measured_base_load_kw == pytest.approx(15.0) and info.measured_pv_kw == 3.0
    assert info.forecast_source == "persistence"
    assert snap.import_price_per_kwh == 0.31 and snap.export_price_per_kwh == 0.07
    assert snap.forecast.horizon == 60
    np.testing.assert_array_equal(snap.forecast.import_price_per_kwh[:3], [0.31, 0.12, 0.12])
    # past the CSV's last row (10:30 + 30 min) the flat configured price applies
    assert snap.forecast.import_price_per_kwh[30] == 0.12
    assert snap.forecast.import_price_per_kwh[31] == cfg.import_price_per_kwh
    np.testing.assert_array_equal(snap.forecast.base_load_kw, 15.0)


@pytest.mark.parametrize(("now_price", "later_price", "charges"), [(0.40, 0.10, False), (0.10, 0.40, True)])
def test_rule_based_dlm_sees_the_tariff_over_the_horizon(
    tmp_path: Path, now_price: float, later_price: float, charges: bool
) -> None:
    """Two EVs staying 10 h that need 10 kWh each: with the import price dropping at 09:00 local the
    rule-based DLM waits (at 06:00); with it rising, it charges now. Flat prices could not tell."""
    from agents.rule_based import RuleBasedDLM

    tou = [
        {"from": "00:00", "import_price_per_kwh": now_price, "export_price_per_kwh": 0.05},
        {"from": "09:00", "import_price_per_kwh": later_price, "export_price_per_kwh": 0.05},
    ]
    cfg = serving_config(tmp_path, control_interval_s=10.0, prices={"time_of_use": tou}, default_dwell_h=10.0)
    site = SiteArrays.from_config(small_site())
    live = LiveSite.build(site, connector_map(cfg, site.config), ["CP1", "CP2"])
    now = datetime(2025, 6, 2, 4, 0, tzinfo=UTC)  # 06:00 in Amsterdam
    for k, c in enumerate(live.connectors[:2]):
        c.tx_pk, c.ocpp_tx_id, c.tx_start, c.energy_asked_kwh = k + 1, str(k + 1), now, 10.0
    live.meter = SiteMeterReading(5.0, None, 1.0)
    snap, _ = build_snapshot(live, cfg, 1, np.full(site.n, np.inf), 1.0, now, forecast=LiveForecast(cfg, TZ))
    assert snap.forecast.horizon == 8640 and snap.import_price_per_kwh == now_price
    assert snap.forecast.import_price_per_kwh[3 * 360] == later_price  # 09:00 local, 3 h of 10 s ahead
    policy = RuleBasedDLM(early_prior=0.0)  # trusts the declared departures (a fresh rule does not)
    policy.reset(site)
    kw = np.asarray(policy.act(snap).charger_kw)
    assert (kw[:2].sum() > 10.0) == charges and np.all(kw[2:] == 0.0)


# --------------------------------------------------------------------------- prices


def _tou_prices(tmp_path: Path, with_csv: bool) -> PriceSeries:
    csv = tmp_path / "p.csv"
    csv.write_text(
        "timestamp,import_price_per_kwh,export_price_per_kwh\n"
        "2025-01-15T06:00:00+01:00,0.50,0.10\n2025-01-15T06:15:00+01:00,0.55,0.11\n"
        "2025-01-15T06:30:00+01:00,0.60,0.12\n"
    )
    cfg = serving_config(
        tmp_path,
        control_interval_s=10.0,
        prices={
            "csv": csv if with_csv else None,
            "time_of_use": [
                {"from": "22:00", "import_price_per_kwh": 0.20, "export_price_per_kwh": 0.04},
                {"from": "07:00", "import_price_per_kwh": 0.35, "export_price_per_kwh": 0.06},
            ],
        },
    )
    assert cfg.prices is not None
    return load_prices(cfg.prices, TZ, 0.25, 0.05)


@pytest.mark.parametrize(
    ("local", "imp", "exp"),
    [
        ("2025-01-15T06:59", 0.20, 0.04),  # before the first period: the evening's (22:00) still runs
        ("2025-01-15T07:00", 0.35, 0.06),
        ("2025-01-15T21:59", 0.35, 0.06),
        ("2025-01-15T22:00", 0.20, 0.04),
        ("2025-07-15T06:59", 0.20, 0.04),  # summer time: local clock, not a fixed UTC offset
        ("2025-07-15T07:00", 0.35, 0.06),
        ("2025-03-30T07:00", 0.35, 0.06),  # the day clocks go forward
        ("2025-10-26T06:30", 0.20, 0.04),  # the day clocks go back
    ],
)
def test_time_of_use_follows_local_time(tmp_path: Path, local: str, imp: float, exp: float) -> None:
    prices = _tou_prices(tmp_path, with_csv=False)
    when = pd.Timestamp(local).tz_localize(TZ).to_pydatetime()
    assert prices.at(when) == (imp, exp)


def test_csv_first_then_time_of_use_then_flat(tmp_path: Path) -> None:
    prices = _tou_prices(tmp_path, with_csv=True)
    t = pd.to_datetime(
        ["2025-01-15T05:59:59+01:00", "2025-01-15T06:00+01:00", "2025-01-15T06:29+01:00",
         "2025-01-15T06:44:59+01:00", "2025-01-15T06:45+01:00", "2025-01-15T07:00+01:00"],
        utc=True, format="ISO8601",
    )  # fmt: skip
    imp, exp = prices.at_ns(pd.DatetimeIndex(t).as_unit("ns").asi8)
    np.testing.assert_array_equal(imp, [0.20, 0.50, 0.55, 0.60, 0.20, 0.35])
    np.testing.assert_array_equal(exp, [0.04, 0.10, 0.11, 0.12, 0.04, 0.06])
    flat = load_prices(None, TZ, 0.25, 0.05)
    assert flat.at(datetime(2025, 1, 15, tzinfo=UTC)) == (0.25, 0.05)


@settings(max_examples=60, deadline=None)
@given(minutes=st.integers(0, 366 * 24 * 60))
def test_time_of_use_price_is_the_last_period_started_locally(minutes: int) -> None:
    prices = PriceSeries(
        0.0, 0.0, np.zeros(0, np.int64), 0, np.zeros(0), np.zeros(0),
        np.array([0, 7 * 60, 22 * 60], np.int64), np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 0.3]), TZ,
    )  # fmt: skip
    when = pd.Timestamp("2025-01-01T00:00Z") + pd.Timedelta(minutes=minutes)
    local = when.tz_convert(TZ)
    m = local.hour * 60 + local.minute
    want = 1.0 if m < 7 * 60 else (2.0 if m < 22 * 60 else 3.0)
    assert prices.at(when.to_pydatetime())[0] == want


def test_price_csv_errors_name_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "timestamp,import_price_per_kwh,export_price_per_kwh\n2025-01-15T06:00,0.5,0.1\n2025-01-15T07:00,0.5,0.1\n"
    )
    cfg = serving_config(tmp_path, control_interval_s=10.0, prices={"csv": bad})
    assert cfg.prices is not None
    with pytest.raises(ConfigError, match=r"bad.csv, line 2, column timestamp: .* no UTC offset"):
        load_prices(cfg.prices, TZ, 0.25, 0.05)
    bad.write_text(
        "timestamp,import_price_per_kwh,export_price_per_kwh\n"
        "2025-01-15T06:00+01:00,0.5,0.1\n2025-01-15T07:00+01:00,x,0.1\n"
    )
    with pytest.raises(ConfigError, match=r"line 3, column import_price_per_kwh"):
        load_prices(cfg.prices, TZ, 0.25, 0.05)


# --------------------------------------------------------------------------- config


def test_serving_yaml_with_forecast_and_prices(tmp_path: Path) -> None:
    doc = {
        "site": "site.yaml",
        "stations": [{"id": "CP1"}, {"id": "CP2"}],
        "forecast": {
            "model": "models/f.joblib",
            "step": "15min",
            "horizon_steps": 96,
            "refresh_every_s": 600,
        },
        "prices": {
            "csv": "prices.csv",
            "time_of_use": [{"from": "00:00", "import_price_per_kwh": 0.2, "export_price_per_kwh": 0.05}],
        },
    }
    (tmp_path / "serving.yaml").write_text(yaml.safe_dump(doc))
    cfg = load_serving_config(tmp_path / "serving.yaml")
    assert cfg.forecast is not None and cfg.prices is not None
    assert cfg.forecast.model == tmp_path / "models/f.joblib" and cfg.prices.csv == tmp_path / "prices.csv"
    assert cfg.forecast.step == timedelta(minutes=15) and cfg.forecast.horizon == timedelta(days=1)
    # prices alone plan over the default 24 h
    tou = [{"from": "00:00", "import_price_per_kwh": 0.2, "export_price_per_kwh": 0.05}]
    only = serving_config(tmp_path, control_interval_s=10.0, prices={"time_of_use": tou})
    assert only.planning is not None and only.planning.horizon == timedelta(days=1)

    for forecast, prices, match in [
        ({"step": "7min"}, None, "divide a day"),
        ({"horizon_steps": 96}, None, "control intervals"),  # 24 h of 0.2 s intervals
        (None, {}, "give csv, time_of_use"),
        (
            None,
            {"time_of_use": [{"from": "25:00", "import_price_per_kwh": 1, "export_price_per_kwh": 0}]},
            "from",
        ),
    ]:
        data = dict(doc, forecast=forecast, prices=prices, control_interval_s=0.2)
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError, match=match):
            load_serving_config(tmp_path / "bad.yaml")


# --------------------------------------------------------------------------- the measured history


def test_history_means_per_step_gaps_and_the_open_step() -> None:
    h = MeterHistory(timedelta(minutes=15), max_steps=3)
    t0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
    assert h.add(t0 + timedelta(minutes=1), 10.0, None) is None
    assert h.add(t0 + timedelta(minutes=14), 20.0, 4.0) is None
    done = h.add(t0 + timedelta(minutes=46), 50.0, 1.0)  # skips 08:15-08:30 (a gap)
    assert done == HistoryStep(t0, 15.0, 4.0)
    frame = h.frame(t0 + timedelta(minutes=45))
    assert list(frame.index) == [pd.Timestamp(t0)] and frame["base_load_kw"].iloc[0] == 15.0
    frame = h.frame(t0 + timedelta(hours=1))  # the 08:45 step is complete by time
    assert list(frame["base_load_kw"]) == [15.0, 50.0]
    assert h.add(t0 + timedelta(minutes=61), float("nan"), None) is None  # non-finite: ignored
    assert h.add(t0 + timedelta(minutes=2), 99.0, None) is None  # the past: ignored
    for k in range(2, 6):
        h.add(t0 + timedelta(minutes=15 * k + 46), float(k), None)
    assert len(h) == 3 and h.completed_total == 5  # bounded
    assert h.seed([HistoryStep(t0 - timedelta(minutes=15), 1.0, None)]) == 0  # full


def test_history_seed_keeps_the_newest_before_what_is_recorded() -> None:
    h = MeterHistory(timedelta(minutes=15), max_steps=4)
    t0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
    h.add(t0, 5.0, None)
    old = [HistoryStep(t0 - k * timedelta(minutes=15), float(k), 0.5) for k in range(6, 0, -1)]
    old.append(HistoryStep(t0 + timedelta(minutes=3), 7.0, None))  # off the grid
    assert h.seed(old) == 4
    frame = h.frame(t0)
    assert list(frame["base_load_kw"]) == [4.0, 3.0, 2.0, 1.0] and h.has_pv


# --------------------------------------------------------------------------- the service


def _cfg_for_service(tmp_path: Path, **forecast: Any) -> Any:
    dump_site(small_site(), tmp_path / "site.yaml")
    return serving_config(
        tmp_path,
        control_interval_s=30.0,
        forecast={"horizon_steps": HORIZON, "min_history_steps": 8, **forecast},
        prices={
            "time_of_use": [{"from": "00:00", "import_price_per_kwh": 0.3, "export_price_per_kwh": 0.04}]
        },
    )


async def test_service_falls_back_before_history_then_uses_the_model(
    tmp_path: Path, model: SiteForecaster, series: pd.DataFrame
) -> None:
    cfg = _cfg_for_service(tmp_path)
    policy = Recording()
    svc = Service(cfg, small_site(), policy, {}, forecaster=model)
    await svc.start(http=False, loop=False)
    try:
        assert await svc.refresh_forecast() == "insufficient_history"
        svc.on_site_meter(20.0, 1.5)
        await svc.run_cycle()
        first = policy.snapshots[-1]
        assert np.all(first.forecast.base_load_kw == 21.5) and np.all(first.forecast.pv_kw == 1.5)
        assert first.import_price_per_kwh == 0.3
        assert svc.metrics.count("forecast_fallbacks_total", reason="insufficient_history") == 1
        assert svc.metrics.count("forecast_cycles_total", source="persistence") == 1

        # two days of measured steps up to now (as a restart would reload them), then a refresh
        origin = svc.forecast.origin(datetime.now(UTC)) if svc.forecast else None
        assert origin is not None
        past = series.iloc[: 2 * 96]
        idx = pd.DatetimeIndex([origin - STEP * k for k in range(len(past), 0, -1)])
        steps = [
            HistoryStep(t.to_pydatetime(), b, p)
            for t, b, p in zip(idx, past["base_load_kw"], past["pv_kw"], strict=True)
        ]
        assert svc.forecast is not None and svc.forecast.history.seed(steps) >= len(steps) - 1
        assert await svc.refresh_forecast() == "model"
        run = svc.forecast.run
        assert run is not None
        used = svc.forecast.history_frame(run.origin)["base_load_kw"]
        svc.on_site_meter(20.0, 1.5)
        await svc.run_cycle()
        snap = policy.snapshots[-1]
        state = svc.state()
    finally:
        await svc.stop()
    assert snap.forecast.base_load_kw[0] == 21.5
    now = pd.Timestamp(snap.timestamp, tz="UTC")  # seconds: allow the boundary second to go either way
    assert len(used) >= 2 * 96 - 1
    direct = model.predict("base_load_kw", run.origin, HORIZON, history=used).point
    a = _expected(direct, run.origin, now, 30.0, snap.forecast.horizon)
    b = _expected(direct, run.origin, now + pd.Timedelta(seconds=1), 30.0, snap.forecast.horizon)
    sure = a == b
    assert sure.mean() > 0.9
    np.testing.assert_allclose(snap.forecast.base_load_kw[1:][sure], a[sure], rtol=1e-9)
    assert svc.metrics.count("forecast_cycles_total", source="model") == 1
    assert state["forecast"]["source"] == "model" and state["forecast"]["history_steps"] >= 2 * 96 - 1


async def test_model_errors_and_unloadable_models_fall_back_without_stopping(
    tmp_path: Path, model: SiteForecaster
) -> None:
    cfg = _cfg_for_service(tmp_path, model=str(tmp_path / "missing.joblib"))
    svc = Service(cfg, small_site(), Recording(), {})
    await svc.start(http=False, loop=False)
    try:
        assert svc.forecast is not None and svc.forecast.model is None
        assert await svc.refresh_forecast() == "load_failed"
        svc.on_site_meter(10.0, None)
        await svc.run_cycle()
    finally:
        await svc.stop()
    assert svc.metrics.count("forecast_fallbacks_total", reason="load_failed") == 1
    assert svc.metrics.count("cycles_total") == 1 and svc.metrics.count("loop_errors_total") == 0

    class Broken:
        step = STEP
        forecasters = model.forecasters

        def predict(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("model exploded")

    cfg = _cfg_for_service(tmp_path, min_history_steps=1)
    svc = Service(cfg, small_site(), Recording(), {}, forecaster=Broken())  # type: ignore[arg-type]
    await svc.start(http=False, loop=False)
    try:
        assert svc.forecast is not None
        now = datetime.now(UTC)
        svc.forecast.history.seed([HistoryStep(svc.forecast.origin(now).to_pydatetime() - STEP, 5.0, None)])
        assert await svc.refresh_forecast() == "error"
    finally:
        await svc.stop()
    assert svc.metrics.count("forecast_fallbacks_total", reason="error") == 1


async def test_completed_steps_are_persisted_and_reloaded_after_a_restart(tmp_path: Path) -> None:
    cfg = _cfg_for_service(tmp_path)
    store = Store(cfg.database_url)
    start = pd.Timestamp.now(tz="UTC").floor("15min") - 7 * STEP
    store.add_meter_samples(
        [
            MeterSample((start + k * STEP).to_pydatetime(), HISTORY_SOURCE, None, 10.0 + k, None, 0.5)
            for k in range(5)
        ]
    )
    store.close()
    svc = Service(cfg, small_site(), Recording(), {})
    await svc.start(http=False, loop=False)
    try:
        assert svc.forecast is not None and len(svc.forecast.history) == 5
        # a completed step goes to the database with the cycle's decision
        fc = svc.forecast
        fc.observe(datetime.now(UTC) - timedelta(minutes=15), 7.0, None)
        svc.on_site_meter(10.0, None)
        await svc.run_cycle()
        await svc.journal.flush()
        rows = svc.store.store.recent_meter_samples(HISTORY_SOURCE, start.to_pydatetime())
    finally:
        await svc.stop()
    assert len(rows) == 6 and rows[-1].power_kw == 7.0 and rows[0].pv_kw == 0.5


# --------------------------------------------------------------------------- the command line


def test_evdlm_serve_with_a_forecaster_runs_cycles(tmp_path: Path, model_file: Path) -> None:
    dump_site(small_site(), tmp_path / "site.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "evdlm.cli", "serve", "--site", str(tmp_path / "site.yaml"),
        "--forecaster", str(model_file), "--ocpp-port", "0", "--http-port", "0",
        "--database-url", f"sqlite:///{tmp_path / 'db.sqlite'}", "--log-level", "WARNING",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        port = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and port is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "API http://" in line:
                port = int(line.split("API http://127.0.0.1:")[1].split("/")[0])
        assert port is not None, "".join(lines)
        banner = proc.stdout.readline()
        assert banner.startswith("forecast: model, 96 x 15 min ahead"), banner
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5) as resp:
                state = json.loads(resp.read())
            if state["loop"]["cycle"] >= 1 and state["forecast"]["fallbacks"] >= 1:
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert state["loop"]["cycle"] >= 1 and state["loop"]["policy"] == "rule_based"
    # no site meter reading yet: the model has no history, so the window is a (counted) persistence
    assert state["forecast"]["model"] is True and state["forecast"]["source"] == "persistence"
    assert state["forecast"]["fallback_reason"] == "insufficient_history"
    assert proc.returncode == 0
