"""Forecasting figures: day-ahead backtests on generated scenarios, fit and forecast times.

    python -m benchmarks.forecasting [--days 42] [--kinds workplace,depot] [--json]

For each generated scenario and each series (base load, PV, EV arrivals, EV energy) a rolling-origin
backtest with one day-ahead forecast (96 steps) from every local midnight after 14 days of training, the
model refitted weekly; gradient boosting against seasonal naive (yesterday, last week) and persistence.
Times: fitting one series on 90 days of 15-minute data, and one 24-hour forecast (``predict``) and one
provider window (cached, as the environment calls it).
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
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

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
