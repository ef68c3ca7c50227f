"""Typed configuration of the live service (``evdlm serve``): the site file, the OCPP stations and how
their connectors map to the site's chargers, the control loop's timing, the site meter, the database and the
listening addresses. Station passwords are never in the YAML: they come from a secrets file
(``station_id: password`` per line, YAML) or from the environment (``EVDLM_OCPP_PASSWORD_<STATION_ID>``,
the id upper-cased with non-alphanumerics as ``_``). Connector mapping: a station's ``connectors`` table
maps an OCPP connector id (1.6) or EVSE id (2.0.1) to a charger id of the site. Without a table, a
configured station ``S`` serves the charger whose id is ``S`` (connector 1) and the chargers ``S-<k>``
(connector ``k``): the station id is never split, only a configured station's own id is looked for
(``CP-00001`` is a station of its own, connector 1). A charger that two stations would claim, or two
chargers one connector, is an error naming them."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from envs.config import ConfigError, SiteConfig, format_validation_error, read_yaml

PASSWORD_ENV_PREFIX = "EVDLM_OCPP_PASSWORD_"
MAX_WINDOW_STEPS = 100_000
"""most control intervals a snapshot's forecast window may hold (horizon / control interval)"""
OPERATOR_TOKEN_ENV = "EVDLM_OPERATOR_TOKEN"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StationConfig(_Frozen):
    """One OCPP charging station; ``connectors`` maps connector/EVSE id -> site charger id."""

    id: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9_.:\-]+$",
        description="OCPP identity (last websocket path segment)",
    )
    connectors: dict[int, str] = Field(
        default_factory=dict,
        description="connector (1.6) / EVSE (2.0.1) id -> site charger id; empty: charger `<id>` is "
        "connector 1 and chargers `<id>-<k>` connector k",
    )


class MeterConfig(_Frozen):
    """Where the site meter (net grid import, and PV where present) is read.

    ``station``: MeterValues on connector 0 (1.6) / EVSE 0 (2.0.1) of ``station_id``
    (``Power.Active.Import`` minus ``Power.Active.Export``, W). ``http``: readings POSTed to the operator
    API at ``/api/meter``. ``modbus``: holding registers of a Modbus TCP energy meter, IEEE-754 float32
    big-endian, in W times ``scale``. ``none``: no site meter; the controller estimates import from the
    chargers' own measurements plus ``assumed_base_load_kw`` (and counts the meter as fresh).
    """

    source: Literal["station", "http", "modbus", "none"] = Field(
        default="none",
        description="station: MeterValues of connector/EVSE 0 of `station_id`; http: POST /api/meter; "
        "modbus: float32 holding registers; none: chargers' own meters + `assumed_base_load_kw`",
    )
    station_id: str | None = Field(
        default=None, description="the station whose connector 0 is the site meter"
    )
    host: str = Field(default="127.0.0.1", description="Modbus TCP host")
    port: int = Field(default=502, gt=0, lt=65536, description="Modbus TCP port")
    unit_id: int = Field(default=1, ge=0, le=247, description="Modbus unit id")
    import_register: int = Field(default=0, ge=0, description="register of net import power (float32, W)")
    pv_register: int | None = Field(default=None, ge=0, description="register of PV power (float32, W)")
    scale: float = Field(default=1.0, gt=0, description="multiplier turning the register value into W")
    poll_interval_s: float = Field(default=1.0, gt=0, description="seconds between Modbus reads")

    @model_validator(mode="after")
    def _check(self) -> MeterConfig:
        if self.source == "station" and not self.station_id:
            raise ValueError("meter source 'station' needs station_id")
        return self


class RegisterConfig(_Frozen):
    """One value in holding registers of a battery: raw * ``scale`` is the value in the unit it is for."""

    address: int = Field(ge=0, le=65535)
    type: Literal["uint16", "int16", "uint32", "int32", "float32"] = Field(
        default="int16", description="register type: the signedness and width of the raw value"
    )
    scale: float = Field(default=1.0, description="multiplier from the raw value to %, W or s")
    word_order: Literal["big", "little"] = Field(default="big", description="32-bit types: high word first")

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: float) -> float:
        if not (math.isfinite(value) and value != 0):
            raise ValueError("scale must be a finite non-zero number")
        return value


class BatteryRegisters(_Frozen):
    """The register map of a battery that does not speak SunSpec (``battery.registers``)."""

    soc_pct: RegisterConfig = Field(description="state of charge, % (after scale)")
    power_w: RegisterConfig = Field(description="battery power, W (after scale)")
    setpoint_w: RegisterConfig = Field(description="charge/discharge setpoint, W (after scale)")
    power_sign: Literal[1, -1] = Field(default=1, description="1: the device reports charging positive")
    setpoint_sign: Literal[1, -1] = Field(default=1, description="1: a positive setpoint charges")
    revert_s: RegisterConfig | None = Field(
        default=None, description="the device's setpoint watchdog, s, written at connect (revert_timeout_s)"
    )


class BatteryConfig(_Frozen):
    """The site battery over Modbus TCP (``battery:`` in the serving YAML).

    ``map: sunspec`` discovers SunSpec models 124 and 101-103/111-113 from ``sunspec_base``;
    ``map: registers`` uses ``registers``. The battery is read every ``poll_interval_s``; a reading older
    than ``stale_timeout_s`` (or a lost link) makes it absent for the policy and the projection, and it
    is commanded idle where it can still be reached. The battery's size and power limits are the site's
    (``battery:`` in the site YAML). See docs/serving.md, "The site battery".
    """

    map: Literal["sunspec", "registers"] = "registers"
    host: str = "127.0.0.1"
    port: int = Field(default=502, gt=0, lt=65536)
    unit_id: int = Field(default=1, ge=0, le=247)
    sunspec_base: int | None = Field(
        default=None, ge=0, le=65535, description="SunSpec base register (None: try 40000, 0, 50000)"
    )
    registers: BatteryRegisters | None = None
    poll_interval_s: float = Field(default=1.0, gt=0, description="seconds between readings")
    stale_timeout_s: float = Field(default=5.0, gt=0, description="a reading older than this is stale")
    timeout_s: float = Field(default=1.0, gt=0, description="wait for one Modbus answer")
    revert_timeout_s: int | None = Field(
        default=None, gt=0, le=65535, description="written to the device's setpoint watchdog at connect"
    )

    @model_validator(mode="after")
    def _check(self) -> BatteryConfig:
        if self.map == "registers" and self.registers is None:
            raise ValueError(
                "battery map 'registers' needs a 'registers' table (soc_pct, power_w, setpoint_w)"
            )
        if self.map == "sunspec" and self.registers is not None:
            raise ValueError("battery map 'sunspec' takes no 'registers' table (the device lists its models)")
        if self.stale_timeout_s <= self.poll_interval_s:
            raise ValueError(
                f"stale_timeout_s ({self.stale_timeout_s}) must exceed "
                f"poll_interval_s ({self.poll_interval_s})"
            )
        return self


def _parse_duration(value: object) -> object:
    """``"15min"``, ``"1h"``, ``"PT15M"`` or seconds -> :class:`timedelta` (pydantic validates the rest)."""
    if isinstance(value, str):
        import pandas as pd

        try:
            return pd.Timedelta(value).to_pytimedelta()
        except ValueError:
            return value  # pydantic reports it
    return value


class ForecastConfig(_Frozen):
    """The base-load and PV forecast in the live snapshot (``forecast:`` in the serving YAML).

    ``model`` is a fitted forecaster saved by ``evdlm forecast fit`` (joblib); without one (or while it
    cannot forecast yet) the window is a persistence of the current measurement. The service keeps a
    rolling history of the measured base load and PV on a grid of ``step`` (the model's step when a model
    is given), refreshes the model's forecast every ``refresh_every_s`` off the control loop, and each
    cycle reads the cached forecast shifted to now. The window covers ``horizon_steps * step``, on the
    control loop's grid (one value per ``control_interval_s``, the snapshot's ``dt_h``).
    """

    model: Path | None = Field(default=None, description="fitted forecaster (joblib), relative to the YAML")
    horizon_steps: int = Field(default=96, gt=0, description="forecast horizon in steps of `step`")
    step: timedelta | None = Field(default=None, description="history/forecast step (default: the model's)")
    refresh_every_s: float = Field(default=900.0, gt=0, description="seconds between model forecasts")
    min_history_steps: int = Field(
        default=4, ge=1, description="steps of measured history before the model is used (else persistence)"
    )
    history_days: float | None = Field(
        default=None, gt=0, description="rolling history kept, days (default: what the model reads, >= 1)"
    )

    @field_validator("step", mode="before")
    @classmethod
    def _step(cls, value: object) -> object:
        return _parse_duration(value)

    @model_validator(mode="after")
    def _check(self) -> ForecastConfig:
        if self.step is not None:
            if self.step <= timedelta(0) or timedelta(days=1) % self.step != timedelta(0):
                raise ValueError(f"step {self.step} must be positive and divide a day")
        return self

    @property
    def step_or_default(self) -> timedelta:
        return self.step if self.step is not None else timedelta(minutes=15)

    @property
    def horizon(self) -> timedelta:
        return self.horizon_steps * self.step_or_default


class TimeOfUsePeriod(_Frozen):
    """One period of a daily time-of-use table: the prices from local time ``from`` to the next period."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    start: str = Field(alias="from", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="local HH:MM")
    import_price_per_kwh: float = Field(description="import price of the period, per kWh")
    export_price_per_kwh: float = Field(description="export price of the period, per kWh")

    @property
    def minute_of_day(self) -> int:
        hh, mm = self.start.split(":")
        return int(hh) * 60 + int(mm)


class PricesConfig(_Frozen):
    """The tariff the policies see now and over the horizon (``prices:`` in the serving YAML).

    ``csv``: columns ``timestamp`` (ISO 8601 with a UTC offset), ``import_price_per_kwh`` and
    ``export_price_per_kwh`` (a scenario's ``timeseries.csv`` works); each row holds from its timestamp to
    the next. ``time_of_use``: a daily table in the site's local time (``timezone`` overrides it), the
    last period running through midnight into the first. Where the CSV does not cover a time the table
    applies, else the flat ``import_price_per_kwh`` / ``export_price_per_kwh`` of the serving config.
    """

    csv: Path | None = Field(
        default=None, description="timestamp (with offset), import_price_per_kwh, export_price_per_kwh"
    )
    time_of_use: tuple[TimeOfUsePeriod, ...] = Field(
        default=(), description="daily periods in local time (`from`, prices); the last runs into the first"
    )
    timezone: str | None = Field(default=None, description="time zone of the table (default: the site's)")

    @model_validator(mode="after")
    def _check(self) -> PricesConfig:
        if self.csv is None and not self.time_of_use:
            raise ValueError("prices: give csv, time_of_use or both")
        starts = [p.minute_of_day for p in self.time_of_use]
        if len(set(starts)) != len(starts):
            raise ValueError("time_of_use: two periods start at the same time")
        if self.timezone is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {self.timezone!r}") from None
        return self


class TLSConfig(_Frozen):
    """OCPP security profile 2: TLS with the server certificate (PEM) and key."""

    cert_file: Path = Field(description="server certificate chain, PEM")
    key_file: Path = Field(description="its private key, PEM")


class ServingConfig(_Frozen):
    """Everything ``evdlm serve`` needs besides the policy and the secrets."""

    site: Path = Field(description="site YAML, relative to the serving YAML")
    stations: tuple[StationConfig, ...] = Field(
        min_length=1, description="the OCPP stations and their connectors (below)"
    )
    control_interval_s: float = Field(default=10.0, gt=0, description="control loop period, wall seconds")
    cycle_phase_s: float | None = Field(
        default=None,
        ge=0,
        description="run each cycle this many s after a multiple of control_interval_s on the UTC clock "
        "(on a tariff's or a scenario's grid); none: from the start",
    )
    time_scale: float = Field(
        default=1.0,
        gt=0,
        description="stations' seconds per wall second: 1 on a site, N against 'evdlm simulate --speed N'",
    )
    policy_budget_s: float = Field(default=0.5, gt=0, description="time budget of the policy per cycle")
    meter: MeterConfig = Field(default=MeterConfig(), description="where the site meter is read (below)")
    meter_timeout_s: float = Field(default=30.0, gt=0, description="site meter older than this is stale")
    battery: BatteryConfig | None = Field(default=None, description="the site battery over Modbus TCP")
    station_meter_timeout_s: float = Field(
        default=60.0, gt=0, description="a charger measurement older than this counts as unknown"
    )
    clock_tolerance_s: float | None = Field(
        default=0.5, ge=0, description="a reading's own time narrows when it was taken, the clocks agreeing "
        "within this, s; null: their times are not trusted (serving.taken)")  # fmt: skip
    assumed_base_load_kw: float = Field(
        default=0.0, ge=0, description="non-EV load assumed when there is no site meter, kW"
    )
    failsafe_base_load_kw: float = Field(
        default=0.0, ge=0, description="non-EV load reserved when computing the static safe share, kW"
    )
    failsafe_slot_s: int = Field(
        default=3600, ge=60, le=86400,
        description="longest turn of the failsafe rotation, s (chargers the static share starves take "
        "turns at their minimum current; rounded down to a divisor of a day)",
    )  # fmt: skip
    failsafe_guard_s: int = Field(
        default=60, ge=0, le=3600,
        description="at a change of rotation slot, the old slot's chargers stop this long before the new "
        "ones start, s (covers station clocks that differ by less)",
    )  # fmt: skip
    arrival_reserve_s: float = Field(
        default=2.5, ge=0,
        description="a cycle this soon after a transaction started (and within one control interval) keeps "
        "every idle charger's failsafe share free (transactions starting together draw it before the next "
        "cycle); 0: only for an idle charger whose status says an EV is plugged in",
    )  # fmt: skip
    departure_floor: bool = Field(
        default=True,
        description="the projection charges an EV that must charge now to reach its need by its departure",
    )
    trigger_meter_values: bool = Field(
        default=True,
        description="once a charger's new limit is accepted, ask its station for MeterValues at once "
        "(TriggerMessage): the base load under the new limit is then known at the next cycle, not after "
        "the station's own sample interval; a station that refuses is not asked again on that connection",
    )  # fmt: skip
    deadband_a: float = Field(default=0.5, ge=0, description="resend an A profile only beyond this change")
    deadband_w: float = Field(default=300.0, ge=0, description="resend a W profile only beyond this change")
    schedule_periods: int = Field(
        default=8, ge=1, le=96,
        description="periods of each TxProfile's schedule (1: a single limit, as before schedules)",
    )  # fmt: skip
    schedule_period_s: float = Field(
        default=900.0,
        gt=0,
        description="length of one schedule period, wall s as sent (the plan's step; x time_scale in energy)",
    )
    offender_tolerance_kw: float = Field(
        default=0.5, ge=0, description="drawing more than limit + this (and +10 %) flags a station"
    )
    meter_fault_rel_tol: float = Field(
        default=0.1,
        ge=0,
        description="a charger reading above rating x (1 + this) + meter_fault_abs_kw is a fault",
    )
    meter_fault_abs_kw: float = Field(
        default=1.0, ge=0, description="absolute tolerance of the charger meter plausibility checks, kW"
    )
    site_meter_fault_factor: float = Field(
        default=2.0,
        gt=1,
        description="a site reading beyond this x (import limit + charger ratings), either way, is a fault",
    )
    default_session_energy_kwh: float = Field(
        default=20.0, gt=0, description="energy assumed asked by an EV that does not say (OCPP 1.6)"
    )
    default_dwell_h: float = Field(default=8.0, gt=0, description="stay assumed when no departure is known")
    needs_wait_s: float = Field(
        default=2.0,
        ge=0,
        description="an OCPP 2.1 transaction is held at its failsafe share (no EV of the decision) until "
        "its EV's NotifyEVChargingNeeds arrives, then the step is decided again; after this long, on the "
        "defaults",
    )
    import_price_per_kwh: float = Field(default=0.25, description="flat import price where no tariff applies")
    export_price_per_kwh: float = Field(default=0.05, description="flat export price where no tariff applies")
    forecast_horizon_steps: int = Field(
        default=96, gt=0, description="window length in control intervals without forecast/prices"
    )
    forecast: ForecastConfig | None = Field(default=None, description="base load / PV forecast (below)")
    prices: PricesConfig | None = Field(default=None, description="the tariff over time (below)")
    heartbeat_interval_s: int = Field(default=300, gt=0, description="heartbeat interval told at boot, s")
    ocpp_host: str = Field(default="127.0.0.1", description="OCPP websocket listening address")
    ocpp_port: int = Field(default=9000, ge=0, lt=65536, description="OCPP port (0: any free port)")
    http_host: str = Field(default="127.0.0.1", description="operator API (and dashboard) address")
    http_port: int = Field(default=8080, ge=0, lt=65536, description="operator API port (0: any free port)")
    dashboard_port: int | None = Field(
        default=None, ge=0, lt=65536, description="operator dashboard on http_host (None: off)"
    )
    tls: TLSConfig | None = Field(default=None, description="security profile 2: TLS (below); None: plain ws")
    require_auth: bool = Field(default=True, description="OCPP security profile >= 1 (HTTP Basic auth)")
    secrets_file: Path | None = Field(default=None, description="YAML 'station_id: password' (not in git)")
    database_url: str = Field(
        default="sqlite:///.evdlm/serving.db",
        description="SQLAlchemy URL (SQLite WAL, or postgresql+psycopg)",
    )
    response_timeout_s: float = Field(default=10.0, gt=0, description="wait for a station's answer")
    max_frame_bytes: int = Field(
        default=2**18,
        ge=1024,
        description="largest websocket frame accepted; a larger one closes the station's connection (1009)",
    )
    start_on_fallback: bool = Field(
        default=False,
        description="start on the fallback when the policy cannot be loaded (else a start-up error, exit 2)",
    )
    failsafe_retry_s: float = Field(
        default=1.0,
        gt=0,
        description="first wait before a refused failsafe is tried again (doubles, <= 60 s)",
    )

    @model_validator(mode="after")
    def _check(self) -> ServingConfig:
        ids = [s.id for s in self.stations]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate station ids: {sorted(dup)}")
        if self.battery is not None and self.battery.stale_timeout_s > self.control_interval_s:
            raise ValueError(
                f"battery.stale_timeout_s ({self.battery.stale_timeout_s}) must not exceed "
                f"control_interval_s ({self.control_interval_s}): the battery must go idle within one "
                "control interval"
            )
        if self.planning is not None:
            steps = window_steps(self.planning.horizon, self.control_interval_s)
            if steps > MAX_WINDOW_STEPS:
                raise ValueError(
                    f"the forecast horizon {self.planning.horizon} holds {steps} control intervals of "
                    f"{self.control_interval_s} s (at most {MAX_WINDOW_STEPS}): shorten "
                    "forecast.horizon_steps"
                )
        return self

    @property
    def planning(self) -> ForecastConfig | None:
        """The forecast settings in force: ``forecast``, or its defaults (24 h) when only ``prices`` is set;
        None when neither is (then the window is ``forecast_horizon_steps`` flat control intervals)."""
        if self.forecast is not None:
            return self.forecast
        return ForecastConfig() if self.prices is not None else None


def window_steps(horizon: timedelta, control_interval_s: float) -> int:
    """Control intervals in a forecast window covering ``horizon`` (at least 1)."""
    return max(1, math.ceil(horizon.total_seconds() / control_interval_s - 1e-9))


def load_serving_config(path: str | Path) -> ServingConfig:
    """Load a serving YAML; ``site``, ``secrets_file`` and TLS paths are resolved against its folder."""
    p = Path(path)
    data = read_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    for key in ("password", "passwords"):
        if key in data:
            raise ConfigError(f"{p}: field {key!r}: passwords never go in the YAML; use secrets_file or env")
    try:
        cfg = ServingConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(p))) from None
    return resolve_paths(cfg, p.parent)


def resolve_paths(cfg: ServingConfig, base: Path) -> ServingConfig:
    """Make relative file paths of ``cfg`` relative to ``base``."""

    def fix(q: Path) -> Path:
        return q if q.is_absolute() else base / q

    update: dict[str, object] = {"site": fix(cfg.site)}
    if cfg.secrets_file is not None:
        update["secrets_file"] = fix(cfg.secrets_file)
    if cfg.tls is not None:
        update["tls"] = TLSConfig(cert_file=fix(cfg.tls.cert_file), key_file=fix(cfg.tls.key_file))
    if cfg.forecast is not None and cfg.forecast.model is not None:
        update["forecast"] = cfg.forecast.model_copy(update={"model": fix(cfg.forecast.model)})
    if cfg.prices is not None and cfg.prices.csv is not None:
        update["prices"] = cfg.prices.model_copy(update={"csv": fix(cfg.prices.csv)})
    return cfg.model_copy(update=update)


# --------------------------------------------------------------------------- connector mapping

_SUFFIX = re.compile(r"^(?P<station>.+)-(?P<k>\d+)$")


def default_connectors(station_id: str, charger_ids: Sequence[str]) -> dict[int, str]:
    """The connectors of a station configured without a table: the charger named like the station is
    connector 1, a charger ``<station_id>-<k>`` connector ``k``. Raises :class:`ConfigError` where two
    chargers would be the same connector (naming both)."""
    table: dict[int, str] = {}
    for cid in charger_ids:
        if cid == station_id:
            k = 1
        else:
            m = _SUFFIX.match(cid)
            if not (m and m.group("station") == station_id):
                continue
            k = int(m.group("k"))
        if k in table:
            raise ConfigError(
                f"station {station_id!r}: chargers {table[k]!r} and {cid!r} would both be connector {k} "
                "(ambiguous); give the station a 'connectors' table"
            )
        table[k] = cid
    return table


def connector_map(cfg: ServingConfig, site: SiteConfig) -> dict[tuple[str, int], str]:
    """``(station id, connector id) -> charger id`` for every configured station; validated both ways.

    Raises :class:`ConfigError` when a table names an unknown charger, a charger is claimed twice, or a
    station has no connector at all.
    """
    known = set(site.charger_ids)
    station_ids = {s.id for s in cfg.stations}
    out: dict[tuple[str, int], str] = {}
    claimed: dict[str, tuple[str, int]] = {}
    named: dict[str, list[str]] = {}  # station id -> the chargers named after it, in site order
    for cid in site.charger_ids:  # (each station searching every charger: 1,000 stations took seconds)
        named.setdefault(cid, []).append(cid)
        if m := _SUFFIX.match(cid):
            named.setdefault(m.group("station"), []).append(cid)
    for st in cfg.stations:
        table = dict(st.connectors) if st.connectors else default_connectors(st.id, named.get(st.id, []))
        if not table and not (cfg.meter.source == "station" and cfg.meter.station_id == st.id):
            raise ConfigError(f"station {st.id!r}: no connector maps to a charger (set 'connectors')")
        for k, cid in sorted(table.items()):
            if k < 1:
                raise ConfigError(f"station {st.id!r}: connector ids start at 1 (got {k})")
            if cid not in known:
                raise ConfigError(f"station {st.id!r}: connector {k} maps to unknown charger {cid!r}")
            if cid in claimed:
                raise ConfigError(
                    f"charger {cid!r} is mapped twice (ambiguous): connector {claimed[cid][1]} of station "
                    f"{claimed[cid][0]!r} and connector {k} of station {st.id!r}; give 'connectors' tables"
                )
            claimed[cid] = (st.id, k)
            out[(st.id, k)] = cid
    if cfg.meter.source == "station" and cfg.meter.station_id not in station_ids:
        raise ConfigError(f"meter station {cfg.meter.station_id!r} is not among the stations")
    return out


# --------------------------------------------------------------------------- secrets


def password_env_name(station_id: str) -> str:
    return PASSWORD_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", station_id).upper()


def load_passwords(cfg: ServingConfig, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Station passwords from the secrets file, overridden by ``EVDLM_OCPP_PASSWORD_<ID>`` variables.

    Stations without a password cannot connect while ``require_auth`` is on.
    """
    env = dict(os.environ) if environ is None else environ
    out: dict[str, str] = {}
    if cfg.secrets_file is not None:
        data = read_yaml(cfg.secrets_file)
        if not isinstance(data, dict):
            raise ConfigError(f"{cfg.secrets_file}: expected 'station_id: password' lines")
        stations = data.get("stations", data)
        if not isinstance(stations, dict):
            raise ConfigError(f"{cfg.secrets_file}: field 'stations': expected a mapping")
        for k, v in stations.items():
            if k == "operator_token":
                continue
            out[str(k)] = str(v)
    for st in cfg.stations:
        value = env.get(password_env_name(st.id))
        if value:
            out[st.id] = value
    return out


def check_auth(cfg: ServingConfig, passwords: dict[str, str]) -> None:
    """Raise :class:`ConfigError` where ``require_auth`` is on and a station has no password: every
    connection of that station would be refused (401), silently, for as long as the service runs."""
    if not cfg.require_auth:
        return
    missing = [s.id for s in cfg.stations if s.id not in passwords]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise ConfigError(
            f"require_auth is on (the default) but station(s) {shown} have no password, so every connection "
            "of theirs would be refused (401): give them passwords (secrets_file / --secrets, or "
            f"{PASSWORD_ENV_PREFIX}<ID>), or set require_auth: false (no OCPP authentication; bind to "
            "127.0.0.1 only)"
        )


def load_operator_token(cfg: ServingConfig, environ: dict[str, str] | None = None) -> str | None:
    """The operator API bearer token: ``EVDLM_OPERATOR_TOKEN`` or ``operator_token`` in the secrets file.

    None means the operator API is open (acceptable only on 127.0.0.1).
    """
    env = dict(os.environ) if environ is None else environ
    if env.get(OPERATOR_TOKEN_ENV):
        return env[OPERATOR_TOKEN_ENV]
    if cfg.secrets_file is not None and Path(cfg.secrets_file).exists():
        data = read_yaml(cfg.secrets_file)
        if isinstance(data, dict) and data.get("operator_token"):
            return str(data["operator_token"])
    return None
