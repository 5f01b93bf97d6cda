"""media.psmux: the GB/T 28181-style PS muxer (round trips through our demuxer and PyAV's, PES splitting,
header fields, CRC) and the PS-over-RTP packetizer (marker, sequence numbers, timestamps)."""

from __future__ import annotations

import io
import struct

import pytest
from media_util import EncodedFrame, decode_video, encode_video, parse_rtp_packet

from media.frames import AccessUnit, Codec, StreamType
from media.ps import PsDemuxer
from media.psmux import (
    DEFAULT_MUX_RATE,
    MAX_PES_PACKET_LENGTH,
    PsMuxer,
    PsRtpPacketizer,
    crc32_mpeg2,
    pack_header,
    pes_packets,
)


def units(frames: tuple[EncodedFrame, ...], codec: Codec) -> list[AccessUnit]:
    return [AccessUnit(codec, f.pts, f.dts, f.keyframe, f.data) for f in frames]


def mux_all(aus: list[AccessUnit], muxer: PsMuxer) -> list[bytes]:
    return [muxer.mux(au) for au in aus]


def demux(ps: bytes, chunk: int = 1400) -> list[AccessUnit]:
    d = PsDemuxer()
    out: list[AccessUnit] = []
    for i in range(0, len(ps), chunk):
        out += d.feed(ps[i : i + chunk])
    return out + d.flush()


def parse_units(ps: bytes) -> list[tuple[int, bytes]]:
    """(stream_id, whole unit) for each pack header / packet of a well-formed PS."""
    out = []
    i = 0
    while i < len(ps):
        assert ps[i : i + 3] == b"\x00\x00\x01", i
        sid = ps[i + 3]
        n = 14 + (ps[i + 13] & 7) if sid == 0xBA else 6 + struct.unpack_from(">H", ps, i + 4)[0]
        out.append((sid, ps[i : i + n]))
        i += n
    return out


def pyav_packets(ps: bytes) -> list[tuple[str, int | None, bytes]]:
    import av

    with av.open(io.BytesIO(ps), format="mpeg") as container:
        return [(p.stream.codec_context.name, p.pts, bytes(p)) for p in container.demux() if p.size]


VIDEO_CASES = [
    ("libx264", Codec.H264, 0),
    ("libx264", Codec.H264, 2),
    ("libx265", Codec.H265, 0),
    ("libx265", Codec.H265, 2),
]


@pytest.mark.parametrize(("encoder", "codec", "bframes"), VIDEO_CASES)
def test_video_round_trip_through_our_demuxer(encoder: str, codec: Codec, bframes: int) -> None:
    aus = units(encode_video(encoder, frames=25, bframes=bframes), codec)
    ps = b"".join(mux_all(aus, PsMuxer(codec)))
    assert demux(ps) == aus
    assert demux(ps, 1) == aus


@pytest.mark.parametrize(("encoder", "codec", "bframes"), VIDEO_CASES)
def test_video_round_trip_through_pyav(encoder: str, codec: Codec, bframes: int) -> None:
    aus = units(encode_video(encoder, frames=25, bframes=bframes), codec)
    ps = b"".join(mux_all(aus, PsMuxer(codec)))
    packets = pyav_packets(ps)
    name = "h264" if codec is Codec.H264 else "hevc"
    assert [p[0] for p in packets] == [name] * len(aus)
    assert [p[2] for p in packets] == [a.data for a in aus]
    sizes, errors = decode_video(name, (p[2] for p in packets))
    assert errors == 0 and sizes == [(320, 240)] * len(aus)


def test_audio_and_video_round_trip() -> None:
    video = units(encode_video("libx264", frames=10), Codec.H264)
    audio = [
        AccessUnit(Codec.G711A, 3600 * i + 1800, 3600 * i + 1800, True, bytes([i]) * 320) for i in range(10)
    ]
    muxer = PsMuxer(Codec.H264, Codec.G711A)
    interleaved = [au for pair in zip(video, audio, strict=True) for au in pair]
    ps = b"".join(mux_all(interleaved, muxer))
    out = demux(ps)  # no markers: a video frame leaves when the next one starts, after the audio between
    assert [a for a in out if a.codec is Codec.H264] == video
    assert [a for a in out if a.codec is Codec.G711A] == audio
    # over RTP the marker ends each video frame at once: the original order
    pk = PsRtpPacketizer(ssrc=7)
    d = PsDemuxer()
    got = []
    for au in interleaved:
        for pkt in pk.packetize(muxer.mux(au), au.pts or 0):
            r = parse_rtp_packet(pkt)
            got += d.feed(r.payload, r.marker)
    assert got == interleaved
    d = PsDemuxer()
    d.feed(ps)
    assert d.stream_types == {0xE0: 0x1B, 0xC0: 0x90}


@pytest.mark.parametrize("codec", [Codec.G711A, Codec.G711U, Codec.AAC])
def test_audio_only_round_trip(codec: Codec) -> None:
    payload = b"\xff\xf1\x50\x80\x02\x1f\xfc" + bytes(9) if codec is Codec.AAC else b"\xd5" * 160
    aus = [AccessUnit(codec, 1600 * i, 1600 * i, True, payload) for i in range(120)]
    muxer = PsMuxer(None, codec, psm_interval=50)
    ps = mux_all(aus, muxer)
    assert demux(b"".join(ps)) == aus
    with_psm = [i for i, p in enumerate(ps) if b"\x00\x00\x01\xbc" in p]
    assert with_psm == [0, 50, 100]  # repeated for receivers that join late


def test_g711a_through_pyav() -> None:
    aus = [AccessUnit(Codec.G711A, 3600 * i, 3600 * i, True, bytes(range(160))) for i in range(20)]
    packets = pyav_packets(b"".join(mux_all(aus, PsMuxer(None, Codec.G711A))))
    if packets and packets[0][0] != "pcm_alaw":
        pytest.skip(f"this FFmpeg does not map PS stream type 0x90 to G.711A (it says {packets[0][0]})")
    assert b"".join(p[2] for p in packets) == b"".join(a.data for a in aus)


def test_layout_of_a_keyframe_and_a_p_frame() -> None:
    frames = encode_video("libx264", frames=2)
    muxer = PsMuxer(Codec.H264, Codec.G711A)
    key = parse_units(muxer.mux(units(frames, Codec.H264)[0]))
    assert [sid for sid, _ in key] == [0xBA, 0xBB, 0xBC, 0xE0]
    pack, system, psm, pes = (u for _, u in key)
    assert len(pack) == 14 and pack[13] & 7 == 0
    assert pack == pack_header(frames[0].dts, DEFAULT_MUX_RATE)
    # SCR = the DTS: 33 bits spread over 6 bytes with markers (ISO/IEC 13818-1 §2.5.3.3)
    b = int.from_bytes(pack[4:10], "big")
    scr = (((b >> 43) & 7) << 30) | (((b >> 27) & 0x7FFF) << 15) | ((b >> 11) & 0x7FFF)
    assert (
        scr == frames[0].dts and b >> 46 == 1 and (b >> 42) & 1 and (b >> 26) & 1 and (b >> 10) & 1 and b & 1
    )
    assert system[12:] == b"\xe0\xe4\x00" + b"\xc0\xc0\x20"  # stream entries: video 1024 KiB, audio 4 KiB
    assert psm[12:20] == bytes((StreamType.H264, 0xE0, 0, 0, StreamType.G711A, 0xC0, 0, 0))
    assert crc32_mpeg2(psm) == 0  # the CRC_32 makes the whole map's CRC register zero (Annex A)
    assert pes[6:9] == b"\x84\x80\x05"  # data_alignment_indicator, PTS only
    p_frame = parse_units(muxer.mux(units(frames, Codec.H264)[1]))
    assert [sid for sid, _ in p_frame] == [0xBA, 0xE0]


def test_dts_written_only_when_it_differs() -> None:
    assert pes_packets(0xE0, b"x", 9000, 9000)[0][6:9] == b"\x84\x80\x05"
    both = pes_packets(0xE0, b"x", 9000, 5400)[0]
    assert both[6:9] == b"\x84\xc0\x0a" and both[9] >> 4 == 3 and both[14] >> 4 == 1
    assert pes_packets(0xE0, b"x", None, None)[0][6:9] == b"\x84\x00\x00"
    wrapped = pes_packets(0xE0, b"x", (1 << 33) + 7, 7)[0]  # timestamps are modulo 2**33
    assert wrapped[7] == 0x80


def test_large_frame_split_into_pes_packets() -> None:
    data = b"\x00\x00\x00\x01\x65" + bytes(range(1, 256)) * 800  # 204 KB
    au = AccessUnit(Codec.H264, 90_000, 90_000, True, data)
    ps = PsMuxer(Codec.H264).mux(au)
    pes = [u for sid, u in parse_units(ps) if sid == 0xE0]
    assert len(pes) == 4
    lengths = [struct.unpack_from(">H", u, 4)[0] for u in pes]
    assert all(n <= MAX_PES_PACKET_LENGTH for n in lengths) and lengths[0] == MAX_PES_PACKET_LENGTH
    assert pes[0][7] == 0x80 and all(u[6:9] == b"\x80\x00\x00" for u in pes[1:])  # PTS on the first only
    assert b"".join(u[9 + u[8] :] for u in pes) == data
    assert demux(ps) == [au]


def test_large_encoded_keyframe_through_pyav() -> None:
    frames = encode_video("libx264", width=640, height=360, frames=3, noise=True, extra="crf=0")
    assert len(frames[0].data) > 3 * 65536
    aus = units(frames, Codec.H264)
    ps = b"".join(mux_all(aus, PsMuxer(Codec.H264)))
    assert demux(ps) == aus
    packets = pyav_packets(ps)
    assert [p[2] for p in packets] == [a.data for a in aus]
    sizes, errors = decode_video("h264", (p[2] for p in packets))
    assert errors == 0 and sizes == [(640, 360)] * 3


def test_muxer_rejects_what_it_was_not_set_up_for() -> None:
    with pytest.raises(ValueError, match="needs a video or an audio"):
        PsMuxer(None, None)
    with pytest.raises(ValueError, match="not a video codec"):
        PsMuxer(Codec.G711A)
    with pytest.raises(ValueError, match="not an audio codec"):
        PsMuxer(Codec.H264, Codec.H265)
    with pytest.raises(ValueError, match="not Codec.G711A"):
        PsMuxer(Codec.H264).mux(AccessUnit(Codec.G711A, 0, 0, True, b"\xd5"))


def test_crc32_mpeg2() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7  # the catalogue check value of CRC-32/MPEG-2
    assert crc32_mpeg2(b"") == 0xFFFFFFFF


# -- RTP packetizer ------------------------------------------------------------------------------------------------


def test_packetizer_marker_seq_ts() -> None:
    frames = encode_video("libx264", frames=10)
    muxer = PsMuxer(Codec.H264)
    pk = PsRtpPacketizer(ssrc=0x0BEBC265, pt=96, max_payload=1400, seq=65530, ts_offset=0xFFFFF000)
    packets = []
    for au in units(frames, Codec.H264):
        ps = muxer.mux(au)
        rtp = [parse_rtp_packet(p) for p in pk.packetize(ps, au.pts or 0)]
        assert b"".join(r.payload for r in rtp) == ps
        assert [r.marker for r in rtp] == [False] * (len(rtp) - 1) + [True]
        assert all(len(r.payload) <= 1400 for r in rtp) and all(len(r.payload) == 1400 for r in rtp[:-1])
        assert {r.ts for r in rtp} == {((au.pts or 0) + 0xFFFFF000) & 0xFFFFFFFF}
        assert {(r.ssrc, r.pt) for r in rtp} == {(0x0BEBC265, 96)}
        packets += rtp
    seqs = [r.seq for r in packets]
    assert seqs[:8] == [65530, 65531, 65532, 65533, 65534, 65535, 0, 1]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    assert pk.seq == (seqs[-1] + 1) & 0xFFFF
    # the timestamp wrapped between frames, and the stream still demuxes from the packets
    d = PsDemuxer()
    out = [au for r in packets for au in d.feed(r.payload, r.marker)]
    assert out == units(frames, Codec.H264)


def test_packetizer_small_and_empty_frames() -> None:
    pk = PsRtpPacketizer(ssrc=1, max_payload=10)
    assert [len(p) for p in pk.packetize(b"x" * 25, 0)] == [22, 22, 17]
    empty = pk.packetize(b"", 0)
    assert len(empty) == 1 and parse_rtp_packet(empty[0]).marker and pk.seq == 4
    with pytest.raises(ValueError):
        PsRtpPacketizer(ssrc=1, max_payload=0)
