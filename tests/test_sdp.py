"""media.sdp: GB/T 28181 offers and device answers, TCP setup roles, sub-stream dialects, tolerant parsing
(LF, blank lines, y=/f= anywhere), exact errors, the trailing CRLF, and fuzzed invariants.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import load

from media.sdp import (
    Connection,
    Direction,
    MediaDescription,
    MediaInfo,
    Origin,
    PlayMode,
    RtpMap,
    SdpError,
    SessionDescription,
    SetupRole,
    SubstreamDialect,
    Transport,
    gb28181_answer,
    gb28181_offer,
    parse,
)

PLATFORM = "34020000002000000001"
CHANNEL = "34020000001310000001"


def crlf(text: str) -> str:
    """Test bodies are written with LF; the wire uses CRLF."""
    return text.replace("\n", "\r\n")


def sip_body(name: str) -> bytes:
    return load(f"sip/{name}").split(b"\r\n\r\n", 1)[1]


# The live offer exactly as GB28181.md shows it, with our IDs and address filled in.
LIVE_OFFER = crlf(
    """v=0
o=34020000002000000001 0 0 IN IP4 192.168.1.10
s=Play
c=IN IP4 192.168.1.10
t=0 0
m=video 30000 RTP/AVP 96 97 98
a=recvonly
a=rtpmap:96 PS/90000
a=rtpmap:97 MPEG4/90000
a=rtpmap:98 H264/90000
y=0200000001
"""
)

# A Hikvision-style answer: sendonly, its own address and SSRC, and an f= line.
HIK_ANSWER = crlf(
    """v=0
o=34020000001320000001 0 0 IN IP4 192.168.1.64
s=Play
c=IN IP4 192.168.1.64
t=0 0
m=video 15060 RTP/AVP 96
a=sendonly
a=rtpmap:96 PS/90000
y=0100000001
f=v/2/4/25/1/4096a///
"""
)


# -- the GB/T 28181 offer and answer ---------------------------------------------------------------------------


def test_parse_live_offer() -> None:
    sdp = parse(LIVE_OFFER)
    assert sdp.version == 0
    assert sdp.origin == Origin(PLATFORM, "0", "0", "192.168.1.10")
    assert sdp.session_name == "Play"
    assert sdp.play_mode is PlayMode.PLAY
    assert sdp.connection == Connection("192.168.1.10")
    assert sdp.timing == (0, 0)
    assert sdp.y == "0200000001"
    assert sdp.ssrc == 200000001
    assert sdp.f is None and sdp.media_info is None and sdp.u is None
    assert len(sdp.media) == 1
    video = sdp.media[0]
    assert (video.kind, video.port, video.proto, video.formats) == (
        "video",
        30000,
        "RTP/AVP",
        ("96", "97", "98"),
    )
    assert video.rtpmaps == {
        96: RtpMap(96, "PS", 90000),
        97: RtpMap(97, "MPEG4", 90000),
        98: RtpMap(98, "H264", 90000),
    }
    assert sdp.direction is Direction.RECVONLY
    assert sdp.transport is Transport.UDP
    assert sdp.payload_types == (96, 97, 98)
    assert sdp.media_ip == "192.168.1.10"
    assert sdp.media_port == 30000
    assert sdp.setup is None and sdp.connection_mode is None and sdp.substream is None
    assert str(sdp) == LIVE_OFFER


def test_build_live_offer_exactly() -> None:
    offer = gb28181_offer(platform_id=PLATFORM, media_ip="192.168.1.10", port=30000, ssrc=200000001)
    assert str(offer) == LIVE_OFFER
    assert bytes(offer) == LIVE_OFFER.encode()
    assert offer.to_bytes() == LIVE_OFFER.encode()
    assert parse(bytes(offer)) == offer


def test_parse_device_answer() -> None:
    sdp = parse(HIK_ANSWER)
    assert sdp.direction is Direction.SENDONLY
    assert sdp.media_ip == "192.168.1.64"
    assert sdp.media_port == 15060
    assert sdp.transport is Transport.UDP
    assert sdp.ssrc == 100000001
    assert sdp.payload_types == (96,)
    assert sdp.primary.rtpmaps[96].encoding == "PS"
    assert sdp.f == "v/2/4/25/1/4096a///"
    assert sdp.media_info == MediaInfo("2", "4", "25", "1", "4096", "", "", "")
    assert str(sdp) == HIK_ANSWER


@pytest.mark.parametrize("name", ["invite_live.txt", "invite_200.txt"])
def test_sip_vector_bodies_round_trip(name: str) -> None:
    body = sip_body(name)
    sdp = parse(body)
    assert bytes(sdp) == body
    assert sdp.media_port in (30000, 15060)


def test_answer_vector_extra_attribute_kept() -> None:
    sdp = parse(sip_body("invite_200.txt"))
    assert sdp.ssrc == 200001234  # the device's own SSRC differs from the offer's: use it
    assert sdp.primary.attribute("filesize") == "0"
    assert sdp.media_info is not None and sdp.media_info.resolution == "5"


def test_build_answer() -> None:
    answer = gb28181_answer(
        device_id=CHANNEL,
        media_ip="192.168.1.64",
        port=15060,
        ssrc="0100000001",
        media_info="v/2/4/25/1/4096a///",
    )
    assert str(answer) == HIK_ANSWER.replace("34020000001320000001", CHANNEL)


def test_playback_offer() -> None:
    offer = gb28181_offer(
        platform_id=PLATFORM,
        media_ip="10.0.0.2",
        port=30002,
        ssrc=1000000002,
        mode=PlayMode.PLAYBACK,
        channel_id=CHANNEL,
        start=1700000000,
        end=1700003600,
    )
    assert str(offer) == crlf(
        """v=0
o=34020000002000000001 0 0 IN IP4 10.0.0.2
s=Playback
u=34020000001310000001:0
c=IN IP4 10.0.0.2
t=1700000000 1700003600
m=video 30002 RTP/AVP 96 97 98
a=recvonly
a=rtpmap:96 PS/90000
a=rtpmap:97 MPEG4/90000
a=rtpmap:98 H264/90000
y=1000000002
"""
    )
    again = parse(str(offer))
    assert again == offer
    assert again.play_mode is PlayMode.PLAYBACK
    assert again.u == f"{CHANNEL}:0"
    assert again.timing == (1700000000, 1700003600)


def test_download_offer_over_tcp_with_speed_and_media_info() -> None:
    offer = gb28181_offer(
        platform_id=PLATFORM,
        media_ip="10.0.0.2",
        port=30004,
        ssrc=1000000003,
        mode=PlayMode.DOWNLOAD,
        transport=Transport.TCP,
        channel_id=CHANNEL,
        start=1700000000,
        end=1700000600,
        download_speed=4,
        media_info=MediaInfo(video_codec="2"),
    )
    text = str(offer)
    assert "m=video 30004 TCP/RTP/AVP 96 97 98\r\n" in text
    assert "a=downloadspeed:4\r\na=setup:passive\r\na=connection:new\r\n" in text
    assert text.endswith("y=1000000003\r\nf=v/2////a///\r\n")
    again = parse(text)
    assert again.download_speed == 4
    assert again.media_info == MediaInfo(video_codec="2")
    assert again.play_mode is PlayMode.DOWNLOAD


def test_offer_argument_checks() -> None:
    base = dict(platform_id=PLATFORM, media_ip="10.0.0.2", port=30000)
    with pytest.raises(ValueError, match="live offers"):
        gb28181_offer(**base, ssrc=1, start=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="downloads only"):
        gb28181_offer(**base, ssrc=1, download_speed=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TCP transport only"):
        gb28181_offer(**base, ssrc=1, setup=SetupRole.ACTIVE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="10 decimal digits"):
        gb28181_offer(**base, ssrc="12345678901")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range"):
        gb28181_offer(**base, ssrc=2**32)  # type: ignore[arg-type]
    assert gb28181_offer(**base, ssrc="42").y == "0000000042"  # type: ignore[arg-type]


# -- TCP ------------------------------------------------------------------------------------------------------------


def test_tcp_passive_offer_and_active_answer() -> None:
    offer = gb28181_offer(
        platform_id=PLATFORM, media_ip="10.0.0.2", port=30010, ssrc=1, transport=Transport.TCP
    )
    assert str(offer) == crlf(
        """v=0
o=34020000002000000001 0 0 IN IP4 10.0.0.2
s=Play
c=IN IP4 10.0.0.2
t=0 0
m=video 30010 TCP/RTP/AVP 96 97 98
a=recvonly
a=rtpmap:96 PS/90000
a=rtpmap:97 MPEG4/90000
a=rtpmap:98 H264/90000
a=setup:passive
a=connection:new
y=0000000001
"""
    )
    parsed = parse(str(offer))
    assert (parsed.transport, parsed.setup, parsed.connection_mode) == (
        Transport.TCP,
        SetupRole.PASSIVE,
        "new",
    )
    # The device connects to us; its answer says active and gives its own (unused) port.
    answer = parse(
        crlf(
            """v=0
o=34020000001320000001 0 0 IN IP4 192.168.1.64
s=Play
c=IN IP4 192.168.1.64
t=0 0
m=video 15062 TCP/RTP/AVP 96
a=setup:active
a=sendonly
a=rtpmap:96 PS/90000
a=connection:new
y=0000000001
f=v/2/4/25/1/4096a///
"""
        )
    )
    assert (answer.transport, answer.setup, answer.connection_mode) == (
        Transport.TCP,
        SetupRole.ACTIVE,
        "new",
    )
    assert answer.direction is Direction.SENDONLY
    built = gb28181_answer(
        device_id="34020000001320000001", media_ip="192.168.1.64", port=15062, ssrc=1, transport=Transport.TCP
    )
    assert built.setup is SetupRole.ACTIVE and built.transport is Transport.TCP


def test_tcp_active_offer_and_passive_answer() -> None:
    offer = gb28181_offer(
        platform_id=PLATFORM,
        media_ip="10.0.0.2",
        port=30012,
        ssrc=2,
        transport=Transport.TCP,
        setup=SetupRole.ACTIVE,
    )
    assert parse(bytes(offer)).setup is SetupRole.ACTIVE
    # We connect to the port in the device's answer.
    answer = parse(
        b"v=0\r\no=dev 0 0 IN IP4 192.168.1.64\r\ns=Play\r\nc=IN IP4 192.168.1.64\r\nt=0 0\r\n"
        b"m=video 16000 TCP/RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\na=setup:passive\r\n"
        b"a=connection:new\r\ny=0000000002\r\n"
    )
    assert (answer.media_ip, answer.media_port, answer.setup) == ("192.168.1.64", 16000, SetupRole.PASSIVE)


@pytest.mark.parametrize(
    ("proto", "transport"),
    [
        ("RTP/AVP", Transport.UDP),
        ("TCP/RTP/AVP", Transport.TCP),
        ("RTP/AVP/TCP", Transport.TCP),
        ("tcp/rtp/avp", Transport.TCP),
        ("RTP/SAVP", Transport.UDP),
        ("udp", None),
    ],
)
def test_transport_from_proto(proto: str, transport: Transport | None) -> None:
    assert MediaDescription("video", 1, proto).transport is transport


def test_setup_unknown_and_session_level() -> None:
    body = "v=0\ns=-\na=setup:ACTIVE\nt=0 0\nm=video 1 TCP/RTP/AVP 96\na=connection:Existing\n"
    sdp = parse(body)
    assert sdp.setup is SetupRole.ACTIVE  # session-level, case-insensitive
    assert sdp.connection_mode == "existing"
    assert parse("m=video 1 TCP/RTP/AVP 96\na=setup:sideways\n").setup is None


# -- sub-streams ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "main", "sub"),
    [
        (SubstreamDialect.STREAMNUMBER, "a=streamnumber:0", "a=streamnumber:1"),
        (SubstreamDialect.STREAM, "a=stream:0", "a=stream:1"),
        (SubstreamDialect.STREAMPROFILE, "a=streamprofile:0", "a=streamprofile:1"),
        (SubstreamDialect.STREAMMODE, "a=streamMode:MAIN", "a=streamMode:SUB"),
    ],
)
def test_substream_dialect_round_trip(dialect: SubstreamDialect, main: str, sub: str) -> None:
    for substream, line in ((0, main), (1, sub)):
        offer = gb28181_offer(
            platform_id=PLATFORM,
            media_ip="10.0.0.2",
            port=30000,
            ssrc=1,
            substream=substream,
            dialect=dialect,
        )
        text = str(offer)
        assert f"a=rtpmap:98 H264/90000\r\n{line}\r\ny=0000000001\r\n" in text
        again = parse(text)
        assert again.substream == substream
        assert again == offer


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a=streammode:sub", 1),
        ("a=STREAMMODE:main", 0),
        ("a=streamMode:THIRD", None),
        ("a=StreamNumber:1", 1),
        ("a=streamprofile:2", 2),
        ("a=stream:x", None),
        ("a=stream", None),
    ],
)
def test_substream_parse_variants(line: str, expected: int | None) -> None:
    assert parse(f"v=0\nm=video 1 RTP/AVP 96\n{line}\n").substream == expected


def test_substream_at_session_level() -> None:
    assert parse("v=0\na=stream:1\nm=video 1 RTP/AVP 96\n").substream == 1


def test_substream_build_checks() -> None:
    with pytest.raises(ValueError, match="MAIN and SUB"):
        gb28181_offer(
            platform_id=PLATFORM,
            media_ip="1.2.3.4",
            port=1,
            ssrc=1,
            substream=2,
            dialect=SubstreamDialect.STREAMMODE,
        )
    with pytest.raises(ValueError, match="negative"):
        gb28181_offer(platform_id=PLATFORM, media_ip="1.2.3.4", port=1, ssrc=1, substream=-1)


# -- tolerant parsing -------------------------------------------------------------------------------------------------


def test_always_trailing_crlf() -> None:
    for sdp in (parse(LIVE_OFFER), parse(LIVE_OFFER.rstrip("\r\n")), parse("m=audio 0 RTP/AVP 8")):
        text = str(sdp)
        assert text.endswith("\r\n")
        assert not text.endswith("\r\n\r\n")
        assert bytes(sdp).endswith(b"\r\n")
        assert "\n" not in text.replace("\r\n", "")


def test_lf_only_and_cr_only_input() -> None:
    lf = LIVE_OFFER.replace("\r\n", "\n")
    assert parse(lf) == parse(LIVE_OFFER)
    assert str(parse(lf)) == LIVE_OFFER
    assert parse(LIVE_OFFER.replace("\r\n", "\r")) == parse(LIVE_OFFER)
    assert parse(lf.encode()) == parse(LIVE_OFFER)


def test_whitespace_and_blank_lines() -> None:
    messy = (
        "  v=0 \r\n\r\no = dev 1 1 IN IP4 1.2.3.4\n\t\ns=Play  \nc=IN  IP4   1.2.3.4\n"
        "m=video 5000 RTP/AVP 96 \n a=sendonly\na=rtpmap:96  PS/90000 \ny= 0100000009 \n\n"
    )
    sdp = parse(messy)
    assert sdp.origin == Origin("dev", "1", "1", "1.2.3.4")
    assert sdp.session_name == "Play"
    assert sdp.media_ip == "1.2.3.4"
    assert sdp.primary.rtpmaps == {96: RtpMap(96, "PS", 90000)}
    assert sdp.ssrc == 100000009
    assert sdp.direction is Direction.SENDONLY


def test_y_and_f_before_the_media_section() -> None:
    body = (
        "v=0\no=d 0 0 IN IP4 1.1.1.1\ns=Play\ny=0100000001\nf=v/2/4/25/1/4096a///\nc=IN IP4 1.1.1.1\nt=0 0\n"
        "m=video 6000 RTP/AVP 96\na=sendonly\n"
    )
    sdp = parse(body)
    assert sdp.ssrc == 100000001
    assert sdp.media_info == MediaInfo("2", "4", "25", "1", "4096")
    assert str(sdp).endswith("a=sendonly\r\ny=0100000001\r\nf=v/2/4/25/1/4096a///\r\n")


def test_media_connection_overrides_session() -> None:
    body = "v=0\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 7000 RTP/AVP 8\nm=video 6000 RTP/AVP 96\nc=IN IP4 10.0.0.9/127\n"
    sdp = parse(body)
    assert sdp.primary.kind == "video"  # the first video section, not the first section
    assert sdp.media_ip == "10.0.0.9"
    assert sdp.media_port == 6000
    assert sdp.primary.connection == Connection("10.0.0.9/127")
    audio_only = parse("v=0\nc=IN IP4 10.0.0.1\nm=audio 7000 RTP/AVP 8\n")
    assert audio_only.media_ip == "10.0.0.1"
    assert parse("m=video 1 RTP/AVP 96\n").media_ip is None


def test_unknown_lines_kept_and_ordered() -> None:
    body = crlf(
        """v=0
o=- 1 1 IN IP4 1.2.3.4
s=Session
i=information
u=http://example.com
e=ops@example.com
c=IN IP4 1.2.3.4
b=AS:4096
t=0 0
r=604800 3600 0
t=10 20
x=vendor
a=tool:gateway
m=video 5000 RTP/AVP 98
i=video title
c=IN IP4 1.2.3.5
b=AS:2048
k=prompt
a=rtpmap:98 H264/90000
a=fmtp:98 packetization-mode=1;profile-level-id=42e01f
a=control:trackID=0
m=audio 5002 RTP/AVP 0 8
a=rtpmap:8 PCMA/8000/1
"""
    )
    sdp = parse(body)
    assert sdp.extra_lines == (
        ("i", "information"),
        ("e", "ops@example.com"),
        ("b", "AS:4096"),
        ("r", "604800 3600 0"),
        ("t", "10 20"),
        ("x", "vendor"),
    )
    assert sdp.u == "http://example.com"
    assert sdp.attribute("tool") == "gateway"
    video, audio = sdp.media
    assert video.extra_lines == (("i", "video title"), ("b", "AS:2048"), ("k", "prompt"))
    assert video.fmtps == {98: "packetization-mode=1;profile-level-id=42e01f"}
    assert video.attribute("control") == "trackID=0"
    assert audio.rtpmaps == {8: RtpMap(8, "PCMA", 8000, 1)}
    assert audio.payload_types == (0, 8)
    assert str(sdp) == body  # already in RFC 8866 order, so the build is byte-exact


def test_bad_attributes_are_tolerated() -> None:
    sdp = parse(
        "m=video 1/2 RTP/AVP 96 x 300\na=rtpmap:96\na=rtpmap:97 H264\na=fmtp:abc x\na=downloadspeed:fast\n"
    )
    video = sdp.primary
    assert video.port_count == 2
    assert video.rtpmaps == {}
    assert video.fmtps == {}
    assert video.payload_types == (96,)
    assert video.download_speed is None
    assert video.direction is None
    assert sdp.direction is Direction.SENDRECV  # RFC 8866 §6.7 default
    assert str(sdp).startswith("v=0\r\ns=-\r\nt=0 0\r\nm=video 1/2 RTP/AVP 96 x 300\r\n")


@pytest.mark.parametrize(
    ("y", "ssrc"),
    [
        (None, None),
        ("", None),
        ("abc", None),
        ("0100000001", 100000001),
        ("42", 42),
        ("9999999999", None),
        ("4294967295", 4294967295),
        ("0x10", None),
        ("01000000010", None),
    ],
)
def test_ssrc_tolerant(y: str | None, ssrc: int | None) -> None:
    body = "m=video 1 RTP/AVP 96\n" + (f"y={y}\n" if y is not None else "")
    assert parse(body).ssrc == ssrc


@pytest.mark.parametrize(
    ("text", "info"),
    [
        ("v/2/4/25/1/4096a///", MediaInfo("2", "4", "25", "1", "4096")),
        ("v/////a/1/8/1", MediaInfo(audio_codec="1", audio_kbps="8", sample_rate="1")),
        ("v/5/1920x1080/25/2/8192a/1/8/1", MediaInfo("5", "1920x1080", "25", "2", "8192", "1", "8", "1")),
        ("v/2/4a/", MediaInfo("2", "4")),
        ("v/a/", MediaInfo()),
    ],
)
def test_media_info(text: str, info: MediaInfo) -> None:
    assert MediaInfo.parse(text) == info
    assert MediaInfo.parse(str(info)) == info


@pytest.mark.parametrize("text", ["", "x", "v/2/4/25/1/4096", "a///", "v/1/2/3/4/5/6a///", "v/a/1/2/3/4"])
def test_media_info_malformed(text: str) -> None:
    with pytest.raises(SdpError) as exc:
        MediaInfo.parse(text)
    assert str(exc.value) == f"bad f= line: {text}"
    assert parse(f"m=video 1 RTP/AVP 96\nf={text}\n").media_info is None


# -- errors -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "missing m= line"),
        ("v=0\no=- 0 0 IN IP4 1.1.1.1\ns=-\nt=0 0\n", "missing m= line"),
        ("hello", "bad line: hello"),
        ("v=0\nthis is not sdp\n", "bad line: this is not sdp"),
        ("ab=1\n", "bad line: ab=1"),
        ("=1\n", "bad line: =1"),
        ("1=1\n", "bad line: 1=1"),
        ("v=x\nm=video 1 RTP/AVP 96\n", "bad v= line: x"),
        ("o=a b c\nm=video 1 RTP/AVP 96\n", "bad o= line: a b c"),
        ("c=IN IP4\nm=video 1 RTP/AVP 96\n", "bad c= line: IN IP4"),
        ("t=0\nm=video 1 RTP/AVP 96\n", "bad t= line: 0"),
        ("t=now later\nm=video 1 RTP/AVP 96\n", "bad t= line: now later"),
        ("m=video abc RTP/AVP 96\n", "bad m= line: video abc RTP/AVP 96"),
        ("m=video 70000 RTP/AVP 96\n", "bad m= line: video 70000 RTP/AVP 96"),
        ("m=video 5000/x RTP/AVP 96\n", "bad m= line: video 5000/x RTP/AVP 96"),
        ("m=video 5000\n", "bad m= line: video 5000"),
        ("m=video 1 RTP/AVP 96\nc=IN\n", "bad c= line: IN"),
        ("v=" + "9" * 5000 + "\nm=video 1 RTP/AVP 96\n", "bad v= line: " + "9" * 5000),
    ],
)
def test_errors_exact(body: str, message: str) -> None:
    with pytest.raises(SdpError) as exc:
        parse(body)
    assert str(exc.value) == message


def test_too_large() -> None:
    with pytest.raises(SdpError, match="^SDP too large$"):
        parse("m=video 1 RTP/AVP 96\n" + "a=x\n" * 20000)
    with pytest.raises(SdpError, match="^SDP too large$"):
        parse(b"m=video 1 RTP/AVP 96\n" + b"a=x\n" * 20000)


def test_hand_built_without_media() -> None:
    with pytest.raises(ValueError, match="no media section"):
        _ = SessionDescription(media=()).primary


def test_sdp_error_is_value_error() -> None:
    assert issubclass(SdpError, ValueError)


def test_non_utf8_bytes_survive() -> None:
    body = "v=0\r\ns=\u4e2d\u6587\r\nt=0 0\r\nm=video 1 RTP/AVP 96\r\n".encode("gb18030")
    sdp = parse(body)
    assert bytes(sdp) == body
    assert SessionDescription.parse(body) == sdp


# -- fuzzing ------------------------------------------------------------------------------------------------------------


def _exercise(sdp: SessionDescription) -> None:
    """Every accessor must work on anything parse accepted, and a rebuild must parse back equal."""
    for name in (
        "primary",
        "media_ip",
        "media_port",
        "transport",
        "setup",
        "connection_mode",
        "direction",
        "substream",
        "download_speed",
        "payload_types",
        "ssrc",
        "media_info",
        "play_mode",
    ):
        getattr(sdp, name)
    for media in sdp.media:
        for name in (
            "rtpmaps",
            "fmtps",
            "transport",
            "payload_types",
            "direction",
            "setup",
            "connection_mode",
            "substream",
            "download_speed",
        ):
            getattr(media, name)
    text = str(sdp)
    assert text.endswith("\r\n")
    assert parse(text) == sdp


@given(st.text(max_size=300))
@settings(max_examples=500)
def test_fuzz_text_only_sdp_error(text: str) -> None:
    try:
        sdp = parse(text)
    except SdpError:
        return
    _exercise(sdp)


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_fuzz_bytes_only_sdp_error(data: bytes) -> None:
    try:
        sdp = parse(data)
    except SdpError:
        return
    _exercise(sdp)


_VALUES = st.one_of(
    st.text(alphabet="0123456789 /:.-aAIPNTCRVsubendoy\t", max_size=25),
    st.sampled_from(
        [
            "0",
            "IN IP4 1.2.3.4",
            "- 0 0 IN IP4 1.1.1.1",
            "video 5000 RTP/AVP 96",
            "video 1/2 TCP/RTP/AVP 96 97",
            "rtpmap:96 PS/90000",
            "setup:passive",
            "streamMode:SUB",
            "stream:1",
            "sendonly",
            "0 0",
            "v/2/4/25/1/4096a///",
            "0100000001",
            "downloadspeed:4",
            "fmtp:96 x=y",
        ]
    ),
)
_LINES = st.lists(st.tuples(st.sampled_from("vosicbtrzkamyfux"), _VALUES), max_size=25)


@given(_LINES, st.sampled_from(["\r\n", "\n", "\r"]))
@settings(max_examples=500)
def test_fuzz_sdp_shaped_lines(lines: list[tuple[str, str]], eol: str) -> None:
    text = eol.join(f"{k}={v}" for k, v in lines)
    try:
        sdp = parse(text)
    except SdpError:
        return
    _exercise(sdp)
