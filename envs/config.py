"""Typed, validated site configuration.

A site is a grid connection with import/export limits, a tree of limit nodes (transformer -> feeders ->
charger groups) with kW and optional per-phase current limits, the chargers hanging on those nodes, an
optional stationary battery and PV, and a tariff. YAML is loaded once, at the edge, into these frozen
pydantic models; every error names the file, the field and why.

Units are in the field names: ``_kw`` kilowatts, ``_kwh`` kilowatt-hours, ``_a`` amperes (per phase),
``_v`` volts (phase to neutral), ``_per_kwh`` currency per kWh, ``_per_kw`` currency per kW.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Phase = Literal["L1", "L2", "L3"]
PHASES: tuple[Phase, ...] = ("L1", "L2", "L3")


class ConfigError(ValueError):
    """A configuration or scenario file is invalid. The message names the file, the field and why."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GridConnection(_Frozen):
    """The point of common coupling: net import and export are capped here."""

    import_limit_kw: float = Field(gt=0, description="maximum net import from the grid, kW")
    export_limit_kw: float = Field(default=0.0, ge=0, description="maximum net export, kW (0 = no export)")


class LimitNode(_Frozen):
    """A node of the limit tree (transformer, feeder, charger group).

    ``parent`` is None for a root. The node's limit applies to the sum of the chargers below it, in both
    directions (charging and discharging): ``|sum kW| <= max_power_kw`` and, when ``max_current_a`` is
    set, ``|current on each phase| <= max_current_a``.
    """

    id: str = Field(min_length=1)
    parent: str | None = None
    max_power_kw: float = Field(gt=0)
    max_current_a: float | None = Field(default=None, gt=0, description="per-phase current limit, A")


class Charger(_Frozen):
    """One charging point (one connector that can hold one EV)."""

    id: str = Field(min_length=1)
    node: str = Field(min_length=1, description="id of the limit node the charger hangs on")
    phases: Literal[1, 3] = 3
    phase: Phase | None = Field(default=None, description="for single-phase chargers: which phase")
    voltage_v: float = Field(default=230.0, gt=0, description="nominal phase-to-neutral voltage")
    max_current_a: float | None = Field(default=None, gt=0, description="max current per phase, A")
    max_power_kw: float | None = Field(default=None, gt=0, description="max charging power, kW")
    min_current_a: float = Field(
        default=6.0, ge=0, description="IEC 61851 minimum pilot current; a charger is off or >= this"
    )
    bidirectional: bool = False
    max_discharge_kw: float = Field(default=0.0, ge=0)
    efficiency: float = Field(default=0.95, gt=0, le=1, description="grid-to-battery efficiency")
    resolution_a: float = Field(
        default=0.1, gt=0, description="granularity of the limits the charger accepts (OCPP: 0.1 A)"
    )
    rate_unit: Literal["A", "W"] = Field(default="A", description="unit of the charging profiles it takes")

    @model_validator(mode="after")
    def _check(self) -> Charger:
        if self.max_current_a is None and self.max_power_kw is None:
            raise ValueError("set max_current_a or max_power_kw")
        if self.phases == 1 and self.phase is None:
            raise ValueError("a single-phase charger needs 'phase' (L1, L2 or L3)")
        if self.phases == 3 and self.phase is not None:
            raise ValueError("'phase' is only for single-phase chargers")
        if self.max_discharge_kw > 0 and not self.bidirectional:
            raise ValueError("max_discharge_kw > 0 needs bidirectional: true")
        if self.min_power_kw > self.rated_power_kw + 1e-9:
            raise ValueError(
                f"minimum current {self.min_current_a} A is above the charger's maximum "
                f"({self.rated_power_kw:.2f} kW)"
            )
        return self

    @property
    def kw_per_a(self) -> float:
        """kW drawn per ampere of per-phase current."""
        return self.phases * self.voltage_v / 1000.0

    @property
    def rated_power_kw(self) -> float:
        """Maximum charging power, kW: the smaller of the current and the power ratings."""
        candidates = []
        if self.max_current_a is not None:
            candidates.append(self.max_current_a * self.kw_per_a)
        if self.max_power_kw is not None:
            candidates.append(self.max_power_kw)
        return min(candidates)

    @property
    def min_power_kw(self) -> float:
        """Power at the minimum current, kW."""
        return self.min_current_a * self.kw_per_a


class StationaryBattery(_Frozen):
    """A stationary battery behind the grid connection (at the site root)."""

    capacity_kwh: float = Field(gt=0)
    max_charge_kw: float = Field(gt=0)
    max_discharge_kw: float = Field(gt=0)
    soc_min: float = Field(default=0.1, ge=0, le=1)
    soc_max: float = Field(default=0.9, ge=0, le=1)
    initial_soc: float = Field(default=0.5, ge=0, le=1)
    efficiency: float = Field(default=0.95, gt=0, le=1, description="one-way efficiency")

    @model_validator(mode="after")
    def _check(self) -> StationaryBattery:
        if self.soc_min >= self.soc_max:
            raise ValueError("soc_min must be below soc_max")
        if not self.soc_min <= self.initial_soc <= self.soc_max:
            raise ValueError("initial_soc must lie within [soc_min, soc_max]")
        return self


class PVSystem(_Frozen):
    """Rooftop PV behind the grid connection; generation comes from the scenario's time series."""

    peak_kw: float = Field(gt=0, description="installed peak power, kWp")
    curtailable: bool = True


class Tariff(_Frozen):
    """Cost parameters. Energy prices come from the scenario's time series."""

    demand_charge_per_kw: float = Field(default=0.0, ge=0, description="per kW of the period's peak import")
    billing_period: Literal["month", "episode"] = "month"
    missing_energy_penalty_per_kwh: float = Field(
        default=1.0, ge=0, description="penalty per kWh an EV still misses when it leaves"
    )
    ev_degradation_per_kwh: float = Field(default=0.05, ge=0, description="per kWh discharged from an EV")
    battery_degradation_per_kwh: float = Field(default=0.02, ge=0, description="per kWh from the battery")
    currency: str = "EUR"


class SiteConfig(_Frozen):
    """A charging site: grid connection, limit tree, chargers, battery, PV and tariff."""

    name: str = Field(min_length=1)
    timezone: str = "Europe/Amsterdam"
    grid: GridConnection
    nodes: tuple[LimitNode, ...] = Field(min_length=1)
    chargers: tuple[Charger, ...] = Field(min_length=1)
    battery: StationaryBattery | None = None
    pv: PVSystem | None = None
    tariff: Tariff = Tariff()

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. 'Europe/Amsterdam')") from None
        return value

    @model_validator(mode="after")
    def _check_tree(self) -> SiteConfig:
        ids = [n.id for n in self.nodes]
        dup = sorted(i for i, k in Counter(ids).items() if k > 1)
        if dup:
            raise ValueError(f"nodes: duplicate node id(s) {dup}")
        known = set(ids)
        parent = {n.id: n.parent for n in self.nodes}
        for j, n in enumerate(self.nodes):
            if n.parent is not None and n.parent not in known:
                raise ValueError(f"nodes[{j}] (id {n.id!r}).parent: unknown parent node {n.parent!r}")
        for j, start in enumerate(ids):
            seen = [start]
            cur = parent[start]
            while cur is not None:
                if cur in seen:
                    loop = " -> ".join([*seen[seen.index(cur) :], cur])
                    raise ValueError(f"nodes[{j}] (id {start!r}).parent: the limit tree has a cycle: {loop}")
                seen.append(cur)
                cur = parent[cur]
        cids = [c.id for c in self.chargers]
        cdup = sorted(i for i, k in Counter(cids).items() if k > 1)
        if cdup:
            raise ValueError(f"chargers: duplicate charger id(s) {cdup}")
        for i, c in enumerate(self.chargers):
            if c.node not in known:
                raise ValueError(f"chargers[{i}] (id {c.id!r}).node: unknown limit node {c.node!r}")
        return self

    @property
    def charger_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.chargers)

    @property
    def n_chargers(self) -> int:
        return len(self.chargers)

    def charger_index(self) -> dict[str, int]:
        return {c.id: i for i, c in enumerate(self.chargers)}

    def ancestors(self, node_id: str) -> tuple[str, ...]:
        """The node and every node above it, leaf first."""
        parent = {n.id: n.parent for n in self.nodes}
        out = [node_id]
        cur = parent[node_id]
        while cur is not None:
            out.append(cur)
            cur = parent[cur]
        return tuple(out)


def _field_path(loc: tuple[int | str, ...], data: object) -> str:
    """``('chargers', 3, 'max_current_a')`` -> ``chargers[3] (id 'c4').max_current_a``."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list | tuple) and 0 <= part < len(node) else None
            if isinstance(node, dict) and "id" in node:
                out += f" (id {node['id']!r})"
        else:
            out += f".{part}" if out else part
            node = node.get(part) if isinstance(node, dict) else None
    return out or "<site>"


def format_validation_error(err: ValidationError, source: str, data: object = None) -> str:
    """One line: ``FILE: FIELD: why`` for each problem, joined by ``; ``."""
    parts = []
    errors = err.errors()
    for e in errors:
        shadowed = e["type"] == "too_short" and any(
            len(o["loc"]) > len(e["loc"]) and o["loc"][: len(e["loc"])] == e["loc"] for o in errors
        )
        if shadowed:  # "tuple too short" only because its items failed: the item errors say why
            continue
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        loc = tuple(e["loc"])
        parts.append(f"{_field_path(loc, data)}: {msg}" if loc else msg)
    return f"{source}: " + "; ".join(parts)


def site_from_dict(data: object, source: str = "<dict>") -> SiteConfig:
    """Validate a mapping (parsed YAML) into a :class:`SiteConfig`; errors name ``source`` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    if "site" in data and isinstance(data["site"], dict) and "grid" not in data:
        data = data["site"]
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, data)) from None


def read_yaml(path: str | Path) -> object:
    """Parse a YAML file; unreadable or bad YAML is a :class:`ConfigError` naming the file and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{p}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{p}: not valid YAML{line}: {getattr(err, 'problem', None) or err}") from None


def load_site(path: str | Path) -> SiteConfig:
    """Load a site YAML file into a validated, frozen :class:`SiteConfig`."""
    return site_from_dict(read_yaml(path), str(path))


def dump_site(site: SiteConfig, path: str | Path) -> None:
    """Write a site as YAML (the inverse of :func:`load_site`)."""
    data = site.model_dump(mode="json", exclude_none=True)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
