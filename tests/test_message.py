"""sip.message: vectors round-trip byte-exact, exact error strings, stream framing, and fuzzed invariants.

Layout follows STYLE.md §9: round trips over ``tests/vectors/sip/*.txt``, truncation with exact error strings
(aiortc ``test_*_truncated``), chunking (h11 ``tr()``), then Hypothesis properties (random bytes, mutated
vectors, arbitrary chunkings) which must only ever raise ``RemoteProtocolError``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors import SIP_PASSWORD, load, names

from sip.errors import LocalProtocolError, MalformedMessage, MessageTooLarge, RemoteProtocolError
from sip.message import (
    DEFAULT_MAX_SIZE,
    CSeq,
    Headers,
    NameAddr,
    SipMessage,
    SipRequest,
    SipResponse,
    SipUri,
    StreamParser,
    Via,
    build_request,
    build_response,
    canonical_name,
    header_key,
    parse_message,
    reason_phrase,
    split_list,
)

SIP_VECTORS = names("sip")
PLATFORM = "34020000002000000001"
DOMAIN = "3402000000"
IPC = "34020000001320000001"
NVR = "34020000001180000001"
CHANNEL = "34020000001310000001"

# FUZZ_EXAMPLES=20000 for a long local run; the default keeps the suite fast.
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "400")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def parse(name: str) -> SipMessage:
    return parse_message(load(f"sip/{name}.txt"))


def request(name: str) -> SipRequest:
    msg = parse(name)
    assert isinstance(msg, SipRequest)
    return msg


def response(name: str) -> SipResponse:
    msg = parse(name)
    assert isinstance(msg, SipResponse)
    return msg


def digest_params(value: str) -> dict[str, str]:
    assert value.startswith("Digest ")
    return {k: v1 or v2 for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value[7:])}


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def check_digest(msg: SipRequest) -> dict[str, str]:
    """The Authorization in our vectors is a real RFC 2617 response for SIP_PASSWORD."""
    value = msg.headers.get("Authorization")
    assert value is not None
    p = digest_params(value)
    ha1 = md5(f"{p['username']}:{p['realm']}:{SIP_PASSWORD}")
    ha2 = md5(f"{msg.method}:{p['uri']}")
    if "qop" in p:
        expected = md5(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:{p['qop']}:{ha2}")
    else:
        expected = md5(f"{ha1}:{p['nonce']}:{ha2}")
    assert p["response"] == expected
    return p


# --------------------------------------------------------------------------------------------------------
# Vectors: round trips


def test_vectors_present() -> None:
    expected = {
        "ack", "bye", "compact_headers", "folded_header", "invite_200", "invite_live",
        "message_catalog_query", "message_catalog_response_gb2312", "message_keepalive", "multi_via",
        "options", "register_200", "register_401", "register_auth", "register_auth_noqop",
        "register_first", "unregister",
    }
    assert {n.removeprefix("sip/").removesuffix(".txt") for n in SIP_VECTORS} >= expected


@pytest.mark.parametrize("name", SIP_VECTORS)
def test_vector_is_crlf_and_content_length_is_byte_length(name: str) -> None:
    data = load(name)
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, "header block must end with CRLF CRLF"
    assert b"\n" not in head.replace(b"\r\n", b""), "bare LF in header block"
    assert b"\r" not in head.replace(b"\r\n", b""), "bare CR in header block"
    msg = parse_message(data)
    assert msg.body == body
    lengths = [v for n, v in msg.headers if header_key(n) == "content-length"]
    assert lengths == [str(len(body))]


@pytest.mark.parametrize("name", [n for n in SIP_VECTORS if not n.endswith("folded_header.txt")])
def test_vector_round_trip_exact(name: str) -> None:
    data = load(name)
    msg = parse_message(data)
    assert bytes(msg) == data
    assert parse_message(bytes(msg)) == msg


def test_register_first() -> None:
    msg = request("register_first")
    assert msg.method == "REGISTER"
    assert msg.uri == f"sip:{PLATFORM}@{DOMAIN}"
    assert msg.request_uri == SipUri(host=DOMAIN, user=PLATFORM)
    via = msg.top_via
    assert (via.transport, via.host, via.port) == ("UDP", "192.168.1.64", 5060)
    assert via.branch == "z9hG4bK1371463273"
    assert via.wants_rport and via.rport is None and via.received is None
    assert msg.from_.uri == SipUri(host=DOMAIN, user=IPC)
    assert msg.from_.tag == "2043466181"
    assert msg.to.uri == SipUri(host=DOMAIN, user=IPC)
    assert msg.to.tag is None
    assert msg.call_id == "1011047669"
    assert msg.cseq == CSeq(1, "REGISTER")
    assert msg.contacts == [NameAddr(uri=SipUri(host="192.168.1.64", user=IPC, port=5060))]
    assert msg.expires == 3600
    assert msg.headers.get("Max-Forwards") == "70"
    assert msg.headers.get("User-Agent") == "IP Camera"
    assert "Authorization" not in msg.headers
    assert msg.content_type is None
    assert msg.body == b""


def test_register_auth_qop() -> None:
    msg = request("register_auth")
    assert msg.cseq == CSeq(2, "REGISTER")
    assert msg.call_id == "1011047669"
    assert msg.top_via.branch == "z9hG4bK1867462374"
    assert msg.from_.tag == "2043466181"
    # Authorization contains commas but is not a list header: one value.
    assert len(msg.headers.get_all("authorization")) == 1
    p = check_digest(msg)
    assert p["username"] == IPC
    assert p["realm"] == DOMAIN
    assert p["uri"] == f"sip:{PLATFORM}@{DOMAIN}"
    assert (p["qop"], p["nc"], p["cnonce"], p["algorithm"]) == ("auth", "00000001", "0a4f113b", "MD5")
    assert msg.expires == 3600
    assert bytes(msg) == load("sip/register_auth.txt")


def test_register_auth_noqop() -> None:
    msg = request("register_auth_noqop")
    assert msg.from_.uri.user == NVR
    assert msg.cseq == CSeq(2, "REGISTER")
    assert msg.top_via.host == "192.168.1.108"
    p = check_digest(msg)
    assert "qop" not in p and "nc" not in p and "cnonce" not in p
    assert p["algorithm"] == "MD5"
    assert msg.headers.get("user-agent") == "DH-NVR4208"


def test_unregister() -> None:
    msg = request("unregister")
    assert msg.method == "REGISTER"
    assert msg.expires == 0
    assert msg.call_id == "3837617839@192.168.1.13"
    assert msg.cseq == CSeq(5, "REGISTER")
    assert msg.from_.tag == "1207315452"
    assert check_digest(msg)["nc"] == "00000002"


def test_register_401() -> None:
    msg = response("register_401")
    assert (msg.status, msg.reason) == (401, "Unauthorized")
    assert not msg.is_provisional
    assert msg.cseq == CSeq(1, "REGISTER")
    via = msg.top_via
    assert via.branch == "z9hG4bK1371463273"
    assert (via.received, via.rport) == ("10.20.30.40", 34567)
    assert via.response_address() == ("10.20.30.40", 34567)
    assert msg.to.tag == "1745532191"
    assert msg.from_.tag == "2043466181"
    challenge = msg.headers.get("WWW-Authenticate")
    assert challenge is not None
    assert msg.headers.get_all("www-authenticate") == [challenge]
    assert digest_params(challenge) == {
        "realm": DOMAIN, "nonce": "9bd055a0b9ab6de5bb8a54e4b5e7e7a1", "algorithm": "MD5", "qop": "auth",
    }
    assert 'qop="auth"' in challenge


def test_register_200() -> None:
    msg = response("register_200")
    assert (msg.status, msg.reason) == (200, "OK")
    assert msg.cseq == CSeq(2, "REGISTER")
    assert msg.to.tag == "1745532192"
    assert msg.contacts[0].uri == SipUri(host="192.168.1.64", user=IPC, port=5060)
    assert msg.expires == 3600
    assert msg.headers.get("Date") == "2026-11-23T14:34:25.123"
    assert msg.headers.get_all("date") == ["2026-11-23T14:34:25.123"]
    assert msg.top_via.response_address() == ("10.20.30.40", 34567)


def test_message_keepalive() -> None:
    msg = request("message_keepalive")
    assert msg.method == "MESSAGE"
    assert msg.request_uri.user == PLATFORM
    assert msg.to.uri.user == PLATFORM and msg.to.tag is None
    assert msg.cseq == CSeq(20, "MESSAGE")
    assert msg.headers.get("Content-Type") == "Application/MANSCDP+xml"
    assert msg.content_type == "application/manscdp+xml"
    assert msg.body.startswith(b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n')
    assert b"<CmdType>Keepalive</CmdType>" in msg.body
    assert msg.body.endswith(b"</Notify>\r\n")
    assert msg.headers.get("Content-Length") == str(len(msg.body))


def test_message_catalog_query() -> None:
    msg = request("message_catalog_query")
    assert msg.request_uri == SipUri(host=DOMAIN, user=NVR)
    assert msg.call_id == "4f2b8a3e1c0d9e75@192.168.1.10"
    assert msg.top_via.branch == "z9hG4bK-524287-1-a54d3c6b1e0f2d70"
    assert b"<CmdType>Catalog</CmdType>" in msg.body and b"<SN>17430</SN>" in msg.body
    assert msg.content_type == "application/manscdp+xml"


def test_message_catalog_response_gb2312() -> None:
    data = load("sip/message_catalog_response_gb2312.txt")
    msg = request("message_catalog_response_gb2312")
    assert msg.from_.uri.user == NVR
    assert msg.content_type == "application/manscdp+xml"
    with pytest.raises(UnicodeDecodeError):
        msg.body.decode("utf-8")
    text = msg.body.decode("gb18030")
    for name in ("大门入口", "一楼大厅", "停车场东侧", "地下车库"):
        assert name in text
        assert name.encode("gb2312") in msg.body
    # Content-Length counts bytes, not characters.
    assert int(msg.headers.get("Content-Length") or "") == len(msg.body) > len(text)
    assert bytes(msg) == data


def test_invite_live() -> None:
    msg = request("invite_live")
    assert msg.method == "INVITE"
    assert msg.request_uri == SipUri(host=DOMAIN, user=CHANNEL)
    assert msg.headers.get("Subject") == f"{CHANNEL}:0200000001,{PLATFORM}:0"
    assert msg.headers.get("s") == msg.headers.get("subject")
    assert msg.headers.get_all("subject") == [f"{CHANNEL}:0200000001,{PLATFORM}:0"]
    assert msg.headers.get("Content-Type") == "APPLICATION/SDP"
    assert msg.content_type == "application/sdp"
    assert msg.contacts[0].uri == SipUri(host="192.168.1.10", user=PLATFORM, port=5060)
    assert msg.cseq == CSeq(1, "INVITE")
    assert msg.body.startswith(b"v=0\r\no=34020000002000000001 0 0 IN IP4 192.168.1.10\r\ns=Play\r\n")
    assert b"m=video 30000 RTP/AVP 96 97 98\r\na=recvonly\r\n" in msg.body
    assert msg.body.endswith(b"y=0200000001\r\n")  # SDP ends with CRLF (Hikvision)


def test_invite_200() -> None:
    msg = response("invite_200")
    assert msg.status == 200
    assert msg.cseq == CSeq(1, "INVITE")
    assert msg.to.tag == "1376226718" and msg.from_.tag == "live7bf0"
    assert msg.top_via.branch == "z9hG4bK-3937-c1d6e1b3a2f4"
    assert msg.content_type == "application/sdp"
    assert b"a=sendonly\r\n" in msg.body
    assert b"y=0200001234\r\n" in msg.body  # the device's SSRC differs from the offer's
    assert msg.contacts[0].uri == SipUri(host="192.168.1.64", user=CHANNEL, port=5060)


def test_ack_and_bye() -> None:
    invite = request("invite_live")
    ok = response("invite_200")
    for name, cseq in (("ack", CSeq(1, "ACK")), ("bye", CSeq(2, "BYE"))):
        msg = request(name)
        assert msg.method == cseq.method
        assert msg.cseq == cseq
        assert msg.call_id == invite.call_id
        assert msg.from_ == invite.from_
        assert msg.to == ok.to
        assert msg.request_uri == ok.contacts[0].uri
        assert msg.body == b""
        assert msg.content_type is None


def test_options() -> None:
    msg = request("options")
    assert msg.method == "OPTIONS"
    assert msg.request_uri == SipUri(host="192.168.1.10", user=PLATFORM, port=5060)
    assert msg.headers.get_all("Accept") == ["application/sdp", "Application/MANSCDP+xml"]
    assert msg.headers.get("accept") == "application/sdp, Application/MANSCDP+xml"


def test_compact_headers() -> None:
    data = load("sip/compact_headers.txt")
    msg = request("compact_headers")
    assert [n for n, _ in msg.headers][:8] == ["v", "f", "t", "i", "CSeq", "m", "c", "Max-Forwards"]
    assert msg.top_via.transport == "TCP"
    assert msg.top_via.branch == "z9hG4bK5517291"
    assert msg.from_.tag == "55aa01"
    assert msg.to.uri.user == PLATFORM
    assert msg.call_id == "7731902@192.168.1.70"
    assert msg.contacts[0].uri.transport == "TCP"
    assert msg.content_type == "application/manscdp+xml"
    assert msg.headers.get("Content-Length") == msg.headers.get("l") == str(len(msg.body))
    assert b"<SN>7</SN>" in msg.body
    assert bytes(msg) == data  # compact names are kept as sent
    assert b"\r\nl: " in bytes(msg)


def test_multi_via() -> None:
    msg = request("multi_via")
    assert [n for n, _ in msg.headers].count("Via") == 3
    assert len(msg.headers.get_all("via")) == 4
    vias = msg.vias
    assert [v.branch for v in vias] == ["z9hG4bKproxy2", "z9hG4bKproxy1", "z9hG4bKedge", "z9hG4bK1296785375"]
    assert msg.top_via == vias[0]
    assert [(v.transport, v.host, v.port) for v in vias] == [
        ("UDP", "10.0.0.1", 5060),
        ("UDP", "10.0.0.2", None),
        ("TCP", "[2001:db8::7]", 5070),
        ("UDP", "192.168.1.64", 5060),
    ]
    assert vias[1].response_address() == ("10.0.0.2", 5060)
    assert vias[2].response_address() == ("2001:db8::9", 5070)
    assert vias[3].response_address() == ("172.16.0.9", 5062)
    assert msg.headers.get("Max-Forwards") == "67"


def test_folded_header_is_unfolded() -> None:
    """Folding is normalised, not preserved: each continuation joins its header with one space
    (RFC 3261 §7.3.1), so ``bytes(msg)`` is the unfolded message and that form round-trips exactly."""
    data = load("sip/folded_header.txt")
    assert b",\r\n  nonce=" in data and b",\r\n\tresponse=" in data
    msg = request("folded_header")
    value = msg.headers.get("Authorization")
    assert value is not None
    assert f'realm="{DOMAIN}", nonce="9bd055a0b9ab6de5bb8a54e4b5e7e7a1", uri=' in value
    assert '", response="' in value
    check_digest(msg)
    assert msg.headers.get("Expires") == "3600"
    assert msg.cseq == CSeq(3, "REGISTER")
    unfolded = data.replace(b"\r\n  ", b" ").replace(b"\r\n\t", b" ")
    assert bytes(msg) != data
    assert bytes(msg) == unfolded
    assert parse_message(unfolded) == msg
    assert bytes(parse_message(unfolded)) == unfolded


# --------------------------------------------------------------------------------------------------------
# Header lookups and edits


def test_case_insensitive_lookup() -> None:
    msg = request("register_first")
    for name in ("Call-ID", "CALL-ID", "call-id", "Call-Id", "i", "I", " call-id "):
        assert msg.headers.get(name) == "1011047669"
        assert name.strip() in msg.headers
    compact = request("compact_headers")
    assert compact.headers.get("Call-ID") == compact.headers.get("i") == "7731902@192.168.1.70"
    assert compact.headers.get("VIA") == compact.headers.get("v")
    assert compact.headers.get("Contact") == compact.headers.get("M")
    assert compact.headers.get("content-type") == "Application/MANSCDP+xml"
    assert compact.headers.get("X-Missing") is None
    assert compact.headers.get("X-Missing", "dflt") == "dflt"
    assert "X-Missing" not in compact.headers
    assert 1 not in compact.headers


def test_header_key_and_canonical_name() -> None:
    assert header_key(" I ") == "call-id"
    assert header_key("l") == "content-length"
    assert header_key("X-Foo") == "x-foo"
    assert canonical_name("i") == "Call-ID"
    assert canonical_name("CSEQ") == "CSeq"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("l") == "Content-Length"
    assert canonical_name("max-forwards") == "Max-Forwards"
    assert canonical_name("mime-version") == "MIME-Version"


def test_get_all_multi_valued() -> None:
    headers = Headers((
        ("Via", "SIP/2.0/UDP a;branch=1"),
        ("Contact", '"Doe, John" <sip:j@h>, <sip:k@h;x=a,b>'),
        ("v", "SIP/2.0/UDP b;branch=2, SIP/2.0/UDP c;branch=3"),
        ("Allow", "INVITE, ACK,BYE"),
        ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
        ("Subject", "x:1,y:0"),
    ))
    assert headers.get_all("via") == ["SIP/2.0/UDP a;branch=1", "SIP/2.0/UDP b;branch=2", "SIP/2.0/UDP c;branch=3"]
    assert headers.get_all("m") == ['"Doe, John" <sip:j@h>', "<sip:k@h;x=a,b>"]
    assert headers.get_all("allow") == ["INVITE", "ACK", "BYE"]
    assert headers.get_all("date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert headers.get_all("subject") == ["x:1,y:0"]
    assert headers.get_all("record-route") == []
    assert len(headers) == 6
    assert list(headers) == list(headers.items)


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("", []),
        ("   ", []),
        (" , ,", []),
        ("a", ["a"]),
        (" a , b ,c", ["a", "b", "c"]),
        ("a,,b", ["a", "b"]),
        ('"Doe, John" <sip:j@h>, <sip:k@h>', ['"Doe, John" <sip:j@h>', "<sip:k@h>"]),
        ("<sip:a@h;lr,x>, <sip:b@h>", ["<sip:a@h;lr,x>", "<sip:b@h>"]),
        (r'"a\", b", c', [r'"a\", b"', "c"]),
        (r'"a\\", b', [r'"a\\"', "b"]),
        ('"<", x', ['"<"', "x"]),
        ("SIP/2.0/UDP a;branch=1, SIP/2.0/TCP [::1]:5060;branch=2",
         ["SIP/2.0/UDP a;branch=1", "SIP/2.0/TCP [::1]:5060;branch=2"]),
    ],
)
def test_split_list(value: str, parts: list[str]) -> None:
    assert split_list(value) == parts


def test_headers_set_add_remove() -> None:
    h = Headers.of(("via", "SIP/2.0/UDP a"), ("call-id", "x"), ("cseq", "1 MESSAGE"), ("v", "SIP/2.0/UDP b"))
    assert [n for n, _ in h] == ["Via", "Call-ID", "CSeq", "Via"]
    # set: replaces every field of that name with one, at the first one's place, keeping its spelling
    h2 = h.set("VIA", "SIP/2.0/UDP c")
    assert h2.items == (("Via", "SIP/2.0/UDP c"), ("Call-ID", "x"), ("CSeq", "1 MESSAGE"))
    assert h.get_all("via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b"]  # immutable
    compact = Headers((("i", "old"), ("To", "<sip:t@h>")))
    assert compact.set("call-id", "new").items == (("i", "new"), ("To", "<sip:t@h>"))
    # set of an absent header appends it with the canonical spelling
    assert h.set("expires", "0").items[-1] == ("Expires", "0")
    assert h.set("www-authenticate", "Digest").items[-1] == ("WWW-Authenticate", "Digest")
    # add: always appends
    h3 = h.add("via", "SIP/2.0/UDP d")
    assert h3.items[-1] == ("Via", "SIP/2.0/UDP d")
    assert h3.get_all("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP d"]
    # remove: every field, whatever its spelling (compact included)
    assert h.remove("Via").items == (("Call-ID", "x"), ("CSeq", "1 MESSAGE"))
    assert h.remove("v") == h.remove("VIA")
    assert h.remove("X-Absent") == h
    assert "via" not in h.remove("via")


def test_message_with_headers_changes_bytes() -> None:
    msg = request("register_first")
    changed = msg.with_headers(msg.headers.set("Expires", "0"))
    assert changed.expires == 0
    assert bytes(changed) == load("sip/register_first.txt").replace(b"Expires: 3600", b"Expires: 0")
    resp = response("register_200")
    assert resp.with_headers(resp.headers.remove("Date")).headers.get("date") is None


def test_serialiser_fixes_content_length() -> None:
    msg = request("message_keepalive")
    body = b"<Notify/>"
    changed = replace(msg, body=body)
    out = bytes(changed)
    assert out.endswith(b"\r\nContent-Length: 9\r\n\r\n<Notify/>")
    assert parse_message(out).body == body
    # no Content-Length at all: one is appended
    bare = SipRequest("OPTIONS", "sip:h", Headers.of(("Via", "SIP/2.0/UDP h"), ("CSeq", "1 OPTIONS")))
    assert bytes(bare) == b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    assert bytes(SipResponse(200)).startswith(b"SIP/2.0 200 \r\n")


# --------------------------------------------------------------------------------------------------------
# URIs, name-addrs, Via, CSeq


def test_sip_uri() -> None:
    uri = SipUri.parse(f"sip:{IPC}@192.168.1.64:5060;transport=tcp;lr")
    assert (uri.scheme, uri.user, uri.host, uri.port) == ("sip", IPC, "192.168.1.64", 5060)
    assert uri.transport == "TCP"
    assert uri.param("LR") == "" and uri.param("maddr") is None
    assert str(uri) == f"sip:{IPC}@192.168.1.64:5060;transport=tcp;lr"
    assert SipUri.parse("sip:3402000000") == SipUri(host="3402000000")
    assert SipUri.parse("SIPS:a@h").scheme == "sips"
    assert SipUri.parse("sip:alice:secret@h").user == "alice"  # password dropped
    assert str(SipUri.parse("sip:alice:secret@h")) == "sip:alice@h"
    v6 = SipUri.parse("sip:u@[2001:db8::1]:5061;transport=tls")
    assert (v6.host, v6.port, v6.transport) == ("[2001:db8::1]", 5061, "TLS")
    assert str(v6) == "sip:u@[2001:db8::1]:5061;transport=tls"
    assert SipUri.parse("sip:[::1]").host == "[::1]"
    with_headers = SipUri.parse("sip:u@h?subject=x&priority=urgent")
    assert with_headers.headers == "subject=x&priority=urgent"
    assert str(with_headers) == "sip:u@h?subject=x&priority=urgent"
    assert SipUri.parse("sip:u@h").transport is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("http://h", "not a SIP URI: 'http://h'"),
        ("34020000001320000001@h", "not a SIP URI: '34020000001320000001@h'"),
        ("sip:", "empty host in URI"),
        ("sip:u@", "empty host in URI"),
        ("sip:u@h:0", "bad port in URI"),
        ("sip:u@h:65536", "bad port in URI"),
        ("sip:u@h:50a", "bad port in URI"),
        ("sip:u@[::1", "unterminated IPv6 reference in URI"),
        ("sip:u@[::1]x", "bad host in URI"),
        ("sip:u@[>]", "bad character in URI: 'sip:u@[>]'"),
        ("sip:u@[a;b]", "unterminated IPv6 reference in URI"),
        ("sip:u@[g::1]", "bad host in URI"),
        ("sip:u@[]:5060", "bad host in URI"),
        ("sip:u@[fe80::1%eth0]", "bad host in URI"),
        ("sip:u@h\x0b:5060", "bad host in URI"),
        ("sip:u@h<x", "bad character in URI: 'sip:u@h<x'"),
        ("sip:0?>", "bad character in URI: 'sip:0?>'"),
        ("sip:a>b@h", "bad character in URI: 'sip:a>b@h'"),
        ("sip:u@h;=x", "empty parameter name in '=x'"),
    ],
)
def test_sip_uri_errors(text: str, error: str) -> None:
    with pytest.raises(MalformedMessage) as exc:
        SipUri.parse(text)
    assert exc.value.reason == error


def test_name_addr() -> None:
    na = NameAddr.parse(f'"Gate 1" <sip:{CHANNEL}@{DOMAIN}>;tag=abc;x')
    assert na.display == "Gate 1"
    assert na.uri == SipUri(host=DOMAIN, user=CHANNEL)
    assert na.tag == "abc" and na.param("X") == ""
    assert str(na) == f'"Gate 1" <sip:{CHANNEL}@{DOMAIN}>;tag=abc;x'
    # GB devices put raw GB names (here decoded) or tokens before the URI
    assert NameAddr.parse("大门 <sip:a@h>").display == "大门"
    assert NameAddr.parse("Camera <sip:a@h>").display == "Camera"
    # addr-spec: the parameters belong to the header, not the URI
    spec = NameAddr.parse(f"sip:{IPC}@{DOMAIN};tag=77")
    assert spec.uri.params == () and spec.tag == "77"
    assert str(spec) == f"<sip:{IPC}@{DOMAIN}>;tag=77"
    # URI parameters stay inside the angle brackets
    inner = NameAddr.parse("<sip:a@h;transport=tcp>;expires=60")
    assert inner.uri.transport == "TCP" and inner.param("expires") == "60" and inner.tag is None
    assert NameAddr.parse("*").wildcard and str(NameAddr.parse("*")) == "*"
    tagged = NameAddr.parse("<sip:a@h>").with_tag("t1")
    assert str(tagged) == "<sip:a@h>;tag=t1"
    assert str(tagged.with_tag("t2")) == "<sip:a@h>;tag=t2"
    assert str(NameAddr.parse("<sip:a@h>;TAG=x").with_tag("y")) == "<sip:a@h>;TAG=y"
    # quoted display names with escapes survive a round trip
    quoted = NameAddr.parse(r'"say \"hi\" \\o/" <sip:a@h>')
    assert quoted.display == 'say "hi" \\o/'
    assert NameAddr.parse(str(quoted)) == quoted
    assert NameAddr.parse('"<sip:x@y>" <sip:a@h>').uri == SipUri(host="h", user="a")
    assert NameAddr.parse('"" <sip:a@h>').display is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("<sip:a@h", "unterminated <URI> in '<sip:a@h'"),
        ('"unterminated <sip:a@h>', "not a SIP URI: '\"unterminated <sip:a@h>'"),
        ("<http://h>", "not a SIP URI: 'http://h'"),
        ("<sip:a@h>;=1", "empty parameter name in ';=1'"),
        ("sip:a>b@h;tag=1", "bad character in URI: 'sip:a>b@h'"),
        ("<sip:a<b@h>", "bad character in URI: 'sip:a<b@h'"),
    ],
)
def test_name_addr_errors(text: str, error: str) -> None:
    with pytest.raises(MalformedMessage) as exc:
        NameAddr.parse(text)
    assert exc.value.reason == error


@pytest.mark.parametrize(
    ("text", "transport", "host", "port", "branch"),
    [
        ("SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1", "UDP", "192.168.1.64", 5060, "z9hG4bK1"),
        ("SIP/2.0/TCP cam.example;branch=z9hG4bK2", "TCP", "cam.example", None, "z9hG4bK2"),
        ("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK3;rport", "UDP", "[2001:db8::1]", 5060, "z9hG4bK3"),
        ("SIP/2.0/TLS [::1];branch=z9hG4bK4", "TLS", "[::1]", None, "z9hG4bK4"),
        ("sip/2.0/udp h:1", "UDP", "h", 1, None),
        ("SIP/2.0/UDP\th:5060;branch=x", "UDP", "h", 5060, "x"),
        ("SIP / 2.0 / UDP h", None, None, None, None),
    ],
)
def test_via_parse(text: str, transport: str | None, host: str, port: int | None, branch: str | None) -> None:
    if transport is None:
        with pytest.raises(MalformedMessage):
            Via.parse(text)
        return
    via = Via.parse(text)
    assert (via.transport, via.host, via.port, via.branch) == (transport, host, port, branch)
    assert Via.parse(str(via)) == via
    if text.startswith("SIP/2.0/") and " " in text:
        assert str(via) == text


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("SIP/2.0 192.168.1.64", "bad Via: 'SIP/2.0 192.168.1.64'"),
        ("TCP/2.0/UDP h", "bad Via: 'TCP/2.0/UDP h'"),
        ("SIP/2.0/ h", "bad Via: 'SIP/2.0/ h'"),
        ("SIP/2.0/UDP", "empty host in Via"),
        ("SIP/2.0/UDP ;branch=1", "empty host in Via"),
        ("SIP/2.0/UDP h:99999", "bad port in Via"),
        ("SIP/2.0/UDP [::1:5060", "unterminated IPv6 reference in Via"),
        ("SIP/2.0/UDP [cam.example]:5060", "bad host in Via"),
        ("SIP/2.0/UDP h\x85:5060", "bad host in Via"),
    ],
)
def test_via_errors(text: str, error: str) -> None:
    with pytest.raises(MalformedMessage) as exc:
        Via.parse(text)
    assert exc.value.reason == error


def test_via_response_address_rfc3581() -> None:
    # RFC 3261 §18.2.2: sent-by, default port 5060
    assert Via.parse("SIP/2.0/UDP 192.168.1.64").response_address() == ("192.168.1.64", 5060)
    assert Via.parse("SIP/2.0/TLS h").response_address(default_port=5061) == ("h", 5061)
    assert Via.parse("SIP/2.0/UDP 192.168.1.64:5070").response_address() == ("192.168.1.64", 5070)
    # received without rport: received address, sent-by port
    assert Via.parse("SIP/2.0/UDP 192.168.1.64:5070;received=10.0.0.1").response_address() == ("10.0.0.1", 5070)
    # RFC 3581 §4: received + rport
    via = Via.parse("SIP/2.0/UDP 192.168.1.64:5060;rport=34567;received=10.20.30.40")
    assert via.response_address() == ("10.20.30.40", 34567)
    # rport asked for but not filled in: behaves as without rport
    assert Via.parse("SIP/2.0/UDP 192.168.1.64:5062;rport").response_address() == ("192.168.1.64", 5062)
    # IPv6: brackets stripped for the socket address
    assert Via.parse("SIP/2.0/UDP [2001:db8::7]:5070").response_address() == ("2001:db8::7", 5070)
    assert Via.parse("SIP/2.0/UDP [2001:db8::7];rport=6000;received=2001:db8::9").response_address() == (
        "2001:db8::9", 6000,
    )


def test_via_with_received_rfc3581() -> None:
    # NAT, rport requested: received + rport stamped, rport in place
    via = Via.parse("SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1")
    stamped = via.with_received(("10.20.30.40", 34567))
    assert str(stamped) == "SIP/2.0/UDP 192.168.1.64:5060;rport=34567;branch=z9hG4bK1;received=10.20.30.40"
    assert stamped.response_address() == ("10.20.30.40", 34567)
    # rport requested, no NAT: received added even though identical (RFC 3581 §4)
    same = Via.parse("SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1").with_received(("192.168.1.64", 5060))
    assert str(same) == "SIP/2.0/UDP 192.168.1.64:5060;rport=5060;branch=z9hG4bK1;received=192.168.1.64"
    # no rport, host differs: received only (RFC 3261 §18.2.1); response goes to the sent-by port
    plain = Via.parse("SIP/2.0/UDP 192.168.1.64:5060;branch=z9hG4bK1").with_received(("10.20.30.40", 34567))
    assert str(plain) == "SIP/2.0/UDP 192.168.1.64:5060;branch=z9hG4bK1;received=10.20.30.40"
    assert plain.response_address() == ("10.20.30.40", 5060)
    # no rport, same host: untouched
    untouched = Via.parse("SIP/2.0/UDP 192.168.1.64:5060;branch=z9hG4bK1")
    assert untouched.with_received(("192.168.1.64", 40000)) == untouched
    # domain name in sent-by: received always added
    assert Via.parse("SIP/2.0/UDP cam.example").with_received(("10.0.0.1", 5060)).received == "10.0.0.1"
    # stale values are replaced, not duplicated
    stale = Via.parse("SIP/2.0/UDP h;rport=1;received=1.1.1.1").with_received(("2.2.2.2", 2))
    assert stale.params == (("rport", "2"), ("received", "2.2.2.2"))
    # IPv6: brackets in sent-by are not a difference
    v6 = Via.parse("SIP/2.0/UDP [2001:db8::7]:5070;branch=b")
    assert v6.with_received(("2001:db8::7", 5070)) == v6
    v6r = Via.parse("SIP/2.0/UDP [2001:db8::7]:5070;rport;branch=b").with_received(("2001:db8::7", 6000))
    assert v6r.rport == 6000 and v6r.received == "2001:db8::7"
    assert v6r.response_address() == ("2001:db8::7", 6000)


def test_cseq() -> None:
    assert CSeq.parse("1 REGISTER") == CSeq(1, "REGISTER")
    assert CSeq.parse("  20   message ") == CSeq(20, "MESSAGE")
    assert str(CSeq(2, "BYE")) == "2 BYE"
    assert CSeq.parse(str(2**31 - 1) + " ACK").number == 2**31 - 1
    for bad in ("", "1", "REGISTER", "x REGISTER", "-1 BYE", "1 B@D", str(2**31) + " ACK", "1 INVITE x"):
        with pytest.raises(MalformedMessage) as exc:
            CSeq.parse(bad)
        assert exc.value.reason == f"bad CSeq: {bad!r}"


def test_reason_phrase() -> None:
    assert reason_phrase(200) == "OK"
    assert reason_phrase(401) == "Unauthorized"
    assert reason_phrase(513) == "Message Too Large"
    assert reason_phrase(299) == "OK"
    assert reason_phrase(499) == "Client Error"
    assert reason_phrase(199) == "Provisional"


# --------------------------------------------------------------------------------------------------------
# Builders


def test_build_request() -> None:
    body = load("sip/message_catalog_query.txt").partition(b"\r\n\r\n")[2]
    req = build_request(
        "MESSAGE",
        SipUri(host=DOMAIN, user=NVR),
        via=Via("UDP", "192.168.1.10", 5060, (("rport", None), ("branch", "z9hG4bK-1"))),
        from_=NameAddr(SipUri(host=DOMAIN, user=PLATFORM)).with_tag("f1"),
        to=NameAddr(SipUri(host=DOMAIN, user=NVR)),
        call_id="c1@192.168.1.10",
        cseq=7,
        headers=[("user-agent", "GB28181-Gateway")],
        body=body,
        content_type="Application/MANSCDP+xml",
    )
    assert [n for n, _ in req.headers] == [
        "Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "User-Agent", "Content-Type", "Content-Length",
    ]
    assert req.uri == f"sip:{NVR}@{DOMAIN}"
    assert req.headers.get("Via") == "SIP/2.0/UDP 192.168.1.10:5060;rport;branch=z9hG4bK-1"
    assert req.headers.get("From") == f"<sip:{PLATFORM}@{DOMAIN}>;tag=f1"
    assert req.cseq == CSeq(7, "MESSAGE")
    assert req.headers.get("Max-Forwards") == "70"
    assert req.headers.get("Content-Length") == str(len(body))
    data = bytes(req)
    assert data.endswith(b"\r\n\r\n" + body)
    assert parse_message(data) == req
    # no body: no Content-Type, Content-Length 0
    bare = build_request("OPTIONS", "sip:h", via=Via("UDP", "h"), from_=NameAddr(SipUri("h")).with_tag("x"),
                         to=NameAddr(SipUri("h")), call_id="c", cseq=1, content_type="application/sdp",
                         max_forwards=10)
    assert bare.headers.get("Content-Type") is None
    assert bare.headers.get("Content-Length") == "0"
    assert bare.headers.get("Max-Forwards") == "10"
    assert parse_message(bytes(bare)) == bare
    with pytest.raises(LocalProtocolError) as exc:
        build_request("BAD METHOD", "sip:h", via=Via("UDP", "h"), from_=NameAddr(SipUri("h")),
                      to=NameAddr(SipUri("h")), call_id="c", cseq=1)
    assert exc.value.reason == "bad method: 'BAD METHOD'"


def test_build_response_copies_in_order() -> None:
    req = request("multi_via")
    resp = build_response(req, 200, to_tag="t99")
    assert (resp.status, resp.reason) == (200, "OK")
    vias = [(n, v) for n, v in resp.headers if header_key(n) == "via"]
    assert vias == [(n, v) for n, v in req.headers if header_key(n) == "via"]  # 3 fields, 4 values, in order
    assert [v.branch for v in resp.vias] == [v.branch for v in req.vias]
    assert resp.from_ == req.from_
    assert resp.to.uri == req.to.uri and resp.to.tag == "t99"
    assert resp.call_id == req.call_id
    assert resp.cseq == req.cseq
    assert resp.headers.get("Content-Length") == "0"
    assert resp.body == b""
    assert parse_message(bytes(resp)) == resp


def test_build_response_to_tag_rules() -> None:
    req = request("register_first")
    assert build_response(req, 100).to.tag is None
    assert build_response(req, 100, to_tag="t").to.tag is None  # never on 100 Trying
    assert build_response(req, 180, to_tag="t").to.tag == "t"
    assert build_response(req, 401, to_tag="t").to.tag == "t"
    assert build_response(req, 200).to.tag is None
    # a To that already has a tag (in-dialog request) keeps it
    bye = request("bye")
    assert build_response(bye, 200, to_tag="other").to.tag == "1376226718"
    assert build_response(bye, 200, to_tag="other").headers.get("To") == bye.headers.get("To")


def test_build_response_compact_request() -> None:
    req = request("compact_headers")
    resp = build_response(req, 200, to_tag="x")
    assert [n for n, _ in resp.headers] == ["Via", "From", "To", "Call-ID", "CSeq", "Content-Length"]
    assert resp.call_id == "7731902@192.168.1.70"
    assert resp.top_via.transport == "TCP"


def test_build_response_body_reason_headers() -> None:
    req = request("register_auth")
    date = "2026-11-23T14:34:25.123"
    resp = build_response(req, 200, to_tag="t", headers=[("contact", str(req.contacts[0])), ("expires", "3600"),
                                                         ("date", date)])
    assert resp.headers.get("Date") == date and resp.expires == 3600
    assert [n for n, _ in resp.headers][-4:] == ["Contact", "Expires", "Date", "Content-Length"]
    sdp = b"v=0\r\n"
    ok = build_response(request("invite_live"), 200, "Fine", to_tag="t", body=sdp, content_type="application/sdp")
    assert ok.reason == "Fine"
    assert ok.headers.get("Content-Type") == "application/sdp"
    assert ok.headers.get("Content-Length") == "5"
    assert bytes(ok).endswith(b"Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n")
    assert parse_message(bytes(ok)) == ok
    assert build_response(req, 599).reason == "Server Error"
    for bad in (99, 700):
        with pytest.raises(LocalProtocolError) as exc:
            build_response(req, bad)
        assert exc.value.reason == f"bad status code: {bad}"


def test_build_response_record_route() -> None:
    data = load("sip/invite_live.txt").replace(
        b"Max-Forwards: 70\r\n", b"Record-Route: <sip:10.0.0.1;lr>\r\nMax-Forwards: 70\r\nRecord-Route: <sip:10.0.0.2;lr>\r\n"
    )
    req = parse_message(data)
    assert isinstance(req, SipRequest)
    ok = build_response(req, 200, to_tag="t")
    assert ok.headers.get_all("record-route") == ["<sip:10.0.0.1;lr>", "<sip:10.0.0.2;lr>"]
    assert build_response(req, 180, to_tag="t").headers.get_all("record-route") == ok.headers.get_all("record-route")
    assert build_response(req, 100).headers.get_all("record-route") == []
    assert build_response(req, 486).headers.get_all("record-route") == []


# --------------------------------------------------------------------------------------------------------
# Truncation and malformed input: exact error strings


def before(data: bytes, marker: bytes) -> bytes:
    """``data`` up to (not including) the header line starting with ``marker``."""
    index = data.index(b"\r\n" + marker)
    return data[: index + 2]


def parse_error(data: bytes, cls: type[RemoteProtocolError] = MalformedMessage) -> str:
    with pytest.raises(cls) as exc:
        parse_message(data)
    assert type(exc.value) is cls
    return exc.value.reason


def test_register_truncated() -> None:
    data = load("sip/register_first.txt")
    head_end = data.index(b"\r\n\r\n")
    assert parse_error(b"") == "empty message"
    assert parse_error(b"\r\n") == "empty message"
    assert parse_error(b"\r\n\r\n") == "empty message"
    assert parse_error(b"\r\n\r\n \t\r\n") == "empty message"
    for n in (1, 8, data.index(b"\r\n"), data.index(b"\r\n") + 2, data.index(b"Call-ID"), head_end,
              head_end + 2, head_end + 3):
        assert parse_error(data[:n]) == "header block not terminated", n
    assert parse_message(data[: head_end + 4]) == parse_message(data)


def test_register_truncated_then_terminated() -> None:
    """A header block cut short and then ended by a blank line: the first missing/broken field is named."""
    data = load("sip/register_first.txt")
    first_line = data.index(b"\r\n")
    assert parse_error(data[:first_line] + b"\r\n\r\n") == "missing Via header"
    assert parse_error(data[:17] + b"\r\n\r\n") == "bad request line: 'REGISTER sip:3402'"
    assert parse_error(before(data, b"From:") + b"\r\n") == "missing From header"
    assert parse_error(before(data, b"To:") + b"\r\n") == "missing To header"
    assert parse_error(before(data, b"Call-ID:") + b"\r\n") == "missing Call-ID header"
    assert parse_error(before(data, b"CSeq:") + b"\r\n") == "missing CSeq header"
    cseq = data.index(b"CSeq: 1")
    assert parse_error(data[: cseq + 7] + b"\r\n\r\n") == "bad CSeq: '1'"
    assert parse_error(data[: cseq + 6] + b"\r\n\r\n") == "bad CSeq: ''"
    assert parse_error(data[: cseq + 10] + b"\r\n\r\n") == "CSeq method does not match request method"
    via = data.index(b";branch")
    # cut inside Via, From after it: Via itself is still valid
    assert parse_error(data[:via] + b"\r\n\r\n") == "missing From header"
    # everything mandatory present: the rest can be cut anywhere on a line boundary
    assert isinstance(parse_message(before(data, b"Contact:") + b"\r\n"), SipRequest)


def test_message_body_truncated() -> None:
    data = load("sip/message_keepalive.txt")
    head_end = data.index(b"\r\n\r\n") + 4
    for n in (head_end, head_end + 1, len(data) - 1):
        assert parse_error(data[:n]) == "Content-Length exceeds body", n
    assert parse_message(data).body == data[head_end:]
    # datagram: bytes beyond Content-Length are cut (RFC 3261 §18.3)
    assert parse_message(data + b"trailing junk") == parse_message(data)
    catalog = load("sip/message_catalog_response_gb2312.txt")
    # the body ends inside a GB2312 character: still only a length error
    assert parse_error(catalog[: catalog.index("停".encode("gb2312")) + 1]) == "Content-Length exceeds body"


def test_response_truncated() -> None:
    data = load("sip/register_401.txt")
    assert parse_error(data[:10] + b"\r\n\r\n") == "bad status line: 'SIP/2.0 40'"
    assert parse_error(data[:12] + b"\r\n\r\n") == "missing Via header"
    assert parse_error(before(data, b"CSeq") + b"\r\n") == "missing CSeq header"
    assert parse_error(data[: data.index(b"\r\n\r\n") + 2]) == "header block not terminated"


def replace_line(name: str, old: bytes, new: bytes) -> bytes:
    data = load(f"sip/{name}.txt")
    assert old in data
    return data.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        (b"REGISTER sip:", b"REG@STER sip:", "bad method: 'REG@STER'"),
        (b" SIP/2.0\r\n", b" SIP/3.0\r\n", "unsupported SIP version: SIP/3.0"),
        (b" SIP/2.0\r\n", b"  SIP/2.0\r\n", "bad request line: 'REGISTER sip:34020000002000000001@3402000000  SIP/2.0'"),
        (b"sip:34020000002000000001@3402000000 SIP", b"nowhere SIP", "bad Request-URI: 'nowhere'"),
        (b"Via: SIP/2.0/UDP 192.168.1.64:5060;", b"Via: SIP/2.0 192.168.1.64:5060;",
         "bad Via: 'SIP/2.0 192.168.1.64:5060;rport;branch=z9hG4bK1371463273'"),
        (b"192.168.1.64:5060;rport", b"192.168.1.64:65536;rport", "bad port in Via"),
        (b"Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1371463273", b"Via: ,", "missing Via header"),
        (b"Call-ID: 1011047669", b"Call-ID: ", "missing Call-ID header"),
        (b"CSeq: 1 REGISTER", b"CSeq: 1 INVITE", "CSeq method does not match request method"),
        (b"CSeq: 1 REGISTER", b"CSeq: 99999999999 REGISTER", "bad CSeq: '99999999999 REGISTER'"),
        (b"Content-Length: 0", b"Content-Length: -1", "bad Content-Length: '-1'"),
        (b"Content-Length: 0", b"Content-Length: 1234567890", "bad Content-Length: '1234567890'"),
        (b"Content-Length: 0", b"Content-Length: 1", "Content-Length exceeds body"),
        (b"Max-Forwards: 70", b"Max-Forwards 70", "bad header line: 'Max-Forwards 70'"),
        (b"Max-Forwards: 70", b"Max Forwards: 70", "bad header line: 'Max Forwards: 70'"),
        (b"Max-Forwards: 70", b": 70", "bad header line: ': 70'"),
        (b"\r\nVia:", b"\r\n Via:", "continuation line before any header"),
    ],
)
def test_register_malformed(old: bytes, new: bytes, error: str) -> None:
    assert parse_error(replace_line("register_first", old, new)) == error


@pytest.mark.parametrize(
    ("start", "error"),
    [
        (b"SIP/2.0 200", None),
        (b"SIP/2.0 200 ", None),
        (b"SIP/2.0 099 Low", "bad status code: 99"),
        (b"SIP/2.0 700 High", "bad status code: 700"),
        (b"SIP/2.0 2000 OK", "bad status line: 'SIP/2.0 2000 OK'"),
        (b"SIP/2.0  200 OK", "bad status line: 'SIP/2.0  200 OK'"),
        (b"SIP/1.0 200 OK", "unsupported SIP version: SIP/1.0"),
        (b"SIP/2.0 2OO OK", "bad status line: 'SIP/2.0 2OO OK'"),
    ],
)
def test_status_line(start: bytes, error: str | None) -> None:
    data = replace_line("register_200", b"SIP/2.0 200 OK", start)
    if error is None:
        msg = parse_message(data)
        assert isinstance(msg, SipResponse) and msg.status == 200 and msg.reason == ""
        assert parse_message(bytes(msg)) == msg
    else:
        assert parse_error(data) == error


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        # str.isdigit() accepts these, int() does not (or reads them as other digits): ASCII digits only
        (b"CSeq: 1 ", "CSeq: ² ".encode(), "bad CSeq: '² REGISTER'"),
        (b"CSeq: 1 ", "CSeq: ١ ".encode(), "bad CSeq: '١ REGISTER'"),
        (b"Content-Length: 0", "Content-Length: ²".encode(), "bad Content-Length: '²'"),
        (b"Content-Length: 0", "Content-Length: ٣".encode(), "bad Content-Length: '٣'"),
        (b"64:5060;rport", "64:５０６０;rport".encode(), "bad port in Via"),
        (b"64:5060;rport", "64:²;rport".encode(), "bad port in Via"),
        (b"64:5060;rport", b"64:" + b"1" * 5000 + b";rport", "bad port in Via"),  # int() refuses > 4300 digits
        (b"64:5060;rport", b"64:005060;rport", "bad port in Via"),
        (b"From: <sip:34020000001320000001@3402000000>", b"From: <sip:34020000001320000001@3402000000\x0b:1>",
         "bad host in URI"),
        (b";tag=2043466181", b';tag="2043466181', "unterminated quoted string in ';tag=\"2043466181'"),
    ],
)
def test_non_ascii_digits_and_odd_bytes(old: bytes, new: bytes, error: str) -> None:
    assert parse_error(replace_line("register_first", old, new)) == error


def test_non_ascii_digits_in_accessors() -> None:
    msg = parse_message(replace_line("register_first", b"Expires: 3600", "Expires: ²".encode()))
    with pytest.raises(MalformedMessage) as exc:
        _ = msg.expires
    assert exc.value.reason == "bad Expires: '²'"
    via = Via.parse("SIP/2.0/UDP 192.168.1.64:5060;rport=²;received=10.0.0.1")
    assert via.rport is None and via.wants_rport
    assert via.response_address() == ("10.0.0.1", 5060)
    assert Via.parse("SIP/2.0/UDP h;rport=" + "9" * 5000).rport is None
    assert parse_error(replace_line("register_200", b"SIP/2.0 200 OK", "SIP/2.0 ٢٠٠ OK".encode())) == (
        "bad status line: 'SIP/2.0 ٢٠٠ OK'"
    )


def test_odd_whitespace_in_values_is_idempotent() -> None:
    """A stray CR before the line end, and folds onto an empty value or of only whitespace, normalise once."""
    base = load("sip/register_first.txt")
    cases = {
        b"User-Agent: IP Camera\r \r\n": "IP Camera",
        b"User-Agent:\r\n IP Camera\r\n": "IP Camera",
        b"User-Agent: IP Camera\r\n \r\n": "IP Camera",
        b"User-Agent: IP\r\n \t \r\n\tCamera\r\n": "IP Camera",
    }
    # A CR inside a value is refused: copied into a response it would break the header block.
    bad = base.replace(b"User-Agent: IP Camera\r\n", b"User-Agent: IP\rCamera\r\n")
    with pytest.raises(MalformedMessage, match="bare CR in User-Agent header"):
        parse_message(bad)
    for line, value in cases.items():
        data = base.replace(b"User-Agent: IP Camera\r\n", line)
        msg = parse_message(data)
        assert msg.headers.get("User-Agent") == value, line
        again = parse_message(bytes(msg))
        assert again == msg
        assert bytes(again) == bytes(msg)


def test_unterminated_quotes_in_parameters() -> None:
    with pytest.raises(MalformedMessage) as exc:
        NameAddr.parse('<sip:a@h>;x="y')
    assert exc.value.reason == "unterminated quoted string in ';x=\"y'"
    with pytest.raises(MalformedMessage) as exc:
        Via.parse('SIP/2.0/UDP h;branch="z9')
    assert exc.value.reason == "unterminated quoted string in 'branch=\"z9'"
    with pytest.raises(MalformedMessage) as exc:
        SipUri.parse('sip:h;a="b\\"')
    assert exc.value.reason == "unterminated quoted string in 'a=\"b\\\\\"'"
    # balanced quotes (with escapes) are fine, and a tag appended afterwards survives a round trip
    na = NameAddr.parse('<sip:a@h>;x="y;\\"z"')
    assert na.param("x") == '"y;\\"z"'
    assert NameAddr.parse(str(na.with_tag("t"))).tag == "t"


def test_accessor_errors_are_remote_protocol_errors() -> None:
    """Headers the parser does not validate still fail with exact MalformedMessage errors on access."""
    bad_expires = parse_message(replace_line("register_first", b"Expires: 3600", b"Expires: soon"))
    with pytest.raises(MalformedMessage) as exc:
        _ = bad_expires.expires
    assert exc.value.reason == "bad Expires: 'soon'"
    bad_contact = parse_message(replace_line("register_first", b"Contact: <sip:", b"Contact: <http:"))
    with pytest.raises(MalformedMessage) as exc:
        _ = bad_contact.contacts
    assert exc.value.reason == "not a SIP URI: 'http:34020000001320000001@192.168.1.64:5060'"
    second_via = parse_message(
        replace_line("multi_via", b"Via: SIP/2.0/UDP 192.168.1.64", b"Via: XIP/2.0/UDP 192.168.1.64")
    )
    assert second_via.top_via.branch == "z9hG4bKproxy2"
    with pytest.raises(MalformedMessage):
        _ = second_via.vias
    no_uri = parse_message(replace_line("options", b"OPTIONS sip:", b"OPTIONS tel:"))
    assert isinstance(no_uri, SipRequest)
    assert no_uri.request_uri.scheme == "tel"


def test_from_and_to_validated_on_parse() -> None:
    assert parse_error(replace_line("register_first", b"From: <sip:", b"From: <http:")) == (
        "not a SIP URI: 'http:34020000001320000001@3402000000'"
    )
    assert parse_error(replace_line("register_first", b"To: <sip:34020000001320000001@3402000000>",
                                    b"To: <sip:34020000001320000001@3402000000")) == (
        "unterminated <URI> in '<sip:34020000001320000001@3402000000'"
    )


def test_lenient_framing() -> None:
    data = load("sip/message_keepalive.txt")
    msg = parse_message(data)
    # bare LF line endings (some embedded stacks) parse to the same message
    head, _, body = data.partition(b"\r\n\r\n")
    lf = head.replace(b"\r\n", b"\n") + b"\n\n" + body
    assert parse_message(lf) == msg
    assert bytes(parse_message(lf)) == data
    # leading CRLF keepalives glued to a datagram
    assert parse_message(b"\r\n\r\n" + data) == msg
    # no Content-Length on a datagram: the rest is the body, and serialisation adds the header
    no_length = data.replace(f"Content-Length: {len(body)}\r\n".encode(), b"")
    parsed = parse_message(no_length)
    assert parsed.body == body
    assert bytes(parsed) == no_length.replace(b"\r\n\r\n", f"\r\nContent-Length: {len(body)}\r\n\r\n".encode(), 1)
    # header-name whitespace and value whitespace are not significant
    spaced = load("sip/register_first.txt").replace(b"Expires: 3600", b"Expires \t:\t 3600 \t")
    assert parse_message(spaced) == parse_message(load("sip/register_first.txt"))


def test_oversized_datagram() -> None:
    data = load("sip/message_catalog_response_gb2312.txt")
    assert parse_message(data, max_size=len(data)) == parse_message(data)
    with pytest.raises(MessageTooLarge) as exc:
        parse_message(data, max_size=len(data) - 1)
    assert exc.value.reason == f"message of {len(data)} bytes exceeds {len(data) - 1}"
    assert exc.value.status == 513
    big = data + b" " * (DEFAULT_MAX_SIZE - len(data) + 1)
    with pytest.raises(MessageTooLarge) as exc:
        parse_message(big)
    assert exc.value.reason == f"message of {DEFAULT_MAX_SIZE + 1} bytes exceeds {DEFAULT_MAX_SIZE}"
    assert isinstance(exc.value, RemoteProtocolError)


# --------------------------------------------------------------------------------------------------------
# Stream framing (TCP)


def feed_all(parser: StreamParser, chunks: list[bytes]) -> list[SipMessage]:
    out: list[SipMessage] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


@pytest.mark.parametrize("name", SIP_VECTORS)
def test_stream_whole_and_bytewise(name: str) -> None:
    data = load(name)
    expected = parse_message(data)
    parser = StreamParser()
    assert parser.feed(data) == [expected]
    assert parser.buffered == 0
    bytewise = StreamParser()
    for i in range(len(data) - 1):
        assert bytewise.feed(data[i : i + 1]) == [], i
        assert bytewise.buffered == i + 1
    assert bytewise.feed(data[-1:]) == [expected]
    assert bytewise.buffered == 0
    assert bytewise.pings == 0


def test_stream_pipelined() -> None:
    datas = [load(n) for n in SIP_VECTORS]
    expected = [parse_message(d) for d in datas]
    parser = StreamParser()
    assert parser.feed(b"".join(datas)) == expected
    assert parser.buffered == 0
    # the same stream in odd-sized chunks
    stream = b"".join(datas)
    for size in (7, 64, 333):
        chunked = StreamParser()
        assert feed_all(chunked, [stream[i : i + size] for i in range(0, len(stream), size)]) == expected


def test_stream_every_split_of_two_messages() -> None:
    a = load("sip/message_keepalive.txt")
    b = load("sip/register_auth.txt")
    expected = [parse_message(a), parse_message(b)]
    stream = a + b
    for i in range(len(stream) + 1):
        parser = StreamParser()
        first = parser.feed(stream[:i])
        assert first == expected[: len(first)]
        assert len(first) == (i >= len(a)) + (i == len(stream))
        assert parser.buffered == (0 if i == len(stream) else i - len(a) if i >= len(a) else i)
        assert first + parser.feed(stream[i:]) == expected, i
        assert parser.buffered == 0


def test_stream_every_split_lf_only() -> None:
    """Bare-LF messages (and a blank line straddling two reads) frame the same at every split."""
    a = load("sip/options.txt").replace(b"\r\n", b"\n")
    b = load("sip/message_keepalive.txt")
    b = b.partition(b"\r\n\r\n")[0].replace(b"\r\n", b"\n") + b"\n\n" + b.partition(b"\r\n\r\n")[2]
    expected = [parse_message(a), parse_message(b)]
    stream = a + b
    for i in range(len(stream) + 1):
        for j in (i, min(len(stream), i + 1), min(len(stream), i + 3)):
            parser = StreamParser()
            assert feed_all(parser, [stream[:i], stream[i:j], stream[j:]]) == expected, (i, j)


def test_stream_trailing_partial_retained() -> None:
    a = load("sip/invite_live.txt")
    b = load("sip/message_catalog_response_gb2312.txt")
    parser = StreamParser()
    head_end = b.index(b"\r\n\r\n") + 4
    for cut in (1, 10, head_end - 1, head_end, head_end + 5, len(b) - 1):
        parser = StreamParser()
        assert parser.feed(a + b[:cut]) == [parse_message(a)]
        assert parser.buffered == cut
        assert parser.feed(b[cut:]) == [parse_message(b)]
        assert parser.buffered == 0


def test_stream_crlf_pings() -> None:
    a = load("sip/message_keepalive.txt")
    b = load("sip/bye.txt")
    expected = [parse_message(a), parse_message(b)]
    stream = b"\r\n\r\n" + a + b"\r\n\r\n\r\n\r\n" + b + b"\r\n\r\n"
    whole = StreamParser()
    assert whole.feed(stream) == expected
    assert whole.pings == 4
    assert whole.buffered == 0
    # the same pings split at every byte are still counted
    bytewise = StreamParser()
    assert feed_all(bytewise, [stream[i : i + 1] for i in range(len(stream))]) == expected
    assert bytewise.pings == 4
    assert bytewise.buffered == 0
    # a lone CRLF is held until we know whether it starts a ping
    parser = StreamParser()
    assert parser.feed(b"\r\n") == []
    assert (parser.buffered, parser.pings) == (2, 0)
    assert parser.feed(b"\r\n") == []
    assert (parser.buffered, parser.pings) == (0, 1)
    # a CRLF before a message (a pong, or slack after a body) is skipped, not counted
    parser = StreamParser()
    assert parser.feed(b"\r\n" + a + b"\r\n" + b) == expected
    assert parser.pings == 0
    # stray bare CR/LF bytes are skipped too
    parser = StreamParser()
    assert parser.feed(b"\n\r\r\n" + a) == [expected[0]]
    assert parser.pings == 0


def test_stream_without_content_length_and_lf_only() -> None:
    opt = load("sip/options.txt").replace(b"Content-Length: 0\r\n", b"")
    bye = load("sip/bye.txt")
    parser = StreamParser()
    assert parser.feed(opt + bye) == [parse_message(opt), parse_message(bye)]
    lf = bye.replace(b"\r\n", b"\n")
    assert StreamParser().feed(lf + lf) == [parse_message(bye)] * 2


def test_stream_header_block_too_large() -> None:
    parser = StreamParser(max_size=100)
    assert parser.feed(b"INVITE sip:a@h SIP/2.0\r\nX: " + b"a" * 73) == []
    assert parser.buffered == 100
    with pytest.raises(MessageTooLarge) as exc:
        parser.feed(b"a")
    assert exc.value.reason == "header block exceeds 100 bytes"
    assert parser.buffered == 0
    with pytest.raises(MalformedMessage) as exc2:
        parser.feed(load("sip/bye.txt"))
    assert exc2.value.reason == "stream unusable after error: header block exceeds 100 bytes"


def test_stream_content_length_too_large() -> None:
    data = load("sip/message_keepalive.txt")
    head_end = data.index(b"\r\n\r\n") + 4
    length = f"Content-Length: {len(data) - head_end}".encode()
    assert length in data
    huge = data[:head_end].replace(length, b"Content-Length: 999999")
    parser = StreamParser()
    with pytest.raises(MessageTooLarge) as exc:
        parser.feed(huge)  # refused as soon as the header block is complete, before the body arrives
    assert exc.value.reason == f"message of {len(huge) + 999999} bytes exceeds {DEFAULT_MAX_SIZE}"
    # exactly max_size is accepted
    exact = StreamParser(max_size=len(data))
    assert exact.feed(data) == [parse_message(data)]
    small = StreamParser(max_size=len(data) - 1)
    with pytest.raises(MessageTooLarge) as exc:
        small.feed(data[:head_end])
    assert exc.value.reason == f"message of {len(data)} bytes exceeds {len(data) - 1}"


def test_stream_refuses_after_error() -> None:
    good = load("sip/bye.txt")
    bad = replace_line("register_first", b"CSeq: 1 REGISTER", b"CSeq: one REGISTER")
    parser = StreamParser()
    assert parser.feed(good) == [parse_message(good)]
    with pytest.raises(MalformedMessage) as exc:
        parser.feed(bad + good)
    assert exc.value.reason == "bad CSeq: 'one REGISTER'"
    assert parser.buffered == 0
    for data in (good, b"", b"\r\n\r\n"):
        with pytest.raises(MalformedMessage) as exc:
            parser.feed(data)
        assert exc.value.reason == "stream unusable after error: bad CSeq: 'one REGISTER'"


def test_stream_feed_frames_keeps_stream_on_bad_message() -> None:
    """``feed_frames`` frames without validating: the adapter parses each frame and can answer 400."""
    good = load("sip/bye.txt")
    bad = replace_line("register_first", b"CSeq: 1 REGISTER", b"CSeq: one REGISTER")
    parser = StreamParser()
    frames = parser.feed_frames(b"\r\n\r\n" + bad + good[:20])
    assert frames == [bad]
    assert parser.pings == 1 and parser.buffered == 20
    with pytest.raises(MalformedMessage):
        parse_message(frames[0])
    assert parser.feed_frames(good[20:] + good) == [good, good]
    assert parser.feed(good) == [parse_message(good)]
    # framing errors still end the stream
    assert parser.feed_frames(b"Bad Start Line Here\r\n\r\n") == [b"Bad Start Line Here\r\n\r\n"]
    with pytest.raises(MalformedMessage) as exc:
        parser.feed_frames(b"INVITE sip:a@h SIP/2.0\r\nBad Line\r\n\r\n")
    assert exc.value.reason == "bad header line: 'Bad Line'"
    with pytest.raises(MalformedMessage):
        parser.feed_frames(good)


def test_stream_garbage_is_malformed() -> None:
    parser = StreamParser()
    with pytest.raises(MalformedMessage) as exc:
        parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert exc.value.reason == "unsupported SIP version: HTTP/1.1"


# --------------------------------------------------------------------------------------------------------
# Properties (Hypothesis)


def normalised(msg: SipMessage) -> SipMessage:
    """What serialisation is allowed to change: Content-Length becomes the body length (appended when
    absent), duplicates dropped."""
    items: list[tuple[str, str]] = []
    seen = False
    for name, value in msg.headers:
        if header_key(name) == "content-length":
            if seen:
                continue
            seen = True
            value = str(len(msg.body))
        items.append((name, value))
    if not seen:
        items.append(("Content-Length", str(len(msg.body))))
    return msg.with_headers(Headers(tuple(items)))


def exercise(msg: SipMessage) -> None:
    """Every accessor either works or raises RemoteProtocolError; serialisation is idempotent."""
    accessors: list[Callable[[], object]] = [
        lambda: msg.call_id, lambda: msg.cseq, lambda: msg.vias, lambda: msg.top_via, lambda: msg.from_,
        lambda: msg.to, lambda: msg.contacts, lambda: msg.content_type, lambda: msg.expires,
        lambda: msg.top_via.response_address(), lambda: msg.top_via.with_received(("10.0.0.1", 1)),
        lambda: [(v.rport, v.received, v.branch, str(v)) for v in msg.vias],
        lambda: [(str(c), c.tag) for c in msg.contacts],
        lambda: (str(msg.from_), str(msg.to), msg.from_.tag, msg.to.tag),
    ]
    if isinstance(msg, SipRequest):
        accessors.append(lambda: str(msg.request_uri))
    for accessor in accessors:
        try:
            accessor()
        except RemoteProtocolError:
            pass
    data = bytes(msg)
    again = parse_message(data, max_size=len(data))
    assert again == normalised(msg)
    assert bytes(again) == data
    assert StreamParser(max_size=len(data)).feed(data) == [again]
    if isinstance(msg, SipRequest):
        try:
            resp = build_response(msg, 200, to_tag="z")
        except RemoteProtocolError:
            return
        assert parse_message(bytes(resp)) == resp


def parse_or_reject(data: bytes) -> SipMessage | None:
    try:
        msg = parse_message(data)
    except RemoteProtocolError:
        return None
    exercise(msg)
    return msg


SIP_TOKENS = [
    b"INVITE", b"REGISTER", b"MESSAGE", b"SIP/2.0", b"SIP/2.0/UDP", b"sip:", b"sips:", b"@", b":", b";", b",", b"=",
    b" ", b"\t", b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\r\n ", b"<", b">", b'"', b"\\", b"[", b"]", b"?", b"200",
    b"Via: ", b"From: ", b"To: ", b"Call-ID: ", b"CSeq: ", b"Contact: ", b"Content-Length: ", b"l: ", b"v: ",
    b"Expires: ", b"1", b"0", b"5060", b"99999", b"h", b"branch=", b"rport", b"received=", b"tag=", b"\xb2",
    b"\xc2\xb2", b"\xd9\xa3", b"\xff", b"\xe5\xa4\xa7", b"\xb4\xf3", b"1 INVITE", b"2 REGISTER",
]

sip_soup = st.lists(st.sampled_from(SIP_TOKENS), max_size=60).map(b"".join)


@st.composite
def mutated_vector(draw: st.DrawFn) -> bytes:
    data = bytearray(load(draw(st.sampled_from(SIP_VECTORS))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "token", "dup"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = bytes([draw(st.sampled_from(b" \t\r\n:;,=<>\"\\@[]0123456789\xb2\xc2\xff"))])
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(SIP_TOKENS))
        elif op == "dup":
            end = min(len(data), pos + draw(st.integers(1, 40)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    parse_or_reject(data)


@FUZZ
@given(sip_soup)
def test_fuzz_sip_token_soup(data: bytes) -> None:
    parse_or_reject(data)
    parse_or_reject(b"INVITE sip:a@h SIP/2.0\r\n" + data)


@FUZZ
@given(mutated_vector())
def test_fuzz_mutated_vectors(data: bytes) -> None:
    parse_or_reject(data)


# Values that have broken parsers: non-ASCII digits ('²' passes str.isdigit, int() rejects it), digit strings
# past int()'s 4300-digit limit, stray CR, vertical tab, NEL and LINE SEPARATOR (str.strip() whitespace).
TRICKY = ["²", "٣", "１", "1" * 4400, "\r", "\x0b", "\x85", "\u2028", "\x00", '"', "\\", "<", ">", ";", ",", " ", "\t",
          "\r\n ", "\r\n\t", "=", "@", ":", "[", "]", "?", "%", "大"]


@st.composite
def tricky_value(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few characters replaced or inserted from TRICKY (UTF-8 encoded)."""
    text = original.decode("utf-8", "surrogateescape")
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(text)))
        width = draw(st.integers(0, 2))
        text = text[:pos] + draw(st.sampled_from(TRICKY)) + text[pos + width :]
    return text.encode("utf-8", "surrogateescape")


@st.composite
def replaced_header(draw: st.DrawFn) -> bytes:
    """A valid vector with one header's value (or the start line) replaced by soup or made tricky:
    reaches every structured accessor."""
    data = load(draw(st.sampled_from(SIP_VECTORS)))
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    index = draw(st.integers(0, len(lines) - 1))
    if index == 0:
        lines[0] = draw(tricky_value(lines[0]))
    else:
        name, _, value = lines[index].partition(b": ")
        new = draw(st.one_of(sip_soup, tricky_value(value)))
        lines[index] = name + b": " + new
    return b"\r\n".join(lines) + sep + body


@FUZZ
@given(replaced_header())
def test_fuzz_header_values(data: bytes) -> None:
    parse_or_reject(data)


@FUZZ
@given(st.data())
def test_fuzz_stream_chunking(data: st.DataObject) -> None:
    parts = data.draw(st.lists(st.one_of(st.sampled_from(SIP_VECTORS).map(load), mutated_vector(),
                                         st.sampled_from([b"\r\n", b"\r\n\r\n", b"\n", b"\r"])), max_size=5))
    stream = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    reference = StreamParser()
    try:
        ref_msgs: list[SipMessage] | None = reference.feed(stream)
        ref_error: RemoteProtocolError | None = None
    except RemoteProtocolError as exc:
        ref_msgs, ref_error = None, exc

    parser = StreamParser()
    got: list[SipMessage] = []
    error: RemoteProtocolError | None = None
    for chunk in chunks:
        try:
            got.extend(parser.feed(chunk))
        except RemoteProtocolError as exc:
            error = exc
            break
    if ref_error is None:
        assert error is None
        assert got == ref_msgs
        assert (parser.pings, parser.buffered) == (reference.pings, reference.buffered)
    else:
        # Same kind of error, though not always the same one: feed() frames a whole read before validating
        # it, so a framing error later in the read can be reported before a validation error earlier on.
        assert error is not None
        assert type(error) is type(ref_error)
        with pytest.raises(MalformedMessage):
            parser.feed(b"\r\n")
    for msg in got:
        exercise(msg)


@FUZZ
@given(st.binary(max_size=200), st.integers(1, 300))
def test_fuzz_stream_random_bytes(data: bytes, max_size: int) -> None:
    parser = StreamParser(max_size=max_size)
    try:
        for i in range(0, len(data), 17):
            for msg in parser.feed(data[i : i + 17]):
                exercise(msg)
    except RemoteProtocolError:
        pass


URI_ALPHABET = st.sampled_from([*"sip:SIP/2.0UDPTCP@<>;=\"\\ ,[]?:.0123456789abh\t*", *TRICKY[:3], "sip:", "tag=",
                                 "\x0b", "\x85", "\u2028", "rport", "received=", "5060"])
uri_text = st.one_of(st.text(max_size=40), st.lists(URI_ALPHABET, max_size=40).map("".join))


@FUZZ
@given(uri_text)
def test_fuzz_sip_uri(text: str) -> None:
    try:
        uri = SipUri.parse(text)
    except MalformedMessage:
        return
    assert SipUri.parse(str(uri)) == uri
    _ = (uri.transport, uri.param("lr"))


@FUZZ
@given(st.one_of(uri_text, st.tuples(uri_text, uri_text).map(lambda t: f"{t[0]} <sip:{t[1]}>")))
def test_fuzz_name_addr(text: str) -> None:
    try:
        na = NameAddr.parse(text)
    except MalformedMessage:
        return
    assert NameAddr.parse(str(na)) == na
    assert NameAddr.parse(str(na.with_tag("x"))).tag == "x" or na.wildcard


@FUZZ
@given(st.one_of(uri_text, uri_text.map(lambda t: "SIP/2.0/UDP " + t)))
def test_fuzz_via(text: str) -> None:
    try:
        via = Via.parse(text)
    except MalformedMessage:
        return
    assert Via.parse(str(via)) == via
    _ = (via.branch, via.rport, via.received, via.wants_rport, via.response_address())
    stamped = via.with_received(("10.0.0.1", 5060))
    assert Via.parse(str(stamped)) == stamped


@FUZZ
@given(st.text(max_size=40))
def test_fuzz_split_list(text: str) -> None:
    parts = split_list(text)
    assert all(p and p == p.strip() for p in parts)


def test_builders_refuse_header_injection() -> None:
    import pytest as _pytest

    from sip.errors import LocalProtocolError
    from sip.message import NameAddr, SipUri, Via, build_request, build_response

    req = build_request("OPTIONS", "sip:a@b", via=Via("UDP", "h", 5060, (("branch", "z9hG4bK1"),)),
                        from_=NameAddr(SipUri(host="b", user="a"), params=(("tag", "1"),)),
                        to=NameAddr(SipUri(host="b", user="c")), call_id="x", cseq=1)
    with _pytest.raises(LocalProtocolError, match="line break in X-Name header value"):
        build_response(req, 200, headers=[("X-Name", "a\r\nEvil: 1")])
    with _pytest.raises(LocalProtocolError, match="reason phrase contains a line break"):
        build_response(req, 400, "bad\r\nEvil: 1")
    with _pytest.raises(LocalProtocolError):
        build_request("OPTIONS", "sip:a@b", via=req.top_via, from_=req.from_, to=req.to, call_id="x\ny", cseq=1)
