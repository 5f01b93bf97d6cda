"""media.rtp: header parsing (fast tuple and dataclass), exact errors on truncation, RTP/RTCP demux, building,
and RFC 4571 framing over a real Hikvision capture fed whole, in random chunks and byte by byte.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.rtp import (
    RFC4571_MAX_FRAME,
    RTP_HEADER_SIZE,
    Rfc4571Decoder,
    RtcpPacketType,
    RtpError,
    RtpPacket,
    build_rtp,
    is_rtcp,
    parse_rtp,
    rfc4571_frame,
)
from media.seq import uint16_add

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HIKVISION = SHARED_DATA / "hikvision_h264_704x576_ps.lenpfx.rtp"
needs_capture = pytest.mark.skipif(
    not HIKVISION.is_file(),
    reason=f"third-party capture not present: {HIKVISION} (the ../shared/data checkout)",
)

# A hand-built packet exercising every optional part of the RFC 3550 §5.1 header.
FULL_PACKET = bytes.fromhex(
    "b2"  # V=2, P=1, X=1, CC=2
    "e0"  # M=1, PT=96
    "1234"  # sequence number
    "deadbeef"  # timestamp
    "05f5ed76"  # SSRC
    "11111111 22222222"  # CSRC list
    "bede 0001"  # extension: profile 0xBEDE, 1 word
    "10aa0000"  # extension word
    "5053 5041 594c 4f41 4421"  # payload "PSPAYLOAD!"
    "00000004"  # padding: 3 zeros and the count
)
FULL_PAYLOAD = b"PSPAYLOAD!"


def split_lenpfx(data: bytes) -> list[bytes]:
    """Reference RFC 4571 splitter for test input (independent of the decoder under test)."""
    out = []
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack_from("!H", data, pos)
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    assert pos == len(data)
    return out


# -- parse_rtp -----------------------------------------------------------------------------------------------


def test_parse_plain_packet() -> None:
    pkt = bytes.fromhex("80 60 0001 00000e10 05f5ed76") + b"payload"
    assert parse_rtp(pkt) == (96, False, 1, 3600, 0x05F5ED76, 12, len(pkt))
    assert parse_rtp(memoryview(pkt)) == parse_rtp(pkt)
    assert parse_rtp(bytearray(pkt)) == parse_rtp(pkt)


def test_parse_full_packet() -> None:
    pt, marker, seq, ts, ssrc, off, end = parse_rtp(FULL_PACKET)
    assert (pt, marker, seq, ts, ssrc) == (96, True, 0x1234, 0xDEADBEEF, 0x05F5ED76)
    assert (off, end) == (28, 38)
    assert FULL_PACKET[off:end] == FULL_PAYLOAD
    view = memoryview(FULL_PACKET)
    assert parse_rtp(view) == (pt, marker, seq, ts, ssrc, off, end)
    assert view[off:end].obj is FULL_PACKET  # a view of the buffer, not a copy


def test_rtp_packet_parse_and_round_trip() -> None:
    packet = RtpPacket.parse(FULL_PACKET)
    assert packet == RtpPacket(
        payload_type=96,
        sequence_number=0x1234,
        timestamp=0xDEADBEEF,
        ssrc=0x05F5ED76,
        payload=FULL_PAYLOAD,
        marker=True,
        csrc=(0x11111111, 0x22222222),
        extension_profile=0xBEDE,
        extension=bytes.fromhex("10aa0000"),
        padding_size=4,
    )
    assert bytes(packet) == FULL_PACKET


def test_rtp_packet_minimal_round_trip() -> None:
    packet = RtpPacket(payload_type=8, sequence_number=65535, timestamp=0, ssrc=1, payload=b"\xd5" * 160)
    data = bytes(packet)
    assert data[:2] == b"\x80\x08"
    assert RtpPacket.parse(data) == packet
    assert RtpPacket.parse(memoryview(data)) == packet


def test_rtp_packet_empty_extension_and_payload() -> None:
    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=2, ssrc=3, extension_profile=0x1000)
    data = bytes(packet)
    assert len(data) == 16
    assert RtpPacket.parse(data) == packet
    assert parse_rtp(data)[5:] == (16, 16)


def test_rtp_packet_build_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="more than 15 CSRCs"):
        bytes(RtpPacket(96, 1, 2, 3, csrc=tuple(range(16))))
    with pytest.raises(ValueError, match="multiple of 4"):
        bytes(RtpPacket(96, 1, 2, 3, extension_profile=1, extension=b"abc"))
    with pytest.raises(ValueError, match="padding size"):
        bytes(RtpPacket(96, 1, 2, 3, padding_size=256))


def _truncation_error(n: int) -> str:
    if n < 12:
        return "RTP packet too short"
    if n < 20:
        return "RTP CSRC list truncated"
    if n < 28:
        return "RTP header extension truncated"
    if n <= 38:
        return "RTP padding exceeds payload"  # header only, or a payload byte ("P".."!" >= 33) as the count
    return "RTP padding length 0"  # a prefix ending in the zero padding octets


@pytest.mark.parametrize("n", range(len(FULL_PACKET)))
def test_truncated_full_packet(n: int) -> None:
    with pytest.raises(RtpError) as exc:
        parse_rtp(FULL_PACKET[:n])
    assert str(exc.value) == _truncation_error(n)
    with pytest.raises(RtpError) as exc2:
        RtpPacket.parse(FULL_PACKET[:n])
    assert str(exc2.value) == str(exc.value)


@pytest.mark.parametrize("n", range(RTP_HEADER_SIZE))
def test_truncated_plain_header(n: int) -> None:
    with pytest.raises(RtpError, match="^RTP packet too short$"):
        parse_rtp(bytes.fromhex("80 60 0001 00000e10 05f5ed76")[:n])


@pytest.mark.parametrize(("first", "version"), [(0x00, 0), (0x40, 1), (0xC0, 3), (0x7F, 1)])
def test_wrong_version(first: int, version: int) -> None:
    with pytest.raises(RtpError) as exc:
        parse_rtp(bytes([first]) + bytes(20))
    assert str(exc.value) == f"RTP version {version}"


def test_extension_length_beyond_packet() -> None:
    pkt = bytes.fromhex("90 60 0001 00000000 00000001 bede ffff") + bytes(8)
    with pytest.raises(RtpError, match="^RTP header extension truncated$"):
        parse_rtp(pkt)


def test_padding_errors() -> None:
    header = bytes.fromhex("a0 60 0001 00000000 00000001")
    with pytest.raises(RtpError, match="^RTP padding exceeds payload$"):
        parse_rtp(header + b"ab\x04")
    with pytest.raises(RtpError, match="^RTP padding length 0$"):
        parse_rtp(header + b"ab\x00")
    # padding that consumes the whole payload is legal: an empty payload
    assert parse_rtp(header + b"\x00\x00\x03")[5:] == (12, 12)
    assert parse_rtp(header + b"xy\x00\x02")[5:] == (12, 14)


def test_rtp_error_is_value_error() -> None:
    assert issubclass(RtpError, ValueError)


# -- is_rtcp ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ptype", [200, 201, 202, 203, 204])
def test_is_rtcp_for_sr_rr_sdes_bye_app(ptype: int) -> None:
    assert RtcpPacketType(ptype)
    assert is_rtcp(bytes([0x81, ptype, 0x00, 0x07]) + bytes(28))


def test_is_rtcp_feedback_and_xr() -> None:
    for ptype in (RtcpPacketType.RTPFB, RtcpPacketType.PSFB, RtcpPacketType.XR):
        assert is_rtcp(bytes([0x80, ptype, 0, 2]) + bytes(8))


@pytest.mark.parametrize("second", [0x60, 0xE0, 0x08, 0x88, 0x00, 0x80, 0xE2, 0xFF])
def test_is_rtcp_false_for_rtp(second: int) -> None:
    # PT 96 with and without the marker (0xE0), PCMA (8 / 0x88), PCMU, PT 98 with marker
    assert not is_rtcp(bytes([0x80, second]) + bytes(10))


def test_is_rtcp_short_buffers() -> None:
    assert not is_rtcp(b"")
    assert not is_rtcp(b"\x80")
    assert is_rtcp(memoryview(b"\x80\xc8"))


# -- build_rtp ---------------------------------------------------------------------------------------------------


def test_build_rtp() -> None:
    pkt = build_rtp(96, True, 0x1234, 0xDEADBEEF, 0x05F5ED76, b"abc")
    assert pkt == bytes.fromhex("80 e0 1234 deadbeef 05f5ed76") + b"abc"
    assert parse_rtp(pkt) == (96, True, 0x1234, 0xDEADBEEF, 0x05F5ED76, 12, 15)
    assert (
        build_rtp(8, False, 65536 + 5, 2**32 + 7, 1, memoryview(b"x"))
        == bytes.fromhex("80 08 0005 00000007 00000001") + b"x"
    )
    assert RtpPacket.parse(pkt) == RtpPacket(96, 0x1234, 0xDEADBEEF, 0x05F5ED76, b"abc", marker=True)


@given(
    st.integers(0, 127),
    st.booleans(),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=64),
)
def test_build_parse_round_trip(pt: int, marker: bool, seq: int, ts: int, ssrc: int, payload: bytes) -> None:
    pkt = build_rtp(pt, marker, seq, ts, ssrc, payload)
    assert parse_rtp(pkt) == (pt, marker, seq, ts, ssrc, 12, 12 + len(payload))
    assert bytes(RtpPacket.parse(pkt)) == pkt


# -- RFC 4571 ------------------------------------------------------------------------------------------------------


def test_frame_and_decode() -> None:
    a = build_rtp(96, False, 1, 0, 5, b"first")
    b = build_rtp(96, True, 2, 0, 5, b"second")
    stream = rfc4571_frame(a) + rfc4571_frame(b)
    assert stream[:2] == struct.pack("!H", len(a))
    dec = Rfc4571Decoder()
    out = dec.feed(stream)
    assert [bytes(f) for f in out] == [a, b]
    assert all(f.obj is stream for f in out)  # complete frames are views of the fed chunk
    assert dec.pending == 0
    assert dec.frames == 2
    assert Rfc4571Decoder.frame(a) == rfc4571_frame(a)


def test_frame_limits() -> None:
    assert rfc4571_frame(b"") == b"\x00\x00"
    assert len(rfc4571_frame(bytes(RFC4571_MAX_FRAME))) == RFC4571_MAX_FRAME + 2
    with pytest.raises(ValueError, match="exceeds the RFC 4571 maximum"):
        rfc4571_frame(bytes(RFC4571_MAX_FRAME + 1))


def test_decoder_length_prefix_split_across_reads() -> None:
    pkt = build_rtp(96, False, 9, 0, 5, b"x" * 300)
    framed = rfc4571_frame(pkt)
    dec = Rfc4571Decoder()
    assert dec.feed(framed[:1]) == []
    assert dec.pending == 1
    assert dec.feed(b"") == []
    assert dec.feed(framed[1:2]) == []
    assert dec.pending == 2
    assert dec.feed(framed[2:100]) == []
    assert dec.pending == 100
    out = dec.feed(framed[100:] + framed[:1])
    assert [bytes(f) for f in out] == [pkt]
    assert dec.pending == 1
    assert [bytes(f) for f in dec.feed(framed[1:])] == [pkt]
    assert dec.pending == 0


def test_decoder_prefix_byte_then_whole_rest() -> None:
    pkt = b"\x80" * 20
    framed = rfc4571_frame(pkt)
    dec = Rfc4571Decoder()
    assert dec.feed(framed[:1]) == []
    assert [bytes(f) for f in dec.feed(framed[1:] + framed + framed[:3])] == [pkt, pkt]
    assert dec.pending == 3


def test_decoder_skips_zero_length_frames() -> None:
    dec = Rfc4571Decoder()
    stream = b"\x00\x00" + rfc4571_frame(b"abc") + b"\x00\x00\x00\x00" + rfc4571_frame(b"de") + b"\x00"
    assert [bytes(f) for f in dec.feed(stream)] == [b"abc", b"de"]
    assert dec.empty_frames == 3
    assert dec.pending == 1
    assert dec.feed(b"\x00") == []  # completes a zero-length frame split across reads
    assert dec.empty_frames == 4
    assert dec.pending == 0


def test_decoder_accepts_bytearray_and_memoryview() -> None:
    framed = rfc4571_frame(b"hello") * 2
    for chunk in (bytearray(framed), memoryview(framed)):
        assert [bytes(f) for f in Rfc4571Decoder().feed(chunk)] == [b"hello", b"hello"]


def test_decoder_partial_copy_is_independent_of_the_chunk() -> None:
    framed = rfc4571_frame(b"0123456789")
    buf = bytearray(framed[:6])
    dec = Rfc4571Decoder()
    assert dec.feed(buf) == []
    buf[:] = b"XXXXXX"  # a reused receive buffer
    assert [bytes(f) for f in dec.feed(framed[6:])] == [b"0123456789"]


def test_decoder_buffer_bounded_by_one_max_frame() -> None:
    dec = Rfc4571Decoder()
    big = rfc4571_frame(bytes(RFC4571_MAX_FRAME))
    for i in range(0, len(big) - 1, 4096):
        dec.feed(big[i : min(i + 4096, len(big) - 1)])
        assert dec.pending <= RFC4571_MAX_FRAME + 2
    assert dec.pending == RFC4571_MAX_FRAME + 1
    assert [len(f) for f in dec.feed(big[-1:])] == [RFC4571_MAX_FRAME]
    assert dec.pending == 0


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    data = draw(st.binary(max_size=2000))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    return data, cuts


@given(chunked())
@settings(max_examples=300)
def test_decoder_fuzz_bounded_and_chunking_invariant(sample: tuple[bytes, list[int]]) -> None:
    data, cuts = sample
    whole = Rfc4571Decoder()
    expected = [bytes(f) for f in whole.feed(data)]
    dec = Rfc4571Decoder()
    got: list[bytes] = []
    bounds = [0, *cuts, len(data)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        got += [bytes(f) for f in dec.feed(data[lo:hi])]
        assert dec.pending <= RFC4571_MAX_FRAME + 2
    assert got == expected
    assert dec.pending == whole.pending
    assert all(len(f) > 0 for f in got)
    for frame in got:
        try:
            parse_rtp(frame)
        except RtpError:
            pass


@given(st.binary(max_size=200))
@settings(max_examples=1000)
def test_parse_fuzz_only_rtp_error(data: bytes) -> None:
    for parse in (parse_rtp, RtpPacket.parse):
        try:
            result = parse(data)
        except RtpError:
            continue
        if isinstance(result, tuple):
            _, _, _, _, _, off, end = result
            assert 12 <= off <= end <= len(data)


@given(st.binary(min_size=12, max_size=64), st.integers(0, 255))
def test_parse_fuzz_version_2_headers(body: bytes, first: int) -> None:
    data = bytes([0x80 | (first & 0x3F)]) + body[1:]
    try:
        pt, marker, seq, ts, ssrc, off, end = parse_rtp(data)
    except RtpError:
        return
    packet = RtpPacket.parse(data)
    assert (packet.payload_type, packet.marker, packet.sequence_number) == (pt, marker, seq)
    assert packet.payload == data[off:end]


# -- the real capture ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def capture() -> tuple[bytes, list[bytes]]:
    data = HIKVISION.read_bytes()
    return data, split_lenpfx(data)


@needs_capture
def test_capture_fed_whole(capture: tuple[bytes, list[bytes]]) -> None:
    data, packets = capture
    dec = Rfc4571Decoder()
    frames = dec.feed(data)
    assert len(frames) == 3096
    assert [bytes(f) for f in frames] == packets
    assert dec.pending == 0
    seq = None
    markers = 0
    for frame in frames:
        pt, marker, s, _ts, ssrc, off, end = parse_rtp(frame)
        assert (pt, ssrc) == (96, 0x05F5ED76)
        assert off == 12 and end == len(frame) <= 1412
        if seq is not None:
            assert s == uint16_add(seq, 1)
        seq = s
        markers += marker
    assert markers == 1400  # one per PS pack (frame)


@needs_capture
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_capture_random_chunks(capture: tuple[bytes, list[bytes]], seed: int) -> None:
    data, packets = capture
    rng = random.Random(seed)
    dec = Rfc4571Decoder()
    got: list[bytes] = []
    pos = 0
    while pos < len(data):
        n = rng.choice((1, 2, 3, rng.randint(1, 1500), rng.randint(1, 70000)))
        got += [bytes(f) for f in dec.feed(data[pos : pos + n])]
        assert dec.pending <= RFC4571_MAX_FRAME + 2
        pos += n
    assert got == packets
    assert dec.pending == 0


@needs_capture
def test_capture_byte_by_byte_prefix(capture: tuple[bytes, list[bytes]]) -> None:
    data, packets = capture
    prefix = data[:30000]
    dec = Rfc4571Decoder()
    got: list[bytes] = []
    for i in range(len(prefix)):
        got += [bytes(f) for f in dec.feed(prefix[i : i + 1])]
        assert dec.pending <= 1414
    assert got == packets[: len(got)]
    assert len(got) == len(split_lenpfx(data[: sum(2 + len(p) for p in got)]))
    assert len(got) >= 20
    rest = dec.feed(data[30000:])
    assert got + [bytes(f) for f in rest] == packets


# --- RTCP sender reports and BYE (RTSP egress) ----------------------------------------------------------


def _rtcp_packets(buf: bytes) -> list[tuple[int, int, bytes]]:
    """(count, type, body) of each packet in a compound RTCP packet, checking the length fields."""
    out = []
    pos = 0
    while pos < len(buf):
        b0, pt, length = struct.unpack_from("!BBH", buf, pos)
        assert b0 >> 6 == 2
        end = pos + 4 + 4 * length
        assert end <= len(buf)
        out.append((b0 & 0x1F, pt, buf[pos + 4:end]))
        pos = end
    assert pos == len(buf)
    return out


def test_ntp_timestamp_of_unix_epoch_and_fraction() -> None:
    from media.rtp import NTP_EPOCH_OFFSET, ntp_timestamp
    assert ntp_timestamp(0.0) == NTP_EPOCH_OFFSET << 32
    assert ntp_timestamp(1.5) == ((NTP_EPOCH_OFFSET + 1) << 32) | (1 << 31)


def test_sender_report_layout() -> None:
    from media.rtp import build_sender_report, ntp_timestamp
    ntp = ntp_timestamp(1_700_000_000.25)
    buf = build_sender_report(0xDEADBEEF, ntp, 0x1_2345_6789, 1234, 567_890, "gw@example")
    packets = _rtcp_packets(buf)
    assert [p[1] for p in packets] == [200, 202]
    ssrc, hi, lo, ts, count, octets = struct.unpack("!IIIIII", packets[0][2])
    assert (ssrc, (hi << 32) | lo, ts, count, octets) == (0xDEADBEEF, ntp, 0x2345_6789, 1234, 567_890)
    sdes = packets[1][2]
    assert packets[1][0] == 1 and sdes[:4] == b"\xde\xad\xbe\xef"
    assert sdes[4] == 1 and sdes[6:6 + sdes[5]] == b"gw@example" and sdes[6 + sdes[5]] == 0
    assert len(buf) % 4 == 0


def test_rtcp_bye_carries_reason_and_is_recognised() -> None:
    from media.rtp import build_rtcp_bye, is_rtcp
    buf = build_rtcp_bye(7, "camera went offline")
    assert is_rtcp(buf)
    packets = _rtcp_packets(buf)
    assert [p[1] for p in packets] == [201, 202, 203]
    bye = packets[2][2]
    assert bye[:4] == (7).to_bytes(4, "big") and bye[5:5 + bye[4]] == b"camera went offline"
    assert [p[1] for p in _rtcp_packets(build_rtcp_bye(7, ntp=1 << 32))] == [200, 202, 203]
    assert [p[1] for p in _rtcp_packets(build_rtcp_bye(7))] == [201, 202, 203]
