"""The device registry at scale, through real UDP sockets on 127.0.0.1: registrations/s, keepalives/s, memory, idle CPU.

The gateway (``gateway.app.Gateway``, uvloop, production logging at ``info`` as JSON into /dev/null, state in a temp
dir) runs in its own process so that its CPU (``/proc/<pid>/stat``) and RSS (``/proc/<pid>/status`` VmRSS) can be
read; it is driven over stdin and answers on a pipe. Its config differs from the defaults only where a limit would
cap the figure: ``sip.source_rate_limit = 0``, ``devices.register_rate = 100000``, a larger UDP ingress queue
(``sip.udp_queue_size``: every device here shares the source IP 127.0.0.1) and ``sip.max_transactions`` (a UDP server
transaction lives 64 x T1 = 32 s after its answer, so a flood keeps tens of thousands alive).

1. **Registrations/s.** *Pure*: a fresh gateway whose post-registration queries are switched off in that process
   (``DeviceRegistry.request_sync`` replaced by a no-op), driven by a lean raw client in this process keeping
   ``WINDOW`` devices mid-registration (REGISTER, 401, REGISTER with digest, 200). *With queries*: the gateway as
   shipped, driven by the device simulator (``gateway.sim``, in its own process, shards of ``SIM_SHARD`` devices:
   one ``Simulator`` keeps at most 10,000 SIP transactions alive) answering DeviceInfo, Catalog (4 channels) and
   DeviceStatus; figures until every device is registered, and until every sync is done. Baseline: the bare uvloop
   echo server of ``sip_bench`` answering the same REGISTER datagrams (two per registration) with a canned 200.
2. **Keepalives/s**: with the devices registered, the raw client sends Keepalive MESSAGEs for their IDs (window
   ``WINDOW``); gateway CPU per 1,000 keepalives and the projection for 10,000 devices at one keepalive per 60 s
   (166.7/s) against the target of 5 % of one core. Baseline: the echo server on the same datagrams.
3. **Memory and idle CPU**: gateway RSS after start, after every device is registered and synced (server
   transactions still alive), and (full run) once they have expired: MB and KB per device; beside it, after
   ``gc.collect()`` and ``malloc_trim(0)``, the bytes in pymalloc blocks in use (what is live, against what the
   allocator keeps from the storm's peak of transactions). Then the simulator's own
   keepalives at a scaled-down interval: CPU share with none (background: the offline watch, the store) and with
   them, scaled to a 60 s interval.

The load generator's CPU share is printed beside every rate: on this 2-core machine one process each, so whichever
side is near 100 % was the bottleneck. ``python -m benchmarks.devices_bench [--quick] [--profile FILE]``:
``--profile`` writes a cProfile of the gateway process under keepalive load.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from .sip_bench import cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
PLATFORM = "34020000002000000001"
DOMAIN = "3402000000"
PASSWORD = "12345678"
FIRST_ID = "34020000001320000001"
WARMUP_FIRST_ID = "34020000001320900001"  # a separate serial range: warm-up devices are not measured ones
CHANNELS = 4
WINDOW = 64
SIM_SHARD = 1000
BASELINE_OPS = 50_000  # datagrams per baseline figure at least: the echo's CPU is read in 10 ms ticks
TARGET_DEVICES = 10_000
TARGET_INTERVAL = 60.0
TARGET_SHARE = 5.0  # % of one core

REGISTER_URI = f"sip:{PLATFORM}@{DOMAIN}"
_HA2 = hashlib.md5(f"REGISTER:{REGISTER_URI}".encode()).hexdigest()
_NONCE = re.compile(rb'nonce="([^"]+)"')
_CALL_ID = re.compile(rb"\r\nCall-ID: *([^\r]+)", re.IGNORECASE)
_RUN = iter(range(1, 1 << 30))


def device_ids(first: str, count: int) -> list[str]:
    serial = int(first[14:])
    return [f"{first[:14]}{serial + i:06d}" for i in range(count)]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _quiet_logging(level: str) -> None:
    from gateway.logs import configure_logging

    configure_logging(level, "json", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process


class _Commands:
    """A child's command loop: lines on stdin, one JSON line back on ``reply_fd`` per command."""

    def __init__(self, reply_fd: int, handlers: dict[str, Any]) -> None:
        self.reply_fd = reply_fd
        self.handlers = handlers
        self.buf = b""
        self.done = asyncio.Event()
        self.tasks: set[asyncio.Future[None]] = set()
        asyncio.get_running_loop().add_reader(0, self._readable)

    def reply(self, obj: dict[str, Any]) -> None:
        os.write(self.reply_fd, json.dumps(obj).encode() + b"\n")

    def _readable(self) -> None:
        data = os.read(0, 4096)
        if not data:
            self.done.set()
            return
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            words = line.decode().split()
            if words:
                task = asyncio.ensure_future(self._run(words))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _run(self, words: list[str]) -> None:
        if words[0] == "quit":
            self.done.set()
            return
        result = self.handlers[words[0]](*words[1:])
        if asyncio.iscoroutine(result):
            result = await result
        self.reply(result)


# ------------------------------------------------------------------------------------------------ gateway process
def pymalloc_in_use() -> int:
    """Bytes in allocated pymalloc blocks (objects up to 512 bytes: most of a registry), from
    ``sys._debugmallocstats()``, which writes to the C stderr: fd 2 is pointed at a temp file meanwhile."""
    with tempfile.TemporaryFile() as f:
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        m = re.search(rb"# bytes in allocated blocks\s*=\s*([\d,]+)", f.read())
    return int(m.group(1).replace(b",", b"")) if m else 0


def gateway_main(reply_fd: int, state_dir: str, queries: bool, profile: str = "", devices: str = "{}") -> None:
    uvloop.run(_gateway(reply_fd, state_dir, queries, profile, json.loads(devices)))


async def _gateway(reply_fd: int, state_dir: str, queries: bool, profile: str, devices: dict[str, Any]) -> None:
    import cProfile
    import ctypes
    import gc

    from prometheus_client import REGISTRY

    from gateway.app import Gateway
    from gateway.config import Config
    from gateway.devices import DeviceRegistry

    _quiet_logging("info")
    synced = 0
    if queries:
        original = DeviceRegistry.sync

        async def counted_sync(self: DeviceRegistry, dev: Any) -> None:
            nonlocal synced
            await original(self, dev)
            synced += 1

        DeviceRegistry.sync = counted_sync  # type: ignore[method-assign]
    else:
        DeviceRegistry.request_sync = lambda self, device_id: None  # type: ignore[method-assign]
    config = Config.from_mapping({
        "sip": {"port": 0, "source_rate_limit": 0, "udp_queue_size": 65536, "max_transactions": 1_000_000},
        "devices": {"register_rate": 100_000, **devices},
        "rtsp": {"port": 0},  # not 8554: a running gateway or test may hold it
        "http": {"port": 0},
        "daemon": {"state_dir": state_dir},
    })
    gw = Gateway(config)
    await gw.start()
    assert gw.sip is not None
    sip = gw.sip
    profiler = cProfile.Profile()

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    def progress() -> dict[str, Any]:
        return {"registered": sample("gb28181_registrations_total", result="ok"), "synced": synced,
                "txns": sip.endpoint.transaction_count}

    def stats() -> dict[str, Any]:
        devs = gw.devices.devices.values()
        dropped = {s.labels["reason"]: s.value for m in REGISTRY.collect() if m.name == "gb28181_sip_dropped"
                   for s in m.samples if s.name.endswith("_total") and s.value}
        return {**progress(), "devices": sum(d.registered for d in devs),
                "channels": sum(len(d.channels) for d in devs), "dropped": dropped,
                "timeouts": sum(s.value for m in REGISTRY.collect() if m.name == "gb28181_sip_transaction_timeouts"
                                for s in m.samples if s.name.endswith("_total")),
                "keepalives_ok": sample("gb28181_keepalives_total", result="ok"),
                "keepalives_refused": sample("gb28181_keepalives_total", result="unregistered"),
                "store_pending": gw.store.pending}

    def trim() -> dict[str, Any]:
        # What is live, against what the allocators keep: collect, then hand free heap pages back to the OS.
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        return {"pymalloc": pymalloc_in_use()}

    def heap() -> dict[str, Any]:
        return {"pymalloc": pymalloc_in_use()}

    def prof(action: str) -> dict[str, Any]:
        if action == "on":
            profiler.enable()
        else:
            profiler.disable()
            profiler.dump_stats(profile)
        return {}

    commands = _Commands(reply_fd, {"progress": progress, "stats": stats, "heap": heap, "trim": trim,
                                   "profile": prof})
    commands.reply({"port": sip.port})
    await commands.done.wait()
    os._exit(0)  # the figures are taken; a clean stop of 10,000 devices is not what is measured


# ------------------------------------------------------------------------------------------------ simulator process
def sim_main(reply_fd: int, port: int, devices: int, keepalive: float) -> None:
    uvloop.run(_sim(reply_fd, port, devices, keepalive))


async def _sim(reply_fd: int, port: int, devices: int, keepalive: float) -> None:
    from gateway.sim import SimConfig, Simulator

    _quiet_logging("error")
    sims = []
    first = int(FIRST_ID[14:])
    for start in range(0, devices, SIM_SHARD):
        cfg = SimConfig(server=("127.0.0.1", port), devices=min(SIM_SHARD, devices - start), channels=CHANNELS,
                        first_id=f"{FIRST_ID[:14]}{first + start:06d}", keepalive_interval=keepalive,
                        register_rate=1_000_000, seed=start)
        sim = Simulator(cfg)
        for dev in sim.devices:
            dev.keepalive_enabled = False
        sims.append(sim)
    every = [d for sim in sims for d in sim.devices]

    async def go() -> dict[str, Any]:
        for sim in sims:
            await sim.start()
        return {}

    def keepalive_switch(on: str) -> dict[str, Any]:
        for dev in every:
            dev.keepalive_enabled = on == "on"
        return {}

    def stats() -> dict[str, Any]:
        return {"registered": sum(d.registered for d in every),
                "register_attempts": sum(d.register_attempts for d in every),
                "keepalives_sent": sum(d.keepalives_sent for d in every),
                "keepalives_ok": sum(d.keepalives_ok for d in every),
                "queries": sum(sum(d.queries.values()) for d in every)}

    commands = _Commands(reply_fd, {"go": go, "keepalive": keepalive_switch, "stats": stats})
    commands.reply({"devices": len(every)})
    await commands.done.wait()
    os._exit(0)  # no unregistration: the gateway is being torn down too


# ------------------------------------------------------------------------------------------------ driving children
class Child:
    """A benchmark child process (``python -c code``) with a line command channel."""

    def __init__(self, code: str, timeout: float = 30.0) -> None:
        r, w = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-c", code.replace("FD", str(w))], stdin=subprocess.PIPE,
                                     pass_fds=(w,), cwd=ROOT)
        os.close(w)
        self.fd = r
        self.buf = b""
        self.hello = self.read(timeout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError(f"child {self.proc.pid} did not answer")
            data = os.read(self.fd, 65536)
            if not data:
                raise RuntimeError(f"child {self.proc.pid} exited ({self.proc.poll()})")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, *words: object, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((" ".join(map(str, words)) + "\n").encode())
        self.proc.stdin.flush()
        return self.read(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        os.close(self.fd)


def start_gateway(state_dir: str, queries: bool, profile: str = "", **devices: Any) -> Child:
    """A gateway child; ``devices`` overrides ``[devices]`` keys (experiments, e.g. ``query_concurrency=64``)."""
    return Child(f"import benchmarks.devices_bench as b; "
                 f"b.gateway_main(FD, {state_dir!r}, {queries}, {profile!r}, {json.dumps(devices)!r})")


def start_sim(port: int, devices: int, keepalive: float) -> Child:
    return Child(f"import benchmarks.devices_bench as b; b.sim_main(FD, {port}, {devices}, {keepalive})", 60.0)


def start_echo(module: str = "benchmarks.sip_bench") -> tuple[subprocess.Popen[bytes], int]:
    """The bare echo baseline (``module``'s ``serve_echo``) in its own process; (process, its port)."""
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import {module} as b, uvloop; uvloop.run(b.serve_echo({w}))"],
        pass_fds=(w,), cwd=ROOT,
    )
    os.close(w)
    with os.fdopen(r) as f:
        return proc, int(f.readline())


# ------------------------------------------------------------------------------------------------ raw load clients
def register_datagram(device: str, run: int, i: int, cseq: int, lport: int, auth: str = "") -> bytes:
    return (
        f"REGISTER {REGISTER_URI} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{lport};rport;branch=z9hG4bK-r{run}-{i}-{cseq}\r\n"
        f"From: <sip:{device}@{DOMAIN}>;tag=f{run}-{i}\r\n"
        f"To: <sip:{device}@{DOMAIN}>\r\n"
        f"Call-ID: reg-{run}-{i}\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{device}@127.0.0.1:{lport}>\r\nMax-Forwards: 70\r\nExpires: 3600\r\n"
        f"User-Agent: devices-bench\r\n{auth}Content-Length: 0\r\n\r\n"
    ).encode()


def authorization(device: str, nonce: str, cnonce: str) -> str:
    ha1 = hashlib.md5(f"{device}:{DOMAIN}:{PASSWORD}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{_HA2}".encode()).hexdigest()
    return (f'Authorization: Digest username="{device}", realm="{DOMAIN}", nonce="{nonce}", uri="{REGISTER_URI}", '
            f'response="{response}", algorithm=MD5, cnonce="{cnonce}", qop=auth, nc=00000001\r\n')


def keepalive_datagram(device: str, run: int, n: int, lport: int) -> bytes:
    body = (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>{n + 1}</SN>\r\n'
        f"<DeviceID>{device}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
    ).encode()
    return (
        f"MESSAGE {REGISTER_URI} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{lport};rport;branch=z9hG4bK-k{run}-{n}\r\n"
        f"From: <sip:{device}@{DOMAIN}>;tag=k{run}-{n}\r\nTo: <sip:{PLATFORM}@{DOMAIN}>\r\n"
        f"Call-ID: ka-{run}-{n}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nUser-Agent: devices-bench\r\n"
        f"Content-Type: Application/MANSCDP+xml\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class Load:
    done: int
    seconds: float
    client_cpu: float
    statuses: Counter[bytes]

    @property
    def rate(self) -> float:
        return self.done / self.seconds


async def _udp_client(port: int, protocol: Any, stall: float, limit: float) -> tuple[float, Any]:
    """Run ``protocol`` (it sets ``finished`` and counts ``done``) until finished, stalled or ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: protocol, remote_addr=("127.0.0.1", port))
    start = time.perf_counter()
    try:
        last = -1
        while not proto.finished.is_set() and time.perf_counter() - start < limit:
            try:
                await asyncio.wait_for(proto.finished.wait(), stall)
            except TimeoutError:
                if proto.done == last:  # nothing answered for `stall` s: lost datagrams, report what completed
                    break
            last = proto.done
        return time.perf_counter() - start, proto
    finally:
        transport.close()


class _Registrar(asyncio.DatagramProtocol):
    """REGISTER → 401 → REGISTER with digest → 200 for each device, ``WINDOW`` devices at a time."""

    def __init__(self, devices: list[str]) -> None:
        self.devices = devices
        self.run = next(_RUN)
        self.prefix = f"reg-{self.run}-".encode()
        self.started = 0
        self.done = 0
        self.statuses: Counter[bytes] = Counter()
        self.finished = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.DatagramTransport = transport  # type: ignore[assignment]
        self.lport = transport.get_extra_info("sockname")[1]
        for _ in range(min(WINDOW, len(self.devices))):
            self.next()

    def next(self) -> None:
        if self.started < len(self.devices):
            i = self.started
            self.started += 1
            self.t.sendto(register_datagram(self.devices[i], self.run, i, 1, self.lport))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        status = data[8:11]
        if status[:1] == b"1":
            return
        m = _CALL_ID.search(data)
        if m is None or not m.group(1).startswith(self.prefix):
            return
        i = int(m.group(1)[len(self.prefix):])
        if status == b"401":
            nm = _NONCE.search(data)
            if nm is not None:
                auth = authorization(self.devices[i], nm.group(1).decode(), f"{i:016x}")
                self.t.sendto(register_datagram(self.devices[i], self.run, i, 2, self.lport, auth))
                return
        self.statuses[status] += 1
        self.done += 1
        if self.done >= len(self.devices):
            self.finished.set()
        else:
            self.next()


class _Window(asyncio.DatagramProtocol):
    """Sends prebuilt datagrams keeping ``WINDOW`` outstanding; any final response frees a slot."""

    def __init__(self, datagrams: list[bytes]) -> None:
        self.datagrams = datagrams
        self.sent = 0
        self.done = 0
        self.statuses: Counter[bytes] = Counter()
        self.finished = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.DatagramTransport = transport  # type: ignore[assignment]
        for _ in range(min(WINDOW, len(self.datagrams))):
            self.next()

    def next(self) -> None:
        if self.sent < len(self.datagrams):
            self.t.sendto(self.datagrams[self.sent])
            self.sent += 1

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        status = data[8:11]
        if status[:1] == b"1":
            return
        self.statuses[status] += 1
        self.done += 1
        if self.done >= len(self.datagrams):
            self.finished.set()
        else:
            self.next()


def run_client(port: int, protocol: Any, limit: float = 120.0) -> Load:
    cpu0 = time.process_time()
    elapsed, proto = uvloop.run(_udp_client(port, protocol, 3.0, limit))
    return Load(proto.done, elapsed, time.process_time() - cpu0, proto.statuses)


def register_load(port: int, devices: list[str]) -> Load:
    return run_client(port, _Registrar(devices))


def keepalive_datagrams(devices: list[str], total: int) -> list[bytes]:
    # The gateway routes by the Via's sent-by (rport fills in the real source port): any local port will do.
    run = next(_RUN)
    return [keepalive_datagram(devices[n % len(devices)], run, n, 5999) for n in range(total)]


def register_datagrams(devices: list[str]) -> list[bytes]:
    """The two REGISTERs of each device, shaped like the raw client's (a 56-hex-digit nonce), for the echo."""
    run = next(_RUN)
    out = []
    for i, dev in enumerate(devices):
        out.append(register_datagram(dev, run, i, 1, 5999))
        out.append(register_datagram(dev, run, i, 2, 5999, authorization(dev, "0" * 56, f"{i:016x}")))
    return out


# ------------------------------------------------------------------------------------------------ measurement
@dataclass
class Measured:
    rate: float            # operations per second
    gw_us: float           # gateway CPU µs per operation
    gw_share: float        # gateway CPU / wall time
    load_share: float      # load generator CPU / wall time


def measure_load(pid: int, fn: Any, *args: Any, per: int = 1) -> tuple[Measured, Load]:
    """Run a load function against process ``pid``; ``per`` datagrams make one operation (2 per registration)."""
    cpu0 = cpu_seconds(pid)
    load = fn(*args)
    cpu = cpu_seconds(pid) - cpu0
    ops = load.done / per
    return Measured(ops / load.seconds, cpu / ops * 1e6, cpu / load.seconds, load.client_cpu / load.seconds), load


def wait_until(cond: Any, limit: float, poll: float = 0.05) -> float | None:
    """Poll ``cond()`` until true; the time it became true (monotonic), or None after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(poll)
    return None


def _fmt_status(statuses: Counter[bytes], ok: bytes = b"200") -> str:
    bad = {k.decode(errors="replace"): v for k, v in statuses.items() if k != ok}
    return f" non-{ok.decode()} answers: {bad}" if bad else ""


def main(quick: bool = False, profile: str = "") -> None:
    n = 1000 if quick else 10_000
    keepalives = 5000 if quick else 50_000
    interval = 3.0 if quick else 6.0           # the simulator's scaled-down keepalive interval
    quiet_window = 2.0 if quick else 4.0
    warmup = 200 if quick else 1000
    ids = device_ids(FIRST_ID, n)
    print(f"Device registry through real UDP sockets on 127.0.0.1 ({n:,} devices, {CHANNELS} channels each, "
          f"raw-client window {WINDOW}; {os.cpu_count()} CPUs)")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="devices-bench-") as tmp:
        gw = start_gateway(os.path.join(tmp, "b"), queries=True, profile=profile)
        sim: Child | None = None
        try:
            port = gw.hello["port"]
            time.sleep(0.5)
            rss_start = rss_mb(gw.pid)
            heap_start = gw.ask("heap")["pymalloc"] / 2**20

            # ---- 1b. registrations with queries, driven by the simulator
            sim = start_sim(port, n, interval)
            gw_cpu0, sim_cpu0 = cpu_seconds(gw.pid), cpu_seconds(sim.pid)
            t0 = time.monotonic()
            sim.ask("go")
            t_reg = wait_until(lambda: gw.ask("progress")["registered"] >= n, 60 if quick else 120)
            gw_cpu_reg, sim_cpu_reg = cpu_seconds(gw.pid), cpu_seconds(sim.pid)
            t_sync = wait_until(lambda: gw.ask("progress")["synced"] >= n, 60 if quick else 150)
            gw_cpu_sync, sim_cpu_sync = cpu_seconds(gw.pid), cpu_seconds(sim.pid)
            t_end = time.monotonic()
            after_sync = gw.ask("stats")
            rss_sync = rss_mb(gw.pid)
            sim_stats = sim.ask("stats")
            reg_s = (t_reg or t_end) - t0
            sync_s = (t_sync or t_end) - t0
            with_q_reg = Measured(after_sync["registered"] / reg_s, (gw_cpu_reg - gw_cpu0) / n * 1e6,
                                  (gw_cpu_reg - gw_cpu0) / reg_s, (sim_cpu_reg - sim_cpu0) / reg_s)
            with_q_sync = Measured(after_sync["synced"] / sync_s, (gw_cpu_sync - gw_cpu0) / n * 1e6,
                                   (gw_cpu_sync - gw_cpu0) / sync_s, (sim_cpu_sync - sim_cpu0) / sync_s)
            if t_reg is None or t_sync is None:
                notes.append(f"simulator run incomplete: {after_sync['registered']:.0f} registered, "
                             f"{after_sync['synced']} synced of {n}")
            retries = sim_stats["register_attempts"] - 2 * n
            notes.append(
                f"simulator run: {sim_stats['register_attempts']:,} REGISTERs sent for {n:,} devices "
                f"({retries:+,} vs 2 each), {after_sync['channels']:,} channels stored, gateway drops "
                f"{after_sync['dropped'] or 'none'}, query timeouts {after_sync['timeouts']:.0f}")

            # ---- 1a. pure REGISTER cost on a second gateway (B's transactions expire meanwhile)
            pure_gw = start_gateway(os.path.join(tmp, "a"), queries=False)
            try:
                register_load(pure_gw.hello["port"], device_ids(WARMUP_FIRST_ID, warmup))
                pure, pure_load = measure_load(pure_gw.pid, register_load, pure_gw.hello["port"], ids)
                if pure_load.done < n or _fmt_status(pure_load.statuses):
                    notes.append(f"pure registration: {pure_load.done} of {n} done;"
                                 + _fmt_status(pure_load.statuses))
            finally:
                pure_gw.close()

            # ---- baselines: the bare echo on the same datagrams (at least BASELINE_OPS: /proc counts 10 ms ticks)
            ka_datagrams = keepalive_datagrams(ids, keepalives)
            base_reg_dgrams = register_datagrams(device_ids(FIRST_ID, max(n, BASELINE_OPS // 2)))
            base_ka_dgrams = keepalive_datagrams(ids, max(keepalives, BASELINE_OPS))
            echo, echo_port = start_echo()
            try:
                run_client(echo_port, _Window(register_datagrams(device_ids(WARMUP_FIRST_ID, warmup))))
                base_reg, _ = measure_load(echo.pid, run_client, echo_port, _Window(base_reg_dgrams), per=2)
                run_client(echo_port, _Window(ka_datagrams[:2000]))
                base_ka, _ = measure_load(echo.pid, run_client, echo_port, _Window(base_ka_dgrams))
            finally:
                echo.terminate()
                echo.wait(10)

            # ---- 3. memory once the registration's server transactions have expired (64 x T1 = 32 s)
            rss_steady = None
            txns_steady = None
            if not quick:
                wait_until(lambda: gw.ask("progress")["txns"] < 100, max(0.0, 40 - (time.monotonic() - t_end)), 0.5)
                txns_steady = gw.ask("progress")["txns"]
                rss_steady = rss_mb(gw.pid)
            heap_end = gw.ask("trim")["pymalloc"] / 2**20
            rss_trimmed = rss_mb(gw.pid)

            # ---- 3b. idle CPU: no keepalives, then the simulator's keepalives every `interval` s
            c0, t1 = cpu_seconds(gw.pid), time.monotonic()
            time.sleep(quiet_window)
            quiet_share = (cpu_seconds(gw.pid) - c0) / (time.monotonic() - t1)
            sim.ask("keepalive", "on")
            ka0 = sim.ask("stats")["keepalives_ok"]
            c0, s0, t1 = cpu_seconds(gw.pid), cpu_seconds(sim.pid), time.monotonic()
            time.sleep(2 * interval)
            active_s = time.monotonic() - t1
            active_share = (cpu_seconds(gw.pid) - c0) / active_s
            sim_active_share = (cpu_seconds(sim.pid) - s0) / active_s
            sim.ask("keepalive", "off")
            idle_ka_rate = (sim.ask("stats")["keepalives_ok"] - ka0) / active_s

            # ---- 2. keepalive flood by the raw client for the registered IDs
            time.sleep(0.5)  # the simulator's last keepalives are answered
            run_client(port, _Window(keepalive_datagrams(ids, 2000)))
            if profile:
                gw.ask("profile", "on")
            ka, ka_load = measure_load(gw.pid, run_client, port, _Window(ka_datagrams))
            if profile:
                gw.ask("profile", "off")
                notes.append(f"cProfile of the gateway under the keepalive flood written to {profile}")
            if ka_load.done < keepalives or _fmt_status(ka_load.statuses):
                notes.append(f"keepalive flood: {ka_load.done} of {keepalives} answered;"
                             + _fmt_status(ka_load.statuses))
        finally:
            if sim is not None:
                sim.close()
            gw.close()

    # ---------------------------------------------------------------------------------------------- report
    print(f"{'case':<30}{'gateway/s':>11}{'baseline/s':>12}{'ratio':>7}{'gw µs/op':>10}{'base µs/op':>12}"
          f"{'gw CPU':>8}{'loadgen CPU':>13}")

    def row(name: str, m: Measured, base: Measured | None, gen: str) -> None:
        b_rate = f"{base.rate:>12,.0f}{m.rate / base.rate:>7.2f}" if base else f"{'–':>12}{'–':>7}"
        b_us = f"{base.gw_us:>12.1f}" if base else f"{'–':>12}"
        print(f"{name:<30}{m.rate:>11,.0f}{b_rate}{m.gw_us:>10.1f}{b_us}{m.gw_share:>8.0%}"
              f"{m.load_share:>7.0%} {gen}")

    row("REGISTER+401+REGISTER (pure)", pure, base_reg, "raw")
    row("  + queries: all registered", with_q_reg, base_reg, "sim")
    row("  + queries: all synced", with_q_sync, None, "sim")
    row("Keepalive MESSAGE", ka, base_ka, "raw")
    print("  (µs/op: gateway CPU per registration, 2 transactions; with queries it also carries the DeviceInfo,"
          " Catalog, DeviceStatus queries\n   and their answers done by then; per keepalive for keepalives."
          " CPU columns: share of one core during the run)")

    per_s = TARGET_DEVICES / TARGET_INTERVAL
    share = per_s * ka.gw_us / 1e6 * 100
    verdict = "OK" if share < TARGET_SHARE else "OVER"
    print(f"keepalive: {ka.gw_us:.1f} ms gateway CPU per 1,000 keepalives; "
          f"{TARGET_DEVICES:,} devices every {TARGET_INTERVAL:g} s = {per_s:.1f}/s → {share:.2f} % of one core "
          f"(target < {TARGET_SHARE:g} %: {verdict})")
    mem = f"memory: RSS {rss_start:.1f} MB at start, {rss_sync:.1f} MB with {n:,} registered + synced " \
          f"({after_sync['txns']:,} SIP transactions still alive)"
    per_dev = (rss_sync - rss_start) * 1024 / n
    if rss_steady is not None:
        per_dev = (rss_steady - rss_start) * 1024 / n
        mem += f", {rss_steady:.1f} MB once expired ({txns_steady} left)"
    print(f"{mem} → {per_dev:.1f} KB per device")
    print(f"        after gc.collect() + malloc_trim(0){'' if rss_steady else ' (transactions alive)'}: RSS "
          f"{rss_trimmed:.1f} MB → {(rss_trimmed - rss_start) * 1024 / n:.1f} KB per device; live small objects "
          f"(pymalloc blocks in use) {heap_start:.1f} → {heap_end:.1f} MB → {(heap_end - heap_start) * 1024 / n:.1f}"
          f" KB per device")
    scaled = quiet_share + (active_share - quiet_share) * interval / TARGET_INTERVAL
    print(f"idle: gateway {quiet_share:.2%} of a core with no keepalives, {active_share:.2%} with the simulator's "
          f"keepalives every {interval:g} s ({idle_ka_rate:,.0f}/s; simulator {sim_active_share:.0%}) "
          f"→ {scaled:.2%} scaled to every {TARGET_INTERVAL:g} s")
    for note in notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    argv = sys.argv[1:]
    main(quick="--quick" in argv, profile=argv[argv.index("--profile") + 1] if "--profile" in argv else "")
