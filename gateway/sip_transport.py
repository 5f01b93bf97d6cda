"""The SIP listener: one port on UDP and TCP, a thin asyncio adapter over ``sip.endpoint.SipEndpoint``.

Receive path: UDP datagrams enter a bounded ingress queue (each source address may hold only a share of it, so
a flood from one source cannot starve the others); TCP bytes are framed by Content-Length. Either way the
raw message goes to the sans-I/O endpoint, whose events reach the application's handler. After every step
the adapter transmits what the endpoint wants sent (UDP to the address the request came from, honouring
rport; TCP over the connection it came on) and re-arms one loop timer for the endpoint's earliest deadline
(aioquic's ``transmit()`` pattern). Overflow of any queue or connection limit is dropped and counted in
``gateway.metrics``, never buffered without bound.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import structlog

from sip.endpoint import (
    EndpointConfig,
    MalformedReceived,
    Overloaded,
    Peer,
    RequestReceived,
    ResponseReceived,
    SipEndpoint,
    SipEvent,
    StrayResponse,
    TransactionTimedOut,
    Transport,
)
from sip.errors import LocalProtocolError, MalformedMessage, MessageTooLarge, RemoteProtocolError
from sip.message import SipRequest, SipResponse, StreamParser, build_response

from . import metrics
from .config import SipConfig
from .netutil import grow_receive_buffer

log = structlog.get_logger("gateway.sip")

UDP_BATCH = 64
TCP_MAX_WRITE_BUFFER = 1 << 20


class SipTimeout(Exception):
    """A request we sent got no final response before Timer B/F."""


@dataclass(slots=True)
class _Conn:
    transport: asyncio.Transport
    framer: StreamParser
    peer: Peer
    last_activity: float


Handler = Callable[["SipServer", SipEvent], None]


class SipServer:
    """Listens on ``config.listen:config.port`` over UDP and TCP and feeds one ``SipEndpoint``."""

    def __init__(self, config: SipConfig, handler: Handler) -> None:
        self.config = config
        self._handler = handler
        self.endpoint = SipEndpoint(
            EndpointConfig(
                t1=config.t1, t2=config.t2, t4=config.t4, max_message_size=config.max_message_size,
                max_transactions=config.max_transactions, retry_after=config.retry_after,
            ),
            token=lambda: secrets.token_hex(8),
        )
        self._loop = asyncio.get_running_loop()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._queue: deque[tuple[bytes, tuple[str, int]]] = deque()
        self._queued_by_source: dict[str, int] = {}
        self._source_share = max(16, config.udp_queue_size // 8)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._drain_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._conns: dict[int, _Conn] = {}
        self._conn_ids = itertools.count(1)
        self._pending: dict[object, asyncio.Future[SipResponse]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self.port = 0

    # ---------------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Bind UDP and TCP on the same port (an ephemeral one when ``port`` is 0)."""
        attempts = 20 if self.config.port == 0 else 1
        for attempt in range(attempts):
            udp, _ = await self._loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.config.listen, self.config.port)
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await self._loop.create_server(
                    lambda: _TcpProtocol(self), self.config.listen, port, reuse_address=True
                )
            except OSError:
                udp.close()
                if attempt == attempts - 1:
                    raise
                continue
            self._udp = udp
            self.port = port
            grow_receive_buffer(udp, 4 << 20)
            break
        self._sweeper = asyncio.create_task(self._sweep_idle())
        log.info("sip listening", host=self.config.listen, port=self.port, transports=["udp", "tcp"])

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._timer is not None:
            self._timer.cancel()
        if self._tcp is not None:
            self._tcp.close()
        for conn in list(self._conns.values()):
            conn.transport.close()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            await self._tcp.wait_closed()
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        log.info("sip stopped")

    # ---------------------------------------------------------------------------------------------- sending
    def respond(self, response: SipResponse) -> None:
        """Send a response through its server transaction."""
        self.endpoint.send_response(response, self._loop.time())
        metrics.SIP_RESPONSES.labels("out", metrics.method_label(response.cseq.method),
                                     str(response.status)).inc()
        self._transmit()

    def send(self, request: SipRequest, peer: Peer) -> object:
        """Start a client transaction; the response arrives as an event. Returns the transaction key."""
        key = self.endpoint.send_request(request, peer, self._loop.time())
        metrics.SIP_REQUESTS.labels("out", metrics.method_label(request.method)).inc()
        self._transmit()
        return key

    async def request(self, request: SipRequest, peer: Peer) -> SipResponse:
        """Send ``request`` and wait for its final response; raises ``SipTimeout`` on Timer B/F."""
        key, fut = self.start_request(request, peer)
        try:
            return await fut
        finally:
            self._pending.pop(key, None)

    def start_request(self, request: SipRequest, peer: Peer) -> tuple[object, asyncio.Future[SipResponse]]:
        """Send ``request``; return its transaction key (for ``cancel``) and a future of the final response.

        The future is forgotten once resolved; a caller that abandons it should call ``forget(key)``.
        """
        fut: asyncio.Future[SipResponse] = self._loop.create_future()
        key = self.send(request, peer)
        self._pending[key] = fut
        fut.add_done_callback(lambda _f: self._pending.pop(key, None))
        return key, fut

    def cancel(self, key: object) -> None:
        """CANCEL a pending INVITE (RFC 3261 §9.1); its future then gets the 487 (or a 2xx if it raced)."""
        self.endpoint.cancel(key, self._loop.time())  # type: ignore[arg-type]
        self._transmit()

    def send_stateless(self, message: SipRequest | SipResponse, peer: Peer) -> None:
        """Send once, outside any transaction (the ACK for a 2xx)."""
        self.endpoint.send_stateless(message, peer)
        self._transmit()

    # ---------------------------------------------------------------------------------------------- receiving
    def _datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        queue = self._queue
        if len(queue) >= self.config.udp_queue_size:
            metrics.SIP_DROPPED.labels(metrics.SipDrop.QUEUE_FULL.value).inc()
            return
        host = addr[0]
        rate = self.config.source_rate_limit
        if rate:
            # Token bucket per source IP, refilled at `rate`/s up to 2×rate: drops cost no parsing.
            now = self._loop.time()
            tokens, last = self._buckets.get(host, (2.0 * rate, now))
            tokens = min(2.0 * rate, tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[host] = (tokens, now)
                metrics.SIP_DROPPED.labels(metrics.SipDrop.RATE_LIMITED.value).inc()
                return
            self._buckets[host] = (tokens - 1.0, now)
        held = self._queued_by_source.get(host, 0)
        if held >= self._source_share:
            metrics.SIP_DROPPED.labels(metrics.SipDrop.FLOOD.value).inc()
            return
        self._queued_by_source[host] = held + 1
        queue.append((data, addr))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Process a batch of queued datagrams, then yield to the loop if more are waiting."""
        self._drain_scheduled = False
        queue = self._queue
        held = self._queued_by_source
        now = self._loop.time()
        for _ in range(min(UDP_BATCH, len(queue))):
            data, addr = queue.popleft()
            host = addr[0]
            left = held[host] - 1
            if left:
                held[host] = left
            else:
                del held[host]
            self.endpoint.receive_datagram(data, Peer(Transport.UDP, addr), now)
        metrics.SIP_UDP_QUEUE.set(len(queue))
        self._process_events()
        self._transmit()
        if queue and not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _tcp_data(self, conn_id: int, data: bytes) -> None:
        conn = self._conns.get(conn_id)
        if conn is None:
            return
        now = self._loop.time()
        conn.last_activity = now
        try:
            frames = conn.framer.feed_frames(data)
        except MessageTooLarge as exc:
            metrics.SIP_DROPPED.labels(metrics.SipDrop.TOO_LARGE.value).inc()
            log.warning("sip tcp message too large", peer=conn.peer.addr, reason=exc.reason)
            conn.transport.close()
            return
        except MalformedMessage as exc:
            metrics.SIP_DROPPED.labels(metrics.SipDrop.MALFORMED.value).inc()
            log.warning("sip tcp stream malformed", peer=conn.peer.addr, reason=exc.reason)
            conn.transport.close()
            return
        if conn.framer.pings:
            conn.framer.pings = 0
            conn.transport.write(b"\r\n")  # RFC 5626 §4.4.1 pong
        for frame in frames:
            self.endpoint.receive_datagram(frame, conn.peer, now)
        self._process_events()
        self._transmit()

    def _process_events(self) -> None:
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, RequestReceived):
                metrics.SIP_REQUESTS.labels("in", metrics.method_label(event.request.method)).inc()
            elif isinstance(event, ResponseReceived):
                metrics.SIP_RESPONSES.labels("in", metrics.method_label(event.response.cseq.method),
                                             str(event.response.status)).inc()
                fut = self._pending.get(event.key) if event.key is not None else None
                if fut is not None and event.response.status >= 200 and not fut.done():
                    fut.set_result(event.response)
            elif isinstance(event, TransactionTimedOut):
                metrics.SIP_TRANSACTION_TIMEOUTS.labels(metrics.method_label(event.request.method)).inc()
                fut = self._pending.get(event.key)
                if fut is not None and not fut.done():
                    fut.set_exception(SipTimeout(f"{event.request.method} timed out"))
            elif isinstance(event, MalformedReceived):
                metrics.SIP_DROPPED.labels(metrics.SipDrop.MALFORMED.value).inc()
                log.info("sip malformed message", peer=event.peer.addr, reason=event.reason,
                         answered=event.answered)
            elif isinstance(event, Overloaded):
                metrics.SIP_DROPPED.labels(metrics.SipDrop.OVERLOAD.value).inc()
            elif isinstance(event, StrayResponse):
                metrics.SIP_DROPPED.labels(metrics.SipDrop.STRAY_RESPONSE.value).inc()
            try:
                self._handler(self, event)
            except Exception as exc:
                if not isinstance(exc, RemoteProtocolError):
                    log.exception("sip handler failed", event_type=type(event).__name__)
                if isinstance(event, RequestReceived) and event.key is not None:
                    # Every server transaction needs a final response, or it lives (and counts) forever.
                    status = exc.status if isinstance(exc, RemoteProtocolError) else 500
                    try:
                        self.respond(build_response(event.request, status))
                    except LocalProtocolError:
                        pass  # the handler had already answered
        metrics.SIP_TRANSACTIONS.set(self.endpoint.transaction_count)

    # ---------------------------------------------------------------------------------------------- output
    def _transmit(self) -> None:
        now = self._loop.time()
        for data, peer in self.endpoint.datagrams_to_send(now):
            if peer.transport is Transport.UDP:
                if self._udp is not None:
                    self._udp.sendto(data, peer.addr)
            else:
                self._send_tcp(data, peer)
        deadline = self.endpoint.get_timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = deadline
            if deadline is not None:
                self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.endpoint.handle_timer(self._loop.time())
        self._process_events()
        self._transmit()

    def _send_tcp(self, data: bytes, peer: Peer) -> None:
        conn = self._conns.get(peer.conn_id) if peer.conn_id is not None else None
        if conn is None:
            conn = next((c for c in self._conns.values() if c.peer.addr == peer.addr), None)
        if conn is None:
            self._connect_and_send(data, peer.addr)
            return
        conn.transport.write(data)
        if conn.transport.get_write_buffer_size() > TCP_MAX_WRITE_BUFFER:
            metrics.SIP_DROPPED.labels(metrics.SipDrop.TCP_SLOW.value).inc()
            log.warning("sip tcp peer not reading, closing", peer=conn.peer.addr)
            conn.transport.abort()

    def _connect_and_send(self, data: bytes, addr: tuple[str, int]) -> None:
        """Open a connection toward a peer with none (requests we originate over TCP)."""

        async def connect() -> None:
            try:
                transport, _ = await self._loop.create_connection(lambda: _TcpProtocol(self), *addr)
            except OSError as exc:
                metrics.SIP_DROPPED.labels(metrics.SipDrop.SEND_FAILED.value).inc()
                log.warning("sip tcp connect failed", peer=addr, error=str(exc))
                return
            transport.write(data)

        task = asyncio.ensure_future(connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------------------------------------- tcp
    def _tcp_opened(self, transport: asyncio.Transport) -> int | None:
        if len(self._conns) >= self.config.tcp_max_connections:
            metrics.SIP_DROPPED.labels(metrics.SipDrop.TCP_LIMIT.value).inc()
            transport.abort()
            return None
        conn_id = next(self._conn_ids)
        addr = transport.get_extra_info("peername")[:2]
        self._conns[conn_id] = _Conn(
            transport=transport, framer=StreamParser(self.config.max_message_size),
            peer=Peer(Transport.TCP, (addr[0], addr[1]), conn_id), last_activity=self._loop.time(),
        )
        metrics.SIP_TCP_CONNECTIONS.set(len(self._conns))
        return conn_id

    def _tcp_closed(self, conn_id: int) -> None:
        self._conns.pop(conn_id, None)
        metrics.SIP_TCP_CONNECTIONS.set(len(self._conns))

    async def _sweep_idle(self) -> None:
        idle = self.config.tcp_idle_timeout
        while True:
            await asyncio.sleep(min(max(idle / 4, 0.05), 5.0))
            now = self._loop.time()
            rate = self.config.source_rate_limit
            if rate:  # a bucket refilled to the brim is the same as no bucket: forget it (bounded memory)
                full = [h for h, (t, last) in self._buckets.items() if t + (now - last) * rate >= 2.0 * rate]
                for host in full:
                    del self._buckets[host]
            cutoff = now - idle
            for conn in [c for c in self._conns.values() if c.last_activity < cutoff]:
                metrics.SIP_DROPPED.labels(metrics.SipDrop.TCP_IDLE.value).inc()
                conn.transport.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: SipServer) -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._server._datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("sip udp error", error=str(exc))


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, server: SipServer) -> None:
        self._server = server
        self._conn_id: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, but has the same interface.
        self._conn_id = self._server._tcp_opened(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        if self._conn_id is not None:
            self._server._tcp_data(self._conn_id, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn_id is not None:
            self._server._tcp_closed(self._conn_id)
