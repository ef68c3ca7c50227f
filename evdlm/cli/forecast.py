"""``evdlm forecast ...`` (fit, backtest)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from evdlm.cli.errors import bad_input

forecast_app = typer.Typer(help="Fit and backtest forecasts.", no_args_is_help=True)

TARGET_HELP = "base_load, pv or ev_demand (EV arrivals and energy asked per interval)"
MODEL_HELP = "gbr, seasonal_naive (yesterday), seasonal_naive_week or persistence"


@forecast_app.command("backtest")
def backtest_cmd(
    scenario: Path = typer.Option(..., "--scenario", help="scenario folder (site.yaml, sessions.csv, ...)"),
    target: str = typer.Option("base_load", "--target", help=TARGET_HELP),
    model: str = typer.Option("gbr", "--model", help=MODEL_HELP),
    horizon_h: float = typer.Option(24.0, "--horizon-h", help="forecast horizon, hours"),
    origin_every_h: float = typer.Option(6.0, "--origin-every-h", help="hours between forecast origins"),
    initial_train_days: float = typer.Option(14.0, help="history before the first origin, days"),
    refit_every_days: float = typer.Option(7.0, help="refit the model every this many days"),
    max_iter: int = typer.Option(50, help="boosting iterations (gbr)"),
    mlflow_log: bool = typer.Option(True, "--mlflow/--no-mlflow", help="log the run to MLflow"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else .evdlm/mlflow.db)",
    ),
) -> None:
    """Rolling-origin backtest: MAE, RMSE, pinball loss and skill vs seasonal naive (1 - MAE/MAE_naive)."""
    import pandas as pd

    from envs.config import ConfigError
    from envs.scenario import load_scenario, plural
    from evdlm.tracking_uri import use_tracking_store
    from forecasting.backtest import BacktestConfig, backtest_with_skill
    from forecasting.data import TARGETS, gbr_params, series_spec, target_frame
    from forecasting.models import MODEL_NAMES, GBRParams, make_forecaster
    from forecasting.tracking import log_backtests, report_metrics

    if target not in TARGETS:
        raise typer.BadParameter(f"choose one of {', '.join(TARGETS)}", param_hint="--target")
    if model not in MODEL_NAMES:
        raise typer.BadParameter(f"choose one of {', '.join(MODEL_NAMES)}", param_hint="--model")
    try:
        sc = load_scenario(scenario)
    except ConfigError as err:
        raise bad_input(err) from None
    frame = target_frame(sc, target)
    step = sc.step
    days = sc.n_steps * step / pd.Timedelta(days=1)
    if initial_train_days + horizon_h / 24.0 > days:
        fits = max(days - horizon_h / 24.0, 0.0)
        raise bad_input(
            f"scenario {sc.name} holds {plural(days, 'day')}: too few for --initial-train-days "
            f"{initial_train_days:g} of history plus a --horizon-h {horizon_h:g} forecast; give at most "
            f"--initial-train-days {fits:g} (or a longer scenario)"
        )
    config = BacktestConfig(
        horizon_steps=max(int(pd.Timedelta(hours=horizon_h) // step), 1),
        origin_every_steps=max(int(pd.Timedelta(hours=origin_every_h) // step), 1),
        initial_train_days=initial_train_days,
        refit_every_days=refit_every_days,
    )
    reports = []
    try:
        for col in frame.columns:
            spec = series_spec(str(col), sc.site.timezone)
            params = gbr_params(str(col), GBRParams(max_iter=max_iter)) if model == "gbr" else None
            reports.append(backtest_with_skill(make_forecaster(model, spec, params), frame[col], config))
    except ValueError as err:
        raise bad_input(err) from None
    run_id = None
    store = use_tracking_store(tracking_uri) if mlflow_log else None
    if mlflow_log:
        params_log: dict[str, str | int | float] = {
            "scenario": sc.name,
            "target": target,
            "model": model,
            "step": str(step),
        }
        if model == "gbr":
            params_log["max_iter"] = max_iter
        run_id = log_backtests(
            reports, params_log, config, run_name=f"{target}-{model}", tracking_uri=tracking_uri
        )
    if as_json:
        out = {
            "scenario": sc.name,
            "target": target,
            "model": model,
            "mlflow_run_id": run_id,
            "metrics": {k: v for rep in reports for k, v in report_metrics(rep).items()},
        }
        typer.echo(json.dumps(out, indent=None))
        return
    typer.echo(f"scenario {sc.name}: {target} with {model}, {len(reports[0].result.origins)} origins")
    for rep in reports:
        m = rep.metrics
        typer.echo(f"  {rep.result.series}:")
        typer.echo(f"    MAE {m.mae:.4g}  RMSE {m.rmse:.4g}  bias {m.bias:+.3g}  (n={m.n})")
        if m.pinball:
            pins = "  ".join(f"P{round(lv * 100):02d} {v:.4g}" for lv, v in m.pinball)
            typer.echo(f"    pinball {pins}  coverage {m.coverage:.0%}")
        for name, _ in rep.references:
            typer.echo(f"    skill vs {name}: {rep.skill(name):+.1%}")
        if rep.result.n_imputed_origins:
            typer.echo(f"    {rep.result.n_imputed_origins} origins had imputed history")
    if run_id and store is not None:
        typer.echo(f"MLflow run {run_id} at {store.uri}")


@forecast_app.command("fit")
def fit_cmd(
    scenario: Path = typer.Option(..., "--scenario", help="scenario folder to fit on"),
    out: Path = typer.Option(..., "--out", help="file to save the fitted forecaster to (joblib)"),
    model: str = typer.Option("gbr", "--model", help=MODEL_HELP),
    max_iter: int = typer.Option(50, help="boosting iterations (gbr)"),
) -> None:
    """Fit base load, PV and EV demand forecasters on a scenario and save them (for env, MPC, serving)."""
    import time

    from envs.config import ConfigError
    from envs.scenario import load_scenario
    from forecasting.models import MODEL_NAMES, GBRParams
    from forecasting.provider import SiteForecaster

    if model not in MODEL_NAMES:
        raise typer.BadParameter(f"choose one of {', '.join(MODEL_NAMES)}", param_hint="--model")
    try:
        sc = load_scenario(scenario)
    except ConfigError as err:
        raise bad_input(err) from None
    t0 = time.perf_counter()
    try:
        site = SiteForecaster.fit_scenario(sc, model, GBRParams(max_iter=max_iter))
    except ValueError as err:
        raise bad_input(err) from None
    path = site.save(out)
    typer.echo(
        f"fitted {model} on {sc.name} ({sc.n_steps} steps, {', '.join(site.forecasters)}) "
        f"in {time.perf_counter() - t0:.1f} s -> {path}"
    )
