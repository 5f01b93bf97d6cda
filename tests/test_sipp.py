"""SIPp (Debian ``sip-tester``), an independent SIP implementation, against the gateway's SIP listener."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import SipConfig
from gateway.sip_router import SipRouter
from gateway.sip_transport import SipServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed (Debian package sip-tester)"),
]

SCENARIOS = Path(__file__).parent / "sipp"


def free_port() -> int:
    """A port free on UDP and TCP right now (SIPp's -p 0 means its default 5060, not an ephemeral port)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


@pytest.fixture
async def server() -> AsyncIterator[SipServer]:
    srv = SipServer(SipConfig(port=0), SipRouter())
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def run_sipp(scenario: str, port: int, transport: str, calls: int, tmp_path: Path) -> tuple[int, str]:
    """Run SIPp to completion; returns its exit code (0: every call passed) and its error log."""
    errors = tmp_path / f"{scenario}-{transport}-errors.log"
    proc = await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{port}", "-sf", str(SCENARIOS / f"{scenario}.xml"),
        "-t", transport, "-i", "127.0.0.1", "-p", str(free_port()), "-m", str(calls), "-r", "50",
        "-timeout", "20s", "-timeout_error", "-recv_timeout", "5000", "-nostdin", "-trace_err",
        "-error_file", str(errors),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    log = errors.read_text(errors="replace") if errors.exists() else ""
    return proc.returncode or 0, log + out.decode(errors="replace")[-2000:]


@pytest.mark.parametrize("transport", ["u1", "t1"])
@pytest.mark.parametrize("scenario", ["options", "message"])
async def test_sipp_scenarios(server: SipServer, scenario: str, transport: str, tmp_path: Path) -> None:
    code, log = await run_sipp(scenario, server.port, transport, 10, tmp_path)
    assert code == 0, log


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_sipp_camera_registers_keepalives_and_answers_catalog(transport: str, tmp_path: Path) -> None:
    """SIPp plays a camera: digest REGISTER, keepalives, and GB2312 DeviceInfo/Catalog answers to our queries."""
    from gw_util import make_config, running_gateway

    config = make_config(tmp_path / "state", keepalive_interval=5, query_timeout=2, catalog_timeout=2)
    async with running_gateway(config) as gw:
        assert gw.sip is not None
        errors = tmp_path / "errors.log"
        proc = await asyncio.create_subprocess_exec(
            "sipp", f"127.0.0.1:{gw.sip.port}", "-sf", str(SCENARIOS / "device.xml"),
            "-oocsf", str(SCENARIOS / "device_ooc.xml"),
            "-t", transport, "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1", "-timeout", "30s", "-timeout_error",
            "-nostdin", "-trace_err", "-error_file", str(errors), "-trace_msg", "-message_file", str(tmp_path / "msg.log"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        log = (errors.read_text(errors="replace") if errors.exists() else "") + out.decode(errors="replace")[-2000:]
        assert proc.returncode == 0, log
        dev = gw.devices.get("34020000001320000002")
        assert dev is not None and dev.registered
        assert dev.rec.manufacturer == "SIPp" and dev.rec.name == "SIPp 摄像机"
        names = {ch.channel_id: ch.name for ch in dev.channels.values()}
        assert names == {"34020000001310000021": "大门入口", "34020000001310000022": "朱镕基路口"}
        assert dev.channels["34020000001310000022"].fields["Address"] == "一楼大厅"
        assert dev.rec.catalog_complete
