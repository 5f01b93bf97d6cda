"""Every Prometheus metric of the gateway, defined once at module level (JupyterHub's ``metrics.py``).

Names follow ``gb28181_<noun>_<verb>_<unit>``. Label values come from bounded sets (enums, SIP methods,
status codes); Call-IDs, SSRCs and peer addresses are never labels. Label values that matter for alerting
are pre-created so their series exist before the first event.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric

from . import __version__

KNOWN_METHODS = ("REGISTER", "MESSAGE", "INVITE", "ACK", "BYE", "CANCEL", "INFO", "SUBSCRIBE", "NOTIFY",
                 "OPTIONS", "PRACK", "UPDATE", "REFER")


def method_label(method: str) -> str:
    """A bounded label for a SIP method: known methods as they are, anything else ``OTHER``."""
    upper = method.upper()
    return upper if upper in KNOWN_METHODS else "OTHER"


class SipDrop(enum.Enum):
    """Why a SIP datagram or connection was dropped, refused or answered with an error by the transport."""

    MALFORMED = "malformed"          # unparseable; answered 400 when a response was possible
    TOO_LARGE = "too_large"          # beyond sip.max_message_size
    QUEUE_FULL = "queue_full"        # UDP ingress queue full
    FLOOD = "flood"                  # one source holds its whole share of the ingress queue
    RATE_LIMITED = "rate_limited"    # one source beyond sip.source_rate_limit messages per second
    OVERLOAD = "overload"            # too many transactions: answered 503 + Retry-After
    STRAY_RESPONSE = "stray_response"  # a response matching no transaction
    TCP_LIMIT = "tcp_limit"          # sip.tcp_max_connections reached: connection refused
    TCP_SLOW = "tcp_slow"            # a peer not reading its responses: connection closed
    TCP_IDLE = "tcp_idle"            # idle connection closed
    SEND_FAILED = "send_failed"      # no route or no connection for an outgoing message


BUILD_INFO = Info("gb28181_build", "Gateway build information")
BUILD_INFO.info({"version": __version__})

SIP_REQUESTS = Counter(
    "gb28181_sip_requests_total", "SIP requests by direction and method (retransmissions excluded)",
    ["direction", "method"],
)
SIP_RESPONSES = Counter(
    "gb28181_sip_responses_total", "SIP final and provisional responses by direction, method (CSeq) and status",
    ["direction", "method", "status"],
)
SIP_DROPPED = Counter(
    "gb28181_sip_dropped_total", "SIP datagrams, messages or connections dropped or refused, by reason",
    ["reason"],
)
SIP_TRANSACTION_TIMEOUTS = Counter(
    "gb28181_sip_transaction_timeouts_total", "Client transactions that got no final response, by method",
    ["method"],
)
SIP_TRANSACTIONS = Gauge("gb28181_sip_transactions", "SIP transactions currently alive")
SIP_TCP_CONNECTIONS = Gauge("gb28181_sip_tcp_connections", "SIP TCP connections currently open")
SIP_UDP_QUEUE = Gauge("gb28181_sip_udp_queue_datagrams", "Datagrams waiting in the SIP UDP ingress queue")

for _reason in SipDrop:
    SIP_DROPPED.labels(_reason.value)
for _method in KNOWN_METHODS:
    SIP_REQUESTS.labels("in", _method)
    SIP_TRANSACTION_TIMEOUTS.labels(_method)

# ---------------------------------------------------------------------------------------------- devices
REGISTRATION_RESULTS = ("ok", "challenged", "unregistered", "denied", "blocked", "bad_credentials",
                        "bad_password", "overload", "disabled")
REGISTRATIONS = Counter(
    "gb28181_registrations_total", "REGISTER requests by outcome", ["result"],
)
KEEPALIVES = Counter("gb28181_keepalives_total", "Keepalive MESSAGEs by outcome", ["result"])
DEVICE_OFFLINE = Counter(
    "gb28181_device_offline_total", "Devices that went offline, by reason", ["reason"],
)
ALARMS = Counter(
    "gb28181_alarms_total", "Alarms accepted (stored and published), by AlarmPriority and AlarmMethod",
    ["priority", "method"],
)
ALARMS_SUPPRESSED = Counter(
    "gb28181_alarms_suppressed_total", "Alarms dropped by the per-device rate limit (devices.alarm_rate)",
)
for _priority in "1234":
    for _alarm_method in "1234567":
        ALARMS.labels(_priority, _alarm_method)
# Subscriptions (gateway.subscriptions); gb28181_subscriptions{event,status} is computed at scrape time.
SUBSCRIPTION_EVENTS = ("Catalog", "Alarm", "MobilePosition")
SUBSCRIBE_RESULTS = ("ok", "refreshed", "unsupported", "refused", "timeout", "error", "ended")
SUBSCRIBE_REQUESTS = Counter(
    "gb28181_subscribe_requests_total",
    "SUBSCRIBEs sent to devices, by event and outcome (ok: new subscription, refreshed, unsupported: the device "
    "refused the event package, refused, timeout, error, ended: Expires 0 at shutdown)",
    ["event", "result"],
)
NOTIFICATIONS = Counter(
    "gb28181_notifications_total", "Event notifications accepted from devices (NOTIFY, and MESSAGE positions), "
    "by event", ["event"],
)
POSITIONS = Counter("gb28181_positions_total", "Mobile position fixes accepted from devices")
for _sub_event in SUBSCRIPTION_EVENTS:
    NOTIFICATIONS.labels(_sub_event)
    for _sub_result in SUBSCRIBE_RESULTS:
        SUBSCRIBE_REQUESTS.labels(_sub_event, _sub_result)
DEVICES_REGISTERED = Gauge("gb28181_devices_registered", "Devices with a live registration")
DEVICES_ONLINE = Gauge("gb28181_devices_online", "Devices online (registered, keepalives arriving)")
DEVICES_ONLINE_RATIO = Gauge(
    "gb28181_devices_online_ratio", "Online devices / known devices (the online rate relays watch), 0..1",
)
CHANNELS = Gauge("gb28181_channels", "Catalog items by kind", ["kind"])
CATALOG_SYNC_SECONDS = Histogram(
    "gb28181_catalog_sync_seconds", "Time from Catalog query to the last part (or timeout)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
for _result in REGISTRATION_RESULTS:
    REGISTRATIONS.labels(_result)
for _result in ("ok", "unregistered"):
    KEEPALIVES.labels(_result)
for _offline in ("keepalive_timeout", "expired", "unregistered"):
    DEVICE_OFFLINE.labels(_offline)
for _kind in ("channel", "business_group", "virtual_org"):
    CHANNELS.labels(_kind)



class _ScrapeTimeSeries:
    """Series computed when Prometheus scrapes (per-device state, channel rates): ``source`` is set by the
    running device registry (``DeviceRegistry.metric_families``); nothing is exported without one."""

    NAMES = ("gb28181_device_up", "gb28181_device_keepalive_age_seconds", "gb28181_channels_online",
             "gb28181_channels_online_ratio", "gb28181_channels_intact_ratio",
             "gb28181_ingest_bitrate_bits_per_second", "gb28181_subscriptions")

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[Metric]] | None = None
        #: The running stream manager's series (``StreamManager.metric_families``).
        self.streams: Callable[[], Iterable[Metric]] | None = None

    def describe(self) -> Iterator[Metric]:
        for name in self.NAMES:  # names only: registering must not call the source
            yield GaugeMetricFamily(name, name)

    def collect(self) -> Iterator[Metric]:
        for source in (self.source, self.streams):
            if source is not None:
                yield from source()


DEVICE_SERIES = _ScrapeTimeSeries()
REGISTRY.register(DEVICE_SERIES)

# ---------------------------------------------------------------------------------------------- streams
STREAMS_ACTIVE = Gauge("gb28181_streams_active", "Live stream sessions (camera streams being received)")
STREAM_FIRST_FRAME_SECONDS = Histogram(
    "gb28181_stream_first_frame_seconds", "From sending INVITE to the first complete frame",
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 10, 15),
)
STREAM_FAILURES = Counter("gb28181_stream_failures_total", "Streams that failed to start or broke, by reason",
                          ["reason"])
for _failure in ("offline_or_refused", "no_answer", "no_media", "refused", "other"):
    STREAM_FAILURES.labels(_failure)

# ---------------------------------------------------------------------------------------------- fan-out
GOP_CACHE_DROP_REASONS = ("max_bytes", "max_units")
GOP_CACHE_DROPPED = Counter(
    "gb28181_gop_cache_dropped_total",
    "GOPs dropped from the GOP cache because they outgrew its bounds (the cache then waits for a keyframe)",
    ["reason"],
)
FANOUT_SKIPPED_UNITS = Counter(
    "gb28181_fanout_skipped_units_total",
    "Access units consumers missed because they fell behind and skipped to the next keyframe",
)
FANOUT_SKIPS = Counter(
    "gb28181_fanout_skips_total", "Times a consumer fell behind and skipped to the next keyframe",
)
FANOUT_KEYFRAME_REQUESTS = Counter(
    "gb28181_fanout_keyframe_requests_total",
    "Keyframe requests (IFrameCmd) made because consumers waited and no keyframe was cached",
)
for _gop_reason in GOP_CACHE_DROP_REASONS:
    GOP_CACHE_DROPPED.labels(_gop_reason)

# ---------------------------------------------------------------------------------------------- egress
VIEWER_PROTOCOLS = ("rtsp", "webrtc", "cascade")
VIEWERS = Gauge("gb28181_viewers", "Viewers currently playing a stream, by protocol", ["protocol"])
RTSP_CONNECTIONS = Gauge("gb28181_rtsp_connections", "RTSP connections currently open")
RTSP_CONNECTIONS_REFUSED = Counter("gb28181_rtsp_connections_refused_total",
                                   "RTSP connections refused because rtsp.max_connections were open")
RTSP_METHODS = ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER",
                "other")
RTSP_REQUESTS = Counter("gb28181_rtsp_requests_total", "RTSP requests answered, by method and status class",
                        ["method", "status"])
RTSP_AUTH_FAILURES = Counter("gb28181_rtsp_auth_failures_total",
                             "RTSP requests refused 401 after carrying wrong or unusable credentials")
# Summed per viewer and added about once a second (see the RTP counters below).
RTSP_SENT_BYTES = Counter("gb28181_rtsp_sent_bytes_total", "RTP and RTCP bytes sent to RTSP viewers, by transport",
                          ["transport"])
RTSP_SENT_PACKETS = Counter("gb28181_rtsp_sent_packets_total", "RTP packets sent to RTSP viewers, by transport",
                            ["transport"])
RTSP_UDP_PACED_DROPS = Counter(
    "gb28181_rtsp_udp_paced_drops_total",
    "Access units UDP viewers skipped because their paced send queue was full (they resume at a keyframe)")
for _proto in VIEWER_PROTOCOLS:
    VIEWERS.labels(_proto)
for _transport in ("tcp", "udp"):
    RTSP_SENT_BYTES.labels(_transport)
    RTSP_SENT_PACKETS.labels(_transport)

# WebRTC (WHEP): viewers are counted in VIEWERS{protocol="webrtc"} while media flows to them.
WEBRTC_RESULTS = ("ok", "bad_request", "not_found", "no_answer", "no_media", "unsupported", "session_limit",
                  "transcode_limit", "failed")
WEBRTC_SESSIONS = Counter(
    "gb28181_webrtc_sessions_total",
    "WHEP offers by outcome: ok (answered 201) or why they were refused (bad SDP, unknown or offline channel, "
    "camera silent, no media, codec, limits)",
    ["result"],
)
WEBRTC_SESSION_ENDS = ("deleted", "peer_gone", "connect_timeout", "stream_ended", "gateway_stopping",
                       "not_answered")
WEBRTC_ENDED = Counter("gb28181_webrtc_sessions_ended_total", "WHEP sessions ended, by reason", ["reason"])
WEBRTC_SESSIONS_OPEN = Gauge("gb28181_webrtc_sessions_open", "WHEP sessions open (being set up or playing)")
WEBRTC_TRANSCODES = Gauge("gb28181_webrtc_transcodes",
                          "Streams being transcoded to H.264 for WebRTC viewers (H.265, H.264 with B-frames)")
WEBRTC_TRANSCODE_DROPS = Counter(
    "gb28181_webrtc_transcode_dropped_total",
    "Access units a transcode dropped: its queue was full (it resumes at a keyframe) or they did not decode",
    ["reason"],
)
WEBRTC_KEYFRAME_ANSWERS = ("cache", "encoder", "camera", "rate_limited")
WEBRTC_KEYFRAME_REQUESTS = Counter(
    "gb28181_webrtc_keyframe_requests_total",
    "PLI/FIR from WebRTC viewers, by answer: the cached GOP re-sent, a forced keyframe of the transcode, a "
    "keyframe asked of the camera, or ignored (rate limited)",
    ["answer"],
)
for _webrtc_result in WEBRTC_RESULTS:
    WEBRTC_SESSIONS.labels(_webrtc_result)
for _webrtc_end in WEBRTC_SESSION_ENDS:
    WEBRTC_ENDED.labels(_webrtc_end)
for _webrtc_drop in ("queue_full", "undecodable"):
    WEBRTC_TRANSCODE_DROPS.labels(_webrtc_drop)
for _keyframe_answer in WEBRTC_KEYFRAME_ANSWERS:
    WEBRTC_KEYFRAME_REQUESTS.labels(_keyframe_answer)

# ---------------------------------------------------------------------------------------------- media ingest
class RtpDrop(enum.Enum):
    """Why a datagram (or RTP packet over TCP) on a media port did not reach a demuxer."""

    WRONG_SOURCE = "wrong_source"  # from a host the stream does not expect (or routed to no stream)
    WRONG_SSRC = "wrong_ssrc"      # from the expected host, with an SSRC the stream does not follow
    RTCP = "rtcp"                  # RTCP on the RTP port (RFC 5761 demultiplexing): not media
    MALFORMED = "malformed"        # not a valid RTP packet
    LATE = "late"                  # arrived after the reorder buffer had given its slot up
    DUPLICATE = "duplicate"        # a sequence number already received
    STRAY = "stray"                # a far sequence jump not confirmed by its successor (RFC 3550 §A.1 probe)
    OVERFLOW = "overflow"          # a bounded ingest buffer was full (detection, TS pipe, runaway frame)


class PayloadKind(enum.Enum):
    """What an RTP stream carries, as detected from its first packets."""

    UNKNOWN = "unknown"
    PS = "ps"        # MPEG-2 program stream (GB/T 28181, PT 96)
    TS = "ts"        # MPEG-2 transport stream (RFC 2250, PT 33)
    H264 = "h264"    # raw H.264 (RFC 6184, PT 98)


class NoMediaReason(enum.Enum):
    """Why a stream shows no frames (``gateway.ingest.RtpReceiver.diagnosis``)."""

    NO_PACKETS = "no_packets"
    WRONG_SOURCE = "wrong_source"
    WRONG_SSRC = "wrong_ssrc"
    UNDECODABLE = "undecodable"


# Hot-path counts are summed per stream and added here about once a second (a prometheus_client ``inc`` costs
# about as much as parsing the packet), so these lag by up to a second.
RTP_PACKETS = Counter("gb28181_rtp_packets_total", "RTP packets accepted for a media stream (all transports)")
RTP_BYTES = Counter("gb28181_rtp_bytes_total", "Bytes of accepted RTP packets, headers included")
RTP_DROPPED = Counter("gb28181_rtp_dropped_total", "Media-port packets dropped before demuxing, by reason",
                      ["reason"])
RTP_LOST = Counter("gb28181_rtp_lost_total", "RTP sequence numbers given up as lost by the reorder buffers")
RTP_REORDERED = Counter("gb28181_rtp_reordered_total", "RTP packets that arrived out of order, in time")
INGEST_FRAMES = Counter("gb28181_ingest_frames_total", "Access units demuxed from RTP streams, by payload kind",
                        ["payload"])
INGEST_NO_MEDIA = Counter("gb28181_ingest_no_media_total", "Streams given up for lack of media, by diagnosis",
                          ["reason"])
RTP_PORTS_IN_USE = Gauge("gb28181_rtp_ports_in_use", "Media ports currently held by streams")
RTP_PORTS_EXHAUSTED = Counter("gb28181_rtp_ports_exhausted_total", "Port allocations refused: range exhausted")

for _drop in RtpDrop:
    RTP_DROPPED.labels(_drop.value)
for _payload in PayloadKind:
    if _payload is not PayloadKind.UNKNOWN:
        INGEST_FRAMES.labels(_payload.value)
for _why in NoMediaReason:
    INGEST_NO_MEDIA.labels(_why.value)

# ---------------------------------------------------------------------------------------------- device control
# Requests of the control routes (gateway.control), counted once each by ``ControlApi``. ``command`` is the PTZ
# action, the device command, or the query/config name: only from CONTROL_COMMANDS (a request whose command is not
# one of these, e.g. an unknown action, is not counted), so the label stays bounded.
CONTROL_PTZ_ACTIONS = ("move", "stop", "focus", "iris", "preset_set", "preset_call", "preset_delete", "cruise_add",
                       "cruise_delete", "cruise_speed", "cruise_dwell", "cruise_start", "scan_start", "scan_left",
                       "scan_right", "scan_speed", "aux")
CONTROL_DEVICE_COMMANDS = ("reboot", "record_start", "record_stop", "guard_set", "guard_reset", "alarm_reset",
                           "home_position", "drag_zoom_in", "drag_zoom_out")
CONTROL_COMMANDS = (*CONTROL_PTZ_ACTIONS, *CONTROL_DEVICE_COMMANDS, "preset_query", "device_config",
                    "config_download")
# ok: the device's Response arrived (and said OK); accepted: 200 OK to a command that gets no Response; refused:
# the device's SIP error response; timeout: no SIP answer, no Response, or a PresetQuery answer still incomplete
# at devices.query_timeout; error: Result ERROR, an unreadable answer or a gateway fault; bad_request: arguments
# refused (400); offline: device offline (409); unknown: unknown device or channel (404).
CONTROL_RESULTS = ("ok", "accepted", "refused", "timeout", "error", "bad_request", "offline", "unknown")
CONTROL_REQUESTS = Counter(
    "gb28181_control_requests_total", "Device control requests (PTZ, device commands, queries, config) by outcome",
    ["command", "result"],
)
CONTROL_DURATION = Histogram(
    "gb28181_control_duration_seconds",
    "Time to answer a control request: to the device's 200 OK, or to its (last) Response",
    ["command"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
for _command in CONTROL_COMMANDS:
    for _control_failure in ("refused", "timeout", "error"):  # what alerts watch: present before the first one
        CONTROL_REQUESTS.labels(_command, _control_failure)
