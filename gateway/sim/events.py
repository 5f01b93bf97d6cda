"""Simulated subscriptions and events: Catalog, Alarm and MobilePosition SUBSCRIBEs, in-dialog NOTIFYs, mobile
positions and scheduled alarms.

Theory of operation
-------------------
Each ``SimDevice`` has one ``DeviceEvents`` (``device.events``), which answers ``SUBSCRIBE``:

* ``Event`` (``sip.events.parse_event_header``) must name ``Catalog``, ``Alarm`` or ``MobilePosition``; anything
  else, or no Event header, is answered ``489 Bad Event``. ``device.refuse_events`` (a test hook:
  ``{"mobileposition": 489}``) answers another status for a package, as a device without that support does;
  ``device.subscribe_status`` does the same for Catalog (the older hook).
* Out of dialog (no To tag) the SUBSCRIBE creates a subscription: ``200`` with ``Expires`` (the asked value,
  3600 when absent), a To tag and ``Contact``; the dialog (``Dialog.from_uas``) is kept in a ``Subscription``
  record, one per package (a new out-of-dialog SUBSCRIBE replaces the old record silently). In dialog it is a
  refresh of the record whose dialog matches (``481`` if none: the device forgot it, e.g. after a reboot).
  ``device.subscribes``/``refreshes``/``unsubscribes`` count them by package (lower case); the Catalog ones also
  update ``catalog_subscribes``, ``catalog_refreshes``, ``catalog_subscribe_expires`` and
  ``catalog_subscribed_until``.
* ``Expires: 0`` is answered ``200``, then a ``NOTIFY`` ``Subscription-State: terminated;reason=timeout`` goes
  in the dialog and the record is dropped (whatever the platform answers, if anything). A subscription not
  refreshed before its Expires ends the same way (a timer per record). ``notify_terminated(event)`` ends one
  from the device side (a test of the platform's re-subscription). A ``481`` to any in-dialog NOTIFY drops the
  record too (RFC 6665 §4.1.3).

While a package is subscribed its reports go as ``NOTIFY`` in that dialog (``Event`` exactly as the SUBSCRIBE
had it, ``id`` included; ``Subscription-State: active;expires=<seconds left>``); otherwise they go out of dialog
as before (``notify_catalog``: a new NOTIFY; ``raise_alarm(form="auto")`` and positions: a MESSAGE).

Mobile positions: a MobilePosition subscription reads ``<Interval>`` from its body
(``sip.events.parse_position_query``; absent: 5 s) and reports every channel (the device itself when it has
none) at once and then every Interval seconds while it lives, in ``config.position_form``: ``single``, one NOTIFY
per channel, or ``list``, one NOTIFY listing them all. The fixes are deterministic: channel ``k`` starts at
longitude ``117.2 + 0.01 k``, latitude ``31.8`` and moves north-east a little every report (speed, direction and
altitude set), timed by the simulator's wall clock. Sent fixes are kept in ``device.positions_sent`` (the last
1000). ``send_positions()`` sends one report on demand.

Scheduled alarms: with ``config.alarm_interval`` > 0 every device raises an alarm every that many seconds while
registered (priority cycling 1..4, method 5 video, AlarmType 2, "视频移动侦测", form ``auto``).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sip import manscdp
from sip.dialog import Dialog
from sip.endpoint import RequestReceived
from sip.errors import CallDoesNotExist
from sip.events import (
    DEFAULT_INTERVAL,
    EventError,
    MobilePosition,
    PositionForm,
    SubscriptionState,
    SubState,
    build_position_notify,
    format_subscription_state,
    parse_event_header,
    parse_position_query,
)
from sip.message import SipRequest, SipResponse, build_response

from .. import __version__
from ..sip_router import MANSCDP
from ..sip_transport import SipServer

if TYPE_CHECKING:
    from .device import SimDevice

__all__ = ["ALARM_DESCRIPTION", "DEFAULT_EXPIRES", "PACKAGES", "DeviceEvents", "Subscription"]

PACKAGES = ("catalog", "alarm", "mobileposition")
"""Event packages the simulator accepts (``Event`` header, lower case)."""
DEFAULT_EXPIRES = 3600
"""Expires granted to a SUBSCRIBE that asks for none."""
ALARM_DESCRIPTION = "视频移动侦测"
"""Description of the scheduled alarms (GB2312 on the wire by default)."""
POSITIONS_KEPT = 1000
USER_AGENT = f"gb28181-sim/{__version__}"


@dataclass(slots=True)
class Subscription:
    """One accepted subscription of one package at one device (the notifier side)."""

    package: str
    """``catalog``, ``alarm`` or ``mobileposition``."""
    event: str
    """The Event header as the SUBSCRIBE had it (``Catalog;id=5``): echoed in every NOTIFY."""
    dialog: Dialog
    """The UAS dialog of the SUBSCRIBE and our 200."""
    expires: int
    """The Expires of the last accepted SUBSCRIBE, seconds."""
    until: float
    """Loop time the subscription lapses without a refresh."""
    interval: int | None = None
    """Seconds between position reports (MobilePosition only)."""
    notifies: int = 0
    """NOTIFYs sent in this dialog."""
    timer: asyncio.Task[None] | None = None
    reporter: asyncio.Task[None] | None = None

    def remaining(self, now: float) -> int:
        return max(0, math.ceil(self.until - now))


class DeviceEvents:
    """The subscription side of one simulated device; see the module docstring."""

    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self.subscriptions: dict[str, Subscription] = {}
        """Live subscriptions by package (lower case)."""
        self._reports = 0
        self._alarms = 0
        device.request_handlers["SUBSCRIBE"] = self.on_subscribe

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """The device booted: start the scheduled alarms (if configured)."""
        if self.device.config.alarm_interval > 0:
            self.device.spawn(self._alarm_loop(), name=f"sim.{self.device.device_id}.alarms")

    def reset(self) -> None:
        """The device stopped (its tasks are cancelled): it forgets every subscription, as a reboot does."""
        for sub in self.subscriptions.values():
            self._cancel(sub)
            sub.dialog.terminate()
        self.subscriptions.clear()
        self.device.catalog_subscribed_until = None

    # ------------------------------------------------------------------------------------------ SUBSCRIBE
    def on_subscribe(self, server: SipServer, ev: RequestReceived) -> None:
        dev = self.device
        req = ev.request
        try:
            header = parse_event_header(req.headers.get("event"))
        except EventError:
            header = None
        if header is None or header.package not in PACKAGES:
            server.respond(build_response(req, 489, "Bad Event", headers=[("Allow-Events",
                                                                            "Catalog, Alarm, MobilePosition")]))
            return
        package = header.package
        refusal = dev.refuse_events.get(package, 0)
        if package == "catalog" and dev.subscribe_status >= 300:
            refusal = dev.subscribe_status
        if refusal >= 300:
            server.respond(build_response(req, refusal))
            return
        interval = self._interval(req) if package == "mobileposition" else None  # 400 if the body is bad
        expires = req.expires
        expires = DEFAULT_EXPIRES if expires is None else expires
        now = asyncio.get_running_loop().time()
        sub = self.subscriptions.get(package)
        headers = [("Expires", str(expires)), ("Contact", str(dev.sim.contact(dev.device_id))),
                   ("User-Agent", USER_AGENT)]
        refresh = req.to.tag is not None
        if refresh:
            if sub is None or not sub.dialog.matches(req):
                raise CallDoesNotExist("Subscription Does Not Exist")
            sub.dialog.receive_request(req)  # CSeq order (500 if it went backwards), target refresh
            server.respond(build_response(req, 200, headers=headers))
            sub.event = req.headers.get("event") or sub.event
            dev.refreshes[package] += 1
        else:
            response = build_response(req, 200, to_tag=server.endpoint.new_tag(), headers=headers)
            server.respond(response)
            if sub is not None:  # replaced: the platform started over
                self._drop(sub)
            sub = Subscription(package, req.headers.get("event") or package, Dialog.from_uas(req, response),
                               expires, now)
            self.subscriptions[package] = sub
            dev.subscribes[package] += 1
        sub.expires = expires
        sub.until = now + expires
        if interval is not None:
            sub.interval = interval
        if package == "catalog":
            if refresh:
                dev.catalog_refreshes += 1
            else:
                dev.catalog_subscribes += 1
            dev.catalog_subscribe_expires = expires
            dev.catalog_subscribed_until = sub.until if expires > 0 else None
        dev.log.info("subscribed", package=package, expires=expires, refresh=refresh, interval=interval)
        if sub.timer is not None:
            sub.timer.cancel()
        if expires == 0:
            dev.unsubscribes[package] += 1
            self._drop(sub)
            dev.spawn(self._send_terminated(sub, "timeout"))
            return
        sub.timer = dev.spawn(self._expire(sub), name=f"sim.{dev.device_id}.{package}.expiry")
        if package == "mobileposition" and sub.reporter is None:
            sub.reporter = dev.spawn(self._report_loop(sub), name=f"sim.{dev.device_id}.positions")

    @staticmethod
    def _interval(req: SipRequest) -> int:
        if not req.body.strip():
            return DEFAULT_INTERVAL
        return parse_position_query(manscdp.decode(req.body))  # InvalidBody / EventError: 400

    async def _expire(self, sub: Subscription) -> None:
        loop = asyncio.get_running_loop()
        while self.subscriptions.get(sub.package) is sub and loop.time() < sub.until:
            await asyncio.sleep(sub.until - loop.time())
        if self.subscriptions.get(sub.package) is sub:
            self.device.log.info("subscription expired", package=sub.package)
            sub.timer = None  # this task: not cancelled by the drop
            self._drop(sub)
            await self._send_terminated(sub, "timeout")

    def _cancel(self, sub: Subscription) -> None:
        current = asyncio.current_task()
        for task in (sub.timer, sub.reporter):
            if task is not None and task is not current:
                task.cancel()
        sub.timer = sub.reporter = None

    def _drop(self, sub: Subscription) -> None:
        """Forget ``sub`` (its timers stop); the dialog stays usable for a last NOTIFY."""
        self._cancel(sub)
        if self.subscriptions.get(sub.package) is sub:
            del self.subscriptions[sub.package]
            if sub.package == "catalog":
                self.device.catalog_subscribed_until = None

    # ------------------------------------------------------------------------------------------ NOTIFY
    def in_dialog(self, package: str, body: bytes) -> SipRequest | None:
        """A NOTIFY carrying ``body`` in ``package``'s subscription dialog, or None when not subscribed."""
        sub = self.subscriptions.get(package)
        if sub is None:
            return None
        now = asyncio.get_running_loop().time()
        state = SubscriptionState(SubState.ACTIVE, expires=sub.remaining(now))
        return self._notify(sub, state, body)

    def _notify(self, sub: Subscription, state: SubscriptionState, body: bytes) -> SipRequest:
        sub.notifies += 1
        return sub.dialog.create_request(
            "NOTIFY", self.device.sim.new_via(),
            [("Event", sub.event), ("Subscription-State", format_subscription_state(state)),
             ("User-Agent", USER_AGENT)],
            body, MANSCDP if body else None)

    async def send(self, package: str, request: SipRequest) -> SipResponse | None:
        """Send ``request``; a 481 to an in-dialog NOTIFY ends that subscription (the platform forgot it)."""
        resp = await self.device.send_to_platform(request)
        sub = self.subscriptions.get(package)
        if resp is not None and resp.status == 481 and sub is not None and sub.dialog.call_id == request.call_id:
            self.device.log.info("platform forgot the subscription", package=package)
            self._drop(sub)
        return resp

    async def _send_terminated(self, sub: Subscription, reason: str) -> SipResponse | None:
        request = self._notify(sub, SubscriptionState(SubState.TERMINATED, reason=reason), b"")
        sub.dialog.terminate()
        return await self.device.send_to_platform(request)

    async def notify_terminated(self, event: str, reason: str = "timeout") -> SipResponse | None:
        """End ``event``'s subscription from the device side: NOTIFY ``terminated;reason=...``, record dropped.
        None if not subscribed or unanswered."""
        sub = self.subscriptions.get(event.lower())
        if sub is None:
            return None
        self._drop(sub)
        return await self._send_terminated(sub, reason)

    # ------------------------------------------------------------------------------------------ positions
    def positions(self) -> list[MobilePosition]:
        """The next fix of every channel (of the device itself when it has none); advances the track."""
        dev = self.device
        n = self._reports % 10_000
        self._reports += 1
        when = datetime.fromtimestamp(dev.sim.wall()).strftime("%Y-%m-%dT%H:%M:%S")
        targets = dev.channel_ids or [dev.device_id]
        return [
            MobilePosition(target, when, longitude=round(117.2 + 0.01 * (k % 1000) + 0.0001 * n, 6),
                           latitude=round(31.8 + 0.00005 * n, 6), speed=round(36.0 + k % 100, 2),
                           direction=float((45 + 10 * n) % 360), altitude=float(30 + k % 100))
            for k, target in enumerate(targets)
        ]

    async def send_positions(self, form: str | None = None) -> SipResponse | None:
        """One position report (see the module docstring): NOTIFYs in the MobilePosition dialog when subscribed,
        else MESSAGEs. ``form`` overrides ``config.position_form``. Returns the worst final response (the
        highest status), None if any went unanswered."""
        dev = self.device
        chosen = PositionForm(form or dev.config.position_form)
        fixes = self.positions()
        groups = [[fix] for fix in fixes] if chosen is PositionForm.SINGLE else [fixes]
        requests: list[SipRequest] = []
        for group in groups:
            body = build_position_notify(dev.next_sn(), dev.device_id, group, form=chosen,
                                         encoding=dev.config.charset)
            request = self.in_dialog("mobileposition", body)
            requests.append(request if request is not None else dev.platform_request("MESSAGE", body, MANSCDP))
        dev.positions_sent.extend(fixes)
        del dev.positions_sent[:-POSITIONS_KEPT]
        answers = await asyncio.gather(*(self.send("mobileposition", r) for r in requests))
        if any(a is None for a in answers):
            return None
        return max(answers, key=lambda a: a.status if a is not None else 0)

    async def _report_loop(self, sub: Subscription) -> None:
        while self.subscriptions.get(sub.package) is sub:
            await self.send_positions()
            await asyncio.sleep(sub.interval or DEFAULT_INTERVAL)

    # ------------------------------------------------------------------------------------------ alarms
    async def _alarm_loop(self) -> None:
        dev = self.device
        interval = dev.config.alarm_interval
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + interval, loop.time() + interval / 2)
            if dev.registered:
                priority = self._alarms % 4 + 1
                self._alarms += 1
                dev.spawn(dev.raise_alarm(priority, 5, ALARM_DESCRIPTION, alarm_type=2))
