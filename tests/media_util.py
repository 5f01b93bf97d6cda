"""Test helpers for the media cores: the shared third-party captures, and test media made with PyAV.

* Captures live beside the repository in ``../shared/data`` (STYLE.md §9: third-party captures are read from
  there, never copied in). ``capture(name)`` returns the path or skips the test with the reason.
  ``*.lenpfx.rtp`` files are RTP packets each preceded by a 2-byte big-endian length (RFC 4571 framing);
  ``rtp_packets`` yields them parsed with ``struct`` into ``RtpPkt`` (this helper does not depend on
  ``media.rtp``, which is developed in parallel).
* ``encode_video`` makes small H.264/H.265 streams from numpy-drawn frames with PyAV's libx264/libx265 and
  returns ``EncodedFrame``s (Annex B access units with pts/dts in 90 kHz). Results are cached per test session.
* ``decode_video`` decodes Annex B access units with PyAV and returns the decoded frames' sizes plus the number of
  decoder errors.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"

HIKVISION = "hikvision_h264_704x576_ps.lenpfx.rtp"
MIDGOP = "camera_10_packets_midgop.lenpfx.rtp"
G711_BAD_PSM = "g711a_audio_only_bad_psm.ps"
GSTREAMER = "gstreamer_mpegpsmux_h264.lenpfx.rtp"
GOMEDIA = "gomedia_h264_aac_ps.lenpfx.rtp"


def capture(name: str) -> Path:
    """Path of a shared capture; skips the calling test if the shared data folder or the file is missing."""
    path = DATA_DIR / name
    if not path.is_file():
        pytest.skip(f"shared capture {name} not found in {DATA_DIR} (the data folder beside the repository)")
    return path


@dataclass(frozen=True, slots=True)
class RtpPkt:
    marker: bool
    seq: int
    ts: int
    ssrc: int
    pt: int
    payload: bytes


def parse_rtp_packet(pkt: bytes) -> RtpPkt:
    """RFC 3550 §5.1 header with CSRCs, extension and padding handled (test-side, struct only)."""
    b0, b1, seq, ts, ssrc = struct.unpack_from(">BBHII", pkt)
    off = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        off += 4 + 4 * struct.unpack_from(">H", pkt, off + 2)[0]
    end = len(pkt) - (pkt[-1] if b0 & 0x20 else 0)
    return RtpPkt(bool(b1 & 0x80), seq, ts, ssrc, b1 & 0x7F, pkt[off:end])


def lenpfx_frames(data: bytes) -> Iterator[bytes]:
    i = 0
    while i + 2 <= len(data):
        n = struct.unpack_from(">H", data, i)[0]
        yield data[i + 2 : i + 2 + n]
        i += 2 + n


@functools.cache
def rtp_packets(name: str) -> tuple[RtpPkt, ...]:
    """The RTP packets of a ``*.lenpfx.rtp`` capture (skips if absent)."""
    return tuple(parse_rtp_packet(p) for p in lenpfx_frames(capture(name).read_bytes()))


def ps_bytes(name: str) -> bytes:
    """A raw PS capture, or the concatenated RTP payloads of a ``*.lenpfx.rtp`` capture."""
    if name.endswith(".lenpfx.rtp"):
        return b"".join(p.payload for p in rtp_packets(name))
    return capture(name).read_bytes()


# -- test media with PyAV ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    data: bytes  # Annex B access unit
    pts: int  # 90 kHz
    dts: int  # 90 kHz
    keyframe: bool


def have_encoder(name: str) -> bool:
    import av

    return name in av.codecs_available


def _frames(width: int, height: int, count: int) -> Iterator[object]:
    import av
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(count):
        img = np.zeros((height, width, 3), dtype=np.uint8)
        img[..., 0] = (xx * 255 // max(width - 1, 1) + 7 * i) % 256
        img[..., 1] = (yy * 255 // max(height - 1, 1) + 3 * i) % 256
        # a moving square, so that P/B frames have something to predict
        x0 = (i * 9) % max(width - 40, 1)
        img[20:60, x0 : x0 + 40, 2] = 255
        yield av.VideoFrame.from_ndarray(img, format="rgb24")


def _noise_frames(width: int, height: int, count: int) -> Iterator[object]:
    import av
    import numpy as np

    rng = np.random.default_rng(28181)
    for _ in range(count):
        yield av.VideoFrame.from_ndarray(
            rng.integers(0, 256, (height, width, 3), dtype=np.uint8), format="rgb24"
        )


@functools.cache
def encode_video(
    codec: str = "libx264",
    width: int = 320,
    height: int = 240,
    frames: int = 15,
    bframes: int = 0,
    gop: int = 10,
    fps: int = 25,
    pix_fmt: str = "yuv420p",
    preset: str = "ultrafast",
    extra: str = "",
    noise: bool = False,
) -> tuple[EncodedFrame, ...]:
    """Encode ``frames`` synthetic pictures; cached per session. Skips the test if the encoder is missing.

    ``extra``: more ``x264-params``/``x265-params`` (``k=v:k=v``). ``noise``: random pictures (huge frames).
    """
    import av

    if not have_encoder(codec):
        pytest.skip(f"PyAV has no {codec} encoder")
    ctx = av.CodecContext.create(codec, "w")
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = pix_fmt
    ctx.time_base = Fraction(1, fps)
    ctx.framerate = Fraction(fps, 1)
    ctx.gop_size = gop
    ctx.max_b_frames = bframes
    if codec == "libx264":
        params = [f"keyint={gop}", "scenecut=0", f"bframes={bframes}"]
        if bframes:
            params += ["b-adapt=0", "rc-lookahead=5"]
        opts = {"preset": preset, "x264-params": ":".join(params + ([extra] if extra else []))}
    else:
        params = [f"keyint={gop}", f"min-keyint={gop}", "scenecut=0", "log-level=error", f"bframes={bframes}"]
        if bframes == 0:
            params.append("rc-lookahead=0")
        opts = {"preset": preset, "x265-params": ":".join(params + ([extra] if extra else []))}
    if bframes == 0:
        opts["tune"] = "zerolatency"
    ctx.options = opts
    scale = 90000 // fps
    out: list[EncodedFrame] = []

    def collect(packets: Iterable[av.Packet]) -> None:
        for pkt in packets:
            assert pkt.pts is not None and pkt.dts is not None
            out.append(EncodedFrame(bytes(pkt), pkt.pts * scale, pkt.dts * scale, bool(pkt.is_keyframe)))

    pictures = _noise_frames(width, height, frames) if noise else _frames(width, height, frames)
    for i, frame in enumerate(pictures):
        frame.pts = i  # type: ignore[attr-defined]
        collect(ctx.encode(frame))  # type: ignore[arg-type]
    collect(ctx.encode(None))
    # B-frames make the first dts negative: shift so every timestamp is >= 0 (PES timestamps are unsigned).
    shift = -min(min(f.dts, f.pts) for f in out)
    if shift > 0:
        out = [EncodedFrame(f.data, f.pts + shift, f.dts + shift, f.keyframe) for f in out]
    return tuple(out)


def decode_video(codec: str, access_units: Iterable[bytes]) -> tuple[list[tuple[int, int]], int]:
    """Decode Annex B access units with PyAV (``h264`` or ``hevc``): (frame sizes, decoder errors)."""
    import av

    ctx = av.CodecContext.create(codec, "r")
    sizes: list[tuple[int, int]] = []
    errors = 0
    for data in access_units:
        try:
            for frame in ctx.decode(av.Packet(data)):
                sizes.append((frame.width, frame.height))
        except av.error.FFmpegError:
            errors += 1
    try:
        for frame in ctx.decode(None):
            sizes.append((frame.width, frame.height))
    except av.error.FFmpegError:
        errors += 1
    return sizes, errors


# -- bitstream construction ----------------------------------------------------------------------------------------


class BitWriter:
    """MSB-first bit writer with Exp-Golomb codes, to build parameter sets field by field."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> BitWriter:
        self.bits.extend((value >> (n - 1 - i)) & 1 for i in range(n))
        return self

    def flag(self, value: bool) -> BitWriter:
        return self.u(1, int(value))

    def ue(self, value: int) -> BitWriter:
        code = value + 1
        return self.u(code.bit_length() - 1, 0).u(code.bit_length(), code)

    def se(self, value: int) -> BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        """The bits with rbsp_trailing_bits (a 1, then zeros to a byte boundary)."""
        bits = [*self.bits, 1]
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def escape_rbsp(rbsp: bytes) -> bytes:
    """Insert emulation prevention bytes (H.264 §7.4.1): 00 00 0x (x <= 3) -> 00 00 03 0x."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


# -- PS test streams -----------------------------------------------------------------------------------------------


def mux_video(frames: Iterable[EncodedFrame], codec_name: str = "H264") -> list[bytes]:
    """One PS run per frame from our ``PsMuxer`` (pack, [system header + PSM before keyframes], PES)."""
    from media.frames import AccessUnit, Codec
    from media.psmux import PsMuxer

    codec = Codec[codec_name]
    muxer = PsMuxer(codec)
    return [muxer.mux(AccessUnit(codec, f.pts, f.dts, f.keyframe, f.data)) for f in frames]


def split_payloads(ps_frames: Iterable[bytes], size: int) -> list[tuple[bytes, bool, int]]:
    """Cut each frame's PS into RTP-payload-sized chunks: ``(payload, marker, frame index)``."""
    out: list[tuple[bytes, bool, int]] = []
    for i, ps in enumerate(ps_frames):
        chunks = [ps[j : j + size] for j in range(0, len(ps), size)] or [b""]
        out.extend((c, k == len(chunks) - 1, i) for k, c in enumerate(chunks))
    return out
