"""Device alarms: accept, answer, rate-limit, store and publish ``<Notify><CmdType>Alarm``.

Theory of operation
-------------------
A device reports an alarm (GB/T 28181-2016 §9.4) in a ``MESSAGE`` (or, under the alarm subscription
``gateway.subscriptions`` keeps with every device, a ``NOTIFY``, routed here by its body) whose
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
* Replay (SSE ``Last-Event-ID``): every stream event carries ``id: <alarm id>``, so a client that reconnects
  says which alarm it saw last. ``gateway.api`` subscribes FIRST, then calls :meth:`AlarmService.replay`, which
  reads the store (``Store.alarms`` writes the pending, write-behind alarms before it queries, so an alarm
  published a moment ago is there). The replay is the stored alarms with an id above the client's, oldest
  first, at most :data:`REPLAY_LIMIT` (the newest of them); if more were missed (or deleted by retention
  meanwhile) ``skipped`` says how many come before the first replayed one (ids are consecutive: only accepted
  alarms take one). ``floor`` is the newest stored id when read: live alarms queued meanwhile with an id up to it
  were in the replay (or seen by the client), and are dropped, so nothing is sent twice and nothing falls
  between the replay and the live alarms. A ``Last-Event-ID`` above every stored id (the client saw the newest,
  or the database was replaced) replays nothing and every live alarm follows.
* Reload (SIGHUP, ``Gateway.reload``): :meth:`AlarmService.reconfigure` applies a new ``devices.alarm_rate`` to
  the next alarm (the per-device buckets are dropped; a device's next alarm makes its bucket again, full, at the
  new rate) and a new ``devices.alarm_retention`` to the store's next write (which trims the table to it).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from sip import manscdp
from sip.endpoint import RequestReceived
from sip.errors import MalformedMessage
from sip.message import build_response

from . import metrics
from .config import Config
from .devices import DeviceRegistry, QueryFailed, TokenBucket
from .sip_router import MANSCDP, SipRouter
from .sip_transport import SipServer, SipTimeout
from .store import AlarmRecord, Store

log = structlog.get_logger("gateway.alarms")

SUBSCRIBER_QUEUE = 256
"""Alarms an SSE subscriber may fall behind before it is dropped."""

SUPPRESSED_LOG_PERIOD = 10.0
"""Seconds between the "alarms suppressed" log lines of a device (and between idle bucket clean-ups)."""

REPLAY_LIMIT = 1000
"""Missed alarms a reconnecting SSE client (``Last-Event-ID``) is sent at most: the newest of them."""

MAX_DESCRIPTION = 1024
"""Characters of ``AlarmDescription`` kept (the rest is cut)."""

_ALARM_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?")


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


@dataclass(frozen=True, slots=True)
class AlarmReplay:
    """What a client that saw alarm ``after`` missed (:meth:`AlarmService.replay`)."""

    alarms: tuple[AlarmRecord, ...]
    """Stored alarms with an id above ``after``, oldest first, at most :data:`REPLAY_LIMIT`."""
    skipped: int
    """Missed alarms not in ``alarms`` (all older than its first): beyond the limit or deleted by retention."""
    floor: int
    """The newest stored id when read (0: none): a live alarm with an id up to it is not new to the client."""


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
        devices.subscriptions.on_notify("Alarm", self._on_notify)  # NOTIFYs are routed by gateway.subscriptions

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

    def reconfigure(self, config: Config) -> None:
        """Use ``config`` from now on (a reload): a new ``devices.alarm_rate`` applies to the next alarm of each
        device (its bucket is made again, full, at the new rate), a new ``devices.alarm_retention`` to the store's
        next write."""
        old, self.config = self.config.devices, config
        if config.devices.alarm_rate != old.alarm_rate:
            self._buckets.clear()
        self.store.alarm_retention = config.devices.alarm_retention

    def close_subscribers(self) -> None:
        """End every SSE stream (shutdown: the HTTP server does not wait for them)."""
        for sub in self._subscribers:
            sub._end()
        self._subscribers.clear()

    # ------------------------------------------------------------------------------------------ SIP
    def _on_message(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        self._accept(server, ev, doc, "MESSAGE")

    def _on_notify(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
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

    async def replay(self, after: int) -> AlarmReplay:
        """The alarms a client that saw alarm ``after`` missed (see "Replay" in the module docstring). Subscribe
        before calling it. Raises ``StoreError`` if the store cannot be read."""
        newest_first = await self.store.alarms(limit=REPLAY_LIMIT)  # writes the pending alarms first
        missed = tuple(r for r in reversed(newest_first) if r.id > after)
        skipped = missed[0].id - after - 1 if missed else 0
        return AlarmReplay(missed, skipped, newest_first[0].id if newest_first else 0)

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


__all__ = ["REPLAY_LIMIT", "AlarmReplay", "AlarmService", "AlarmSubscription", "alarm_json",
           "parse_alarm"]
