"""RTP media ingest: one ``RtpReceiver`` per stream, fed by thin socket adapters (UDP, single-port UDP, TCP).

Theory of operation
-------------------
``RtpReceiver.feed(data, addr, now)`` takes every datagram (or RFC 4571 frame) that reaches the stream's port and
does, in this order, with the cheapest checks first:

1. **RTCP** (second octet 192..223, RFC 5761 §4) is recognised and dropped: it is not media (``rtcp``).
2. **Source**: the host must be one of the expected hosts (the device's SIP address and the SDP ``c=`` address;
   ``None`` accepts any host); otherwise ``wrong_source``. The last offender is remembered for the diagnosis.
3. **RTP header** (``media.rtp.parse_rtp``): anything that does not parse is ``malformed``.
4. **SSRC**: the receiver locks onto one SSRC. The expected one (our ``y=``, or the device's answer) always wins.
   Another SSRC *from an expected host* is followed (``follow_ssrc``, default on) when nothing is locked yet (the
   device answered with, or simply sends, another SSRC: recorded in ``followed_ssrc``) or when the locked SSRC
   has been silent for ``ssrc_switch_after`` seconds (the device restarted its stream). Otherwise ``wrong_ssrc``.
   A change of SSRC restarts the reorder buffer and the payload detection (the demuxer starts afresh).
5. **Reordering**: ``media.reorder.ReorderBuffer`` (``max_delay`` 50 ms on UDP, 0 on TCP where nothing is
   reordered but gaps still are). Its deadline is exposed by ``next_deadline()``; the adapter arms one loop timer
   and calls ``on_timer(now)`` (aioquic's pattern). The receiver tracks the next expected sequence number itself,
   so the demuxer is told exactly which payload follows a gap (``discontinuity=True``).
6. **Payload kind**, detected from the first packets (``detect_payload``): MPEG-PS (a pack/system header/PSM/PES
   start code at the start of a payload, or a pack header anywhere in a PT 96 payload), MPEG-TS (0x47 every 188
   bytes), or RFC 6184 H.264 (PT 98, or an SPS alone or first in a STAP-A under another dynamic PT). Until then up
   to ``_MAX_HELD`` payloads are held and replayed into the chosen demuxer. PS goes to ``media.ps.PsDemuxer`` on
   the hot path; H.264 to ``media.rfc6184.Rfc6184Depacketizer``; TS to ``_TsDemuxer``, PyAV's ``mpegts`` demuxer
   (``probesize=32``, ``analyzeduration=0``) running in one worker thread fed through a bounded in-memory pipe,
   whose access units come back through a bounded queue (``drain()``; the adapter wakes the loop for it).
7. **Access units** go to the sink ``on_access_unit(au)`` on the loop thread. A sink that raises is a bug: it is
   logged and counted, and the stream goes on.

The hot path (a PS packet in order) is one ``struct.unpack_from`` in ``parse_rtp``, one ``memoryview`` slice, one
tuple, ``ReorderBuffer.push``'s fast path and ``PsDemuxer.feed``'s fast path: no per-packet objects beyond those,
no Prometheus call. Counters are plain ints, added to ``gateway.metrics`` about once a second (``_METRICS_EVERY``)
and at ``close()``; ``stats()`` returns an ``IngestStats`` snapshot.

Diagnosis. ``diagnosis(now, window)`` answers why no frame left in the last ``window`` seconds, from the last time
each kind of packet was seen: our packets (or malformed ones from the device) but no frames → ``UNDECODABLE``;
else packets from the device with another SSRC → ``WRONG_SSRC``; else packets from other hosts only →
``WRONG_SOURCE``; else ``NO_PACKETS`` (RTCP alone counts as no packets). ``explain(now, window)`` says the same
in words with the addresses and SSRCs involved.

Bounds. Every buffer is bounded: the reorder buffer (``reorder_packets``), the detection hold (``_MAX_HELD``
payloads), the demuxers' frame size (8 MiB) and, for PS, the number of packets fed without any access unit coming
out (``_MAX_QUIET_PACKETS``: a peer sending tiny payloads must not make one frame hold millions of buffers), the TS
pipe (``_TS_MAX_BUFFER`` bytes) and its output queue (``_TS_MAX_OUT``). What overflows is dropped and counted
(``overflow``).

Adapters (asyncio; each well under 300 lines of logic): ``UdpIngest`` (one port per stream),
``SinglePortUdpIngest`` (one port shared by every stream: routed by SSRC, else by source host when exactly one
stream expects that host), ``TcpPassiveIngest`` (we listen; only the expected host may connect) and
``TcpActiveIngest`` (we connect to the device, retrying until a deadline). Their ``stop()`` (and
``SinglePortUdpIngest.unregister``) close the receiver, which stops a TS worker thread and adds its last counts to
the metrics. The TCP adapters switch their receiver to ``use_ordered_transport()`` (no reorder wait).
"""

from __future__ import annotations

import asyncio
import collections
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, cast

import structlog

from media.frames import AccessUnit, Codec
from media.ps import PsDemuxer
from media.reorder import ReorderBuffer
from media.rfc6184 import Rfc6184Depacketizer
from media.rtp import Rfc4571Decoder, RtpError, parse_rtp

from . import metrics
from .metrics import NoMediaReason, PayloadKind, RtpDrop
from .netutil import grow_receive_buffer

__all__ = [
    "AccessUnitSink",
    "IngestStats",
    "NoMediaReason",
    "PayloadKind",
    "RtpReceiver",
    "SinglePortUdpIngest",
    "TcpActiveIngest",
    "TcpPassiveIngest",
    "UdpIngest",
    "detect_payload",
]

log = structlog.get_logger("gateway.ingest")

AccessUnitSink = Callable[[AccessUnit], None]
Addr = tuple[Any, ...]  # (host, port) or the IPv6 4-tuple

_METRICS_EVERY = 1.0
_MAX_HELD = 64  # payloads held while the payload kind is unknown
_MAX_QUIET_PACKETS = 16384  # PS packets fed without an access unit out before the demuxer is reset
_TS_MAX_BUFFER = 4 << 20  # bytes waiting for the TS worker
_TS_MAX_OUT = 512  # access units waiting for the loop
_TS_PACKET = 188
_DEFAULT_PAYLOAD_TYPES = {96: PayloadKind.PS, 98: PayloadKind.H264, 33: PayloadKind.TS}
_PS_CODES = frozenset({0xBA, 0xBB, 0xBC}) | frozenset(range(0xC0, 0xF0))
_H264_PROFILES = frozenset({66, 77, 88, 100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_u32 = struct.Struct("!I").unpack_from


def detect_payload(payload: bytes | memoryview, pt: int, hint: PayloadKind | None = None) -> PayloadKind | None:
    """What an RTP payload carries, or ``None`` if this packet does not tell (look at the next one).

    :param pt: the RTP payload type.
    :param hint: what the SDP maps ``pt`` to (default: 96 PS, 98 H.264, 33 MPEG-TS).
    """
    n = len(payload)
    if n == 0:
        return None
    b0 = payload[0]
    if b0 == 0x47:  # ISO/IEC 13818-1 §2.4.3.2 sync_byte, every 188 bytes (RFC 2250 §2)
        if n % _TS_PACKET == 0 and all(payload[i] == 0x47 for i in range(0, n, _TS_PACKET)):
            return PayloadKind.TS
    if n >= 4 and b0 == 0 and payload[1] == 0 and payload[2] == 1 and payload[3] in _PS_CODES:
        return PayloadKind.PS  # a pack header, system header, PSM or PES begins the payload
    if hint is PayloadKind.PS:
        # joined mid-frame: a pack header further in (the next frame) settles it
        return PayloadKind.PS if bytes(payload).find(b"\x00\x00\x01\xba") >= 0 else None
    if b0 & 0x80:  # not a NAL unit header (forbidden_zero_bit)
        return None
    t = b0 & 0x1F
    if hint is PayloadKind.H264:
        if 1 <= t <= 23 or (t == 24 and n > 3) or (t == 28 and n > 2):
            return PayloadKind.H264
        return None
    if hint is None and n > 4:  # another dynamic PT: only an SPS (alone or first in a STAP-A) is convincing
        if t == 7 and payload[1] in _H264_PROFILES:
            return PayloadKind.H264
        if t == 24 and n > 5 and payload[3] & 0x9F == 7 and payload[4] in _H264_PROFILES:
            return PayloadKind.H264
    return None


@dataclass(frozen=True, slots=True)
class IngestStats:
    """A snapshot of one receiver's counters (``RtpReceiver.stats()``)."""

    packets: int  # RTP packets accepted (right source and SSRC), duplicates and late ones included
    bytes: int
    rtcp: int
    malformed: int
    wrong_source: int
    wrong_ssrc: int
    lost: int
    reordered: int
    duplicate: int
    late: int
    stray: int
    overflow: int
    undecodable: int  # packets whose payload kind was never identified (dropped from the detection hold)
    demux_errors: int  # frames or payloads the demuxer dropped as damaged, malformed or oversized
    frames: int  # access units out (video and audio)
    keyframes: int
    first_packet_at: float | None
    last_packet_at: float | None
    last_frame_at: float | None
    payload_kind: PayloadKind
    ssrc: int | None  # the SSRC currently followed
    expected_ssrc: int | None
    followed_ssrc: int | None  # set when the stream's SSRC is not the expected one
    ssrc_changes: int
    restarts: int  # sequence restarts with the same SSRC (see ``RtpReceiver._restart``)
    last_wrong_source: Addr | None
    last_wrong_ssrc: int | None
    sink_errors: int

    @property
    def datagrams(self) -> int:
        """Everything fed to the receiver."""
        return self.packets + self.rtcp + self.malformed + self.wrong_source + self.wrong_ssrc


def _hosts(value: str | Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset((value,)) if value else None
    hosts = frozenset(h for h in value if h)
    return hosts or None


class RtpReceiver:
    """One stream's RTP: validate, reorder, detect, demux (see the module docstring). Sans sockets.

    :param on_access_unit: the sink, called on the loop thread for every access unit.
    :param expected_ssrc: our ``y=`` SSRC (``None``: lock onto the first SSRC from an expected host).
    :param expected_host: the host(s) media may come from (``None``: any).
    :param follow_ssrc: follow another SSRC from an expected host (see the module docstring).
    :param ssrc_switch_after: seconds of silence of the followed SSRC before another one may take over.
    :param reorder_delay: seconds a packet waits for a gap before the gap is given up (UDP).
    :param reorder_packets: most packets parked behind a gap.
    :param payload_types: RTP payload type → what it carries (from the SDP; default 96 PS, 98 H.264, 33 TS).
    :param payload_kind: skip detection and use this demuxer.
    :param name: for logs (e.g. the channel).
    """

    def __init__(
        self,
        on_access_unit: AccessUnitSink | None = None,
        *,
        expected_ssrc: int | None = None,
        expected_host: str | Iterable[str] | None = None,
        follow_ssrc: bool = True,
        ssrc_switch_after: float = 1.0,
        reorder_delay: float = 0.05,
        reorder_packets: int = 256,
        payload_types: dict[int, PayloadKind] | None = None,
        payload_kind: PayloadKind | None = None,
        name: str = "",
    ) -> None:
        self._sink: AccessUnitSink = on_access_unit or (lambda au: None)
        self._expected = expected_ssrc
        self._hosts = _hosts(expected_host)
        self._follow = follow_ssrc
        self._switch_after = ssrc_switch_after
        self._reorder_delay = reorder_delay
        self._reorder_packets = reorder_packets
        self._pt_kinds = dict(_DEFAULT_PAYLOAD_TYPES if payload_types is None else payload_types)
        self._forced = payload_kind
        self.name = name
        self._rb: ReorderBuffer[tuple[int, memoryview, bool, int, int]] = ReorderBuffer(
            reorder_packets, reorder_delay
        )
        self._rb_base = [0, 0, 0, 0, 0]  # lost, reordered, duplicate, late, stray of retired reorder buffers
        self._ssrc = -1  # locked SSRC (-1: none yet)
        self._next_seq = -1
        self._kind = PayloadKind.UNKNOWN
        self._ps: PsDemuxer | None = None
        self._h264: Rfc6184Depacketizer | None = None
        self._ts: _TsDemuxer | None = None
        self._held: collections.deque[tuple[memoryview, bool, bool, int, int]] = collections.deque()
        self._quiet = 0
        self._stalled = 0  # packets in a row that the reorder buffer released nothing for
        self._stall_limit = reorder_packets + 64
        self._restarts = 0
        self._waker: Callable[[], None] | None = None
        self._closed = False
        # counters (ints on the receiver: the hot path touches only these)
        self._packets = 0
        self._bytes = 0
        self._rtcp = 0
        self._malformed = 0
        self._wrong_source = 0
        self._wrong_ssrc = 0
        self._overflow = 0
        self._undecodable = 0
        self._demux_base = 0  # demux errors of retired demuxers
        self._frames = 0
        self._keyframes = 0
        self._sink_errors = 0
        self._ssrc_changes = 0
        self._followed: int | None = None
        self._first_packet_at: float | None = None
        self._last_packet_at: float | None = None
        self._last_frame_at: float | None = None
        self._last_malformed_at: float | None = None
        self._last_wrong_source_at: float | None = None
        self._last_wrong_ssrc_at: float | None = None
        self._last_rtcp_at: float | None = None
        self._last_wrong_source: Addr | None = None
        self._last_wrong_ssrc: int | None = None
        self._flush_at = 0.0
        self._flushed: dict[str, int] = {}
        #: Received bit rate (RTP bytes incl. headers) over the last metrics period, bits per second.
        self.bitrate = 0.0
        self._bitrate_from: tuple[float, int] | None = None
        if payload_kind is not None and payload_kind is not PayloadKind.UNKNOWN:
            self._set_kind(payload_kind)

    # ------------------------------------------------------------------------------------------ configuration
    @property
    def expected_ssrc(self) -> int | None:
        return self._expected

    @property
    def expected_hosts(self) -> frozenset[str] | None:
        return self._hosts

    @property
    def ssrc(self) -> int | None:
        """The SSRC the receiver is locked onto, if any."""
        return self._ssrc if self._ssrc >= 0 else None

    @property
    def payload_kind(self) -> PayloadKind:
        return self._kind

    def expect_ssrc(self, ssrc: int | None) -> None:
        """The SSRC to expect from now on (the device's answer ``y=``); it wins over a followed one."""
        self._expected = ssrc
        if ssrc is not None and ssrc == self._ssrc and self._followed == ssrc:
            self._followed = None  # what we followed is what the device announced

    def expect_host(self, hosts: str | Iterable[str] | None) -> None:
        """The host(s) media may come from (``None``: any)."""
        self._hosts = _hosts(hosts)

    def use_ordered_transport(self) -> None:
        """The transport delivers in order (TCP): give gaps up at once instead of waiting for reordering."""
        self._reorder_delay = 0.0
        self._rb.max_delay = 0.0

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        """``waker()`` is called from the TS worker thread when access units wait for ``drain()``."""
        self._waker = waker

    # ------------------------------------------------------------------------------------------ hot path
    def feed(self, data: bytes | memoryview, addr: Addr, now: float) -> None:
        """One datagram (or RFC 4571 frame) from ``addr``. Never raises on any input.

        :param data: the packet; kept by reference until its frame leaves, so it must not be modified.
        :param now: monotonic arrival time (``loop.time()``), never decreasing.
        """
        if now >= self._flush_at:
            self._flush_metrics(now)
        if len(data) > 1 and 192 <= data[1] <= 223:  # RTCP (RFC 5761 §4)
            self._rtcp += 1
            self._last_rtcp_at = now
            return
        hosts = self._hosts
        if hosts is not None and addr[0] not in hosts:
            self._wrong_source += 1
            self._last_wrong_source_at = now
            self._last_wrong_source = addr
            return
        try:
            pt, marker, seq, ts, ssrc, off, end = parse_rtp(data)
        except RtpError:
            self._malformed += 1
            self._last_malformed_at = now
            return
        if ssrc != self._ssrc and not self._other_ssrc(ssrc, seq, now):
            return
        self._packets += 1
        self._bytes += len(data)
        self._last_packet_at = now
        payload = memoryview(data)[off:end]
        item = (seq, payload, marker, ts, pt)
        items = self._rb.push(seq, item, now)
        if not items:
            self._stalled += 1
            if self._stalled > self._stall_limit:
                self._restart(item, now)
            return
        self._stalled = 0
        ps = self._ps
        if ps is not None and seq == self._next_seq and len(items) == 1:  # in order: items == [item]
            self._next_seq = (seq + 1) & 0xFFFF
            aus = ps.feed(payload, marker)
            if aus:
                self._emit(aus, now)
            else:
                self._quiet += 1
                if self._quiet > _MAX_QUIET_PACKETS:
                    self._runaway()
        else:
            self._deliver(items, now)

    def next_deadline(self) -> float | None:
        """When ``on_timer`` must run to give up a gap (``None``: nothing waits)."""
        return self._rb.next_deadline()

    def on_timer(self, now: float) -> None:
        """The reorder deadline passed: give the gap up and deliver what waited behind it."""
        items = self._rb.pop_ready(now)
        if items:
            self._stalled = 0
            self._deliver(items, now)
        if self._ts is not None:
            self.drain(now)

    def drain(self, now: float) -> None:
        """Deliver the access units the TS worker has produced (call on the loop thread)."""
        ts = self._ts
        if ts is not None:
            aus = ts.take()
            if aus:
                self._emit(aus, now)

    def flush(self, now: float) -> None:
        """End of input: deliver what the reorder buffer holds and the demuxer's complete frames."""
        items = self._rb.flush()
        if items:
            self._deliver(items, now)
        aus: list[AccessUnit] = []
        if self._ps is not None:
            aus = self._ps.flush()
        elif self._h264 is not None:
            aus = self._h264.flush()
        if aus:
            self._emit(aus, now)

    def close(self) -> None:
        """Stop the TS worker (if any), drop buffered data and add the last counts to the metrics. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._flush_metrics(0.0)
        self._drop_demuxer()
        self._retire_reorder()  # drops what it parked; its counts stay in stats()

    # ------------------------------------------------------------------------------------------ slow paths
    def _other_ssrc(self, ssrc: int, seq: int, now: float) -> bool:
        """A packet whose SSRC is not the locked one (from an expected host): lock, switch, or drop it."""
        cur = self._ssrc
        expected = self._expected
        if cur < 0:
            if expected is not None and ssrc != expected:
                if not self._follow:
                    return self._reject_ssrc(ssrc, now)
                self._followed = ssrc
                log.info("rtp ssrc followed", stream=self.name, expected=expected, ssrc=ssrc)
            self._lock(ssrc, seq, now)
            return True
        if ssrc == expected:
            log.info("rtp ssrc back to the expected one", stream=self.name, ssrc=ssrc, was=cur)
            self._followed = None
            self._lock(ssrc, seq, now)
            return True
        last = self._last_packet_at
        if self._follow and (last is None or now - last >= self._switch_after):
            log.info("rtp ssrc changed", stream=self.name, ssrc=ssrc, was=cur, expected=expected)
            self._followed = ssrc if expected is not None else None
            self._lock(ssrc, seq, now)
            return True
        return self._reject_ssrc(ssrc, now)

    def _reject_ssrc(self, ssrc: int, now: float) -> bool:
        self._wrong_ssrc += 1
        self._last_wrong_ssrc_at = now
        self._last_wrong_ssrc = ssrc
        return False

    def _lock(self, ssrc: int, seq: int, now: float) -> None:
        if self._ssrc >= 0:  # a new stream: start reordering and demuxing afresh
            self._ssrc_changes += 1
            self._retire_reorder()
            self._drop_demuxer()
            self._kind = PayloadKind.UNKNOWN
            if self._forced is not None and self._forced is not PayloadKind.UNKNOWN:
                self._set_kind(self._forced)
        self._ssrc = ssrc
        self._next_seq = seq
        if self._first_packet_at is None:
            self._first_packet_at = now

    def _restart(self, item: tuple[int, memoryview, bool, int, int], now: float) -> None:
        """More packets in a row released nothing than the reorder buffer can park: they are all being dropped
        (late or duplicate: the device restarted its sequence numbers a little behind, with the same SSRC).
        Start again at this packet."""
        log.info("rtp sequence restarted", stream=self.name, seq=item[0])
        self._restarts += 1
        self._stalled = 0
        self._retire_reorder()
        items = self._rb.push(item[0], item, now)
        self._deliver(items, now)

    def _retire_reorder(self) -> None:
        rb = self._rb
        base = self._rb_base
        base[0] += rb.lost
        base[1] += rb.reordered
        base[2] += rb.duplicate
        base[3] += rb.late
        base[4] += rb.stray
        self._stalled = 0
        self._rb = ReorderBuffer(self._reorder_packets, self._reorder_delay)

    def _deliver(self, items: list[tuple[int, memoryview, bool, int, int]], now: float) -> None:
        """Released packets, in order: note gaps, then demux (or detect)."""
        nxt = self._next_seq
        for seq, payload, marker, ts, pt in items:
            gap = seq != nxt
            nxt = (seq + 1) & 0xFFFF
            ps = self._ps
            if ps is not None:
                aus = ps.feed(payload, marker, gap)
                if not aus:
                    self._quiet += 1
                    if self._quiet > _MAX_QUIET_PACKETS:
                        self._runaway()
                    continue
            elif self._h264 is not None:
                aus = self._h264.feed(payload, ts, marker, gap)
            elif self._ts is not None:
                if not self._ts.feed(payload):
                    self._overflow += 1
                aus = self._ts.take()
            else:
                aus = self._detect(payload, marker, gap, ts, pt)
            if aus:
                self._emit(aus, now)
        self._next_seq = nxt

    def _detect(self, payload: memoryview, marker: bool, gap: bool, ts: int, pt: int) -> list[AccessUnit]:
        held = self._held
        kind = detect_payload(payload, pt, self._pt_kinds.get(pt))
        held.append((payload, marker, gap, ts, pt))
        if kind is None:
            if len(held) > _MAX_HELD:
                held.popleft()
                self._undecodable += 1
            return []
        log.info("rtp payload detected", stream=self.name, kind=kind.value, pt=pt)
        self._set_kind(kind)
        out: list[AccessUnit] = []
        first = True
        while held:
            p, m, g, t, _ = held.popleft()
            g = g and not first
            first = False
            if self._ps is not None:
                out += self._ps.feed(p, m, g)
            elif self._h264 is not None:
                out += self._h264.feed(p, t, m, g)
            elif self._ts is not None:
                if not self._ts.feed(p):
                    self._overflow += 1
        if self._ts is not None:
            out += self._ts.take()
        return out

    def _set_kind(self, kind: PayloadKind) -> None:
        self._kind = kind
        self._quiet = 0
        if kind is PayloadKind.PS:
            self._ps = PsDemuxer()
        elif kind is PayloadKind.H264:
            self._h264 = Rfc6184Depacketizer()
        elif kind is PayloadKind.TS:
            self._ts = _TsDemuxer(self._wake)

    def _drop_demuxer(self) -> None:
        self._demux_base += self._demux_errors()
        self._ps = None
        self._h264 = None
        if self._ts is not None:
            self._ts.close()
            self._ts = None
        self._held.clear()
        self._quiet = 0

    def _wake(self) -> None:  # TS worker thread
        waker = self._waker
        if waker is not None:
            waker()

    def _runaway(self) -> None:
        """Many PS packets and no access unit: drop what the demuxer holds (it keeps a reference per payload)."""
        self._quiet = 0
        self._overflow += 1
        if self._ps is not None:
            self._ps.reset()

    def _emit(self, aus: list[AccessUnit], now: float) -> None:
        self._quiet = 0
        self._last_frame_at = now
        sink = self._sink
        for au in aus:
            self._frames += 1
            if au.keyframe and au.codec.is_video:
                self._keyframes += 1
            try:
                sink(au)
            except Exception:  # a bug in the consumer: log it, keep the stream
                self._sink_errors += 1
                if self._sink_errors <= 3:
                    log.exception("access unit sink failed", stream=self.name)

    def _demux_errors(self) -> int:
        ps = self._ps
        if ps is not None:
            return ps.truncated_frames + ps.oversized_frames + ps.header_errors + ps.pes_length_errors
        h = self._h264
        if h is not None:
            return (h.truncated_frames + h.oversized_frames + h.malformed_packets + h.unsupported_packets
                    + h.fu_errors)
        t = self._ts
        if t is not None:
            return t.errors
        return 0

    # ------------------------------------------------------------------------------------------ facts
    def note_wrong_source(self, addr: Addr, now: float) -> None:
        """Something from ``addr`` was refused for this stream elsewhere (a TCP connection): for the diagnosis."""
        self._last_wrong_source_at = now
        self._last_wrong_source = addr

    def note_wrong_ssrc(self, ssrc: int, now: float) -> None:
        """A packet with ``ssrc`` from an expected host could not be routed here (single-port mode)."""
        self._last_wrong_ssrc_at = now
        self._last_wrong_ssrc = ssrc

    def stats(self) -> IngestStats:
        rb = self._rb
        base = self._rb_base
        ts = self._ts
        return IngestStats(
            packets=self._packets,
            bytes=self._bytes,
            rtcp=self._rtcp,
            malformed=self._malformed,
            wrong_source=self._wrong_source,
            wrong_ssrc=self._wrong_ssrc,
            lost=base[0] + rb.lost,
            reordered=base[1] + rb.reordered,
            duplicate=base[2] + rb.duplicate,
            late=base[3] + rb.late,
            stray=base[4] + rb.stray,
            overflow=self._overflow + (ts.overflow if ts is not None else 0),
            undecodable=self._undecodable,
            demux_errors=self._demux_base + self._demux_errors(),
            frames=self._frames,
            keyframes=self._keyframes,
            first_packet_at=self._first_packet_at,
            last_packet_at=self._last_packet_at,
            last_frame_at=self._last_frame_at,
            payload_kind=self._kind,
            ssrc=self.ssrc,
            expected_ssrc=self._expected,
            followed_ssrc=self._followed,
            ssrc_changes=self._ssrc_changes,
            restarts=self._restarts,
            last_wrong_source=self._last_wrong_source,
            last_wrong_ssrc=self._last_wrong_ssrc,
            sink_errors=self._sink_errors,
        )

    def diagnosis(self, now: float, window: float = 5.0) -> NoMediaReason | None:
        """Why no access unit left in the last ``window`` seconds; ``None`` if frames flow.

        Pass the no-media timeout as ``window`` when deciding to give a stream up.
        """
        since = now - window

        def recent(t: float | None) -> bool:
            return t is not None and t >= since

        if recent(self._last_frame_at):
            return None
        if recent(self._last_packet_at) or recent(self._last_malformed_at):
            return NoMediaReason.UNDECODABLE
        if recent(self._last_wrong_ssrc_at):
            return NoMediaReason.WRONG_SSRC
        if recent(self._last_wrong_source_at):
            return NoMediaReason.WRONG_SOURCE
        return NoMediaReason.NO_PACKETS

    def explain(self, now: float, window: float = 5.0) -> str:
        """``diagnosis`` in words, for logs and the API."""
        reason = self.diagnosis(now, window)
        hosts = ", ".join(sorted(self._hosts)) if self._hosts else "any host"
        if reason is None:
            return "media flows"
        if reason is NoMediaReason.UNDECODABLE:
            s = self.stats()
            return (f"RTP packets arrive ({s.packets} accepted, {s.malformed} malformed) but no frames come out: "
                    f"payload {s.payload_kind.value}, {s.demux_errors} demux errors, {s.undecodable} undecodable")
        if reason is NoMediaReason.WRONG_SSRC:
            return (f"packets from {hosts} carry SSRC {self._last_wrong_ssrc}, not the expected "
                    f"{self._expected if self._expected is not None else self.ssrc}")
        if reason is NoMediaReason.WRONG_SOURCE:
            src = self._last_wrong_source
            where = f"{src[0]}:{src[1]}" if src else "another host"
            return f"packets arrive only from {where}, expected from {hosts}"
        rtcp = " (RTCP only)" if self._last_rtcp_at is not None and self._last_rtcp_at >= now - window else ""
        return f"no RTP packets in the last {window:g} s{rtcp}"

    # ------------------------------------------------------------------------------------------ metrics
    def _flush_metrics(self, now: float) -> None:
        self._flush_at = now + _METRICS_EVERY
        s = self.stats()
        last = self._flushed
        since = self._bitrate_from
        if since is not None and now > since[0]:
            self.bitrate = (s.bytes - since[1]) * 8 / (now - since[0])
        self._bitrate_from = (now, s.bytes)
        for name, value, counter in (
            ("packets", s.packets, metrics.RTP_PACKETS),
            ("bytes", s.bytes, metrics.RTP_BYTES),
            ("lost", s.lost, metrics.RTP_LOST),
            ("reordered", s.reordered, metrics.RTP_REORDERED),
        ):
            delta = value - last.get(name, 0)
            if delta > 0:
                counter.inc(delta)
                last[name] = value
        for reason, value in (
            (RtpDrop.RTCP, s.rtcp),
            (RtpDrop.MALFORMED, s.malformed),
            (RtpDrop.WRONG_SOURCE, s.wrong_source),
            (RtpDrop.WRONG_SSRC, s.wrong_ssrc),
            (RtpDrop.LATE, s.late),
            (RtpDrop.DUPLICATE, s.duplicate),
            (RtpDrop.STRAY, s.stray),
            (RtpDrop.OVERFLOW, s.overflow),
        ):
            delta = value - last.get(reason.value, 0)
            if delta > 0:
                metrics.RTP_DROPPED.labels(reason.value).inc(delta)
                last[reason.value] = value
        delta = s.frames - last.get("frames", 0)
        if delta > 0 and s.payload_kind is not PayloadKind.UNKNOWN:
            metrics.INGEST_FRAMES.labels(s.payload_kind.value).inc(delta)
            last["frames"] = s.frames


# ---------------------------------------------------------------------------------------------- MPEG-TS via PyAV
_CODECS = {
    "h264": Codec.H264,
    "hevc": Codec.H265,
    "mpeg4": Codec.MPEG4,
    "aac": Codec.AAC,
    "pcm_alaw": Codec.G711A,
    "pcm_mulaw": Codec.G711U,
}
_TS_TIME_BASE = Fraction(1, 90000)


class _TsDemuxer:
    """PyAV's ``mpegts`` demuxer in one worker thread, fed through a bounded pipe (see the module docstring).

    PyAV reads with a blocking ``read(size)`` on the worker thread; ``feed`` (loop thread) appends to the pipe or
    drops and counts when it is full. ``max_streams`` keeps the demuxer from adding streams without bound (PyAV
    indexes a per-stream table sized at open). A container that fails is reopened, at most ``_MAX_OPENS`` times.
    """

    _MAX_OPENS = 8

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._closed = False
        self._out: collections.deque[AccessUnit] = collections.deque()
        self.overflow = 0
        self.errors = 0
        self.frames = 0
        self._thread = threading.Thread(target=self._run, name="ingest-mpegts", daemon=True)
        self._thread.start()

    # loop thread
    def feed(self, payload: memoryview) -> bool:
        n = len(payload)
        with self._cond:
            if self._closed or self._buffered + n > _TS_MAX_BUFFER:
                return False
            self._chunks.append(bytes(payload))
            self._buffered += n
            self._cond.notify()
        return True

    def take(self) -> list[AccessUnit]:
        out: list[AccessUnit] = []
        pop = self._out.popleft
        while self._out:
            out.append(pop())
        return out

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()
        self._thread.join(timeout=2.0)

    # worker thread
    def read(self, size: int) -> bytes:
        with self._cond:
            while not self._chunks and not self._closed:
                self._cond.wait()
            if not self._chunks:
                return b""  # closed: end of file
            chunk = self._chunks[0]
            if len(chunk) <= size:
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[size:]
                chunk = chunk[:size]
            self._buffered -= len(chunk)
            return chunk

    def _run(self) -> None:
        import av  # PyAV loads FFmpeg: only streams that need it pay for the import

        opens = 0
        while not self._closed and opens < self._MAX_OPENS:
            opens += 1
            try:
                with av.open(
                    _Reader(self), "r", format="mpegts",
                    options={"probesize": "32", "analyzeduration": "0", "max_streams": "8"},
                ) as container:
                    for packet in container.demux():
                        if self._closed:
                            break
                        if packet.size == 0:
                            continue
                        au = self._access_unit(packet)
                        if au is None:
                            continue
                        if len(self._out) >= _TS_MAX_OUT:
                            self.overflow += 1
                            continue
                        self._out.append(au)
                        self.frames += 1
                        self._wake()
            except Exception as exc:  # av.error.*: a broken stream; reopen on the data that follows
                if self._closed:
                    break
                self.errors += 1
                log.info("mpegts demux error", error=str(exc), opens=opens)

    @staticmethod
    def _access_unit(packet: Any) -> AccessUnit | None:
        stream = packet.stream
        codec = _CODECS.get(stream.codec_context.name)
        if codec is None:
            return None
        tb = packet.time_base or stream.time_base or _TS_TIME_BASE

        def ticks(v: int | None) -> int | None:
            if v is None:
                return None
            return (v if tb == _TS_TIME_BASE else int(v * tb * 90000)) & ((1 << 33) - 1)

        pts = ticks(packet.pts)
        dts = ticks(packet.dts)
        key = bool(packet.is_keyframe) if codec.is_video else True
        return AccessUnit(codec, pts, dts if dts is not None else pts, key, bytes(packet))


class _Reader:
    """The file-like object PyAV reads: ``read`` only (not seekable)."""

    __slots__ = ("read",)

    def __init__(self, demuxer: _TsDemuxer) -> None:
        self.read = demuxer.read


# ---------------------------------------------------------------------------------------------- adapters
class _Timer:
    """One loop timer for a receiver's reorder deadline (aioquic's re-arm pattern)."""

    __slots__ = ("_loop", "_receiver", "_handle", "_at")

    def __init__(self, loop: asyncio.AbstractEventLoop, receiver: RtpReceiver) -> None:
        self._loop = loop
        self._receiver = receiver
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def check(self) -> None:
        at = self._receiver.next_deadline()
        if at is None or at == self._at:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._at = at
        self._handle = self._loop.call_at(at + 0.001, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._at = None
        try:
            self._receiver.on_timer(self._loop.time())
        except Exception:
            log.exception("rtp receiver timer failed", stream=self._receiver.name)
        self.check()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = None


def _attach(receiver: RtpReceiver, loop: asyncio.AbstractEventLoop) -> None:
    """Let the receiver's TS worker wake the loop to deliver its access units."""

    def drain() -> None:
        try:
            receiver.drain(loop.time())
        except Exception:
            log.exception("rtp receiver drain failed", stream=receiver.name)

    def wake() -> None:
        try:
            loop.call_soon_threadsafe(drain)
        except RuntimeError:  # the loop is closed: nobody to deliver to
            pass

    receiver.set_waker(wake)


def _feed_failed(receiver: RtpReceiver) -> None:
    log.exception("rtp receiver failed on a packet", stream=receiver.name)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, receiver: RtpReceiver, timer: _Timer, loop: asyncio.AbstractEventLoop) -> None:
        self._feed = receiver.feed
        self._receiver = receiver
        self._timer = timer
        self._time = loop.time

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        try:
            self._feed(data, addr, self._time())
        except Exception:
            _feed_failed(self._receiver)
        self._timer.check()

    def error_received(self, exc: Exception) -> None:  # ICMP errors on an unconnected socket: nothing to do
        pass


class UdpIngest:
    """One UDP port for one stream (GB/T 28181 ``RTP/AVP``).

    :param host: the local address to bind (``0.0.0.0``: every interface).
    :param rcvbuf: the socket receive buffer to ask for (best effort).
    """

    def __init__(self, port: int, receiver: RtpReceiver, *, host: str = "0.0.0.0", rcvbuf: int = 2 << 20) -> None:
        self.port = port
        self.host = host
        self.receiver = receiver
        self._rcvbuf = rcvbuf
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: _Timer | None = None

    async def start(self) -> None:
        """Bind the port (``OSError`` if it is taken: release it to the pool and allocate another)."""
        loop = asyncio.get_running_loop()
        self._timer = _Timer(loop, self.receiver)
        timer = self._timer
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self.receiver, timer, loop), local_addr=(self.host, self.port)
        )
        if self.port == 0:
            self.port = self._transport.get_extra_info("sockname")[1]
        grow_receive_buffer(self._transport, self._rcvbuf)
        _attach(self.receiver, loop)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self.receiver.close()


class _Route:
    __slots__ = ("receiver", "ssrcs", "hosts", "timer")

    def __init__(self, receiver: RtpReceiver, timer: _Timer) -> None:
        self.receiver = receiver
        self.ssrcs: set[int] = set()  # registered SSRCs and the ones learned by host fallback
        self.hosts: frozenset[str] = frozenset()
        self.timer = timer


class _SinglePortProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SinglePortUdpIngest) -> None:
        assert owner._loop is not None
        self._owner = owner
        self._routes = owner._by_ssrc
        self._time = owner._loop.time

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        now = self._time()
        if len(data) >= 12 and not 192 <= data[1] <= 223:
            route = self._routes.get(_u32(data, 8)[0])
        else:
            route = None
        if route is None:
            route = self._owner._fallback(data, addr, now)
            if route is None:
                return
        try:
            route.receiver.feed(data, addr, now)
        except Exception:
            _feed_failed(route.receiver)
        route.timer.check()

    def error_received(self, exc: Exception) -> None:
        pass


class SinglePortUdpIngest:
    """One UDP port shared by every stream: routed by SSRC, else by source host (see the module docstring).

    Packets no stream claims are dropped and counted here (``unrouted``), as ``wrong_source`` (no stream expects
    the host) or ``wrong_ssrc`` (several streams expect the host and none has the SSRC).
    """

    def __init__(self, port: int, *, host: str = "0.0.0.0", rcvbuf: int = 8 << 20) -> None:
        self.port = port
        self.host = host
        self._rcvbuf = rcvbuf
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._by_ssrc: dict[int, _Route] = {}
        self._by_host: dict[str, list[_Route]] = {}
        self._routes: dict[int, _Route] = {}  # id(receiver) -> route
        self.unrouted = {RtpDrop.WRONG_SOURCE: 0, RtpDrop.WRONG_SSRC: 0, RtpDrop.MALFORMED: 0, RtpDrop.RTCP: 0}
        self._last_unrouted: tuple[Addr, int] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _SinglePortProtocol(self), local_addr=(self.host, self.port)
        )
        if self.port == 0:
            self.port = self._transport.get_extra_info("sockname")[1]
        grow_receive_buffer(self._transport, self._rcvbuf)

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for route in list(self._routes.values()):
            self._remove(route)

    @property
    def streams(self) -> int:
        return len(self._routes)

    def register(self, ssrc: int | None, receiver: RtpReceiver, expected_host: str | Iterable[str] | None) -> None:
        """Route ``ssrc`` (and, by fallback, packets from ``expected_host``) to ``receiver``.

        Registering the same receiver again (the device answered another ``y=``) adds the SSRC and replaces the
        hosts; the receiver is told to expect them.
        """
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        route = self._routes.get(id(receiver))
        if route is None:
            route = _Route(receiver, _Timer(loop, receiver))
            self._routes[id(receiver)] = route
            _attach(receiver, loop)
        if ssrc is not None:
            other = self._by_ssrc.get(ssrc)
            if other is not None and other is not route:
                log.warning("single-port ssrc taken over by another stream", ssrc=ssrc)
                other.ssrcs.discard(ssrc)
            self._by_ssrc[ssrc] = route
            route.ssrcs.add(ssrc)
            receiver.expect_ssrc(ssrc)
        self._set_hosts(route, _hosts(expected_host) or frozenset())
        receiver.expect_host(expected_host)

    def unregister(self, key: int | RtpReceiver) -> None:
        """Stop routing to a stream, given its receiver or any SSRC it was registered with; closes the receiver."""
        if isinstance(key, RtpReceiver):
            route = self._routes.get(id(key))
        else:
            route = self._by_ssrc.get(key)
        if route is not None:
            self._remove(route)

    def _remove(self, route: _Route) -> None:
        route.timer.cancel()
        for ssrc in route.ssrcs:
            if self._by_ssrc.get(ssrc) is route:
                del self._by_ssrc[ssrc]
        self._set_hosts(route, frozenset())
        self._routes.pop(id(route.receiver), None)
        route.receiver.close()

    def _set_hosts(self, route: _Route, hosts: frozenset[str]) -> None:
        for host in route.hosts - hosts:
            routes = self._by_host.get(host, [])
            if route in routes:
                routes.remove(route)
            if not routes:
                self._by_host.pop(host, None)
        for host in hosts - route.hosts:
            self._by_host.setdefault(host, []).append(route)
        route.hosts = hosts

    def _fallback(self, data: bytes, addr: Addr, now: float) -> _Route | None:
        """No stream has this SSRC (or it is RTCP / too short): route by host, or drop and count."""
        if len(data) < 12:
            reason = RtpDrop.MALFORMED
        elif 192 <= data[1] <= 223:  # RTCP: the sender SSRC (RFC 3550 §6.4) names the stream
            route = self._by_ssrc.get(_u32(data, 4)[0])
            if route is not None:
                return route
            candidates = self._by_host.get(addr[0], ())
            if len(candidates) == 1:
                return candidates[0]
            reason = RtpDrop.RTCP
        else:
            ssrc = _u32(data, 8)[0]
            candidates = self._by_host.get(addr[0], ())
            if len(candidates) == 1:
                route = candidates[0]
                if not route.receiver._follow:
                    return route  # it counts the wrong SSRC itself
                if route.receiver.ssrc is None or route.receiver.ssrc not in route.ssrcs:
                    self._learn(route, ssrc)
                return route
            if candidates:
                reason = RtpDrop.WRONG_SSRC
                for route in candidates:
                    route.receiver.note_wrong_ssrc(ssrc, now)
            else:
                reason = RtpDrop.WRONG_SOURCE
            self._last_unrouted = (addr, ssrc)
        self.unrouted[reason] += 1
        metrics.RTP_DROPPED.labels(reason.value).inc()
        return None

    def _learn(self, route: _Route, ssrc: int) -> None:
        """The one stream expecting this host gets an SSRC nobody registered: route it there from now on."""
        if len(route.ssrcs) >= 8 or ssrc in self._by_ssrc:
            return
        self._by_ssrc[ssrc] = route
        route.ssrcs.add(ssrc)


class _TcpProtocol(asyncio.Protocol):
    """RFC 4571 over one TCP connection into a receiver."""

    def __init__(self, receiver: RtpReceiver, loop: asyncio.AbstractEventLoop, timer: _Timer,
                 on_made: Callable[[_TcpProtocol], bool], on_lost: Callable[[_TcpProtocol], None]) -> None:
        self._receiver = receiver
        self._feed = receiver.feed
        self._time = loop.time
        self._timer = timer
        self._on_made = on_made
        self._on_lost = on_lost
        self._decoder = Rfc4571Decoder()
        self.transport: asyncio.Transport | None = None
        self.peer: Addr = ("", 0)
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport is not an asyncio.Transport subclass
        self.transport = transport
        self.peer = tuple(transport.get_extra_info("peername") or ("", 0))
        if not self._on_made(self):
            transport.abort()

    def data_received(self, data: bytes) -> None:
        now = self._time()
        feed = self._feed
        peer = self.peer
        try:
            for frame in self._decoder.feed(data):
                feed(frame, peer, now)
        except Exception:
            _feed_failed(self._receiver)
        self._timer.check()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_lost(self)


class TcpPassiveIngest:
    """We listen on ``port``; the device connects (``a=setup:passive`` in our offer) and sends RFC 4571 frames.

    Only a connection from ``expected_host`` is accepted (``None``: any); others are closed at once and counted
    as ``wrong_source``. One connection at a time: a new one from the device replaces the old (it reconnected).
    """

    def __init__(self, port: int, receiver: RtpReceiver, expected_host: str | Iterable[str] | None,
                 *, host: str = "0.0.0.0") -> None:
        self.port = port
        self.host = host
        self.receiver = receiver
        self._hosts = _hosts(expected_host)
        self._server: asyncio.AbstractServer | None = None
        self._conn: _TcpProtocol | None = None
        self._timer: _Timer | None = None
        self.connections = 0
        self.refused = 0
        receiver.expect_host(expected_host)
        receiver.use_ordered_transport()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = timer = _Timer(loop, self.receiver)
        self._server = await loop.create_server(
            lambda: _TcpProtocol(self.receiver, loop, timer, self._accept, self._lost),
            self.host, self.port, reuse_address=True,
        )
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        _attach(self.receiver, loop)

    def _accept(self, conn: _TcpProtocol) -> bool:
        if self._server is None:
            return False
        if self._hosts is not None and conn.peer[0] not in self._hosts:
            self.refused += 1
            metrics.RTP_DROPPED.labels(RtpDrop.WRONG_SOURCE.value).inc()
            self.receiver.note_wrong_source(conn.peer, self._timer._loop.time() if self._timer else 0.0)
            log.warning("rtp tcp connection refused", stream=self.receiver.name, peer=conn.peer[0],
                        expected=sorted(self._hosts))
            return False
        old = self._conn
        self._conn = conn
        self.connections += 1
        if old is not None and old.transport is not None:
            old.transport.close()
        return True

    def _lost(self, conn: _TcpProtocol) -> None:
        if self._conn is conn:
            self._conn = None

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.abort()
        if server is not None:
            await server.wait_closed()
        self.receiver.close()


class TcpActiveIngest:
    """We connect to the device's ``host:port`` (its answer had ``a=setup:passive``) and read RFC 4571 frames.

    Connection attempts repeat every ``retry_interval`` until ``connect_timeout`` seconds have passed; a dropped
    connection starts a new such window. ``failed`` is set when a window ends without a connection.

    :param local_addr: bind the connecting socket (some devices check the port we offered).
    """

    def __init__(self, host: str, port: int, receiver: RtpReceiver, *, connect_timeout: float = 10.0,
                 retry_interval: float = 0.25, local_addr: tuple[str, int] | None = None) -> None:
        self.host = host
        self.port = port
        self.receiver = receiver
        self.connect_timeout = connect_timeout
        self.retry_interval = retry_interval
        self.local_addr = local_addr
        self._task: asyncio.Task[None] | None = None
        self._conn: _TcpProtocol | None = None
        self._timer: _Timer | None = None
        self.attempts = 0
        self.connections = 0
        self.failed = False
        self.connected_event = asyncio.Event()
        receiver.use_ordered_transport()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = _Timer(loop, self.receiver)
        _attach(self.receiver, loop)
        self._task = asyncio.create_task(self._run(loop), name=f"rtp tcp active {self.host}:{self.port}")

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._timer is not None
        timer = self._timer
        while True:
            until = loop.time() + self.connect_timeout
            conn: _TcpProtocol | None = None
            while conn is None:
                self.attempts += 1
                try:
                    _, proto = await asyncio.wait_for(
                        loop.create_connection(
                            lambda: _TcpProtocol(self.receiver, loop, timer, self._made, self._lost),
                            self.host, self.port, local_addr=self.local_addr,
                        ),
                        timeout=max(0.05, min(3.0, until - loop.time())),
                    )
                    conn = proto
                except (OSError, TimeoutError) as exc:
                    if loop.time() + self.retry_interval >= until:
                        self.failed = True
                        log.warning("rtp tcp connect failed", stream=self.receiver.name, host=self.host,
                                    port=self.port, attempts=self.attempts, error=str(exc))
                        return
                    await asyncio.sleep(self.retry_interval)
            self.failed = False
            await conn.closed
            log.info("rtp tcp connection closed by the device", stream=self.receiver.name, host=self.host)

    def _made(self, conn: _TcpProtocol) -> bool:
        self._conn = conn
        self.connections += 1
        self.connected_event.set()
        return True

    def _lost(self, conn: _TcpProtocol) -> None:
        if self._conn is conn:
            self._conn = None
            self.connected_event.clear()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._timer is not None:
            self._timer.cancel()
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.abort()
        self.receiver.close()
