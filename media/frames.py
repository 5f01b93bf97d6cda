"""Access units and codec identities shared by every media core.

Theory of operation
-------------------
Demuxers (``media.ps``) turn a byte stream into ``AccessUnit``s, one per video frame or audio frame; muxers and
packetizers (``media.psmux``, RTSP/WebRTC egress later) turn them back into bytes. An access unit is created once
per frame, not per packet, so it is a frozen slots dataclass (STYLE.md §4).

* Video ``data`` is an Annex B byte stream (start codes included, ISO/IEC 14496-10 Annex B / ITU-T H.265
  Annex B), exactly as carried in the PES payloads: nothing is added or removed.
* Audio ``data`` is the PES payload: G.711 samples, or one or more AAC frames with their ADTS headers.
* ``pts``/``dts`` are 33-bit 90 kHz values as they appear in the PES header (ISO/IEC 13818-1 §2.4.3.7); they wrap
  every 26.5 hours and are not unwrapped here. ``dts`` equals ``pts`` when the PES carries no DTS. ``None`` means
  the stream gave no timestamp for this frame.

``Codec`` is the internal identity; ``StreamType`` holds the wire codes of the program stream map
(ISO/IEC 13818-1 §2.4.4.10 Table 2-34, plus the GB/T 28181-2016 附录 C private assignments 0x80..0x9B).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

__all__ = ["AccessUnit", "Codec", "StreamType"]


class StreamType(IntEnum):
    """PSM ``stream_type`` codes used by GB/T 28181 (ISO/IEC 13818-1 Table 2-34; GB/T 28181-2016 附录 C)."""

    MPEG4 = 0x10
    H264 = 0x1B
    H265 = 0x24
    SVAC_VIDEO = 0x80
    AAC = 0x0F
    G711A = 0x90
    G711U = 0x91
    G722 = 0x92
    G723 = 0x93
    G729 = 0x99
    SVAC_AUDIO = 0x9B


class Codec(Enum):
    """A media codec. ``stream_type`` maps it to the PSM code, ``from_stream_type`` back."""

    H264 = "H264"
    H265 = "H265"
    MPEG4 = "MPEG4"
    SVAC = "SVAC"
    AAC = "AAC"
    G711A = "G711A"
    G711U = "G711U"
    G722 = "G722"
    G723 = "G723"
    G729 = "G729"
    SVAC_AUDIO = "SVAC_AUDIO"

    @property
    def is_video(self) -> bool:
        return self in _VIDEO

    @property
    def is_audio(self) -> bool:
        return self not in _VIDEO

    @property
    def stream_type(self) -> StreamType:
        """The PSM stream type for this codec."""
        return _TO_STREAM_TYPE[self]

    @classmethod
    def from_stream_type(cls, stream_type: int) -> Codec | None:
        """The codec of a PSM ``stream_type``, or ``None`` for a type GB/T 28181 does not use."""
        return _FROM_STREAM_TYPE.get(stream_type)


_VIDEO = frozenset({Codec.H264, Codec.H265, Codec.MPEG4, Codec.SVAC})
_TO_STREAM_TYPE: dict[Codec, StreamType] = {
    Codec.H264: StreamType.H264,
    Codec.H265: StreamType.H265,
    Codec.MPEG4: StreamType.MPEG4,
    Codec.SVAC: StreamType.SVAC_VIDEO,
    Codec.AAC: StreamType.AAC,
    Codec.G711A: StreamType.G711A,
    Codec.G711U: StreamType.G711U,
    Codec.G722: StreamType.G722,
    Codec.G723: StreamType.G723,
    Codec.G729: StreamType.G729,
    Codec.SVAC_AUDIO: StreamType.SVAC_AUDIO,
}
#: Plain ``int`` keys so a lookup with a raw byte from the wire needs no enum conversion.
_FROM_STREAM_TYPE: dict[int, Codec] = {int(st): codec for codec, st in _TO_STREAM_TYPE.items()}


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One video frame (Annex B) or one audio PES payload, with 90 kHz timestamps (see the module docstring)."""

    codec: Codec
    pts: int | None
    dts: int | None
    keyframe: bool
    data: bytes

    def __repr__(self) -> str:  # the payload would flood test output
        return (
            f"AccessUnit(codec={self.codec.name}, pts={self.pts}, dts={self.dts}, keyframe={self.keyframe}, "
            f"size={len(self.data)})"
        )
