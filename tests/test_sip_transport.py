"""The SIP listener through real UDP and TCP sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from gateway.config import SipConfig
from gateway.sip_router import SipRouter
from gateway.sip_transport import SipServer
from sip.message import SipResponse, StreamParser, parse_message

pytestmark = pytest.mark.e2e


def options(branch: str = "z9hG4bK-1", call_id: str = "c1", port: int = 5999, cseq: int = 1) -> bytes:
    return (
        f"OPTIONS sip:34020000002000000001@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.1.2.3:{port};rport;branch={branch}\r\n"
        "From: <sip:34020000001320000001@3402000000>;tag=ft\r\n"
        "To: <sip:34020000002000000001@3402000000>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} OPTIONS\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def message(body: bytes, branch: str = "z9hG4bK-m", content_type: str = "Application/MANSCDP+xml") -> bytes:
    head = (
        "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.1.2.3:5999;rport;branch={branch}\r\n"
        "From: <sip:34020000001320000001@3402000000>;tag=ft\r\n"
        "To: <sip:34020000002000000001@3402000000>\r\n"
        f"Call-ID: {branch}-call\r\n"
        "CSeq: 7 MESSAGE\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


KEEPALIVE = (
    b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>5</SN>\r\n'
    b"<DeviceID>34020000001320000001</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
)

XML_BOMB = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>\n'
    b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>&lol3;</DeviceID></Notify>"
)


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("gb28181_sip_dropped_total", {"reason": reason}) or 0.0


@pytest.fixture
async def server() -> AsyncIterator[SipServer]:
    config = SipConfig(port=0, udp_queue_size=256, max_message_size=4096, tcp_idle_timeout=2.0)
    srv = SipServer(config, SipRouter())
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.queue.put_nowait(data)


async def udp_client(source: str = "127.0.0.1") -> tuple[asyncio.DatagramTransport, UdpClient]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(UdpClient, local_addr=(source, 0))
    return transport, proto


async def recv_response(proto: UdpClient, timeout: float = 2.0) -> SipResponse:
    msg = parse_message(await asyncio.wait_for(proto.queue.get(), timeout))
    assert isinstance(msg, SipResponse)
    return msg


async def test_udp_options_answered_to_source_with_rport(server: SipServer) -> None:
    transport, proto = await udp_client()
    transport.sendto(options(), ("127.0.0.1", server.port))
    resp = await recv_response(proto)
    assert resp.status == 200
    assert "MESSAGE" in (resp.headers.get("Allow") or "")
    via = resp.top_via
    # RFC 3581: the response carries the address and port we really sent from, and went there.
    assert via.received == "127.0.0.1"
    assert via.rport == transport.get_extra_info("sockname")[1]
    assert resp.to.tag
    transport.close()


async def test_udp_retransmission_absorbed_and_answered_again(server: SipServer) -> None:
    transport, proto = await udp_client()
    before = REGISTRY.get_sample_value("gb28181_sip_requests_total", {"direction": "in", "method": "OPTIONS"})
    tags = set()
    for _ in range(3):  # each retransmission after the answer gets the same final response again
        transport.sendto(options(branch="z9hG4bK-retrans"), ("127.0.0.1", server.port))
        tags.add((await recv_response(proto)).to.tag)
    assert len(tags) == 1  # the same final response re-sent, not three transactions
    after = REGISTRY.get_sample_value("gb28181_sip_requests_total", {"direction": "in", "method": "OPTIONS"})
    assert (after or 0) - (before or 0) == 1
    transport.close()


async def test_tcp_whole_bytewise_and_pipelined(server: SipServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    framer = StreamParser()

    async def read_responses(n: int) -> list[SipResponse]:
        out: list[SipResponse] = []
        while len(out) < n:
            data = await asyncio.wait_for(reader.read(65536), 2.0)
            assert data, "connection closed early"
            out.extend(m for m in framer.feed(data) if isinstance(m, SipResponse))
        return out

    writer.write(options(branch="z9hG4bK-t1", call_id="t1"))
    (resp,) = await read_responses(1)
    assert resp.status == 200 and resp.call_id == "t1"

    for byte in options(branch="z9hG4bK-t2", call_id="t2"):
        writer.write(bytes([byte]))
        await writer.drain()
    (resp,) = await read_responses(1)
    assert resp.call_id == "t2"

    writer.write(options(branch="z9hG4bK-t3", call_id="t3") + b"\r\n\r\n" +
                 options(branch="z9hG4bK-t4", call_id="t4"))
    resps = await read_responses(2)
    assert [r.call_id for r in resps] == ["t3", "t4"]
    writer.close()


async def test_malformed_request_answered_400(server: SipServer) -> None:
    transport, proto = await udp_client()
    bad = options().replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS")
    before = dropped("malformed")
    transport.sendto(bad, ("127.0.0.1", server.port))
    resp = await recv_response(proto)
    assert resp.status == 400
    assert resp.call_id == "c1"
    assert dropped("malformed") == before + 1
    transport.close()


async def test_garbage_dropped_and_counted_server_keeps_answering(server: SipServer) -> None:
    transport, proto = await udp_client()
    before = dropped("malformed")
    for junk in (b"\x00\xff" * 50, b"hello world\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n"):
        transport.sendto(junk, ("127.0.0.1", server.port))
    transport.sendto(options(branch="z9hG4bK-after"), ("127.0.0.1", server.port))
    resp = await recv_response(proto)
    assert resp.status == 200
    assert proto.queue.empty()
    assert dropped("malformed") >= before + 3
    transport.close()


async def test_oversized_datagram_refused(server: SipServer) -> None:
    transport, proto = await udp_client()
    big = message(b"<Notify>" + b"x" * 5000 + b"</Notify>", branch="z9hG4bK-big")
    before = dropped("malformed") + dropped("too_large")
    transport.sendto(big, ("127.0.0.1", server.port))
    resp = await recv_response(proto)
    assert resp.status == 513
    assert dropped("malformed") + dropped("too_large") == before + 1
    transport.close()


async def test_oversized_tcp_message_closes_connection(server: SipServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    before = dropped("too_large")
    writer.write(message(b"x" * 8000, branch="z9hG4bK-bigtcp"))
    data = await asyncio.wait_for(reader.read(), 2.0)
    assert data == b""  # closed without buffering 8 kB past the cap
    assert dropped("too_large") == before + 1


async def test_xml_bomb_refused(server: SipServer) -> None:
    transport, proto = await udp_client()
    transport.sendto(message(XML_BOMB, branch="z9hG4bK-bomb"), ("127.0.0.1", server.port))
    resp = await recv_response(proto)
    assert resp.status == 400
    transport.close()


async def test_keepalive_message_accepted_and_wrong_type_415(server: SipServer) -> None:
    transport, proto = await udp_client()
    transport.sendto(message(KEEPALIVE, branch="z9hG4bK-ka"), ("127.0.0.1", server.port))
    assert (await recv_response(proto)).status == 200
    transport.sendto(message(b"hello", branch="z9hG4bK-txt", content_type="text/plain"),
                     ("127.0.0.1", server.port))
    assert (await recv_response(proto)).status == 415
    transport.close()


async def test_unknown_method_405(server: SipServer) -> None:
    transport, proto = await udp_client()
    req = options(branch="z9hG4bK-pub").replace(b"OPTIONS", b"PUBLISH")
    transport.sendto(req, ("127.0.0.1", server.port))
    resp = await recv_response(proto)
    assert resp.status == 405
    assert "REGISTER" in (resp.headers.get("Allow") or "")
    transport.close()


FLOODER = """
import socket, sys, time
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.2", 0))  # another loopback source address
deadline = time.monotonic() + float(sys.argv[2])
i = 0
while time.monotonic() < deadline:
    msg = (f"OPTIONS sip:x@127.0.0.1 SIP/2.0\\r\\nVia: SIP/2.0/UDP 127.0.0.2:9;branch=z9hG4bK-f{i}\\r\\n"
           f"From: <sip:f@x>;tag=f\\r\\nTo: <sip:x@x>\\r\\nCall-ID: f{i}\\r\\nCSeq: 1 OPTIONS\\r\\n"
           "Content-Length: 0\\r\\n\\r\\n").encode()
    s.sendto(msg, ("127.0.0.1", port))
    i += 1
print(i)
"""


async def test_flood_from_one_source_does_not_stop_answers_to_another(server: SipServer) -> None:
    flooder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOODER, str(server.port), "4", stdout=asyncio.subprocess.PIPE
    )
    await asyncio.sleep(0.5)  # the flood is under way
    transport, proto = await udp_client("127.0.0.1")
    target = ("127.0.0.1", server.port)
    before = dropped("flood") + dropped("queue_full") + dropped("rate_limited")
    answered = 0
    for n in range(10):
        # An honest client retransmits like RFC 3261 Timer E (every T1 = 0.5 s) until answered.
        request = options(branch=f"z9hG4bK-h{n}", call_id=f"h{n}")
        for _attempt in range(8):
            transport.sendto(request, target)
            try:
                resp = await recv_response(proto, timeout=0.5)
            except TimeoutError:
                continue
            answered += resp.call_id == f"h{n}"
            break
    out, _ = await flooder.communicate()
    transport.close()
    assert int(out) > 1000, "the flooder did not flood"
    assert answered == 10
    assert dropped("flood") + dropped("queue_full") + dropped("rate_limited") > before + 1000


async def test_idle_tcp_connection_closed(server: SipServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    before = dropped("tcp_idle")
    data = await asyncio.wait_for(reader.read(), 6.0)
    assert data == b""
    assert dropped("tcp_idle") == before + 1
    writer.close()


async def test_tests_run_on_uvloop() -> None:
    import uvloop

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)  # the production loop (tests/conftest.py)


async def test_overload_answered_503_with_retry_after() -> None:
    srv = SipServer(SipConfig(port=0, max_transactions=2, retry_after=7), SipRouter())
    await srv.start()
    try:
        transport, proto = await udp_client()
        before = dropped("overload")
        statuses = []
        for i in range(4):  # completed non-INVITE transactions live on for Timer J: the table fills up
            transport.sendto(options(branch=f"z9hG4bK-ov{i}", call_id=f"ov{i}"), ("127.0.0.1", srv.port))
            statuses.append(await recv_response(proto))
        assert [r.status for r in statuses] == [200, 200, 503, 503]
        assert statuses[2].headers.get("Retry-After") == "7"
        assert dropped("overload") == before + 2
        transport.close()
    finally:
        await srv.stop()
