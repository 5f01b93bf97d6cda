"""``SipEndpoint``: the sans-I/O SIP transaction layer (aioquic's connection API shape, STYLE.md §2).

Theory of operation
-------------------
The endpoint owns every live transaction (``sip.transaction``) and sits between the adapter, which moves
bytes, and the transaction user (TU: registrar, device manager, stream sessions), which makes decisions:

    adapter ── receive_datagram / receive_message ──► SipEndpoint ── next_event() ──► TU
    adapter ◄── datagrams_to_send / get_timer ─────── SipEndpoint ◄── send_request / send_response ── TU

Nothing here does I/O or reads a clock: every call takes ``now`` (monotonic seconds); Call-IDs, tags and
branches come from the injected ``token()`` factory. After any call the adapter drains ``next_event()`` and
``datagrams_to_send(now)``, then re-arms one timer at ``get_timer()`` and calls ``handle_timer(now)`` when
it fires (aioquic's ``transmit()`` pattern).

Receiving a request, in this order:

1. Stamp the top Via with ``received``/``rport`` from the source address (RFC 3581, RFC 3261 §18.2.1).
   Responses then go to ``Via.response_address()`` on UDP, or back over the same ``Peer`` on TCP.
2. Match a server transaction (RFC 3261 §17.2.3: branch + sent-by + method, ACK finding its INVITE; without
   the ``z9hG4bK`` cookie, RFC 2543 matching on Call-ID, From tag, CSeq number and sent-by). A match is a
   retransmission: the transaction absorbs it (re-sending its last response where the RFC says so) and the
   TU never sees it again.
3. An ACK that matches no INVITE by branch is a 2xx ACK: the endpoint finds the INVITE server transaction in
   Accepted by (Call-ID, From tag, CSeq number) to stop its 2xx retransmissions, and always surfaces the ACK
   as ``RequestReceived(key=None)`` for the dialog. A non-2xx ACK is absorbed and never surfaces.
4. CANCEL is answered here (RFC 3261 §9.2): 200 when the INVITE server transaction exists (plus
   ``RequestCancelled`` if it has not sent a final response yet: the TU must then send 487), else 481.
5. Overload: with ``max_transactions`` alive, a new request (not ACK, not CANCEL, not a retransmission) is
   answered 503 with Retry-After statelessly and surfaces as ``Overloaded``.
6. Otherwise a server transaction is created and the TU gets ``RequestReceived(request, peer, key)``. An
   INVITE is answered 100 Trying at once.

A datagram that does not parse is answered ``400 <parser message>`` (513 when too large) if the request line
and Via, From, To, Call-ID and CSeq can still be recovered, else dropped; either way ``MalformedReceived``
says which. Responses match client transactions by top Via branch + CSeq method (§17.1.3); an unmatched 2xx
to INVITE surfaces as ``ResponseReceived(key=None)`` (the dialog re-sends its ACK), any other unmatched
response as ``StrayResponse``.

Timers: each transaction keeps its own deadlines; the endpoint keeps a heap of ``(deadline, seq, key)`` with
lazy deletion (an entry is live only if its transaction still exists and is scheduled at that deadline),
so ``get_timer()`` is O(1) amortised with 10,000 transactions alive. Terminated transactions are removed at
once; nothing else outlives them except stale heap entries, which are popped by their deadline at the latest
and compacted when they outnumber live transactions.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Generic, TypeVar

from .errors import LocalProtocolError, MalformedMessage, MessageTooLarge, RemoteProtocolError
from .message import (
    Addr,
    CSeq,
    Headers,
    NameAddr,
    SipMessage,
    SipRequest,
    SipResponse,
    Via,
    build_response,
    canonical_name,
    header_key,
    parse_message,
    reason_phrase,
    split_list,
)
from .transaction import (
    MAGIC_COOKIE,
    AnyClientTransaction,
    AnyServerTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    PassUp,
    StartCancel,
    State,
    TimedOut,
    Timer,
    TimerConfig,
    Transaction,
    TransactionKey,
)

__all__ = [
    "EndpointConfig",
    "MalformedReceived",
    "Overloaded",
    "Peer",
    "RequestCancelled",
    "RequestReceived",
    "ResponseReceived",
    "SipEndpoint",
    "SipEvent",
    "State",
    "StrayResponse",
    "Timer",
    "TransactionKey",
    "TransactionTimedOut",
    "Transport",
    "client_key",
    "server_key",
]


class Transport(Enum):
    UDP = "UDP"
    TCP = "TCP"

    @property
    def reliable(self) -> bool:
        return self is not Transport.UDP


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from or goes to."""

    transport: Transport
    addr: Addr
    conn_id: int | None = None
    """The adapter's identity of a TCP connection (responses go back over the same one)."""


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    t1: float = 0.5
    """RFC 3261 T1 (RTT estimate), seconds."""
    t2: float = 4.0
    """RFC 3261 T2 (retransmission interval cap), seconds."""
    t4: float = 5.0
    """RFC 3261 T4 (maximum message lifetime), seconds."""
    max_message_size: int = 65536
    """Largest datagram parsed; beyond it a request is answered 513."""
    max_transactions: int = 10000
    """Live transactions beyond which new requests are answered 503."""
    retry_after: int = 5
    """Retry-After of the overload 503, seconds."""
    user_agent: str = "gb28181-gateway"
    """Server header of the responses the endpoint itself generates."""
    timer_c: float | None = 180.0
    """INVITE client guard: CANCEL an INVITE with no final response after this long (None: never)."""
    force_rport: bool = False
    """Answer UDP requests at their source port even without ``rport`` (behind NAT); RFC 3261 says no."""

    def __post_init__(self) -> None:
        if self.max_message_size < 256 or self.max_transactions < 1 or self.retry_after < 0:
            raise ValueError(f"bad endpoint limits: {self}")
        TimerConfig(t1=self.t1, t2=self.t2, t4=self.t4, timer_c=self.timer_c)  # validates

    @property
    def timers(self) -> TimerConfig:
        return TimerConfig(t1=self.t1, t2=self.t2, t4=self.t4, timer_c=self.timer_c)


# --------------------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU. ``key`` is its server transaction; ``None`` for an ACK (of a 2xx)."""

    request: SipRequest
    peer: Peer
    key: TransactionKey | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response to one of our requests (provisional or final). ``key`` is ``None`` for a 2xx to INVITE
    whose transaction is gone (a retransmission: re-send the ACK)."""

    response: SipResponse
    key: TransactionKey | None
    peer: Peer | None = None


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B or F (no final response), H (no ACK for our non-2xx) or L (no ACK for our 2xx: send BYE)."""

    key: TransactionKey
    request: SipRequest
    timer: Timer


@dataclass(frozen=True, slots=True)
class RequestCancelled:
    """The peer CANCELled this INVITE (already answered 200 by the endpoint): send 487 for it."""

    invite_key: TransactionKey
    invite: SipRequest


@dataclass(frozen=True, slots=True)
class MalformedReceived:
    """A message that could not be used; ``answered`` if a 400/513 went back."""

    peer: Peer
    reason: str
    answered: bool


@dataclass(frozen=True, slots=True)
class Overloaded:
    """A new request was refused with 503 because ``max_transactions`` are alive."""

    peer: Peer
    method: str


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response that matched no client transaction (and is not a 2xx to INVITE): dropped."""

    response: SipResponse
    peer: Peer


SipEvent = (
    RequestReceived
    | ResponseReceived
    | TransactionTimedOut
    | RequestCancelled
    | MalformedReceived
    | Overloaded
    | StrayResponse
)

# --------------------------------------------------------------------------------------------------------

_T = TypeVar("_T", bound=Transaction)
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_MANDATORY = ("via", "from", "to", "call-id", "cseq")


class _Entry(Generic[_T]):
    """A transaction, where its messages go, and the deadline the heap holds for it."""

    __slots__ = ("txn", "peer", "scheduled")

    def __init__(self, txn: _T, peer: Peer) -> None:
        self.txn = txn
        self.peer = peer
        self.scheduled: float | None = None


def _sent_by(via: Via) -> str:
    port = via.port or (5061 if via.transport == "TLS" else 5060)
    return f"{via.host.lower()}:{port}"


def server_key(msg: SipMessage, via: Via | None = None) -> TransactionKey:
    """The server transaction a request (or a response the TU sends) belongs to (RFC 3261 §17.2.3).

    ``via``: the message's top Via, if the caller has parsed it already.
    """
    via = via or msg.top_via
    cseq = msg.cseq
    method = "INVITE" if cseq.method == "ACK" else cseq.method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return TransactionKey(server=True, method=method, branch=branch, sent_by=_sent_by(via))
    # RFC 2543 (§17.2.3 last paragraphs): Call-ID, From tag, CSeq number and top Via.
    legacy = (msg.call_id, msg.from_.tag or "", str(cseq.number))
    return TransactionKey(server=True, method=method, branch=branch, sent_by=_sent_by(via), legacy=legacy)


def client_key(msg: SipMessage) -> TransactionKey:
    """The client transaction a response (or a request we send) belongs to (RFC 3261 §17.1.3)."""
    return TransactionKey(server=False, method=msg.cseq.method, branch=msg.top_via.branch or "")


def _one_line(text: str, limit: int = 100) -> str:
    """A reason phrase from a parser message: printable ASCII, one line, capitalised, bounded."""
    clean = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    clean = " ".join(clean.split())[:limit]
    return clean[:1].upper() + clean[1:] if clean else "Bad Request"


def _sanitise(value: str) -> str:
    return "".join(" " if ord(ch) < 32 and ch != "\t" else ch for ch in value).strip()


@dataclass(frozen=True, slots=True)
class _Recovered:
    """What a broken request still offers for a stateless error response."""

    method: str
    headers: Headers  # Via, From, To, Call-ID, CSeq as received (sanitised)
    top_via: Via


def _recover_request(data: bytes, limit: int) -> _Recovered | None:
    """Salvage the request line and the headers a response needs (RFC 3261 §8.2.6) from a broken datagram."""
    text = data[:limit].decode("utf-8", "surrogateescape").lstrip("\r\n")
    cut = [i for i in (text.find("\r\n\r\n"), text.find("\n\n")) if i >= 0]
    head = text[: min(cut)] if cut else text
    lines = [line.rstrip("\r") for line in head.split("\n")]
    start = lines[0].split(" ")
    if len(start) != 3 or not _TOKEN_RE.match(start[0]) or not start[2].upper().startswith("SIP/"):
        return None  # a response, or not SIP at all
    fields: list[list[str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if fields:
                fields[-1][1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if colon:
            fields.append([name.strip(), value.strip()])
    pairs: list[tuple[str, str]] = []
    for key in _MANDATORY:
        values = [_sanitise(v) for n, v in fields if header_key(n) == key]
        values = [v for v in values if v]
        if not values:
            return None
        if key != "via":
            values = values[:1]
        pairs.extend((canonical_name(key), v) for v in values)
    cseq = pairs[-1][1]
    try:
        CSeq.parse(cseq)
    except MalformedMessage:
        # A CSeq the peer cannot parse back would make the answer useless: keep its number if it has one
        # and use the request-line method, which is what a client transaction matches on (§17.1.3).
        digits = re.match(r"\d{1,9}", cseq)
        pairs[-1] = ("CSeq", f"{digits.group() if digits else 0} {start[0]}")
    try:
        top_via = Via.parse(split_list(pairs[0][1])[0])
    except (MalformedMessage, IndexError):
        return None
    return _Recovered(method=start[0], headers=Headers(tuple(pairs)), top_via=top_via)


class SipEndpoint:
    """The SIP transaction layer for one listening address (UDP and TCP). See the module docstring."""

    def __init__(self, config: EndpointConfig, token: Callable[[], str]) -> None:
        """
        :param config: limits and timer values.
        :param token: returns a fresh random token (letters and digits) for branches, tags and Call-IDs;
            the adapter passes e.g. ``lambda: secrets.token_hex(8)``, tests a counter.
        """
        self.config = config
        self._token = token
        self._timer_config = config.timers
        self._clients: dict[TransactionKey, _Entry[AnyClientTransaction]] = {}
        self._servers: dict[TransactionKey, _Entry[AnyServerTransaction]] = {}
        # INVITE server transactions in Accepted, by (Call-ID, From tag, CSeq number): 2xx ACK matching.
        self._accepted: dict[tuple[str, str, int], TransactionKey] = {}
        self._heap: list[tuple[float, int, TransactionKey]] = []
        self._seq = itertools.count()
        self._events: deque[SipEvent] = deque()
        self._outbox: list[tuple[bytes, Peer]] = []

    # --- identifiers

    def new_branch(self) -> str:
        """A Via branch for a new client transaction: ``z9hG4bK`` + token."""
        return MAGIC_COOKIE + self._token()

    def new_call_id(self) -> str:
        return self._token()

    def new_tag(self) -> str:
        return self._token()

    # --- introspection

    @property
    def transaction_count(self) -> int:
        return len(self._clients) + len(self._servers)

    def transaction_state(self, key: TransactionKey) -> State | None:
        """State of a live transaction, ``None`` once it is gone."""
        if key.server:
            server = self._servers.get(key)
            return server.txn.state if server is not None else None
        client = self._clients.get(key)
        return client.txn.state if client is not None else None

    # --- input from the adapter

    def receive_datagram(self, data: bytes, peer: Peer, now: float) -> None:
        """One UDP datagram, or one TCP frame (``StreamParser.feed_frames``) with its TCP ``peer``.

        Parse errors are handled here: answered 400/513 where possible, reported as ``MalformedReceived``.

        :param now: monotonic time in seconds.
        """
        if len(data) <= 4 and not data.strip(b"\r\n"):
            return  # CRLF keepalive (RFC 5626 §4.4.1)
        try:
            msg = parse_message(data, max_size=self.config.max_message_size)
        except (MalformedMessage, MessageTooLarge) as exc:
            self._receive_garbage(data, peer, exc)
            return
        self.receive_message(msg, peer, now)

    def receive_message(self, msg: SipMessage, peer: Peer, now: float) -> None:
        """One message framed by the adapter (TCP, ``StreamParser``) or parsed from a datagram.

        :param now: monotonic time in seconds.
        """
        if isinstance(msg, SipResponse):
            self._receive_response(msg, peer, now)
            return
        try:
            request, via = self._stamp(msg, peer)
            # Everything matching and answering needs, parsed once: a broken header fails here.
            key = server_key(request, via)
            request.from_  # noqa: B018
            request.to  # noqa: B018
        except RemoteProtocolError as exc:
            self._reject(msg, peer, exc)
            return
        self._receive_request(request, key, self._response_peer(via, peer), peer, now)

    # --- input from the TU

    def send_request(self, req: SipRequest, peer: Peer, now: float) -> TransactionKey:
        """Start a client transaction for ``req`` (its top Via must carry a fresh ``z9hG4bK`` branch).

        An ACK creates no transaction: it is sent once, statelessly, and the returned key matches nothing.

        :param now: monotonic time in seconds.
        """
        try:
            key = client_key(req)
        except MalformedMessage as exc:
            raise LocalProtocolError(f"unusable request: {exc.reason}") from None
        if not key.branch.startswith(MAGIC_COOKIE):
            raise LocalProtocolError(f"branch {key.branch!r} lacks the {MAGIC_COOKIE} magic cookie")
        if req.method.upper() != key.method:
            raise LocalProtocolError("CSeq method does not match request method")
        if key.method == "ACK":
            self._outbox.append((bytes(req), peer))
            return key
        if key in self._clients:
            raise LocalProtocolError(f"a client transaction with branch {key.branch} exists")
        self._start_client(key, req, peer, now)
        return key

    def cancel(self, key: TransactionKey, now: float) -> TransactionKey | None:
        """CANCEL our INVITE (RFC 3261 §9.1); the TU then gets its final response (487, or a 2xx if the race
        is lost) or ``TransactionTimedOut`` 64·T1 after the CANCEL.

        In Calling the CANCEL waits for the first provisional. Returns the key of the CANCEL transaction if it
        was sent now, ``None`` if it waits, was sent before, or it is too late (final response received).

        :param now: monotonic time in seconds.
        """
        if key.server or key.method != "INVITE":
            raise LocalProtocolError("only our own INVITE transactions can be cancelled")
        entry = self._clients.get(key)
        if entry is None:
            return None
        txn = entry.txn
        assert isinstance(txn, InviteClientTransaction)
        if txn.state not in (State.CALLING, State.PROCEEDING) or txn.cancelled:
            return None
        txn.cancel(now)
        self._sync_client(entry, now)
        return replace(key, method="CANCEL") if txn.cancelled else None

    def send_response(self, resp: SipResponse, now: float) -> None:
        """Send a response through its server transaction (matched by top Via + CSeq method).

        Raises ``LocalProtocolError`` if there is no such transaction or its state forbids this response.

        :param now: monotonic time in seconds.
        """
        try:
            key = server_key(resp)
        except MalformedMessage as exc:
            raise LocalProtocolError(f"unusable response: {exc.reason}") from None
        entry = self._servers.get(key)
        if entry is None:
            raise LocalProtocolError(f"no server transaction for {resp.status} {key.method} ({key.branch})")
        entry.txn.send_response(resp, now)
        self._sync_server(entry, now)

    def send_stateless(self, msg: SipMessage, peer: Peer) -> None:
        """Send ``msg`` once, outside any transaction (a 2xx ACK, a response with no transaction)."""
        self._outbox.append((bytes(msg), peer))

    # --- output to the adapter

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Peer]]:
        """Everything to transmit, in order: UDP datagrams and TCP messages (write to ``peer.conn_id``).

        :param now: monotonic time in seconds.
        """
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> SipEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline of all transactions, or ``None``."""
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        """Fire every transaction timer due at ``now``.

        :param now: monotonic time in seconds.
        """
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry_tuple = heapq.heappop(heap)
            if not self._live(entry_tuple):
                continue
            key = entry_tuple[2]
            if key.server:
                server = self._servers[key]
                server.scheduled = None
                server.txn.on_timer(now)
                self._sync_server(server, now)
            else:
                client = self._clients[key]
                client.scheduled = None
                client.txn.on_timer(now)
                self._sync_client(client, now)

    # --- internals: receive path

    def _stamp(self, request: SipRequest, peer: Peer) -> tuple[SipRequest, Via]:
        """RFC 3581 / RFC 3261 §18.2.1: add received (and rport) to the top Via; the new request and Via."""
        items = list(request.headers.items)
        for i, (name, value) in enumerate(items):
            if header_key(name) != "via":
                continue
            parts = split_list(value)
            if not parts:
                continue
            via = self._stamp_via(Via.parse(parts[0]), peer)
            stamped = str(via)
            if stamped == parts[0]:
                return request, via
            items[i] = (name, ", ".join([stamped, *parts[1:]]))
            return request.with_headers(Headers(tuple(items))), via
        raise MalformedMessage("missing Via header")

    def _stamp_via(self, via: Via, peer: Peer) -> Via:
        if self.config.force_rport and not via.wants_rport and not peer.transport.reliable:
            via = replace(via, params=via.params + (("rport", None),))
        return via.with_received(peer.addr)

    def _response_peer(self, via: Via, peer: Peer) -> Peer:
        if peer.transport.reliable:
            return peer  # RFC 3261 §18.2.2: back over the connection the request came on
        return Peer(peer.transport, via.response_address())

    def _receive_request(
        self, req: SipRequest, key: TransactionKey, reply_to: Peer, peer: Peer, now: float
    ) -> None:
        method = req.method.upper()
        if method == "ACK":
            self._receive_ack(req, key, peer, now)
            return
        existing = self._servers.get(key)
        if existing is not None:
            existing.txn.on_request(req, now)  # a retransmission: absorbed
            self._sync_server(existing, now)
            return
        if method == "CANCEL":
            self._receive_cancel(req, key, reply_to, now)
            return
        if self.transaction_count >= self.config.max_transactions:
            resp = self._response(req, 503, headers=(("Retry-After", str(self.config.retry_after)),))
            self._outbox.append((bytes(resp), reply_to))
            self._events.append(Overloaded(peer, req.method))
            return
        entry = self._new_server(key, req, reply_to)
        self._events.append(RequestReceived(req, peer, key))
        if method == "INVITE":
            entry.txn.send_response(self._response(req, 100), now)
        self._sync_server(entry, now)

    def _receive_ack(self, ack: SipRequest, key: TransactionKey, peer: Peer, now: float) -> None:
        entry = self._servers.get(key)
        if entry is None:
            by_dialog = self._accepted.get((ack.call_id, ack.from_.tag or "", ack.cseq.number))
            entry = self._servers.get(by_dialog) if by_dialog is not None else None
        if entry is not None:
            to_2xx = entry.txn.state is State.ACCEPTED
            entry.txn.on_request(ack, now)
            self._sync_server(entry, now)
            if not to_2xx:
                return  # the ACK of our non-2xx: the transaction's business only
        self._events.append(RequestReceived(ack, peer, None))

    def _receive_cancel(self, cancel: SipRequest, key: TransactionKey, reply_to: Peer, now: float) -> None:
        # Not subject to overload: a CANCEL ends work sooner.
        entry = self._new_server(key, cancel, reply_to)
        invite_key = replace(key, method="INVITE")
        invite = self._servers.get(invite_key)
        if invite is None:
            entry.txn.send_response(self._response(cancel, 481), now)
        else:
            txn = invite.txn
            # §9.2: the To tag SHOULD be the one of the INVITE's responses.
            tag = None
            if txn.last_response is not None:
                try:
                    tag = txn.last_response.to.tag
                except MalformedMessage:
                    pass  # the TU's own odd To: a fresh tag then
            entry.txn.send_response(self._response(cancel, 200, to_tag=tag), now)
            if not txn.final_sent:
                self._events.append(RequestCancelled(invite_key, txn.request))
        self._sync_server(entry, now)

    def _receive_response(self, resp: SipResponse, peer: Peer, now: float) -> None:
        try:
            key = client_key(resp)
        except RemoteProtocolError as exc:
            self._events.append(MalformedReceived(peer, exc.reason, False))
            return
        entry = self._clients.get(key)
        if entry is not None:
            entry.txn.on_response(resp, now)
            self._sync_client(entry, now, source=peer)
        elif key.method == "INVITE" and 200 <= resp.status < 300:
            self._events.append(ResponseReceived(resp, None, peer))
        else:
            self._events.append(StrayResponse(resp, peer))

    def _receive_garbage(self, data: bytes, peer: Peer, exc: RemoteProtocolError) -> None:
        recovered = _recover_request(data, self.config.max_message_size)
        if recovered is None or recovered.method.upper() == "ACK":
            self._events.append(MalformedReceived(peer, exc.reason, False))
            return
        headers = recovered.headers
        via = self._stamp_via(recovered.top_via, peer)
        items = list(headers.items)
        items[0] = ("Via", ", ".join([str(via), *split_list(items[0][1])[1:]]))
        to_value = headers.get("to") or ""
        try:
            to = NameAddr.parse(to_value)
            if to.tag is None:
                to_value = str(to.with_tag(self.new_tag()))
        except MalformedMessage:
            pass
        items = [(n, to_value if header_key(n) == "to" else v) for n, v in items]
        items += [("Server", self.config.user_agent), ("Content-Length", "0")]
        reason = exc.reason_phrase if isinstance(exc, MessageTooLarge) else _one_line(exc.reason)
        resp = SipResponse(status=exc.status, reason=reason, headers=Headers(tuple(items)))
        self._outbox.append((bytes(resp), self._response_peer(via, peer)))
        self._events.append(MalformedReceived(peer, exc.reason, True))

    def _reject(self, req: SipRequest, peer: Peer, exc: RemoteProtocolError) -> None:
        """A request that parsed but is unusable (a broken From, To, Via...): 400 if at all possible."""
        if req.method.upper() == "ACK":
            self._events.append(MalformedReceived(peer, exc.reason, False))
            return
        self._receive_garbage(bytes(req), peer, exc)

    # --- internals: transactions

    def _new_server(
        self, key: TransactionKey, req: SipRequest, reply_to: Peer
    ) -> _Entry[AnyServerTransaction]:
        reliable = reply_to.transport.reliable
        txn: AnyServerTransaction
        if key.method == "INVITE":
            txn = InviteServerTransaction(key, req, self._timer_config, reliable)
        else:
            txn = NonInviteServerTransaction(key, req, self._timer_config, reliable)
        entry: _Entry[AnyServerTransaction] = _Entry(txn, reply_to)
        self._servers[key] = entry
        return entry

    def _start_client(self, key: TransactionKey, req: SipRequest, peer: Peer, now: float) -> None:
        reliable = peer.transport.reliable
        txn: AnyClientTransaction
        if key.method == "INVITE":
            txn = InviteClientTransaction(key, req, self._timer_config, reliable, now)
        else:
            txn = NonInviteClientTransaction(key, req, self._timer_config, reliable, now)
        entry: _Entry[AnyClientTransaction] = _Entry(txn, peer)
        self._clients[key] = entry
        self._sync_client(entry, now)

    def _sync_client(self, entry: _Entry[AnyClientTransaction], now: float, source: Peer | None = None) -> None:
        txn = entry.txn
        out, notices = txn.take()
        self._outbox.extend((bytes(msg), entry.peer) for msg in out)
        for notice in notices:
            if isinstance(notice, PassUp):
                self._events.append(ResponseReceived(notice.response, txn.key, source or entry.peer))
            elif isinstance(notice, TimedOut):
                self._events.append(TransactionTimedOut(txn.key, txn.request, notice.timer))
            elif isinstance(notice, StartCancel):
                cancel = notice.request
                self._start_client(client_key(cancel), cancel, entry.peer, now)
        if txn.terminated:
            del self._clients[txn.key]
        else:
            self._schedule(entry, txn.deadline)

    def _sync_server(self, entry: _Entry[AnyServerTransaction], now: float) -> None:
        txn = entry.txn
        out, notices = txn.take()
        self._outbox.extend((bytes(msg), entry.peer) for msg in out)
        for notice in notices:
            if isinstance(notice, TimedOut):
                self._events.append(TransactionTimedOut(txn.key, txn.request, notice.timer))
        if isinstance(txn, InviteServerTransaction):
            req = txn.request
            dialog_key = (req.call_id, req.from_.tag or "", req.cseq.number)
            if txn.state is State.ACCEPTED:
                self._accepted[dialog_key] = txn.key
            elif self._accepted.get(dialog_key) == txn.key:
                del self._accepted[dialog_key]
        if txn.terminated:
            del self._servers[txn.key]
        else:
            self._schedule(entry, txn.deadline)

    def _schedule(self, entry: _Entry[_T], deadline: float | None) -> None:
        if deadline == entry.scheduled:
            return
        entry.scheduled = deadline
        if deadline is not None:
            heapq.heappush(self._heap, (deadline, next(self._seq), entry.txn.key))
            if len(self._heap) > 64 and len(self._heap) > 4 * self.transaction_count:
                self._compact()

    def _live(self, item: tuple[float, int, TransactionKey]) -> bool:
        key = item[2]
        entry = self._servers.get(key) if key.server else self._clients.get(key)
        return entry is not None and entry.scheduled == item[0]

    def _compact(self) -> None:
        # In place: handle_timer() holds a reference to this list while it pops from it.
        self._heap[:] = [item for item in self._heap if self._live(item)]
        heapq.heapify(self._heap)

    # --- internals: responses the endpoint writes itself

    def _response(self, req: SipRequest, status: int, *, to_tag: str | None = None,
                  headers: tuple[tuple[str, str], ...] = ()) -> SipResponse:
        if to_tag is None and status > 100 and req.to.tag is None:
            to_tag = self.new_tag()
        return build_response(
            req, status, reason_phrase(status), to_tag=to_tag,
            headers=(("Server", self.config.user_agent), *headers),
        )
