"""RTP packets (RFC 3550 §5.1), RTP/RTCP demultiplexing (RFC 5761 §4) and RFC 4571 framing over TCP.

Theory of operation
-------------------
Two APIs over the same wire format:

* Hot path, once per received packet: ``parse_rtp(buf)`` does one ``struct.unpack_from`` on the receive buffer
  and returns a plain tuple ``(pt, marker, seq, ts, ssrc, payload_offset, payload_end)``; the caller slices its
  ``memoryview`` once (``memoryview(buf)[off:end]``), so the payload is never copied. The common header (``0x80``:
  version 2, no padding, no extension, no CSRC) takes a short-cut; anything else goes through
  ``_parse_slow``, which validates CSRC count, extension length and padding. ``build_rtp`` is the matching fast
  builder (one ``struct.pack`` and one concatenation).
* Cold path (tests, packetizers, diagnostics): the frozen ``RtpPacket`` dataclass with ``parse``/``__bytes__``,
  which keeps CSRCs, the header extension and the padding length so that a packet round-trips byte-exact when its
  padding octets are zero (the only padding RFC 3550 senders use in practice).

Every malformed input raises ``RtpError`` (a ``ValueError``) with an exact message; nothing else escapes from
``parse_rtp`` or ``RtpPacket.parse`` on any input. Adapters drop and count such packets.

``is_rtcp`` looks at the second octet only: RFC 5761 §4 reserves 192..223 for RTCP when RTP and RTCP share a port
(RTP payload types 64..95 must not be used, so an RTP second octet with the marker set is 0x80 + PT >= 224 for
the dynamic types 96..127). GB/T 28181 devices use PT 96..98 (and 0/8 for audio), so there is no ambiguity.

RFC 4571 framing (GB/T 28181 media over TCP): each RTP packet is preceded by a 16-bit big-endian length.
``Rfc4571Decoder.feed(chunk)`` returns the complete packets as ``memoryview`` slices *of the fed chunk* (no copy)
and copies only the bytes of a packet that straddles two reads. The caller must therefore not mutate a chunk
(e.g. a reused ``recv_into`` buffer) while it still holds frames from it. The internal buffer never holds more
than one partial frame with its 2-byte prefix (<= 65537 bytes), so no size cap is needed beyond the 16-bit length.
Zero-length frames carry nothing and are skipped (counted in ``empty_frames``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Self

__all__ = [
    "RTP_HEADER_SIZE",
    "RTP_VERSION",
    "RFC4571_MAX_FRAME",
    "Rfc4571Decoder",
    "RtcpPacketType",
    "RtpError",
    "RtpPacket",
    "NTP_EPOCH_OFFSET",
    "build_rtcp_bye",
    "build_rtp",
    "build_sender_report",
    "is_rtcp",
    "ntp_timestamp",
    "parse_rtp",
    "rfc4571_frame",
]

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
RFC4571_MAX_FRAME = 0xFFFF

# V=2 P X CC | M PT | seq | timestamp | SSRC   (RFC 3550 §5.1)
_HEADER = struct.Struct("!BBHII")
_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack
_EXT = struct.Struct("!HH")
_LEN = struct.Struct("!H")
_pack_len = _LEN.pack

#: The tuple ``parse_rtp`` returns: (pt, marker, seq, ts, ssrc, payload_offset, payload_end).
RtpTuple = tuple[int, bool, int, int, int, int, int]


class RtpError(ValueError):
    """A received buffer is not a valid RTP packet. The message is exact and stable (tests compare it)."""


class RtcpPacketType(IntEnum):
    """RTCP packet types (RFC 3550 §12.1, RFC 4585 §6.1, RFC 3611 §2)."""

    SR = 200
    RR = 201
    SDES = 202
    BYE = 203
    APP = 204
    RTPFB = 205
    PSFB = 206
    XR = 207


def parse_rtp(buf: bytes | bytearray | memoryview) -> RtpTuple:
    """Parse an RTP header without copying: ``(pt, marker, seq, ts, ssrc, payload_offset, payload_end)``.

    The payload is ``buf[payload_offset:payload_end]`` (padding already removed). Raises ``RtpError``.
    """
    try:
        b0, b1, seq, ts, ssrc = _unpack_header(buf)
    except struct.error:
        raise RtpError("RTP packet too short") from None
    if b0 == 0x80:  # V=2, no padding, no extension, no CSRC: nearly every packet
        return b1 & 0x7F, b1 > 0x7F, seq, ts, ssrc, 12, len(buf)
    return _parse_slow(buf, b0, b1, seq, ts, ssrc)


def _parse_slow(
    buf: bytes | bytearray | memoryview, b0: int, b1: int, seq: int, ts: int, ssrc: int
) -> RtpTuple:
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6}")
    n = len(buf)
    off = 12 + (b0 & 0x0F) * 4  # RFC 3550 §5.1: CC 32-bit CSRC identifiers
    if off > n:
        raise RtpError("RTP CSRC list truncated")
    if b0 & 0x10:  # RFC 3550 §5.3.1: 16-bit profile, 16-bit length in 32-bit words, then the words
        if off + 4 > n:
            raise RtpError("RTP header extension truncated")
        off += 4 + _EXT.unpack_from(buf, off)[1] * 4
        if off > n:
            raise RtpError("RTP header extension truncated")
    end = n
    if b0 & 0x20:  # RFC 3550 §5.1: the last octet counts the padding octets, itself included
        pad = buf[n - 1] if off < n else 256
        if pad > n - off:
            raise RtpError("RTP padding exceeds payload")
        if pad == 0:
            raise RtpError("RTP padding length 0")
        end = n - pad
    return b1 & 0x7F, b1 > 0x7F, seq, ts, ssrc, off, end


def build_rtp(
    pt: int, marker: bool, seq: int, ts: int, ssrc: int, payload: bytes | bytearray | memoryview
) -> bytes:
    """A version-2 RTP packet without CSRCs, extension or padding. ``seq``/``ts`` are taken modulo 2**16/2**32."""
    return (
        _pack_header(0x80, (pt & 0x7F) | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
        + payload
    )


#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_EPOCH_OFFSET = 2_208_988_800
_SR = struct.Struct("!BBHIIIIII")
_RTCP_HEAD = struct.Struct("!BBHI")


def ntp_timestamp(unix_time: float) -> int:
    """The 64-bit NTP timestamp (RFC 3550 §4: seconds since 1900 in 32.32 fixed point) of a Unix time."""
    return int((unix_time + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFF_FFFF_FFFF_FFFF


def _sdes_cname(ssrc: int, cname: str) -> bytes:
    text = cname.encode("utf-8")[:255]
    chunk = _pack_header_ssrc(ssrc) + bytes((1, len(text))) + text + b"\x00"  # CNAME item, then END
    chunk += b"\x00" * (-len(chunk) % 4)
    return bytes((0x81, RtcpPacketType.SDES)) + (len(chunk) // 4).to_bytes(2, "big") + chunk


def _pack_header_ssrc(ssrc: int) -> bytes:
    return (ssrc & 0xFFFFFFFF).to_bytes(4, "big")


def build_sender_report(ssrc: int, ntp: int, rtp_timestamp: int, packets: int, octets: int,
                        cname: str) -> bytes:
    """A compound RTCP packet: a sender report without report blocks, then SDES with ``cname`` (RFC 3550 §6.1).

    ``ntp`` is a 64-bit NTP timestamp (``ntp_timestamp``) of the same instant as ``rtp_timestamp``; counts are
    taken modulo 2**32.
    """
    sr = _SR.pack(0x80, RtcpPacketType.SR, 6, ssrc & 0xFFFFFFFF, ntp >> 32, ntp & 0xFFFFFFFF,
                  rtp_timestamp & 0xFFFFFFFF, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)
    return sr + _sdes_cname(ssrc, cname)


def build_rtcp_bye(ssrc: int, reason: str = "", *, packets: int = 0, octets: int = 0, ntp: int = 0,
                   rtp_timestamp: int = 0, cname: str = "") -> bytes:
    """A compound RTCP packet ending a stream: SR (empty RR when ``ntp`` is 0), SDES CNAME, BYE with ``reason``."""
    if ntp:
        head = _SR.pack(0x80, RtcpPacketType.SR, 6, ssrc & 0xFFFFFFFF, ntp >> 32, ntp & 0xFFFFFFFF,
                        rtp_timestamp & 0xFFFFFFFF, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)
    else:
        head = _RTCP_HEAD.pack(0x80, RtcpPacketType.RR, 1, ssrc & 0xFFFFFFFF)
    body = _pack_header_ssrc(ssrc)
    text = reason.encode("utf-8")[:255]
    if text:
        body += bytes((len(text),)) + text
        body += b"\x00" * (-len(body) % 4)
    bye = bytes((0x81, RtcpPacketType.BYE)) + (len(body) // 4).to_bytes(2, "big") + body
    return head + _sdes_cname(ssrc, cname or "gateway") + bye


def is_rtcp(buf: bytes | bytearray | memoryview) -> bool:
    """True if ``buf`` is RTCP rather than RTP on a shared port: second octet in 192..223 (RFC 5761 §4)."""
    return len(buf) >= 2 and 192 <= buf[1] <= 223


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """An RTP packet for cold paths and tests. ``parse`` copies the payload; use ``parse_rtp`` per packet."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    #: RFC 3550 §5.3.1 "defined by profile" field; ``None`` when the X bit is clear.
    extension_profile: int | None = None
    #: The extension words (a multiple of 4 bytes) without the 4-byte extension header.
    extension: bytes = b""
    #: Number of padding octets, the count octet included (0: P bit clear). Built as zeros + count.
    padding_size: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> Self:
        """Parse a whole packet. Raises ``RtpError`` with the same messages as ``parse_rtp``."""
        pt, marker, seq, ts, ssrc, off, end = parse_rtp(data)
        b0 = data[0]
        cc = b0 & 0x0F
        csrc = struct.unpack_from(f"!{cc}I", data, 12) if cc else ()
        profile: int | None = None
        extension = b""
        if b0 & 0x10:
            ext_at = 12 + 4 * cc
            profile = _EXT.unpack_from(data, ext_at)[0]
            extension = bytes(data[ext_at + 4 : off])
        return cls(
            payload_type=pt,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[off:end]),
            marker=marker,
            csrc=tuple(csrc),
            extension_profile=profile,
            extension=extension,
            padding_size=len(data) - end,
        )

    def __bytes__(self) -> bytes:
        if len(self.csrc) > 15:
            raise ValueError("RTP packet has more than 15 CSRCs")
        if len(self.extension) % 4 or len(self.extension) > 0x3FFFF:
            raise ValueError("RTP header extension length must be a multiple of 4 below 2**18")
        if not 0 <= self.padding_size <= 255:
            raise ValueError("RTP padding size must be 0..255")
        b0 = 0x80 | len(self.csrc)
        if self.padding_size:
            b0 |= 0x20
        if self.extension_profile is not None:
            b0 |= 0x10
        parts = [
            _pack_header(
                b0,
                (self.payload_type & 0x7F) | (0x80 if self.marker else 0),
                self.sequence_number & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc,
            )
        ]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension_profile is not None:
            parts.append(_EXT.pack(self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        if self.padding_size:
            parts.append(bytes(self.padding_size - 1) + bytes((self.padding_size,)))
        return b"".join(parts)


def rfc4571_frame(packet: bytes | bytearray | memoryview) -> bytes:
    """``packet`` with its RFC 4571 §2 16-bit length prefix, ready for a TCP write."""
    n = len(packet)
    if n > RFC4571_MAX_FRAME:
        raise ValueError(f"RTP packet of {n} bytes exceeds the RFC 4571 maximum of 65535")
    return _pack_len(n) + packet


class Rfc4571Decoder:
    """Splits a TCP byte stream into RTP/RTCP packets framed per RFC 4571 §2 (see module docstring).

    ``feed`` never raises: every 16-bit length is a valid frame. Framing errors (a peer that is not sending
    RFC 4571) show up as garbage packets, which ``parse_rtp`` then rejects.
    """

    __slots__ = ("_partial", "frames", "empty_frames")

    def __init__(self) -> None:
        # The bytes of at most one incomplete frame, its length prefix (or the first byte of it) included.
        self._partial = bytearray()
        self.frames = 0
        self.empty_frames = 0

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete frame (at most 2 + 65535)."""
        return len(self._partial)

    def feed(self, data: bytes | bytearray | memoryview) -> list[memoryview]:
        """Append ``data`` from the stream; return every frame it completes, in order.

        Frames wholly inside ``data`` are views into it; a frame that straddles reads is copied once.
        """
        mv = data if isinstance(data, memoryview) else memoryview(data)
        n = len(mv)
        out: list[memoryview] = []
        pos = 0
        partial = self._partial
        if partial:
            have = len(partial)
            if have < 2:  # the length prefix itself was split
                if n == 0:
                    return out
                partial += mv[:1]
                pos = 1
                have = 2
            need = 2 + ((partial[0] << 8) | partial[1]) - have
            take = min(need, n - pos)
            partial += mv[pos : pos + take]
            pos += take
            if take < need:
                return out
            frame = partial[2:]
            partial.clear()
            if frame:
                out.append(memoryview(frame))
            else:
                self.empty_frames += 1
        unpack_len = _LEN.unpack_from
        last = n - 2
        while pos <= last:
            start = pos + 2
            pos = start + unpack_len(mv, pos)[0]
            if pos > n:
                pos = start - 2
                break
            if pos > start:
                out.append(mv[start:pos])
            else:
                self.empty_frames += 1
        if pos < n:
            partial += mv[pos:]
        self.frames += len(out)
        return out

    frame = staticmethod(rfc4571_frame)
