"""Site meter sources besides OCPP: Modbus TCP (pymodbus) polling; HTTP push lives in :mod:`serving.api`.

Readings reach the service through one callback ``on_reading(import_kw, pv_kw, taken)`` (``taken``: UTC
time the request went out, the reading is no older; :mod:`serving.taken`); a source that stops
delivering simply stops calling it, and the controller treats the meter as stale after
``meter_timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from serving.config import MeterConfig

LOG = logging.getLogger("evdlm.serving.meter")

OnReading = Callable[[float, float | None, datetime | None], None]


def decode_float32(registers: Sequence[int]) -> float:
    """Two 16-bit registers, high word first, as an IEEE-754 big-endian float32."""
    if len(registers) != 2:
        raise ValueError(f"need 2 registers, got {len(registers)}")
    return float(struct.unpack(">f", struct.pack(">HH", registers[0] & 0xFFFF, registers[1] & 0xFFFF))[0])


def encode_float32(value: float) -> list[int]:
    """The inverse of :func:`decode_float32` (for tests and simulators)."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


@dataclass(frozen=True)
class ModbusReading:
    import_kw: float
    pv_kw: float | None


class ModbusMeter:
    """Polls a Modbus TCP energy meter every ``poll_interval_s``."""

    def __init__(self, cfg: MeterConfig, on_reading: OnReading) -> None:
        self.cfg = cfg
        self.on_reading = on_reading
        self.errors = 0

    async def read_once(self, client: object) -> ModbusReading:
        """Read import (and PV) from a connected ``AsyncModbusTcpClient``."""
        cfg = self.cfg

        async def read(address: int) -> float:
            rr = await client.read_holding_registers(address, count=2, device_id=cfg.unit_id)  # type: ignore[attr-defined]
            if rr.isError():
                raise OSError(f"modbus error reading register {address}: {rr}")
            return decode_float32(rr.registers) * cfg.scale / 1000.0

        import_kw = await read(cfg.import_register)
        pv_kw = None if cfg.pv_register is None else await read(cfg.pv_register)
        return ModbusReading(import_kw, pv_kw)

    async def run(self) -> None:
        from pymodbus.client import AsyncModbusTcpClient

        client = AsyncModbusTcpClient(self.cfg.host, port=self.cfg.port, timeout=2, retries=1)
        try:
            while True:
                try:
                    if not client.connected:
                        await client.connect()
                    asked = datetime.now(UTC)
                    reading = await self.read_once(client)
                    self.on_reading(reading.import_kw, reading.pv_kw, asked)
                except Exception as err:  # the meter going away must never stop the service
                    self.errors += 1
                    LOG.warning("modbus meter %s:%d: %s", self.cfg.host, self.cfg.port, err)
                await asyncio.sleep(self.cfg.poll_interval_s)
        finally:
            client.close()
