"""An independent SIP peer for tests: a pjsua2 (PJSIP) account that registers to the gateway with digest and
sends a GB28181 Keepalive MESSAGE. Run as a subprocess: ``python pjsua2_device.py PORT DEVICE_ID PASSWORD``.
Prints one JSON line: the registration status code and the MESSAGE status code."""

from __future__ import annotations

import json
import sys
import time

import pjsua2 as pj

PLATFORM = "34020000002000000001"
DOMAIN = "3402000000"


class Account(pj.Account):
    def __init__(self) -> None:
        super().__init__()
        self.reg_code = 0
        self.im_code = 0

    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # noqa: N802 (pjsua2 API)
        self.reg_code = prm.code

    def onInstantMessageStatus(self, prm: pj.OnInstantMessageStatusParam) -> None:  # noqa: N802
        self.im_code = prm.code


def wait(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def main() -> None:
    port, device_id, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    cfg.uaConfig.userAgent = "pjsua2-test-device"
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{device_id}@{DOMAIN}"
    acfg.regConfig.registrarUri = f"sip:{PLATFORM}@127.0.0.1:{port}"
    acfg.regConfig.timeoutSec = 3600
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", device_id, 0, password))
    acc = Account()
    acc.create(acfg)
    wait(lambda: acc.reg_code != 0, 10)
    reg_code = acc.reg_code

    im_code = 0
    if reg_code == 200:
        buddy_cfg = pj.BuddyConfig()
        buddy_cfg.uri = f"sip:{PLATFORM}@127.0.0.1:{port}"
        buddy = pj.Buddy()
        buddy.create(acc, buddy_cfg)
        prm = pj.SendInstantMessageParam()
        prm.contentType = "Application/MANSCDP+xml"
        prm.content = (
            '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>1</SN>\r\n'
            f"<DeviceID>{device_id}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
        )
        buddy.sendInstantMessage(prm)
        wait(lambda: acc.im_code != 0, 10)
        im_code = acc.im_code
    print(json.dumps({"register": reg_code, "message": im_code}), flush=True)
    acc.shutdown()
    ep.libDestroy()


if __name__ == "__main__":
    main()
