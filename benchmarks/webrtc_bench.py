"""WebRTC (WHEP) viewers: gateway CPU per passthrough viewer and per H.265 → H.264 transcode, beside the RTSP TCP
viewer cost of the same stream and the bare uvloop forwarder, measured in the same run.

**Machinery** is ``rtsp_bench``'s (``Bench``): a feeder process sends the clip as PS/RTP (a frame every 40 ms) to
a whole ``Gateway`` in its own uvloop process (stream opened through a simulated device and kept open, so that
viewers join a running stream with its GOP cached) and to the bare forwarder; CPU from ``/proc/<pid>/task/*/
schedstat``. The only change: the gateway child's configuration also gets ``[webrtc] ice_addresses =
["127.0.0.1"]`` (any free UDP port) and a fixed free HTTP port for WHEP (``Config.from_mapping`` wrapped in that
child; ``rtsp_bench.gateway_main`` is otherwise run as it is).

**Passthrough**: the clip of ``rtsp_bench`` (1280x720 25 fps H.264, GOP 50, ~3.3 Mbit/s), N WHEP viewers (N = 1,
5, 10; ``--quick``: 1, 3). They are aiortc ``RTCPeerConnection`` s (video recvonly, no audio: the feed has none)
in one *WHEP client* process of their own (uvloop): offer, ``POST /whep/<device>/<channel>``, answer, ICE over
127.0.0.1, DTLS-SRTP. aiortc's receivers depacketize and reassemble every frame, but their decoder is replaced by
one that only counts the frame's bytes (decoding N 720p streams would make the client the bottleneck on a small
machine); the client's CPU is shown (``clients %``) so it can be checked it had room. Beside it, the same N as RTSP
TCP interleaved viewers (``rtsp_bench``'s light clients) of the gateway and of the bare forwarder.

**Transcode**: a 640x360 25 fps H.265 clip (libx265 ultrafast, GOP 50, no B-frames, ~1 Mbit/s) into a second
gateway: its CPU with the stream's ingest only, then with one WHEP viewer (the gateway decodes H.265 and encodes
libx264 Constrained Baseline in a worker thread, counted: every thread of the process is). ``transcode`` = the
difference, which includes one passthrough viewer of the transcoded output (~ the per-viewer figure above).

**Figures**, per row (viewers connect and get a first frame, ``warm`` s pass, then a window of one loop of the
clip): ``CPU %`` of the server process (% of one core; loopback delivery included), ``%/viewer`` = (CPU % - the
same server's CPU % with no viewer) / N, ``Mbit/s/v`` received per viewer mean / least served (WebRTC: the H.264
access units' bytes; RTSP: the interleaved stream), ``frames`` received / sent (WebRTC: by the least served viewer
/ window x 25; RTSP: rtsp_bench's probes), ``clients %`` the viewer processes, ``other %`` every other process.

``python -m benchmarks.webrtc_bench [--quick]``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
import tempfile
import time
from fractions import Fraction
from typing import Any

from .devices_bench import Child, _Commands, _quiet_logging
from .rtsp_bench import HOST, Bench, Run, cpu_ns
from .rtsp_bench import gateway_main as rtsp_gateway_main
from .streams_bench import BUSY_OTHER, FPS, others_cpu, process_cpu, wait_for_quiet, write_clip

H265_SIZE = (640, 360)
CONNECT_TIMEOUT = 30.0
RETRY_BUDGET = 75.0  # s into the full run after which a disturbed measurement is not made again (run < 2 min)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------------ the clips
def write_h265_clip(frames: int, width: int, height: int) -> tuple[str, float]:
    """A synthetic H.265 clip (gradient + noise, libx265 ultrafast, GOP 2 s, no B-frames) muxed and packetized by
    our own code into a length-prefixed RTP file (``streams_bench.load_frames``); returns (path, Mbit/s)."""
    import av
    import numpy as np

    from media.frames import AccessUnit, Codec
    from media.psmux import PsMuxer, PsRtpPacketizer

    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, FPS), Fraction(FPS, 1)
    ctx.bit_rate = 1_000_000
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency",
                   "x265-params": f"log-level=error:keyint={2 * FPS}:min-keyint={2 * FPS}:scenecut=0:bframes=0"
                                  ":repeat-headers=1"}
    rng = np.random.default_rng(28181)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (xx + yy) % 256
    chroma = np.full((height // 2, width), 128, np.uint8)
    mux = PsMuxer(Codec.H265)
    packetizer = PsRtpPacketizer(ssrc=0x0BEBC265, max_payload=1400, seq=1000)
    scale = 90000 // FPS
    encoded = 0
    fd, path = tempfile.mkstemp(prefix="webrtc_bench-", suffix=".lenpfx.rtp")
    with os.fdopen(fd, "wb") as f:
        def out(pkts: list[Any]) -> None:
            nonlocal encoded
            for pkt in pkts:
                pts = pkt.pts * scale
                data = bytes(pkt)
                encoded += len(data)
                ps = mux.mux(AccessUnit(Codec.H265, pts, pts, bool(pkt.is_keyframe), data))
                for rtp in packetizer.packetize(ps, pts):
                    f.write(struct.pack(">H", len(rtp)) + rtp)

        for i in range(frames):
            luma = ((base + 3 * i) % 192 + rng.integers(0, 64, (height, width))).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.vstack([luma, chroma]), format="yuv420p")
            frame.pts = i
            out(ctx.encode(frame))
        out(ctx.encode(None))
    return path, encoded * 8 / (frames / FPS) / 1e6


# ------------------------------------------------------------------------------------------------ gateway process
def gateway_main(http_port: int, reply_fd: int, state_dir: str) -> None:
    """``rtsp_bench.gateway_main`` with WHEP reachable on loopback: ``[webrtc] ice_addresses = ["127.0.0.1"]`` (any
    free UDP port) and the HTTP server on ``http_port``."""
    from gateway.config import Config

    plain = Config.from_mapping

    def with_webrtc(data: Any) -> Config:
        return plain({**data, "http": {**data.get("http", {}), "port": http_port},
                      "webrtc": {"ice_addresses": ["127.0.0.1"], "udp_port_min": 0, "udp_port_max": 0}})

    Config.from_mapping = staticmethod(with_webrtc)  # type: ignore[method-assign]
    rtsp_gateway_main(reply_fd, state_dir)


class WhepBench(Bench):
    """``rtsp_bench.Bench`` whose gateway serves WHEP on ``http_port``, plus a WHEP client process."""

    def _child(self, call: str) -> Child:
        if call.startswith("b.gateway_main("):
            self.http_port = free_port()
            call = f"import benchmarks.webrtc_bench as w; w.gateway_main({self.http_port}, {call[15:]}"
        return super()._child(call)

    def _start(self, packets: str, state_dir: str, window: float) -> None:
        super()._start(packets, state_dir, window)
        self.whep = self._child("import benchmarks.webrtc_bench as w; w.whep_main(FD)")
        self.pids.add(self.whep.pid)

    def measure_whep(self, n: int, warm: float, window: float) -> Run:
        """Once more if other processes took more than ``BUSY_OTHER`` % of a core; the quieter run."""
        first = self._measure_whep(n, warm, window)
        if not self.retry or first.pct(first.other) <= BUSY_OTHER:
            return first
        second = self._measure_whep(n, warm, window)
        first.tries = second.tries = 2
        return min(first, second, key=lambda r: r.pct(r.other))

    def _measure_whep(self, n: int, warm: float, window: float) -> Run:
        run = Run("gw", "whep", n)
        try:
            res = self.whep.ask("play", self.http_port, self.paths[0].lstrip("/"), n,
                                timeout=CONNECT_TIMEOUT + 10)
            run.errors, run.connect_s, run.connected = res["errors"], res["seconds"], res["ok"]
            time.sleep(warm)
            tm0, m0 = time.perf_counter(), process_cpu()
            self.whep.ask("mark")
            t0, cpu0, cl0 = time.perf_counter(), cpu_ns(self.gw.pid), cpu_ns(self.whep.pid)
            time.sleep(window)
            t1, cpu1, cl1 = time.perf_counter(), cpu_ns(self.gw.pid), cpu_ns(self.whep.pid)
            count = self.whep.ask("count")
            tm1, m1 = time.perf_counter(), process_cpu()
            run.window, run.cpu, run.clients_cpu = t1 - t0, cpu1 - cpu0, cl1 - cl0
            run.other = others_cpu(m0, m1, self.pids) / (tm1 - tm0) * run.window
            span = count["t"] - count["since"]
            run.rate = sum(count["bytes"]) / span
            run.min_rate = min(count["bytes"], default=0) / span
            run.frames_got = min(count["frames"], default=0)
            run.frames_sent = round(span * FPS)
            run.lost = count["failed"]
            return run
        finally:
            self.whep.ask("close", timeout=30)
            time.sleep(0.3)  # the gateway ends the sessions


# ------------------------------------------------------------------------------------------------ WHEP clients
class _CountingDecoder:
    """Stands in for aiortc's decoder: a frame's byte count instead of a picture (the track hands it over)."""

    def decode(self, encoded_frame: Any) -> list[int]:
        return [len(encoded_frame.data)]


def whep_main(reply_fd: int) -> None:
    import uvloop

    uvloop.run(_whep(reply_fd))


async def _whep(reply_fd: int) -> None:
    """``play port path k``: k aiortc WHEP viewers, answered once each has a first frame; ``mark`` / ``count`` a
    window (frames and bytes per viewer); ``close``: DELETE and close them all."""
    import aiohttp
    import aiortc.rtcrtpreceiver
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    _quiet_logging("error")
    aiortc.rtcrtpreceiver.get_decoder = lambda codec: _CountingDecoder()  # type: ignore[attr-defined,assignment,return-value]
    http = aiohttp.ClientSession()
    viewers: list[dict[str, Any]] = []
    marked = [0.0]
    http_base = [""]

    async def viewer(base: str, path: str) -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        v: dict[str, Any] = {"pc": pc, "frames": 0, "bytes": 0, "mark": (0, 0), "location": None, "failed": False,
                             "first": asyncio.get_running_loop().create_future()}
        viewers.append(v)
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(f"{base}/whep/{path}", data=pc.localDescription.sdp,
                             headers={"Content-Type": "application/sdp"},
                             timeout=aiohttp.ClientTimeout(total=CONNECT_TIMEOUT)) as resp:
            body = await resp.text()
            if resp.status != 201:
                raise ConnectionError(f"POST /whep {resp.status} {body[:60]}")
            v["location"] = resp.headers["Location"]
        await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        track = next(t.receiver.track for t in pc.getTransceivers() if t.kind == "video")

        async def receive() -> None:
            try:
                while True:
                    size = await track.recv()
                    v["frames"] += 1
                    v["bytes"] += size
                    if not v["first"].done():
                        v["first"].set_result(None)
            except Exception:  # noqa: BLE001 - the track ended
                v["failed"] = True

        v["task"] = asyncio.ensure_future(receive())
        await asyncio.wait_for(asyncio.shield(v["first"]), CONNECT_TIMEOUT)

    async def play(port: str, path: str, k: str) -> dict[str, Any]:
        http_base[0] = f"http://{HOST}:{port}"
        t0 = time.monotonic()
        errors: dict[str, int] = {}
        results = await asyncio.gather(*(viewer(http_base[0], path) for _ in range(int(k))),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                key = f"{type(r).__name__}: {r}"[:80]
                errors[key] = errors.get(key, 0) + 1
        ok = sum(1 for v in viewers if v["first"].done())
        return {"ok": ok, "errors": errors, "seconds": time.monotonic() - t0}

    def mark() -> dict[str, Any]:
        for v in viewers:
            v["mark"] = (v["frames"], v["bytes"])
        marked[0] = time.monotonic()
        return {"t": marked[0]}

    def count() -> dict[str, Any]:
        return {"since": marked[0], "t": time.monotonic(), "frames": [v["frames"] - v["mark"][0] for v in viewers],
                "bytes": [v["bytes"] - v["mark"][1] for v in viewers], "failed": sum(v["failed"] for v in viewers)}

    async def close() -> dict[str, Any]:
        async def one(v: dict[str, Any]) -> None:
            if v["location"]:
                try:
                    async with http.delete(f"{http_base[0]}{v['location']}",
                                           timeout=aiohttp.ClientTimeout(total=10)):
                        pass
                except (TimeoutError, aiohttp.ClientError):
                    pass
            if "task" in v:
                v["task"].cancel()
            await v["pc"].close()

        await asyncio.gather(*(one(v) for v in viewers))
        n = len(viewers)
        viewers.clear()
        return {"closed": n}

    commands = _Commands(reply_fd, {"play": play, "mark": mark, "count": count, "close": close})
    commands.reply({"pid": os.getpid()})
    await commands.done.wait()
    await http.close()
    os._exit(0)


# ------------------------------------------------------------------------------------------------ report
def _row(label: str, r: Run, idle: float) -> str:
    share = r.pct(r.cpu)
    frames = f"{r.frames_got / max(r.frames_sent, 1):.0%}"
    return (f"{r.n:>4} {label:<10}{share:>7.1f}{(share - idle) / r.n:>9.2f}"
            f"{f'{r.rate * 8 / 1e6 / r.n:.2f} / {r.min_rate * 8 / 1e6:.2f}':>18}{frames:>8}"
            f"{r.pct(r.clients_cpu):>10.0f}{r.pct(r.other):>8.0f}")


def _problems(r: Run) -> None:
    if r.errors or r.lost or r.connected < r.n or r.tries > 1:
        print(f"      {r.server} {r.transport}: {r.connected}/{r.n} connected in {r.connect_s:.1f} s, {r.lost} "
              f"ended; errors {r.errors}; runs {r.tries} (the one with less other load shown)")


def main(quick: bool = False) -> None:
    frames, sizes, warm, window, quiet = (50, (1, 3), 0.6, 2.0, 1.0) if quick else (100, (1, 5, 10), 1.0, 4.0, 2.0)
    deadline = time.monotonic() + RETRY_BUDGET
    path, note, _, _ = write_clip(frames)
    h265, h265_mbps = write_h265_clip(frames, *H265_SIZE)
    try:
        per = passthrough(path, note, sizes, warm, window, quiet, 0.0 if quick else deadline)
        transcode(h265, h265_mbps, frames, warm, window, quiet, 0.0 if quick else deadline, per.get(1))
    finally:
        os.unlink(path)
        os.unlink(h265)


def passthrough(path: str, note: str, sizes: tuple[int, ...], warm: float, window: float,
                quiet: float, retry_until: float) -> dict[int, float]:
    """N viewers of one H.264 stream; returns the WebRTC %/viewer by N. A measurement disturbed by other processes
    is made once more while ``time.monotonic() < retry_until``."""
    busy = wait_for_quiet(quiet)
    bench: WhepBench | None = None
    per: dict[int, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="webrtc_bench-") as state_dir:
            bench = WhepBench(path, state_dir, window)
            print(f"\nWebRTC (WHEP) passthrough of one stream: 1280x720 {FPS} fps H.264, GOP 50, a loop of {note}, "
                  f"fed as PS/RTP by rtsp_bench's feeder to gw = the whole Gateway "
                  "(WHEP on 127.0.0.1)")
            print(" and bare = rtsp_bench's uvloop forwarder; viewers: N aiortc WHEP clients in one process "
                  "(frames reassembled, not decoded), beside N RTSP TCP viewers (rtsp_bench's light clients);")
            print(f" {warm:g} s warm-up, {window:g} s window; cores busy before the run {busy:.2f}.")
            time.sleep(warm)
            idle = bench.idle(window)
            print(f"no viewer (ingest only): gw {idle['gw']:.2f} % of a core, bare {idle['bare']:.2f} %")
            print(f"{'N':>4} {'viewers':<10}{'CPU %':>7}{'%/viewer':>9}{'Mbit/s/v mean/min':>18}{'frames':>8}"
                  f"{'clients %':>10}{'other %':>8}")
            for n in sizes:
                bench.retry = time.monotonic() < retry_until
                r = bench.measure_whep(n, warm, window)
                per[n] = (r.pct(r.cpu) - idle["gw"]) / n
                print(_row("gw WebRTC", r, idle["gw"]))
                _problems(r)
                for server in ("gw", "bare"):
                    r = bench.measure(server, "tcp", n, warm, window)
                    print(_row(f"{server} RTSP", r, idle[server]))
                    _problems(r)
            print("(CPU %: the server process, % of one core; %/viewer: (CPU % - no viewer) / N; Mbit/s/v: WebRTC "
                  "the H.264 frames' bytes, RTSP the interleaved stream; frames: WebRTC the least served viewer's")
            print(" frames / window x 25, RTSP the probes' marker packets / frames sent; clients %: the viewer "
                  "processes (WebRTC: the one aiortc process; it must stay well below 100 % to not be the limit))")
            top = max(per)
            print(f"WebRTC passthrough: {per[top]:.2f} % of a core per viewer at N={top} "
                  f"(~{(100 - idle['gw']) / per[top] if per[top] > 0 else float('inf'):.0f} viewers per core)")
    finally:
        if bench is not None:
            bench.close()
    return per


def transcode(path: str, mbps: float, frames: int, warm: float, window: float, quiet: float, retry_until: float,
              viewer: float | None = None) -> None:
    """``viewer``: the passthrough figure at N = 1 (% of a core), to show the transcode less one viewer."""
    busy = wait_for_quiet(quiet)
    bench: WhepBench | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="webrtc_bench-") as state_dir:
            bench = WhepBench(path, state_dir, window, retry=time.monotonic() < retry_until)
            w, h = H265_SIZE
            print(f"\nWebRTC transcode: {w}x{h} {FPS} fps H.265 (libx265 ultrafast, GOP 50, no B-frames, {frames} "
                  f"frames, {mbps:.2f} Mbit/s) into a new gateway, one WHEP viewer (decoded with PyAV, encoded "
                  "libx264 for it);")
            print(f" {warm:g} s warm-up, {window:g} s window; cores busy before {busy:.2f}.")
            time.sleep(warm)
            idle = bench.idle(window)["gw"]
            r = bench.measure_whep(1, warm, window)
            print(f"{'N':>4} {'viewers':<10}{'CPU %':>7}{'%/viewer':>9}{'Mbit/s/v mean/min':>18}{'frames':>8}"
                  f"{'clients %':>10}{'other %':>8}")
            print(_row("gw WebRTC", r, idle))
            _problems(r)
            print(f"WebRTC transcode (H.265 {w}x{h} → H.264, one viewer): {r.pct(r.cpu) - idle:.1f} % of a core "
                  f"(gw {r.pct(r.cpu):.1f} % with the viewer - {idle:.2f} % with the stream's ingest only; includes "
                  "that viewer's passthrough of the transcoded stream"
                  + (f"; less one passthrough viewer ({viewer:.2f} % above): {r.pct(r.cpu) - idle - viewer:.1f} %)"
                     if viewer is not None else ")"))
    finally:
        if bench is not None:
            bench.close()


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
