"""Media the simulator sends: a generated clip (``ClipSource``) or a replayed capture (``CaptureSource``).

Theory of operation
-------------------
Encoding is paid once per process, never per stream. ``get_clip(ClipSpec)`` draws ``seconds x fps`` pictures
with numpy (a scrolling diagonal pattern, a bouncing box and a 7-segment clock ``SS.FF``: clip second and frame
number), encodes them with PyAV (libx264 or libx265: ``tune=zerolatency``, no B-frames, one thread, a keyframe
every ``fps`` frames, in-band parameter sets before each keyframe) and adds audio, the codecs GB/T 28181 cameras
send (``ClipSpec.audio``): a quiet 440 Hz tone with a 1 kHz beep at the start of every second, encoded with
FFmpeg's ``pcm_alaw`` (G.711A, the default) or ``pcm_mulaw`` (G.711U) at 8 kHz in access units of
``audio_frame_ms``, or with FFmpeg's ``aac`` (AAC-LC, mono, 8 or 16 kHz) one 1024-sample frame per access unit,
each with its ADTS header (ISO/IEC 13818-7 §6.2, as cameras put AAC in PS). AAC frames take the encoder's PTS
(its priming frame, before 0, is dropped, so the beep stays on the second); only whole frames within the loop
are kept, so the audio has a gap of ``seconds x rate mod 1024`` samples at the loop point. The result,
a ``Clip`` of ``AccessUnit``s in PTS order with PTS from 0 on the 90 kHz clock, is cached per ``ClipSpec`` behind
a lock (concurrent INVITEs wait for one encode); ``load_clip`` runs that in a worker thread so the SIP loop never
stalls on an encoder.

Per stream, ``ClipSource.bursts(ssrc, ...)`` loops the clip forever with continuous timestamps (loop ``k`` adds
``k x duration``), muxes each access unit with its own ``PsMuxer`` (a pack per access unit, system header + PSM
before keyframes) and cuts it into RTP packets with a ``PsRtpPacketizer`` (the RTP timestamp is the PS PTS, as
Hikvision cameras do). It yields ``Burst``es: the packets of the access units sharing one PTS, with the time,
in seconds from the stream's start, at which they are due. The streamer (``gateway.sim.media``) sleeps until
then and sends the burst at once, as a camera's encoder does.

``CaptureSource`` replays a ``*.lenpfx.rtp`` capture (RTP packets each preceded by a 2-byte big-endian length)
packet by packet: payload, payload type and marker are kept; SSRC, sequence number and timestamp are rewritten so
that they continue across loops (timestamps advance by the capture's span plus one frame interval per loop).
Packets sharing a timestamp form one burst, paced by the timestamps (``speed`` x real time; gaps longer than
2 s or going backwards count as one frame interval).
"""

from __future__ import annotations

import asyncio
import functools
import math
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from media.frames import AccessUnit, Codec
from media.psmux import PsMuxer, PsRtpPacketizer
from media.rtp import RtpError, build_rtp, parse_rtp

__all__ = [
    "AUDIO_CODECS",
    "Burst",
    "CaptureSource",
    "Clip",
    "ClipSource",
    "ClipSpec",
    "get_clip",
    "load_capture",
    "load_clip",
]

CLOCK = 90_000
"""RTP / PES clock of GB/T 28181 PS streams (Hz)."""
AUDIO_RATE = 8000
"""G.711 sample rate (Hz); the default of ``ClipSpec.audio_rate``."""
AUDIO_CODECS = {"g711a": Codec.G711A, "g711u": Codec.G711U, "aac": Codec.AAC}
"""``ClipSpec.audio`` choices besides ``none``."""
AUDIO_RATES = {"g711a": (8000,), "g711u": (8000,), "aac": (8000, 16000)}
"""Sample rates each audio codec may have (Hz)."""
AAC_FRAME = 1024
"""Samples per AAC-LC frame."""
_AAC_SFI = {8000: 11, 16000: 8}  # ADTS sampling_frequency_index (ISO/IEC 14496-3 Table 1.18)
_AUDIO_NAMES = {"g711a": "G.711A", "g711u": "G.711U", "aac": "AAC"}
MAX_WIDTH, MAX_HEIGHT = 640, 360
"""The largest picture a generated clip may have: the simulator stays light with many streams."""
ENCODERS = {"h264": "libx264", "h265": "libx265"}
_CODECS = {"h264": Codec.H264, "h265": Codec.H265}


# ---------------------------------------------------------------------------------------------------- the clip
@dataclass(frozen=True, slots=True)
class ClipSpec:
    """What to generate. Equal specs share one encode (the cache key)."""

    codec: str = "h264"
    """``h264`` or ``h265``."""
    width: int = 320
    height: int = 240
    fps: int = 25
    seconds: int = 10
    """Length of the loop; also the GOP count (one keyframe per second)."""
    audio: str = "g711a"
    """``g711a``, ``g711u``, ``aac`` (AAC-LC in ADTS) or ``none``. ``True``/``False`` (older callers) become
    ``g711a``/``none``."""
    audio_rate: int = AUDIO_RATE
    """Audio sample rate (Hz): 8000 for G.711; 8000 or 16000 for AAC."""
    audio_frame_ms: int = 40
    """Duration of one G.711 access unit: 20 or 40 ms (GB/T 28181 devices use both). An AAC access unit is one
    frame (1024 samples: 128 ms at 8 kHz, 64 ms at 16 kHz)."""

    def __post_init__(self) -> None:
        if isinstance(self.audio, bool):
            object.__setattr__(self, "audio", "g711a" if self.audio else "none")
        errors = []
        if self.codec not in ENCODERS:
            errors.append(f"codec = {self.codec!r}: expected h264 or h265")
        if not (16 <= self.width <= MAX_WIDTH and 16 <= self.height <= MAX_HEIGHT) or self.width % 2 \
                or self.height % 2:
            errors.append(f"size = {self.width}x{self.height}: expected even sizes from 16x16 to "
                          f"{MAX_WIDTH}x{MAX_HEIGHT}")
        if not 1 <= self.fps <= 60:
            errors.append(f"fps = {self.fps!r}: expected 1-60")
        if not 1 <= self.seconds <= 60:
            errors.append(f"seconds = {self.seconds!r}: expected 1-60")
        if self.audio_frame_ms not in (20, 40):
            errors.append(f"audio_frame_ms = {self.audio_frame_ms!r}: expected 20 or 40")
        if self.audio != "none" and self.audio not in AUDIO_CODECS:
            errors.append(f"audio = {self.audio!r}: expected g711a, g711u, aac or none")
        elif self.audio != "none" and self.audio_rate not in AUDIO_RATES[self.audio]:
            rates = " or ".join(map(str, AUDIO_RATES[self.audio]))
            errors.append(f"audio_rate = {self.audio_rate!r}: expected {rates} for {self.audio}")
        if errors:
            raise ValueError("; ".join(errors))

    @property
    def video_codec(self) -> Codec:
        return _CODECS[self.codec]

    @property
    def audio_codec(self) -> Codec | None:
        """The audio codec, ``None`` without audio."""
        return AUDIO_CODECS.get(self.audio)


@dataclass(frozen=True, slots=True)
class Clip:
    """One encoded loop: access units in PTS order (video before audio at equal PTS), PTS from 0 (90 kHz)."""

    spec: ClipSpec
    units: tuple[AccessUnit, ...]
    duration: int
    """Length of the loop in 90 kHz ticks: the next loop's PTS start here."""
    video_frames: int
    audio_frames: int
    encode_seconds: float
    """Wall time the encode took (paid once per process)."""

    @property
    def video_kbps(self) -> float:
        size = sum(len(u.data) for u in self.units if u.codec.is_video)
        return size * 8 / (self.duration / CLOCK) / 1000


_clips: dict[ClipSpec, Clip] = {}
_clip_lock = threading.Lock()


def get_clip(spec: ClipSpec) -> Clip:
    """The clip for ``spec``, encoded on first use and cached for the life of the process (thread-safe).

    Raises ``RuntimeError`` if PyAV lacks the encoder (libx265 is optional in PyAV builds).
    """
    clip = _clips.get(spec)
    if clip is not None:
        return clip
    with _clip_lock:
        clip = _clips.get(spec)
        if clip is None:
            clip = _clips[spec] = _encode(spec)
        return clip


async def load_clip(spec: ClipSpec) -> Clip:
    """``get_clip`` in a worker thread (the first call encodes: up to about a second at 640x360)."""
    clip = _clips.get(spec)
    if clip is not None:
        return clip
    return await asyncio.to_thread(get_clip, spec)


def _encode(spec: ClipSpec) -> Clip:
    import av  # imported here: the registry-only simulator never pays for it

    started = time.perf_counter()
    name = ENCODERS[spec.codec]
    if name not in av.codecs_available:
        raise RuntimeError(f"PyAV has no {name} encoder: cannot generate {spec.codec} media")
    fps = spec.fps
    ctx: Any = av.CodecContext.create(name, "w")
    ctx.width = spec.width
    ctx.height = spec.height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, fps)
    ctx.framerate = Fraction(fps, 1)
    ctx.gop_size = fps
    ctx.max_b_frames = 0
    ctx.thread_count = 1
    if name == "libx264":
        params = f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0:threads=1"
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": params}
    else:
        params = (f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0:open-gop=0:rc-lookahead=0:"
                  "frame-threads=1:pools=none:log-level=error")
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "x265-params": params}
    count = spec.seconds * fps
    painter = _Painter(spec.width, spec.height)
    packets: list[tuple[int, bool, bytes]] = []

    def collect(out: Any) -> None:
        for pkt in out:
            packets.append((int(pkt.pts), bool(pkt.is_keyframe), bytes(pkt)))

    for i in range(count):
        frame = av.VideoFrame.from_ndarray(painter.picture(i, fps), format="yuv420p")
        frame.pts = i
        collect(ctx.encode(frame))
    collect(ctx.encode(None))
    if len(packets) != count or not packets[0][1]:
        raise RuntimeError(f"{name} gave {len(packets)} packets for {count} pictures")
    video = [AccessUnit(spec.video_codec, round(p * CLOCK / fps), round(p * CLOCK / fps), key, data)
             for p, key, data in sorted(packets)]
    duration = spec.seconds * CLOCK
    audio = _audio(spec)
    units = sorted(video + audio, key=lambda u: (u.pts, u.codec.is_audio))
    return Clip(spec, tuple(units), duration, len(video), len(audio), time.perf_counter() - started)


# 7-segment digits: segments a (top), b (top right), c (bottom right), d (bottom), e (bottom left), f (top left),
# g (middle).
_SEGMENTS = {0: "abcdef", 1: "bc", 2: "abged", 3: "abgcd", 4: "fgbc", 5: "afgcd", 6: "afgedc", 7: "abc",
             8: "abcdefg", 9: "abcdfg"}


class _Painter:
    """Draws the clip's pictures directly in planar YUV 4:2:0 (no colour conversion, no font)."""

    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        yy, xx = np.mgrid[0:height, 0:width]
        self._diag = (xx + yy).astype(np.int32)
        cy, cx = np.mgrid[0 : height // 2, 0 : width // 2]
        self._cx = cx.astype(np.int32)
        self._cy = cy.astype(np.int32)
        self.digit_h = max(10, height // 5)
        self.digit_w = max(6, self.digit_h // 2)
        self.thick = max(2, self.digit_h // 8)

    def picture(self, index: int, fps: int) -> npt.NDArray[np.uint8]:
        w, h = self.w, self.h
        y = (16 + np.abs((self._diag + 3 * index) % 128 - 64) * 3).astype(np.uint8)  # diagonal waves scrolling
        u = (128 + ((self._cx + 2 * index) % 96) - 48).astype(np.uint8)
        v = (128 + ((self._cy + index) % 64) - 32).astype(np.uint8)
        # a box bouncing left and right
        box = max(8, h // 6)
        span = max(1, w - box)
        x0 = abs((index * 4) % (2 * span) - span)
        y0 = h // 2
        y[y0 : y0 + box, x0 : x0 + box] = 235
        u[y0 // 2 : (y0 + box) // 2, x0 // 2 : (x0 + box) // 2] = 90
        v[y0 // 2 : (y0 + box) // 2, x0 // 2 : (x0 + box) // 2] = 240
        # the clock: SS.FF (seconds into the clip, frame in the second), white on black
        seconds, frame = divmod(index, fps)
        self._clock(y, u, v, f"{seconds % 100:02d}.{frame % 100:02d}")
        return np.concatenate([y, u.reshape(-1, w), v.reshape(-1, w)])

    def _clock(self, y: npt.NDArray[np.uint8], u: npt.NDArray[np.uint8], v: npt.NDArray[np.uint8],
               text: str) -> None:
        dw, dh, t = self.digit_w, self.digit_h, self.thick
        gap = t * 2
        width = len(text) * (dw + gap) + gap
        x, top = gap, gap
        bottom, right = min(self.h, top + dh + 2 * gap), min(self.w, width + gap)
        y[top - gap // 2 : bottom, 0:right] = 16
        u[(top - gap // 2) // 2 : bottom // 2, 0 : right // 2] = 128
        v[(top - gap // 2) // 2 : bottom // 2, 0 : right // 2] = 128
        top += gap // 2
        for ch in text:
            if ch == ".":
                y[top + dh - t : top + dh, x : x + t] = 235
                x += t + gap
                continue
            self._digit(y, int(ch), x, top)
            x += dw + gap

    def _digit(self, y: npt.NDArray[np.uint8], digit: int, x: int, top: int) -> None:
        dw, dh, t = self.digit_w, self.digit_h, self.thick
        mid = top + dh // 2
        rects = {
            "a": (top, top + t, x, x + dw),
            "d": (top + dh - t, top + dh, x, x + dw),
            "g": (mid - t // 2, mid - t // 2 + t, x, x + dw),
            "f": (top, mid, x, x + t),
            "e": (mid, top + dh, x, x + t),
            "b": (top, mid, x + dw - t, x + dw),
            "c": (mid, top + dh, x + dw - t, x + dw),
        }
        for seg in _SEGMENTS[digit]:
            r0, r1, c0, c1 = rects[seg]
            y[r0:r1, c0:c1] = 235


def _audio(spec: ClipSpec) -> list[AccessUnit]:
    """The clip's audio access units (PTS from 0, 90 kHz), none if ``spec.audio`` is ``none``."""
    codec = spec.audio_codec
    if codec is None:
        return []
    rate = spec.audio_rate
    pcm = _tone(spec.seconds * rate, rate)
    if codec is Codec.AAC:
        return [AccessUnit(codec, pts, pts, True, frame) for pts, frame in _aac(pcm, rate)]
    per_frame = rate * spec.audio_frame_ms // 1000
    samples = _g711("pcm_alaw" if codec is Codec.G711A else "pcm_mulaw", pcm, rate)
    step = CLOCK * spec.audio_frame_ms // 1000
    return [AccessUnit(codec, k * step, k * step, True, samples[k * per_frame:(k + 1) * per_frame])
            for k in range(len(samples) // per_frame)]


def _tone(samples: int, rate: int = AUDIO_RATE) -> npt.NDArray[np.int16]:
    """A quiet 440 Hz tone with a 1 kHz beep during the first 100 ms of every second (a clock you can hear)."""
    t = np.arange(samples, dtype=np.float64) / rate
    wave = 1500 * np.sin(2 * math.pi * 440 * t)
    beep = (np.arange(samples) % rate) < rate // 10
    wave = np.where(beep, 9000 * np.sin(2 * math.pi * 1000 * t), wave)
    return wave.astype(np.int16)


def _g711(encoder: str, pcm: npt.NDArray[np.int16], rate: int) -> bytes:
    """16-bit linear PCM to G.711 A-law (``pcm_alaw``) or mu-law (``pcm_mulaw``) with FFmpeg (ITU-T G.711)."""
    import av

    ctx: Any = av.CodecContext.create(encoder, "w")
    ctx.sample_rate = rate
    ctx.format = "s16"
    ctx.layout = "mono"
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    frame.pts = 0
    return b"".join(bytes(p) for p in ctx.encode(frame)) + b"".join(bytes(p) for p in ctx.encode(None))


def _aac(pcm: npt.NDArray[np.int16], rate: int) -> list[tuple[int, bytes]]:
    """16-bit linear PCM to AAC-LC with FFmpeg's ``aac`` encoder: ``(PTS at 90 kHz, ADTS frame)`` for each whole
    1024-sample frame within ``pcm`` (the priming frame before PTS 0 and a partial last frame are left out)."""
    import av

    if "aac" not in av.codecs_available:
        raise RuntimeError("PyAV has no aac encoder: cannot generate AAC audio")
    ctx: Any = av.CodecContext.create("aac", "w")
    ctx.sample_rate = rate
    ctx.format = "fltp"
    ctx.layout = "mono"
    ctx.bit_rate = 2 * rate  # 16 kbit/s at 8 kHz, 32 at 16 kHz: what cameras send
    frame = av.AudioFrame.from_ndarray((pcm.astype(np.float32) / 32768).reshape(1, -1), format="fltp",
                                       layout="mono")
    frame.sample_rate = rate
    frame.pts = 0
    packets = [*ctx.encode(frame), *ctx.encode(None)]
    sfi = _AAC_SFI[rate]
    return [(int(p.pts) * CLOCK // rate, _adts(bytes(p), sfi)) for p in packets
            if p.pts is not None and 0 <= p.pts and p.pts + AAC_FRAME <= len(pcm)]


def _adts(raw: bytes, sfi: int) -> bytes:
    """One raw AAC-LC mono frame behind a 7-byte ADTS header (ISO/IEC 13818-7 §6.2: MPEG-4, no CRC, profile LC,
    ``sampling_frequency_index`` ``sfi``, channel configuration 1, buffer fullness 0x7FF (VBR), one raw block)."""
    length = 7 + len(raw)
    channels = 1
    header = bytes((
        0xFF, 0xF1,
        (1 << 6) | (sfi << 2) | (channels >> 2),
        ((channels & 3) << 6) | (length >> 11),
        (length >> 3) & 0xFF,
        ((length & 7) << 5) | 0x1F,
        0xFC,
    ))
    return header + raw


# ---------------------------------------------------------------------------------------------------- streaming
class Burst(NamedTuple):
    """RTP packets sent back to back, due ``at`` seconds after the stream's start."""

    at: float
    packets: list[bytes]
    video_frames: int
    audio_frames: int


class ClipSource:
    """A cached ``Clip`` looped per stream (see the module docstring)."""

    def __init__(self, clip: Clip, *, max_payload: int = 1400) -> None:
        self.clip = clip
        self.max_payload = max_payload

    @property
    def description(self) -> str:
        s = self.clip.spec
        audio = _AUDIO_NAMES.get(s.audio)
        if audio == "AAC":
            audio += f" {s.audio_rate // 1000} kHz"
        return f"{s.codec} {s.width}x{s.height}@{s.fps}" + (f" + {audio}" if audio else "")

    def bursts(self, ssrc: int, *, seq: int = 0, pts_base: int = 0) -> Iterator[Burst]:
        """Forever: the bursts of one stream with this SSRC; first sequence number ``seq``, first PTS
        ``pts_base`` (the RTP timestamp is the PTS modulo 2**32)."""
        clip = self.clip
        muxer = PsMuxer(clip.spec.video_codec, clip.spec.audio_codec)
        packetizer = PsRtpPacketizer(ssrc, max_payload=self.max_payload, seq=seq)
        units = clip.units
        n = len(units)
        loop = 0
        while True:
            offset = loop * clip.duration
            i = 0
            while i < n:
                pts = units[i].pts
                assert pts is not None
                packets: list[bytes] = []
                video = audio = 0
                while i < n and units[i].pts == pts:
                    au = units[i]
                    t = pts_base + offset + pts
                    # PsMuxer masks PTS to 33 bits, the packetizer the RTP timestamp to 32.
                    packets += packetizer.packetize(muxer.mux(AccessUnit(au.codec, t, t, au.keyframe, au.data)), t)
                    if au.codec.is_video:
                        video += 1
                    else:
                        audio += 1
                    i += 1
                yield Burst((offset + pts) / CLOCK, packets, video, audio)
            loop += 1


@dataclass(frozen=True, slots=True)
class _Capture:
    path: str
    packets: tuple[tuple[int, bool, int, bytes], ...]
    """(timestamp from the first packet's, marker, payload type, payload)."""
    duration: int
    """Span of the capture plus one frame interval (90 kHz ticks): where the next loop's timestamps start."""
    frame_interval: int
    original_ssrc: int


@functools.cache
def load_capture(path: str) -> _Capture:
    """Read and index a ``*.lenpfx.rtp`` capture (cached per path). Raises ``ValueError`` if it holds no RTP."""
    data = Path(path).read_bytes()
    packets: list[tuple[int, bool, int, bytes]] = []
    pos = 0
    first_ts: int | None = None
    ssrc = 0
    while pos + 2 <= len(data):
        (size,) = struct.unpack_from(">H", data, pos)
        chunk = data[pos + 2 : pos + 2 + size]
        pos += 2 + size
        try:
            pt, marker, _seq, ts, ssrc_, off, end = parse_rtp(chunk)
        except RtpError:
            continue
        if first_ts is None:
            first_ts, ssrc = ts, ssrc_
        packets.append(((ts - first_ts) & 0xFFFFFFFF, marker, pt, chunk[off:end]))
    if not packets:
        raise ValueError(f"{path}: no RTP packets (expected 2-byte length-prefixed RTP)")
    deltas = Counter(b[0] - a[0] for a, b in zip(packets, packets[1:], strict=False) if 0 < b[0] - a[0] < CLOCK)
    interval = deltas.most_common(1)[0][0] if deltas else CLOCK // 25
    span = max(p[0] for p in packets if p[0] < 1 << 31)
    return _Capture(path, tuple(packets), span + interval, interval, ssrc)


class CaptureSource:
    """A ``*.lenpfx.rtp`` capture replayed packet by packet, looped (see the module docstring)."""

    def __init__(self, path: str | Path, *, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError(f"speed = {speed!r}: expected a positive number")
        self.capture = load_capture(str(path))
        self.speed = speed

    @property
    def description(self) -> str:
        return f"replay {Path(self.capture.path).name}"

    @property
    def packet_count(self) -> int:
        return len(self.capture.packets)

    def bursts(self, ssrc: int, *, seq: int = 0, pts_base: int = 0) -> Iterator[Burst]:
        """Forever: the capture's packets with this SSRC, sequence numbers from ``seq``, timestamps from
        ``pts_base``, grouped by timestamp and paced by it."""
        cap = self.capture
        packets = cap.packets
        n = len(packets)
        limit = 2 * CLOCK
        at = 0.0
        loop = 0
        while True:
            base = pts_base + loop * cap.duration
            i = 0
            prev_ts = None
            while i < n:
                ts = packets[i][0]
                if prev_ts is not None:
                    delta = ts - prev_ts
                    at += (delta if 0 <= delta <= limit else cap.frame_interval) / CLOCK / self.speed
                elif loop:
                    at += cap.frame_interval / CLOCK / self.speed
                prev_ts = ts
                out: list[bytes] = []
                markers = 0
                while i < n and packets[i][0] == ts:
                    _, marker, pt, payload = packets[i]
                    out.append(build_rtp(pt, marker, seq, (base + ts) & 0xFFFFFFFF, ssrc, payload))
                    seq = (seq + 1) & 0xFFFF
                    markers += marker
                    i += 1
                yield Burst(at, out, markers, 0)
            loop += 1
