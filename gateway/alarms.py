"""Device alarms: accept, answer, rate-limit, store and publish ``<Notify><CmdType>Alarm``.

Theory of operation
-------------------
A device reports an alarm (GB/T 28181-2016 §9.4) in a ``MESSAGE`` (or, under a subscription, a ``NOTIFY``) whose
body is ``<Notify><CmdType>Alarm</CmdType>`` with ``DeviceID`` (the alarm source, often a channel or an alarm
input), ``AlarmPriority`` (1-4), ``AlarmMethod`` (1 phone, 2 device, 3 SMS, 4 GPS, 5 video, 6 fault, 7 other),
``AlarmTime``, optional ``AlarmDescription``, ``Longitude``/``Latitude`` and ``Info/AlarmType``.

* The sender (``From``) must be a registered device (``404`` otherwise, as for every device MESSAGE). A body whose
  fields do not parse (priority or method out of range, a bad time, coordinates out of range) is answered ``400``
  naming the field, and not stored.
* A valid alarm is answered ``200 OK``; for the ``MESSAGE`` form the platform then sends the separate
  ``<Response><CmdType>Alarm</CmdType><SN/><DeviceID/><Result>OK</Result>`` ``MESSAGE`` the standard asks for
  (§9.4.2), with the alarm's SN and source ID, in the device's charset. Nothing waits for its answer.
* Floods are limited per sending device by a token bucket (``devices.alarm_rate`` per second, bucket of
  max(1, rate)): a device that has been quiet has a full bucket, so the first alarm of every burst passes. Alarms
  beyond the rate are still answered ``200 OK`` (the device must not retransmit), but neither answered with a
  Response, stored nor published; they are counted (``gb28181_alarms_suppressed_total``) and logged once per
  period per device ("alarms suppressed", with the count).
* An accepted alarm gets an increasing id (continuing from the store's highest), is counted
  (``gb28181_alarms_total{priority,method}``), written behind to SQLite (``gateway.store``, the table trimmed to
  ``devices.alarm_retention`` rows) and published to every Server-Sent Events subscriber. Each subscriber has a
  bounded queue; one that falls :data:`SUBSCRIBER_QUEUE` alarms behind is dropped (its stream ends), never
  buffered without bound.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import structlog

from sip import manscdp
from sip.endpoint import RequestReceived
from sip.errors import MalformedMessage, RemoteProtocolError, UnsupportedMediaType
from sip.message import build_response

from . import metrics
from .config import Config
from .devices import MANSCDP, DeviceRegistry, QueryFailed, TokenBucket
from .sip_router import MANSCDP_TYPE, SipRouter
from .sip_transport import SipServer, SipTimeout
from .store import AlarmRecord, Store

log = structlog.get_logger("gateway.alarms")

SUBSCRIBER_QUEUE = 256
"""Alarms an SSE subscriber may fall behind before it is dropped."""

SUPPRESSED_LOG_PERIOD = 10.0
"""Seconds between the "alarms suppressed" log lines of a device (and between idle bucket clean-ups)."""

MAX_DESCRIPTION = 1024
"""Characters of ``AlarmDescription`` kept (the rest is cut)."""

_ALARM_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?")


class BadEvent(RemoteProtocolError):
    """A NOTIFY for an event we do not handle (RFC 6665 §8.3.3)."""

    status = 489


def _int_field(doc: manscdp.ManscdpDocument, path: str, lo: int, hi: int, *, required: bool) -> int | None:
    text = doc.text(path)
    if text is None or text == "":
        if required:
            raise MalformedMessage(f"Alarm without <{path}>")
        return None
    if not (text.isascii() and text.isdigit()) or not lo <= int(text) <= hi:
        raise MalformedMessage(f"Alarm <{path}> must be {lo}..{hi}, not {text[:20]!r}")
    return int(text)


def _coordinate(doc: manscdp.ManscdpDocument, path: str, limit: float) -> float | None:
    text = doc.text(path)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not -limit <= value <= limit:  # also refuses nan and inf
        raise MalformedMessage(f"Alarm <{path}> must be a number in -{limit:g}..{limit:g}, not {text[:20]!r}")
    return value


def parse_alarm(doc: manscdp.ManscdpDocument, *, alarm_id: int, device_id: str, received_at: float,
                sip_method: str) -> AlarmRecord:
    """The alarm in ``doc`` (a ``<Notify><CmdType>Alarm``); raises ``MalformedMessage`` (400) naming the field."""
    priority = _int_field(doc, "AlarmPriority", 1, 4, required=True)
    method = _int_field(doc, "AlarmMethod", 1, 7, required=True)
    assert priority is not None and method is not None
    alarm_time = doc.text("AlarmTime") or ""
    if alarm_time and not _ALARM_TIME.fullmatch(alarm_time):
        raise MalformedMessage(f"Alarm <AlarmTime> must be yyyy-MM-ddTHH:mm:ss, not {alarm_time[:40]!r}")
    alarm_type = _int_field(doc, "Info/AlarmType", 0, 999, required=False)
    if alarm_type is None:
        alarm_type = _int_field(doc, "AlarmType", 0, 999, required=False)  # some devices put it at the top
    return AlarmRecord(
        id=alarm_id, device_id=device_id, channel_id=doc.device_id, priority=priority, method=method,
        alarm_time=alarm_time, alarm_type=alarm_type,
        description=(doc.text("AlarmDescription") or "")[:MAX_DESCRIPTION],
        longitude=_coordinate(doc, "Longitude", 180.0), latitude=_coordinate(doc, "Latitude", 90.0),
        received_at=received_at, sip_method=sip_method,
    )


def alarm_json(rec: AlarmRecord) -> dict[str, Any]:
    """An alarm as the REST API and the SSE stream show it (``received_at``: epoch seconds)."""
    return asdict(rec)


class AlarmSubscription:
    """One live subscriber (an SSE client): a bounded queue; ``None`` in it ends the stream."""

    __slots__ = ("queue", "dropped")

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[AlarmRecord | None] = asyncio.Queue(size + 1)  # +1: room for the end marker
        self.dropped = False

    def _end(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class AlarmService:
    """The gateway component: registers the Alarm handlers at construction; ``start()`` after the store opens."""

    def __init__(self, config: Config, router: SipRouter, devices: DeviceRegistry, store: Store,
                 *, wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.devices = devices
        self.store = store
        self._wall = wall
        self._next_id = 1
        self._buckets: dict[str, TokenBucket] = {}
        self._suppressed: dict[str, int] = {}  # per device since the last log line
        self._subscribers: set[AlarmSubscription] = set()
        self._server: SipServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        #: Response MESSAGEs sent (and answered 2xx) / failed: for tests and logs.
        self.responses_sent = 0
        self.responses_failed = 0
        router.on_manscdp("Notify", "Alarm", self._on_message)
        router.on_method("NOTIFY", self._on_notify)

    # ------------------------------------------------------------------------------------------ lifecycle
    def attach(self, server: SipServer) -> None:
        self._server = server

    async def start(self) -> None:
        self._next_id = await self.store.last_alarm_id() + 1
        self._task = asyncio.create_task(self._report(), name="alarms.report")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._sends) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._flush_suppressed()
        self.close_subscribers()

    def close_subscribers(self) -> None:
        """End every SSE stream (shutdown: the HTTP server does not wait for them)."""
        for sub in self._subscribers:
            sub._end()
        self._subscribers.clear()

    # ------------------------------------------------------------------------------------------ SIP
    def _on_message(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        self._accept(server, ev, doc, "MESSAGE")

    def _on_notify(self, server: SipServer, ev: RequestReceived) -> None:
        request = ev.request
        if request.content_type != MANSCDP_TYPE:
            raise UnsupportedMediaType(f"expected Application/MANSCDP+xml, got {request.content_type}")
        doc = manscdp.decode(request.body, max_size=self.config.sip.max_message_size)
        if (doc.root.lower(), doc.cmd_type.lower()) == ("notify", "catalog"):
            self.devices.on_catalog_notify(server, ev, doc)  # catalog subscription events
            return
        if (doc.root.lower(), doc.cmd_type.lower()) != ("notify", "alarm"):
            raise BadEvent(f"NOTIFY {doc.root}/{doc.cmd_type[:40]} not handled")
        self._accept(server, ev, doc, "NOTIFY")

    def _accept(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument, sip_method: str) -> None:
        dev = self.devices.registered_sender(ev, doc)  # 404 for unregistered senders
        rec = parse_alarm(doc, alarm_id=self._next_id, device_id=dev.device_id, received_at=self._wall(),
                          sip_method=sip_method)
        server.respond(build_response(ev.request, 200, to_tag=server.endpoint.new_tag()))
        now = asyncio.get_running_loop().time()
        bucket = self._buckets.get(dev.device_id)
        if bucket is None:
            rate = self.config.devices.alarm_rate
            bucket = self._buckets[dev.device_id] = TokenBucket(rate, max(1.0, rate), now)
        if not bucket.take(now):
            metrics.ALARMS_SUPPRESSED.inc()
            self._suppressed[dev.device_id] = self._suppressed.get(dev.device_id, 0) + 1
            return
        self._next_id += 1
        metrics.ALARMS.labels(str(rec.priority), str(rec.method)).inc()
        self.store.put_alarm(rec)
        log.info("alarm", device_id=rec.device_id, channel_id=rec.channel_id, priority=rec.priority,
                 method=rec.method, alarm_type=rec.alarm_type, sip_method=sip_method, id=rec.id)
        self._publish(rec)
        if sip_method == "MESSAGE":
            task = asyncio.create_task(self._send_response(dev.device_id, doc), name="alarms.response")
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _send_response(self, device_id: str, doc: manscdp.ManscdpDocument) -> None:
        """§9.4.2: the platform's ``<Response><CmdType>Alarm`` with the alarm's SN and source, Result OK."""
        dev = self.devices.get(device_id)
        server = self._server
        if dev is None or dev.peer is None or server is None:
            return
        body = manscdp.encode("Response", "Alarm", doc.sn, doc.device_id, [manscdp.element("Result", "OK")],
                              encoding=doc.encoding)
        try:
            response = await server.request(self.devices.device_request(dev, "MESSAGE", body, MANSCDP), dev.peer)
        except (SipTimeout, QueryFailed) as exc:
            self.responses_failed += 1
            log.info("alarm Response not answered", device_id=device_id, sn=doc.sn, error=str(exc))
            return
        if response.status >= 300:
            self.responses_failed += 1
            log.info("alarm Response refused", device_id=device_id, sn=doc.sn, status=response.status)
        else:
            self.responses_sent += 1

    # ------------------------------------------------------------------------------------------ subscribers
    def subscribe(self) -> AlarmSubscription:
        sub = AlarmSubscription(SUBSCRIBER_QUEUE)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: AlarmSubscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _publish(self, rec: AlarmRecord) -> None:
        for sub in list(self._subscribers):
            if sub.queue.qsize() >= SUBSCRIBER_QUEUE:
                sub.dropped = True
                sub._end()
                self._subscribers.discard(sub)
                log.warning("alarm stream subscriber too slow: dropped", queue=SUBSCRIBER_QUEUE)
                continue
            sub.queue.put_nowait(rec)

    # ------------------------------------------------------------------------------------------ housekeeping
    def _flush_suppressed(self) -> None:
        suppressed, self._suppressed = self._suppressed, {}
        for device_id, count in suppressed.items():
            log.warning("alarms suppressed", device_id=device_id, count=count,
                        rate=self.config.devices.alarm_rate)

    async def _report(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SUPPRESSED_LOG_PERIOD)
            self._flush_suppressed()
            now = loop.time()
            for device_id, bucket in list(self._buckets.items()):  # bounded: idle (full) buckets go
                if bucket.tokens + (now - bucket.last) * bucket.rate >= bucket.burst:
                    del self._buckets[device_id]


__all__ = ["AlarmService", "AlarmSubscription", "BadEvent", "alarm_json", "parse_alarm"]
