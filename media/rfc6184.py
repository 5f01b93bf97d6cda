"""RFC 6184 depacketizer: H.264 RTP payloads (single NAL unit, STAP-A, FU-A) in, Annex B access units out.

Theory of operation
-------------------
Some GB/T 28181 devices answer an INVITE with raw H.264 over RTP (``a=rtpmap:98 H264/90000``) instead of PS.
``Rfc6184Depacketizer.feed(payload, ts, marker, discontinuity)`` is called with each RTP payload in sequence order
(after reordering), like ``media.ps.PsDemuxer.feed``. It is sans-I/O and never raises on bad input: malformed
payloads are dropped and counted in int attributes. It returns the access units that the packet completed.

Packetization modes 0 and 1 (RFC 6184 §6.2, §6.3) are supported: the first payload byte is a NAL unit header
(§5.3, ``F | NRI | type``); types 1..23 are a single NAL unit (§5.6), 24 is STAP-A (§5.7.1: 16-bit size, NAL unit,
repeated), 28 is FU-A (§5.8: FU indicator with the original F and NRI, FU header ``S | E | R | type``). The
interleaved-mode types (STAP-B 25, MTAP 26/27, FU-B 29) and the reserved ones (0, 30, 31) are dropped
(``unsupported_packets``).

Access units (§5.1): all NAL units with the same RTP timestamp form one access unit; it ends on the marker bit
(set on the last packet of an access unit) or, when the sender omits it, on the first packet of the next
timestamp. Each NAL unit is written with a 4-byte start code (``00 00 00 01``, ITU-T H.264 Annex B), so the output
is what ``PsDemuxer`` produces for the same stream. Payloads are kept by reference (``memoryview`` slices, no copy)
until their access unit is emitted, then joined once; pass buffers that are not modified afterwards.

Timestamps: the 32-bit RTP timestamp (90 kHz) is unwrapped by serial difference and given as a 33-bit value
(``pts == dts``; RTP carries no decoding time), so that it wraps like a PES timestamp
(``media.frames.AccessUnit``).

Losses (``discontinuity=True``): nobody knows what was lost, so the open access unit is dropped
(``truncated_frames``) and so is every following packet until one with a new timestamp that visibly starts an
access unit: a non-VCL NAL unit that may open one (SEI, SPS, PPS, AUD, ...), or the first slice of a picture
(``first_mb_in_slice == 0``, whose Exp-Golomb code is the single bit ``1``: §7.3.3), whole or as an FU-A start.
A marker bit also ends the discarding (the damaged access unit is over). What RTP cannot show is a loss of an
access unit's leading NAL units (its SPS/PPS, say) when the next one may also open an access unit; so, as the PS
demuxer learns the pack-per-frame pattern, the depacketizer learns whether every keyframe so far began with its
SPS (or an AUD), and then drops the first keyframe after a loss that does not. A lost leading SEI or AUD can still
go unnoticed: such an access unit is the clean one minus those NAL units, and decodes the same.
An FU-A whose start or end is missing without a signalled loss (a broken sender) drops the NAL unit and its
access unit (``fu_errors``).

With ``wait_keyframe`` (default) no access unit leaves before the first keyframe (an IDR slice or an SPS, as in
``media.h264.is_keyframe``). Memory is bounded: an access unit larger than ``max_frame_size`` bytes, or made of
more than ``max_parts`` pieces (tiny fragments would otherwise hold many objects per byte), is dropped
(``oversized_frames``).
"""

from __future__ import annotations

from . import h264
from .frames import AccessUnit, Codec

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "DEFAULT_MAX_PARTS", "Rfc6184Depacketizer", "starts_access_unit"]

DEFAULT_MAX_FRAME_SIZE = 8 << 20
DEFAULT_MAX_PARTS = 16384

Buffer = bytes | bytearray | memoryview

_START_CODE = b"\x00\x00\x00\x01"
_TS33 = (1 << 33) - 1
_STAP_A = 24
_FU_A = 28
# NAL unit types that may open an access unit (H.264 §7.4.1.2.3): SEI, SPS, PPS, AUD, 14..18 (prefix, subset SPS,
# depth parameter set and reserved ones).
_AU_OPENERS = frozenset({6, 7, 8, 9, 14, 15, 16, 17, 18})


def _opens_au(nal_type: int, next_byte: int) -> bool:
    """True if a NAL unit of this type, whose first payload byte is ``next_byte``, can begin an access unit."""
    if 1 <= nal_type <= 5:
        return next_byte >= 0x80  # first_mb_in_slice ue(v) == 0 is the single bit 1
    return nal_type in _AU_OPENERS


def starts_access_unit(payload: Buffer) -> bool:
    """True if this RTP payload visibly begins an access unit (used to resynchronise after a loss)."""
    n = len(payload)
    if n < 2:
        return False
    t = payload[0] & 0x1F
    if t == _FU_A:
        fu = payload[1]
        return bool(fu & 0x80) and n > 2 and _opens_au(fu & 0x1F, payload[2])
    if t == _STAP_A:
        return n > 4 and _opens_au(payload[3] & 0x1F, payload[4] if n > 4 else 0)
    return _opens_au(t, payload[1])


class Rfc6184Depacketizer:
    """Sans-I/O RFC 6184 depacketizer (see the module docstring). ``feed`` never raises on any input."""

    __slots__ = (
        "_max_frame",
        "_max_parts",
        "_keyseen",
        "_open",
        "_ts",
        "_pts",
        "_parts",
        "_size",
        "_key",
        "_bad",
        "_skip",
        "_fu_at",
        "_fu_size",
        "_last_ts",
        "_ext_ts",
        "_prev_ts",
        "_first_type",
        "_resumed",
        "_key_led",
        "frames",
        "keyframes",
        "skipped_frames",
        "truncated_frames",
        "oversized_frames",
        "malformed_packets",
        "unsupported_packets",
        "fu_errors",
        "discarded_packets",
        "sps",
        "pps",
        "width",
        "height",
    )

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_parts: int = DEFAULT_MAX_PARTS,
        wait_keyframe: bool = True,
    ) -> None:
        """:param max_frame_size: an access unit growing past this many bytes is dropped.
        :param max_parts: an access unit made of more pieces (NAL units and fragments) than this is dropped.
        :param wait_keyframe: emit nothing before the first keyframe (IDR slice or SPS).
        """
        self._max_frame = max_frame_size
        self._max_parts = max_parts
        self._keyseen = not wait_keyframe
        self._open = False
        self._ts = 0  # RTP timestamp of the open access unit
        self._pts = 0
        self._parts: list[Buffer] = []
        self._size = 0
        self._key = False
        self._bad = False  # the open access unit is damaged: drop it when it ends
        self._skip = False  # after a loss: discard until a packet that starts an access unit
        self._fu_at = -1  # index in _parts where the open FU-A NAL unit begins (-1: none open)
        self._fu_size = 0
        self._last_ts = -1
        self._ext_ts = 0
        self._prev_ts = -1  # timestamp of the last packet fed
        self._first_type = -1  # NAL type that opened the access unit in progress
        self._resumed = False  # the access unit in progress is the first one after a loss
        self._key_led = 0  # keyframes so far began with SPS/AUD: 1 all, -1 not all, 0 none seen yet
        #: Access units emitted, and how many of them were keyframes.
        self.frames = 0
        self.keyframes = 0
        #: Complete access units dropped while waiting for the first keyframe.
        self.skipped_frames = 0
        #: Access units dropped because of a loss or a broken FU-A.
        self.truncated_frames = 0
        #: Access units dropped for exceeding ``max_frame_size`` or ``max_parts``.
        self.oversized_frames = 0
        #: Payloads that did not parse (empty, forbidden bit set, STAP-A sizes past the end, short FU-A).
        self.malformed_packets = 0
        #: STAP-B, MTAP, FU-B and reserved NAL unit types (interleaved mode is not supported).
        self.unsupported_packets = 0
        #: FU-A fragments without their start, or NAL units whose end never came.
        self.fu_errors = 0
        #: Packets discarded while resynchronising after a loss.
        self.discarded_packets = 0
        #: The latest parameter sets seen (NAL units without start code).
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        #: Picture size from the latest SPS, if it parsed.
        self.width: int | None = None
        self.height: int | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for the access unit in progress."""
        return self._size

    def feed(self, payload: Buffer, ts: int, marker: bool = False, discontinuity: bool = False) -> list[AccessUnit]:
        """Depacketize one RTP payload; return the access units it completed.

        :param payload: the RTP payload (kept by reference until its access unit is emitted).
        :param ts: the packet's 32-bit RTP timestamp.
        :param marker: the RTP marker bit: the last packet of an access unit.
        :param discontinuity: packets were lost before this one (an RTP sequence gap).
        """
        out: list[AccessUnit] = []
        if discontinuity:
            self._lose()
        if self._open and ts != self._ts:
            self._end(out)
        prev = self._prev_ts
        self._prev_ts = ts
        resumed = False
        if self._skip:  # after a loss: the same timestamp is the same (damaged) access unit
            if ts == prev or not starts_access_unit(payload):
                self.discarded_packets += 1
                if marker:
                    self._skip = False
                return out
            self._skip = False
            resumed = True
        if not self._open:
            self._begin(ts)
            self._resumed = resumed
        self._add(payload)
        if marker:
            self._end(out)
        return out

    def flush(self) -> list[AccessUnit]:
        """End of input: emit the access unit in progress if it is whole."""
        out: list[AccessUnit] = []
        if self._open:
            self._end(out)
        return out

    def reset(self) -> None:
        """The caller lost its place in the stream (e.g. an SSRC change): drop the partial access unit."""
        self._lose()
        self._last_ts = -1

    # -- internals -----------------------------------------------------------------------------------------------

    def _lose(self) -> None:
        if self._open:
            self.truncated_frames += 1
            self._drop()
        self._skip = True

    def _drop(self) -> None:
        self._open = False
        self._parts = []
        self._size = 0
        self._fu_at = -1
        self._bad = False

    def _begin(self, ts: int) -> None:
        last = self._last_ts
        if last < 0:
            self._ext_ts = ts
        else:  # serial difference (RFC 1982) of 32-bit timestamps
            self._ext_ts += ((ts - last + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        self._last_ts = ts
        self._open = True
        self._ts = ts
        self._pts = self._ext_ts & _TS33
        self._key = False
        self._bad = False
        self._first_type = -1

    def _nal(self, nal: Buffer, t: int) -> None:
        """Append one whole NAL unit (type ``t``)."""
        if self._first_type < 0:
            self._first_type = t
        self._parts.append(_START_CODE)
        self._parts.append(nal)
        self._size += 4 + len(nal)
        if t == 5:
            self._key = True
        elif t == 7:
            self._key = True
            self._set_sps(bytes(nal))
        elif t == 8:
            self.pps = bytes(nal)

    def _add(self, p: Buffer) -> None:
        n = len(p)
        if n == 0 or p[0] & 0x80:  # forbidden_zero_bit (H.264 §7.4.1)
            self.malformed_packets += 1
            self._bad = True
            return
        t = p[0] & 0x1F
        if self._fu_at >= 0 and t != _FU_A:  # an FU-A NAL unit that never ended
            self._fu_broken()
        if 1 <= t <= 23:
            self._nal(p, t)
        elif t == _FU_A:
            if n < 3:
                self.malformed_packets += 1
                self._bad = True
                return
            fu = p[1]
            if fu & 0x80:  # S: a new fragmented NAL unit
                if self._fu_at >= 0:
                    self._fu_broken()
                nt = fu & 0x1F
                if self._first_type < 0:
                    self._first_type = nt
                self._fu_at = len(self._parts)
                self._parts.append(_START_CODE)
                self._parts.append(bytes(((p[0] & 0xE0) | nt,)))
                self._parts.append(p[2:])
                self._fu_size = 5 + n - 2
                self._size += self._fu_size
                if nt == 5 or nt == 7:
                    self._key = True
                if fu & 0x40:  # S and E together (not allowed, §5.8): a whole NAL unit
                    self._fu_at = -1
            elif self._fu_at < 0:
                self.fu_errors += 1
                self._bad = True
                return
            else:
                self._parts.append(p[2:])
                self._fu_size += n - 2
                self._size += n - 2
                if fu & 0x40:  # E
                    self._fu_at = -1
        elif t == _STAP_A:
            pos = 1
            while pos + 2 <= n:
                size = (p[pos] << 8) | p[pos + 1]
                pos += 2
                if size == 0 or pos + size > n or p[pos] & 0x80:
                    self.malformed_packets += 1
                    self._bad = True
                    break
                self._nal(p[pos : pos + size], p[pos] & 0x1F)
                pos += size
            else:
                if pos != n:  # one stray byte after the last aggregation unit
                    self.malformed_packets += 1
                    self._bad = True
        else:
            self.unsupported_packets += 1
            self._bad = True
        if self._size > self._max_frame or len(self._parts) > self._max_parts:
            self.oversized_frames += 1
            self._drop()
            self._skip = True  # the rest of this access unit, until the next one starts

    def _fu_broken(self) -> None:
        """The open FU-A NAL unit lost its end: take it out; its access unit is damaged."""
        self.fu_errors += 1
        del self._parts[self._fu_at :]
        self._size -= self._fu_size
        self._fu_at = -1
        self._bad = True

    def _end(self, out: list[AccessUnit]) -> None:
        if self._fu_at >= 0:
            self._fu_broken()
        parts = self._parts
        key = self._key
        bad = self._bad
        self._drop()
        if not parts:
            return
        if key:
            led = self._first_type == 7 or self._first_type == 9
            if self._resumed and not led and self._key_led == 1:
                bad = True  # every keyframe began with its SPS (or AUD): this one lost its start
            elif not bad:
                self._key_led = -1 if not led else (1 if self._key_led == 0 else self._key_led)
        if bad:
            self.truncated_frames += 1
            return
        if not self._keyseen:
            if not key:
                self.skipped_frames += 1
                return
            self._keyseen = True
        data = b"".join(parts)
        self.frames += 1
        if key:
            self.keyframes += 1
        out.append(AccessUnit(Codec.H264, self._pts, self._pts, key, data))

    def _set_sps(self, sps: bytes) -> None:
        if sps == self.sps:
            return
        self.sps = sps
        try:
            info = h264.parse_sps(sps)
            self.width, self.height = info.width, info.height
        except ValueError:
            self.width = self.height = None
