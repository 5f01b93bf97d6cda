"""Device control end to end: PTZ, presets, device commands and configuration through the REST API, over real
sockets to the simulator (``gateway.control``, ``gateway.sim.control``)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from site_util import site
from test_api import metric
from test_streams import config, wait_until

from gateway import metrics
from gateway.control import (
    _COMMAND_FIELDS,
    _PTZ_BUILD,
    _PTZ_FIELDS,
    _PTZ_REQUIRED,
    ControlFailed,
    DeviceControl,
)
from sip import manscdp
from sip.ptz import PtzCommand

pytestmark = pytest.mark.e2e


async def test_ptz_move_stop_presets(tmp_path: Path) -> None:
    async with site(config(tmp_path), channels=2) as (gw, sim, http):
        dev = sim.devices[0]
        ch = dev.channel_ids[1]
        base = f"/api/v1/channels/{dev.device_id}/{ch}"
        # Move right and up at speed 0x40: the exact PTZCmd reaches the device, addressed to the channel.
        status, body, _ = await http.request("POST", f"{base}/ptz",
                                             json={"action": "move", "pan": 1, "tilt": 1, "speed": 0x40})
        assert status == 200, body
        assert body == {"device_id": dev.device_id, "channel_id": ch, "action": "move",
                        "ptz_cmd": "A50F01094040003E", "status": "accepted", "sip_status": 200}
        assert dev.control.ptz_log[-1] == "A50F01094040003E"
        doc = manscdp.decode(dev.control.bodies[-1])
        assert (doc.root, doc.cmd_type, doc.device_id) == ("Control", "DeviceControl", ch)
        assert doc.text("Info/ControlPriority") == "5"
        head = dev.control.head(ch)
        assert head.position == (0x40, 0x40, 0) and head.moving == (1, 1, 0)
        # Stop.
        status, body, _ = await http.request("POST", f"{base}/ptz", json={"action": "stop"})
        assert status == 200 and body["ptz_cmd"] == "A50F0100000000B5"
        assert dev.control.ptz_log[-1] == "A50F0100000000B5" and head.moving == (0, 0, 0)
        # Zoom in at zoom speed 3.
        status, body, _ = await http.request("POST", f"{base}/ptz",
                                             json={"action": "move", "zoom": 1, "zoom_speed": 3})
        assert status == 200 and body["ptz_cmd"] == PtzCommand.move(zoom=1, zoom_speed=3).encode()
        assert head.position == (0x40, 0x40, 3)
        # Preset 7 here; move away; call it: back where it was.
        status, body, _ = await http.request("POST", f"{base}/ptz", json={"action": "preset_set", "preset": 7})
        assert status == 200 and body["ptz_cmd"] == "A50F01810007003D"
        assert dev.control.ptz_log[-1] == PtzCommand.preset_set(7).encode()
        await http.request("POST", f"{base}/ptz", json={"action": "move", "pan": -1, "speed": 200})
        assert head.position == (0x40 - 200, 0x40, 3)
        status, body, _ = await http.request("POST", f"{base}/ptz", json={"action": "preset_call", "preset": 7})
        assert status == 200 and body["ptz_cmd"] == PtzCommand.preset_call(7).encode()
        assert head.position == (0x40, 0x40, 3)
        await http.request("POST", f"{base}/ptz", json={"action": "preset_set", "preset": 2})
        # Presets listed (PresetQuery answered by the device).
        status, body, _ = await http.get(f"{base}/presets")
        assert status == 200, body
        assert body["presets"] == [{"preset_id": 2, "name": "Preset 2"}, {"preset_id": 7, "name": "Preset 7"}]
        assert body["sum_num"] == 2
        status, body, _ = await http.request("POST", f"{base}/ptz", json={"action": "preset_delete", "preset": 2})
        assert status == 200
        assert [p["preset_id"] for p in (await http.get(f"{base}/presets"))[1]["presets"]] == [7]
        # Focus and iris.
        status, body, _ = await http.request("POST", f"{base}/ptz",
                                             json={"action": "focus", "direction": -1, "speed": 16})
        assert status == 200 and body["ptz_cmd"] == PtzCommand.focus(-1, 16).encode()
        status, body, _ = await http.request("POST", f"{base}/ptz", json={"action": "iris", "direction": 1})
        assert status == 200 and dev.control.ptz_log[-1] == PtzCommand.iris(1).encode()


async def test_ptz_bad_bodies_unknown_and_offline(tmp_path: Path) -> None:
    async with site(config(tmp_path), channels=1) as (gw, sim, http):
        dev = sim.devices[0]
        ch = dev.channel_ids[0]
        url = f"/api/v1/channels/{dev.device_id}/{ch}/ptz"
        sent = len(dev.control.bodies)
        for body, reason in (
            ([1], "JSON object"),
            ({}, "field 'action' must be one of move, stop"),
            ({"action": "spin"}, "'spin'"),
            ({"action": "move", "pan": 2}, "pan must be -1, 0 or 1, got 2"),
            ({"action": "move", "pan": 1, "speed": 256}, "pan speed must be 0..255, got 256"),
            ({"action": "move", "zoom": 1, "zoom_speed": 16}, "zoom speed must be 0..15, got 16"),
            ({"action": "move", "pan": "left"}, "field 'pan' must be int, not str"),
            ({"action": "move", "pan": True}, "field 'pan' must be int, not bool"),
            ({"action": "stop", "pan": 1}, "unknown field(s) pan"),
            ({"action": "preset_call"}, "field 'preset' is required"),
            ({"action": "preset_set", "preset": 0}, "preset must be 1..255, got 0"),
            ({"action": "preset_set", "preset": 256}, "preset must be 1..255, got 256"),
            ({"action": "focus"}, "field 'direction' is required"),
            ({"action": "iris", "direction": 1, "speed": -1}, "iris speed must be 0..255, got -1"),
        ):
            status, answer, _ = await http.request("POST", url, json=body)
            assert status == 400 and reason in answer["error"]["reason"], (body, answer)
        assert len(dev.control.bodies) == sent  # nothing reached the device
        status, answer, _ = await http.request("POST", f"/api/v1/channels/{dev.device_id}/123/ptz",
                                               json={"action": "stop"})
        assert status == 400 and "20 digits" in answer["error"]["reason"]
        other = ch[:-3] + "999"
        status, answer, _ = await http.request("POST", f"/api/v1/channels/{dev.device_id}/{other}/ptz",
                                               json={"action": "stop"})
        assert status == 404 and f"unknown channel {other}" in answer["error"]["reason"]
        status, answer, _ = await http.request("POST", f"/api/v1/channels/34020000001320000999/{ch}/ptz",
                                               json={"action": "stop"})
        assert status == 404 and "unknown device" in answer["error"]["reason"]
        status, answer, _ = await http.get(f"/api/v1/channels/34020000001320000999/{ch}/presets")
        assert status == 404
        # A PTZCmd the device cannot read: its 400 comes back as a 502 with the status.
        gw_dev = gw.devices.get(dev.device_id)
        assert gw_dev is not None
        svc = DeviceControl(gw.devices, lambda: gw.sip)

        def bad(sn: int, enc: str) -> bytes:
            return manscdp.encode("Control", "DeviceControl", sn, ch, [("PTZCmd", "A50F0100000000B6")], enc)

        with pytest.raises(ControlFailed) as info:
            await svc.send(gw_dev, "PTZ raw", bad, wait=False)
        assert info.value.status == 502 and "refused by device" in info.value.reason
        assert "400 PTZCmd checksum is B6, expected B5" in info.value.reason
        assert dev.control.ptz_log[-1] == "A50F0100000000B6"
        # Offline: 409.
        await dev.stop(unregister=True)
        await wait_until(lambda: not gw_dev.rec.online, 5)
        status, answer, _ = await http.request("POST", url, json={"action": "stop"})
        assert status == 409 and "offline" in answer["error"]["reason"]
        status, answer, _ = await http.request("PUT", f"/api/v1/devices/{dev.device_id}/config",
                                               json={"name": "x"})
        assert status == 409


async def test_device_that_never_answers_is_504(tmp_path: Path) -> None:
    async with site(config(tmp_path), channels=1) as (gw, sim, http):
        dev = sim.devices[0]
        dev.control.silent = True  # 200 OK, never the Response
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        status, answer, _ = await http.request("PUT", f"/api/v1/devices/{dev.device_id}/config",
                                               json={"name": "never"})
        assert status == 504 and "no answer" in answer["error"]["reason"], answer
        assert 2.5 < loop.time() - t0 < 6  # devices.query_timeout is 3 s in the tests
        status, answer, _ = await http.get(f"/api/v1/channels/{dev.device_id}/{dev.channel_ids[0]}/presets")
        assert status == 504
        # PTZ needs only the 200 OK: still fine.
        status, _, _ = await http.request("POST", f"/api/v1/channels/{dev.device_id}/{dev.channel_ids[0]}/ptz",
                                          json={"action": "stop"})
        assert status == 200
        # No SIP answer at all (the MESSAGE handler gone): 504 once the transaction times out (64*T1).
        dev.request_handlers["MESSAGE"] = lambda server, ev: None
        status, answer, _ = await http.request(
            "POST", f"/api/v1/channels/{dev.device_id}/{dev.channel_ids[0]}/ptz", json={"action": "stop"})
        assert status == 504 and "no SIP answer" in answer["error"]["reason"], answer


async def test_commands_reboot_and_config_round_trip(tmp_path: Path) -> None:
    async with site(config(tmp_path), channels=1) as (gw, sim, http):
        dev = sim.devices[0]
        url = f"/api/v1/devices/{dev.device_id}/commands"
        status, body, _ = await http.request("POST", url, json={"command": "record_start"})
        assert status == 200 and body["status"] == "ok" and body["result"] == "OK", body
        assert dev.control.recording is True
        assert (await http.request("POST", url, json={"command": "record_stop"}))[0] == 200
        assert dev.control.recording is False
        status, body, _ = await http.request("POST", url, json={"command": "guard_set",
                                                                "channel_id": dev.channel_ids[0]})
        assert status == 200 and body["channel_id"] == dev.channel_ids[0] and dev.control.guard is True
        assert manscdp.decode(dev.control.bodies[-1]).device_id == dev.channel_ids[0]
        status, body, _ = await http.request("POST", url, json={"command": "alarm_reset", "alarm_method": "2"})
        assert status == 200 and body["result"] == "OK"
        status, body, _ = await http.request("POST", url, json={"command": "home_position", "enabled": True,
                                                                "reset_time": 30, "preset_index": 1})
        assert status == 200 and body["status"] == "accepted"
        status, body, _ = await http.request("POST", url, json={
            "command": "drag_zoom_in", "length": 1920, "width": 1080, "mid_x": 960, "mid_y": 540,
            "length_x": 100, "length_y": 100})
        assert status == 200 and body["status"] == "accepted"
        assert manscdp.decode(dev.control.bodies[-1]).text("DragZoomIn/MidPointX") == "960"
        for bad, reason in (({"command": "explode"}, "'explode'"),
                            ({"command": "home_position", "enabled": True}, "reset_time and preset_index"),
                            ({"command": "home_position"}, "field 'enabled' is required"),
                            ({"command": "drag_zoom_out", "length": 1}, "required for drag_zoom_out"),
                            ({"command": "reboot", "force": True}, "unknown field(s) force"),
                            ({"command": "reboot", "channel_id": "1"}, "20 digits")):
            status, answer, _ = await http.request("POST", url, json=bad)
            assert status == 400 and reason in answer["error"]["reason"], (bad, answer)
        # Config: set BasicParam, read it back.
        cfg_url = f"/api/v1/devices/{dev.device_id}/config"
        status, body, _ = await http.request("PUT", cfg_url, json={"name": "Gate camera",
                                                                   "heartbeat_interval": 2})
        assert status == 200 and body["result"] == "OK", body
        assert dev.name == "Gate camera" and dev.keepalive_interval == 2
        status, body, _ = await http.get(cfg_url)
        assert status == 200 and body["result"] == "OK", body
        basic = body["sections"]["BasicParam"]
        assert basic["Name"] == "Gate camera" and basic["HeartBeatInterval"] == "2"
        assert basic["DeviceID"] == dev.device_id and "Password" not in basic
        assert (await http.request("PUT", cfg_url, json={}))[0] == 400
        assert (await http.request("PUT", cfg_url, json={"heartbeat_interval": 0}))[0] == 400
        assert (await http.get(cfg_url + "?type=Nope"))[0] == 400
        # Reboot: accepted at once, then the device goes down and registers again.
        registrations = dev.registrations
        status, body, _ = await http.request("POST", url, json={"command": "reboot"})
        assert status == 200 and body["status"] == "accepted"
        assert manscdp.decode(dev.control.bodies[-1]).text("TeleBoot") == "Boot"
        await wait_until(lambda: dev.control.reboots == 1 and dev.registrations > registrations, 5)
        assert dev.registered


async def test_cruise_scan_and_aux(tmp_path: Path) -> None:
    async with site(config(tmp_path), channels=1) as (gw, sim, http):
        dev = sim.devices[0]
        ch = dev.channel_ids[0]
        url = f"/api/v1/channels/{dev.device_id}/{ch}/ptz"
        head = dev.control.head(ch)

        async def ptz(body: dict[str, object], expect: str) -> None:
            """POST ``body``; the PTZCmd hand-computed (byte 8 = sum of bytes 1..7 mod 256) reaches the
            device as answered."""
            status, answer, _ = await http.request("POST", url, json=body)
            assert status == 200, (body, answer)
            assert answer["ptz_cmd"] == expect and answer["status"] == "accepted", answer
            assert dev.control.ptz_log[-1] == expect

        # Presets 1 here, 5 at pan 0x40: the cruise's points.
        await ptz({"action": "preset_set", "preset": 1}, "A50F018100010037")
        await ptz({"action": "move", "pan": 1, "speed": 0x40}, "A50F0101400000F6")
        await ptz({"action": "preset_set", "preset": 5}, "A50F01810005003B")
        # Cruise 2: points 1 and 5 (0x84: A5+0F+01+84+02+05 = 0x140 -> 40), speed 0x123 (low byte 23, high
        # nibble 1 in byte 7: 10), dwell 30 s (1E).
        await ptz({"action": "cruise_add", "group": 2, "preset": 1}, "A50F01840201003C")
        await ptz({"action": "cruise_add", "group": 2, "preset": 5}, "A50F018402050040")
        await ptz({"action": "cruise_speed", "group": 2, "speed": 0x123}, "A50F018602231070")
        await ptz({"action": "cruise_dwell", "group": 2, "seconds": 30}, "A50F0187021E005C")
        cruise = head.cruises[2]
        assert (cruise.points, cruise.speed, cruise.dwell) == ([1, 5], 0x123, 30)
        assert head.cruising is None
        # Start: the head goes to the first point and cruises until a stop.
        await ptz({"action": "cruise_start", "group": 2}, "A50F01880200003F")
        assert head.cruising == 2 and head.position == (0, 0, 0)
        await ptz({"action": "stop"}, "A50F0100000000B5")
        assert head.cruising is None
        # Delete point 5, then the whole cruise (preset 0).
        await ptz({"action": "cruise_delete", "group": 2, "preset": 5}, "A50F018502050041")
        assert head.cruises[2].points == [1]
        await ptz({"action": "cruise_delete", "group": 2, "preset": 0}, "A50F01850200003C")
        assert 2 not in head.cruises
        # Scan 1: left edge here (pan 0), right edge at pan 0x20, speed 4095 (FF, F0), start, stop.
        await ptz({"action": "scan_left", "group": 1}, "A50F018901010040")
        await ptz({"action": "move", "pan": 1, "speed": 0x20}, PtzCommand.move(pan=1, pan_speed=0x20).encode())
        await ptz({"action": "scan_right", "group": 1}, "A50F018901020041")
        await ptz({"action": "scan_speed", "group": 1, "speed": 4095}, "A50F018A01FFF02F")
        scan = head.scans[1]
        assert (scan.left, scan.right, scan.speed) == (0, 0x20, 4095) and head.scanning is None
        await ptz({"action": "scan_start", "group": 1}, "A50F01890100003F")
        assert head.scanning == 1
        await ptz({"action": "stop"}, "A50F0100000000B5")
        assert head.scanning is None and head.moving == (0, 0, 0)
        # Auxiliary switch 1 (the wiper) on and off.
        await ptz({"action": "aux", "switch": 1, "on": True}, "A50F018C01000042")
        assert head.aux == {1: True}
        await ptz({"action": "aux", "switch": 1, "on": False}, "A50F018D01000043")
        assert head.aux == {1: False}
        # Missing and out-of-range fields: 400 with sip.ptz's exact reason; nothing reaches the device.
        sent = len(dev.control.bodies)
        for body, reason in (
            ({"action": "cruise_add", "preset": 1}, "field 'group' is required for cruise_add (0..255)"),
            ({"action": "cruise_add", "group": 1}, "field 'preset' is required for cruise_add (1..255)"),
            ({"action": "cruise_add", "group": 256, "preset": 1}, "cruise group must be 0..255, got 256"),
            ({"action": "cruise_add", "group": 1, "preset": 0}, "preset must be 1..255, got 0"),
            ({"action": "cruise_delete", "group": 1},
             "field 'preset' is required for cruise_delete (0..255, 0: the whole cruise)"),
            ({"action": "cruise_delete", "group": 1, "preset": 256}, "preset must be 0..255, got 256"),
            ({"action": "cruise_speed", "group": 1}, "field 'speed' is required for cruise_speed (0..4095)"),
            ({"action": "cruise_speed", "group": 1, "speed": 4096}, "cruise speed must be 0..4095, got 4096"),
            ({"action": "cruise_dwell", "group": 1}, "field 'seconds' is required for cruise_dwell (0..4095)"),
            ({"action": "cruise_dwell", "group": 1, "seconds": -1}, "dwell time must be 0..4095, got -1"),
            ({"action": "cruise_start"}, "field 'group' is required for cruise_start (0..255)"),
            ({"action": "scan_start", "group": -1}, "scan group must be 0..255, got -1"),
            ({"action": "scan_left"}, "field 'group' is required for scan_left (0..255)"),
            ({"action": "scan_right", "group": 300}, "scan group must be 0..255, got 300"),
            ({"action": "scan_speed", "group": 1}, "field 'speed' is required for scan_speed (0..4095)"),
            ({"action": "scan_speed", "group": 1, "speed": 5000}, "scan speed must be 0..4095, got 5000"),
            ({"action": "scan_start", "group": 1, "speed": 3},
             "unknown field(s) speed: expected group"),
            ({"action": "aux", "switch": 1}, "field 'on' is required for aux (true or false)"),
            ({"action": "aux", "on": True}, "field 'switch' is required for aux (0..255)"),
            ({"action": "aux", "switch": 256, "on": True}, "switch must be 0..255, got 256"),
            ({"action": "aux", "switch": 1, "on": 1}, "field 'on' must be bool, not int"),
            ({"action": "cruise_start", "group": "2"}, "field 'group' must be int, not str"),
        ):
            status, answer, _ = await http.request("POST", url, json=body)
            assert status == 400 and answer["error"]["reason"] == reason, (body, answer)
        assert len(dev.control.bodies) == sent


async def test_presets_in_parts(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg = replace(cfg, devices=replace(cfg.devices, query_timeout=1))
    async with site(cfg, channels=1) as (gw, sim, http):
        dev = sim.devices[0]
        ch = dev.channel_ids[0]
        base = f"/api/v1/channels/{dev.device_id}/{ch}"
        head = dev.control.head(ch)
        # 24 presets straight on the head, the 25th over REST: 3 parts of 10, 10 and 5.
        head.presets.update({i: (i, 0, 0) for i in range(1, 25)})
        assert (await http.request("POST", f"{base}/ptz", json={"action": "preset_set", "preset": 25}))[0] == 200
        assert dev.control.presets_per_message == 10
        assert [len(el.children) for _, el in dev.control.preset_parts(ch)
                if isinstance(el, manscdp.Element)] == [10, 10, 5]
        want = [{"preset_id": i, "name": f"Preset {i}"} for i in range(1, 26)]
        sent = dev.control.preset_parts_sent
        status, body, _ = await http.get(f"{base}/presets")
        assert status == 200, body
        assert body == {"device_id": dev.device_id, "channel_id": ch, "sum_num": 25, "complete": True,
                        "parts": 3, "presets": want}
        assert dev.control.preset_parts_sent == sent + 3
        # Out of order, one part twice: the same 25 once each.
        dev.control.preset_parts_order = [2, 0, 2, 1]
        status, body, _ = await http.get(f"{base}/presets")
        assert status == 200 and body["complete"] is True and body["presets"] == want, body
        assert body["parts"] == 4
        # The middle part lost: after devices.query_timeout (1 s here) what came, marked incomplete.
        dev.control.preset_parts_order = [0, 2]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        status, body, _ = await http.get(f"{base}/presets")
        assert status == 200, body
        assert 0.9 < loop.time() - t0 < 3
        assert (body["complete"], body["sum_num"], body["parts"]) == (False, 25, 2)
        assert [p["preset_id"] for p in body["presets"]] == [*range(1, 11), *range(21, 26)]
        # No part at all: 504.
        dev.control.preset_parts_order = []
        status, body, _ = await http.get(f"{base}/presets")
        assert status == 504 and "no answer" in body["error"]["reason"], body
        # Fewer than 10 presets: one part, as before.
        dev.control.preset_parts_order = None
        head.presets = {3: (0, 0, 0)}
        status, body, _ = await http.get(f"{base}/presets")
        assert (status, body["parts"], body["complete"], body["presets"]) == (
            200, 1, True, [{"preset_id": 3, "name": "Preset 3"}])


def test_metric_command_table_matches_the_routes() -> None:
    assert list(_PTZ_FIELDS) == list(metrics.CONTROL_PTZ_ACTIONS) == list(_PTZ_BUILD)
    assert set(_PTZ_REQUIRED) <= set(_PTZ_FIELDS)
    assert list(_COMMAND_FIELDS) == list(metrics.CONTROL_DEVICE_COMMANDS)
    results = {ControlFailed(status, "x").result for status in (400, 404, 409, 502, 503, 504)}
    assert results | {"ok", "accepted", "refused"} == set(metrics.CONTROL_RESULTS)


async def test_control_metrics(tmp_path: Path) -> None:
    async with site(config(tmp_path), channels=1) as (gw, sim, http):
        dev = sim.devices[0]
        ch = dev.channel_ids[0]
        base = f"/api/v1/channels/{dev.device_id}/{ch}"
        accepted = 'command="cruise_start",result="accepted"'
        bad = 'command="cruise_start",result="bad_request"'
        preset_ok = 'command="preset_query",result="ok"'
        _, text, _ = await http.get("/metrics")
        before = {labels: metric(text, "gb28181_control_requests_total", labels) or 0.0
                  for labels in (accepted, bad, preset_ok)}
        count = metric(text, "gb28181_control_duration_seconds_count", 'command="cruise_start"') or 0.0
        # Failure series exist before the first failure.
        assert metric(text, "gb28181_control_requests_total", 'command="aux",result="timeout"') is not None
        assert (await http.request("POST", f"{base}/ptz", json={"action": "cruise_start", "group": 1}))[0] == 200
        assert (await http.request("POST", f"{base}/ptz", json={"action": "cruise_start"}))[0] == 400
        assert (await http.request("POST", f"{base}/ptz", json={"action": "spin"}))[0] == 400  # not counted
        assert (await http.get(f"{base}/presets"))[0] == 200
        _, text, _ = await http.get("/metrics")
        assert metric(text, "gb28181_control_duration_seconds_count", 'command="cruise_start"') == count + 2
        assert metric(text, "gb28181_control_requests_total", accepted) == before[accepted] + 1
        assert metric(text, "gb28181_control_requests_total", bad) == before[bad] + 1
        assert metric(text, "gb28181_control_requests_total", preset_ok) == before[preset_ok] + 1
        assert 'command="spin"' not in text
