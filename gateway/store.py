"""Persistence of the device registry: SQLite in the state directory, written behind on one thread.

Theory of operation
-------------------
The registry (``gateway/devices.py``) owns the live state; this module only makes it survive a restart. At start
the registry calls :meth:`Store.open` and :meth:`Store.load`; afterwards it hands over every change with the
``put_*``/``delete_*`` methods, which run on the event loop, never touch the disk and never block.

*Write-behind.* A change is recorded as the latest state per key in ``Store._pending``: one :class:`_DeviceOps` per
device id holding, in the order they are applied, "delete the device (its channels go with it)", "delete all its
channels" (a new catalog replaces the old set), "upsert the device row", and one upsert-or-delete per channel id.
Later puts overwrite earlier ones, so 100 keepalives of one device between two flushes are one row write. A
background task writes the pending state ``flush_interval`` seconds after the first change, as ONE transaction
(one batch), on the store's own thread; :meth:`Store.flush` does the same at once and waits for it.

*One thread.* All SQLite work (open, migrations, load, writes, close) runs on a dedicated single-worker
``ThreadPoolExecutor`` that owns the connection (:class:`_Db`). The loop only swaps the pending dict for an empty
one and awaits a future; ``sqlite3`` releases the GIL while SQLite works, and the Python part of building rows is
preempted every ``sys.getswitchinterval()``, so the loop keeps running during a big write. At most one batch is in
flight, so batches commit in the order they were taken.

*Records are read when written, not when put.* The store keeps references to the records it is given (no copies:
a 300,000-channel catalog is not duplicated on the loop). The registry may keep mutating its records, on the loop,
as long as it puts a record again after changing it; a row read half-way through a mutation is then rewritten with
the final state by the batch that follows.

*Memory* is bounded by the registry, not by the rate of changes or by how long the disk has been failing: pending
holds at most one entry per device and per channel id touched since the last committed batch, plus the one batch
in flight (references, not copies).

*Errors.* A batch that fails as a whole (disk full, I/O error, database locked by another process) is rolled back,
logged (logger ``gateway.store``), counted in ``errors`` and put back under any newer changes, to be retried: the
background task backs off from ``flush_interval`` doubling up to :data:`MAX_RETRY_DELAY`, so it neither spins nor
loses anything. A batch that fails because of one unwritable record (a channel of a device the table does not
have, an integer too large for SQLite, a lone surrogate in a string) is written again item by item, each in a
savepoint; the bad items are logged, counted in ``dropped`` (and the batch in ``errors``) and the rest commits.

*Schema.* Versioned in the ``meta`` table (``schema_version``; 0 means an empty file). :data:`MIGRATIONS` is an
ordered list; migration *n* (1-based) takes the database from version n-1 to n, in one transaction with foreign
keys off (so a table rebuild does not cascade), checked with ``PRAGMA foreign_key_check`` before commit. Before
migrating a database that already has data, a copy is written beside it (``<file>.v<old>.bak``). A database with a
newer version than the code knows, a file that is not a database, or a database with tables but no ``meta`` (not
ours) is refused with :class:`StoreError` naming the path.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import structlog

__all__ = [
    "MAX_RETRY_DELAY",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "AlarmRecord",
    "ChannelRecord",
    "DeviceRecord",
    "Migration",
    "Store",
    "StoreError",
]

log = structlog.get_logger("gateway.store")


@dataclass(slots=True)
class DeviceRecord:
    """One device (camera, NVR, lower platform) as the registry last knew it."""

    device_id: str
    transport: str = "UDP"
    """``UDP`` or ``TCP``: how the device signals."""
    host: str = ""
    """Address the device was last seen from (signal there: NAT, RFC 3581 ``rport``)."""
    port: int = 0
    contact: str = ""
    """Contact URI of its REGISTER."""
    registered_at: float = 0.0
    """Wall clock (epoch seconds) of the last successful REGISTER."""
    expires_at: float = 0.0
    """Wall clock when that registration expires (0: unregistered)."""
    last_keepalive: float = 0.0
    """Wall clock of the last keepalive (or registration)."""
    online: bool = False
    name: str = ""
    manufacturer: str = ""
    model: str = ""
    firmware: str = ""
    charset: str = "GB2312"
    """The charset the device speaks (answer in it)."""
    catalog_sum: int = 0
    """SumNum of the last catalog."""
    catalog_complete: bool = False
    """The last catalog sync got every item."""
    catalog_synced_at: float = 0.0
    status: dict[str, str] = field(default_factory=dict)
    """Last DeviceStatus fields."""
    info: dict[str, str] = field(default_factory=dict)
    """Last DeviceInfo fields (all of them)."""
    provisioned: bool = False
    """Added or changed by an operator (REST API): it passes ``devices.allow`` and keeps its settings."""
    enabled: bool = True
    """False: its REGISTERs are refused (403) and it cannot stream."""
    password: str = ""
    """Its own digest password ('' : ``devices.passwords`` or ``sip.password``)."""


@dataclass(slots=True)
class ChannelRecord:
    """One catalog item of a device: a channel, a business group (215) or a virtual organisation (216)."""

    device_id: str
    channel_id: str
    kind: str = "channel"
    """``channel``, ``business_group`` or ``virtual_org``."""
    name: str = ""
    parent_id: str = ""
    status: str = ""
    """ON / OFF / VLOST / DEFECT ... as reported."""
    fields: dict[str, str] = field(default_factory=dict)
    """Every catalog item field as received, flattened (e.g. ``Info/PTZType``)."""
    updated_at: float = 0.0


@dataclass(slots=True)
class AlarmRecord:
    """One alarm a device reported (``<Notify><CmdType>Alarm``, ``gateway.alarms``)."""

    id: int
    """Assigned by the gateway, increasing: newest is highest."""
    device_id: str
    """The registered device that sent it (``From``)."""
    channel_id: str
    """The body's ``DeviceID``: the alarm source (often a channel or alarm input)."""
    priority: int
    """``AlarmPriority`` 1 (highest) .. 4."""
    method: int
    """``AlarmMethod`` 1 phone, 2 device, 3 SMS, 4 GPS, 5 video, 6 fault, 7 other."""
    alarm_time: str = ""
    """``AlarmTime`` as the device wrote it (its local time)."""
    alarm_type: int | None = None
    """``Info/AlarmType``, if given."""
    description: str = ""
    longitude: float | None = None
    latitude: float | None = None
    received_at: float = 0.0
    """Wall clock (epoch seconds) when the gateway received it."""
    sip_method: str = "MESSAGE"
    """``MESSAGE`` or ``NOTIFY``."""


class StoreError(Exception):
    """The store cannot be used (open, load, migrate) or a write failed; the message names the file."""


Migration = str | Callable[[sqlite3.Connection], None]
"""A SQL script, or a function given the connection inside the migration's transaction (it must not commit; use
``execute``, not ``executescript``, which commits)."""

_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE devices (
    device_id         TEXT PRIMARY KEY,
    transport         TEXT NOT NULL DEFAULT 'UDP',
    host              TEXT NOT NULL DEFAULT '',
    port              INTEGER NOT NULL DEFAULT 0,
    contact           TEXT NOT NULL DEFAULT '',
    registered_at     REAL NOT NULL DEFAULT 0,
    expires_at        REAL NOT NULL DEFAULT 0,
    last_keepalive    REAL NOT NULL DEFAULT 0,
    online            INTEGER NOT NULL DEFAULT 0,
    name              TEXT NOT NULL DEFAULT '',
    manufacturer      TEXT NOT NULL DEFAULT '',
    model             TEXT NOT NULL DEFAULT '',
    firmware          TEXT NOT NULL DEFAULT '',
    charset           TEXT NOT NULL DEFAULT 'GB2312',
    catalog_sum       INTEGER NOT NULL DEFAULT 0,
    catalog_complete  INTEGER NOT NULL DEFAULT 0,
    catalog_synced_at REAL NOT NULL DEFAULT 0,
    status            TEXT NOT NULL DEFAULT '{}',  -- JSON object: last DeviceStatus fields
    info              TEXT NOT NULL DEFAULT '{}'   -- JSON object: last DeviceInfo fields
);
CREATE TABLE channels (
    device_id  TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    channel_id TEXT NOT NULL,
    kind       TEXT NOT NULL DEFAULT 'channel',
    name       TEXT NOT NULL DEFAULT '',
    parent_id  TEXT NOT NULL DEFAULT '',
    status     TEXT NOT NULL DEFAULT '',
    fields     TEXT NOT NULL DEFAULT '{}',  -- JSON object: every catalog item field as received
    updated_at REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, channel_id)
);
-- A bare <channel_id> is accepted where it is unique (ARCHITECTURE.md).
CREATE INDEX channels_by_channel_id ON channels (channel_id);
"""

_V2 = """
ALTER TABLE devices ADD COLUMN provisioned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE devices ADD COLUMN password TEXT NOT NULL DEFAULT '';
"""

_V3 = """
CREATE TABLE alarms (
    id          INTEGER PRIMARY KEY,
    device_id   TEXT NOT NULL,
    channel_id  TEXT NOT NULL DEFAULT '',
    priority    INTEGER NOT NULL,
    method      INTEGER NOT NULL,
    alarm_time  TEXT NOT NULL DEFAULT '',
    alarm_type  INTEGER,
    description TEXT NOT NULL DEFAULT '',
    longitude   REAL,
    latitude    REAL,
    received_at REAL NOT NULL DEFAULT 0,
    sip_method  TEXT NOT NULL DEFAULT 'MESSAGE'
);
CREATE INDEX alarms_by_device ON alarms (device_id, id);
CREATE INDEX alarms_by_received_at ON alarms (received_at);
"""

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3)
"""Migration n (1-based) takes the schema from version n-1 to n. Append only; never edit a shipped one."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this code writes."""

MAX_RETRY_DELAY = 10.0
"""Seconds: the longest the background writer waits before retrying after failed batches."""

_LOAD_CHUNK = 5000
"""Rows fetched (and JSON columns parsed) at a time by ``load``."""

_BUSY_TIMEOUT = 5.0
"""Seconds SQLite waits for a lock held by another connection before a write fails (and is retried)."""

_DEVICE_COLUMNS = (
    "device_id", "transport", "host", "port", "contact", "registered_at", "expires_at", "last_keepalive",
    "online", "name", "manufacturer", "model", "firmware", "charset", "catalog_sum", "catalog_complete",
    "catalog_synced_at", "status", "info", "provisioned", "enabled", "password",
)  # fmt: skip
_CHANNEL_COLUMNS = ("device_id", "channel_id", "kind", "name", "parent_id", "status", "fields", "updated_at")


def _upsert_sql(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    # ON CONFLICT DO UPDATE, not INSERT OR REPLACE: REPLACE deletes the old row first, which would cascade to a
    # device's channels and move a channel to the end of the table (load order is catalog order).
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


_UPSERT_DEVICE = _upsert_sql("devices", _DEVICE_COLUMNS, ("device_id",))
_UPSERT_CHANNEL = _upsert_sql("channels", _CHANNEL_COLUMNS, ("device_id", "channel_id"))
_SELECT_DEVICES = f"SELECT {', '.join(_DEVICE_COLUMNS)} FROM devices ORDER BY rowid"
_SELECT_CHANNELS = f"SELECT {', '.join(_CHANNEL_COLUMNS)} FROM channels ORDER BY rowid"
_ALARM_COLUMNS = ("id", "device_id", "channel_id", "priority", "method", "alarm_time", "alarm_type", "description",
                  "longitude", "latitude", "received_at", "sip_method")
_INSERT_ALARM = (f"INSERT OR REPLACE INTO alarms ({', '.join(_ALARM_COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(_ALARM_COLUMNS))})")
# Retention: everything older than the newest ``retention`` rows (an index range, not a scan).
_TRIM_ALARMS = "DELETE FROM alarms WHERE id < (SELECT id FROM alarms ORDER BY id DESC LIMIT 1 OFFSET ?)"

_ITEM_ERRORS = (
    sqlite3.IntegrityError,  # a constraint: a channel of a device the table does not have
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,  # a value of a type SQLite cannot bind
    sqlite3.DataError,  # a value too big
    OverflowError,  # an int beyond 64 bits
    ValueError,  # UnicodeEncodeError: a lone surrogate; JSON with a circular reference
    TypeError,  # JSON: a dict key that is not a str, int, float or bool
)
"""Errors caused by one record, not by the disk: retrying the batch would fail the same way forever."""

_json_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def _dumps(value: dict[str, str]) -> str:
    return _json_encode(value) if value else "{}"


def _loads_many(texts: list[str]) -> list[dict[str, str]]:
    """Parse JSON objects, many per ``json.loads`` call: a little faster than one call each, and the dict keys of
    a chunk are shared objects (300,000 catalog items of 18 fields: 370 MB instead of 660 MB)."""
    try:
        values: list[dict[str, str]] = json.loads(f"[{','.join(texts)}]")
        if len(values) == len(texts):
            return values
    except ValueError:
        pass
    return [json.loads(t) for t in texts]  # a damaged value: this names it (ValueError)


def _device_row(r: DeviceRecord) -> tuple[object, ...]:
    return (
        r.device_id, r.transport, r.host, r.port, r.contact, r.registered_at, r.expires_at, r.last_keepalive,
        r.online, r.name, r.manufacturer, r.model, r.firmware, r.charset, r.catalog_sum, r.catalog_complete,
        r.catalog_synced_at, _dumps(r.status), _dumps(r.info), r.provisioned, r.enabled, r.password,
    )  # fmt: skip


def _alarm_row(r: AlarmRecord) -> tuple[object, ...]:
    return (r.id, r.device_id, r.channel_id, r.priority, r.method, r.alarm_time, r.alarm_type, r.description,
            r.longitude, r.latitude, r.received_at, r.sip_method)


def _channel_row(r: ChannelRecord) -> tuple[object, ...]:
    return (r.device_id, r.channel_id, r.kind, r.name, r.parent_id, r.status, _dumps(r.fields), r.updated_at)


def _statements(script: str) -> list[str]:
    """Split a SQL script into statements (``;`` inside literals and trigger bodies stays where it belongs)."""
    out: list[str] = []
    buf = ""
    for part in script.split(";"):
        buf += part + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                out.append(buf)
            buf = ""
    if buf.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement at the end of the script: {buf.strip()[:80]!r}")
    return out


@dataclass(slots=True)
class _DeviceOps:
    """What to write for one device, applied in field order: delete the device (its channels cascade), delete all
    its channels, upsert the device row, then upsert (record) or delete (``None``) single channels."""

    delete: bool = False
    replace_channels: bool = False
    device: DeviceRecord | None = None
    channels: dict[str, ChannelRecord | None] = field(default_factory=dict)

    def count(self) -> int:
        return self.delete + self.replace_channels + (self.device is not None) + len(self.channels)

    def then(self, later: _DeviceOps) -> _DeviceOps:
        """These operations followed by ``later``, coalesced (puts a failed batch back under newer changes)."""
        if later.delete:
            return later
        return _DeviceOps(
            delete=self.delete,
            replace_channels=self.replace_channels or later.replace_channels,
            device=later.device if later.device is not None else self.device,
            channels=later.channels if later.replace_channels else {**self.channels, **later.channels},
        )


class _Stage(NamedTuple):
    what: str
    sql: str
    items: list[Any]
    row: Callable[[Any], tuple[object, ...]]
    key: Callable[[Any], str]


def _stages(batch: dict[str, _DeviceOps], alarms: Sequence[AlarmRecord] = ()) -> list[_Stage]:
    ops = batch.items()
    # Order matters across devices only through the foreign key: devices are upserted before their channels.
    return [
        _Stage("delete device", "DELETE FROM devices WHERE device_id = ?",
               [d for d, o in ops if o.delete], lambda d: (d,), str),
        _Stage("replace channels", "DELETE FROM channels WHERE device_id = ?",
               [d for d, o in ops if o.replace_channels], lambda d: (d,), str),
        _Stage("put device", _UPSERT_DEVICE,
               [o.device for o in batch.values() if o.device is not None], _device_row, lambda r: r.device_id),
        _Stage("put channel", _UPSERT_CHANNEL,
               [c for o in batch.values() for c in o.channels.values() if c is not None], _channel_row,
               lambda r: f"{r.device_id}/{r.channel_id}"),
        _Stage("delete channel", "DELETE FROM channels WHERE device_id = ? AND channel_id = ?",
               [(d, c) for d, o in ops for c, r in o.channels.items() if r is None], tuple,
               lambda k: f"{k[0]}/{k[1]}"),
        _Stage("put alarm", _INSERT_ALARM, list(alarms), _alarm_row, lambda r: str(r.id)),
    ]  # fmt: skip


@dataclass(slots=True)
class _Outcome:
    """A committed batch: how many operations, and the ones dropped as unwritable (what, key, error)."""

    written: int
    dropped: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Opened:
    journal_mode: str
    version: int
    migrated_from: int
    backup: Path | None


class _Db:
    """The connection and everything done with it. Every method runs on the store's single writer thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self.ready = False  # opened and migrated: ours to write to

    def _connection(self) -> sqlite3.Connection:
        if self.conn is None:
            raise StoreError(f"{self.path}: the device store is closed")
        return self.conn

    # -- open and migrate ------------------------------------------------------------------------------------

    def open(self, migrations: Sequence[Migration]) -> _Opened:
        try:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT), never implicit.
            self.conn = conn = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            # Nothing is written before the file is known to be ours and not newer. The first statement reads the
            # header: a file that is not a database fails here.
            version = self._version()
            latest = len(migrations)
            if version > latest:
                raise StoreError(
                    f"{self.path}: schema version {version} is newer than this gateway knows (version {latest});"
                    " upgrade the gateway, or move the file aside to start with an empty registry"
                )
            journal_mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = OFF")  # during migrations; see _migrate
            backup = self._backup(version) if 0 < version < latest else None
            for n in range(version + 1, latest + 1):
                self._migrate(n, migrations[n - 1])
            conn.execute("PRAGMA foreign_keys = ON")
            self.ready = True
            return _Opened(journal_mode, latest, version, backup)
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"{self.path}: cannot open the device store: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _version(self) -> int:
        conn = self._connection()
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if "meta" not in tables:
            if tables:
                raise StoreError(
                    f"{self.path}: not a gateway device store (it has tables {', '.join(sorted(tables)[:5])}"
                    " but no meta table)"
                )
            return 0
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        try:
            version = int(row[0]) if row is not None else -1
        except ValueError:
            version = -1
        if version < 0:
            found = row[0] if row is not None else None
            raise StoreError(f"{self.path}: meta table has no valid schema_version (found {found!r})")
        return version

    def _backup(self, version: int) -> Path:
        target = self.path.with_name(f"{self.path.name}.v{version}.bak")
        dest = sqlite3.connect(target)
        try:
            self._connection().backup(dest)
        finally:
            dest.close()
        return target

    def _migrate(self, n: int, migration: Migration) -> None:
        # Foreign keys are off (they cannot be switched inside a transaction): a table rebuild (create new, copy,
        # drop old, rename) must not cascade. The result is checked before it commits.
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if isinstance(migration, str):
                for statement in _statements(migration):
                    conn.execute(statement)
            else:
                migration(conn)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(n),),
            )
            violations = conn.execute("PRAGMA foreign_key_check").fetchmany(3)
            if violations:
                raise StoreError(f"foreign key violations {violations}")
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(
                f"{self.path}: migration to schema version {n} failed (the file is left at version {n - 1}): {exc}"
            ) from exc

    # -- load, write, close ----------------------------------------------------------------------------------

    def load(self) -> tuple[list[DeviceRecord], list[ChannelRecord]]:
        conn = self._connection()
        devices: list[DeviceRecord] = []
        channels: list[ChannelRecord] = []
        try:
            cursor = conn.execute(_SELECT_DEVICES)
            while rows := cursor.fetchmany(_LOAD_CHUNK):
                statuses = _loads_many([r[17] for r in rows])
                infos = _loads_many([r[18] for r in rows])
                devices += [
                    DeviceRecord(
                        d, tr, h, p, ct, reg, exp, ka, bool(on), n, man, mod, fw, cs, sm, bool(cc), sy, st, inf,
                        bool(pv), bool(en), pw,
                    )
                    for (d, tr, h, p, ct, reg, exp, ka, on, n, man, mod, fw, cs, sm, cc, sy, _, _, pv, en, pw), st,
                    inf in zip(rows, statuses, infos, strict=True)
                ]  # fmt: skip
            cursor = conn.execute(_SELECT_CHANNELS)
            while rows := cursor.fetchmany(_LOAD_CHUNK):
                fields = _loads_many([r[6] for r in rows])
                channels += [
                    ChannelRecord(d, c, k, n, p, s, f, u)
                    for (d, c, k, n, p, s, _, u), f in zip(rows, fields, strict=True)
                ]
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"{self.path}: cannot load the device store: {exc}") from exc
        return devices, channels

    def write(self, batch: dict[str, _DeviceOps], alarms: Sequence[AlarmRecord] = (),
              alarm_retention: int = 0) -> _Outcome:
        """Write a batch (and new alarms, then trim them to ``alarm_retention`` rows) in one transaction; on an
        item error, again item by item (the bad ones dropped).

        Raises (after rolling back) on anything else: the caller keeps the batch and retries it.
        """
        conn = self._connection()
        stages = _stages(batch, alarms)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stage in stages:
                conn.executemany(stage.sql, map(stage.row, stage.items))
            if alarms and alarm_retention > 0:
                conn.execute(_TRIM_ALARMS, (alarm_retention - 1,))
            conn.execute("COMMIT")
            return _Outcome(sum(len(s.items) for s in stages))
        except _ITEM_ERRORS:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return self._write_items(stages)

    def _write_items(self, stages: list[_Stage]) -> _Outcome:
        conn = self._connection()
        outcome = _Outcome(0)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stage in stages:
                for item in stage.items:
                    conn.execute("SAVEPOINT item")
                    try:
                        conn.execute(stage.sql, stage.row(item))
                        outcome.written += 1
                    except _ITEM_ERRORS as exc:
                        conn.execute("ROLLBACK TO item")
                        outcome.dropped.append((stage.what, stage.key(item), f"{type(exc).__name__}: {exc}"))
                    conn.execute("RELEASE item")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcome

    def last_alarm_id(self) -> int:
        row = self._connection().execute("SELECT max(id) FROM alarms").fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    def query_alarms(self, device_id: str | None, since: float | None, until: float | None,
                     priority: int | None, limit: int) -> list[AlarmRecord]:
        where: list[str] = []
        args: list[object] = []
        for cond, value in (("device_id = ?", device_id), ("received_at >= ?", since),
                            ("received_at <= ?", until), ("priority = ?", priority)):
            if value is not None:
                where.append(cond)
                args.append(value)
        sql = f"SELECT {', '.join(_ALARM_COLUMNS)} FROM alarms"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        try:
            rows = self._connection().execute(sql, (*args, limit)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read alarms: {exc}") from exc
        return [AlarmRecord(*row) for row in rows]

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if self.ready:  # never write to a file we refused
            self.ready = False
            try:
                conn.execute("PRAGMA optimize")
            except sqlite3.Error as exc:
                log.warning("device store optimize failed", path=str(self.path), error=str(exc))
        conn.close()  # the last connection: checkpoints the WAL and removes -wal/-shm


class Store:
    """The device registry's SQLite file, written behind (see the module docstring).

    ``await open()``, ``await load()``, then ``put_*``/``delete_*`` from the loop at any rate; ``await close()``
    at shutdown. Counters: ``writes`` (committed batches), ``errors`` (failed batches, and batches that dropped
    records), ``dropped`` (records discarded as unwritable).
    """

    def __init__(
        self, path: Path, *, flush_interval: float = 0.2, migrations: Sequence[Migration] = MIGRATIONS,
        alarm_retention: int = 100_000,
    ) -> None:
        """:param path: the SQLite file (its directory must exist).
        :param flush_interval: seconds between the first pending change and its write (the coalescing window).
        :param migrations: the schema history; tests pass a longer one.
        :param alarm_retention: alarm rows kept; older ones are deleted as new ones are written.
        """
        if not flush_interval >= 0:
            raise ValueError(f"flush_interval must be >= 0, not {flush_interval!r}")
        self.path = Path(path)
        self.writes = 0
        self.errors = 0
        self.dropped = 0
        self._flush_interval = flush_interval
        self._migrations = tuple(migrations)
        self._pending: dict[str, _DeviceOps] = {}
        self._alarms: list[AlarmRecord] = []  # new alarms not yet written (at most alarm_retention)
        self._inflight_alarms: list[AlarmRecord] = []
        self.alarm_retention = alarm_retention
        self._dirty = asyncio.Event()  # set by every change; the background writer waits on it
        self._inflight: asyncio.Future[_Outcome] | None = None
        self._inflight_count = 0
        self._db: _Db | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the file, switch to WAL, migrate the schema, start the background writer.

        :raises StoreError: the file is unusable (not a database, newer schema, not ours, a failed migration,
            missing directory, no permission); the message names the path and the reason.
        """
        if self._db is not None or self._executor is not None or self._closing is not None:
            raise StoreError(f"{self.path}: the device store can be opened once")
        loop = asyncio.get_running_loop()
        self._executor = executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-store")
        db = _Db(self.path)
        try:
            opened = await loop.run_in_executor(executor, db.open, self._migrations)
        except BaseException:
            # Also when cancelled: the executor runs this close after the open, whatever the open did.
            executor.submit(db.close)
            executor.shutdown(wait=False)
            raise
        self._db = db
        log.info(
            "device store open",
            path=str(self.path),
            schema_version=opened.version,
            migrated_from=opened.migrated_from,
            backup=str(opened.backup) if opened.backup else None,
        )
        if opened.journal_mode.lower() != "wal":
            log.warning("device store not in WAL mode", path=str(self.path), journal_mode=opened.journal_mode)
        self._task = loop.create_task(self._writer(), name="gateway-store-writer")

    async def close(self) -> None:
        """Flush, stop the background writer, close the file. Safe to call twice, before ``open()`` and after a
        failed one. Never raises for a failed final write: that is logged with the number of changes lost."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(), name="gateway-store-close")
        # Shielded: a caller cancelled (shutdown deadline) does not leave the file half-closed.
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        if self._task is not None:
            self._task.cancel()  # at an await: a batch in flight carries on and is settled by its callback
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._db is not None:
            try:
                await self._write_now()
            except StoreError as exc:
                log.error("device store closed with changes lost", path=str(self.path), lost=self.pending,
                          error=str(exc))
            db, self._db = self._db, None
            assert self._executor is not None
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
            log.info("device store closed", path=str(self.path), writes=self.writes, errors=self.errors)
        elif self._pending:
            log.warning("device store closed before it was open", path=str(self.path), lost=self.pending)
        if self._executor is not None:
            self._executor.shutdown(wait=False)  # idle by now: the worker exits on its own
            self._executor = None

    # -- reading ---------------------------------------------------------------------------------------------

    async def load(self) -> tuple[list[DeviceRecord], list[ChannelRecord]]:
        """Every device and channel in the file (after writing what is pending), in insertion order."""
        await self.flush()
        db, executor = self._db, self._executor
        if db is None or executor is None:
            raise StoreError(f"{self.path}: the device store is not open")
        started = time.perf_counter()
        devices, channels = await asyncio.get_running_loop().run_in_executor(executor, db.load)
        log.info("device store loaded", path=str(self.path), devices=len(devices), channels=len(channels),
                 seconds=round(time.perf_counter() - started, 3))
        return devices, channels

    async def last_alarm_id(self) -> int:
        """The highest alarm id in the file (0 when none): new ids continue from it."""
        db, executor = self._db, self._executor
        if db is None or executor is None:
            raise StoreError(f"{self.path}: the device store is not open")
        return await asyncio.get_running_loop().run_in_executor(executor, db.last_alarm_id)

    async def alarms(self, *, device_id: str | None = None, since: float | None = None, until: float | None = None,
                     priority: int | None = None, limit: int = 100) -> list[AlarmRecord]:
        """Stored alarms, newest first, filtered (``since``/``until``: ``received_at``, inclusive). Alarms not yet
        written are included (the pending ones are written first)."""
        await self.flush()
        db, executor = self._db, self._executor
        if db is None or executor is None:
            raise StoreError(f"{self.path}: the device store is not open")
        return await asyncio.get_running_loop().run_in_executor(
            executor, db.query_alarms, device_id, since, until, priority, limit)

    # -- changes (on the loop; never block) ------------------------------------------------------------------

    def put_alarm(self, rec: AlarmRecord) -> None:
        """Append an alarm (written with the next batch). Pending alarms beyond ``alarm_retention`` (the disk has
        been failing for long) drop the oldest: the table would not keep them anyway."""
        if self._closing is not None:
            raise StoreError(f"{self.path}: the device store is closed")
        self._alarms.append(rec)
        if len(self._alarms) > self.alarm_retention:
            del self._alarms[: len(self._alarms) - self.alarm_retention]
            self.dropped += 1
        self._dirty.set()

    def put_device(self, rec: DeviceRecord) -> None:
        """Upsert a device row (its channels are untouched). Only the latest state per device is written."""
        self._ops(rec.device_id).device = rec

    def put_channels(self, device_id: str, channels: list[ChannelRecord]) -> None:
        """Replace the device's whole channel set (a catalog sync result)."""
        stray = next((c for c in channels if c.device_id != device_id), None)
        if stray is not None:
            raise ValueError(f"channel {stray.device_id}/{stray.channel_id} given as a channel of {device_id}")
        ops = self._ops(device_id)
        ops.replace_channels = True
        ops.channels = {c.channel_id: c for c in channels}

    def put_channel(self, rec: ChannelRecord) -> None:
        """Upsert one channel (a catalog NOTIFY); the device must be in the store or put before."""
        self._ops(rec.device_id).channels[rec.channel_id] = rec

    def delete_channel(self, device_id: str, channel_id: str) -> None:
        self._ops(device_id).channels[channel_id] = None

    def delete_device(self, device_id: str) -> None:
        """Delete the device and its channels (earlier pending changes to it are dropped)."""
        self._ops(device_id)  # checks the store is not closed, wakes the writer
        self._pending[device_id] = _DeviceOps(delete=True)

    def _ops(self, device_id: str) -> _DeviceOps:
        if self._closing is not None:
            raise StoreError(f"{self.path}: the device store is closed")
        ops = self._pending.get(device_id)
        if ops is None:
            ops = self._pending[device_id] = _DeviceOps()
        self._dirty.set()
        return ops

    @property
    def pending(self) -> int:
        """Operations not yet committed: pending changes plus the batch being written."""
        return sum(o.count() for o in self._pending.values()) + len(self._alarms) + self._inflight_count

    # -- writing ---------------------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write everything pending now, and wait until it is committed.

        :raises StoreError: the write failed; the changes stay pending and are retried.
        """
        await self._write_now()

    async def _write_now(self) -> None:
        # One batch in flight at a time, so batches commit in the order they were taken. asyncio.wait neither
        # raises the other batch's error nor cancels it when we are cancelled.
        while self._inflight is not None:
            await asyncio.wait({self._inflight})
        db, executor = self._db, self._executor
        if db is None or executor is None:
            raise StoreError(f"{self.path}: the device store is not open")
        if not self._pending and not self._alarms:
            return
        batch, self._pending = self._pending, {}
        alarms, self._alarms = self._alarms, []
        self._inflight_alarms = alarms
        self._inflight_count = sum(o.count() for o in batch.values()) + len(alarms)
        fut = asyncio.get_running_loop().run_in_executor(executor, db.write, batch, alarms, self.alarm_retention)
        self._inflight = fut
        # The outcome is settled by a callback, so a cancelled caller loses nothing.
        fut.add_done_callback(functools.partial(self._settle, batch))
        await asyncio.wait({fut})
        exc = fut.exception()
        if exc is not None:
            raise StoreError(f"{self.path}: write failed, changes kept for a retry: {exc}") from exc

    def _settle(self, batch: dict[str, _DeviceOps], fut: asyncio.Future[_Outcome]) -> None:
        count, self._inflight, self._inflight_count = self._inflight_count, None, 0
        alarms, self._inflight_alarms = self._inflight_alarms, []
        exc = fut.exception()
        if exc is None:
            outcome = fut.result()
            self.writes += 1
            if outcome.dropped:
                self.errors += 1
                self.dropped += len(outcome.dropped)
                log.error("device store dropped unwritable records", path=str(self.path),
                          dropped=len(outcome.dropped), written=outcome.written, first=outcome.dropped[:5])
            return
        self.errors += 1
        self._alarms[:0] = alarms
        for device_id, ops in batch.items():
            newer = self._pending.get(device_id)
            self._pending[device_id] = ops if newer is None else ops.then(newer)
        if self._closing is None:
            self._dirty.set()
        log.error("device store write failed, will retry", path=str(self.path), operations=count,
                  error=f"{type(exc).__name__}: {exc}",
                  exc_info=None if isinstance(exc, sqlite3.Error) else exc)  # anything else is a bug

    async def _writer(self) -> None:
        delay = self._flush_interval
        while True:
            await self._dirty.wait()
            await asyncio.sleep(delay)
            self._dirty.clear()
            try:
                await self._write_now()
            except StoreError:  # logged and counted by _settle; the changes are pending again
                delay = min(max(delay, 0.05) * 2, MAX_RETRY_DELAY)
                self._dirty.set()
            else:
                delay = self._flush_interval
