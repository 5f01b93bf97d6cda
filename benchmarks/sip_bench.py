"""SIP transactions per second through real UDP and TCP sockets on 127.0.0.1.

Each figure runs a server in its own process (uvloop) and a load client in this one, keeping ``WINDOW``
requests outstanding. The baseline is a bare uvloop server doing the same I/O without our logic: it answers
every datagram (or every framed TCP message) with a canned 200 OK. Server CPU is read from /proc before and
after, so ``µs/txn`` is the server's own cost per transaction.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import uvloop

WINDOW = 64

KEEPALIVE = (
    b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>1</SN>\r\n'
    b"<DeviceID>34020000001320000001</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
)

CANNED_200 = (
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-x;received=127.0.0.1;rport=5999\r\n"
    b"From: <sip:34020000001320000001@3402000000>;tag=a\r\nTo: <sip:34020000002000000001@3402000000>;tag=b\r\n"
    b"Call-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


_RUN = iter(range(1, 1 << 30))


def request(method: str, n: int, transport: str, run: int = 0) -> bytes:
    body = KEEPALIVE if method == "MESSAGE" else b""
    ctype = "Content-Type: Application/MANSCDP+xml\r\n" if body else ""
    return (
        f"{method} sip:34020000002000000001@3402000000 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:5999;rport;branch=z9hG4bK-{run}-{n}\r\n"
        "From: <sip:34020000001320000001@3402000000>;tag=a\r\n"
        "To: <sip:34020000002000000001@3402000000>\r\n"
        f"Call-ID: bench-{run}-{n}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{ctype}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# ------------------------------------------------------------------------------------------------ servers
async def serve_echo(ready: int) -> None:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
            self.t.sendto(CANNED_200, addr)  # type: ignore[attr-defined]

    class TcpEcho(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            # Frame on the blank line only (bodies are counted by Content-Length in the real parser).
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[:end]
                i = head.find(b"Content-Length: ")
                length = int(head[i + 16:].split(b"\r\n", 1)[0]) if i >= 0 else 0
                if len(self.buf) < end + 4 + length:
                    return
                self.buf = self.buf[end + 4 + length:]
                self.t.write(CANNED_200)  # type: ignore[attr-defined]

    udp, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    port = udp.get_extra_info("sockname")[1]
    await loop.create_server(TcpEcho, "127.0.0.1", port)
    os.write(ready, f"{port}\n".encode())
    await asyncio.Event().wait()


async def serve_gateway(ready: int) -> None:
    import logging

    from gateway.config import SipConfig
    from gateway.sip_router import SipRouter
    from gateway.sip_transport import SipServer

    logging.disable(logging.CRITICAL)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    server = SipServer(SipConfig(port=0, source_rate_limit=0), SipRouter())
    await server.start()
    os.write(ready, f"{server.port}\n".encode())
    await asyncio.Event().wait()


# ------------------------------------------------------------------------------------------------ client
@dataclass
class Result:
    transactions: int
    seconds: float
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.transactions / self.seconds

    @property
    def us_per_txn(self) -> float:
        return self.server_cpu / self.transactions * 1e6


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load_udp(port: int, method: str, total: int) -> float:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    run = next(_RUN)  # fresh branches: a reused one is a retransmission, answered to its first source
    reqs = [request(method, n, "UDP", run) for n in range(total)]

    class Client(asyncio.DatagramProtocol):
        sent = 0
        received = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            for _ in range(WINDOW):
                self.send()

        def send(self) -> None:
            if self.sent < total:
                self.t.sendto(reqs[self.sent])  # type: ignore[attr-defined]
                self.sent += 1

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
            self.received += 1
            if self.received >= total:
                if not done.done():
                    done.set_result(None)
            else:
                self.send()

    start = time.perf_counter()
    transport, proto = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    try:
        await asyncio.wait_for(done, 120)
    except TimeoutError:  # lost datagrams: report what completed
        total = proto.received
    elapsed = time.perf_counter() - start
    transport.close()
    return elapsed


async def load_tcp(port: int, method: str, total: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    run = next(_RUN)
    reqs = [request(method, n, "TCP", run) for n in range(total)]
    start = time.perf_counter()
    sent = 0
    received = 0
    for _ in range(WINDOW):
        writer.write(reqs[sent])
        sent += 1
    buf = b""
    while received < total:
        buf += await reader.read(65536)
        n = buf.count(b"\r\n\r\n")
        buf = buf[buf.rfind(b"\r\n\r\n") + 4:] if n else buf
        received += n
        batch = b"".join(reqs[sent:sent + n])
        sent = min(total, sent + n)
        if batch:
            writer.write(batch)
    elapsed = time.perf_counter() - start
    writer.close()
    return elapsed


def measure(kind: str, proto: str, method: str, total: int) -> Result:
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import benchmarks.sip_bench as b, uvloop; uvloop.run(b.serve_{kind}({w}))"],
        pass_fds=(w,), cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    os.close(w)
    try:
        with os.fdopen(r) as f:
            port = int(f.readline())
        loader = load_udp if proto == "udp" else load_tcp
        uvloop.run(loader(port, method, min(2000, total)))  # warm-up
        cpu0 = cpu_seconds(proc.pid)
        elapsed = uvloop.run(loader(port, method, total))
        cpu1 = cpu_seconds(proc.pid)
        return Result(total, elapsed, cpu1 - cpu0)
    finally:
        proc.terminate()
        proc.wait(10)


def main(quick: bool = False) -> None:
    total = 3000 if quick else 30000
    print(f"SIP transactions through real sockets on 127.0.0.1 ({total} per figure, window {WINDOW})")
    print(f"{'case':<18}{'gateway txn/s':>15}{'baseline/s':>13}{'ratio':>8}{'gw µs/txn':>12}{'base µs/txn':>13}")
    for proto, method in (("udp", "OPTIONS"), ("udp", "MESSAGE"), ("tcp", "OPTIONS"), ("tcp", "MESSAGE")):
        gw = measure("gateway", proto, method, total)
        base = measure("echo", proto, method, total)
        print(f"{proto + ' ' + method:<18}{gw.rate:>15,.0f}{base.rate:>13,.0f}{gw.rate / base.rate:>8.2f}"
              f"{gw.us_per_txn:>12.1f}{base.us_per_txn:>13.1f}")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
