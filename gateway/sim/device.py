"""Simulated GB/T 28181 devices: ``SimDevice`` (one camera or NVR) and ``Simulator`` (many, one SIP port).

Theory of operation
-------------------
A ``Simulator`` owns one ``SipServer`` (UDP and TCP on ``local_host:local_port``) and a ``SipRouter`` whose method
handlers hand every incoming request to the device it is addressed to: the Request-URI user, else the To user, may
be a device ID or one of its channel or group IDs; anything else is answered ``404``. Every device sends its own
requests to the platform through the shared server (``Simulator.request``); with ``transport = "tcp"`` the server
opens one connection to the platform on the first request and the platform's queries come back over it.

Devices start one by one at ``register_rate`` per second. Each runs one task, the registration loop:

    REGISTER (no credentials) ── 401/407 ──► REGISTER + Authorization (same Call-ID, CSeq + 1) ── 200 ──► registered
        403            → FAILED, logged, never retried (wrong password, not allowed)
        503/480/500    → wait Retry-After (else the backoff), then again
        no answer      → wait the backoff (retry_min, doubling up to retry_max, with jitter), then again
        423            → ask again at once with the platform's Min-Expires
    registered: sleep until 2/3 of the granted Expires (refresh), or until someone asks for a re-registration.

A second task sends a Keepalive ``MESSAGE`` every ``keepalive_interval`` while registered (SN increments). A
``404``/``403`` to any MESSAGE we send means the platform forgot us (it restarted, or expired us): the device
registers again at once, as real cameras do; ``keepalive_misses`` keepalives in a row without an answer do too.
``stop()`` unregisters (``Expires: 0``, digest again) within ``unregister_timeout``.

Queries (``MESSAGE`` ``<Query>``: DeviceInfo, DeviceStatus, Catalog) are answered ``200 OK`` at once; the
``<Response>`` MESSAGE(s) with the query's SN follow as new requests. A Catalog is split into parts of
``catalog_per_message`` items, each carrying ``SumNum`` and ``DeviceList Num``, sent in order back-to-back (a window
of ``CATALOG_WINDOW`` outstanding transactions). Test hooks make a device misbehave: ``catalog_shuffle``,
``catalog_duplicate``, ``wrong_password`` (attributes) and ``stop_keepalive()``.

Subscriptions and events (``gateway.sim.events``): each device's ``events`` (``DeviceEvents``) answers
``SUBSCRIBE`` for ``Catalog``, ``Alarm`` and ``MobilePosition`` (others ``489``; ``refuse_events`` and, for
Catalog, ``subscribe_status`` are test hooks answering another status) with ``200``, the asked ``Expires``, a To
tag and Contact, and keeps one ``Subscription`` (the UAS dialog, expiry) per package in ``subscriptions``;
``subscribes``/``refreshes``/``unsubscribes`` count them by package (the ``catalog_*`` attributes as before).
``Expires: 0``, a lapsed subscription and ``notify_terminated()`` end one with a NOTIFY
``terminated;reason=timeout``. Reports go in the subscription's dialog when there is one: ``notify_catalog()``
(a channel change: ``<Notify><CmdType>Catalog`` with one Item and its ``<Event>``; NOTIFY, or ``form="MESSAGE"``),
``raise_alarm()`` (``form="auto"``: NOTIFY in the Alarm dialog, else MESSAGE), and mobile positions, every
``<Interval>`` seconds of the MobilePosition subscription in ``config.position_form`` (``send_positions()`` sends
one report now; ``positions_sent`` keeps them). ``config.alarm_interval`` raises an alarm periodically.

Media (``gateway.sim.media``): each device's ``media`` (``DeviceMedia``) answers INVITE, ACK and BYE for its
channels and streams PS over RTP; the simulator routes ``RequestCancelled`` (CANCEL) to it.

Control (``gateway.sim.control``): each device's ``control`` (``DeviceControlSim``) answers DeviceControl (PTZ on a
virtual head per channel, presets, TeleBoot, Record/Guard/Alarm), DeviceConfig, PresetQuery and ConfigDownload.

Extending: add a method to ``SimDevice.request_handlers`` (``"INVITE"``, ``"BYE"``...; the
simulator routes every method of ``Simulator.ROUTED_METHODS``) or a ``(root, CmdType)`` to
``SimDevice.manscdp_handlers`` (``("control", "devicecontrol")``); send device-originated bodies with
``send_manscdp`` (``("Notify", "Alarm", fields)``) and run background work with ``spawn``.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import datetime
from typing import Any

import structlog

from sip import manscdp
from sip.digest import Challenge, authorization_for
from sip.endpoint import Peer, RequestCancelled, RequestReceived, SipEvent, Transport
from sip.errors import MalformedMessage, NotFound, UnsupportedMediaType
from sip.events import MobilePosition
from sip.message import NameAddr, SipRequest, SipResponse, SipUri, Via, build_request, build_response

from .. import __version__
from ..config import SipConfig
from ..netutil import local_ip_toward
from ..sip_router import MANSCDP, SipRouter
from ..sip_transport import SipServer, SipTimeout
from .catalog import Item, catalog_ids, catalog_items, device_name, split_parts
from .config import SimConfig, channel_id
from .control import DeviceControlSim
from .events import DeviceEvents, Subscription
from .media import DeviceMedia

__all__ = ["RegState", "SimConfig", "SimDevice", "Simulator"]

log = structlog.get_logger("gateway.sim")

USER_AGENT = f"gb28181-sim/{__version__}"
CATALOG_WINDOW = 8
"""Catalog parts of one answer in flight at once (sent in order; UDP loss is repaired by SIP retransmission)."""
UNREGISTER_CONCURRENCY = 200
"""Devices unregistering at the same time when the simulator stops."""
_MAX_CHALLENGES = 2
_RETRY_STATUSES = frozenset({408, 480, 486, 500, 503, 504, 600})

RequestHandler = Callable[[SipServer, RequestReceived], None]
ManscdpHandler = Callable[[SipServer, RequestReceived, manscdp.ManscdpDocument], None]


class RegState(enum.Enum):
    IDLE = "idle"                # not started
    REGISTERING = "registering"  # a REGISTER transaction is under way
    REGISTERED = "registered"
    RETRYING = "retrying"        # waiting before the next attempt (503, timeout, unexpected answer)
    FAILED = "failed"            # refused (403): given up
    STOPPED = "stopped"


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Retry(Exception):
    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


def _retry_after(resp: SipResponse) -> float | None:
    value = (resp.headers.get("Retry-After") or "").split(";", 1)[0].split("(", 1)[0].strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86400 else None


def _parse_date(value: str | None) -> datetime | None:
    """GB/T 28181 ``Date``: ``2026-11-23T14:34:25.123`` (local time), milliseconds optional."""
    if not value:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value.strip(), fmt)
        except ValueError:
            continue
    return None


def _uri_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


class SimDevice:
    """One simulated camera or NVR. Created and driven by a ``Simulator``; see the module docstring."""

    def __init__(self, sim: Simulator, index: int, device_id: str) -> None:
        config = sim.config
        self.sim = sim
        self.config = config
        self.index = index
        self.device_id = device_id
        self.name = device_name(index)
        self.channel_ids = [channel_id(device_id, i) for i in range(config.channels)]
        self.log = log.bind(device_id=device_id)

        # Misbehaviour hooks (tests): change them at any time.
        self.catalog_shuffle = config.catalog_shuffle
        """Send the Catalog parts out of order."""
        self.catalog_duplicate = config.catalog_duplicate
        """Send one Catalog part twice (as a separate transaction)."""
        self.wrong_password = config.wrong_password
        """Answer digest challenges with a wrong password."""
        self.keepalive_enabled = True
        """False after ``stop_keepalive()``: registered but silent."""
        self.subscribe_status = 200
        """Status answered to a catalog SUBSCRIBE (a 4xx tests the platform's handling of refusals)."""
        self.refuse_events: dict[str, int] = {}
        """Status answered to a SUBSCRIBE by event package, lower case (``{"mobileposition": 489}``: no support)."""

        # State, for tests and the CLI's status line.
        self.state = RegState.IDLE
        self.failure: str | None = None
        """Why the device gave up (a 403), else None."""
        self.registrations = 0
        """Successful registrations (refreshes included)."""
        self.register_attempts = 0
        """REGISTER requests sent (challenge answers and unregistration included)."""
        self.expires_granted = 0
        self.registered_at: float | None = None
        """Loop time of the last successful registration."""
        self.clock_offset = 0.0
        """Platform clock minus ours, seconds, from the ``Date`` of the last 200 OK (time sync)."""
        self.keepalives_sent = 0
        self.keepalives_ok = 0
        self.last_keepalive: float | None = None
        """Loop time of the last keepalive the platform answered 200."""
        self.queries: Counter[str] = Counter()
        """Queries answered (Response sent), by CmdType."""
        self.catalog_parts_sent = 0
        self.alarm_responses: list[manscdp.ManscdpDocument] = []
        """The platform's ``<Response><CmdType>Alarm`` MESSAGEs received (bounded to the last 1000)."""
        self.catalog_subscribes = 0
        """Catalog SUBSCRIBEs accepted out of dialog (new subscriptions)."""
        self.catalog_refreshes = 0
        """Catalog SUBSCRIBEs accepted in dialog (refreshes)."""
        self.catalog_subscribed_until: float | None = None
        """Loop time the catalog subscription lapses (None: not subscribed; Expires 0 unsubscribes)."""
        self.catalog_subscribe_expires: int | None = None
        """The Expires of the last accepted catalog SUBSCRIBE."""
        self.subscribes: Counter[str] = Counter()
        """SUBSCRIBEs accepted out of dialog (new subscriptions), by package (``catalog``, ``alarm``...)."""
        self.refreshes: Counter[str] = Counter()
        """SUBSCRIBEs accepted in dialog (refreshes), by package."""
        self.unsubscribes: Counter[str] = Counter()
        """SUBSCRIBEs with ``Expires: 0`` accepted, by package."""
        self.positions_sent: list[MobilePosition] = []
        """Mobile position fixes reported (bounded to the last 1000)."""
        self.alarms_raised = 0
        """Alarms sent by ``raise_alarm`` (the scheduled ones included)."""

        # Extension points: method → handler, (root, CmdType) lower-cased → handler.
        self.request_handlers: dict[str, RequestHandler] = {"MESSAGE": self._on_message}
        self.manscdp_handlers: dict[tuple[str, str], ManscdpHandler] = {
            ("query", "deviceinfo"): self._on_device_info,
            ("query", "devicestatus"): self._on_device_status,
            ("query", "catalog"): self._on_catalog,
            ("response", "alarm"): self._on_alarm_response,
        }
        # Media (gateway/sim/media.py): registers the INVITE, ACK and BYE handlers; sessions and counters.
        self.media = DeviceMedia(self)
        # Control (gateway/sim/control.py): PTZ, presets, TeleBoot, Record/Guard/Alarm, DeviceConfig handlers.
        self.keepalive_interval = config.keepalive_interval
        """Seconds between keepalives (DeviceConfig ``HeartBeatInterval`` changes it)."""
        self.control = DeviceControlSim(self)
        # Subscriptions (gateway/sim/events.py): the SUBSCRIBE handler, in-dialog NOTIFYs, positions, alarms.
        self.events = DeviceEvents(self)

        self._call_id = ""
        self._from_tag = ""
        self._cseq = 0
        self._sn = itertools.count(sim.rng.randrange(1, 1 << 16))
        self._missed = 0
        self._challenge: tuple[int, Challenge] | None = None
        self._nc = 0
        self._items: list[Item] | None = None
        self._reregister = asyncio.Event()
        self._registered = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------------------------------ public API
    @property
    def registered(self) -> bool:
        return self.state is RegState.REGISTERED

    @property
    def codec(self) -> str:
        """``h264`` or ``h265``: the video codec of the generated streams."""
        return self.config.codec

    @property
    def ids(self) -> list[str]:
        """Every ID this device answers to: its own, its channels', its groups'."""
        return [self.device_id, *catalog_ids(self.config, self.device_id)]

    def catalog(self) -> list[Item]:
        """The catalog items (groups first, then channels), built once the SIP port is known."""
        if self._items is None:
            self._items = catalog_items(self.config, self.device_id, self.index, self.sim.local_ip, self.sim.port)
        return self._items

    def start(self) -> None:
        """Begin registering (and, once registered, keepalives): a boot. Idempotent while running; after
        ``stop()`` it boots again (new Call-ID, no remembered challenge), which tests use as a reboot."""
        if self._main is not None:
            return
        server = self._server()
        self._call_id = server.endpoint.new_call_id()
        self._from_tag = server.endpoint.new_tag()
        self._challenge = None
        self.failure = None
        self._main = asyncio.create_task(self._run(), name=f"sim.{self.device_id}.register")
        self._keepalive = asyncio.create_task(self._keepalive_loop(), name=f"sim.{self.device_id}.keepalive")
        self.events.start()

    async def stop(self, unregister: bool = True) -> None:
        """Stop every task; unregister (``Expires: 0``) first if registered and ``unregister``."""
        was_registered = self.registered
        tasks = [t for t in (self._main, self._keepalive, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._main = self._keepalive = None
        self._tasks.clear()
        self.events.reset()  # a stopped (rebooting) device forgets its subscriptions
        self._registered.clear()
        if unregister and was_registered:
            try:
                await asyncio.wait_for(self._unregister(), self.config.unregister_timeout)
                self.log.info("device unregistered")
            except (_Refused, _Retry, TimeoutError) as exc:
                self.log.warning("unregister failed", error=str(exc) or type(exc).__name__)
        self.state = RegState.STOPPED

    async def _unregister(self) -> None:
        """``Expires: 0``, waiting out a 503's Retry-After (the caller bounds the whole)."""
        while True:
            try:
                await self._register(0)
                return
            except _Retry as exc:
                if exc.delay is None:
                    raise
                await asyncio.sleep(exc.delay)

    def stop_keepalive(self) -> None:
        """Go silent: stay registered but send no more keepalives (the platform should mark us offline)."""
        self.keepalive_enabled = False

    def resume_keepalive(self) -> None:
        self.keepalive_enabled = True

    def reregister(self) -> None:
        """Register again now, from scratch (what a device does when the platform answers a MESSAGE with 404/403:
        it has probably restarted, so the remembered challenge is dropped too)."""
        self._challenge = None
        self._reregister.set()

    async def wait_registered(self, timeout: float | None = None) -> bool:
        """True once registered (at once if already), False after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._registered.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def next_sn(self) -> int:
        """The next MANSCDP SN of a device-originated body."""
        return next(self._sn)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` as a task owned by this device (cancelled by ``stop()``, failures logged)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def platform_request(self, method: str, body: bytes = b"", content_type: str | None = None,
                         headers: Iterable[tuple[str, str]] = ()) -> SipRequest:
        """An out-of-dialog request from this device to the platform (``sip:{platform_id}@{domain}``)."""
        server = self._server()
        cfg = self.config
        return build_request(
            method, SipUri(host=cfg.domain, user=cfg.platform_id),
            via=self.sim.new_via(),
            from_=NameAddr(SipUri(host=cfg.domain, user=self.device_id),
                           params=(("tag", server.endpoint.new_tag()),)),
            to=NameAddr(SipUri(host=cfg.domain, user=cfg.platform_id)),
            call_id=server.endpoint.new_call_id(), cseq=self._next_cseq(), body=body, content_type=content_type,
            headers=[("User-Agent", USER_AGENT), *headers],
        )

    async def send_manscdp(self, root: str, cmd_type: str, fields: Sequence[manscdp.Field] = (), *,
                           sn: int | None = None, device_id: str | None = None) -> SipResponse | None:
        """Send a MANSCDP body (``Notify``/``Response``) in a MESSAGE; its final response, None on timeout."""
        body = manscdp.encode(root, cmd_type, self.next_sn() if sn is None else sn, device_id or self.device_id,
                              fields, encoding=self.config.charset)
        return await self.send_to_platform(self.platform_request("MESSAGE", body, MANSCDP))

    async def raise_alarm(self, priority: int, method: int, description: str = "", *,
                          alarm_type: int | None = None, source_id: str | None = None, form: str = "auto",
                          alarm_time: str | None = None, longitude: float | None = None,
                          latitude: float | None = None) -> SipResponse | None:
        """Report an alarm (``<Notify><CmdType>Alarm``, GB/T 28181-2016 §9.4) from ``source_id`` (default the
        first channel, else the device). ``form``: ``"auto"`` sends a ``NOTIFY`` in the Alarm subscription's
        dialog when subscribed, else a ``MESSAGE``; ``"MESSAGE"`` always a MESSAGE; ``"NOTIFY"`` a NOTIFY
        (``Event: Alarm``), in the dialog when subscribed, else out of dialog. Values are sent as given (tests
        send bad ones). Returns the final response, None on timeout; the platform's separate Response lands in
        ``alarm_responses``."""
        chosen = form.upper()
        if chosen not in ("AUTO", "MESSAGE", "NOTIFY"):
            raise ValueError(f"form must be auto, MESSAGE or NOTIFY, got {form!r}")
        if alarm_time is None:
            alarm_time = datetime.fromtimestamp(self.sim.wall()).strftime("%Y-%m-%dT%H:%M:%S")
        fields: list[manscdp.Field] = [
            manscdp.element("AlarmPriority", priority), manscdp.element("AlarmMethod", method),
            manscdp.element("AlarmTime", alarm_time), manscdp.element("AlarmDescription", description),
        ]
        if longitude is not None:
            fields.append(manscdp.element("Longitude", longitude))
        if latitude is not None:
            fields.append(manscdp.element("Latitude", latitude))
        if alarm_type is not None:
            fields.append(manscdp.element("Info", [manscdp.element("AlarmType", alarm_type)]))
        source = source_id or (self.channel_ids[0] if self.channel_ids else self.device_id)
        body = manscdp.encode("Notify", "Alarm", self.next_sn(), source, fields, encoding=self.config.charset)
        self.alarms_raised += 1
        return await self._report("alarm", "Alarm", body, chosen)

    async def notify_catalog(self, channel_id: str, event: str, *, form: str = "NOTIFY",
                             **fields: object) -> SipResponse | None:
        """Report a catalog change of ``channel_id`` (``<Notify><CmdType>Catalog``, one Item with ``<Event>`` and
        ``fields`` such as ``Name``/``Status``) in a ``NOTIFY`` (in the Catalog subscription's dialog when
        subscribed, else out of dialog with ``Event: Catalog``) or, with ``form="MESSAGE"``, a ``MESSAGE``.
        Values are sent as given. Returns the final response, None on timeout."""
        item = [manscdp.element("DeviceID", channel_id), manscdp.element("Event", event),
                *(manscdp.element(name, value) for name, value in fields.items())]
        body = manscdp.encode("Notify", "Catalog", self.next_sn(), self.device_id, [
            ("SumNum", "1"), manscdp.element("DeviceList", [manscdp.element("Item", item)], Num=1),
        ], encoding=self.config.charset)
        return await self._report("catalog", "Catalog", body, "MESSAGE" if form.upper() == "MESSAGE" else "NOTIFY")

    async def _report(self, package: str, event: str, body: bytes, form: str) -> SipResponse | None:
        """Send an event body: ``form`` AUTO/NOTIFY go in ``package``'s subscription dialog when there is one;
        otherwise NOTIFY goes out of dialog (``Event: {event}``) and AUTO/MESSAGE as a MESSAGE."""
        if form != "MESSAGE":
            request = self.events.in_dialog(package, body)
            if request is not None:
                return await self.events.send(package, request)
        if form == "NOTIFY":
            request = self.platform_request("NOTIFY", body, MANSCDP,
                                            headers=[("Event", event), ("Subscription-State", "active")])
        else:
            request = self.platform_request("MESSAGE", body, MANSCDP)
        return await self.send_to_platform(request)

    async def send_positions(self, form: str | None = None) -> SipResponse | None:
        """One mobile position report of every channel now (``gateway.sim.events``): in the MobilePosition
        subscription's dialog when subscribed, else MESSAGEs; ``form`` (``single``/``list``) overrides
        ``config.position_form``. The worst final response, None if any went unanswered."""
        return await self.events.send_positions(form)

    async def notify_terminated(self, event: str, reason: str = "timeout") -> SipResponse | None:
        """End the ``event`` (``"MobilePosition"``, ``"alarm"``...) subscription from the device side: a NOTIFY
        ``Subscription-State: terminated;reason=...`` and the record dropped. None if not subscribed or no answer."""
        return await self.events.notify_terminated(event, reason)

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """Live subscriptions by package (``catalog``, ``alarm``, ``mobileposition``)."""
        return self.events.subscriptions

    def _on_alarm_response(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        self._ok(server, ev)
        self.alarm_responses.append(doc)
        del self.alarm_responses[:-1000]

    async def send_to_platform(self, request: SipRequest) -> SipResponse | None:
        """Send ``request``; a 404/403 answer while registered triggers a re-registration. None on timeout."""
        try:
            resp = await self.sim.request(request)
        except SipTimeout:
            self.log.info("no answer from the platform", method=request.method, call_id=request.call_id)
            return None
        if resp.status in (403, 404) and self.registered:
            self.log.warning("platform does not know us, registering again", method=request.method,
                             status=resp.status)
            self.reregister()
        return resp

    def handle_request(self, server: SipServer, ev: RequestReceived) -> None:
        """A request addressed to this device (routed by the simulator)."""
        method = ev.request.method.upper()
        handler = self.request_handlers.get(method)
        if handler is not None:
            handler(server, ev)
        elif method != "ACK":
            server.respond(build_response(ev.request, 405, headers=[("Allow", ", ".join(self.request_handlers))]))

    # ------------------------------------------------------------------------------------------ registration
    async def _run(self) -> None:
        backoff = self.config.retry_min
        while True:
            self._reregister.clear()
            self.state = RegState.REGISTERING
            try:
                granted = await self._register(self.config.expires)
            except _Refused as exc:
                self.state = RegState.FAILED
                self.failure = f"{exc.status} {exc.reason}"
                self._registered.clear()
                self.log.error("registration refused, giving up", status=exc.status, reason=exc.reason)
                return
            except _Retry as exc:
                self.state = RegState.RETRYING
                self._registered.clear()
                if exc.delay is not None:
                    delay = exc.delay
                else:
                    delay = backoff * (0.75 + 0.5 * self.sim.rng.random())
                    backoff = min(backoff * 2, self.config.retry_max)
                self.log.warning("registration failed, retrying", reason=exc.reason, retry_in=round(delay, 3))
                await asyncio.sleep(delay)
                continue
            backoff = self.config.retry_min
            refresh = (granted if granted > 0 else self.config.expires) * 2 / 3
            try:
                await asyncio.wait_for(self._reregister.wait(), refresh)
            except TimeoutError:
                pass

    async def _register(self, expires: int) -> int:
        """One registration (``expires`` 0: unregistration), challenge answered; the granted Expires.

        The last challenge is remembered and answered up front (nc + 1) on refreshes and on the unregistration,
        as most cameras do: a platform rate-limiting unauthenticated REGISTERs (503) then lets them through.
        """
        cfg = self.config
        uri = SipUri(host=cfg.domain, user=cfg.platform_id)
        authorization = self._authorization(uri) if self._challenge is not None else None
        challenges = 0
        while True:
            req = self._register_request(uri, expires, authorization)
            self.register_attempts += 1
            try:
                resp = await self.sim.request(req)
            except SipTimeout:
                raise _Retry("REGISTER timed out") from None
            status = resp.status
            if status in (401, 407):
                challenges += 1
                if challenges > _MAX_CHALLENGES:
                    raise _Retry(f"challenged {challenges} times: password refused?")
                header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
                value = resp.headers.get(header)
                if value is None:
                    raise _Retry(f"{status} without {header}")
                try:
                    self._challenge = (status, Challenge.parse(value))
                    self._nc = 0
                    authorization = self._authorization(uri)
                except MalformedMessage as exc:
                    self._challenge = None
                    raise _Retry(f"unusable challenge: {exc.reason}") from None
                continue
            if 200 <= status < 300:
                if expires == 0:
                    self.state = RegState.IDLE
                    return 0
                return self._registered_ok(resp, expires)
            if status == 423 and expires:
                minimum = (resp.headers.get("Min-Expires") or "").strip()
                if minimum.isascii() and minimum.isdigit() and int(minimum) > expires and challenges <= _MAX_CHALLENGES:
                    expires = int(minimum)
                    challenges += 1
                    continue
            if status == 403:
                raise _Refused(status, resp.reason)
            if status in _RETRY_STATUSES:
                raise _Retry(f"{status} {resp.reason}", _retry_after(resp))
            raise _Retry(f"unexpected {status} {resp.reason}")

    def _authorization(self, uri: SipUri) -> tuple[str, str]:
        """The (Proxy-)Authorization header answering the remembered challenge, with the next nonce count."""
        assert self._challenge is not None
        status, challenge = self._challenge
        self._nc += 1
        password = self.config.password + "-wrong" if self.wrong_password else self.config.password
        creds = authorization_for(challenge, self.device_id, password, "REGISTER", str(uri),
                                  cnonce=f"{self.sim.rng.getrandbits(64):016x}", nc=self._nc)
        return ("Authorization" if status == 401 else "Proxy-Authorization", str(creds))

    def _register_request(self, uri: SipUri, expires: int, authorization: tuple[str, str] | None) -> SipRequest:
        cfg = self.config
        headers = [("Contact", str(self.sim.contact(self.device_id))), ("Expires", str(expires)),
                   ("User-Agent", USER_AGENT)]
        if authorization is not None:
            headers.append(authorization)
        return build_request(
            "REGISTER", uri, via=self.sim.new_via(),
            from_=NameAddr(SipUri(host=cfg.domain, user=self.device_id), params=(("tag", self._from_tag),)),
            to=NameAddr(SipUri(host=cfg.domain, user=self.device_id)),
            call_id=self._call_id, cseq=self._next_cseq(), headers=headers,
        )

    def _registered_ok(self, resp: SipResponse, asked: int) -> int:
        try:
            granted = resp.expires
        except MalformedMessage:
            granted = None
        if granted is None:
            for contact in resp.contacts:
                value = contact.param("expires")
                if contact.uri.user == self.device_id and value and value.isdigit():
                    granted = int(value)
        granted = asked if granted is None else granted
        date = _parse_date(resp.headers.get("Date"))
        if date is not None:
            self.clock_offset = date.timestamp() - self.sim.wall()
        first = self.registrations == 0
        self.registrations += 1
        self.expires_granted = granted
        self.registered_at = asyncio.get_running_loop().time()
        self.state = RegState.REGISTERED
        self._missed = 0
        self._registered.set()
        self.log.info("device registered" if first else "registration refreshed", expires=granted,
                      transport=self.config.transport, date=resp.headers.get("Date"))
        return granted

    # ------------------------------------------------------------------------------------------ keepalive
    async def _keepalive_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.keepalive_interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            now = loop.time()
            interval = self.keepalive_interval
            next_at = max(next_at + interval, now + interval / 2)
            if self.registered and self.keepalive_enabled:
                self.spawn(self._send_keepalive())

    async def _send_keepalive(self) -> None:
        self.keepalives_sent += 1
        resp = await self.send_manscdp("Notify", "Keepalive", [("Status", "OK")])
        if resp is None:
            self._missed += 1
            if self._missed >= self.config.keepalive_misses and self.registered:
                self.log.warning("keepalives unanswered, registering again", missed=self._missed)
                self._missed = 0
                self.reregister()
            return
        self._missed = 0
        if resp.status < 300:
            self.keepalives_ok += 1
            self.last_keepalive = asyncio.get_running_loop().time()

    # ------------------------------------------------------------------------------------------ queries
    def _on_message(self, server: SipServer, ev: RequestReceived) -> None:
        req = ev.request
        if req.content_type != MANSCDP.lower():
            raise UnsupportedMediaType(f"expected {MANSCDP}, got {req.content_type}")
        doc = manscdp.decode(req.body)  # InvalidBody: the router answers 400
        handler = self.manscdp_handlers.get((doc.root.lower(), doc.cmd_type.lower()))
        if handler is None:
            self.log.debug("manscdp command not simulated", root=doc.root, cmd_type=doc.cmd_type, sn=doc.sn)
            self._ok(server, ev)
            return
        handler(server, ev, doc)

    def _ok(self, server: SipServer, ev: RequestReceived) -> None:
        server.respond(build_response(ev.request, 200, to_tag=server.endpoint.new_tag(),
                                      headers=[("User-Agent", USER_AGENT)]))

    def _target(self, doc: manscdp.ManscdpDocument) -> str:
        """The ID a Response speaks for: the queried one if it is ours (a channel), else the device."""
        return doc.device_id if self.sim.owner(doc.device_id) is self else self.device_id

    def _on_device_info(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        self._ok(server, ev)
        fields: list[manscdp.Field] = [
            ("DeviceName", self.name),
            ("Result", "OK"),
            ("Manufacturer", self.config.manufacturer),
            ("Model", self.config.device_model),
            ("Firmware", self.config.firmware),
            ("Channel", str(self.config.channels)),
        ]
        self.spawn(self._answer(doc, fields))

    def _on_device_status(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        self._ok(server, ev)
        device_time = datetime.fromtimestamp(self.sim.wall() + self.clock_offset).strftime("%Y-%m-%dT%H:%M:%S")
        fields: list[manscdp.Field] = [
            ("Result", "OK"),
            ("Online", "ONLINE"),
            ("Status", "OK"),
            ("Encode", "ON"),
            ("Record", "OFF"),
            ("DeviceTime", device_time),
            manscdp.element("Alarmstatus", None, Num=0),
        ]
        self.spawn(self._answer(doc, fields))

    async def _answer(self, doc: manscdp.ManscdpDocument, fields: Sequence[manscdp.Field]) -> None:
        resp = await self.send_manscdp("Response", doc.cmd_type, fields, sn=doc.sn, device_id=self._target(doc))
        if resp is not None and resp.status < 300:
            self.queries[doc.cmd_type] += 1
        else:
            self.log.warning("query answer not accepted", cmd_type=doc.cmd_type, sn=doc.sn,
                             status=resp.status if resp is not None else None)

    def _on_catalog(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        self._ok(server, ev)
        self.spawn(self._answer_catalog(doc))

    def catalog_bodies(self, sn: int) -> list[bytes]:
        """The Catalog Response bodies for query ``sn``, in order (before any shuffle or duplicate)."""
        items = self.catalog()
        total = len(items)
        return [
            manscdp.encode("Response", "Catalog", sn, self.device_id, [
                ("SumNum", str(total)),
                manscdp.element("DeviceList", [manscdp.element("Item", fields) for _, fields in part],
                                Num=len(part)),
            ], encoding=self.config.charset)
            for part in split_parts(items, self.config.catalog_per_message)
        ]

    async def _answer_catalog(self, doc: manscdp.ManscdpDocument) -> None:
        bodies = self.catalog_bodies(doc.sn)
        order = list(range(len(bodies)))
        if self.catalog_shuffle and len(order) > 1:
            while order == sorted(order):
                self.sim.rng.shuffle(order)
        if self.catalog_duplicate:
            order.insert(self.sim.rng.randrange(len(order) + 1), order[self.sim.rng.randrange(len(order))])
        window = asyncio.Semaphore(CATALOG_WINDOW)
        results: list[SipResponse | None] = []

        async def send(body: bytes) -> None:
            try:
                results.append(await self.send_to_platform(self.platform_request("MESSAGE", body, MANSCDP)))
                self.catalog_parts_sent += 1
            finally:
                window.release()

        sends = []
        for index in order:
            await window.acquire()  # in order: each part's request is created after the one before
            sends.append(asyncio.create_task(send(bodies[index])))
        await asyncio.gather(*sends)
        failed = [r.status if r is not None else None for r in results if r is None or r.status >= 300]
        if failed:
            self.log.warning("catalog parts not accepted", sn=doc.sn, failed=failed)
        else:
            self.queries["Catalog"] += 1
        self.log.info("catalog sent", sn=doc.sn, items=len(self.catalog()), parts=len(order),
                      shuffled=self.catalog_shuffle, duplicated=self.catalog_duplicate)

    # ------------------------------------------------------------------------------------------ helpers
    def _server(self) -> SipServer:
        server = self.sim.server
        if server is None:
            raise RuntimeError("the simulator is not started")
        return server

    def _next_cseq(self) -> int:
        self._cseq += 1
        return self._cseq

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("device task failed", task=task.get_name(), exc_info=task.exception())


class Simulator:
    """Many ``SimDevice``s in one process behind one SIP port. ``async with Simulator(config) as sim: ...``."""

    ROUTED_METHODS = ("MESSAGE", "INVITE", "ACK", "BYE", "INFO", "SUBSCRIBE", "NOTIFY")
    """Methods handed to devices (which answer 405 to those they do not simulate yet)."""

    def __init__(self, config: SimConfig, *, rng: random.Random | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        """
        :param rng: randomness (cnonces, jitter, shuffles); default ``random.Random(config.seed)``.
        :param wall: the wall clock (``Date`` time sync, ``DeviceTime``).
        """
        self.config = config
        self.rng = rng if rng is not None else random.Random(config.seed)
        self.wall = wall
        self.router = SipRouter(user_agent=USER_AGENT)
        for method in self.ROUTED_METHODS:
            self.router.on_method(method, self._dispatch)
        self.router.on_event(self._on_event)  # media: CANCEL of a pending INVITE (gateway/sim/media.py)
        self.server: SipServer | None = None
        self.platform: Peer | None = None
        self.local_ip = config.local_host
        self.devices = [SimDevice(self, i, device_id) for i, device_id in enumerate(config.device_ids())]
        self._by_id: dict[str, SimDevice] = {}
        for device in self.devices:
            for item_id in device.ids:
                self._by_id.setdefault(item_id, device)
        self._ramp: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self.server.port if self.server is not None else 0

    async def start(self) -> None:
        """Bind the SIP port, then start the devices at ``register_rate`` per second (in the background)."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        host, port = cfg.server
        kind = socket.SOCK_DGRAM if cfg.transport == "udp" else socket.SOCK_STREAM
        infos = await loop.getaddrinfo(host, port, type=kind)
        if not infos:
            raise OSError(f"cannot resolve {host}")
        server_ip = str(infos[0][4][0])
        transport = Transport.UDP if cfg.transport == "udp" else Transport.TCP
        self.platform = Peer(transport, (server_ip, port))
        sip_config = SipConfig(
            listen=cfg.local_host, port=cfg.local_port, platform_id=cfg.platform_id,
            password="not-used-by-the-simulator",  # we are the client: the SipServer wants one all the same
            t1=cfg.t1, t2=max(4.0, cfg.t1), t4=max(5.0, cfg.t1),
            source_rate_limit=0, udp_queue_size=65536, max_message_size=1 << 20,
            tcp_idle_timeout=min(86400.0, max(120.0, 3 * cfg.keepalive_interval)),
        )
        self.server = SipServer(sip_config, self.router)
        await self.server.start()
        self.local_ip = local_ip_toward(server_ip, cfg.local_host)
        self._ramp = asyncio.create_task(self._ramp_up(), name="sim.ramp")
        log.info("simulator started", devices=len(self.devices), channels=cfg.channels, server=f"{host}:{port}",
                 transport=cfg.transport, local=f"{self.local_ip}:{self.port}", codec=cfg.codec,
                 audio=cfg.audio, first_id=cfg.first_id)

    async def stop(self, unregister: bool = True) -> None:
        """Unregister every registered device (bounded concurrency), then close the SIP port."""
        if self._ramp is not None:
            self._ramp.cancel()
            await asyncio.gather(self._ramp, return_exceptions=True)
            self._ramp = None
        limit = asyncio.Semaphore(UNREGISTER_CONCURRENCY)

        async def stop_one(device: SimDevice) -> None:
            async with limit:
                await device.stop(unregister)

        await asyncio.gather(*(stop_one(d) for d in self.devices))
        if self.server is not None:
            await self.server.stop()
            self.server = None
        log.info("simulator stopped", **self.stats())

    async def _ramp_up(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i, device in enumerate(self.devices):
            delay = started + i / self.config.register_rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            device.start()

    # ------------------------------------------------------------------------------------------ for devices
    async def request(self, request: SipRequest) -> SipResponse:
        """Send ``request`` to the platform; its final response (raises ``SipTimeout``)."""
        if self.server is None or self.platform is None:
            raise RuntimeError("the simulator is not started")
        return await self.server.request(request, self.platform)

    def new_via(self) -> Via:
        """A top Via for a new client transaction toward the platform (``rport`` asked: we may be behind NAT)."""
        if self.server is None or self.platform is None:
            raise RuntimeError("the simulator is not started")
        return Via(transport=self.platform.transport.value, host=_uri_host(self.local_ip), port=self.server.port,
                   params=(("rport", None), ("branch", self.server.endpoint.new_branch())))

    def contact(self, user: str) -> NameAddr:
        return NameAddr(SipUri(host=_uri_host(self.local_ip), port=self.port, user=user))

    def owner(self, item_id: str) -> SimDevice | None:
        """The device answering to ``item_id`` (its own ID, a channel's or a group's), or None."""
        return self._by_id.get(item_id)

    # ------------------------------------------------------------------------------------------ lookups
    def device(self, device_id: str) -> SimDevice:
        """The device owning ``device_id`` (its own, a channel's or a group's ID); KeyError if none."""
        return self._by_id[device_id]

    async def wait_registered(self, count: int | None = None, timeout: float = 30.0) -> bool:
        """True once ``count`` devices (default: all) are registered; False after ``timeout`` seconds."""
        want = len(self.devices) if count is None else count
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while sum(d.registered for d in self.devices) < want:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def stats(self) -> dict[str, int]:
        states = Counter(d.state.value for d in self.devices)
        return {
            "devices": len(self.devices),
            "registered": states[RegState.REGISTERED.value],
            "retrying": states[RegState.RETRYING.value],
            "failed": states[RegState.FAILED.value],
            "keepalives_ok": sum(d.keepalives_ok for d in self.devices),
            "queries_answered": sum(sum(d.queries.values()) for d in self.devices),
            "streams": sum(len(d.media.sessions) for d in self.devices),  # media: live INVITE sessions
        }

    # ------------------------------------------------------------------------------------------ routing
    def _dispatch(self, server: SipServer, ev: RequestReceived) -> None:
        req = ev.request
        device = None
        for user in (req.request_uri.user, req.to.uri.user):
            if user and (device := self._by_id.get(user)) is not None:
                break
        if device is None:
            if req.method.upper() == "ACK":
                return
            raise NotFound("Unknown Device")
        device.handle_request(server, ev)

    def _on_event(self, server: SipServer, ev: SipEvent) -> None:
        """Media: a CANCELled INVITE goes to the device it was addressed to (which answers it 487)."""
        if isinstance(ev, RequestCancelled):
            req = ev.invite
            for user in (req.request_uri.user, req.to.uri.user):
                if user and (device := self._by_id.get(user)) is not None:
                    device.media.on_cancel(server, ev)
                    return
