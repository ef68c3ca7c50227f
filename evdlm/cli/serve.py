"""``evdlm serve`` and ``evdlm simulate``.

Bad input ends with one line on stderr (``error: ...``) and exit code 2; heavy imports stay inside the
commands so ``evdlm --help`` stays fast.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from evdlm.cli.errors import bad_input

if TYPE_CHECKING:
    from agents.base import Policy
    from envs.config import SiteConfig
    from serving.config import BatteryConfig, ServingConfig

_SIM_BAR = "simulating {percentage:3.0f}%|{bar:30}| {elapsed}<{remaining} {postfix}"
"""tqdm format of ``evdlm simulate``'s progress (a fraction of the replay's wall time)"""


class FailsafeOption(StrEnum):
    max = "max"
    tx_default = "tx_default"


class BatteryMapOption(StrEnum):
    registers = "registers"
    sunspec = "sunspec"


class VersionOption(StrEnum):
    v16 = "1.6"
    v201 = "2.0.1"
    v21 = "2.1"
    mixed = "mixed"


def _parse_start(text: str) -> datetime:
    """An ISO time (UTC where it names no offset)."""
    t = datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def default_serving_config(site_path: Path, site: SiteConfig, secrets: Path | None) -> ServingConfig:
    """A serving config for a bare site: every charger a station of its own (its id, connector 1)."""
    from envs.core import SiteArrays
    from serving.config import ServingConfig, StationConfig
    from stationsim.simulator import station_layout

    layout = station_layout(SiteArrays.from_config(site), None)
    tables: dict[str, dict[int, str]] = {}
    for (sid, k), cid in layout.items():
        tables.setdefault(sid, {})[k] = cid
    return ServingConfig(
        site=site_path,
        stations=tuple(StationConfig(id=sid, connectors=t) for sid, t in sorted(tables.items())),
        meter={"source": "http"},
        require_auth=secrets is not None,
        secrets_file=secrets,
    )


FRAME_LOGGERS = ("ocpp", "websockets")
"""libraries that log every OCPP frame or connection at INFO"""


def quiet_frames(level: str) -> None:
    """Below DEBUG, the libraries' per-frame lines are left out (a site of 6 stations wrote 109 of 133
    log lines as frames in 3 minutes): the service's own INFO lines say what happened."""
    import logging

    if level != "DEBUG":
        for name in FRAME_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def check_listening(url: str, wait_s: float = 15.0) -> None:
    """Raise :class:`OSError` (saying what to do) unless something accepts TCP connections at ``url``
    within ``wait_s`` (a central system started just before, ``evdlm serve ... &``, gets that long)."""
    import socket
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise OSError(f"--csms {url}: expected ws://HOST:PORT or wss://HOST:PORT")
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            socket.create_connection((parts.hostname, port), timeout=3.0).close()
            return
        except OSError as err:
            if time.monotonic() >= deadline:
                why = err.strerror or type(err).__name__
                raise OSError(
                    f"nothing listens at --csms {url} ({why}, waited {wait_s:g} s): start the central "
                    f"system first, e.g. 'evdlm serve --site SITE.yaml --ocpp-port {port}'"
                ) from None
            time.sleep(0.25)


def describe_duration(sim_s: float, speed: float, duration_s: float | None) -> str:
    """``replaying 13.7 h of site time at --speed 60: about 14 min of wall time`` (``sim_s``: first arrival
    to last departure)."""
    wall_s = sim_s / speed if duration_s is None else min(duration_s, sim_s / speed)
    wall = f"{wall_s / 60:.0f} min" if wall_s >= 90 else f"{wall_s:.0f} s"
    limit = "" if duration_s is None else f" (stopped by --duration-s {duration_s:g})"
    return (
        f"replaying {sim_s / 3600:.1f} h of site time at --speed {speed:g}: about {wall} of wall time{limit}"
    )


def battery_option(kind: BatteryMapOption, host: str, port: int, cfg: ServingConfig) -> BatteryConfig:
    """The ``battery`` section ``--battery-port`` stands for: SunSpec, or the simulator's register map
    (``stationsim.battery.SIM_REGISTERS``), polled at most every second and stale within the interval."""
    from serving.config import BatteryConfig
    from stationsim.battery import SIM_REGISTERS

    poll = min(1.0, cfg.control_interval_s / 4)
    out: dict[str, object] = {
        "map": kind.value, "host": host, "port": port, "poll_interval_s": poll,
        "stale_timeout_s": min(5.0, cfg.control_interval_s), "revert_timeout_s": 15,
    }  # fmt: skip
    if kind is BatteryMapOption.registers:
        out["registers"] = SIM_REGISTERS
    return BatteryConfig.model_validate(out)


def policy_site_and_forecast(cfg: ServingConfig, site: SiteConfig, policy: Policy) -> ServingConfig:
    """A learned policy's bundle on this site: a warning when it was trained for another site of the same
    layout, and the live forecast made by its own forecaster
    (:func:`serving.policy_step.with_policy_forecaster`)."""
    import logging

    from serving.policy_step import with_policy_forecaster

    log = logging.getLogger("evdlm.serving")
    matches = getattr(policy, "site_matches", None)
    if matches is not None and not matches(site):
        log.warning(
            "policy %s was trained for site %r; %r has the same layout but other limits or chargers",
            policy.name, getattr(getattr(policy, "meta", None), "site_name", "?"), site.name,
        )  # fmt: skip
    try:
        cfg, note = with_policy_forecaster(cfg, policy)
    except Exception as err:
        raise bad_input(f"policy {policy.name}: its forecaster cannot be used: {err}") from None
    if note is not None:
        log.warning("%s", note)
    return cfg


def register(app: typer.Typer) -> None:
    """Add the serving commands to the root app."""

    @app.command()
    def serve(
        config: Annotated[
            Path | None,
            typer.Option("--config", help="serving YAML (stations, loop, meter, ports, db)"),
        ] = None,
        site: Annotated[
            Path | None, typer.Option("--site", help="site YAML (alone: defaults for everything else)")
        ] = None,
        policy: Annotated[
            str,
            typer.Option(
                help="a registered name (rule_based, static, ...) | model folder | models:/... | runs:/..."
            ),
        ] = "rule_based",
        policy_class: Annotated[
            bool, typer.Option("--policy-class", help="--policy is module:Class: import and build that class")
        ] = False,
        failsafe: Annotated[
            FailsafeOption,
            typer.Option(help="max: ChargePointMaxProfile at the safe share; tx_default: TxDefaultProfile"),
        ] = FailsafeOption.max,
        secrets: Annotated[
            Path | None, typer.Option(help="YAML 'station_id: password' (overrides the config's)")
        ] = None,
        ocpp_port: Annotated[int | None, typer.Option(help="override the OCPP port")] = None,
        http_port: Annotated[int | None, typer.Option(help="override the operator API port")] = None,
        dashboard_port: Annotated[
            int | None, typer.Option(help="serve the operator dashboard on this port (same auth)")
        ] = None,
        database_url: Annotated[str | None, typer.Option(help="override the database URL")] = None,
        forecaster: Annotated[
            Path | None,
            typer.Option(help="fitted forecaster from 'evdlm forecast fit' (overrides forecast.model)"),
        ] = None,
        allow_fallback: Annotated[
            bool,
            typer.Option(
                "--allow-fallback",
                help="start on the rule-based fallback when the policy cannot be loaded (default: exit 2)",
            ),
        ] = False,
        time_scale: Annotated[
            float | None,
            typer.Option(help="stations' seconds per wall second: N against 'evdlm simulate --speed N'"),
        ] = None,
        log_level: Annotated[
            str, typer.Option(help="DEBUG, INFO, WARNING (every OCPP frame is logged at DEBUG only)")
        ] = "INFO",
        tracking_uri: Annotated[
            str | None,
            typer.Option(
                help="MLflow store of models:/ policies (default: MLFLOW_TRACKING_URI, else .evdlm/mlflow.db)"
            ),
        ] = None,
        battery_port: Annotated[
            int | None,
            typer.Option(min=1, max=65535, help="drive the site battery over Modbus TCP at this port"),
        ] = None,
        battery_map: Annotated[
            BatteryMapOption,
            typer.Option(help="with --battery-port: SunSpec, or the simulator's register map"),
        ] = BatteryMapOption.sunspec,
        battery_host: Annotated[
            str, typer.Option(help="with --battery-port: the battery's address")
        ] = "127.0.0.1",
    ) -> None:
        """Run the live DLM: OCPP 1.6J/2.0.1 central system, control loop, operator API."""
        import asyncio
        import logging
        import signal

        from pydantic import ValidationError

        from envs.config import ConfigError, format_validation_error, load_site
        from evdlm.tracking_uri import use_tracking_store
        from serving.config import check_auth, load_operator_token, load_passwords, load_serving_config
        from serving.gc_pause import freeze_start_up
        from serving.service import PolicyLoadError, Service, check_site_matches, load_policy_strict

        level = log_level.upper()
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        quiet_frames(level)
        use_tracking_store(tracking_uri)
        if config is None and site is None:
            raise bad_input("give --config SERVING.yaml or --site SITE.yaml")
        try:
            if config is not None:
                cfg = load_serving_config(config)
                site_cfg = load_site(site or cfg.site)
            else:
                assert site is not None
                site_cfg = load_site(site)
                cfg = default_serving_config(site, site_cfg, secrets)
            update: dict[str, object] = {}
            if secrets is not None:
                update["secrets_file"] = secrets
            if ocpp_port is not None:
                update["ocpp_port"] = ocpp_port
            if http_port is not None:
                update["http_port"] = http_port
            if dashboard_port is not None:
                update["dashboard_port"] = dashboard_port
            if database_url is not None:
                update["database_url"] = database_url
            if time_scale is not None:
                update["time_scale"] = time_scale
            if battery_port is not None:
                update["battery"] = battery_option(battery_map, battery_host, battery_port, cfg)
            if forecaster is not None:
                from serving.config import ForecastConfig

                base = cfg.forecast if cfg.forecast is not None else ForecastConfig()
                update["forecast"] = base.model_copy(update={"model": forecaster})
            cfg = cfg.model_copy(update=update)
            # revalidate: the window length depends on the forecast and the control interval
            cfg = type(cfg).model_validate(cfg.model_dump(by_alias=True))
            check_site_matches(cfg, site_cfg)  # stations and chargers, a battery link without a battery
            passwords = load_passwords(cfg)
            check_auth(cfg, passwords)
            token = load_operator_token(cfg)
        except (ConfigError, OSError) as err:
            raise bad_input(str(err)) from None
        except ValidationError as err:
            raise bad_input(format_validation_error(err, str(config or site))) from None
        if not cfg.require_auth:
            logging.getLogger("evdlm.serving").warning(
                "OCPP authentication is OFF (no secrets): any configured station id can connect"
            )
        why: str | None = None
        try:
            pol: Policy | None = load_policy_strict(policy, custom_class=policy_class)
        except PolicyLoadError as err:
            if not (allow_fallback or cfg.start_on_fallback):
                raise bad_input(
                    f"{err} (to start on the rule-based fallback anyway: --allow-fallback or "
                    "start_on_fallback: true)"
                ) from None
            logging.getLogger("evdlm.serving").error("%s; starting on the fallback as allowed", err)
            pol, why = None, "load_failed"
        check_site = getattr(pol, "check_site", None)  # a learned policy knows the site it was trained for
        if check_site is not None:
            from envs.core import SiteArrays

            try:
                check_site(SiteArrays.from_config(site_cfg))
            except ValueError as err:  # SiteMismatchError: refuse to start rather than serve the fallback
                raise bad_input(f"--policy {policy}: {err}") from None
        if pol is not None:
            cfg = policy_site_and_forecast(cfg, site_cfg, pol)

        async def main() -> None:
            try:
                svc = Service(cfg, site_cfg, pol, passwords, policy_error=why, operator_token=token,
                              failsafe_mode=failsafe.value)  # fmt: skip
            except (ConfigError, OSError) as err:
                raise bad_input(str(err)) from None
            await svc.start()
            freeze_start_up()  # start-up's objects out of every later collection's way (serving.gc_pause)
            typer.echo(
                f"evdlm serving {site_cfg.name}: OCPP ws{'s' if cfg.tls else ''}://{cfg.ocpp_host}:{svc.ocpp_port}/"
                f"<station>, API http://{cfg.http_host}:{svc.http_port}/api/state, policy "
                f"{pol.name if pol else 'fallback only (' + str(why) + ')'}"
            )
            grid_s = getattr(svc.controller.policy, "step_s", None)
            if grid_s is not None and svc.controller.policy is not pol:  # served on its own step
                typer.echo(
                    f"policy decides every {grid_s / 60:g} min (its training step), early on arrivals and "
                    f"departures; its decision is re-projected every {cfg.control_interval_s:g} s"
                )
            if svc.forecast is not None:
                fc = svc.forecast
                model = "model" if fc.model is not None else f"persistence ({fc.fallback_reason})"
                sources = [("csv", fc.prices.has_csv), ("time-of-use", fc.prices.has_time_of_use)]
                prices = " > ".join([name for name, on in sources if on] + ["flat"])
                step_min = fc.step.total_seconds() / 60
                typer.echo(
                    f"forecast: {model}, {fc.horizon_steps} x {step_min:g} min ahead, refreshed every "
                    f"{fc.settings.refresh_every_s:g} s; prices: {prices}"
                )
            if cfg.dashboard_port is not None:
                typer.echo(f"dashboard http://{cfg.http_host}:{svc.dashboard_port}/dashboard/")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            await svc.stop()

        asyncio.run(main())

    @app.command()
    def secrets(
        config: Annotated[Path, typer.Option("--config", help="serving YAML whose secrets_file to create")],
        operator_token: Annotated[
            bool, typer.Option("--operator-token/--no-operator-token", help="also an operator API token")
        ] = True,
    ) -> None:
        """Create the serving YAML's secrets file: a random password per station (and an operator token),
        readable by the owner only. An existing file is never overwritten."""
        import os
        import secrets as random_secrets

        from envs.config import ConfigError
        from serving.config import load_serving_config

        try:
            cfg = load_serving_config(config)
        except ConfigError as err:
            raise bad_input(err) from None
        path = None if cfg.secrets_file is None else Path(os.path.normpath(cfg.secrets_file))
        if path is None:
            raise bad_input(f"{config}: no secrets_file to create (set one, or use --secrets with serve)")
        if path.exists():
            raise bad_input(f"{path}: exists; not overwritten (delete it to make new passwords)")
        lines = [f"{st.id}: {random_secrets.token_urlsafe(18)}" for st in cfg.stations]
        if operator_token:
            lines.append(f"operator_token: {random_secrets.token_urlsafe(24)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        stations = ", ".join(st.id for st in cfg.stations)
        typer.echo(
            f"wrote {path} (owner-only): passwords for {stations}"
            + (", an operator token" if operator_token else "")
        )
        typer.echo("give each station its password (HTTP Basic, user = station id)")

    @app.command()
    def simulate(
        scenario: Annotated[Path, typer.Option("--scenario", help="scenario folder to replay")],
        csms: Annotated[str, typer.Option("--csms", help="central system URL, e.g. ws://127.0.0.1:9000")],
        speed: Annotated[float, typer.Option(min=0.001, help="simulated seconds per wall second")] = 60.0,
        config: Annotated[
            Path | None, typer.Option("--config", help="serving YAML: station layout and secrets")
        ] = None,
        secrets: Annotated[Path | None, typer.Option(help="YAML 'station_id: password'")] = None,
        meter_url: Annotated[
            str | None, typer.Option(help="POST the site meter here, e.g. http://127.0.0.1:8080/api/meter")
        ] = None,
        version: Annotated[VersionOption, typer.Option(help="stations' OCPP version")] = VersionOption.v16,
        meter_interval_s: Annotated[float, typer.Option(help="wall s between MeterValues")] = 10.0,
        duration_s: Annotated[float | None, typer.Option(help="stop after this many wall seconds")] = None,
        ignore_profiles: Annotated[str, typer.Option(help="stations that ignore profiles, a,b")] = "",
        garbage: Annotated[str, typer.Option(help="stations sending malformed frames")] = "",
        wait_s: Annotated[
            float, typer.Option(help="wall seconds to wait for the central system to listen")
        ] = 15.0,
        drop_off: Annotated[
            str, typer.Option(help="STATION:AT_S:FOR_S,... stations that disconnect for a while")
        ] = "",
        chaos_per_h: Annotated[
            float, typer.Option(help="soak: random disconnects and reboots per station per wall hour")
        ] = 0.0,
        late_meter_share: Annotated[float, typer.Option(help="soak: share of MeterValues sent late")] = 0.0,
        seed: Annotated[int, typer.Option(help="seed of the soak's randomness")] = 0,
        json_out: Annotated[bool, typer.Option("--json", help="print the report as one JSON object")] = False,
        start_at: Annotated[
            str | None, typer.Option(help="ISO time at which simulated time starts (default: after warm-up)")
        ] = None,
        no_v2x: Annotated[str, typer.Option(help="2.1 stations that report no V2X operation mode")] = "",
        battery_port: Annotated[
            int | None,
            typer.Option(
                min=0,
                max=65535,
                help="serve the site's battery (site YAML 'battery') over Modbus TCP on this port (0: any)",
            ),
        ] = None,
        battery_map: Annotated[
            BatteryMapOption,
            typer.Option(help="the simulated battery's registers: SunSpec or the 'registers' map"),
        ] = BatteryMapOption.sunspec,
        battery_host: Annotated[
            str, typer.Option(help="address the Modbus battery listens on")
        ] = "127.0.0.1",
        trace_csv: Annotated[
            str | None, typer.Option(help="write the physical site's every tick here (CSV) at the end")
        ] = None,
        schema_check: Annotated[
            bool, typer.Option(help="stations check the central system's requests against the OCPP schemas")
        ] = True,
    ) -> None:
        """Replay a scenario with simulated OCPP stations against a running central system; with
        --battery-port, the site battery is served over Modbus TCP too (docs/serving.md, the site battery)."""
        import asyncio
        import json
        import os
        import sys

        from tqdm import tqdm

        from envs.config import ConfigError
        from envs.scenario import load_scenario
        from serving.config import OPERATOR_TOKEN_ENV, connector_map, load_passwords
        from serving.config import load_serving_config as load_cfg
        from stationsim.battery import BatteryServer, SimBattery
        from stationsim.simulator import (
            CentralSystemUnreachable,
            SimOptions,
            SimProgress,
            SimReport,
            SiteSimulator,
        )

        def split(text: str) -> frozenset[str]:
            return frozenset(s.strip() for s in text.split(",") if s.strip())

        try:
            sc = load_scenario(scenario)
            mapping = None
            passwords: dict[str, str] = {}
            if config is not None:
                cfg: ServingConfig = load_cfg(config)
                mapping = connector_map(cfg, sc.site)
                if secrets is not None:
                    cfg = cfg.model_copy(update={"secrets_file": secrets})
                passwords = load_passwords(cfg)
            elif secrets is not None:
                cfg = default_serving_config(scenario / "site.yaml", sc.site, secrets)
                passwords = load_passwords(cfg)
            drops: dict[str, tuple[float, float]] = {}
            for item in split(drop_off):
                sid, at, span = item.split(":")
                drops[sid] = (float(at), float(span))
            if battery_port is not None and sc.site.battery is None:
                raise ValueError("--battery-port: the scenario's site.yaml has no 'battery' to serve")
            check_listening(csms, wait_s)
        except (ConfigError, OSError, ValueError) as err:
            raise bad_input(str(err)) from None
        opts = SimOptions(
            speed=speed,
            tick_s=min(1.0, max(0.05, meter_interval_s / 10)),
            meter_interval_s=meter_interval_s,
            version=version.value,
            ignore_profiles=split(ignore_profiles),
            garbage=split(garbage),
            drop_off=drops,
            meter_push_url=meter_url,
            operator_token=os.environ.get(OPERATOR_TOKEN_ENV),
            passwords=passwords,
            duration_s=duration_s,
            start_at=None if start_at is None else _parse_start(start_at),
            no_v2x=split(no_v2x),
            chaos_per_h=chaos_per_h,
            late_meter_share=late_meter_share,
            seed=seed,
            trace_csv=trace_csv,
            check_schemas=schema_check,
        )
        sim = SiteSimulator(sc, csms, opts, mapping)
        if not json_out:
            sim_s = (sim.last_departure - sim.sim_start).total_seconds()
            typer.echo(describe_duration(sim_s, speed, duration_s), err=True)
        with tqdm(total=1.0, unit="", disable=json_out, bar_format=_SIM_BAR, file=sys.stderr) as bar:

            def show(p: SimProgress) -> None:
                bar.n = p.wall_s / max(p.end_wall_s, 1e-9)
                when = f"{p.sim_time:%Y-%m-%d %H:%M}"
                bar.set_postfix_str(f"{when}  {p.delivered_kwh:.1f} kWh  violation ticks {p.violation_ticks}")

            async def run() -> SimReport:
                if battery_port is None or sc.site.battery is None:
                    return await sim.run(progress=show)
                sim.battery = SimBattery.from_site(sc.site.battery, speed)
                server = BatteryServer(
                    sim.battery,
                    "sunspec" if battery_map is BatteryMapOption.sunspec else "registers",
                    battery_host,
                    battery_port,
                )
                await server.start()
                typer.echo(
                    f"Modbus battery ({battery_map.value} map) on {battery_host}:{server.port}", err=True
                )
                try:
                    return await sim.run(progress=show)
                finally:
                    await server.stop()

            try:
                report = asyncio.run(run())
            except CentralSystemUnreachable as err:
                bar.close()
                raise bad_input(err) from None
        data = report.to_json()
        if json_out:
            typer.echo(json.dumps(data))
            return
        asked, got = report.energy_asked_kwh, report.energy_delivered_kwh
        typer.echo(f"stations {report.stations}, connected at the end {report.connected_at_end}")
        typer.echo(f"energy delivered {sum(got.values()):.1f} of {sum(asked.values()):.1f} kWh asked")
        typer.echo(
            f"site: max import {report.max_site_import_kw:.1f} kW (limit {report.import_limit_kw:.1f}), "
            f"violation ticks {report.violation_ticks} (node {report.node_violation_ticks}), "
            f"max excess {report.max_excess_kw:.2f} kW"
        )
        if report.battery_soc_end is not None:
            typer.echo(
                f"battery: charged {report.battery_charged_kwh:.2f} kWh, discharged "
                f"{report.battery_discharged_kwh:.2f} kWh, "
                f"SoC at the end {100 * report.battery_soc_end:.1f} %"
            )
        typer.echo(
            f"calls {report.calls_sent} sent, {report.calls_answered} answered, "
            f"{report.calls_failed} failed; "
            f"{report.messages_dropped_offline} dropped while offline; {report.profiles_received} profiles"
        )
