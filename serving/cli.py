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

from evdlm.cli_errors import bad_input

if TYPE_CHECKING:
    from envs.config import SiteConfig
    from serving.config import ServingConfig

_SIM_BAR = "simulating {percentage:3.0f}%|{bar:30}| {elapsed}<{remaining} {postfix}"
"""tqdm format of ``evdlm simulate``'s progress (a fraction of the replay's wall time)"""


class FailsafeOption(StrEnum):
    max = "max"
    tx_default = "tx_default"


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
    """A serving config for a bare site: one station per ``<station>-<k>`` group (else per charger)."""
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
        log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
    ) -> None:
        """Run the live DLM: OCPP 1.6J/2.0.1 central system, control loop, operator API."""
        import asyncio
        import logging
        import signal

        from pydantic import ValidationError

        from envs.config import ConfigError, format_validation_error, load_site
        from serving.config import load_operator_token, load_passwords, load_serving_config
        from serving.service import Service, load_policy

        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
            if forecaster is not None:
                from serving.config import ForecastConfig

                base = cfg.forecast if cfg.forecast is not None else ForecastConfig()
                update["forecast"] = base.model_copy(update={"model": forecaster})
            cfg = cfg.model_copy(update=update)
            # revalidate: the window length depends on the forecast and the control interval
            cfg = type(cfg).model_validate(cfg.model_dump(by_alias=True))
            passwords = load_passwords(cfg)
            token = load_operator_token(cfg)
        except (ConfigError, OSError) as err:
            raise bad_input(str(err)) from None
        except ValidationError as err:
            raise bad_input(format_validation_error(err, str(config or site))) from None
        if not cfg.require_auth:
            logging.getLogger("evdlm.serving").warning(
                "OCPP authentication is OFF (no secrets): any configured station id can connect"
            )
        pol, why = load_policy(policy, custom_class=policy_class)

        async def main() -> None:
            try:
                svc = Service(cfg, site_cfg, pol, passwords, policy_error=why, operator_token=token,
                              failsafe_mode=failsafe.value)  # fmt: skip
            except (ConfigError, OSError) as err:
                raise bad_input(str(err)) from None
            await svc.start()
            typer.echo(
                f"evdlm serving {site_cfg.name}: OCPP ws{'s' if cfg.tls else ''}://{cfg.ocpp_host}:{svc.ocpp_port}/"
                f"<station>, API http://{cfg.http_host}:{svc.http_port}/api/state, policy "
                f"{pol.name if pol else 'fallback only (' + str(why) + ')'}"
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
        drop_off: Annotated[
            str, typer.Option(help="STATION:AT_S:FOR_S,... stations that disconnect for a while")
        ] = "",
        json_out: Annotated[bool, typer.Option("--json", help="print the report as one JSON object")] = False,
        start_at: Annotated[
            str | None, typer.Option(help="ISO time at which simulated time starts (default: after warm-up)")
        ] = None,
        no_v2x: Annotated[str, typer.Option(help="2.1 stations that report no V2X operation mode")] = "",
    ) -> None:
        """Replay a scenario with simulated OCPP stations against a running central system."""
        import asyncio
        import json
        import os
        import sys

        from tqdm import tqdm

        from envs.config import ConfigError
        from envs.scenario import load_scenario
        from serving.config import OPERATOR_TOKEN_ENV, connector_map, load_passwords
        from serving.config import load_serving_config as load_cfg
        from stationsim.simulator import SimOptions, SimProgress, SiteSimulator

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
        )
        sim = SiteSimulator(sc, csms, opts, mapping)
        with tqdm(total=1.0, unit="", disable=json_out, bar_format=_SIM_BAR, file=sys.stderr) as bar:

            def show(p: SimProgress) -> None:
                bar.n = p.wall_s / max(p.end_wall_s, 1e-9)
                when = f"{p.sim_time:%Y-%m-%d %H:%M}"
                bar.set_postfix_str(f"{when}  {p.delivered_kwh:.1f} kWh  violation ticks {p.violation_ticks}")

            report = asyncio.run(sim.run(progress=show))
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
        typer.echo(
            f"calls {report.calls_sent} sent, {report.calls_answered} answered, "
            f"{report.calls_failed} failed; "
            f"{report.messages_dropped_offline} dropped while offline; {report.profiles_received} profiles"
        )
