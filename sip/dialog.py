"""SIP dialogs (RFC 3261 §12): the state two user agents share between INVITE (or SUBSCRIBE) and BYE.

Theory of operation
-------------------
A dialog is born from a dialog-creating request and a response carrying a To tag:

* as UAC, ``Dialog.from_uac(request, response)``: our INVITE/SUBSCRIBE and the peer's 1xx (with a tag: an
  EARLY dialog) or 2xx (CONFIRMED). Route set = the response's Record-Route *reversed*; remote target = its
  Contact; local CSeq = the request's.
* as UAS, ``Dialog.from_uas(request, response)``: the peer's request and our 2xx (or tagged 1xx). Route set =
  the request's Record-Route in order; remote target = its Contact; remote CSeq = the request's.

    EARLY ──confirm(2xx)──► CONFIRMED ──terminate()──► TERMINATED
      └──────────────────terminate()──────────────────────┘

The dialog ID is (Call-ID, local tag, remote tag). In-dialog requests (BYE, INFO, MESSAGE, NOTIFY,
re-INVITE) come from ``create_request()``, which increments the local CSeq and applies §12.2.1.1 routing:
with a loose-routing (``;lr``) route set, the Request-URI is the remote target and the route set becomes
Route headers; with a strict router first, that router is the Request-URI and the remote target goes last.
The ACK of a 2xx (``create_ack()``, §13.2.2.4) is routed the same way but reuses the INVITE's CSeq number
and needs its own new branch (the caller passes the Via).

Incoming in-dialog requests go through ``receive_request()``: it checks the dialog ID (481 otherwise) and
that the remote CSeq never goes backwards (500, §12.2.2), and refreshes the remote target on a target-refresh
request. Nothing here keeps timers or touches the transaction layer; ``Dialog`` is plain mutable state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from .errors import CallDoesNotExist, LocalProtocolError, RemoteProtocolError
from .message import NameAddr, SipMessage, SipRequest, SipResponse, Via, build_request

# Requests that may refresh the remote target (RFC 3261 §12.2, RFC 3311, RFC 6665 §4.1.2.4 / §4.2.1.4).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class CSeqOutOfOrder(RemoteProtocolError):
    """An in-dialog request with a CSeq lower than the last one (RFC 3261 §12.2.2)."""

    status = 500
    reason_phrase = "Server Internal Error"


@dataclass(frozen=True, slots=True)
class DialogId:
    call_id: str
    local_tag: str
    remote_tag: str


def _remote_target(msg: SipMessage, fallback: NameAddr) -> str:
    contacts = msg.contacts
    if contacts and not contacts[0].wildcard:
        return str(contacts[0].uri)
    return str(fallback.uri)  # field quirk: no Contact; the remote URI is the best guess


class Dialog:
    """One dialog; see the module docstring."""

    __slots__ = (
        "call_id", "local", "remote", "remote_target", "route_set", "local_cseq", "remote_cseq", "state",
    )

    def __init__(
        self,
        *,
        call_id: str,
        local: NameAddr,
        remote: NameAddr,
        remote_target: str,
        route_set: tuple[str, ...] = (),
        local_cseq: int = 0,
        remote_cseq: int | None = None,
        state: DialogState = DialogState.CONFIRMED,
    ) -> None:
        if local.tag is None:
            raise LocalProtocolError("a dialog needs a local tag")
        self.call_id = call_id
        self.local = local
        """Our From (UAC) or To (UAS), with our tag."""
        self.remote = remote
        """The peer's To (UAC) or From (UAS), with its tag if any (RFC 2543 peers may have none)."""
        self.remote_target = remote_target
        """Request-URI of in-dialog requests: the peer's Contact."""
        self.route_set = route_set
        """Route header values, in the order our requests carry them."""
        self.local_cseq = local_cseq
        """CSeq of the last request we sent in this dialog."""
        self.remote_cseq = remote_cseq
        """CSeq of the last request the peer sent (``None``: none yet)."""
        self.state = state

    def __repr__(self) -> str:
        return f"<Dialog {self.call_id} {self.local_tag}/{self.remote_tag} {self.state.name}>"

    # --- creation

    @classmethod
    def from_uac(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """The dialog our ``request`` (INVITE, SUBSCRIBE) and the peer's tagged ``response`` create."""
        if not 100 < response.status < 300:
            raise LocalProtocolError(f"a {response.status} response does not create a dialog")
        remote = response.to
        if remote.tag is None:
            raise RemoteProtocolError("dialog-creating response without a To tag")
        return cls(
            call_id=request.call_id,
            local=request.from_,
            remote=remote,
            remote_target=_remote_target(response, remote),
            route_set=tuple(reversed(response.headers.get_all("record-route"))),
            local_cseq=request.cseq.number,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
        )

    @classmethod
    def from_uas(cls, request: SipRequest, response: SipResponse, *, local_cseq: int = 0) -> Dialog:
        """The dialog the peer's ``request`` and our tagged ``response`` create.

        :param local_cseq: our CSeq base (§12.1.1: "empty" until we send; the first request uses base+1).
        """
        if not 100 < response.status < 300:
            raise LocalProtocolError(f"a {response.status} response does not create a dialog")
        remote = request.from_
        return cls(
            call_id=request.call_id,
            local=response.to,
            remote=remote,
            remote_target=_remote_target(request, remote),
            route_set=tuple(request.headers.get_all("record-route")),
            local_cseq=local_cseq,
            remote_cseq=request.cseq.number,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
        )

    # --- identity

    @property
    def local_tag(self) -> str:
        return self.local.tag or ""

    @property
    def remote_tag(self) -> str:
        return self.remote.tag or ""

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    @property
    def local_uri(self) -> str:
        return str(self.local.uri)

    @property
    def remote_uri(self) -> str:
        return str(self.remote.uri)

    def matches(self, msg: SipMessage) -> bool:
        """Whether ``msg`` belongs here: a request from the peer, or a response to one of our requests."""
        try:
            if msg.call_id != self.call_id:
                return False
            if isinstance(msg, SipRequest):
                ours, theirs = msg.to.tag, msg.from_.tag
            else:
                ours, theirs = msg.from_.tag, msg.to.tag
        except RemoteProtocolError:
            return False
        return (ours or "") == self.local_tag and (theirs or "") == self.remote_tag

    # --- state

    def confirm(self, response: SipResponse) -> None:
        """A 2xx for the INVITE of an EARLY dialog (UAC): confirmed, route set and target recomputed
        (RFC 3261 §13.2.2.4)."""
        if not 200 <= response.status < 300 or not self.matches(response):
            raise LocalProtocolError("only a 2xx of this dialog confirms it")
        if self.state is DialogState.EARLY:
            self.route_set = tuple(reversed(response.headers.get_all("record-route")))
            self.remote_target = _remote_target(response, self.remote)
        if self.state is not DialogState.TERMINATED:
            self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    def receive_request(self, request: SipRequest) -> None:
        """Validate an incoming in-dialog request and update the remote CSeq (and target on refresh).

        Raises ``CallDoesNotExist`` (481) if it is not ours and ``CSeqOutOfOrder`` (500) if its CSeq went
        backwards. ACK and CANCEL reuse the CSeq of their INVITE, so they are not checked for order.
        """
        if not self.matches(request) or self.state is DialogState.TERMINATED:
            raise CallDoesNotExist("no such dialog")
        method = request.method.upper()
        if method in ("ACK", "CANCEL"):
            return
        number = request.cseq.number
        if self.remote_cseq is not None and number <= self.remote_cseq:
            # Equal is a retransmission the transaction layer should have absorbed; lower is out of order.
            raise CSeqOutOfOrder(f"CSeq {number} not above {self.remote_cseq}")
        self.remote_cseq = number
        if method in TARGET_REFRESH:
            contacts = request.contacts
            if contacts and not contacts[0].wildcard:
                self.remote_target = str(contacts[0].uri)

    # --- requests

    def _routing(self) -> tuple[str, list[tuple[str, str]]]:
        """Request-URI and Route headers (RFC 3261 §12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, []
        first = NameAddr.parse(self.route_set[0])
        if first.uri.param("lr") is not None:
            return self.remote_target, [("Route", r) for r in self.route_set]
        # Strict router: it becomes the Request-URI; the remote target goes to the end of the route set.
        routes = [*self.route_set[1:], f"<{self.remote_target}>"]
        return str(first.uri), [("Route", r) for r in routes]

    def _build(
        self,
        method: str,
        cseq: int,
        via: Via,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        content_type: str | None,
    ) -> SipRequest:
        uri, routes = self._routing()
        return build_request(
            method, uri, via=via, from_=self.local, to=self.remote, call_id=self.call_id, cseq=cseq,
            headers=[*routes, *headers], body=body, content_type=content_type,
        )

    def create_request(
        self,
        method: str,
        via: Via,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipRequest:
        """An in-dialog request (BYE, INFO, MESSAGE, NOTIFY, re-INVITE) with the next local CSeq.

        :param via: our Via with a fresh branch (``SipEndpoint.new_branch()``).
        """
        if method.upper() in ("ACK", "CANCEL"):
            raise LocalProtocolError(f"{method} is not built by create_request (use create_ack / cancel)")
        if self.state is DialogState.TERMINATED:
            raise LocalProtocolError("dialog terminated")
        self.local_cseq += 1
        return self._build(method, self.local_cseq, via, headers, body, content_type)

    def create_ack(
        self,
        response: SipResponse,
        via: Via,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipRequest:
        """The ACK for a 2xx to our INVITE (RFC 3261 §13.2.2.4): the INVITE's CSeq number, a new branch.

        Send it with ``SipEndpoint.send_request`` (no transaction) and again for each retransmitted 2xx.
        """
        if not 200 <= response.status < 300 or response.cseq.method != "INVITE":
            raise LocalProtocolError("create_ack is for 2xx responses to INVITE")
        return self._build("ACK", response.cseq.number, via, headers, body, content_type)
