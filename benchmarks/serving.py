"""Benchmark of the live service: many OCPP stations, a simulator in another process, faults.

``python -m benchmarks.serving [--stations 1000] [--duration-s 120] [--json]`` runs three scenarios, each
with ``evdlm serve`` and ``evdlm simulate`` as separate processes over loopback:

1. **scale**: ``--stations`` single-connector stations (half 1.6J, half 2.0.1), MeterValues every
   ``--meter-interval-s``, a ``--interval-s`` control loop, in real time (speed 1): p99 loop latency (from
   the service's own histogram), calls the service left unanswered, limit violations of the physical
   simulated site;
2. **offender**: a smaller site where one station ignores its profile: how long the site stayed above a
   limit (to compare with one control interval);
3. **restart**: the service is killed with SIGKILL mid-run and restarted on the same database; the
   transactions running before the kill must all be running again after the restart.

Figures are printed, never asserted. The site is generated here: groups of 20 chargers (11 kW) on
feeders, a connection sized for about 45 % of the installed power, a constant base load.

``--v2g`` runs a fourth scenario instead of the three: a V2G site (``--v2g-stations`` OCPP 2.1 stations,
bidirectional 11 kW chargers, an export limit that binds, a site battery served over Modbus TCP unless
``--v2g-no-battery``) with a tariff that is expensive for a few
minutes in the middle; every EV allows V2X, and the EVs differ (what each asks, its state of charge, when
it leaves: drawn from ``--v2g-seed``, :mod:`benchmarks.serving_v2g`). The service (rule-based DLM, the
tariff from the scenario's CSV) and ``evdlm simulate --version 2.1`` run in real time on the scenario's
10 s grid; the same policy is evaluated on the same scenario through the environment
(``training.evaluate.run_episode``, perfect forecast, the service's departure floor). Reported: V2G energy
exported live and in evaluation (battery side, as ``evdlm evaluate`` counts it), EVs leaving short live
and in evaluation, violations of import, export and node limits, p99 loop latency.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benchmarks.serving_v2g import (
    V2G_CYCLE_PHASE_S,
    V2G_LEAD_S,
    V2G_STEP_S,
    build_v2g_scenario,
    live_step_kw,
    rounded_kw,
    sim_clock_behind_s,
)
from envs.config import site_from_dict
from envs.scenario import make_scenario, save_scenario

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_scenario(
    folder: Path, n: int, hours: float = 3.0, seed_minutes: float = 1.0, feeder_share: float = 0.6
) -> Path:
    """``n`` stations ``S0001-1``... in groups of 20 on feeders of ``feeder_share`` of the group's rating;
    sessions arrive over the first ``seed_minutes``."""
    groups = max(1, (n + 19) // 20)
    charger_kw = 11.04
    nodes: list[dict[str, Any]] = [{"id": "transformer", "max_power_kw": 0.5 * n * charger_kw + 50}]
    for g in range(groups):
        feeder_kw = 20 * charger_kw * feeder_share
        nodes.append({"id": f"g{g:03d}", "parent": "transformer", "max_power_kw": feeder_kw})
    chargers = [
        {"id": f"S{i + 1:04d}-1", "node": f"g{i // 20:03d}", "max_current_a": 16.0, "rate_unit": "A"}
        for i in range(n)
    ]
    limit = round(0.45 * n * charger_kw + 20, 1)
    site = site_from_dict(
        {"name": f"bench-{n}", "grid": {"import_limit_kw": limit}, "nodes": nodes, "chargers": chargers}
    )
    start = pd.Timestamp.now(tz="UTC").floor("15min")
    idx = pd.date_range(start, periods=int(hours * 4) + 8, freq="15min")
    ts = pd.DataFrame(
        {
            "timestamp": idx,
            "base_load_kw": 20.0,
            "pv_kw": 0.0,
            "import_price_per_kwh": 0.25,
            "export_price_per_kwh": 0.05,
        }
    )
    now = pd.Timestamp.now(tz="UTC")
    sessions = pd.DataFrame(
        {
            "session_id": [f"e{i}" for i in range(n)],
            "charger_id": [c["id"] for c in chargers],
            "arrival": [now + pd.Timedelta(seconds=5 + seed_minutes * 60 * i / n) for i in range(n)],
            "departure": [now + pd.Timedelta(hours=hours) for _ in range(n)],
            "energy_kwh": 30.0,
        }
    )
    return save_scenario(make_scenario(site, sessions, ts, "bench"), folder)


def write_config(folder: Path, scenario: Path, interval_s: float, ocpp: int, http: int, db: str) -> Path:
    cfg = {
        "site": str(scenario / "site.yaml"),
        "stations": [{"id": f"S{i + 1:04d}"} for i in range(_count(scenario))],
        "control_interval_s": interval_s,
        "policy_budget_s": 0.5,
        "meter": {"source": "http"},
        "meter_timeout_s": max(3 * interval_s, 5.0),
        "failsafe_base_load_kw": 20.0,
        "ocpp_port": ocpp,
        "http_port": http,
        "require_auth": False,
        "database_url": db,
        "response_timeout_s": 20.0,
        "heartbeat_interval_s": 600,
    }
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _count(scenario: Path) -> int:
    return len(yaml.safe_load((scenario / "site.yaml").read_text())["chargers"])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = str(ROOT)
    return env


def start_service(
    config: Path, log: Path, policy: str = "rule_based", failsafe: str = "tx_default", level: str = "WARNING"
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "evdlm.cli", "serve", "--config", str(config), "--failsafe", failsafe]
    cmd += ["--policy", policy, "--log-level", level]
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)


def start_simulator(
    scenario: Path, ocpp: int, http: int, duration_s: float, meter_interval_s: float, extra: list[str],
    config: Path | None = None,
) -> subprocess.Popen[bytes]:  # fmt: skip
    cmd = [sys.executable, "-m", "evdlm.cli", "simulate", "--scenario", str(scenario)]
    if config is not None:
        cmd += ["--config", str(config)]  # the station layout as the service has it
    cmd += ["--csms", f"ws://127.0.0.1:{ocpp}", "--speed", "1", "--version", "mixed", "--json"]
    cmd += ["--meter-url", f"http://127.0.0.1:{http}/api/meter", "--meter-interval-s", str(meter_interval_s)]
    cmd += ["--duration-s", str(duration_s), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env(), cwd=ROOT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a started ``evdlm serve``: SIGTERM (a clean shutdown), killed after 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def http_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        body = resp.read().decode()
    return json.loads(body) if path != "/metrics" else body


def wait_http(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            http_json(port, "/health")
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the service did not answer on port {port}")


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (0 where /proc cannot tell)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used so far, s (0 where /proc cannot tell)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head = line.split(" ")[0]
            if head == name or head.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def run_phase(
    work: Path, n: int, duration_s: float, interval_s: float, meter_interval_s: float, extra: list[str],
    kill_at_s: float | None = None, policy: str = "rule_based", failsafe: str = "max",
    feeder_share: float = 0.6,
) -> dict[str, Any]:  # fmt: skip
    """One service + simulator run; with ``kill_at_s`` the service is SIGKILLed then restarted."""
    work.mkdir(parents=True, exist_ok=True)
    scenario = build_scenario(
        work / "scenario", n, seed_minutes=min(1.0, duration_s / 240.0), feeder_share=feeder_share
    )
    ocpp, http = _free_port(), _free_port()
    db = f"sqlite:///{work / 'serving.db'}"
    config = write_config(work, scenario, interval_s, ocpp, http, db)
    log = work / "service.log"
    t_start, utc_start = time.monotonic(), datetime.now(UTC)
    svc = start_service(config, log, policy, failsafe)
    out: dict[str, Any] = {"stations": n, "policy": policy, "failsafe": failsafe}
    rss: list[tuple[float, float]] = []
    try:
        wait_http(http)
        out["time_to_listen_s"] = round(time.monotonic() - t_start, 2)
        sim = start_simulator(scenario, ocpp, http, duration_s, meter_interval_s, extra, config)
        if kill_at_s is None:
            # memory of the service over the run (soak: growth after the first tenth)
            while sim.poll() is None:
                rss.append((time.monotonic() - t_start, rss_mib(svc.pid)))
                time.sleep(min(5.0, max(duration_s / 50, 0.5)))
        if kill_at_s is not None:
            time.sleep(kill_at_s)
            before = http_json(http, "/api/state")
            running = {c["id"]: c["transaction_id"] for c in before["chargers"] if c["transaction_id"]}
            svc.send_signal(signal.SIGKILL)
            svc.wait()
            t_kill = time.monotonic()
            svc = start_service(config, log, policy, failsafe)
            wait_http(http)
            after = http_json(http, "/api/state")
            resumed = {c["id"]: c["transaction_id"] for c in after["chargers"] if c["transaction_id"]}
            out["restart_s"] = round(time.monotonic() - t_kill, 2)
            out["transactions_before_kill"] = len(running)
            out["transactions_resumed"] = sum(resumed.get(k) == v for k, v in running.items())
        stdout, _ = sim.communicate(timeout=duration_s + 300)
        report = json.loads(stdout.decode().strip().splitlines()[-1])
        metrics = http_json(http, "/metrics")
        state = http_json(http, "/api/state")
    finally:
        _stop(svc)
    count = metric(metrics, "evdlm_loop_latency_seconds_count")
    out.update(
        {
            "duration_s": duration_s,
            "control_interval_s": interval_s,
            "meter_interval_s": meter_interval_s,
            "connected_at_end": report["connected_at_end"],
            "cycles": int(count),
            "p99_loop_latency_ms": state["loop"]["p99_latency_ms"],
            "mean_loop_latency_ms": 1000 * metric(metrics, "evdlm_loop_latency_seconds_sum") / max(count, 1),
            "messages_received": metric(metrics, "evdlm_messages_total"),
            "calls_sent_by_stations": report["calls_sent"],
            "calls_unanswered": report["calls_failed"],
            "calls_in_flight_at_end": report["calls_cancelled"],
            "messages_dropped_offline": report["messages_dropped_offline"],
            "profiles_sent": metric(metrics, "evdlm_profiles_sent_total"),
            "fallbacks": metric(metrics, "evdlm_fallbacks_total"),
            "violation_ticks": report["violation_ticks"],
            "node_violation_ticks": report["node_violation_ticks"],
            "max_excess_kw": round(report["max_excess_kw"], 3),
            "longest_violation_s": round(report["longest_violation_s"], 2),
            "max_site_import_kw": round(report["max_site_import_kw"], 2),
            "import_limit_kw": report["import_limit_kw"],
            "energy_delivered_kwh": round(sum(report["energy_delivered_kwh"].values()), 2),
            "offenders_flagged": [c["id"] for c in state["chargers"] if c["flags"]["not_following_profile"]],
            "requests_before_boot": report.get("refused_unregistered", 0),
            "controllable_violations": state["loop"].get("violations", 0),
            "uncontrollable_overloads": state["loop"].get("overloads_uncontrollable", 0),
            "disconnects": report.get("disconnects", 0),
            "reboots": report.get("reboots", 0),
            "late_meter_values": report.get("late_meter_values", 0),
            "meter_faults": metric(metrics, "evdlm_meter_faults_total"),
            "transactions": report.get("transactions_seen", 0),
            "worst_profile_delay_s": report.get("worst_profile_delay_s", 0.0),
            "transactions_unprotected_at_end": report.get("transactions_unprotected_at_end", 0),
        }
    )
    if report.get("first_boot_accepted_utc") and kill_at_s is None:
        first = datetime.fromisoformat(report["first_boot_accepted_utc"])
        out["time_to_first_boot_s"] = round((first - utc_start).total_seconds(), 2)
    valid = [m for m in rss if m[1] > 0]
    if len(valid) >= 4:
        settled = valid[len(valid) // 10]  # after the first tenth: stations connected, caches warm
        out["rss_mib_settled"] = round(settled[1], 1)
        out["rss_mib_end"] = round(valid[-1][1], 1)
        out["rss_growth_pct"] = round(100.0 * (valid[-1][1] - settled[1]) / settled[1], 1)
    flagged = [c["flagged_at"] for c in state["chargers"] if c.get("flagged_at")]
    last = report.get("last_violation_utc")
    if flagged:
        # last physical violation (site or node) after the service first flagged the offender, s
        first = min(datetime.fromisoformat(t) for t in flagged)
        after_s = 0.0 if last is None else (datetime.fromisoformat(last) - first).total_seconds()
        out["violation_after_flag_s"] = round(max(after_s, 0.0), 2)
    return out


def run_v2g(
    work: Path, n: int, minutes: float, seed: int = 0, interval_s: float = V2G_STEP_S, battery: bool = True
) -> dict[str, Any]:
    """The V2G scenario live (service + 2.1 simulator, real time) and through ``evaluate``; ``battery``:
    with the site battery, served by the simulator over Modbus TCP (its register map) and driven by the
    service as ``evdlm serve --battery-port`` drives it."""
    from envs.scenario import load_scenario
    from evdlm.cli.serve import BatteryMapOption, battery_option
    from serving.config import load_serving_config
    from training.evaluate import SHORT_KWH, EnvOptions, run_episode

    work.mkdir(parents=True, exist_ok=True)
    start = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=V2G_LEAD_S + n / 10)).ceil("10s")
    scenario = build_v2g_scenario(work / "scenario", n, start, minutes, seed, battery)
    ocpp, http, modbus = _free_port(), _free_port(), _free_port()
    config = write_config(work, scenario, interval_s, ocpp, http, f"sqlite:///{work / 'serving.db'}")
    cfg = yaml.safe_load(config.read_text())
    if battery:
        section = battery_option(BatteryMapOption.registers, "127.0.0.1", modbus, load_serving_config(config))
        cfg["battery"] = section.model_dump(mode="json", exclude_none=True)
    cfg["prices"] = {"csv": str(scenario / "timeseries.csv")}
    # the plan on the policy's step (the scenario's 10 s), 5 minutes ahead: a stay of minutes is shorter
    # than the default 15-minute period, whose first period may only discharge what a whole period allows
    cfg["schedule_period_s"] = float(interval_s)
    cfg["schedule_periods"] = 30
    cfg["cycle_phase_s"] = V2G_CYCLE_PHASE_S  # cycles on the scenario's 10 s grid, as the environment steps
    config.write_text(yaml.safe_dump(cfg))
    # TxDefault failsafe: the environment caps no station at its safe share either
    svc = start_service(config, work / "service.log", "rule_based", "tx_default", "INFO")
    try:
        wait_http(http, 60.0 + n / 10)  # 1,000 stations on a loaded machine took more than 60 s
        extra = ["--start-at", start.isoformat()]
        cmd = [sys.executable, "-m", "evdlm.cli", "simulate", "--scenario", str(scenario)]
        cmd += ["--config", str(config)]  # the station layout as the service has it
        cmd += ["--csms", f"ws://127.0.0.1:{ocpp}", "--speed", "1", "--version", "2.1", "--json"]
        cmd += ["--trace-csv", str(work / "trace.csv")]  # every tick, kept with --v2g-keep
        # the stations leave the machine's CPU to the service: no schema check of its (tested) profiles
        cmd += ["--no-schema-check"]
        if battery:
            cmd += ["--battery-port", str(modbus), "--battery-map", "registers"]
        cmd += [
            "--meter-url",
            f"http://127.0.0.1:{http}/api/meter",
            "--meter-interval-s",
            str(interval_s / 2),
        ]
        sim = subprocess.Popen(
            [*cmd, *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env(), cwd=ROOT
        )
        stdout, _ = sim.communicate(timeout=minutes * 60 + 300)
        report = json.loads(stdout.decode().strip().splitlines()[-1])
        (work / "simulate_report.json").write_text(json.dumps(report))  # per EV asked/delivered (--v2g-keep)
        metrics = http_json(http, "/metrics")
        state = http_json(http, "/api/state")
        service_cpu_s = cpu_s(svc.pid)
    finally:
        _stop(svc)
    sc = load_scenario(scenario)
    eff = float(sc.site.chargers[0].efficiency)
    floor = bool(cfg.get("departure_floor", True))
    episode = run_episode("rule_based", sc, 0, EnvOptions(departure_floor=floor))
    row = episode.row
    steps = int(minutes * 60 / V2G_STEP_S)
    live_in, live_out = live_step_kw(work / "trace.csv", start, steps)
    env_in, env_out = rounded_kw(episode.trace.charging_kw), rounded_kw(episode.trace.discharging_kw)
    asked, got = report["energy_asked_kwh"], report["energy_delivered_kwh"]
    live_short = sum(asked[k] - got.get(k, 0.0) > SHORT_KWH for k in asked)
    live_kwh = report["energy_exported_kwh"] / eff  # battery side, as evaluate counts it
    if (behind_s := sim_clock_behind_s(work / "trace.csv")) > 1.0:  # not the scenario evaluate runs
        print(f"v2g: the simulated clock ran {behind_s:.1f} s behind the wall clock", file=sys.stderr)
    count = metric(metrics, "evdlm_loop_latency_seconds_count")
    return {
        "stations": n,
        "minutes": minutes,
        "seed": seed,
        "control_interval_s": interval_s,
        "v2g_exported_live_kwh": round(live_kwh, 3),
        "v2g_exported_evaluate_kwh": round(row.v2g_exported_kwh, 3),
        "v2g_live_vs_evaluate_pct": round(100.0 * (live_kwh / row.v2g_exported_kwh - 1.0), 2)
        if row.v2g_exported_kwh > 0
        else None,
        "evs_short_live": int(live_short),
        "evs_short_evaluate": row.evs_short,
        # toward each EV's request, as evaluate counts it (an EV of known battery may take more)
        "energy_delivered_live_kwh": round(sum(min(got.get(k, 0.0), a) for k, a in asked.items()), 3),
        "energy_delivered_evaluate_kwh": round(row.energy_delivered_kwh, 3),
        "violation_ticks_import_or_export": report["violation_ticks"],
        "node_violation_ticks": report["node_violation_ticks"],
        "violations_evaluate": row.violations,
        "max_site_import_kw": round(report["max_site_import_kw"], 2),
        "import_limit_kw": report["import_limit_kw"],
        "export_limit_kw": float(sc.site.grid.export_limit_kw),
        "cycles": int(count),
        "p99_loop_latency_ms": state["loop"]["p99_latency_ms"],
        "mean_loop_latency_ms": 1000 * metric(metrics, "evdlm_loop_latency_seconds_sum") / max(count, 1),
        "p99_loop_cpu_ms": state["loop"].get("p99_cpu_ms"),
        "mean_loop_cpu_ms": 1000 * metric(metrics, "evdlm_loop_cpu_seconds_sum") / max(count, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "service_cpu_s": round(service_cpu_s, 1),
        "simulator_cpu_s": report.get("cpu_s"),
        "calls_unanswered": report["calls_failed"],
        "sim_clock_behind_s": round(behind_s, 2),
        "profiles_sent": metric(metrics, "evdlm_profiles_sent_total"),
        "battery_charged_live_kwh": report.get("battery_charged_kwh"),
        "battery_discharged_live_kwh": report.get("battery_discharged_kwh"),
        "battery_absent_cycles": metric(metrics, "evdlm_battery_absent_cycles_total"),
        # where live and the environment part: mean charging / discharging kW per 10 s step
        "step_charging_kw": {"live": live_in, "evaluate": env_in[:steps]},
        "step_discharging_kw": {"live": live_out, "evaluate": env_out[:steps]},
        "discharging_at_end": sum(1 for c in state["chargers"] if (c.get("discharge_kw") or 0) > 0),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stations", type=int, default=1000)
    p.add_argument("--duration-s", type=float, default=120.0)
    p.add_argument("--interval-s", type=float, default=10.0)
    p.add_argument("--meter-interval-s", type=float, default=10.0)
    p.add_argument("--fault-stations", type=int, default=40)
    p.add_argument("--fault-interval-s", type=float, default=2.0)
    p.add_argument("--soak", type=float, metavar="MINUTES", help="only the soak: --stations for MINUTES")
    p.add_argument("--chaos-per-h", type=float, default=6.0, help="soak: disconnects+reboots/station/h")
    p.add_argument("--late-meter-share", type=float, default=0.1, help="soak: share of late MeterValues")
    p.add_argument("--json", action="store_true")
    p.add_argument("--v2g", action="store_true", help="run the V2G scenario (OCPP 2.1) instead")
    p.add_argument("--v2g-stations", type=int, default=50)
    p.add_argument("--v2g-minutes", type=float, default=8.0)
    p.add_argument(
        "--v2g-seed", type=int, default=0, help="V2G: the seed of the EVs' draws (asks, SoC, departures)"
    )
    p.add_argument(
        "--v2g-no-battery", action="store_true",
        help="V2G: no site battery (the site of Rounds 1-15 of docs/serving.md)",
    )  # fmt: skip
    p.add_argument(
        "--v2g-keep", type=Path, metavar="DIR",
        help="V2G: run in DIR and keep it (scenario, service log and database, the simulator's trace.csv "
        "and report)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.soak is not None:
        soak(args)
        return
    results: dict[str, Any] = {}
    if args.v2g:
        runs = (args.v2g_stations, args.v2g_minutes, args.v2g_seed)
        if args.v2g_keep is not None:
            v = run_v2g(args.v2g_keep, *runs, battery=not args.v2g_no_battery)
        else:
            with tempfile.TemporaryDirectory(prefix="evdlm-bench-v2g-") as tmp:
                v = run_v2g(Path(tmp), *runs, battery=not args.v2g_no_battery)
        if args.json:
            print(json.dumps({"v2g": v}))
            return
        print(
            f"v2g: {v['stations']} OCPP 2.1 stations, {v['minutes']} min, {v['cycles']} cycles; V2G exported "
            f"live {v['v2g_exported_live_kwh']} kWh vs evaluate {v['v2g_exported_evaluate_kwh']} kWh "
            f"({v['v2g_live_vs_evaluate_pct']} %)"
        )
        print(
            f"  EVs short: live {v['evs_short_live']}, evaluate {v['evs_short_evaluate']}; violation ticks "
            f"import/export {v['violation_ticks_import_or_export']}, nodes {v['node_violation_ticks']}; "
            f"loop latency p99 {v['p99_loop_latency_ms']:.1f} ms"
        )
        return
    with tempfile.TemporaryDirectory(prefix="evdlm-bench-serving-") as tmp:
        base = Path(tmp)
        results["scale"] = run_phase(
            base / "scale", args.stations, args.duration_s, args.interval_s, args.meter_interval_s, []
        )
        fi = args.fault_interval_s
        # feeders at 40 % of their chargers' rating bind before the connection does: the offender
        # overloads its feeder, not the site, so only the per-node correction brings it back
        results["offender"] = run_phase(
            base / "offender", args.fault_stations, 20 * fi, fi, fi / 2, ["--ignore-profiles", "S0001"],
            policy="equal_share", failsafe="tx_default", feeder_share=0.4,
        )  # fmt: skip
        off = results["offender"]
        off["back_under_limit_within_one_cycle"] = off.get("violation_after_flag_s", float("inf")) <= fi
        results["restart"] = run_phase(
            base / "restart", args.fault_stations, 20 * fi, fi, fi / 2, [], kill_at_s=8 * fi
        )
    if args.json:
        print(json.dumps(results))
        return
    s, o, r = results["scale"], results["offender"], results["restart"]
    print(f"scale: {s['stations']} stations ({s['connected_at_end']} connected at end), {s['cycles']} cycles")
    print(
        f"  time to listen {s['time_to_listen_s']} s (process start to /health answering), to the first "
        f"accepted BootNotification {s.get('time_to_first_boot_s')} s"
    )
    print(f"  loop latency p99 {s['p99_loop_latency_ms']:.1f} ms, mean {s['mean_loop_latency_ms']:.1f} ms")
    print(
        f"  messages received {s['messages_received']:.0f}; calls unanswered {s['calls_unanswered']} "
        f"(+{s['calls_in_flight_at_end']} in flight at the end); profiles sent {s['profiles_sent']:.0f}"
    )
    print(
        f"  physical site: max import {s['max_site_import_kw']} / {s['import_limit_kw']} kW, "
        f"violation ticks {s['violation_ticks']} (nodes {s['node_violation_ticks']})"
    )
    print(
        f"  failsafe: {s['requests_before_boot']} requests before a boot was accepted; {s['transactions']} "
        f"transactions, worst delay to a profile in force {s['worst_profile_delay_s']:.2f} s "
        f"(control interval {s['control_interval_s']} s), "
        f"{s['transactions_unprotected_at_end']} never covered"
    )
    print(
        f"offender ({o['stations']} stations, {o['control_interval_s']} s loop, flagged "
        f"{o['offenders_flagged']}): longest violation {o['longest_violation_s']} s (node ticks "
        f"{o['node_violation_ticks']}, site ticks {o['violation_ticks']}), max excess "
        f"{o['max_excess_kw']} kW; "
        f"last violation {o.get('violation_after_flag_s')} s after the flag, back under within one cycle: "
        f"{o['back_under_limit_within_one_cycle']}"
    )
    print(
        f"restart after SIGKILL: {r['transactions_resumed']} of {r['transactions_before_kill']} transactions "
        f"resumed, service back in {r['restart_s']} s; violations {r['violation_ticks']}"
    )


def soak(args: argparse.Namespace) -> None:
    """``--soak MINUTES``: the stations connect at once and run for MINUTES with random disconnects,
    reboots and late MeterValues; the figures the issue asks for (violations, unanswered calls, memory
    growth, p99 loop latency)."""
    extra = ["--chaos-per-h", str(args.chaos_per_h), "--late-meter-share", str(args.late_meter_share)]
    with tempfile.TemporaryDirectory(prefix="evdlm-bench-soak-") as tmp:
        r = run_phase(
            Path(tmp), args.stations, 60.0 * args.soak, args.interval_s, args.meter_interval_s, extra
        )
    if args.json:
        print(json.dumps({"soak": r}))
        return
    print(
        f"soak: {r['stations']} stations, {args.soak:g} min, {r['cycles']} cycles; {r['disconnects']} "
        f"disconnects, {r['reboots']} reboots, {r['late_meter_values']} late MeterValues"
    )
    print(
        f"  violations: {r['controllable_violations']:.0f} controllable (service), "
        f"{r['violation_ticks']} site / {r['node_violation_ticks']} node ticks (simulator); "
        f"{r['uncontrollable_overloads']:.0f} uncontrollable overloads"
    )
    print(
        f"  calls unanswered {r['calls_unanswered']} of {r['calls_sent_by_stations']}; loop latency p99 "
        f"{r['p99_loop_latency_ms']:.1f} ms, mean {r['mean_loop_latency_ms']:.1f} ms"
    )
    print(
        f"  memory {r.get('rss_mib_settled')} -> {r.get('rss_mib_end')} MiB "
        f"({r.get('rss_growth_pct')} % after the first tenth); worst delay to a profile in force "
        f"{r['worst_profile_delay_s']:.2f} s; {r['requests_before_boot']} requests before a boot"
    )


if __name__ == "__main__":
    main()
