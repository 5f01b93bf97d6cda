"""The device store against real SQLite files in ``tmp_path``: round trips, write-behind, schema, failures."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import gateway.store as store_mod
from gateway.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    ChannelRecord,
    DeviceRecord,
    Migration,
    Store,
    StoreError,
)

DEV = "34020000001320000001"
NVR = "34020000001180000002"

# The v1 schema exactly as shipped, frozen here on purpose: when a v2 is added, test_opens_hand_written_v1_file
# becomes the test of the v1 -> v2 migration on a file the new code did not write.
V1_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE devices (
    device_id TEXT PRIMARY KEY, transport TEXT NOT NULL DEFAULT 'UDP', host TEXT NOT NULL DEFAULT '',
    port INTEGER NOT NULL DEFAULT 0, contact TEXT NOT NULL DEFAULT '', registered_at REAL NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL DEFAULT 0, last_keepalive REAL NOT NULL DEFAULT 0, online INTEGER NOT NULL DEFAULT 0,
    name TEXT NOT NULL DEFAULT '', manufacturer TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '',
    firmware TEXT NOT NULL DEFAULT '', charset TEXT NOT NULL DEFAULT 'GB2312',
    catalog_sum INTEGER NOT NULL DEFAULT 0, catalog_complete INTEGER NOT NULL DEFAULT 0,
    catalog_synced_at REAL NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT '{}', info TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE channels (
    device_id TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE, channel_id TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'channel', name TEXT NOT NULL DEFAULT '', parent_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '', fields TEXT NOT NULL DEFAULT '{}', updated_at REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, channel_id)
);
CREATE INDEX channels_by_channel_id ON channels (channel_id);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO devices (device_id, transport, host, port, name, online, catalog_complete, info)
    VALUES ('34020000001320000001', 'TCP', '10.0.0.9', 5061, '老摄像机𠀀', 1, 1, '{"DeviceName":"老"}');
INSERT INTO channels (device_id, channel_id, name, status, fields)
    VALUES ('34020000001320000001', '34020000001310000001', '大门', 'ON', '{"Name":"大门","Info/PTZType":"1"}');
"""


def write_v1(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(V1_DDL)
    conn.close()


def device(device_id: str = DEV, **kw: Any) -> DeviceRecord:
    return DeviceRecord(device_id, **kw)


def channel(device_id: str, n: int, **kw: Any) -> ChannelRecord:
    return ChannelRecord(device_id, f"{device_id[:10]}131{n:07d}", **kw)


def raw(path: Path, sql: str, *args: Any) -> list[Any]:
    """Read the file behind the store's back (WAL: a second connection sees what is committed)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.sqlite3"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[Store]:
    # A long flush interval: tests call flush() themselves unless they test the background writer.
    s = Store(path, flush_interval=3600)
    await s.open()
    yield s
    await s.close()


async def reopen(s: Store, **kw: Any) -> tuple[Store, list[DeviceRecord], list[ChannelRecord]]:
    await s.close()
    s2 = Store(s.path, **kw)
    await s2.open()
    devices, channels = await s2.load()
    return s2, devices, channels


def test_columns_follow_the_dataclasses() -> None:
    assert store_mod._DEVICE_COLUMNS == tuple(f.name for f in dataclasses.fields(DeviceRecord))
    assert store_mod._CHANNEL_COLUMNS == tuple(f.name for f in dataclasses.fields(ChannelRecord))


# -- round trips -------------------------------------------------------------------------------------------------


async def test_round_trip_every_field(store: Store) -> None:
    dev = DeviceRecord(
        DEV, transport="TCP", host="203.0.113.7", port=15060, contact="<sip:34020000001320000001@10.0.0.2:5060>",
        registered_at=1_763_900_000.123456, expires_at=1_763_903_600.5, last_keepalive=1_763_900_060.25,
        online=True, name="南门摄像机 𠀀 (龘)", manufacturer="海康威视", model="DS-2CD3T46", firmware="V5.7.3 build",
        charset="GB18030", catalog_sum=3, catalog_complete=True, catalog_synced_at=1_763_900_001.75,
        status={"Online": "ONLINE", "Status": "OK", "Encode": "ON", "Record": "OFF"},
        info={"DeviceName": "南门", "Manufacturer": "海康威视", "Channel": "2", "Note": "引号\"和\\反斜杠 𠀀\n换行"},
    )  # fmt: skip
    plain = DeviceRecord(NVR)
    chans = [
        ChannelRecord(DEV, "34020000002150000001", "business_group", "业务分组", "", "", {"Name": "业务分组"}, 1.5),
        ChannelRecord(DEV, "34020000002160000001", "virtual_org", "虚拟组织", "34020000002150000001", "",
                      {"Name": "虚拟组织", "ParentID": "34020000002150000001"}, 2.5),
        ChannelRecord(DEV, "34020000001310000001", "channel", "通道一 𠀀", "34020000002160000001", "VLOST",
                      {"DeviceID": "34020000001310000001", "Name": "通道一 𠀀", "Info/PTZType": "1",
                       "Longitude": "118.38", "Address": "安徽省芜湖市"}, 3.25),
        ChannelRecord(NVR, "34020000001310000001"),  # the same factory channel id under another device
    ]  # fmt: skip
    store.put_device(dev)
    store.put_device(plain)
    store.put_channels(DEV, chans[:3])
    store.put_channel(chans[3])
    assert store.pending == 2 + 1 + 3 + 1  # two device rows, one channel-set replacement, four channels
    await store.flush()
    assert store.pending == 0
    assert store.writes == 1
    assert store.errors == 0

    assert await store.load() == ([dev, plain], chans)  # insertion order: catalog order
    _, devices, channels = await reopen(store)
    assert devices == [dev, plain]
    assert channels == chans
    assert devices[0].status is not dev.status  # read back from the file, not the same objects
    # Readable JSON in the file (UTF-8, not \\u escapes), for an operator with the sqlite3 shell.
    assert raw(store.path, "SELECT info FROM devices WHERE device_id = ?", DEV)[0][0].startswith('{"DeviceName":"南门"')


async def test_file_settings(store: Store) -> None:
    assert raw(store.path, "PRAGMA journal_mode") == [("wal",)]
    assert raw(store.path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    indexes = {r[0] for r in raw(store.path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "channels_by_channel_id" in indexes
    plan = raw(store.path, "EXPLAIN QUERY PLAN SELECT * FROM channels WHERE channel_id = ?", "x")
    assert "channels_by_channel_id" in str(plan)


async def test_reopen_after_close_keeps_everything(path: Path) -> None:
    s = Store(path, flush_interval=3600)
    await s.open()
    for n in range(20):
        d = f"340200000013200000{n:02d}"
        s.put_device(device(d, name=f"设备{n}", online=n % 2 == 0, info={"n": str(n)}))
        s.put_channels(d, [channel(d, i, name=f"通道{i}", fields={"i": str(i)}) for i in range(5)])
    await s.close()  # close flushes
    assert s.writes == 1
    assert not path.with_name(path.name + "-wal").exists()  # checkpointed on close
    s2, devices, channels = await reopen(s)
    assert [d.name for d in devices] == [f"设备{n}" for n in range(20)]
    assert [d.online for d in devices] == [n % 2 == 0 for n in range(20)]
    assert len(channels) == 100
    assert channels[7] == channel("34020000001320000001", 2, name="通道2", fields={"i": "2"})
    await s2.close()


# -- write-behind semantics --------------------------------------------------------------------------------------


async def test_coalescing_many_puts_one_row(store: Store) -> None:
    rec = device(online=True)
    for n in range(100):
        rec.last_keepalive = 1000.0 + n
        store.put_device(rec)
    assert store.pending == 1
    await store.flush()
    assert store.writes == 1
    assert raw(store.path, "SELECT device_id, last_keepalive FROM devices") == [(DEV, 1099.0)]
    await store.flush()  # nothing pending: no batch
    assert store.writes == 1


async def test_latest_state_wins_even_with_a_new_object(store: Store) -> None:
    store.put_device(device(name="first"))
    store.put_device(device(name="second"))
    store.put_channel(channel(DEV, 1, status="ON"))
    store.put_channel(channel(DEV, 1, status="OFF"))
    assert store.pending == 2
    await store.flush()
    assert raw(store.path, "SELECT name FROM devices") == [("second",)]
    assert raw(store.path, "SELECT status FROM channels") == [("OFF",)]


async def test_background_writer_flushes_and_coalesces(path: Path) -> None:
    s = Store(path, flush_interval=0.05)
    await s.open()
    try:
        rec = device()
        for n in range(1000):  # a burst within one loop turn
            rec.last_keepalive = float(n)
            s.put_device(rec)
        await asyncio.sleep(0.3)
        assert s.writes == 1
        assert s.pending == 0
        assert raw(path, "SELECT last_keepalive FROM devices") == [(999.0,)]
        # A steady stream for ~0.3 s: about one batch per flush_interval, not one per put.
        deadline = time.monotonic() + 0.3
        puts = 0
        while time.monotonic() < deadline:
            rec.last_keepalive = float(puts)
            s.put_device(rec)
            puts += 1
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.2)
        assert s.pending == 0
        assert puts > 50
        assert 2 <= s.writes <= 12
        assert raw(path, "SELECT last_keepalive FROM devices") == [(float(puts - 1),)]
    finally:
        await s.close()


async def test_put_channels_replaces_the_set(store: Store) -> None:
    store.put_device(device())
    store.put_channels(DEV, [channel(DEV, i, name=f"old{i}") for i in (1, 2, 3)])
    await store.flush()
    store.put_channels(DEV, [channel(DEV, i, name=f"new{i}") for i in (3, 4)])
    await store.flush()
    _, channels = await store.load()
    assert channels == [channel(DEV, 3, name="new3"), channel(DEV, 4, name="new4")]

    # Within one batch: the later set wins; single changes after it apply on top of it.
    store.put_channels(DEV, [channel(DEV, 5)])
    store.put_channels(DEV, [channel(DEV, 6), channel(DEV, 7)])
    store.put_channel(channel(DEV, 8))
    store.delete_channel(DEV, channel(DEV, 6).channel_id)
    await store.flush()
    _, channels = await store.load()
    assert [c.channel_id[-1] for c in channels] == ["7", "8"]

    # An empty catalog empties the set; the device stays.
    store.put_channels(DEV, [])
    await store.flush()
    assert await store.load() == ([device()], [])


async def test_put_channel_and_delete_channel(store: Store) -> None:
    store.put_device(device())
    store.put_channels(DEV, [channel(DEV, i) for i in (1, 2, 3)])
    await store.flush()
    store.put_channel(channel(DEV, 2, status="OFF"))  # a NOTIFY: upsert in place, keeps its position
    store.put_channel(channel(DEV, 9))
    store.delete_channel(DEV, channel(DEV, 1).channel_id)
    store.delete_channel(DEV, "34020000001319999999")  # unknown: nothing to do
    await store.flush()
    _, channels = await store.load()
    assert channels == [channel(DEV, 2, status="OFF"), channel(DEV, 3), channel(DEV, 9)]


async def test_put_channels_refuses_a_stray_device_id(store: Store) -> None:
    with pytest.raises(ValueError, match=f"{NVR}/.* given as a channel of {DEV}"):
        store.put_channels(DEV, [channel(DEV, 1), channel(NVR, 2)])
    assert store.pending == 0


async def test_delete_device_cascades_to_channels(store: Store) -> None:
    store.put_device(device())
    store.put_device(device(NVR))
    store.put_channels(DEV, [channel(DEV, i) for i in range(10)])
    store.put_channels(NVR, [channel(NVR, 1)])
    await store.flush()
    store.delete_device(DEV)
    assert store.pending == 1
    await store.flush()
    assert raw(store.path, "SELECT count(*) FROM channels WHERE device_id = ?", DEV) == [(0,)]
    assert await store.load() == ([device(NVR)], [channel(NVR, 1)])


async def test_delete_and_put_in_one_batch(store: Store) -> None:
    store.put_device(device(name="old"))
    store.put_channels(DEV, [channel(DEV, 1)])
    await store.flush()
    # Deleted, then back with a new catalog: the old channels are gone, the new ones are there.
    store.put_channel(channel(DEV, 2))
    store.delete_device(DEV)
    store.put_device(device(name="new"))
    store.put_channel(channel(DEV, 3))
    await store.flush()
    assert await store.load() == ([device(name="new")], [channel(DEV, 3)])
    # Put, then deleted before the write: nothing is written for it.
    store.put_device(device(NVR))
    store.put_channel(channel(NVR, 1))
    store.delete_device(NVR)
    await store.flush()
    assert await store.load() == ([device(name="new")], [channel(DEV, 3)])


async def test_puts_before_open_are_written_after(path: Path) -> None:
    s = Store(path, flush_interval=0.01)
    s.put_device(device())
    with pytest.raises(StoreError, match="not open"):
        await s.flush()
    await s.open()
    await asyncio.sleep(0.2)
    assert s.pending == 0
    assert raw(path, "SELECT device_id FROM devices") == [(DEV,)]
    await s.close()


# -- lifecycle ---------------------------------------------------------------------------------------------------


async def test_close_is_idempotent_and_final(path: Path) -> None:
    s = Store(path)
    await s.close()  # never opened
    s = Store(path)
    await s.open()
    s.put_device(device())
    await asyncio.gather(s.close(), s.close())
    await s.close()
    assert s.writes == 1
    with pytest.raises(StoreError, match="closed"):
        s.put_device(device())
    with pytest.raises(StoreError, match="closed"):
        s.delete_device(DEV)
    with pytest.raises(StoreError, match="not open"):
        await s.flush()
    with pytest.raises(StoreError, match="opened once"):
        await s.open()
    assert raw(path, "SELECT device_id FROM devices") == [(DEV,)]


async def test_cancelled_close_still_closes(path: Path) -> None:
    s = Store(path, flush_interval=3600)
    await s.open()
    s.put_channels(DEV, [])
    s.put_device(device())
    task = asyncio.ensure_future(s.close())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await s.close()  # waits for the close that carried on
    assert s.pending == 0
    assert raw(path, "SELECT device_id FROM devices") == [(DEV,)]


async def test_cancelled_flush_loses_nothing(store: Store) -> None:
    store.put_device(device())
    store.put_channels(DEV, [channel(DEV, i) for i in range(20_000)])
    task = asyncio.ensure_future(store.flush())
    await asyncio.sleep(0)  # the batch is taken and in flight
    assert store.pending == 20_002  # in flight counts as pending until committed
    store.put_channel(channel(DEV, 20_000))  # a change during the write goes to the next batch
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.flush()  # waits for the batch in flight, then writes the new change
    assert store.pending == 0
    assert store.writes == 2
    assert raw(store.path, "SELECT count(*) FROM channels") == [(20_001,)]


# -- schema ------------------------------------------------------------------------------------------------------


async def test_new_file_and_empty_v0_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite3"
    empty.touch()  # a zero-byte file: SQLite's empty database
    tableless = tmp_path / "tableless.sqlite3"
    conn = sqlite3.connect(tableless)  # a valid database with a header and no tables: version 0
    conn.executescript("CREATE TABLE t (a); DROP TABLE t;")
    conn.close()
    for p in (tmp_path / "new.sqlite3", empty, tableless):
        s = Store(p)
        await s.open()
        assert await s.load() == ([], [])
        await s.close()
        assert raw(p, "SELECT value FROM meta") == [(str(SCHEMA_VERSION),)]
        assert not p.with_name(p.name + ".v0.bak").exists()  # nothing worth a backup


async def test_opens_hand_written_v1_file(path: Path) -> None:
    write_v1(path)
    s = Store(path)
    await s.open()
    devices, channels = await s.load()
    assert devices == [
        DeviceRecord(DEV, transport="TCP", host="10.0.0.9", port=5061, name="老摄像机𠀀", online=True,
                     catalog_complete=True, info={"DeviceName": "老"})
    ]  # fmt: skip
    assert channels == [
        ChannelRecord(DEV, "34020000001310000001", name="大门", status="ON",
                      fields={"Name": "大门", "Info/PTZType": "1"})
    ]  # fmt: skip
    await s.close()
    assert raw(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]


def _rebuild_devices_with_region(conn: sqlite3.Connection) -> None:
    # SQLite's 12-step table rebuild. With foreign keys on, DROP TABLE devices would delete every channel.
    ddl = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'devices'").fetchone()[0]
    ddl = ddl.replace("CREATE TABLE devices", "CREATE TABLE devices_new", 1)
    conn.execute(ddl[: ddl.rindex(")")] + ", region TEXT NOT NULL DEFAULT '')")
    conn.execute("INSERT INTO devices_new SELECT *, substr(device_id, 1, 6) FROM devices")
    conn.execute("DROP TABLE devices")
    conn.execute("ALTER TABLE devices_new RENAME TO devices")


async def test_migrates_v1_through_script_and_function_migrations(path: Path) -> None:
    write_v1(path)
    migrations: list[Migration] = [
        *MIGRATIONS,
        "ALTER TABLE devices ADD COLUMN note TEXT NOT NULL DEFAULT ''; -- a comment; with a semicolon\n"
        "UPDATE devices SET note = 'a;b';",
        _rebuild_devices_with_region,
    ]
    s = Store(path, migrations=migrations)
    with capture_logs() as logs:
        await s.open()
    await s.close()
    top = SCHEMA_VERSION + 2
    assert raw(path, "SELECT value FROM meta") == [(str(top),)]
    assert raw(path, "SELECT note, region FROM devices") == [("a;b", "340200")]
    assert raw(path, "SELECT count(*) FROM channels") == [(1,)]  # survived the rebuild of its parent table
    backup = path.with_name(f"{path.name}.v1.bak")
    assert raw(backup, "SELECT value FROM meta") == [("1",)]
    assert raw(backup, "SELECT count(*) FROM channels") == [(1,)]
    opened = [e for e in logs if e["event"] == "device store open"]
    assert opened[0]["migrated_from"] == 1
    assert opened[0]["schema_version"] == top
    assert opened[0]["backup"] == str(backup)


async def test_failed_migration_rolls_back(path: Path) -> None:
    write_v1(path)
    bad: list[Migration] = [*MIGRATIONS, "CREATE TABLE extra (a); INSERT INTO no_such_table VALUES (1);"]
    s = Store(path, migrations=bad)
    with pytest.raises(StoreError) as err:
        await s.open()
    message = str(err.value)
    assert str(path) in message
    assert f"migration to schema version {SCHEMA_VERSION + 1} failed" in message
    assert "no such table: no_such_table" in message
    await s.close()  # safe after a failed open
    assert raw(path, "SELECT value FROM meta") == [(str(SCHEMA_VERSION),)]  # the good migrations stay; the bad one rolled back
    assert raw(path, "SELECT name FROM sqlite_master WHERE name = 'extra'") == []

    def orphan(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO channels (device_id, channel_id) VALUES ('nobody', 'x')")

    s = Store(path, migrations=[*MIGRATIONS, orphan])
    with pytest.raises(StoreError, match="foreign key violations"):
        await s.open()
    assert raw(path, "SELECT count(*) FROM channels") == [(1,)]
    s = Store(path)  # the file is still good for the code that knows it
    await s.open()
    assert len((await s.load())[1]) == 1
    await s.close()


async def test_refuses_newer_schema(path: Path) -> None:
    write_v1(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99'")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    s = Store(path)
    with pytest.raises(StoreError) as err:
        await s.open()
    assert str(err.value) == (
        f"{path}: schema version 99 is newer than this gateway knows (version {SCHEMA_VERSION});"
        " upgrade the gateway, or move the file aside to start with an empty registry"
    )
    await s.close()
    assert path.read_bytes() == before  # not switched to WAL, not optimised: untouched
    assert not path.with_name(path.name + "-wal").exists()


async def test_refuses_a_database_that_is_not_ours(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE recordings (id); CREATE TABLE users (name);")
    conn.close()
    with pytest.raises(StoreError, match=r"not a gateway device store \(it has tables recordings, users"):
        await Store(path).open()
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")
    conn.close()
    with pytest.raises(StoreError, match="meta table has no valid schema_version"):
        await Store(path).open()


async def test_corrupt_file(path: Path) -> None:
    garbage = os.urandom(16384)
    path.write_bytes(garbage)
    s = Store(path)
    with pytest.raises(StoreError) as err:
        await s.open()
    assert str(err.value).startswith(f"{path}: cannot open the device store: ")
    assert "not a database" in str(err.value)
    await s.close()
    await s.close()
    assert path.read_bytes() == garbage  # left for the operator to look at


async def test_unusable_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "gateway.sqlite3"
    with pytest.raises(StoreError, match=f"^{missing}: cannot open the device store: unable to open"):
        await Store(missing).open()
    with pytest.raises(StoreError, match=f"^{tmp_path}: cannot open"):
        await Store(tmp_path).open()  # a directory


# -- failures while running --------------------------------------------------------------------------------------


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "_BUSY_TIMEOUT", 0.05)


def lock(path: Path) -> sqlite3.Connection:
    """Another process writing (say, an operator's sqlite3 shell): our writes fail with 'database is locked'."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


@pytest.mark.usefixtures("short_busy_timeout")
async def test_failed_write_is_kept_and_retried(path: Path) -> None:
    s = Store(path, flush_interval=3600)
    await s.open()
    s.put_device(device(name="v1"))
    s.put_device(device(NVR))
    s.put_channels(DEV, [channel(DEV, i) for i in (1, 2, 3)])
    blocker = lock(path)
    with capture_logs() as logs:
        with pytest.raises(StoreError, match=f"^{path}: write failed, changes kept for a retry: database is locked"):
            await s.flush()
    assert (s.writes, s.errors, s.pending) == (0, 1, 6)
    failed = [e for e in logs if e["event"] == "device store write failed, will retry"]
    assert failed[0]["log_level"] == "error"
    assert failed[0]["operations"] == 6

    # Newer changes go on top of the failed batch, per device.
    s.put_device(device(name="v2"))
    s.put_channel(channel(DEV, 4))
    s.delete_channel(DEV, channel(DEV, 2).channel_id)
    s.delete_device(NVR)
    with pytest.raises(StoreError):
        await s.flush()
    assert s.errors == 2
    blocker.execute("ROLLBACK")
    blocker.close()
    await s.flush()
    assert (s.writes, s.errors, s.pending) == (1, 2, 0)
    devices, channels = await s.load()
    assert devices == [device(name="v2")]
    assert [c.channel_id[-1] for c in channels] == ["1", "3", "4"]
    await s.close()


@pytest.mark.usefixtures("short_busy_timeout")
async def test_background_writer_backs_off_and_recovers(path: Path) -> None:
    s = Store(path, flush_interval=0.01)
    await s.open()
    blocker = lock(path)
    s.put_device(device())
    await asyncio.sleep(1.0)
    # Not spinning: retries at 0.1, 0.2, 0.4, 0.8 s... (each also waits the 0.05 s busy timeout).
    assert 2 <= s.errors <= 5
    assert s.pending == 1
    blocker.execute("ROLLBACK")
    blocker.close()
    for _ in range(60):
        if s.pending == 0:
            break
        await asyncio.sleep(0.05)
    assert s.pending == 0
    assert s.writes == 1
    assert raw(path, "SELECT device_id FROM devices") == [(DEV,)]
    await s.close()


@pytest.mark.usefixtures("short_busy_timeout")
async def test_close_with_a_failing_disk_logs_what_is_lost(path: Path) -> None:
    s = Store(path)
    await s.open()
    blocker = lock(path)
    s.put_device(device())
    with capture_logs() as logs:
        await s.close()  # does not raise
    blocker.close()
    lost = [e for e in logs if e["event"] == "device store closed with changes lost"]
    assert lost[0]["lost"] == 1


async def test_unwritable_records_are_dropped_not_retried_forever(store: Store) -> None:
    store.put_device(device(name="good"))
    store.put_channels(DEV, [channel(DEV, 1), channel(DEV, 2, name="bad \udc80 surrogate"), channel(DEV, 3)])
    store.put_device(device(NVR, port=2**70))  # beyond SQLite's 64-bit integers
    store.put_channel(channel("34020000001329999999", 1))  # a channel of a device the table does not have
    with capture_logs() as logs:
        await store.flush()
    assert (store.writes, store.errors, store.dropped, store.pending) == (1, 1, 3, 0)
    event = next(e for e in logs if e["event"] == "device store dropped unwritable records")
    assert event["dropped"] == 3
    assert {(what, key) for what, key, _ in event["first"]} == {
        ("put device", NVR),
        ("put channel", f"{DEV}/{channel(DEV, 2).channel_id}"),
        ("put channel", f"34020000001329999999/{channel('34020000001329999999', 1).channel_id}"),
    }
    assert await store.load() == ([device(name="good")], [channel(DEV, 1), channel(DEV, 3)])
    store.put_device(device(name="later"))
    await store.flush()
    assert (store.writes, store.errors) == (2, 1)


# -- the loop is never blocked -----------------------------------------------------------------------------------


async def test_big_flush_does_not_block_the_loop(store: Store) -> None:
    fields = {"Name": "通道", "Manufacturer": "Dahua", "Address": "安徽省芜湖市", "Info/PTZType": "1", "Status": "ON"}
    store.put_device(device())
    store.put_channels(DEV, [channel(DEV, i, name=f"通道{i}", fields=fields, updated_at=1.0) for i in range(50_000)])
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    done = False

    async def ticker() -> None:
        while not done:
            t0 = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - t0 - 0.01)

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    await store.flush()
    duration = time.perf_counter() - started
    done = True
    await tick
    assert raw(store.path, "SELECT count(*) FROM channels") == [(50_000,)]
    assert duration > 0.1, "the flush was too quick to tell anything"
    assert len(lags) >= 10
    assert max(lags) < duration / 4, (max(lags), duration)


async def test_load_many(store: Store) -> None:
    # A scaled-down version of the 10,000 x 30 figure in the report: 200 devices x 30 channels.
    for n in range(200):
        d = f"3402000000132{n:07d}"
        store.put_device(device(d, name=f"摄像机{n}", info={"Channel": "30"}))
        store.put_channels(d, [channel(d, i, fields={"Name": f"通道{i}", "Status": "ON"}) for i in range(30)])
    await store.flush()
    started = time.perf_counter()
    devices, channels = await store.load()
    assert time.perf_counter() - started < 2.0
    assert len(devices) == 200
    assert len(channels) == 6000
    assert channels[-1].fields == {"Name": "通道29", "Status": "ON"}


def test_loads_many_finds_the_damaged_value() -> None:
    assert store_mod._loads_many(['{"a":"1"}', "{}", '{"b":"𠀀"}']) == [{"a": "1"}, {}, {"b": "𠀀"}]
    # Values that would shift the others if parsed as one array are parsed one by one instead.
    for damaged in ('{}],[{}', "{}, {}", ""):
        with pytest.raises(ValueError):
            store_mod._loads_many(['{"a":"1"}', damaged, "{}"])
