"""Device control end to end: PTZ, presets, device commands and configuration through the REST API, over real
sockets to the simulator (``gateway.control``, ``gateway.sim.control``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from gw_util import running_gateway
from test_api import Http
from test_streams import config, started, wait_until

from gateway.control import ControlFailed, DeviceControl
from sip import manscdp
from sip.ptz import PtzCommand

pytestmark = pytest.mark.e2e


async def test_ptz_move_stop_presets(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw, channels=2)
        http = Http(gw.http.port)
        try:
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
        finally:
            await http.close()
            await sim.stop()


async def test_ptz_bad_bodies_unknown_and_offline(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw, channels=1)
        http = Http(gw.http.port)
        try:
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
        finally:
            await http.close()
            await sim.stop()


async def test_device_that_never_answers_is_504(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw, channels=1)
        http = Http(gw.http.port)
        try:
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
        finally:
            await http.close()
            await sim.stop()


async def test_commands_reboot_and_config_round_trip(tmp_path: Path) -> None:
    async with running_gateway(config(tmp_path)) as gw:
        sim = await started(gw, channels=1)
        http = Http(gw.http.port)
        try:
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
        finally:
            await http.close()
            await sim.stop()
