"""Event subscriptions end to end (gateway.subscriptions against the simulator over 127.0.0.1): Alarm and
MobilePosition SUBSCRIBEs next to Catalog, their refresh, devices ending them (Subscription-State), devices that do
not support them, unsubscribing at shutdown, and mobile positions (2016 single and 2022 list forms, NOTIFY and
MESSAGE) reaching the REST API and the metrics."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from gw_util import running_gateway
from test_api import Http, metric
from test_streams import config, started, wait_until

from sip import events

pytestmark = pytest.mark.e2e

MANSCDP = "Application/MANSCDP+xml"


def sub_config(tmp_path: Path, **devices: Any):  # type: ignore[no-untyped-def]
    base = config(tmp_path)
    return replace(base, devices=replace(base.devices, **devices))


def fix(target: str, lon: float, lat: float, **kw: Any) -> events.MobilePosition:
    return events.MobilePosition(target_id=target, time="2026-11-23T10:00:00", longitude=lon, latitude=lat, **kw)


async def positions(http: Http, device_id: str | None = None) -> dict[str, dict[str, Any]]:
    path = "/api/v1/positions" + (f"?device_id={device_id}" if device_id else "")
    status, body, _ = await http.get(path)
    assert status == 200, body
    return {p["channel_id"]: p for p in body["positions"]}


async def subscriptions(http: Http, device_id: str) -> dict[str, dict[str, Any]]:
    status, body, _ = await http.get(f"/api/v1/devices/{device_id}")
    assert status == 200, body
    return body["subscriptions"]  # type: ignore[no-any-return]


async def test_positions_single_and_list_forms_in_message_and_notify(tmp_path: Path) -> None:
    # Subscriptions off: the device reports positions on its own (some do, in MESSAGE or NOTIFY).
    cfg = sub_config(tmp_path, position_subscribe_expires=0, alarm_subscribe_expires=0)
    async with running_gateway(cfg) as gw:
        sim = await started(gw)
        dev = sim.devices[0]
        ch0, ch1 = dev.channel_ids[:2]
        http = Http(gw.http.port)
        try:
            status, text, _ = await http.get("/metrics")
            fixes_before = metric(text, "gb28181_positions_total") or 0.0
            notes_before = metric(text, "gb28181_notifications_total", 'event="MobilePosition"') or 0.0
            body = events.build_position_notify(dev.next_sn(), dev.device_id,
                                                [fix(ch0, 116.397428, 39.90923, speed=30.5, direction=135.2)])
            resp = await dev.send_to_platform(dev.platform_request("MESSAGE", body, MANSCDP))
            assert resp is not None and resp.status == 200
            got = await positions(http)
            assert list(got) == [ch0]
            p = got[ch0]
            assert (p["device_id"], p["longitude"], p["latitude"], p["speed"], p["direction"], p["altitude"]) == \
                (dev.device_id, 116.397428, 39.90923, 30.5, 135.2, None)
            assert p["time"] == "2026-11-23T10:00:00" and p["sip_method"] == "MESSAGE"

            body = events.build_position_notify(dev.next_sn(), dev.device_id,
                                                [fix(ch0, 117.5, 31.25, altitude=12.5), fix(ch1, -0.5, -45.0)],
                                                form=events.PositionForm.LIST, encoding="UTF-8")
            resp = await dev.send_to_platform(dev.platform_request(
                "NOTIFY", body, MANSCDP, headers=[("Event", "MobilePosition"), ("Subscription-State", "active")]))
            assert resp is not None and resp.status == 200
            got = await positions(http, dev.device_id)
            assert list(got) == [ch1, ch0]  # newest first; the later fix of ch0 replaced the earlier one
            assert (got[ch0]["longitude"], got[ch0]["altitude"], got[ch0]["sip_method"]) == (117.5, 12.5, "NOTIFY")
            assert (got[ch1]["longitude"], got[ch1]["latitude"]) == (-0.5, -45.0)

            status, chans, _ = await http.get(f"/api/v1/devices/{dev.device_id}/channels")
            by_id = {c["channel_id"]: c for c in chans["channels"]}
            assert by_id[ch1]["position"]["latitude"] == -45.0
            status, text, _ = await http.get("/metrics")  # counters are per process: compare with the start
            assert metric(text, "gb28181_positions_total") == fixes_before + 3
            assert metric(text, "gb28181_notifications_total", 'event="MobilePosition"') == notes_before + 2
        finally:
            await http.close()
            await sim.stop()


async def test_bad_positions_and_bad_subscription_state_are_refused(tmp_path: Path) -> None:
    cfg = sub_config(tmp_path, position_subscribe_expires=0, alarm_subscribe_expires=0)
    async with running_gateway(cfg) as gw:
        sim = await started(gw)
        dev = sim.devices[0]
        ch0 = dev.channel_ids[0]
        http = Http(gw.http.port)
        good = events.build_position_notify(1, dev.device_id, [fix(ch0, 116.0, 39.0)])
        try:
            for text in (b"<Longitude>116</Longitude>", b"<Longitude>200</Longitude>",
                         b"<Longitude>nan</Longitude>", b"<Longitude></Longitude>"):
                body = good.replace(b"<Longitude>116</Longitude>", text) if text != b"<Longitude>116</Longitude>" \
                    else good.replace(b"<Latitude>39</Latitude>", b"")
                resp = await dev.send_to_platform(dev.platform_request("MESSAGE", body, MANSCDP))
                assert resp is not None and resp.status == 400, (text, resp)
            resp = await dev.send_to_platform(dev.platform_request(
                "NOTIFY", good, MANSCDP, headers=[("Event", "MobilePosition"), ("Subscription-State", "bogus")]))
            assert resp is not None and resp.status == 400
            resp = await dev.send_to_platform(dev.platform_request(
                "NOTIFY", good, "text/plain", headers=[("Event", "MobilePosition")]))
            assert resp is not None and resp.status == 415
            assert await positions(http) == {}
        finally:
            await http.close()
            await sim.stop()


def events_config(tmp_path: Path, **devices: Any):  # type: ignore[no-untyped-def]
    opts: dict[str, Any] = {"catalog_subscribe_expires": 2, "alarm_subscribe_expires": 2,
                            "position_subscribe_expires": 2, "position_interval": 1, "subscribe_retry": 0.5}
    opts.update(devices)
    return sub_config(tmp_path, **opts)


async def test_alarm_and_position_subscriptions_refresh_report_and_end_at_shutdown(tmp_path: Path) -> None:
    sim = None
    try:
        async with running_gateway(events_config(tmp_path)) as gw:
            sim = await started(gw)
            dev = sim.devices[0]
            ch0, ch1 = dev.channel_ids[:2]
            http = Http(gw.http.port)
            try:
                await wait_until(lambda: dev.subscribes.get("alarm") == 1 and dev.subscribes.get("mobileposition") == 1, 5)
                subs = await subscriptions(http, dev.device_id)
                assert {e: s["status"] for e, s in subs.items()} == \
                    {"Catalog": "active", "Alarm": "active", "MobilePosition": "active"}
                assert 0 < subs["Alarm"]["expires_in"] <= 2
                # Refreshed in dialog (80% of 2 s) before they lapse; never subscribed anew.
                await wait_until(lambda: dev.refreshes.get("alarm", 0) >= 2
                                 and dev.refreshes.get("mobileposition", 0) >= 2, 6)
                assert dev.subscribes["alarm"] == 1 and dev.subscribes["mobileposition"] == 1

                # Positions every second in the subscription dialog (2016 single form, one NOTIFY per channel).
                await wait_until(lambda: len(dev.positions_sent) >= 4, 5)
                got = await positions(http, dev.device_id)
                assert set(got) == {ch0, ch1} and {p["sip_method"] for p in got.values()} == {"NOTIFY"}
                last = {p.target_id: p for p in dev.positions_sent}
                assert got[ch0]["longitude"] == last[ch0].longitude or len(dev.positions_sent) > 4
                subs = await subscriptions(http, dev.device_id)
                assert subs["MobilePosition"]["notifications"] >= 2 and subs["MobilePosition"]["refreshes"] >= 2

                # An alarm goes as NOTIFY in the alarm subscription's dialog and is stored as such.
                resp = await dev.raise_alarm(1, 5, "subscribed alarm")
                assert resp is not None and resp.status == 200
                stored = await gw.store.alarms()
                assert [(a.description, a.sip_method) for a in stored] == [("subscribed alarm", "NOTIFY")]
                assert (await subscriptions(http, dev.device_id))["Alarm"]["notifications"] == 1

                status, text, _ = await http.get("/metrics")  # counters are per process (other tests count too)
                for event in ("Catalog", "Alarm", "MobilePosition"):
                    assert metric(text, "gb28181_subscriptions", f'event="{event}",status="active"') == 1.0
                    for result in ("ok", "refreshed"):
                        count = metric(text, "gb28181_subscribe_requests_total", f'event="{event}",result="{result}"')
                        assert count is not None and count >= 1.0, (event, result)
                count = metric(text, "gb28181_notifications_total", 'event="Alarm"')
                assert count is not None and count >= 1.0
                count = metric(text, "gb28181_positions_total")
                assert count is not None and count >= 2.0
                unsubscribed_before = dict(dev.unsubscribes)
            finally:
                await http.close()
        # The gateway stopped: each subscription was ended with Expires: 0 first (the device still runs).
        for package in ("catalog", "alarm", "mobileposition"):
            assert dev.unsubscribes.get(package, 0) == unsubscribed_before.get(package, 0) + 1, package
        assert dev.subscriptions == {}
    finally:
        if sim is not None:
            await sim.stop()


async def test_list_form_positions_from_the_subscription(tmp_path: Path) -> None:
    async with running_gateway(events_config(tmp_path)) as gw:
        sim = await started(gw, position_form="list")
        dev = sim.devices[0]
        http = Http(gw.http.port)
        try:
            await wait_until(lambda: len(dev.positions_sent) >= 2, 5)
            await asyncio.sleep(0.2)
            got = await positions(http, dev.device_id)
            assert set(got) == set(dev.channel_ids)
            sent = {p.target_id: p for p in dev.positions_sent}
            for cid, p in got.items():
                assert abs(p["latitude"] - sent[cid].latitude) < 0.01 and p["sip_method"] == "NOTIFY"
        finally:
            await http.close()
            await sim.stop()


async def test_unsupported_failed_and_device_ended_subscriptions(tmp_path: Path) -> None:
    async with running_gateway(events_config(tmp_path, alarm_subscribe_expires=60,
                                             position_subscribe_expires=60)) as gw:
        sim = await started(gw)
        dev = sim.devices[0]
        http = Http(gw.http.port)
        try:
            await wait_until(lambda: dev.subscribes.get("alarm") == 1, 5)
            # A device without positions: 489 marks the event unsupported; not asked again until it registers.
            dev.refuse_events["mobileposition"] = 489
            dev.refuse_events["alarm"] = 403  # refused otherwise: failed, retried after subscribe_retry
            dev.reregister()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while True:
                subs = await subscriptions(http, dev.device_id)
                if subs["MobilePosition"]["status"] == "unsupported" and subs["Alarm"]["status"] == "failed":
                    break
                assert loop.time() < deadline, subs
                await asyncio.sleep(0.1)
            assert subs["MobilePosition"]["reason"].startswith("489")
            assert subs["Alarm"]["reason"].startswith("403")
            asked = dev.subscribes.get("mobileposition", 0)
            del dev.refuse_events["alarm"]
            deadline = loop.time() + 5
            while (await subscriptions(http, dev.device_id))["Alarm"]["status"] != "active":  # the retry got through
                assert loop.time() < deadline
                await asyncio.sleep(0.1)
            assert dev.subscribes.get("mobileposition", 0) == asked  # unsupported: not retried
            status, text, _ = await http.get("/metrics")  # per process: at least ours
            for labels in ('event="MobilePosition",result="unsupported"', 'event="Alarm",result="refused"'):
                count = metric(text, "gb28181_subscribe_requests_total", labels)
                assert count is not None and count >= 1.0, labels

            # The device ends the alarm subscription (timeout): subscribed anew at once.
            before = dev.subscribes["alarm"]
            resp = await dev.notify_terminated("alarm", "timeout")
            assert resp is not None and resp.status == 200
            await wait_until(lambda: dev.subscribes["alarm"] == before + 1, 5)
            # ... for good (rejected): the gateway stops asking and says so.
            resp = await dev.notify_terminated("alarm", "rejected")
            assert resp is not None and resp.status == 200
            await asyncio.sleep(0.3)
            subs = await subscriptions(http, dev.device_id)
            assert subs["Alarm"]["status"] == "terminated" and subs["Alarm"]["reason"] == "terminated: rejected"
            assert dev.subscribes["alarm"] == before + 1
        finally:
            await http.close()
            await sim.stop()


async def test_restored_devices_are_subscribed_after_a_restart(tmp_path: Path) -> None:
    cfg = events_config(tmp_path, alarm_subscribe_expires=60, position_subscribe_expires=60,
                        catalog_subscribe_expires=60)
    sim = None
    try:
        async with running_gateway(cfg) as gw:
            port = gw.sip.port  # type: ignore[union-attr]
            sim = await started(gw)
            dev = sim.devices[0]
            await wait_until(lambda: dev.subscribes.get("alarm") == 1, 5)
            registrations = dev.registrations
        assert dev.subscriptions == {}  # ended at shutdown
        # Same state directory and SIP port: the device is restored registered and online, and subscribed at
        # start, without waiting for its next REGISTER (an hour away).
        cfg2 = replace(cfg, sip=replace(cfg.sip, port=port))
        async with running_gateway(cfg2) as gw2:
            gdev = gw2.devices.get(dev.device_id)
            assert gdev is not None and gdev.rec.online
            await wait_until(lambda: dev.subscribes.get("alarm") == 2 and dev.subscribes.get("catalog") == 2
                             and dev.subscribes.get("mobileposition") == 2, 5)
            assert dev.registrations == registrations  # not a new REGISTER: the restore did it
    finally:
        if sim is not None:
            await sim.stop()


async def test_failed_subscription_resumes_when_the_device_is_back_online(tmp_path: Path) -> None:
    cfg = events_config(tmp_path, keepalive_interval=0.5, keepalive_count=2, subscribe_retry=0.3,
                        position_subscribe_expires=0)
    async with running_gateway(cfg) as gw:
        sim = await started(gw, keepalive_interval=0.2)
        dev = sim.devices[0]
        http = Http(gw.http.port)
        loop = asyncio.get_running_loop()

        async def alarm_status(want: str) -> None:
            deadline = loop.time() + 5
            while (status := (await subscriptions(http, dev.device_id))["Alarm"]["status"]) != want:
                assert loop.time() < deadline, status
                await asyncio.sleep(0.05)

        try:
            await alarm_status("active")
            dev.refuse_events["alarm"] = 403  # the refresh is refused, then the new SUBSCRIBE too
            dev.stop_keepalive()
            await alarm_status("failed")
            await wait_until(lambda: not gw.devices.get(dev.device_id).rec.online, 5)  # type: ignore[union-attr]
            del dev.refuse_events["alarm"]
            asked = dev.subscribes["alarm"]
            await asyncio.sleep(0.8)  # offline: not retried
            assert dev.subscribes["alarm"] == asked
            dev.resume_keepalive()  # back online by keepalive alone (no REGISTER): the lapsed one restarts
            await alarm_status("active")
            assert dev.subscribes["alarm"] == asked + 1
        finally:
            await http.close()
            await sim.stop()
