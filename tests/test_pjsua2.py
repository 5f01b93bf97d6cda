"""pjsua2 (PJSIP, an independent SIP stack) registers to the gateway with digest and sends a MANSCDP MESSAGE."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from gw_util import DEVICE, make_config, running_gateway

pytestmark = pytest.mark.e2e
pytest.importorskip("pjsua2", reason="pjsua2-python not installed (pip install -e .[test])")

PEER = Path(__file__).parent / "peers" / "pjsua2_device.py"


async def run_peer(port: int, password: str) -> dict[str, int]:
    proc = await asyncio.create_subprocess_exec(sys.executable, str(PEER), str(port), DEVICE, password,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    result: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_pjsua2_registers_with_digest_and_sends_keepalive(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        assert gw.sip is not None
        result = await run_peer(gw.sip.port, "12345678")
        assert result == {"register": 200, "message": 200}
        dev = gw.devices.get(DEVICE)
        assert dev is not None and dev.rec.registered_at > 0
        # pjsua2 unregisters (Expires: 0) when its account shuts down: that must have been honoured too.
        assert not dev.registered


async def test_pjsua2_wrong_password_refused(tmp_path: Path) -> None:
    async with running_gateway(make_config(tmp_path)) as gw:
        assert gw.sip is not None
        result = await run_peer(gw.sip.port, "not-the-password")
        assert result["register"] == 403
        dev = gw.devices.get(DEVICE)
        assert dev is None or not dev.registered
