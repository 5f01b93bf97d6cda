"""RTP packetizers (media.packetize): H.264 round trip through media.rfc6184, FU boundaries, seq/ts, audio, SDP."""

from __future__ import annotations

import base64

import pytest

from media.frames import AccessUnit, Codec
from media.h264 import split_annexb
from media.packetize import (
    AacPacketizer,
    G711Packetizer,
    H264Packetizer,
    H265Packetizer,
    aac_fmtp,
    adts_config,
    h264_fmtp,
    h265_fmtp,
)
from media.rfc6184 import Rfc6184Depacketizer
from media.rtp import parse_rtp
from tests.media_util import decode_video, encode_video, have_encoder

MTU = 1400


def rtp(pkt: bytes) -> tuple[int, bool, int, int, int, bytes]:
    pt, marker, seq, ts, ssrc, off, end = parse_rtp(pkt)
    return pt, marker, seq, ts, ssrc, pkt[off:end]


def nal(t: int, size: int, fill: int = 0x55) -> bytes:
    return bytes([0x60 | t]) + bytes([fill]) * (size - 1)


def annexb(*nals: bytes) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def h264_au(data: bytes, pts: int | None = 0, key: bool = False) -> AccessUnit:
    return AccessUnit(Codec.H264, pts, pts, key, data)


# -- H.264 ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mtu", [1400, 200])
def test_h264_round_trip_through_rfc6184(mtu: int) -> None:
    frames = encode_video("libx264", frames=20, gop=10)
    pk = H264Packetizer(ssrc=0x1234, pt=96, seq=65530, ts_offset=0xFFFFF000, mtu=mtu)
    dp = Rfc6184Depacketizer()
    out: list[AccessUnit] = []
    prev_seq = None
    for f in frames:
        pkts = pk.packetize(AccessUnit(Codec.H264, f.pts, f.dts, f.keyframe, f.data))
        assert pkts
        for i, p in enumerate(pkts):
            pt, marker, seq, ts, ssrc, payload = rtp(p)
            assert (pt, ssrc) == (96, 0x1234)
            assert marker == (i == len(pkts) - 1)
            assert len(payload) <= mtu
            if prev_seq is not None:
                assert seq == (prev_seq + 1) & 0xFFFF
            prev_seq = seq
            assert ts == (f.pts - frames[0].pts + 0xFFFFF000) & 0xFFFFFFFF
            out += dp.feed(payload, ts, marker)
    out += dp.flush()
    assert len(out) == len(frames)
    for f, au in zip(frames, out, strict=True):
        assert [bytes(n) for n in split_annexb(au.data)] == [bytes(n) for n in split_annexb(f.data)]
    sizes, errors = decode_video("h264", [au.data for au in out])
    assert errors == 0
    assert sizes == [(320, 240)] * len(frames)
    assert pk.seq == (prev_seq + 1) & 0xFFFF  # type: ignore[operator]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (MTU, [MTU]),
        (MTU + 1, [MTU, 4]),  # 1400 bytes after the NAL header: 1398 + 2, each behind 2 FU bytes
        (3 * MTU, [MTU, MTU, MTU, 2 + 3 * MTU - 1 - 3 * (MTU - 2)]),
    ],
)
def test_h264_fu_a_boundaries(size: int, expected: list[int]) -> None:
    unit = nal(5, size)
    pk = H264Packetizer(ssrc=1, pt=96)
    pkts = pk.packetize(h264_au(annexb(unit)))
    payloads = [rtp(p)[5] for p in pkts]
    assert [len(p) for p in payloads] == expected
    assert [rtp(p)[1] for p in pkts] == [False] * (len(pkts) - 1) + [True]
    if len(pkts) == 1:
        assert payloads[0] == unit
        return
    for i, p in enumerate(payloads):
        assert p[0] == (unit[0] & 0xE0) | 28  # FU indicator: F, NRI, type 28
        start, end = bool(p[1] & 0x80), bool(p[1] & 0x40)
        assert (start, end) == (i == 0, i == len(payloads) - 1)
        assert p[1] & 0x20 == 0
        assert p[1] & 0x1F == 5
    assert bytes([unit[0]]) + b"".join(p[2:] for p in payloads) == unit


def test_h264_marker_only_on_last_packet_of_multi_nal_au() -> None:
    au = annexb(nal(6, 20), nal(5, 3000), nal(5, 50))
    pkts = H264Packetizer(ssrc=1, pt=96).packetize(h264_au(au))
    markers = [rtp(p)[1] for p in pkts]
    assert markers == [False] * (len(pkts) - 1) + [True]
    assert len(pkts) == 1 + 3 + 1


def test_h264_aud_and_filler_dropped_sei_kept() -> None:
    au = annexb(bytes([0x09, 0xF0]), nal(6, 10), nal(1, 30), bytes([0x0C, 0xFF, 0xFF, 0x80]))
    pkts = H264Packetizer(ssrc=1, pt=96).packetize(h264_au(au))
    assert [rtp(p)[5][0] & 0x1F for p in pkts] == [6, 1]


def test_h264_seq_wrap() -> None:
    pk = H264Packetizer(ssrc=1, pt=96, seq=65534)
    pkts = pk.packetize(h264_au(annexb(nal(1, 10), nal(1, 10), nal(1, 10), nal(1, 10))))
    assert [rtp(p)[2] for p in pkts] == [65534, 65535, 0, 1]
    assert pk.seq == 2


def test_h264_timestamps_continuous_and_wrap() -> None:
    pk = H264Packetizer(ssrc=1, pt=96, ts_offset=0xFFFFFF00)
    assert pk.last_timestamp == 0xFFFFFF00
    tss = []
    for i, pts in enumerate([1000, 4600, 8200, 11800]):
        tss.append(rtp(pk.packetize(h264_au(annexb(nal(1, 10)), pts))[0])[3])
        assert pk.last_timestamp == tss[-1], i
    assert tss == [0xFFFFFF00, (0xFFFFFF00 + 3600) & 0xFFFFFFFF, (0xFFFFFF00 + 7200) & 0xFFFFFFFF,
                   (0xFFFFFF00 + 10800) & 0xFFFFFFFF]
    # no pts: the previous timestamp
    assert rtp(pk.packetize(h264_au(annexb(nal(1, 10)), None))[0])[3] == tss[-1]


def test_h264_pes_33_bit_wrap_is_continuous() -> None:
    pk = H264Packetizer(ssrc=1, pt=96, ts_offset=5)
    top = (1 << 33) - 1800
    a = rtp(pk.packetize(h264_au(annexb(nal(1, 10)), top))[0])[3]
    b = rtp(pk.packetize(h264_au(annexb(nal(1, 10)), 1800))[0])[3]
    assert (a, b) == (5, 5 + 3600)


def test_h264_session_continuity_with_offset() -> None:
    """A new session (PLAY after PAUSE) continues from the old one's seq and timestamp."""
    first = H264Packetizer(ssrc=7, pt=96, seq=100, ts_offset=1000)
    for pts in (0, 3600):
        first.packetize(h264_au(annexb(nal(1, 10)), pts))
    second = H264Packetizer(ssrc=7, pt=96, seq=first.seq, ts_offset=first.last_timestamp + 3600)
    _, _, seq, ts, _, _ = rtp(second.packetize(h264_au(annexb(nal(1, 10)), 999_999))[0])
    assert (seq, ts) == (102, 1000 + 7200)


def test_h264_parameter_sets_inserted_before_idr() -> None:
    sps, pps = bytes([0x67, 0x42, 0xC0, 0x1E, 0xAA]), bytes([0x68, 0xCE, 0x3C, 0x80])
    idr = nal(5, 40)
    pk = H264Packetizer(ssrc=1, pt=96)
    first = pk.packetize(h264_au(annexb(sps, pps, idr)))
    assert [rtp(p)[5] for p in first] == [sps, pps, idr]
    assert pk.inserted_parameter_sets == 0
    # P frame: nothing inserted
    assert [rtp(p)[5][0] & 0x1F for p in pk.packetize(h264_au(annexb(nal(1, 10)), 3600))] == [1]
    # IDR lacking both (after an SEI): both inserted in front, in order
    pkts = pk.packetize(h264_au(annexb(bytes([0x09, 0x10]), nal(6, 8), idr), 7200))
    assert [rtp(p)[5] for p in pkts] == [sps, pps, nal(6, 8), idr]
    assert pk.inserted_parameter_sets == 2
    # IDR with a new SPS but no PPS: the PPS goes right after the SPS; the new SPS is kept
    sps2 = bytes([0x67, 0x4D, 0x40, 0x1F, 0xBB])
    pkts = pk.packetize(h264_au(annexb(sps2, idr), 10800))
    assert [rtp(p)[5] for p in pkts] == [sps2, pps, idr]
    assert pk.sps == sps2
    # IDR before any parameter set was seen: sent as is
    fresh = H264Packetizer(ssrc=1, pt=96)
    assert [rtp(p)[5] for p in fresh.packetize(h264_au(annexb(idr)))] == [idr]


def test_h264_stream_without_in_band_parameter_sets_after_first_decodes() -> None:
    """Strip SPS/PPS from every access unit but the first: the packetizer restores them before each IDR."""
    frames = encode_video("libx264", frames=20, gop=5)
    pk = H264Packetizer(ssrc=1, pt=96)
    dp = Rfc6184Depacketizer()
    out: list[AccessUnit] = []
    for i, f in enumerate(frames):
        nals = [bytes(n) for n in split_annexb(f.data)]
        if i:
            nals = [n for n in nals if n[0] & 0x1F not in (7, 8)]
        for p in pk.packetize(AccessUnit(Codec.H264, f.pts, f.dts, f.keyframe, annexb(*nals))):
            _, marker, _, ts, _, payload = rtp(p)
            out += dp.feed(payload, ts, marker)
    keys = sum(f.keyframe for f in frames)
    assert keys >= 3
    assert pk.inserted_parameter_sets == 2 * (keys - 1)
    # decode starting at the last keyframe only: it must carry its own parameter sets
    last_key = max(i for i, f in enumerate(frames) if f.keyframe)
    sizes, errors = decode_video("h264", [au.data for au in out[last_key:]])
    assert errors == 0 and sizes == [(320, 240)] * (len(frames) - last_key)


def test_h264_fmtp() -> None:
    sps, pps = bytes([0x67, 0x42, 0xC0, 0x1E, 0xAA]), bytes([0x68, 0xCE, 0x3C, 0x80])
    expected = (f"profile-level-id=42c01e;packetization-mode=1;sprop-parameter-sets="
                f"{base64.b64encode(sps).decode()},{base64.b64encode(pps).decode()}")
    assert h264_fmtp(sps, pps) == expected
    assert h264_fmtp(sps, pps, 96) == "96 " + expected


# -- H.265 ---------------------------------------------------------------------------------------------------------


def h265_nal(t: int, size: int, fill: int = 0x55) -> bytes:
    return bytes([t << 1, 0x01]) + bytes([fill]) * (size - 2)


def depacketize_h265(payloads: list[bytes]) -> list[bytes]:
    """A tiny RFC 7798 depacketizer (single NAL unit packets and FUs) for the tests."""
    out: list[bytes] = []
    frag = bytearray()
    for p in payloads:
        t = (p[0] >> 1) & 0x3F
        if t == 49:
            fu = p[2]
            if fu & 0x80:
                frag = bytearray([(p[0] & 0x81) | ((fu & 0x3F) << 1), p[1]])
            frag += p[3:]
            if fu & 0x40:
                out.append(bytes(frag))
        else:
            out.append(p)
    return out


@pytest.mark.parametrize("size", [MTU, MTU + 1, 3 * MTU])
def test_h265_fu_header_bits_and_reassembly(size: int) -> None:
    unit = h265_nal(19, size)
    pk = H265Packetizer(ssrc=2, pt=97)
    pkts = pk.packetize(AccessUnit(Codec.H265, 0, 0, True, annexb(unit)))
    payloads = [rtp(p)[5] for p in pkts]
    assert all(len(p) <= MTU for p in payloads)
    assert [rtp(p)[1] for p in pkts] == [False] * (len(pkts) - 1) + [True]
    assert depacketize_h265(payloads) == [unit]
    if size <= MTU:
        assert payloads == [unit]
        return
    assert len(payloads) == -(-(size - 2) // (MTU - 3))
    for i, p in enumerate(payloads):
        assert p[0] == 49 << 1 and p[1] == 0x01  # F=0, type 49, LayerId 0, TID 1
        assert p[2] & 0x3F == 19
        assert (bool(p[2] & 0x80), bool(p[2] & 0x40)) == (i == 0, i == len(payloads) - 1)


def test_h265_parameter_sets_inserted_before_irap() -> None:
    vps, sps, pps = h265_nal(32, 12, 1), h265_nal(33, 20, 2), h265_nal(34, 8, 3)
    idr, trail, aud = h265_nal(19, 50), h265_nal(1, 30), bytes([35 << 1, 1, 0x50])
    pk = H265Packetizer(ssrc=2, pt=97)
    pk.packetize(AccessUnit(Codec.H265, 0, 0, True, annexb(aud, vps, sps, pps, idr)))
    assert [rtp(p)[5] for p in pk.packetize(AccessUnit(Codec.H265, 3600, 3600, False, annexb(aud, trail)))] == [trail]
    cra = h265_nal(21, 40)
    pkts = pk.packetize(AccessUnit(Codec.H265, 7200, 7200, True, annexb(aud, cra)))
    assert [rtp(p)[5] for p in pkts] == [vps, sps, pps, cra]
    sps2 = h265_nal(33, 22, 9)
    pkts = pk.packetize(AccessUnit(Codec.H265, 10800, 10800, True, annexb(sps2, idr)))
    assert [rtp(p)[5] for p in pkts] == [vps, sps2, pps, idr]
    assert pk.inserted_parameter_sets == 5


def test_h265_round_trip_decodes() -> None:
    if not have_encoder("libx265"):
        pytest.skip("PyAV has no libx265 encoder")
    frames = encode_video("libx265", frames=12, gop=6)
    pk = H265Packetizer(ssrc=2, pt=97, mtu=300)
    aus: list[bytes] = []
    for f in frames:
        pkts = pk.packetize(AccessUnit(Codec.H265, f.pts, f.dts, f.keyframe, f.data))
        assert [rtp(p)[1] for p in pkts] == [False] * (len(pkts) - 1) + [True]
        assert len({rtp(p)[3] for p in pkts}) == 1
        nals = depacketize_h265([rtp(p)[5] for p in pkts])
        assert nals == [bytes(n) for n in split_annexb(f.data) if (n[0] >> 1) & 0x3F not in (35, 38)]
        aus.append(annexb(*nals))
    sizes, errors = decode_video("hevc", aus)
    assert errors == 0 and sizes == [(320, 240)] * len(frames)


def test_h265_fmtp() -> None:
    vps, sps, pps = b"\x40\x01\x0c", b"\x42\x01\x01", b"\x44\x01\xc1"
    assert h265_fmtp(vps, sps, pps) == "sprop-vps=QAEM;sprop-sps=QgEB;sprop-pps=RAHB"


# -- G.711 ---------------------------------------------------------------------------------------------------------


def test_g711_timestamps_in_samples() -> None:
    pk = G711Packetizer(ssrc=3, pt=8, seq=65535, ts_offset=100)
    out = []
    for pts in (90000, 90000 + 3600, 90000 + 7200):  # 40 ms apart = 320 samples
        out += pk.packetize(AccessUnit(Codec.G711A, pts, pts, True, b"\xd5" * 320))
    parsed = [rtp(p) for p in out]
    assert [p[3] for p in parsed] == [100, 420, 740]
    assert [p[2] for p in parsed] == [65535, 0, 1]
    assert all(p[0] == 8 and not p[1] and p[5] == b"\xd5" * 320 for p in parsed)
    # no pts: right after the previous frame
    nxt = pk.packetize(AccessUnit(Codec.G711A, None, None, True, b"\xd5" * 160))
    assert rtp(nxt[0])[3] == 1060 and pk.last_timestamp == 1060


def test_g711_split_at_mtu() -> None:
    pk = G711Packetizer(ssrc=3, pt=0, mtu=160)
    data = bytes(range(256)) + bytes(144)
    pkts = pk.packetize(AccessUnit(Codec.G711U, 0, 0, True, data))
    assert [(rtp(p)[3], len(rtp(p)[5])) for p in pkts] == [(0, 160), (160, 160), (320, 80)]
    assert b"".join(rtp(p)[5] for p in pkts) == data


# -- AAC -----------------------------------------------------------------------------------------------------------


def adts(raw: bytes, sfi: int = 4, channels: int = 2, profile: int = 1, crc: bool = False) -> bytes:
    hsize = 9 if crc else 7
    flen = hsize + len(raw)
    hdr = bytes([
        0xFF,
        0xF0 | (0 if crc else 1),
        (profile << 6) | (sfi << 2) | (channels >> 2),
        ((channels & 3) << 6) | (flen >> 11),
        (flen >> 3) & 0xFF,
        ((flen & 7) << 5) | 0x1F,
        0xFC,
    ])
    return hdr + (b"\x00\x00" if crc else b"") + raw


def test_aac_au_header_bytes_exact() -> None:
    raw = bytes(range(100))
    frame = adts(raw)
    assert frame[:7] == bytes.fromhex("fff15080 0d7ffc".replace(" ", ""))
    pk = AacPacketizer(ssrc=4, pt=97)
    pkts = pk.packetize(AccessUnit(Codec.AAC, 0, 0, True, frame))
    assert len(pkts) == 1
    pt, marker, _, ts, _, payload = rtp(pkts[0])
    assert (pt, marker, ts) == (97, True, 0)
    # AU-headers-length 16 bits; AU-size 100 (13 bits) << 3 | index 0 = 0x0320
    assert payload == b"\x00\x10\x03\x20" + raw
    assert pk.clock_rate == 44100 and pk.config == b"\x12\x10"


def test_aac_several_frames_timestamps_and_crc() -> None:
    a, b = bytes([1]) * 50, bytes([2]) * 60
    pk = AacPacketizer(ssrc=4, pt=97, ts_offset=10)
    pkts = pk.packetize(AccessUnit(Codec.AAC, 0, 0, True, adts(a) + adts(b, crc=True)))
    assert len(pkts) == 1
    payload = rtp(pkts[0])[5]
    assert payload == b"\x00\x20" + (50 << 3).to_bytes(2, "big") + (60 << 3).to_bytes(2, "big") + a + b
    # next PES 2 frames later (2 * 1024 samples at 44.1 kHz = 4180.9 ticks of 90 kHz)
    nxt = pk.packetize(AccessUnit(Codec.AAC, 4180, 4180, True, adts(a)))
    assert rtp(nxt[0])[3] == 10 + 4180 * 44100 // 90000
    # no pts: continues after the previous frame
    last = pk.packetize(AccessUnit(Codec.AAC, None, None, True, adts(a)))
    assert rtp(last[0])[3] == 10 + 4180 * 44100 // 90000 + 1024


def test_aac_fragmented_au() -> None:
    raw = bytes(range(256)) * 10  # 2560 bytes
    pk = AacPacketizer(ssrc=4, pt=97, mtu=1000)
    pkts = pk.packetize(AccessUnit(Codec.AAC, 0, 0, True, adts(raw)))
    parsed = [rtp(p) for p in pkts]
    assert [p[1] for p in parsed] == [False, False, True]
    assert all(p[5][:4] == b"\x00\x10" + (2560 << 3).to_bytes(2, "big") for p in parsed)
    assert all(len(p[5]) <= 1000 for p in parsed)
    assert b"".join(p[5][4:] for p in parsed) == raw


def test_aac_malformed_counted() -> None:
    pk = AacPacketizer(ssrc=4, pt=97)
    pkts = pk.packetize(AccessUnit(Codec.AAC, 0, 0, True, adts(b"\x01" * 10) + b"\x00garbage"))
    assert len(pkts) == 1 and pk.malformed_frames == 1
    assert pk.packetize(AccessUnit(Codec.AAC, 0, 0, True, b"junk")) == []


def test_aac_fmtp_and_config() -> None:
    hdr = adts(b"\x00" * 10)[:7]
    assert adts_config(hdr) == bytes.fromhex("1210")
    expected = ("streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;"
                "config=1210")
    assert aac_fmtp(hdr) == expected
    assert aac_fmtp(b"\x12\x10") == expected
    assert adts_config(adts(b"\x00", sfi=11, channels=1)[:7]) == bytes.fromhex("1588")  # 8 kHz mono LC
