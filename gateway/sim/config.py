"""The simulator's configuration (``SimConfig``) and the IDs it derives from the first device ID.

ID scheme (GB/T 28181 20-digit IDs: 10 digits region + industry, 3 digits type, 1 digit network, 6 digits serial):

* devices: the first ID, then the serial part (last 6 digits) incremented: ``...1320000001``, ``...1320000002``;
* channels: the device ID with type code ``131`` (camera) and serial ``SSSJJJ``: the device serial's last three
  digits then the channel number from 1, e.g. device ``34020000001320000001`` has channels
  ``34020000001310001001``, ``34020000001310001002``... Unique across up to 1000 devices of up to 999 channels;
  beyond that IDs may repeat between devices (as factory IDs do in the field: the gateway addresses channels as
  ``device/channel``);
* with ``catalog_groups``: one business group (type ``215``) and ``virtual_orgs`` virtual organisations (type
  ``216``) per device, numbered the same way from 1.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .. import __version__

__all__ = ["SimConfig", "channel_id", "derived_id", "device_ids"]

_ID = re.compile(r"[0-9]{20}")
_DIGITS = re.compile(r"[0-9]+")
SERIALS = 10**6
AUDIO_RATES = {"g711a": (8000,), "g711u": (8000,), "aac": (8000, 16000), "none": ()}
"""``SimConfig.audio`` choices and the sample rates each allows (``gateway.sim.source`` holds the same limits)."""


def device_ids(first_id: str, count: int) -> list[str]:
    """``count`` device IDs from ``first_id``, incrementing its 6-digit serial part."""
    serial = int(first_id[14:])
    return [f"{first_id[:14]}{serial + i:06d}" for i in range(count)]


def derived_id(device_id: str, type_code: str, number: int) -> str:
    """The ID of item ``number`` (from 1) of ``type_code`` (``131``, ``215``, ``216``) under ``device_id``."""
    serial = (int(device_id[14:]) % 1000) * 1000 + number % 1000
    return f"{device_id[:10]}{type_code}{device_id[13]}{serial:06d}"


def channel_id(device_id: str, index: int) -> str:
    """The ID of channel ``index`` (from 0) of ``device_id``: type code 131."""
    return derived_id(device_id, "131", index + 1)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulator process: which platform to register to, how many devices, how they behave."""

    server: tuple[str, int] = ("127.0.0.1", 5060)
    """The platform's SIP address (host or IP, port) the devices register to."""

    platform_id: str = "34020000002000000001"
    """The platform's 20-digit ID (Request-URI and To of REGISTER and MESSAGE)."""

    domain: str = "3402000000"
    """The platform's SIP domain (host part of the URIs; the digest realm devices expect)."""

    password: str = "12345678"
    """Digest password every device registers with."""

    transport: str = "udp"
    """``udp`` or ``tcp``: with tcp the first request opens a connection the platform then sends back over."""

    devices: int = 1
    """Number of devices simulated in this process (sharing one SIP port)."""

    channels: int = 4
    """Video channels per device (catalog items of type 131)."""

    first_id: str = "34020000001320000001"
    """ID of the first device; the others increment its 6-digit serial part."""

    catalog_per_message: int = 20
    """Catalog items per Response MESSAGE; larger catalogs are split (SumNum, DeviceList Num)."""

    catalog_groups: bool = False
    """NVR mode: the catalog also holds a business group (215) and virtual organisations (216) as parents."""

    virtual_orgs: int = 2
    """Virtual organisations per device when ``catalog_groups`` is set; channels are spread across them."""

    keepalive_interval: float = 60.0
    """Seconds between Keepalive MESSAGEs."""

    keepalive_misses: int = 3
    """Keepalives in a row without any answer after which the device registers again."""

    expires: int = 3600
    """Expires asked for in REGISTER; the registration is refreshed at 2/3 of what the platform grants."""

    register_rate: float = 50.0
    """Devices started per second (the registration ramp across devices)."""

    retry_min: float = 1.0
    """First delay, seconds, before retrying a REGISTER that timed out or failed; doubles each time."""

    retry_max: float = 60.0
    """Longest delay between REGISTER retries, seconds."""

    unregister_timeout: float = 5.0
    """Seconds the ``Expires: 0`` REGISTER of a stopping device may take before it is given up."""

    charset: str = "GB2312"
    """Charset declared in (and used to encode) MANSCDP bodies: GB2312, GB18030 or UTF-8."""

    codec: str = "h264"
    """Video codec of the generated media streams: h264 or h265 (libx265 must be in PyAV's build)."""

    manufacturer: str = "gb28181-sim"
    """DeviceInfo and catalog Manufacturer."""

    model: str = ""
    """DeviceInfo and catalog Model; empty picks ``SIM-IPC`` (one channel) or ``SIM-NVR``."""

    firmware: str = __version__
    """DeviceInfo Firmware."""

    local_host: str = "127.0.0.1"
    """Local address the shared SIP port binds to ('0.0.0.0' to reach a platform on another host)."""

    local_port: int = 0
    """Local SIP port (UDP and TCP); 0 picks a free one."""

    t1: float = 0.5
    """RFC 3261 T1 of the simulator's SIP transactions (a request times out after 64 x T1)."""

    catalog_shuffle: bool = False
    """Misbehaviour for tests: send the Catalog parts out of order (each device's initial setting)."""

    catalog_duplicate: bool = False
    """Misbehaviour for tests: send one Catalog part twice (each device's initial setting)."""

    wrong_password: bool = False
    """Misbehaviour for tests: answer the digest challenge with a wrong password."""

    seed: int | None = None
    """Seed of the simulator's random generator (cnonces, jitter, shuffles); None: unpredictable."""

    # --- events (gateway/sim/events.py) ----------------------------------------------------------------------
    position_form: str = "single"
    """Mobile position NOTIFYs: ``single`` (one per channel, 2016) or ``list`` (one listing every channel, 2022)."""

    alarm_interval: float = 0.0
    """Seconds between the alarms each device raises on its own (video motion, priority cycling 1-4); 0: none."""

    # --- media (gateway/sim/media.py, gateway/sim/source.py) -------------------------------------------------
    width: int = 320
    """Width of the generated video (even, up to 640)."""

    height: int = 240
    """Height of the generated video (even, up to 360)."""

    fps: int = 25
    """Frame rate of the generated video; also its GOP (one keyframe per second)."""

    clip_seconds: int = 10
    """Length of the generated clip, encoded once per process and looped with continuous timestamps."""

    audio: str = "g711a"
    """Audio sent with the generated video: g711a, g711u (G.711 at 8 kHz), aac (AAC-LC in ADTS) or none.
    ``True``/``False`` (older callers) become g711a/none."""

    audio_rate: int = 8000
    """Audio sample rate, Hz: 8000 for G.711; 8000 or 16000 for AAC."""

    audio_frame_ms: int = 40
    """Duration of one G.711 access unit: 20 or 40 ms (an AAC access unit is one 1024-sample frame)."""

    rtp_payload: int = 1400
    """Bytes of PS per RTP packet."""

    replay: str | None = None
    """A ``*.lenpfx.rtp`` capture to replay (SSRC, sequence and timestamps rewritten) instead of the clip."""

    replay_speed: float = 1.0
    """Pace of the replay relative to its timestamps (2.0: twice as fast)."""

    loss: float = 0.0
    """Misbehaviour for tests: fraction of RTP packets not sent (each device's initial setting)."""

    reorder: float = 0.0
    """Misbehaviour for tests: fraction of RTP packets sent after the next one."""

    duplicate: float = 0.0
    """Misbehaviour for tests: fraction of RTP packets sent twice."""

    garbage: float = 0.0
    """Misbehaviour for tests: fraction of frames followed by 1-3 random datagrams."""

    wrong_ssrc: bool = False
    """Misbehaviour for tests: send another SSRC than the ``y=`` answered (which echoes the offer's)."""

    change_ssrc: bool = False
    """Answer ``y=`` with another SSRC than the offer's and send that one (legal: the platform must follow)."""

    no_media: bool = False
    """Misbehaviour for tests: answer INVITEs 200 but send no media."""

    answer_delay: float = 0.0
    """Misbehaviour for tests: seconds before answering an INVITE (100 Trying goes at once)."""

    reject: int = 0
    """Misbehaviour for tests: answer INVITEs with this status (e.g. 486, 488) instead of 200; 0: accept."""

    def __post_init__(self) -> None:
        if isinstance(self.audio, bool):
            object.__setattr__(self, "audio", "g711a" if self.audio else "none")
        errors: list[str] = []
        host, port = self.server
        if not host or not isinstance(port, int) or not 0 < port < 65536:
            errors.append(f"server = {self.server!r}: expected (host, port 1-65535)")
        for name in ("platform_id", "first_id"):
            if not _ID.fullmatch(getattr(self, name)):
                errors.append(f"{name} = {getattr(self, name)!r}: expected 20 digits")
        if not (_DIGITS.fullmatch(self.domain) or re.fullmatch(r"[A-Za-z0-9.\-]+", self.domain)):
            errors.append(f"domain = {self.domain!r}: expected a SIP domain such as '3402000000'")
        if not self.password:
            errors.append("password: expected a non-empty password")
        if self.transport not in ("udp", "tcp"):
            errors.append(f"transport = {self.transport!r}: expected 'udp' or 'tcp'")
        if self.codec not in ("h264", "h265"):
            errors.append(f"codec = {self.codec!r}: expected 'h264' or 'h265'")
        if self.charset.upper() not in ("GB2312", "GB18030", "UTF-8"):
            errors.append(f"charset = {self.charset!r}: expected GB2312, GB18030 or UTF-8")
        if self.devices < 1:
            errors.append(f"devices = {self.devices!r}: expected at least 1")
        elif _ID.fullmatch(self.first_id) and int(self.first_id[14:]) + self.devices > SERIALS:
            errors.append(f"devices = {self.devices!r}: the serial part of first_id {self.first_id} would overflow")
        if not 0 <= self.channels <= 100_000:
            errors.append(f"channels = {self.channels!r}: expected 0-100000")
        if self.catalog_per_message < 1:
            errors.append(f"catalog_per_message = {self.catalog_per_message!r}: expected at least 1")
        if self.virtual_orgs < 1:
            errors.append(f"virtual_orgs = {self.virtual_orgs!r}: expected at least 1")
        if self.keepalive_misses < 1:
            errors.append(f"keepalive_misses = {self.keepalive_misses!r}: expected at least 1")
        for name in ("keepalive_interval", "register_rate", "retry_min", "retry_max", "unregister_timeout", "t1"):
            if not getattr(self, name) > 0:
                errors.append(f"{name} = {getattr(self, name)!r}: expected a positive number")
        if self.retry_max < self.retry_min:
            errors.append(f"retry_max = {self.retry_max!r}: expected >= retry_min ({self.retry_min!r})")
        if not 1 <= self.expires <= 7 * 86400:
            errors.append(f"expires = {self.expires!r}: expected 1-604800 seconds")
        try:
            ipaddress.ip_address(self.local_host)
        except ValueError:
            errors.append(f"local_host = {self.local_host!r}: expected an IP address")
        if not 0 <= self.local_port < 65536:
            errors.append(f"local_port = {self.local_port!r}: expected 0-65535")
        if self.position_form not in ("single", "list"):
            errors.append(f"position_form = {self.position_form!r}: expected 'single' or 'list'")
        if isinstance(self.alarm_interval, bool) or not isinstance(self.alarm_interval, int | float) \
                or not 0.0 <= self.alarm_interval <= 86400:
            errors.append(f"alarm_interval = {self.alarm_interval!r}: expected 0 (off) to 86400 seconds")
        errors += self._media_errors()
        if errors:
            raise ValueError("; ".join(errors))

    def _media_errors(self) -> list[str]:
        """The media fields' problems (limits of ``gateway.sim.source`` and ``gateway.sim.media``)."""
        errors: list[str] = []
        if not (16 <= self.width <= 640 and 16 <= self.height <= 360) or self.width % 2 or self.height % 2:
            errors.append(f"size = {self.width}x{self.height}: expected even sizes from 16x16 to 640x360")
        if not 1 <= self.fps <= 60:
            errors.append(f"fps = {self.fps!r}: expected 1-60")
        if not 1 <= self.clip_seconds <= 60:
            errors.append(f"clip_seconds = {self.clip_seconds!r}: expected 1-60")
        if self.audio not in AUDIO_RATES:
            errors.append(f"audio = {self.audio!r}: expected 'g711a', 'g711u', 'aac' or 'none'")
        elif self.audio != "none" and self.audio_rate not in AUDIO_RATES[self.audio]:
            rates = " or ".join(map(str, AUDIO_RATES[self.audio]))
            errors.append(f"audio_rate = {self.audio_rate!r}: expected {rates} for {self.audio}")
        if self.audio_frame_ms not in (20, 40):
            errors.append(f"audio_frame_ms = {self.audio_frame_ms!r}: expected 20 or 40")
        if not 64 <= self.rtp_payload <= 65000:
            errors.append(f"rtp_payload = {self.rtp_payload!r}: expected 64-65000 bytes")
        if not self.replay_speed > 0:
            errors.append(f"replay_speed = {self.replay_speed!r}: expected a positive number")
        for name in ("loss", "reorder", "duplicate", "garbage"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                errors.append(f"{name} = {getattr(self, name)!r}: expected a fraction from 0 to 1")
        if not 0.0 <= self.answer_delay <= 3600:
            errors.append(f"answer_delay = {self.answer_delay!r}: expected 0-3600 seconds")
        if self.reject and not 300 <= self.reject <= 699:
            errors.append(f"reject = {self.reject!r}: expected 0 or a status from 300 to 699")
        return errors

    @property
    def device_model(self) -> str:
        return self.model or ("SIM-NVR" if self.channels > 1 or self.catalog_groups else "SIM-IPC")

    def device_ids(self) -> list[str]:
        return device_ids(self.first_id, self.devices)
