"""media.h265: NAL types, VPS/SPS/PPS, SPS parsing (profile_tier_level with sub-layers, conformance window,
chroma formats), IRAP keyframes and B-slice detection, on libx265 streams and hand-built parameter sets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from media_util import BitWriter, encode_video, escape_rbsp

from media import h265
from media.h264 import BitstreamError
from media.h265 import NalType


def test_nal_types_and_parameter_sets() -> None:
    frames = encode_video("libx265")
    types = h265.nal_types(frames[0].data)
    assert types[:3] == [NalType.VPS, NalType.SPS, NalType.PPS]
    assert any(h265.is_irap(t) for t in types)
    vps, sps, pps = h265.parameter_sets(frames[0].data)
    assert vps is not None and h265.nal_type(vps) == NalType.VPS
    assert sps is not None and h265.nal_type(sps) == NalType.SPS
    assert pps is not None and h265.nal_type(pps) == NalType.PPS
    assert h265.parameter_sets(frames[1].data) == (None, None, None)
    assert h265.nal_type(b"\x26\x01") == NalType.IDR_W_RADL


def test_irap_keyframes_match_the_encoder() -> None:
    frames = encode_video("libx265", frames=25, gop=10)
    assert sum(f.keyframe for f in frames) == 3
    for f in frames:
        assert h265.is_keyframe(f.data) == f.keyframe


@pytest.mark.parametrize(("width", "height"), [(320, 240), (352, 288), (640, 360), (322, 242), (176, 144)])
def test_sps_resolution_of_encoded_streams(width: int, height: int) -> None:
    frames = encode_video("libx265", width=width, height=height, frames=2)
    sps = h265.parameter_sets(frames[0].data)[1]
    assert sps is not None
    assert h265.resolution(sps) == (width, height)


@pytest.mark.parametrize(("pix_fmt", "chroma"), [("yuv420p", 1), ("yuv422p", 2), ("yuv444p", 3)])
def test_sps_chroma_formats_with_conformance_window(pix_fmt: str, chroma: int) -> None:
    frames = encode_video("libx265", width=322, height=242, frames=2, pix_fmt=pix_fmt)
    sps = h265.parameter_sets(frames[0].data)[1]
    assert sps is not None
    info = h265.parse_sps(sps)
    assert info.chroma_format_idc == chroma
    assert (info.width, info.height) == (322, 242)


def test_sps_with_temporal_sub_layers() -> None:
    # temporal-layers makes sps_max_sub_layers_minus1 > 0: profile_tier_level grows per sub-layer.
    frames = encode_video("libx265", frames=12, bframes=3, extra="temporal-layers=3")
    sps = h265.parameter_sets(frames[0].data)[1]
    assert sps is not None
    assert (sps[2] >> 1) & 7 > 0  # sps_max_sub_layers_minus1
    info = h265.parse_sps(sps)
    assert (info.width, info.height) == (320, 240)
    assert info.max_num_reorder_pics > 0


def _sps(
    *,
    sub_layers: int = 1,
    sub_profile: bool = True,
    chroma: int = 1,
    separate: bool = False,
    size: tuple[int, int] = (1920, 1088),
    window: tuple[int, int, int, int] | None = None,
    ordering_info: bool = True,
    reorder: int = 0,
) -> bytes:
    w = BitWriter().u(4, 0).u(3, sub_layers - 1).flag(True)
    w.u(2, 0).u(1, 1).u(5, 2).u(32, 0x20000000).u(48, 0).u(8, 123)  # Main 10, High tier, level 4.1
    for _ in range(sub_layers - 1):
        w.flag(sub_profile).flag(True)
    if sub_layers > 1:
        w.u(2 * (8 - (sub_layers - 1)), 0)
    for _ in range(sub_layers - 1):
        if sub_profile:
            w.u(88, (1 << 88) - 1)
        w.u(8, 90)
    w.ue(0).ue(chroma)
    if chroma == 3:
        w.flag(separate)
    w.ue(size[0]).ue(size[1]).flag(window is not None)
    if window is not None:
        for c in window:
            w.ue(c)
    w.ue(2).ue(2).ue(4).flag(ordering_info)
    for _ in range(sub_layers if ordering_info else 1):
        w.ue(4).ue(reorder).ue(0)
    w.ue(0).ue(3)  # the rest of the SPS is not parsed
    return b"\x42\x01" + escape_rbsp(w.rbsp())


@pytest.mark.parametrize(
    ("chroma", "separate", "expected"),
    [
        (1, False, (1920, 1080)),
        (2, False, (1920, 1084)),
        (3, False, (1920, 1084)),
        (3, True, (1920, 1084)),
        (0, False, (1920, 1084)),
    ],
)
def test_hand_built_sps_conformance_window_units(
    chroma: int, separate: bool, expected: tuple[int, int]
) -> None:
    info = h265.parse_sps(_sps(chroma=chroma, separate=separate, window=(0, 0, 0, 4)))
    assert (info.width, info.height) == expected
    assert (info.profile_idc, info.tier, info.level_idc) == (2, 1, 123)
    assert info.bit_depth_luma == 10


@pytest.mark.parametrize("sub_layers", [1, 2, 3, 7])
@pytest.mark.parametrize("sub_profile", [True, False])
@pytest.mark.parametrize("ordering_info", [True, False])
def test_hand_built_sps_profile_tier_level_skipping(
    sub_layers: int, sub_profile: bool, ordering_info: bool
) -> None:
    info = h265.parse_sps(
        _sps(
            sub_layers=sub_layers,
            sub_profile=sub_profile,
            window=(8, 8, 4, 4),
            ordering_info=ordering_info,
            reorder=2,
        )
    )
    assert (info.width, info.height) == (1920 - 32, 1088 - 16)
    assert info.max_num_reorder_pics == 2


def test_sps_errors() -> None:
    with pytest.raises(BitstreamError, match="not an H.265 SPS"):
        h265.parse_sps(b"\x40\x01\x0c\x01")
    good = _sps(sub_layers=3)
    for n in range(len(good)):
        try:
            h265.parse_sps(good[:n])
        except BitstreamError:
            pass
    with pytest.raises(BitstreamError, match="conformance window"):
        h265.parse_sps(_sps(window=(1000, 0, 0, 0)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_sps_parser_raises_only_value_errors(data: bytes) -> None:
    try:
        h265.parse_sps(b"\x42\x01" + data)
    except ValueError:
        pass


def test_b_frame_detection() -> None:
    plain = encode_video("libx265", frames=20, bframes=0)
    with_b = encode_video("libx265", frames=20, bframes=2)
    assert not h265.has_b_frames(f.data for f in plain)
    assert h265.has_b_frames(f.data for f in with_b)
    assert any(h265.frame_has_b_slices(f.data) for f in with_b)
    sps_plain = h265.parameter_sets(plain[0].data)[1]
    sps_b = h265.parameter_sets(with_b[0].data)[1]
    assert sps_plain is not None and sps_b is not None
    assert h265.parse_sps(sps_plain).max_num_reorder_pics == 0
    assert h265.parse_sps(sps_b).max_num_reorder_pics == 2


def test_slice_types() -> None:
    frames = encode_video("libx265", frames=20, bframes=2)
    pps = h265.parameter_sets(frames[0].data)[2]
    assert pps is not None
    _, extra = h265.parse_pps_extra_bits(pps)
    seen = set()
    for f in frames:
        for nal in h265.split_annexb(f.data):
            t = h265.slice_type(nal, extra)
            if t is not None:
                seen.add(t)
                if h265.is_irap(h265.nal_type(nal)):
                    assert t == 2
    assert seen == {0, 1, 2} or seen == {0, 2}
    assert h265.slice_type(b"\x40\x01\x0c") is None  # VPS
    # a slice segment that is not the first of its picture: not parsed without the PPS/SPS
    assert h265.slice_type(b"\x02\x01\x40") is None
