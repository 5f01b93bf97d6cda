"""RTP/PS ingest per packet: our path against PyAV's ``mpeg`` demuxer and against a bare uvloop receive.

Each data set (the shared RTP captures, plus a synthetic 640x360 H.264 stream of about 3 Mbit/s made with PyAV,
our ``PsMuxer`` and ``PsRtpPacketizer``, so that a figure exists without ``../shared``) is loaded into memory once.
Then, in the same run:

1. **ours**: per RTP packet ``parse_rtp`` + ``memoryview`` payload slice + ``ReorderBuffer.push`` +
   ``PsDemuxer.feed(payload, marker)``; ``now`` is a constant (time is injected into the cores).
2. **demux**: ``PsDemuxer.feed`` alone on pre-sliced payloads.
3. **PyAV**: ``av.open(BytesIO(ps), format="mpeg", options={"probesize": "32", "analyzeduration": "0"})`` and
   ``container.demux()`` to the end, on the concatenated payloads (open included). Its cost is divided by the
   number of RTP packets those bytes came in, so the three µs/packet figures compare directly.
   In-memory figures are the median of several repetitions, interleaved so drift hits all three alike.
4. **sockets**: the capture cycled to ``UDP_PACKETS`` datagrams (sequence numbers rewritten so that the cycles
   join up) is sent over 127.0.0.1 to a uvloop ``DatagramProtocol`` in a subprocess, paced at ``UDP_RATE``
   packets/s in bursts of ``UDP_BURST`` (about one frame of a 3 Mbit/s camera). The receiver's CPU
   (``time.process_time``: user + system, kernel loopback delivery happens in the sender) is divided by the
   packets received. Baseline: a protocol that only counts; ours runs 1. (with ``loop.time()``) inside
   ``datagram_received``.

Latency proxy: input fed one RTP payload per ``read()`` (so FFmpeg's I/O buffer holds nothing extra), we note
after how many packets (and bytes) each side emits its first video frame and each frame (matched by PTS); the
difference is converted to milliseconds with the RTP timestamps (a live camera sends in real time).
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"
CAPTURES = (
    ("hikvision", "hikvision_h264_704x576_ps.lenpfx.rtp"),
    ("gstreamer", "gstreamer_mpegpsmux_h264.lenpfx.rtp"),
    ("gomedia", "gomedia_h264_aac_ps.lenpfx.rtp"),
)
PYAV_OPTIONS = {"probesize": "32", "analyzeduration": "0"}
UDP_RATE = 50_000  # packets/s offered to the receiver
UDP_BURST = 10
TARGET_US = 2.5  # PERFORMANCE.md: parsing budget per packet on top of the receive floor


@dataclass
class Dataset:
    name: str
    packets: list[bytes]  # RTP packets, one bytes object per datagram, as a socket delivers them
    payloads: list[tuple[memoryview, bool]] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    ps: bytes = b""
    note: str = ""

    def __post_init__(self) -> None:
        from media.rtp import parse_rtp

        for pkt in self.packets:
            _, marker, _, ts, _, off, end = parse_rtp(pkt)
            self.payloads.append((memoryview(pkt)[off:end], marker))
            self.timestamps.append(ts)
        self.ps = b"".join(p for p, _ in self.payloads)

    @property
    def rtp_bytes(self) -> int:
        return sum(map(len, self.packets))


# ------------------------------------------------------------------------------------------------ data
def load_lenpfx(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out = []
    pos = 0
    while pos + 2 <= len(data):
        n = struct.unpack_from(">H", data, pos)[0]
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def synthetic(frames: int, width: int = 640, height: int = 360, fps: int = 25) -> Dataset:
    """H.264 at ~3 Mbit/s (libx264 ABR + VBV, GOP 2 s, no B-frames) muxed and packetized by our own code."""
    import av
    import numpy as np

    from media.frames import AccessUnit, Codec
    from media.psmux import PsMuxer, PsRtpPacketizer

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, fps), Fraction(fps, 1)
    ctx.gop_size, ctx.max_b_frames, ctx.bit_rate = 2 * fps, 0, 3_000_000
    ctx.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "x264-params": f"keyint={2 * fps}:min-keyint={2 * fps}:scenecut=0:bframes=0:vbv-maxrate=3000:vbv-bufsize=3000"
        ":threads=1",  # deterministic rate control: the same stream every run
    }
    rng = np.random.default_rng(28181)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (xx + yy) % 256
    chroma = np.full((height // 2, width), 128, np.uint8)
    mux = PsMuxer(Codec.H264)
    packetizer = PsRtpPacketizer(ssrc=0x0BEBC201, max_payload=1400, seq=65000)  # wraps the sequence number
    packets: list[bytes] = []
    scale = 90000 // fps
    encoded = 0

    def out(pkts: list[av.Packet]) -> None:
        nonlocal encoded
        for pkt in pkts:
            assert pkt.pts is not None
            pts = pkt.pts * scale
            data = bytes(pkt)
            encoded += len(data)
            ps = mux.mux(AccessUnit(Codec.H264, pts, pts, bool(pkt.is_keyframe), data))
            packets.extend(packetizer.packetize(ps, pts))

    for i in range(frames):
        luma = ((base + 3 * i) % 192 + rng.integers(0, 64, (height, width))).astype(np.uint8)  # gradient + noise
        frame = av.VideoFrame.from_ndarray(np.vstack([luma, chroma]), format="yuv420p")
        frame.pts = i
        out(ctx.encode(frame))
    out(ctx.encode(None))
    mbps = encoded * 8 / (frames / fps) / 1e6
    return Dataset(f"synth {width}x{height}", packets, note=f"{frames} frames, {mbps:.2f} Mbit/s")


def datasets(quick: bool) -> list[Dataset]:
    out = [synthetic(100 if quick else 250)]
    if not DATA_DIR.is_dir():
        print(f"note: {DATA_DIR} not found: capture rows skipped (synthetic stream only)")
        return out
    for name, file in CAPTURES:
        path = DATA_DIR / file
        if path.is_file():
            out.append(Dataset(name, load_lenpfx(path)))
        else:
            print(f"note: {path} not found: {name} row skipped")
    return out


# ------------------------------------------------------------------------------------------------ in memory
def run_ours(ds: Dataset) -> tuple[float, int]:
    """Our per-packet path; returns (seconds, access units out)."""
    from media.ps import PsDemuxer
    from media.reorder import ReorderBuffer
    from media.rtp import parse_rtp

    demux: PsDemuxer = PsDemuxer()
    feed = demux.feed
    push = ReorderBuffer[tuple[memoryview, bool]]().push
    aus = 0
    t0 = time.perf_counter()
    for pkt in ds.packets:
        _, marker, seq, _, _, off, end = parse_rtp(pkt)
        for payload, m in push(seq, (memoryview(pkt)[off:end], marker), 0.0):
            out = feed(payload, m)
            if out:
                aus += len(out)
    aus += len(demux.flush())
    return time.perf_counter() - t0, aus


def run_demux(ds: Dataset) -> tuple[float, int]:
    from media.ps import PsDemuxer

    demux = PsDemuxer()
    feed = demux.feed
    aus = 0
    t0 = time.perf_counter()
    for payload, marker in ds.payloads:
        out = feed(payload, marker)
        if out:
            aus += len(out)
    aus += len(demux.flush())
    return time.perf_counter() - t0, aus


def run_pyav(ds: Dataset) -> tuple[float, int, float]:
    """PyAV's ``mpeg`` demuxer to the end; returns (seconds, packets out, seconds of those spent in av.open)."""
    import av

    src = io.BytesIO(ds.ps)
    n = 0
    t0 = time.perf_counter()
    with av.open(src, format="mpeg", options=PYAV_OPTIONS) as container:
        t1 = time.perf_counter()
        for pkt in container.demux():
            if pkt.size:
                n += 1
    return time.perf_counter() - t0, n, t1 - t0


@dataclass
class InMemory:
    ours: float  # median seconds for the whole data set
    demux: float
    pyav: float
    pyav_open: float  # median seconds of av.open alone (avformat_find_stream_info decodes the first frame)
    aus_ours: int
    packets_pyav: int


def time_in_memory(ds: Dataset, budget: float, min_reps: int) -> InMemory:
    """Medians of each runner, repetitions interleaved so that drift hits all of them alike."""
    run_ours(ds)  # warm-up (imports, caches)
    run_demux(ds)
    run_pyav(ds)
    ours: list[float] = []
    demux: list[float] = []
    pyav: list[float] = []
    pyav_open: list[float] = []
    start = time.perf_counter()
    while len(ours) < min_reps or (time.perf_counter() - start < budget and len(ours) < 200):
        seconds, aus_ours = run_ours(ds)
        ours.append(seconds)
        demux.append(run_demux(ds)[0])
        seconds, packets_pyav, opening = run_pyav(ds)
        pyav.append(seconds)
        pyav_open.append(opening)
    med = statistics.median
    return InMemory(med(ours), med(demux), med(pyav), med(pyav_open), aus_ours, packets_pyav)


# ------------------------------------------------------------------------------------------------ latency
class PacketReader:
    """A file object that returns one RTP payload per ``read()``, like a socket: FFmpeg cannot read ahead."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = payloads
        self.taken = 0

    def read(self, size: int = -1) -> bytes:
        if self.taken >= len(self.payloads):
            return b""
        self.taken += 1
        return self.payloads[self.taken - 1]


@dataclass
class Latency:
    first_ours: int  # RTP packets consumed when the first video frame came out
    first_pyav: int
    bytes_ours: int
    bytes_pyav: int
    on_marker: int  # our video frames emitted on a packet whose marker bit is set
    frames_ours: int
    emit_us: float  # median time inside the feed() call that emits a video frame (our whole added latency)
    emit_max_us: float
    lag_pkts: float  # median over frames matched by PTS: PyAV packets consumed minus ours
    lag_ms: float  # the same in RTP timestamp time
    matched: int
    open_with: int  # packets consumed by av.open with PYAV_OPTIONS
    open_without: int  # ... and with FFmpeg's defaults


def latency(ds: Dataset) -> Latency:
    import av

    from media.ps import PsDemuxer

    payloads = [bytes(p) for p, _ in ds.payloads]
    ends = [0]
    for p in payloads:
        ends.append(ends[-1] + len(p))
    demux = PsDemuxer()
    ours: dict[int | None, int] = {}
    first_ours = on_marker = frames_ours = 0
    emit_ns: list[int] = []
    clock = time.perf_counter_ns
    for i, (payload, marker) in enumerate(ds.payloads):
        t0 = clock()
        out = demux.feed(payload, marker)
        t1 = clock()
        video = [au for au in out if au.codec.is_video]
        if video:
            emit_ns.append(t1 - t0)
        for au in video:
            first_ours = first_ours or i + 1
            ours.setdefault(au.pts, i + 1)
            on_marker += marker
            frames_ours += 1
    for au in demux.flush():
        if au.codec.is_video:
            ours.setdefault(au.pts, len(payloads))

    def opened(options: dict[str, str] | None) -> tuple[PacketReader, av.container.InputContainer]:
        reader = PacketReader(payloads)
        return reader, av.open(reader, format="mpeg", options=options, buffer_size=65536)

    reader, container = opened(None)
    open_without = reader.taken
    container.close()
    reader, container = opened(PYAV_OPTIONS)
    open_with = reader.taken
    first_pyav = 0
    lags: list[tuple[int, int]] = []
    with container:
        for pkt in container.demux():
            if pkt.size and pkt.stream.type == "video":
                first_pyav = first_pyav or reader.taken
                if pkt.pts in ours:
                    lags.append((ours[pkt.pts], reader.taken))
    ts = ds.timestamps
    return Latency(
        first_ours,
        first_pyav,
        ends[first_ours],
        ends[first_pyav],
        on_marker,
        frames_ours,
        statistics.median(emit_ns) / 1e3 if emit_ns else float("nan"),
        max(emit_ns, default=0) / 1e3,
        statistics.median(b - a for a, b in lags) if lags else float("nan"),
        statistics.median(((ts[b - 1] - ts[a - 1]) & 0xFFFFFFFF) / 90 for a, b in lags) if lags else float("nan"),
        len(lags),
        open_with,
        open_without,
    )


# ------------------------------------------------------------------------------------------------ sockets
def cycled(ds: Dataset, total: int) -> list[bytes]:
    """``total`` datagrams: the capture repeated, sequence numbers shifted so that every cycle follows on."""
    n = len(ds.packets)
    first = struct.unpack_from(">H", ds.packets[0], 2)[0]
    out = []
    for i in range(total):
        cycle, j = divmod(i, n)
        pkt = bytearray(ds.packets[j])
        seq = struct.unpack_from(">H", pkt, 2)[0]
        struct.pack_into(">H", pkt, 2, (first + cycle * n + ((seq - first) & 0xFFFF)) & 0xFFFF)
        out.append(bytes(pkt))
    return out


def receiver_main(mode: str, ready: int, control: int) -> None:
    """Subprocess entry point: receive until the parent writes to ``control``, report CPU and counts."""
    import uvloop

    uvloop.run(_receive(mode, ready, control))


async def _receive(mode: str, ready: int, control: int) -> None:
    from media.ps import PsDemuxer
    from media.reorder import ReorderBuffer
    from media.rtp import RtpError, parse_rtp

    loop = asyncio.get_running_loop()

    class Bare(asyncio.DatagramProtocol):
        n = 0
        aus = 0

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
            self.n += 1

    class Ours(asyncio.DatagramProtocol):
        n = 0
        aus = 0

        def __init__(self) -> None:
            self.feed = PsDemuxer().feed
            self.push = ReorderBuffer[tuple[memoryview, bool]]().push
            self.now = loop.time

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
            self.n += 1
            try:
                _, marker, seq, _, _, off, end = parse_rtp(data)
            except RtpError:
                return
            for payload, m in self.push(seq, (memoryview(data)[off:end], marker), self.now()):
                out = self.feed(payload, m)
                if out:
                    self.aus += len(out)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    transport, proto = await loop.create_datagram_endpoint(Bare if mode == "bare" else Ours, sock=sock)
    finished = loop.create_future()

    def on_control() -> None:
        loop.remove_reader(control)
        os.read(control, 64)
        last = -1

        def settle() -> None:  # the parent has sent everything: wait until the socket is drained
            nonlocal last
            if proto.n != last:
                last = proto.n
                loop.call_later(0.02, settle)
            else:
                finished.set_result(time.process_time())

        settle()

    loop.add_reader(control, on_control)
    cpu0 = time.process_time()
    os.write(ready, f"{sock.getsockname()[1]}\n".encode())
    cpu1 = await finished
    os.write(ready, f"{cpu1 - cpu0} {proto.n} {proto.aus}\n".encode())
    transport.close()


@dataclass
class UdpResult:
    sent: int
    received: int
    cpu: float
    aus: int
    seconds: float

    @property
    def us_per_packet(self) -> float:
        return self.cpu / max(self.received, 1) * 1e6


def send_paced(port: int, packets: list[bytes], rate: int, burst: int) -> float:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.connect(("127.0.0.1", port))
    send = sock.send
    interval = burst / rate
    start = due = time.perf_counter()
    for i in range(0, len(packets), burst):
        for pkt in packets[i : i + burst]:
            send(pkt)
        due += interval
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    elapsed = time.perf_counter() - start
    sock.close()
    return elapsed


def measure_udp(mode: str, packets: list[bytes], rate: int) -> UdpResult:
    ready_r, ready_w = os.pipe()
    ctl_r, ctl_w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c",
         f"import benchmarks.media_bench as b; b.receiver_main({mode!r}, {ready_w}, {ctl_r})"],
        pass_fds=(ready_w, ctl_r), cwd=ROOT,
    )
    os.close(ready_w)
    os.close(ctl_r)
    try:
        with os.fdopen(ready_r) as replies:
            port = int(replies.readline())
            seconds = send_paced(port, packets, rate, UDP_BURST)
            time.sleep(0.05)
            os.write(ctl_w, b"end\n")
            cpu, received, aus = replies.readline().split()
        return UdpResult(len(packets), int(received), float(cpu), int(aus), seconds)
    finally:
        os.close(ctl_w)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------------ report
def main(quick: bool = False) -> None:
    import av

    budget, min_reps = (0.15, 3) if quick else (0.6, 7)
    udp_packets, udp_reps = (5_000, 1) if quick else (30_000, 5)
    print(f"\nRTP/PS ingest per packet (Python {sys.version.split()[0]}, PyAV {av.__version__}, "
          f"FFmpeg {av.library_versions['libavformat']} avformat)")
    sets = datasets(quick)

    print("\nIn memory, CPU per RTP packet (median of repetitions). ours = parse_rtp + memoryview slice + "
          "ReorderBuffer.push + PsDemuxer.feed;")
    print("demux = PsDemuxer.feed on pre-sliced payloads; PyAV = av.open(BytesIO, 'mpeg', probesize 32, "
          "analyzeduration 0) + demux(), per RTP packet its bytes came in.")
    print(f"{'data set':<16}{'pkts':>6}{'B/pkt':>7}{'ours µs':>9}{'demux µs':>10}{'PyAV µs':>9}"
          f"{'w/o open':>10}{'ours/PyAV':>11}{'w/o open':>10}{'ours MB/s':>11}{'demux MB/s':>12}"
          f"{'PyAV MB/s':>11}{'AUs ours':>10}{'PyAV pkts':>11}")
    results = {}
    for ds in sets:
        r = results[ds.name] = time_in_memory(ds, budget, min_reps)
        n = len(ds.packets)
        steady = r.pyav - r.pyav_open
        print(f"{ds.name:<16}{n:>6}{ds.rtp_bytes / n:>7.0f}{r.ours / n * 1e6:>9.2f}{r.demux / n * 1e6:>10.2f}"
              f"{r.pyav / n * 1e6:>9.2f}{steady / n * 1e6:>10.2f}{r.ours / r.pyav:>11.2f}{r.ours / steady:>10.2f}"
              f"{ds.rtp_bytes / r.ours / 1e6:>11.0f}{len(ds.ps) / r.demux / 1e6:>12.0f}"
              f"{len(ds.ps) / r.pyav / 1e6:>11.0f}{r.aus_ours:>10}{r.packets_pyav:>11}")
    print("(w/o open: PyAV minus av.open, which decodes the first frame to fill in stream info: its steady "
          "state; ours/PyAV: time ratio, < 1 = ours faster;")
    print(f" MB/s: ours of RTP bytes, demux and PyAV of PS bytes; target {TARGET_US} µs per 1400-byte packet "
          f"= {1400 / TARGET_US:.0f} MB/s; {', '.join(d.name + ': ' + d.note for d in sets if d.note)})")

    print("\nLatency proxy: input fed one RTP payload per read(). First video frame out after N packets (bytes); "
          "per frame (matched by PTS) the extra packets PyAV needs, and that in RTP time.")
    print(f"{'data set':<16}{'first ours':>16}{'first PyAV':>18}{'on marker':>11}{'emit µs med/max':>17}"
          f"{'PyAV lag pkts':>15}{'lag ms':>8}{'matched':>9}{'PyAV open pkts':>16}")
    for ds in sets:
        lat = latency(ds)
        print(f"{ds.name:<16}{f'{lat.first_ours} ({lat.bytes_ours:,})':>16}"
              f"{f'{lat.first_pyav} ({lat.bytes_pyav:,})':>18}{f'{lat.on_marker}/{lat.frames_ours}':>11}"
              f"{f'{lat.emit_us:.1f} / {lat.emit_max_us:.0f}':>17}{lat.lag_pkts:>15.1f}{lat.lag_ms:>8.1f}{lat.matched:>9}"
              f"{f'{lat.open_with} / {lat.open_without}':>16}")
    print("(on marker: our video frames that left on a packet with the RTP marker bit, i.e. on their own last "
          "packet; emit µs: time inside the feed() that returns a frame; PyAV lag: median over frames of the extra "
          "packets PyAV read before returning the same frame, lag ms the same in RTP time;")
    print(" PyAV open pkts: packets av.open read with probesize=32,analyzeduration=0 / with FFmpeg's defaults: "
          "fewer = the options took effect)")

    print(f"\nSockets on 127.0.0.1: {udp_packets:,} datagrams per run, paced at {UDP_RATE:,}/s in bursts of "
          f"{UDP_BURST}; receiver CPU (process_time) per packet received, uvloop DatagramProtocol in a subprocess;")
    print(f" median of {udp_reps} run(s) each, bare and ours alternating. bare = count only (the floor); ours = "
          "parse_rtp + slice + ReorderBuffer.push(loop.time()) + PsDemuxer.feed in datagram_received.")
    print(f"{'data set':<16}{'bare µs':>9}{'ours µs':>9}{'added µs':>10}{'ratio':>7}{'in-mem ours':>13}"
          f"{'recv bare':>15}{'recv ours':>15}{'AUs':>7}{'pps sent':>10}")
    measure_udp("bare", cycled(sets[0], 2_000), UDP_RATE)  # warm-up: page cache, first subprocess start
    for ds in sets:
        packets = cycled(ds, udp_packets)
        runs: dict[str, list[UdpResult]] = {"bare": [], "ours": []}
        for _ in range(udp_reps):
            for mode, got in runs.items():
                got.append(measure_udp(mode, packets, UDP_RATE))
        bare, ours = (sorted(got, key=lambda r: r.us_per_packet)[len(got) // 2] for got in runs.values())
        mem = results[ds.name].ours / len(ds.packets) * 1e6
        print(f"{ds.name:<16}{bare.us_per_packet:>9.2f}{ours.us_per_packet:>9.2f}"
              f"{ours.us_per_packet - bare.us_per_packet:>10.2f}{ours.us_per_packet / bare.us_per_packet:>7.2f}"
              f"{mem:>13.2f}{f'{bare.received}/{bare.sent}':>15}{f'{ours.received}/{ours.sent}':>15}"
              f"{ours.aus:>7}{ours.sent / ours.seconds:>10,.0f}")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
