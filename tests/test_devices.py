"""The device registry end to end, through real UDP/TCP sockets on 127.0.0.1 and a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from gw_util import DEVICE, PLATFORM, RawClient, make_config, running_gateway, sample

from gateway.devices import format_date
from gateway.sim import SimConfig, Simulator
from sip import manscdp

pytestmark = pytest.mark.e2e

KEEPALIVE = manscdp.encode("Notify", "Keepalive", 1, DEVICE, [("Status", "OK")])


async def wait_until(predicate, timeout: float = 5.0, step: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


async def test_register_with_digest_then_keepalive_then_offline(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        assert gw.sip is not None
        client = await RawClient.open(gw.sip.port)
        # The first attempt is challenged: realm = domain, MD5 named, qop offered.
        resp = await client.register()
        assert resp.status == 200, resp
        assert resp.headers.get("Expires") == "3600"
        date = resp.headers.get("Date") or ""
        assert len(date) == 23 and date[10] == "T" and date[19] == "."  # yyyy-MM-dd'T'HH:mm:ss.SSS
        assert DEVICE in (resp.headers.get("Contact") or "")
        dev = gw.devices.get(DEVICE)
        assert dev is not None and dev.rec.online and dev.registered
        # The gateway now queries the device: answer with 200 (the test does not play the device further).
        query = await client.next_request()
        assert query.method == "MESSAGE"
        doc = manscdp.decode(query.body)
        assert (doc.root, doc.cmd_type, doc.device_id) == ("Query", "DeviceInfo", DEVICE)
        client.answer(query)
        # Keepalives keep it online past interval x count (0.4 x 3 = 1.2 s).
        for _ in range(4):
            await asyncio.sleep(0.4)
            client.send(client.request("MESSAGE", body=KEEPALIVE, content_type="Application/MANSCDP+xml"))
            assert (await client.response()).status == 200
        assert dev.rec.online
        # Silence: offline after 1.2 s (+ the watch period).
        await wait_until(lambda: not dev.rec.online, timeout=4)
        assert dev.registered  # still registered: a keepalive brings it back
        client.send(client.request("MESSAGE", body=KEEPALIVE, content_type="Application/MANSCDP+xml"))
        assert (await client.response()).status == 200
        assert dev.rec.online
        client.close()


async def test_register_without_qop_accepted(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        assert gw.sip is not None
        client = await RawClient.open(gw.sip.port)
        resp = await client.register(qop=False)
        assert resp.status == 200
        client.close()


async def test_wrong_password_403_after_challenge_and_rate_limited(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path, auth_failure_limit=3)) as gw:
        assert gw.sip is not None
        client = await RawClient.open(gw.sip.port)
        for _ in range(3):
            resp = await client.register(password="wrong")
            assert resp.status == 403
        # Over the limit: refused before any challenge, even with the right password.
        first = client.request("REGISTER", headers=[("Expires", "3600")])
        client.send(first)
        resp = await client.response()
        assert resp.status == 403 and "Failures" in resp.reason
        # Another source is not affected.
        other = await RawClient.open(gw.sip.port, source="127.0.0.2")
        assert (await other.register()).status == 200
        client.close()
        other.close()


async def test_device_outside_allowlist_refused(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path, allow=["34020000001320000099"])) as gw:
        assert gw.sip is not None
        client = await RawClient.open(gw.sip.port)
        resp = await client.register()
        assert resp.status == 403
        assert gw.devices.get(DEVICE) is None
        client.close()


async def test_per_device_password(tmp_path: Path) -> None:
    config = make_config(tmp_path, passwords={DEVICE: "own-secret"})
    async with running_gateway(config) as gw:
        assert gw.sip is not None
        client = await RawClient.open(gw.sip.port)
        assert (await client.register(password="12345678")).status == 403
        assert (await client.register(password="own-secret")).status == 200
        client.close()


async def test_message_from_unregistered_device_refused(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        assert gw.sip is not None
        client = await RawClient.open(gw.sip.port)
        client.send(client.request("MESSAGE", body=KEEPALIVE, content_type="Application/MANSCDP+xml"))
        resp = await client.response()
        assert resp.status == 404
        client.close()


async def test_unregister(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        assert gw.sip is not None
        client = await RawClient.open(gw.sip.port)
        assert (await client.register()).status == 200
        resp = await client.register(expires=0)
        assert resp.status == 200
        dev = gw.devices.get(DEVICE)
        assert dev is not None and not dev.registered and not dev.rec.online
        client.send(client.request("MESSAGE", body=KEEPALIVE, content_type="Application/MANSCDP+xml"))
        assert (await client.response()).status == 404
        client.close()


async def test_registration_storm_answered_503_with_retry_after(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path, register_rate=5)) as gw:
        assert gw.sip is not None
        client = await RawClient.open(gw.sip.port)
        before = sample("gb28181_registrations_total", {"result": "overload"})
        for i in range(30):
            client.send(client.request("REGISTER", f"340200000013200{i:05d}", headers=[("Expires", "3600")]))
        statuses = [(await client.response()) for _ in range(30)]
        codes = sorted(r.status for r in statuses)
        assert codes.count(401) >= 5 and 503 in codes
        assert all(int(r.headers.get("Retry-After") or 0) >= 1 for r in statuses if r.status == 503)
        assert sample("gb28181_registrations_total", {"result": "overload"}) == before + codes.count(503)
        client.close()


async def test_xml_bomb_and_oversized_body_refused_gateway_keeps_serving(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path, sip={"max_message_size": 16384})) as gw:
        assert gw.sip is not None
        client = await RawClient.open(gw.sip.port)
        assert (await client.register()).status == 200
        bomb = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
                b"<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>&b;</DeviceID></Response>")
        client.send(client.request("MESSAGE", body=bomb, content_type="Application/MANSCDP+xml"))
        assert (await client.response()).status == 400
        big = b"<Response><CmdType>Catalog</CmdType><SN>1</SN>" + b"<X>y</X>" * 2500 + b"</Response>"
        client.send(client.request("MESSAGE", body=big, content_type="Application/MANSCDP+xml"))
        assert (await client.response()).status == 513
        client.send(client.request("MESSAGE", body=KEEPALIVE, content_type="Application/MANSCDP+xml"))
        assert (await client.response()).status == 200
        client.close()


def test_date_format() -> None:
    assert format_date(0.0)[4] == "-" and len(format_date(1_700_000_000.123)) == 23
    assert format_date(1_700_000_000.123).endswith(".123")


def test_platform_id_constant() -> None:
    assert PLATFORM.endswith("2000000001")


async def test_restart_keeps_registration_and_online_state(tmp_path: Path) -> None:
    config = make_config(tmp_path, keepalive_interval=5)
    async with running_gateway(config) as gw:
        assert gw.sip is not None
        client = await RawClient.open(gw.sip.port)
        assert (await client.register()).status == 200
        client.close()
    assert (tmp_path / "gateway.sqlite3").exists()
    async with running_gateway(config) as gw:
        dev = gw.devices.get(DEVICE)
        assert dev is not None
        assert dev.registered and dev.rec.online  # a healthy device is not flipped offline by a restart
        assert dev.peer is not None and dev.peer.addr[0] == "127.0.0.1"
    # A restart after the keepalive deadline has passed restores it registered but offline.
    short = make_config(tmp_path, keepalive_interval=0.1, keepalive_count=1)
    await asyncio.sleep(0.2)
    async with running_gateway(short) as gw:
        dev = gw.devices.get(DEVICE)
        assert dev is not None and dev.registered and not dev.rec.online


# ------------------------------------------------------------------------------------------------ simulator


def sim_config(port: int, **kw: object) -> SimConfig:
    base: dict[str, object] = {"server": ("127.0.0.1", port), "keepalive_interval": 0.3, "t1": 0.1,
                               "register_rate": 200, "retry_min": 0.2, "retry_max": 1.0}
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_simulated_devices_register_stay_online_go_offline_and_return(tmp_path: Path, transport: str) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        assert gw.sip is not None
        sim = Simulator(sim_config(gw.sip.port, devices=3, channels=5, transport=transport))
        await sim.start()
        try:
            await sim.wait_registered(timeout=10)
            ids = [d.device_id for d in sim.devices]
            await wait_until(lambda: all((d := gw.devices.get(i)) is not None and d.rec.catalog_complete
                                         for i in ids), timeout=10)
            for i in ids:
                dev = gw.devices.get(i)
                assert dev is not None and dev.rec.online
                assert dev.peer is not None and dev.peer.transport.value == transport.upper()
                assert len(dev.channels) == 5 and dev.rec.manufacturer == "gb28181-sim"
                assert all(ch.kind == "channel" for ch in dev.channels.values())
            # Keepalives keep them online well past interval x count (0.4 x 3 s).
            await asyncio.sleep(1.6)
            assert all(gw.devices.get(i).rec.online for i in ids)  # type: ignore[union-attr]
            # One camera goes silent: it alone goes offline.
            silent = sim.devices[0]
            silent.stop_keepalive()
            await wait_until(lambda: not gw.devices.get(silent.device_id).rec.online, timeout=5)  # type: ignore[union-attr]
            assert all(gw.devices.get(i).rec.online for i in ids[1:])  # type: ignore[union-attr]
            # It speaks again: back online.
            silent.resume_keepalive()
            await wait_until(lambda: gw.devices.get(silent.device_id).rec.online, timeout=5)  # type: ignore[union-attr]
        finally:
            await sim.stop()
        # Unregistered on stop.
        await wait_until(lambda: not any(gw.devices.get(i).registered for i in ids), timeout=5)  # type: ignore[union-attr]


async def test_nvr_with_300_channels_lands_complete_in_sqlite_and_survives_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path, keepalive_interval=5, catalog_timeout=10)
    async with running_gateway(config) as gw:
        assert gw.sip is not None
        sim = Simulator(sim_config(gw.sip.port, devices=1, channels=300, catalog_per_message=7,
                                   catalog_groups=True, keepalive_interval=1))
        await sim.start()
        nvr = sim.devices[0].device_id
        try:
            await wait_until(lambda: (d := gw.devices.get(nvr)) is not None and d.rec.catalog_complete, timeout=15)
            dev = gw.devices.get(nvr)
            assert dev is not None
            kinds = [ch.kind for ch in dev.channels.values()]
            assert kinds.count("channel") == 300
            assert kinds.count("business_group") == 1 and kinds.count("virtual_org") == 2
            await gw.store.flush()
        finally:
            await sim.stop(unregister=False)
    # Straight from the SQLite file: every item, Chinese names intact.
    db = sqlite3.connect(tmp_path / "gateway.sqlite3")
    rows = db.execute("SELECT channel_id, kind, name FROM channels WHERE device_id = ?", (nvr,)).fetchall()
    db.close()
    assert len(rows) == 303
    assert sum(1 for _, kind, _ in rows if kind == "channel") == 300
    names = {name for _, _, name in rows}
    assert any("镕" in n or "喆" in n or "堃" in n for n in names), names
    # A restart keeps the device, its channels and its online state (keepalive deadline not passed).
    async with running_gateway(config) as gw:
        dev = gw.devices.get(nvr)
        assert dev is not None and dev.registered and dev.rec.online
        assert len(dev.channels) == 303 and dev.rec.catalog_complete


async def test_duplicated_and_reordered_catalog_parts_give_one_complete_catalog(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path, keepalive_interval=5)) as gw:
        assert gw.sip is not None
        sim = Simulator(sim_config(gw.sip.port, devices=1, channels=40, catalog_per_message=3,
                                   catalog_shuffle=True, catalog_duplicate=True, keepalive_interval=1))
        await sim.start()
        try:
            device_id = sim.devices[0].device_id
            await wait_until(lambda: (d := gw.devices.get(device_id)) is not None and d.rec.catalog_complete,
                             timeout=10)
            dev = gw.devices.get(device_id)
            assert dev is not None and len(dev.channels) == 40 and dev.rec.catalog_sum == 40
        finally:
            await sim.stop()


async def test_demo_mode_devices_register_to_the_gateway(tmp_path: Path) -> None:
    from gateway.app import DEMO_CHANNELS, DEMO_DEVICES, Gateway

    gw = Gateway(make_config(tmp_path, keepalive_interval=5), demo=True)
    await gw.start()
    try:
        await wait_until(lambda: sum(1 for d in gw.devices.devices.values()
                                     if d.rec.online and len(d.channels) == DEMO_CHANNELS) == DEMO_DEVICES,
                         timeout=10)
    finally:
        await gw.stop()
    assert not any(d.registered for d in gw.devices.devices.values())  # unregistered on stop
