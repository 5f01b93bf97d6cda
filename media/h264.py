"""H.264 / AVC helpers: Annex B splitting, NAL types, SPS parsing, keyframe and B-frame detection.

Theory of operation
-------------------
* **Annex B** (ITU-T H.264 Annex B): NAL units are separated by ``00 00 01`` start codes, optionally preceded by a
  zero byte (the 4-byte form ``00 00 00 01``). Emulation prevention (§7.4.1) guarantees that ``00 00 0x`` (x <= 3)
  never occurs inside a NAL unit, so ``bytes.find(b"\\x00\\x00\\x01")`` finds exactly the boundaries, and a NAL
  unit never ends with a zero byte (trailing zeros belong to the next 4-byte start code or are
  ``trailing_zero_8bits``). ``split_annexb`` returns zero-copy ``memoryview``s into the input.
* **RBSP**: headers are parsed after removing emulation prevention bytes (``00 00 03`` -> ``00 00``;
  ``bytes.replace`` does it correctly because the escaped stream never contains ``00 00 00``).
* **BitReader** reads fixed-width and Exp-Golomb codes (§9.1) from an ``int`` holding the whole RBSP. It raises
  ``BitstreamError`` (a ``ValueError``) when the data runs out or a code is absurd; callers that must not raise
  (the PS demuxer) catch ``ValueError``.
* **SPS** (§7.3.2.1.1): resolution from ``pic_width_in_mbs``/``pic_height_in_map_units`` minus the frame
  cropping (in chroma units, Table 6-1), chroma format and bit depth for the high profiles, and from the VUI
  (Annex E) the frame rate and ``max_num_reorder_frames`` (a B-frame hint).
* **Keyframes**: an access unit with an IDR slice (type 5) or an SPS (cameras that repeat the SPS before a
  recovery-point I frame) is a keyframe.
* **B-frames**: slice_type 1 or 6 in a slice header (§7.3.3, Table 7-6), or an SPS whose VUI says
  ``max_num_reorder_frames > 0``; Baseline profile (66) has no B slices at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "BitReader",
    "BitstreamError",
    "NalType",
    "SpsInfo",
    "contains_idr",
    "frame_has_b_slices",
    "has_b_frames",
    "is_keyframe",
    "nal_type",
    "nal_types",
    "parameter_sets",
    "parse_sps",
    "profile_level_id",
    "resolution",
    "slice_type",
    "sps_allows_b_frames",
    "split_annexb",
    "unescape_rbsp",
]

_START = b"\x00\x00\x01"


class NalType(IntEnum):
    """``nal_unit_type`` (ITU-T H.264 Table 7-1)."""

    SLICE = 1
    DPA = 2
    DPB = 3
    DPC = 4
    IDR = 5
    SEI = 6
    SPS = 7
    PPS = 8
    AUD = 9
    END_OF_SEQ = 10
    END_OF_STREAM = 11
    FILLER = 12
    SPS_EXT = 13
    PREFIX = 14
    SUBSET_SPS = 15


class BitstreamError(ValueError):
    """A parameter set or slice header is truncated or malformed."""


class BitReader:
    """MSB-first bit reader with Exp-Golomb codes (H.264 §9.1) over an RBSP (no emulation prevention bytes)."""

    __slots__ = ("_value", "_size", "_pos")

    def __init__(self, rbsp: bytes) -> None:
        self._value = int.from_bytes(rbsp, "big")
        self._size = len(rbsp) * 8
        self._pos = 0

    @property
    def bits_left(self) -> int:
        return self._size - self._pos

    def u(self, n: int) -> int:
        """Read ``n`` bits as an unsigned integer (``u(n)``)."""
        end = self._pos + n
        if end > self._size:
            raise BitstreamError("bitstream exhausted")
        self._pos = end
        return (self._value >> (self._size - end)) & ((1 << n) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def skip(self, n: int) -> None:
        if self._pos + n > self._size:
            raise BitstreamError("bitstream exhausted")
        self._pos += n

    def ue(self) -> int:
        """Read an unsigned Exp-Golomb code (``ue(v)``)."""
        left = self._size - self._pos
        rest = self._value & ((1 << left) - 1)
        if rest == 0:
            raise BitstreamError("bitstream exhausted")
        zeros = left - rest.bit_length()
        if zeros > 31:
            raise BitstreamError("Exp-Golomb code longer than 32 bits")
        self._pos += zeros
        return self.u(zeros + 1) - 1

    def se(self) -> int:
        """Read a signed Exp-Golomb code (``se(v)``)."""
        k = self.ue()
        return (k + 1) >> 1 if k & 1 else -(k >> 1)


def unescape_rbsp(nal: bytes | memoryview) -> bytes:
    """The RBSP of a NAL unit: emulation prevention bytes (``00 00 03``) removed (H.264 §7.4.1)."""
    data = bytes(nal)
    return data.replace(b"\x00\x00\x03", b"\x00\x00") if b"\x00\x00\x03" in data else data


def split_annexb(data: bytes | bytearray | memoryview) -> list[memoryview]:
    """The NAL units of an Annex B byte stream, as views into ``data`` (start codes and trailing zeros removed).

    Bytes before the first start code are ignored. Both 3- and 4-byte start codes are accepted.
    """
    buf = data if isinstance(data, bytes | bytearray) else bytes(data)
    view = memoryview(buf)
    out: list[memoryview] = []
    find = buf.find
    i = find(_START)
    while i >= 0:
        start = i + 3
        i = find(_START, start)
        end = len(buf) if i < 0 else i
        while end > start and buf[end - 1] == 0:  # trailing_zero_8bits / the 4-byte start code's zero
            end -= 1
        if end > start:
            out.append(view[start:end])
    return out


def nal_type(nal: bytes | memoryview) -> int:
    """``nal_unit_type`` of a NAL unit (its first byte, H.264 §7.3.1)."""
    return nal[0] & 0x1F


def nal_types(au: bytes | bytearray | memoryview) -> list[int]:
    """The NAL unit types of an Annex B access unit, in order."""
    return [nal[0] & 0x1F for nal in split_annexb(au)]


def contains_idr(au: bytes | bytearray | memoryview) -> bool:
    """True if the access unit has an IDR slice (type 5)."""
    return NalType.IDR in nal_types(au)


def is_keyframe(au: bytes | bytearray | memoryview) -> bool:
    """True if a decoder can start at this access unit: an IDR slice, or an SPS (see the module docstring)."""
    types = nal_types(au)
    return NalType.IDR in types or NalType.SPS in types


def parameter_sets(au: bytes | bytearray | memoryview) -> tuple[bytes | None, bytes | None]:
    """The first SPS and PPS NAL units (header byte included, no start code) found in ``au``."""
    sps: bytes | None = None
    pps: bytes | None = None
    for nal in split_annexb(au):
        t = nal[0] & 0x1F
        if t == NalType.SPS and sps is None:
            sps = bytes(nal)
        elif t == NalType.PPS and pps is None:
            pps = bytes(nal)
    return sps, pps


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """The fields of a sequence parameter set that the gateway uses."""

    profile_idc: int
    constraint_flags: int
    level_idc: int
    sps_id: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int
    frame_mbs_only: bool
    pic_order_cnt_type: int
    max_num_ref_frames: int
    #: ``time_scale / (2 * num_units_in_tick)`` from the VUI timing info, if present.
    fps: float | None
    #: VUI ``bitstream_restriction``'s ``max_num_reorder_frames``, if present.
    max_num_reorder_frames: int | None

    @property
    def profile_level_id(self) -> str:
        """RFC 6184 §8.1 ``profile-level-id``: profile_idc, constraint flags and level_idc as 6 hex digits."""
        return f"{self.profile_idc:02x}{self.constraint_flags:02x}{self.level_idc:02x}"


# Profiles whose SPS carries chroma_format_idc, bit depths and scaling matrices (H.264 §7.3.2.1.1).
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# (SubWidthC, SubHeightC) by chroma_format_idc (H.264 Table 6-1); 0 = monochrome.
_SUB_WH = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}


def _skip_scaling_list(r: BitReader, size: int) -> None:
    last = 8
    nxt = 8
    for _ in range(size):  # H.264 §7.3.2.1.1.1
        if nxt:
            nxt = (last + r.se() + 256) % 256
        if nxt:
            last = nxt


def _skip_hrd(r: BitReader) -> None:
    cpb_cnt = r.ue() + 1  # H.264 §E.1.2
    if cpb_cnt > 32:
        raise BitstreamError("cpb_cnt_minus1 out of range")
    r.skip(8)  # bit_rate_scale, cpb_size_scale
    for _ in range(cpb_cnt):
        r.ue()
        r.ue()
        r.skip(1)
    r.skip(20)  # four 5-bit delay/offset lengths


def parse_sps(nal: bytes | memoryview) -> SpsInfo:
    """Parse an SPS NAL unit (header byte included, no start code). Raises ``BitstreamError``."""
    if len(nal) < 4 or nal[0] & 0x1F != NalType.SPS:
        raise BitstreamError("not an SPS NAL unit")
    r = BitReader(unescape_rbsp(nal[1:]))
    profile_idc = r.u(8)
    constraint_flags = r.u(8)
    level_idc = r.u(8)
    sps_id = r.ue()
    if sps_id > 31:
        raise BitstreamError("seq_parameter_set_id out of range")
    chroma_format_idc = 1
    separate_colour_plane = False
    bit_depth_luma = bit_depth_chroma = 8
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            raise BitstreamError("chroma_format_idc out of range")
        if chroma_format_idc == 3:
            separate_colour_plane = r.flag()
        bit_depth_luma = r.ue() + 8
        bit_depth_chroma = r.ue() + 8
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.flag():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.skip(1)  # delta_pic_order_always_zero_flag
        r.se()
        r.se()
        cycle = r.ue()
        if cycle > 255:
            raise BitstreamError("num_ref_frames_in_pic_order_cnt_cycle out of range")
        for _ in range(cycle):
            r.se()
    elif poc_type != 2:
        raise BitstreamError("pic_order_cnt_type out of range")
    max_num_ref_frames = r.ue()
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    crop = (0, 0, 0, 0)
    if r.flag():  # frame_cropping_flag
        crop = (r.ue(), r.ue(), r.ue(), r.ue())
    # H.264 §7.4.2.1.1: crop offsets count in CropUnitX/CropUnitY (Table 6-1 via ChromaArrayType).
    chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
    sub_w, sub_h = _SUB_WH[chroma_array_type]
    field_factor = 1 if frame_mbs_only else 2
    width = width_mbs * 16 - sub_w * (crop[0] + crop[1])
    height = field_factor * height_map_units * 16 - sub_h * field_factor * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        raise BitstreamError("frame cropping exceeds the picture")
    fps: float | None = None
    reorder: int | None = None
    if r.bits_left and r.flag():  # vui_parameters_present_flag
        fps, reorder = _parse_vui(r)
    return SpsInfo(
        profile_idc=profile_idc,
        constraint_flags=constraint_flags,
        level_idc=level_idc,
        sps_id=sps_id,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        width=width,
        height=height,
        frame_mbs_only=frame_mbs_only,
        pic_order_cnt_type=poc_type,
        max_num_ref_frames=max_num_ref_frames,
        fps=fps,
        max_num_reorder_frames=reorder,
    )


def _parse_vui(r: BitReader) -> tuple[float | None, int | None]:
    """Frame rate and max_num_reorder_frames from the VUI (H.264 §E.1.1); ``None`` for what is cut short."""
    fps: float | None = None
    try:
        if r.flag():  # aspect_ratio_info_present_flag
            if r.u(8) == 255:  # Extended_SAR
                r.skip(32)
        if r.flag():  # overscan_info_present_flag
            r.skip(1)
        if r.flag():  # video_signal_type_present_flag
            r.skip(4)
            if r.flag():  # colour_description_present_flag
                r.skip(24)
        if r.flag():  # chroma_loc_info_present_flag
            r.ue()
            r.ue()
        if r.flag():  # timing_info_present_flag
            units = r.u(32)
            scale = r.u(32)
            r.skip(1)
            if units:
                fps = scale / (2 * units)
        nal_hrd = r.flag()
        if nal_hrd:
            _skip_hrd(r)
        vcl_hrd = r.flag()
        if vcl_hrd:
            _skip_hrd(r)
        if nal_hrd or vcl_hrd:
            r.skip(1)  # low_delay_hrd_flag
        r.skip(1)  # pic_struct_present_flag
        if r.flag():  # bitstream_restriction_flag
            r.skip(1)
            for _ in range(4):
                r.ue()
            return fps, r.ue()  # max_num_reorder_frames
    except BitstreamError:
        pass  # a VUI cut short leaves what was read (some encoders truncate it)
    return fps, None


def resolution(sps: bytes | memoryview) -> tuple[int, int]:
    """``(width, height)`` in pixels after cropping, from an SPS NAL unit. Raises ``BitstreamError``."""
    info = parse_sps(sps)
    return info.width, info.height


def profile_level_id(sps: bytes | memoryview) -> str:
    """RFC 6184 ``profile-level-id`` (6 lowercase hex digits) of an SPS NAL unit."""
    if len(sps) < 4:
        raise BitstreamError("SPS too short")
    raw = unescape_rbsp(sps[1:5])
    return raw[:3].hex()


def slice_type(nal: bytes | memoryview) -> int | None:
    """``slice_type % 5`` (0 P, 1 B, 2 I, 3 SP, 4 SI; Table 7-6) of a slice NAL unit, ``None`` for other NALs."""
    t = nal[0] & 0x1F
    if t not in (NalType.SLICE, NalType.IDR, NalType.DPA) or len(nal) < 2:
        return None
    r = BitReader(unescape_rbsp(nal[1:16]))
    r.ue()  # first_mb_in_slice
    st = r.ue()
    if st > 9:
        raise BitstreamError("slice_type out of range")
    return st % 5


def frame_has_b_slices(au: bytes | bytearray | memoryview) -> bool:
    """True if a slice of this access unit is a B slice (slice_type 1 or 6)."""
    for nal in split_annexb(au):
        if nal[0] & 0x1F in (NalType.SLICE, NalType.DPA):
            try:
                if slice_type(nal) == 1:
                    return True
            except BitstreamError:
                continue
    return False


def sps_allows_b_frames(sps: SpsInfo) -> bool | None:
    """The SPS's hint: ``False`` for Baseline or ``max_num_reorder_frames == 0``, ``True`` if reordering is
    announced, ``None`` when the SPS does not say."""
    if sps.profile_idc == 66:
        return False
    if sps.max_num_reorder_frames is not None:
        return sps.max_num_reorder_frames > 0
    return None


def has_b_frames(aus: Iterable[bytes | bytearray | memoryview]) -> bool:
    """True if any access unit carries a B slice."""
    return any(frame_has_b_slices(au) for au in aus)
