"""Device control over REST: PTZ, presets, device commands and configuration (``DeviceControl``, ``DeviceConfig``,
``PresetQuery``, ``ConfigDownload`` MESSAGEs), and the routes that expose them.

Theory of operation
-------------------
``DeviceControl.send`` builds the body with ``sip.control`` (the SN from the registry, the device's charset), sends
it in a ``MESSAGE`` to the device (Request-URI and To: the device; the body's ``DeviceID``: the channel for PTZ and
per-channel commands, else the device) and waits for the SIP final response. Commands that get a ``<Response>``
(RecordCmd, GuardCmd, AlarmCmd, DeviceConfig, PresetQuery, ConfigDownload: §9.3.2) then wait for it, matched by
(device, SN) through the registry, up to ``devices.query_timeout``; the others (PTZ, TeleBoot, HomePosition,
DragZoom) return after the ``200 OK`` as *accepted*: most devices send nothing more.

Failures are ``ControlFailed`` with the HTTP status the API answers: unknown device or channel ``404``, device
offline ``409``, arguments refused by ``sip.ptz``/``sip.control`` ``400`` (their exact reason), the device's SIP
refusal ``502`` (with its status), a ``<Result>ERROR</Result>`` or an unreadable answer ``502``, no SIP answer or
no ``<Response>`` in time ``504``.

Routes (``ControlApi.add_routes``; errors are the API's JSON errors)::

    POST /api/v1/channels/{device_id}/{channel_id}/ptz    {"action": "move", "pan": 1, "speed": 128, ...}
    GET  /api/v1/channels/{device_id}/{channel_id}/presets
    POST /api/v1/devices/{device_id}/commands             {"command": "reboot"|"record_start"|..., ...}
    PUT  /api/v1/devices/{device_id}/config               {"name": ..., "heartbeat_interval": ..., ...}
    GET  /api/v1/devices/{device_id}/config?type=BasicParam

A ConfigDownload ``BasicParam`` may carry the device's ``Password`` in clear: it is left out of the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from sip import control
from sip.control import ControlError, DragZoom
from sip.manscdp import ManscdpDocument
from sip.ptz import DEFAULT_SPEED, DEFAULT_ZOOM_SPEED, PtzCommand, PtzError

from .devices import MANSCDP, Device, DeviceRegistry, QueryFailed
from .sip_transport import SipServer, SipTimeout

if TYPE_CHECKING:
    from .app import Gateway

log = structlog.get_logger("gateway.control")

__all__ = ["ControlAnswer", "ControlApi", "ControlFailed", "DeviceControl"]

Builder = Callable[[int, str], bytes]  # (sn, encoding) -> body


class ControlFailed(Exception):
    """A command that could not be carried out; ``status`` is the HTTP status the API answers."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ControlAnswer:
    """What came back: the SIP status of the MESSAGE and the device's ``<Response>`` (None when not awaited)."""

    sip_status: int
    response: ManscdpDocument | None


class DeviceControl:
    """Sends control and configuration MESSAGEs to devices and waits for their answers."""

    def __init__(self, registry: DeviceRegistry, server: Callable[[], SipServer | None]) -> None:
        self.registry = registry
        self._server = server

    def target(self, device_id: str, channel_id: str | None = None) -> Device:
        """The device (and, if given, its catalog item ``channel_id``), known and online; else 404/409."""
        dev = self.registry.get(device_id)
        if dev is None:
            raise ControlFailed(404, f"unknown device {device_id}")
        if channel_id is not None and channel_id != device_id and channel_id not in dev.channels:
            raise ControlFailed(404, f"unknown channel {channel_id} of device {device_id}")
        if not dev.rec.online or dev.peer is None:
            raise ControlFailed(409, f"device {device_id} is offline")
        return dev

    async def send(self, dev: Device, what: str, build: Builder, *, wait: bool) -> ControlAnswer:
        """Send the body ``build(sn, encoding)`` makes; wait for the ``<Response>`` too if ``wait``."""
        registry = self.registry
        server = self._server()
        if server is None:
            raise ControlFailed(503, "SIP server not started")
        sn = registry.next_sn()
        try:
            body = build(sn, dev.rec.charset or "GB2312")
        except (ControlError, PtzError) as exc:
            raise ControlFailed(400, exc.reason) from None
        fut = registry.expect_response(dev.device_id, sn) if wait else None  # before sending: it may overtake
        try:
            try:
                request = registry.device_request(dev, "MESSAGE", body, MANSCDP)
            except QueryFailed as exc:
                raise ControlFailed(409, f"device {dev.device_id}: {exc.reason}") from None
            assert dev.peer is not None
            try:
                response = await server.request(request, dev.peer)
            except SipTimeout:
                raise ControlFailed(504, f"{what}: no SIP answer from device {dev.device_id}") from None
            if response.status >= 300:
                raise ControlFailed(502, f"{what} refused by device {dev.device_id}: "
                                         f"{response.status} {response.reason}")
            log.info("control sent", device_id=dev.device_id, what=what, sn=sn, sip_status=response.status)
            if fut is None:
                return ControlAnswer(response.status, None)
            timeout = registry.dc.query_timeout
            try:
                doc = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                raise ControlFailed(504, f"{what}: no answer from device {dev.device_id} "
                                         f"within {timeout:g} s") from None
            return ControlAnswer(response.status, doc)
        finally:
            if fut is not None:
                registry.forget_response(dev.device_id, sn)


# ---------------------------------------------------------------------------------------------- REST

_PTZ_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "move": {"pan": int, "tilt": int, "zoom": int, "speed": int, "zoom_speed": int},
    "stop": {},
    "focus": {"direction": int, "speed": int},
    "iris": {"direction": int, "speed": int},
    "preset_set": {"preset": int},
    "preset_call": {"preset": int},
    "preset_delete": {"preset": int},
}
_DRAG: dict[str, type | tuple[type, ...]] = {"length": int, "width": int, "mid_x": int, "mid_y": int, "length_x": int, "length_y": int}
_COMMAND_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "reboot": {},
    "record_start": {},
    "record_stop": {},
    "guard_set": {},
    "guard_reset": {},
    "alarm_reset": {"alarm_method": (str, int), "alarm_type": int},
    "home_position": {"enabled": bool, "reset_time": int, "preset_index": int},
    "drag_zoom_in": _DRAG,
    "drag_zoom_out": _DRAG,
}
_CONFIG_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str, "expiration": int, "heartbeat_interval": int, "heartbeat_count": int}
_SECRET_KEYS = frozenset({"password"})


def _ptz_command(action: str, body: dict[str, Any]) -> PtzCommand:
    """The PTZCmd for a checked body; ``PtzError`` with the exact reason."""
    if action == "move":
        speed = body.get("speed", DEFAULT_SPEED)
        return PtzCommand.move(body.get("pan", 0), body.get("tilt", 0), body.get("zoom", 0), pan_speed=speed,
                               tilt_speed=speed, zoom_speed=body.get("zoom_speed", DEFAULT_ZOOM_SPEED))
    if action == "stop":
        return PtzCommand.stop()
    if action in ("focus", "iris"):
        direction = body.get("direction")
        if direction is None:
            raise PtzError(f"field 'direction' is required for {action} (1, -1 or 0)")
        make = PtzCommand.focus if action == "focus" else PtzCommand.iris
        return make(direction, body.get("speed", DEFAULT_SPEED))
    preset = body.get("preset")
    if preset is None:
        raise PtzError(f"field 'preset' is required for {action} (1..255)")
    preset_make = {"preset_set": PtzCommand.preset_set, "preset_call": PtzCommand.preset_call,
            "preset_delete": PtzCommand.preset_delete}[action]
    return preset_make(preset)


class ControlApi:
    """The REST routes over ``DeviceControl`` (added to the API's application by ``gateway.api``)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.control = DeviceControl(gateway.devices, lambda: getattr(gateway, "sip", None))

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/api/v1/channels/{device_id}/{channel_id}/ptz", self.ptz)
        r.add_get("/api/v1/channels/{device_id}/{channel_id}/presets", self.presets)
        r.add_post("/api/v1/devices/{device_id}/commands", self.command)
        r.add_put("/api/v1/devices/{device_id}/config", self.put_config)
        r.add_get("/api/v1/devices/{device_id}/config", self.get_config)

    # -------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _api() -> Any:
        from . import api  # gateway.api imports this module: bound late, not at import time

        return api

    def _ids(self, request: web.Request, channel: bool) -> tuple[str, str | None]:
        api = self._api()
        device_id = api._check_id(request.match_info["device_id"], "device ID")
        channel_id = api._check_id(request.match_info["channel_id"], "channel ID") if channel else None
        return device_id, channel_id

    async def _body(self, request: web.Request, key: str, table: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        api = self._api()
        body = await api._json_object(request)
        name = body.get(key)
        if not isinstance(name, str) or name not in table:
            raise api.ApiError(400, f"field {key!r} must be one of {', '.join(table)}, not {str(name)[:40]!r}")
        rest = {k: v for k, v in body.items() if k != key}
        return name, rest

    async def _run(self, device_id: str, channel_id: str | None, what: str, build: Builder, *,
                   wait: bool) -> ControlAnswer:
        api = self._api()
        try:
            dev = self.control.target(device_id, channel_id)
            return await self.control.send(dev, what, build, wait=wait)
        except ControlFailed as exc:
            raise api.ApiError(exc.status, exc.reason) from None

    def _result(self, device_id: str, answer: ControlAnswer, what: str) -> str:
        """The ``<Result>`` of a control/config Response: "OK" (an ERROR is a 502)."""
        api = self._api()
        assert answer.response is not None
        try:
            result = control.parse_control_response(answer.response).result
        except ControlError as exc:
            raise api.ApiError(502, f"{what}: unreadable answer from device {device_id}: {exc.reason}") from None
        if result is not control.Result.OK:
            raise api.ApiError(502, f"{what}: device {device_id} answered Result ERROR")
        return result.value

    # -------------------------------------------------------------------------------------- handlers
    async def ptz(self, request: web.Request) -> web.Response:
        api = self._api()
        device_id, channel_id = self._ids(request, channel=True)
        assert channel_id is not None
        action, rest = await self._body(request, "action", _PTZ_FIELDS)
        api._fields(rest, _PTZ_FIELDS[action])
        try:
            cmd = _ptz_command(action, rest)
        except PtzError as exc:
            raise api.ApiError(400, exc.reason) from None
        answer = await self._run(device_id, channel_id, f"PTZ {action}",
                                 lambda sn, enc: control.ptz_control(sn, channel_id, cmd, encoding=enc), wait=False)
        return web.json_response({"device_id": device_id, "channel_id": channel_id, "action": action,
                                  "ptz_cmd": cmd.encode(), "status": "accepted", "sip_status": answer.sip_status})

    async def presets(self, request: web.Request) -> web.Response:
        api = self._api()
        device_id, channel_id = self._ids(request, channel=True)
        assert channel_id is not None
        answer = await self._run(device_id, channel_id, "PresetQuery",
                                 lambda sn, enc: control.preset_query(sn, channel_id, encoding=enc), wait=True)
        assert answer.response is not None
        try:
            found = control.parse_preset_response(answer.response)
        except ControlError as exc:
            raise api.ApiError(502, f"PresetQuery: unreadable answer from device {device_id}: {exc.reason}") from None
        return web.json_response({
            "device_id": device_id, "channel_id": channel_id, "sum_num": found.sum_num,
            "presets": [{"preset_id": p.preset_id, "name": p.name} for p in found.presets]})

    async def command(self, request: web.Request) -> web.Response:
        api = self._api()
        device_id, _ = self._ids(request, channel=False)
        name, rest = await self._body(request, "command", _COMMAND_FIELDS)
        channel_id = rest.pop("channel_id", None)
        if channel_id is not None:
            if not isinstance(channel_id, str):
                raise api.ApiError(400, f"field 'channel_id' must be str, not {type(channel_id).__name__}")
            api._check_id(channel_id, "channel_id")
        api._fields(rest, _COMMAND_FIELDS[name])
        target = channel_id or device_id
        build: Builder
        wait = True
        if name == "reboot":
            build, wait = (lambda sn, enc: control.teleboot(sn, target, encoding=enc)), False
        elif name in ("record_start", "record_stop"):
            action = control.RecordAction.RECORD if name == "record_start" else control.RecordAction.STOP
            build = lambda sn, enc: control.record_control(sn, target, action, encoding=enc)  # noqa: E731
        elif name in ("guard_set", "guard_reset"):
            guard = control.GuardAction.SET if name == "guard_set" else control.GuardAction.RESET
            build = lambda sn, enc: control.guard_control(sn, target, guard, encoding=enc)  # noqa: E731
        elif name == "alarm_reset":
            build = lambda sn, enc: control.alarm_reset(  # noqa: E731
                sn, target, alarm_method=rest.get("alarm_method"), alarm_type=rest.get("alarm_type"), encoding=enc)
        elif name == "home_position":
            if "enabled" not in rest:
                raise api.ApiError(400, "field 'enabled' is required for home_position")
            build, wait = (lambda sn, enc: control.home_position(
                sn, target, rest["enabled"], reset_time=rest.get("reset_time"),
                preset_index=rest.get("preset_index"), encoding=enc)), False
        else:
            missing = sorted(set(_DRAG) - set(rest))
            if missing:
                raise api.ApiError(400, f"field(s) {', '.join(missing)} required for {name}")
            try:
                box = DragZoom(**rest)
            except ControlError as exc:
                raise api.ApiError(400, exc.reason) from None
            zoom_in = name == "drag_zoom_in"
            build, wait = (lambda sn, enc: control.drag_zoom(sn, target, box, zoom_in=zoom_in, encoding=enc)), False
        answer = await self._run(device_id, channel_id, name, build, wait=wait)
        out: dict[str, Any] = {"device_id": device_id, "channel_id": channel_id, "command": name,
                               "sip_status": answer.sip_status}
        if answer.response is None:
            out["status"] = "accepted"
        else:
            out["status"] = "ok"
            out["result"] = self._result(device_id, answer, name)
        return web.json_response(out)

    async def put_config(self, request: web.Request) -> web.Response:
        api = self._api()
        device_id, _ = self._ids(request, channel=False)
        body = api._fields(await api._json_object(request), _CONFIG_FIELDS)
        params = {"name": body.get("name"), "expiration": body.get("expiration"),
                  "heartbeat_interval": body.get("heartbeat_interval"),
                  "heartbeat_count": body.get("heartbeat_count")}
        answer = await self._run(device_id, None, "DeviceConfig",
                                 lambda sn, enc: control.device_config_basic(sn, device_id, **params, encoding=enc),
                                 wait=True)
        return web.json_response({"device_id": device_id, "status": "ok", "sip_status": answer.sip_status,
                                  "result": self._result(device_id, answer, "DeviceConfig"),
                                  "applied": {k: v for k, v in params.items() if v is not None}})

    async def get_config(self, request: web.Request) -> web.Response:
        api = self._api()
        device_id, _ = self._ids(request, channel=False)
        kinds = [k for k in request.query.get("type", "BasicParam").replace(",", "/").split("/") if k]
        answer = await self._run(device_id, None, "ConfigDownload",
                                 lambda sn, enc: control.config_download_query(sn, device_id, *kinds, encoding=enc),
                                 wait=True)
        assert answer.response is not None
        try:
            found = control.parse_config_download_response(answer.response)
        except ControlError as exc:
            raise api.ApiError(502, f"ConfigDownload: unreadable answer from device {device_id}: {exc.reason}") \
                from None
        sections = {name: {k: v for k, v in values.items() if k.lower() not in _SECRET_KEYS}
                    for name, values in found.sections.items()}
        return web.json_response({"device_id": device_id, "types": kinds, "sip_status": answer.sip_status,
                                  "result": found.result.value if found.result is not None else None,
                                  "sections": sections})
