"""H.265 / HEVC helpers: NAL types, VPS/SPS/PPS extraction, SPS parsing, IRAP and B-slice detection.

Theory of operation
-------------------
Annex B framing is the same as H.264's (ITU-T H.265 Annex B), so ``split_annexb`` and the RBSP ``BitReader``
come from ``media.h264``. Differences that matter here:

* The NAL unit header is two bytes (§7.3.1.2): ``forbidden_zero_bit``, 6-bit ``nal_unit_type``, 6-bit
  ``nuh_layer_id``, 3-bit ``nuh_temporal_id_plus1``. The type is ``(byte0 >> 1) & 0x3F``.
* Random access points are the IRAP pictures, types 16..23 (BLA, IDR, CRA; §7.4.2.2); those are keyframes.
* The SPS (§7.3.2.2) starts with ``profile_tier_level`` (§7.3.3), whose size depends on
  ``sps_max_sub_layers_minus1`` and on per-sub-layer presence flags: 88 bits of general profile data, the level,
  2 flag bits per sub-layer, alignment to 8 sub-layers, then 88/8 bits per present sub-layer profile/level.
  The picture size is ``pic_width/height_in_luma_samples`` minus the conformance window, counted in chroma units
  (SubWidthC/SubHeightC, Table 6-1).
* B slices: ``slice_type == 0`` (Table 7-7). The slice header of the first segment of a picture needs only
  ``num_extra_slice_header_bits`` from the PPS to reach ``slice_type``; that is what ``slice_type`` parses.
  HEVC low-delay configurations can use B slices that only reference past pictures, so for "does this stream
  reorder frames" prefer ``SpsInfo.max_num_reorder_pics`` (``sps_max_num_reorder_pics`` of the highest sub-layer).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from .h264 import BitReader, BitstreamError, split_annexb, unescape_rbsp

__all__ = [
    "NalType",
    "SpsInfo",
    "frame_has_b_slices",
    "has_b_frames",
    "is_irap",
    "is_keyframe",
    "nal_type",
    "nal_types",
    "parameter_sets",
    "parse_pps_extra_bits",
    "parse_sps",
    "resolution",
    "slice_type",
    "split_annexb",
]


class NalType(IntEnum):
    """``nal_unit_type`` (ITU-T H.265 Table 7-1), the ones the gateway looks at."""

    TRAIL_N = 0
    TRAIL_R = 1
    TSA_N = 2
    TSA_R = 3
    STSA_N = 4
    STSA_R = 5
    RADL_N = 6
    RADL_R = 7
    RASL_N = 8
    RASL_R = 9
    BLA_W_LP = 16
    BLA_W_RADL = 17
    BLA_N_LP = 18
    IDR_W_RADL = 19
    IDR_N_LP = 20
    CRA = 21
    VPS = 32
    SPS = 33
    PPS = 34
    AUD = 35
    EOS = 36
    EOB = 37
    FD = 38
    PREFIX_SEI = 39
    SUFFIX_SEI = 40


def nal_type(nal: bytes | memoryview) -> int:
    """``nal_unit_type`` of a NAL unit (H.265 §7.3.1.2)."""
    return (nal[0] >> 1) & 0x3F


def nal_types(au: bytes | bytearray | memoryview) -> list[int]:
    """The NAL unit types of an Annex B access unit, in order."""
    return [(nal[0] >> 1) & 0x3F for nal in split_annexb(au)]


def is_irap(t: int) -> bool:
    """IRAP picture types 16..23 (BLA, IDR, CRA and reserved IRAP types)."""
    return 16 <= t <= 23


def is_keyframe(au: bytes | bytearray | memoryview) -> bool:
    """True if the access unit holds an IRAP picture."""
    return any(16 <= t <= 23 for t in nal_types(au))


def parameter_sets(au: bytes | bytearray | memoryview) -> tuple[bytes | None, bytes | None, bytes | None]:
    """The first VPS, SPS and PPS NAL units (2-byte header included, no start code) found in ``au``."""
    found: dict[int, bytes] = {}
    for nal in split_annexb(au):
        t = (nal[0] >> 1) & 0x3F
        if t in (NalType.VPS, NalType.SPS, NalType.PPS) and t not in found:
            found[t] = bytes(nal)
    return found.get(NalType.VPS), found.get(NalType.SPS), found.get(NalType.PPS)


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """The fields of an H.265 SPS that the gateway uses."""

    profile_idc: int
    tier: int
    level_idc: int
    sps_id: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int
    #: ``sps_max_num_reorder_pics`` of the highest temporal sub-layer: > 0 means frames are reordered.
    max_num_reorder_pics: int


_SUB_WH = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}


def _skip_profile_tier_level(r: BitReader, max_sub_layers_minus1: int) -> tuple[int, int, int]:
    """H.265 §7.3.3 with profilePresentFlag = 1. Returns (general_profile_idc, tier, general_level_idc)."""
    r.skip(2)  # general_profile_space
    tier = r.u(1)
    profile_idc = r.u(5)
    r.skip(32 + 48)  # general_profile_compatibility_flags, source/constraint flags
    level_idc = r.u(8)
    profile_present: list[bool] = []
    level_present: list[bool] = []
    for _ in range(max_sub_layers_minus1):
        profile_present.append(r.flag())
        level_present.append(r.flag())
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for i in range(max_sub_layers_minus1):
        if profile_present[i]:
            r.skip(88)
        if level_present[i]:
            r.skip(8)
    return profile_idc, tier, level_idc


def parse_sps(nal: bytes | memoryview) -> SpsInfo:
    """Parse an H.265 SPS NAL unit (2-byte header included, no start code). Raises ``BitstreamError``."""
    if len(nal) < 4 or (nal[0] >> 1) & 0x3F != NalType.SPS:
        raise BitstreamError("not an H.265 SPS NAL unit")
    r = BitReader(unescape_rbsp(nal[2:]))
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    if max_sub_layers_minus1 > 6:
        raise BitstreamError("sps_max_sub_layers_minus1 out of range")
    r.skip(1)  # sps_temporal_id_nesting_flag
    profile_idc, tier, level_idc = _skip_profile_tier_level(r, max_sub_layers_minus1)
    sps_id = r.ue()
    if sps_id > 15:
        raise BitstreamError("sps_seq_parameter_set_id out of range")
    chroma_format_idc = r.ue()
    if chroma_format_idc > 3:
        raise BitstreamError("chroma_format_idc out of range")
    separate_colour_plane = chroma_format_idc == 3 and r.flag()
    width = r.ue()
    height = r.ue()
    if r.flag():  # conformance_window_flag (H.265 §7.4.3.2.1)
        sub_w, sub_h = _SUB_WH[0 if separate_colour_plane else chroma_format_idc]
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    if width <= 0 or height <= 0:
        raise BitstreamError("conformance window exceeds the picture")
    bit_depth_luma = r.ue() + 8
    bit_depth_chroma = r.ue() + 8
    r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    reorder = 0
    first = 0 if r.flag() else max_sub_layers_minus1  # sps_sub_layer_ordering_info_present_flag
    for _ in range(first, max_sub_layers_minus1 + 1):
        r.ue()  # sps_max_dec_pic_buffering_minus1
        reorder = r.ue()  # sps_max_num_reorder_pics (the last one read is the highest sub-layer's)
        r.ue()  # sps_max_latency_increase_plus1
    return SpsInfo(
        profile_idc=profile_idc,
        tier=tier,
        level_idc=level_idc,
        sps_id=sps_id,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        width=width,
        height=height,
        max_num_reorder_pics=reorder,
    )


def resolution(sps: bytes | memoryview) -> tuple[int, int]:
    """``(width, height)`` after the conformance window, from an SPS NAL unit. Raises ``BitstreamError``."""
    info = parse_sps(sps)
    return info.width, info.height


def parse_pps_extra_bits(pps: bytes | memoryview) -> tuple[int, int]:
    """``(pps_pic_parameter_set_id, num_extra_slice_header_bits)`` of a PPS NAL unit (H.265 §7.3.2.3.1)."""
    r = BitReader(unescape_rbsp(pps[2:16]))
    pps_id = r.ue()
    r.ue()  # pps_seq_parameter_set_id
    r.skip(2)  # dependent_slice_segments_enabled_flag, output_flag_present_flag
    return pps_id, r.u(3)


def slice_type(nal: bytes | memoryview, num_extra_slice_header_bits: int = 0) -> int | None:
    """``slice_type`` (0 B, 1 P, 2 I) of the first slice segment of a picture; ``None`` for non-VCL NAL units
    and for later segments (whose header needs the SPS/PPS to parse)."""
    t = (nal[0] >> 1) & 0x3F
    if t > 31 or len(nal) < 3:
        return None
    r = BitReader(unescape_rbsp(nal[2:18]))
    if not r.flag():  # first_slice_segment_in_pic_flag
        return None
    if 16 <= t <= 23:
        r.skip(1)  # no_output_of_prior_pics_flag
    r.ue()  # slice_pic_parameter_set_id
    r.skip(num_extra_slice_header_bits)  # slice_reserved_flag[i]
    st = r.ue()
    if st > 2:
        raise BitstreamError("slice_type out of range")
    return st


def frame_has_b_slices(au: bytes | bytearray | memoryview, num_extra_slice_header_bits: int = 0) -> bool:
    """True if the first slice segment of a picture in this access unit is a B slice (slice_type 0).

    A PPS inside ``au`` overrides ``num_extra_slice_header_bits``.
    """
    extra = num_extra_slice_header_bits
    for nal in split_annexb(au):
        t = (nal[0] >> 1) & 0x3F
        try:
            if t == NalType.PPS:
                extra = parse_pps_extra_bits(nal)[1]
            elif t <= 31 and slice_type(nal, extra) == 0:
                return True
        except BitstreamError:
            continue
    return False


def has_b_frames(aus: Iterable[bytes | bytearray | memoryview]) -> bool:
    """True if any access unit carries a B slice (PPS ``num_extra_slice_header_bits`` tracked across AUs)."""
    extra = 0
    for au in aus:
        for nal in split_annexb(au):
            t = (nal[0] >> 1) & 0x3F
            try:
                if t == NalType.PPS:
                    extra = parse_pps_extra_bits(nal)[1]
                elif t <= 31 and slice_type(nal, extra) == 0:
                    return True
            except BitstreamError:
                continue
    return False
