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

Answers in parts (``send(..., parts=True)``, PresetQuery): a device with many presets splits its answer into
several ``<Response>`` MESSAGEs with the same SN, ``<SumNum>`` the total and ``<PresetList Num="k">`` the items of
each (as Catalog). Every part is queued by the registry (``DeviceRegistry.expect_parts``); they are merged with
``sip.control.merge_preset_responses`` (deduplicated by PresetID, so repeated and out-of-order parts do no harm)
until the distinct presets reach ``SumNum`` (or a part without ``SumNum`` came: nothing tells to wait) or
``devices.query_timeout`` passes. On the timeout the parts that came are answered with ``"complete": false``;
none at all is ``504``.

Failures are ``ControlFailed`` with the HTTP status the API answers: unknown device or channel ``404``, device
offline ``409``, arguments refused by ``sip.ptz``/``sip.control`` ``400`` (their exact reason), the device's SIP
refusal ``502`` (with its status), a ``<Result>ERROR</Result>`` or an unreadable answer ``502``, no SIP answer or
no ``<Response>`` in time ``504``.

Routes (``ControlApi.add_routes``; errors are the API's JSON errors, ``gateway.validation``)::

    POST /api/v1/channels/{device_id}/{channel_id}/ptz    {"action": "move", "pan": 1, "speed": 128, ...}
    GET  /api/v1/channels/{device_id}/{channel_id}/presets   -> {"presets": [...], "sum_num", "complete", "parts"}
    POST /api/v1/devices/{device_id}/commands             {"command": "reboot"|"record_start"|..., ...}
    PUT  /api/v1/devices/{device_id}/config               {"name": ..., "heartbeat_interval": ..., ...}
    GET  /api/v1/devices/{device_id}/config?type=BasicParam

PTZ actions and their fields (``sip.ptz``, 附录 A.3; missing required fields and ranges are ``400``)::

    move {pan, tilt, zoom: -1|0|1, speed: 0..255, zoom_speed: 0..15}   stop {}
    focus, iris {direction: -1|0|1 (required), speed: 0..255}
    preset_set, preset_call, preset_delete {preset: 1..255}
    cruise_add {group: 0..255, preset: 1..255}      cruise_delete {group, preset: 0..255 (0: the whole cruise)}
    cruise_speed {group, speed: 0..4095}            cruise_dwell {group, seconds: 0..4095}    cruise_start {group}
    scan_start, scan_left, scan_right {group}       scan_speed {group, speed: 0..4095}
    aux {switch: 0..255, on: true|false}

A ConfigDownload ``BasicParam`` may carry the device's ``Password`` in clear: it is left out of the answer.

Metrics (``gateway.metrics``): each request that names a known command (``metrics.CONTROL_COMMANDS``: the PTZ
action, the device command, ``preset_query``, ``device_config``, ``config_download``) is counted once in
``gb28181_control_requests_total{command, result}`` and timed in ``gb28181_control_duration_seconds{command}``
by ``ControlApi`` (``_metered``); ``result`` is ``ControlFailed.result`` (or the 400 of a bad argument), ``ok``
or ``accepted``. A PresetQuery answered incomplete counts as ``timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from sip import control
from sip.control import ControlError, DragZoom
from sip.manscdp import ManscdpDocument
from sip.ptz import DEFAULT_SPEED, DEFAULT_ZOOM_SPEED, PtzCommand, PtzError, ScanAction

from . import metrics
from .devices import Device, DeviceRegistry, QueryFailed
from .sip_router import MANSCDP
from .sip_transport import SipServer, SipTimeout
from .validation import ApiError, check_id, fields, json_object

if TYPE_CHECKING:
    from .app import Gateway

log = structlog.get_logger("gateway.control")

__all__ = ["ControlAnswer", "ControlApi", "ControlFailed", "DeviceControl"]

Builder = Callable[[int, str], bytes]  # (sn, encoding) -> body

# The metrics result of an HTTP status (gateway.metrics.CONTROL_RESULTS); anything else is "error".
_RESULT_BY_STATUS = {400: "bad_request", 404: "unknown", 409: "offline", 504: "timeout"}


class ControlFailed(Exception):
    """A command that could not be carried out; ``status`` is the HTTP status the API answers, ``result`` the
    outcome counted in ``gb28181_control_requests_total`` (by default from the status)."""

    def __init__(self, status: int, reason: str, result: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.result = result or _RESULT_BY_STATUS.get(status, "error")


@dataclass(frozen=True, slots=True)
class ControlAnswer:
    """What came back: the SIP status of the MESSAGE and the device's ``<Response>`` (None when not awaited).

    With ``parts``: every part that came (in arrival order, ``response`` the first) and whether they were
    complete before ``devices.query_timeout``."""

    sip_status: int
    response: ManscdpDocument | None
    parts: tuple[ManscdpDocument, ...] = ()
    complete: bool = True


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
            raise ControlFailed(409, f"device {dev.device_id} is offline")
        return dev

    async def send(self, dev: Device, what: str, build: Builder, *, wait: bool, parts: bool = False) -> ControlAnswer:
        """Send the body ``build(sn, encoding)`` makes; wait for the ``<Response>`` too if ``wait``, or for all the
        parts of a PresetQuery answer if ``parts`` (see the module docstring)."""
        registry = self.registry
        server = self._server()
        if server is None:
            raise ControlFailed(503, "SIP server not started")
        sn = registry.next_sn()
        try:
            body = build(sn, dev.rec.charset or "GB2312")
        except (ControlError, PtzError) as exc:
            raise ControlFailed(400, exc.reason) from None
        # Before sending: the answer may overtake the 200 OK.
        queue = registry.expect_parts(dev.device_id, sn) if parts else None
        fut = registry.expect_response(dev.device_id, sn) if wait and not parts else None
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
                                         f"{response.status} {response.reason}", "refused")
            log.info("control sent", device_id=dev.device_id, what=what, sn=sn, sip_status=response.status)
            timeout = registry.dc.query_timeout
            if queue is not None:
                docs, complete = await self._collect(queue, dev, what, timeout)
                if not docs:
                    raise ControlFailed(504, f"{what}: no answer from device {dev.device_id} "
                                             f"within {timeout:g} s")
                if not complete:
                    log.warning("answer incomplete", device_id=dev.device_id, what=what, sn=sn, parts=len(docs))
                return ControlAnswer(response.status, docs[0], tuple(docs), complete)
            if fut is None:
                return ControlAnswer(response.status, None)
            try:
                doc = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                raise ControlFailed(504, f"{what}: no answer from device {dev.device_id} "
                                         f"within {timeout:g} s") from None
            return ControlAnswer(response.status, doc)
        finally:
            if queue is not None:
                registry.forget_parts(dev.device_id, sn)
            if fut is not None:
                registry.forget_response(dev.device_id, sn)

    @staticmethod
    async def _collect(queue: asyncio.Queue[ManscdpDocument], dev: Device, what: str,
                       timeout: float) -> tuple[list[ManscdpDocument], bool]:
        """PresetQuery parts until the merged presets are complete or ``timeout`` passes: (parts, complete).
        An unreadable part is a 502 at once (as a single unreadable answer is)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        docs: list[ManscdpDocument] = []
        while True:
            if queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return docs, False
                try:
                    doc = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    return docs, False
            else:
                doc = queue.get_nowait()
            docs.append(doc)
            try:
                merged = control.merge_preset_responses(docs)
            except ControlError as exc:
                raise ControlFailed(502, f"{what}: unreadable answer from device {dev.device_id}: "
                                         f"{exc.reason}") from None
            if merged.complete:
                return docs, True


# ---------------------------------------------------------------------------------------------- REST

FieldSpec = dict[str, type | tuple[type, ...]]

_PTZ_FIELDS: dict[str, FieldSpec] = {
    "move": {"pan": int, "tilt": int, "zoom": int, "speed": int, "zoom_speed": int},
    "stop": {},
    "focus": {"direction": int, "speed": int},
    "iris": {"direction": int, "speed": int},
    "preset_set": {"preset": int},
    "preset_call": {"preset": int},
    "preset_delete": {"preset": int},
    "cruise_add": {"group": int, "preset": int},
    "cruise_delete": {"group": int, "preset": int},
    "cruise_speed": {"group": int, "speed": int},
    "cruise_dwell": {"group": int, "seconds": int},
    "cruise_start": {"group": int},
    "scan_start": {"group": int},
    "scan_left": {"group": int},
    "scan_right": {"group": int},
    "scan_speed": {"group": int, "speed": int},
    "aux": {"switch": int, "on": bool},
}
_GROUP = ("group", "0..255")
# Required fields per action, with the range named in the 400 ("field 'preset' is required for preset_call (1..255)").
_PTZ_REQUIRED: dict[str, tuple[tuple[str, str], ...]] = {
    "focus": (("direction", "1, -1 or 0"),),
    "iris": (("direction", "1, -1 or 0"),),
    "preset_set": (("preset", "1..255"),),
    "preset_call": (("preset", "1..255"),),
    "preset_delete": (("preset", "1..255"),),
    "cruise_add": (_GROUP, ("preset", "1..255")),
    "cruise_delete": (_GROUP, ("preset", "0..255, 0: the whole cruise")),
    "cruise_speed": (_GROUP, ("speed", "0..4095")),
    "cruise_dwell": (_GROUP, ("seconds", "0..4095")),
    "cruise_start": (_GROUP,),
    "scan_start": (_GROUP,),
    "scan_left": (_GROUP,),
    "scan_right": (_GROUP,),
    "scan_speed": (_GROUP, ("speed", "0..4095")),
    "aux": (("switch", "0..255"), ("on", "true or false")),
}


def _move(body: dict[str, Any]) -> PtzCommand:
    speed = body.get("speed", DEFAULT_SPEED)
    return PtzCommand.move(body.get("pan", 0), body.get("tilt", 0), body.get("zoom", 0), pan_speed=speed,
                           tilt_speed=speed, zoom_speed=body.get("zoom_speed", DEFAULT_ZOOM_SPEED))


# The PTZCmd of each action from its checked body (required fields present); ranges are sip.ptz's.
_PTZ_BUILD: dict[str, Callable[[dict[str, Any]], PtzCommand]] = {
    "move": _move,
    "stop": lambda b: PtzCommand.stop(),
    "focus": lambda b: PtzCommand.focus(b["direction"], b.get("speed", DEFAULT_SPEED)),
    "iris": lambda b: PtzCommand.iris(b["direction"], b.get("speed", DEFAULT_SPEED)),
    "preset_set": lambda b: PtzCommand.preset_set(b["preset"]),
    "preset_call": lambda b: PtzCommand.preset_call(b["preset"]),
    "preset_delete": lambda b: PtzCommand.preset_delete(b["preset"]),
    "cruise_add": lambda b: PtzCommand.cruise_add(b["group"], b["preset"]),
    "cruise_delete": lambda b: PtzCommand.cruise_delete(b["group"], b["preset"]),
    "cruise_speed": lambda b: PtzCommand.cruise_speed(b["group"], b["speed"]),
    "cruise_dwell": lambda b: PtzCommand.cruise_dwell(b["group"], b["seconds"]),
    "cruise_start": lambda b: PtzCommand.cruise_start(b["group"]),
    "scan_start": lambda b: PtzCommand.scan(b["group"], ScanAction.START),
    "scan_left": lambda b: PtzCommand.scan(b["group"], ScanAction.SET_LEFT),
    "scan_right": lambda b: PtzCommand.scan(b["group"], ScanAction.SET_RIGHT),
    "scan_speed": lambda b: PtzCommand.scan_speed(b["group"], b["speed"]),
    "aux": lambda b: PtzCommand.aux(b["switch"], b["on"]),
}
_DRAG: FieldSpec = {"length": int, "width": int, "mid_x": int, "mid_y": int, "length_x": int, "length_y": int}
_COMMAND_FIELDS: dict[str, FieldSpec] = {
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
_CONFIG_FIELDS: FieldSpec = {"name": str, "expiration": int, "heartbeat_interval": int, "heartbeat_count": int}
_SECRET_KEYS = frozenset({"password"})


def _ptz_command(action: str, body: dict[str, Any]) -> PtzCommand:
    """The PTZCmd for a type-checked body; ``PtzError`` with the exact reason (a missing field named)."""
    for name, hint in _PTZ_REQUIRED.get(action, ()):
        if name not in body:
            raise PtzError(f"field {name!r} is required for {action} ({hint})")
    return _PTZ_BUILD[action](body)


class _Outcome:
    """The result a handler reports to ``_metered`` (``None``: not counted, e.g. cancelled)."""

    __slots__ = ("result",)

    def __init__(self) -> None:
        self.result: str | None = "ok"


@contextmanager
def _metered(command: str) -> Iterator[_Outcome]:
    """Count (``gb28181_control_requests_total``) and time (``gb28181_control_duration_seconds``) one request of
    ``command`` (from ``metrics.CONTROL_COMMANDS``); a ``ControlFailed`` leaves as the ``ApiError`` it answers."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = _Outcome()
    try:
        yield outcome
    except ControlFailed as exc:
        outcome.result = exc.result
        raise ApiError(exc.status, exc.reason) from None
    except ApiError as exc:
        outcome.result = _RESULT_BY_STATUS.get(exc.status, "error")
        raise
    except asyncio.CancelledError:
        outcome.result = None
        raise
    except Exception:
        outcome.result = "error"
        raise
    finally:
        if outcome.result is not None and command in metrics.CONTROL_COMMANDS:
            metrics.CONTROL_REQUESTS.labels(command, outcome.result).inc()
            metrics.CONTROL_DURATION.labels(command).observe(loop.time() - started)


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
    def _ids(request: web.Request, channel: bool) -> tuple[str, str | None]:
        device_id = check_id(request.match_info["device_id"], "device ID")
        channel_id = check_id(request.match_info["channel_id"], "channel ID") if channel else None
        return device_id, channel_id

    @staticmethod
    async def _body(request: web.Request, key: str, table: dict[str, FieldSpec]) -> tuple[str, dict[str, Any]]:
        body = await json_object(request)
        name = body.get(key)
        if not isinstance(name, str) or name not in table:
            raise ApiError(400, f"field {key!r} must be one of {', '.join(table)}, not {str(name)[:40]!r}")
        rest = {k: v for k, v in body.items() if k != key}
        return name, rest

    async def _run(self, device_id: str, channel_id: str | None, what: str, build: Builder, *,
                   wait: bool, parts: bool = False) -> ControlAnswer:
        dev = self.control.target(device_id, channel_id)
        return await self.control.send(dev, what, build, wait=wait, parts=parts)

    @staticmethod
    def _result(device_id: str, answer: ControlAnswer, what: str) -> str:
        """The ``<Result>`` of a control/config Response: "OK" (an ERROR is a 502)."""
        assert answer.response is not None
        try:
            result = control.parse_control_response(answer.response).result
        except ControlError as exc:
            raise ControlFailed(502, f"{what}: unreadable answer from device {device_id}: {exc.reason}") from None
        if result is not control.Result.OK:
            raise ControlFailed(502, f"{what}: device {device_id} answered Result ERROR")
        return result.value

    # -------------------------------------------------------------------------------------- handlers
    async def ptz(self, request: web.Request) -> web.Response:
        action, rest = await self._body(request, "action", _PTZ_FIELDS)
        with _metered(action) as outcome:
            device_id, channel_id = self._ids(request, channel=True)
            assert channel_id is not None
            fields(rest, _PTZ_FIELDS[action])
            try:
                cmd = _ptz_command(action, rest)
            except PtzError as exc:
                raise ApiError(400, exc.reason) from None
            answer = await self._run(device_id, channel_id, f"PTZ {action}",
                                     lambda sn, enc: control.ptz_control(sn, channel_id, cmd, encoding=enc),
                                     wait=False)
            outcome.result = "accepted"
        return web.json_response({"device_id": device_id, "channel_id": channel_id, "action": action,
                                  "ptz_cmd": cmd.encode(), "status": "accepted", "sip_status": answer.sip_status})

    async def presets(self, request: web.Request) -> web.Response:
        with _metered("preset_query") as outcome:
            device_id, channel_id = self._ids(request, channel=True)
            assert channel_id is not None
            answer = await self._run(device_id, channel_id, "PresetQuery",
                                     lambda sn, enc: control.preset_query(sn, channel_id, encoding=enc),
                                     wait=True, parts=True)
            try:
                found = control.merge_preset_responses(answer.parts)
            except ControlError as exc:  # _collect merged them already: only if a device changed its mind
                raise ControlFailed(502, f"PresetQuery: unreadable answer from device {device_id}: "
                                         f"{exc.reason}") from None
            outcome.result = "ok" if answer.complete else "timeout"
        return web.json_response({
            "device_id": device_id, "channel_id": channel_id, "sum_num": found.sum_num,
            "complete": answer.complete, "parts": len(answer.parts),
            "presets": [{"preset_id": p.preset_id, "name": p.name} for p in found.presets]})

    async def command(self, request: web.Request) -> web.Response:
        name, rest = await self._body(request, "command", _COMMAND_FIELDS)
        with _metered(name) as outcome:
            device_id, _ = self._ids(request, channel=False)
            channel_id = rest.pop("channel_id", None)
            if channel_id is not None:
                if not isinstance(channel_id, str):
                    raise ApiError(400, f"field 'channel_id' must be str, not {type(channel_id).__name__}")
                check_id(channel_id, "channel_id")
            fields(rest, _COMMAND_FIELDS[name])
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
                    sn, target, alarm_method=rest.get("alarm_method"), alarm_type=rest.get("alarm_type"),
                    encoding=enc)
            elif name == "home_position":
                if "enabled" not in rest:
                    raise ApiError(400, "field 'enabled' is required for home_position")
                build, wait = (lambda sn, enc: control.home_position(
                    sn, target, rest["enabled"], reset_time=rest.get("reset_time"),
                    preset_index=rest.get("preset_index"), encoding=enc)), False
            else:
                missing = sorted(set(_DRAG) - set(rest))
                if missing:
                    raise ApiError(400, f"field(s) {', '.join(missing)} required for {name}")
                try:
                    box = DragZoom(**rest)
                except ControlError as exc:
                    raise ApiError(400, exc.reason) from None
                zoom_in = name == "drag_zoom_in"
                build, wait = (lambda sn, enc: control.drag_zoom(sn, target, box, zoom_in=zoom_in,
                                                                  encoding=enc)), False
            answer = await self._run(device_id, channel_id, name, build, wait=wait)
            out: dict[str, Any] = {"device_id": device_id, "channel_id": channel_id, "command": name,
                                   "sip_status": answer.sip_status}
            if answer.response is None:
                out["status"] = outcome.result = "accepted"
            else:
                out["status"] = "ok"
                out["result"] = self._result(device_id, answer, name)
        return web.json_response(out)

    async def put_config(self, request: web.Request) -> web.Response:
        with _metered("device_config"):
            device_id, _ = self._ids(request, channel=False)
            body = fields(await json_object(request), _CONFIG_FIELDS)
            params = {"name": body.get("name"), "expiration": body.get("expiration"),
                      "heartbeat_interval": body.get("heartbeat_interval"),
                      "heartbeat_count": body.get("heartbeat_count")}
            answer = await self._run(device_id, None, "DeviceConfig",
                                     lambda sn, enc: control.device_config_basic(sn, device_id, **params,
                                                                                 encoding=enc),
                                     wait=True)
            result = self._result(device_id, answer, "DeviceConfig")
        return web.json_response({"device_id": device_id, "status": "ok", "sip_status": answer.sip_status,
                                  "result": result, "applied": {k: v for k, v in params.items() if v is not None}})

    async def get_config(self, request: web.Request) -> web.Response:
        with _metered("config_download"):
            device_id, _ = self._ids(request, channel=False)
            kinds = [k for k in request.query.get("type", "BasicParam").replace(",", "/").split("/") if k]
            answer = await self._run(device_id, None, "ConfigDownload",
                                     lambda sn, enc: control.config_download_query(sn, device_id, *kinds,
                                                                                   encoding=enc),
                                     wait=True)
            assert answer.response is not None
            try:
                found = control.parse_config_download_response(answer.response)
            except ControlError as exc:
                raise ControlFailed(502, f"ConfigDownload: unreadable answer from device {device_id}: "
                                         f"{exc.reason}") from None
        sections = {name: {k: v for k, v in values.items() if k.lower() not in _SECRET_KEYS}
                    for name, values in found.sections.items()}
        return web.json_response({"device_id": device_id, "types": kinds, "sip_status": answer.sip_status,
                                  "result": found.result.value if found.result is not None else None,
                                  "sections": sections})
