"""Training's one door to MLflow: the tracking store, experiments, a training or tuning run
(:func:`start_run` and its :class:`TrackingRun`), registering a model, and logging an evaluation as a parent
run with a child per policy. No other module of ``training/`` imports mlflow (but the pyfunc wrapper
:mod:`training.mlflow_model`); ``tests/test_tracking_door.py`` holds the rule.

The store follows the one rule of :mod:`evdlm.tracking_uri`: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``,
else the SQLite store ``.evdlm/mlflow.db`` in the project folder (the working directory) with artifacts in
``.evdlm/mlartifacts``. ``mlflow ui --backend-store-uri sqlite:///.evdlm/mlflow.db`` shows the runs with
their plots.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evdlm.tracking_uri import PROJECT_DIR_NAME, resolve_tracking_store

if TYPE_CHECKING:
    from training.evaluate import EvaluationReport

__all__ = [
    "PROJECT_DIR_NAME",
    "LoggedEvaluation",
    "TrackingLocation",
    "TrackingRun",
    "ensure_experiment",
    "log_evaluation",
    "metric_batch",
    "register_model",
    "resolve_tracking",
    "sb3_mlflow_output",
    "start_run",
    "tracking_location",
]

DEFAULT_EXPERIMENT = "evdlm-evaluation"


@dataclass(frozen=True)
class TrackingLocation:
    """Where MLflow writes: the tracking URI and, for a SQLite store, the artifact folder."""

    tracking_uri: str
    artifact_location: str | None

    def describe(self) -> str:
        return self.tracking_uri


def resolve_tracking(
    tracking_uri: str | None = None, project_dir: str | Path | None = None
) -> TrackingLocation:
    """The explicit URI, else ``MLFLOW_TRACKING_URI``, else the SQLite store under ``.evdlm``
    (:func:`evdlm.tracking_uri.resolve_tracking_store`)."""
    store = resolve_tracking_store(tracking_uri, project_dir)
    return TrackingLocation(store.uri, store.artifact_location)


def tracking_location(tracking_uri: str | None = None) -> tuple[str, str | None]:
    """``(tracking URI, artifact root for new experiments)`` of :func:`resolve_tracking`."""
    loc = resolve_tracking(tracking_uri)
    return loc.tracking_uri, loc.artifact_location


def ensure_experiment(name: str, tracking_uri: str, artifact_root: str | None) -> str:
    """The id of experiment ``name``, created (artifacts under ``artifact_root``) if missing."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None if artifact_root is None else f"{artifact_root}/{name}"
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:
        exp = client.get_experiment_by_name(name)  # another process created it meanwhile
        if exp is None:
            raise
        return str(exp.experiment_id)


def metric_batch(metrics: dict[str, float], prefix: str, step: int) -> list[Any]:
    """``metrics`` as MLflow ``Metric`` entities named ``<prefix><key>`` at ``step``, for ``log_batch``."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(f"{prefix}{k}", v, now, step) for k, v in metrics.items()]


def sb3_mlflow_output(client: Any, run_id: str) -> Any:
    """An SB3 logger output that sends every scalar it logs to the MLflow run (the learning curves)."""
    from mlflow.entities import Metric
    from stable_baselines3.common.logger import KVWriter

    class MlflowOutputFormat(KVWriter):
        def write(
            self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0
        ) -> None:
            now = int(time.time() * 1000)
            metrics = [
                Metric(key, float(value), now, int(step))
                for key, value in key_values.items()
                if isinstance(value, int | float | np.integer | np.floating)
                and not isinstance(value, bool)
                and "mlflow" not in key_excluded.get(key, ())
                and np.isfinite(float(value))
            ]
            if metrics:
                client.log_batch(run_id, metrics=metrics)

        def close(self) -> None:
            pass

    return MlflowOutputFormat()


@dataclass(frozen=True)
class TrackingRun:
    """An open MLflow run of training or tuning (from :func:`start_run`): what is logged goes to it."""

    tracking_uri: str
    experiment_id: str
    run_id: str
    client: Any
    """the ``MlflowClient`` of ``tracking_uri``"""

    def log_params(self, params: Mapping[str, object]) -> None:
        import mlflow

        mlflow.log_params(dict(params))

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        import mlflow

        mlflow.log_metrics(dict(metrics))

    def log_metrics_at(self, metrics: dict[str, float], prefix: str, step: int) -> None:
        """``metrics`` named ``<prefix><key>`` at training step ``step`` (one batch)."""
        self.client.log_batch(self.run_id, metrics=metric_batch(metrics, prefix, step))

    def set_tag(self, key: str, value: str) -> None:
        import mlflow

        mlflow.set_tag(key, value)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        """The file ``path`` as an artifact of the run (under ``folder`` when given)."""
        import mlflow

        mlflow.log_artifact(str(path), folder)

    def sb3_output(self) -> Any:
        """:func:`sb3_mlflow_output` of this run (the learning curves)."""
        return sb3_mlflow_output(self.client, self.run_id)


@contextmanager
def start_run(
    tracking_uri: str | None,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[TrackingRun]:
    """Open a run named ``run_name`` in ``experiment`` (created if missing) of the store of
    :func:`tracking_location`, nested under ``parent_run_id`` when given; it ends when the block does."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri, root = tracking_location(tracking_uri)
    mlflow.set_tracking_uri(uri)
    experiment_id = ensure_experiment(experiment, uri, root)
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name,
        tags=dict(tags or {}),
        nested=parent_run_id is not None,
        parent_run_id=parent_run_id,
    ) as run:
        yield TrackingRun(uri, experiment_id, run.info.run_id, MlflowClient(uri))


def register_model(model_uri: str, name: str) -> str:
    """Register the model at ``model_uri`` (a ``runs:/`` URI) as a new version of ``name``; returns its
    ``models:/NAME/VERSION`` URI."""
    import mlflow

    mv = mlflow.register_model(model_uri, name)
    return f"models:/{mv.name}/{mv.version}"


@dataclass(frozen=True)
class LoggedEvaluation:
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    child_run_ids: tuple[str, ...]


_ROW_PARAMS = ("scenario", "policy", "seed", "n_steps")


def log_evaluation(
    report: EvaluationReport,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str = "evaluate",
    params: dict[str, str] | None = None,
    plots: bool = True,
) -> LoggedEvaluation:
    """Log a report: one parent run (params, the table as CSV/JSON, the comparison chart), and a child
    run per scenario x policy x seed (params, metrics, the import-vs-limit plot)."""
    import mlflow

    from training import plots as plot_mod

    location = resolve_tracking(tracking_uri)
    mlflow.set_tracking_uri(location.tracking_uri)
    exp_id = ensure_experiment(experiment, location.tracking_uri, location.artifact_location)
    children: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as parent:
            mlflow.log_params({**(params or {}), "scenarios": ",".join(report.scenarios())})
            frame = report.frame()
            frame.to_csv(out / "evaluation.csv", index=False)
            report.to_json(out / "evaluation.json")
            mlflow.log_artifact(str(out / "evaluation.csv"))
            mlflow.log_artifact(str(out / "evaluation.json"))
            if plots:
                for scenario in report.scenarios():
                    path = plot_mod.comparison_chart(report, scenario, out / f"compare_{_safe(scenario)}.png")
                    mlflow.log_artifact(str(path), artifact_path="plots")
            for row in report.rows:
                name = f"{row.scenario}/{row.policy}/seed{row.seed}"
                with mlflow.start_run(experiment_id=exp_id, run_name=name, nested=True) as child:
                    d = row.as_dict()
                    mlflow.log_params({k: d[k] for k in _ROW_PARAMS})
                    metrics = {
                        k: float(v)
                        for k, v in d.items()
                        if k not in _ROW_PARAMS and isinstance(v, int | float) and v is not None
                    }
                    mlflow.log_metrics(metrics)
                    trace = report.traces.get((row.scenario, row.policy, row.seed))
                    if plots and trace is not None:
                        png = plot_mod.import_plot(
                            trace, f"{row.scenario} - {row.policy}", out / f"import_{_safe(name)}.png"
                        )
                        mlflow.log_artifact(str(png), artifact_path="plots")
                    children.append(child.info.run_id)
            parent_id = parent.info.run_id
    return LoggedEvaluation(location.tracking_uri, exp_id, parent_id, tuple(children))


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
