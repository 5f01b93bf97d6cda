"""SIP messages: parsing, serialisation and the header shapes GB/T 28181 uses (RFC 3261 §7, §20, §25).

Theory of operation
-------------------
A message is a frozen ``SipRequest`` or ``SipResponse``: a start line, an ordered tuple of headers exactly
as received (names keep their spelling, compact forms included, so ``bytes(parse(data)) == data``), and the
body as ``bytes``. Structured views (``Via``, ``NameAddr``, ``SipUri``, CSeq) are parsed on access from the
header text; lookups are case-insensitive and understand compact names (``v``, ``i``, ``l``...).

Two framings:

* datagrams (UDP): ``parse_message(data)``, one message per datagram; a body longer than Content-Length is
  cut to it (RFC 3261 §18.3), a shorter one is an error.
* streams (TCP): ``StreamParser.feed(data)`` buffers bytes and returns every complete message, framing on
  Content-Length (h11's ``ReceiveBuffer``). Its buffer is capped: a header block or body beyond
  ``max_size`` raises ``MessageTooLarge`` and the stream cannot be resynchronised (close the connection).

Every failure on remote input is a ``MalformedMessage`` or ``MessageTooLarge`` with an exact message.
Header text is decoded as UTF-8 with ``surrogateescape`` so that any byte survives a round trip.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

from .errors import LocalProtocolError, MalformedMessage, MessageTooLarge

Addr = tuple[str, int]
_T = TypeVar("_T")

SIP_VERSION = "SIP/2.0"
DEFAULT_MAX_SIZE = 65536

# RFC 3261 §7.3.3 and later RFCs: compact form → full name (lower case).
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "x": "session-expires",
}

# Canonical spelling used when we build messages.
_CANONICAL: dict[str, str] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
}

# Headers whose value is a comma-separated list that may be split into several values (RFC 3261 §7.3.1).
# WWW-Authenticate, Authorization and Date contain commas but are not lists.
_LIST_HEADERS = frozenset(
    {"via", "contact", "route", "record-route", "allow", "supported", "require", "proxy-require",
     "unsupported", "accept", "accept-encoding", "accept-language", "allow-events", "content-encoding"}
)

_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_STATUS_LINE_RE = re.compile(r"^SIP/(\d+\.\d+) (\d{3})(?: (.*))?$", re.ASCII)

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
}


def _is_digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts '²', which ``int()`` then rejects."""
    return text.isascii() and text.isdigit()


def reason_phrase(status: int) -> str:
    """The standard reason phrase for ``status`` (a generic one for unknown codes)."""
    return REASON_PHRASES.get(status, {1: "Provisional", 2: "OK", 3: "Redirect", 4: "Client Error",
                                       5: "Server Error", 6: "Global Failure"}.get(status // 100, "Unknown"))


@functools.lru_cache(maxsize=1024)
def header_key(name: str) -> str:
    """Normalise a header name for lookup: lower case, compact forms expanded (cached: a hot path)."""
    key = name.strip().lower()
    return COMPACT_FORMS.get(key, key)


def canonical_name(name: str) -> str:
    """Canonical spelling of a header name (``call-id`` → ``Call-ID``, ``l`` → ``Content-Length``)."""
    key = header_key(name)
    return _CANONICAL.get(key) or "-".join(part.capitalize() for part in key.split("-"))


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quoted strings and ``<...>`` URIs."""
    parts: list[str] = []
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    start = 0
    in_quote = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            part = value[start:i].strip()
            if part:
                parts.append(part)
            start = i + 1
        i += 1
    part = value[start:].strip()
    if part:
        parts.append(part)
    return parts


def _split_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """Parse ``;name=value;flag`` parameters (leading ``;`` optional), quotes respected."""
    params: list[tuple[str, str | None]] = []
    for raw in _split_outside_quotes(text, ";"):
        raw = raw.strip()
        if not raw:
            continue
        name, eq, val = raw.partition("=")
        name = name.strip()
        if not name:
            raise MalformedMessage(f"empty parameter name in {text!r}")
        params.append((name, val.strip() if eq else None))
    return tuple(params)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    if '"' not in text:
        return text.split(sep)
    out: list[str] = []
    start = 0
    in_quote = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == sep:
            out.append(text[start:i])
            start = i + 1
        i += 1
    if in_quote:
        raise MalformedMessage(f"unterminated quoted string in {text[:64]!r}")
    out.append(text[start:])
    return out


def _format_params(params: Iterable[tuple[str, str | None]]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def _get_param(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    lname = name.lower()
    for k, v in params:
        if k.lower() == lname:
            return v if v is not None else ""
    return None


def _set_param(
    params: tuple[tuple[str, str | None], ...], name: str, value: str | None
) -> tuple[tuple[str, str | None], ...]:
    lname = name.lower()
    out: list[tuple[str, str | None]] = []
    done = False
    for k, v in params:
        if k.lower() == lname:
            if not done:
                out.append((k, value))
                done = True
        else:
            out.append((k, v))
    if not done:
        out.append((name, value))
    return tuple(out)


_BAD_HOST_RE = re.compile(r'["<>\s]')


def _parse_hostport(text: str, what: str) -> tuple[str, int | None]:
    text = text.strip()
    if not text:
        raise MalformedMessage(f"empty host in {what}")
    if text.startswith("["):  # IPv6 reference, RFC 3261 §25.1
        end = text.find("]")
        if end < 0:
            raise MalformedMessage(f"unterminated IPv6 reference in {what}")
        host = text[: end + 1]
        rest = text[end + 1 :]
        if end < 2 or any(c not in "0123456789abcdefABCDEF:." for c in host[1:-1]):
            raise MalformedMessage(f"bad host in {what}")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise MalformedMessage(f"bad host in {what}")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = ""
        if not host or _BAD_HOST_RE.search(host):
            raise MalformedMessage(f"bad host in {what}")
    if port_text == "":
        return host, None
    if not _is_digits(port_text) or len(port_text) > 5 or not 0 < int(port_text) <= 65535:
        raise MalformedMessage(f"bad port in {what}")
    return host, int(port_text)


def _format_hostport(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


# --------------------------------------------------------------------------------------------------------
# URIs and header shapes


@dataclass(frozen=True, slots=True)
class SipUri:
    """``sip:user@host:port;params?headers`` (RFC 3261 §19.1). GB28181 puts the 20-digit ID in ``user``."""

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: tuple[tuple[str, str | None], ...] = ()
    headers: str = ""

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        if not colon or scheme.lower() not in ("sip", "sips", "tel"):
            raise MalformedMessage(f"not a SIP URI: {text[:64]!r}")
        if "<" in rest or ">" in rest:
            raise MalformedMessage(f"bad character in URI: {text[:64]!r}")
        rest, _, headers = rest.partition("?")
        user: str | None = None
        if "@" in rest:
            user, _, rest = rest.rpartition("@")
            user = user.split(":", 1)[0]  # drop a password, never used
        hostport, _, param_text = rest.partition(";")
        host, port = _parse_hostport(hostport, "URI")
        return cls(host=host, user=user, port=port, scheme=scheme.lower(), params=_split_params(param_text),
                   headers=headers)

    def param(self, name: str) -> str | None:
        return _get_param(self.params, name)

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.upper() if value else None

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user is not None else ""
        headers = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{user}{_format_hostport(self.host, self.port)}{_format_params(self.params)}{headers}"


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From, To, Contact, Route: ``"display" <uri>;params`` or ``uri;params`` (RFC 3261 §20.10)."""

    uri: SipUri
    display: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    wildcard: bool = False  # ``Contact: *``

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        if text == "*":
            return cls(uri=SipUri(host="*"), wildcard=True)
        lt = _find_unquoted(text, "<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise MalformedMessage(f"unterminated <URI> in {text[:64]!r}")
            display = text[:lt].strip()
            if display.startswith('"') and display.endswith('"') and len(display) >= 2:
                display = re.sub(r"\\(.)", r"\1", display[1:-1], flags=re.DOTALL)
            uri = SipUri.parse(text[lt + 1 : gt])
            params = _split_params(text[gt + 1 :])
            return cls(uri=uri, display=display or None, params=params)
        # addr-spec without angle brackets: parameters after ';' belong to the header (RFC 3261 §20).
        uri_text, _, param_text = text.partition(";")
        return cls(uri=SipUri.parse(uri_text), params=_split_params(param_text))

    @property
    def tag(self) -> str | None:
        return _get_param(self.params, "tag")

    def param(self, name: str) -> str | None:
        return _get_param(self.params, name)

    def with_param(self, name: str, value: str | None) -> NameAddr:
        return replace(self, params=_set_param(self.params, name, value))

    def with_tag(self, tag: str) -> NameAddr:
        return self.with_param("tag", tag)

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        escaped = self.display.replace("\\", "\\\\").replace('"', '\\"') if self.display else ""
        display = f'"{escaped}" ' if self.display else ""
        return f"{display}<{self.uri}>{_format_params(self.params)}"


def _find_unquoted(text: str, ch: str) -> int:
    in_quote = False
    i = 0
    while i < len(text):
        c = text[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == ch:
            return i
        i += 1
    return -1


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport`` (RFC 3261 §20.42, RFC 3581)."""

    transport: str
    host: str
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Via:
        text = text.strip()
        proto, sep, rest = text.partition(" ")
        if not sep:
            proto, sep, rest = text.partition("\t")
        parts = [p.strip() for p in proto.split("/")]
        if len(parts) != 3 or parts[0].upper() != "SIP" or not parts[2]:
            raise MalformedMessage(f"bad Via: {text[:64]!r}")
        hostport, _, param_text = rest.strip().partition(";")
        host, port = _parse_hostport(hostport, "Via")
        return cls(transport=parts[2].upper(), host=host, port=port, params=_split_params(param_text))

    def param(self, name: str) -> str | None:
        return _get_param(self.params, name)

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def rport(self) -> int | None:
        value = self.param("rport")
        return int(value) if value and _is_digits(value) and len(value) <= 5 else None

    @property
    def wants_rport(self) -> bool:
        return self.param("rport") is not None

    def response_address(self, default_port: int = 5060) -> Addr:
        """Where a response goes when no connection exists (RFC 3261 §18.2.2, RFC 3581 §4)."""
        host = self.received or self.host
        port = self.rport or self.port or default_port
        return host.strip("[]"), port

    def with_received(self, addr: Addr) -> Via:
        """Stamp ``received`` (if the host differs) and ``rport`` (if asked for) as a server does on receipt."""
        params = self.params
        host, port = addr
        if self.host.strip("[]") != host:
            params = _set_param(params, "received", host)
        if self.wants_rport:
            params = _set_param(params, "rport", str(port))
            if _get_param(params, "received") is None:
                params = _set_param(params, "received", host)
        return replace(self, params=params)

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {_format_hostport(self.host, self.port)}{_format_params(self.params)}"


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        num, _, method = text.strip().partition(" ")
        method = method.strip()
        if not _is_digits(num) or len(num) > 10 or not method or not _TOKEN_RE.match(method):
            raise MalformedMessage(f"bad CSeq: {text[:64]!r}")
        number = int(num)
        if number >= 2**31:
            raise MalformedMessage(f"bad CSeq: {text[:64]!r}")
        return cls(number, method.upper())

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


# --------------------------------------------------------------------------------------------------------
# Headers


@dataclass(frozen=True, slots=True)
class Headers:
    """Ordered header fields as ``(name, value)`` pairs; lookups are case-insensitive and compact-aware."""

    items: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, *pairs: tuple[str, str]) -> Headers:
        return cls(tuple((canonical_name(n), v) for n, v in pairs))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def get(self, name: str, default: str | None = None) -> str | None:
        key = header_key(name)
        for n, v in self.items:
            if header_key(n) == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """All values of ``name``; list-valued headers (Via, Contact...) split on top-level commas."""
        key = header_key(name)
        values = [v for n, v in self.items if header_key(n) == key]
        if key in _LIST_HEADERS:
            return [part for v in values for part in split_list(v)]
        return values

    def set(self, name: str, value: str) -> Headers:
        """Replace every ``name`` by one field (at the first one's place, else appended)."""
        key = header_key(name)
        out: list[tuple[str, str]] = []
        done = False
        for n, v in self.items:
            if header_key(n) == key:
                if not done:
                    out.append((n, value))
                    done = True
            else:
                out.append((n, v))
        if not done:
            out.append((canonical_name(name), value))
        return Headers(tuple(out))

    def add(self, name: str, value: str) -> Headers:
        return Headers(self.items + ((canonical_name(name), value),))

    def remove(self, name: str) -> Headers:
        key = header_key(name)
        return Headers(tuple((n, v) for n, v in self.items if header_key(n) != key))


# --------------------------------------------------------------------------------------------------------
# Messages


class _MessageMixin:
    """Structured accessors shared by requests and responses (parsed from header text on access)."""

    __slots__ = ()
    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        value = self.headers.get("call-id")
        if not value:
            raise MalformedMessage("missing Call-ID header")
        return value.strip()

    def _memo(self, key: str, parse: Callable[[], _T]) -> _T:
        """Parse a header view once per message: the layers above ask for the same views several times."""
        cache: dict[str, Any] = self._parsed  # type: ignore[attr-defined]
        try:
            return cast(_T, cache[key])
        except KeyError:
            value = cache[key] = parse()
            return value

    @property
    def cseq(self) -> CSeq:
        return self._memo("cseq", self._parse_cseq)

    def _parse_cseq(self) -> CSeq:
        value = self.headers.get("cseq")
        if value is None:
            raise MalformedMessage("missing CSeq header")
        return CSeq.parse(value)

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("via")]

    @property
    def top_via(self) -> Via:
        return self._memo("via", self._parse_top_via)

    def _parse_top_via(self) -> Via:
        values = self.headers.get_all("via")
        if not values:
            raise MalformedMessage("missing Via header")
        return Via.parse(values[0])

    @property
    def from_(self) -> NameAddr:
        return self._memo("from", self._parse_from)

    def _parse_from(self) -> NameAddr:
        value = self.headers.get("from")
        if value is None:
            raise MalformedMessage("missing From header")
        return NameAddr.parse(value)

    @property
    def to(self) -> NameAddr:
        return self._memo("to", self._parse_to)

    def _parse_to(self) -> NameAddr:
        value = self.headers.get("to")
        if value is None:
            raise MalformedMessage("missing To header")
        return NameAddr.parse(value)

    @property
    def contacts(self) -> list[NameAddr]:
        return [NameAddr.parse(v) for v in self.headers.get_all("contact")]

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return value.split(";", 1)[0].strip().lower() if value else None

    @property
    def expires(self) -> int | None:
        value = self.headers.get("expires")
        if value is None:
            return None
        value = value.strip()
        if not _is_digits(value) or len(value) > 10:
            raise MalformedMessage(f"bad Expires: {value[:32]!r}")
        return int(value)

    def _header_bytes(self) -> bytes:
        parts: list[str] = []
        has_length = False
        for name, value in self.headers.items:
            if header_key(name) == "content-length":
                if has_length:
                    continue
                has_length = True
                value = str(len(self.body))
            parts.append(f"{name}: {value}\r\n")
        if not has_length:
            parts.append(f"Content-Length: {len(self.body)}\r\n")
        parts.append("\r\n")
        return "".join(parts).encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class SipRequest(_MessageMixin):
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION
    _parsed: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def request_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    def with_headers(self, headers: Headers) -> SipRequest:
        return replace(self, headers=headers)

    def __bytes__(self) -> bytes:
        start = f"{self.method} {self.uri} {self.version}\r\n".encode("utf-8", "surrogateescape")
        return start + self._header_bytes() + self.body


@dataclass(frozen=True, slots=True)
class SipResponse(_MessageMixin):
    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION
    _parsed: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    def with_headers(self, headers: Headers) -> SipResponse:
        return replace(self, headers=headers)

    def __bytes__(self) -> bytes:
        reason = f" {self.reason}" if self.reason else " "
        start = f"{self.version} {self.status}{reason}\r\n".encode("utf-8", "surrogateescape")
        return start + self._header_bytes() + self.body


SipMessage = SipRequest | SipResponse

# Headers every request and response must carry (RFC 3261 §8.1.1, §16.3 without Max-Forwards leniency).
_MANDATORY = ("via", "from", "to", "call-id", "cseq")


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """Split a header block (without the blank line) into the start line and raw header pairs."""
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    start_line = lines[0].rstrip("\r")
    if "\r" in start_line:
        raise MalformedMessage("bare CR in start line")
    headers: list[tuple[str, str]] = []
    for raw in lines[1:]:
        line = raw.rstrip("\r")
        if not line:
            continue
        if line[0] in " \t":  # RFC 3261 §7.3.1 line folding
            if not headers:
                raise MalformedMessage("continuation line before any header")
            name, value = headers[-1]
            joined = f"{value} {line.strip()}".strip(" \t\r")
            if "\r" in joined:
                raise MalformedMessage(f"bare CR in {name} header")
            headers[-1] = (name, joined)
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not name or not _TOKEN_RE.match(name):
            raise MalformedMessage(f"bad header line: {line[:64]!r}")
        value = value.strip(" \t\r")
        if "\r" in value:  # RFC 3261 §7.3.1: CR only in CRLF; copied into a response it would inject a line
            raise MalformedMessage(f"bare CR in {name} header")
        headers.append((name, value))
    return start_line, headers


def _build(start_line: str, pairs: list[tuple[str, str]], body: bytes) -> SipMessage:
    headers = Headers(tuple(pairs))
    if start_line.startswith("SIP/"):
        m = _STATUS_LINE_RE.match(start_line)
        if not m:
            raise MalformedMessage(f"bad status line: {start_line[:64]!r}")
        if m.group(1) != "2.0":
            raise MalformedMessage(f"unsupported SIP version: SIP/{m.group(1)}")
        status = int(m.group(2))
        if not 100 <= status <= 699:
            raise MalformedMessage(f"bad status code: {status}")
        msg: SipMessage = SipResponse(status=status, reason=m.group(3) or "", headers=headers, body=body)
    else:
        parts = start_line.split(" ")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise MalformedMessage(f"bad request line: {start_line[:64]!r}")
        method, uri, version = parts
        if not _TOKEN_RE.match(method):
            raise MalformedMessage(f"bad method: {method[:32]!r}")
        if version != SIP_VERSION:
            raise MalformedMessage(f"unsupported SIP version: {version[:32]}")
        if ":" not in uri:
            raise MalformedMessage(f"bad Request-URI: {uri[:64]!r}")
        msg = SipRequest(method=method, uri=uri, headers=headers, body=body)
    for key in _MANDATORY:
        if headers.get(key) is None:
            raise MalformedMessage(f"missing {canonical_name(key)} header")
    # Parse the headers every layer relies on, so a broken one fails here, not deep in a state machine.
    cseq = msg.cseq
    msg.top_via  # noqa: B018 (validation)
    msg.from_  # noqa: B018 (validation)
    msg.to  # noqa: B018 (validation)
    if not msg.call_id:
        raise MalformedMessage("missing Call-ID header")
    if isinstance(msg, SipRequest) and cseq.method != msg.method.upper():
        raise MalformedMessage("CSeq method does not match request method")
    return msg


def _content_length(pairs: list[tuple[str, str]]) -> int | None:
    for name, value in pairs:
        if header_key(name) == "content-length":
            value = value.strip()
            if not _is_digits(value) or len(value) > 9:
                raise MalformedMessage(f"bad Content-Length: {value[:32]!r}")
            return int(value)
    return None


def _find_head_end(data: bytes | bytearray, start: int = 0) -> tuple[int, int]:
    """Index of the blank line ending the header block and its length; (-1, 0) if absent."""
    crlf = data.find(b"\r\n\r\n", start)
    lf = data.find(b"\n\n", start)
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, 4
    if lf >= 0:
        return lf, 2
    return -1, 0


def parse_message(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> SipMessage:
    """Parse one message from a datagram (RFC 3261 §18.3)."""
    if len(data) > max_size:
        raise MessageTooLarge(f"message of {len(data)} bytes exceeds {max_size}")
    # Tolerate leading CRLFs (keepalive pings glued to a message).
    offset = 0
    while data.startswith(b"\r\n", offset):
        offset += 2
    end, sep_len = _find_head_end(data, offset)
    if end < 0:
        if not data[offset:].strip():
            raise MalformedMessage("empty message")
        raise MalformedMessage("header block not terminated")
    start_line, pairs = _parse_head(data[offset:end])
    body = data[end + sep_len :]
    length = _content_length(pairs)
    if length is not None:
        if length > len(body):
            raise MalformedMessage("Content-Length exceeds body")
        body = body[:length]
    return _build(start_line, pairs, bytes(body))


class StreamParser:
    """Frames SIP messages on a byte stream (TCP) by Content-Length (RFC 3261 §18.3), h11 style.

    ``feed()`` returns the complete messages in order. ``max_size`` caps a header block plus body: an
    oversized message raises ``MessageTooLarge`` and the parser refuses further input (close the stream).
    Blank lines between messages (RFC 5626 CRLF keepalives) are skipped; ``pings`` counts double-CRLF pings
    so that the adapter can answer them with a single CRLF.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._broken: str | None = None
        self.pings = 0
        self._scanned = 0  # bytes of the pending header block already searched for its end
        self._head: tuple[str, list[tuple[str, str]], int, int] | None = None  # parsed, awaiting body

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[SipMessage]:
        """Buffer ``data`` and return every complete, parsed message.

        Any error, including a well-framed message that fails validation, leaves the parser refusing
        further input (``feed_frames`` keeps the stream usable instead).
        """
        frames = self._frames(data)
        try:
            return [_build(start, pairs, body) for start, pairs, body, _raw in frames]
        except MalformedMessage as exc:
            self._broken = exc.reason
            self._buf.clear()
            raise

    def feed_frames(self, data: bytes) -> list[bytes]:
        """Buffer ``data`` and return every complete message as raw bytes, framed but not validated.

        Adapters use this so that a message with a bad header (but sound framing) can be answered 400
        by the same code path as a datagram, without losing the stream.
        """
        return [frame[3] for frame in self._frames(data)]

    def _frames(self, data: bytes) -> list[tuple[str, list[tuple[str, str]], bytes, bytes]]:
        if self._broken is not None:
            raise MalformedMessage(f"stream unusable after error: {self._broken}")
        self._buf += data
        out: list[tuple[str, list[tuple[str, str]], bytes, bytes]] = []
        try:
            while True:
                frame = self._next()
                if frame is None:
                    break
                out.append(frame)
        except (MalformedMessage, MessageTooLarge) as exc:
            self._broken = exc.reason
            self._buf.clear()
            raise
        return out

    def _next(self) -> tuple[str, list[tuple[str, str]], bytes, bytes] | None:
        buf = self._buf
        if self._head is None:
            # Skip keepalive CRLFs between messages, counting each double-CRLF ping.
            while buf and buf[0] in (0x0D, 0x0A):
                if buf.startswith(b"\r\n\r\n"):
                    self.pings += 1
                    del buf[:4]
                elif len(buf) < 4 and b"\r\n\r\n".startswith(buf):
                    return None  # may be the start of a ping: keep it until more arrives
                else:
                    del buf[:1]
            if not buf:
                return None
            # Resume where the last search stopped (the blank line may straddle it), not at 0.
            end, sep_len = _find_head_end(buf, max(0, self._scanned - 3))
            if end < 0:
                self._scanned = len(buf)
                if len(buf) > self.max_size:
                    raise MessageTooLarge(f"header block exceeds {self.max_size} bytes")
                return None
            start_line, pairs = _parse_head(bytes(buf[:end]))
            length = _content_length(pairs)
            if length is None:
                length = 0  # RFC 3261 §18.3 requires it on streams; treat absent as empty body
            total = end + sep_len + length
            if total > self.max_size:
                raise MessageTooLarge(f"message of {total} bytes exceeds {self.max_size}")
            self._head = (start_line, pairs, end + sep_len, total)
        start_line, pairs, body_start, total = self._head
        if len(buf) < total:
            return None
        self._head = None
        self._scanned = 0
        raw = bytes(buf[:total])
        del buf[:total]
        return start_line, pairs, raw[body_start:], raw


# --------------------------------------------------------------------------------------------------------
# Builders


def _check_values(pairs: list[tuple[str, str]]) -> None:
    """Refuse CR/LF in header values: text from a peer must never inject headers into what we send."""
    for name, value in pairs:
        if "\r" in value or "\n" in value:
            raise LocalProtocolError(f"line break in {name} header value")


def build_request(
    method: str,
    uri: str | SipUri,
    *,
    via: Via,
    from_: NameAddr,
    to: NameAddr,
    call_id: str,
    cseq: int,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
    max_forwards: int = 70,
) -> SipRequest:
    """A request with the mandatory headers in the conventional order, plus ``headers`` and ``body``."""
    if not _TOKEN_RE.match(method):
        raise LocalProtocolError(f"bad method: {method!r}")
    pairs: list[tuple[str, str]] = [
        ("Via", str(via)),
        ("From", str(from_)),
        ("To", str(to)),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("Max-Forwards", str(max_forwards)),
    ]
    pairs.extend((canonical_name(n), v) for n, v in headers)
    if body and content_type:
        pairs.append(("Content-Type", content_type))
    pairs.append(("Content-Length", str(len(body))))
    _check_values(pairs)
    return SipRequest(method=method, uri=str(uri), headers=Headers(tuple(pairs)), body=body)


def build_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> SipResponse:
    """A response to ``request`` (RFC 3261 §8.2.6): Via, From, To, Call-ID, CSeq copied; a To tag added
    when given and the request's To has none (not on 100 Trying)."""
    if not 100 <= status <= 699:
        raise LocalProtocolError(f"bad status code: {status}")
    pairs: list[tuple[str, str]] = []
    for name, value in request.headers.items:
        key = header_key(name)
        if key == "via":
            pairs.append(("Via", value))
        elif key == "record-route" and 100 < status < 300:
            pairs.append(("Record-Route", value))
    to_value = request.headers.get("to") or ""
    if to_tag and status > 100:
        to = NameAddr.parse(to_value)
        if to.tag is None:
            to_value = str(to.with_tag(to_tag))
    pairs.append(("From", request.headers.get("from") or ""))
    pairs.append(("To", to_value))
    pairs.append(("Call-ID", request.headers.get("call-id") or ""))
    pairs.append(("CSeq", request.headers.get("cseq") or ""))
    pairs.extend((canonical_name(n), v) for n, v in headers)
    if body and content_type:
        pairs.append(("Content-Type", content_type))
    pairs.append(("Content-Length", str(len(body))))
    _check_values(pairs)
    if reason is not None and ("\r" in reason or "\n" in reason):
        raise LocalProtocolError("reason phrase contains a line break")
    return SipResponse(status=status, reason=reason if reason is not None else reason_phrase(status),
                       headers=Headers(tuple(pairs)), body=body)
