"""Helpers for end-to-end tests: a gateway in the test's loop, and a raw SIP client on a real UDP socket."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from gateway.app import Gateway
from gateway.config import Config
from sip import digest
from sip.message import (
    NameAddr,
    SipMessage,
    SipRequest,
    SipResponse,
    SipUri,
    Via,
    build_request,
    build_response,
    parse_message,
)

PLATFORM = "34020000002000000001"
DOMAIN = "3402000000"
DEVICE = "34020000001320000001"


def make_config(state_dir: Path, sip: dict[str, Any] | None = None, **devices: Any) -> Config:
    """Short timers, ephemeral SIP and RTSP ports, state under ``state_dir``."""
    dev: dict[str, Any] = {"keepalive_interval": 0.4, "keepalive_count": 3, "register_expires_min": 1,
                           "query_timeout": 3, "catalog_timeout": 3}
    dev.update(devices)
    return Config.from_mapping({
        "sip": {"port": 0, "t1": 0.1, "t2": 0.4, "t4": 0.5, **(sip or {})},
        "devices": dev,
        "rtsp": {"port": 0},
        "http": {"port": 0},
        "daemon": {"state_dir": str(state_dir), "graceful_timeout": 5},
    })


@asynccontextmanager
async def running_gateway(config: Config) -> AsyncIterator[Gateway]:
    gw = Gateway(config)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


class RawClient(asyncio.DatagramProtocol):
    """A hand-driven SIP UA on a real UDP socket: builds requests from our cores, answers what it is told."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[SipMessage] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.target: tuple[str, int] = ("127.0.0.1", 0)

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> RawClient:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(cls, local_addr=(source, 0))
        proto.target = ("127.0.0.1", port)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.inbox.put_nowait(parse_message(data))

    @property
    def local(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def send(self, msg: SipMessage) -> None:
        assert self.transport is not None
        self.transport.sendto(bytes(msg), self.target)

    def request(self, method: str, device: str = DEVICE, *, body: bytes = b"", content_type: str | None = None,
                headers: list[tuple[str, str]] | None = None, call_id: str | None = None, cseq: int = 1,
                uri: str | None = None) -> SipRequest:
        n = next(self._ids)
        host, port = self.local
        return build_request(
            method, uri or f"sip:{PLATFORM}@{DOMAIN}",
            via=Via("UDP", host, port, (("rport", None), ("branch", f"z9hG4bK-raw{n}"))),
            from_=NameAddr(SipUri(host=DOMAIN, user=device), params=(("tag", f"t{n}"),)),
            to=NameAddr(SipUri(host=DOMAIN, user=device if method == "REGISTER" else PLATFORM)),
            call_id=call_id or f"raw-{n}", cseq=cseq, body=body, content_type=content_type,
            headers=headers or [],
        )

    async def response(self, timeout: float = 3.0) -> SipResponse:
        while True:
            msg = await asyncio.wait_for(self.inbox.get(), timeout)
            if isinstance(msg, SipResponse) and msg.status >= 200:
                return msg

    async def next_request(self, timeout: float = 3.0) -> SipRequest:
        while True:
            msg = await asyncio.wait_for(self.inbox.get(), timeout)
            if isinstance(msg, SipRequest):
                return msg

    def answer(self, req: SipRequest, status: int = 200) -> None:
        self.send(build_response(req, status, to_tag="rawtag"))

    async def register(self, device: str = DEVICE, password: str = "12345678", expires: int = 3600,
                       qop: bool = True) -> SipResponse:
        """REGISTER, answer the challenge, return the final response to the authenticated attempt."""
        host, port = self.local
        contact = [("Contact", f"<sip:{device}@{host}:{port}>"), ("Expires", str(expires))]
        first = self.request("REGISTER", device, headers=contact, call_id=f"reg-{device}-{port}")
        self.send(first)
        challenge_resp = await self.response()
        if challenge_resp.status != 401:
            return challenge_resp
        challenge = digest.Challenge.parse(challenge_resp.headers.get("WWW-Authenticate") or "")
        if not qop:
            challenge = digest.Challenge(challenge.realm, challenge.nonce, challenge.algorithm)
        creds = digest.authorization_for(challenge, device, password, "REGISTER",
                                         f"sip:{PLATFORM}@{DOMAIN}", cnonce="0a4f113b")
        second = self.request("REGISTER", device, headers=contact + [("Authorization", str(creds))],
                              call_id=f"reg-{device}-{port}", cseq=2)
        self.send(second)
        return await self.response()
