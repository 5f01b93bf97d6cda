"""Two ``SipEndpoint``s wired back to back in virtual time (aioquic's ``test_connect_with_loss_*`` style).

``EndpointPair`` owns the clock (``pair.now``), the "network" between side ``"a"`` (10.0.0.1:5060) and side
``"b"`` (10.0.0.2:5060), and a log of everything either side sent. Nothing sleeps: ``run(until)`` jumps from
one timer deadline to the next.

    pair.send(pair.request("MESSAGE"))   # a → b, starts a client transaction on a
    pair.drop("a")                       # the datagram is lost
    pair.run(until=0.5)                  # Timer E fires on a: retransmitted ...
    pair.transfer()                      # ... and delivered (and everything it causes, until quiet)

Datagrams go to the address the endpoint chose: a message for an address that is neither side's (public)
address is kept in ``pair.misrouted``, so that tests can see where a response really went. Side a may sit
behind a NAT (``a_public``): the other side then sees its datagrams from that address, and only datagrams sent
to it reach a. With ``Transport.TCP`` each direction goes through a ``StreamParser``, one connection each way
(``conn_id`` 1 as seen by b, 2 as seen by a).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sip.endpoint import EndpointConfig, Peer, SipEndpoint, SipEvent, Transport
from sip.message import (
    Addr,
    NameAddr,
    SipMessage,
    SipRequest,
    SipResponse,
    SipUri,
    StreamParser,
    Via,
    build_request,
    build_response,
    parse_message,
)
from sip.transaction import TransactionKey

A_ADDR: Addr = ("10.0.0.1", 5060)
B_ADDR: Addr = ("10.0.0.2", 5060)
SIDES = ("a", "b")


def counter_tokens(prefix: str) -> Callable[[], str]:
    """A deterministic token factory: ``prefix1``, ``prefix2``..."""
    numbers = itertools.count(1)
    return lambda: f"{prefix}{next(numbers)}"


@dataclass(frozen=True)
class Sent:
    """One message on the wire."""

    time: float
    side: str
    dest: Peer
    data: bytes

    @property
    def msg(self) -> SipMessage:
        return parse_message(self.data)

    @property
    def label(self) -> str:
        msg = self.msg
        if isinstance(msg, SipRequest):
            return msg.method
        return f"{msg.status} {msg.cseq.method}"


@dataclass
class Side:
    name: str
    endpoint: SipEndpoint
    addr: Addr
    public: Addr
    queue: list[tuple[bytes, Peer]] = field(default_factory=list)
    events: list[SipEvent] = field(default_factory=list)
    parser: StreamParser = field(default_factory=StreamParser)


class EndpointPair:
    def __init__(
        self,
        transport: Transport = Transport.UDP,
        *,
        config: EndpointConfig | None = None,
        a_config: EndpointConfig | None = None,
        b_config: EndpointConfig | None = None,
        a_public: Addr | None = None,
        rport: bool = True,
    ) -> None:
        config = config or EndpointConfig()
        self.transport = transport
        self.rport = rport
        self.now = 0.0
        self.sides = {
            "a": Side("a", SipEndpoint(a_config or config, counter_tokens("a")), A_ADDR, a_public or A_ADDR),
            "b": Side("b", SipEndpoint(b_config or config, counter_tokens("b")), B_ADDR, B_ADDR),
        }
        self.log: list[Sent] = []
        self.misrouted: list[Sent] = []
        self.dropped: list[Sent] = []
        self.blackhole: set[str] = set()
        """Sides whose every outgoing message is lost."""
        self._cseq = itertools.count(1)

    # --- accessors

    @property
    def a(self) -> SipEndpoint:
        return self.sides["a"].endpoint

    @property
    def b(self) -> SipEndpoint:
        return self.sides["b"].endpoint

    def endpoint(self, side: str) -> SipEndpoint:
        return self.sides[side].endpoint

    @staticmethod
    def other(side: str) -> str:
        return "b" if side == "a" else "a"

    def peer_of(self, side: str) -> Peer:
        """How ``side`` is seen by the other one (its public address, its connection)."""
        s = self.sides[side]
        return Peer(self.transport, s.public, (1 if side == "a" else 2) if self.transport.reliable else None)

    def sent(self, side: str, label: str | None = None) -> list[Sent]:
        """Everything ``side`` put on the wire (delivered, dropped or misrouted), optionally one kind only
        (``"INVITE"``, ``"200 INVITE"``)."""
        return [s for s in self.log if s.side == side and (label is None or s.label == label)]

    def events(self, side: str) -> list[SipEvent]:
        """Drain and return ``side``'s new events (all of them are also kept in ``Side.events``)."""
        endpoint = self.sides[side].endpoint
        out: list[SipEvent] = []
        while (event := endpoint.next_event()) is not None:
            out.append(event)
        self.sides[side].events.extend(out)
        return out

    def event_of(self, side: str, kind: type) -> SipEvent:
        """The one new event of ``kind`` on ``side`` (others are drained too)."""
        found = [e for e in self.events(side) if isinstance(e, kind)]
        assert len(found) == 1, found
        return found[0]

    @property
    def transaction_count(self) -> int:
        return self.a.transaction_count + self.b.transaction_count

    # --- building messages

    def via(self, side: str = "a", branch: str | None = None) -> Via:
        s = self.sides[side]
        params: tuple[tuple[str, str | None], ...] = (("branch", branch or s.endpoint.new_branch()),)
        if self.rport:
            params += (("rport", None),)
        return Via(self.transport.value, s.addr[0], s.addr[1], params)

    def request(
        self,
        method: str,
        side: str = "a",
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> SipRequest:
        """A new out-of-dialog request from ``side`` to the other (fresh branch, Call-ID, From tag)."""
        s, o = self.sides[side], self.sides[self.other(side)]
        ep = s.endpoint
        contact = NameAddr(SipUri(host=s.addr[0], user=side, port=s.addr[1]))
        return build_request(
            method,
            SipUri(host=o.addr[0], user=o.name, port=o.addr[1]),
            via=self.via(side),
            from_=NameAddr(SipUri(host=s.addr[0], user=side)).with_tag(ep.new_tag()),
            to=NameAddr(SipUri(host=o.addr[0], user=o.name)),
            call_id=ep.new_call_id(),
            cseq=next(self._cseq),
            headers=[("Contact", str(contact)), *headers],
            body=body,
            content_type=content_type,
        )

    def send(self, request: SipRequest, side: str = "a") -> TransactionKey:
        """``side`` sends ``request`` to the other side (collected, not yet delivered)."""
        key = self.endpoint(side).send_request(request, self.peer_of(self.other(side)), self.now)
        self.collect()
        return key

    def respond(
        self,
        request: SipRequest,
        status: int,
        side: str = "b",
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipResponse:
        """``side`` answers ``request`` through its server transaction; a To tag is added if missing."""
        ep = self.endpoint(side)
        if to_tag is None and request.to.tag is None and status > 100:
            to_tag = ep.new_tag()
        response = build_response(
            request, status, to_tag=to_tag, headers=headers, body=body, content_type=content_type
        )
        ep.send_response(response, self.now)
        self.collect()
        return response

    # --- the network

    def collect(self) -> None:
        """Move what both endpoints want to send into their queues (and the log)."""
        for side in SIDES:
            s = self.sides[side]
            for data, dest in s.endpoint.datagrams_to_send(self.now):
                s.queue.append((data, dest))
                self.log.append(Sent(self.now, side, dest, data))

    def drop(self, side: str = "a", count: int = 1) -> list[SipMessage]:
        """Lose the next ``count`` queued messages from ``side``."""
        self.collect()
        queue = self.sides[side].queue
        assert len(queue) >= count, f"{side} has only {len(queue)} messages queued"
        lost, queue[:count] = queue[:count], []
        for data, dest in lost:
            self.dropped.append(Sent(self.now, side, dest, data))
        return [parse_message(data) for data, _ in lost]

    def lose_all(self, side: str | None = None) -> int:
        """Lose everything queued (from ``side`` or from both)."""
        self.collect()
        count = 0
        for name in (side,) if side else SIDES:
            queue = self.sides[name].queue
            count += len(queue)
            for data, dest in queue:
                self.dropped.append(Sent(self.now, name, dest, data))
            queue.clear()
        return count

    def _deliver(self, side: str) -> int:
        """Deliver ``side``'s queue to the other side; returns how many messages arrived."""
        s = self.sides[side]
        target = self.sides[self.other(side)]
        queue, s.queue = s.queue, []
        delivered = 0
        for data, dest in queue:
            if side in self.blackhole:
                self.dropped.append(Sent(self.now, side, dest, data))
                continue
            expected = self.peer_of(target.name)
            if dest != expected:
                self.misrouted.append(Sent(self.now, side, dest, data))
                continue
            delivered += 1
            source = self.peer_of(side)
            if self.transport.reliable:
                for msg in target.parser.feed(data):
                    target.endpoint.receive_message(msg, source, self.now)
            else:
                target.endpoint.receive_datagram(data, source, self.now)
        return delivered

    def deliver(self, side: str = "a") -> int:
        """One hop: deliver what ``side`` has queued to the other side (whatever that causes stays queued)."""
        self.collect()
        count = self._deliver(side)
        self.collect()
        return count

    def roundtrip(self, side: str = "a", now: float | None = None) -> int:
        """``side``'s queue to the other side, then the other side's queue back (one hop each way)."""
        if now is not None:
            self.now = now
        self.collect()
        count = self._deliver(side)
        self.collect()
        count += self._deliver(self.other(side))
        self.collect()
        return count

    def transfer(self, now: float | None = None) -> int:
        """Deliver in both directions until nothing is left in flight; returns how many messages moved."""
        if now is not None:
            self.now = now
        total = 0
        while True:
            self.collect()
            moved = self._deliver("a") + self._deliver("b")
            self.collect()
            total += moved
            if moved == 0 and not any(self.sides[s].queue for s in SIDES):
                return total

    def next_timer(self) -> float | None:
        timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
        return min(timers) if timers else None

    def run(self, until: float, *, deliver: bool = True) -> int:
        """Advance the clock to ``until``, firing each timer at its exact deadline.

        After each firing what was sent is delivered (unless ``deliver`` is false: it stays queued, for
        ``drop``). Returns the number of ``handle_timer`` calls.
        """
        firings = 0
        while (deadline := self.next_timer()) is not None and deadline <= until:
            self.now = max(self.now, deadline)
            for side in SIDES:
                timer = self.endpoint(side).get_timer()
                if timer is not None and timer <= self.now:
                    self.endpoint(side).handle_timer(self.now)
                    firings += 1
            self.collect()
            if deliver:
                self.transfer()
        self.now = max(self.now, until)
        return firings

    def run_out(self, limit: float = 1000.0) -> None:
        """Run every timer out (up to ``limit`` seconds from now), delivering as it goes."""
        self.run(self.now + limit)
