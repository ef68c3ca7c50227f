"""Register maps of a site battery over Modbus TCP: where SoC, power and the setpoint live, and how to
turn registers into kW and back. Pure functions and small frozen classes; the I/O is :mod:`serving.battery`.

Two maps:

* **SunSpec** (:class:`SunSpecMap`): a device that starts its register space with ``"SunS"`` at
  ``sunspec_base`` (40000 by default, also tried at 0 and 50000) and lists its models as ``(id, length)``
  blocks. evdlm uses

  - model **124** (Basic Storage Controls), offsets from the model's first data register:
    ``0 WChaMax`` (uint16, W, ``WChaMax_SF`` at 16), ``3 StorCtl_Mod`` (bitfield: 1 charge limit,
    2 discharge limit), ``6 ChaState`` (uint16, % SoC, ``ChaState_SF`` at 20), ``10 OutWRte``
    (int16, % of WChaMax, ``InOutWRte_SF`` at 23), ``11 InWRte`` (int16, % of WChaMax),
    ``13 InOutWRte_RvrtTms`` (uint16, s: the device reverts to idle when the rates are not rewritten
    within it);
  - an inverter model **101/102/103** (or 111/112/113, float) for the battery inverter's AC power ``W``
    (offset 12, int16 with ``W_SF`` at 13; float32 at offset 22 in 111-113), positive = output = discharge.

  A setpoint of ``P`` kW (+ charge) collapses the charge/discharge window onto ``P``: ``InWRte =
  P / WChaMax``, ``OutWRte = -P / WChaMax`` (in %, a negative rate forces the opposite direction, as
  Fronius and SMA document), ``StorCtl_Mod = 3``; idle is both rates 0.

* **Configured registers** (:class:`RegisterMap`, from :class:`serving.config.BatteryRegisters`): holding
  registers for SoC (%), power (W, + charge unless ``power_sign`` is -1) and the setpoint (W, the same
  sign rule), each with its type (``uint16``, ``int16``, ``uint32``, ``int32``, ``float32``), word order
  and scale (engineering value = raw * scale).

Sign convention everywhere in evdlm: battery power in kW at the grid side, + charge, - discharge.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

RegisterType = Literal["uint16", "int16", "uint32", "int32", "float32"]
WordOrder = Literal["big", "little"]

SUNSPEC_MARKER = (0x5375, 0x6E53)  # "SunS"
SUNSPEC_BASES = (40000, 0, 50000)
SUNSPEC_END = 0xFFFF
SUNSPEC_NOT_IMPLEMENTED = {"uint16": 0xFFFF, "int16": 0x8000}

STORAGE_MODEL = 124
INVERTER_INT_MODELS = (101, 102, 103)
INVERTER_FLOAT_MODELS = (111, 112, 113)

# model 124 offsets (from the first data register, after ID and L)
M124_WCHAMAX = 0
M124_STORCTL_MOD = 3
M124_CHASTATE = 6
M124_OUTWRTE = 10
M124_INWRTE = 11
M124_RVRT_TMS = 13
M124_WCHAMAX_SF = 16
M124_CHASTATE_SF = 20
M124_INOUTWRTE_SF = 23
M124_LENGTH = 24
STORCTL_BOTH = 3
"""StorCtl_Mod: charge (bit 0) and discharge (bit 1) limits active"""

# inverter models: AC power
INV_W = 12
INV_W_SF = 13
INV_FLOAT_W = 22


def register_count(kind: RegisterType) -> int:
    return 1 if kind in ("uint16", "int16") else 2


def decode(registers: Sequence[int], kind: RegisterType, word_order: WordOrder = "big") -> float:
    """Registers (16-bit words) as a number of type ``kind``; 32-bit types take two words, the high word
    first unless ``word_order`` is ``little``."""
    need = register_count(kind)
    if len(registers) != need:
        raise ValueError(f"{kind} needs {need} registers, got {len(registers)}")
    words = [int(r) & 0xFFFF for r in registers]
    if need == 2 and word_order == "little":
        words.reverse()
    raw = struct.pack(">" + "H" * need, *words)
    fmt = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i", "float32": ">f"}[kind]
    return float(struct.unpack(fmt, raw)[0])


def encode(value: float, kind: RegisterType, word_order: WordOrder = "big") -> list[int]:
    """The inverse of :func:`decode`; integers are rounded to the nearest and clipped to the type's range."""
    if kind == "float32":
        raw = struct.pack(">f", value)
    else:
        lo, hi, fmt = {
            "uint16": (0, 0xFFFF, ">H"),
            "int16": (-0x8000, 0x7FFF, ">h"),
            "uint32": (0, 0xFFFFFFFF, ">I"),
            "int32": (-0x80000000, 0x7FFFFFFF, ">i"),
        }[kind]
        raw = struct.pack(fmt, int(min(max(round(value), lo), hi)))
    words = list(struct.unpack(">" + "H" * (len(raw) // 2), raw))
    if len(words) == 2 and word_order == "little":
        words.reverse()
    return words


@dataclass(frozen=True)
class BatteryReading:
    """One reading of the battery: state of charge and power at the grid side."""

    soc_frac: float
    """state of charge, 0..1"""
    power_kw: float
    """kW, + charge, - discharge"""


def check_reading(soc_pct: float, power_w: float) -> BatteryReading:
    """A reading from SoC in % and power in W, or :class:`ValueError` when it is not a usable value (not
    finite, SoC outside 0..100 %): a device answering nonsense is treated like one not answering."""
    if not (math.isfinite(soc_pct) and math.isfinite(power_w)):
        raise ValueError(f"battery reading not finite: soc {soc_pct} %, power {power_w} W")
    if not -0.5 <= soc_pct <= 100.5:
        raise ValueError(f"battery SoC {soc_pct} % outside 0..100 %")
    return BatteryReading(min(max(soc_pct / 100.0, 0.0), 1.0), power_w / 1000.0)


# --------------------------------------------------------------------------- configured registers


@dataclass(frozen=True)
class Register:
    """One value in holding registers: address, type, word order, raw * scale = engineering value."""

    address: int
    kind: RegisterType = "int16"
    scale: float = 1.0
    word_order: WordOrder = "big"

    @property
    def count(self) -> int:
        return register_count(self.kind)

    def value(self, registers: Sequence[int]) -> float:
        return decode(registers, self.kind, self.word_order) * self.scale

    def raw(self, value: float) -> list[int]:
        return encode(value / self.scale, self.kind, self.word_order)


@dataclass(frozen=True)
class RegisterMap:
    """SoC (%), power (W) and setpoint (W) registers of a battery without SunSpec."""

    soc_pct: Register
    power_w: Register
    setpoint_w: Register
    power_sign: float = 1.0
    """+1 when the device reports charging as positive power, -1 when it reports discharging positive"""
    setpoint_sign: float = 1.0
    """+1 when a positive setpoint charges, -1 when it discharges"""
    revert_s: Register | None = None
    """where the device's setpoint watchdog (s) is written at connect, if it has one"""

    def reading(self, soc_regs: Sequence[int], power_regs: Sequence[int]) -> BatteryReading:
        return check_reading(self.soc_pct.value(soc_regs), self.power_sign * self.power_w.value(power_regs))

    def setpoint_registers(self, kw: float) -> tuple[int, list[int]]:
        """``(address, registers)`` that command ``kw`` (+ charge)."""
        return self.setpoint_w.address, self.setpoint_w.raw(self.setpoint_sign * kw * 1000.0)


# --------------------------------------------------------------------------- SunSpec


def sunssf(register: int) -> int:
    """A SunSpec scale factor (int16 power of ten); 0x8000 (not implemented) counts as 0."""
    v = int(decode([register], "int16"))
    return 0 if v == -0x8000 else v


@dataclass(frozen=True)
class SunSpecMap:
    """Where a SunSpec device keeps its storage model (124) and its inverter's AC power."""

    storage: int
    """first data register of model 124 (after ID and L)"""
    inverter: int
    """first data register of the inverter model"""
    inverter_float: bool
    """True for models 111-113 (float32 W)"""

    @property
    def inverter_span(self) -> tuple[int, int]:
        """``(address, count)`` to read the inverter's W (and its scale factor)."""
        return (self.inverter + INV_FLOAT_W, 2) if self.inverter_float else (self.inverter + INV_W, 2)

    def reading(self, storage_regs: Sequence[int], inverter_regs: Sequence[int]) -> BatteryReading:
        """From the 24 registers of model 124 and the inverter's W span (:attr:`inverter_span`)."""
        if len(storage_regs) != M124_LENGTH:
            raise ValueError(f"model 124 has {M124_LENGTH} registers, got {len(storage_regs)}")
        raw_soc = storage_regs[M124_CHASTATE]
        if raw_soc == SUNSPEC_NOT_IMPLEMENTED["uint16"]:
            raise ValueError("model 124 ChaState is not implemented")
        soc_pct = raw_soc * 10.0 ** sunssf(storage_regs[M124_CHASTATE_SF])
        if self.inverter_float:
            w_out = decode(inverter_regs, "float32")
        else:
            if inverter_regs[0] == SUNSPEC_NOT_IMPLEMENTED["int16"]:
                raise ValueError("inverter W is not implemented")
            w_out = decode(inverter_regs[:1], "int16") * 10.0 ** sunssf(inverter_regs[1])
        return check_reading(soc_pct, -w_out)  # inverter output (+) is battery discharge

    @staticmethod
    def wchamax_w(storage_regs: Sequence[int]) -> float:
        """WChaMax in W (the reference of the rate percentages)."""
        return storage_regs[M124_WCHAMAX] * 10.0 ** sunssf(storage_regs[M124_WCHAMAX_SF])

    def setpoint_registers(self, kw: float, storage_regs: Sequence[int]) -> tuple[int, list[int]]:
        """``(address, registers)`` from OutWRte to InWRte (two registers) and StorCtl_Mod to write: the
        charge/discharge window collapsed onto ``kw`` (+ charge). Raises :class:`ValueError` when the
        device does not say its WChaMax."""
        wmax = self.wchamax_w(storage_regs)
        if not wmax > 0:
            raise ValueError("model 124 WChaMax is not set; cannot express a rate")
        sf = sunssf(storage_regs[M124_INOUTWRTE_SF])
        pct = kw * 1000.0 / wmax * 100.0
        raw = round(pct / 10.0**sf)
        raw = int(min(max(raw, -0x7FFF), 0x7FFF))
        return self.storage + M124_OUTWRTE, [*encode(-raw, "int16"), *encode(raw, "int16")]


def walk_models(blocks: Sequence[tuple[int, int, int]]) -> SunSpecMap:
    """The :class:`SunSpecMap` from ``(model id, length, first data register)`` of every model the device
    lists; :class:`ValueError` naming what is missing."""
    storage = inverter = None
    inv_float = False
    for mid, length, start in blocks:
        if mid == STORAGE_MODEL and length >= M124_LENGTH and storage is None:
            storage = start
        elif mid in INVERTER_INT_MODELS + INVERTER_FLOAT_MODELS and inverter is None:
            inverter, inv_float = start, mid in INVERTER_FLOAT_MODELS
    found = sorted({b[0] for b in blocks})
    if storage is None:
        raise ValueError(f"no SunSpec storage model 124 on the device (models: {found})")
    if inverter is None:
        raise ValueError(f"no SunSpec inverter model 101-103 or 111-113 on the device (models: {found})")
    return SunSpecMap(storage, inverter, inv_float)
