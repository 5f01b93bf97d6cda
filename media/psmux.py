"""GB/T 28181-style MPEG-2 program stream muxer and its RTP packetizer (PT 96, 90 kHz).

Theory of operation
-------------------
``PsMuxer.mux(au)`` turns one ``AccessUnit`` into one self-contained run of PS bytes, the way GB/T 28181 devices
send it (GB/T 28181-2016 附录 C) and FFmpeg's ``mpeg`` muxer does not (no PSM, other stream ids, no G.711):

1. a pack header (ISO/IEC 13818-1 §2.5.3.3) whose SCR is the access unit's DTS (else PTS), no stuffing;
2. before the first access unit and before every video keyframe, a system header (§2.5.3.5) and a program stream
   map (§2.5.4.1: stream types 0x1B/0x24/0x10/0x80 on ``0xE0``, 0x90/0x91/0x0F/... on ``0xC0``, CRC_32 of
   Annex A). An audio-only muxer repeats them every ``psm_interval`` access units instead;
3. PES packets (§2.4.3.6) with ``data_alignment_indicator`` on the first, the PTS (and the DTS when it differs)
   on the first only; a payload larger than one PES can hold (65,535 bytes of ``PES_packet_length``) continues
   in further PES packets without timestamps (§2.4.3.7: a PTS belongs to the PES where the access unit starts).

``PES_packet_length`` is always the real length, never 0. Timestamps are taken modulo 2**33.

``PsRtpPacketizer.packetize(ps, pts)`` cuts one muxed frame into RTP packets of at most ``max_payload`` bytes of
payload, all with timestamp ``pts + ts_offset`` (mod 2**32), the marker bit on the last one, and consecutive
sequence numbers (mod 2**16). SSRC, initial sequence number and timestamp offset are injected (STYLE.md §6).
"""

from __future__ import annotations

import struct

from .frames import AccessUnit, Codec
from .rtp import build_rtp

__all__ = [
    "DEFAULT_MUX_RATE",
    "MAX_PES_PACKET_LENGTH",
    "PsMuxer",
    "PsRtpPacketizer",
    "crc32_mpeg2",
    "pack_header",
    "pes_packets",
]

MAX_PES_PACKET_LENGTH = 0xFFFF
#: ``program_mux_rate`` in units of 50 bytes/s: 1 MB/s, about what Hikvision cameras write (informative only).
DEFAULT_MUX_RATE = 20_000
VIDEO_STREAM_ID = 0xE0
AUDIO_STREAM_ID = 0xC0
_TS_MASK = (1 << 33) - 1

_u16 = struct.Struct(">H").pack


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else (c << 1)
        table.append(c & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 (ISO/IEC 13818-1 Annex A): polynomial 0x04C11DB7, init all ones, no reflection, no xor."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ b]
    return crc


def _timestamp(prefix: int, ts: int) -> bytes:
    """A 5-byte PTS/DTS field: 4-bit prefix, 33 bits split 3/15/15 with marker bits (§2.4.3.6)."""
    ts &= _TS_MASK
    v = (
        (prefix << 36)
        | (((ts >> 30) & 0x7) << 33)
        | (1 << 32)
        | (((ts >> 15) & 0x7FFF) << 17)
        | (1 << 16)
        | ((ts & 0x7FFF) << 1)
        | 1
    )
    return v.to_bytes(5, "big")


def pack_header(scr: int, mux_rate: int) -> bytes:
    """An MPEG-2 pack header (§2.5.3.3) with SCR extension 0 and no stuffing. ``mux_rate`` is in 50 bytes/s."""
    scr &= _TS_MASK
    v = (
        (1 << 46)
        | (((scr >> 30) & 0x7) << 43)
        | (1 << 42)
        | (((scr >> 15) & 0x7FFF) << 27)
        | (1 << 26)
        | ((scr & 0x7FFF) << 11)
        | (1 << 10)
        | 1  # SCR_extension 0, marker
    )
    rate = ((mux_rate & 0x3FFFFF) << 2) | 0x3
    return b"\x00\x00\x01\xba" + v.to_bytes(6, "big") + rate.to_bytes(3, "big") + b"\xf8"


class PsMuxer:
    """Access units in, GB/T 28181-style PS bytes out (see the module docstring)."""

    __slots__ = ("_video", "_audio", "_mux_rate", "_psm_interval", "_since_psm", "_first", "_headers")

    def __init__(
        self,
        video: Codec | None = Codec.H264,
        audio: Codec | None = None,
        *,
        mux_rate: int = DEFAULT_MUX_RATE,
        psm_interval: int = 50,
    ) -> None:
        """:param video: the video codec (``None`` for audio only).
        :param audio: the audio codec, if any.
        :param mux_rate: ``program_mux_rate`` in units of 50 bytes/s (informative for GB receivers).
        :param psm_interval: an audio-only stream repeats the system header and PSM every this many AUs.
        """
        if video is None and audio is None:
            raise ValueError("a PS needs a video or an audio stream")
        if video is not None and not video.is_video:
            raise ValueError(f"{video.name} is not a video codec")
        if audio is not None and not audio.is_audio:
            raise ValueError(f"{audio.name} is not an audio codec")
        self._video = video
        self._audio = audio
        self._mux_rate = mux_rate
        self._psm_interval = psm_interval
        self._since_psm = 0
        self._first = True
        self._headers = self._system_header() + self._psm()

    def _system_header(self) -> bytes:
        streams = b""
        if self._video is not None:  # '11', P-STD_buffer_bound_scale 1 (KiB units), 1024 KiB
            streams += bytes((VIDEO_STREAM_ID,)) + _u16(0xC000 | 0x2000 | 1024)
        if self._audio is not None:  # '11', scale 0 (128-byte units), 4 KiB
            streams += bytes((AUDIO_STREAM_ID,)) + _u16(0xC000 | 32)
        rate_bound = ((1 << 23) | ((self._mux_rate & 0x3FFFFF) << 1) | 1).to_bytes(3, "big")
        audio_bound = 1 if self._audio is not None else 0
        video_bound = 1 if self._video is not None else 0
        body = (
            rate_bound
            + bytes((audio_bound << 2,))  # audio_bound, fixed_flag 0, CSPS_flag 0
            + bytes((0xE0 | video_bound,))  # audio/video lock flags, marker, video_bound
            + b"\x7f"  # packet_rate_restriction_flag 0, reserved
            + streams
        )
        return b"\x00\x00\x01\xbb" + _u16(len(body)) + body

    def _psm(self) -> bytes:
        es_map = b""
        if self._video is not None:
            es_map += bytes((self._video.stream_type, VIDEO_STREAM_ID)) + b"\x00\x00"
        if self._audio is not None:
            es_map += bytes((self._audio.stream_type, AUDIO_STREAM_ID)) + b"\x00\x00"
        # current_next_indicator 1, single_extension_stream_flag 1, reserved 1, version 0; reserved + marker
        body = b"\xe0\xff" + _u16(0) + _u16(len(es_map)) + es_map
        head = b"\x00\x00\x01\xbc" + _u16(len(body) + 4) + body
        return head + crc32_mpeg2(head).to_bytes(4, "big")

    def mux(self, au: AccessUnit) -> bytes:
        """The PS bytes of one access unit: pack header, [system header + PSM], PES packet(s)."""
        if au.codec is self._video and self._video is not None:
            sid = VIDEO_STREAM_ID
            headers = self._first or au.keyframe
        elif au.codec is self._audio and self._audio is not None:
            sid = AUDIO_STREAM_ID
            headers = self._first or (self._video is None and self._since_psm >= self._psm_interval)
        else:
            raise ValueError(f"this muxer carries {self._video} and {self._audio}, not {au.codec}")
        self._first = False
        ts = au.dts if au.dts is not None else au.pts
        parts = [pack_header(ts if ts is not None else 0, self._mux_rate)]
        if headers:
            parts.append(self._headers)
            self._since_psm = 0
        self._since_psm += 1
        parts.extend(pes_packets(sid, au.data, au.pts, au.dts))
        return b"".join(parts)


def pes_packets(stream_id: int, data: bytes, pts: int | None, dts: int | None) -> list[bytes]:
    """PES packets (§2.4.3.6) carrying ``data``: timestamps on the first, each ``PES_packet_length`` <= 65535."""
    if pts is None:
        flags, opt = 0x00, b""
    elif dts is None or (dts & _TS_MASK) == (pts & _TS_MASK):
        flags, opt = 0x80, _timestamp(0x2, pts)
    else:
        flags, opt = 0xC0, _timestamp(0x3, pts) + _timestamp(0x1, dts)
    out: list[bytes] = []
    view = memoryview(data)
    pos = 0
    n = len(data)
    first = True
    while first or pos < n:
        # '10', not scrambled, priority 0, data_alignment_indicator on the first, copyright 0, original 0
        header = (b"\x84" + bytes((flags, len(opt))) + opt) if first else b"\x80\x00\x00"
        room = MAX_PES_PACKET_LENGTH - len(header)
        chunk = view[pos : pos + room]
        pos += len(chunk)
        out.append(b"\x00\x00\x01" + bytes((stream_id,)) + _u16(len(header) + len(chunk)) + header + chunk)
        first = False
    return out


class PsRtpPacketizer:
    """Cuts muxed PS frames into RTP packets (see the module docstring)."""

    __slots__ = ("ssrc", "pt", "max_payload", "seq", "ts_offset")

    def __init__(
        self, ssrc: int, pt: int = 96, max_payload: int = 1400, seq: int = 0, ts_offset: int = 0
    ) -> None:
        """:param ssrc: the RTP SSRC (GB/T 28181: the ``y=`` line of the SDP).
        :param max_payload: bytes of PS per RTP packet (1400 keeps a 1412-byte packet under common MTUs).
        :param seq: the first sequence number; ``seq`` is the next one afterwards.
        :param ts_offset: added to each PTS to form the RTP timestamp (random per RFC 3550, injected).
        """
        if max_payload < 1:
            raise ValueError("max_payload must be positive")
        self.ssrc = ssrc
        self.pt = pt
        self.max_payload = max_payload
        self.seq = seq & 0xFFFF
        self.ts_offset = ts_offset

    def packetize(self, ps_frame: bytes, pts: int) -> list[bytes]:
        """RTP packets for one frame's PS bytes; marker on the last, timestamp ``pts + ts_offset``."""
        view = memoryview(ps_frame)
        size = self.max_payload
        ts = (pts + self.ts_offset) & 0xFFFFFFFF
        n = len(ps_frame)
        count = max(1, -(-n // size))
        seq = self.seq
        out = [
            build_rtp(
                self.pt, i == count - 1, (seq + i) & 0xFFFF, ts, self.ssrc, view[i * size : (i + 1) * size]
            )
            for i in range(count)
        ]
        self.seq = (seq + count) & 0xFFFF
        return out
