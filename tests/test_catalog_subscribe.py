"""Catalog subscriptions end to end: after the catalog sync the gateway SUBSCRIBEs (Event: Catalog) and refreshes
before expiry, subscribes again after a re-registration, and applies the device's catalog NOTIFYs (status changes,
added and removed channels) to the REST API, the metrics and SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from gw_util import running_gateway
from site_util import simulated
from test_api import Http, metric, scrape_until
from test_streams import config, started, wait_until

from gateway.app import STORE_FILE
from gateway.sim.config import channel_id

pytestmark = pytest.mark.e2e


def sub_config(tmp_path: Path, expires: int = 3600):  # type: ignore[no-untyped-def]
    base = config(tmp_path)
    return replace(base, devices=replace(base.devices, catalog_subscribe_expires=expires))


def channel_rows(path: Path, device_id: str) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT channel_id, status FROM channels WHERE device_id = ?", (device_id,)))
    finally:
        conn.close()


async def test_subscribe_after_sync_refresh_and_resubscribe_after_reregister(tmp_path: Path) -> None:
    async with running_gateway(sub_config(tmp_path, expires=2)) as gw:
        sim = await started(gw)
        dev = sim.devices[0]
        try:
            await wait_until(lambda: dev.catalog_subscribes == 1, 5)
            assert dev.catalog_subscribe_expires == 2
            # Refreshed in dialog at 80% of 2 s, before the subscription lapses.
            await wait_until(lambda: dev.catalog_refreshes >= 2, 5)
            loop = asyncio.get_running_loop()
            assert dev.catalog_subscribed_until is not None and dev.catalog_subscribed_until > loop.time()
            assert dev.catalog_subscribes == 1
            dev.reregister()
            await wait_until(lambda: dev.catalog_subscribes == 2, 5)
        finally:
            await sim.stop()


async def test_refused_subscribe_is_retried_at_next_sync(tmp_path: Path) -> None:
    async with running_gateway(sub_config(tmp_path)) as gw:
        sim = await started(gw)
        dev = sim.devices[0]
        http = Http(gw.http.port)
        try:
            await wait_until(lambda: dev.catalog_subscribes == 1, 5)
            dev.subscribe_status = 403
            dev.reregister()  # re-subscribes; refused: logged, nothing breaks
            await asyncio.sleep(0.5)
            gdev = gw.devices.get(dev.device_id)
            assert gdev is not None and gdev.rec.online
            dev.subscribe_status = 200
            status, body, _ = await http.request("POST", f"/api/v1/devices/{dev.device_id}/catalog")
            assert status == 200
            gw.devices.request_sync(dev.device_id)  # a full sync subscribes again
            await wait_until(lambda: dev.catalog_subscribes == 2, 10)
        finally:
            await http.close()
            await sim.stop()


async def test_disabled_subscription(tmp_path: Path) -> None:
    async with simulated(sub_config(tmp_path, expires=0)) as (gw, sim):
        await asyncio.sleep(0.3)
        assert sim.devices[0].catalog_subscribes == 0


async def test_catalog_notify_events_update_api_metrics_and_store(tmp_path: Path) -> None:
    async with running_gateway(sub_config(tmp_path)) as gw:
        sim = await started(gw)
        dev = sim.devices[0]
        http = Http(gw.http.port)
        db = tmp_path / STORE_FILE
        ch0 = dev.channel_ids[0]

        async def channels() -> dict[str, dict]:  # type: ignore[type-arg]
            status, body, _ = await http.get(f"/api/v1/devices/{dev.device_id}/channels")
            assert status == 200
            return {c["channel_id"]: c for c in body["channels"]}

        try:
            await scrape_until(http, "gb28181_channels_intact_ratio", 1.0)
            resp = await dev.notify_catalog(ch0, "VLOST")
            assert resp is not None and resp.status == 200
            chs = await channels()
            assert chs[ch0]["status"] == "VLOST" and chs[ch0]["online"] and not chs[ch0]["intact"]
            await scrape_until(http, "gb28181_channels_intact_ratio", 0.5)
            await wait_until(lambda: channel_rows(db, dev.device_id).get(ch0) == "VLOST", 5)

            resp = await dev.notify_catalog(ch0, "OFF", form="MESSAGE")  # the MESSAGE form too
            assert resp is not None and resp.status == 200
            assert not (await channels())[ch0]["online"]
            text = await scrape_until(http, "gb28181_channels_online_ratio", 0.5)
            assert metric(text, "gb28181_channels_intact_ratio") == 0.5

            assert (await dev.notify_catalog(ch0, "ON")).status == 200  # type: ignore[union-attr]
            assert (await channels())[ch0]["status"] == "ON"
            await scrape_until(http, "gb28181_channels_online_ratio", 1.0)
            await scrape_until(http, "gb28181_channels_intact_ratio", 1.0)

            new_id = channel_id(dev.device_id, 7)
            resp = await dev.notify_catalog(new_id, "ADD", Name="Gate 7", Status="ON", ParentID=dev.device_id)
            assert resp is not None and resp.status == 200
            chs = await channels()
            assert chs[new_id]["name"] == "Gate 7" and chs[new_id]["kind"] == "channel" and chs[new_id]["online"]
            await wait_until(lambda: new_id in channel_rows(db, dev.device_id), 5)

            assert (await dev.notify_catalog(new_id, "UPDATE", Name="Gate 7b")).status == 200  # type: ignore[union-attr]
            chs = await channels()
            assert chs[new_id]["name"] == "Gate 7b" and chs[new_id]["status"] == "ON"

            assert (await dev.notify_catalog(ch0, "DEL")).status == 200  # type: ignore[union-attr]
            assert ch0 not in await channels()
            await wait_until(lambda: ch0 not in channel_rows(db, dev.device_id), 5)
        finally:
            await http.close()
            await sim.stop()


async def test_malformed_catalog_notify_is_refused(tmp_path: Path) -> None:
    async with running_gateway(sub_config(tmp_path)) as gw:
        sim = await started(gw)
        dev = sim.devices[0]
        try:
            ch0 = dev.channel_ids[0]
            resp = await dev.notify_catalog(ch0, "EXPLODE")
            assert resp is not None and resp.status == 400
            resp = await dev.notify_catalog("not an id!", "OFF")
            assert resp is not None and resp.status == 400
            body = b'<?xml version="1.0"?><Notify><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>' + \
                dev.device_id.encode() + b"</DeviceID><SumNum>1</SumNum></Notify>"
            resp = await dev.send_to_platform(dev.platform_request(
                "NOTIFY", body, "Application/MANSCDP+xml", headers=[("Event", "Catalog")]))
            assert resp is not None and resp.status == 400
            gdev = gw.devices.get(dev.device_id)
            assert gdev is not None and gdev.channels[ch0].status.upper() == "ON"
        finally:
            await sim.stop()
