"""Score policies on scenarios through the one environment and cost model.

``evaluate(policies, scenarios)`` runs every policy on every scenario (and seed) through
:class:`envs.env.ChargingSiteEnv` -- each request goes through the env's safety projection and is priced by
:func:`envs.costs.step_cost` -- and returns an :class:`EvaluationReport`: one :class:`EvalRow` of metrics
per scenario x policy x seed plus the per-step traces the plots need. Limits are checked independently of
the projection on what was actually applied (:func:`envs.limits.limit_violations`).

The unit of work, :func:`run_episode`, is a plain function of picklable arguments, so the serial loop and
Ray run the same code and give the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.base import Policy
from envs.core import FloatArray
from envs.forecast import ForecastProvider, PerfectForecast
from envs.scenario import Scenario, load_scenario, resample_timeseries

DEFAULT_HORIZON = 96
"""forecast steps given to policies (24 h at 15-minute steps)"""
SHORT_KWH = 0.1
"""an EV that leaves missing more than this is counted as leaving below its request"""


@dataclass(frozen=True)
class EvalRow:
    """Metrics of one policy on one scenario and seed. Currency in the tariff's currency."""

    scenario: str
    policy: str
    seed: int
    cost_total: float
    cost_energy: float
    cost_demand_charge: float
    export_revenue: float
    """revenue from export (subtracted in the total)"""
    cost_degradation: float
    cost_missing_energy: float
    peak_import_kw: float
    energy_asked_kwh: float
    """energy the EVs that left during the scenario actually needed"""
    energy_delivered_kwh: float
    """of that, what they got"""
    energy_delivered_pct: float
    evs_short: int
    """EVs that left short of what they actually needed (by more than 0.1 kWh)"""
    evs_short_kwh: float
    evs_departed: int
    evs_short_declared: int
    """EVs that left short of what their drivers declared (by more than 0.1 kWh; equal to ``evs_short``
    where declarations are the actual values)"""
    evs_short_declared_kwh: float
    violations: int
    """limit breaks of the applied allocations over the run, checked independently of the projection
    (:func:`envs.limits.limit_violations`: per charger, node, phase and site, summed over steps)"""
    violation_kinds: str
    """which limits, ``kind:count`` comma-separated (empty when none)"""
    pv_self_consumption_pct: float
    v2g_exported_kwh: float
    """energy taken out of EV batteries (V2G)"""
    decision_ms_p50: float
    decision_ms_p99: float
    setup_s: float
    """time of the policy's reset (the optimum's solve)"""
    n_steps: int
    gap_to_optimum_pct: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class EpisodeTrace:
    """Per-step series of one run, for plots (kW)."""

    timestamps: np.ndarray
    site_import_kw: FloatArray
    base_load_kw: FloatArray
    pv_kw: FloatArray
    pv_curtailed_kw: FloatArray
    import_limit_kw: float
    charging_kw: FloatArray
    """the chargers' charging power, summed"""
    discharging_kw: FloatArray
    """the chargers' discharging (V2G) power, summed, >= 0"""


@dataclass(frozen=True, eq=False)
class EpisodeResult:
    row: EvalRow
    trace: EpisodeTrace
    session_short_kwh: FloatArray | None = None
    """per session of the episode (``env.episode.sessions`` order): kWh it missed when it left, NaN
    for sessions that did not leave within the episode; sums to the env's ``missing_total_kwh``"""


@dataclass
class EvaluationReport:
    """Rows (one per scenario x policy x seed) and their traces, keyed ``(scenario, policy, seed)``."""

    rows: list[EvalRow] = field(default_factory=list)
    traces: dict[tuple[str, str, int], EpisodeTrace] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        cols = [f.name for f in fields(EvalRow)]
        return pd.DataFrame([r.as_dict() for r in self.rows], columns=cols)

    def scenarios(self) -> list[str]:
        return list(dict.fromkeys(r.scenario for r in self.rows))

    def row(self, scenario: str, policy: str, seed: int = 0) -> EvalRow:
        for r in self.rows:
            if (r.scenario, r.policy, r.seed) == (scenario, policy, seed):
                return r
        raise KeyError((scenario, policy, seed))

    def to_json(self, path: str | Path) -> Path:
        import json

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps([_jsonable(r.as_dict()) for r in self.rows], indent=2) + "\n")
        return p


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        elif isinstance(v, np.generic):
            out[k] = v.item()
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------- one episode


@dataclass(frozen=True)
class EnvOptions:
    """How episodes are built for evaluation (picklable, the same for every policy)."""

    forecast: ForecastProvider = field(default_factory=PerfectForecast)
    forecast_horizon: int = DEFAULT_HORIZON
    step: str | None = None
    """resample scenarios to this step (None: their own)"""
    departure_floor: bool = False
    """the projection's departure floor (:class:`envs.env.EnvConfig`; off: each policy decides when)"""


class ForecastSpecError(ValueError):
    """A ``--forecast`` spec that names no known provider or a file that holds no fitted forecaster."""


def forecast_provider(spec: str) -> ForecastProvider:
    """The forecast provider named by ``spec``: ``perfect`` (the truth), ``noisy`` or ``noisy:ERROR`` (the
    truth with relative error ``ERROR`` one step ahead, growing with lead time), or ``model:PATH`` (a fitted
    forecaster saved by ``evdlm forecast fit``, :class:`forecasting.provider.ModelForecast`)."""
    from envs.forecast import NoisyForecast

    kind, _, arg = spec.strip().partition(":")
    if kind == "perfect" and not arg:
        return PerfectForecast()
    if kind == "noisy":
        try:
            return NoisyForecast(error=float(arg)) if arg else NoisyForecast()
        except ValueError:
            raise ForecastSpecError(f"forecast {spec!r}: the error of noisy:ERROR must be a number") from None
    if kind == "model" and arg:
        from forecasting.provider import ModelForecast

        path = Path(arg)
        if not path.is_file():
            raise ForecastSpecError(f"forecast {spec!r}: no such file {path}")
        try:
            return ModelForecast.load(path)
        except (TypeError, ValueError) as err:
            raise ForecastSpecError(f"forecast {spec!r}: {err}") from None
    raise ForecastSpecError(
        f"unknown forecast {spec!r}: use perfect, noisy, noisy:ERROR or model:PATH (from evdlm forecast fit)"
    )


def prepare_scenario(scenario: Scenario | str | Path, step: str | None = None) -> Scenario:
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    if step is not None and pd.Timedelta(step) != sc.step:
        sc = sc.with_timeseries(resample_timeseries(sc.timeseries, step))
    return sc


def run_episode(
    policy: str | Policy, scenario: Scenario, seed: int = 0, options: EnvOptions | None = None
) -> EpisodeResult:
    """Run one policy over one scenario through the environment and measure it."""
    from agents.registry import load_policy
    from agents.rollout import rollout
    from envs.env import ChargingSiteEnv
    from envs.limits import limit_violations

    opts = options or EnvOptions()
    pol = load_policy(policy) if isinstance(policy, str) else policy
    env = ChargingSiteEnv(
        scenario=scenario,
        step=None,
        forecast=opts.forecast,
        forecast_horizon=opts.forecast_horizon,
        departure_floor=opts.departure_floor,
    )
    env.reset(seed=seed)
    site = env.site
    ep = env.episode
    dt = ep.dt_h
    t0 = time.perf_counter()
    pol.reset(site, scenario)
    setup_s = time.perf_counter() - t0

    T = ep.n_steps
    imports = np.zeros(T)
    curtailed = np.zeros(T)
    charging, discharging = np.zeros(T), np.zeros(T)
    parts = {
        "energy": 0.0,
        "export_revenue": 0.0,
        "demand_charge": 0.0,
        "missing_energy": 0.0,
        "degradation": 0.0,
    }
    decide_s = np.zeros(T)
    violations = 0
    kinds: dict[str, int] = {}
    v2g_kwh = 0.0
    pv_used_kwh = 0.0
    for t, step in enumerate(rollout(pol, env, T)):
        state, info = step.snapshot.state, step.info
        decide_s[t] = step.decide_s
        applied = np.asarray(info["charger_power_kw"], dtype=float)
        imp = float(info["site_import_kw"])
        broken = limit_violations(
            site, state, applied, float(info["battery_kw"]), float(info["pv_curtailed_kw"])
        )
        if broken.total:
            violations += broken.total
            for kind, count in broken.nonzero().items():
                kinds[kind] = kinds.get(kind, 0) + count
        for k, v in info["cost"].items():
            parts[k] += float(v)
        imports[t] = imp
        curtailed[t] = float(info["pv_curtailed_kw"])
        charging[t], discharging[t] = float(applied[applied > 0].sum()), float(-applied[applied < 0].sum())
        v2g_kwh += float(info["ev_discharged_kwh"])
        pv_avail = float(ep.pv_kw[t]) - curtailed[t]
        pv_used_kwh += max(pv_avail - max(-imp, 0.0), 0.0) * dt

    # what each EV left without, actual and declared (the simulator writes it when the EV leaves)
    S = ep.sessions.size
    session_short = env.sim.session_out[0, 0, :S].copy()
    short_declared = env.sim.session_out[1, 0, :S]
    gone = np.isfinite(session_short)
    departed = int(gone.sum())
    short = int((session_short[gone] > SHORT_KWH).sum())
    short_kwh = float(session_short[gone].sum())
    ses = ep.sessions
    left = ses.departure_step <= T
    asked = float(ses.request_kwh[left].sum())
    missing_total = float(env.sim.missing_total_kwh[0])
    delivered = asked - missing_total
    pv_total = float(ep.pv_kw[:T].sum() * dt)
    total = sum(parts.values())
    ms = decide_s * 1000.0
    row = EvalRow(
        scenario=scenario.name,
        policy=getattr(pol, "name", str(policy)) if not isinstance(policy, str) else policy,
        seed=seed,
        cost_total=total,
        cost_energy=parts["energy"],
        cost_demand_charge=parts["demand_charge"],
        export_revenue=-parts["export_revenue"],
        cost_degradation=parts["degradation"],
        cost_missing_energy=parts["missing_energy"],
        peak_import_kw=float(imports.max(initial=0.0)),
        energy_asked_kwh=asked,
        energy_delivered_kwh=delivered,
        energy_delivered_pct=100.0 * delivered / asked if asked > 0 else 100.0,
        evs_short=short,
        evs_short_kwh=short_kwh,
        evs_departed=departed,
        evs_short_declared=int((short_declared[gone] > SHORT_KWH).sum()),
        evs_short_declared_kwh=float(short_declared[gone].sum()),
        violations=violations,
        violation_kinds=",".join(f"{k}:{v}" for k, v in sorted(kinds.items())),
        pv_self_consumption_pct=100.0 * pv_used_kwh / pv_total if pv_total > 0 else 100.0,
        v2g_exported_kwh=v2g_kwh,
        decision_ms_p50=float(np.percentile(ms, 50)),
        decision_ms_p99=float(np.percentile(ms, 99)),
        setup_s=setup_s,
        n_steps=T,
    )
    trace = EpisodeTrace(
        timestamps=ep.timestamps[:T].copy(),
        site_import_kw=imports,
        base_load_kw=ep.base_load_kw[:T].copy(),
        pv_kw=ep.pv_kw[:T].copy(),
        pv_curtailed_kw=curtailed,
        import_limit_kw=site.import_limit_kw,
        charging_kw=charging,
        discharging_kw=discharging,
    )
    return EpisodeResult(row, trace, session_short)


# --------------------------------------------------------------------------- many episodes


Task = tuple[str | Policy, Scenario, int]


def with_gaps(rows: Sequence[EvalRow], reference: str = "optimum") -> list[EvalRow]:
    """Rows with ``gap_to_optimum_pct`` filled in where the reference ran on the same scenario and seed."""
    from dataclasses import replace

    ref = {(r.scenario, r.seed): r.cost_total for r in rows if r.policy == reference}
    out = []
    for r in rows:
        base = ref.get((r.scenario, r.seed))
        gap = None if base is None else 100.0 * (r.cost_total - base) / max(abs(base), 1e-9)
        out.append(replace(r, gap_to_optimum_pct=gap))
    return out


def evaluate(
    policies: Sequence[str | Policy],
    scenarios: Sequence[Scenario | str | Path],
    seeds: Sequence[int] = (0,),
    *,
    options: EnvOptions | None = None,
    progress: bool = False,
    use_ray: bool = False,
    ray_address: str | None = None,
    on_result: Callable[[EpisodeResult], None] | None = None,
) -> EvaluationReport:
    """Run every policy on every scenario and seed; same results serially and through Ray.

    ``policies`` are names (see :mod:`agents.registry`), specs of learned policies, or policy objects
    (serial runs only: an object is reset before each episode).
    """
    opts = options or EnvOptions()
    prepared = [prepare_scenario(s, opts.step) for s in scenarios]
    tasks: list[Task] = [(p, sc, seed) for sc in prepared for seed in seeds for p in policies]
    if use_ray:
        results = _run_ray(tasks, opts, ray_address, progress)
    else:
        results = []
        for res in _progress(
            (run_episode(p, sc, seed, opts) for p, sc, seed in tasks), len(tasks), progress, "evaluating"
        ):
            results.append(res)
            if on_result is not None:
                on_result(res)
    report = EvaluationReport()
    report.rows = with_gaps([r.row for r in results])
    report.traces = {(r.row.scenario, r.row.policy, r.row.seed): r.trace for r in results}
    return report


def _progress(items: Iterable[EpisodeResult], total: int, show: bool, label: str) -> Iterable[EpisodeResult]:
    if not show:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        for item in items:
            yield item
            bar.advance(task)


def ray_temp_dir() -> Path:
    """Ray's scratch folder: ``.evdlm/ray`` in the project folder when short enough for its sockets."""
    local = Path.cwd() / ".evdlm" / "ray"
    path = local if len(str(local)) < 60 else Path("/tmp") / "evdlm-ray"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_ray(tasks: list[Task], opts: EnvOptions, address: str | None, progress: bool) -> list[EpisodeResult]:
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    for p, _, _ in tasks:
        if not isinstance(p, str):
            raise ValueError("with Ray, name policies by string (policy objects are not shipped to workers)")
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=min(os.cpu_count() or 1, 4),
                object_store_memory=128 * 1024 * 1024,
                _temp_dir=str(ray_temp_dir()),
                include_dashboard=False,
                log_to_driver=False,
            )
        started = True
    try:
        remote: Any = ray.remote(num_cpus=1)(run_episode)
        scenario_refs: dict[int, Any] = {}
        refs = []
        for p, sc, seed in tasks:
            key = id(sc)
            if key not in scenario_refs:
                scenario_refs[key] = ray.put(sc)
            refs.append(remote.remote(p, scenario_refs[key], seed, opts))
        pending = list(refs)
        done_count = 0
        by_ref: dict[Any, EpisodeResult] = {}
        with _ray_bar(progress, len(refs)) as advance:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    by_ref[ref] = ray.get(ref)
                    done_count += 1
                    advance()
        return [by_ref[r] for r in refs]
    finally:
        if started:
            ray.shutdown()


class _ray_bar:
    def __init__(self, show: bool, total: int) -> None:
        self.show = show
        self.total = total
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Callable[[], None]:
        if self.show:
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("evaluating (ray)", total=self.total)

        def advance() -> None:
            if self._bar is not None:
                self._bar.advance(self._task)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
