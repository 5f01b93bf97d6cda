"""Typed configuration: one frozen dataclass per TOML table, validated once at startup.

Theory of operation
-------------------
``conf/gateway.toml`` holds tables (``[sip]``, ``[log]``, ``[daemon]``); each maps onto a section class below,
and :class:`Config` holds one instance of each. Every field carries a *rule* in its ``dataclasses.field``
metadata: what it accepts and how an operator should read the expectation. A section validates all of its
fields in ``__post_init__``, so a section built in code (``SipConfig(port=0)``, ``dataclasses.replace``) is
checked exactly like one loaded from a file. :meth:`Config.from_mapping` adds what only a file can get wrong
(unknown tables and keys) and collects the errors of every table, so the operator sees them all at once::

    sip.port = 70000: expected an integer 0..65535
    log.level = 'verbose': expected one of 'debug', 'info', 'warning', 'error'

Booleans are never integers (``port = true`` is refused); integers are accepted where seconds are
expected and stored as ``float``. Cross-field rules (``sip.t2 >= sip.t1``, no default password beyond loopback)
run only when the fields they read are valid on their own.

Environment overrides (containers)
----------------------------------
Every key can be set by an environment variable ``GB28181_<TABLE>_<KEY>`` in upper case (``GB28181_SIP_PORT``
for ``sip.port``, ``GB28181_DEVICES_KEEPALIVE_INTERVAL`` for ``devices.keepalive_interval``). They are applied
by :func:`load_config` on top of the file (or of the defaults) and validated exactly like it; an error names
both the key and the variable::

    sip.port (from GB28181_SIP_PORT) = 70000: expected an integer 0..65535

Value syntax: a key whose value is a string (``sip.listen``, ``sip.password``, ``http.token``, ``log.level``...)
takes the variable's text as it is (``GB28181_SIP_PASSWORD=12345678`` is the string ``'12345678'``), unless the
text is a quoted TOML string (``"..."`` or ``'...'``), which is unquoted. Every other key takes a TOML value:
``5070``, ``0.5``, ``true``, ``["34020000001320000001"]``, ``{ 34020000001320000001 = "pw" }``; text that is not
one stays a string and so fails validation with the key's expectation. A ``GB28181_*`` variable that names no
key is an error naming the nearest one (``GB28181_SIP_PROT: unknown ... did you mean GB28181_SIP_PORT``).

Reload: the keys in :data:`RELOADABLE` (``sip.password``, ``devices.allow``, ``devices.passwords``,
``devices.alarm_rate``, ``devices.alarm_retention``, ``log.level``) may change while running (``SIGHUP``, see
``gateway.main``); :meth:`Config.changed_keys` lists what differs, :meth:`Config.with_reloadable` applies only
those keys.

To add a table: write a section class (frozen, slots, ``_Section`` base, ``TABLE`` name, fields made with
``_field``, a docstring under every field) and add a field for it to :class:`Config`. To add a key: add a field.
``conf/gateway.toml`` must list the new key with its default; ``tests/test_config.py`` checks that it does.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "DEFAULT_PASSWORD",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "DevicesConfig",
    "ENV_PREFIX",
    "RELOADABLE",
    "HttpConfig",
    "MediaConfig",
    "LogConfig",
    "RtspConfig",
    "SipConfig",
    "WebrtcConfig",
    "describe_source",
    "env_names",
    "env_variable",
    "is_loopback",
    "load_config",
    "resolve_state_dir",
]

DEFAULT_PASSWORD = "12345678"
"""The example device password printed in every device manual: refused when listening beyond loopback."""


class ConfigError(Exception):
    """The configuration is invalid. ``errors`` holds one line per problem, each naming the dotted key."""

    def __init__(self, errors: str | Iterable[str]) -> None:
        self.errors: tuple[str, ...] = (errors,) if isinstance(errors, str) else tuple(errors)
        super().__init__("\n".join(self.errors))


# --- rules ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    """What a field accepts: ``accept(value)`` decides, ``expected`` tells the operator, ``convert`` normalizes."""

    expected: str
    accept: Callable[[Any], bool]
    convert: Callable[[Any], Any] | None = None


def _integer(lo: int, hi: int) -> _Rule:
    # type() rather than isinstance(): bool is a subclass of int, and `port = true` is a mistake.
    return _Rule(f"an integer {lo}..{hi}", lambda v: type(v) is int and lo <= v <= hi)


def _seconds(hi: float) -> _Rule:
    # `0 < v` also refuses nan; the upper bound refuses inf.
    return _Rule(
        f"a number of seconds > 0 and <= {hi:g}",
        lambda v: type(v) in (int, float) and 0 < v <= hi,
        float,
    )


def _one_of(*choices: str) -> _Rule:
    return _Rule("one of " + ", ".join(repr(c) for c in choices), lambda v: type(v) is str and v in choices)


def _digits(n: int, example: str) -> _Rule:
    pattern = re.compile(f"[0-9]{{{n}}}")  # ASCII digits only: str.isdigit() would accept '²' and '٣'
    return _Rule(
        f"a string of exactly {n} digits, e.g. {example!r}",
        lambda v: type(v) is str and pattern.fullmatch(v) is not None,
    )


def _is_ip_address(value: Any) -> bool:
    if type(value) is not str:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


_IP_ADDRESS = _Rule("an IP address such as '127.0.0.1', '0.0.0.0' or '::1'", _is_ip_address)
_NON_EMPTY_STRING = _Rule("a non-empty string", lambda v: type(v) is str and v != "")
_PATH_OR_EMPTY = _Rule(
    "a directory path string ('' for the default)", lambda v: type(v) is str and "\0" not in v
)


def _field(default: Any, rule: _Rule, *, secret: bool = False) -> Any:
    """A dataclass field validated by ``rule``; ``secret`` fields stay out of :meth:`Config.summary`."""
    return field(default=default, repr=not secret, metadata={"rule": rule, "secret": secret})


def _shown(value: Any, secret: bool) -> str:
    """``repr(value)`` for error messages; a secret shows only its type (unless empty or the public default)."""
    if secret and value not in ("", DEFAULT_PASSWORD):
        return f"<hidden {type(value).__name__}>"
    return repr(value)


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and their IPv4-mapped forms (``::ffff:127.0.0.1``)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


# --- sections ---------------------------------------------------------------------------------------------


class _Section:
    """Base of the table classes: validates every field in ``__post_init__`` and raises all errors at once."""

    __slots__ = ()
    TABLE: ClassVar[str]

    def __post_init__(self) -> None:
        errors: list[str] = []
        bad: set[str] = set()
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            rule: _Rule = f.metadata["rule"]
            value = getattr(self, f.name)
            if not rule.accept(value):
                errors.append(
                    f"{self.TABLE}.{f.name} = {_shown(value, f.metadata['secret'])}: expected {rule.expected}"
                )
                bad.add(f.name)
            elif rule.convert is not None:
                object.__setattr__(self, f.name, rule.convert(value))
        errors.extend(self._cross_check(bad))
        if errors:
            raise ConfigError(errors)

    def _cross_check(self, bad: set[str]) -> list[str]:
        """Rules spanning several fields; ``bad`` names the fields that already failed on their own."""
        return []


@dataclass(frozen=True, slots=True)
class SipConfig(_Section):
    """``[sip]``: the SIP listeners (UDP and TCP on one port), our identity, digest auth and RFC 3261 timers."""

    TABLE: ClassVar[str] = "sip"

    listen: str = _field("127.0.0.1", _IP_ADDRESS)
    """Local IP address the SIP UDP and TCP listeners bind to; '0.0.0.0' or '::' for every interface."""

    port: int = _field(5060, _integer(0, 65535))
    """SIP port for both UDP and TCP; 0 picks a free ephemeral port (tests)."""

    platform_id: str = _field("34020000002000000001", _digits(20, "34020000002000000001"))
    """Our 20-digit GB/T 28181 platform ID (type code 200), the one devices are configured to register to."""

    domain: str = _field("3402000000", _digits(10, "3402000000"))
    """Our 10-digit SIP domain, normally the first 10 digits of ``platform_id``; also the digest realm."""

    password: str = _field(DEFAULT_PASSWORD, _NON_EMPTY_STRING, secret=True)
    """Digest password devices register with; the default is refused unless ``listen`` is loopback."""

    t1: float = _field(0.5, _seconds(60))
    """RFC 3261 T1, the round-trip time estimate, in seconds (retransmission timers start here)."""

    t2: float = _field(4.0, _seconds(600))
    """RFC 3261 T2, the cap on non-INVITE request and INVITE response retransmit intervals, seconds; >= t1."""

    t4: float = _field(5.0, _seconds(600))
    """RFC 3261 T4, how long a message may remain in the network, in seconds (timers I, K)."""

    max_message_size: int = _field(65536, _integer(1024, 16 * 1024 * 1024))
    """Largest SIP message accepted, in bytes (headers plus body); larger ones are refused."""

    udp_queue_size: int = _field(2048, _integer(1, 1_000_000))
    """Received UDP datagrams waiting to be processed; when full, new ones are dropped and counted."""

    source_rate_limit: int = _field(500, _integer(0, 1_000_000))
    """UDP messages per second accepted from one source IP (bursts of twice that); 0 disables the limit."""

    max_transactions: int = _field(10000, _integer(1, 1_000_000))
    """Live SIP transactions at most; above it new requests are answered 503 with Retry-After."""

    retry_after: int = _field(5, _integer(1, 3600))
    """Seconds sent in the Retry-After header of a 503 when overloaded."""

    tcp_max_connections: int = _field(1024, _integer(1, 100_000))
    """Open SIP TCP connections at most; further connections are closed at once."""

    tcp_idle_timeout: float = _field(120.0, _seconds(86400))
    """Seconds a SIP TCP connection may stay silent before we close it."""

    def _cross_check(self, bad: set[str]) -> list[str]:
        errors = []
        if not bad & {"t1", "t2"} and self.t2 < self.t1:
            errors.append(f"sip.t2 = {self.t2!r}: expected a number of seconds >= sip.t1 ({self.t1!r})")
        if (
            not bad & {"listen", "password"}
            and self.password == DEFAULT_PASSWORD
            and not is_loopback(self.listen)
        ):
            errors.append(
                f"sip.password = {self.password!r}: expected a password of your own: the default is printed in"
                f" every device manual, and sip.listen = {self.listen!r} is not a loopback address, so anyone"
                " who can reach the port could register as a device"
            )
        return errors


_DEVICE_ID = re.compile(r"[0-9]{20}")


def _id_list() -> _Rule:
    return _Rule(
        "a list of 20-digit device IDs, e.g. ['34020000001320000001'] ([] allows every device)",
        lambda v: type(v) in (list, tuple) and all(type(x) is str and _DEVICE_ID.fullmatch(x) for x in v),
        tuple,
    )


def _password_map() -> _Rule:
    def pairs(v: Any) -> list[Any]:
        return list(v.items()) if isinstance(v, Mapping) else list(v) if type(v) is tuple else [None]

    return _Rule(
        "a table of 20-digit device ID = \"non-empty password\"",
        lambda v: all(
            type(kv) is tuple and len(kv) == 2 and type(kv[0]) is str and _DEVICE_ID.fullmatch(kv[0])
            and type(kv[1]) is str and kv[1] != ""
            for kv in pairs(v)
        ),
        lambda v: tuple(sorted(pairs(v))),
    )


@dataclass(frozen=True, slots=True)
class DevicesConfig(_Section):
    """``[devices]``: who may register, keepalive and expiry policy, queries sent after registration."""

    TABLE: ClassVar[str] = "devices"

    allow: tuple[str, ...] = _field((), _id_list())
    """Device IDs allowed to register; empty allows every device that knows the password."""

    passwords: tuple[tuple[str, str], ...] = _field((), _password_map(), secret=True)
    """Per-device digest passwords (a table: device ID = password); other devices use ``sip.password``."""

    keepalive_interval: float = _field(60.0, _seconds(3600))
    """Seconds between a device's keepalives (60 is the devices' usual default)."""

    keepalive_count: int = _field(3, _integer(1, 100))
    """Missed keepalives before a device is marked offline: offline after interval x count of silence."""

    register_expires_min: int = _field(60, _integer(1, 86400))
    """Shortest registration granted, seconds; a shorter Expires from a device is raised to this."""

    register_expires_max: int = _field(86400, _integer(1, 7 * 86400))
    """Longest registration granted, seconds; a longer Expires from a device is lowered to this."""

    register_rate: int = _field(200, _integer(1, 1_000_000))
    """New registrations (unauthenticated REGISTERs) accepted per second; beyond it 503 with Retry-After."""

    auth_failure_limit: int = _field(5, _integer(1, 10_000))
    """Failed digest answers from one source IP within ``auth_failure_window`` before it is refused."""

    auth_failure_window: float = _field(60.0, _seconds(86400))
    """Seconds over which failed digest answers are counted, and for which a source over the limit is refused."""

    nonce_lifetime: float = _field(300.0, _seconds(86400))
    """Seconds a digest nonce stays valid; an answer with an older one gets a fresh challenge (stale=TRUE)."""

    query_concurrency: int = _field(16, _integer(1, 10_000))
    """Devices queried (DeviceInfo, Catalog, DeviceStatus) at the same time after registering."""

    query_timeout: float = _field(10.0, _seconds(3600))
    """Seconds to wait for a DeviceInfo/DeviceStatus answer."""

    catalog_timeout: float = _field(30.0, _seconds(3600))
    """Seconds to wait for all parts of a Catalog answer; after it the catalog is kept as partial."""

    catalog_subscribe_expires: int = _field(3600, _integer(0, 86400))
    """Seconds of catalog subscription (``SUBSCRIBE`` ``Event: Catalog``) asked of a device after its catalog
    sync, refreshed at 80% of what it grants; 0 disables catalog subscriptions."""

    alarm_subscribe_expires: int = _field(3600, _integer(0, 86400))
    """Seconds of alarm subscription (``SUBSCRIBE`` ``Event: Alarm``, priorities 1..4, every method) asked of a
    device after its sync, refreshed at 80% of what it grants; 0 disables alarm subscriptions."""

    position_subscribe_expires: int = _field(3600, _integer(0, 86400))
    """Seconds of mobile position subscription (``SUBSCRIBE`` ``Event: MobilePosition``) asked of a device after
    its sync; 0 disables them. Devices without positions refuse it (then not asked again until they register)."""

    position_interval: int = _field(5, _integer(1, 3600))
    """Seconds between position reports asked in the MobilePosition subscription (``<Interval>``)."""

    subscribe_retry: float = _field(60.0, _seconds(86400))
    """Seconds before a subscription that failed (no answer, refused other than "not supported") is asked again
    while the device stays online."""

    alarm_retention: int = _field(100_000, _integer(1, 100_000_000))
    """Alarms kept in the store (rows); beyond it the oldest are deleted."""

    alarm_rate: float = _field(1.0, _Rule("a number > 0 and <= 10000", lambda v: type(v) in (int, float) and 0 < v <= 1e4, float))
    """Alarms accepted per device per second (a token bucket of max(1, rate)): the first of a burst always
    passes, the rest beyond the rate are dropped and counted."""

    def password_for(self, device_id: str, default: str) -> str:
        """The digest password of ``device_id``: its own if configured, else ``default``."""
        for key, password in self.passwords:
            if key == device_id:
                return password
        return default

    def _cross_check(self, bad: set[str]) -> list[str]:
        errors = []
        if not bad & {"register_expires_min", "register_expires_max"} and (
            self.register_expires_max < self.register_expires_min
        ):
            errors.append(
                f"devices.register_expires_max = {self.register_expires_max!r}: expected a number of seconds"
                f" >= devices.register_expires_min ({self.register_expires_min!r})"
            )
        return errors


_DIALECTS = ("streamnumber", "stream", "streamprofile", "streamMode")
_TRANSPORTS = ("udp", "udp-single", "tcp-passive", "tcp-active")


def _dialect_map() -> _Rule:
    def pairs(v: Any) -> list[Any]:
        return list(v.items()) if isinstance(v, Mapping) else list(v) if type(v) is tuple else [None]

    return _Rule(
        "a table of 20-digit device ID = one of " + ", ".join(repr(d) for d in _DIALECTS),
        lambda v: all(
            type(kv) is tuple and len(kv) == 2 and type(kv[0]) is str and _DEVICE_ID.fullmatch(kv[0])
            and kv[1] in _DIALECTS
            for kv in pairs(v)
        ),
        lambda v: tuple(sorted(pairs(v))),
    )


_IP_OR_EMPTY = _Rule("an IP address, or '' to pick the address on the route toward each device",
                     lambda v: v == "" or _is_ip_address(v))


@dataclass(frozen=True, slots=True)
class MediaConfig(_Section):
    """``[media]``: live streams: where RTP arrives, which transport is asked for, timeouts and linger."""

    TABLE: ClassVar[str] = "media"

    media_ip: str = _field("", _IP_OR_EMPTY)
    """IP address put in our SDP offers; '' picks the local address on the route toward each device."""

    rtp_port_min: int = _field(30000, _integer(1024, 65535))
    """First RTP port of the range (one port per stream; single-port mode uses this one)."""

    rtp_port_max: int = _field(30999, _integer(1024, 65535))
    """Last RTP port of the range; >= rtp_port_min."""

    transport: str = _field("udp", _one_of(*_TRANSPORTS))
    """Media transport asked of devices: 'udp' (a port per stream), 'udp-single' (one port, by SSRC),
    'tcp-passive' (we listen, the device connects) or 'tcp-active' (we connect to the device)."""

    invite_timeout: float = _field(8.0, _seconds(120))
    """Seconds to wait for a device's answer to INVITE before CANCEL."""

    no_media_timeout: float = _field(10.0, _seconds(600))
    """Seconds after the answer (or after the last frame) without a frame before the stream fails."""

    linger: float = _field(20.0, _seconds(3600))
    """Seconds a stream keeps running after its last consumer leaves, before BYE."""

    substream_dialect: str = _field("streamnumber", _one_of(*_DIALECTS))
    """How the sub-stream is asked for in the offer: 'streamnumber' (2022), 'stream', 'streamprofile' (Dahua),
    'streamMode' (Mercury/TP-Link)."""

    dialects: tuple[tuple[str, str], ...] = _field((), _dialect_map())
    """Per-device sub-stream dialect (a table: device ID = dialect), overriding ``substream_dialect``."""

    def dialect_for(self, device_id: str) -> str:
        for key, dialect in self.dialects:
            if key == device_id:
                return dialect
        return self.substream_dialect

    def _cross_check(self, bad: set[str]) -> list[str]:
        if not bad & {"rtp_port_min", "rtp_port_max"} and self.rtp_port_max < self.rtp_port_min:
            return [f"media.rtp_port_max = {self.rtp_port_max!r}: expected a port >= media.rtp_port_min"
                    f" ({self.rtp_port_min!r})"]
        return []


@dataclass(frozen=True, slots=True)
class RtspConfig(_Section):
    """``[rtsp]``: the RTSP server viewers play live streams from (``rtsp://host:port/<device>/<channel>``)."""

    TABLE: ClassVar[str] = "rtsp"

    listen: str = _field("127.0.0.1", _IP_ADDRESS)
    """Local IP address the RTSP TCP listener binds to; '0.0.0.0' or '::' for every interface."""

    port: int = _field(8554, _integer(0, 65535))
    """RTSP TCP port; 0 picks a free ephemeral port (tests)."""

    session_timeout: float = _field(60.0, _seconds(3600))
    """Seconds an RTSP session may stay silent (no request, no RTCP) before it is torn down."""

    udp_port: int = _field(0, _Rule("0 or an even integer 1024..65534", lambda v: type(v) is int and (
        v == 0 or (1024 <= v <= 65534 and v % 2 == 0))))
    """Even UDP port RTP to UDP viewers is sent from (RTCP uses the next one); 0 picks a free pair at start."""

    udp_pace_rate: float = _field(20.0, _Rule("a number of Mbit/s > 0 and <= 10000",
                                              lambda v: type(v) in (int, float) and 0 < v <= 10000, float))
    """Mbit/s (bursts of 64 KiB) at which the cached GOP a UDP viewer starts on is sent: spread out, not dumped."""

    max_connections: int = _field(1024, _integer(1, 100_000))
    """Open RTSP connections at most; beyond it requests are answered 503 and the connection is closed."""

    auth: str = _field("auto", _one_of("auto", "none", "digest", "basic"))
    """Viewer authentication: 'digest', 'basic', 'none', or 'auto': none on a loopback listen, else digest."""

    username: str = _field("viewer", _Rule("a non-empty string without ':'",
                                           lambda v: type(v) is str and v != "" and ":" not in v))
    """User name viewers authenticate with when auth is on."""

    password: str = _field("", _Rule("a string", lambda v: type(v) is str), secret=True)
    """Viewer password; must be set when auth is on (auth 'auto' turns it on beyond loopback)."""

    @property
    def effective_auth(self) -> str:
        """'none', 'digest' or 'basic': what ``auth`` means for this ``listen`` address."""
        if self.auth != "auto":
            return self.auth
        return "none" if is_loopback(self.listen) else "digest"

    def _cross_check(self, bad: set[str]) -> list[str]:
        if bad & {"listen", "auth", "password"} or self.effective_auth == "none" or self.password:
            return []
        why = "rtsp.auth = 'auto' and rtsp.listen is not a loopback address" if self.auth == "auto" else \
            f"rtsp.auth = {self.auth!r}"
        return [f"rtsp.password = '': expected a viewer password, because {why} (or set rtsp.auth = 'none' to"
                " let anyone who can reach the port watch)"]


_TOKEN_RULE = _Rule("'' or a token of 16 to 256 visible ASCII characters (no spaces)",
                    lambda v: type(v) is str and (v == "" or (16 <= len(v) <= 256 and v.isascii()
                                                              and v.isprintable() and " " not in v)))


@dataclass(frozen=True, slots=True)
class HttpConfig(_Section):
    """``[http]``: the HTTP server of the REST API, WHEP, the web page, ``/metrics`` and the health probes."""

    TABLE: ClassVar[str] = "http"

    listen: str = _field("127.0.0.1", _IP_ADDRESS)
    """Local IP address the HTTP listener binds to; '0.0.0.0' or '::' for every interface."""

    port: int = _field(8080, _integer(0, 65535))
    """HTTP port; 0 picks a free ephemeral port (tests)."""

    token: str = _field("", _TOKEN_RULE, secret=True)
    """Bearer token for /api/v1/* and /whep/* (all the web page's data; its static shell is public); required
    when ``listen`` is not loopback."""

    metrics_token: str = _field("", _TOKEN_RULE, secret=True)
    """Bearer token for /metrics; '' leaves /metrics open (Prometheus sends it with ``authorization``)."""

    max_body_size: int = _field(1024 * 1024, _integer(1024, 64 * 1024 * 1024))
    """Largest request body accepted, in bytes (JSON, SDP offers); larger ones get 413."""

    def _cross_check(self, bad: set[str]) -> list[str]:
        if bad & {"listen", "token"} or self.token or is_loopback(self.listen):
            return []
        return [f"http.token = '': expected a bearer token of your own (16+ characters), because http.listen ="
                f" {self.listen!r} is not a loopback address and the API can start streams and change devices"]


def _is_host_address(value: Any) -> bool:
    if not _is_ip_address(value):
        return False
    ip = ipaddress.ip_address(value)
    return not (ip.is_unspecified or ip.is_multicast)


_ICE_ADDRESSES = _Rule(
    "a list of unicast IP addresses, e.g. ['192.0.2.10'] ([] lets aioice find this host's addresses)",
    lambda v: type(v) in (list, tuple) and all(_is_host_address(x) for x in v) and len(set(v)) == len(v),
    tuple,
)
_UDP_PORT = _Rule("0 (any free port) or an integer 1024..65535",
                  lambda v: type(v) is int and (v == 0 or 1024 <= v <= 65535))


@dataclass(frozen=True, slots=True)
class WebrtcConfig(_Section):
    """``[webrtc]``: WHEP viewers (``POST /whep/<device_id>/<channel_id>``): ICE host candidates, their UDP ports,
    and how many sessions and transcodes may run."""

    TABLE: ClassVar[str] = "webrtc"

    ice_addresses: tuple[str, ...] = _field((), _ICE_ADDRESSES)
    """IP addresses offered to browsers as ICE host candidates; [] offers every interface's address but 127.0.0.1
    (which only a host without another is left with). An address not on this host (a 1:1 NAT's public IP) is
    announced as it is and its socket binds every interface."""

    udp_port_min: int = _field(40000, _UDP_PORT)
    """First UDP port of WebRTC media (one per session and address); 0 with udp_port_max 0: any free port."""

    udp_port_max: int = _field(40999, _UDP_PORT)
    """Last UDP port of WebRTC media; >= udp_port_min. Open the range (UDP) in the firewall."""

    max_sessions: int = _field(100, _integer(1, 100_000))
    """WHEP sessions at most (being set up or playing); beyond it POST /whep is answered 503."""

    max_transcodes: int = _field(2, _integer(0, 1000))
    """Streams transcoded to H.264 at once (H.265, H.264 with B-frames; one per stream, shared by its viewers);
    beyond it such a POST /whep is answered 503. 0 disables transcoding."""

    def _cross_check(self, bad: set[str]) -> list[str]:
        if bad & {"udp_port_min", "udp_port_max"}:
            return []
        lo, hi = self.udp_port_min, self.udp_port_max
        if (lo == 0) != (hi == 0):
            return [f"webrtc.udp_port_max = {hi!r}: expected 0 together with webrtc.udp_port_min = 0 (any free"
                    f" port), or both set to a range, not one of them (webrtc.udp_port_min = {lo!r})"]
        if hi < lo:
            return [f"webrtc.udp_port_max = {hi!r}: expected a port >= webrtc.udp_port_min ({lo!r})"]
        return []


@dataclass(frozen=True, slots=True)
class LogConfig(_Section):
    """``[log]``: what is logged and how it is rendered."""

    TABLE: ClassVar[str] = "log"

    level: str = _field("info", _one_of("debug", "info", "warning", "error"))
    """Least severe level written: 'debug', 'info', 'warning' or 'error'."""

    format: str = _field("auto", _one_of("auto", "json", "console"))
    """'json' (one JSON object per line), 'console' (human-readable), or 'auto': console on a TTY, else JSON."""


@dataclass(frozen=True, slots=True)
class DaemonConfig(_Section):
    """``[daemon]``: process lifecycle and where state lives."""

    TABLE: ClassVar[str] = "daemon"

    state_dir: str = _field("", _PATH_OR_EMPTY)
    """Directory for state (SQLite); '' means $STATE_DIRECTORY (set by systemd) if set, else ./var/."""

    graceful_timeout: float = _field(10.0, _seconds(3600))
    """Seconds a clean shutdown may take (after SIGTERM/SIGINT) before what is left is cancelled."""


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration: one attribute per TOML table."""

    sip: SipConfig = field(default_factory=SipConfig)
    """``[sip]``: SIP listeners, identity, digest auth and timers."""

    devices: DevicesConfig = field(default_factory=DevicesConfig)
    """``[devices]``: registration, keepalive and query policy."""

    media: MediaConfig = field(default_factory=MediaConfig)
    """``[media]``: live streams (RTP ports, transport, timeouts, linger)."""

    rtsp: RtspConfig = field(default_factory=RtspConfig)
    """``[rtsp]``: the RTSP server (listen address, port, session timeout)."""

    http: HttpConfig = field(default_factory=HttpConfig)
    """``[http]``: REST API, WHEP, web page, metrics and health probes."""

    webrtc: WebrtcConfig = field(default_factory=WebrtcConfig)
    """``[webrtc]``: WHEP viewers: ICE addresses and ports, session and transcode limits."""

    log: LogConfig = field(default_factory=LogConfig)
    """``[log]``: log level and format."""

    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    """``[daemon]``: state directory and shutdown deadline."""

    @classmethod
    def sections(cls) -> dict[str, type[_Section]]:
        """Table name → section class, in declaration order."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Config:
        """Build from parsed TOML. Raises :class:`ConfigError` listing every problem in every table."""
        sections = cls.sections()
        errors: list[str] = []
        built: dict[str, _Section] = {}
        for table, values in data.items():
            if table not in sections:
                close = difflib.get_close_matches(table, list(sections), n=1)
                hint = f" (did you mean [{close[0]}]?)" if close else ""
                errors.append(
                    f"{table} = {values!r}: unknown table{hint}, expected one of "
                    + ", ".join(f"[{name}]" for name in sections)
                )
                continue
            if not isinstance(values, Mapping):
                errors.append(f"{table} = {values!r}: expected a table [{table}]")
                continue
            section_cls = sections[table]
            section_fields = {f.name: f for f in dataclasses.fields(section_cls)}  # type: ignore[arg-type]
            kwargs = {}
            for key, value in values.items():
                if key in section_fields:
                    kwargs[key] = value
                    continue
                # A misspelt secret (`pasword = "..."`) is still a secret: hide it like the real key.
                close = difflib.get_close_matches(key, list(section_fields), n=1)
                secret = bool(close) and section_fields[close[0]].metadata["secret"]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                errors.append(
                    f"{table}.{key} = {_shown(value, secret)}: unknown key{hint}, expected one of "
                    + ", ".join(section_fields)
                )
            try:
                built[table] = section_cls(**kwargs)
            except ConfigError as exc:
                errors.extend(exc.errors)
        if errors:
            raise ConfigError(errors)
        return cls(**built)  # type: ignore[arg-type]

    def changed_keys(self, other: Config) -> list[str]:
        """Dotted keys (``sip.port``) whose values differ between ``self`` and ``other``, in declaration order."""
        changed = []
        for table in self.sections():
            mine, theirs = getattr(self, table), getattr(other, table)
            changed += [f"{table}.{f.name}" for f in dataclasses.fields(mine)
                        if getattr(mine, f.name) != getattr(theirs, f.name)]
        return changed

    def with_reloadable(self, new: Config) -> Config:
        """``self`` with the :data:`RELOADABLE` keys taken from ``new`` and every other key kept.

        The result is validated like any configuration: a reloadable value that is valid in ``new`` but not
        beside the running keys (the default ``sip.password`` while the running ``sip.listen`` is not loopback)
        raises :class:`ConfigError`.
        """
        sections: dict[str, Any] = {}
        errors: list[str] = []
        for table in self.sections():
            keys = {key.partition(".")[2] for key in RELOADABLE if key.startswith(table + ".")}
            section = getattr(self, table)
            try:
                sections[table] = dataclasses.replace(
                    section, **{key: getattr(getattr(new, table), key) for key in keys})
            except ConfigError as exc:
                errors.extend(exc.errors)
        if errors:
            raise ConfigError(errors)
        return Config(**sections)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Every setting except secrets, by table, for the startup log line."""
        summary: dict[str, dict[str, Any]] = {}
        for table in self.sections():
            section = getattr(self, table)
            summary[table] = {
                f.name: getattr(section, f.name)
                for f in dataclasses.fields(section)
                if not f.metadata["secret"]
            }
        return summary


RELOADABLE = frozenset({"sip.password", "devices.allow", "devices.passwords", "devices.alarm_rate",
                        "devices.alarm_retention", "log.level"})
"""Keys a running gateway takes from a reloaded configuration (SIGHUP); any other change needs a restart."""

ENV_PREFIX = "GB28181_"
"""Environment variables ``GB28181_<TABLE>_<KEY>`` override configuration keys (see the module docstring)."""


def env_variable(table: str, key: str) -> str:
    """The environment variable that overrides ``table.key``: ``GB28181_SIP_PORT`` for ``sip.port``."""
    return f"{ENV_PREFIX}{table.upper()}_{key.upper()}"


def _env_keys() -> dict[str, tuple[str, dataclasses.Field[Any]]]:
    """Every override variable → (table, field), in declaration order."""
    return {
        env_variable(table, f.name): (table, f)
        for table, section in Config.sections().items()
        for f in dataclasses.fields(section)  # type: ignore[arg-type]
    }


def env_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """The ``GB28181_*`` variables set in ``environ`` (default ``os.environ``), sorted: what overrides apply."""
    env = os.environ if environ is None else environ
    return sorted(name for name in env if name.startswith(ENV_PREFIX))


def describe_source(path: Path | None, environ: Mapping[str, str] | None = None) -> str:
    """Where the configuration comes from, for messages: ``gw.toml + environment GB28181_SIP_PORT``."""
    source = str(path) if path is not None else "built-in defaults"
    names = env_names(environ)
    return f"{source} + environment {', '.join(names)}" if names else source


def _toml_value(text: str) -> tuple[bool, Any]:
    """(True, value) if ``text`` is exactly one TOML value, else (False, None)."""
    try:
        doc = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return False, None
    return (True, doc["v"]) if doc.keys() == {"v"} else (False, None)  # no smuggled "\nother = 1"


def _env_value(text: str, f: dataclasses.Field[Any]) -> Any:
    """The value of an override: verbatim (or an unquoted TOML string) for string keys, else a TOML value."""
    if type(f.default) is str:
        if text[:1] in ("'", '"'):
            ok, value = _toml_value(text)
            if ok and type(value) is str:
                return value
        return text
    ok, value = _toml_value(text)
    return value if ok else text


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Put the ``GB28181_*`` overrides of ``environ`` into ``data`` (parsed TOML, changed in place).

    Returns (dotted key → variable name) for the overrides applied, and the errors (unknown variables).
    """
    known = _env_keys()
    applied: dict[str, str] = {}
    errors: list[str] = []
    for name in env_names(environ):
        if name not in known:
            # Compared without the common prefix, which would make every name look close.
            close = difflib.get_close_matches(name[len(ENV_PREFIX):].upper(), [k[len(ENV_PREFIX):] for k in known], n=1)
            near = ENV_PREFIX + close[0] if close else ""
            hint = f" (did you mean {near}, for {known[near][0]}.{known[near][1].name}?)" if close else ""
            errors.append(f"{name}: unknown environment variable{hint}; {ENV_PREFIX}<TABLE>_<KEY> variables set"
                          " configuration keys, e.g. GB28181_SIP_PORT for sip.port")
            continue
        table, f = known[name]
        values = data.setdefault(table, {})
        if isinstance(values, dict):  # otherwise from_mapping reports the file's table itself
            values[f.name] = _env_value(environ[name], f)
            applied[f"{table}.{f.name}"] = name
    return applied, errors


def _name_sources(errors: Iterable[str], applied: Mapping[str, str]) -> list[str]:
    """Errors with ``sip.port = `` written ``sip.port (from GB28181_SIP_PORT) = `` where the environment set it."""
    if not applied:
        return list(errors)
    pattern = re.compile(r"(?<![\w.])(" + "|".join(re.escape(k) for k in applied) + ") = ")
    return [pattern.sub(lambda m: f"{m[1]} (from {applied[m[1]]}) = ", error) for error in errors]


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate a TOML file (``None``: the built-in defaults), then the ``GB28181_*`` overrides of
    ``environ`` (default ``os.environ``). Raises :class:`ConfigError` listing every problem."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fp:
                data = tomllib.load(fp)
        except OSError as exc:
            raise ConfigError(f"cannot read {str(path)!r}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{str(path)!r} is not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{str(path)!r} is not valid UTF-8 TOML: {exc}") from None
    applied, errors = _apply_env(data, os.environ if environ is None else environ)
    try:
        config = Config.from_mapping(data)
    except ConfigError as exc:
        errors += _name_sources(exc.errors, applied)
    if errors:
        raise ConfigError(errors)
    return config


def resolve_state_dir(config: Config, environ: Mapping[str, str] | None = None) -> Path:
    """Where state lives: ``daemon.state_dir`` if set, else ``$STATE_DIRECTORY`` (systemd), else ``./var``.

    systemd sets ``STATE_DIRECTORY`` to a colon-separated list when the unit names several; the first is ours.
    Relative paths are relative to the working directory; the caller creates the directory.
    """
    if config.daemon.state_dir:
        return Path(config.daemon.state_dir)
    env = os.environ if environ is None else environ
    from_systemd = env.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(from_systemd) if from_systemd else Path("var")
