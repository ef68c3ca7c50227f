"""``evdlm run``, ``evdlm evaluate``, ``evdlm train``, ``evdlm tune``.

Each command is a thin wrapper over an importable function; heavy imports stay inside the commands so
``evdlm --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from evdlm.cli.errors import bad_input

if TYPE_CHECKING:
    from training.evaluate import EvaluationReport

_TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("policy", "policy", "{}"),
    ("cost_total", "cost", "{:.1f}"),
    ("cost_energy", "energy", "{:.1f}"),
    ("cost_demand_charge", "demand", "{:.1f}"),
    ("export_revenue", "export", "{:.1f}"),
    ("cost_degradation", "degr.", "{:.1f}"),
    ("cost_missing_energy", "missing", "{:.1f}"),
    ("peak_import_kw", "peak kW", "{:.1f}"),
    ("energy_delivered_pct", "deliv. %", "{:.2f}"),
    ("evs_short", "EVs short", "{}"),
    ("evs_short_kwh", "short kWh", "{:.1f}"),
    ("violations", "viol.", "{}"),
    ("pv_self_consumption_pct", "PV self %", "{:.1f}"),
    ("v2g_exported_kwh", "V2G kWh", "{:.1f}"),
    ("decision_ms_p50", "ms p50", "{:.2f}"),
    ("decision_ms_p99", "ms p99", "{:.2f}"),
    ("gap_to_optimum_pct", "gap %", "{:+.1f}"),
)
_NARROW = frozenset(
    {"export_revenue", "cost_degradation", "evs_short_kwh", "pv_self_consumption_pct", "v2g_exported_kwh",
     "decision_ms_p50"}
)  # fmt: skip
"""columns left out unless ``--wide``, so that the table fits a 120-column terminal"""
NARROW_WIDTH = 120


def print_report(report: EvaluationReport, wide: bool = False) -> None:
    """One rich table per scenario (means over seeds): the main columns within 120 characters, every
    column with ``wide``."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    columns = [c for c in _TABLE_COLUMNS if wide or c[0] not in _NARROW]
    console = Console(width=max(Console().width, 190) if wide else NARROW_WIDTH)
    frame = report.frame()
    for scenario in report.scenarios():
        sub = frame[frame["scenario"] == scenario]
        seeds = [int(s) for s in sorted(sub["seed"].unique())]
        mean = sub.groupby("policy", sort=False).mean(numeric_only=True).reset_index()
        shown_seeds = ", ".join(str(s) for s in seeds)
        title = f"scenario {scenario}" + (f" (mean of seeds {shown_seeds})" if len(seeds) > 1 else "")
        table = Table(title=escape(title), title_justify="left")
        for _, header, _ in columns:
            if header == "policy":  # a long model URI wraps, never ends in an ellipsis
                table.add_column(header, justify="left", overflow="fold")
            else:
                table.add_column(header, justify="right", no_wrap=True)
        for _, r in mean.iterrows():
            cells = []
            for col, _, fmt in columns:
                v = r.get(col)  # a column of Nones (no optimum, no gap) is not averaged
                cells.append("-" if v is None or (isinstance(v, float) and v != v) else fmt.format(v))
            table.add_row(*cells)
        console.print(table)


def _use_store(tracking_uri: str | None) -> str:
    """Every command reads and writes runs and models in one store (:mod:`evdlm.tracking_uri`); its URI."""
    from evdlm.tracking_uri import use_tracking_store

    return use_tracking_store(tracking_uri).uri


def _policy_errors() -> tuple[type[BaseException], ...]:
    """What a bad policy spec, scenario or model raises: one ``error:`` line each, never a traceback
    (a model that is not in the registry, a policy trained for another site, a file that is not UTF-8)."""
    from mlflow.exceptions import MlflowException

    from agents.registry import UnknownPolicyError
    from envs.config import ConfigError

    return (UnknownPolicyError, ConfigError, MlflowException, ValueError, OSError)


TRACKING_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else .evdlm/mlflow.db)"
WIDE_HELP = "print every column (default: the main ones, within 120 characters)"


def _parse_list(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def register(app: typer.Typer) -> None:
    """Add the training and evaluation commands to the root app."""

    @app.command()
    def evaluate(
        scenario: list[Path] = typer.Option(
            ..., "--scenario", "-s", help="scenario folder(s); repeat the option"
        ),
        policies: list[str] = typer.Option(
            None,
            "--policies",
            "-p",
            help="comma-separated policy names, paths or MLflow model URIs (default: all non-learned ones)",
        ),
        seeds: list[str] = typer.Option(None, "--seeds", help="comma-separated seeds (default: 0)"),
        out: Path | None = typer.Option(None, "--out", help="also write the rows as JSON here"),
        tracking_uri: str | None = typer.Option(
            None,
            "--tracking-uri",
            help=TRACKING_HELP,
        ),
        no_tracking: bool = typer.Option(False, "--no-tracking", help="do not log to MLflow"),
        use_ray: bool = typer.Option(
            False, "--ray", help="run scenario x policy x seed in parallel through Ray"
        ),
        ray_address: str | None = typer.Option(None, "--ray-address", help="an existing Ray cluster"),
        horizon: int = typer.Option(96, "--horizon", help="forecast steps given to the policies"),
        step: str | None = typer.Option(None, "--step", help="resample scenarios to this step, e.g. 15min"),
        forecast: str = typer.Option(
            "perfect",
            "--forecast",
            help="forecasts given to the policies: perfect, noisy, noisy:ERROR, or model:PATH (a fitted "
            "forecaster from evdlm forecast fit)",
        ),
        wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
    ) -> None:
        """Score policies on scenarios through the same environment and cost code; a table per scenario."""
        from agents.registry import NON_LEARNED
        from training.evaluate import EnvOptions, ForecastSpecError, forecast_provider
        from training.evaluate import evaluate as run_evaluation

        _use_store(tracking_uri)
        names = _parse_list(policies) or list(NON_LEARNED)
        seed_list = [int(s) for s in _parse_list(seeds)] or [0]
        try:
            provider = forecast_provider(forecast)
        except ForecastSpecError as err:
            raise bad_input(err) from None
        try:
            report = run_evaluation(
                names,
                [str(s) for s in scenario],
                seed_list,
                options=EnvOptions(forecast=provider, forecast_horizon=horizon, step=step),
                progress=True,
                use_ray=use_ray or ray_address is not None,
                ray_address=ray_address,
            )
        except _policy_errors() as err:
            raise bad_input(err) from None
        _finish(
            report,
            out,
            tracking_uri,
            no_tracking,
            {"policies": ",".join(names), "seeds": str(seed_list), "forecast": forecast},
            wide,
        )

    @app.command()
    def run(
        chargers: int = typer.Option(10, help="chargers of the generated depot"),
        days: int = typer.Option(2, help="days of the generated depot scenario"),
        seed: int = typer.Option(0, help="generator seed (training uses seeds >= 10000, never this one)"),
        train_minutes: float = typer.Option(
            2.0, "--train-minutes", help="minutes of PPO training before the comparison (0: skip training)"
        ),
        tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
        out: Path | None = typer.Option(None, "--out", help="also write the rows as JSON here"),
        wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
    ) -> None:
        """The whole story on embedded defaults: generate a depot, train a short PPO policy, then compare
        it with every baseline, the rule-based DLM, MPC and the perfect-foresight optimum."""
        from agents.registry import NON_LEARNED
        from envs.generate import generate_scenario
        from envs.scenario import plural
        from training.evaluate import evaluate as run_evaluation

        store = _use_store(tracking_uri)
        scenario = generate_scenario("depot", chargers=chargers, days=days, seed=seed)
        typer.echo(
            f"scenario {scenario.name}: {chargers} chargers, {plural(days, 'day')}, "
            f"{len(scenario.sessions)} sessions; MLflow store {store}"
        )
        policies: list[str] = list(NON_LEARNED)
        if train_minutes > 0:
            from training.train import describe_result, quick_demo

            typer.echo(
                f"training a PPO policy for {train_minutes:g} min on generated depot weeks "
                f"(other scenarios than {scenario.name}) ..."
            )
            result = quick_demo(minutes=train_minutes, chargers=chargers, tracking_uri=tracking_uri)
            typer.echo(describe_result(result))
            policies.append(result.model_uri)
        typer.echo(f"comparing {len(policies)} policies on scenario {scenario.name} ...")
        report = run_evaluation(policies, [scenario], progress=True)
        _finish(
            report, out, tracking_uri, False, {"policies": ",".join(policies), "generator": "depot"}, wide
        )

    # ---- learned policies (training/train.py, training/tune.py)
    @app.command()
    def train(
        config: Path = typer.Option(..., "--config", "-c", help="e.g. configs/train/v2g.yaml"),
        tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
        resume: Path | None = typer.Option(None, "--resume", help="continue from a checkpoint .zip"),
        out_dir: Path | None = typer.Option(None, "--out-dir", help="run folder (default: .evdlm/runs/...)"),
    ) -> None:
        """Train a learned policy (stable-baselines3), evaluate it on held-out scenarios, register it."""
        from training.train import train_command

        _use_store(tracking_uri)
        train_command(config, tracking_uri=tracking_uri, resume=resume, out_dir=out_dir)

    @app.command()
    def tune(
        config: Path = typer.Option(..., "--config", "-c", help="training config with a tune section"),
        tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
        ray_address: str | None = typer.Option(None, "--ray-address", help="an existing Ray cluster"),
    ) -> None:
        """Hyperparameter search with Ray Tune and ASHA; each trial an MLflow run, the best registered."""
        from training.tune import tune_command

        _use_store(tracking_uri)
        tune_command(config, tracking_uri=tracking_uri, ray_address=ray_address)


def _finish(
    report: EvaluationReport,
    out: Path | None,
    tracking_uri: str | None,
    no_tracking: bool,
    params: dict[str, str],
    wide: bool = False,
) -> None:
    print_report(report, wide)
    if out is not None:
        report.to_json(out)
        typer.echo(f"rows written to {out}")
    if not no_tracking:
        from training.tracking import log_evaluation

        logged = log_evaluation(report, tracking_uri=tracking_uri, params=params)
        typer.echo(
            f"MLflow: run {logged.parent_run_id} (experiment {logged.experiment_id})"
            f" at {logged.tracking_uri}\n"
            f"  view with: mlflow ui --backend-store-uri {logged.tracking_uri}"
        )
