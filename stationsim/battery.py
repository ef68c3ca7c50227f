"""A simulated site battery behind a Modbus TCP server (pymodbus), for tests and the demo.

:class:`SimBattery` integrates its state of charge from the setpoint it is given, within its power limits
and its SoC window (``soc_min``..``soc_max`` of ``capacity_kwh``, one-way ``efficiency``), in simulated
time (``speed`` simulated seconds per wall second). A setpoint not rewritten within the revert timeout
(when one is set) falls back to 0 (idle), as a real device's watchdog does.

:class:`BatteryServer` serves it on one of two register layouts (its own code, deliberately not the
service's map, so a test of one against the other means something):

* ``registers`` (:data:`SIM_REGISTERS`, the map to put in ``battery.registers``): holding register 0 SoC
  (uint16, 0.01 %), 1-2 power (int32, W, + charge), 3-4 setpoint (int32, W, + charge), 5 revert timeout
  (uint16, s; 0 = none).
* ``sunspec``: ``SunS`` at 40000, then model 1 (common, 66 registers), model 103 (three-phase inverter,
  50: ``W`` at 12 with ``W_SF`` at 13, output positive = discharge), model 124 (storage, 24: ``WChaMax``
  at 0 with ``WChaMax_SF`` at 16, ``StorCtl_Mod`` 3, ``ChaState`` 6 with ``ChaState_SF`` 20, ``OutWRte``
  10, ``InWRte`` 11, ``InOutWRte_RvrtTms`` 13, ``InOutWRte_SF`` 23) and the end marker. The battery
  follows the window ``[-OutWRte, InWRte]`` (% of WChaMax) nearest to idle, when ``StorCtl_Mod`` enables
  both limits; else it is idle.

``fail_reads`` makes every read answer a Modbus exception (a device that is reachable but answers
nothing usable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from dataclasses import dataclass
from typing import Any, Literal

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from envs.config import StationaryBattery

LOG = logging.getLogger("evdlm.simulator.battery")
Layout = Literal["registers", "sunspec"]

SIM_REGISTERS: dict[str, Any] = {
    "soc_pct": {"address": 0, "type": "uint16", "scale": 0.01},
    "power_w": {"address": 1, "type": "int32"},
    "setpoint_w": {"address": 3, "type": "int32"},
    "revert_s": {"address": 5, "type": "uint16"},
}
"""the ``registers`` layout as a serving config's ``battery.registers`` table"""

SUNSPEC_BASE = 40000
_COMMON_LEN, _INV_LEN, _STOR_LEN = 66, 50, 24
_INV = SUNSPEC_BASE + 2 + 2 + _COMMON_LEN + 2  # first data register of model 103
_STOR = _INV + _INV_LEN + 2  # first data register of model 124
_END = _STOR + _STOR_LEN
W_SF = 1
"""inverter power in tens of W"""
CHASTATE_SF = -1
"""SoC in tenths of %"""
WCHAMAX_SF = 1
INOUTWRTE_SF = -2
"""rates in hundredths of %"""


def _i16(v: float) -> int:
    return struct.unpack(">H", struct.pack(">h", int(min(max(round(v), -0x8000), 0x7FFF))))[0]


def _s16(r: int) -> int:
    return struct.unpack(">h", struct.pack(">H", r & 0xFFFF))[0]


def _i32(v: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">i", round(v))))


def _s32(hi: int, lo: int) -> int:
    return struct.unpack(">i", struct.pack(">HH", hi & 0xFFFF, lo & 0xFFFF))[0]


@dataclass
class SimBattery:
    """The battery's physics: SoC integrated from the setpoint, within its power and energy limits."""

    capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    soc_min: float = 0.1
    soc_max: float = 0.9
    efficiency: float = 0.95
    soc_kwh: float = 0.0
    speed: float = 1.0
    """simulated seconds per wall second"""
    setpoint_kw: float = 0.0
    """commanded power, kW (+ charge)"""
    power_kw: float = 0.0
    """power now, kW (+ charge), after its limits"""
    revert_s: float = 0.0
    """wall seconds without a new setpoint before it reverts to idle (0: never)"""
    setpoint_at: float = 0.0
    last: float | None = None
    energy_in_kwh: float = 0.0
    energy_out_kwh: float = 0.0

    @classmethod
    def from_site(cls, b: StationaryBattery, speed: float = 1.0) -> SimBattery:
        return cls(
            b.capacity_kwh, b.max_charge_kw, b.max_discharge_kw, b.soc_min, b.soc_max, b.efficiency,
            b.initial_soc * b.capacity_kwh, speed,
        )  # fmt: skip

    def set(self, kw: float, now: float | None = None) -> None:
        mono = time.monotonic() if now is None else now
        self.advance(mono)
        self.setpoint_kw, self.setpoint_at = float(kw), mono
        self.power_kw = self.limited_kw(self.setpoint_kw, 1e-9)

    def limited_kw(self, kw: float, dt_h: float) -> float:
        """``kw`` within the power limits and what the SoC window takes in ``dt_h`` hours."""
        up = self.max_charge_kw
        down = self.max_discharge_kw
        if dt_h > 0:
            up = min(up, max(self.capacity_kwh * self.soc_max - self.soc_kwh, 0.0) / (self.efficiency * dt_h))
            down = min(
                down, max(self.soc_kwh - self.capacity_kwh * self.soc_min, 0.0) * self.efficiency / dt_h
            )
        return min(max(kw, -down), up)

    def advance(self, now: float | None = None) -> None:
        """Integrate up to wall time ``now`` at the current setpoint (idle after the revert timeout)."""
        mono = time.monotonic() if now is None else now
        if self.last is None:
            self.last = mono
        if self.revert_s > 0 and mono - self.setpoint_at > self.revert_s and self.setpoint_kw != 0.0:
            LOG.info("battery setpoint not refreshed for %.1f s: idle", mono - self.setpoint_at)
            self.setpoint_kw = 0.0
        dt_h = max(mono - self.last, 0.0) * self.speed / 3600.0
        self.last = mono
        p = self.limited_kw(self.setpoint_kw, dt_h)
        if p >= 0:
            self.soc_kwh += p * dt_h * self.efficiency
            self.energy_in_kwh += p * dt_h
        else:
            self.soc_kwh += p * dt_h / self.efficiency
            self.energy_out_kwh -= p * dt_h
        self.power_kw = self.limited_kw(self.setpoint_kw, 1e-9)

    @property
    def soc_frac(self) -> float:
        return self.soc_kwh / self.capacity_kwh


def _sunspec_block() -> list[int]:
    regs = [0x5375, 0x6E53, 1, _COMMON_LEN, *([0] * _COMMON_LEN)]
    name = b"evdlm".ljust(32, b"\0") + b"sim-battery".ljust(32, b"\0")
    regs[4 : 4 + 32] = list(struct.unpack(">32H", name))
    regs += [103, _INV_LEN, *([0] * _INV_LEN)]
    regs[_INV - SUNSPEC_BASE + 13] = _i16(W_SF)
    regs += [124, _STOR_LEN, *([0] * _STOR_LEN)]
    s = _STOR - SUNSPEC_BASE
    regs[s + 16] = _i16(WCHAMAX_SF)
    regs[s + 20] = _i16(CHASTATE_SF)
    regs[s + 23] = _i16(INOUTWRTE_SF)
    regs += [0xFFFF, 0]
    return regs


class BatteryServer:
    """A Modbus TCP server (pymodbus) in front of a :class:`SimBattery`; ``port=0`` picks a free port."""

    def __init__(
        self,
        battery: SimBattery,
        layout: Layout = "registers",
        host: str = "127.0.0.1",
        port: int = 0,
        unit_id: int = 1,
    ) -> None:
        self.battery = battery
        self.layout = layout
        self.host, self.port, self.unit_id = host, port, unit_id
        self.fail_reads = False
        self.writes = 0
        if layout == "registers":
            start, values = 0, [0] * 8
        else:
            start, values = SUNSPEC_BASE, _sunspec_block()
            wmax = battery.max_charge_kw * 1000.0 / 10**WCHAMAX_SF
            values[_STOR - SUNSPEC_BASE] = round(wmax)
        self._start = start
        device = SimDevice(
            id=unit_id,
            simdata=[SimData(start, values=values, datatype=DataType.REGISTERS)],
            action=self._action,
        )
        self._server = ModbusTcpServer(device, address=(host, port))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> BatteryServer:
        self._task = asyncio.create_task(self._server.serve_forever())
        for _ in range(200):
            if self._server.transport is not None:
                break
            await asyncio.sleep(0.01)
        transport: Any = self._server.transport
        self.port = int(transport.sockets[0].getsockname()[1])
        LOG.info("Modbus battery (%s map) on %s:%d", self.layout, self.host, self.port)
        return self

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._server.shutdown()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def __aenter__(self) -> BatteryServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ the registers

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        b = self.battery
        if set_values is None:
            if self.fail_reads:
                return ExcCodes.DEVICE_FAILURE
            b.advance()
            self._publish(registers, start_address)
            return None
        after = list(registers)
        for k, v in enumerate(set_values):
            after[address - start_address + k] = int(v)
        self.writes += 1
        if self.layout == "registers":
            b.revert_s = float(after[5])
            if address <= 4 and address + count > 3:
                b.set(_s32(after[3], after[4]) / 1000.0)
        else:
            self._sunspec_write(after, start_address, address, count)
        return None

    def _sunspec_write(self, after: list[int], start: int, address: int, count: int) -> None:
        b, s = self.battery, _STOR - start
        b.revert_s = float(after[s + 13])
        if not (address < _STOR + 14 and address + count > _STOR + 3):
            return  # nothing of the rates or the mode
        wmax_w = after[s] * 10.0**WCHAMAX_SF
        sf = 10.0**INOUTWRTE_SF
        hi = _s16(after[s + 11]) * sf / 100.0 * wmax_w / 1000.0  # InWRte: at most this charge
        lo = -_s16(after[s + 10]) * sf / 100.0 * wmax_w / 1000.0  # -OutWRte: at least this
        if after[s + 3] & 3 != 3 or lo > hi:
            b.set(0.0)
        else:
            b.set(min(max(0.0, lo), hi))

    def _publish(self, regs: list[int], start: int) -> None:
        b = self.battery
        if self.layout == "registers":
            regs[0 - start] = round(b.soc_frac * 100.0 / 0.01)
            regs[1 - start : 3 - start] = _i32(b.power_kw * 1000.0)
            regs[5 - start] = int(b.revert_s)
            return
        regs[_INV + 12 - start] = _i16(-b.power_kw * 1000.0 / 10**W_SF)
        regs[_STOR + 6 - start] = round(b.soc_frac * 100.0 / 10**CHASTATE_SF)
