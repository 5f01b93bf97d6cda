"""RFC 3261 §17 transactions (with RFC 6026's Accepted state), written as transition tables.

Theory of operation
-------------------
A transaction is one request and the responses to it, plus the retransmission and timeout machinery that makes
that exchange reliable over UDP. There are four kinds, each a small state machine:

    kind                  states                                              table
    INVITE client         Calling → Proceeding → Completed | Accepted         INVITE_CLIENT_TRANSITIONS
    non-INVITE client     Trying → Proceeding → Completed                     NON_INVITE_CLIENT_TRANSITIONS
    INVITE server         Proceeding → Completed → Confirmed | Accepted       INVITE_SERVER_TRANSITIONS
    non-INVITE server     Trying → Proceeding → Completed                     NON_INVITE_SERVER_TRANSITIONS

and every one ends in Terminated, after which the endpoint forgets it. The tables are the whole of the state
logic, in the style of h11's ``EVENT_TRIGGERED_TRANSITIONS``: ``TABLE[state][input] -> next state``. An input
is one of three sorts:

* remote (a response, a retransmitted request, an ACK): a missing key means the RFC has nothing for it in
  that state, so it is *absorbed* (dropped silently). What the RFC asks to absorb *with* an action, such as a
  retransmitted request in Completed, which re-sends the final response, is a self-loop in the table.
* local (the transaction user sends a response or asks for a CANCEL): a missing key is API misuse and raises
  ``LocalProtocolError`` (for example a second final response from a non-INVITE server transaction).
* timers: only the timers valid in the current state are ever armed, so a missing key is a bug in this module
  and raises ``LocalProtocolError`` too.

The side effects of a transition (what to send, which timers to arm, what to tell the transaction user) live
in each class's ``_act()``, dispatched on the input; they never decide the next state.

Timers are absolute deadlines (``now + duration``) in the monotonic time the caller passes in; nothing here
reads a clock. ``deadline`` is the earliest armed one; the owner calls ``on_timer(now)`` when it is due, and
every public method also fires whatever is already due at its ``now`` before returning, which is how the
zero-length timers of reliable transports (D, I, J, K) terminate a transaction in the same call.

    timer  kind              duration                       purpose
    A      INVITE client     T1, doubling (UDP only)        retransmit the INVITE while Calling
    B      INVITE client     64·T1                          give up while Calling; also 64·T1 after a CANCEL
    C      INVITE client     TimerConfig.timer_c or off     "no final response" guard (see below)
    D      INVITE client     32 s UDP, 0 reliable           absorb retransmitted non-2xx finals (re-ACK)
    E      non-INVITE client T1 doubling ≤ T2; T2 Proceeding retransmit the request (UDP only)
    F      non-INVITE client 64·T1                          give up
    G      INVITE server     T1 doubling ≤ T2 (UDP only)    retransmit the final response (2xx too, see L)
    H      INVITE server     64·T1                          give up waiting for the ACK of a non-2xx
    I      INVITE server     T4 UDP, 0 reliable             absorb ACK retransmissions
    J      non-INVITE server 64·T1 UDP, 0 reliable          absorb request retransmissions
    K      non-INVITE client T4 UDP, 0 reliable             absorb response retransmissions
    L      INVITE server     64·T1                          Accepted (RFC 6026): absorb INVITE retransmissions
    M      INVITE client     64·T1                          Accepted (RFC 6026): pass 2xx retransmissions up

Deviations and choices, all deliberate:

* 2xx retransmission (RFC 3261 §13.3.1.4) is a UA-core duty that RFC 6026 keeps out of the transaction. Here
  the INVITE server transaction does it in Accepted, with Timer G's backoff, until the ACK (which the
  endpoint matches by dialog, since a 2xx ACK carries a new branch) or Timer L. The transaction user sends a
  2xx once. If Timer L fires with no ACK, the user is told (``TimedOut(Timer.L)``) so that it can send BYE.
* Timer C belongs to proxies (§16.6). We are a user agent, so it is reused as a "no final response" guard:
  when it fires, the transaction CANCELs itself, exactly as ``cancel()`` does. It runs from the INVITE and is
  restarted by every provisional other than 100; ``None`` turns it off. Without it an INVITE answered with
  100 Trying and then abandoned by the peer would sit in Proceeding forever.
* CANCEL (§9.1) is never sent before a provisional response: in Calling the wish is remembered and the CANCEL
  goes out when the first provisional arrives. After a CANCEL, Timer B is re-armed at 64·T1 (§9.1: "if no
  final response is received ... in 64*T1 seconds after the CANCEL was sent, ... destroy the client
  transaction").
* The INVITE server transaction gets its 100 Trying from the endpoint at once (§17.2.1 allows it), so that
  INVITE retransmissions stop early and are answered with it.

A transaction never addresses a message: it appends what must go out to its outbox and what the user must
hear to its notices, and the owner (``SipEndpoint``) drains both with ``take()`` after every call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, Final

from .errors import LocalProtocolError
from .message import Headers, SipMessage, SipRequest, SipResponse, header_key

MAGIC_COOKIE: Final = "z9hG4bK"  # RFC 3261 §8.1.1.7


class State(Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"  # RFC 6026
    TERMINATED = "Terminated"


class Timer(Enum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"  # noqa: E741 (RFC 3261 name)
    J = "J"
    K = "K"
    L = "L"
    M = "M"


class Input(Enum):
    # remote
    RESP_1XX = "1xx received"
    RESP_2XX = "2xx received"
    RESP_300_699 = "300-699 received"
    REQUEST = "request retransmission received"
    ACK = "ACK received"
    # local (the transaction user)
    SEND_1XX = "send 1xx"
    SEND_2XX = "send 2xx"
    SEND_300_699 = "send 300-699"
    CANCEL = "cancel"
    # timers
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_C = "Timer C"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"


REMOTE_INPUTS: Final = frozenset(
    {Input.RESP_1XX, Input.RESP_2XX, Input.RESP_300_699, Input.REQUEST, Input.ACK}
)

TIMER_INPUT: Final[Mapping[Timer, Input]] = {timer: Input[f"TIMER_{timer.value}"] for timer in Timer}

Table = Mapping[State, Mapping[Input, State]]

S = State
I = Input  # noqa: E741

# RFC 3261 Figure 5 + RFC 6026 Figure 3. Timer C and CANCEL: see the module docstring.
INVITE_CLIENT_TRANSITIONS: Final[Table] = {
    S.CALLING: {
        I.RESP_1XX: S.PROCEEDING,
        I.RESP_2XX: S.ACCEPTED,
        I.RESP_300_699: S.COMPLETED,
        I.TIMER_A: S.CALLING,
        I.TIMER_B: S.TERMINATED,
        I.TIMER_C: S.CALLING,
        I.CANCEL: S.CALLING,
    },
    S.PROCEEDING: {
        I.RESP_1XX: S.PROCEEDING,
        I.RESP_2XX: S.ACCEPTED,
        I.RESP_300_699: S.COMPLETED,
        I.TIMER_B: S.TERMINATED,  # only armed after a CANCEL
        I.TIMER_C: S.PROCEEDING,
        I.CANCEL: S.PROCEEDING,
    },
    S.COMPLETED: {
        I.RESP_300_699: S.COMPLETED,  # re-send the ACK, do not pass up
        I.TIMER_D: S.TERMINATED,
    },
    S.ACCEPTED: {
        I.RESP_2XX: S.ACCEPTED,  # pass up so that the dialog re-sends its ACK
        I.TIMER_M: S.TERMINATED,
    },
    S.TERMINATED: {},
}

# RFC 3261 Figure 6.
NON_INVITE_CLIENT_TRANSITIONS: Final[Table] = {
    S.TRYING: {
        I.RESP_1XX: S.PROCEEDING,
        I.RESP_2XX: S.COMPLETED,
        I.RESP_300_699: S.COMPLETED,
        I.TIMER_E: S.TRYING,
        I.TIMER_F: S.TERMINATED,
    },
    S.PROCEEDING: {
        I.RESP_1XX: S.PROCEEDING,
        I.RESP_2XX: S.COMPLETED,
        I.RESP_300_699: S.COMPLETED,
        I.TIMER_E: S.PROCEEDING,
        I.TIMER_F: S.TERMINATED,
    },
    S.COMPLETED: {
        I.RESP_2XX: S.COMPLETED,  # retransmitted final: absorbed
        I.RESP_300_699: S.COMPLETED,
        I.TIMER_K: S.TERMINATED,
    },
    S.TERMINATED: {},
}

# RFC 3261 Figure 7 + RFC 6026 Figure 5.
INVITE_SERVER_TRANSITIONS: Final[Table] = {
    S.PROCEEDING: {
        I.REQUEST: S.PROCEEDING,  # re-send the last provisional
        I.SEND_1XX: S.PROCEEDING,
        I.SEND_2XX: S.ACCEPTED,
        I.SEND_300_699: S.COMPLETED,
    },
    S.COMPLETED: {
        I.REQUEST: S.COMPLETED,  # re-send the final
        I.ACK: S.CONFIRMED,
        I.TIMER_G: S.COMPLETED,
        I.TIMER_H: S.TERMINATED,
    },
    S.CONFIRMED: {
        I.ACK: S.CONFIRMED,  # absorbed
        I.TIMER_I: S.TERMINATED,
    },
    S.ACCEPTED: {
        I.REQUEST: S.ACCEPTED,  # absorbed (RFC 6026 §8.7)
        I.ACK: S.ACCEPTED,  # stops 2xx retransmission
        I.SEND_2XX: S.ACCEPTED,
        I.TIMER_G: S.ACCEPTED,
        I.TIMER_L: S.TERMINATED,
    },
    S.TERMINATED: {},
}

# RFC 3261 Figure 8.
NON_INVITE_SERVER_TRANSITIONS: Final[Table] = {
    S.TRYING: {
        I.REQUEST: S.TRYING,  # absorbed: nothing to re-send yet
        I.SEND_1XX: S.PROCEEDING,
        I.SEND_2XX: S.COMPLETED,
        I.SEND_300_699: S.COMPLETED,
    },
    S.PROCEEDING: {
        I.REQUEST: S.PROCEEDING,  # re-send the last provisional
        I.SEND_1XX: S.PROCEEDING,
        I.SEND_2XX: S.COMPLETED,
        I.SEND_300_699: S.COMPLETED,
    },
    S.COMPLETED: {
        I.REQUEST: S.COMPLETED,  # re-send the final
        I.TIMER_J: S.TERMINATED,
    },
    S.TERMINATED: {},
}

del S, I


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 §17 timer base values, in seconds."""

    t1: float = 0.5
    """RTT estimate: base of A, B, E, F, G, H, J, L, M."""
    t2: float = 4.0
    """Cap of the E and G retransmission intervals."""
    t4: float = 5.0
    """Longest time a message stays in the network: I and K."""
    timer_c: float | None = 180.0
    """INVITE client "no final response" guard (a CANCEL when it fires); ``None`` disables it."""
    timer_d: float = 32.0
    """How long an INVITE client absorbs retransmitted non-2xx finals on UDP."""

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 >= 0 and self.timer_d >= 0):
            raise ValueError(f"bad SIP timer values: {self}")
        if self.timer_c is not None and self.timer_c <= 0:
            raise ValueError(f"bad Timer C: {self.timer_c}")


@dataclass(frozen=True, slots=True)
class TransactionKey:
    """Identity of a transaction (RFC 3261 §17.1.3, §17.2.3).

    RFC 3261 peers: the top Via ``branch`` (with the magic cookie) and ``sent_by``, plus the method (``INVITE``
    for an ACK, so that a non-2xx ACK finds its INVITE). RFC 2543 peers (no magic cookie): ``legacy`` holds
    Call-ID, From tag and CSeq number, and ``sent_by`` stands in for the top Via. Client keys carry only the
    branch and method: we choose the branch.
    """

    server: bool
    method: str
    branch: str
    sent_by: str = ""
    legacy: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PassUp:
    """Give this response to the transaction user."""

    response: SipResponse


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The transaction gave up (B, F, H) or its 2xx was never ACKed (L)."""

    timer: Timer


@dataclass(frozen=True, slots=True)
class StartCancel:
    """Send this CANCEL as a new non-INVITE client transaction (RFC 3261 §9.1)."""

    request: SipRequest


Notice = PassUp | TimedOut | StartCancel


def response_input(status: int) -> Input:
    """The remote input a received response of ``status`` is."""
    if status < 200:
        return Input.RESP_1XX
    return Input.RESP_2XX if status < 300 else Input.RESP_300_699


def send_input(status: int) -> Input:
    """The local input sending a response of ``status`` is."""
    if status < 200:
        return Input.SEND_1XX
    return Input.SEND_2XX if status < 300 else Input.SEND_300_699


def _copied(request: SipRequest, names: Iterable[str]) -> list[tuple[str, str]]:
    keys = {header_key(n) for n in names}
    return [(n, v) for n, v in request.headers.items if header_key(n) in keys]


def _derived_request(invite: SipRequest, method: str, to_value: str) -> SipRequest:
    """ACK or CANCEL for ``invite``: same Request-URI, top Via, From, Call-ID, CSeq number and Route."""
    vias = invite.headers.get_all("via")
    pairs: list[tuple[str, str]] = [
        ("Via", vias[0]),
        ("From", invite.headers.get("from") or ""),
        ("To", to_value),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.number} {method}"),
        ("Max-Forwards", "70"),
    ]
    pairs.extend(_copied(invite, ("route",)))
    pairs.append(("Content-Length", "0"))
    return SipRequest(method=method, uri=invite.uri, headers=Headers(tuple(pairs)))


def build_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): To from the response (with its tag)."""
    return _derived_request(invite, "ACK", response.headers.get("to") or "")


def build_cancel(invite: SipRequest) -> SipRequest:
    """The CANCEL for ``invite`` (RFC 3261 §9.1): same branch, so that the server can match it."""
    return _derived_request(invite, "CANCEL", invite.headers.get("to") or "")


class Transaction:
    """Common machinery: the table walk, timers, outbox and notices. See the module docstring."""

    TRANSITIONS: ClassVar[Table]
    INITIAL: ClassVar[State]

    __slots__ = ("key", "request", "config", "reliable", "state", "_timers", "_outbox", "_notices")

    def __init__(self, key: TransactionKey, request: SipRequest, config: TimerConfig, reliable: bool) -> None:
        self.key = key
        self.request = request
        self.config = config
        self.reliable = reliable
        self.state = self.INITIAL
        self._timers: dict[Timer, float] = {}
        self._outbox: list[SipMessage] = []
        self._notices: list[Notice] = []

    def __repr__(self) -> str:
        timers = ", ".join(f"{t.value}@{d:g}" for t, d in sorted(self._timers.items(), key=lambda i: i[1]))
        return f"<{type(self).__name__} {self.key.method} {self.key.branch} {self.state.name} [{timers}]>"

    @property
    def deadline(self) -> float | None:
        """The earliest armed timer, or ``None``."""
        return min(self._timers.values()) if self._timers else None

    @property
    def timers(self) -> Mapping[Timer, float]:
        """The armed timers and their deadlines (read-only view, for tests and diagnostics)."""
        return dict(self._timers)

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def take(self) -> tuple[list[SipMessage], list[Notice]]:
        """Drain what must be sent and what the transaction user must be told."""
        out, notices = self._outbox, self._notices
        self._outbox, self._notices = [], []
        return out, notices

    def on_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first.

        :param now: monotonic time in seconds.
        """
        while self._timers:
            timer, deadline = min(self._timers.items(), key=lambda item: item[1])
            if deadline > now:
                break
            del self._timers[timer]
            self._fire(TIMER_INPUT[timer], now, None)

    # --- internals

    def _fire(self, inp: Input, now: float, msg: SipMessage | None) -> bool:
        """Walk the table; run the side effects. False if a remote input was absorbed without action."""
        new = self.TRANSITIONS[self.state].get(inp)
        if new is None:
            if inp in REMOTE_INPUTS:
                return False
            raise LocalProtocolError(
                f"{type(self).__name__}: {inp.value} is not allowed in state {self.state.value}"
            )
        old, self.state = self.state, new
        if new is State.TERMINATED:
            self._timers.clear()
        self._act(inp, old, msg, now)
        return True

    def _act(self, inp: Input, old: State, msg: SipMessage | None, now: float) -> None:
        raise NotImplementedError

    def _arm(self, timer: Timer, duration: float, now: float) -> None:
        self._timers[timer] = now + duration

    def _disarm(self, *timers: Timer) -> None:
        for timer in timers:
            self._timers.pop(timer, None)

    def _send(self, msg: SipMessage) -> None:
        self._outbox.append(msg)


# --------------------------------------------------------------------------------------------------------
# Client transactions


class ClientTransaction(Transaction):
    __slots__ = ()

    def on_response(self, response: SipResponse, now: float) -> bool:
        """Feed a response matched to this transaction. False if it was absorbed without any action.

        :param now: monotonic time in seconds.
        """
        handled = self._fire(response_input(response.status), now, response)
        self.on_timer(now)
        return handled


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.1 with RFC 6026's Accepted state; sends the INVITE when constructed."""

    TRANSITIONS = INVITE_CLIENT_TRANSITIONS
    INITIAL = State.CALLING

    __slots__ = ("_interval", "_ack", "cancel_pending", "cancelled")

    def __init__(
        self, key: TransactionKey, request: SipRequest, config: TimerConfig, reliable: bool, now: float
    ) -> None:
        super().__init__(key, request, config, reliable)
        self._interval = config.t1
        self._ack: SipRequest | None = None
        self.cancel_pending = False
        """A CANCEL was asked for in Calling: it goes out with the first provisional."""
        self.cancelled = False
        """The CANCEL has been handed to the owner."""
        self._send(request)
        if not reliable:
            self._arm(Timer.A, self._interval, now)
        self._arm(Timer.B, 64 * config.t1, now)
        if config.timer_c is not None:
            self._arm(Timer.C, config.timer_c, now)

    def cancel(self, now: float) -> None:
        """Cancel the INVITE (RFC 3261 §9.1): at once in Proceeding, on the first provisional in Calling.

        :param now: monotonic time in seconds.
        """
        self._fire(Input.CANCEL, now, None)
        self.on_timer(now)

    def _start_cancel(self, now: float) -> None:
        self.cancel_pending = False
        self.cancelled = True
        self._disarm(Timer.C)
        self._arm(Timer.B, 64 * self.config.t1, now)
        self._notices.append(StartCancel(build_cancel(self.request)))

    def _act(self, inp: Input, old: State, msg: SipMessage | None, now: float) -> None:
        cfg = self.config
        if inp is Input.TIMER_A:
            self._send(self.request)
            self._interval *= 2
            self._arm(Timer.A, self._interval, now)
        elif inp is Input.TIMER_B:
            self._notices.append(TimedOut(Timer.B))
        elif inp is Input.TIMER_C or inp is Input.CANCEL:
            if self.cancelled or self.cancel_pending:
                return
            self._disarm(Timer.C)
            if self.state is State.CALLING:
                self.cancel_pending = True
            else:
                self._start_cancel(now)
        elif inp is Input.RESP_1XX:
            assert isinstance(msg, SipResponse)
            if old is State.CALLING:
                self._disarm(Timer.A, Timer.B)
            self._notices.append(PassUp(msg))
            if self.cancel_pending:
                self._start_cancel(now)
            elif msg.status > 100 and not self.cancelled and cfg.timer_c is not None:
                self._arm(Timer.C, cfg.timer_c, now)  # §16.7 step 2
        elif inp is Input.RESP_2XX:
            assert isinstance(msg, SipResponse)
            if old is not State.ACCEPTED:
                self._timers.clear()
                self._arm(Timer.M, 64 * cfg.t1, now)
            self._notices.append(PassUp(msg))
        elif inp is Input.RESP_300_699:
            assert isinstance(msg, SipResponse)
            if old is State.COMPLETED:
                assert self._ack is not None
                self._send(self._ack)
                return
            self._timers.clear()
            self._ack = build_ack(self.request, msg)
            self._send(self._ack)
            self._notices.append(PassUp(msg))
            self._arm(Timer.D, 0.0 if self.reliable else cfg.timer_d, now)
        # TIMER_D, TIMER_M: the table's move to Terminated is all there is.


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.2; sends the request when constructed."""

    TRANSITIONS = NON_INVITE_CLIENT_TRANSITIONS
    INITIAL = State.TRYING

    __slots__ = ("_interval",)

    def __init__(
        self, key: TransactionKey, request: SipRequest, config: TimerConfig, reliable: bool, now: float
    ) -> None:
        super().__init__(key, request, config, reliable)
        self._interval = config.t1
        self._send(request)
        if not reliable:
            self._arm(Timer.E, self._interval, now)
        self._arm(Timer.F, 64 * config.t1, now)

    def _act(self, inp: Input, old: State, msg: SipMessage | None, now: float) -> None:
        cfg = self.config
        if inp is Input.TIMER_E:
            self._send(self.request)
            if self.state is State.TRYING:
                self._interval = min(2 * self._interval, cfg.t2)
            else:
                self._interval = cfg.t2
            self._arm(Timer.E, self._interval, now)
        elif inp is Input.TIMER_F:
            self._notices.append(TimedOut(Timer.F))
        elif inp is Input.RESP_1XX:
            assert isinstance(msg, SipResponse)
            self._notices.append(PassUp(msg))
        elif inp is Input.RESP_2XX or inp is Input.RESP_300_699:
            assert isinstance(msg, SipResponse)
            if old is State.COMPLETED:
                return  # retransmission: absorbed
            self._timers.clear()
            self._notices.append(PassUp(msg))
            self._arm(Timer.K, 0.0 if self.reliable else cfg.t4, now)


# --------------------------------------------------------------------------------------------------------
# Server transactions


class ServerTransaction(Transaction):
    __slots__ = ("last_response",)

    def __init__(self, key: TransactionKey, request: SipRequest, config: TimerConfig, reliable: bool) -> None:
        super().__init__(key, request, config, reliable)
        self.last_response: SipResponse | None = None

    @property
    def final_sent(self) -> bool:
        return self.last_response is not None and self.last_response.status >= 200

    def on_request(self, request: SipRequest, now: float) -> bool:
        """Feed a retransmission of the request (or, for INVITE, an ACK). False if absorbed without action.

        :param now: monotonic time in seconds.
        """
        inp = Input.ACK if request.method.upper() == "ACK" else Input.REQUEST
        handled = self._fire(inp, now, request)
        self.on_timer(now)
        return handled

    def send_response(self, response: SipResponse, now: float) -> None:
        """The transaction user answers. Raises ``LocalProtocolError`` where the state forbids it.

        :param now: monotonic time in seconds.
        """
        self._fire(send_input(response.status), now, response)
        self.on_timer(now)

    def _respond(self, response: SipMessage | None) -> None:
        assert isinstance(response, SipResponse)
        self.last_response = response
        self._send(response)

    def _resend(self) -> None:
        if self.last_response is not None:
            self._send(self.last_response)


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.1 with RFC 6026's Accepted state, which also retransmits the 2xx (module docstring)."""

    TRANSITIONS = INVITE_SERVER_TRANSITIONS
    INITIAL = State.PROCEEDING

    __slots__ = ("_interval", "acked")

    def __init__(self, key: TransactionKey, request: SipRequest, config: TimerConfig, reliable: bool) -> None:
        super().__init__(key, request, config, reliable)
        self._interval = config.t1
        self.acked = False
        """An ACK arrived in Accepted (the 2xx ACK) or Completed."""

    def _act(self, inp: Input, old: State, msg: SipMessage | None, now: float) -> None:
        cfg = self.config
        if inp is Input.REQUEST:
            if self.state is not State.ACCEPTED:
                self._resend()
        elif inp is Input.SEND_1XX:
            self._respond(msg)
        elif inp is Input.SEND_2XX or inp is Input.SEND_300_699:
            self._respond(msg)
            if old is State.PROCEEDING:
                if not self.reliable:
                    self._arm(Timer.G, self._interval, now)
                if inp is Input.SEND_2XX:
                    self._arm(Timer.L, 64 * cfg.t1, now)
                else:
                    self._arm(Timer.H, 64 * cfg.t1, now)
        elif inp is Input.TIMER_G:
            self._resend()
            self._interval = min(2 * self._interval, cfg.t2)
            self._arm(Timer.G, self._interval, now)
        elif inp is Input.TIMER_H:
            self._notices.append(TimedOut(Timer.H))
        elif inp is Input.ACK:
            if old is State.COMPLETED:
                self.acked = True
                self._disarm(Timer.G, Timer.H)
                self._arm(Timer.I, 0.0 if self.reliable else cfg.t4, now)
            elif old is State.ACCEPTED:
                self.acked = True
                self._disarm(Timer.G)
        elif inp is Input.TIMER_L:
            if not self.acked:
                self._notices.append(TimedOut(Timer.L))
        # TIMER_I: the table's move to Terminated is all there is.


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.2."""

    TRANSITIONS = NON_INVITE_SERVER_TRANSITIONS
    INITIAL = State.TRYING

    __slots__ = ()

    def _act(self, inp: Input, old: State, msg: SipMessage | None, now: float) -> None:
        if inp is Input.REQUEST:
            self._resend()
        elif inp is Input.SEND_1XX:
            self._respond(msg)
        elif inp is Input.SEND_2XX or inp is Input.SEND_300_699:
            self._respond(msg)
            self._arm(Timer.J, 0.0 if self.reliable else 64 * self.config.t1, now)
        # TIMER_J: the table's move to Terminated is all there is.


AnyClientTransaction = InviteClientTransaction | NonInviteClientTransaction
AnyServerTransaction = InviteServerTransaction | NonInviteServerTransaction
