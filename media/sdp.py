"""SDP (RFC 8866, formerly RFC 4566) with the GB/T 28181 extensions: the project's single SDP codec.

Theory of operation
-------------------
``parse(text)`` turns a body into a frozen ``SessionDescription`` holding the lines we understand as fields and
every other line as ordered ``(type, value)`` pairs, so nothing a device sends is lost. ``str(sdp)`` /
``bytes(sdp)`` build it back in RFC 8866 §5 order, CRLF line endings and ALWAYS a trailing CRLF (some Hikvision
firmware answers 415 without it). Builds are canonical, not byte-exact copies of the input.

Parsing is tolerant, as devices are: LF or CRLF (or CR) line endings, blank lines and whitespace around lines and
around ``=`` ignored, lines we do not know kept. It is strict where a wrong guess would mislead the gateway: a
``v=``, ``o=``, ``c=``, ``t=`` or ``m=`` line that does not have its RFC shape, a line that is not ``x=value``
and a body without ``m=`` raise ``SdpError`` with an exact message. Nothing else escapes from ``parse``.

GB/T 28181 additions (the 2016 edition's SDP extensions, plus 2022 and vendor forms):

* ``y=`` the SSRC as 10 decimal digits and ``f=`` the media description
  ``v/{codec}/{resolution}/{fps}/{rc}/{kbps}a/{codec}/{kbps}/{rate}`` (``MediaInfo``). Devices put them after the
  media section (the norm) or before it; both are session-level here and are built after the last media section.
* ``u={channel_id}:0`` and ``t={start} {end}`` (epoch seconds) for playback and download; ``a=downloadspeed:n``.
* TCP media (RFC 4571 framing): proto ``TCP/RTP/AVP`` (some devices write ``RTP/AVP/TCP``), ``a=setup:`` (RFC
  4145 §4) and ``a=connection:new|existing`` (RFC 4145 §5).
* The sub-stream selector in four dialects (``SubstreamDialect``), read into ``substream`` (0 main, 1 sub).

Attribute lookups are case-insensitive on the name (``streamMode`` vs ``streammode``); media-level values win over
session-level ones. Accessors answer what the gateway needs from a device's answer (``media_ip``, ``media_port``,
``transport``, ``setup``, ``ssrc``, ``payload_types``) for the first video section, or the first section if
there is no video. ``gb28181_offer`` and ``gb28181_answer`` build the bodies we send.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Self, TypeVar

__all__ = [
    "GB28181_OFFER_RTPMAPS",
    "MAX_SDP_SIZE",
    "Connection",
    "Direction",
    "MediaDescription",
    "MediaInfo",
    "Origin",
    "PlayMode",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "SetupRole",
    "SubstreamDialect",
    "Transport",
    "format_ssrc",
    "gb28181_answer",
    "gb28181_offer",
    "parse",
    "substream_attribute",
]

MAX_SDP_SIZE = 65536

Attribute = tuple[str, str | None]

_DIGITS = re.compile(r"[0-9]+")
_LINE_SPLIT = re.compile(r"\r\n|\r|\n")


class SdpError(ValueError):
    """An SDP body we cannot use. The message is exact and stable (tests compare it)."""


class Transport(Enum):
    """Media transport, from the ``m=`` proto."""

    UDP = "RTP/AVP"
    TCP = "TCP/RTP/AVP"  # RFC 4571 framing


class SetupRole(Enum):
    """``a=setup:`` (RFC 4145 §4): who opens the TCP connection."""

    ACTIVE = "active"
    PASSIVE = "passive"
    ACTPASS = "actpass"
    HOLDCONN = "holdconn"


class Direction(Enum):
    """Direction attributes (RFC 8866 §6.7)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"


class SubstreamDialect(Enum):
    """Spellings of the sub-stream selector; the value is the attribute name."""

    STREAMNUMBER = "streamnumber"  # GB/T 28181-2022: a=streamnumber:0|1
    STREAM = "stream"  # common vendor form: a=stream:0|1
    STREAMPROFILE = "streamprofile"  # Dahua: a=streamprofile:0|1
    STREAMMODE = "streamMode"  # Mercury / TP-Link: a=streamMode:MAIN|SUB


class PlayMode(Enum):
    """GB/T 28181 session names (``s=``) for live, playback and download."""

    PLAY = "Play"
    PLAYBACK = "Playback"
    DOWNLOAD = "Download"


_SUBSTREAM_NAMES = {d.value.lower(): d for d in SubstreamDialect}
_DIRECTIONS = {d.value: d for d in Direction}
_STREAM_MODES = {"MAIN": 0, "SUB": 1}


def _int(text: str, what: str, line: str, maximum: int) -> int:
    # length first: int() refuses more than 4300 digits with a ValueError of its own
    if len(text) > 20 or not _DIGITS.fullmatch(text) or int(text) > maximum:
        raise SdpError(f"bad {what}= line: {line}")
    return int(text)


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=`` (RFC 8866 §5.2). Session id and version are kept as text (they may exceed 64 bits)."""

    username: str
    session_id: str
    session_version: str
    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Self:
        parts = value.split()
        if len(parts) != 6:
            raise SdpError(f"bad o= line: {value}")
        return cls(parts[0], parts[1], parts[2], parts[5], parts[3], parts[4])

    def __str__(self) -> str:
        return f"{self.username} {self.session_id} {self.session_version} {self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=`` (RFC 8866 §5.7). ``address`` keeps any ``/ttl`` or ``/count`` suffix."""

    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Self:
        parts = value.split()
        if len(parts) != 3:
            raise SdpError(f"bad c= line: {value}")
        return cls(parts[2], parts[0], parts[1])

    @property
    def host(self) -> str:
        """The address without a multicast ``/ttl`` suffix."""
        return self.address.split("/", 1)[0]

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`` (RFC 8866 §6.6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> Self:
        """Parse an attribute value; ``SdpError`` if it is malformed."""
        m = re.fullmatch(r"\s*([0-9]{1,3})\s+([^/\s]+)/([0-9]{1,10})(?:/([0-9]{1,3}))?\s*", value)
        if m is None or int(m.group(1)) > 127:
            raise SdpError(f"bad rtpmap: {value}")
        channels = int(m.group(4)) if m.group(4) else None
        return cls(int(m.group(1)), m.group(2), int(m.group(3)), channels)

    def __str__(self) -> str:
        tail = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """GB/T 28181 ``f=`` line: ``v/{codec}/{resolution}/{fps}/{rc}/{kbps}a/{codec}/{kbps}/{rate}``.

    Every field is text and may be empty. Video codec: 1 MPEG-4, 2 H.264, 3 SVAC, 4 3GP, 5 H.265 (2022).
    Resolution: 1 QCIF, 2 CIF, 3 4CIF, 4 D1, 5 720P, 6 1080P/I (2022 also allows ``WxH``). Rate control:
    1 CBR, 2 VBR. Audio codec: 1 G.711, 2 G.723.1, 3 G.729, 4 G.722.1. Audio kbps code: 1 5.3, 2 6.3, 3 8,
    4 16, 5 24, 6 32, 7 48, 8 64. Sample rate code: 1 8 kHz, 2 14 kHz, 3 16 kHz, 4 32 kHz.
    """

    video_codec: str = ""
    resolution: str = ""
    fps: str = ""
    rate_control: str = ""
    video_kbps: str = ""
    audio_codec: str = ""
    audio_kbps: str = ""
    sample_rate: str = ""

    @classmethod
    def parse(cls, value: str) -> Self:
        """Parse an ``f=`` value; ``SdpError`` if it lacks the ``v/...a/...`` shape. Missing fields are empty."""
        text = value.strip()
        split = text.find("a/")
        if not text.startswith("v/") or split < 0:
            raise SdpError(f"bad f= line: {value}")
        video = text[2:split].split("/")
        audio = text[split + 2 :].split("/")
        if len(video) > 5 or len(audio) > 3:
            raise SdpError(f"bad f= line: {value}")
        video += [""] * (5 - len(video))
        audio += [""] * (3 - len(audio))
        return cls(*video, *audio)

    def __str__(self) -> str:
        return (
            f"v/{self.video_codec}/{self.resolution}/{self.fps}/{self.rate_control}/{self.video_kbps}"
            f"a/{self.audio_codec}/{self.audio_kbps}/{self.sample_rate}"
        )


def _find(attributes: Iterable[Attribute], name: str) -> Iterator[str | None]:
    name = name.lower()
    for key, value in attributes:
        if key.lower() == name:
            yield value


def _first(attributes: Iterable[Attribute], name: str) -> str | None:
    for value in _find(attributes, name):
        return value
    return None


def _direction(attributes: Iterable[Attribute]) -> Direction | None:
    for key, value in attributes:
        if value is None:
            found = _DIRECTIONS.get(key.lower())
            if found is not None:
                return found
    return None


def _setup(attributes: Iterable[Attribute]) -> SetupRole | None:
    value = _first(attributes, "setup")
    if value is None:
        return None
    try:
        return SetupRole(value.strip().lower())
    except ValueError:
        return None


def _substream(attributes: Iterable[Attribute]) -> int | None:
    for key, value in attributes:
        dialect = _SUBSTREAM_NAMES.get(key.lower())
        if dialect is None or value is None:
            continue
        value = value.strip()
        if dialect is SubstreamDialect.STREAMMODE:
            mode = _STREAM_MODES.get(value.upper())
            if mode is not None:
                return mode
        elif _DIGITS.fullmatch(value) and len(value) < 3:
            return int(value)
    return None


def substream_attribute(substream: int, dialect: SubstreamDialect) -> Attribute:
    """The ``(name, value)`` attribute selecting ``substream`` (0 main, 1 sub) in ``dialect``."""
    if substream < 0:
        raise ValueError("substream must not be negative")
    if dialect is SubstreamDialect.STREAMMODE:
        if substream > 1:
            raise ValueError("streamMode has only MAIN and SUB")
        return (dialect.value, "SUB" if substream else "MAIN")
    return (dialect.value, str(substream))


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One media section: ``m=`` and the lines after it (RFC 8866 §5.14)."""

    kind: str
    port: int
    proto: str
    formats: tuple[str, ...] = ()
    #: ``m=video 30000/2 ...``: the port count, or ``None``.
    port_count: int | None = None
    connection: Connection | None = None
    #: ``a=`` lines in order: ``("rtpmap", "96 PS/90000")``, ``("recvonly", None)``.
    attributes: tuple[Attribute, ...] = ()
    #: Other lines (``i=``, ``b=``, ``k=``, unknown types) in order, as ``(type, value)``.
    extra_lines: tuple[tuple[str, str], ...] = ()

    @property
    def transport(self) -> Transport | None:
        """UDP for ``RTP/AVP`` (and ``RTP/SAVP``...), TCP for ``TCP/RTP/AVP`` or ``RTP/AVP/TCP``; else ``None``."""
        proto = self.proto.upper()
        if "RTP" not in proto:
            return None
        return Transport.TCP if "TCP" in proto else Transport.UDP

    @property
    def payload_types(self) -> tuple[int, ...]:
        """The formats that are RTP payload type numbers, in ``m=`` order."""
        return tuple(int(f) for f in self.formats if len(f) <= 3 and _DIGITS.fullmatch(f) and int(f) <= 127)

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        """Well-formed ``a=rtpmap`` attributes by payload type (malformed ones are skipped)."""
        maps: dict[int, RtpMap] = {}
        for value in _find(self.attributes, "rtpmap"):
            if value is not None:
                try:
                    rtpmap = RtpMap.parse(value)
                except SdpError:
                    continue
                maps.setdefault(rtpmap.payload_type, rtpmap)
        return maps

    @property
    def fmtps(self) -> dict[int, str]:
        """``a=fmtp:<pt> <parameters>`` by payload type."""
        params: dict[int, str] = {}
        for value in _find(self.attributes, "fmtp"):
            if value is not None:
                pt, _, rest = value.strip().partition(" ")
                if len(pt) <= 3 and _DIGITS.fullmatch(pt):
                    params.setdefault(int(pt), rest.strip())
        return params

    @property
    def direction(self) -> Direction | None:
        """The direction attribute of this section, if any."""
        return _direction(self.attributes)

    @property
    def setup(self) -> SetupRole | None:
        return _setup(self.attributes)

    @property
    def connection_mode(self) -> str | None:
        """``a=connection:`` value (``new`` or ``existing``), lower-cased."""
        value = _first(self.attributes, "connection")
        return value.strip().lower() if value is not None else None

    @property
    def substream(self) -> int | None:
        """Sub-stream selector in any dialect: 0 main, 1 sub (``None``: absent)."""
        return _substream(self.attributes)

    @property
    def download_speed(self) -> int | None:
        value = _first(self.attributes, "downloadspeed")
        if value is None or len(value) > 10 or not _DIGITS.fullmatch(value.strip()):
            return None
        return int(value)

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=name`` (case-insensitive); ``None`` if absent or a flag."""
        return _first(self.attributes, name)

    def has_attribute(self, name: str) -> bool:
        return any(True for _ in _find(self.attributes, name))

    def lines(self) -> list[str]:
        """The section's lines in RFC 8866 §5 order, without line endings."""
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        out = [" ".join(["m=" + self.kind, port, self.proto, *self.formats])]
        out += _extras(self.extra_lines, "i")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += _extras(self.extra_lines, "b")
        out += _extras(self.extra_lines, "k")
        out += _extras(self.extra_lines, None, exclude="ibk")
        out += _attribute_lines(self.attributes)
        return out


def _extras(extra: Iterable[tuple[str, str]], kinds: str | None, exclude: str = "") -> list[str]:
    if kinds is None:
        return [f"{k}={v}" for k, v in extra if k not in exclude]
    return [f"{k}={v}" for k, v in extra if k in kinds]


def _in_order(extra: Iterable[tuple[str, str]], groups: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Extra lines in the order ``lines()`` writes them (stable within a group), so parse ∘ str is identity."""

    def rank(kv: tuple[str, str]) -> int:
        return next((i for i, group in enumerate(groups) if kv[0] in group), len(groups))

    return tuple(sorted(extra, key=rank))


def _attribute_lines(attributes: Iterable[Attribute]) -> list[str]:
    return [f"a={k}" if v is None else f"a={k}:{v}" for k, v in attributes]


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole SDP body. Build with ``str()`` / ``bytes()``; see the module docstring."""

    media: tuple[MediaDescription, ...]
    origin: Origin | None = None
    session_name: str = "-"
    connection: Connection | None = None
    #: ``t=<start> <stop>`` (NTP or, in GB/T 28181 playback, Unix epoch seconds; ``0 0`` for live).
    timing: tuple[int, int] = (0, 0)
    #: Session-level ``a=`` lines in order.
    attributes: tuple[Attribute, ...] = ()
    #: GB/T 28181 ``y=`` (the SSRC as 10 decimal digits), kept as text.
    y: str | None = None
    #: GB/T 28181 ``f=`` media description, kept as text (``media_info`` parses it).
    f: str | None = None
    #: ``u=``: in GB/T 28181 playback, ``{channel_id}:0``.
    u: str | None = None
    version: int = 0
    #: Other session-level lines (``i=``, ``e=``, ``p=``, ``b=``, ``r=``, ``z=``, ``k=``, further ``t=``,
    #: unknown types) in order, as ``(type, value)``.
    extra_lines: tuple[tuple[str, str], ...] = ()

    # -- what the gateway reads from an answer -------------------------------------------------------------

    @property
    def primary(self) -> MediaDescription:
        """The first ``m=video`` section, else the first section (``parse`` never returns an empty media list)."""
        for media in self.media:
            if media.kind.lower() == "video":
                return media
        if not self.media:
            raise ValueError("SDP has no media section")
        return self.media[0]

    @property
    def media_ip(self) -> str | None:
        """Where the primary media goes: its own ``c=`` if present, else the session ``c=`` (RFC 8866 §5.7)."""
        connection = self.primary.connection or self.connection
        return connection.host if connection is not None else None

    @property
    def media_port(self) -> int:
        return self.primary.port

    @property
    def transport(self) -> Transport | None:
        return self.primary.transport

    @property
    def setup(self) -> SetupRole | None:
        """``a=setup`` of the primary media, else of the session."""
        role = self.primary.setup
        return role if role is not None else _setup(self.attributes)

    @property
    def connection_mode(self) -> str | None:
        mode = self.primary.connection_mode
        if mode is None:
            value = _first(self.attributes, "connection")
            mode = value.strip().lower() if value is not None else None
        return mode

    @property
    def direction(self) -> Direction:
        """Direction of the primary media, else of the session, else ``sendrecv`` (RFC 8866 §6.7)."""
        return self.primary.direction or _direction(self.attributes) or Direction.SENDRECV

    @property
    def substream(self) -> int | None:
        found = self.primary.substream
        return found if found is not None else _substream(self.attributes)

    @property
    def download_speed(self) -> int | None:
        return self.primary.download_speed

    @property
    def payload_types(self) -> tuple[int, ...]:
        return self.primary.payload_types

    @property
    def ssrc(self) -> int | None:
        """SSRC from ``y=`` as an int; ``None`` if ``y=`` is missing, not decimal or beyond 32 bits."""
        if self.y is None:
            return None
        text = self.y.strip()
        if not _DIGITS.fullmatch(text) or len(text) > 10 or int(text) > 0xFFFFFFFF:
            return None
        return int(text)

    @property
    def media_info(self) -> MediaInfo | None:
        """``f=`` parsed; ``None`` if absent or malformed."""
        if self.f is None:
            return None
        try:
            return MediaInfo.parse(self.f)
        except SdpError:
            return None

    @property
    def play_mode(self) -> PlayMode | None:
        """``s=`` as a GB/T 28181 ``PlayMode`` (case-insensitive), else ``None``."""
        name = self.session_name.strip().lower()
        for mode in PlayMode:
            if mode.value.lower() == name:
                return mode
        return None

    def attribute(self, name: str) -> str | None:
        """Value of the first session-level ``a=name`` (case-insensitive)."""
        return _first(self.attributes, name)

    # -- building ------------------------------------------------------------------------------------------

    def lines(self) -> list[str]:
        """All lines in RFC 8866 §5 order (GB/T 28181 ``y=``, ``f=`` last), without line endings."""
        extra = self.extra_lines
        out = [f"v={self.version}"]
        if self.origin is not None:
            out.append(f"o={self.origin}")
        out.append(f"s={self.session_name}")
        out += _extras(extra, "i")
        if self.u is not None:
            out.append(f"u={self.u}")
        out += _extras(extra, "ep")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += _extras(extra, "b")
        out.append(f"t={self.timing[0]} {self.timing[1]}")
        out += _extras(extra, "trz")
        out += _extras(extra, "k")
        out += _extras(extra, None, exclude="iepbtrzk")
        out += _attribute_lines(self.attributes)
        for media in self.media:
            out += media.lines()
        if self.y is not None:
            out.append(f"y={self.y}")
        if self.f is not None:
            out.append(f"f={self.f}")
        return out

    def __str__(self) -> str:
        return "\r\n".join(self.lines()) + "\r\n"

    def to_bytes(self) -> bytes:
        """UTF-8 (text that came in as undecodable bytes goes back out unchanged) with CRLF line endings."""
        return str(self).encode("utf-8", "surrogateescape")

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    @classmethod
    def parse(cls, text: str | bytes) -> Self:
        """Same as the module-level ``parse``."""
        return _parse(cls, text)


def _parse_attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    return (name.strip(), rest.strip() if sep else None)


def _parse_media(value: str) -> tuple[str, int, int | None, str, tuple[str, ...]]:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"bad m= line: {value}")
    port_text, _, count_text = parts[1].partition("/")
    port = _int(port_text, "m", value, 0xFFFF)
    count = _int(count_text, "m", value, 0xFFFF) if count_text else None
    return parts[0], port, count, parts[2], tuple(parts[3:])


class _MediaBuilder:
    __slots__ = ("kind", "port", "count", "proto", "formats", "connection", "attributes", "extra")

    def __init__(self, value: str) -> None:
        self.kind, self.port, self.count, self.proto, self.formats = _parse_media(value)
        self.connection: Connection | None = None
        self.attributes: list[Attribute] = []
        self.extra: list[tuple[str, str]] = []

    def build(self) -> MediaDescription:
        return MediaDescription(
            kind=self.kind,
            port=self.port,
            proto=self.proto,
            formats=self.formats,
            port_count=self.count,
            connection=self.connection,
            attributes=tuple(self.attributes),
            extra_lines=_in_order(self.extra, ("i", "b", "k")),
        )


_S = TypeVar("_S", bound=SessionDescription)


def _parse(cls: type[_S], text: str | bytes) -> _S:
    if isinstance(text, bytes | bytearray | memoryview):
        if len(text) > MAX_SDP_SIZE:
            raise SdpError("SDP too large")
        text = bytes(text).decode("utf-8", "surrogateescape")
    elif len(text) > MAX_SDP_SIZE:
        raise SdpError("SDP too large")
    version: int | None = None
    origin: Origin | None = None
    name: str | None = None
    connection: Connection | None = None
    timing: tuple[int, int] | None = None
    attributes: list[Attribute] = []
    extra: list[tuple[str, str]] = []
    y: str | None = None
    f: str | None = None
    u: str | None = None
    media: list[_MediaBuilder] = []
    current: _MediaBuilder | None = None
    for raw in _LINE_SPLIT.split(text):
        line = raw.strip()
        if not line:
            continue
        kind, sep, value = line.partition("=")
        kind = kind.strip()
        value = value.strip()
        if not sep or len(kind) != 1 or not kind.isascii() or not kind.isalpha():
            raise SdpError(f"bad line: {line[:80]}")
        if kind == "m":
            current = _MediaBuilder(value)
            media.append(current)
        elif kind == "a":
            (current.attributes if current is not None else attributes).append(_parse_attribute(value))
        elif kind == "c":
            parsed = Connection.parse(value)
            if current is not None:
                current.connection = parsed
            else:
                connection = parsed
        elif kind == "y":  # GB/T 28181 y=, f= (and u=): session-level wherever they appear; the last one wins
            y = value
        elif kind == "f":
            f = value
        elif kind == "u":
            u = value
        elif kind in "vos":  # a repeated v=/o=/s= (broken devices) is ignored: the first one wins
            if kind == "v" and version is None:
                version = _int(value, "v", value, 0xFFFF)
            elif kind == "o" and origin is None:
                origin = Origin.parse(value)
            elif kind == "s" and name is None:
                name = value
        elif current is not None:
            current.extra.append((kind, value))
        elif kind == "t" and timing is None:
            parts = value.split()
            if len(parts) != 2:
                raise SdpError(f"bad t= line: {value}")
            timing = (_int(parts[0], "t", value, 2**64 - 1), _int(parts[1], "t", value, 2**64 - 1))
        else:
            extra.append((kind, value))
    if not media:
        raise SdpError("missing m= line")
    return cls(
        media=tuple(m.build() for m in media),
        origin=origin,
        session_name=name if name is not None else "-",
        connection=connection,
        timing=timing if timing is not None else (0, 0),
        attributes=tuple(attributes),
        y=y,
        f=f,
        u=u,
        version=version if version is not None else 0,
        extra_lines=_in_order(extra, ("i", "ep", "b", "trz", "k")),
    )


def parse(text: str | bytes) -> SessionDescription:
    """Parse an SDP body (``str`` or UTF-8 ``bytes``). Raises ``SdpError`` and nothing else."""
    return _parse(SessionDescription, text)


# -- GB/T 28181 bodies --------------------------------------------------------------------------------------

#: The payload types a GB/T 28181 platform offers: PS, MPEG-4, H.264, all on the 90 kHz clock.
GB28181_OFFER_RTPMAPS = (RtpMap(96, "PS", 90000), RtpMap(97, "MPEG4", 90000), RtpMap(98, "H264", 90000))


def format_ssrc(ssrc: int | str) -> str:
    """``y=`` text: 10 decimal digits, zero-padded."""
    if isinstance(ssrc, str):
        if not _DIGITS.fullmatch(ssrc) or len(ssrc) > 10:
            raise ValueError(f"SSRC must be up to 10 decimal digits: {ssrc!r}")
        return ssrc.zfill(10)
    if not 0 <= ssrc <= 0xFFFFFFFF:
        raise ValueError(f"SSRC out of range: {ssrc}")
    return f"{ssrc:010d}"


def _tcp_attributes(transport: Transport, setup: SetupRole | None, default: SetupRole) -> list[Attribute]:
    if transport is not Transport.TCP:
        if setup is not None:
            raise ValueError("a=setup applies to TCP transport only")
        return []
    return [("setup", (setup or default).value), ("connection", "new")]


def gb28181_offer(
    *,
    platform_id: str,
    media_ip: str,
    port: int,
    ssrc: int | str,
    mode: PlayMode = PlayMode.PLAY,
    transport: Transport = Transport.UDP,
    setup: SetupRole | None = None,
    channel_id: str | None = None,
    start: int = 0,
    end: int = 0,
    download_speed: int | None = None,
    media_info: MediaInfo | str | None = None,
    substream: int | None = None,
    dialect: SubstreamDialect = SubstreamDialect.STREAMNUMBER,
) -> SessionDescription:
    """The INVITE offer a GB/T 28181 platform sends for live, playback or download (see GB28181.md).

    ``setup`` defaults to ``passive`` for TCP (we listen, the device connects). ``channel_id`` fills
    ``u={channel_id}:0`` for playback and download; ``start``/``end`` are Unix epoch seconds (``t=``).
    ``download_speed`` (download only) adds ``a=downloadspeed``; ``substream`` adds the selector in ``dialect``.
    """
    if mode is PlayMode.PLAY and (start or end):
        raise ValueError("live offers have t=0 0")
    if download_speed is not None and mode is not PlayMode.DOWNLOAD:
        raise ValueError("a=downloadspeed applies to downloads only")
    attributes: list[Attribute] = [("recvonly", None)]
    attributes += [("rtpmap", str(m)) for m in GB28181_OFFER_RTPMAPS]
    if download_speed is not None:
        attributes.append(("downloadspeed", str(download_speed)))
    attributes += _tcp_attributes(transport, setup, SetupRole.PASSIVE)
    if substream is not None:
        attributes.append(substream_attribute(substream, dialect))
    video = MediaDescription(
        kind="video",
        port=port,
        proto=transport.value,
        formats=tuple(str(m.payload_type) for m in GB28181_OFFER_RTPMAPS),
        attributes=tuple(attributes),
    )
    return SessionDescription(
        media=(video,),
        origin=Origin(platform_id, "0", "0", media_ip),
        session_name=mode.value,
        connection=Connection(media_ip),
        timing=(start, end),
        y=format_ssrc(ssrc),
        f=None if media_info is None else str(media_info),
        u=f"{channel_id}:0" if channel_id is not None and mode is not PlayMode.PLAY else None,
    )


def gb28181_answer(
    *,
    device_id: str,
    media_ip: str,
    port: int,
    ssrc: int | str,
    mode: PlayMode = PlayMode.PLAY,
    transport: Transport = Transport.UDP,
    setup: SetupRole | None = None,
    start: int = 0,
    end: int = 0,
    media_info: MediaInfo | str | None = None,
) -> SessionDescription:
    """The 200 OK answer a device (our simulator, or the gateway toward an upper platform) sends: ``sendonly``,
    PS on payload type 96, the SSRC it will use. For TCP, ``setup`` is the answerer's role: the opposite of the
    offer's (offer ``passive`` → answer ``active``, the default).
    """
    attributes: list[Attribute] = [("sendonly", None), ("rtpmap", str(GB28181_OFFER_RTPMAPS[0]))]
    attributes += _tcp_attributes(transport, setup, SetupRole.ACTIVE)
    video = MediaDescription(
        kind="video", port=port, proto=transport.value, formats=("96",), attributes=tuple(attributes)
    )
    return SessionDescription(
        media=(video,),
        origin=Origin(device_id, "0", "0", media_ip),
        session_name=mode.value,
        connection=Connection(media_ip),
        timing=(start, end),
        y=format_ssrc(ssrc),
        f=None if media_info is None else str(media_info),
    )
