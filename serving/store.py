"""Persistence of the live service: stations, transactions, meter readings and every decision.

SQLAlchemy over any URL; SQLite (WAL journal, ``synchronous=NORMAL``) by default. :class:`Store` is
synchronous and not thread-safe; the service calls it from one dedicated worker thread
(:class:`AsyncStore`) so the event loop never blocks on the disk. Everything a restart needs (open
transactions and their meter registers) is committed before the station gets its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    DateTime,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

T = TypeVar("T")


class Base(DeclarativeBase):
    pass


class StationRow(Base):
    __tablename__ = "stations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ocpp_version: Mapped[str | None] = mapped_column(String(8))
    vendor: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(64))
    last_boot: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TransactionRow(Base):
    __tablename__ = "transactions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    station_id: Mapped[str] = mapped_column(String(64), index=True)
    connector_id: Mapped[int] = mapped_column(Integer)
    charger_id: Mapped[str] = mapped_column(String(64))
    ocpp_tx_id: Mapped[str] = mapped_column(String(64), index=True)
    id_tag: Mapped[str | None] = mapped_column(String(64))
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    meter_start_wh: Mapped[float] = mapped_column(Float, default=0.0)
    meter_last_wh: Mapped[float] = mapped_column(Float, default=0.0)
    energy_asked_kwh: Mapped[float | None] = mapped_column(Float)
    departure: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ev_max_kw: Mapped[float | None] = mapped_column(Float)
    stop_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    meter_stop_wh: Mapped[float | None] = mapped_column(Float)
    stop_reason: Mapped[str | None] = mapped_column(String(32))


class V2GModeRow(Base):
    """The V2G control mode of a transaction, and why, each time it was decided (a table of its own, so
    a database of an earlier version gains it at start without a migration)."""

    __tablename__ = "transaction_v2g_modes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[int] = mapped_column(Integer, index=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    mode: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(64))


class MeterReadingRow(Base):
    __tablename__ = "meter_readings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    source: Mapped[str] = mapped_column(String(16))
    """'site' (grid meter) or 'charger'"""
    charger_id: Mapped[str | None] = mapped_column(String(64))
    power_kw: Mapped[float | None] = mapped_column(Float)
    energy_wh: Mapped[float | None] = mapped_column(Float)
    pv_kw: Mapped[float | None] = mapped_column(Float)


class DecisionRow(Base):
    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    cycle: Mapped[int] = mapped_column(Integer)
    policy: Mapped[str] = mapped_column(String(64))
    fallback_reason: Mapped[str | None] = mapped_column(String(64))
    meter_stale: Mapped[int] = mapped_column(Integer, default=0)
    site_import_kw: Mapped[float | None] = mapped_column(Float)
    planned_import_kw: Mapped[float | None] = mapped_column(Float)
    import_limit_kw: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    active: Mapped[int] = mapped_column(Integer)
    profiles_sent: Mapped[int] = mapped_column(Integer)
    limits_json: Mapped[str] = mapped_column(Text)
    """{charger_id: kW} for every running transaction"""
    offenders_json: Mapped[str] = mapped_column(Text, default="[]")


@dataclass(frozen=True)
class OpenTransaction:
    """A transaction still running at the last commit (what a restart resumes)."""

    id: int
    station_id: str
    connector_id: int
    charger_id: str
    ocpp_tx_id: str
    id_tag: str | None
    start_time: datetime
    meter_start_wh: float
    meter_last_wh: float
    energy_asked_kwh: float | None
    departure: datetime | None
    ev_max_kw: float | None


@dataclass(frozen=True)
class MeterSample:
    time: datetime
    source: str
    charger_id: str | None
    power_kw: float | None
    energy_wh: float | None = None
    pv_kw: float | None = None


@dataclass(frozen=True)
class DecisionRecord:
    time: datetime
    cycle: int
    policy: str
    fallback_reason: str | None
    meter_stale: bool
    site_import_kw: float | None
    planned_import_kw: float | None
    import_limit_kw: float
    latency_ms: float
    active: int
    profiles_sent: int
    limits_kw: dict[str, float]
    offenders: tuple[str, ...]


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their folder created and the WAL journal."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

    return engine


class Store:
    """Synchronous persistence API (call from one thread)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def journal_mode(self) -> str:
        with self.engine.connect() as conn:
            return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())

    # ---------------------------------------------------------------- stations

    def station_seen(
        self,
        station_id: str,
        ocpp_version: str | None = None,
        vendor: str | None = None,
        model: str | None = None,
        booted: bool = False,
        now: datetime | None = None,
    ) -> None:
        t = now or datetime.now(UTC)
        with self._sessions.begin() as s:
            row = s.get(StationRow, station_id)
            if row is None:
                row = StationRow(id=station_id)
                s.add(row)
            row.last_seen = t
            if ocpp_version:
                row.ocpp_version = ocpp_version
            if vendor:
                row.vendor = vendor
            if model:
                row.model = model
            if booted:
                row.last_boot = t

    def stations(self) -> list[dict[str, object]]:
        with self._sessions() as s:
            rows = s.scalars(select(StationRow).order_by(StationRow.id)).all()
            return [
                {
                    "id": r.id,
                    "ocpp_version": r.ocpp_version,
                    "vendor": r.vendor,
                    "model": r.model,
                    "last_boot": _iso(r.last_boot),
                    "last_seen": _iso(r.last_seen),
                }
                for r in rows
            ]

    # ---------------------------------------------------------------- transactions

    def start_transaction(
        self,
        station_id: str,
        connector_id: int,
        charger_id: str,
        ocpp_tx_id: str | None,
        id_tag: str | None,
        start_time: datetime,
        meter_start_wh: float,
    ) -> OpenTransaction:
        """Record a started transaction; ``ocpp_tx_id=None`` (1.6) uses the row id as the OCPP id.

        A 2.0.1 transaction id already open is returned as is (stations resend Started after a reconnect).
        """
        with self._sessions.begin() as s:
            if ocpp_tx_id is not None:
                existing = s.scalars(
                    select(TransactionRow).where(
                        TransactionRow.station_id == station_id,
                        TransactionRow.ocpp_tx_id == ocpp_tx_id,
                        TransactionRow.stop_time.is_(None),
                    )
                ).first()
                if existing is not None:
                    return _open(existing)
            row = TransactionRow(
                station_id=station_id,
                connector_id=connector_id,
                charger_id=charger_id,
                ocpp_tx_id=ocpp_tx_id or "",
                id_tag=id_tag,
                start_time=start_time,
                meter_start_wh=meter_start_wh,
                meter_last_wh=meter_start_wh,
            )
            s.add(row)
            s.flush()
            if ocpp_tx_id is None:
                row.ocpp_tx_id = str(row.id)
            return _open(row)

    def update_transaction(
        self,
        tx_pk: int,
        meter_last_wh: float | None = None,
        energy_asked_kwh: float | None = None,
        departure: datetime | None = None,
        ev_max_kw: float | None = None,
    ) -> None:
        values: dict[str, object] = {}
        if meter_last_wh is not None:
            values["meter_last_wh"] = meter_last_wh
        if energy_asked_kwh is not None:
            values["energy_asked_kwh"] = energy_asked_kwh
        if departure is not None:
            values["departure"] = departure
        if ev_max_kw is not None:
            values["ev_max_kw"] = ev_max_kw
        if values:
            with self._sessions.begin() as s:
                s.execute(update(TransactionRow).where(TransactionRow.id == tx_pk).values(**values))

    def record_v2g_mode(self, tx_pk: int, mode: str, reason: str, now: datetime | None = None) -> None:
        """Store the V2G mode decided for a transaction and its reason."""
        with self._sessions.begin() as s:
            s.add(V2GModeRow(transaction_id=tx_pk, time=now or datetime.now(UTC), mode=mode, reason=reason))

    def v2g_modes(self, tx_pk: int) -> list[tuple[str, str]]:
        """``(mode, reason)`` of a transaction, oldest first."""
        with self._sessions() as s:
            rows = s.scalars(
                select(V2GModeRow).where(V2GModeRow.transaction_id == tx_pk).order_by(V2GModeRow.id)
            ).all()
            return [(r.mode, r.reason) for r in rows]

    def update_meter_registers(self, registers: Sequence[tuple[int, float]]) -> None:
        """Bulk update of ``(tx pk, meter_last_wh)``."""
        if not registers:
            return
        with self._sessions.begin() as s:
            s.execute(
                update(TransactionRow),
                [{"id": pk, "meter_last_wh": wh} for pk, wh in registers],
            )

    def stop_transaction(
        self, tx_pk: int, stop_time: datetime, meter_stop_wh: float | None, reason: str | None
    ) -> None:
        with self._sessions.begin() as s:
            row = s.get(TransactionRow, tx_pk)
            if row is None or row.stop_time is not None:
                return
            row.stop_time = stop_time
            row.meter_stop_wh = meter_stop_wh
            if meter_stop_wh is not None:
                row.meter_last_wh = meter_stop_wh
            row.stop_reason = reason

    def open_transactions(self) -> list[OpenTransaction]:
        with self._sessions() as s:
            rows = s.scalars(
                select(TransactionRow).where(TransactionRow.stop_time.is_(None)).order_by(TransactionRow.id)
            ).all()
            return [_open(r) for r in rows]

    def transactions(self, limit: int = 100) -> list[dict[str, object]]:
        with self._sessions() as s:
            rows = s.scalars(select(TransactionRow).order_by(TransactionRow.id.desc()).limit(limit)).all()
            return [
                {
                    "id": r.id,
                    "ocpp_tx_id": r.ocpp_tx_id,
                    "station_id": r.station_id,
                    "connector_id": r.connector_id,
                    "charger_id": r.charger_id,
                    "start_time": _iso(r.start_time),
                    "stop_time": _iso(r.stop_time),
                    "energy_kwh": (r.meter_last_wh - r.meter_start_wh) / 1000.0,
                    "stop_reason": r.stop_reason,
                }
                for r in rows
            ]

    # ---------------------------------------------------------------- meter and decisions

    def add_meter_samples(self, samples: Sequence[MeterSample]) -> None:
        if not samples:
            return
        rows = [
            {
                "time": m.time,
                "source": m.source,
                "charger_id": m.charger_id,
                "power_kw": m.power_kw,
                "energy_wh": m.energy_wh,
                "pv_kw": m.pv_kw,
            }
            for m in samples
        ]
        # one Core executemany in one transaction (no ORM objects: a cycle's readings in a few ms)
        with self.engine.begin() as conn:
            conn.execute(insert(MeterReadingRow), rows)

    def count_meter_samples(self, source: str | None = None) -> int:
        with self._sessions() as s:
            q = select(func.count(MeterReadingRow.id))
            if source is not None:
                q = q.where(MeterReadingRow.source == source)
            return int(s.scalar(q) or 0)

    def recent_meter_samples(self, source: str, since: datetime) -> list[MeterSample]:
        """Readings of ``source`` at or after ``since``, oldest first (the forecast's persisted history)."""
        with self._sessions() as s:
            rows = s.scalars(
                select(MeterReadingRow)
                .where(MeterReadingRow.source == source, MeterReadingRow.time >= since)
                .order_by(MeterReadingRow.time)
            ).all()
            return [
                MeterSample(_utc(r.time) or since, r.source, r.charger_id, r.power_kw, r.energy_wh, r.pv_kw)
                for r in rows
            ]

    def peak_site_import_since(self, since: datetime) -> float:
        with self._sessions() as s:
            v = s.scalar(
                select(func.max(MeterReadingRow.power_kw)).where(
                    MeterReadingRow.source == "site", MeterReadingRow.time >= since
                )
            )
            return float(v) if v is not None else 0.0

    def add_decision(self, d: DecisionRecord) -> None:
        with self._sessions.begin() as s:
            s.add(
                DecisionRow(
                    time=d.time,
                    cycle=d.cycle,
                    policy=d.policy,
                    fallback_reason=d.fallback_reason,
                    meter_stale=int(d.meter_stale),
                    site_import_kw=d.site_import_kw,
                    planned_import_kw=d.planned_import_kw,
                    import_limit_kw=d.import_limit_kw,
                    latency_ms=d.latency_ms,
                    active=d.active,
                    profiles_sent=d.profiles_sent,
                    limits_json=json.dumps(d.limits_kw, sort_keys=True),
                    offenders_json=json.dumps(list(d.offenders)),
                )
            )

    def decisions(self, limit: int = 50) -> list[dict[str, object]]:
        with self._sessions() as s:
            rows = s.scalars(select(DecisionRow).order_by(DecisionRow.id.desc()).limit(limit)).all()
            return [
                {
                    "id": r.id,
                    "time": _iso(r.time),
                    "cycle": r.cycle,
                    "policy": r.policy,
                    "fallback_reason": r.fallback_reason,
                    "meter_stale": bool(r.meter_stale),
                    "site_import_kw": r.site_import_kw,
                    "planned_import_kw": r.planned_import_kw,
                    "import_limit_kw": r.import_limit_kw,
                    "latency_ms": r.latency_ms,
                    "active": r.active,
                    "profiles_sent": r.profiles_sent,
                    "limits_kw": json.loads(r.limits_json),
                    "offenders": json.loads(r.offenders_json),
                }
                for r in rows
            ]

    def count_decisions(self) -> int:
        with self._sessions() as s:
            return int(s.scalar(select(func.count(DecisionRow.id))) or 0)


def _iso(t: datetime | None) -> str | None:
    t = _utc(t)
    return None if t is None else t.isoformat()


def _open(r: TransactionRow) -> OpenTransaction:
    start = _utc(r.start_time)
    assert start is not None
    return OpenTransaction(
        id=r.id,
        station_id=r.station_id,
        connector_id=r.connector_id,
        charger_id=r.charger_id,
        ocpp_tx_id=r.ocpp_tx_id,
        id_tag=r.id_tag,
        start_time=start,
        meter_start_wh=r.meter_start_wh,
        meter_last_wh=r.meter_last_wh,
        energy_asked_kwh=r.energy_asked_kwh,
        departure=_utc(r.departure),
        ev_max_kw=r.ev_max_kw,
    )


HOLD_MAX_S = 1.0
"""longest a store call waits for a cycle that holds the worker (:meth:`AsyncStore.held`), s"""


class AsyncStore:
    """Runs :class:`Store` calls on one worker thread so the event loop never waits on the disk."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evdlm-db")
        self._open = threading.Event()
        self._open.set()

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()

        def call() -> T:
            self._open.wait(HOLD_MAX_S)  # not while a cycle runs (at most HOLD_MAX_S)
            return fn(*args, **kwargs)

        return await loop.run_in_executor(self._pool, call)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """While the control cycle runs, the worker starts no store call (one already running finishes):
        its Python side (SQLAlchemy building a cycle's rows) takes the interpreter lock from the cycle in
        turns, and at 1,000 stations the cycles that met a flush of samples were the loop's slowest.
        A call waits at most :data:`HOLD_MAX_S` for a cycle; nothing is dropped, only delayed."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.store.close()
