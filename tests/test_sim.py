"""The device simulator against a small platform stand-in (our SipServer + SipRouter on 127.0.0.1).

The stand-in is a minimal registrar written here, not ``gateway.devices``: it challenges REGISTER (realm = domain,
MD5, qop=auth), checks the answer with ``sip.digest.verify``, answers 200 with Expires and Date, answers keepalives
(200, or whatever a test asks), records everything, and sends ``<Query>`` MESSAGEs to registered devices. The
end-to-end tests against the real registry live in ``tests/test_devices.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.catalog import CatalogCollector, item_kind
from gateway.config import SipConfig
from gateway.sim import RegState, SimConfig, Simulator
from gateway.sim.catalog import PLACES, catalog_ids, channel_name
from gateway.sim.cli import main, parse_server
from gateway.sim.config import channel_id, derived_id, device_ids
from gateway.sip_router import SipRouter
from gateway.sip_transport import SipServer
from sip import manscdp
from sip.digest import AuthResult, Challenge, Credentials, DigestAlgorithm, NonceManager, verify
from sip.endpoint import Peer, RequestReceived, Transport
from sip.message import NameAddr, SipRequest, SipUri, Via, build_request, build_response

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
PLATFORM_ID = "34020000002000000001"
DOMAIN = "3402000000"
PASSWORD = "12345678"
FIRST = "34020000001320000001"
CHANNEL_FIELDS = ("DeviceID", "Name", "Manufacturer", "Model", "Owner", "CivilCode", "Address", "Parental",
                  "ParentID", "SafetyWay", "RegisterWay", "Secrecy", "IPAddress", "Port", "Status", "Longitude",
                  "Latitude")


# --------------------------------------------------------------------------------------------------- stand-in
@dataclass
class Seen:
    """A request the platform received, when, and what it answered."""

    request: SipRequest
    peer: Peer
    at: float
    status: int = 0


@dataclass
class Platform:
    password: str = PASSWORD
    grant: int | None = None
    """Expires granted (None: what the device asked for)."""
    keepalive_status: int = 200
    register_script: deque[tuple[int, list[tuple[str, str]]]] = field(default_factory=deque)
    """Answers for the next REGISTERs, before any digest logic (e.g. 503 with Retry-After)."""
    registers: list[Seen] = field(default_factory=list)
    keepalives: list[tuple[Seen, manscdp.ManscdpDocument]] = field(default_factory=list)
    responses: list[tuple[Seen, manscdp.ManscdpDocument]] = field(default_factory=list)
    registered: dict[str, Peer] = field(default_factory=dict)
    server: SipServer | None = None

    async def start(self) -> None:
        router = SipRouter()
        router.on_method("REGISTER", self._on_register)
        router.on_manscdp("Notify", "Keepalive", self._on_keepalive)
        for cmd in ("Catalog", "DeviceInfo", "DeviceStatus"):
            router.on_manscdp("Response", cmd, self._on_response)
        self.nonces = NonceManager(b"stand-in nonce secret 0123456789", 300.0)
        self.server = SipServer(SipConfig(port=0, t1=0.1, source_rate_limit=0), router)
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _on_register(self, server: SipServer, ev: RequestReceived) -> None:
        req = ev.request
        seen = Seen(req, ev.peer, self._now())
        self.registers.append(seen)
        if self.register_script:
            seen.status, headers = self.register_script.popleft()
            server.respond(build_response(req, seen.status, to_tag="p", headers=headers))
            return
        auth = req.headers.get("Authorization")
        if auth is None:
            challenge = Challenge(realm=DOMAIN, nonce=self.nonces.issue(seen.at), algorithm=DigestAlgorithm.MD5,
                                  qop=("auth",))
            seen.status = 401
            server.respond(build_response(req, 401, to_tag="p", headers=[("WWW-Authenticate", str(challenge))]))
            return
        creds = Credentials.parse(auth)
        device_id = req.from_.uri.user or ""
        if creds.username != device_id or verify(creds, self.password, "REGISTER", seen.at, self.nonces,
                                                 DOMAIN) is not AuthResult.OK:
            seen.status = 403
            server.respond(build_response(req, 403, to_tag="p"))
            return
        expires = req.expires if req.expires is not None else 3600
        if expires == 0:
            self.registered.pop(device_id, None)
        else:
            expires = self.grant if self.grant is not None else expires
            via = req.top_via
            self.registered[device_id] = (
                Peer(Transport.UDP, via.response_address()) if ev.peer.transport is Transport.UDP else ev.peer
            )
        seen.status = 200
        server.respond(build_response(req, 200, to_tag="p", headers=[
            ("Expires", str(expires)), ("Date", "2026-11-23T14:34:25.123")]))

    def _on_keepalive(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        seen = Seen(ev.request, ev.peer, self._now(), self.keepalive_status)
        self.keepalives.append((seen, doc))
        server.respond(build_response(ev.request, self.keepalive_status, to_tag="p"))

    def _on_response(self, server: SipServer, ev: RequestReceived, doc: manscdp.ManscdpDocument) -> None:
        self.responses.append((Seen(ev.request, ev.peer, self._now(), 200), doc))
        server.respond(build_response(ev.request, 200, to_tag="p"))

    async def query(self, device_id: str, cmd_type: str, sn: int, *, target: str | None = None) -> int:
        """Send ``<Query>`` to a registered device (Request-URI user ``target``); the SIP status."""
        assert self.server is not None
        peer = self.registered[device_id]
        body = manscdp.encode("Query", cmd_type, sn, target or device_id)
        via = Via(transport=peer.transport.value, host="127.0.0.1", port=self.port,
                  params=(("rport", None), ("branch", self.server.endpoint.new_branch())))
        req = build_request(
            "MESSAGE", SipUri(host=peer.addr[0], port=peer.addr[1], user=target or device_id), via=via,
            from_=NameAddr(SipUri(host=DOMAIN, user=PLATFORM_ID), params=(("tag", "q"),)),
            to=NameAddr(SipUri(host=DOMAIN, user=target or device_id)),
            call_id=self.server.endpoint.new_call_id(), cseq=1, body=body, content_type="Application/MANSCDP+xml",
        )
        return (await self.server.request(req, peer)).status

    def answers(self, sn: int) -> list[manscdp.ManscdpDocument]:
        return [doc for _, doc in self.responses if doc.sn == sn]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds (generous functional timeout, polled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    p = Platform()
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


MakeSim = Callable[..., Awaitable[Simulator]]


def sim_config(platform: Platform, **kw: object) -> SimConfig:
    base: dict[str, object] = dict(
        server=("127.0.0.1", platform.port), channels=4, keepalive_interval=5.0, register_rate=1000.0,
        retry_min=0.05, retry_max=0.2, t1=0.05, unregister_timeout=3.0, seed=1,
    )
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
async def make_sim(platform: Platform) -> AsyncIterator[MakeSim]:
    sims: list[Simulator] = []

    async def make(**kw: object) -> Simulator:
        sim = Simulator(sim_config(platform, **kw))
        await sim.start()
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        await sim.stop()


# --------------------------------------------------------------------------------------------------- IDs, config
def test_ids_derived_from_the_first_device() -> None:
    assert device_ids(FIRST, 3) == [FIRST, "34020000001320000002", "34020000001320000003"]
    assert channel_id(FIRST, 0) == "34020000001310001001"
    assert channel_id("34020000001320000002", 9) == "34020000001310002010"
    assert item_kind(derived_id(FIRST, "215", 1)) == "business_group"
    assert item_kind(derived_id(FIRST, "216", 2)) == "virtual_org"
    config = SimConfig(devices=2, channels=3, catalog_groups=True, virtual_orgs=2)
    ids = catalog_ids(config, FIRST)
    assert [i[10:13] for i in ids] == ["215", "216", "216", "131", "131", "131"]
    assert len(set(ids + catalog_ids(config, "34020000001320000002"))) == 12


def test_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="transport = 'sctp'"):
        SimConfig(transport="sctp")
    with pytest.raises(ValueError, match="first_id"):
        SimConfig(first_id="123")
    with pytest.raises(ValueError, match="would overflow"):
        SimConfig(first_id="34020000001320999999", devices=2)
    with pytest.raises(ValueError, match="codec"):
        SimConfig(codec="mjpeg")


def test_parse_server() -> None:
    assert parse_server("10.0.0.1:5061") == ("10.0.0.1", 5061)
    assert parse_server("gw.example") == ("gw.example", 5060)
    assert parse_server("[::1]:5062") == ("::1", 5062)
    assert parse_server("::1") == ("::1", 5060)


# --------------------------------------------------------------------------------------------------- REGISTER
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_register_with_digest(platform: Platform, make_sim: MakeSim, transport: str) -> None:
    sim = await make_sim(devices=2, transport=transport)
    assert await sim.wait_registered(timeout=10)
    assert set(platform.registered) == {FIRST, "34020000001320000002"}
    for device_id in platform.registered:
        first, second = [s for s in platform.registers if s.request.from_.uri.user == device_id][:2]
        assert first.status == 401 and "Authorization" not in first.request.headers
        assert second.status == 200
        # The challenge answered on the same Call-ID, CSeq + 1, From tag kept.
        assert second.request.call_id == first.request.call_id
        assert second.request.cseq.number == first.request.cseq.number + 1
        assert second.request.from_.tag == first.request.from_.tag
        creds = Credentials.parse(second.request.headers.get("Authorization") or "")
        assert creds.username == device_id and creds.realm == DOMAIN and creds.qop == "auth"
        assert str(second.request.request_uri) == f"sip:{PLATFORM_ID}@{DOMAIN}"
        assert second.request.contacts[0].uri.user == device_id
        assert second.request.contacts[0].uri.port == sim.port
        assert second.peer.transport is Transport(transport.upper())
        assert second.request.top_via.transport == transport.upper()
    device = sim.device(FIRST)
    assert device.state is RegState.REGISTERED and device.registrations == 1
    assert device.expires_granted == 3600
    # Time sync from the 200's Date (2026-11-23T14:34:25.123, local time).
    assert abs(time.time() + device.clock_offset - time.mktime((2026, 11, 23, 14, 34, 25, 0, 0, -1)) - 0.123) < 1


async def test_tcp_queries_come_back_over_the_connection(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim(devices=1, transport="tcp", channels=30)
    assert await sim.wait_registered(timeout=10)
    assert platform.registered[FIRST].conn_id is not None
    assert await platform.query(FIRST, "Catalog", 42) == 200
    await until(lambda: len(platform.answers(42)) == 2)
    assert all(seen.peer.transport is Transport.TCP for seen, _ in platform.responses)
    assert sum(len(d.items("DeviceList")) for d in platform.answers(42)) == 30


async def test_refresh_before_expiry(platform: Platform, make_sim: MakeSim) -> None:
    platform.grant = 1  # refreshed at 2/3 s
    sim = await make_sim()
    device = sim.device(FIRST)
    await until(lambda: device.registrations >= 3)
    ok = [s for s in platform.registers if s.status == 200]
    gaps = [b.at - a.at for a, b in zip(ok, ok[1:], strict=False)]
    assert all(0.5 < gap < 2.0 for gap in gaps), gaps
    assert all(s.request.expires == 3600 for s in ok)
    # Refreshes answer the remembered challenge up front (no 401 round trip), nonce count going up.
    assert [s.status for s in platform.registers[:4]] == [401, 200, 200, 200]
    ncs = [Credentials.parse(s.request.headers.get("Authorization") or "").nc for s in ok]
    assert ncs[:3] == ["00000001", "00000002", "00000003"]
    assert len({s.request.call_id for s in platform.registers}) == 1


async def test_unregister_on_stop(platform: Platform) -> None:
    sim = Simulator(sim_config(platform, devices=3))
    await sim.start()
    assert await sim.wait_registered(timeout=10)
    assert len(platform.registered) == 3
    await sim.stop()
    assert platform.registered == {}
    last = [s for s in platform.registers if s.status == 200][-3:]
    assert all(s.request.expires == 0 and "Authorization" in s.request.headers for s in last)
    assert all(d.state is RegState.STOPPED for d in sim.devices)


async def test_device_stop_and_start_again_is_a_reboot(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim()
    device = sim.device(FIRST)
    assert await device.wait_registered(10)
    await device.stop()
    assert platform.registered == {} and device.state is RegState.STOPPED
    device.start()
    assert await device.wait_registered(10)
    assert [s.status for s in platform.registers] == [401, 200, 200, 401, 200]  # unregistered with known creds
    assert platform.registers[0].request.call_id != platform.registers[-1].request.call_id


async def test_unregister_waits_out_503(platform: Platform) -> None:
    sim = Simulator(sim_config(platform))
    await sim.start()
    assert await sim.wait_registered(timeout=10)
    platform.register_script.append((503, [("Retry-After", "0")]))
    await sim.stop()
    assert [s.status for s in platform.registers[-2:]] == [503, 200]
    assert platform.registered == {}


async def test_register_rate_ramps(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim(devices=4, register_rate=10.0)
    assert await sim.wait_registered(timeout=10)
    firsts: dict[str, float] = {}
    for s in platform.registers:
        firsts.setdefault(s.request.from_.uri.user or "", s.at)
    times = sorted(firsts.values())
    assert len(times) == 4
    assert all(gap > 0.07 for gap in (b - a for a, b in zip(times, times[1:], strict=False))), times


async def test_503_retry_after_honoured(platform: Platform, make_sim: MakeSim) -> None:
    platform.register_script.append((503, [("Retry-After", "1")]))
    sim = await make_sim()
    await until(lambda: sim.device(FIRST).state is RegState.RETRYING)
    assert await sim.wait_registered(timeout=10)
    refused, retried = platform.registers[0], platform.registers[1]
    assert refused.status == 503
    assert 0.95 <= retried.at - refused.at < 3.0


async def test_timeout_retried_with_backoff() -> None:
    """No platform answers: each REGISTER times out (64 x T1) and is retried as a new transaction."""
    loop = asyncio.get_running_loop()
    got: list[bytes] = []

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.append(data)

    transport, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    sim = Simulator(SimConfig(server=("127.0.0.1", port), t1=0.02, retry_min=0.1, retry_max=0.2, seed=3))
    await sim.start()
    try:
        def branches() -> set[str]:
            out = set()
            for data in got:
                text = data.decode("utf-8", "replace")
                if text.startswith("REGISTER "):
                    out.add(text.split("branch=", 1)[1].split("\r\n", 1)[0])
            return out

        await until(lambda: len(branches()) >= 2, timeout=15)
        device = sim.device(FIRST)
        assert device.state in (RegState.RETRYING, RegState.REGISTERING)
        assert device.register_attempts >= 2
        assert len(got) > len(branches())  # Timer E retransmissions within each transaction
    finally:
        await sim.stop()
        transport.close()


async def test_403_stops_trying(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim(wrong_password=True)
    device = sim.device(FIRST)
    await until(lambda: device.state is RegState.FAILED)
    assert device.failure is not None and device.failure.startswith("403")
    count = len(platform.registers)
    assert [s.status for s in platform.registers] == [401, 403]
    await asyncio.sleep(0.3)  # retry_min is 0.05: a retry would have come
    assert len(platform.registers) == count
    assert sim.stats()["failed"] == 1


# --------------------------------------------------------------------------------------------------- keepalive
async def test_keepalive_at_interval(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim(keepalive_interval=0.2)
    await until(lambda: len(platform.keepalives) >= 4)
    times = [seen.at for seen, _ in platform.keepalives]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(0.1 < gap < 0.6 for gap in gaps), gaps
    assert 0.15 < sum(gaps) / len(gaps) < 0.3, gaps
    docs = [doc for _, doc in platform.keepalives]
    assert all(d.root == "Notify" and d.device_id == FIRST and d.text("Status") == "OK" for d in docs)
    sns = [d.sn for d in docs]
    assert sns == sorted(sns) and len(set(sns)) == len(sns)
    seen = platform.keepalives[0][0]
    assert seen.request.body.startswith(b'<?xml version="1.0" encoding="GB2312"?>')
    assert seen.request.content_type == "application/manscdp+xml"
    device = sim.device(FIRST)
    await until(lambda: device.keepalives_ok >= 4)
    assert device.last_keepalive is not None


async def test_stop_keepalive_goes_silent(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim(keepalive_interval=0.1)
    await until(lambda: len(platform.keepalives) >= 2)
    sim.device(FIRST).stop_keepalive()
    await asyncio.sleep(0.15)  # one already in flight may still land
    count = len(platform.keepalives)
    await asyncio.sleep(0.5)
    assert len(platform.keepalives) == count
    assert sim.device(FIRST).registered
    sim.device(FIRST).resume_keepalive()
    await until(lambda: len(platform.keepalives) > count)


async def test_reregister_after_404_to_keepalive(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim(keepalive_interval=0.2)
    assert await sim.wait_registered(timeout=10)
    before = len(platform.registers)
    platform.registered.clear()  # "the platform restarted"
    platform.keepalive_status = 404
    await until(lambda: len(platform.keepalives) >= 1)
    refused_at = platform.keepalives[0][0].at
    platform.keepalive_status = 200
    await until(lambda: FIRST in platform.registered)
    again = platform.registers[before:]
    assert [s.status for s in again[:2]] == [401, 200]
    assert again[0].at - refused_at < 1.0  # at once, not at the refresh (2/3 of 3600 s)
    await until(lambda: sim.device(FIRST).registrations == 2)


# --------------------------------------------------------------------------------------------------- queries
async def test_catalog_split_across_parts_gb2312(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim(channels=45, catalog_per_message=20)
    assert await sim.wait_registered(timeout=10)
    assert await platform.query(FIRST, "Catalog", 7) == 200
    await until(lambda: len(platform.answers(7)) == 3)
    docs = platform.answers(7)
    assert [d.attr("DeviceList", "Num") for d in docs] == ["20", "20", "5"]
    assert all(d.text("SumNum") == "45" and d.root == "Response" and d.device_id == FIRST for d in docs)
    assert all(d.encoding == "GB2312" for d in docs)
    bodies = [seen.request.body for seen, doc in platform.responses if doc.sn == 7]
    assert all(b.startswith(b'<?xml version="1.0" encoding="GB2312"?>') for b in bodies)
    assert "镕".encode("gb18030") in bodies[0]  # rare characters written as GBK/GB18030 bytes
    items = [item for d in docs for item in d.items("DeviceList")]
    assert [i["DeviceID"] for i in items] == [channel_id(FIRST, n) for n in range(45)]
    assert [i["Name"] for i in items] == [channel_name(n) for n in range(45)]
    assert {"镕", "喆", "堃"} <= set("".join(i["Name"] for i in items))
    for item in items:
        assert tuple(item) == CHANNEL_FIELDS
        assert item["Status"] == "ON" and item["ParentID"] == FIRST and item["Manufacturer"] == "gb28181-sim"
        assert item["Port"] == str(sim.port) and item["IPAddress"] == "127.0.0.1"
    assert items[0]["Address"] == PLACES[0] and items[0]["CivilCode"] == FIRST[:6]
    await until(lambda: sim.device(FIRST).queries["Catalog"] == 1)


async def test_catalog_shuffled_and_duplicated(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim(channels=50, catalog_per_message=10, catalog_shuffle=True, catalog_duplicate=True)
    assert await sim.wait_registered(timeout=10)
    assert await platform.query(FIRST, "Catalog", 8) == 200
    await until(lambda: len(platform.answers(8)) == 6)
    docs = platform.answers(8)
    firsts = [d.items("DeviceList")[0]["DeviceID"] for d in docs]
    assert firsts != sorted(firsts)  # out of order
    assert len(set(firsts)) == 5  # one part twice
    collector = CatalogCollector(FIRST, 8)
    for doc in docs:
        collector.add(doc)
    assert collector.complete and len(collector.items) == 50 and collector.duplicates == 10


async def test_catalog_groups_for_classification(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim(channels=5, catalog_groups=True, virtual_orgs=2)
    assert await sim.wait_registered(timeout=10)
    assert await platform.query(FIRST, "Catalog", 9) == 200
    await until(lambda: len(platform.answers(9)) == 1)
    (doc,) = platform.answers(9)
    assert doc.text("SumNum") == "8"
    items = doc.items("DeviceList")
    kinds = [item_kind(i["DeviceID"]) for i in items]
    assert kinds == ["business_group", "virtual_org", "virtual_org"] + ["channel"] * 5
    group, orgs = items[0]["DeviceID"], {items[1]["DeviceID"], items[2]["DeviceID"]}
    assert all(items[n]["ParentID"] == group and items[n]["BusinessGroupID"] == group for n in (1, 2))
    assert {i["ParentID"] for i in items[3:]} == orgs
    assert "喆" in items[1]["Name"]


async def test_device_info_and_status(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim(channels=3, codec="h265")
    assert await sim.wait_registered(timeout=10)
    assert await platform.query(FIRST, "DeviceInfo", 11) == 200
    assert await platform.query(FIRST, "DeviceStatus", 12) == 200
    await until(lambda: bool(platform.answers(11) and platform.answers(12)))
    (info,) = platform.answers(11)
    assert info.cmd_type == "DeviceInfo" and info.device_id == FIRST
    assert info.text("DeviceName") == "模拟设备0001"
    assert (info.text("Result"), info.text("Manufacturer"), info.text("Model"), info.text("Channel")) == (
        "OK", "gb28181-sim", "SIM-NVR", "3")
    assert info.text("Firmware")
    (status,) = platform.answers(12)
    assert [status.text(k) for k in ("Result", "Online", "Status", "Encode", "Record")] == [
        "OK", "ONLINE", "OK", "ON", "OFF"]
    assert (status.text("DeviceTime") or "").startswith("2026-11-23T14:3")  # synced to the platform's Date
    device = sim.device(FIRST)
    await until(lambda: device.queries["DeviceInfo"] == 1 and device.queries["DeviceStatus"] == 1)
    assert device.codec == "h265"


async def test_routing_by_channel_and_unknown_404(platform: Platform, make_sim: MakeSim) -> None:
    sim = await make_sim(devices=2, channels=2)
    assert await sim.wait_registered(timeout=10)
    second = "34020000001320000002"
    channel = channel_id(second, 1)
    assert await platform.query(second, "DeviceInfo", 21, target=channel) == 200
    await until(lambda: bool(platform.answers(21)))
    (doc,) = platform.answers(21)
    assert doc.device_id == channel  # the Response speaks for the queried channel
    seen = next(s for s, d in platform.responses if d.sn == 21)
    assert seen.request.from_.uri.user == second
    assert sim.device(second).queries["DeviceInfo"] == 1
    assert await platform.query(second, "DeviceInfo", 22, target="34020000001329999999") == 404


# --------------------------------------------------------------------------------------------------- CLI
def _sim_command() -> list[str]:
    script = Path(sys.executable).parent / "gb28181-sim"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.sim.cli"]


def _events(stdout: bytes) -> list[dict[str, object]]:
    out = []
    for line in stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


async def test_cli_help() -> None:
    proc = await asyncio.create_subprocess_exec(*_sim_command(), "--help", stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, cwd=ROOT)
    stdout, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    text = stdout.decode()
    for flag in ("--server", "--devices", "--channels", "--codec", "--transport", "--password", "--platform-id",
                 "--domain", "--first-id", "--keepalive", "--expires", "--catalog-per-message", "--rate",
                 "--local-port", "--duration", "--audio", "--audio-rate", "--position-form", "--alarm-interval"):
        assert flag in text
    assert "later release" in text


def test_cli_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--devices", "0"]) == 2
    assert "devices = 0" in capsys.readouterr().err
    assert main(["--transport", "sctp"]) == 2
    assert main(["--server", "host:notaport"]) == 2


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_cli_duration_run(platform: Platform, transport: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *_sim_command(), "--server", f"127.0.0.1:{platform.port}", "--devices", "2", "--channels", "3",
        "--transport", transport, "--keepalive", "0.3", "--rate", "100", "--duration", "2.5", "--codec", "h265",
        "--log-format", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )
    communicate = asyncio.ensure_future(proc.communicate())
    try:
        await until(lambda: len(platform.registered) == 2, timeout=20)
        assert await platform.query(FIRST, "Catalog", 31) == 200
        await until(lambda: bool(platform.answers(31)))
        stdout, stderr = await asyncio.wait_for(communicate, 30)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, stderr.decode()
    assert platform.registered == {}  # unregistered on the way out
    assert any(s.request.expires == 0 and s.status == 200 for s in platform.registers)
    assert platform.keepalives
    events = _events(stdout)
    started = next(e for e in events if e["event"] == "simulator started")
    assert started["codec"] == "h265" and started["transport"] == transport
    assert sum(e["event"] == "device registered" for e in events) == 2


async def test_cli_sigterm_unregisters(platform: Platform) -> None:
    proc = await asyncio.create_subprocess_exec(
        *_sim_command(), "--server", f"127.0.0.1:{platform.port}", "--log-format", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )
    communicate = asyncio.ensure_future(proc.communicate())
    try:
        await until(lambda: FIRST in platform.registered, timeout=20)
        os.kill(proc.pid, signal.SIGTERM)
        _, stderr = await asyncio.wait_for(communicate, 30)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, stderr.decode()
    assert platform.registered == {}


async def test_cli_all_refused_exits_1(platform: Platform) -> None:
    proc = await asyncio.create_subprocess_exec(
        *_sim_command(), "--server", f"127.0.0.1:{platform.port}", "--password", "not-the-password",
        "--duration", "1", "--log-format", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert any(e["event"] == "registration refused, giving up" for e in _events(stdout))
