"""RTSP core: requests in the shapes ffmpeg and VLC (live555) send, framing on one TCP connection, helpers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.rtsp import (
    InterleavedFrame,
    NptRange,
    RtspConnectionParser,
    RtspError,
    RtspInvalidRange,
    RtspRequest,
    RtspResponse,
    RtspTooLarge,
    RtspUrl,
    RtspVersionNotSupported,
    TransportSpec,
    build_response,
    error_response,
    format_range,
    format_session,
    parse_range,
    parse_session,
    parse_transport,
    parse_url,
    rtp_info,
    split_control,
)

URL = "rtsp://192.168.1.10:8554/34020000001320000001/34020000001310000001"

FFMPEG_OPTIONS = f"OPTIONS {URL} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: Lavf60.16.100\r\n\r\n".encode()
FFMPEG_DESCRIBE = (
    f"DESCRIBE {URL} RTSP/1.0\r\nAccept: application/sdp\r\nCSeq: 2\r\nUser-Agent: Lavf60.16.100\r\n\r\n"
).encode()
FFMPEG_SETUP_UDP = (
    f"SETUP {URL}/trackID=0 RTSP/1.0\r\nTransport: RTP/AVP/UDP;unicast;client_port=17778-17779\r\n"
    "CSeq: 3\r\nUser-Agent: Lavf60.16.100\r\n\r\n"
).encode()
FFMPEG_SETUP_TCP = (
    f"SETUP {URL}/trackID=0 RTSP/1.0\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
    "CSeq: 3\r\nUser-Agent: Lavf60.16.100\r\n\r\n"
).encode()
FFMPEG_PLAY = (
    f"PLAY {URL} RTSP/1.0\r\nRange: npt=0.000-\r\nCSeq: 4\r\nUser-Agent: Lavf60.16.100\r\n"
    "Session: 4f3a9c21\r\n\r\n"
).encode()
VLC_SETUP = (
    f"SETUP {URL}/trackID=0 RTSP/1.0\r\nCSeq: 4\r\nUser-Agent: LibVLC/3.0.20 (LIVE555 Streaming Media v2016.11.28)\r\n"
    "Transport: RTP/AVP;unicast;client_port=55880-55881\r\n\r\n"
).encode()
VLC_PLAY = (
    f"PLAY {URL}/ RTSP/1.0\r\nCSeq: 5\r\nUser-Agent: LibVLC/3.0.20 (LIVE555 Streaming Media v2016.11.28)\r\n"
    "Session: 4f3a9c21\r\nRange: npt=0.000-\r\n\r\n"
).encode()
VLC_GET_PARAMETER = (
    f"GET_PARAMETER {URL}/ RTSP/1.0\r\nCSeq: 6\r\nUser-Agent: LibVLC/3.0.20 (LIVE555 Streaming Media v2016.11.28)\r\n"
    "Session: 4f3a9c21\r\n\r\n"
).encode()
FFMPEG_TEARDOWN = (
    f"TEARDOWN {URL} RTSP/1.0\r\nCSeq: 5\r\nUser-Agent: Lavf60.16.100\r\nSession: 4f3a9c21\r\n\r\n"
).encode()
SET_PARAMETER = (
    f"SET_PARAMETER {URL} RTSP/1.0\r\nCSeq: 7\r\nSession: 4f3a9c21\r\nContent-Type: text/parameters\r\n"
    "Content-Length: 12\r\n\r\nbarparam: 1\n"
).encode()

ALL = [FFMPEG_OPTIONS, FFMPEG_DESCRIBE, FFMPEG_SETUP_UDP, FFMPEG_SETUP_TCP, FFMPEG_PLAY, VLC_SETUP, VLC_PLAY,
       VLC_GET_PARAMETER, FFMPEG_TEARDOWN, SET_PARAMETER]

RTCP_RR = bytes.fromhex("81c90007") + bytes(28)


def feed_all(parser: RtspConnectionParser, data: bytes, step: int | None = None) -> list[object]:
    if step is None:
        return list(parser.feed(data))
    out: list[object] = []
    for i in range(0, len(data), step):
        out.extend(parser.feed(data[i:i + step]))
    return out


# --------------------------------------------------------------------------------------------------------
# Messages


@pytest.mark.parametrize("data", ALL)
def test_round_trip(data: bytes) -> None:
    req = RtspRequest.parse(data)
    assert bytes(req) == data
    assert req.version == "RTSP/1.0"
    assert req.cseq is not None


def test_fields_and_case_insensitive_lookup() -> None:
    req = RtspRequest.parse(FFMPEG_DESCRIBE)
    assert (req.method, req.uri, req.cseq) == ("DESCRIBE", URL, 2)
    assert req.get("accept") == req.get("ACCEPT") == "application/sdp"
    assert req.get("Session") is None and req.session is None
    assert RtspRequest.parse(FFMPEG_PLAY).session == "4f3a9c21"
    req = RtspRequest.parse(SET_PARAMETER)
    assert req.body == b"barparam: 1\n"
    assert req.get_all("cseq") == ["7"]


def test_continuation_and_lf_only() -> None:
    req = RtspRequest.parse(b"OPTIONS * RTSP/1.0\nCSeq: 9\nX-Long: a\n  b\n\n")
    assert req.uri == "*" and req.get("x-long") == "a b" and req.cseq == 9


@pytest.mark.parametrize(("data", "exc", "message"), [
    (b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n", RtspError, "header block not terminated"),
    (b"OPTIONS * RTSP/1.0\r\n\r\n", RtspError, "missing CSeq"),
    (b"OPTIONS * RTSP/1.0\r\nCSeq: x\r\n\r\n", RtspError, "bad CSeq: 'x'"),
    (b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n", RtspVersionNotSupported, "unsupported version: 'RTSP/2.0'"),
    (b"OPTIONS * HTTP/1.1\r\nCSeq: 1\r\n\r\n", RtspVersionNotSupported, "unsupported version: 'HTTP/1.1'"),
    (b"OPTIONS\r\nCSeq: 1\r\n\r\n", RtspError, "bad request line: 'OPTIONS'"),
    (b"OPT(ONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", RtspError, "bad method: 'OPT(ONS'"),
    (b"OPTIONS * RTSP/1.0\r\nCSeq 1\r\n\r\n", RtspError, "bad header line: 'CSeq 1'"),
    (b"OPTIONS * RTSP/1.0\r\n CSeq: 1\r\n\r\n", RtspError, "continuation line before any header"),
    (b"ANNOUNCE * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 5\r\n\r\nabc", RtspError,
     "body of 3 bytes but Content-Length 5"),
    (b"ANNOUNCE * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: -1\r\n\r\n", RtspError, "bad Content-Length: '-1'"),
    (b"ANNOUNCE * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", RtspError,
     "conflicting Content-Length headers"),
])
def test_parse_errors(data: bytes, exc: type[RtspError], message: str) -> None:
    with pytest.raises(exc) as info:
        RtspRequest.parse(data)
    assert type(info.value) is exc
    assert str(info.value) == message


def test_error_statuses_and_cseq() -> None:
    with pytest.raises(RtspVersionNotSupported) as info:
        RtspRequest.parse(b"OPTIONS * RTSP/2.0\r\nCSeq: 12\r\n\r\n")
    assert info.value.status == 505 and info.value.cseq == 12
    resp = error_response(info.value)
    assert bytes(resp) == b"RTSP/1.0 505 RTSP Version Not Supported\r\nCSeq: 12\r\n\r\n"
    assert RtspError.status == 400 and RtspTooLarge.status == 413 and RtspInvalidRange.status == 457
    assert bytes(error_response(RtspError("x"))) == b"RTSP/1.0 400 Bad Request\r\n\r\n"


def test_build_response_copies_cseq_and_session() -> None:
    req = RtspRequest.parse(FFMPEG_SETUP_TCP)
    resp = build_response(req, 200, [("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
                          session=format_session("4f3a9c21", 60))
    assert bytes(resp) == (b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: 4f3a9c21;timeout=60\r\n"
                           b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")
    assert RtspResponse.parse(bytes(resp)) == resp


def test_build_response_body_and_every_status_has_cseq() -> None:
    sdp = b"v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"
    req = RtspRequest.parse(FFMPEG_DESCRIBE)
    resp = build_response(req, 200, [("Content-Type", "application/sdp"), ("Content-Base", URL + "/")], sdp)
    assert resp.get("content-length") == str(len(sdp))
    assert bytes(resp).endswith(b"\r\n\r\n" + sdp)
    assert RtspResponse.parse(bytes(resp)).body == sdp
    for data in ALL:
        request = RtspRequest.parse(data)
        for status in (200, 404, 454, 461, 501):
            r = build_response(request, status)
            assert r.headers[0] == ("CSeq", str(request.cseq))
            assert RtspResponse.parse(bytes(r)).cseq == request.cseq
    assert build_response(req, 454).reason == "Session Not Found"
    with pytest.raises(ValueError):
        build_response(req, 200, [("X-Evil", "a\r\nInjected: 1")])


# --------------------------------------------------------------------------------------------------------
# Connection framing


@pytest.mark.parametrize("step", [None, 1, 3, 7])
def test_parser_session_sequence(step: int | None) -> None:
    """A whole ffmpeg TCP session on one connection: requests, RTCP RRs interleaved, keepalives, CRLFs."""
    rr = InterleavedFrame(1, RTCP_RR)
    stream = (FFMPEG_OPTIONS + FFMPEG_DESCRIBE + FFMPEG_SETUP_TCP + FFMPEG_PLAY + bytes(rr) + b"\r\n"
              + VLC_GET_PARAMETER + bytes(rr) + bytes(InterleavedFrame(3, b"")) + SET_PARAMETER + b"\r\n\r\n"
              + FFMPEG_TEARDOWN)
    parser = RtspConnectionParser()
    items = feed_all(parser, stream, step)
    kinds = [i.method if isinstance(i, RtspRequest) else i.channel for i in items]  # type: ignore[attr-defined]
    assert kinds == ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", 1, "GET_PARAMETER", 1, 3, "SET_PARAMETER",
                     "TEARDOWN"]
    assert items[4] == rr and items[7] == InterleavedFrame(3, b"")
    assert bytes(items[8]) == SET_PARAMETER  # type: ignore[call-overload]
    assert parser.buffered == 0


def test_parser_partial_then_complete() -> None:
    parser = RtspConnectionParser()
    assert parser.feed(FFMPEG_PLAY[:-1]) == []
    assert parser.feed(b"") == []
    [req] = parser.feed(FFMPEG_PLAY[-1:] + b"$\x01")
    assert isinstance(req, RtspRequest) and req.method == "PLAY"
    assert parser.feed(b"\x00") == []
    assert parser.feed(b"\x02ab" + FFMPEG_OPTIONS[:5]) == [InterleavedFrame(1, b"ab")]
    [opt] = parser.feed(FFMPEG_OPTIONS[5:])
    assert opt == RtspRequest.parse(FFMPEG_OPTIONS)


def test_parser_body_split_across_reads() -> None:
    parser = RtspConnectionParser()
    head, body = SET_PARAMETER.split(b"\r\n\r\n")
    assert parser.feed(head + b"\r\n\r\nbar") == []
    [req] = parser.feed(body[3:] + FFMPEG_OPTIONS)[:1]
    assert isinstance(req, RtspRequest) and req.body == b"barparam: 1\n"


def test_parser_oversized_refused() -> None:
    parser = RtspConnectionParser(max_size=256)
    with pytest.raises(RtspTooLarge) as info:
        parser.feed(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: " + b"a" * 300)
    assert str(info.value) == "header block exceeds 256 bytes" and info.value.status == 413
    with pytest.raises(RtspError) as again:
        parser.feed(FFMPEG_OPTIONS)
    assert str(again.value) == "connection unusable after error: header block exceeds 256 bytes"

    parser = RtspConnectionParser(max_size=256)
    with pytest.raises(RtspTooLarge) as info:
        parser.feed(b"ANNOUNCE * RTSP/1.0\r\nCSeq: 4\r\nContent-Length: 1000\r\n\r\n")
    assert str(info.value) == "request of 1054 bytes exceeds 256" and info.value.cseq == 4

    parser = RtspConnectionParser(max_size=256)
    with pytest.raises(RtspTooLarge) as info:
        parser.feed(b"$\x00\x01\x00")
    assert str(info.value) == "interleaved frame of 260 bytes exceeds 256"


def test_parser_bounded_while_waiting() -> None:
    parser = RtspConnectionParser(max_size=1024)
    for _ in range(100):
        try:
            parser.feed(b"x" * 50)
        except RtspTooLarge:
            break
    else:
        pytest.fail("unbounded buffer")
    assert parser.buffered == 0


def test_parser_bad_request_breaks_stream() -> None:
    parser = RtspConnectionParser()
    with pytest.raises(RtspVersionNotSupported) as info:
        parser.feed(FFMPEG_OPTIONS.replace(b"RTSP/1.0", b"RTSP/2.0"))
    assert info.value.cseq == 1
    with pytest.raises(RtspError):
        parser.feed(b"")


def test_interleaved_frame_bytes() -> None:
    assert bytes(InterleavedFrame(0, b"\x80\x60")) == b"$\x00\x00\x02\x80\x60"
    with pytest.raises(ValueError):
        bytes(InterleavedFrame(256, b""))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_garbage_raises_only_rtsp_error(chunks: list[bytes]) -> None:
    parser = RtspConnectionParser(max_size=512)
    try:
        for chunk in chunks:
            for item in parser.feed(chunk):
                assert isinstance(item, RtspRequest | InterleavedFrame)
    except RtspError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(ALL), st.binary(max_size=40), st.integers(min_value=0, max_value=60))
def test_mutated_requests_raise_only_rtsp_error(data: bytes, junk: bytes, at: int) -> None:
    mutated = data[:at] + junk + data[at:]
    try:
        RtspRequest.parse(mutated)
    except RtspError:
        pass
    try:
        RtspConnectionParser().feed(mutated)
    except RtspError:
        pass


# --------------------------------------------------------------------------------------------------------
# Transport, Range, Session, RTP-Info


def test_transport_udp_and_tcp() -> None:
    [udp] = parse_transport("RTP/AVP;unicast;client_port=17778-17779")
    assert udp == TransportSpec("RTP/AVP", True, client_port=(17778, 17779))
    assert udp.lower_transport == "UDP" and not udp.is_tcp
    assert str(udp) == "RTP/AVP;unicast;client_port=17778-17779"
    [tcp] = parse_transport("RTP/AVP/TCP;unicast;interleaved=0-1")
    assert tcp.is_tcp and tcp.interleaved == (0, 1)
    assert str(tcp) == "RTP/AVP/TCP;unicast;interleaved=0-1"
    [explicit] = parse_transport("RTP/AVP/UDP;unicast;client_port=5000-5001")
    assert explicit.lower_transport == "UDP"


def test_transport_reply_and_params() -> None:
    [t] = parse_transport('RTP/AVP;unicast;client_port=5000;server_port=6970-6971;ssrc=1A2b3C4d;mode="PLAY"')
    assert t.client_port == (5000, 5001) and t.server_port == (6970, 6971)
    assert t.ssrc == 0x1A2B3C4D and t.mode == "PLAY"
    assert str(t) == "RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;ssrc=1A2B3C4D;mode=PLAY"
    [m] = parse_transport("RTP/AVP;multicast;destination=239.1.1.1;ttl=16;port=5000-5001;x-foo;x-bar=1")
    assert m.unicast is False and m.ttl == 16 and m.destination == "239.1.1.1"
    assert m.extra == (("x-foo", None), ("x-bar", "1"))
    reply = TransportSpec("RTP/AVP/TCP", interleaved=(2, 3), ssrc=0xDEAD)
    assert parse_transport(str(reply)) == [reply]


def test_transport_alternatives() -> None:
    specs = parse_transport("RTP/AVP/TCP;unicast;interleaved=0-1, RTP/AVP;unicast;client_port=4588-4589")
    assert [s.lower_transport for s in specs] == ["TCP", "UDP"]
    [raw] = parse_transport("RAW/RAW/UDP;unicast")
    assert raw.lower_transport == ""


@pytest.mark.parametrize(("value", "message"), [
    ("", "empty Transport header"),
    ("RTP;unicast", "bad transport protocol: 'RTP'"),
    ("RTP/AVP;client_port=abc", "bad client_port in Transport: 'abc'"),
    ("RTP/AVP;client_port=70000-70001", "bad client_port in Transport: '70000-70001'"),
    ("RTP/AVP/TCP;interleaved=255", "bad interleaved in Transport: '255'"),
    ("RTP/AVP;ssrc=xyz", "bad ssrc in Transport: 'xyz'"),
    ("RTP/AVP;ttl=999", "bad ttl in Transport: '999'"),
])
def test_transport_errors(value: str, message: str) -> None:
    with pytest.raises(RtspError) as info:
        parse_transport(value)
    assert str(info.value) == message


@pytest.mark.parametrize(("value", "expected"), [
    ("npt=0.000-", NptRange(0.0, None)),
    ("npt=0-", NptRange(0.0, None)),
    ("npt=now-", NptRange(None, None)),
    ("npt=10.5-20", NptRange(10.5, 20.0)),
    ("npt=-20", NptRange(0.0, 20.0)),
    ("npt=01:02:03.5-", NptRange(3723.5, None)),
    ("NPT = 1.-2.", NptRange(1.0, 2.0)),
    ("npt=5-;time=19970123T143720Z", NptRange(5.0, None)),
])
def test_parse_range(value: str, expected: NptRange) -> None:
    assert parse_range(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("clock=19961108T142300Z-", "unsupported Range: 'clock=19961108T142300Z-'"),
    ("smpte=0:10:20-", "unsupported Range: 'smpte=0:10:20-'"),
    ("npt=", "bad Range: 'npt='"),
    ("npt=-", "bad Range: 'npt=-'"),
    ("npt=abc-", "bad Range: 'npt=abc-'"),
    ("npt=20-10", "bad Range: 'npt=20-10'"),
    ("npt=0-now", "bad Range: 'npt=0-now'"),
])
def test_parse_range_errors(value: str, message: str) -> None:
    with pytest.raises(RtspInvalidRange) as info:
        parse_range(value)
    assert str(info.value) == message and info.value.status == 457


def test_format_range() -> None:
    assert format_range() == "npt=0.000-"
    assert format_range(None) == "npt=now-"
    assert str(NptRange(1.5, 10)) == "npt=1.500-10.000"
    assert parse_range(str(NptRange(1.5, 10))) == NptRange(1.5, 10.0)


def test_session() -> None:
    assert format_session("4f3a9c21", 60) == "4f3a9c21;timeout=60"
    assert format_session("abc") == "abc"
    assert parse_session("4f3a9c21;timeout=60") == ("4f3a9c21", 60)
    assert parse_session(" 4f3a9c21 ") == ("4f3a9c21", None)
    with pytest.raises(RtspError) as info:
        parse_session("a b")
    assert str(info.value) == "bad Session: 'a b'"
    with pytest.raises(RtspError):
        parse_session("abc;timeout=x")
    with pytest.raises(ValueError):
        format_session("a;b")


def test_rtp_info() -> None:
    assert rtp_info(URL + "/trackID=0", 1234, 90000) == f"url={URL}/trackID=0;seq=1234;rtptime=90000"
    assert rtp_info("rtsp://h/a", 70000, -1) == "url=rtsp://h/a;seq=4464;rtptime=4294967295"
    assert rtp_info("rtsp://h/a") == "url=rtsp://h/a"
    with pytest.raises(ValueError):
        rtp_info("rtsp://h/a,b", 1, 2)


# --------------------------------------------------------------------------------------------------------
# URLs


@pytest.mark.parametrize(("uri", "expected"), [
    (URL, RtspUrl("192.168.1.10", 8554, "/34020000001320000001/34020000001310000001", "", None)),
    (URL + "/", RtspUrl("192.168.1.10", 8554, "/34020000001320000001/34020000001310000001", "", None)),
    (URL + "/trackID=0", RtspUrl("192.168.1.10", 8554, "/34020000001320000001/34020000001310000001", "",
                                 "trackID=0")),
    ("rtsp://gw:8554/dev/ch?stream=sub", RtspUrl("gw", 8554, "/dev/ch", "stream=sub", None)),
    # ffmpeg and live555 append the control after the query
    ("rtsp://gw:8554/dev/ch?stream=sub/trackID=1", RtspUrl("gw", 8554, "/dev/ch", "stream=sub", "trackID=1")),
    ("rtsp://gw/dev/ch/track1", RtspUrl("gw", 554, "/dev/ch", "", "track1")),
    ("rtsp://user:pw@gw:8554/dev/ch/streamid=0", RtspUrl("gw", 8554, "/dev/ch", "", "streamid=0")),
    ("RTSP://[::1]:8554/dev/ch", RtspUrl("[::1]", 8554, "/dev/ch", "", None)),
    ("rtsp://gw", RtspUrl("gw", 554, "/", "", None)),
])
def test_parse_url(uri: str, expected: RtspUrl) -> None:
    assert parse_url(uri) == expected


@pytest.mark.parametrize("uri", [
    "*", "http://gw/dev", "rtsp://", "rtsp://gw:0/a", "rtsp://gw:99999/a", "rtsp://gw:x/a", "rtsp://g w/a",
    "rtsp://[::1/a", "rtsp://gw/a b",
])
def test_parse_url_errors(uri: str) -> None:
    with pytest.raises(RtspError) as info:
        parse_url(uri)
    assert str(info.value) == f"bad RTSP URL: {uri!r}"


def test_split_control() -> None:
    assert split_control("/dev/ch/trackID=0") == ("/dev/ch", "trackID=0")
    assert split_control("/dev/ch/TRACKID=12/") == ("/dev/ch", "TRACKID=12")
    assert split_control("/dev/ch") == ("/dev/ch", None)
    assert split_control("/34020000001320000001/34020000001310000001") == (
        "/34020000001320000001/34020000001310000001", None)


def test_requests_resolve_to_stream() -> None:
    """Every request URI of a session maps to the same stream path; SETUP carries the track."""
    for data in ALL:
        url = parse_url(RtspRequest.parse(data).uri)
        assert url.path == "/34020000001320000001/34020000001310000001"
        assert url.control == ("trackID=0" if b"SETUP" in data[:5] else None)
