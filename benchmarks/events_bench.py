"""Device event notifications through the gateway's SIP listener on 127.0.0.1: mobile positions and alarms.

The gateway (``gateway.app.Gateway``, uvloop, production logging at ``info`` as JSON into /dev/null, state in a
temp dir) runs in its own process, as in ``devices_bench``, so that its CPU (``/proc/<pid>/stat``, every thread:
the SQLite write-behind included) can be read; it is driven over stdin and answers on a pipe. Its config differs
from the defaults where a limit would cap the figure (``sip.source_rate_limit = 0``, a larger UDP ingress queue and
``sip.max_transactions``, ``devices.register_rate``), ``devices.alarm_rate = 10000`` (no alarm is suppressed;
``alarm_retention`` stays the default) and with every subscription off (``devices.*_subscribe_expires = 0``), so
the figures are the notification path alone. The post-registration queries are switched off in that process
(``DeviceRegistry.request_sync`` replaced by a no-op): they are ``devices_bench``'s subject, not this one's.

``N`` devices register through the device simulator (``gateway.sim``, in its own process, ``devices_bench``'s
shards); the simulator stays up to answer what the gateway sends its devices. Then a raw load client in this
process sends pre-built requests (distinct Call-IDs and branches, ``From`` users of the registered devices,
round robin) keeping ``WINDOW`` outstanding; any final answer frees a slot:

1. **Mobile positions**: ``NOTIFY`` (``Event: MobilePosition``, out of dialog, no subscription: accepted from a
   registered device) with the 2016 single form, then with the 2022 list form of ``LIST_ITEMS`` fixes
   (``sip.events.build_position_notify``): notifications/s, positions/s, gateway CPU µs per notification; the
   gateway's fix counter and its in-memory latest-per-channel table are checked at the end.
2. **Alarms**: ``MESSAGE`` ``<Notify><CmdType>Alarm`` with one Server-Sent Events client (aiohttp, in its own
   process, a fresh one per run) on ``GET /api/v1/alarms/stream`` counting ``event: alarm``. For each alarm the
   gateway also sends the standard's ``<Response><CmdType>Alarm`` MESSAGE to the device (the simulator answers it
   ``200``). A flood (window ``WINDOW``), then paced runs (a fixed rate, not a capacity: does the SSE client keep
   up?). Figures: the rate of ``200`` answers to the load client, then end to end: until every alarm is answered,
   stored (the SQLite row count grew by the number sent, after ``Store.flush``), received by the SSE client (or
   its stream was ended by the gateway: a subscriber ``alarms.SUBSCRIBER_QUEUE`` alarms behind is dropped) and
   its Response MESSAGE answered; gateway CPU per alarm over that whole window (write-behind and Response
   MESSAGEs included).
3. **Baseline**: a bare uvloop echo (``sip_bench``'s canned ``200`` to every datagram: the same I/O without our
   logic, with the gateway's 4 MiB socket receive buffer) fed the same datagrams by the same client, same window.

The load generator's CPU share is printed beside every rate: on this 2-core machine whichever side is near 100 %
was the bottleneck. ``python -m benchmarks.events_bench [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import uvloop

from sip import manscdp
from sip.events import MobilePosition, PositionForm, build_position_notify

from .devices_bench import (
    DOMAIN,
    FIRST_ID,
    PLATFORM,
    WINDOW,
    Child,
    Measured,
    _Commands,
    _fmt_status,
    _quiet_logging,
    _Window,
    device_ids,
    measure_load,
    run_client,
    start_echo,
    start_sim,
    wait_until,
)
from .sip_bench import CANNED_200, cpu_seconds

LIST_ITEMS = 8
ALARM_RATE = 10_000.0
BASELINE_OPS = 30_000  # datagrams per baseline figure at least: /proc counts CPU in 10 ms ticks
_RUN = iter(range(1, 1 << 30))


# ------------------------------------------------------------------------------------------------ gateway process
def gateway_main(reply_fd: int, state_dir: str) -> None:
    uvloop.run(_gateway(reply_fd, state_dir))


async def _gateway(reply_fd: int, state_dir: str) -> None:
    from prometheus_client import REGISTRY

    from gateway.app import Gateway
    from gateway.config import Config
    from gateway.devices import DeviceRegistry

    _quiet_logging("info")
    DeviceRegistry.request_sync = lambda self, device_id: None  # type: ignore[method-assign]
    config = Config.from_mapping({
        "sip": {"port": 0, "source_rate_limit": 0, "udp_queue_size": 65536, "max_transactions": 1_000_000},
        "devices": {"register_rate": 100_000, "alarm_rate": ALARM_RATE, "catalog_subscribe_expires": 0,
                    "alarm_subscribe_expires": 0, "position_subscribe_expires": 0},
        "rtsp": {"port": 0},
        "http": {"port": 0},
        "daemon": {"state_dir": state_dir},
    })
    gw = Gateway(config)
    await gw.start()
    assert gw.sip is not None
    sip = gw.sip

    def total(name: str) -> float:
        return sum(s.value for m in REGISTRY.collect() if m.name == name for s in m.samples
                   if s.name.endswith("_total"))

    def stats() -> dict[str, Any]:
        dropped = {s.labels["reason"]: s.value for m in REGISTRY.collect() if m.name == "gb28181_sip_dropped"
                   for s in m.samples if s.name.endswith("_total") and s.value}
        return {"registered": sum(d.registered for d in gw.devices.devices.values()),
                "notifications": total("gb28181_notifications"), "positions": total("gb28181_positions"),
                "positions_kept": len(gw.devices.subscriptions.positions),
                "alarms": total("gb28181_alarms"), "suppressed": total("gb28181_alarms_suppressed"),
                "responses_sent": gw.alarms.responses_sent, "responses_failed": gw.alarms.responses_failed,
                "sse_subscribers": gw.alarms.subscribers, "store_pending": gw.store.pending, "dropped": dropped,
                "txns": sip.endpoint.transaction_count}

    async def stored() -> dict[str, Any]:
        await gw.store.flush()

        def count() -> int:
            with sqlite3.connect(gw.store.path) as conn:
                return int(conn.execute("SELECT count(*) FROM alarms").fetchone()[0])

        return {"rows": await asyncio.get_running_loop().run_in_executor(None, count)}

    commands = _Commands(reply_fd, {"stats": stats, "stored": stored})
    commands.reply({"port": sip.port, "http": gw.http.port})
    await commands.done.wait()
    os._exit(0)  # the figures are taken; a clean stop is not what is measured


# ------------------------------------------------------------------------------------------------ baseline process
async def serve_echo(ready: int) -> None:
    """``sip_bench``'s bare echo (a canned 200 to every datagram), with the gateway's 4 MiB receive buffer: a
    2.5 KB list NOTIFY takes ~4.6 KB of the default 208 KiB, so 64 in flight would overflow it and be lost."""
    from gateway.netutil import grow_receive_buffer

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            grow_receive_buffer(transport, 4 << 20)

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
            self.t.sendto(CANNED_200, addr)  # type: ignore[attr-defined]

    udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    os.write(ready, f"{udp.get_extra_info('sockname')[1]}\n".encode())
    await asyncio.Event().wait()


# ------------------------------------------------------------------------------------------------ SSE client process
def sse_main(reply_fd: int, http_port: int) -> None:
    uvloop.run(_sse(reply_fd, http_port))


async def _sse(reply_fd: int, http_port: int) -> None:
    import aiohttp

    state = {"events": 0, "bytes": 0, "ended": False, "connected": False}

    async def follow() -> None:
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{http_port}/api/v1/alarms/stream") as resp:
            state["connected"] = resp.status == 200
            async for line in resp.content:  # lines: "event: alarm" once per alarm
                state["bytes"] += len(line)
                if line.startswith(b"event: alarm"):
                    state["events"] += 1
        state["ended"] = True

    task = asyncio.create_task(follow())
    commands = _Commands(reply_fd, {"count": lambda: {**state, "failed": task.done() and not state["ended"]}})
    commands.reply({})
    await commands.done.wait()
    os._exit(0)


# ------------------------------------------------------------------------------------------------ datagrams
def _request(method: str, device: str, tag: str, n: int, body: bytes, extra: str = "") -> bytes:
    # The gateway answers to the Via's sent-by with rport (the real source port): any local port will do.
    return (
        f"{method} sip:{PLATFORM}@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bK-{tag}-{n}\r\n"
        f"From: <sip:{device}@{DOMAIN}>;tag={tag}-{n}\r\nTo: <sip:{PLATFORM}@{DOMAIN}>\r\n"
        f"Call-ID: {tag}-{n}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}User-Agent: events-bench\r\n"
        f"Content-Type: Application/MANSCDP+xml\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _fix(target: str, n: int) -> MobilePosition:
    return MobilePosition(target, f"2026-11-23T14:{n // 60 % 60:02d}:{n % 60:02d}", 116.397428 + n % 1000 * 1e-5,
                          39.90923 + n % 777 * 1e-5, 30.5, float(n % 360), 50.0)


def position_datagrams(devices: list[str], total: int, items: int) -> list[bytes]:
    """``total`` NOTIFYs, round robin over ``devices``: the 2016 single form (``items`` 0: the first channel's
    fix) or the 2022 list form with ``items`` fixes (channels 1..items of the device)."""
    from gateway.sim.config import channel_id

    run = next(_RUN)
    out = []
    extra = "Event: MobilePosition\r\nSubscription-State: active;expires=3600\r\n"
    for n in range(total):
        dev = devices[n % len(devices)]
        if items:
            body = build_position_notify(n + 1, dev, [_fix(channel_id(dev, i), n) for i in range(items)],
                                         form=PositionForm.LIST)
        else:
            body = build_position_notify(n + 1, dev, [_fix(channel_id(dev, 0), n)])
        out.append(_request("NOTIFY", dev, f"p{run}", n, body, extra))
    return out


def alarm_datagrams(devices: list[str], total: int) -> list[bytes]:
    """``total`` alarm MESSAGEs shaped like the simulator's (video motion, priority cycling 1..4, AlarmType 2)."""
    from gateway.sim.config import channel_id

    run = next(_RUN)
    out = []
    for n in range(total):
        dev = devices[n % len(devices)]
        fields: list[manscdp.Field] = [
            manscdp.element("AlarmPriority", n % 4 + 1), manscdp.element("AlarmMethod", 5),
            manscdp.element("AlarmTime", f"2026-11-23T14:{n // 60 % 60:02d}:{n % 60:02d}"),
            manscdp.element("AlarmDescription", "视频移动侦测"),
            manscdp.element("Info", [manscdp.element("AlarmType", 2)]),
        ]
        body = manscdp.encode("Notify", "Alarm", n + 1, channel_id(dev, 0), fields)
        out.append(_request("MESSAGE", dev, f"a{run}", n, body))
    return out


# ------------------------------------------------------------------------------------------------ alarm runs
class _Paced(_Window):
    """Sends prebuilt datagrams at ``rate`` per second (whatever is answered); any final response is counted."""

    def __init__(self, datagrams: list[bytes], rate: float) -> None:
        super().__init__(datagrams)
        self.rate = rate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.DatagramTransport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()
        self._tick()

    def _tick(self) -> None:
        due = min(len(self.datagrams), int((self.loop.time() - self.start) * self.rate) + 1)
        while self.sent < due:
            self.t.sendto(self.datagrams[self.sent])
            self.sent += 1
        if self.sent < len(self.datagrams):
            self.loop.call_later(0.002, self._tick)

    def next(self) -> None:
        pass  # paced: an answer does not send the next one


@dataclass
class AlarmRun:
    sent: int
    answered: Measured      # until the last 200
    end_to_end: Measured    # until stored, on the SSE stream (or the stream ended) and every Response answered
    answered_s: float
    end_s: float
    accepted: float
    suppressed: float
    rows: int               # SQLite rows added
    sse_events: int
    sse_ended: bool         # the gateway ended the stream (a subscriber SUBSCRIBER_QUEUE alarms behind is dropped)
    responses_ok: int
    responses_failed: int
    sim_share: float
    sse_share: float


def alarm_run(gw: Child, sim: Child, port: int, http_port: int, proto: _Window, notes: list[str],
              name: str) -> AlarmRun:
    """Send ``proto``'s alarms with a fresh SSE subscriber connected; wait until stored, streamed and answered."""
    sent = len(proto.datagrams)
    sse = Child(f"import benchmarks.events_bench as b; b.sse_main(FD, {http_port})")
    try:
        if wait_until(lambda: gw.ask("stats")["sse_subscribers"] >= 1, 10) is None:
            notes.append(f"alarms {name}: the SSE client did not subscribe")
        rows0 = gw.ask("stored")["rows"]
        st0 = gw.ask("stats")
        gw_cpu0, sim_cpu0, sse_cpu0 = cpu_seconds(gw.pid), cpu_seconds(sim.pid), cpu_seconds(sse.pid)
        answered, load = measure_load(gw.pid, run_client, port, proto)
        t1 = time.monotonic()

        def drained() -> bool:
            st = gw.ask("stats")
            sse_state = sse.ask("count")
            return (st["store_pending"] == 0 and (sse_state["events"] >= sent or sse_state["ended"])
                    and st["responses_sent"] + st["responses_failed"] - st0["responses_sent"]
                    - st0["responses_failed"] >= load.done)

        if wait_until(drained, 20, 0.01) is None:
            notes.append(f"alarms {name}: not all stored / streamed / Response answered within 20 s")
        end_s = time.monotonic() - t1 + load.seconds
        gw_cpu = cpu_seconds(gw.pid) - gw_cpu0
        sim_cpu, sse_cpu = cpu_seconds(sim.pid) - sim_cpu0, cpu_seconds(sse.pid) - sse_cpu0
        rows = gw.ask("stored")["rows"] - rows0
        sse_state = sse.ask("count")
        st1 = gw.ask("stats")
    finally:
        sse.close()
    if load.done < sent or _fmt_status(load.statuses):
        notes.append(f"alarms {name}: {load.done} of {sent} answered;" + _fmt_status(load.statuses))
    e2e = Measured(load.done / end_s, gw_cpu / max(1, load.done) * 1e6, gw_cpu / end_s, load.client_cpu / end_s)
    return AlarmRun(sent, answered, e2e, load.seconds, end_s, st1["alarms"] - st0["alarms"],
                    st1["suppressed"] - st0["suppressed"], rows, sse_state["events"], sse_state["ended"],
                    st1["responses_sent"] - st0["responses_sent"],
                    st1["responses_failed"] - st0["responses_failed"], sim_cpu / end_s, sse_cpu / end_s)


# ------------------------------------------------------------------------------------------------ report
def _row(name: str, m: Measured, base: Measured | None, per_note: str = "") -> None:
    b_rate = f"{base.rate:>12,.0f}{m.rate / base.rate:>7.2f}" if base else f"{'–':>12}{'–':>7}"
    b_us = f"{base.gw_us:>12.1f}" if base else f"{'–':>12}"
    print(f"{name:<34}{m.rate:>11,.0f}{b_rate}{m.gw_us:>10.1f}{b_us}{m.gw_share:>8.0%}{m.load_share:>7.0%}"
          f"{per_note}")


def main(quick: bool = False) -> None:
    n = 500 if quick else 2000
    singles = 4000 if quick else 30_000
    lists = 2000 if quick else 10_000
    alarms = 2000 if quick else 10_000
    paced = [(500, 1.0)] if quick else [(250, 3.0), (1000, 3.0)]  # (alarms/s, seconds): does the SSE keep up?
    base_ops = BASELINE_OPS if quick else 3 * BASELINE_OPS
    ids = device_ids(FIRST_ID, n)
    print(f"Device event notifications through real UDP sockets on 127.0.0.1 ({n:,} registered devices, raw-client "
          f"window {WINDOW}, alarm_rate {ALARM_RATE:g}/s, subscriptions off; {os.cpu_count()} CPUs)")
    notes: list[str] = []
    single_dgrams = position_datagrams(ids, singles, 0)
    list_dgrams = position_datagrams(ids, lists, LIST_ITEMS)
    alarm_dgrams = alarm_datagrams(ids, alarms)
    with tempfile.TemporaryDirectory(prefix="events-bench-") as tmp:
        gw = Child(f"import benchmarks.events_bench as b; b.gateway_main(FD, {os.path.join(tmp, 'g')!r})")
        sim: Child | None = None
        try:
            port, http_port = gw.hello["port"], gw.hello["http"]
            sim = start_sim(port, n, 3600.0)
            t0 = time.monotonic()
            sim.ask("go")
            if wait_until(lambda: gw.ask("stats")["registered"] >= n, 60) is None:
                notes.append(f"only {gw.ask('stats')['registered']} of {n} devices registered")
            reg_s = time.monotonic() - t0
            time.sleep(0.3)

            # ---- 1. mobile positions: warm-up on other datagrams, then the single and list forms
            run_client(port, _Window(position_datagrams(ids, 1000, 0)))
            before = gw.ask("stats")
            single, single_load = measure_load(gw.pid, run_client, port, _Window(single_dgrams))
            lst, list_load = measure_load(gw.pid, run_client, port, _Window(list_dgrams))
            after_pos = gw.ask("stats")
            for name, load, sent in (("single", single_load, singles), ("list", list_load, lists)):
                if load.done < sent or _fmt_status(load.statuses):
                    notes.append(f"positions {name}: {load.done} of {sent} answered;" + _fmt_status(load.statuses))
            fixes = after_pos["positions"] - before["positions"]
            if fixes != singles + lists * LIST_ITEMS:
                notes.append(f"positions: {fixes:.0f} fixes counted, {singles + lists * LIST_ITEMS} sent")

            # ---- 2. alarms with one SSE subscriber (a fresh one per run: a subscriber that falls behind is dropped)
            flood = alarm_run(gw, sim, port, http_port, _Window(alarm_dgrams), notes, "flood")
            paced_runs = []
            for rate, seconds in paced:
                dgrams = alarm_datagrams(ids, int(rate * seconds))
                paced_runs.append((rate, alarm_run(gw, sim, port, http_port, _Paced(dgrams, rate), notes,
                                                   f"paced {rate}/s")))
            final = gw.ask("stats")
        finally:
            if sim is not None:
                sim.close()
            gw.close()

    # ---- 3. baseline: the bare echo on the same datagrams
    echo, echo_port = start_echo("benchmarks.events_bench")
    try:
        run_client(echo_port, _Window(single_dgrams[:2000]))

        def base(dgrams: list[bytes]) -> Measured:
            reps = -(-base_ops // len(dgrams))
            return measure_load(echo.pid, run_client, echo_port, _Window(dgrams * reps))[0]

        base_single, base_list, base_alarm = base(single_dgrams), base(list_dgrams), base(alarm_dgrams)
    finally:
        echo.terminate()
        echo.wait(10)

    print(f"{'case':<34}{'gateway/s':>11}{'baseline/s':>12}{'ratio':>7}{'gw µs/op':>10}{'base µs/op':>12}"
          f"{'gw CPU':>8}{'loadgen CPU':>13}")
    _row("position NOTIFY, 2016 single", single, base_single)
    _row(f"position NOTIFY, 2022 list x{LIST_ITEMS}", lst, base_list,
         f"   {lst.rate * LIST_ITEMS:,.0f} positions/s, {lst.gw_us / LIST_ITEMS:.1f} µs/position")
    _row("alarm MESSAGE flood: answered 200", flood.answered, base_alarm)
    _row("  end to end (stored, SSE, Resp)", flood.end_to_end, base_alarm)
    for rate, run in paced_runs:
        _row(f"alarm MESSAGE paced {rate}/s: e2e", run.end_to_end, None)
    print(f"  (sizes: single {len(single_dgrams[0])} B, list {len(list_dgrams[0])} B, alarm {len(alarm_dgrams[0])} B."
          f" µs/op: gateway CPU per request, all threads. Alarms: 'answered 200' until the last 200; 'end to end'\n"
          f"   until every alarm is stored, streamed (or the stream ended) and its Response MESSAGE answered, CPU over"
          f" that window; paced: sent at that rate, not a capacity)")
    print(f"positions: {fixes:,.0f} fixes accepted ({singles:,} single + {lists:,} x {LIST_ITEMS}); latest kept per "
          f"(device, channel): {after_pos['positions_kept']:,}")
    for name, run in [("flood", flood), *((f"paced {rate}/s", run) for rate, run in paced_runs)]:
        sse = "all" if run.sse_events == run.sent else f"MISSING {run.sent - run.sse_events:,}"
        print(f"alarms {name}: {run.sent:,} sent, {run.accepted:,.0f} accepted, {run.suppressed:,.0f} suppressed; "
              f"SQLite rows +{run.rows:,} ({'= sent' if run.rows == run.sent else 'MISMATCH'}); SSE client received "
              f"{run.sse_events:,} ({sse}{', stream ended by the gateway' if run.sse_ended else ''}); Response "
              f"MESSAGEs answered {run.responses_ok:,}, failed {run.responses_failed:,}; done {run.end_s:.2f} s "
              f"after the first send (last 200 at {run.answered_s:.2f} s); simulator CPU {run.sim_share:.0%}, SSE "
              f"client {run.sse_share:.0%}")
    print(f"  {n:,} devices registered by the simulator in {reg_s:.1f} s; gateway drops {final['dropped'] or 'none'}")
    for note in notes:
        print(f"  note: {note}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    main(quick=parser.parse_args().quick)
