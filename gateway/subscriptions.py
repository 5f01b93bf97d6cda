"""Event subscriptions to devices (Catalog, Alarm, MobilePosition) and the NOTIFYs they bring.

Theory of operation
-------------------
Each registered device gets up to three subscriptions (RFC 6665 as GB/T 28181 uses it), each a
:class:`Subscription` with its own task:

* ``Catalog``: ``<Query><CmdType>Catalog``, ``devices.catalog_subscribe_expires``;
* ``Alarm``: ``<Query><CmdType>Alarm`` for priorities 1..4 and every method, ``devices.alarm_subscribe_expires``;
* ``MobilePosition``: ``<Query><CmdType>MobilePosition`` with ``<Interval>devices.position_interval``,
  ``devices.position_subscribe_expires``.

An expiry of 0 disables that event. They start after the device's first sync (DeviceInfo, Catalog, DeviceStatus)
and again at every REGISTER that does not start a sync (a refresh or re-registration: a rebooted device forgets its
subscriptions). ``SUBSCRIBE`` carries ``Event: <package>;id=<SN>``, ``Expires`` and our ``Contact``; the 2xx makes a
dialog (``sip.dialog.Dialog``) in which the subscription is refreshed at 80% of the granted time (out of dialog if
the 2xx has no To tag; anew out of dialog, once, if an in-dialog refresh is refused: the device lost the dialog).

Outcomes, per subscription (``Status``; counted in ``gb28181_subscribe_requests_total{event,result}`` and shown
by ``gb28181_subscriptions{event,status}`` and the REST API):

* a refusal meaning "not supported" (400, 405, 415, 489 Bad Event, 501) marks the event ``unsupported`` for the
  device: not asked again until it registers anew;
* no answer, or another refusal (403, 404, 481, 5xx...), marks it ``failed``: asked again after
  ``devices.subscribe_retry`` seconds while the device stays online;
* ``Subscription-State: terminated`` in a NOTIFY ends it from the device's side (RFC 6665 §4.1.3): reasons
  ``deactivated``, ``timeout`` or none re-subscribe at once, ``probation`` and ``giveup`` after ``retry-after``
  (else ``subscribe_retry``), ``rejected``, ``noresource`` and ``invariant`` stop (``terminated``) until the next
  registration.

Device NOTIFYs (``NOTIFY`` with an ``Application/MANSCDP+xml`` ``<Notify>`` body) are routed here by the body's
``CmdType`` to the handler registered for it (:meth:`Subscriptions.on_notify`: the registry's catalog events,
``gateway.alarms`` for ``Alarm``, this module for ``MobilePosition``), which validates and answers. The sender must
be registered (``404``). A ``Subscription-State`` header that does not parse is ``400``; its absence is tolerated
(GB devices often leave it out). A NOTIFY is matched to its subscription by Call-ID (in dialog; it may arrive
before the 2xx of the SUBSCRIBE) and counted (``gb28181_notifications_total{event}``). A NOTIFY in a dialog we
do not know (a subscription from before a restart) is still accepted from a registered device, not ``481``: a
device told 481 would end that subscription, and the alarm in it must not be lost; it lapses at its expiry. A NOTIFY without a body
(the final one of a subscription) is answered ``200``. Other bodies are ``489 Bad Event``.

Mobile positions (``<Notify><CmdType>MobilePosition``, in NOTIFY or MESSAGE; the 2016 single form and the 2022
list form, parsed by ``sip.events``) are validated (``400`` naming the field, nothing kept) and the latest fix per
(device, target) kept in memory (``positions``, at most ``MAX_POSITIONS``): the REST API shows them. They are not
persisted: a restart re-subscribes, and a fresh fix comes within the interval.

At shutdown (``stop``, while the SIP server still runs) every active subscription is ended with ``Expires: 0``
in its dialog; the answers are awaited at most :data:`UNSUBSCRIBE_WAIT` seconds in all.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric

from sip import events, manscdp
from sip.dialog import Dialog
from sip.endpoint import RequestReceived
from sip.errors import BadEvent, MalformedMessage, NotFound, RemoteProtocolError, UnsupportedMediaType
from sip.message import SipRequest, build_response

from . import metrics
from .sip_router import MANSCDP, MANSCDP_TYPE, ManscdpHandler, SipRouter
from .sip_transport import SipServer, SipTimeout

if TYPE_CHECKING:
    from .devices import Device, DeviceRegistry

log = structlog.get_logger("gateway.subscriptions")

__all__ = ["Event", "PositionRecord", "Status", "Subscription", "Subscriptions", "UNSUBSCRIBE_WAIT"]

UNSUBSCRIBE_WAIT = 1.0
"""Seconds ``stop()`` waits, in all, for the answers to the ``Expires: 0`` SUBSCRIBEs."""

RESTORE_RATE = 200
"""Devices restored online at start subscribed per second (three SUBSCRIBEs each)."""

MAX_POSITIONS = 100_000
"""Latest positions kept (one per device and target); beyond it the oldest entry is dropped."""

REFRESH_AT = 0.8
"""Fraction of the granted time after which a subscription is refreshed."""

_UNSUPPORTED = frozenset({400, 405, 415, 489, 501})
_RESUBSCRIBE_NOW = frozenset({"deactivated", "timeout", ""})
_RESUBSCRIBE_LATER = frozenset({"probation", "giveup"})


class Event(enum.Enum):
    """An event package we subscribe to (the value is the ``Event`` header and the body's ``CmdType``)."""

    CATALOG = "Catalog"
    ALARM = "Alarm"
    POSITION = "MobilePosition"

    @property
    def package(self) -> str:
        return self.value.lower()


class Status(enum.Enum):
    SUBSCRIBING = "subscribing"   # a SUBSCRIBE (not a refresh) is out
    ACTIVE = "active"             # granted; refreshed before it expires
    UNSUPPORTED = "unsupported"   # the device refused the event package: asked again at the next registration
    FAILED = "failed"             # no answer or refused: asked again after subscribe_retry
    TERMINATED = "terminated"     # ended by the device for good (rejected, noresource, invariant)


@dataclass(slots=True, eq=False)
class Subscription:
    """One (device, event) subscription as we hold it."""

    device_id: str
    event: Event
    status: Status = Status.SUBSCRIBING
    task: asyncio.Task[None] | None = None
    dialog: Dialog | None = None
    call_id: str | None = None  # of the SUBSCRIBE and its in-dialog refreshes (the NOTIFYs carry it)
    sn: int = 0
    granted: int = 0
    expires_at: float = 0.0        # wall clock
    reason: str = ""
    refreshes: int = 0
    notifications: int = 0
    last_notification: float | None = None  # wall clock
    terminated: tuple[str, int | None] | None = None  # (reason, retry-after) of a terminating NOTIFY
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def json(self, wall: float) -> dict[str, Any]:
        return {
            "event": self.event.value, "status": self.status.value, "reason": self.reason or None,
            "expires_in": max(0, round(self.expires_at - wall)) if self.status is Status.ACTIVE else None,
            "refreshes": self.refreshes, "notifications": self.notifications,
            "last_notification": self.last_notification,
        }


@dataclass(frozen=True, slots=True)
class PositionRecord:
    """The latest fix of one target (a channel or the device itself) of one device."""

    device_id: str
    position: events.MobilePosition
    received_at: float  # wall clock
    sip_method: str

    def json(self) -> dict[str, Any]:
        p = self.position
        return {"device_id": self.device_id, "channel_id": p.target_id, "time": p.time,
                "longitude": p.longitude, "latitude": p.latitude, "speed": p.speed, "direction": p.direction,
                "altitude": p.altitude, "received_at": self.received_at, "sip_method": self.sip_method}


class Subscriptions:
    """Owned by the registry (``registry.subscriptions``); also a gateway component (stops before SIP does)."""

    def __init__(self, registry: DeviceRegistry, router: SipRouter, *, wall: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self._wall = wall
        self._handlers: dict[str, ManscdpHandler] = {}
        self._by_call_id: dict[str, Subscription] = {}
        self.positions: dict[tuple[str, str], PositionRecord] = {}
        self._stopping = False
        self._restore_task: asyncio.Task[None] | None = None
        router.on_method("NOTIFY", self._on_notify)
        router.on_manscdp("Notify", "MobilePosition", self._on_position_message)
        self.on_notify("MobilePosition", self._on_position_notify)

    # ------------------------------------------------------------------------------------------ wiring
    def on_notify(self, cmd_type: str, handler: ManscdpHandler) -> None:
        """Route NOTIFY bodies ``<Notify><CmdType>cmd_type`` to ``handler`` (which validates and answers)."""
        self._handlers[cmd_type.lower()] = handler

    def expires_for(self, event: Event) -> int:
        dc = self.registry.dc
        return {Event.CATALOG: dc.catalog_subscribe_expires, Event.ALARM: dc.alarm_subscribe_expires,
                Event.POSITION: dc.position_subscribe_expires}[event]

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Subscribe the devices restored online from the store (their registrations outlived a restart; they
        would otherwise go unsubscribed until their next REGISTER), at most :data:`RESTORE_RATE` devices a
        second, in the background."""
        self._stopping = False
        restored_ids, self.registry.restored_online = self.registry.restored_online, []  # needed once
        devices = (self.registry.get(device_id) for device_id in restored_ids)
        restored = [dev for dev in devices if dev is not None and dev.rec.online and dev.registered
                    and dev.peer is not None and not dev.subscriptions and not dev.syncing]
        if restored:
            self._restore_task = asyncio.create_task(self._subscribe_restored(restored), name="subscribe.restored")

    async def _subscribe_restored(self, devices: list[Device]) -> None:
        for n, dev in enumerate(devices):
            if n and n % RESTORE_RATE == 0:
                await asyncio.sleep(1.0)
            if dev.rec.online and dev.registered and not dev.subscriptions and not dev.syncing:
                self.subscribe(dev)
        log.info("restored devices subscribed", devices=len(devices))

    def resume(self, dev: Device) -> None:
        """``dev`` is back online (keepalives again, no REGISTER): restart the subscriptions that lapsed
        (failed, or never started), leaving active and unsupported ones alone."""
        lapsed = [e for e in Event if (sub := dev.subscriptions.get(e)) is None or sub.status is Status.FAILED]
        if lapsed:
            self.subscribe(dev, skip=frozenset(Event) - frozenset(lapsed))

    async def stop(self) -> None:
        """End every active subscription (``Expires: 0``), waiting at most ``UNSUBSCRIBE_WAIT`` s for answers."""
        self._stopping = True
        if self._restore_task is not None:
            self._restore_task.cancel()
            await asyncio.gather(self._restore_task, return_exceptions=True)
            self._restore_task = None
        ending = []
        for dev in list(self.registry.devices.values()):
            for sub in list(dev.subscriptions.values()):
                if sub.status is Status.ACTIVE and dev.peer is not None:
                    ending.append(self._unsubscribe(dev, sub))
                self._cancel(sub)
        if ending:
            done, pending = await asyncio.wait([asyncio.ensure_future(c) for c in ending], timeout=UNSUBSCRIBE_WAIT)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            log.info("subscriptions ended", answered=sum(1 for t in done if not t.cancelled() and t.result()),
                     sent=len(ending))
        await self.cancel_all()

    async def cancel_all(self) -> None:
        tasks = []
        for dev in self.registry.devices.values():
            for sub in dev.subscriptions.values():
                if sub.task is not None:
                    tasks.append(sub.task)
                self._cancel(sub)
            dev.subscriptions.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._by_call_id.clear()

    # ------------------------------------------------------------------------------------------ per device
    def subscribe(self, dev: Device, skip: frozenset[Event] = frozenset()) -> None:
        """(Re)start ``dev``'s subscriptions (every enabled event not in ``skip``); a no-op while stopping."""
        if self._stopping or self.registry.server is None or dev.peer is None:
            return
        for event in Event:
            if event in skip:
                continue
            self._drop(dev, event)
            if self.expires_for(event) <= 0:
                continue
            sub = Subscription(dev.device_id, event, sn=self.registry.next_sn())
            dev.subscriptions[event] = sub
            sub.task = asyncio.create_task(self._run(dev, sub),
                                           name=f"subscribe.{event.package}.{dev.device_id}")

    def forget(self, dev: Device, *, positions: bool = False) -> None:
        """Stop refreshing every subscription of ``dev`` (unregistered or removed: they lapse at the device);
        with ``positions`` (removed) also forget its last positions (an unregistered device's stay shown)."""
        for event in list(dev.subscriptions):
            self._drop(dev, event)
        if positions:
            for key in [k for k in self.positions if k[0] == dev.device_id]:
                del self.positions[key]

    def _drop(self, dev: Device, event: Event) -> None:
        sub = dev.subscriptions.pop(event, None)
        if sub is not None:
            self._cancel(sub)

    def _cancel(self, sub: Subscription) -> None:
        if sub.task is not None and not sub.task.done() and sub.task is not asyncio.current_task():
            sub.task.cancel()
        self._unindex(sub)

    def _unindex(self, sub: Subscription) -> None:
        if sub.call_id is not None and self._by_call_id.get(sub.call_id) is sub:
            del self._by_call_id[sub.call_id]

    # ------------------------------------------------------------------------------------------ SUBSCRIBE
    def _body(self, dev: Device, sub: Subscription) -> bytes:
        charset = dev.rec.charset or "GB2312"
        if sub.event is Event.ALARM:
            return events.alarm_query(sub.sn, dev.device_id, encoding=charset)
        if sub.event is Event.POSITION:
            return events.position_query(sub.sn, dev.device_id, self.registry.dc.position_interval, encoding=charset)
        return manscdp.encode("Query", "Catalog", sub.sn, dev.device_id, encoding=charset)

    def _request(self, dev: Device, sub: Subscription, expires: int, dialog: Dialog | None) -> SipRequest:
        registry = self.registry
        server = registry.server
        assert server is not None
        via = registry.via_toward(dev)
        headers = [("Event", f"{sub.event.value};id={sub.sn}"), ("Expires", str(expires)),
                   ("Contact", f"<sip:{registry.config.sip.platform_id}@{via.host}:{server.port}>")]
        body = self._body(dev, sub)
        if dialog is None:  # a new Call-ID: NOTIFYs of the earlier one no longer concern us
            self._unindex(sub)
            request = registry.device_request(dev, "SUBSCRIBE", body, MANSCDP, headers=headers)
        else:
            request = dialog.create_request("SUBSCRIBE", via, [*headers, ("User-Agent", "gb28181-gateway")],
                                            body, MANSCDP)
        sub.call_id = request.call_id
        self._by_call_id[request.call_id] = sub
        return request

    async def _run(self, dev: Device, sub: Subscription) -> None:
        registry = self.registry
        event = sub.event
        dialog: Dialog | None = None
        while True:
            expires = self.expires_for(event)
            server = registry.server
            if expires <= 0 or server is None or dev.peer is None or self._stopping:
                return
            refresh = dialog is not None
            if not refresh:
                sub.status = Status.SUBSCRIBING
            try:
                request = self._request(dev, sub, expires, dialog)
                response = await server.request(request, dev.peer)
            except (SipTimeout, RemoteProtocolError) as exc:
                reason = "no answer" if isinstance(exc, SipTimeout) else str(exc)
                metrics.SUBSCRIBE_REQUESTS.labels(event.value, "timeout").inc()
                if not await self._failed(dev, sub, reason):
                    return
                dialog = None
                continue
            except Exception as exc:  # QueryFailed: no route to the device any more
                metrics.SUBSCRIBE_REQUESTS.labels(event.value, "error").inc()
                await self._failed(dev, sub, str(exc), retry=False)
                return
            if response.status >= 300:
                if dialog is not None:  # the device lost the dialog (rebooted?): subscribe anew, once
                    log.info("subscription refresh refused: subscribing anew", device_id=dev.device_id,
                             subscription=event.value, status=response.status)
                    dialog = None
                    continue
                reason = f"{response.status} {response.reason}"
                if response.status in _UNSUPPORTED:
                    metrics.SUBSCRIBE_REQUESTS.labels(event.value, "unsupported").inc()
                    sub.status, sub.reason = Status.UNSUPPORTED, reason
                    log.info("subscription not supported by the device", device_id=dev.device_id,
                             subscription=event.value, status=response.status, reason=response.reason)
                    return
                metrics.SUBSCRIBE_REQUESTS.labels(event.value, "refused").inc()
                if not await self._failed(dev, sub, reason):
                    return
                continue
            try:
                granted = response.expires
            except MalformedMessage:
                granted = None
            granted = expires if granted is None else min(granted, expires)
            if granted <= 0:
                metrics.SUBSCRIBE_REQUESTS.labels(event.value, "refused").inc()
                sub.status, sub.reason = Status.FAILED, "granted no time"
                log.warning("subscription granted no time", device_id=dev.device_id, subscription=event.value)
                return
            metrics.SUBSCRIBE_REQUESTS.labels(event.value, "refreshed" if refresh else "ok").inc()
            if dialog is None:
                try:
                    dialog = Dialog.from_uac(request, response)
                except RemoteProtocolError:
                    dialog = None  # no To tag: refresh out of dialog
            else:
                sub.refreshes += 1
            sub.dialog = dialog
            sub.status, sub.reason, sub.granted = Status.ACTIVE, "", granted
            sub.expires_at = self._wall() + granted
            log.info("subscribed", device_id=dev.device_id, subscription=event.value, expires=granted, refresh=refresh,
                     in_dialog=dialog is not None)
            if sub.terminated is None:
                sub.wake.clear()
                try:
                    await asyncio.wait_for(sub.wake.wait(), granted * REFRESH_AT)
                except TimeoutError:
                    continue  # refresh
            ended = sub.terminated
            sub.terminated = None
            if ended is None:
                continue
            reason, retry_after = ended
            dialog = sub.dialog = None
            if reason in _RESUBSCRIBE_NOW:
                log.info("subscription ended by the device: subscribing anew", device_id=dev.device_id,
                         subscription=event.value, reason=reason or None)
                continue
            if reason in _RESUBSCRIBE_LATER:
                delay = float(retry_after) if retry_after is not None else registry.dc.subscribe_retry
                sub.status, sub.reason = Status.FAILED, f"terminated: {reason}"
                log.info("subscription ended by the device: retried later", device_id=dev.device_id,
                         subscription=event.value, reason=reason, delay=delay)
                await asyncio.sleep(delay)
                continue
            sub.status, sub.reason = Status.TERMINATED, f"terminated: {reason}"
            log.warning("subscription ended by the device", device_id=dev.device_id, subscription=event.value,
                        reason=reason)
            return

    async def _failed(self, dev: Device, sub: Subscription, reason: str, *, retry: bool = True) -> bool:
        """Mark ``sub`` failed; sleep ``subscribe_retry`` and return True to try again (False: give up)."""
        sub.status, sub.reason, sub.dialog = Status.FAILED, reason, None
        delay = self.registry.dc.subscribe_retry
        log.warning("subscription failed", device_id=dev.device_id, subscription=sub.event.value, reason=reason,
                    retry_in=delay if retry else None)
        if not retry:
            return False
        await asyncio.sleep(delay)
        return dev.rec.online and dev.registered and not self._stopping

    async def _unsubscribe(self, dev: Device, sub: Subscription) -> bool:
        """Send ``Expires: 0`` for ``sub``; True if the device answered 2xx."""
        server = self.registry.server
        if server is None or dev.peer is None:
            return False
        try:
            request = self._request(dev, sub, 0, sub.dialog)
            response = await server.request(request, dev.peer)
        except Exception as exc:  # noqa: BLE001 - best effort at shutdown
            log.info("unsubscribe not answered", device_id=dev.device_id, subscription=sub.event.value, error=str(exc))
            return False
        metrics.SUBSCRIBE_REQUESTS.labels(sub.event.value, "ended").inc()
        sub.status = Status.TERMINATED
        sub.reason = "unsubscribed"
        return response.status < 300

    # ------------------------------------------------------------------------------------------ NOTIFY
    def _on_notify(self, server: SipServer, ev: RequestReceived) -> None:
        request = ev.request
        state = events.parse_subscription_state(request.headers.get("subscription-state"))
        sub = self._by_call_id.get(request.call_id)
        if not request.body:
            dev = self.registry.get(request.from_.uri.user or "")
            if dev is None or not dev.registered:
                raise NotFound("Device Not Registered")
            server.respond(build_response(request, 200, to_tag=server.endpoint.new_tag()))
        else:
            if request.content_type != MANSCDP_TYPE:
                raise UnsupportedMediaType(f"expected Application/MANSCDP+xml, got {request.content_type}")
            doc = manscdp.decode(request.body, max_size=self.registry.config.sip.max_message_size)
            handler = self._handlers.get(doc.cmd_type.lower()) if doc.root.lower() == "notify" else None
            if handler is None:
                raise BadEvent(f"NOTIFY {doc.root}/{doc.cmd_type[:40]} not handled")
            handler(server, ev, doc)
            metrics.NOTIFICATIONS.labels(_LABELS.get(doc.cmd_type.lower(), "other")).inc()
        if sub is None:
            return
        sub.notifications += 1
        sub.last_notification = self._wall()
        if state is not None and state.state is events.SubState.TERMINATED and sub.status is Status.ACTIVE:
            sub.terminated = ((state.reason or "").lower(), state.retry_after)
            sub.wake.set()

    def _on_position_notify(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        self._positions(server, ev, doc, "NOTIFY")

    def _on_position_message(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        self._positions(server, ev, doc, "MESSAGE")
        metrics.NOTIFICATIONS.labels("MobilePosition").inc()

    def _positions(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument, method: str) -> None:
        dev = self.registry.registered_sender(ev, doc)  # 404 for unregistered senders
        fixes = events.parse_positions(doc)  # 400 naming the field
        server.respond(build_response(ev.request, 200, to_tag=server.endpoint.new_tag()))
        wall = self._wall()
        for fix in fixes:
            key = (dev.device_id, fix.target_id)
            self.positions.pop(key, None)  # re-inserted last: the dict stays ordered oldest first
            self.positions[key] = PositionRecord(dev.device_id, fix, wall, method)
        while len(self.positions) > MAX_POSITIONS:
            del self.positions[next(iter(self.positions))]
        metrics.POSITIONS.inc(len(fixes))
        log.debug("mobile positions", device_id=dev.device_id, count=len(fixes), sip_method=method)

    def position(self, device_id: str, target_id: str) -> PositionRecord | None:
        return self.positions.get((device_id, target_id))

    # ------------------------------------------------------------------------------------------ metrics
    def metric_families(self) -> Iterator[Metric]:
        """``gb28181_subscriptions{event,status}`` at scrape time."""
        counts = {(e, s): 0 for e in Event for s in Status}
        for dev in self.registry.devices.values():
            for sub in dev.subscriptions.values():
                counts[(sub.event, sub.status)] += 1
        family = GaugeMetricFamily("gb28181_subscriptions", "Subscriptions to devices by event and status",
                                   labels=["event", "status"])
        for (event, status), n in counts.items():
            family.add_metric([event.value, status.value], n)
        yield family

_LABELS = {e.package: e.value for e in Event}
