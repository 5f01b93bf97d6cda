"""media.h264: Annex B splitting, NAL types, SPS parsing (resolution, cropping, chroma formats, VUI), keyframes,
B-frame detection and profile-level-id, on PyAV-encoded streams and on hand-built parameter sets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from media_util import BitWriter, encode_video, escape_rbsp

from media import h264
from media.h264 import BitReader, BitstreamError, NalType

# -- Annex B -------------------------------------------------------------------------------------------------------


def test_split_annexb_3_and_4_byte_start_codes() -> None:
    data = b"junk\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce\x00\x00\x00\x00\x01\x65\x88\x84\x00\x00\x01\x06\x05"
    nals = h264.split_annexb(data)
    assert [bytes(n) for n in nals] == [b"\x67\x42", b"\x68\xce", b"\x65\x88\x84", b"\x06\x05"]
    assert all(n.obj is data for n in nals)  # views, not copies


def test_split_annexb_edge_cases() -> None:
    assert h264.split_annexb(b"") == []
    assert h264.split_annexb(b"\x65\x88") == []  # no start code at all
    assert h264.split_annexb(b"\x00\x00\x01") == []  # an empty NAL unit is skipped
    assert [bytes(n) for n in h264.split_annexb(b"\x00\x00\x01\x00\x00\x01\x09\xf0")] == [b"\x09\xf0"]
    assert [bytes(n) for n in h264.split_annexb(memoryview(b"\x00\x00\x01\x41\x9a"))] == [b"\x41\x9a"]
    assert [bytes(n) for n in h264.split_annexb(bytearray(b"\x00\x00\x01\x41\x9a\x00\x00"))] == [b"\x41\x9a"]


def test_nal_types_of_an_encoded_stream() -> None:
    frames = encode_video("libx264")
    first = h264.nal_types(frames[0].data)
    assert first[:2] == [NalType.SPS, NalType.PPS] and NalType.IDR in first
    assert all(set(h264.nal_types(f.data)) <= {NalType.SLICE} for f in frames[1:] if not f.keyframe)
    assert h264.nal_type(b"\x65\x88") == 5


def test_keyframe_detection_matches_the_encoder() -> None:
    frames = encode_video("libx264", frames=25, gop=10)
    assert [f.keyframe for f in frames].count(True) == 3
    for f in frames:
        assert h264.contains_idr(f.data) == f.keyframe
        assert h264.is_keyframe(f.data) == f.keyframe


def test_keyframe_includes_sps_before_a_non_idr_i_frame() -> None:
    au = b"\x00\x00\x00\x01\x67\x4d\x00\x1e\x00\x00\x01\x41\x9a"
    assert h264.is_keyframe(au) and not h264.contains_idr(au)


def test_parameter_sets() -> None:
    frames = encode_video("libx264")
    sps, pps = h264.parameter_sets(frames[0].data)
    assert sps is not None and sps[0] & 0x1F == 7
    assert pps is not None and pps[0] & 0x1F == 8
    assert h264.parameter_sets(frames[1].data) == (None, None)


# -- SPS -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height"), [(320, 240), (352, 288), (640, 360), (176, 144), (322, 242), (1280, 720)]
)
def test_sps_resolution_of_encoded_streams(width: int, height: int) -> None:
    frames = encode_video("libx264", width=width, height=height, frames=2)
    sps, _ = h264.parameter_sets(frames[0].data)
    assert sps is not None
    assert h264.resolution(sps) == (width, height)


@pytest.mark.parametrize(
    ("pix_fmt", "profile", "chroma"), [("yuv420p", 100, 1), ("yuv422p", 122, 2), ("yuv444p", 244, 3)]
)
def test_sps_high_profiles_with_cropping(pix_fmt: str, profile: int, chroma: int) -> None:
    # 322x242 is not a multiple of 16: cropping in chroma units that differ per format (Table 6-1).
    frames = encode_video("libx264", width=322, height=242, frames=2, pix_fmt=pix_fmt, preset="medium")
    sps, _ = h264.parameter_sets(frames[0].data)
    assert sps is not None
    info = h264.parse_sps(sps)
    assert (info.profile_idc, info.chroma_format_idc) == (profile, chroma)
    assert (info.width, info.height) == (322, 242)
    assert info.bit_depth_luma == info.bit_depth_chroma == 8
    assert info.fps == 25.0


def _sps(
    *,
    profile: int = 100,
    chroma: int = 1,
    separate_planes: bool = False,
    width_mbs: int = 20,
    height_units: int = 15,
    frame_mbs_only: bool = True,
    crop: tuple[int, int, int, int] | None = None,
    poc_type: int = 0,
    scaling: bool = False,
    vui: bool = False,
    reorder: int = 0,
    hrd: bool = False,
) -> bytes:
    w = BitWriter().u(8, profile).u(8, 0).u(8, 40).ue(0)
    if profile in (100, 110, 122, 244):
        w.ue(chroma)
        if chroma == 3:
            w.flag(separate_planes)
        w.ue(0).ue(0).flag(False).flag(scaling)
        if scaling:
            for i in range(8 if chroma != 3 else 12):
                w.flag(i % 2 == 0)
                if i % 2 == 0:
                    for _ in range(16 if i < 6 else 64):
                        w.se(1)  # a delta that keeps nextScale non-zero (8, 9, 10, ...)
    w.ue(0).ue(poc_type)
    if poc_type == 0:
        w.ue(2)
    elif poc_type == 1:
        w.flag(False).se(-1).se(2).ue(3).se(1).se(-2).se(3)
    w.ue(1).flag(False).ue(width_mbs - 1).ue(height_units - 1).flag(frame_mbs_only)
    if not frame_mbs_only:
        w.flag(True)
    w.flag(True).flag(crop is not None)
    if crop is not None:
        for c in crop:
            w.ue(c)
    w.flag(vui)
    if vui:
        w.flag(True).u(8, 255).u(16, 4).u(16, 3)  # Extended_SAR
        w.flag(False).flag(True).u(3, 5).flag(False).flag(True).u(8, 1).u(8, 1).u(8, 1)
        w.flag(False)  # chroma_loc_info_present_flag
        w.flag(True).u(32, 1).u(32, 60).flag(True)  # timing: 30 fps
        for _ in range(2):  # nal_hrd, vcl_hrd
            w.flag(hrd)
            if hrd:
                w.ue(1).u(4, 0).u(4, 0)
                for _ in range(2):
                    w.ue(1000).ue(2000).flag(False)
                w.u(5, 23).u(5, 23).u(5, 23).u(5, 24)
        if hrd:
            w.flag(False)
        w.flag(False).flag(True)  # pic_struct_present, bitstream_restriction
        w.flag(True).ue(2).ue(1).ue(16).ue(16).ue(reorder).ue(4)
    return b"\x67" + escape_rbsp(w.rbsp())


def test_hand_built_sps_with_field_coding_and_cropping() -> None:
    # 1920x1080 interlaced: 34 map units of 32 lines = 1088; CropUnitY = SubHeightC * 2 = 4, so 2 units = 8 lines.
    info = h264.parse_sps(_sps(width_mbs=120, height_units=34, frame_mbs_only=False, crop=(0, 0, 0, 2)))
    assert (info.width, info.height) == (1920, 1080)
    assert not info.frame_mbs_only


@pytest.mark.parametrize(
    ("chroma", "separate", "crop", "expected"),
    [
        (1, False, (1, 2, 3, 4), (320 - 2 * 3, 240 - 2 * 7)),
        (2, False, (1, 2, 3, 4), (320 - 2 * 3, 240 - 1 * 7)),
        (3, False, (1, 2, 3, 4), (320 - 3, 240 - 7)),
        (3, True, (1, 2, 3, 4), (320 - 3, 240 - 7)),  # ChromaArrayType 0
        (0, False, (1, 2, 3, 4), (320 - 3, 240 - 7)),  # monochrome
    ],
)
def test_hand_built_sps_crop_units(
    chroma: int, separate: bool, crop: tuple[int, int, int, int], expected: tuple[int, int]
) -> None:
    info = h264.parse_sps(_sps(chroma=chroma, separate_planes=separate, crop=crop))
    assert (info.width, info.height) == expected
    assert info.chroma_format_idc == chroma


def test_hand_built_sps_scaling_lists_poc_type_1_and_vui() -> None:
    info = h264.parse_sps(_sps(scaling=True, poc_type=1, vui=True, reorder=2, hrd=True))
    assert (info.width, info.height) == (320, 240)
    assert info.pic_order_cnt_type == 1
    assert info.fps == 30.0
    assert info.max_num_reorder_frames == 2
    assert h264.sps_allows_b_frames(info) is True
    info = h264.parse_sps(_sps(chroma=3, scaling=True, vui=True, reorder=0))
    assert info.max_num_reorder_frames == 0 and h264.sps_allows_b_frames(info) is False


def test_main_profile_sps_without_chroma_fields() -> None:
    info = h264.parse_sps(_sps(profile=77, crop=(0, 0, 0, 4)))
    assert (info.profile_idc, info.chroma_format_idc, info.width, info.height) == (77, 1, 320, 232)
    assert h264.sps_allows_b_frames(info) is None  # no VUI: the SPS does not say


def test_sps_errors_are_value_errors() -> None:
    with pytest.raises(BitstreamError, match="not an SPS"):
        h264.parse_sps(b"\x68\xce\x38\x80")
    good = _sps(vui=True)
    # Every truncation either parses (the VUI tolerates being cut) or raises BitstreamError, nothing else.
    for n in range(len(good)):
        try:
            h264.parse_sps(good[:n])
        except BitstreamError:
            pass
    with pytest.raises(BitstreamError, match="cropping exceeds"):
        h264.parse_sps(_sps(crop=(100, 100, 0, 0)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_sps_parser_raises_only_value_errors(data: bytes) -> None:
    try:
        h264.parse_sps(b"\x67" + data)
    except ValueError:
        pass


# -- bit reader ----------------------------------------------------------------------------------------------------


def test_bit_reader_exp_golomb() -> None:
    w = BitWriter()
    values = [0, 1, 2, 3, 7, 8, 255, 65535, 2**31 - 2]
    for v in values:
        w.ue(v)
    for v in (0, 1, -1, 5, -5, 1000):
        w.se(v)
    w.u(5, 0b10110)
    r = BitReader(w.rbsp())
    assert [r.ue() for _ in values] == values
    assert [r.se() for _ in range(6)] == [0, 1, -1, 5, -5, 1000]
    assert r.u(5) == 0b10110
    assert r.flag()  # the stop bit
    with pytest.raises(BitstreamError):
        r.u(8)
    with pytest.raises(BitstreamError):
        BitReader(b"\x00\x00").ue()
    with pytest.raises(BitstreamError, match="longer than 32"):
        BitReader(bytes(5) + b"\xff").ue()


def test_unescape_rbsp() -> None:
    assert h264.unescape_rbsp(b"\x00\x00\x03\x01\x00\x00\x03\x00\x00\x03") == b"\x00\x00\x01\x00\x00\x00\x00"
    assert h264.unescape_rbsp(b"\x00\x00\x03\x03") == b"\x00\x00\x03"
    raw = bytes(range(4)) * 10 + bytes(20)
    assert h264.unescape_rbsp(escape_rbsp(raw)) == raw


# -- B-frames, slices, profile-level-id ----------------------------------------------------------------------------


def test_b_frame_detection() -> None:
    plain = encode_video("libx264", frames=20, bframes=0)
    with_b = encode_video("libx264", frames=20, bframes=2)
    assert not h264.has_b_frames(f.data for f in plain)
    assert h264.has_b_frames(f.data for f in with_b)
    assert any(h264.frame_has_b_slices(f.data) for f in with_b)
    assert not any(h264.frame_has_b_slices(f.data) for f in with_b if f.keyframe)
    # B frames show up as pts != dts; the SPS announces the reordering
    assert any(f.pts != f.dts for f in with_b) and all(f.pts == f.dts for f in plain)
    sps_plain = h264.parse_sps(h264.parameter_sets(plain[0].data)[0] or b"")
    sps_b = h264.parse_sps(h264.parameter_sets(with_b[0].data)[0] or b"")
    assert h264.sps_allows_b_frames(sps_plain) is False
    assert h264.sps_allows_b_frames(sps_b) is True


def test_slice_types() -> None:
    frames = encode_video("libx264", frames=20, bframes=2)
    types = set()
    for f in frames:
        for nal in h264.split_annexb(f.data):
            st_ = h264.slice_type(nal)
            if nal[0] & 0x1F == NalType.IDR:
                assert st_ == 2
            if st_ is not None:
                types.add(st_)
    assert types == {0, 1, 2}
    assert h264.slice_type(b"\x67\x42") is None
    assert h264.slice_type(b"\x41") is None


def test_profile_level_id() -> None:
    frames = encode_video("libx264")  # ultrafast: Constrained Baseline
    sps = h264.parameter_sets(frames[0].data)[0]
    assert sps is not None
    assert h264.profile_level_id(sps) == "42c00d" == h264.parse_sps(sps).profile_level_id
    high = encode_video("libx264", frames=2, preset="medium", pix_fmt="yuv420p", width=640, height=360)
    sps = h264.parameter_sets(high[0].data)[0]
    assert sps is not None
    assert h264.profile_level_id(sps) == "64001e"
    assert h264.profile_level_id(b"\x67\x4d\x00\x1e\x9d") == "4d001e"  # the Hikvision capture's SPS
    with pytest.raises(BitstreamError):
        h264.profile_level_id(b"\x67\x42")
