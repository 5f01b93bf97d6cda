"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json`` (``tests/test_api.py`` checks that every
route of ``gateway.api`` is described and every described path is routed)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/responses/Error"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _ERROR for c in codes}


_DEVICE_ID = {"name": "device_id", "in": "path", "required": True,
              "schema": {"type": "string", "pattern": "^[0-9]{20}$"}}
_CHANNEL_ID = {"name": "channel_id", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[0-9]{20}$"}}
_PAGE = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000,
                                                       "default": 1000}},
         {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}}]
_ONLINE = {"name": "online", "in": "query", "schema": {"type": "boolean"}}


def openapi_document(version: str) -> dict[str, Any]:
    """The whole document (a fresh dict each call)."""
    query = {
        "parameters": [_DEVICE_ID],
        "responses": {"200": _json(_ref("QueryResult")), **_errors(400, 401, 404, 409, 502, 504)},
    }
    control_errors = _errors(400, 401, 404, 409, 502, 504)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gb28181-gateway",
            "version": version,
            "description": "GB/T 28181 media gateway: devices, channels and live streams. Errors are JSON "
                           "{error: {status, reason}}. With http.token set, /api/v1/* needs "
                           "'Authorization: Bearer <token>'.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": _json(_ref("Error"), "Error with a reason")},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["status", "reason"],
                    "properties": {"status": {"type": "integer"}, "reason": {"type": "string"}}}}},
                "Device": {"type": "object", "properties": {
                    "device_id": {"type": "string"}, "name": {"type": "string"},
                    "manufacturer": {"type": "string"}, "model": {"type": "string"},
                    "firmware": {"type": "string"}, "online": {"type": "boolean"},
                    "registered": {"type": "boolean"}, "transport": {"type": "string", "enum": ["UDP", "TCP"]},
                    "host": {"type": "string"}, "port": {"type": "integer"},
                    "registered_at": {"type": ["string", "null"], "format": "date-time"},
                    "expires_at": {"type": ["string", "null"], "format": "date-time"},
                    "last_keepalive": {"type": ["string", "null"], "format": "date-time"},
                    "channels": {"type": "integer"}, "catalog_items": {"type": "integer"},
                    "catalog_complete": {"type": "boolean"},
                    "catalog_synced_at": {"type": ["string", "null"], "format": "date-time"},
                    "provisioned": {"type": "boolean"}, "enabled": {"type": "boolean"},
                    "own_password": {"type": "boolean", "description": "passwords are never returned"},
                    "status": {"type": "object"}, "info": {"type": "object"},
                    "subscriptions": {"type": "object", "description": "by event (Catalog, Alarm, MobilePosition)",
                                      "additionalProperties": _ref("Subscription")}}},
                "Subscription": {"type": "object", "properties": {
                    "event": {"type": "string", "enum": ["Catalog", "Alarm", "MobilePosition"]},
                    "status": {"type": "string",
                               "enum": ["subscribing", "active", "unsupported", "failed", "terminated"]},
                    "reason": {"type": ["string", "null"]}, "expires_in": {"type": ["integer", "null"]},
                    "refreshes": {"type": "integer"}, "notifications": {"type": "integer"},
                    "last_notification": {"type": ["number", "null"], "description": "epoch seconds"}}},
                "Position": {"type": "object", "properties": {
                    "device_id": {"type": "string"}, "channel_id": {"type": "string",
                                                                   "description": "the target of the fix"},
                    "time": {"type": "string", "description": "as the device sent it (local time)"},
                    "longitude": {"type": "number"}, "latitude": {"type": "number"},
                    "speed": {"type": ["number", "null"], "description": "km/h"},
                    "direction": {"type": ["number", "null"], "description": "degrees from north"},
                    "altitude": {"type": ["number", "null"], "description": "metres"},
                    "received_at": {"type": "string", "format": "date-time"},
                    "sip_method": {"type": "string", "enum": ["NOTIFY", "MESSAGE"]}}},
                "DeviceUpdate": {"type": "object", "additionalProperties": False, "properties": {
                    "password": {"type": "string", "maxLength": 128,
                                 "description": "its own digest password; '' falls back to the configured one"},
                    "enabled": {"type": "boolean", "description": "false refuses its REGISTERs (403)"},
                    "name": {"type": "string", "maxLength": 256}}},
                "Channel": {"type": "object", "properties": {
                    "device_id": {"type": "string"}, "channel_id": {"type": "string"},
                    "kind": {"type": "string", "enum": ["channel", "business_group", "virtual_org"]},
                    "name": {"type": "string"}, "parent_id": {"type": "string"},
                    "status": {"type": "string", "description": "ON, OFF, VLOST, DEFECT as reported"},
                    "online": {"type": "boolean"}, "intact": {"type": "boolean"}, "fields": {"type": "object"},
                    "updated_at": {"type": ["string", "null"], "format": "date-time"},
                    "position": {"oneOf": [_ref("Position"), {"type": "null"}],
                                 "description": "the latest mobile position (MobilePosition subscription)"}}},
                "Stream": {"type": "object", "properties": {
                    "device_id": {"type": "string"}, "channel_id": {"type": "string"},
                    "stream": {"type": "string", "enum": ["main", "sub", "0", "1"]},
                    "state": {"type": "string", "enum": ["inviting", "waiting_media", "playing", "lingering",
                                                         "stopped", "failed"]},
                    "transport": {"type": "string"}, "consumers": {"type": "integer"},
                    "held_by_api": {"type": "boolean"}, "video_codec": {"type": ["string", "null"]},
                    "playing_seconds": {"type": ["number", "null"]}, "bitrate_kbps": {"type": ["number", "null"]},
                    "call_id": {"type": ["string", "null"]},
                    "error": {"type": ["string", "null"]}}},
                "StreamStart": {"type": "object", "required": ["channel_id"], "additionalProperties": False,
                                "properties": {"device_id": {"type": "string"}, "channel_id": {"type": "string"},
                                               "stream": {"type": "string", "enum": ["main", "sub", "0", "1"]}}},
                "QueryResult": {"type": "object", "properties": {
                    "device_id": {"type": "string"}, "cmd_type": {"type": "string"}, "fields": {"type": "object"}}},
                "PtzRequest": {"type": "object", "required": ["action"], "additionalProperties": False,
                               "description": "Fields by action: move (pan, tilt, zoom, speed, zoom_speed), stop, "
                                              "focus and iris (direction, speed), preset_set/call/delete (preset), "
                                              "cruise_add (group, preset), cruise_delete (group, preset; 0: the "
                                              "whole cruise), cruise_speed (group, speed 0..4095), cruise_dwell "
                                              "(group, seconds 0..4095), cruise_start (group), scan_start/"
                                              "scan_left/scan_right (group), scan_speed (group, speed 0..4095), "
                                              "aux (switch, on); a PTZ stop ends a cruise or scan",
                               "properties": {
                                   "action": {"type": "string", "enum": [
                                       "move", "stop", "focus", "iris", "preset_set", "preset_call", "preset_delete",
                                       "cruise_add", "cruise_delete", "cruise_speed", "cruise_dwell", "cruise_start",
                                       "scan_start", "scan_left", "scan_right", "scan_speed", "aux"]},
                                   "pan": {"type": "integer", "enum": [-1, 0, 1], "description": "1 right, -1 left"},
                                   "tilt": {"type": "integer", "enum": [-1, 0, 1], "description": "1 up, -1 down"},
                                   "zoom": {"type": "integer", "enum": [-1, 0, 1], "description": "1 in, -1 out"},
                                   "speed": {"type": "integer", "minimum": 0, "maximum": 255, "default": 128},
                                   "zoom_speed": {"type": "integer", "minimum": 0, "maximum": 15, "default": 8},
                                   "direction": {"type": "integer", "enum": [-1, 0, 1],
                                                 "description": "focus 1 far/-1 near, iris 1 open/-1 close"},
                                   "preset": {"type": "integer", "minimum": 0, "maximum": 255,
                                              "description": "1..255; cruise_delete also 0 (the whole cruise)"},
                                   "group": {"type": "integer", "minimum": 0, "maximum": 255,
                                             "description": "cruise or scan group"},
                                   "seconds": {"type": "integer", "minimum": 0, "maximum": 4095,
                                               "description": "cruise dwell time at each point"},
                                   "switch": {"type": "integer", "minimum": 0, "maximum": 255,
                                              "description": "auxiliary switch (1: the wiper on most cameras)"},
                                   "on": {"type": "boolean"}}},
                "ControlResult": {"type": "object", "properties": {
                    "device_id": {"type": "string"}, "channel_id": {"type": ["string", "null"]},
                    "status": {"type": "string", "enum": ["accepted", "ok"],
                               "description": "accepted: the device said 200 OK and sends no Response for this "
                                              "command; ok: its Response said Result OK"},
                    "result": {"type": "string"}, "sip_status": {"type": "integer"},
                    "ptz_cmd": {"type": "string", "description": "the PTZCmd sent (16 hex digits)"}}},
                "DeviceCommand": {"type": "object", "required": ["command"], "properties": {
                    "command": {"type": "string", "enum": ["reboot", "record_start", "record_stop", "guard_set",
                                                           "guard_reset", "alarm_reset", "home_position",
                                                           "drag_zoom_in", "drag_zoom_out"]},
                    "channel_id": {"type": "string", "description": "address a channel instead of the device"},
                    "alarm_method": {"type": ["string", "integer"]}, "alarm_type": {"type": "integer"},
                    "enabled": {"type": "boolean"}, "reset_time": {"type": "integer"},
                    "preset_index": {"type": "integer"},
                    "length": {"type": "integer"}, "width": {"type": "integer"}, "mid_x": {"type": "integer"},
                    "mid_y": {"type": "integer"}, "length_x": {"type": "integer"},
                    "length_y": {"type": "integer"}}},
                "BasicParam": {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {
                    "name": {"type": "string", "maxLength": 64}, "expiration": {"type": "integer", "minimum": 1},
                    "heartbeat_interval": {"type": "integer", "minimum": 1},
                    "heartbeat_count": {"type": "integer", "minimum": 1}}},
                "Alarm": {"type": "object", "properties": {
                    "id": {"type": "integer", "description": "increasing: newest is highest"},
                    "device_id": {"type": "string", "description": "the registered device that sent it"},
                    "channel_id": {"type": "string", "description": "the alarm source (the body's DeviceID)"},
                    "priority": {"type": "integer", "minimum": 1, "maximum": 4},
                    "method": {"type": "integer", "minimum": 1, "maximum": 7,
                               "description": "1 phone, 2 device, 3 SMS, 4 GPS, 5 video, 6 fault, 7 other"},
                    "alarm_time": {"type": "string", "description": "AlarmTime as the device wrote it"},
                    "alarm_type": {"type": ["integer", "null"]}, "description": {"type": "string"},
                    "longitude": {"type": ["number", "null"]}, "latitude": {"type": ["number", "null"]},
                    "received_at": {"type": "number", "description": "epoch seconds"},
                    "sip_method": {"type": "string", "enum": ["MESSAGE", "NOTIFY"]}}},
                "CatalogResult": {"type": "object", "properties": {
                    "device_id": {"type": "string"}, "items": {"type": "integer"},
                    "sum_num": {"type": ["integer", "null"]}, "complete": {"type": "boolean"},
                    "parts": {"type": "integer"}}},
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"summary": "Liveness: the event loop answers", "security": [],
                                 "responses": {"200": _json({"type": "object"})}}},
            "/readyz": {"get": {"summary": "Readiness: every component started and not stopping", "security": [],
                                "responses": {"200": _json({"type": "object"}),
                                              "503": _json({"type": "object"}, "Not ready")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (http.metrics_token if set)",
                                 "responses": {"200": {"description": "text exposition format",
                                                       "content": {"text/plain": {}}}, **_errors(401)}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [],
                                      "responses": {"200": _json({"type": "object"})}}},
            "/": {"get": {"summary": "The web page (public shell; the data it loads needs the token)",
                          "security": [], "responses": {"200": {"description": "HTML",
                                                                "content": {"text/html": {}}}}}},
            "/static/{name}": {"get": {"summary": "The web page's scripts and styles", "security": [],
                                       "parameters": [{"name": "name", "in": "path", "required": True,
                                                       "schema": {"type": "string"}}],
                                       "responses": {"200": {"description": "The file"}, **_errors(404)}}},
            "/api/v1/devices": {"get": {
                "summary": "List devices", "parameters": [_ONLINE, *_PAGE],
                "responses": {"200": _json({"type": "object", "properties": {
                    "total": {"type": "integer"}, "devices": {"type": "array", "items": _ref("Device")}}}),
                    **_errors(400, 401)}}},
            "/api/v1/devices/{device_id}": {
                "get": {"summary": "One device", "parameters": [_DEVICE_ID],
                        "responses": {"200": _json(_ref("Device")), **_errors(400, 401, 404)}},
                "put": {"summary": "Add or change a device (its own password, enabled; it passes devices.allow)",
                        "parameters": [_DEVICE_ID],
                        "requestBody": {"content": {"application/json": {"schema": _ref("DeviceUpdate")}}},
                        "responses": {"200": _json(_ref("Device"), "Changed"),
                                      "201": _json(_ref("Device"), "Added"), **_errors(400, 401, 413)}},
                "delete": {"summary": "Forget a device and its channels (its streams stop)",
                           "parameters": [_DEVICE_ID],
                           "responses": {"204": {"description": "Deleted"}, **_errors(400, 401, 404)}},
            },
            "/api/v1/devices/{device_id}/channels": {"get": {
                "summary": "A device's catalog", "parameters": [_DEVICE_ID],
                "responses": {"200": _json({"type": "object", "properties": {
                    "total": {"type": "integer"}, "channels": {"type": "array", "items": _ref("Channel")}}}),
                    **_errors(400, 401, 404)}}},
            "/api/v1/devices/{device_id}/catalog": {"post": {
                "summary": "Query the device's catalog now and store it", "parameters": [_DEVICE_ID],
                "responses": {"200": _json(_ref("CatalogResult")), **_errors(400, 401, 404, 409, 502, 504)}}},
            "/api/v1/devices/{device_id}/info": {"get": {"summary": "Ask the device for DeviceInfo", **query}},
            "/api/v1/devices/{device_id}/status": {"get": {"summary": "Ask the device for DeviceStatus", **query}},
            "/api/v1/channels": {"get": {
                "summary": "Channels of every device",
                "parameters": [{"name": "device_id", "in": "query", "schema": {"type": "string"}},
                               {"name": "kind", "in": "query", "schema": {"type": "string"}},
                               {"name": "status", "in": "query", "schema": {"type": "string"}}, _ONLINE, *_PAGE],
                "responses": {"200": _json({"type": "object", "properties": {
                    "total": {"type": "integer"}, "channels": {"type": "array", "items": _ref("Channel")}}}),
                    **_errors(400, 401)}}},
            "/api/v1/streams": {
                "get": {"summary": "Live streams", "responses": {"200": _json({"type": "object", "properties": {
                    "total": {"type": "integer"}, "streams": {"type": "array", "items": _ref("Stream")}}}),
                    **_errors(401)}},
                "post": {"summary": "Start a stream and hold it until DELETE (INVITE, first frame)",
                         "requestBody": {"required": True,
                                         "content": {"application/json": {"schema": _ref("StreamStart")}}},
                         "responses": {"201": _json(_ref("Stream"), "Started"),
                                       "200": _json(_ref("Stream"), "Already held"),
                                       **_errors(400, 401, 404, 502, 503, 504)}},
            },
            "/api/v1/streams/{device_id}/{channel_id}": {"delete": {
                "summary": "Stop a stream (BYE; its viewers are told why)",
                "parameters": [_DEVICE_ID, _CHANNEL_ID,
                               {"name": "stream", "in": "query", "schema": {"type": "string",
                                                                           "enum": ["main", "sub", "0", "1"]}}],
                "responses": {"204": {"description": "Stopped"}, **_errors(400, 401, 404)}}},
            "/api/v1/positions": {"get": {
                "summary": "The latest mobile position of every target that reported one, newest first (kept in "
                           "memory; MobilePosition NOTIFYs and MESSAGEs)",
                "parameters": [{"name": "device_id", "in": "query",
                                "schema": {"type": "string", "pattern": "^[0-9]{20}$"}}, *_PAGE],
                "responses": {"200": _json({"type": "object", "properties": {
                    "total": {"type": "integer"}, "positions": {"type": "array", "items": _ref("Position")}}}),
                    **_errors(400, 401)}}},
            "/api/v1/alarms": {"get": {
                "summary": "Stored alarms, newest first (devices.alarm_retention rows are kept)",
                "parameters": [
                    {"name": "device_id", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{20}$"}},
                    {"name": "since", "in": "query", "description": "received at or after: epoch seconds or "
                     "ISO 8601 (naive is UTC)", "schema": {"type": "string"}},
                    {"name": "until", "in": "query", "description": "received at or before (as since)",
                     "schema": {"type": "string"}},
                    {"name": "priority", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 4}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000,
                                                                "default": 100}}],
                "responses": {"200": _json({"type": "object", "properties": {
                    "total": {"type": "integer"}, "alarms": {"type": "array", "items": _ref("Alarm")}}}),
                    **_errors(400, 401, 503)}}},
            "/api/v1/alarms/stream": {"get": {
                "summary": "Live alarms as Server-Sent Events ('id: <alarm id>', 'event: alarm', data: an Alarm as "
                           "JSON; 'retry: 2000' first; a comment every 15 s; a client that falls 256 alarms behind "
                           "is dropped)",
                "description": "Replay: with Last-Event-ID (or last_event_id) N, the stored alarms with an id above "
                               "N come first, oldest first, at most 1000 (the newest); if more were missed, one "
                               "'event: gap' (no id) comes before them, data {\"after\": N, \"skipped\": <alarms "
                               "not sent>, \"next_id\": <first id sent>}. Then the live alarms, none twice.",
                "parameters": [
                    {"name": "Last-Event-ID", "in": "header", "description": "the id of the last alarm event "
                     "received (an EventSource sends it when it reconnects); takes precedence over last_event_id",
                     "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}},
                    {"name": "last_event_id", "in": "query", "description": "as Last-Event-ID, for a first "
                     "connection (which cannot set headers)", "schema": {"type": "string",
                                                                          "pattern": "^[0-9]{1,18}$"}}],
                "responses": {"200": {"description": "text/event-stream", "content": {"text/event-stream": {}}},
                              **_errors(400, 401, 503)}}},
            "/api/v1/channels/{device_id}/{channel_id}/ptz": {"post": {
                "summary": "PTZ: move, stop, focus, iris, presets, cruise, scan, auxiliary switches (DeviceControl "
                           "PTZCmd; accepted on the device's "
                           "200 OK)", "parameters": [_DEVICE_ID, _CHANNEL_ID],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("PtzRequest")}}},
                "responses": {"200": _json(_ref("ControlResult")), **control_errors}}},
            "/api/v1/channels/{device_id}/{channel_id}/presets": {"get": {
                "summary": "The channel's presets (PresetQuery; an answer in several parts is merged, up to "
                           "devices.query_timeout)", "parameters": [_DEVICE_ID, _CHANNEL_ID],
                "responses": {"200": _json({"type": "object", "properties": {
                    "device_id": {"type": "string"}, "channel_id": {"type": "string"},
                    "sum_num": {"type": ["integer", "null"]},
                    "complete": {"type": "boolean",
                                 "description": "false: parts still missing at devices.query_timeout (what came is "
                                                "listed)"},
                    "parts": {"type": "integer", "description": "Response MESSAGEs received"},
                    "presets": {"type": "array", "items": {"type": "object", "properties": {
                        "preset_id": {"type": "integer"}, "name": {"type": "string"}}}}}}), **control_errors}}},
            "/api/v1/devices/{device_id}/commands": {"post": {
                "summary": "A device command (DeviceControl: TeleBoot, RecordCmd, GuardCmd, AlarmCmd, HomePosition, "
                           "DragZoom); waits for the Response where the device sends one",
                "parameters": [_DEVICE_ID],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("DeviceCommand")}}},
                "responses": {"200": _json(_ref("ControlResult")), **control_errors}}},
            "/api/v1/devices/{device_id}/config": {
                "put": {"summary": "Set the device's BasicParam (DeviceConfig); waits for its Response",
                        "parameters": [_DEVICE_ID],
                        "requestBody": {"required": True,
                                        "content": {"application/json": {"schema": _ref("BasicParam")}}},
                        "responses": {"200": _json(_ref("ControlResult")), **control_errors}},
                "get": {"summary": "Read the device's configuration (ConfigDownload; Password left out)",
                        "parameters": [_DEVICE_ID, {"name": "type", "in": "query", "schema": {
                            "type": "string", "default": "BasicParam",
                            "description": "ConfigType(s), joined with / or ,"}}],
                        "responses": {"200": _json({"type": "object", "properties": {
                            "device_id": {"type": "string"}, "types": {"type": "array"},
                            "result": {"type": ["string", "null"]}, "sections": {"type": "object"}}}),
                            **control_errors}},
            },
            "/whep/{device_id}/{channel_id}": _whep([_DEVICE_ID, _CHANNEL_ID]),
            "/whep/{channel_id}": _whep([_CHANNEL_ID]),
            "/whep/session/{session_id}": {
                "delete": {"summary": "End a WHEP session", "parameters": [_SESSION_ID],
                           "responses": {"204": {"description": "Ended"}, **_errors(401, 404)}},
                "options": {"summary": "CORS preflight (no token needed)", "security": [],
                            "parameters": [_SESSION_ID], "responses": {"204": {"description": "CORS headers"}}},
            },
        },
    }


_SESSION_ID = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _whep(parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """A WHEP endpoint (draft-ietf-wish-whep): POST an SDP offer, get the answer (``gateway.webrtc``)."""
    stream = {"name": "stream", "in": "query", "schema": {"type": "string", "enum": ["main", "sub", "0", "1"]}}
    return {
        "post": {
            "summary": "Watch a channel over WebRTC: an SDP offer in, the SDP answer out (Location: the session)",
            "parameters": [*parameters, stream],
            "requestBody": {"required": True, "content": {"application/sdp": {"schema": {"type": "string"}}}},
            "responses": {"201": {"description": "The SDP answer", "content": {"application/sdp": {}},
                                  "headers": {"Location": {"schema": {"type": "string"}}}},
                          **_errors(400, 401, 404, 413, 415, 502, 503, 504)}},
        "options": {"summary": "CORS preflight (no token needed)", "security": [], "parameters": parameters,
                    "responses": {"204": {"description": "CORS headers"}}},
    }
