"""Forecasting figures: day-ahead backtests on generated scenarios, fit and forecast times.

    python -m benchmarks.forecasting [--days 42] [--kinds workplace,depot] [--json]
    python -m benchmarks.forecasting --real [--every-h 6] [--json]

For each generated scenario and each series (base load, PV, EV arrivals, EV energy) a rolling-origin
backtest with one day-ahead forecast (96 steps) from every local midnight after 14 days of training, the
model refitted weekly; gradient boosting against seasonal naive (yesterday, last week) and persistence.
Times: fitting one series on 90 days of 15-minute data, and one 24-hour forecast (``predict``) and one
provider window (cached, as the environment calls it).

``--weather``: what weather-forecast columns add to the PV forecast, on a generated scenario whose
``irradiance_forecast_w_m2`` column is *synthetic*: the scenario's actual PV read as irradiance times
documented log-normal noise (:func:`forecasting.weather.synthetic_irradiance_forecast`; sigma 0.1 per day
and per step, and 0.25 per day with 0.2 per step); the clear-sky-index model with and without the column,
against seasonal naive (origins every 6 h after 21 days, weekly refit).

``--real``: the same backtest (day-ahead horizon, origins every ``--every-h`` hours, weekly refit) on the
ten real-data benchmark weeks of :mod:`benchmarks.real`, origins inside each week only: base load and PV
(the Dutch series of :mod:`benchmarks.real_data` on the week and the 28 days before it) and EV demand (the
ACN sessions of the week's period, from the period's first day on). Skill over seasonal naive (yesterday)
from the MAE pooled over all weeks' origins, for the fitted models of ``forecast fit`` (gbr; PV:
clear-sky index) and for gbr on PV (the model before the clear-sky index).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import cast, get_args

import numpy as np
import pandas as pd

TARGET_SKILL = 0.20
WEATHER_NOISE = (("noise10", 0.1, 0.1), ("noise25", 0.25, 0.2))
"""--weather: (label, day sigma, step sigma) of the synthetic irradiance forecasts compared"""
REAL_HISTORY_DAYS = 28


def _real_frames(week: object) -> tuple[pd.DataFrame, int, pd.Timestamp]:
    """A benchmark week's series on the week and the 28 days before it, the position of the week's
    first step, and the first day of the week's ACN period (EV demand is unknown before it)."""

    from benchmarks import real
    from forecasting.data import ev_demand_frame

    assert isinstance(week, real.Week)
    start = pd.Timestamp(week.start, tz=real.TIMEZONE)
    end = start + pd.DateOffset(days=7)
    first = start - pd.DateOffset(days=REAL_HISTORY_DAYS)
    index = pd.date_range(first.tz_convert("UTC"), end.tz_convert("UTC"), freq=real.STEP, inclusive="left")
    n = len(real.stations(week.site))
    ts = real.site_timeseries(index, n)
    ev = ev_demand_frame(real.read_period(week.site, week.period), pd.DatetimeIndex(ts.index))
    period_start = pd.Timestamp(week.period.split()[0], tz=real.TIMEZONE)
    frame = pd.concat([ts[["base_load_kw", "pv_kw"]], ev], axis=1)
    return frame, int(index.searchsorted(start.tz_convert("UTC"))), period_start


def _real_backtests(every_h: float) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    from benchmarks import real
    from forecasting.backtest import BacktestConfig, backtest
    from forecasting.data import ALL_SERIES, gbr_params, series_spec, site_model
    from forecasting.models import make_forecaster

    runs = [(col, site_model(col)) for col in ALL_SERIES] + [("pv_kw", "gbr")]
    runs += [(col, "seasonal_naive") for col in ALL_SERIES]
    sums: dict[tuple[str, str], list[float]] = {run: [0.0, 0.0] for run in runs}
    per_week: dict[str, float] = {}
    for week in real.WEEKS:
        frame, first, period_start = _real_frames(week)
        for col, model in runs:
            series = frame[col]
            start = first
            if col.startswith("ev_"):
                cut = int(pd.DatetimeIndex(series.index).searchsorted(period_start.tz_convert("UTC")))
                series, start = series.iloc[cut:], first - cut
            cfg = BacktestConfig(
                horizon_steps=96,
                origin_every_steps=round(every_h * 4),
                initial_train_days=start / 96,
                refit_every_days=7,
            )
            spec = series_spec(col, real.TIMEZONE)
            f = make_forecaster(model, spec, gbr_params(col) if model == "gbr" else None)
            r = backtest(f, series, cfg)
            err = float(np.abs(r.point - r.truth).sum())
            sums[(col, model)][0] += err
            sums[(col, model)][1] += r.truth.size
            if col == "pv_kw":
                per_week[f"{week.name}.{model}"] = err / r.truth.size
    out: dict[str, dict[str, float]] = {}
    models: dict[str, str] = {}
    for col, model in runs:
        if model == "seasonal_naive":
            continue
        mae = sums[(col, model)][0] / sums[(col, model)][1]
        naive = sums[(col, "seasonal_naive")][0] / sums[(col, "seasonal_naive")][1]
        name = col if model == site_model(col) else f"{col}.{model}"
        out[name] = {"mae": mae, "mae_seasonal_naive": naive, "skill": 1.0 - mae / naive}
        models[name] = model
    out["pv_kw_per_week_mae"] = per_week
    return out, models


def _main_real(every_h: float, as_json: bool) -> None:
    res, models = _real_backtests(every_h)
    checks = {"pv_skill_vs_seasonal_naive>=20%": res["pv_kw"]["skill"] >= TARGET_SKILL}
    if as_json:
        print(json.dumps({"every_h": every_h, "models": models, "backtests": res, "checks": checks}))
        return
    print(f"Day-ahead backtests on the real-data weeks (origins every {every_h:g} h inside each week)")
    print(f"  {'series':<22}{'model':<17}{'MAE':>9}{'naive d':>10}{'skill d':>9}")
    for name, r in res.items():
        if "skill" in r:
            print(
                f"  {name:<22}{models[name]:<17}{r['mae']:>9.3f}{r['mae_seasonal_naive']:>10.3f}"
                f"{r['skill']:>+9.1%}"
            )
    print("\nChecks:")
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")


def _weather_demo(days: int, seed: int) -> dict[str, float]:
    from envs.generate import generate_scenario
    from forecasting.backtest import BacktestConfig, backtest
    from forecasting.clearsky import ClearSkyIndexForecaster
    from forecasting.data import series_spec
    from forecasting.models import make_forecaster
    from forecasting.weather import synthetic_irradiance_forecast

    sc = generate_scenario("workplace", chargers=20, days=days, seed=seed)
    assert sc.site.pv is not None
    pv = sc.timeseries["pv_kw"]
    cfg = BacktestConfig(horizon_steps=96, origin_every_steps=24, initial_train_days=21, refit_every_days=7)
    spec = series_spec("pv_kw", sc.site.timezone)
    runs: list[tuple[str, object]] = [
        ("seasonal_naive", make_forecaster("seasonal_naive", spec)),
        ("clear_sky_index", ClearSkyIndexForecaster(spec)),
    ]
    for label, day_sigma, step_sigma in WEATHER_NOISE:
        weather = synthetic_irradiance_forecast(
            pv, sc.site.pv.peak_kw, np.random.default_rng(seed), day_sigma, step_sigma
        ).to_frame()
        runs.append((f"clear_sky_index+weather_{label}", ClearSkyIndexForecaster(spec, weather=weather)))
    out: dict[str, float] = {}
    for name, f in runs:
        r = backtest(cast(ClearSkyIndexForecaster, f), pv, cfg)
        out[f"mae_{name}"] = float(np.abs(r.point - r.truth).mean())
    for name, _ in runs[1:]:
        out[f"skill_{name}"] = 1.0 - out[f"mae_{name}"] / out["mae_seasonal_naive"]
    return out


def _backtests(kind: str, days: int, seed: int) -> dict[str, dict[str, float]]:
    from envs.generate import Kind, generate_scenario
    from forecasting.backtest import BacktestConfig, backtest
    from forecasting.data import ALL_SERIES, gbr_params, scenario_series, series_spec
    from forecasting.models import make_forecaster

    if kind not in get_args(Kind):
        raise SystemExit(f"unknown kind {kind!r}; choose from {get_args(Kind)}")
    sc = generate_scenario(cast(Kind, kind), chargers=20, days=days, seed=seed)
    data = scenario_series(sc)
    local = pd.DatetimeIndex(data.index).tz_convert(sc.site.timezone)
    first_midnight = int(np.flatnonzero((local.hour == 0) & (local.minute == 0))[0])
    data = data.iloc[first_midnight:]
    cfg = BacktestConfig(horizon_steps=96, origin_every_steps=96, initial_train_days=14, refit_every_days=7)
    out: dict[str, dict[str, float]] = {}
    for col in ALL_SERIES:
        spec = series_spec(col, sc.site.timezone)
        row: dict[str, float] = {}
        for model in ("gbr", "seasonal_naive", "seasonal_naive_week", "persistence"):
            f = make_forecaster(model, spec, gbr_params(col) if model == "gbr" else None)
            r = backtest(f, data[col], cfg)
            m = r.metrics()
            row[f"mae_{model}"] = m.mae
            if model == "gbr":
                row["rmse_gbr"] = m.rmse
                row["pinball_gbr"] = float(m.mean_pinball or np.nan)
                row["coverage_p10_p90"] = float(m.coverage or np.nan)
                row["origins"] = float(len(r.origins))
        for ref in ("seasonal_naive", "seasonal_naive_week", "persistence"):
            row[f"skill_vs_{ref}"] = (
                1.0 - row["mae_gbr"] / row[f"mae_{ref}"] if row[f"mae_{ref}"] > 0 else np.nan
            )
        out[col] = row
    return out


def _timings(seed: int) -> dict[str, float]:
    from envs.generate import generate_scenario
    from forecasting.data import gbr_params, scenario_series, series_spec
    from forecasting.models import GradientBoostingForecaster
    from forecasting.provider import ModelForecast, SiteForecaster

    sc = generate_scenario("workplace", chargers=20, days=90, seed=seed)
    data = scenario_series(sc)
    out: dict[str, float] = {}
    fitted = {}
    for col in ("base_load_kw", "pv_kw"):
        t0 = time.perf_counter()
        fitted[col] = GradientBoostingForecaster(series_spec(col, sc.site.timezone), gbr_params(col)).fit(
            data[col]
        )
        out[f"fit_90d_s_{col}"] = time.perf_counter() - t0
        times = []
        for d in range(60, 89):
            now = data.index[d * 96 + 37]
            hist = data[col].iloc[: d * 96 + 37]
            t0 = time.perf_counter()
            fitted[col].predict(now, 96, history=hist)
            times.append(time.perf_counter() - t0)
        out[f"predict_24h_ms_{col}"] = 1000 * float(np.median(times))
    site = SiteForecaster(dict(fitted), sc.site.timezone, sc.step)
    bound = ModelForecast(site, refresh_every_steps=1).bind(sc.timeseries)
    t0 = time.perf_counter()
    for t in range(30 * 96, 37 * 96):
        bound.window(t, 97)
    out["provider_window_ms"] = 1000 * (time.perf_counter() - t0) / (7 * 96)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=42, help="length of each generated scenario (>= 28)")
    parser.add_argument("--kinds", default="workplace,depot")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--real", action="store_true", help="backtest on the real-data benchmark weeks")
    parser.add_argument("--every-h", type=float, default=6.0, help="--real: hours between origins")
    parser.add_argument("--weather", action="store_true", help="PV with synthetic weather-forecast columns")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.weather:
        demo = _weather_demo(args.days, args.seed)
        if args.json:
            print(json.dumps({"days": args.days, "seed": args.seed, "synthetic_weather": demo}))
            return
        print(f"PV day-ahead on a generated workplace ({args.days} days), SYNTHETIC irradiance forecast")
        names = ["seasonal_naive", "clear_sky_index"] + [
            f"clear_sky_index+weather_{n}" for n, *_ in WEATHER_NOISE
        ]
        for name in names:
            skill = demo.get(f"skill_{name}")
            shown = "" if skill is None else f"  skill {skill:+.1%}"
            print(f"  {name:<36} MAE {demo[f'mae_{name}']:.3f}{shown}")
        return
    if args.real:
        _main_real(args.every_h, args.json)
        return

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    backtests = {k: _backtests(k, args.days, args.seed + i) for i, k in enumerate(kinds)}
    timings = _timings(args.seed)
    checks = {}
    for k, res in backtests.items():
        checks[f"{k}.base_load_skill_vs_seasonal_naive>=20%"] = (
            res["base_load_kw"]["skill_vs_seasonal_naive"] >= TARGET_SKILL
        )
        checks[f"{k}.pv_skill_vs_seasonal_naive>=20%"] = (
            res["pv_kw"]["skill_vs_seasonal_naive"] >= TARGET_SKILL
        )
        checks[f"{k}.ev_arrivals_beats_persistence"] = res["ev_arrivals"]["skill_vs_persistence"] > 0
        checks[f"{k}.ev_energy_beats_persistence"] = res["ev_energy_kwh"]["skill_vs_persistence"] > 0
    checks["fit_90d_under_10s"] = max(v for n, v in timings.items() if n.startswith("fit_")) < 10.0
    checks["predict_24h_under_20ms"] = max(v for n, v in timings.items() if n.startswith("predict_")) < 20.0
    result = {"days": args.days, "backtests": backtests, "timings": timings, "checks": checks}
    if args.json:
        print(json.dumps(result, default=float))
        return
    print(f"Day-ahead backtests ({args.days}-day generated scenarios, origins at local midnight,", end=" ")
    print("14 days warm-up)")
    for k, res in backtests.items():
        print(f"\n{k}:")
        print(
            f"  {'series':<15}{'MAE gbr':>10}{'naive d':>10}{'naive w':>10}{'persist':>10}"
            f"{'skill d':>9}{'skill w':>9}{'skill p':>9}{'P10-P90':>9}"
        )
        for col, r in res.items():
            print(
                f"  {col:<15}{r['mae_gbr']:>10.3f}{r['mae_seasonal_naive']:>10.3f}"
                f"{r['mae_seasonal_naive_week']:>10.3f}{r['mae_persistence']:>10.3f}"
                f"{r['skill_vs_seasonal_naive']:>+9.1%}{r['skill_vs_seasonal_naive_week']:>+9.1%}"
                f"{r['skill_vs_persistence']:>+9.1%}{r['coverage_p10_p90']:>9.0%}"
            )
    print("\nTimes (90 days of 15-minute data, one core):")
    for name, v in timings.items():
        print(f"  {name:<32}{v:>9.2f}")
    print("\nChecks:")
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")


if __name__ == "__main__":
    main()
