"""A small raw RTSP client for tests: requests, responses and ``$``-interleaved frames on one real TCP socket."""

from __future__ import annotations

import asyncio
import struct
from collections import deque

from media import rtsp


class RawRtspClient:
    """Sends requests with increasing CSeq; keeps interleaved frames that arrive between responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, base: str) -> None:
        self.reader = reader
        self.writer = writer
        self.base = base
        self.cseq = 0
        self.session: str | None = None
        self.frames: deque[tuple[int, bytes]] = deque()
        self.extra_headers: list[tuple[str, str]] = []

    @classmethod
    async def connect(cls, port: int, path: str) -> RawRtspClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, f"rtsp://127.0.0.1:{port}/{path.lstrip('/')}")

    def close(self) -> None:
        self.writer.close()

    def send(self, method: str, uri: str | None = None, headers: list[tuple[str, str]] | None = None) -> int:
        self.cseq += 1
        lines = [f"{method} {uri or self.base} RTSP/1.0", f"CSeq: {self.cseq}"]
        if self.session is not None:
            lines.append(f"Session: {self.session}")
        lines += [f"{k}: {v}" for k, v in [*self.extra_headers, *(headers or [])]]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        return self.cseq

    async def request(self, method: str, uri: str | None = None, headers: list[tuple[str, str]] | None = None,
                      timeout: float = 10) -> rtsp.RtspResponse:
        cseq = self.send(method, uri, headers)
        resp = await self.response(timeout)
        assert resp.cseq == cseq, (resp.cseq, cseq)
        if resp.status == 200 and resp.get("Session") is not None:
            self.session = rtsp.parse_session(resp.get("Session") or "")[0]
        return resp

    async def response(self, timeout: float = 10) -> rtsp.RtspResponse:
        """The next response; interleaved frames before it go to ``frames``."""
        async def read() -> rtsp.RtspResponse:
            while True:
                first = await self.reader.readexactly(1)
                if first == b"$":
                    self.frames.append(await self._frame_rest())
                    continue
                head = first + await self.reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await self.reader.readexactly(length) if length else b""
                return rtsp.RtspResponse.parse(head + body)
        return await asyncio.wait_for(read(), timeout)

    async def _frame_rest(self) -> tuple[int, bytes]:
        channel, size = struct.unpack("!BH", await self.reader.readexactly(3))
        return channel, await self.reader.readexactly(size)

    async def frame(self, timeout: float = 5) -> tuple[int, bytes]:
        """The next interleaved frame (channel, packet)."""
        if self.frames:
            return self.frames.popleft()

        async def read() -> tuple[int, bytes]:
            first = await self.reader.readexactly(1)
            assert first == b"$", f"expected an interleaved frame, got {first!r}"
            return await self._frame_rest()
        return await asyncio.wait_for(read(), timeout)

    async def play_tcp(self, tracks: int = 1) -> rtsp.RtspResponse:
        """DESCRIBE, SETUP each track interleaved, PLAY; returns the PLAY response."""
        resp = await self.request("DESCRIBE", headers=[("Accept", "application/sdp")])
        assert resp.status == 200, resp
        for t in range(tracks):
            resp = await self.request("SETUP", f"{self.base}/trackID={t}",
                                      [("Transport", f"RTP/AVP/TCP;unicast;interleaved={2 * t}-{2 * t + 1}")])
            assert resp.status == 200, resp
        resp = await self.request("PLAY", headers=[("Range", "npt=0.000-")])
        assert resp.status == 200, resp
        return resp


def rtcp_packets(buf: bytes) -> list[tuple[int, int, bytes]]:
    """(count, packet type, body) of each RTCP packet in a compound packet."""
    out = []
    pos = 0
    while pos + 4 <= len(buf):
        b0, pt, length = struct.unpack_from("!BBH", buf, pos)
        end = pos + 4 + 4 * length
        out.append((b0 & 0x1F, pt, buf[pos + 4:end]))
        pos = end
    return out


def starts_keyframe_h264(payload: bytes) -> bool:
    """True if an RTP H.264 payload begins an IDR picture or its parameter sets (single NAL, STAP-A or FU-A start)."""
    nal = payload[0] & 0x1F
    if nal in (5, 7, 8):
        return True
    if nal == 24:  # STAP-A: first aggregated NAL
        return payload[3] & 0x1F in (5, 7, 8)
    if nal == 28:  # FU-A with the start bit
        return bool(payload[1] & 0x80) and payload[1] & 0x1F == 5
    return False
