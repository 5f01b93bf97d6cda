"""RTSP request/response core for the gateway's RTSP server (RFC 2326, with what RFC 7826-era clients send).

Theory of operation
-------------------
A request is a frozen ``RtspRequest``: method, URI, version, the headers as an ordered tuple of ``(name, value)``
exactly as received (``bytes(RtspRequest.parse(data)) == data`` for CRLF input) and the body as ``bytes``.
Header lookups are case-insensitive. Responses are built with ``build_response(request, status, ...)``, which
always copies the request's ``CSeq`` (RFC 2326 §12.17) and adds ``Session`` when given.

One TCP connection carries, in any order (RFC 2326 §10.12):

* RTSP requests framed on ``Content-Length`` (ANNOUNCE, SET_PARAMETER carry bodies), possibly pipelined;
* bare CRLFs (keepalives some clients send), skipped;
* interleaved binary frames ``$`` + channel (1 byte) + length (2 bytes, big endian) + data, which clients use
  for RTCP receiver reports when media runs over TCP.

``RtspConnectionParser.feed(data)`` buffers bytes and returns every complete ``RtspRequest`` or
``InterleavedFrame`` in order, h11 ``ReceiveBuffer`` style. Its buffer is capped by ``max_size``: a header block
or request beyond it raises ``RtspTooLarge`` (413). Any error leaves the parser refusing further input, since a
byte stream cannot be resynchronised: answer ``exc.status`` (``error_response(exc)``) and close the connection.
Every failure on remote input is an ``RtspError`` (or subclass) with an exact message; nothing else escapes.

Helpers: ``parse_transport`` / ``TransportSpec`` (§12.39), ``parse_range`` / ``NptRange`` (§3.6, §12.29),
``parse_session`` / ``format_session`` (§12.37), ``rtp_info`` (§12.33), ``parse_url`` / ``split_control`` for
``rtsp://host:8554/<device>/<channel>?stream=sub[/trackID=0]`` (ffmpeg and live555 append the SDP control
attribute after the query, so the suffix is looked for at the very end of the URL).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import ClassVar, NamedTuple, Self

__all__ = [
    "DEFAULT_MAX_SIZE",
    "METHODS",
    "RTSP_VERSION",
    "InterleavedFrame",
    "NptRange",
    "RtspConnectionParser",
    "RtspError",
    "RtspInvalidRange",
    "RtspRequest",
    "RtspResponse",
    "RtspTooLarge",
    "RtspUrl",
    "RtspVersionNotSupported",
    "TransportSpec",
    "build_response",
    "error_response",
    "format_range",
    "format_session",
    "parse_range",
    "parse_session",
    "parse_transport",
    "parse_url",
    "reason_phrase",
    "rtp_info",
    "split_control",
]

RTSP_VERSION = "RTSP/1.0"
DEFAULT_MAX_SIZE = 65536
DEFAULT_PORT = 554

# RFC 2326 §10 plus GET_PARAMETER/SET_PARAMETER keepalives; unknown methods still parse (answer 501).
METHODS = frozenset({
    "OPTIONS", "DESCRIBE", "ANNOUNCE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER",
    "REDIRECT", "RECORD",
})

REASON_PHRASES: dict[int, str] = {
    100: "Continue",
    200: "OK",
    201: "Created",
    250: "Low on Storage Space",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    415: "Unsupported Media Type",
    451: "Parameter Not Understood",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    456: "Header Field Not Valid for Resource",
    457: "Invalid Range",
    459: "Aggregate Operation Not Allowed",
    460: "Only Aggregate Operation Allowed",
    461: "Unsupported Transport",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Time-out",
    505: "RTSP Version Not Supported",
    551: "Option not supported",
}


def reason_phrase(status: int) -> str:
    """The RFC 2326 §7.1.1 reason phrase for ``status`` (a generic one for unknown codes)."""
    return REASON_PHRASES.get(status, {1: "Informational", 2: "OK", 3: "Redirection", 4: "Client Error",
                                       5: "Server Error"}.get(status // 100, "Unknown"))


# --------------------------------------------------------------------------------------------------------
# Errors


class RtspError(ValueError):
    """Input we refuse. ``status`` is the code to answer with; ``cseq`` the request's CSeq when it was read."""

    status: ClassVar[int] = 400

    def __init__(self, reason: str, cseq: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cseq = cseq


class RtspTooLarge(RtspError):
    status = 413


class RtspVersionNotSupported(RtspError):
    status = 505


class RtspInvalidRange(RtspError):
    status = 457


class RtspUnsupportedTransport(RtspError):
    status = 461


# --------------------------------------------------------------------------------------------------------
# Messages

Headers = tuple[tuple[str, str], ...]

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_REQUEST_LINE_RE = re.compile(r"([^ ]+) ([^ ]+) (RTSP/\d+\.\d+|[^ ]+)")
_STATUS_LINE_RE = re.compile(r"(RTSP/\d+\.\d+) (\d{3})(?: (.*))?")
_DIGITS_RE = re.compile(r"[0-9]{1,10}")
_LINE_SPLIT_RE = re.compile(rb"\r\n|\n")


def _get(headers: Headers, name: str) -> str | None:
    key = name.lower()
    for k, v in headers:
        if k.lower() == key:
            return v
    return None


def _serialise(start: str, headers: Headers, body: bytes) -> bytes:
    lines = [start, *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


def _check_headers(headers: Iterable[tuple[str, str]]) -> Headers:
    """Refuse CR/LF in values we send: peer text must never inject headers."""
    out = tuple(headers)
    for name, value in out:
        if not _TOKEN_RE.fullmatch(name) or "\r" in value or "\n" in value:
            raise ValueError(f"bad header {name!r}")
    return out


def _parse_cseq(headers: Headers) -> int | None:
    value = _get(headers, "CSeq")
    if value is None:
        return None
    value = value.strip()
    if not _DIGITS_RE.fullmatch(value):
        raise RtspError(f"bad CSeq: {value[:32]!r}")
    return int(value)


def _content_length(headers: Headers, cseq: int | None) -> int:
    values = {v.strip() for k, v in headers if k.lower() == "content-length"}
    if not values:
        return 0
    if len(values) > 1:
        raise RtspError("conflicting Content-Length headers", cseq)
    (value,) = values
    if not _DIGITS_RE.fullmatch(value):
        raise RtspError(f"bad Content-Length: {value[:32]!r}", cseq)
    return int(value)


def _parse_head(head: bytes) -> tuple[str, Headers]:
    """Split a header block into its start line and ``(name, value)`` pairs (RFC 2326 §4, §6)."""
    raw_lines = [line.decode("utf-8", "surrogateescape") for line in _LINE_SPLIT_RE.split(head)]
    start = raw_lines[0]
    pairs: list[list[str]] = []
    for line in raw_lines[1:]:
        if line[:1] in (" ", "\t"):  # RFC 2326 §4.1 / RFC 822 continuation line
            if not pairs:
                raise RtspError("continuation line before any header")
            pairs[-1][1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN_RE.fullmatch(name):
            raise RtspError(f"bad header line: {line[:64]!r}")
        pairs.append([name, value.strip()])
    return start, tuple((k, v) for k, v in pairs)


@dataclass(frozen=True, slots=True)
class RtspRequest:
    """An RTSP request (RFC 2326 §6). ``headers`` keep their order and spelling."""

    method: str
    uri: str
    version: str = RTSP_VERSION
    headers: Headers = ()
    body: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> Self:
        """Parse one complete request (header block, blank line, body of Content-Length bytes)."""
        crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
        if crlf >= 0 and (lf < 0 or crlf < lf):
            end, sep = crlf, 4
        elif lf >= 0:
            end, sep = lf, 2
        else:
            raise RtspError("header block not terminated")
        req = cls._from_head(data[:end])
        length = _content_length(req.headers, req.cseq)
        body = data[end + sep:]
        if len(body) != length:
            raise RtspError(f"body of {len(body)} bytes but Content-Length {length}", req.cseq)
        return cls(req.method, req.uri, req.version, req.headers, body)

    @classmethod
    def _from_head(cls, head: bytes) -> Self:
        start, headers = _parse_head(head)
        m = _REQUEST_LINE_RE.fullmatch(start)
        if m is None:
            raise RtspError(f"bad request line: {start[:64]!r}")
        method, uri, version = m.groups()
        if not _TOKEN_RE.fullmatch(method):
            raise RtspError(f"bad method: {method[:32]!r}")
        cseq = _parse_cseq(headers)
        if version != RTSP_VERSION:
            raise RtspVersionNotSupported(f"unsupported version: {version[:16]!r}", cseq)
        if cseq is None:
            raise RtspError("missing CSeq")  # RFC 2326 §12.17: every request carries one
        return cls(method, uri, version, headers)

    def __bytes__(self) -> bytes:
        return _serialise(f"{self.method} {self.uri} {self.version}", self.headers, self.body)

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        return _get(self.headers, name)

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [v for k, v in self.headers if k.lower() == key]

    @property
    def cseq(self) -> int | None:
        return _parse_cseq(self.headers)

    @property
    def session(self) -> str | None:
        """The Session id without parameters (``;timeout=``), or None."""
        value = self.get("Session")
        return None if value is None else parse_session(value)[0]


@dataclass(frozen=True, slots=True)
class RtspResponse:
    """An RTSP response (RFC 2326 §7)."""

    status: int
    reason: str = ""
    headers: Headers = ()
    body: bytes = b""
    version: str = RTSP_VERSION

    @classmethod
    def parse(cls, data: bytes) -> Self:
        crlf = data.find(b"\r\n\r\n")
        if crlf < 0:
            raise RtspError("header block not terminated")
        start, headers = _parse_head(data[:crlf])
        m = _STATUS_LINE_RE.fullmatch(start)
        if m is None:
            raise RtspError(f"bad status line: {start[:64]!r}")
        version, status, reason = m.groups()
        body = data[crlf + 4:]
        length = _content_length(headers, None)
        if len(body) != length:
            raise RtspError(f"body of {len(body)} bytes but Content-Length {length}")
        return cls(int(status), reason or "", headers, body, version)

    def __bytes__(self) -> bytes:
        return _serialise(f"{self.version} {self.status} {self.reason}", self.headers, self.body)

    def get(self, name: str) -> str | None:
        return _get(self.headers, name)

    @property
    def cseq(self) -> int | None:
        return _parse_cseq(self.headers)


def build_response(
    request: RtspRequest,
    status: int,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    session: str | None = None,
    reason: str | None = None,
) -> RtspResponse:
    """A response to ``request``: CSeq first (copied), then Session (``format_session`` output) when given,
    then ``headers``, then Content-Length when there is a body and ``headers`` lack one."""
    cseq = request.get("CSeq")
    if cseq is None:
        raise ValueError("request has no CSeq")  # the parser refuses such requests: a caller bug
    extra = _check_headers(headers)
    out: list[tuple[str, str]] = [("CSeq", cseq.strip())]
    if session is not None:
        out.append(("Session", session))
    out.extend(extra)
    if body and _get(extra, "Content-Length") is None:
        out.append(("Content-Length", str(len(body))))
    _check_headers(out)
    return RtspResponse(status, reason if reason is not None else reason_phrase(status), tuple(out), body)


def error_response(exc: RtspError, headers: Iterable[tuple[str, str]] = ()) -> RtspResponse:
    """The response to a request the parser refused: ``exc.status``, with its CSeq when it could be read."""
    out: list[tuple[str, str]] = [] if exc.cseq is None else [("CSeq", str(exc.cseq))]
    out.extend(_check_headers(headers))
    return RtspResponse(exc.status, reason_phrase(exc.status), tuple(out))


# --------------------------------------------------------------------------------------------------------
# Connection framing


@dataclass(frozen=True, slots=True)
class InterleavedFrame:
    """A binary frame on the RTSP connection (RFC 2326 §10.12): usually RTCP on an odd channel."""

    channel: int
    data: bytes

    def __bytes__(self) -> bytes:
        if not 0 <= self.channel <= 255 or len(self.data) > 0xFFFF:
            raise ValueError("interleaved frame out of range")
        return b"$" + bytes((self.channel,)) + len(self.data).to_bytes(2, "big") + self.data


class RtspConnectionParser:
    """Frames one RTSP connection: requests, CRLF keepalives and ``$`` interleaved frames, in order."""

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._broken: str | None = None
        self._scanned = 0  # bytes of the pending header block already searched for its end
        self._head: tuple[RtspRequest, int, int] | None = None  # parsed, awaiting body: req, body start, total

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[RtspRequest | InterleavedFrame]:
        """Buffer ``data``; return every complete item. Raises ``RtspError``, after which input is refused."""
        if self._broken is not None:
            raise RtspError(f"connection unusable after error: {self._broken}")
        self._buf += data
        out: list[RtspRequest | InterleavedFrame] = []
        try:
            while True:
                item = self._next()
                if item is None:
                    return out
                out.append(item)
        except RtspError as exc:
            self._broken = exc.reason
            self._buf.clear()
            raise

    def _next(self) -> RtspRequest | InterleavedFrame | None:
        buf = self._buf
        if self._head is None:
            while buf and buf[0] in (0x0D, 0x0A):  # keepalive CRLFs between items
                del buf[:1]
            if not buf:
                return None
            if buf[0] == 0x24:  # '$' RFC 2326 §10.12
                if len(buf) < 4:
                    return None
                length = int.from_bytes(buf[2:4], "big")
                if 4 + length > self.max_size:
                    raise RtspTooLarge(f"interleaved frame of {4 + length} bytes exceeds {self.max_size}")
                if len(buf) < 4 + length:
                    return None
                frame = InterleavedFrame(buf[1], bytes(buf[4:4 + length]))
                del buf[:4 + length]
                return frame
            start = max(0, self._scanned - 3)
            crlf, lf = buf.find(b"\r\n\r\n", start), buf.find(b"\n\n", start)
            if crlf >= 0 and (lf < 0 or crlf < lf):
                end, sep = crlf, 4
            elif lf >= 0:
                end, sep = lf, 2
            else:
                self._scanned = len(buf)
                if len(buf) > self.max_size:
                    raise RtspTooLarge(f"header block exceeds {self.max_size} bytes")
                return None
            if end + sep > self.max_size:
                raise RtspTooLarge(f"header block exceeds {self.max_size} bytes")
            req = RtspRequest._from_head(bytes(buf[:end]))
            total = end + sep + _content_length(req.headers, req.cseq)
            if total > self.max_size:
                raise RtspTooLarge(f"request of {total} bytes exceeds {self.max_size}", req.cseq)
            self._head = (req, end + sep, total)
        req, body_start, total = self._head
        if len(buf) < total:
            return None
        self._head = None
        self._scanned = 0
        body = bytes(buf[body_start:total])
        del buf[:total]
        return RtspRequest(req.method, req.uri, req.version, req.headers, body)


# --------------------------------------------------------------------------------------------------------
# Transport (RFC 2326 §12.39)

_PROTOCOLS = {"RTP/AVP": "UDP", "RTP/AVP/UDP": "UDP", "RTP/AVP/TCP": "TCP", "RTP/AVPF": "UDP",
              "RTP/AVPF/UDP": "UDP", "RTP/AVPF/TCP": "TCP", "RTP/SAVP": "UDP", "RTP/SAVP/UDP": "UDP",
              "RTP/SAVP/TCP": "TCP"}
_RANGE_PARAMS = ("client_port", "server_port", "interleaved", "port")
_PORT_RANGE_RE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")
_SSRC_RE = re.compile(r"[0-9A-Fa-f]{1,8}")


@dataclass(frozen=True, slots=True)
class TransportSpec:
    """One Transport alternative. Port/channel pairs are ``(rtp, rtcp)``; a single ``n`` means ``(n, n+1)``."""

    protocol: str = "RTP/AVP"
    unicast: bool | None = True  # None: neither unicast nor multicast given
    client_port: tuple[int, int] | None = None
    server_port: tuple[int, int] | None = None
    interleaved: tuple[int, int] | None = None
    ssrc: int | None = None
    mode: str | None = None
    destination: str | None = None
    source: str | None = None
    ttl: int | None = None
    extra: tuple[tuple[str, str | None], ...] = ()  # parameters we do not interpret, kept in order

    @property
    def lower_transport(self) -> str:
        """``TCP`` or ``UDP`` (RFC 2326: ``RTP/AVP`` alone means UDP); ``""`` for unknown protocols."""
        return _PROTOCOLS.get(self.protocol.upper(), "")

    @property
    def is_tcp(self) -> bool:
        return self.lower_transport == "TCP"

    def __str__(self) -> str:
        parts = [self.protocol]
        if self.unicast is not None:
            parts.append("unicast" if self.unicast else "multicast")
        if self.destination is not None:
            parts.append(f"destination={self.destination}")
        if self.source is not None:
            parts.append(f"source={self.source}")
        for name in ("interleaved", "client_port", "server_port"):
            pair: tuple[int, int] | None = getattr(self, name)
            if pair is not None:
                parts.append(f"{name}={pair[0]}-{pair[1]}")
        if self.ttl is not None:
            parts.append(f"ttl={self.ttl}")
        if self.ssrc is not None:
            parts.append(f"ssrc={self.ssrc:08X}")
        if self.mode is not None:
            parts.append(f"mode={self.mode}")
        parts.extend(k if v is None else f"{k}={v}" for k, v in self.extra)
        return ";".join(parts)


def _pair(name: str, value: str, maximum: int) -> tuple[int, int]:
    m = _PORT_RANGE_RE.fullmatch(value.strip())
    if m is None:
        raise RtspError(f"bad {name} in Transport: {value[:32]!r}")
    first = int(m.group(1))
    second = int(m.group(2)) if m.group(2) is not None else first + 1
    if first > maximum or second > maximum:
        raise RtspError(f"bad {name} in Transport: {value[:32]!r}")
    return first, second


def _parse_one_transport(text: str) -> TransportSpec:
    fields = [f.strip() for f in text.split(";")]
    protocol = fields[0]
    if not re.fullmatch(r"[A-Za-z0-9]+/[A-Za-z0-9]+(?:/[A-Za-z0-9]+)?", protocol):
        raise RtspError(f"bad transport protocol: {protocol[:32]!r}")
    values: dict[str, object] = {"unicast": None}
    extra: list[tuple[str, str | None]] = []
    for field in fields[1:]:
        if not field:
            continue
        name, eq, value = field.partition("=")
        key = name.strip().lower()
        value = value.strip()
        if key in ("unicast", "multicast") and not eq:
            values["unicast"] = key == "unicast"
        elif key in ("client_port", "server_port", "port") and eq:
            values["client_port" if key == "port" else key] = _pair(key, value, 65535)
        elif key == "interleaved" and eq:
            values[key] = _pair(key, value, 255)
        elif key == "ssrc" and eq:
            if not _SSRC_RE.fullmatch(value):
                raise RtspError(f"bad ssrc in Transport: {value[:32]!r}")
            values[key] = int(value, 16)
        elif key == "mode" and eq:
            values[key] = value.strip('"').upper()
        elif key in ("destination", "source") and eq:
            values[key] = value
        elif key == "ttl" and eq:
            if not _DIGITS_RE.fullmatch(value) or int(value) > 255:
                raise RtspError(f"bad ttl in Transport: {value[:32]!r}")
            values[key] = int(value)
        else:
            extra.append((name.strip(), value if eq else None))
    return replace(TransportSpec(protocol=protocol, extra=tuple(extra)), **values)  # type: ignore[arg-type]


def parse_transport(value: str) -> list[TransportSpec]:
    """Parse a Transport header: comma-separated alternatives in the client's order of preference."""
    specs = [_parse_one_transport(part) for part in value.split(",") if part.strip()]
    if not specs:
        raise RtspError("empty Transport header")
    return specs


# --------------------------------------------------------------------------------------------------------
# Range (RFC 2326 §3.6, §12.29)

_NPT_TIME_RE = re.compile(r"now|[0-9]{1,12}(?:\.[0-9]{0,9})?|[0-9]{1,6}:[0-5]?[0-9]:[0-5]?[0-9](?:\.[0-9]{0,9})?")


@dataclass(frozen=True, slots=True)
class NptRange:
    """An ``npt=`` range in seconds; ``start`` None means ``now`` (live), ``end`` None means open."""

    start: float | None = 0.0
    end: float | None = None

    def __str__(self) -> str:
        return format_range(self.start, self.end)


def _npt_time(text: str, value: str) -> float | None:
    if not _NPT_TIME_RE.fullmatch(text):
        raise RtspInvalidRange(f"bad Range: {value[:64]!r}")
    if text == "now":
        return None
    if ":" in text:
        h, m, s = text.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    return float(text)


def parse_range(value: str) -> NptRange:
    """Parse ``npt=a-b`` / ``npt=a-`` / ``npt=now-`` / ``npt=-b`` (an optional ``;time=`` is ignored).

    Other units (``clock=``, ``smpte=``) raise ``RtspInvalidRange`` (457): the gateway serves npt only.
    """
    spec = value.split(";", 1)[0].strip()
    unit, eq, rng = spec.partition("=")
    if not eq or unit.strip().lower() != "npt":
        raise RtspInvalidRange(f"unsupported Range: {value[:64]!r}")
    first, dash, second = rng.strip().partition("-")
    first, second = first.strip(), second.strip()
    if not dash or (not first and not second):
        raise RtspInvalidRange(f"bad Range: {value[:64]!r}")
    start = _npt_time(first, value) if first else 0.0
    end = _npt_time(second, value) if second else None
    if second == "now":
        raise RtspInvalidRange(f"bad Range: {value[:64]!r}")
    if start is not None and end is not None and end < start:
        raise RtspInvalidRange(f"bad Range: {value[:64]!r}")
    return NptRange(start, end)


def format_range(start: float | None = 0.0, end: float | None = None) -> str:
    """``npt=0.000-``, ``npt=now-``, ``npt=1.500-10.000``."""
    first = "now" if start is None else f"{start:.3f}"
    return f"npt={first}-" + ("" if end is None else f"{end:.3f}")


# --------------------------------------------------------------------------------------------------------
# Session (§12.37), RTP-Info (§12.33)

_SESSION_ID_RE = re.compile(r"[A-Za-z0-9$\-_.+]{1,128}")


def parse_session(value: str) -> tuple[str, int | None]:
    """``id[;timeout=N]`` → ``(id, N or None)``."""
    ident, _, params = value.partition(";")
    ident = ident.strip()
    if not _SESSION_ID_RE.fullmatch(ident):
        raise RtspError(f"bad Session: {value[:64]!r}")
    timeout: int | None = None
    for param in params.split(";"):
        name, eq, val = param.partition("=")
        if name.strip().lower() == "timeout" and eq:
            val = val.strip()
            if not _DIGITS_RE.fullmatch(val):
                raise RtspError(f"bad Session: {value[:64]!r}")
            timeout = int(val)
    return ident, timeout


def format_session(session_id: str, timeout: int | None = None) -> str:
    """``id;timeout=N``: the value of the Session header a SETUP response carries."""
    if not _SESSION_ID_RE.fullmatch(session_id):
        raise ValueError(f"bad session id {session_id!r}")
    return session_id if timeout is None else f"{session_id};timeout={timeout}"


def rtp_info(url: str, seq: int | None = None, rtptime: int | None = None) -> str:
    """One RTP-Info entry, ``url=...;seq=n;rtptime=t``; join several tracks with ``","``."""
    if any(c in url for c in ",; \r\n"):
        raise ValueError(f"url not usable in RTP-Info: {url!r}")
    out = f"url={url}"
    if seq is not None:
        out += f";seq={seq & 0xFFFF}"
    if rtptime is not None:
        out += f";rtptime={rtptime & 0xFFFFFFFF}"
    return out


# --------------------------------------------------------------------------------------------------------
# URLs (RFC 2326 §3.2)

# Control suffixes the SDP we build (a=control:trackID=n) and common servers use; ffmpeg and live555 append them
# to the full request URL, after any query.
_CONTROL_RE = re.compile(r"/((?:trackID|track|streamid)=?[0-9]{1,3})/?$", re.IGNORECASE)
_HOST_RE = re.compile(r"[A-Za-z0-9\-._~%]+|\[[0-9A-Fa-f:.]+\]")


class RtspUrl(NamedTuple):
    host: str
    port: int
    path: str  # with a leading "/", without query or control suffix
    query: str  # without "?"; "" when absent
    control: str | None  # "trackID=0" style suffix, or None for the aggregate URL


def split_control(path: str) -> tuple[str, str | None]:
    """``/dev/ch/trackID=0`` → ``("/dev/ch", "trackID=0")``; no suffix → ``(path, None)``."""
    m = _CONTROL_RE.search(path)
    if m is None:
        return path, None
    return path[:m.start()], m.group(1)


def parse_url(uri: str) -> RtspUrl:
    """Parse ``rtsp://[user:pass@]host[:port]/path[?query][/trackID=n]`` (``rtsps``/``rtspu`` schemes too)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() not in ("rtsp", "rtsps", "rtspu"):
        raise RtspError(f"bad RTSP URL: {uri[:64]!r}")
    slash = rest.find("/")
    qmark = rest.find("?")
    cut = min(i for i in (slash, qmark, len(rest)) if i >= 0)
    authority, tail = rest[:cut], rest[cut:]
    authority = authority.rpartition("@")[2]
    if authority.startswith("["):
        close = authority.find("]")
        host, port_text = authority[:close + 1], authority[close + 1:]
        if port_text and not port_text.startswith(":"):
            raise RtspError(f"bad RTSP URL: {uri[:64]!r}")
        port_text = port_text[1:]
    else:
        host, _, port_text = authority.partition(":")
    if not _HOST_RE.fullmatch(host):
        raise RtspError(f"bad RTSP URL: {uri[:64]!r}")
    port = DEFAULT_PORT
    if port_text:
        if not _DIGITS_RE.fullmatch(port_text) or not 0 < int(port_text) <= 65535:
            raise RtspError(f"bad RTSP URL: {uri[:64]!r}")
        port = int(port_text)
    if any(c in tail for c in " \r\n\t"):
        raise RtspError(f"bad RTSP URL: {uri[:64]!r}")
    tail, control = split_control(tail)
    path, _, query = tail.partition("?")
    path = "/" + path.strip("/") if path.strip("/") else "/"
    return RtspUrl(host, port, path, query, control)
