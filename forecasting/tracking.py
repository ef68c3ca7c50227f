"""MLflow logging of backtests: parameters, metrics and a plot of forecast against truth.

The tracking store follows :mod:`evdlm.tracking_uri`: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else
a SQLite file ``.evdlm/mlflow.db`` in the working directory with artifacts under ``.evdlm/mlartifacts``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from evdlm.tracking_uri import resolve_tracking_store
from forecasting.backtest import BacktestConfig, BacktestReport, plot_backtest

EXPERIMENT = "evdlm-forecasting"


def default_tracking_uri(workdir: str | Path | None = None) -> str:
    """The store of :func:`evdlm.tracking_uri.resolve_tracking_store`: ``MLFLOW_TRACKING_URI`` if set, else
    ``sqlite:///<workdir>/.evdlm/mlflow.db``."""
    return resolve_tracking_store(None, workdir).uri


def _experiment_id(name: str, artifact_location: str | None) -> str:
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    return str(mlflow.create_experiment(name, artifact_location=artifact_location))


def log_backtests(
    reports: list[BacktestReport],
    params: dict[str, str | int | float],
    config: BacktestConfig,
    run_name: str,
    tracking_uri: str | None = None,
) -> str:
    """Log one run with the reports' metrics (prefixed by series name) and plots; returns the run id."""
    import mlflow

    store = resolve_tracking_store(tracking_uri)
    mlflow.set_tracking_uri(store.uri)
    exp_id = _experiment_id(EXPERIMENT, store.artifact_location)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
        mlflow.log_params(
            {
                **params,
                "horizon_steps": config.horizon_steps or "1 day",
                "origin_every_steps": config.origin_every_steps or "6 h",
                "initial_train_days": config.initial_train_days,
                "refit_every_days": config.refit_every_days,
                "max_train_days": str(config.max_train_days),
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            for rep in reports:
                mlflow.log_metrics(report_metrics(rep))
                png = plot_backtest(rep.result, Path(tmp) / f"{rep.result.series}_{rep.result.model}.png")
                mlflow.log_artifact(str(png), artifact_path="plots")
        return str(run.info.run_id)


def report_metrics(rep: BacktestReport) -> dict[str, float]:
    """Flat metric names, e.g. ``base_load_kw.mae``, ``base_load_kw.skill_vs_seasonal_naive_day``."""
    s = rep.result.series
    m = rep.metrics
    out = {f"{s}.mae": m.mae, f"{s}.rmse": m.rmse, f"{s}.bias": m.bias, f"{s}.n": float(m.n)}
    for level, loss in m.pinball:
        out[f"{s}.pinball_p{round(level * 100):02d}"] = loss
    if m.coverage is not None:
        out[f"{s}.coverage"] = m.coverage
    for name, _ in rep.references:
        out[f"{s}.skill_vs_{name}"] = rep.skill(name)
    if rep.result.fit_seconds:
        out[f"{s}.fit_seconds_mean"] = float(sum(rep.result.fit_seconds) / len(rep.result.fit_seconds))
    return out
