"""Evaluation: metrics through the env, the JSON rows, MLflow runs with plots, the CLI, Ray (opt-in)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from envs.generate import generate_scenario
from envs.scenario import Scenario, save_scenario
from training.evaluate import EnvOptions, EvaluationReport, evaluate, run_episode, with_gaps
from training.tracking import resolve_tracking

REQUIRED_KEYS = {
    "scenario",
    "policy",
    "cost_total",
    "peak_import_kw",
    "energy_delivered_pct",
    "violations",
    "gap_to_optimum_pct",
}


@pytest.fixture(scope="module")
def depot() -> Scenario:
    return generate_scenario("depot", chargers=4, days=2, seed=3)


@pytest.fixture(scope="module")
def report(depot: Scenario) -> EvaluationReport:
    return evaluate(
        ["uncontrolled", "edf", "rule_based", "optimum"], [depot], options=EnvOptions(forecast_horizon=48)
    )


def test_every_policy_is_scored_by_the_same_env_and_stays_within_limits(report: EvaluationReport) -> None:
    frame = report.frame()
    assert list(frame["policy"]) == ["uncontrolled", "edf", "rule_based", "optimum"]
    assert (frame["violations"] == 0).all()
    parts = frame["cost_energy"] - frame["export_revenue"] + frame["cost_demand_charge"]
    parts += frame["cost_missing_energy"] + frame["cost_degradation"]
    np.testing.assert_allclose(parts, frame["cost_total"], rtol=1e-9)
    opt = report.row(frame["scenario"][0], "optimum")
    assert opt.gap_to_optimum_pct == 0.0
    unc = report.row(frame["scenario"][0], "uncontrolled")
    # uncontrolled charging sets a higher peak than the optimum and so pays more
    assert unc.peak_import_kw > opt.peak_import_kw
    assert unc.gap_to_optimum_pct is not None and unc.gap_to_optimum_pct > 0
    for r in report.rows:
        assert 0.0 <= r.energy_delivered_pct <= 100.0 + 1e-9
        assert r.energy_delivered_kwh <= r.energy_asked_kwh + 1e-9
        assert r.decision_ms_p99 >= r.decision_ms_p50 >= 0.0
        assert 0.0 <= r.pv_self_consumption_pct <= 100.0 + 1e-9


def test_traces_match_the_rows(report: EvaluationReport) -> None:
    for r in report.rows:
        trace = report.traces[(r.scenario, r.policy, r.seed)]
        assert len(trace.site_import_kw) == r.n_steps
        assert trace.site_import_kw.max() == pytest.approx(r.peak_import_kw)


def test_run_episode_is_deterministic_and_matches_evaluate(depot: Scenario, report: EvaluationReport) -> None:
    again = run_episode("edf", depot, 0, EnvOptions(forecast_horizon=48)).row
    first = report.row(depot.name, "edf")
    assert again.cost_total == first.cost_total
    assert again.peak_import_kw == first.peak_import_kw


def test_gap_is_relative_to_the_optimum_of_the_same_scenario_and_seed(report: EvaluationReport) -> None:
    rows = with_gaps(report.rows)
    opt = next(r for r in rows if r.policy == "optimum")
    for r in rows:
        assert r.gap_to_optimum_pct == pytest.approx(
            100 * (r.cost_total - opt.cost_total) / abs(opt.cost_total)
        )


def test_json_rows_have_the_documented_keys(report: EvaluationReport, tmp_path: Path) -> None:
    rows = json.loads(report.to_json(tmp_path / "out.json").read_text())
    assert len(rows) == 4
    for row in rows:
        assert REQUIRED_KEYS <= set(row)


def test_default_tracking_store_is_sqlite_in_the_project_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    loc = resolve_tracking(project_dir=tmp_path)
    assert loc.tracking_uri == f"sqlite:///{tmp_path / '.evdlm' / 'mlflow.db'}"
    assert loc.artifact_location is not None and loc.artifact_location.endswith(".evdlm/mlartifacts")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking(project_dir=tmp_path).tracking_uri == "http://127.0.0.1:5999"
    assert resolve_tracking("file:///x", project_dir=tmp_path).tracking_uri == "file:///x"


def test_cli_evaluate_writes_json_and_logs_runs_with_plots(depot: Scenario, tmp_path: Path) -> None:
    import mlflow

    from evdlm.cli import app

    folder = save_scenario(depot, tmp_path / "depot")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--scenario",
            str(folder),
            "--policies",
            "edf,optimum",
            "--out",
            str(out),
            "--tracking-uri",
            uri,
        ],
        env={"MLFLOW_TRACKING_URI": ""},
    )
    assert result.exit_code == 0, result.output
    assert "edf" in result.output and "MLflow: run" in result.output
    rows = json.loads(out.read_text())
    assert [r["policy"] for r in rows] == ["edf", "optimum"]
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("evdlm-evaluation")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.params["policy"] for c in children} == {"edf", "optimum"}
    assert all("cost_total" in c.data.metrics for c in children)
    parent_files = {f.path for f in client.list_artifacts(parents[0].info.run_id)}
    assert {"evaluation.csv", "evaluation.json", "plots"} <= parent_files
    plots = [f.path for f in client.list_artifacts(parents[0].info.run_id, "plots")]
    assert any(p.endswith(".png") for p in plots)
    child_plots = client.list_artifacts(children[0].info.run_id, "plots")
    assert child_plots and child_plots[0].path.endswith(".png")


def test_cli_rejects_an_unknown_policy(depot: Scenario, tmp_path: Path) -> None:
    from evdlm.cli import app

    folder = save_scenario(depot, tmp_path / "depot")
    result = CliRunner().invoke(app, ["evaluate", "-s", str(folder), "-p", "nope", "--no-tracking"])
    assert result.exit_code == 2
    assert "unknown policy 'nope'" in result.output


@pytest.mark.usefixtures("local_ray")
def test_ray_gives_the_same_results_as_serial(depot: Scenario) -> None:
    opts = EnvOptions(forecast_horizon=48)
    serial = evaluate(["edf", "rule_based"], [depot], seeds=[0, 1], options=opts)
    parallel = evaluate(["edf", "rule_based"], [depot], seeds=[0, 1], options=opts, use_ray=True)
    for a, b in zip(serial.rows, parallel.rows, strict=True):
        assert (a.scenario, a.policy, a.seed) == (b.scenario, b.policy, b.seed)
        assert a.cost_total == b.cost_total
        assert a.peak_import_kw == b.peak_import_kw


def test_forecast_specs_name_the_providers(tmp_path: Path) -> None:
    from envs.forecast import NoisyForecast, PerfectForecast
    from training.evaluate import ForecastSpecError, forecast_provider

    assert isinstance(forecast_provider("perfect"), PerfectForecast)
    noisy = forecast_provider("noisy:0.2")
    assert isinstance(noisy, NoisyForecast) and noisy.error == 0.2
    for bad in ("oracle", "noisy:much", f"model:{tmp_path / 'missing.joblib'}", "perfect:1"):
        with pytest.raises(ForecastSpecError):
            forecast_provider(bad)
    not_a_forecaster = tmp_path / "other.joblib"
    import joblib

    joblib.dump({"a": 1}, not_a_forecaster)
    with pytest.raises(ForecastSpecError, match="not a fitted SiteForecaster"):
        forecast_provider(f"model:{not_a_forecaster}")


def test_mpc_runs_through_evaluation_on_fitted_forecasts(tmp_path: Path) -> None:
    """Issue 5: the environment and the MPC run on a fitted forecaster (``evdlm forecast fit``'s file)."""
    from evdlm.cli import app
    from forecasting.models import GBRParams
    from forecasting.provider import ModelForecast, SiteForecaster
    from training.evaluate import forecast_provider

    history = generate_scenario("workplace", chargers=4, days=8, seed=21)
    fast = GBRParams(max_iter=8, max_rows=3_000, origin_stride_steps=8)
    path = SiteForecaster.fit_scenario(history, "gbr", fast, columns=("base_load_kw", "pv_kw")).save(
        tmp_path / "forecaster.joblib"
    )
    scenario = generate_scenario("workplace", chargers=4, days=1, seed=22)
    provider = forecast_provider(f"model:{path}")
    assert isinstance(provider, ModelForecast)
    # what the policies see is the model's forecast, not the truth (the current step is measured)
    ts = scenario.timeseries
    window = provider.bind(ts).window(40, 16)
    assert window.base_load_kw[0] == ts["base_load_kw"].iloc[40]
    assert not np.allclose(window.base_load_kw[1:], ts["base_load_kw"].to_numpy()[41:56])

    fitted = evaluate(
        ["mpc", "rule_based"], [scenario], options=EnvOptions(forecast=provider, forecast_horizon=16)
    )
    truth = evaluate(["mpc"], [scenario], options=EnvOptions(forecast_horizon=16))
    for r in fitted.rows:
        assert r.violations == 0
        assert r.energy_delivered_pct > 95.0
    mpc_fitted, mpc_truth = fitted.row(scenario.name, "mpc"), truth.row(scenario.name, "mpc")
    assert mpc_fitted.cost_total != mpc_truth.cost_total  # the forecasts reached the MPC

    folder = save_scenario(scenario, tmp_path / "workplace")
    out = tmp_path / "rows.json"
    args = ["evaluate", "-s", str(folder), "-p", "mpc", "--horizon", "16", "--no-tracking", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--forecast", f"model:{path}"])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert rows[0]["policy"] == "mpc"
    assert rows[0]["cost_total"] == pytest.approx(mpc_fitted.cost_total, rel=1e-9)
    bad = CliRunner().invoke(app, [*args, "--forecast", "oracle"])
    assert bad.exit_code == 2 and "unknown forecast 'oracle'" in bad.output


class _Idle:
    """Charges nothing: every EV that leaves misses its whole request."""

    name = "idle"

    def reset(self, site: object, scenario: object = None) -> None:
        self.n = int(site.n)  # type: ignore[attr-defined]

    def act(self, snapshot: object) -> object:
        from agents.base import Decision

        return Decision(charger_kw=np.zeros(self.n))


def test_per_session_shortfalls_add_up_to_the_env_missing_energy(depot: Scenario) -> None:
    from envs.env import ChargingSiteEnv

    opts = EnvOptions(forecast_horizon=48, departure_floor=False)  # idle must leave every EV short
    idle = run_episode(_Idle(), depot, options=opts)  # type: ignore[arg-type]
    opt = run_episode("optimum", depot, options=opts)
    env = ChargingSiteEnv(scenario=depot, step=None, forecast_horizon=48)
    env.reset(seed=0)
    ses = env.episode.sessions
    for res in (idle, opt):
        short = res.session_short_kwh
        assert short is not None and short.shape == (ses.size,)
        left = np.isfinite(short)
        assert int(left.sum()) == res.row.evs_departed
        assert int((short[left] > 0.1).sum()) == res.row.evs_short
        np.testing.assert_allclose(short[left].sum(), res.row.evs_short_kwh, atol=1e-9)
        delivered_gap = res.row.energy_asked_kwh - res.row.energy_delivered_kwh
        np.testing.assert_allclose(short[left].sum(), delivered_gap, atol=1e-6)
    # charging nothing, every departed EV misses what it asked (initial energy needed = its request)
    left = np.isfinite(idle.session_short_kwh)  # type: ignore[arg-type]
    assert left.any()
    np.testing.assert_allclose(idle.session_short_kwh[left], ses.request_kwh[left], atol=1e-9)  # type: ignore[index]
    assert idle.row.evs_short > opt.row.evs_short
