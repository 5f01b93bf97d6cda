"""media.ps.PsDemuxer: the shared real captures, codec inference, frame boundaries, resynchronisation after
garbage and losses, malformed headers, memory bounds, and Hypothesis fuzzing (feed never raises)."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_util import (
    G711_BAD_PSM,
    GOMEDIA,
    GSTREAMER,
    HIKVISION,
    MIDGOP,
    EncodedFrame,
    capture,
    decode_video,
    encode_video,
    lenpfx_frames,
    mux_video,
    ps_bytes,
    rtp_packets,
    split_payloads,
)

from media import h264
from media.frames import AccessUnit, Codec
from media.ps import PsDemuxer
from media.psmux import crc32_mpeg2, pack_header, pes_packets

# -- helpers -------------------------------------------------------------------------------------------------------


def demux_rtp(
    name: str, demux: PsDemuxer | None = None, drop: Iterable[int] = ()
) -> tuple[list[AccessUnit], PsDemuxer]:
    """Feed a capture's RTP payloads in order (packets in ``drop`` are lost: the next one is flagged)."""
    d = demux or PsDemuxer()
    lost = set(drop)
    out: list[AccessUnit] = []
    gap = False
    for i, pkt in enumerate(rtp_packets(name)):
        if i in lost:
            gap = True
            continue
        out += d.feed(pkt.payload, pkt.marker, discontinuity=gap)
        gap = False
    return out + d.flush(), d


def demux_raw(
    data: bytes, chunk: int | None = None, demux: PsDemuxer | None = None
) -> tuple[list[AccessUnit], PsDemuxer]:
    d = demux or PsDemuxer()
    out: list[AccessUnit] = []
    if chunk is None:
        out += d.feed(data)
    else:
        for i in range(0, len(data), chunk):
            out += d.feed(data[i : i + chunk])
    return out + d.flush(), d


def demux_payloads(
    items: Sequence[tuple[bytes, bool, int]], demux: PsDemuxer | None = None
) -> list[AccessUnit]:
    d = demux or PsDemuxer()
    out: list[AccessUnit] = []
    for payload, marker, _ in items:
        out += d.feed(payload, marker)
    return out + d.flush()


def video(aus: Iterable[AccessUnit]) -> list[AccessUnit]:
    return [a for a in aus if a.codec.is_video]


def same_frames(aus: Sequence[AccessUnit], frames: Sequence[EncodedFrame]) -> bool:
    return [(a.data, a.pts, a.dts, a.keyframe) for a in aus] == [
        (f.data, f.pts, f.dts, f.keyframe) for f in frames
    ]


def stream(
    frames: int = 20, gop: int = 10, codec: str = "libx264"
) -> tuple[tuple[EncodedFrame, ...], list[bytes]]:
    enc = encode_video(codec, frames=frames, gop=gop)
    return enc, mux_video(enc, "H264" if codec == "libx264" else "H265")


def without_psm(ps: bytes) -> bytes:
    """``ps`` with its system headers and PSMs removed (a stream that never says what it carries)."""
    out = bytearray()
    i = 0
    while i < len(ps):
        if ps[i : i + 3] == b"\x00\x00\x01" and ps[i + 3] in (0xBB, 0xBC):
            i += 6 + struct.unpack_from(">H", ps, i + 4)[0]
            continue
        if ps[i : i + 4] == b"\x00\x00\x01\xba":
            n = 14 + (ps[i + 13] & 7)
        else:
            n = 6 + struct.unpack_from(">H", ps, i + 4)[0]
        out += ps[i : i + n]
        i += n
    return bytes(out)


def psm(entries: Sequence[tuple[int, int]], es_map_length: int | None = None, info: bytes = b"") -> bytes:
    es = b"".join(bytes((t, sid)) + b"\x00\x00" for t, sid in entries)
    n = len(es) if es_map_length is None else es_map_length
    body = b"\xe0\xff" + struct.pack(">H", len(info)) + info + struct.pack(">H", n) + es
    head = b"\x00\x00\x01\xbc" + struct.pack(">H", len(body) + 4) + body
    return head + crc32_mpeg2(head).to_bytes(4, "big")


# -- the shared real captures --------------------------------------------------------------------------------------


def test_hikvision_capture_every_frame_decodes() -> None:
    aus, d = demux_rtp(HIKVISION)
    assert len(rtp_packets(HIKVISION)) == 3096
    # One frame per pack: 1400 packs, 1400 frames, 56 keyframes (each with system header, PSM, SPS/PPS).
    assert (d.packs, d.frames, d.keyframes, d.psms) == (1400, 1400, 56, 56)
    assert len(aus) == 1400 and all(a.codec is Codec.H264 for a in aus)
    assert sum(a.keyframe for a in aus) == 56 and aus[0].keyframe
    assert d.skipped_packets == 56 + 56  # system headers and the Hikvision private stream 0xBD
    assert d.dropped_bytes == d.resyncs == d.truncated_frames == d.marker_misfires == d.header_errors == 0
    assert (d.width, d.height) == (704, 576)
    assert d.stream_types == {0xE0: 0x1B}
    assert d.sps is not None and h264.profile_level_id(d.sps) == "4d001e"
    for a in aus:
        assert a.data.startswith(b"\x00\x00\x00\x01")
        assert a.dts == a.pts
        if a.keyframe:
            assert {7, 8, 5} <= set(h264.nal_types(a.data))
    pts = [a.pts for a in aus]
    assert all(b - a == 3600 for a, b in zip(pts, pts[1:], strict=False))  # 25 fps
    sizes, errors = decode_video("h264", (a.data for a in aus))
    assert errors == 0
    assert len(sizes) == 1400 and set(sizes) == {(704, 576)}


def test_hikvision_capture_as_views_of_whole_packets() -> None:
    """The ingest's way: ``memoryview(datagram)[12:]`` per packet, no copies."""
    raw = list(lenpfx_frames(capture(HIKVISION).read_bytes()))
    d = PsDemuxer()
    aus: list[AccessUnit] = []
    for pkt in raw:
        aus += d.feed(memoryview(pkt)[12:], bool(pkt[1] & 0x80))
    expected, _ = demux_rtp(HIKVISION)
    assert aus == expected


@pytest.mark.parametrize("chunk", [7, 1000, 1412, 65536, None])
def test_hikvision_as_raw_ps_in_chunks(chunk: int | None) -> None:
    """Without RTP markers frames end at the next frame's PES (and at flush): the same 1400 frames."""
    expected, _ = demux_rtp(HIKVISION)
    aus, d = demux_raw(ps_bytes(HIKVISION), chunk)
    assert aus == expected
    assert d.dropped_bytes == 0


def test_hikvision_prefix_one_byte_at_a_time() -> None:
    data = ps_bytes(HIKVISION)[:150_000]
    whole, _ = demux_raw(data)
    single, d = demux_raw(data, 1)
    assert single == whole and len(whole) > 40
    assert d.buffered_bytes == 0


def test_midgop_capture_waits_for_a_keyframe() -> None:
    aus, d = demux_rtp(MIDGOP)
    # Two complete P frames (skipped: no keyframe yet), then an IDR frame cut off by the end of the capture.
    assert aus == []
    assert (d.skipped_frames, d.truncated_frames, d.packs, d.psms) == (2, 1, 3, 1)
    assert d.stream_types == {0xE0: 0x1B, 0xC0: 0x91}
    assert d.audio_codec is Codec.G711U


def test_midgop_capture_without_waiting() -> None:
    aus, d = demux_rtp(MIDGOP, PsDemuxer(wait_keyframe=False))
    assert [(a.pts, a.keyframe) for a in aus] == [(aus[0].pts, False), (aus[0].pts + 3600, False)]
    assert d.truncated_frames == 1


def test_g711a_audio_only_with_bad_psm() -> None:
    aus, d = demux_raw(ps_bytes(G711_BAD_PSM), 1412)
    assert len(aus) == 35_353 == d.audio_frames
    assert all(a.codec is Codec.G711A and a.keyframe for a in aus)
    # es_map_length says 8, the packet holds 14 bytes of entries: parsed by the packet length, counted good.
    assert d.stream_types == {0xE0: 0x1B, 0xC0: 0x90}
    assert d.bad_psms == 0 and d.psms > 0
    assert d.frames == 0 and d.dropped_bytes == 0 and d.resyncs == 0
    assert {len(a.data) for a in aus} == {80, 160}  # 10 ms (and twice 20 ms) of 8 kHz G.711
    pts = [a.pts for a in aus]
    assert all(p is not None for p in pts)
    import av

    ctx = av.CodecContext.create("pcm_alaw", "r")
    ctx.sample_rate = 8000
    ctx.layout = "mono"
    samples = sum(f.samples for a in aus[:2000] for f in ctx.decode(av.Packet(a.data)))
    assert samples == sum(len(a.data) for a in aus[:2000])


def test_gstreamer_capture() -> None:
    aus, d = demux_rtp(GSTREAMER)
    assert len(aus) == 199 and d.packs == 14  # many frames per pack: frames end at a new PTS / the marker
    assert sum(a.keyframe for a in aus) == 16 and aus[0].keyframe
    assert d.stream_types == {0xE0: 0x1B}
    sizes, errors = decode_video("h264", (a.data for a in aus))
    assert errors == 0 and len(sizes) == 199 and set(sizes) == {(640, 480)}
    assert (d.width, d.height) == (640, 480)


def test_gomedia_capture_h264_and_aac() -> None:
    aus, d = demux_rtp(GOMEDIA)
    v = video(aus)
    a = [x for x in aus if x.codec.is_audio]
    assert (len(v), len(a), d.keyframes) == (308, 332, 13)
    assert d.stream_types == {0xE0: 0x1B, 0xC0: 0x0F}
    assert all(x.codec is Codec.AAC and x.data[:2] in (b"\xff\xf1", b"\xff\xf9") for x in a)
    sizes, errors = decode_video("h264", (x.data for x in v))
    assert errors == 0 and len(sizes) == 308 and set(sizes) == {(768, 320)}
    import av

    ctx = av.CodecContext.create("aac", "r")
    decoded = sum(f.samples for x in a for f in ctx.decode(av.Packet(x.data)))
    assert decoded >= 331 * 1024


@pytest.mark.parametrize("name", [HIKVISION, GSTREAMER, GOMEDIA])
def test_capture_agrees_with_pyav_demuxer(name: str) -> None:
    import io

    import av

    aus, _ = demux_rtp(name)
    with av.open(io.BytesIO(ps_bytes(name)), format="mpeg") as container:
        theirs = [bytes(p) for p in container.demux() if p.size and p.stream.type == "video"]
    assert [a.data for a in video(aus)] == theirs


@pytest.mark.parametrize(("name", "step"), [(HIKVISION, 29), (GSTREAMER, 1), (GOMEDIA, 2)])
@pytest.mark.parametrize("burst", [1, 3])
def test_lost_packets_never_produce_a_damaged_frame(name: str, step: int, burst: int) -> None:
    """Lose ``burst`` packets at many positions (the next one flagged): what comes out is always a subset of the
    clean frames, and at most the frames the lost packets touched are missing."""
    clean, _ = demux_rtp(name)
    clean_set = {(a.pts, a.data) for a in clean}
    count = len(rtp_packets(name))
    for lost in range(0, count - burst, step):
        aus, d = demux_rtp(name, PsDemuxer(wait_keyframe=False), drop=range(lost, lost + burst))
        assert {(a.pts, a.data) for a in aus} <= clean_set, lost
        assert len(aus) >= len(clean) - burst - 1, lost
        assert d.buffered_bytes == 0


# -- codecs --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("encoder", "codec"), [("libx264", Codec.H264), ("libx265", Codec.H265)])
def test_codec_inferred_without_psm(encoder: str, codec: Codec) -> None:
    enc, ps = stream(codec=encoder)
    aus, d = demux_raw(without_psm(b"".join(ps)))
    assert d.psms == 0 and d.stream_types == {}
    assert all(a.codec is codec for a in aus)
    assert same_frames(aus, enc)
    assert d.video_codec is codec and (d.width, d.height) == (320, 240)


def test_h265_parameter_sets_tracked() -> None:
    _, ps = stream(codec="libx265")
    aus, d = demux_raw(b"".join(ps))
    assert d.video_codec is Codec.H265
    assert d.vps is not None and (d.vps[0] >> 1) & 0x3F == 32
    assert d.sps is not None and (d.sps[0] >> 1) & 0x3F == 33
    assert d.pps is not None and (d.pps[0] >> 1) & 0x3F == 34
    assert sum(a.keyframe for a in aus) == 2


def _audio_pes(payload: bytes, pts: int) -> bytes:
    return pack_header(pts, 1000) + b"".join(pes_packets(0xC0, payload, pts, None))


def test_audio_codec_guessed_without_psm() -> None:
    g711 = b"".join(_audio_pes(bytes([0xD5]) * 160, 3600 * i) for i in range(3))
    aus, d = demux_raw(g711)
    assert [a.codec for a in aus] == [Codec.G711A] * 3 and d.audio_codec is None
    adts = b"\xff\xf1\x50\x80\x02\x1f\xfc" + bytes(9)
    aus, _ = demux_raw(b"".join(_audio_pes(adts, 1920 * i) for i in range(3)))
    assert [a.codec for a in aus] == [Codec.AAC] * 3
    assert [a.pts for a in aus] == [0, 1920, 3840] and all(a.data == adts for a in aus)


def test_psm_length_errors_and_last_good_mapping() -> None:
    enc, ps = stream()
    body = without_psm(b"".join(ps[:5]))
    first, rest = body[:14], body[14:]  # the first pack header, then PES packets
    # es_map_length too small and too large: the packet length decides
    for n in (0, 3, 7, 100):
        aus, d = demux_raw(first + psm([(0x24, 0xE0), (0x90, 0xC0)], es_map_length=n) + rest)
        assert d.stream_types == {0xE0: 0x24, 0xC0: 0x90}, n
        assert d.video_codec is Codec.H265  # the PSM wins over what the data looks like
        assert d.psms == 1 and d.bad_psms == 0
    # a map that tiles with neither length, after a good one: counted, ignored
    good = psm([(0x1B, 0xE0)])
    damaged = bytearray(psm([(0x24, 0xE0), (0x0F, 0xC0)]))
    damaged[15] = 0x40  # the first entry's elementary_stream_info_length: 64 bytes, past the packet
    aus, d = demux_raw(first + good + bytes(damaged) + rest)
    assert d.stream_types == {0xE0: 0x1B} and (d.psms, d.bad_psms) == (1, 1)
    assert video(aus) == [a for a in aus]
    assert same_frames(aus, enc[:5])
    # program_stream_info_length past the packet
    bad_info = bytearray(psm([(0x24, 0xE0)]))
    bad_info[8:10] = b"\x01\x00"
    aus, d = demux_raw(first + bytes(bad_info) + rest)
    assert d.bad_psms == 1 and d.video_codec is Codec.H264 and same_frames(aus, enc[:5])
    # too short to hold anything; then a PSM longer than max_psm_size is skipped by its length
    aus, d = demux_raw(first + b"\x00\x00\x01\xbc\x00\x02\xe0\xff" + rest)
    assert d.bad_psms == 1 and same_frames(aus, enc[:5])
    huge = b"\x00\x00\x01\xbc\x20\x00" + bytes(0x2000)
    aus, d = demux_raw(first + huge + rest, 1000)
    assert d.bad_psms == 1 and same_frames(aus, enc[:5])


def test_psm_switches_codec() -> None:
    _, ps264 = stream()
    _, ps265 = stream(codec="libx265")
    aus, d = demux_raw(b"".join(ps264[:10] + ps265[:10]))
    assert [a.codec for a in aus] == [Codec.H264] * 10 + [Codec.H265] * 10
    assert d.psms == 2


# -- frame boundaries ----------------------------------------------------------------------------------------------


def test_frames_leave_on_their_marker_packet() -> None:
    enc, ps = stream()
    d = PsDemuxer()
    for payload, marker, index in split_payloads(ps, 500):
        out = d.feed(payload, marker)
        if marker:
            assert len(out) == 1 and out[0].data == enc[index].data, index
        else:
            assert out == []
    assert d.flush() == []


def test_without_markers_a_frame_leaves_with_the_next_pts() -> None:
    enc, ps = stream()
    d = PsDemuxer()
    got: list[tuple[int, AccessUnit]] = []
    for payload, _, index in split_payloads(ps, 500):
        got += [(index, a) for a in d.feed(payload)]
    got += [(len(ps), a) for a in d.flush()]
    assert [a.data for _, a in got] == [f.data for f in enc]
    assert [i for i, _ in got] == list(range(1, len(ps) + 1))


def test_frame_spread_over_several_pes_and_packs() -> None:
    """DVD-style: a pack per PES and the PTS only on the first PES of a frame; also a repeated PTS."""
    enc, _ = stream()
    out = bytearray()
    for f in enc:
        third = len(f.data) // 3
        pieces = [f.data[:third], f.data[third : 2 * third], f.data[2 * third :]]
        for k, piece in enumerate(pieces):
            out += pack_header(f.dts, 1000)
            pts = f.pts if k == 0 or k == 2 else None  # the last PES repeats the PTS
            out += b"".join(pes_packets(0xE0, piece, pts, f.dts if pts is not None else None))
    aus, d = demux_raw(bytes(out), 333)
    assert same_frames(aus, enc)


def test_stream_without_any_pts() -> None:
    """A pack per frame and no timestamps at all: each PES after a pack header starts a frame."""
    enc, _ = stream()
    out = b"".join(pack_header(0, 1000) + b"".join(pes_packets(0xE0, f.data, None, None)) for f in enc)
    aus, _ = demux_raw(out, 700)
    assert [a.data for a in aus] == [f.data for f in enc]
    assert all(a.pts is None and a.dts is None for a in aus)


def test_wait_keyframe() -> None:
    enc, ps = stream(frames=20, gop=10)
    aus, d = demux_raw(b"".join(ps[3:]))
    assert d.skipped_frames == 7 and aus[0].keyframe and same_frames(aus, enc[10:])
    aus, d = demux_raw(b"".join(ps[3:]), demux=PsDemuxer(wait_keyframe=False))
    assert d.skipped_frames == 0 and same_frames(aus, enc[3:])


def test_marker_on_every_packet_is_soon_ignored() -> None:
    """A device that sets the marker on every packet: the first frames come out split, then markers are
    distrusted and frames are whole again."""
    enc, _ = stream()
    items: list[tuple[bytes, bool, int]] = []
    for i, f in enumerate(enc):
        ps = pack_header(f.dts, 1000)
        chunks = [f.data[j : j + 400] for j in range(0, len(f.data), 400)]
        for k, chunk in enumerate(chunks):  # one PES per packet, each repeating the PTS (gomedia-style)
            items.append(((ps if k == 0 else b"") + b"".join(pes_packets(0xE0, chunk, f.pts, None)), True, i))
    d = PsDemuxer()
    aus = demux_payloads(items, d)
    assert d.marker_misfires >= 3
    assert [a.data for a in aus[-15:]] == [f.data for f in enc[-15:]]


def test_audio_and_video_interleaved_with_split_audio_pes() -> None:
    enc, _ = stream()
    out = bytearray()
    for i, f in enumerate(enc):
        out += pack_header(f.dts, 1000) + b"".join(pes_packets(0xE0, f.data, f.pts, None))
        out += b"".join(pes_packets(0xC0, bytes([i]) * 320, f.pts, None))
    aus, d = demux_raw(bytes(out), 97)
    assert same_frames(video(aus), enc)
    audio = [a for a in aus if a.codec.is_audio]
    assert [a.data for a in audio] == [bytes([i]) * 320 for i in range(len(enc))]
    assert d.audio_frames == len(enc)


def test_other_packets_are_skipped_by_length() -> None:
    enc, _ = stream()
    junk = b"\x00\x00\x01\xba\x00\x00\x01\xe0\xff\xff"  # start codes inside skipped packets mean nothing
    out = bytearray()
    for f in enc:
        out += pack_header(f.dts, 1000)
        for sid in (0xBB, 0xBD, 0xBE, 0xBF, 0xF0, 0xFF):
            out += b"\x00\x00\x01" + bytes((sid,)) + struct.pack(">H", len(junk)) + junk
        out += b"".join(pes_packets(0xE0, f.data, f.pts, None))
        out += b"".join(pes_packets(0xE1, b"\x00\x00\x00\x01\x65second video", f.pts, None))  # ignored
    out += b"\x00\x00\x01\xb9"  # MPEG_program_end_code
    aus, d = demux_raw(bytes(out), 211)
    assert [a.data for a in aus] == [f.data for f in enc]
    assert d.skipped_packets == 6 * len(enc) and d.dropped_bytes == 0 and d.resyncs == 0


def test_unbounded_video_pes() -> None:
    """PES_packet_length 0: the payload runs to the next system start code, found across chunk borders."""
    enc, _ = stream()
    out = bytearray()
    for f in enc:
        header = pes_packets(0xE0, b"", f.pts, None)[0]
        out += pack_header(f.dts, 1000) + header[:4] + b"\x00\x00" + header[6:] + f.data
    data = bytes(out)
    for chunk in (None, 1, 2, 3, 5, 1400):
        aus, d = demux_raw(data, chunk)
        assert [a.data for a in aus] == [f.data for f in enc], chunk
    # and split exactly inside a start code, with the marker on the frame's last packet
    items: list[tuple[bytes, bool, int]] = []
    pos = 0
    for i in range(len(enc)):
        end = data.find(b"\x00\x00\x01\xba", pos + 4)
        end = len(data) if end < 0 else end
        frame = data[pos:end]
        items += [(frame[:-2], False, i), (frame[-2:], True, i)]
        pos = end
    aus = demux_payloads(items)
    assert [a.data for a in aus] == [f.data for f in enc]


def test_mpeg1_pack_and_pes_headers() -> None:
    enc, _ = stream()
    out = bytearray()
    for f in enc:
        out += b"\x00\x00\x01\xba\x21\x00\x01\x00\x01\x80\x00\x01"  # ISO/IEC 11172-1 pack (12 bytes)
        ts = pes_packets(0xE0, b"", f.pts, f.dts)[0][9:19]  # '0011' PTS + '0001' DTS fields
        header = b"\xff\xff" + b"\x60\x00" + ts  # stuffing, STD buffer, PTS+DTS
        out += b"\x00\x00\x01\xe0" + struct.pack(">H", len(header) + len(f.data)) + header + f.data
        header = b"\x0f"  # no timestamps
        out += b"\x00\x00\x01\xc0" + struct.pack(">H", len(header) + 4) + header + b"abcd"
    aus, d = demux_raw(bytes(out), 100)
    assert same_frames(video(aus), enc)
    assert len(aus) == 2 * len(enc) and d.packs == len(enc)


# -- resynchronisation ---------------------------------------------------------------------------------------------

GARBAGE = [
    bytes(range(1, 200)),  # no start code at all
    b"\xff" * 50,
    b"\x00\x00\x01\x09\x10\x00\x00\x01\x65" + bytes(range(1, 40)),  # Annex B start codes, not PS ones
    b"\x00\x00\x01\xe0\x00\x10\x00" + bytes(range(1, 30)),  # a PES start code with an invalid header
    b"\x00\x00\x01\xba\xff" + bytes(range(1, 30)),  # a pack start code with an invalid header
    b"\x00\x00\x00\x00\x00",  # zero padding
]


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
@pytest.mark.parametrize("chunk", [None, 1, 331])
def test_garbage_between_packs(garbage: bytes, chunk: int | None) -> None:
    enc, ps = stream()
    aus, d = demux_raw(garbage.join(ps) + garbage, chunk)
    assert same_frames(aus, enc)
    assert d.resyncs == len(ps)
    assert d.truncated_frames == 0 and d.buffered_bytes == 0


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_after_each_marker_packet(garbage: bytes) -> None:
    enc, ps = stream()
    items = [(p + garbage if m else p, m, i) for p, m, i in split_payloads(ps, 600)]
    aus = demux_payloads(items)
    assert same_frames(aus, enc)


def test_garbage_at_the_start_and_joining_mid_frame() -> None:
    enc, ps = stream()
    data = b"".join(ps)
    start = len(ps[0]) // 2  # mid keyframe
    aus, d = demux_raw(data[start:], 500)
    assert same_frames(aus, enc[10:])  # the first frame is gone, the P frames wait for the next keyframe
    assert d.resyncs == 0 and d.dropped_bytes > 0


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_lost_packet_signalled_by_the_caller(where: str) -> None:
    enc, ps = stream()
    items = split_payloads(ps, 300)
    frame5 = [k for k, (_, _, i) in enumerate(items) if i == 5]
    assert len(frame5) >= 3
    lost = {"first": frame5[0], "middle": frame5[1], "last": frame5[-1]}[where]
    d = PsDemuxer()
    aus: list[AccessUnit] = []
    for k, (payload, marker, _) in enumerate(items):
        if k != lost:
            aus += d.feed(payload, marker, discontinuity=k == lost + 1)
    aus += d.flush()
    assert same_frames(aus, enc[:5] + enc[6:])
    assert d.resyncs == 1
    assert d.truncated_frames == (0 if where == "first" else 1)


def test_unsignalled_loss_recovers() -> None:
    """A packet vanishes and nobody says so: the PES length runs on; the demuxer must find its way back."""
    enc, ps = stream()
    items = split_payloads(ps, 300)
    lost = next(k for k, (_, _, i) in enumerate(items) if i == 5) + 1
    aus = demux_payloads(items[:lost] + items[lost + 1 :])
    got = {(a.pts, a.data) for a in aus}
    want = [(f.pts, f.data) for f in enc]
    assert (enc[5].pts, enc[5].data) not in got
    assert set(want[7:]) <= got and set(want[:5]) <= got


def _set_pes_length(ps: bytes, delta: int) -> bytes:
    """``ps`` (one muxed frame) with its video PES_packet_length changed by ``delta`` (clamped to 16 bits)."""
    i = ps.find(b"\x00\x00\x01\xe0")
    n = struct.unpack_from(">H", ps, i + 4)[0]
    return ps[: i + 4] + struct.pack(">H", min(n + delta, 0xFFFF)) + ps[i + 6 :]


@pytest.mark.parametrize("markers", [False, True])
def test_truncated_pes(markers: bool) -> None:
    """The frame's data ends 100 bytes before its PES length says: it leaves cut short, the rest is intact."""
    enc, ps = stream()
    ps = list(ps)
    ps[5] = ps[5][:-100]
    if markers:
        aus = demux_payloads(split_payloads(ps, 400))
    else:
        aus, d = demux_raw(b"".join(ps), 400)
        assert d.pes_length_errors == 1
    assert aus[5].data == enc[5].data[:-100]
    assert same_frames(aus[:5] + aus[6:], enc[:5] + enc[6:])


@pytest.mark.parametrize("markers", [False, True])
@pytest.mark.parametrize("frame", [5, 19])
def test_huge_pes_length(markers: bool, frame: int) -> None:
    """PES_packet_length 65535 on a small frame: it swallows the frames behind it, which are recovered."""
    enc, ps = stream()
    ps = list(ps)
    ps[frame] = _set_pes_length(ps[frame], 0xFFFF)
    if markers:
        d = PsDemuxer()
        aus = demux_payloads(split_payloads(ps, 400), d)
    else:
        aus, d = demux_raw(b"".join(ps), 400)
    if frame == 19 and not markers:  # nothing after it, no marker: indistinguishable from a truncated frame
        assert same_frames(aus, enc[:19]) and d.truncated_frames == 1
    else:
        assert same_frames(aus, enc)
        assert d.pes_length_errors == 1
    assert d.buffered_bytes == 0


@pytest.mark.parametrize("split", range(1, 80))
def test_headers_split_across_payloads(split: int) -> None:
    """Every cut through a keyframe's pack header, system header, PSM and PES header (PTS included)."""
    enc, ps = stream()
    items = split_payloads(ps, 100_000)
    k = next(n for n, (_, _, i) in enumerate(items) if i == 10)
    payload = items[k][0]
    items[k : k + 1] = [(payload[:split], False, 10), (payload[split:], True, 10)]
    assert same_frames(demux_payloads(items), enc)


def test_endless_data_without_a_start_code_is_not_buffered() -> None:
    d = PsDemuxer()
    rng = random.Random(1)
    noise = bytes(rng.randrange(1, 256) for _ in range(1400))
    for _ in range(2000):
        assert d.feed(noise) == []
        assert d.buffered_bytes <= 3
    for _ in range(100):
        d.feed(bytes(1400))  # zeros: every position could begin a start code
        assert d.buffered_bytes <= 3
    assert d.dropped_bytes >= 2100 * 1400 - 3


def _ps_shaped_noise(rng: random.Random, size: int) -> bytes:
    """Random bytes dense with PS start codes and header-like bytes."""
    out = bytearray()
    while len(out) < size:
        r = rng.random()
        if r < 0.3:
            sid = rng.choice([0xBA, 0xBB, 0xBC, 0xBD, 0xC0, 0xE0, 0xE0, 0xE0, rng.randrange(0xB9, 0x100)])
            out += (
                b"\x00\x00\x01" + bytes((sid,)) + rng.randbytes(2) + bytes((rng.choice([0x80, 0x84, 0x44]),))
            )
            out += bytes((rng.choice([0x80, 0xC0, 0x00]), rng.choice([5, 10, 0, 255])))
        elif r < 0.4:
            out += b"\x00\x00\x00\x01" + bytes((rng.choice([0x67, 0x68, 0x65, 0x41, 0x40]),))
        else:
            out += rng.randbytes(rng.randrange(1, 3000))
    return bytes(out[:size])


def test_random_data_stays_bounded() -> None:
    d = PsDemuxer(max_frame_size=1 << 20)
    rng = random.Random(2)
    for i in range(6000):
        data = rng.randbytes(1400) if i % 2 else _ps_shaped_noise(rng, 1400)
        for au in d.feed(data, rng.random() < 0.2, rng.random() < 0.01):
            assert len(au.data) <= 1 << 20
        assert d.buffered_bytes <= 2 * (1 << 20) + 4096 + 6 + 264
    assert d.resyncs > 100


def test_oversized_frame_is_dropped() -> None:
    enc, ps = stream()
    big = max(range(len(enc)), key=lambda i: len(enc[i].data))
    limit = len(enc[big].data) - 1
    aus, d = demux_raw(b"".join(ps), 500, PsDemuxer(max_frame_size=limit, wait_keyframe=False))
    assert d.oversized_frames == 1
    assert same_frames(aus, [f for i, f in enumerate(enc) if i != big])
    assert d.buffered_bytes == 0


def test_reset_and_flush() -> None:
    enc, ps = stream()
    d = PsDemuxer()
    half = len(ps[0]) // 2
    assert d.feed(ps[0][:half]) == []
    assert d.buffered_bytes > 0
    d.reset()
    assert d.buffered_bytes == 0 and d.truncated_frames == 1 and d.resyncs == 1
    aus = d.feed(b"".join(ps[10:])) + d.flush()
    assert same_frames(aus, enc[10:])
    # flush drops a frame whose PES is incomplete, emits one that is complete
    d = PsDemuxer()
    d.feed(ps[0])
    assert d.flush()[0].data == enc[0].data
    d.feed(ps[0][:-1])
    assert d.flush() == [] and d.truncated_frames == 1


def test_buffers_passed_are_not_copied_until_the_frame_leaves() -> None:
    enc, ps = stream()
    d = PsDemuxer()
    items = split_payloads(ps, 1000)
    aus: list[AccessUnit] = []
    for payload, marker, _ in items:
        aus += d.feed(bytearray(payload), marker)  # any buffer works
    assert same_frames(aus, enc)


# -- fuzzing -------------------------------------------------------------------------------------------------------

_BOUND = 2 * 64 * 1024 + 4096 + 6 + 264  # a video frame and an audio PES at the cap, a PSM in the tail


def _check_bounded(d: PsDemuxer) -> None:
    assert d.buffered_bytes <= _BOUND
    assert len(d._tail) <= 4096 + 6  # noqa: SLF001 - the internal buffer itself


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(max_size=300), st.booleans(), st.booleans()), max_size=30))
def test_fuzz_arbitrary_bytes_never_raise(chunks: list[tuple[bytes, bool, bool]]) -> None:
    d = PsDemuxer(max_frame_size=64 * 1024)
    for data, marker, gap in chunks:
        for au in d.feed(data, marker, gap):
            assert isinstance(au, AccessUnit)
        _check_bounded(d)
    d.flush()
    assert d.buffered_bytes == 0


_PS_ALPHABET = [
    b"\x00\x00\x01\xba",
    b"\x00\x00\x01\xe0",
    b"\x00\x00\x01\xc0",
    b"\x00\x00\x01\xbc",
    b"\x00\x00\x01\xbd",
    b"\x44\x00\x04\x00\x04\x01\x00\x00\x03\xf8",
    b"\x80\x80\x05\x21\x00\x01\x00\x01",
    b"\x00\x0a",
    b"\xff\xff",
    b"\x00\x00\x00\x01\x67",
    b"\x00\x00\x00\x01\x65",
    b"\x00",
    b"\x81\xc0\x0a",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(_PS_ALPHABET) | st.binary(max_size=12), max_size=80),
    st.integers(1, 64),
    st.booleans(),
)
def test_fuzz_ps_shaped_bytes_never_raise(tokens: list[bytes], chunk: int, markers: bool) -> None:
    data = b"".join(tokens)
    d = PsDemuxer(max_frame_size=64 * 1024, wait_keyframe=False)
    for i in range(0, len(data), chunk):
        d.feed(data[i : i + chunk], markers and (i // chunk) % 3 == 2)
        _check_bounded(d)
    d.flush()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(st.data())
def test_fuzz_mutated_streams_never_raise(data: st.DataObject) -> None:
    enc, ps = stream()
    buf = bytearray(b"".join(ps[:6]))
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "delete", "insert", "dup"]))
        at = data.draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[at] ^= data.draw(st.integers(1, 255))
        elif kind == "delete":
            del buf[at : at + data.draw(st.integers(1, 300))]
        elif kind == "insert":
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=40))
        else:
            buf[at:at] = buf[max(0, at - 200) : at]
        if not buf:
            buf = bytearray(b"\x00")
    chunk = data.draw(st.integers(1, 2000))
    d = PsDemuxer(max_frame_size=64 * 1024)
    for i in range(0, len(buf), chunk):
        d.feed(bytes(buf[i : i + chunk]), data.draw(st.booleans()), data.draw(st.booleans()))
        _check_bounded(d)
    d.flush()
