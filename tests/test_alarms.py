"""Alarms end to end: a simulated camera raises them (MESSAGE and NOTIFY); the gateway answers, sends the Response
MESSAGE, stores them in SQLite, lists them in the REST API, streams them as Server-Sent Events, counts them, and
rate-limits floods per device."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gw_util import running_gateway, sample
from site_util import simulated, site
from test_api import Http, metric
from test_streams import config, wait_until

import gateway.alarms as alarms_module
from gateway.alarms import SUBSCRIBER_QUEUE
from gateway.app import STORE_FILE
from gateway.store import AlarmRecord, Store
from sip import manscdp

pytestmark = pytest.mark.e2e

CHINESE = "移动侦测报警：东门"


def alarm_config(tmp_path: Path, rate: float = 1.0):  # type: ignore[no-untyped-def]
    base = config(tmp_path)
    return replace(base, devices=replace(base.devices, alarm_rate=rate))


async def next_event(resp: aiohttp.ClientResponse, timeout: float = 5.0) -> tuple[str, list[str]]:
    """The next SSE block: (event name or '' for a comment block, its lines)."""
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(resp.content.readline(), timeout)
        assert raw, "stream ended"
        line = raw.decode().rstrip("\n")
        if line == "":
            if lines:
                break
            continue
        lines.append(line)
    event = next((ln[len("event: "):] for ln in lines if ln.startswith("event: ")), "")
    return event, lines


def rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, device_id, channel_id, priority, method, description, alarm_type, "
                            "sip_method FROM alarms ORDER BY id").fetchall()
    finally:
        conn.close()


async def test_alarm_reaches_api_stream_metrics_store_and_device(tmp_path: Path) -> None:
    async with site(alarm_config(tmp_path, rate=100)) as (gw, sim, http):
        dev = sim.devices[0]
        before = sample("gb28181_alarms_total", {"priority": "1", "method": "5"})
        async with http.session.get(http.base + "/api/v1/alarms/stream") as stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            kind, _ = await next_event(stream)
            assert kind == ""  # the opening comment: the subscription is live
            resp = await dev.raise_alarm(1, 5, CHINESE, alarm_type=2, longitude=116.397, latitude=39.908,
                                         form="MESSAGE")
            assert resp is not None and resp.status == 200
            kind, lines = await next_event(stream)
            assert kind == "alarm"
            data = json.loads(next(ln[len("data: "):] for ln in lines if ln.startswith("data: ")))
        assert data["device_id"] == dev.device_id
        assert data["channel_id"] == dev.channel_ids[0]
        assert (data["priority"], data["method"], data["alarm_type"]) == (1, 5, 2)
        assert data["description"] == CHINESE  # GB2312 on the wire
        assert (data["longitude"], data["latitude"]) == (116.397, 39.908)
        assert data["sip_method"] == "MESSAGE"
        # The separate Response MESSAGE (§9.4.2) reaches the device.
        await wait_until(lambda: dev.alarm_responses)
        answer = dev.alarm_responses[0]
        assert (answer.root, answer.cmd_type, answer.device_id) == ("Response", "Alarm", dev.channel_ids[0])
        assert answer.text("Result") == "OK"
        assert answer.encoding == "GB2312"
        await wait_until(lambda: gw.alarms.responses_sent == 1)
        # REST API.
        status, body, _ = await http.get("/api/v1/alarms")
        assert status == 200 and body["total"] == 1
        assert body["alarms"][0] == data
        # Metrics.
        status, text, _ = await http.get("/metrics")
        assert metric(text, "gb28181_alarms_total", 'method="5",priority="1"') == before + 1
        # SQLite (the file itself).
        await gw.store.flush()
        stored = rows(tmp_path / STORE_FILE)
        assert stored == [(data["id"], dev.device_id, dev.channel_ids[0], 1, 5, CHINESE, 2, "MESSAGE")]
        # The NOTIFY form: 200 OK and stored, no Response MESSAGE.
        resp = await dev.raise_alarm(3, 2, "notify form", form="NOTIFY")
        assert resp is not None and resp.status == 200
        status, body, _ = await http.get("/api/v1/alarms")
        assert [a["sip_method"] for a in body["alarms"]] == ["NOTIFY", "MESSAGE"]  # newest first
        await asyncio.sleep(0.3)
        assert len(dev.alarm_responses) == 1


async def test_filters_and_bad_queries(tmp_path: Path) -> None:
    async with site(alarm_config(tmp_path, rate=1000), devices=2) as (gw, sim, http):
        await wait_until(lambda: all(gw.devices.get(d.device_id) is not None for d in sim.devices), 10)
        await wait_until(lambda: all(d.registered for d in sim.devices), 10)
        a, b = sim.devices
        for priority in (1, 2, 3):
            assert (await a.raise_alarm(priority, 5, f"a{priority}")).status == 200  # type: ignore[union-attr]
        middle = gw.alarms._wall()
        await asyncio.sleep(0.05)
        assert (await b.raise_alarm(1, 6, "b1")).status == 200  # type: ignore[union-attr]

        async def descriptions(query: str) -> list[str]:
            status, body, _ = await http.get("/api/v1/alarms" + query)
            assert status == 200, body
            return [x["description"] for x in body["alarms"]]

        assert await descriptions("") == ["b1", "a3", "a2", "a1"]
        assert await descriptions(f"?device_id={a.device_id}") == ["a3", "a2", "a1"]
        assert await descriptions("?priority=1") == ["b1", "a1"]
        assert await descriptions(f"?since={middle}") == ["b1"]
        assert await descriptions(f"?until={middle}") == ["a3", "a2", "a1"]
        assert await descriptions("?since=2000-01-01T00:00:00&limit=2") == ["b1", "a3"]
        assert await descriptions(f"?device_id={b.device_id}&priority=2") == []
        for query, reason in (("?priority=5", "priority must be 1..4"), ("?limit=0", "limit"),
                              ("?device_id=12", "device_id must be 20 digits"),
                              ("?since=yesterday", "since must be epoch seconds or ISO 8601")):
            status, body, _ = await http.get("/api/v1/alarms" + query)
            assert status == 400 and reason in body["error"]["reason"], (query, body)


async def test_flood_is_rate_limited_but_first_passes(tmp_path: Path) -> None:
    async with simulated(alarm_config(tmp_path, rate=1.0)) as (gw, sim):
        dev = sim.devices[0]
        suppressed = sample("gb28181_alarms_suppressed_total")
        tasks = [asyncio.create_task(dev.raise_alarm(2, 5, f"flood {i}")) for i in range(50)]
        answers = await asyncio.gather(*tasks)
        assert all(r is not None and r.status == 200 for r in answers)  # a device must not retransmit
        records = await gw.store.alarms(device_id=dev.device_id)
        assert 1 <= len(records) <= 2  # a token may refill if the burst takes over a second
        assert records[-1].description == "flood 0"  # the first of the burst always passes
        assert sample("gb28181_alarms_suppressed_total") - suppressed == 50 - len(records)
        assert gw.alarms._suppressed[dev.device_id] == 50 - len(records)  # logged once per period
        # After a quiet second a new burst's first alarm passes again.
        await asyncio.sleep(1.1)
        assert (await dev.raise_alarm(1, 5, "next burst")).status == 200  # type: ignore[union-attr]
        assert (await gw.store.alarms(limit=1))[0].description == "next burst"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"priority": 9, "method": 5}, "Alarm <AlarmPriority> must be 1..4"),
        ({"priority": 1, "method": 0}, "Alarm <AlarmMethod> must be 1..7"),
        ({"priority": 1, "method": 5, "alarm_time": "yesterday"}, "Alarm <AlarmTime> must be"),
        ({"priority": 1, "method": 5, "latitude": 123.0}, "Alarm <Latitude> must be a number"),
    ],
)
async def test_malformed_alarm_is_400(tmp_path: Path, fields: dict[str, Any], reason: str) -> None:
    async with simulated(alarm_config(tmp_path)) as (gw, sim):
        dev = sim.devices[0]
        priority, method = fields.pop("priority"), fields.pop("method")
        resp = await dev.raise_alarm(priority, method, "bad", **fields)
        assert resp is not None and resp.status == 400
        assert resp.reason.startswith(reason)
        assert await gw.store.alarms() == []
        assert dev.alarm_responses == []


async def test_stream_keepalive_and_slow_subscriber_dropped(tmp_path: Path) -> None:
    async with running_gateway(alarm_config(tmp_path)) as gw:
        gw.http.SSE_KEEPALIVE = 0.2  # type: ignore[misc]
        http = Http(gw.http.port)
        try:
            async with http.session.get(http.base + "/api/v1/alarms/stream") as stream:
                await next_event(stream)
                kind, lines = await next_event(stream, timeout=2)
                assert (kind, lines) == ("", [": keepalive"])
            slow = gw.alarms.subscribe()
            rec = AlarmRecord(id=1, device_id="34020000001320000001", channel_id="", priority=1, method=5)
            for _ in range(SUBSCRIBER_QUEUE + 1):
                gw.alarms._publish(rec)
            assert slow.dropped and gw.alarms.subscribers == 0
            assert slow.queue.qsize() == 1 and slow.queue.get_nowait() is None  # ends its stream, no backlog
        finally:
            await http.close()


async def test_store_retention_keeps_newest(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db", alarm_retention=3)
    await store.open()
    try:
        for i in range(1, 6):
            store.put_alarm(AlarmRecord(id=i, device_id="34020000001320000001", channel_id="", priority=1,
                                        method=5, description=f"n{i}"))
            await store.flush()
        assert [r.id for r in await store.alarms()] == [5, 4, 3]
        assert await store.last_alarm_id() == 5
    finally:
        await store.close()
    assert [r[0] for r in rows(tmp_path / "gw.db")] == [3, 4, 5]


async def test_notify_other_than_alarm_is_489(tmp_path: Path) -> None:
    async with simulated(alarm_config(tmp_path)) as (gw, sim):
        dev = sim.devices[0]
        body = manscdp.encode("Notify", "Broadcast", 1, dev.device_id)
        resp = await dev.send_to_platform(dev.platform_request("NOTIFY", body, "Application/MANSCDP+xml"))
        assert resp is not None and resp.status == 489
        assert await gw.store.alarms() == []


# --- SSE replay (Last-Event-ID) -------------------------------------------------------------------------------

async def alarm_events(resp: aiohttp.ClientResponse, count: int) -> list[tuple[int, str]]:
    """The next ``count`` alarm events as (id, description); fails on any other event (a gap, a keepalive)."""
    out = []
    for _ in range(count):
        kind, lines = await next_event(resp)
        assert kind == "alarm", lines
        ident = int(next(ln[len("id: "):] for ln in lines if ln.startswith("id: ")))
        data = json.loads(next(ln[len("data: "):] for ln in lines if ln.startswith("data: ")))
        assert data["id"] == ident
        out.append((ident, data["description"]))
    return out


async def opened(resp: aiohttp.ClientResponse) -> None:
    """The stream's opening block: the reconnection delay and a comment."""
    assert resp.status == 200
    assert await next_event(resp) == ("", ["retry: 2000", ": alarms"])


async def test_stream_replays_missed_alarms_then_live_ones(tmp_path: Path) -> None:
    async with site(alarm_config(tmp_path, rate=1000)) as (gw, sim, http):
        url = http.base + "/api/v1/alarms/stream"
        dev = sim.devices[0]
        async with http.session.get(url) as stream:
            await opened(stream)
            for n in (1, 2, 3):
                assert (await dev.raise_alarm(2, 5, f"a{n}")).status == 200  # type: ignore[union-attr]
            assert await alarm_events(stream, 3) == [(1, "a1"), (2, "a2"), (3, "a3")]
        # Disconnected: 4..6 are missed. They are still pending in the write-behind store (flush_interval):
        # the replay writes them first.
        for n in (4, 5, 6):
            assert (await dev.raise_alarm(2, 5, f"a{n}")).status == 200  # type: ignore[union-attr]
        async with http.session.get(url, headers={"Last-Event-ID": "3"}) as stream:
            await opened(stream)
            assert await alarm_events(stream, 3) == [(4, "a4"), (5, "a5"), (6, "a6")]
            assert (await dev.raise_alarm(2, 5, "a7")).status == 200  # type: ignore[union-attr]
            assert await alarm_events(stream, 1) == [(7, "a7")]

        # Alarms raised while the replay reads the store: the one stored before the read comes in the replay
        # (and its live copy is dropped), the one after it comes live; neither twice, none lost.
        real = gw.store.alarms

        async def racing(**kw: Any) -> list[AlarmRecord]:
            assert (await dev.raise_alarm(2, 5, "during")).status == 200  # type: ignore[union-attr]
            records = await real(**kw)
            assert (await dev.raise_alarm(2, 5, "after")).status == 200  # type: ignore[union-attr]
            return records

        gw.store.alarms = racing  # type: ignore[method-assign]
        try:
            async with http.session.get(url, headers={"Last-Event-ID": "6"}) as stream:
                await opened(stream)
                assert await alarm_events(stream, 3) == [(7, "a7"), (8, "during"), (9, "after")]
                gw.store.alarms = real  # type: ignore[method-assign]
                assert (await dev.raise_alarm(2, 5, "a10")).status == 200  # type: ignore[union-attr]
                assert await alarm_events(stream, 1) == [(10, "a10")]
        finally:
            gw.store.alarms = real  # type: ignore[method-assign]

        # The query form (a first connection cannot set headers); the header wins over it.
        async with http.session.get(url + "?last_event_id=8", headers={"Last-Event-ID": "9"}) as stream:
            await opened(stream)
            assert await alarm_events(stream, 1) == [(10, "a10")]


async def test_stream_replay_beyond_newest_gap_and_bad_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with site(alarm_config(tmp_path, rate=1000)) as (gw, sim, http):
        url = http.base + "/api/v1/alarms/stream"
        dev = sim.devices[0]
        for n in range(1, 7):
            assert (await dev.raise_alarm(3, 5, f"a{n}")).status == 200  # type: ignore[union-attr]
        # Beyond the newest (the client saw it, or the database was replaced): no replay, every live alarm.
        async with http.session.get(url + "?last_event_id=1000") as stream:
            await opened(stream)
            assert (await dev.raise_alarm(3, 5, "a7")).status == 200  # type: ignore[union-attr]
            assert await alarm_events(stream, 1) == [(7, "a7")]
        # More missed than the replay limit: one gap event names how many, then the newest ones.
        monkeypatch.setattr(alarms_module, "REPLAY_LIMIT", 2)
        async with http.session.get(url, headers={"Last-Event-ID": "0"}) as stream:
            await opened(stream)
            kind, lines = await next_event(stream)
            assert kind == "gap" and not any(ln.startswith("id:") for ln in lines), lines
            assert json.loads(lines[-1][len("data: "):]) == {"after": 0, "skipped": 5, "next_id": 6}
            assert await alarm_events(stream, 2) == [(6, "a6"), (7, "a7")]
        live = gw.alarms.subscribers  # the streams closed above end at their next write (keepalive)
        for value, name in (("abc", "Last-Event-ID"), ("-1", "Last-Event-ID"), ("1.5", "Last-Event-ID"),
                            ("9" * 19, "Last-Event-ID")):
            status, body, _ = await http.get("/api/v1/alarms/stream", headers={"Last-Event-ID": value})
            assert status == 400 and body["error"]["reason"].startswith(f"{name} must be an alarm id"), body
        status, body, _ = await http.get("/api/v1/alarms/stream?last_event_id=x")
        assert status == 400 and body["error"]["reason"].startswith("last_event_id must be"), body
        assert gw.alarms.subscribers == live  # a refused stream leaves no subscription behind


# --- reload ---------------------------------------------------------------------------------------------------

async def test_reload_applies_alarm_rate_and_retention(tmp_path: Path) -> None:
    async with simulated(alarm_config(tmp_path, rate=0.001)) as (gw, sim):
        dev = sim.devices[0]
        suppressed = sample("gb28181_alarms_suppressed_total")
        for n in (1, 2):
            assert (await dev.raise_alarm(2, 5, f"slow {n}")).status == 200  # type: ignore[union-attr]
        assert [r.description for r in await gw.store.alarms()] == ["slow 1"]  # the 2nd is suppressed
        assert sample("gb28181_alarms_suppressed_total") - suppressed == 1

        devices = replace(gw.config.devices, alarm_rate=1000.0, alarm_retention=4)
        gw.reload(replace(gw.config, devices=devices))
        assert gw.alarms.config is gw.config and gw.config.devices.alarm_rate == 1000.0
        answers = await asyncio.gather(*(dev.raise_alarm(2, 5, f"fast {n}") for n in range(5)))
        assert all(r is not None and r.status == 200 for r in answers)
        assert sample("gb28181_alarms_suppressed_total") - suppressed == 1  # all 5 passed
        assert gw.alarms._next_id == 7
        # The new retention trims the table at the next write: the newest 4 of the 6 are kept.
        assert [r.id for r in await gw.store.alarms()] == [6, 5, 4, 3]
