"""MPEG-2 program stream (PS) demuxer for GB/T 28181 media: RTP payloads (or raw PS chunks) in, access units out.

Theory of operation
-------------------
``PsDemuxer.feed(payload, marker, discontinuity)`` is called with each RTP payload in sequence order (after
reordering). It is sans-I/O and never raises on bad input: garbage, lies and losses are dropped and counted in
int attributes (``dropped_bytes``, ``resyncs``, ``truncated_frames``, ...). It returns the access units that the
payload completed, as soon as they are complete: a frame leaves on the packet whose RTP marker bit ends it.

The stream is a sequence of start-code-prefixed units (ISO/IEC 13818-1 §2.5.3): pack header ``00 00 01 BA``
(§2.5.3.3: 14 bytes + ``pack_stuffing_length``; the 12-byte MPEG-1 pack of ISO/IEC 11172-1 §2.4.3.2 is recognised
too), system header ``BB`` and other non-PES packets (``BD`` private, ``BE`` padding, ``BF``, ``F0``..``FF``) that
are skipped by their 16-bit length, the program stream map ``BC`` (§2.5.4) and PES packets (§2.4.3.6): ``C0``..
``DF`` audio, ``E0``..``EF`` video. The parser is a small state machine:

* ``_left > 0``: inside a PES (or a skipped packet) with that many payload bytes still to come. The **fast path**
  of ``feed`` handles a payload that lies wholly inside the current PES (most RTP packets of a video frame) with a
  few integer operations and one ``list.append`` of the payload object itself: no copy, no scan. A frame's pieces
  are joined once, when it is emitted.
* ``_left == 0``: at a unit boundary; the next four bytes must be a start code. Headers are read with
  ``struct.unpack_from``/indexing on the payload (``bytes`` or ``memoryview``).
* ``_left == -1``: inside a PES with ``PES_packet_length == 0`` (unbounded; not allowed in a PS, but seen): it ends
  at the next system start code ``00 00 01 B9..FF``, found with a compiled regex. Annex B video cannot contain
  one: a NAL header byte >= 0x80 would have ``forbidden_zero_bit`` set (H.264 §7.4.1, H.265 §7.4.2.1).
* ``_tail``: a header that straddles two payloads (pack header, PES header, PSM, or up to 3 bytes of a start
  code) is kept and prepended to the next payload; it is bounded by the largest header (264 bytes for a PES, the
  ``max_psm_size`` cap for a PSM).
* ``_hunting``: sync is lost. ``bytes.find`` scans for the next ``00 00 01`` followed by a pack header, system
  header, PSM or MPEG-2 PES header. Unparsable data is discarded as it arrives; only the last 3 bytes are kept.

Frame boundaries (video). GB/T 28181 devices send a pack header per frame and set the RTP marker bit on a frame's
last packet, and split a large frame into several PES packets whose first carries the PTS (the rest carry none,
or repeat it). A video frame therefore ends at

1. the RTP marker bit, if the video PES in progress is complete (``marker_misfires`` counts markers that arrive
   mid-PES or are followed by a continuation of the frame they ended; after 3, markers are ignored), or
2. a video PES whose PTS differs from the frame's (the frame is then emitted before the new one opens), or
3. ``flush()``.

A pack header alone does not end a frame (DVD-style streams spread one frame over several packs); in practice
the first PES of the next frame follows it in the same RTP packet. In a stream that never carries a PTS, a PES
right after a pack header starts a new frame. Audio: every audio PES is one access unit (G.711 samples or AAC
ADTS frames), emitted when its last byte arrives. Without markers (raw files, some muxers) a video frame can only
leave when the next one starts.

Losses and garbage. Two cases:

* The caller signals a gap (``discontinuity=True``, ``reset()``): nobody knows what was lost, so the open frame
  is dropped (``truncated_frames``) and so is the rest of it: PES packets without a PTS or with its PTS, a PES
  whose PTS is new but that lacks the pack header every frame of this stream had so far (the lost first PES of a
  frame whose later PES repeat the PTS), and a first payload that does not begin with an Annex B start code.
  A marker ends that discarding. Output after a loss is therefore always a subset of the clean output (a test
  drops packets at every position of the captures to check it).
* Garbage where a start code must be (a unit boundary: every PES so far was complete): the open frame is
  emitted, unless it holds a system start code, which Annex B video cannot: then the last ``PES_packet_length``
  was too long and swallowed the units behind it; the frame is cut there and the swallowed bytes are parsed
  again (``pes_length_errors``; at most 4 times per feed, so hostile input stays linear). A marker that arrives
  mid-PES followed by a payload starting with a system start code is the same lie, caught one packet earlier.

With ``wait_keyframe`` (default) no video leaves before the first keyframe; it is not re-armed after a loss (the
gateway decides whether to wait or to ask the device for an I frame).

Codecs come from the PSM, fixed per frame when it opens. A PSM whose ``elementary_stream_map_length`` disagrees
with its packet length is parsed with whichever of the two lengths the entries tile exactly (e.g. the shared
``g711a_audio_only_bad_psm.ps``); one that tiles with neither is counted in ``bad_psms`` and never replaces the
last good map (its whole entries are used only if there was none). CRC_32 is not checked: most devices get it
wrong. Without a PSM, video is H.264 unless its NAL headers look like HEVC
(VPS/SPS/PPS/AUD/SEI/IRAP with a valid 2-byte header), and audio is AAC if it starts with an ADTS sync word,
G.711A otherwise (a guess: GB/T 28181 附录 C's default audio).

Memory is bounded: a video frame larger than ``max_frame_size`` (8 MiB) is dropped (``oversized_frames``), the
tail by the header sizes above, and ``PES_packet_length`` is 16-bit by construction.

Buffers: the demuxer keeps references to the payload objects passed to ``feed`` (no copy) until the frame that
uses them is emitted. Pass ``bytes``, or ``memoryview``s of buffers that are not modified afterwards (the same
contract as ``media.rtp.Rfc4571Decoder``).
"""

from __future__ import annotations

import re
import struct
from enum import IntEnum

from . import h264, h265
from .frames import AccessUnit, Codec

__all__ = ["PsDemuxer", "StreamId", "DEFAULT_MAX_FRAME_SIZE"]

DEFAULT_MAX_FRAME_SIZE = 8 << 20

Buffer = bytes | bytearray | memoryview


class StreamId(IntEnum):
    """Start code values (``stream_id``) of ISO/IEC 13818-1 Table 2-18 and §2.5.3 that a PS carries."""

    PROGRAM_END = 0xB9
    PACK = 0xBA
    SYSTEM_HEADER = 0xBB
    PROGRAM_STREAM_MAP = 0xBC
    PRIVATE_1 = 0xBD
    PADDING = 0xBE
    PRIVATE_2 = 0xBF
    AUDIO = 0xC0  # 0xC0..0xDF
    VIDEO = 0xE0  # 0xE0..0xEF
    DIRECTORY = 0xFF


# What the bytes of the PES (or packet) in progress are for.
_SKIP = 0
_VIDEO = 1
_AUDIO = 2
_DISCARD = 3  # video of a frame being dropped: counted in dropped_bytes

_MARKER_MISFIRE_LIMIT = 3
_MAX_SALVAGES = 4  # per feed: each one re-parses up to a frame's bytes
_PACKLESS_STREAM = 1  # frames begun without a pack header before a stream counts as "not a pack per frame"
_FIRST_START_CODE_WINDOW = 16  # how far into a frame its first start code may be

_u32 = struct.Struct(">I").unpack_from
_u16 = struct.Struct(">H").unpack_from
_ts = struct.Struct(">BHH").unpack_from
_SYSTEM_START = re.compile(b"\x00\x00\x01[\xb9-\xff]")
_ZERO3 = b"\x00\x00\x01"

# H.265 NAL types that may open an access unit, used to tell HEVC from H.264 without a PSM.
_HEVC_FIRST = frozenset({32, 33, 34, 35, 39, 19, 20, 21})


class PsDemuxer:
    """Sans-I/O PS demuxer (see the module docstring). ``feed`` never raises on any input."""

    __slots__ = (
        "_max_frame",
        "_max_psm",
        "_left",
        "_kind",
        "_tail",
        "_clean",
        "_hunting",
        "_suspect",
        "_after_pack",
        "_ever_pts",
        "_use_marker",
        "_last_marker",
        "_last_pts",
        "_keyseen",
        "_vsid",
        "_asid",
        "_vcodec",
        "_vguess",
        "_acodec",
        "_stream_types",
        "_vopen",
        "_vparts",
        "_vsize",
        "_vpts",
        "_vdts",
        "_vfcodec",
        "_packless",
        "_vskip",
        "_vskip_pts",
        "_vprobe",
        "_salvages",
        "_aopen",
        "_aparts",
        "_asize",
        "_apts",
        "_adts",
        "packs",
        "psms",
        "bad_psms",
        "frames",
        "keyframes",
        "audio_frames",
        "dropped_bytes",
        "resyncs",
        "truncated_frames",
        "oversized_frames",
        "skipped_frames",
        "skipped_packets",
        "marker_misfires",
        "header_errors",
        "pes_length_errors",
        "vps",
        "sps",
        "pps",
        "width",
        "height",
    )

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        wait_keyframe: bool = True,
        max_psm_size: int = 4096,
    ) -> None:
        """:param max_frame_size: a video frame (or unbounded audio PES) growing past this is dropped.
        :param wait_keyframe: emit no video before the first keyframe (H.264/H.265/MPEG-4; SVAC is not inspected).
        :param max_psm_size: a PSM longer than this is skipped unparsed (ISO/IEC 13818-1 caps it at 1018 bytes).
        """
        self._max_frame = max_frame_size
        self._max_psm = max_psm_size
        self._left = 0
        self._kind = _SKIP
        self._tail = b""
        # False while _tail, _suspect or _vprobe needs the slow path to look at the next payload.
        self._clean = True
        self._hunting = True  # join mid-stream: find the first start code
        self._suspect = False
        self._after_pack = False
        self._ever_pts = False
        self._use_marker = True
        self._last_marker = False
        self._last_pts: int | None = None
        self._keyseen = not wait_keyframe
        self._vsid = -1
        self._asid = -1
        self._vcodec: Codec | None = None  # from the PSM
        self._vguess: Codec | None = None  # inferred from a parameter set
        self._acodec: Codec | None = None
        self._stream_types: dict[int, int] = {}
        self._vopen = False
        self._vparts: list[Buffer] = []
        self._vsize = 0
        self._vpts: int | None = None
        self._vdts: int | None = None
        self._vfcodec: Codec | None = None  # the PSM's codec when the open frame began
        self._packless = 0  # frames that began without a pack header before them
        self._vskip = True  # discard video until a PES with a PTS: we may have joined mid-frame
        self._vskip_pts: int | None = None
        self._vprobe = False
        self._salvages = 0
        self._aopen = False
        self._aparts: list[Buffer] = []
        self._asize = 0
        self._apts: int | None = None
        self._adts: int | None = None
        #: Pack headers parsed.
        self.packs = 0
        #: Program stream maps parsed / rejected.
        self.psms = 0
        self.bad_psms = 0
        #: Video access units emitted, and how many of them were keyframes.
        self.frames = 0
        self.keyframes = 0
        #: Audio access units emitted.
        self.audio_frames = 0
        #: Bytes discarded: garbage while hunting, dropped partial frames, the continuation of dropped frames.
        self.dropped_bytes = 0
        #: Times sync was lost (bad start code or header, caller-signalled gap, ``reset()``).
        self.resyncs = 0
        #: Partial video frames dropped at a loss, or incomplete at ``flush()``.
        self.truncated_frames = 0
        #: Frames dropped for growing past ``max_frame_size``.
        self.oversized_frames = 0
        #: Complete video frames dropped while waiting for the first keyframe.
        self.skipped_frames = 0
        #: Non-media packets (system header, private, padding, other streams) skipped.
        self.skipped_packets = 0
        #: RTP marker bits that contradicted the PES structure.
        self.marker_misfires = 0
        #: Pack or PES headers that did not parse.
        self.header_errors = 0
        #: PES packets whose length overran the frame (seen at a marker, or at the garbage that followed).
        self.pes_length_errors = 0
        #: The latest parameter sets seen in a video frame (NAL units without start code).
        self.vps: bytes | None = None
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        #: Picture size from the latest SPS, if it parsed.
        self.width: int | None = None
        self.height: int | None = None

    # -- public API ----------------------------------------------------------------------------------------------

    @property
    def video_codec(self) -> Codec | None:
        """The video codec from the PSM, else as inferred from the stream; ``None`` before any video."""
        return self._vcodec or self._vguess

    @property
    def audio_codec(self) -> Codec | None:
        """The audio codec from the PSM; ``None`` if no PSM named one."""
        return self._acodec

    @property
    def stream_types(self) -> dict[int, int]:
        """``stream_id -> stream_type`` from the last good PSM."""
        return dict(self._stream_types)

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for incomplete units: the partial video frame, the partial audio PES and the tail."""
        return self._vsize + self._asize + len(self._tail)

    def feed(self, payload: Buffer, marker: bool = False, discontinuity: bool = False) -> list[AccessUnit]:
        """Demux one RTP payload (or a chunk of a raw PS); return the access units it completed.

        :param payload: the next bytes of the program stream; kept by reference until its frame is emitted.
        :param marker: the RTP marker bit of the packet: the end of a video frame.
        :param discontinuity: bytes were lost before ``payload`` (an RTP sequence gap): resynchronise.
        """
        out: list[AccessUnit] = []
        if discontinuity:
            self._lose_sync()
        n = len(payload)
        left = self._left
        if left >= n and self._clean:
            # Fast path: the payload continues the PES in progress (ISO/IEC 13818-1 §2.4.3.6 PES_packet_data_byte).
            if n:
                self._left = left - n
                kind = self._kind
                if kind == _VIDEO:
                    size = self._vsize + n
                    if size > self._max_frame:
                        self._oversize(n)
                    else:
                        self._vparts.append(payload)
                        self._vsize = size
                else:
                    self._take(payload, n)
                    if kind == _AUDIO and left == n:
                        self._emit_audio(out)
        else:
            self._parse(payload, out)
        if marker and self._use_marker:
            self._on_marker(out)
        return out

    def flush(self) -> list[AccessUnit]:
        """End of input: emit the complete pending frames, drop incomplete ones, and expect a fresh stream."""
        out: list[AccessUnit] = []
        self._salvages = 0
        while self._left > 0 and self._kind == _VIDEO:  # a PES cut short: did its length overrun?
            rest = self._salvage(out)
            if rest is None:
                break
            salvages = self._salvages
            self._parse(rest, out)
            self._salvages = salvages
        if self._tail:
            if self._left < 0:  # zeros held back from an unbounded PES
                self._take(self._tail, len(self._tail))
            else:
                self.dropped_bytes += len(self._tail)
            self._tail = b""
        if (
            self._suspect and self._kind == _VIDEO and self._left > 0
        ):  # the marker said the frame was complete
            self.pes_length_errors += 1
            self._left = 0
        incomplete = self._left > 0
        if self._vopen:
            if incomplete and self._kind == _VIDEO:
                self._drop_video(truncated=True)
            else:
                self._end_frame(out)
        if self._aopen:
            if incomplete and self._kind == _AUDIO:
                self.dropped_bytes += self._asize
                self._clear_audio()
            else:
                self._emit_audio(out)
        self._left = 0
        self._kind = _SKIP
        self._suspect = False
        self._vprobe = False
        self._clean = True
        self._hunting = True
        self._vskip = True
        self._vskip_pts = None
        return out

    def reset(self) -> None:
        """The caller lost its place in the stream (e.g. an SSRC change): drop partial units and resynchronise."""
        self._lose_sync()

    # -- state changes -------------------------------------------------------------------------------------------

    def _lose_sync(self) -> None:
        if not self._hunting:
            self.resyncs += 1
        if self._vopen:
            self._drop_video(truncated=True)
        elif not self._vskip:
            self._vskip = True
            self._vskip_pts = None
        if self._aopen:
            self.dropped_bytes += self._asize
            self._clear_audio()
        self.dropped_bytes += len(self._tail)
        self._tail = b""
        self._left = 0
        self._kind = _SKIP
        self._hunting = True
        self._after_pack = False
        self._last_marker = False
        self._suspect = False
        self._vprobe = False
        self._clean = True

    def _drop_video(self, truncated: bool) -> None:
        """Drop the open frame and discard the rest of it (PES packets without a PTS or with its PTS)."""
        if truncated:
            self.truncated_frames += 1
        self.dropped_bytes += self._vsize
        self._vskip = True
        self._vskip_pts = self._vpts
        self._vopen = False
        self._vparts = []
        self._vsize = 0
        self._vprobe = False
        if self._kind == _VIDEO:
            self._kind = _DISCARD

    def _oversize(self, n: int) -> None:
        self.oversized_frames += 1
        self.dropped_bytes += n
        self._drop_video(truncated=False)

    def _clear_audio(self) -> None:
        self._aopen = False
        self._aparts = []
        self._asize = 0
        if self._kind == _AUDIO:
            self._kind = _SKIP

    def _take(self, piece: Buffer, n: int) -> None:
        """Route ``n`` payload bytes of the unit in progress."""
        kind = self._kind
        if kind == _VIDEO:
            if self._vprobe:
                self._vprobe = False
                head = bytes(piece[:4])
                if len(head) >= 3 and not (head[:3] == _ZERO3 or head == b"\x00\x00\x00\x01"):
                    # Not the start of an access unit: the continuation of a frame lost earlier.
                    self.dropped_bytes += n
                    self._drop_video(truncated=False)
                    return
            size = self._vsize + n
            if size > self._max_frame:
                self._oversize(n)
            else:
                self._vparts.append(piece)
                self._vsize = size
        elif kind == _AUDIO:
            size = self._asize + n
            if size > self._max_frame:
                self.oversized_frames += 1
                self.dropped_bytes += size
                self._clear_audio()
                self._kind = _DISCARD
            else:
                self._aparts.append(piece)
                self._asize = size
        elif kind == _DISCARD:
            self.dropped_bytes += n

    # -- the slow path -------------------------------------------------------------------------------------------

    def _parse(self, payload: Buffer, out: list[AccessUnit]) -> None:
        self._salvages = 0
        data: Buffer = payload
        if self._tail:
            data = self._tail + payload
            self._tail = b""
        if self._suspect:
            self._check_suspect(data, out)
        end = len(data)
        pos = 0
        while pos < end:
            left = self._left
            if left > 0:
                take = end - pos
                if take > left:
                    take = left
                piece = data if take == end else data[pos : pos + take]
                self._left = left - take
                self._take(piece, take)
                pos += take
                if left == take and self._kind == _AUDIO:
                    self._emit_audio(out)
                continue
            if left < 0:
                pos = self._unbounded(data, pos, end, out)
                continue
            if self._hunting:
                if not isinstance(data, bytes):
                    data = bytes(data)
                pos = self._hunt(data, pos, end)
                continue
            if end - pos < 4:
                self._tail = bytes(data[pos:end])
                break
            code = _u32(data, pos)[0]
            sid = code & 0xFF
            if code >> 8 != 1 or sid < 0xB9:  # not a PS start code (ISO/IEC 13818-1 §2.5.3.1)
                rest = self._desync(data, pos, end, out)
                if rest is not None:
                    data, pos, end = rest, 0, len(rest)
                continue
            if sid >= 0xC0 and sid <= 0xEF:
                nxt = self._pes(data, pos, end, sid, out)
            elif sid == 0xBA:
                nxt = self._pack(data, pos, end)
            elif sid == 0xBC:
                nxt = self._psm(data, pos, end)
            elif sid == 0xB9:
                nxt = pos + 4  # MPEG_program_end_code
            else:  # 0xBB system header, 0xBD/0xBE/0xBF, 0xF0..0xFF: PES_packet_length then skip (§2.5.3.5)
                if end - pos < 6:
                    nxt = -1
                else:
                    self.skipped_packets += 1
                    self._left = _u16(data, pos + 4)[0]
                    self._kind = _SKIP
                    nxt = pos + 6
            if nxt >= 0:
                pos = nxt
            elif nxt == -1:  # the header continues in the next payload
                self._tail = bytes(data[pos:end])
                break
            else:  # a start code with a malformed header: resynchronise after it
                self.header_errors += 1
                rest = self._desync(data, pos, end, out)
                if rest is not None:
                    data, pos, end = rest, 0, len(rest)
                else:
                    self.dropped_bytes += 1
                    pos += 1
        self._clean = not (self._tail or self._suspect or self._vprobe)

    def _salvage(self, out: list[AccessUnit]) -> bytes | None:
        """If the open H.264/H.265 frame holds a system start code (impossible in Annex B), the last PES length
        was too long: emit the frame up to there and return the bytes after it, to be parsed again."""
        if not self._vopen or not self._vsize or self._salvages >= _MAX_SALVAGES:
            return None
        codec = self._vcodec or self._vguess or Codec.H264
        if codec is not Codec.H264 and codec is not Codec.H265:
            return None
        frame = b"".join(self._vparts)
        m = _SYSTEM_START.search(frame)
        if m is None:
            return None
        self._salvages += 1
        self.pes_length_errors += 1
        k = m.start()
        self._vparts = [frame[:k]]
        self._vsize = k
        self._left = 0
        self._kind = _SKIP
        self._end_frame(out)
        return frame[k:]

    def _desync(self, data: Buffer, pos: int, end: int, out: list[AccessUnit]) -> bytes | None:
        """Garbage where a start code should be. Every PES so far was complete, so the open frame is emitted,
        unless it holds a system start code: then a PES_packet_length overran into the following units, and
        the bytes from there (plus the rest of this payload) are returned to be parsed again (bounded per feed).
        """
        self.resyncs += 1
        rest = self._salvage(out)
        if rest is not None:
            return rest + data[pos:end]
        if self._vopen:
            self._end_frame(out)
        if self._aopen:
            self._emit_audio(out)
        self._left = 0
        self._kind = _SKIP
        self._hunting = True
        return None

    def _hunt(self, data: bytes, pos: int, end: int) -> int:
        """Skip to the next plausible PS unit; return its position, or ``end`` (keeping up to 3 bytes)."""
        find = data.find
        start = pos
        while True:
            j = find(_ZERO3, pos, end)
            if j < 0:
                keep = end - 3 if end - 3 > start else start
                self.dropped_bytes += keep - start
                self._tail = data[keep:end]
                return end
            if j + 7 > end:
                self.dropped_bytes += j - start
                self._tail = data[j:end]
                return end
            sid = data[j + 3]
            if (
                (sid == 0xBA and (data[j + 4] >> 6 == 1 or data[j + 4] >> 4 == 2))
                or sid == 0xBB
                or sid == 0xBC
                or (0xC0 <= sid <= 0xEF and data[j + 6] & 0xC0 == 0x80)
            ):
                self.dropped_bytes += j - start
                self._hunting = False
                return j
            pos = j + 1

    def _pack(self, data: Buffer, pos: int, end: int) -> int:
        if end - pos < 5:
            return -1
        b4 = data[pos + 4]
        if b4 >> 6 == 1:  # ISO/IEC 13818-1 §2.5.3.3: '01' SCR ... pack_stuffing_length
            if end - pos < 14:
                return -1
            size = 14 + (data[pos + 13] & 7)
        elif b4 >> 4 == 2:  # ISO/IEC 11172-1 §2.4.3.2: '0010' SCR ... mux_rate (12 bytes)
            size = 12
        else:
            return -2
        if end - pos < size:
            return -1
        self.packs += 1
        self._after_pack = True
        return pos + size

    def _psm(self, data: Buffer, pos: int, end: int) -> int:
        if end - pos < 6:
            return -1
        length: int = _u16(data, pos + 4)[0]
        if length > self._max_psm:
            self.bad_psms += 1
            self._left = length
            self._kind = _SKIP
            return pos + 6
        stop = pos + 6 + length
        if stop > end:
            return -1
        self._parse_psm(data, pos + 6, stop)
        return stop

    def _parse_psm(self, data: Buffer, start: int, stop: int) -> None:
        """ISO/IEC 13818-1 §2.5.4.1. Clamps lengths to the packet; keeps the last good map if nothing is sane."""
        if stop - start < 6:
            self.bad_psms += 1
            return
        info_len = _u16(data, start + 2)[0]
        at = start + 4 + info_len
        if at + 2 > stop:
            self.bad_psms += 1
            return
        declared = _u16(data, at)[0]
        first = at + 2
        room = stop - 4 - first  # up to the CRC_32
        if room < 0:
            room = stop - first
        entries = None
        for size in (declared, room):  # the declared length, else the one the packet length implies
            if size <= room:
                entries = _es_map(data, first, first + size, exact=True)
                if entries:
                    break
        exact = bool(entries)
        if entries is None:  # neither length tiles: keep the whole entries inside the packet
            entries = _es_map(data, first, first + min(declared, room), exact=False)
        mapping = {sid: st for st, sid in (entries or ()) if 0xC0 <= sid <= 0xEF}
        if not exact or not mapping:
            self.bad_psms += 1
            if not mapping or self._stream_types:  # a damaged map never replaces a good one
                return
        else:
            self.psms += 1
        self._stream_types = mapping
        self._apply_mapping()

    def _apply_mapping(self) -> None:
        mapping = self._stream_types
        if self._vsid < 0:
            self._vsid = next((sid for sid in mapping if sid >= 0xE0), -1)
        if self._asid < 0:
            self._asid = next((sid for sid in mapping if sid < 0xE0), -1)
        video = Codec.from_stream_type(mapping.get(self._vsid, -1))
        if video is not None and video.is_video:
            self._vcodec = video
        audio = Codec.from_stream_type(mapping.get(self._asid, -1))
        if audio is not None and audio.is_audio:
            self._acodec = audio

    def _pes(self, data: Buffer, pos: int, end: int, sid: int, out: list[AccessUnit]) -> int:
        """A PES header (ISO/IEC 13818-1 §2.4.3.6, or ISO/IEC 11172-1 §2.4.3.3). Returns the payload position."""
        if end - pos < 9:
            return -1
        length: int = _u16(data, pos + 4)[0]
        pts: int | None = None
        dts: int | None = None
        b6 = data[pos + 6]
        if b6 & 0xC0 == 0x80:  # MPEG-2: '10' flags, PTS_DTS_flags, PES_header_data_length
            hlen = data[pos + 8]
            body = pos + 9 + hlen
            if length and length < 3 + hlen:
                return -2
            if body > end:
                return -1
            flags = data[pos + 7] >> 6
            if flags & 2:
                if hlen < 5:
                    return -2
                a, b, c = _ts(data, pos + 9)
                pts = ((a & 0x0E) << 29) | ((b >> 1) << 15) | (c >> 1)
                if flags == 3 and hlen >= 10:
                    a, b, c = _ts(data, pos + 14)
                    dts = ((a & 0x0E) << 29) | ((b >> 1) << 15) | (c >> 1)
            size = length - 3 - hlen if length else -1
        else:  # MPEG-1: stuffing 0xFF (<= 16), optional '01' STD buffer, then PTS/DTS or 0x0F
            p = pos + 6
            while p < end and data[p] == 0xFF and p < pos + 22:
                p += 1
            if p + 1 > end:
                return -1
            if data[p] >> 6 == 1:
                p += 2
                if p + 1 > end:
                    return -1
            c0 = data[p] >> 4
            if c0 == 2 or c0 == 3:
                if p + (5 if c0 == 2 else 10) > end:
                    return -1
                a, b, c = _ts(data, p)
                pts = ((a & 0x0E) << 29) | ((b >> 1) << 15) | (c >> 1)
                if c0 == 3:
                    a, b, c = _ts(data, p + 5)
                    dts = ((a & 0x0E) << 29) | ((b >> 1) << 15) | (c >> 1)
                p += 5 if c0 == 2 else 10
            elif data[p] == 0x0F:
                p += 1
            else:
                return -2
            body = p
            hlen = p - pos - 6
            if length and length < hlen:
                return -2
            size = length - hlen if length else -1
        if sid >= 0xE0:
            if self._vsid != sid:
                if self._vsid < 0:
                    self._vsid = sid
                    self._apply_mapping()
                    kind = self._video_start(pts, dts, out)
                else:
                    kind = _SKIP  # a second video stream: GB/T 28181 carries one
            else:
                kind = self._video_start(pts, dts, out)
        else:
            if self._asid != sid and self._asid < 0:
                self._asid = sid
                self._apply_mapping()
            if self._asid == sid:
                if self._aopen:  # an unbounded audio PES ends at the next header
                    self._emit_audio(out)
                self._aopen = True
                self._apts = pts
                self._adts = dts if dts is not None else pts
                kind = _AUDIO
                if size == 0:
                    self._clear_audio()
                    kind = _SKIP
            else:
                kind = _SKIP
        self._after_pack = False
        self._kind = kind
        self._left = size
        return body

    def _video_start(self, pts: int | None, dts: int | None, out: list[AccessUnit]) -> int:
        """Decide whether a video PES continues the open frame, starts a new one, or is discarded."""
        if self._vskip:
            if pts is None:
                if self._ever_pts or not self._after_pack:
                    return _DISCARD
            elif pts == self._vskip_pts:
                return _DISCARD
            elif not (self._after_pack or self._last_marker) and self._packless < _PACKLESS_STREAM:
                # A pack header precedes each frame in this stream, and no marker said a frame just ended:
                # this PES continues a frame whose start was lost (e.g. a second PES repeating the lost PTS).
                self._vskip_pts = pts
                return _DISCARD
            self._vskip = False
            self._vprobe = True
        elif self._vopen:
            if pts is None:
                if self._ever_pts or not self._after_pack:
                    return _VIDEO
            elif pts == self._vpts:
                return _VIDEO
            self._end_frame(out)
        elif self._last_marker and (
            (pts is None and self._ever_pts) or (pts is not None and pts == self._last_pts)
        ):
            # The marker ended a frame that this PES continues: the device sets it elsewhere.
            self.marker_misfires += 1
            if self.marker_misfires >= _MARKER_MISFIRE_LIMIT:
                self._use_marker = False
        if pts is not None:
            self._ever_pts = True
        if not self._after_pack:
            self._packless += 1
        self._last_marker = False
        self._vfcodec = self._vcodec
        self._vopen = True
        self._vpts = pts
        self._vdts = dts if dts is not None else pts
        return _VIDEO

    def _unbounded(self, data: Buffer, pos: int, end: int, out: list[AccessUnit]) -> int:
        """Payload of a PES with PES_packet_length 0: up to the next system start code."""
        m = _SYSTEM_START.search(data, pos, end)
        if m is not None:
            j = m.start()
            if j > pos:
                self._take(data[pos:j], j - pos)
            self._left = 0
            if self._aopen and self._kind == _AUDIO:
                self._emit_audio(out)
            return j
        hold = 0
        if data[end - 1] == 0:
            hold = 2 if end - pos >= 2 and data[end - 2] == 0 else 1
        elif end - pos >= 3 and data[end - 1] == 1 and data[end - 2] == 0 and data[end - 3] == 0:
            hold = 3
        if end - hold > pos:
            self._take(data[pos : end - hold], end - hold - pos)
        if hold:
            self._tail = bytes(data[end - hold : end])
        return end

    def _check_suspect(self, data: Buffer, out: list[AccessUnit]) -> None:
        """A marker arrived mid-PES. If this payload starts a new PS unit, the PES length was wrong."""
        self._suspect = False
        if self._kind != _VIDEO or self._left <= 0 or len(data) < 4:
            return
        code = _u32(data, 0)[0]
        if code >> 8 == 1 and code & 0xFF >= 0xB9:
            self.pes_length_errors += 1
            self._left = 0
            self._end_frame(out)
            self._last_marker = True

    def _on_marker(self, out: list[AccessUnit]) -> None:
        if self._vskip:
            self._vskip_pts = None  # the discarded frame is over: any PTS may start the next one
            self._last_marker = True
            return
        if not self._vopen:
            return
        if self._kind == _VIDEO:
            if self._left > 0:
                self.marker_misfires += 1
                self._suspect = True
                self._clean = False
                return
            if self._left < 0:  # the marker ends an unbounded video PES
                if self._tail:
                    self._take(self._tail, len(self._tail))
                    self._tail = b""
                self._left = 0
                self._kind = _SKIP
        self._end_frame(out)
        self._last_marker = True

    # -- emitting ------------------------------------------------------------------------------------------------

    def _end_frame(self, out: list[AccessUnit]) -> None:
        parts = self._vparts
        size = self._vsize
        self._vopen = False
        if self._kind == _VIDEO:
            self._kind = _SKIP if self._left == 0 else _DISCARD
        if not size:
            return
        self._vparts = []
        self._vsize = 0
        first = parts[0]
        data = first if len(parts) == 1 and isinstance(first, bytes) else b"".join(parts)
        codec = self._vfcodec or self._vguess or self._guess_video(data)
        if codec is Codec.H264:
            key = self._inspect_h264(data)
        elif codec is Codec.H265:
            key = self._inspect_h265(data)
        elif codec is Codec.MPEG4:
            j = data.find(b"\x00\x00\x01\xb6", 0, 1024)  # ISO/IEC 14496-2 §6.2.5 VOP, vop_coding_type 00 = I
            key = 0 <= j < len(data) - 4 and data[j + 4] >> 6 == 0
        else:  # SVAC: not inspected, never gated
            key = False
            self._keyseen = True
        if not self._keyseen:
            if not key:
                self.skipped_frames += 1
                return
            self._keyseen = True
        self.frames += 1
        if key:
            self.keyframes += 1
        self._last_pts = self._vpts
        out.append(AccessUnit(codec, self._vpts, self._vdts, key, data))

    def _emit_audio(self, out: list[AccessUnit]) -> None:
        parts = self._aparts
        size = self._asize
        self._clear_audio()
        if not size:
            return
        first = parts[0]
        data = first if len(parts) == 1 and isinstance(first, bytes) else b"".join(parts)
        codec = self._acodec
        if codec is None:  # no PSM: ADTS sync word (ISO/IEC 13818-7 §6.2) means AAC, else GB's default G.711A
            codec = Codec.AAC if len(data) > 1 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0 else Codec.G711A
        self.audio_frames += 1
        out.append(AccessUnit(codec, self._apts, self._adts, True, data))

    def _guess_video(self, data: bytes) -> Codec:
        """H.264 unless the first NAL header is a plausible HEVC one; a parameter set makes the guess final."""
        i = data.find(_ZERO3, 0, _FIRST_START_CODE_WINDOW)
        if i < 0 or i + 5 > len(data):
            return Codec.H264
        h0 = data[i + 3]
        h1 = data[i + 4]
        t = (h0 >> 1) & 0x3F
        if h0 & 0x81 == 0 and 1 <= h1 <= 7 and t in _HEVC_FIRST:
            if t == 32 or t == 33:
                self._vguess = Codec.H265
            return Codec.H265
        if h0 & 0x9F in (7, 9):  # H.264 SPS or AUD with forbidden_zero_bit 0
            self._vguess = Codec.H264
        return Codec.H264

    def _inspect_h264(self, data: bytes) -> bool:
        """Keyframe test and parameter-set capture, reading NAL headers only up to the first slice."""
        find = data.find
        n = len(data)
        i = find(_ZERO3, 0, _FIRST_START_CODE_WINDOW)
        key = False
        sps: bytes | None = None
        pps: bytes | None = None
        while 0 <= i < n - 3:
            h = i + 3
            t = data[h] & 0x1F
            if 1 <= t <= 5:
                key = key or t == 5
                break
            i = find(_ZERO3, h)
            if t == 7 or t == 8:
                e = n if i < 0 else i
                while e > h and data[e - 1] == 0:
                    e -= 1
                if t == 7:
                    key = True
                    if sps is None:
                        sps = data[h:e]
                elif pps is None:
                    pps = data[h:e]
        if sps is not None and sps != self.sps:
            self.sps = sps
            try:
                info = h264.parse_sps(sps)
                self.width, self.height = info.width, info.height
            except ValueError:
                self.width = self.height = None
        if pps is not None:
            self.pps = pps
        return key

    def _inspect_h265(self, data: bytes) -> bool:
        find = data.find
        n = len(data)
        i = find(_ZERO3, 0, _FIRST_START_CODE_WINDOW)
        key = False
        sets: dict[int, bytes] = {}
        while 0 <= i < n - 3:
            h = i + 3
            t = (data[h] >> 1) & 0x3F
            if t < 32:
                key = 16 <= t <= 23
                break
            i = find(_ZERO3, h)
            if 32 <= t <= 34 and t not in sets:
                e = n if i < 0 else i
                while e > h and data[e - 1] == 0:
                    e -= 1
                sets[t] = data[h:e]
        if 32 in sets:
            self.vps = sets[32]
        if 34 in sets:
            self.pps = sets[34]
        sps = sets.get(33)
        if sps is not None and sps != self.sps:
            self.sps = sps
            try:
                info = h265.parse_sps(sps)
                self.width, self.height = info.width, info.height
            except ValueError:
                self.width = self.height = None
        return key


def _es_map(data: Buffer, p: int, stop: int, exact: bool) -> list[tuple[int, int]] | None:
    """(stream_type, elementary_stream_id) entries of a PSM elementary stream map (ISO/IEC 13818-1 §2.5.4.1).

    ``exact``: the entries must tile ``[p, stop)`` exactly, else ``None``. Otherwise whole entries are kept.
    """
    out: list[tuple[int, int]] = []
    while p + 4 <= stop:
        st = data[p]
        sid = data[p + 1]
        nxt = p + 4 + _u16(data, p + 2)[0]
        if nxt > stop:
            if exact:
                return None
            break
        out.append((st, sid))
        p = nxt
    if exact and p != stop:
        return None
    return out
