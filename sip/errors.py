"""Typed SIP errors. Each carries the SIP status code an adapter answers with (h11's ``error_status_hint``).

``LocalProtocolError`` means *we* misused the API (a bug); ``RemoteProtocolError`` means the peer sent
something we refuse. Adapters catch ``RemoteProtocolError``, answer ``exc.status`` where a response is
possible, count it, and carry on.
"""

from __future__ import annotations

from typing import ClassVar


class SipProtocolError(Exception):
    """Base of every error raised by the SIP core."""

    status: ClassVar[int] = 400
    reason_phrase: ClassVar[str] = "Bad Request"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LocalProtocolError(SipProtocolError):
    """We asked the core to do something the protocol forbids (a bug in the caller)."""

    status = 500
    reason_phrase = "Server Internal Error"


class RemoteProtocolError(SipProtocolError):
    """The peer sent something malformed or not acceptable."""


class MalformedMessage(RemoteProtocolError):
    """The bytes are not a SIP message we can parse."""


class MessageTooLarge(RemoteProtocolError):
    """A message (or its body) is larger than the configured cap."""

    status = 513
    reason_phrase = "Message Too Large"


class CallDoesNotExist(RemoteProtocolError):
    status = 481
    reason_phrase = "Call/Transaction Does Not Exist"


class UnsupportedMediaType(RemoteProtocolError):
    status = 415
    reason_phrase = "Unsupported Media Type"


class BadEvent(RemoteProtocolError):
    status = 489
    reason_phrase = "Bad Event"


class Unauthorized(RemoteProtocolError):
    """Credentials are missing or wrong; the adapter answers 401 with a fresh challenge."""

    status = 401
    reason_phrase = "Unauthorized"


class Forbidden(RemoteProtocolError):
    status = 403
    reason_phrase = "Forbidden"


class NotFound(RemoteProtocolError):
    status = 404
    reason_phrase = "Not Found"


class ServiceUnavailable(RemoteProtocolError):
    """Overload: answered 503 with ``Retry-After``."""

    status = 503
    reason_phrase = "Service Unavailable"


class InvalidBody(RemoteProtocolError):
    """A MANSCDP/SDP body that is malformed, hostile (DTD, entities) or too large."""

    status = 400
    reason_phrase = "Bad Request"
