"""The site battery over Modbus TCP (pymodbus): read SoC and power, write a charge/discharge setpoint.

:class:`ModbusBattery` owns one ``AsyncModbusTcpClient`` on one task (:meth:`ModbusBattery.run`): connect
(and, for SunSpec, find the models), then every ``poll_interval_s`` write the setpoint the loop asked for
and read SoC and power. The loop only touches it through two synchronous calls: :meth:`status` in its
read step (what the snapshot may assume) and :meth:`command` in its write step (the projected setpoint).

Failure behaviour (fail safe, as a stale site meter): a reading older than ``stale_timeout_s`` or a link
that failed makes the battery **absent**: the snapshot has no battery capacity, the projection gives it
0 kW, and the setpoint written is 0 (idle) wherever the device can still be reached; after a reconnect
the first write is idle too. It is present again from the first good reading after that. Because
``stale_timeout_s`` may not exceed the control interval (checked when the config loads), the loop
plans without the battery within one control interval of losing it. A device with a setpoint watchdog
(SunSpec ``InOutWRte_RvrtTms``, ``registers.revert_s``) is given ``revert_timeout_s`` at connect, so it
goes idle by itself when the link is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from serving.battery_map import (
    M124_LENGTH,
    M124_RVRT_TMS,
    M124_STORCTL_MOD,
    STORCTL_BOTH,
    SUNSPEC_BASES,
    SUNSPEC_END,
    SUNSPEC_MARKER,
    BatteryReading,
    Register,
    RegisterMap,
    SunSpecMap,
    walk_models,
)
from serving.config import BatteryConfig, RegisterConfig

LOG = logging.getLogger("evdlm.serving.battery")

LinkState = Literal["connecting", "ok", "stale", "lost"]


RECONNECT_MAX_S = 2.0
"""longest wait between two connection attempts to a battery that is away"""
READINGS_KEPT = 256
"""power readings kept to judge the battery's power at the time of a site meter reading"""


class _Wait(Exception):
    """Not yet time to try connecting again."""


class ModbusError(OSError):
    """A Modbus request answered with an exception, or not answered."""


@dataclass(frozen=True)
class BatteryStatus:
    """What the loop may assume about the battery this cycle."""

    present: bool
    """a fresh reading over a working link: the policy and the projection may use the battery"""
    link: LinkState
    soc_frac: float | None
    """last SoC read, 0..1 (None before the first)"""
    power_kw: float | None
    """last power read, kW, + charge (None before the first)"""
    age_s: float | None
    """seconds since the last good reading"""
    setpoint_kw: float
    """the setpoint last written, kW (+ charge)"""
    power_floor_kw: float | None = None
    """the lowest power it may have run at since the ``since`` given to :meth:`ModbusBattery.status`
    (the reading in force then and every later one), kW; ``power_kw`` where no ``since`` was given"""
    power_ceiling_kw: float | None = None
    """the highest, likewise"""


def register_map(cfg: BatteryConfig) -> RegisterMap:
    """The :class:`RegisterMap` of a ``map: registers`` battery config."""
    regs = cfg.registers
    if regs is None:
        raise ValueError("battery map 'registers' needs a 'registers' table")

    def reg(r: RegisterConfig) -> Register:
        return Register(r.address, r.type, r.scale, r.word_order)

    return RegisterMap(
        reg(regs.soc_pct), reg(regs.power_w), reg(regs.setpoint_w), float(regs.power_sign),
        float(regs.setpoint_sign), None if regs.revert_s is None else reg(regs.revert_s),
    )  # fmt: skip


class ModbusBattery:
    """A battery behind a Modbus TCP link; one task (:meth:`run`) does all the I/O."""

    def __init__(self, cfg: BatteryConfig) -> None:
        self.cfg = cfg
        self.map: RegisterMap | SunSpecMap | None = register_map(cfg) if cfg.map == "registers" else None
        self.link: LinkState = "connecting"
        self.reading: BatteryReading | None = None
        self.read_at = -float("inf")
        """monotonic time of the last good reading"""
        self.wanted_kw = 0.0
        self.written_kw = 0.0
        self.written_at = -float("inf")
        """monotonic time the setpoint last changed"""
        self.errors = 0
        self._storage: list[int] = []
        self._wake = asyncio.Event()
        self._needs_idle = True
        """write idle before anything else (at start and after every reconnect)"""
        self._powers: deque[tuple[float, float]] = deque(maxlen=READINGS_KEPT)
        """(monotonic time, kW) of the last power readings"""

    # ------------------------------------------------------------------ the loop's side (synchronous)

    def status(
        self, now: float | None = None, since: float | None = None, until: float = float("inf")
    ) -> BatteryStatus:
        """The battery as the loop's read step sees it: present only with a fresh reading over a working
        link (``stale_timeout_s``). ``[since, until]`` (monotonic): when the site meter reading the loop
        subtracts the battery's power from was taken (see ``power_floor_kw``)."""
        mono = time.monotonic() if now is None else now
        age = mono - self.read_at if self.reading is not None else None
        fresh = age is not None and age <= self.cfg.stale_timeout_s
        link: LinkState = self.link
        if link == "ok" and not fresh:
            link = "stale"
        r = self.reading
        power = None if r is None else r.power_kw
        floor = ceiling = power
        if since is not None and power is not None:
            floor, ceiling = self.power_floor_kw(since, until), self.power_ceiling_kw(since, until)
        return BatteryStatus(
            link == "ok" and not self._needs_idle, link, None if r is None else r.soc_frac, power, age,
            self.written_kw, floor, ceiling,
        )  # fmt: skip

    def power_ceiling_kw(self, since: float, until: float = float("inf")) -> float | None:
        """The highest power read in force at any time from ``since`` on (see :meth:`power_floor_kw`)."""
        powers = self._powers_since(since, until)
        return max(powers) if powers else None

    def _powers_since(self, since: float, until: float = float("inf")) -> list[float]:
        before = [kw for at, kw in self._powers if at <= since]
        return before[-1:] + [kw for at, kw in self._powers if since < at <= until]

    def power_floor_kw(self, since: float, until: float = float("inf")) -> float | None:
        """The lowest power read in force at any time from monotonic ``since`` on (the reading before it
        and every later one), kW; None before any reading. A site meter reading taken before a setpoint
        change holds the battery's old power: subtracting the new one would misjudge the base load."""
        powers = self._powers_since(since, until)
        return min(powers) if powers else None

    def command(self, kw: float) -> None:
        """The setpoint the loop's write step decided (kW, + charge); written at once by :meth:`run`."""
        self.wanted_kw = float(kw)
        self._wake.set()

    # ------------------------------------------------------------------ the I/O task

    async def run(self) -> None:
        """Connect, (re)discover, then write and read every ``poll_interval_s``, forever; a failing link is
        logged, counted and retried, never raised."""
        from pymodbus.client import AsyncModbusTcpClient

        cfg = self.cfg
        client = AsyncModbusTcpClient(
            cfg.host,
            port=cfg.port,
            timeout=cfg.timeout_s,
            retries=0,
            reconnect_delay=0,
            reconnect_delay_max=0,
        )
        failures = 0
        next_connect = 0.0
        me = asyncio.current_task()
        try:
            while True:
                if me is not None and me.cancelling():
                    raise asyncio.CancelledError  # a cancel a library swallowed (3.11's wait_for can)
                try:
                    if not client.connected:
                        self._lost_link()
                        if time.monotonic() < next_connect:
                            raise _Wait()
                        if not await client.connect():
                            raise ModbusError(f"cannot connect to {cfg.host}:{cfg.port}")
                        await self._on_connect(client)
                    await self._exchange(client)
                    failures = 0
                except _Wait:
                    pass
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # the battery going away must never stop the service
                    self.errors += 1
                    if self.link != "lost":
                        LOG.warning(
                            "battery %s:%d: %s; set idle, absent until it answers", cfg.host, cfg.port, err
                        )
                    self._lost_link()
                    client.close()
                    failures += 1  # retry at once, then back off to RECONNECT_MAX_S between attempts
                    next_connect = time.monotonic() + min(
                        cfg.poll_interval_s * 2 ** (failures - 1), RECONNECT_MAX_S
                    )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(cfg.poll_interval_s):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            with contextlib.suppress(BaseException):
                if client.connected:
                    async with asyncio.timeout(cfg.timeout_s):
                        await self._write_setpoint(client, 0.0)
            client.close()

    def _lost_link(self) -> None:
        self.link = "lost"
        self._needs_idle = True

    async def _on_connect(self, client: Any) -> None:
        cfg = self.cfg
        if cfg.map == "sunspec":
            self.map = await discover(client, cfg.unit_id, cfg.sunspec_base)
        self._storage = []
        if cfg.revert_timeout_s is not None:
            await self._write_revert(client, cfg.revert_timeout_s)
        self.link = "ok"
        LOG.info("battery %s:%d connected (%s map)", cfg.host, cfg.port, cfg.map)

    async def _exchange(self, client: Any) -> None:
        """Write the setpoint (idle while the battery is absent), then read."""
        st = self.status()
        kw = self.wanted_kw if st.present else 0.0
        if self._storage or isinstance(self.map, RegisterMap):
            await self._write_setpoint(client, kw)
        try:
            reading = await self._read(client)
        except ModbusError:
            raise
        except ValueError as err:  # answered, but nonsense: reachable, so idle
            await self._write_setpoint(client, 0.0)
            LOG.warning("battery %s:%d: %s", self.cfg.host, self.cfg.port, err)
            self.errors += 1
            return
        if self._needs_idle and isinstance(self.map, SunSpecMap):
            await self._write_setpoint(client, 0.0)  # the first write after connect needs WChaMax read
        self.reading, self.read_at = reading, time.monotonic()
        self._powers.append((self.read_at, reading.power_kw))
        if self._needs_idle and self.written_kw == 0.0:
            self._needs_idle = False
            LOG.info("battery %s:%d answers; present again", self.cfg.host, self.cfg.port)

    async def _read(self, client: Any) -> BatteryReading:
        m, unit = self.map, self.cfg.unit_id
        if isinstance(m, RegisterMap):
            soc = await read_registers(client, m.soc_pct.address, m.soc_pct.count, unit)
            power = await read_registers(client, m.power_w.address, m.power_w.count, unit)
            return m.reading(soc, power)
        if isinstance(m, SunSpecMap):
            self._storage = await read_registers(client, m.storage, M124_LENGTH, unit)
            addr, count = m.inverter_span
            inv = await read_registers(client, addr, count, unit)
            return m.reading(self._storage, inv)
        raise ModbusError("battery map not known yet")

    async def _write_setpoint(self, client: Any, kw: float) -> None:
        m, unit = self.map, self.cfg.unit_id
        if isinstance(m, RegisterMap):
            addr, regs = m.setpoint_registers(kw)
            await write_registers(client, addr, regs, unit)
        elif isinstance(m, SunSpecMap):
            if not self._storage:
                return
            addr, regs = m.setpoint_registers(kw, self._storage)
            await write_registers(client, addr, regs, unit)
            if self._storage[M124_STORCTL_MOD] != STORCTL_BOTH:
                await write_registers(client, m.storage + M124_STORCTL_MOD, [STORCTL_BOTH], unit)
                self._storage[M124_STORCTL_MOD] = STORCTL_BOTH
        if kw != self.written_kw:
            self.written_at = time.monotonic()
        self.written_kw = kw

    async def _write_revert(self, client: Any, seconds: int) -> None:
        m, unit = self.map, self.cfg.unit_id
        if isinstance(m, RegisterMap) and m.revert_s is not None:
            await write_registers(client, m.revert_s.address, m.revert_s.raw(seconds), unit)
        elif isinstance(m, SunSpecMap):
            await write_registers(client, m.storage + M124_RVRT_TMS, [seconds], unit)


async def read_registers(client: Any, address: int, count: int, unit: int) -> list[int]:
    """Holding registers, or :class:`ModbusError`."""
    rr = await client.read_holding_registers(address, count=count, device_id=unit)
    if rr.isError():
        raise ModbusError(f"reading {count} registers at {address}: {rr}")
    return list(rr.registers)


async def write_registers(client: Any, address: int, values: Sequence[int], unit: int) -> None:
    """Write holding registers, or :class:`ModbusError`."""
    rr = await client.write_registers(address, list(values), device_id=unit)
    if rr.isError():
        raise ModbusError(f"writing {len(values)} registers at {address}: {rr}")


async def discover(client: Any, unit: int, base: int | None) -> SunSpecMap:
    """Find the SunSpec marker and walk the models (``ValueError`` when the device is no usable SunSpec
    storage)."""
    for start in (base,) if base is not None else SUNSPEC_BASES:
        try:
            marker = await read_registers(client, start, 2, unit)
        except ModbusError:
            continue
        if tuple(marker) != SUNSPEC_MARKER:
            continue
        blocks: list[tuple[int, int, int]] = []
        addr = start + 2
        for _ in range(64):
            mid, length = await read_registers(client, addr, 2, unit)
            if mid == SUNSPEC_END:
                break
            blocks.append((mid, length, addr + 2))
            addr += 2 + length
        return walk_models(blocks)
    raise ValueError(f"no SunSpec marker 'SunS' at {base if base is not None else SUNSPEC_BASES}")
