"""gateway.ingest, gateway.ports and media.rfc6184: RTP ingest through real sockets on 127.0.0.1.

Streams are made with our ``PsMuxer`` + ``PsRtpPacketizer`` from PyAV-encoded H.264/H.265 and G.711A, with
PyAV's ``mpegts`` muxer (MPEG-TS over RTP) and with a test-side RFC 6184 packetizer; the Hikvision capture is
replayed over UDP and TCP. Senders pace themselves on what the receiver has seen (no sleeps as a sync
mechanism), and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import functools
import random
import socket
import struct
from collections.abc import Callable, Iterable
from fractions import Fraction

import pytest
from media_util import (
    HIKVISION,
    EncodedFrame,
    capture,
    decode_video,
    encode_video,
    have_encoder,
    lenpfx_frames,
)
from prometheus_client import REGISTRY

from gateway import metrics
from gateway.ingest import (
    NoMediaReason,
    PayloadKind,
    RtpReceiver,
    SinglePortUdpIngest,
    TcpActiveIngest,
    TcpPassiveIngest,
    UdpIngest,
    detect_payload,
)
from gateway.ports import PortPool, PortsExhausted, SsrcAllocator, SsrcExhausted
from media import h264
from media.frames import AccessUnit, Codec
from media.ps import PsDemuxer
from media.psmux import PsMuxer, PsRtpPacketizer
from media.rfc6184 import Rfc6184Depacketizer, starts_access_unit
from media.rtp import build_rtp, rfc4571_frame

HOST = "127.0.0.1"
OTHER = "127.0.0.2"  # another source address on loopback (Linux routes all of 127/8 locally)
SSRC = 100001234  # "0100001234": live, domain digits 20000... as the allocator would make for 3410000000
HIK_SSRC = 0x05F5ED76
WAIT = 15.0  # generous functional timeout for every wait


# ---------------------------------------------------------------------------------------------- test media
def alaw_frames(count: int, samples: int = 160) -> list[bytes]:
    """G.711A frames of a 440 Hz tone, encoded by PyAV (20 ms each at 8 kHz)."""
    import av
    import numpy as np

    ctx = av.CodecContext.create("pcm_alaw", "w")
    ctx.sample_rate = 8000
    ctx.layout = "mono"
    ctx.format = "s16"
    out: list[bytes] = []
    for i in range(count):
        t = (np.arange(samples) + i * samples) / 8000.0
        pcm = (np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 8000
        frame.pts = i * samples
        frame.time_base = Fraction(1, 8000)
        out += [bytes(p) for p in ctx.encode(frame)]
    return out


@functools.cache
def av_stream(codec: str = "H264", frames: int = 20, audio: bool = True, gop: int = 10) -> tuple[AccessUnit, ...]:
    """Video (and G.711A) access units in sending order, timestamps from 90 kHz 0."""
    encoder = {"H264": "libx264", "H265": "libx265"}[codec]
    if not have_encoder(encoder):
        pytest.skip(f"PyAV has no {encoder}")
    video = encode_video(encoder, 320, 240, frames=frames, gop=gop)
    aus = [AccessUnit(Codec[codec], f.pts, f.dts, f.keyframe, f.data) for f in video]
    if audio:
        samples = alaw_frames(2 * frames)
        aus += [AccessUnit(Codec.G711A, i * 1800, i * 1800, True, s) for i, s in enumerate(samples)]
        aus.sort(key=lambda a: (a.dts, a.codec.is_audio))
    return tuple(aus)


def ps_rtp(aus: Iterable[AccessUnit], ssrc: int = SSRC, max_payload: int = 1400, seq: int = 65000,
           video: Codec = Codec.H264, audio: Codec | None = Codec.G711A) -> list[bytes]:
    """PS over RTP (PT 96) from our muxer and packetizer; sequence numbers wrap early on purpose."""
    muxer = PsMuxer(video, audio)
    pk = PsRtpPacketizer(ssrc, max_payload=max_payload, seq=seq, ts_offset=123456)
    out: list[bytes] = []
    for au in aus:
        out += pk.packetize(muxer.mux(au), au.pts or 0)
    return out


def rfc6184_rtp(frames: Iterable[EncodedFrame], ssrc: int = SSRC, mtu: int = 600) -> list[bytes]:
    """RFC 6184 (PT 98): SPS+PPS in a STAP-A, large NAL units as FU-A, others single; marker on each AU's last."""
    out: list[bytes] = []
    seq = 100
    for f in frames:
        nals = [bytes(n) for n in h264.split_annexb(f.data)]
        payloads: list[bytes] = []
        small = [n for n in nals if n[0] & 0x1F in (7, 8)]
        if small:
            payloads.append(b"\x18" + b"".join(struct.pack("!H", len(n)) + n for n in small))
        for n in nals:
            if n[0] & 0x1F in (7, 8):
                continue
            if len(n) <= mtu:
                payloads.append(n)
                continue
            head, body = n[0], n[1:]
            chunks = [body[i : i + mtu] for i in range(0, len(body), mtu)]
            for i, c in enumerate(chunks):
                fu = (head & 0x1F) | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
                payloads.append(bytes(((head & 0xE0) | 28, fu)) + c)
        for i, p in enumerate(payloads):
            out.append(build_rtp(98, i == len(payloads) - 1, seq, f.pts, ssrc, p))
            seq += 1
    return out


def annexb4(data: bytes) -> bytes:
    """An access unit rewritten with 4-byte start codes (what the RFC 6184 depacketizer produces)."""
    return b"".join(b"\x00\x00\x00\x01" + bytes(n) for n in h264.split_annexb(data))


@functools.cache
def ts_rtp(frames: int = 15) -> tuple[bytes, ...]:
    """H.264 in MPEG-TS from PyAV's mpegts muxer, 7 x 188 bytes per RTP packet (RFC 2250, PT 33)."""
    import io

    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "keyint=10"}
        for i in range(frames):
            img = np.zeros((240, 320, 3), dtype=np.uint8)
            img[..., 0] = (np.arange(320) + 9 * i) % 256
            img[40:80, (i * 7) % 280 : (i * 7) % 280 + 40, 1] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    data = buf.getvalue()
    assert len(data) % 188 == 0
    step = 7 * 188
    return tuple(
        build_rtp(33, False, 5000 + i, 90000 + i * 10, SSRC, data[j : j + step])
        for i, j in enumerate(range(0, len(data), step))
    )


def hikvision_packets() -> list[bytes]:
    return list(lenpfx_frames(capture(HIKVISION).read_bytes()))


def demux_direct(packets: Iterable[bytes]) -> list[AccessUnit]:
    d = PsDemuxer()
    out: list[AccessUnit] = []
    for p in packets:
        out += d.feed(memoryview(p)[12:], bool(p[1] & 0x80))
    return out


def rtcp_rr(ssrc: int = SSRC) -> bytes:
    """An RTCP receiver report with one report block (RFC 3550 §6.4.2)."""
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + struct.pack("!IIIIII", 1, 0, 0, 0, 0, 0)


def garbage(rng: random.Random, n: int) -> list[bytes]:
    """Datagrams that are not RTP: too short, version 0/1/3, bad padding; never in the RTCP range."""
    out = [b"", b"\x80", b"\x80\x60\x00", bytes(11)]
    while len(out) < n:
        b0 = rng.choice([0x00, 0x40, 0xC0, 0x3F, 0xA0])
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(12, 60)))
        pkt = bytes((b0, 0x60)) + body
        if b0 == 0xA0:
            pkt = pkt[:-1] + b"\xff"  # padding count larger than the packet
        out.append(pkt)
    return out


# ---------------------------------------------------------------------------------------------- socket helpers
async def until(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


def udp_socket(src: str = HOST) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((src, 0))
    return sock


async def send_udp(units: Iterable[bytes | list[bytes]], port: int, seen: Callable[[], int], src: str = HOST,
                   batch: int = 24) -> int:
    """Send datagrams to ``port`` in batches, each time waiting until ``seen()`` has counted them all.

    An element may be a list: its packets go out back to back in one batch (a reordered pair).
    """
    sock = udp_socket(src)
    base = seen()
    sent = 0
    pending = 0
    try:
        for unit in units:
            for pkt in unit if isinstance(unit, list) else [unit]:
                sock.sendto(pkt, (HOST, port))
                sent += 1
                pending += 1
            if pending >= batch:
                pending = 0
                await until(lambda n=sent: seen() - base >= n, f"{sent} datagrams to arrive")
        await until(lambda: seen() - base >= sent, f"{sent} datagrams to arrive")
    finally:
        sock.close()
    return sent


async def send_tcp(writer: asyncio.StreamWriter, packets: Iterable[bytes], chunk: int = 1000) -> None:
    """RFC 4571 frames written in odd-sized chunks, so that frames straddle reads."""
    data = b"".join(rfc4571_frame(p) for p in packets)
    for i in range(0, len(data), chunk):
        writer.write(data[i : i + chunk])
        if i % (chunk * 64) == 0:
            await writer.drain()
    await writer.drain()


def seen_by(receiver: RtpReceiver) -> Callable[[], int]:
    return lambda: receiver.stats().datagrams


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("gb28181_rtp_dropped_total", {"reason": reason}) or 0.0


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class Sink:
    def __init__(self) -> None:
        self.aus: list[AccessUnit] = []

    def __call__(self, au: AccessUnit) -> None:
        self.aus.append(au)

    @property
    def video(self) -> list[AccessUnit]:
        return [a for a in self.aus if a.codec.is_video]

    @property
    def audio(self) -> list[AccessUnit]:
        return [a for a in self.aus if a.codec.is_audio]


def assert_whole(got: list[AccessUnit], sent: Iterable[AccessUnit], decoder: str = "h264") -> None:
    """Every access unit out, byte-exact and in order; video decodes with PyAV; timestamps monotonic."""
    sent = list(sent)
    assert [(a.codec, a.pts, a.keyframe, a.data) for a in got] == [
        (a.codec, a.pts, a.keyframe, a.data) for a in sent
    ]
    video = [a for a in got if a.codec.is_video]
    audio = [a for a in got if a.codec.is_audio]
    for track in (video, audio):
        pts = [a.pts for a in track]
        assert pts == sorted(pts) and len(set(pts)) == len(pts)
    sizes, errors = decode_video(decoder, [a.data for a in video])
    assert errors == 0 and len(sizes) == len(video) and set(sizes) == {(320, 240)}


# ---------------------------------------------------------------------------------------------- PortPool
def free_range(n: int) -> int:
    """The first of ``n`` consecutive ports free on UDP and TCP (checked the way the pool checks)."""
    probe = PortPool(1, 65535, host=HOST)
    rng = random.Random(7)
    for _ in range(200):
        first = rng.randrange(20000, 60000 - n)
        if all(probe._bindable(p, True) for p in range(first, first + n)):
            return first
    pytest.skip("no free port range")


def test_port_pool_allocates_distinct_ports_round_robin() -> None:
    first = free_range(6)
    pool = PortPool(first, first + 5, host=HOST)
    got = [pool.allocate() for _ in range(6)]
    assert got == list(range(first, first + 6))
    assert pool.in_use == 6 and all(pool.held(p) for p in got)
    with pytest.raises(PortsExhausted, match=f"no free media port in {first}-{first + 5}"):
        pool.allocate()
    pool.release(got[2])
    assert pool.allocate() == got[2]  # the only free one
    for p in got:
        pool.release(p)
    assert pool.in_use == 0


def test_port_pool_does_not_reuse_a_just_released_port() -> None:
    first = free_range(4)
    pool = PortPool(first, first + 3, host=HOST)
    a = pool.allocate()
    pool.release(a)
    b = pool.allocate()
    c = pool.allocate()
    assert a not in (b, c)  # a stale stream may still be arriving on it
    assert pool.allocate() == first + 3
    assert pool.allocate() == a  # only when the cursor comes round again


def test_port_pool_skips_ports_busy_on_udp_or_tcp() -> None:
    first = free_range(4)
    pool = PortPool(first, first + 3, host=HOST)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((HOST, first))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind((HOST, first + 1))
    tcp.listen()
    try:
        assert pool.allocate() == first + 2
        assert pool.allocate() == first + 3
        with pytest.raises(PortsExhausted):
            pool.allocate()
        assert pool.allocate(tcp=False) == first + 1  # busy on TCP only: fine for UDP
    finally:
        udp.close()
        tcp.close()


def test_port_pool_reserve_and_validation() -> None:
    first = free_range(3)
    pool = PortPool(first, first + 2, host=HOST)
    pool.reserve(first)
    with pytest.raises(ValueError, match="already held"):
        pool.reserve(first)
    with pytest.raises(ValueError, match="outside"):
        pool.reserve(first + 3)
    assert pool.allocate() == first + 1
    with pytest.raises(ValueError, match="bad port range"):
        PortPool(10, 9)
    pool.release(12345)  # not held: ignored


async def test_port_from_pool_binds_udp_and_tcp_ingest() -> None:
    first = free_range(3)
    pool = PortPool(first, first + 2, host=HOST)
    port = pool.allocate()
    udp = UdpIngest(port, RtpReceiver(), host=HOST)
    tcp = TcpPassiveIngest(port, RtpReceiver(), HOST, host=HOST)
    await udp.start()
    await tcp.start()
    try:
        assert pool.allocate() != port
        assert not pool._bindable(port, True)
    finally:
        await udp.stop()
        await tcp.stop()


# ---------------------------------------------------------------------------------------------- SsrcAllocator
def test_ssrc_format() -> None:
    alloc = SsrcAllocator("3402000000", random.Random(1))
    live = alloc.allocate()
    assert len(live.text) == 10 and live.text.isdigit()
    assert live.text.startswith("0" + "20000") and int(live.text) == live.value
    play = alloc.allocate(playback=True)
    assert play.text.startswith("120000") and int(play.text) == play.value < 2**32
    value, text = alloc.allocate()  # unpacks as (int, str)
    assert text == f"{value:010d}"
    assert SsrcAllocator("4401020049", random.Random(1)).allocate().text[1:6] == "10200"


def test_ssrc_unique_until_exhausted_then_reused_only_after_release() -> None:
    alloc = SsrcAllocator("3402000000", random.Random(2))
    seen = {alloc.allocate().value for _ in range(SsrcAllocator.SLOTS)}
    assert len(seen) == SsrcAllocator.SLOTS and alloc.in_use == SsrcAllocator.SLOTS
    with pytest.raises(SsrcExhausted, match="live"):
        alloc.allocate()
    assert alloc.allocate(playback=True).text[0] == "1"  # playback has its own 10,000
    some = sorted(seen)[1234]
    alloc.release(some)
    assert alloc.allocate().value == some


def test_ssrc_no_immediate_reuse_and_claims() -> None:
    alloc = SsrcAllocator("3402000000", random.Random(3))
    a = alloc.allocate()
    alloc.release(a.value)
    assert alloc.allocate().value != a.value
    nxt = int(f"0{'20000'}{(int(a.text[6:]) + 2) % 10000:04d}")
    alloc.claim(nxt)  # a device answered with this y=
    assert alloc.in_use_value(nxt)
    assert alloc.allocate().value != nxt
    alloc.claim(12345)  # foreign shape: remembered separately
    assert alloc.in_use_value(12345)
    alloc.release(12345)
    assert not alloc.in_use_value(12345)
    assert SsrcAllocator.parse("0100000001") == 100000001
    for bad in ("", "abc", "12345678901", "9999999999"):
        with pytest.raises(ValueError):
            SsrcAllocator.parse(bad)
    with pytest.raises(ValueError):
        SsrcAllocator("34020")
    first = SsrcAllocator("3402000000", random.Random(9)).allocate()
    assert SsrcAllocator("3402000000", random.Random(9)).allocate() == first  # injected randomness


# ---------------------------------------------------------------------------------------------- detection
def test_detect_payload() -> None:
    ps = ps_rtp(av_stream(), max_payload=1400)
    assert detect_payload(memoryview(ps[0])[12:], 96, PayloadKind.PS) is PayloadKind.PS
    assert detect_payload(memoryview(ps[0])[12:], 100, None) is PayloadKind.PS  # the pack header is enough
    mid = next(p for p in ps[1:] if p[12:16] != b"\x00\x00\x01\xba")
    assert detect_payload(mid[12:], 96, PayloadKind.PS) is None  # mid-frame: wait for a pack header
    assert detect_payload(mid[12:20] + b"\x00\x00\x01\xba" + mid[20:], 96, PayloadKind.PS) is PayloadKind.PS
    ts = ts_rtp()
    assert detect_payload(ts[0][12:], 33, PayloadKind.TS) is PayloadKind.TS
    assert detect_payload(ts[0][12:], 96, PayloadKind.PS) is PayloadKind.TS
    assert detect_payload(ts[0][12:250], 33, PayloadKind.TS) is None  # not a whole number of TS packets
    frames = encode_video("libx264", 320, 240, frames=3)
    h = rfc6184_rtp(frames)
    assert detect_payload(h[0][12:], 98, PayloadKind.H264) is PayloadKind.H264  # STAP-A
    assert detect_payload(h[1][12:], 98, PayloadKind.H264) is PayloadKind.H264  # FU-A
    assert detect_payload(h[0][12:], 102, None) is PayloadKind.H264  # STAP-A with an SPS under another PT
    assert detect_payload(h[1][12:], 102, None) is None  # an FU-A alone is not convincing
    assert detect_payload(h[0][12:], 96, PayloadKind.PS) is None  # PT 96 is PS unless the SDP says otherwise
    assert detect_payload(b"\x80" + bytes(20), 98, PayloadKind.H264) is None  # forbidden bit
    assert detect_payload(b"", 96, PayloadKind.PS) is None


# ---------------------------------------------------------------------------------------------- RtpReceiver alone
def feed_all(r: RtpReceiver, packets: Iterable[bytes], addr: tuple[str, int] = (HOST, 4000),
             start: float = 100.0, step: float = 0.001) -> float:
    now = start
    for p in packets:
        r.feed(p, addr, now)
        now += step
    return now


def test_receiver_ps_whole_without_sockets() -> None:
    sink = Sink()
    aus = av_stream()
    r = RtpReceiver(sink, expected_ssrc=SSRC, expected_host=HOST)
    feed_all(r, ps_rtp(aus))
    assert_whole(sink.aus, aus)
    s = r.stats()
    assert s.payload_kind is PayloadKind.PS and s.frames == len(aus) and s.lost == s.reordered == 0
    assert s.ssrc == SSRC and s.followed_ssrc is None


def test_receiver_counts_rtcp_malformed_wrong_source() -> None:
    sink = Sink()
    r = RtpReceiver(sink, expected_ssrc=SSRC, expected_host=HOST)
    now = 10.0
    r.feed(rtcp_rr(), (HOST, 4001), now)
    for g in garbage(random.Random(5), 20):
        r.feed(g, (HOST, 4000), now)
    r.feed(ps_rtp(av_stream())[0], (OTHER, 4000), now)
    s = r.stats()
    assert (s.rtcp, s.malformed, s.wrong_source, s.packets) == (1, 20, 1, 0)
    assert s.last_wrong_source == (OTHER, 4000)
    assert r.diagnosis(now) is NoMediaReason.UNDECODABLE  # malformed packets from the device itself


def test_receiver_follows_another_ssrc_then_prefers_the_expected_one() -> None:
    sink = Sink()
    aus = av_stream()
    r = RtpReceiver(sink, expected_ssrc=SSRC, expected_host=HOST)
    now = feed_all(r, ps_rtp(aus[:10], ssrc=777))
    assert r.stats().followed_ssrc == 777 and r.ssrc == 777 and len(sink.aus) == 10
    # a packet with a third SSRC while 777 flows: dropped
    r.feed(ps_rtp(aus[:1], ssrc=888)[0], (HOST, 4000), now)
    assert r.stats().wrong_ssrc == 1 and r.stats().last_wrong_ssrc == 888
    # the expected SSRC shows up: it wins, the demuxer starts afresh
    feed_all(r, ps_rtp(aus), start=now + 0.01)
    s = r.stats()
    assert r.ssrc == SSRC and s.followed_ssrc is None and s.ssrc_changes == 1
    assert [a.data for a in sink.aus[10:]] == [a.data for a in aus]


def test_receiver_switches_ssrc_after_silence_only_when_following() -> None:
    aus = av_stream()
    sink = Sink()
    r = RtpReceiver(sink, expected_ssrc=SSRC, expected_host=HOST, ssrc_switch_after=1.0)
    now = feed_all(r, ps_rtp(aus[:6]))
    feed_all(r, ps_rtp(aus[:6], ssrc=999), start=now + 0.1)  # too soon: the expected one may still come
    assert r.stats().wrong_ssrc > 0 and r.ssrc == SSRC
    feed_all(r, ps_rtp(aus, ssrc=999), start=now + 2.0)  # the device restarted its stream
    assert r.ssrc == 999 and r.stats().followed_ssrc == 999
    strict = RtpReceiver(Sink(), expected_ssrc=SSRC, expected_host=HOST, follow_ssrc=False)
    later = feed_all(strict, ps_rtp(aus, ssrc=999))
    assert strict.stats().wrong_ssrc == len(ps_rtp(aus)) and strict.ssrc is None
    assert strict.diagnosis(later) is NoMediaReason.WRONG_SSRC
    assert "999" in strict.explain(later)


def test_receiver_diagnosis() -> None:
    aus = av_stream()
    r = RtpReceiver(Sink(), expected_ssrc=SSRC, expected_host=HOST)
    assert r.diagnosis(50.0) is NoMediaReason.NO_PACKETS
    r.feed(rtcp_rr(), (HOST, 4001), 50.0)
    assert r.diagnosis(50.0) is NoMediaReason.NO_PACKETS and "RTCP only" in r.explain(50.0)
    feed_all(r, ps_rtp(aus[:4]), addr=(OTHER, 4000), start=51.0)
    assert r.diagnosis(52.0) is NoMediaReason.WRONG_SOURCE
    assert f"only from {OTHER}:4000" in r.explain(52.0)
    rng = random.Random(11)
    noise = [build_rtp(96, i % 5 == 4, i, i * 3600, SSRC, bytes(rng.randrange(256) for _ in range(500)))
             for i in range(100)]
    feed_all(r, noise, start=53.0)
    assert r.diagnosis(54.0) is NoMediaReason.UNDECODABLE
    assert r.stats().payload_kind is PayloadKind.UNKNOWN and r.stats().undecodable > 0
    feed_all(r, ps_rtp(aus, seq=5000), start=55.0)  # a far jump: RFC 3550 §A.1 restart
    assert r.diagnosis(56.0) is None and r.explain(56.0) == "media flows"
    assert r.diagnosis(70.0, window=5.0) is NoMediaReason.NO_PACKETS  # it stopped since


def test_receiver_restarts_when_the_sequence_restarts_a_little_behind() -> None:
    """Same SSRC, sequence numbers restarting 450 behind: late for the reorder buffer, but not forever."""
    aus = av_stream(frames=40)
    first = ps_rtp(aus, seq=1000, max_payload=150)
    again = ps_rtp(aus, seq=1000 + len(first) - 450, max_payload=150)
    assert len(again) > 450
    sink = Sink()
    r = RtpReceiver(sink, expected_ssrc=SSRC)
    now = feed_all(r, first)
    assert len(sink.aus) == len(aus)
    feed_all(r, again, start=now)
    s = r.stats()
    # 320 dropped, then the 321st starts over (it is counted by the old buffer too)
    assert s.restarts == 1 and s.duplicate + s.late == 256 + 64 + 1
    tail = sink.aus[len(aus):]
    assert tail and all(a.data == b.data for a, b in zip(tail, aus[-len(tail):], strict=True))


def test_receiver_expectations_and_ordered_transport() -> None:
    aus = av_stream()
    sink = Sink()
    r = RtpReceiver(sink, expected_ssrc=SSRC, expected_host=[HOST, "10.0.0.9"])
    packets = ps_rtp(aus, ssrc=4242)
    now = feed_all(r, packets[:20])
    assert r.stats().followed_ssrc == 4242
    r.expect_ssrc(4242)  # the device's answer named the SSRC it sends: nothing is "followed" any more
    assert r.stats().followed_ssrc is None and r.expected_ssrc == 4242
    r.expect_host("10.0.0.9")
    r.feed(packets[20], (HOST, 4000), now)
    assert r.stats().wrong_source == 1
    r.expect_host(None)  # any host
    r.use_ordered_transport()  # TCP: a gap is given up at once
    now = feed_all(r, packets[21:30] + packets[31:], start=now)
    s = r.stats()
    assert s.lost == 2 and r.next_deadline() is None  # 20 (dropped: wrong source) and 30
    assert r.expected_hosts is None and r.payload_kind is PayloadKind.PS


def test_receiver_sink_errors_do_not_stop_the_stream() -> None:
    calls: list[AccessUnit] = []

    def sink(au: AccessUnit) -> None:
        calls.append(au)
        raise RuntimeError("consumer bug")

    r = RtpReceiver(sink, expected_ssrc=SSRC)
    feed_all(r, ps_rtp(av_stream()))
    assert len(calls) == len(av_stream()) and r.stats().sink_errors == len(calls)


def test_receiver_bounds_hostile_input() -> None:
    """Tiny PS payloads without frames, and random bytes forever: memory stays bounded, nothing raises."""
    r = RtpReceiver(Sink(), expected_ssrc=SSRC)
    head = ps_rtp(av_stream()[:1], max_payload=20)  # pack header first: detected as PS
    # then 40,000 one-byte payloads that continue a PES that never ends
    body = [build_rtp(96, False, (len(head) + i) & 0xFFFF, 0, SSRC, b"\x01") for i in range(40000)]
    feed_all(r, head[:3] + body, step=0.0001)
    assert r._ps is not None and len(r._ps._vparts) <= 16384 + 10
    assert r.stats().overflow >= 2
    rng = random.Random(28181)
    fuzz = RtpReceiver(Sink())
    for i in range(3000):
        n = rng.randrange(0, 200)
        data = bytearray(rng.randrange(256) for _ in range(n))
        if n >= 12 and rng.random() < 0.7:
            data[0] = 0x80
            data[1] = rng.choice([96, 98, 33, 0x80 | 96, 8])
            data[8:12] = struct.pack("!I", 42)
        fuzz.feed(bytes(data), (HOST, 1), 1.0 + i * 0.001)
        fuzz.on_timer(1.0 + i * 0.001)
    assert fuzz._rb.buffered <= 256 and len(fuzz._held) <= 64
    fuzz.close()


# ---------------------------------------------------------------------------------------------- RFC 6184
def test_rfc6184_roundtrip_loss_and_garbage() -> None:
    frames = encode_video("libx264", 320, 240, frames=12, gop=6)
    packets = rfc6184_rtp(frames, mtu=300)
    d = Rfc6184Depacketizer()
    out: list[AccessUnit] = []
    for p in packets:
        out += d.feed(memoryview(p)[12:], struct.unpack_from("!I", p, 4)[0], bool(p[1] & 0x80))
    assert [a.data for a in out] == [annexb4(f.data) for f in frames]
    assert [a.keyframe for a in out] == [f.keyframe for f in frames]
    assert [a.pts for a in out] == [f.pts for f in frames] and d.sps is not None and (d.width, d.height) == (320, 240)
    # drop each packet in turn: the output is always a subset of the clean output
    clean = {a.pts: a.data for a in out}
    for drop in range(1, len(packets)):
        d = Rfc6184Depacketizer()
        got: list[AccessUnit] = []
        gap = False
        for i, p in enumerate(packets):
            if i == drop:
                gap = True
                continue
            got += d.feed(memoryview(p)[12:], struct.unpack_from("!I", p, 4)[0], bool(p[1] & 0x80), gap)
            gap = False
        assert all(clean[a.pts] == a.data for a in got)
        assert len(got) >= len(frames) // 3
    # markers missing: access units end on the timestamp change instead
    d = Rfc6184Depacketizer()
    got = []
    for p in packets:
        got += d.feed(memoryview(p)[12:], struct.unpack_from("!I", p, 4)[0], False)
    got += d.flush()
    assert [a.data for a in got] == [a.data for a in out]
    # interleaved-mode and malformed payloads are dropped and counted
    d = Rfc6184Depacketizer(wait_keyframe=False)
    assert d.feed(b"\x19\x00\x01\x65", 1, True) == []  # STAP-B
    assert d.feed(b"\x1c", 2, True) == [] and d.feed(b"\x18\x00\x09\x65", 3, True) == []
    assert d.feed(b"\x1c\x05\x00", 4, True) == []  # FU-A continuation without a start
    assert d.unsupported_packets == 1 and d.malformed_packets == 2 and d.fu_errors == 1
    assert starts_access_unit(b"\x67\x42") and not starts_access_unit(b"\x41\x10")
    rng = random.Random(6184)
    d = Rfc6184Depacketizer(wait_keyframe=False, max_frame_size=4096)
    for i in range(5000):
        d.feed(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))), i // 7, rng.random() < 0.1,
               rng.random() < 0.05)
    assert d.buffered_bytes <= 4096 + 40


# ---------------------------------------------------------------------------------------------- UDP per stream
async def start_udp(receiver: RtpReceiver) -> UdpIngest:
    ingest = UdpIngest(0, receiver, host=HOST)
    await ingest.start()
    return ingest


@pytest.mark.parametrize("codec", ["H264", "H265"])
async def test_udp_port_per_stream_whole(codec: str) -> None:
    aus = av_stream(codec)
    sink = Sink()
    r = RtpReceiver(sink, expected_ssrc=SSRC, expected_host=HOST)
    ingest = await start_udp(r)
    packets0 = counter("gb28181_rtp_packets_total")
    try:
        packets = ps_rtp(aus, video=Codec[codec])
        await send_udp(packets, ingest.port, seen_by(r))
        await until(lambda: len(sink.aus) == len(aus), "every access unit")
        assert_whole(sink.aus, aus, "h264" if codec == "H264" else "hevc")
        assert r.stats().packets == len(packets) and r.diagnosis(asyncio.get_running_loop().time()) is None
    finally:
        await ingest.stop()
    assert counter("gb28181_rtp_packets_total") - packets0 == len(packets)


async def test_udp_loss_and_reorder_keep_flowing_and_are_counted() -> None:
    aus = av_stream(frames=40)
    packets = ps_rtp(aus, max_payload=300)
    rng = random.Random(28181)
    dropped_seq = {i for i in range(1, len(packets) - 6) if rng.random() < 0.05}
    kept = [p for i, p in enumerate(packets) if i not in dropped_seq]
    units: list[bytes | list[bytes]] = []
    swaps = 0
    i = 0
    while i < len(kept):
        if 0 < i < len(kept) - 1 and rng.random() < 0.10:
            units.append([kept[i + 1], kept[i]])  # sent back to back, reversed
            swaps += 1
            i += 2
        else:
            units.append(kept[i])
            i += 1
    assert len(dropped_seq) >= 10 and swaps >= 20
    sink = Sink()
    r = RtpReceiver(sink, expected_ssrc=SSRC, expected_host=HOST)
    ingest = await start_udp(r)
    lost0, reordered0 = counter("gb28181_rtp_lost_total"), counter("gb28181_rtp_reordered_total")
    try:
        await send_udp(units, ingest.port, seen_by(r), batch=16)
        await until(lambda: r.next_deadline() is None, "the last gap to be given up")
        s = r.stats()
        assert s.lost == len(dropped_seq) and s.reordered == swaps
        assert s.late == s.duplicate == 0 and s.packets == len(kept)
        # what comes out is a byte-exact subset of what went in, and plenty of it
        by_pts = {(a.codec, a.pts): a.data for a in aus}
        assert all(by_pts[(a.codec, a.pts)] == a.data for a in sink.aus)
        assert len(sink.video) >= 10 and len(sink.audio) >= 40
        assert sink.video[-1].pts == aus[-2].pts or sink.video[-1].pts == aus[-1].pts  # still flowing at the end
        sizes, errors = decode_video("h264", [a.data for a in sink.video])
        assert len(sizes) >= 5
    finally:
        await ingest.stop()
    assert counter("gb28181_rtp_lost_total") - lost0 == len(dropped_seq)
    assert counter("gb28181_rtp_reordered_total") - reordered0 == swaps


async def test_udp_follows_another_ssrc_from_the_expected_host() -> None:
    aus = av_stream()
    sink = Sink()
    r = RtpReceiver(sink, expected_ssrc=SSRC, expected_host=HOST)
    ingest = await start_udp(r)
    try:
        await send_udp(ps_rtp(aus, ssrc=123456789), ingest.port, seen_by(r))
        await until(lambda: len(sink.aus) == len(aus), "every access unit")
        assert_whole(sink.aus, aus)
        s = r.stats()
        assert s.followed_ssrc == 123456789 and s.ssrc == 123456789 and s.expected_ssrc == SSRC
        assert s.wrong_ssrc == 0
    finally:
        await ingest.stop()


async def test_udp_drops_and_counts_other_sources_rtcp_and_garbage() -> None:
    aus = av_stream()
    sink = Sink()
    r = RtpReceiver(sink, expected_ssrc=SSRC, expected_host=HOST)
    ingest = await start_udp(r)
    before = {k: dropped(k) for k in ("wrong_source", "rtcp", "malformed", "wrong_ssrc")}
    loop = asyncio.get_running_loop()
    try:
        packets = ps_rtp(aus)
        await send_udp(packets, ingest.port, seen_by(r), src=OTHER)  # right SSRC, wrong address
        assert r.stats().wrong_source == len(packets) and not sink.aus
        assert r.diagnosis(loop.time()) is NoMediaReason.WRONG_SOURCE
        await send_udp([rtcp_rr(), rtcp_rr(), *garbage(random.Random(3), 30)], ingest.port, seen_by(r))
        assert r.diagnosis(loop.time()) is NoMediaReason.UNDECODABLE  # garbage from the device itself
        await send_udp(packets, ingest.port, seen_by(r))
        await until(lambda: len(sink.aus) == len(aus), "every access unit")
        assert_whole(sink.aus, aus)
        s = r.stats()
        assert (s.wrong_source, s.rtcp, s.malformed, s.wrong_ssrc) == (len(packets), 2, 30, 0)
    finally:
        await ingest.stop()
    assert dropped("wrong_source") - before["wrong_source"] == len(packets)
    assert dropped("rtcp") - before["rtcp"] == 2 and dropped("malformed") - before["malformed"] == 30


async def test_udp_diagnoses() -> None:
    loop = asyncio.get_running_loop()
    aus = av_stream()
    # nothing at all
    r = RtpReceiver(Sink(), expected_ssrc=SSRC, expected_host=HOST)
    ingest = await start_udp(r)
    try:
        await asyncio.sleep(0.05)
        assert r.diagnosis(loop.time()) is NoMediaReason.NO_PACKETS
        # packets from the device but with another SSRC, with following off (or ambiguous in single-port mode)
        strict = RtpReceiver(Sink(), expected_ssrc=SSRC, expected_host=HOST, follow_ssrc=False)
        ingest2 = await start_udp(strict)
        try:
            await send_udp(ps_rtp(aus, ssrc=42), ingest2.port, seen_by(strict))
            assert strict.diagnosis(loop.time()) is NoMediaReason.WRONG_SSRC
        finally:
            await ingest2.stop()
        # RTP with the right SSRC and source, but the payload is nothing we know
        rng = random.Random(4)
        noise = [build_rtp(96, True, i, i * 3600, SSRC, bytes(rng.randrange(1, 256) for _ in range(300)))
                 for i in range(50)]
        await send_udp(noise, ingest.port, seen_by(r))
        assert r.diagnosis(loop.time()) is NoMediaReason.UNDECODABLE
        assert "no frames" in r.explain(loop.time())
    finally:
        await ingest.stop()


# ---------------------------------------------------------------------------------------------- single port
async def test_single_port_two_streams_by_ssrc_and_host_fallback() -> None:
    aus_a = av_stream("H264")
    aus_b = av_stream("H264", frames=12, audio=False, gop=4)
    single = SinglePortUdpIngest(0, host=HOST)
    await single.start()
    a, b, c = Sink(), Sink(), Sink()
    ra, rb_, rc = RtpReceiver(a), RtpReceiver(b), RtpReceiver(c)
    single.register(SSRC, ra, HOST)
    single.register(SSRC + 1, rb_, HOST)
    single.register(SSRC + 2, rc, OTHER)
    try:
        pa = ps_rtp(aus_a, ssrc=SSRC)
        pb = ps_rtp(aus_b, ssrc=SSRC + 1, audio=None, seq=10)
        mixed: list[bytes] = []
        for i in range(max(len(pa), len(pb))):  # interleaved on the one port
            mixed += pa[i : i + 1] + pb[i : i + 1]
        await send_udp(mixed, single.port, lambda: ra.stats().datagrams + rb_.stats().datagrams)
        await until(lambda: len(a.aus) == len(aus_a) and len(b.aus) == len(aus_b), "both streams")
        assert_whole(a.aus, aus_a)
        assert_whole(b.aus, aus_b)
        # the device behind OTHER answered with an SSRC nobody registered: routed by its host, followed
        pc = ps_rtp(aus_a, ssrc=555)
        await send_udp(pc, single.port, seen_by(rc), src=OTHER)
        await until(lambda: len(c.aus) == len(aus_a), "the host-routed stream")
        assert_whole(c.aus, aus_a)
        assert rc.stats().followed_ssrc == 555
        # an unknown SSRC from a host two streams expect cannot be routed: counted, and both are told
        ws0 = single.unrouted[metrics.RtpDrop.WRONG_SSRC]
        sock = udp_socket(HOST)
        sock.sendto(ps_rtp(aus_a[:1], ssrc=999)[0], (HOST, single.port))
        sock.close()
        await until(lambda: single.unrouted[metrics.RtpDrop.WRONG_SSRC] == ws0 + 1, "the unrouted packet")
        assert ra.stats().last_wrong_ssrc == 999 and rb_.stats().last_wrong_ssrc == 999
        # nobody expects this host at all
        ws1 = single.unrouted[metrics.RtpDrop.WRONG_SOURCE]
        sock = udp_socket("127.0.0.3")
        sock.sendto(ps_rtp(aus_a[:1], ssrc=998)[0], (HOST, single.port))
        sock.close()
        await until(lambda: single.unrouted[metrics.RtpDrop.WRONG_SOURCE] == ws1 + 1, "the stray packet")
        # unregistering by the SSRC it was registered with stops the routing
        single.unregister(SSRC + 2)
        assert single.streams == 2
        single.unregister(rb_)
        assert single.streams == 1
    finally:
        await single.stop()
    assert single.streams == 0


# ---------------------------------------------------------------------------------------------- TCP
async def test_tcp_passive_whole_and_refuses_other_hosts() -> None:
    aus = av_stream()
    sink = Sink()
    r = RtpReceiver(sink, expected_ssrc=SSRC)
    ingest = TcpPassiveIngest(0, r, HOST, host=HOST)
    await ingest.start()
    loop = asyncio.get_running_loop()
    ws0 = dropped("wrong_source")
    try:
        # a connection from another address is closed at once
        reader, writer = await asyncio.open_connection(HOST, ingest.port, local_addr=(OTHER, 0))
        try:
            writer.write(b"".join(rfc4571_frame(p) for p in ps_rtp(aus[:3])))
            got = await asyncio.wait_for(reader.read(100), WAIT)
        except (ConnectionResetError, BrokenPipeError):
            got = b""
        writer.close()
        assert got == b"" and ingest.refused == 1 and not sink.aus
        assert r.diagnosis(loop.time()) is NoMediaReason.WRONG_SOURCE
        assert dropped("wrong_source") - ws0 == 1
        # the device connects and sends
        reader, writer = await asyncio.open_connection(HOST, ingest.port)
        await send_tcp(writer, ps_rtp(aus), chunk=999)
        await until(lambda: len(sink.aus) == len(aus), "every access unit")
        assert_whole(sink.aus, aus)
        assert ingest.connected and ingest.connections == 1
        writer.close()
    finally:
        await ingest.stop()


async def test_tcp_active_connects_with_retries() -> None:
    aus = av_stream("H265")
    packets = ps_rtp(aus, video=Codec.H265)
    # find a free port, start connecting before anything listens there
    probe = socket.socket()
    probe.bind((HOST, 0))
    port = probe.getsockname()[1]
    probe.close()
    sink = Sink()
    r = RtpReceiver(sink, expected_ssrc=SSRC, expected_host=HOST)
    ingest = TcpActiveIngest(HOST, port, r, connect_timeout=WAIT, retry_interval=0.05)
    await ingest.start()
    served = asyncio.Event()

    async def device(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send_tcp(writer, packets, chunk=4093)
        served.set()
        await reader.read()  # until the gateway closes
        writer.close()

    try:
        await asyncio.sleep(0.2)
        assert ingest.attempts >= 2 and not ingest.connected
        server = await asyncio.start_server(device, HOST, port)
        async with server:
            await asyncio.wait_for(served.wait(), WAIT)
            await until(lambda: len(sink.aus) == len(aus), "every access unit")
            assert_whole(sink.aus, aus, "hevc")
            assert ingest.connections == 1 and not ingest.failed
            await ingest.stop()
    finally:
        await ingest.stop()


async def test_tcp_active_gives_up_at_the_deadline() -> None:
    probe = socket.socket()
    probe.bind((HOST, 0))
    port = probe.getsockname()[1]
    probe.close()
    ingest = TcpActiveIngest(HOST, port, RtpReceiver(), connect_timeout=0.3, retry_interval=0.05)
    await ingest.start()
    try:
        await until(lambda: ingest.failed, "the connect deadline")
        assert ingest.attempts >= 3 and ingest.connections == 0
    finally:
        await ingest.stop()


# ---------------------------------------------------------------------------------------------- Hikvision capture
def assert_hikvision(sink: Sink, expected: list[AccessUnit]) -> None:
    assert len(sink.aus) == 1400 and sum(a.keyframe for a in sink.aus) == 56
    assert [a.data for a in sink.aus] == [a.data for a in expected]
    assert [a.pts for a in sink.aus] == [a.pts for a in expected]


async def test_hikvision_capture_over_udp() -> None:
    packets = hikvision_packets()
    sink = Sink()
    r = RtpReceiver(sink, expected_ssrc=HIK_SSRC, expected_host=HOST)
    ingest = await start_udp(r)
    try:
        await send_udp(packets, ingest.port, seen_by(r), batch=32)
        await until(lambda: len(sink.aus) == 1400, "1400 frames")
        assert_hikvision(sink, demux_direct(packets))
        s = r.stats()
        assert s.lost == s.reordered == s.malformed == s.demux_errors == 0
    finally:
        await ingest.stop()


async def test_hikvision_capture_over_tcp() -> None:
    packets = hikvision_packets()
    sink = Sink()
    r = RtpReceiver(sink, expected_ssrc=HIK_SSRC)
    ingest = TcpPassiveIngest(0, r, HOST, host=HOST)
    await ingest.start()
    try:
        _, writer = await asyncio.open_connection(HOST, ingest.port)
        await send_tcp(writer, packets, chunk=7919)
        await until(lambda: len(sink.aus) == 1400, "1400 frames")
        assert_hikvision(sink, demux_direct(packets))
        writer.close()
    finally:
        await ingest.stop()


# ---------------------------------------------------------------------------------------------- other payloads
async def test_mpegts_over_rtp_is_detected_and_demuxed() -> None:
    packets = ts_rtp(15)
    sink = Sink()
    r = RtpReceiver(sink, expected_ssrc=SSRC, expected_host=HOST)
    ingest = await start_udp(r)
    try:
        await send_udp(list(packets), ingest.port, seen_by(r))
        # PyAV's parser holds the last frame or two until the next one (or the end of the stream) starts
        await until(lambda: len(sink.video) >= 13, "frames from the TS worker")
        assert r.payload_kind is PayloadKind.TS
        assert all(a.codec is Codec.H264 for a in sink.video) and sink.video[0].keyframe
        pts = [a.pts for a in sink.video]
        assert pts == sorted(pts) and len(set(pts)) == len(pts) and pts[1] - pts[0] == 3600
        sizes, errors = decode_video("h264", [a.data for a in sink.video])
        assert errors == 0 and len(sizes) == len(sink.video) and set(sizes) == {(320, 240)}
    finally:
        await ingest.stop()
    assert r._ts is None  # the worker thread is gone


async def test_rfc6184_h264_over_rtp_is_detected_and_depacketized() -> None:
    frames = encode_video("libx264", 320, 240, frames=20, gop=10)
    sink = Sink()
    r = RtpReceiver(sink, expected_ssrc=SSRC, expected_host=HOST)
    ingest = await start_udp(r)
    try:
        await send_udp(rfc6184_rtp(frames, mtu=500), ingest.port, seen_by(r))
        await until(lambda: len(sink.aus) == len(frames), "every access unit")
        assert r.payload_kind is PayloadKind.H264
        assert [a.data for a in sink.aus] == [annexb4(f.data) for f in frames]
        assert [a.keyframe for a in sink.aus] == [f.keyframe for f in frames]
        assert [a.pts for a in sink.aus] == [f.pts for f in frames]
        sizes, errors = decode_video("h264", [a.data for a in sink.aus])
        assert errors == 0 and len(sizes) == len(frames)
    finally:
        await ingest.stop()
