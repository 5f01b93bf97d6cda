"""The HTTP server: REST API under ``/api/v1/``, ``/metrics``, ``/healthz``, ``/readyz``, ``/openapi.json``.

Theory of operation
-------------------
One aiohttp application on ``http.listen:http.port`` (default 127.0.0.1:8080), a thin adapter over the registry
(``gateway.devices``) and the stream manager (``gateway.streams``), with WHEP (``gateway.webrtc``) and the web
page (``gateway.webpage``) on the same application.

* Errors are JSON everywhere: ``{"error": {"status": 404, "reason": "unknown device 3402..."}}``. Bad input
  (malformed IDs, a body that is not a JSON object, unknown or mistyped fields) is ``400`` naming the field;
  bodies above ``http.max_body_size`` are ``413``; a device that does not answer in time ``504``; an offline
  device ``409`` for queries and ``404`` for streams (as RTSP answers).
* Authentication: with ``http.token`` set (required beyond loopback by the configuration), ``/api/v1/*`` needs
  ``Authorization: Bearer <token>`` (``401`` otherwise, compared in constant time). ``/metrics`` takes its own
  optional ``http.metrics_token``. ``/healthz`` (the loop answers) and ``/readyz`` (every component started and
  not stopping: ``503`` otherwise) stay open for probes, and so does ``/openapi.json``. The web page's shell
  (``/``, ``/static/*``: no data) is open too; the data it loads needs the token (``gateway.webpage``). WHEP
  (``/whep/*``, ``gateway.webrtc``) takes the API token; only its CORS preflights (``OPTIONS``) are open.
* Streams started with ``POST /api/v1/streams`` are held by the API (a consumer like any viewer) until
  ``DELETE /api/v1/streams/<device_id>/<channel_id>``, which stops the stream itself (viewers are told why).
* Passwords are write-only: a device shows ``own_password: true``, never the value.
* Alarms (``gateway.alarms``): ``GET /api/v1/alarms`` reads the store (newest first, filtered);
  ``GET /api/v1/alarms/stream`` is a Server-Sent Events stream fed by a bounded per-client queue; a client that
  reconnects with ``Last-Event-ID`` first gets the stored alarms it missed (``HttpApi.alarm_stream``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from . import __version__, webpage, webrtc
from .alarms import alarm_json
from .config import HttpConfig
from .control import ControlApi
from .devices import Device, QueryFailed
from .fanout import Subscription
from .openapi import openapi_document
from .store import AlarmRecord, ChannelRecord, StoreError
from .streams import StreamError, StreamKey, StreamSession, parse_substream
from .subscriptions import PositionRecord
from .validation import ApiError, error_response
from .validation import check_id as _check_id
from .validation import fields as _fields
from .validation import json_object as _json_object

if TYPE_CHECKING:
    from .app import Gateway

log = structlog.get_logger("gateway.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _iso(wall: float) -> str | None:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds") if wall > 0 else None


class HttpApi:
    """The gateway component: ``start()`` listens; ``stop()`` closes the listener and releases held streams."""

    SSE_KEEPALIVE = 15.0
    """Seconds between keepalive comments on an idle alarm stream."""

    def __init__(self, config: HttpConfig, gateway: Gateway) -> None:
        self.config = config
        self.gateway = gateway
        self.port = config.port
        self.held: dict[StreamKey, tuple[StreamSession, Subscription]] = {}
        self._runner: web.AppRunner | None = None
        self.app = self._build()

    # ------------------------------------------------------------------------------------------ lifecycle
    def _build(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=self.config.max_body_size)
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.metrics)
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/api/v1/devices", self.list_devices)
        r.add_get("/api/v1/devices/{device_id}", self.get_device)
        r.add_put("/api/v1/devices/{device_id}", self.put_device)
        r.add_delete("/api/v1/devices/{device_id}", self.delete_device)
        r.add_get("/api/v1/devices/{device_id}/channels", self.device_channels)
        r.add_post("/api/v1/devices/{device_id}/catalog", self.refresh_catalog)
        r.add_get("/api/v1/devices/{device_id}/info", self.device_info)
        r.add_get("/api/v1/devices/{device_id}/status", self.device_status)
        r.add_get("/api/v1/channels", self.list_channels)
        r.add_get("/api/v1/streams", self.list_streams)
        r.add_post("/api/v1/streams", self.start_stream)
        r.add_delete("/api/v1/streams/{device_id}/{channel_id}", self.stop_stream)
        r.add_get("/api/v1/positions", self.list_positions)
        r.add_get("/api/v1/alarms", self.list_alarms)
        r.add_get("/api/v1/alarms/stream", self.alarm_stream)
        ControlApi(self.gateway).add_routes(app)  # PTZ, presets, commands, config (gateway.control)
        webpage.add_routes(app)
        webrtc.WhepEndpoint(self.gateway.config.webrtc, self.gateway.streams).add_routes(app)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.listen, self.config.port, reuse_address=True)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = addresses[0][1]
        log.info("http listening", listen=self.config.listen, port=self.port,
                 api_auth="bearer" if self.config.token else "none (loopback)",
                 metrics_auth="bearer" if self.config.metrics_token else "none")

    async def stop(self) -> None:
        self.gateway.alarms.close_subscribers()  # SSE streams end: the runner does not wait for them
        held, self.held = self.held, {}
        for session, sub in held.values():
            session.leave(sub)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------------------------------ middleware
    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.reason, exc.headers)
        except web.HTTPException as exc:  # aiohttp's own: 404 route, 405 method, 413 body too large
            if exc.status < 400:
                raise
            reason = exc.reason
            if exc.status == 413:
                reason = f"request body larger than http.max_body_size ({self.config.max_body_size} bytes)"
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            return error_response(exc.status, reason, headers)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("http request failed", method=request.method, path=request.path)
            return error_response(500, "internal error (logged)")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/metrics":
            token = self.config.metrics_token
        elif path in ("/healthz", "/readyz", "/openapi.json") or webpage.is_public(path) \
                or webrtc.is_preflight(request):
            token = ""
        else:
            token = self.config.token
        if token:
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
                log.info("http unauthorized", path=path, peer=request.remote)
                raise ApiError(401, "missing or wrong bearer token",
                               {"WWW-Authenticate": 'Bearer realm="gb28181-gateway"'})
        return await handler(request)

    # ------------------------------------------------------------------------------------------ probes
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": __version__})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.gateway.ready:
            return web.json_response({"ready": True})
        return web.json_response({"ready": False, "reason": "starting or stopping"}, status=503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(__version__))

    # ------------------------------------------------------------------------------------------ devices
    def _device(self, request: web.Request) -> Device:
        device_id = _check_id(request.match_info["device_id"], "device ID")
        dev = self.gateway.devices.get(device_id)
        if dev is None:
            raise ApiError(404, f"unknown device {device_id}")
        return dev

    def _device_json(self, dev: Device) -> dict[str, Any]:
        rec = dev.rec
        return {
            "device_id": rec.device_id, "name": rec.name, "manufacturer": rec.manufacturer, "model": rec.model,
            "firmware": rec.firmware, "online": rec.online, "registered": dev.registered,
            "transport": rec.transport, "host": rec.host, "port": rec.port,
            "registered_at": _iso(rec.registered_at), "expires_at": _iso(rec.expires_at),
            "last_keepalive": _iso(rec.last_keepalive),
            "channels": sum(1 for c in dev.channels.values() if c.kind == "channel"),
            "catalog_items": len(dev.channels), "catalog_complete": rec.catalog_complete,
            "catalog_synced_at": _iso(rec.catalog_synced_at),
            "provisioned": rec.provisioned, "enabled": rec.enabled, "own_password": bool(rec.password),
            "status": rec.status, "info": rec.info,
            "subscriptions": {sub.event.value: sub.json(time.time()) for sub in dev.subscriptions.values()},
        }

    def _channel_json(self, dev: Device, ch: ChannelRecord) -> dict[str, Any]:
        status = ch.status.upper()
        online = dev.rec.online and status != "OFF"
        faults = self.gateway.devices.media_faults
        return {
            "device_id": ch.device_id, "channel_id": ch.channel_id, "kind": ch.kind, "name": ch.name,
            "parent_id": ch.parent_id, "status": ch.status, "online": online,
            "intact": online and status not in ("VLOST", "DEFECT") and (ch.device_id, ch.channel_id) not in faults,
            "fields": ch.fields, "updated_at": _iso(ch.updated_at),
            "position": self._position_json(self.gateway.devices.subscriptions.position(ch.device_id,
                                                                                        ch.channel_id)),
        }

    @staticmethod
    def _position_json(rec: PositionRecord | None) -> dict[str, Any] | None:
        if rec is None:
            return None
        return {**rec.json(), "received_at": _iso(rec.received_at)}

    @staticmethod
    def _page(request: web.Request, total: int) -> tuple[int, int]:
        try:
            limit = int(request.query.get("limit", "1000"))
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            raise ApiError(400, "limit and offset must be integers") from None
        if not (1 <= limit <= 10000 and 0 <= offset):
            raise ApiError(400, "expected 1 <= limit <= 10000 and offset >= 0")
        return limit, offset

    @staticmethod
    def _bool_query(request: web.Request, name: str) -> bool | None:
        value = request.query.get(name)
        if value is None:
            return None
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise ApiError(400, f"{name} must be true or false, not {value[:20]!r}")

    # ------------------------------------------------------------------------------------------ alarms
    @staticmethod
    def _time_query(request: web.Request, name: str) -> float | None:
        """``since``/``until``: epoch seconds or ISO 8601 (naive means UTC)."""
        value = request.query.get(name)
        if value is None or value == "":
            return None
        try:
            return float(value)
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise ApiError(400, f"{name} must be epoch seconds or ISO 8601, not {value[:40]!r}") from None
        return (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).timestamp()

    async def list_alarms(self, request: web.Request) -> web.Response:
        q = request.query
        device_id = q.get("device_id") or None
        if device_id is not None:
            _check_id(device_id, "device_id")
        priority: int | None = None
        if q.get("priority"):
            if q["priority"] not in ("1", "2", "3", "4"):
                raise ApiError(400, f"priority must be 1..4, not {q['priority'][:20]!r}")
            priority = int(q["priority"])
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            raise ApiError(400, "limit must be an integer") from None
        if not 1 <= limit <= 10000:
            raise ApiError(400, "expected 1 <= limit <= 10000")
        since, until = self._time_query(request, "since"), self._time_query(request, "until")
        try:
            records = await self.gateway.store.alarms(device_id=device_id, since=since, until=until,
                                                      priority=priority, limit=limit)
        except StoreError as exc:
            log.error("alarm query failed", error=str(exc))
            raise ApiError(503, "alarm store unavailable") from None
        return web.json_response({"total": len(records), "alarms": [alarm_json(r) for r in records]})

    @staticmethod
    def _last_event_id(request: web.Request) -> int | None:
        """The alarm id a reconnecting SSE client saw last: the ``Last-Event-ID`` header (an ``EventSource`` sends
        it when it reconnects), else the ``last_event_id`` query parameter (a first connection cannot set
        headers); empty or absent: ``None``. Anything but a decimal integer is 400."""
        name, value = "Last-Event-ID", request.headers.get("Last-Event-ID", "").strip()
        if value == "":
            name, value = "last_event_id", request.query.get("last_event_id", "").strip()
        if value == "":
            return None
        if not (value.isascii() and value.isdigit() and len(value) <= 18):
            raise ApiError(400, f"{name} must be an alarm id (a decimal integer), not {value[:40]!r}")
        return int(value)

    @staticmethod
    def _sse_alarm(rec: AlarmRecord) -> bytes:
        data = json.dumps(alarm_json(rec), ensure_ascii=False)
        return f"id: {rec.id}\nevent: alarm\ndata: {data}\n\n".encode()

    async def alarm_stream(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: ``event: alarm`` with ``id: <alarm id>`` and the alarm as JSON data; a comment every
        ``SSE_KEEPALIVE`` seconds; ``retry: 2000`` first. Ends when the client leaves, falls too far behind, or the
        gateway stops.

        Replay (``Last-Event-ID: N`` or ``?last_event_id=N``): the stored alarms with an id above N come first,
        oldest first (at most ``alarms.REPLAY_LIMIT``, the newest), preceded, if more were missed, by ONE
        ``event: gap`` whose data is ``{"after": N, "skipped": <missed alarms not sent>, "next_id": <first id
        sent>}`` (no ``id:`` line); then the live alarms, none twice (see ``gateway.alarms``)."""
        after = self._last_event_id(request)
        alarms = self.gateway.alarms
        sub = alarms.subscribe()  # before the store is read: no alarm falls between the replay and the live ones
        try:
            replay = None
            if after is not None:
                try:
                    replay = await alarms.replay(after)
                except StoreError as exc:
                    log.error("alarm replay failed", error=str(exc))
                    raise ApiError(503, "alarm store unavailable") from None
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
            await resp.prepare(request)
            await resp.write(b"retry: 2000\n: alarms\n\n")
            floor = 0
            if replay is not None:
                floor = replay.floor
                head = b""
                if replay.skipped:
                    gap = {"after": after, "skipped": replay.skipped, "next_id": replay.alarms[0].id}
                    head = f"event: gap\ndata: {json.dumps(gap)}\n\n".encode()
                if head or replay.alarms:
                    await resp.write(head + b"".join(self._sse_alarm(r) for r in replay.alarms))
            while True:
                try:
                    rec = await asyncio.wait_for(sub.queue.get(), self.SSE_KEEPALIVE)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                # Everything queued goes in one write: a flood is written as fast as it is published (one
                # write per alarm falls behind the SIP side, which handles a batch of datagrams per loop turn).
                batch = [rec]
                while rec is not None and not sub.queue.empty():
                    rec = sub.queue.get_nowait()
                    batch.append(rec)
                chunk = b"".join(self._sse_alarm(r) for r in batch if r is not None and r.id > floor)  # > floor:
                if chunk:  # not replayed, nor seen by the client before it reconnected
                    await resp.write(chunk)
                if rec is None:
                    break
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            alarms.unsubscribe(sub)
        return resp

    async def list_devices(self, request: web.Request) -> web.Response:
        online = self._bool_query(request, "online")
        devices = [d for d in self.gateway.devices.devices.values() if online is None or d.rec.online == online]
        limit, offset = self._page(request, len(devices))
        return web.json_response({"total": len(devices), "limit": limit, "offset": offset,
                                  "devices": [self._device_json(d) for d in devices[offset:offset + limit]]})

    async def get_device(self, request: web.Request) -> web.Response:
        return web.json_response(self._device_json(self._device(request)))

    async def put_device(self, request: web.Request) -> web.Response:
        device_id = _check_id(request.match_info["device_id"], "device ID")
        body = _fields(await _json_object(request), {"password": str, "enabled": bool, "name": str})
        password = body.get("password")
        if password is not None and (len(password) > 128 or any(c in password for c in "\r\n\0")):
            raise ApiError(400, "password must be at most 128 characters, without line breaks")
        if "name" in body and len(body["name"]) > 256:
            raise ApiError(400, "name must be at most 256 characters")
        dev, created = self.gateway.devices.provision(device_id, password=password, enabled=body.get("enabled"),
                                                      name=body.get("name"))
        if body.get("enabled") is False:
            await self._stop_device_streams(device_id, "device disabled by operator")
        return web.json_response(self._device_json(dev), status=201 if created else 200)

    async def delete_device(self, request: web.Request) -> web.Response:
        dev = self._device(request)
        await self._stop_device_streams(dev.device_id, "device deleted by operator")
        self.gateway.devices.remove(dev.device_id)
        return web.Response(status=204)

    async def device_channels(self, request: web.Request) -> web.Response:
        dev = self._device(request)
        channels = [self._channel_json(dev, ch) for ch in dev.channels.values()]
        return web.json_response({"total": len(channels), "channels": channels})

    async def list_channels(self, request: web.Request) -> web.Response:
        device_id = request.query.get("device_id")
        kind = request.query.get("kind")
        status = request.query.get("status")
        online = self._bool_query(request, "online")
        if kind is not None and kind not in ("channel", "business_group", "virtual_org"):
            raise ApiError(400, "kind must be channel, business_group or virtual_org")
        devices = self.gateway.devices.devices
        if device_id is not None:
            _check_id(device_id, "device_id")
            selected = [devices[device_id]] if device_id in devices else []
        else:
            selected = list(devices.values())
        out = []
        for dev in selected:
            for ch in dev.channels.values():
                if kind is not None and ch.kind != kind:
                    continue
                if status is not None and ch.status.upper() != status.upper():
                    continue
                item = self._channel_json(dev, ch)
                if online is not None and item["online"] != online:
                    continue
                out.append(item)
        limit, offset = self._page(request, len(out))
        return web.json_response({"total": len(out), "limit": limit, "offset": offset,
                                  "channels": out[offset:offset + limit]})

    async def list_positions(self, request: web.Request) -> web.Response:
        """The latest mobile position of every target (channel or device) that reported one, newest first."""
        device_id = request.query.get("device_id")
        if device_id is not None:
            _check_id(device_id, "device_id")
        found = [rec for rec in self.gateway.devices.subscriptions.positions.values()
                 if device_id is None or rec.device_id == device_id]
        found.reverse()  # kept oldest first
        limit, offset = self._page(request, len(found))
        return web.json_response({"total": len(found), "limit": limit, "offset": offset,
                                  "positions": [self._position_json(rec) for rec in found[offset:offset + limit]]})

    def _reachable(self, dev: Device) -> None:
        if not dev.rec.online or dev.peer is None:
            raise ApiError(409, f"device {dev.device_id} is offline")

    async def refresh_catalog(self, request: web.Request) -> web.Response:
        dev = self._device(request)
        self._reachable(dev)
        try:
            collector = await self.gateway.devices.sync_catalog(dev)
        except QueryFailed as exc:
            raise ApiError(504 if exc.status is None else 502, f"catalog refresh failed: {exc.reason}") from None
        return web.json_response({"device_id": dev.device_id, "items": len(collector.items),
                                  "sum_num": collector.sum_num, "complete": collector.complete,
                                  "parts": collector.parts})

    async def _query(self, request: web.Request, cmd_type: str) -> web.Response:
        dev = self._device(request)
        self._reachable(dev)
        try:
            doc = await self.gateway.devices.query(dev, cmd_type)
        except QueryFailed as exc:
            raise ApiError(504 if exc.status is None else 502, f"{cmd_type} query failed: {exc.reason}") from None
        fields = {k: v for k, v in doc.tree.flat().items() if k not in ("CmdType", "SN", "DeviceID")}
        return web.json_response({"device_id": dev.device_id, "cmd_type": cmd_type, "fields": fields})

    async def device_info(self, request: web.Request) -> web.Response:
        return await self._query(request, "DeviceInfo")

    async def device_status(self, request: web.Request) -> web.Response:
        return await self._query(request, "DeviceStatus")

    # ------------------------------------------------------------------------------------------ streams
    def _stream_json(self, session: StreamSession) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        cache = session.fanout.cache
        key = session.key
        return {
            "device_id": key.device_id, "channel_id": key.channel_id,
            "stream": "sub" if key.substream else "main", "state": session.state.value,
            "transport": session.transport, "consumers": session.consumers,
            "held_by_api": key in self.held,
            "video_codec": cache.video_codec.name.lower() if cache.video_codec is not None else None,
            "playing_seconds": round(loop.time() - session.first_frame_at, 3)
            if session.first_frame_at is not None else None,
            "bitrate_kbps": round(session.receiver.bitrate / 1000, 1) if session.receiver is not None else None,
            "call_id": session.invite.call_id if session.invite is not None else None,
            "error": session.error.reason if session.error is not None else None,
        }

    @staticmethod
    def _substream(value: str) -> int:
        try:
            return parse_substream(value)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    async def list_streams(self, request: web.Request) -> web.Response:
        streams = [self._stream_json(s) for s in self.gateway.streams.sessions.values()]
        return web.json_response({"total": len(streams), "streams": streams})

    async def start_stream(self, request: web.Request) -> web.Response:
        body = _fields(await _json_object(request), {"device_id": str, "channel_id": str, "stream": str})
        if "channel_id" not in body:
            raise ApiError(400, "field 'channel_id' is required")
        device_id = body.get("device_id")
        if device_id is not None:
            _check_id(device_id, "device_id")
        channel_id = _check_id(body["channel_id"], "channel_id")
        substream = self._substream(body.get("stream", "main"))
        try:
            dev, channel = self.gateway.streams.resolve(device_id, channel_id)
        except StreamError as exc:
            raise ApiError(exc.http_status, exc.reason) from None
        key = StreamKey(dev.device_id, channel, substream)
        if key in self.held and not self.held[key][0].fanout.closed:
            return web.json_response(self._stream_json(self.held[key][0]), status=200)
        try:
            session, sub = await self.gateway.streams.open(dev.device_id, channel, substream=substream,
                                                           consumer="api")
        except StreamError as exc:
            raise ApiError(exc.http_status, exc.reason) from None
        sub.close()  # held, not read: the consumer count keeps the stream up
        old = self.held.pop(key, None)
        if old is not None:
            old[0].leave(old[1])
        self.held[key] = (session, sub)
        log.info("stream started by operator", stream=str(key))
        return web.json_response(self._stream_json(session), status=201)

    async def stop_stream(self, request: web.Request) -> web.Response:
        device_id = _check_id(request.match_info["device_id"], "device ID")
        channel_id = _check_id(request.match_info["channel_id"], "channel ID")
        key = StreamKey(device_id, channel_id, self._substream(request.query.get("stream", "main")))
        session = self.gateway.streams.sessions.get(key)
        held = self.held.pop(key, None)
        if session is None:
            raise ApiError(404, f"no stream {key}")
        if held is not None:
            held[0].leave(held[1])
        await session.stop("stopped by operator")
        log.info("stream stopped by operator", stream=str(key))
        return web.Response(status=204)

    async def _stop_device_streams(self, device_id: str, reason: str) -> None:
        for key in [k for k in self.held if k.device_id == device_id]:
            session, sub = self.held.pop(key)
            session.leave(sub)
        sessions = [s for k, s in self.gateway.streams.sessions.items() if k.device_id == device_id]
        await asyncio.gather(*(s.stop(reason) for s in sessions), return_exceptions=True)
