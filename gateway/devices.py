"""The device registry: REGISTER with digest, keepalive, online state, queries after registration, persistence.

Theory of operation
-------------------
Devices (cameras, NVRs) register with ``REGISTER`` and prove the password with HTTP digest (``sip.digest``):
the first attempt is challenged ``401`` (realm = our domain, ``algorithm=MD5``, ``qop="auth"``; answers with
and without qop are accepted), a right answer is ``200 OK`` with ``Contact``, ``Expires`` and ``Date`` (devices
set their clock from it), a wrong one ``403``. Repeated failures from one source IP get that source refused for
a while; unauthenticated REGISTERs beyond ``devices.register_rate`` per second get ``503`` with a spread
``Retry-After`` (a storm after a power cut is absorbed, and the devices come back). ``Expires: 0`` unregisters.

A registered device is *online* while its keepalives (``MESSAGE`` ``<Notify><CmdType>Keepalive``) keep coming:
it goes offline after ``keepalive_interval × keepalive_count`` seconds of silence, or when its registration
expires. A ``MESSAGE`` from a device that is not registered is refused (``404``) so that the device registers
again. Every message from a device updates where we reach it (its source address: NAT mappings move; for TCP
the connection it came on).

After a (new) registration the device is queried for ``DeviceInfo``, ``Catalog`` and ``DeviceStatus`` by a
bounded pool of workers. Answers arrive as separate ``MESSAGE``s with the query's ``SN``; multi-part catalogs are
reassembled by ``gateway.catalog.CatalogCollector`` until ``SumNum`` items or a timeout (then kept as partial).

After the sync the device is subscribed to its events (``gateway.subscriptions``: Catalog, Alarm and
MobilePosition ``SUBSCRIBE``s refreshed in dialog before they expire; again at each REGISTER that does not start a
sync, since a rebooted device forgets its subscriptions). Catalog changes then come in ``NOTIFY`` (or ``MESSAGE``)
``<Notify><CmdType>Catalog`` bodies, answered ``200`` and applied per item's ``<Event>``: ON/OFF/VLOST/DEFECT set
the channel's status (an unknown channel is added), ADD/UPDATE upsert it, DEL removes it; a body that does not
parse (no items, an item without DeviceID or with an unknown Event) is refused ``400`` and nothing of it applied.

State is kept in memory and written behind to SQLite (``gateway.store``). At start it is restored: a device whose
registration and keepalive deadline have not passed (wall clock) stays online, so a gateway restart does not
flip healthy devices offline.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric

from sip import manscdp
from sip.digest import AuthResult, Challenge, Credentials, DigestAlgorithm, NonceManager, verify
from sip.endpoint import Peer, RequestReceived, Transport
from sip.errors import Forbidden, MalformedMessage, NotFound, RemoteProtocolError
from sip.message import NameAddr, SipRequest, SipUri, Via, build_request, build_response

from . import metrics
from .catalog import CatalogCollector, item_kind
from .config import Config
from .netutil import local_ip_toward
from .sip_router import MANSCDP, SipRouter
from .sip_transport import SipServer, SipTimeout
from .store import ChannelRecord, DeviceRecord, Store
from .subscriptions import Event, Subscription, Subscriptions

log = structlog.get_logger("gateway.devices")

_ID_RE = re.compile(r"[0-9A-Za-z]{1,32}")
MAX_PARTS = 1000
"""Parts of one split ``<Response>`` (``expect_parts``) kept; beyond that they are dropped."""
_CATALOG_EVENTS = frozenset({"ON", "OFF", "VLOST", "DEFECT", "ADD", "DEL", "UPDATE"})


class QueryFailed(Exception):
    """A query to a device was refused (SIP status) or got no answer in time."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(slots=True)
class Device:
    """A device as the registry holds it: the persisted record plus runtime routing and deadlines."""

    rec: DeviceRecord
    peer: Peer | None = None
    registered_until: float = 0.0      # monotonic deadline of the registration
    alive_until: float = 0.0           # monotonic keepalive deadline
    channels: dict[str, ChannelRecord] = field(default_factory=dict)
    syncing: bool = False
    subscriptions: dict[Event, Subscription] = field(default_factory=dict)  # gateway.subscriptions

    @property
    def device_id(self) -> str:
        return self.rec.device_id

    @property
    def registered(self) -> bool:
        return self.rec.expires_at > 0


class TokenBucket:
    """A token bucket (rate per second, burst of ``burst``)."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def format_date(wall: float) -> str:
    """GB/T 28181 ``Date``: local time ``yyyy-MM-dd'T'HH:mm:ss.SSS`` (devices set their clocks from it)."""
    dt = datetime.fromtimestamp(wall)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


class DeviceRegistry:
    """Terminates REGISTER and device MESSAGEs; tracks online state; queries devices; persists through ``store``."""

    def __init__(self, config: Config, router: SipRouter, store: Store | None = None,
                 *, wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.dc = config.devices
        self.store = store
        self.devices: dict[str, Device] = {}
        self._wall = wall
        self._server: SipServer | None = None
        self._nonces = NonceManager(secrets.token_bytes(32), config.devices.nonce_lifetime)
        self._failures: dict[str, list[float]] = {}
        self._register_bucket: TokenBucket | None = None
        self._sn = itertools.count(random.randrange(1, 1 << 20))
        self._waiters: dict[tuple[str, int], asyncio.Future[manscdp.ManscdpDocument]] = {}
        self._parts: dict[tuple[str, int], asyncio.Queue[manscdp.ManscdpDocument]] = {}
        self._collectors: dict[tuple[str, int], tuple[CatalogCollector, asyncio.Event]] = {}
        self._sync_queue: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        #: (registered, online) devices as of the last gauge update (each watch period): cheap to read.
        self.counts: tuple[int, int] = (0, 0)
        #: (device, channel) whose last stream start ended without media or with undecodable payload.
        self.media_faults: set[tuple[str, str]] = set()
        #: Devices restored online from the store at start (``gateway.subscriptions`` subscribes them).
        self.restored_online: list[str] = []
        router.on_method("REGISTER", self._on_register)
        router.on_manscdp("Notify", "Keepalive", self._on_keepalive)
        router.on_manscdp("Notify", "Catalog", self.on_catalog_notify)
        self.subscriptions = Subscriptions(self, router, wall=wall)
        self.subscriptions.on_notify("Catalog", self.on_catalog_notify)
        for cmd in ("Catalog", "DeviceInfo", "DeviceStatus", "PresetQuery", "DeviceControl", "DeviceConfig",
                    "ConfigDownload"):
            router.on_manscdp("Response", cmd, self._on_response)
        self.router = router

    # ------------------------------------------------------------------------------------------ lifecycle
    def attach(self, server: SipServer) -> None:
        self._server = server

    @property
    def server(self) -> SipServer | None:
        """The SIP server requests to devices go out on (None before ``attach``)."""
        return self._server

    def reconfigure(self, config: Config) -> None:
        """Use ``config`` from now on (a reload: ``sip.password``, ``devices.passwords`` and ``devices.allow``
        are read at each REGISTER, so new values apply to the next one; registrations already granted stay).
        Registered devices no longer allowed (and not provisioned by an operator) are unregistered: their next
        MESSAGE gets 404, and the REGISTER that follows 403."""
        self.config = config
        self.dc = config.devices
        if not self.dc.allow:
            return
        allowed = set(self.dc.allow)
        for dev in self.devices.values():
            if dev.registered and dev.device_id not in allowed and not dev.rec.provisioned:
                log.warning("device no longer in devices.allow: unregistered", device_id=dev.device_id)
                self._set_offline(dev, "unregistered")
                dev.rec.expires_at = 0.0
                dev.registered_until = 0.0
                self._persist(dev)
        self._update_gauges()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._register_bucket = TokenBucket(self.dc.register_rate, max(1.0, self.dc.register_rate), loop.time())
        if self.store is not None:
            devices, channels = await self.store.load()
            self._restore(devices, channels, loop.time())
        self._tasks.append(asyncio.create_task(self._watch(), name="devices.watch"))
        for i in range(self.dc.query_concurrency):
            self._tasks.append(asyncio.create_task(self._sync_worker(), name=f"devices.sync{i}"))
        self._update_gauges()
        metrics.DEVICE_SERIES.source = self.metric_families
        log.info("device registry started", devices=len(self.devices),
                 online=sum(1 for d in self.devices.values() if d.rec.online))

    async def stop(self) -> None:
        if metrics.DEVICE_SERIES.source == self.metric_families:
            metrics.DEVICE_SERIES.source = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for fut in self._waiters.values():
            fut.cancel()
        await self.subscriptions.cancel_all()

    def _restore(self, devices: list[DeviceRecord], channels: list[ChannelRecord], now: float) -> None:
        wall = self._wall()
        dead_after = self.dc.keepalive_interval * self.dc.keepalive_count
        for rec in devices:
            dev = Device(rec=rec)
            if rec.expires_at > wall:
                dev.registered_until = now + (rec.expires_at - wall)
                if rec.host and rec.port:
                    # A TCP connection did not survive the restart: reach the device at its address.
                    dev.peer = Peer(Transport(rec.transport), (rec.host, rec.port))
            else:
                rec.expires_at = 0.0
            alive_left = rec.last_keepalive + dead_after - wall
            if rec.online and rec.expires_at > 0 and alive_left > 0:
                dev.alive_until = now + alive_left
            else:
                rec.online = False
            self.devices[rec.device_id] = dev
            if rec.online:
                self.restored_online.append(rec.device_id)
        for ch in channels:
            dev_or_none = self.devices.get(ch.device_id)
            if dev_or_none is not None:
                dev_or_none.channels[ch.channel_id] = ch

    # ------------------------------------------------------------------------------------------ REGISTER
    def _on_register(self, server: SipServer, ev: RequestReceived) -> None:
        req = ev.request
        now = asyncio.get_running_loop().time()
        device_id = req.from_.uri.user or ""
        if not _ID_RE.fullmatch(device_id):
            raise MalformedMessage(f"bad device ID in From: {device_id[:40]!r}")
        source = ev.peer.addr[0]
        known = self.devices.get(device_id)
        if known is not None and not known.rec.enabled:
            self._count_register("disabled")
            log.warning("register refused: device disabled", device_id=device_id, source=source)
            raise Forbidden("Device Disabled")
        if self.dc.allow and device_id not in self.dc.allow and not (known is not None and known.rec.provisioned):
            self._count_register("denied")
            log.warning("register refused: not in devices.allow", device_id=device_id, source=source)
            raise Forbidden("Device Not Allowed")
        if self._blocked(source, now):
            self._count_register("blocked")
            raise Forbidden("Too Many Authentication Failures")
        auth = req.headers.get("Authorization")
        if auth is None:
            assert self._register_bucket is not None
            if not self._register_bucket.take(now):
                self._count_register("overload")
                retry = str(random.randint(1, max(2, self.config.sip.retry_after * 2)))
                server.respond(build_response(req, 503, headers=[("Retry-After", retry)]))
                return
            self._challenge(server, req, now, stale=False)
            self._count_register("challenged")
            return
        creds = Credentials.parse(auth)
        if creds.username != device_id:
            self._fail(source, now)
            self._count_register("bad_credentials")
            log.warning("register refused: digest username is not the device ID", device_id=device_id,
                        username=creds.username, source=source)
            raise Forbidden("Username Does Not Match Device")
        password = self.password_for(device_id)
        result = verify(creds, password, "REGISTER", now, self._nonces, self.config.sip.domain)
        if result is AuthResult.STALE_NONCE:
            self._challenge(server, req, now, stale=True)
            self._count_register("challenged")
            return
        if result in (AuthResult.BAD_NONCE, AuthResult.WRONG_REALM):
            self._challenge(server, req, now, stale=False)
            self._count_register("challenged")
            return
        if result is not AuthResult.OK:
            self._fail(source, now)
            self._count_register("bad_password")
            log.warning("register refused: wrong password", device_id=device_id, source=source,
                        result=result.name)
            raise Forbidden("Wrong Password")
        self._accept(server, ev, device_id, now)

    def _challenge(self, server: SipServer, req: SipRequest, now: float, *, stale: bool) -> None:
        challenge = Challenge(realm=self.config.sip.domain, nonce=self._nonces.issue(now),
                              algorithm=DigestAlgorithm.MD5, qop=("auth",), stale=stale)
        server.respond(build_response(req, 401, to_tag=server.endpoint.new_tag(),
                                      headers=[("WWW-Authenticate", str(challenge))]))

    def _blocked(self, source: str, now: float) -> bool:
        times = self._failures.get(source)
        if not times:
            return False
        cutoff = now - self.dc.auth_failure_window
        while times and times[0] < cutoff:
            times.pop(0)
        if not times:
            del self._failures[source]
            return False
        return len(times) >= self.dc.auth_failure_limit

    def _fail(self, source: str, now: float) -> None:
        times = self._failures.setdefault(source, [])
        times.append(now)
        del times[: -self.dc.auth_failure_limit]  # bounded: only the last `limit` failures matter
        if len(self._failures) > 100_000:  # bounded even under a spray from many sources
            self._failures.pop(next(iter(self._failures)))

    def _accept(self, server: SipServer, ev: RequestReceived, device_id: str, now: float) -> None:
        req = ev.request
        contacts = req.contacts
        contact = contacts[0] if contacts else None
        expires = req.expires
        if expires is None and contact is not None:
            value = contact.param("expires")
            expires = int(value) if value and value.isascii() and value.isdigit() else None
        if expires is None:
            expires = 3600
        wall = self._wall()
        dev = self.devices.get(device_id)
        if expires == 0:
            if dev is not None:
                self._set_offline(dev, "unregistered")
                self.subscriptions.forget(dev)
                dev.rec.expires_at = 0.0
                dev.registered_until = 0.0
                self._persist(dev)
            self._count_register("unregistered")
            server.respond(build_response(req, 200, to_tag=server.endpoint.new_tag(),
                                          headers=[("Expires", "0"), ("Date", format_date(wall))]))
            log.info("device unregistered", device_id=device_id)
            return
        expires = max(self.dc.register_expires_min, min(self.dc.register_expires_max, expires))
        new = dev is None or not dev.registered or not dev.rec.online
        if dev is None:
            dev = Device(rec=DeviceRecord(device_id=device_id))
            self.devices[device_id] = dev
        rec = dev.rec
        self._route(dev, ev.peer, req)
        rec.contact = str(contact.uri) if contact is not None else ""
        rec.registered_at = wall
        rec.expires_at = wall + expires
        rec.last_keepalive = wall
        dev.registered_until = now + expires
        self._set_online(dev, now)
        self._persist(dev)
        headers = [("Expires", str(expires)), ("Date", format_date(wall))]
        if contact is not None:
            headers.insert(0, ("Contact", f"{contact.with_param('expires', str(expires))}"))
        server.respond(build_response(req, 200, to_tag=server.endpoint.new_tag(), headers=headers))
        self._count_register("ok")
        log.info("device registered", device_id=device_id, transport=ev.peer.transport.value,
                 source=f"{ev.peer.addr[0]}:{ev.peer.addr[1]}", expires=expires, new=new)
        if new or not dev.channels:
            self.request_sync(device_id)
        elif not dev.syncing:
            self.subscriptions.subscribe(dev)  # a re-registration: the device may have forgotten them

    def _route(self, dev: Device, peer: Peer, req: SipRequest) -> None:
        """Reach the device where it was last heard from (RFC 3581: NAT mappings move)."""
        if peer.transport is Transport.UDP:
            via = req.top_via
            addr = via.response_address()
            dev.peer = Peer(Transport.UDP, addr)
        else:
            dev.peer = peer
        dev.rec.transport = dev.peer.transport.value
        dev.rec.host, dev.rec.port = dev.peer.addr

    # ------------------------------------------------------------------------------------------ MESSAGE
    def registered_sender(self, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> Device:
        """The registered device that sent ``ev`` (From user, else the body's DeviceID); ``NotFound`` (404) if none."""
        sender = ev.request.from_.uri.user or doc.device_id
        dev = self.devices.get(sender)
        if dev is None or not dev.registered:
            if doc.cmd_type == "Keepalive":
                metrics.KEEPALIVES.labels("unregistered").inc()
            log.info("message from unregistered device refused", device_id=sender, cmd_type=doc.cmd_type,
                     call_id=ev.request.call_id)
            raise NotFound("Device Not Registered")
        dev.rec.charset = doc.encoding
        return dev

    def _on_keepalive(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        dev = self.registered_sender(ev, doc)
        now = asyncio.get_running_loop().time()
        self._route(dev, ev.peer, ev.request)
        dev.rec.last_keepalive = self._wall()
        was_online = dev.rec.online
        self._set_online(dev, now)
        self._persist(dev)
        server.respond(build_response(ev.request, 200, to_tag=server.endpoint.new_tag()))
        metrics.KEEPALIVES.labels("ok").inc()
        if not was_online:
            log.info("device back online", device_id=dev.device_id)
            if not dev.channels:
                self.request_sync(dev.device_id)
            elif not dev.syncing:
                self.subscriptions.resume(dev)

    def _on_response(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        dev = self.registered_sender(ev, doc)
        server.respond(build_response(ev.request, 200, to_tag=server.endpoint.new_tag()))
        key = (dev.device_id, doc.sn)
        if doc.cmd_type.lower() == "catalog":
            entry = self._collectors.get(key)
            if entry is not None:
                collector, done = entry
                collector.add(doc)
                if collector.complete:
                    done.set()
            else:
                log.debug("catalog part without a query", device_id=dev.device_id, sn=doc.sn)
            return
        parts = self._parts.get(key)
        if parts is not None:
            if parts.full():
                log.warning("answer parts beyond the bound dropped", device_id=dev.device_id, sn=doc.sn,
                            cmd_type=doc.cmd_type, bound=MAX_PARTS)
            else:
                parts.put_nowait(doc)
            return
        fut = self._waiters.get(key)
        if fut is not None and not fut.done():
            fut.set_result(doc)

    # ------------------------------------------------------------------------------------------ state
    def _set_online(self, dev: Device, now: float) -> None:
        dev.alive_until = now + self.dc.keepalive_interval * self.dc.keepalive_count
        dev.rec.online = True

    def _set_offline(self, dev: Device, reason: str) -> None:
        if dev.rec.online:
            dev.rec.online = False
            metrics.DEVICE_OFFLINE.labels(reason).inc()
            log.warning("device offline", device_id=dev.device_id, reason=reason)

    def _persist(self, dev: Device) -> None:
        if self.store is not None:
            self.store.put_device(dev.rec)

    def _update_gauges(self) -> None:
        """Recompute the registry gauges (O(devices + channels): called once per watch period, not per event)."""
        registered = sum(1 for d in self.devices.values() if d.registered)
        online = sum(1 for d in self.devices.values() if d.rec.online)
        self.counts = (registered, online)
        metrics.DEVICES_REGISTERED.set(registered)
        metrics.DEVICES_ONLINE.set(online)
        metrics.DEVICES_ONLINE_RATIO.set(online / len(self.devices) if self.devices else 1.0)
        kinds = {"channel": 0, "business_group": 0, "virtual_org": 0}
        for d in self.devices.values():
            for ch in d.channels.values():
                kinds[ch.kind] = kinds.get(ch.kind, 0) + 1
        for kind, count in kinds.items():
            metrics.CHANNELS.labels(kind).set(count)

    async def _watch(self) -> None:
        """Mark devices offline when keepalives stop or registrations expire."""
        loop = asyncio.get_running_loop()
        period = max(0.05, min(5.0, self.dc.keepalive_interval / 4))
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for dev in self.devices.values():
                if dev.registered and dev.registered_until <= now:
                    self._set_offline(dev, "expired")
                    dev.rec.expires_at = 0.0
                    self._persist(dev)
                elif dev.rec.online and dev.alive_until <= now:
                    self._set_offline(dev, "keepalive_timeout")
                    self._persist(dev)
            self._update_gauges()

    def _count_register(self, result: str) -> None:
        metrics.REGISTRATIONS.labels(result).inc()

    # ------------------------------------------------------------------------------------------ queries
    def request_sync(self, device_id: str) -> None:
        """Queue a DeviceInfo + Catalog + DeviceStatus sync (once per device at a time)."""
        dev = self.devices.get(device_id)
        if dev is None or dev.syncing:
            return
        dev.syncing = True
        self._sync_queue.put_nowait(device_id)  # bounded by the number of devices (one entry each)

    async def _sync_worker(self) -> None:
        while True:
            device_id = await self._sync_queue.get()
            dev = self.devices.get(device_id)
            if dev is None:
                continue
            try:
                await self.sync(dev)
            except Exception:
                log.exception("device sync failed", device_id=device_id)
            finally:
                dev.syncing = False

    async def sync(self, dev: Device) -> None:
        try:
            info = await self.query(dev, "DeviceInfo")
            dev.rec.info = {k: v for k, v in info.tree.flat().items()
                            if k not in ("CmdType", "SN", "DeviceID")}
            if not (dev.rec.provisioned and dev.rec.name):  # an operator's name for it wins
                dev.rec.name = info.text("DeviceName") or dev.rec.name
            dev.rec.manufacturer = info.text("Manufacturer") or ""
            dev.rec.model = info.text("Model") or ""
            dev.rec.firmware = info.text("Firmware") or ""
            self._persist(dev)
        except QueryFailed as exc:
            log.warning("DeviceInfo query failed", device_id=dev.device_id, reason=exc.reason)
        catalog_failed = False
        try:
            await self.sync_catalog(dev)
        except QueryFailed as exc:
            log.warning("Catalog query failed", device_id=dev.device_id, reason=exc.reason)
            catalog_failed = True
        self.subscriptions.subscribe(dev, skip=frozenset({Event.CATALOG}) if catalog_failed else frozenset())
        try:
            status = await self.query(dev, "DeviceStatus")
            dev.rec.status = {k: v for k, v in status.tree.flat().items()
                              if k not in ("CmdType", "SN", "DeviceID")}
            self._persist(dev)
        except QueryFailed as exc:
            log.warning("DeviceStatus query failed", device_id=dev.device_id, reason=exc.reason)

    async def sync_catalog(self, dev: Device) -> CatalogCollector:
        loop = asyncio.get_running_loop()
        started = loop.time()
        sn = next(self._sn)
        collector = CatalogCollector(dev.device_id, sn)
        done = asyncio.Event()
        key = (dev.device_id, sn)
        self._collectors[key] = (collector, done)
        try:
            await self._send_query(dev, "Catalog", sn)
            try:
                await asyncio.wait_for(done.wait(), self.dc.catalog_timeout)
            except TimeoutError:
                pass
        finally:
            del self._collectors[key]
        wall = self._wall()
        channels = [
            ChannelRecord(device_id=dev.device_id, channel_id=item_id, kind=item_kind(item_id),
                          name=item.get("Name", ""), parent_id=item.get("ParentID", ""),
                          status=item.get("Status", ""), fields=item, updated_at=wall)
            for item_id, item in collector.items.items()
        ]
        if collector.parts == 0:
            raise QueryFailed("no catalog answer in time")
        dev.channels = {ch.channel_id: ch for ch in channels}
        dev.rec.catalog_sum = collector.sum_num or 0
        dev.rec.catalog_complete = collector.complete
        dev.rec.catalog_synced_at = wall
        if self.store is not None:
            self.store.put_channels(dev.device_id, channels)
        self._persist(dev)
        elapsed = loop.time() - started
        metrics.CATALOG_SYNC_SECONDS.observe(elapsed)
        log.info("catalog synced", device_id=dev.device_id, items=len(channels), sum_num=collector.sum_num,
                 complete=collector.complete, parts=collector.parts, duplicates=collector.duplicates,
                 seconds=round(elapsed, 3))
        return collector

    async def query(self, dev: Device, cmd_type: str) -> manscdp.ManscdpDocument:
        """Send a ``<Query>`` and wait for the device's separate ``<Response>`` with the same SN."""
        sn = next(self._sn)
        key = (dev.device_id, sn)
        fut: asyncio.Future[manscdp.ManscdpDocument] = asyncio.get_running_loop().create_future()
        self._waiters[key] = fut  # before sending: the answer may overtake our 200 OK's arrival
        try:
            await self._send_query(dev, cmd_type, sn)
            try:
                return await asyncio.wait_for(fut, self.dc.query_timeout)
            except TimeoutError:
                raise QueryFailed(f"no {cmd_type} answer within {self.dc.query_timeout:g} s") from None
        finally:
            self._waiters.pop(key, None)

    async def _send_query(self, dev: Device, cmd_type: str, sn: int) -> None:
        body = manscdp.encode("Query", cmd_type, sn, dev.device_id, encoding=dev.rec.charset or "GB2312")
        request = self.device_request(dev, "MESSAGE", body, MANSCDP)
        assert self._server is not None and dev.peer is not None
        try:
            response = await self._server.request(request, dev.peer)
        except SipTimeout:
            raise QueryFailed(f"{cmd_type} query: no SIP answer") from None
        if response.status >= 300:
            raise QueryFailed(f"{cmd_type} query refused: {response.status} {response.reason}",
                              response.status)

    def expect_response(self, device_id: str, sn: int) -> asyncio.Future[manscdp.ManscdpDocument]:
        """A future for the ``<Response>`` from ``device_id`` with ``sn`` (set it up before sending; drop it with
        ``forget_response``): how ``gateway.control`` waits for answers to commands."""
        fut: asyncio.Future[manscdp.ManscdpDocument] = asyncio.get_running_loop().create_future()
        self._waiters[(device_id, sn)] = fut
        return fut

    def forget_response(self, device_id: str, sn: int) -> None:
        self._waiters.pop((device_id, sn), None)

    def expect_parts(self, device_id: str, sn: int) -> asyncio.Queue[manscdp.ManscdpDocument]:
        """A queue receiving every ``<Response>`` from ``device_id`` with ``sn`` (answers split into parts, such as
        PresetQuery's; at most :data:`MAX_PARTS`, later ones dropped and logged). Set it up before sending; drop it
        with ``forget_parts``."""
        queue: asyncio.Queue[manscdp.ManscdpDocument] = asyncio.Queue(MAX_PARTS)
        self._parts[(device_id, sn)] = queue
        return queue

    def forget_parts(self, device_id: str, sn: int) -> None:
        self._parts.pop((device_id, sn), None)

    def next_sn(self) -> int:
        """A fresh MANSCDP SN for a query or command we send."""
        return next(self._sn)

    def via_toward(self, dev: Device) -> Via:
        """Our Via for a new request to ``dev`` (in or out of dialog): our address on the route toward it, our
        SIP port, ``rport`` and a fresh branch."""
        if self._server is None or dev.peer is None:
            raise QueryFailed("device has no route")
        local = local_ip_toward(dev.peer.addr[0], self.config.sip.listen)
        return Via(transport=dev.peer.transport.value, host=local, port=self._server.port,
                   params=(("rport", None), ("branch", self._server.endpoint.new_branch())))

    def device_request(self, dev: Device, method: str, body: bytes = b"",
                       content_type: str | None = None, headers: list[tuple[str, str]] | None = None) -> SipRequest:
        """An out-of-dialog request from us (the platform) to ``dev``."""
        via = self.via_toward(dev)
        assert self._server is not None and dev.peer is not None
        server = self._server
        sip = self.config.sip
        host, port = dev.peer.addr
        return build_request(
            method, SipUri(host=host if ":" not in host else f"[{host}]", port=port, user=dev.device_id),
            via=via,
            from_=NameAddr(SipUri(host=sip.domain, user=sip.platform_id), params=(("tag", server.endpoint.new_tag()),)),
            to=NameAddr(SipUri(host=sip.domain, user=dev.device_id)),
            call_id=server.endpoint.new_call_id(), cseq=1, body=body, content_type=content_type,
            headers=[*(headers or []), ("User-Agent", "gb28181-gateway")],
        )

    # ------------------------------------------------------------------------------------------ catalog events
    def on_catalog_notify(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        """A ``<Notify><CmdType>Catalog`` (NOTIFY or MESSAGE): validate every item (``400`` if any is bad), answer
        ``200``, then apply each item's ``<Event>`` to the registry and the store."""
        dev = self.registered_sender(ev, doc)  # 404 for unregistered senders
        items = doc.items("DeviceList")
        if not items:
            raise MalformedMessage("Catalog Notify without DeviceList items")
        for item in items:
            item_id = item.get("DeviceID", "")
            if not _ID_RE.fullmatch(item_id):
                raise MalformedMessage(f"Catalog Notify item with bad DeviceID {item_id[:40]!r}")
            event = item.get("Event", "").upper()
            if event not in _CATALOG_EVENTS:
                raise MalformedMessage(f"Catalog Notify item with unknown Event {event[:20]!r}")
        server.respond(build_response(ev.request, 200, to_tag=server.endpoint.new_tag()))
        wall = self._wall()
        for item in items:
            self._apply_catalog_event(dev, item, wall)
        self._persist(dev)

    def _apply_catalog_event(self, dev: Device, item: dict[str, str], wall: float) -> None:
        item_id = item["DeviceID"]
        event = item["Event"].upper()
        fields = {k: v for k, v in item.items() if k != "Event"}
        ch = dev.channels.get(item_id)
        if event == "DEL":
            if ch is None:
                log.info("catalog event for an unknown channel", device_id=dev.device_id, channel_id=item_id,
                         event=event)
                return
            del dev.channels[item_id]
            self.media_faults.discard((dev.device_id, item_id))
            if self.store is not None:
                self.store.delete_channel(dev.device_id, item_id)
            log.info("channel removed (catalog event)", device_id=dev.device_id, channel_id=item_id)
        elif event in ("ADD", "UPDATE") or ch is None:
            status = item.get("Status") or (event if event in ("ON", "OFF", "VLOST", "DEFECT") else "")
            merged = {**(ch.fields if ch is not None else {}), **fields}
            if status:
                merged["Status"] = status
            ch = ChannelRecord(device_id=dev.device_id, channel_id=item_id, kind=item_kind(item_id),
                               name=merged.get("Name", ""), parent_id=merged.get("ParentID", ""),
                               status=merged.get("Status", ""), fields=merged, updated_at=wall)
            created = item_id not in dev.channels
            dev.channels[item_id] = ch
            if self.store is not None:
                self.store.put_channel(ch)
            log.info("channel added (catalog event)" if created else "channel updated (catalog event)",
                     device_id=dev.device_id, channel_id=item_id, event=event, status=ch.status)
        else:
            old = ch.status
            ch.status = event
            ch.fields = {**ch.fields, "Status": event}
            ch.updated_at = wall
            if self.store is not None:
                self.store.put_channel(ch)
            log.info("channel status changed (catalog event)", device_id=dev.device_id, channel_id=item_id,
                     old=old, status=event)

    # ------------------------------------------------------------------------------------------ lookups
    def get(self, device_id: str) -> Device | None:
        return self.devices.get(device_id)

    def password_for(self, device_id: str) -> str:
        """The digest password of ``device_id``: its own (REST API), else ``devices.passwords``, else ``sip``'s."""
        dev = self.devices.get(device_id)
        if dev is not None and dev.rec.password:
            return dev.rec.password
        return self.dc.password_for(device_id, self.config.sip.password)

    # ------------------------------------------------------------------------------------------ operators
    def provision(self, device_id: str, *, password: str | None = None, enabled: bool | None = None,
                  name: str | None = None) -> tuple[Device, bool]:
        """Add or change a device as an operator (REST API): it passes ``devices.allow``; ``password`` ('' to
        fall back to the configured one), ``enabled`` (False refuses its REGISTERs and drops its registration).
        Returns the device and whether it was created."""
        if not _ID_RE.fullmatch(device_id):
            raise ValueError(f"device ID must be 20 digits, not {device_id[:40]!r}")
        dev = self.devices.get(device_id)
        created = dev is None
        if dev is None:
            dev = self.devices[device_id] = Device(rec=DeviceRecord(device_id=device_id))
        rec = dev.rec
        rec.provisioned = True
        if password is not None:
            rec.password = password
        if name is not None:
            rec.name = name
        if enabled is not None:
            rec.enabled = enabled
            if not enabled and dev.registered:
                self._set_offline(dev, "unregistered")
                rec.expires_at = 0.0
                dev.registered_until = 0.0
        self._persist(dev)
        self._update_gauges()
        log.info("device provisioned", device_id=device_id, created=created, enabled=rec.enabled,
                 own_password=bool(rec.password))
        return dev, created

    def remove(self, device_id: str) -> bool:
        """Forget a device and its channels (memory and store). A device still running re-registers as new."""
        dev = self.devices.pop(device_id, None)
        if dev is None:
            return False
        self.media_faults = {k for k in self.media_faults if k[0] != device_id}
        self.subscriptions.forget(dev, positions=True)
        if self.store is not None:
            self.store.delete_device(device_id)
        self._update_gauges()
        log.info("device removed", device_id=device_id)
        return True

    def note_stream_result(self, device_id: str, channel_id: str, fault: str | None) -> None:
        """A stream start of the channel succeeded (``fault`` None) or ended in no media / undecodable payload
        (the channel then counts against the intact rate until a stream of it succeeds)."""
        key = (device_id, channel_id)
        if fault is None:
            self.media_faults.discard(key)
        elif device_id in self.devices:
            self.media_faults.add(key)

    # ------------------------------------------------------------------------------------------ health
    def channel_health(self) -> tuple[int, int, int]:
        """(channels, online, intact) over catalog items of kind ``channel``: online = its device online and
        its status not OFF; intact = online, not VLOST/DEFECT and no media fault on its last stream start."""
        total = online = intact = 0
        faults = self.media_faults
        for dev in self.devices.values():
            dev_online = dev.rec.online
            for ch in dev.channels.values():
                if ch.kind != "channel":
                    continue
                total += 1
                status = ch.status.upper()
                if not dev_online or status == "OFF":
                    continue
                online += 1
                if status not in ("VLOST", "DEFECT") and (dev.device_id, ch.channel_id) not in faults:
                    intact += 1
        return total, online, intact

    def metric_families(self) -> Iterator[Metric]:
        """Series computed at scrape time (``gateway.metrics.DEVICE_SERIES``): per registered device its online
        state and keepalive age, and the channel online and intact rates."""
        wall = self._wall()
        up = GaugeMetricFamily("gb28181_device_up", "1 if the registered device is online, else 0",
                               labels=["device_id"])
        age = GaugeMetricFamily("gb28181_device_keepalive_age_seconds",
                                "Seconds since the registered device's last keepalive (or REGISTER)",
                                labels=["device_id"])
        for dev in self.devices.values():
            if dev.registered:
                up.add_metric([dev.device_id], 1.0 if dev.rec.online else 0.0)
                age.add_metric([dev.device_id], max(0.0, wall - dev.rec.last_keepalive))
        total, online, intact = self.channel_health()
        yield up
        yield age
        yield GaugeMetricFamily("gb28181_channels_online", "Channels online (device online, status not OFF)",
                                value=online)
        yield GaugeMetricFamily("gb28181_channels_online_ratio", "Online channels / channels (1 with none)",
                                value=online / total if total else 1.0)
        yield GaugeMetricFamily("gb28181_channels_intact_ratio",
                                "Intact channels (online, not VLOST/DEFECT, last stream start had media)"
                                " / channels (1 with none)", value=intact / total if total else 1.0)
        yield from self.subscriptions.metric_families()


__all__ = ["Device", "DeviceRegistry", "QueryFailed", "RemoteProtocolError", "format_date"]
