"""SIPp (Debian ``sip-tester``), an independent SIP implementation, against the gateway's SIP listener."""

from __future__ import annotations

import asyncio
import shutil
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
        "-t", transport, "-i", "127.0.0.1", "-p", "0", "-m", str(calls), "-r", "50",
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
