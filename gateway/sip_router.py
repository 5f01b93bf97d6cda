"""Routes incoming SIP requests to the gateway's handlers; answers what nobody handles.

The transport hands every endpoint event to ``SipRouter.__call__``. Requests are dispatched by method, and
``MESSAGE`` bodies (MANSCDP XML) are decoded here once and dispatched by ``(root, CmdType)``, e.g.
``("Notify", "Keepalive")``. A handler answers through ``server.respond``; a handler that raises a
``RemoteProtocolError`` gets that error's status code answered for it. Unknown methods get ``405`` with
``Allow``; bodies that are not MANSCDP get ``415``; malformed, hostile or oversized XML gets ``400``.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from sip import manscdp
from sip.endpoint import RequestReceived, SipEvent
from sip.errors import RemoteProtocolError, UnsupportedMediaType
from sip.message import build_response

from .sip_transport import SipServer

log = structlog.get_logger("gateway.sip")

MANSCDP = "Application/MANSCDP+xml"
"""The Content-Type we send MANSCDP bodies with (the spelling devices expect)."""
MANSCDP_TYPE = "application/manscdp+xml"
"""``MANSCDP`` as ``SipMessage.content_type`` gives it (lower case), for comparing what arrives."""
ALLOW = "REGISTER, MESSAGE, INVITE, ACK, BYE, CANCEL, INFO, SUBSCRIBE, NOTIFY, OPTIONS"

MethodHandler = Callable[[SipServer, RequestReceived], None]
ManscdpHandler = Callable[[SipServer, RequestReceived, manscdp.ManscdpDocument], None]
EventHandler = Callable[[SipServer, SipEvent], None]


def _phrase(text: str) -> str:
    """A reason phrase safe to put on a status line: one line, printable, bounded."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return cleaned[:120] or "Bad Request"


class SipRouter:
    def __init__(self, *, max_body_size: int = 256 * 1024, user_agent: str = "gb28181-gateway") -> None:
        self.max_body_size = max_body_size
        self.user_agent = user_agent
        self._methods: dict[str, MethodHandler] = {"OPTIONS": self._options, "MESSAGE": self._message}
        self._manscdp: dict[tuple[str, str], ManscdpHandler] = {}
        self._listeners: list[EventHandler] = []

    def on_method(self, method: str, handler: MethodHandler) -> None:
        self._methods[method.upper()] = handler

    def on_manscdp(self, root: str, cmd_type: str, handler: ManscdpHandler) -> None:
        self._manscdp[(root.lower(), cmd_type.lower())] = handler

    def on_event(self, handler: EventHandler) -> None:
        """Receive every other endpoint event (responses, timeouts, cancels)."""
        self._listeners.append(handler)

    def __call__(self, server: SipServer, event: SipEvent) -> None:
        if not isinstance(event, RequestReceived):
            for listener in self._listeners:
                listener(server, event)
            return
        request = event.request
        if request.method == "ACK":  # ACK for a 2xx: no response, dialogs handle it
            handler = self._methods.get("ACK")
            if handler is not None:
                handler(server, event)
            return
        handler = self._methods.get(request.method.upper())
        try:
            if handler is None:
                server.respond(build_response(request, 405, headers=[("Allow", ALLOW)]))
                return
            handler(server, event)
        except RemoteProtocolError as exc:
            log.info("sip request refused", method=request.method, call_id=request.call_id,
                     status=exc.status, reason=exc.reason)
            server.respond(build_response(request, exc.status, _phrase(exc.reason)))

    def _options(self, server: SipServer, event: RequestReceived) -> None:
        server.respond(build_response(
            event.request, 200, to_tag=server.endpoint.new_tag(),
            headers=[("Allow", ALLOW), ("Accept", "Application/MANSCDP+xml, Application/SDP"),
                     ("User-Agent", self.user_agent)],
        ))

    def _message(self, server: SipServer, event: RequestReceived) -> None:
        request = event.request
        if request.content_type != MANSCDP_TYPE:
            raise UnsupportedMediaType(f"expected Application/MANSCDP+xml, got {request.content_type}")
        doc = manscdp.decode(request.body, max_size=self.max_body_size)
        handler = self._manscdp.get((doc.root.lower(), doc.cmd_type.lower()))
        if handler is None:
            log.debug("manscdp message without handler", root=doc.root, cmd_type=doc.cmd_type,
                      device_id=doc.device_id, call_id=request.call_id)
            server.respond(build_response(request, 200, to_tag=server.endpoint.new_tag()))
            return
        handler(server, event, doc)
