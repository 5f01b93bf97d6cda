"""RTP packetizers for RTSP egress: H.264 (RFC 6184), H.265 (RFC 7798), G.711 (RFC 3551), AAC (RFC 3640).

Theory of operation
-------------------
A packetizer turns ``media.frames.AccessUnit``s into RTP packets for one outgoing stream (one viewer session).
``packetize(au)`` is called once per access unit and returns the packets (``bytes``, RTP header included), in
order. It is sans-I/O: the caller sends them.

* Sequence numbers start at ``seq`` and run on modulo 2**16; ``.seq`` is always the number the *next* packet will
  carry (the ``seq`` of an RTSP ``RTP-Info`` header).
* RTP timestamps: ``(pts - first pts)`` converted from 90 kHz to the payload clock, plus ``ts_offset``, modulo
  2**32. The 33-bit PES timestamps are unwrapped by serial difference, so a PES wrap does not jump, and B-frame
  reordering (pts going back) gives smaller timestamps as it should. A session that is re-created (PLAY after
  PAUSE) passes the old ``.seq`` and a ``ts_offset`` derived from the old ``.last_timestamp`` to stay continuous.
  An access unit without pts reuses the previous timestamp (video) or follows the previous frame (audio).
  ``.last_timestamp`` is the RTP timestamp of the latest access unit (``ts_offset`` before the first one).
* ``mtu`` is the largest RTP *payload* (header excluded), 1400 by default.

H.264 (RFC 6184, packetization-mode 1, non-interleaved): start codes are stripped; a NAL unit of at most ``mtu``
bytes is a single NAL unit packet (§5.6), a larger one is cut into FU-A fragments (§5.8: FU indicator with the NAL
unit's F and NRI and type 28, FU header ``S E R type``; each fragment payload is at most ``mtu`` bytes). Access
unit delimiters (type 9) and filler data (type 12) are dropped: RTP marks access units with the timestamp and the
marker bit. SEI is sent as is. The latest SPS and PPS seen are kept; an access unit with an IDR slice that lacks
them gets them inserted in front (a viewer that joins mid-stream, or a camera that sends parameter sets only out
of band or once). The marker bit is set on the last packet of each access unit.

H.265 (RFC 7798): the same with the 2-byte NAL unit header: single NAL unit packets (§4.4.1) and FUs (type 49,
§4.4.3: payload header with type 49 and the original F, LayerId and TID; FU header ``S E FuType``). AUD (35) and
FD (38) are dropped; VPS/SPS/PPS are inserted before an IRAP picture (types 16..23) that lacks them.

G.711 (RFC 3551 §4.5.14, PCMU/PCMA, 8 kHz): one byte per sample; a payload longer than ``mtu`` is split, each
packet's timestamp advanced by the samples before it. The marker bit stays clear (continuous audio).

AAC (RFC 3640 mpeg4-generic, mode AAC-hbr): ADTS headers (ISO/IEC 13818-7 §6.2) are stripped; each packet is
AU-headers-length (16 bits, in bits), one 16-bit AU header per AU (13-bit size, 3-bit index/index-delta 0:
consecutive AUs), then the raw AUs. Several ADTS frames of one access unit share a packet while they fit; an AU
larger than the packet is fragmented (§3.2.3, each fragment with the AU header of the whole AU). The clock is the
sample rate of the first ADTS header; each AU lasts 1024 samples per raw data block. The marker bit is set on each
packet that ends an AU (all but non-final fragments), as §3.3.6 specifies. Malformed ADTS data ends the access
unit and is counted in ``malformed_frames``.

SDP helpers: ``h264_fmtp``, ``h265_fmtp`` and ``aac_fmtp`` build the ``a=fmtp`` parameters; ``adts_config``
derives the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) from an ADTS header.
"""

from __future__ import annotations

import base64
import struct

from .frames import AccessUnit
from .h264 import profile_level_id, split_annexb

__all__ = [
    "AAC_SAMPLE_RATES",
    "AacPacketizer",
    "adts_info",
    "G711Packetizer",
    "H264Packetizer",
    "H265Packetizer",
    "PacketizeError",
    "aac_fmtp",
    "adts_config",
    "h264_fmtp",
    "h265_fmtp",
]

DEFAULT_MTU = 1400
VIDEO_CLOCK = 90000
G711_CLOCK = 8000
#: ``sampling_frequency_index`` -> Hz (ISO/IEC 14496-3 Table 1.18).
AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)

_MASK16 = 0xFFFF
_MASK32 = 0xFFFFFFFF
_MASK33 = (1 << 33) - 1
_HALF33 = 1 << 32

_pack_rtp = struct.Struct("!BBHII").pack
_pack_rtp_au = struct.Struct("!BBHIIHH").pack  # RTP header + AU-headers-length + one AU header
_pack_h = struct.Struct("!H").pack

# H.264 NAL unit types (ITU-T H.264 Table 7-1)
_H264_IDR = 5
_H264_SPS = 7
_H264_PPS = 8
_H264_DROP = frozenset({9, 12})  # AUD, filler data
_FU_A = 28
# H.265 NAL unit types (ITU-T H.265 Table 7-1)
_H265_VPS = 32
_H265_SPS = 33
_H265_PPS = 34
_H265_DROP = frozenset({35, 38})  # AUD, FD
_FU_265 = 49


_BYTE = tuple(bytes((i,)) for i in range(256))


class PacketizeError(ValueError):
    """Bad arguments to an SDP helper (e.g. a buffer that is not an ADTS header)."""


class _Packetizer:
    """Sequence numbers and timestamps shared by every packetizer."""

    __slots__ = ("ssrc", "pt", "seq", "ts_offset", "mtu", "clock_rate", "last_timestamp", "packets", "octets",
                 "_first", "_last_pts", "_ext")

    def __init__(self, ssrc: int, pt: int, seq: int = 0, ts_offset: int = 0, mtu: int = DEFAULT_MTU,
                 clock_rate: int = VIDEO_CLOCK) -> None:
        if mtu < 16:
            raise ValueError(f"mtu {mtu} is too small")
        self.ssrc = ssrc & _MASK32
        self.pt = pt & 0x7F
        #: Sequence number of the next packet.
        self.seq = seq & _MASK16
        self.ts_offset = ts_offset & _MASK32
        #: Largest RTP payload in bytes.
        self.mtu = mtu
        self.clock_rate = clock_rate
        #: RTP timestamp of the latest access unit (``ts_offset`` before the first).
        self.last_timestamp = self.ts_offset
        #: Packets and payload octets produced (for RTCP sender reports).
        self.packets = 0
        self.octets = 0
        self._first = True
        self._last_pts = 0
        self._ext = 0  # unwrapped pts - first pts, 90 kHz

    def _timestamp(self, pts: int | None) -> int | None:
        """The RTP timestamp of ``pts`` (None: no pts, the caller decides)."""
        if pts is None:
            return None
        if self._first:
            self._first = False
            self._ext = 0
        else:
            self._ext += ((pts - self._last_pts + _HALF33) & _MASK33) - _HALF33
        self._last_pts = pts
        ext = self._ext
        clock = self.clock_rate
        ticks = ext if clock == VIDEO_CLOCK else ext * clock // VIDEO_CLOCK
        return (ticks + self.ts_offset) & _MASK32


class _VideoPacketizer(_Packetizer):
    __slots__ = ()

    def _video_ts(self, au: AccessUnit) -> int:
        ts = self._timestamp(au.pts)
        if ts is None:
            ts = self.last_timestamp
        self.last_timestamp = ts
        return ts


    def _fu_prefix(self, view: memoryview) -> tuple[bytes, int]:
        """The fragmentation unit's prefix for this NAL unit (everything before the FU header) and its type."""
        raise NotImplementedError

    def _packets(self, nals: list[bytes | memoryview], ts: int) -> list[bytes]:
        """Single NAL unit packets, or FU fragments (H.264 FU-A, H.265 FU) for NAL units above the MTU.

        A fragment carries the FU prefix (1 byte for H.264, 2 for H.265, in place of the NAL header) and a
        one-byte FU header (start bit, end bit, the NAL type); the marker goes on the access unit's last packet.
        """
        out: list[bytes] = []
        mtu = self.mtu
        pt = self.pt
        ssrc = self.ssrc
        seq = self.seq
        octets = 0
        last = len(nals) - 1
        for i, nal in enumerate(nals):
            n = len(nal)
            octets += n
            if n <= mtu:
                b1 = pt | 0x80 if i == last else pt
                out.append(_pack_rtp(0x80, b1, seq, ts, ssrc) + nal)
                seq = (seq + 1) & _MASK16
                continue
            view = memoryview(nal)
            prefix, typ = self._fu_prefix(view)
            pos = len(prefix)  # the NAL header is replaced by the prefix and FU header
            chunk = mtu - pos - 1
            start = 0x80
            while pos < n:
                end = pos + chunk
                if end >= n:
                    end = n
                    fuh = start | 0x40 | typ
                    b1 = pt | 0x80 if i == last else pt
                else:
                    fuh = start | typ
                    b1 = pt
                out.append(b"".join((_pack_rtp(0x80, b1, seq, ts, ssrc), prefix, _BYTE[fuh], view[pos:end])))
                seq = (seq + 1) & _MASK16
                octets += 1  # prefix + FU header are one byte more than the NAL header they replace
                start = 0
                pos = end
        self.seq = seq
        self.packets += len(out)
        self.octets += octets
        return out


class H264Packetizer(_VideoPacketizer):
    """RFC 6184 packetization-mode 1: single NAL unit packets and FU-A (see the module docstring)."""

    __slots__ = ("sps", "pps", "inserted_parameter_sets")

    def __init__(self, ssrc: int, pt: int, seq: int = 0, ts_offset: int = 0, mtu: int = DEFAULT_MTU) -> None:
        super().__init__(ssrc, pt, seq, ts_offset, mtu, VIDEO_CLOCK)
        #: The latest parameter sets seen (NAL units without start code).
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        #: Parameter set NAL units inserted before IDR access units that lacked them.
        self.inserted_parameter_sets = 0

    def packetize(self, au: AccessUnit) -> list[bytes]:
        """The RTP packets of one Annex B access unit; the last one has the marker bit."""
        ts = self._video_ts(au)
        nals: list[bytes | memoryview] = []
        has_sps = has_pps = has_idr = False
        last_sps = -1
        for nal in split_annexb(au.data):
            t = nal[0] & 0x1F
            if t in _H264_DROP:
                continue
            if t == _H264_SPS:
                has_sps = True
                self.sps = bytes(nal)
                last_sps = len(nals)
            elif t == _H264_PPS:
                has_pps = True
                self.pps = bytes(nal)
            elif t == _H264_IDR:
                has_idr = True
            nals.append(nal)
        if has_idr:
            if not has_sps and self.sps is not None:
                nals.insert(0, self.sps)
                last_sps = 0
                self.inserted_parameter_sets += 1
            if not has_pps and self.pps is not None:
                nals.insert(last_sps + 1, self.pps)
                self.inserted_parameter_sets += 1
        return self._packets(nals, ts)

    def _fu_prefix(self, view: memoryview) -> tuple[bytes, int]:
        """RFC 6184 §5.8: the FU indicator (F and NRI of the NAL header, type 28) and the NAL type."""
        h = view[0]
        return _BYTE[(h & 0xE0) | _FU_A], h & 0x1F


class H265Packetizer(_VideoPacketizer):
    """RFC 7798: single NAL unit packets and FUs (type 49) (see the module docstring)."""

    __slots__ = ("vps", "sps", "pps", "inserted_parameter_sets")

    def __init__(self, ssrc: int, pt: int, seq: int = 0, ts_offset: int = 0, mtu: int = DEFAULT_MTU) -> None:
        super().__init__(ssrc, pt, seq, ts_offset, mtu, VIDEO_CLOCK)
        #: The latest parameter sets seen (NAL units with their 2-byte header, without start code).
        self.vps: bytes | None = None
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        #: Parameter set NAL units inserted before IRAP access units that lacked them.
        self.inserted_parameter_sets = 0

    def packetize(self, au: AccessUnit) -> list[bytes]:
        """The RTP packets of one Annex B access unit; the last one has the marker bit."""
        ts = self._video_ts(au)
        nals: list[bytes | memoryview] = []
        seen: set[int] = set()
        irap = False
        for nal in split_annexb(au.data):
            if len(nal) < 2:
                continue  # not a NAL unit: the header alone is 2 bytes
            t = (nal[0] >> 1) & 0x3F
            if t in _H265_DROP:
                continue
            if t == _H265_VPS:
                self.vps = bytes(nal)
                seen.add(t)
            elif t == _H265_SPS:
                self.sps = bytes(nal)
                seen.add(t)
            elif t == _H265_PPS:
                self.pps = bytes(nal)
                seen.add(t)
            elif 16 <= t <= 23:
                irap = True
            nals.append(nal)
        if irap and len(seen) < 3:
            for t, ps in ((_H265_VPS, self.vps), (_H265_SPS, self.sps), (_H265_PPS, self.pps)):
                if t in seen or ps is None:
                    continue
                # after the parameter sets of a lower type, so that the order VPS, SPS, PPS, the rest holds
                at = 0
                for j, other in enumerate(nals):
                    if _H265_VPS <= (other[0] >> 1) & 0x3F < t:
                        at = j + 1
                nals.insert(at, ps)
                self.inserted_parameter_sets += 1
        return self._packets(nals, ts)

    def _fu_prefix(self, view: memoryview) -> tuple[bytes, int]:
        """RFC 7798 §4.4.3: the payload header (F, LayerId and TID of the NAL header, type 49) and the type."""
        h0 = view[0]
        return _BYTE[(h0 & 0x81) | (_FU_265 << 1)] + _BYTE[view[1]], (h0 >> 1) & 0x3F


class G711Packetizer(_Packetizer):
    """PCMU/PCMA (RFC 3551, 8 kHz, one byte per sample) (see the module docstring)."""

    __slots__ = ("_next",)

    def __init__(self, ssrc: int, pt: int, seq: int = 0, ts_offset: int = 0, mtu: int = DEFAULT_MTU) -> None:
        super().__init__(ssrc, pt, seq, ts_offset, mtu, G711_CLOCK)
        self._next = self.ts_offset  # timestamp right after the previous access unit

    def packetize(self, au: AccessUnit) -> list[bytes]:
        """The RTP packets of one G.711 payload (split at ``mtu`` bytes); the marker bit stays clear."""
        ts = self._timestamp(au.pts)
        if ts is None:
            ts = self._next
        self.last_timestamp = ts
        data: bytes | memoryview = au.data
        n = len(data)
        self._next = (ts + n) & _MASK32
        pt = self.pt
        ssrc = self.ssrc
        seq = self.seq
        mtu = self.mtu
        out: list[bytes] = []
        if n <= mtu:
            if n:
                out.append(_pack_rtp(0x80, pt, seq, ts, ssrc) + data)
                seq = (seq + 1) & _MASK16
        else:
            data = memoryview(data)
            for pos in range(0, n, mtu):
                out.append(_pack_rtp(0x80, pt, seq, (ts + pos) & _MASK32, ssrc) + data[pos : pos + mtu])
                seq = (seq + 1) & _MASK16
        self.seq = seq
        self.packets += len(out)
        self.octets += n
        return out


def _adts_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int, int, int, int, int]:
    """(header size, frame length, sampling_frequency_index, profile, channel configuration, raw blocks).

    Raises ``PacketizeError`` if ``buf[pos:]`` does not start with a valid ADTS header (ISO/IEC 13818-7 §6.2).
    """
    if len(buf) - pos < 7:
        raise PacketizeError("ADTS header truncated")
    b0, b1, b2, b3, b4, b5, b6 = buf[pos : pos + 7]
    if b0 != 0xFF or b1 & 0xF6 != 0xF0:  # syncword, layer 0
        raise PacketizeError("no ADTS syncword")
    hsize = 7 if b1 & 1 else 9
    flen = ((b3 & 0x03) << 11) | (b4 << 3) | (b5 >> 5)
    sfi = (b2 >> 2) & 0x0F
    if sfi >= len(AAC_SAMPLE_RATES):
        raise PacketizeError(f"ADTS sampling_frequency_index {sfi} is reserved")
    if flen <= hsize:
        raise PacketizeError(f"ADTS frame_length {flen} is too small")
    return hsize, flen, sfi, b2 >> 6, ((b2 & 1) << 2) | (b3 >> 6), (b6 & 0x03) + 1


def adts_info(adts: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(sample rate, channel configuration)`` of an ADTS header (for ``a=rtpmap`` ``MPEG4-GENERIC/rate/ch``).

    Raises ``PacketizeError`` if ``adts`` does not start with a valid ADTS header.
    """
    _, _, sfi, _, channels, _ = _adts_header(adts)
    return AAC_SAMPLE_RATES[sfi], channels


def adts_config(adts: bytes | bytearray | memoryview) -> bytes:
    """The 2-byte AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) described by an ADTS header.

    audioObjectType = ADTS profile + 1 (5 bits), sampling_frequency_index (4 bits), channel_configuration (4 bits),
    then GASpecificConfig's three zero flags.
    """
    _, _, sfi, profile, channels, _ = _adts_header(adts)
    return _pack_h(((profile + 1) << 11) | (sfi << 7) | (channels << 3))


class AacPacketizer(_Packetizer):
    """RFC 3640 mpeg4-generic AAC-hbr (see the module docstring)."""

    __slots__ = ("config", "malformed_frames", "_next")

    def __init__(self, ssrc: int, pt: int, seq: int = 0, ts_offset: int = 0, mtu: int = DEFAULT_MTU) -> None:
        super().__init__(ssrc, pt, seq, ts_offset, mtu, 0)
        #: AudioSpecificConfig of the first ADTS header (``None`` before it); ``clock_rate`` is 0 until then.
        self.config: bytes | None = None
        #: Access units whose ADTS data did not parse (what came before the bad header is sent).
        self.malformed_frames = 0
        self._next = self.ts_offset

    def packetize(self, au: AccessUnit) -> list[bytes]:
        """The RTP packets of one access unit of ADTS frames (ADTS headers stripped)."""
        data = au.data
        view = memoryview(data)
        n = len(data)
        frames: list[tuple[memoryview, int]] = []  # (raw AU, samples)
        pos = 0
        while pos < n:
            try:
                hsize, flen, sfi, _, _, blocks = _adts_header(data, pos)
            except PacketizeError:
                self.malformed_frames += 1
                break
            if pos + flen > n:
                self.malformed_frames += 1
                break
            if self.config is None:
                self.config = adts_config(view[pos : pos + 7])
                self.clock_rate = AAC_SAMPLE_RATES[sfi]
            frames.append((view[pos + hsize : pos + flen], 1024 * blocks))
            pos += flen
        if not frames:
            return []
        ts = self._timestamp(au.pts)
        if ts is None:
            ts = self._next
        self.last_timestamp = ts
        pt = self.pt
        ssrc = self.ssrc
        seq = self.seq
        room = self.mtu - 2  # after AU-headers-length
        out: list[bytes] = []
        group: list[memoryview] = []
        group_ts = ts
        used = 0
        octets = 0

        def flush() -> None:
            nonlocal seq, group, used
            if not group:
                return
            heads = b"".join(_pack_h((len(f) << 3) & 0xFFFF) for f in group)
            out.append(_pack_rtp(0x80, pt | 0x80, seq, group_ts, ssrc) + _pack_h(16 * len(group)) + heads
                       + b"".join(group))
            seq = (seq + 1) & _MASK16
            group = []
            used = 0

        for raw, samples in frames:
            size = len(raw)
            octets += size
            if used + 2 + size <= room and size < 8192:
                if not group:
                    group_ts = ts
                group.append(raw)
                used += 2 + size
            else:
                flush()
                if 2 + size <= room:
                    group_ts = ts
                    group.append(raw)
                    used = 2 + size
                else:  # fragment (RFC 3640 §3.2.3): one AU, its full size in each header
                    head = (size << 3) & 0xFFFF
                    step = room - 2
                    for p in range(0, size, step):
                        final = p + step >= size
                        b1 = pt | 0x80 if final else pt
                        out.append(_pack_rtp_au(0x80, b1, seq, ts, ssrc, 16, head) + raw[p : p + step])
                        seq = (seq + 1) & _MASK16
            ts = (ts + samples) & _MASK32
        flush()
        self._next = ts
        self.seq = seq
        self.packets += len(out)
        self.octets += octets
        return out


# -- SDP helpers -----------------------------------------------------------------------------------------------------


def _b64(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


def h264_fmtp(sps: bytes | memoryview, pps: bytes | memoryview, pt: int | None = None) -> str:
    """RFC 6184 §8.1 ``a=fmtp`` parameters for packetization-mode 1.

    ``profile-level-id=<6 hex>;packetization-mode=1;sprop-parameter-sets=<SPS b64>,<PPS b64>``; with ``pt`` the
    payload type is put in front (``"96 profile-level-id=..."``, the whole value of an ``a=fmtp:`` attribute).
    """
    params = f"profile-level-id={profile_level_id(sps)};packetization-mode=1;sprop-parameter-sets={_b64(sps)},{_b64(pps)}"
    return params if pt is None else f"{pt} {params}"


def h265_fmtp(vps: bytes | memoryview, sps: bytes | memoryview, pps: bytes | memoryview) -> str:
    """RFC 7798 §7.1 ``a=fmtp`` parameters: ``sprop-vps=<b64>;sprop-sps=<b64>;sprop-pps=<b64>``."""
    return f"sprop-vps={_b64(vps)};sprop-sps={_b64(sps)};sprop-pps={_b64(pps)}"


def aac_fmtp(config: bytes | bytearray | memoryview) -> str:
    """RFC 3640 §4.1 ``a=fmtp`` parameters for AAC-hbr.

    ``config`` is an AudioSpecificConfig, or an ADTS header (starting with the ``FFF`` syncword) that one is
    derived from (``adts_config``).
    """
    if len(config) >= 7 and config[0] == 0xFF and config[1] & 0xF0 == 0xF0:
        config = adts_config(config)
    return (
        "streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;"
        f"config={bytes(config).hex()}"
    )
