"""The fitted-model forecast provider (env / MPC), save and load, and the ``evdlm forecast`` commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from envs.forecast import COLUMNS, ForecastProvider
from envs.generate import generate_scenario
from envs.scenario import Scenario, save_scenario
from forecasting.models import GBRParams, Persistence
from forecasting.provider import ModelForecast, SiteForecaster

FAST = GBRParams(max_iter=20, max_rows=8_000, origin_stride_steps=8)
H = 16


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return generate_scenario("workplace", chargers=4, days=20, seed=11)


@pytest.fixture(scope="module")
def fitted(scenario: Scenario) -> SiteForecaster:
    train = scenario.with_timeseries(scenario.timeseries.iloc[: 14 * 96])
    return SiteForecaster.fit_scenario(train, "gbr", FAST, columns=("base_load_kw", "pv_kw"))


def test_provider_matches_direct_forecasts_and_passes_prices_through(
    scenario: Scenario, fitted: SiteForecaster
) -> None:
    provider: ForecastProvider = ModelForecast(fitted)
    ts = scenario.timeseries
    bound = provider.bind(ts)
    for t in (1, 200, 15 * 96 + 5, len(ts) - 3):
        w = bound.window(t, H)
        assert w.horizon == H
        assert w.base_load_kw[0] == ts["base_load_kw"].iloc[t]  # the current step is measured
        for col, got in (("base_load_kw", w.base_load_kw), ("pv_kw", w.pv_kw)):
            direct = fitted.predict(col, ts.index[t], H, history=ts[col].iloc[:t]).point
            np.testing.assert_allclose(got[1:], direct[1:], rtol=1e-12)
        idx = np.minimum(np.arange(t, t + H), len(ts) - 1)
        np.testing.assert_array_equal(w.import_price_per_kwh, ts[COLUMNS[2]].to_numpy()[idx])
        np.testing.assert_array_equal(w.export_price_per_kwh, ts[COLUMNS[3]].to_numpy()[idx])


def test_provider_has_no_lookahead(scenario: Scenario, fitted: SiteForecaster) -> None:
    ts = scenario.timeseries
    t = 16 * 96 + 30
    corrupted = ts.copy()
    corrupted.iloc[t:, :2] = 999.0
    for k in (1, 4):
        a = ModelForecast(fitted, refresh_every_steps=k, measured_current_step=False).bind(ts)
        b = ModelForecast(fitted, refresh_every_steps=k, measured_current_step=False).bind(corrupted)
        for tt in (t - 7, t - 1, t):
            np.testing.assert_array_equal(a.window(tt, H).base_load_kw, b.window(tt, H).base_load_kw)
            np.testing.assert_array_equal(a.window(tt, H).pv_kw, b.window(tt, H).pv_kw)
        assert not np.array_equal(a.window(t + k, H).base_load_kw, b.window(t + k, H).base_load_kw)


def test_refresh_every_k_steps_shifts_the_last_forecast(scenario: Scenario) -> None:
    # persistence: every origin gives a visibly different forecast
    fitted = SiteForecaster.fit_scenario(scenario, "persistence", columns=("base_load_kw", "pv_kw"))
    bound = ModelForecast(fitted, refresh_every_steps=4, measured_current_step=False).bind(
        scenario.timeseries
    )
    t0 = 15 * 96 + 40  # a refresh step (multiple of 4), about noon
    first = bound.window(t0, H)
    for d in (1, 2, 3):
        np.testing.assert_array_equal(bound.window(t0 + d, H).pv_kw[: H - d], first.pv_kw[d:])
    every_step = ModelForecast(fitted, measured_current_step=False).bind(scenario.timeseries)
    np.testing.assert_array_equal(first.pv_kw, every_step.window(t0, H).pv_kw)
    np.testing.assert_array_equal(bound.window(t0 + 4, H).pv_kw, every_step.window(t0 + 4, H).pv_kw)
    assert not np.array_equal(bound.window(t0 + 2, H).pv_kw, every_step.window(t0 + 2, H).pv_kw)


def test_cold_start_and_warm_start(scenario: Scenario, fitted: SiteForecaster) -> None:
    later = scenario.timeseries.iloc[14 * 96 :]  # starts right where the fitted history ends
    warm = ModelForecast(fitted, measured_current_step=False).bind(later).window(0, H)
    direct = fitted.predict("base_load_kw", later.index[0], H).point
    np.testing.assert_allclose(warm.base_load_kw, direct, rtol=1e-12)
    cold = ModelForecast(fitted).bind(scenario.timeseries.iloc[3 * 96 :]).window(0, H)  # no history at all
    assert np.all(cold.base_load_kw == scenario.timeseries["base_load_kw"].iloc[3 * 96])
    assert np.all(np.isfinite(ModelForecast(fitted).bind(scenario.timeseries).window(1, H).pv_kw))


def test_env_episode_compiles_with_fitted_forecasts(scenario: Scenario, fitted: SiteForecaster) -> None:
    from envs.core import SiteArrays
    from envs.sim import compile_episode

    site = SiteArrays.from_config(scenario.site)
    ep = compile_episode(
        scenario, site, start_step=15 * 96, n_steps=96, forecast=ModelForecast(fitted, refresh_every_steps=4)
    )
    assert ep.forecast.shape == (97, 4, 17)
    assert np.all(np.isfinite(ep.forecast))
    truth = compile_episode(scenario, site, start_step=15 * 96, n_steps=96)
    np.testing.assert_array_equal(ep.forecast[:, 2:], truth.forecast[:, 2:])  # prices are known
    np.testing.assert_array_equal(ep.forecast[:-1, 0, 0], truth.forecast[:-1, 0, 0])  # measured now
    err = np.abs(ep.forecast[:, 0, 1:] - truth.forecast[:, 0, 1:]).mean()
    assert 0 < err < 0.2 * truth.forecast[:, 0].mean()  # a forecast, not the truth, and not far off


def test_save_load_round_trip(tmp_path: Path, scenario: Scenario, fitted: SiteForecaster) -> None:
    path = fitted.save(tmp_path / "f.joblib")
    loaded = ModelForecast.load(path, refresh_every_steps=2)
    a = ModelForecast(fitted, refresh_every_steps=2).bind(scenario.timeseries).window(500, H)
    b = loaded.bind(scenario.timeseries).window(500, H)
    np.testing.assert_array_equal(a.base_load_kw, b.base_load_kw)
    np.testing.assert_array_equal(a.pv_kw, b.pv_kw)
    with pytest.raises(TypeError):
        import joblib

        joblib.dump(Persistence, tmp_path / "x.joblib")
        SiteForecaster.load(tmp_path / "x.joblib")


def test_cli_backtest_logs_to_mlflow_and_fit_saves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario: Scenario
) -> None:
    import json

    import mlflow

    from evdlm.cli import app

    folder = save_scenario(scenario, tmp_path / "sc")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["forecast", "backtest", "--scenario", str(folder), "--initial-train-days", "14"]
    res = runner.invoke(app, [*args, "--target", "ev_demand", "--model", "gbr", "--max-iter", "10", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    metrics = out["metrics"]
    for key in ("ev_arrivals.mae", "ev_energy_kwh.rmse", "ev_arrivals.pinball_p90", "ev_energy_kwh.coverage"):
        assert np.isfinite(metrics[key])
    assert metrics["ev_arrivals.skill_vs_seasonal_naive_day"] == pytest.approx(
        1 - metrics["ev_arrivals.mae"] / _naive_mae(runner, app, args, "ev_demand", "ev_arrivals")
    )
    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(out["mlflow_run_id"])
    assert run.data.params["target"] == "ev_demand" and "ev_arrivals.mae" in run.data.metrics
    arts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")]
    assert "plots/ev_arrivals_gbr.png" in arts and "plots/ev_energy_kwh_gbr.png" in arts

    res = runner.invoke(app, [*args, "--target", "pv", "--model", "persistence", "--no-mlflow"])
    assert res.exit_code == 0, res.output
    assert "skill vs seasonal_naive_day" in res.output and "pinball" not in res.output

    res = runner.invoke(app, [*args, "--target", "wind"])
    assert res.exit_code != 0 and "base_load" in res.output

    model_path = tmp_path / "fc.joblib"
    res = runner.invoke(
        app, ["forecast", "fit", "--scenario", str(folder), "--out", str(model_path), "--max-iter", "10"]
    )
    assert res.exit_code == 0, res.output
    site = SiteForecaster.load(model_path)
    assert set(site.forecasters) == {"base_load_kw", "pv_kw", "ev_arrivals", "ev_energy_kwh"}
    now = scenario.end
    fc = site.predict("pv_kw", now, 96, history=scenario.timeseries["pv_kw"])
    assert fc.index[0] == now and np.all(np.isfinite(fc.point))


def _naive_mae(runner: CliRunner, app: typer.Typer, args: list[str], target: str, series: str) -> float:
    import json

    res = runner.invoke(
        app, [*args, "--target", target, "--model", "seasonal_naive", "--no-mlflow", "--json"]
    )
    assert res.exit_code == 0, res.output
    return float(json.loads(res.output.strip().splitlines()[-1])["metrics"][f"{series}.mae"])


def test_default_tracking_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from forecasting.tracking import default_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/.evdlm/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri(tmp_path) == "http://127.0.0.1:5000"
