"""gateway.main, gateway.logs and gateway.sdnotify: the CLI, environment overrides, the daemon lifecycle as a real
subprocess (signals, SIGHUP reload, sd_notify, SIGTERM during a stream), the log output and the systemd unit."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import queue
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from gw_util import RawClient, make_config, running_gateway

from gateway import __version__
from gateway.app import Gateway
from gateway.config import Config, ConfigError
from gateway.logs import REDACTED, configure_logging, redact_secrets
from gateway.main import main
from gateway.sdnotify import Notifier
from gateway.sim.config import SimConfig, channel_id

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "gateway.toml"

START_TIMEOUT = 30.0  # functional deadlines: generous, never slept through
EXIT_TIMEOUT = 15.0


def _env(**extra: str) -> dict[str, str]:
    """The test's environment without what would change the daemon's behaviour (systemd's variables, our
    GB28181_* overrides), plus ``extra``."""
    dropped = ("STATE_DIRECTORY", "PYTHONWARNINGS", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("GB28181_")}
    env.update(extra)
    return env


def _write_config(
    tmp_path: Path, *, sip: str = "", log: str = "", daemon: str = "", state_dir: Path | None = None
) -> Path:
    """A config on an ephemeral SIP port with its state under ``tmp_path``; extra lines per table."""
    state = state_dir if state_dir is not None else tmp_path / "state"
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[sip]\nport = 0\n{sip}\n[rtsp]\nport = 0\n[http]\nport = 0\n[log]\n{log}\n[daemon]\nstate_dir = "{state}"\n{daemon}\n', encoding="utf-8"
    )
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(**(env or {})),
        timeout=60,
    )


class Daemon:
    """The gateway in a real subprocess; stdout and stderr lines are collected by reader threads."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str], code: str | None = None) -> None:
        argv = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "gateway.main", *args]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(pipe, sink), daemon=True)
            for pipe, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe: Any, sink: list[str]) -> None:
        for line in pipe:
            sink.append(line)
            self._lines.put(line)

    def wait_for_event(self, event: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """The first JSON log line whose ``event`` is ``event``; fails on timeout or early exit."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                if not any(reader.is_alive() for reader in self._readers) and self._lines.empty():
                    self.proc.wait(timeout=EXIT_TIMEOUT)  # both pipes closed: the process has gone
                    pytest.fail(f"exited {self.proc.returncode} before {event!r}: {self.output()}")
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event:
                return dict(record)
        pytest.fail(f"no {event!r} within {timeout}s: {self.output()}")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"did not exit within {timeout}s: {self.output()}")

    def finish(self) -> list[dict[str, Any]]:
        """Wait for exit and for the pipes to drain; every stdout line parsed as JSON (fails if one is not)."""
        self.wait()
        for reader in self._readers:
            reader.join(timeout=EXIT_TIMEOUT)
        return [json.loads(line) for line in self.stdout]

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


# --- --check-config, --version, bad configuration ----------------------------------------------------------


def test_check_config_shipped_file() -> None:
    result = run_cli("--check-config", "--config", str(CONF))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"configuration OK: {CONF}\n"
    assert result.stderr == ""


def test_check_config_built_in_defaults() -> None:
    result = run_cli("--check-config")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "configuration OK: built-in defaults\n"


def test_check_config_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[sip]\nport = 70000\nlisten = "0.0.0.0"\n[log]\nlevel = "loud"\n', encoding="utf-8")
    result = run_cli("--check-config", "--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"gb28181-gateway: invalid configuration ({path}):",
        "  sip.port = 70000: expected an integer 0..65535",
        "  sip.password = '12345678': expected a password of your own: the default is printed in every device"
        " manual, and sip.listen = '0.0.0.0' is not a loopback address, so anyone who can reach the port could"
        " register as a device",
        "  log.level = 'loud': expected one of 'debug', 'info', 'warning', 'error'",
    ]


def test_check_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    result = run_cli("--check-config", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"gb28181-gateway: invalid configuration ({path}):",
        f"  cannot read {str(path)!r}: No such file or directory",
    ]


def test_bad_config_at_normal_start_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[sip]\nport = true\n", encoding="utf-8")
    result = run_cli("--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "  sip.port = True: expected an integer 0..65535" in result.stderr.splitlines()
    assert not (tmp_path / "var").exists()


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"gb28181-gateway {__version__}\n"


def test_unknown_argument_is_a_usage_error() -> None:
    result = run_cli("--bogus")
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr


def test_main_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check-config", "--config", str(CONF)]) == 0
    assert capsys.readouterr().out == f"configuration OK: {CONF}\n"
    bad = tmp_path / "bad.toml"
    bad.write_text("[nope]\n", encoding="utf-8")
    assert main(["--check-config", "--config", str(bad)]) == 2
    assert "  nope = {}: unknown table, expected one of [sip], [devices], [media], [rtsp], [http], [webrtc], [log], [daemon]" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"gb28181-gateway {__version__}\n"


# --- the daemon ----------------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_daemon_starts_and_stops_cleanly(tmp_path: Path, daemons: list[Daemon], sig: signal.Signals) -> None:
    state = tmp_path / "state" / "nested"
    config = _write_config(tmp_path, sip='password = "my-very-own-pw"', state_dir=state)
    d = Daemon(["--config", str(config)], cwd=tmp_path, env=_env())
    daemons.append(d)

    started = d.wait_for_event("gateway started")
    assert started["level"] == "info"
    assert started["demo"] is False
    assert started["config"]["sip"]["port"] == 0
    assert "password" not in started["config"]["sip"]
    assert state.is_dir()
    assert stat.S_IMODE(state.stat().st_mode) == 0o750 & ~_umask()

    d.signal(sig)
    assert d.wait() == 0
    records = d.finish()
    events = [r["event"] for r in records]
    # The lifecycle in order (components add their own lines in between).
    expected = ["gateway starting", "state directory", "sip listening", "gateway started",
                "shutdown requested", "sip stopped", "gateway stopped", "exiting"]
    positions = [events.index(e) for e in expected]
    assert positions == sorted(positions), events
    assert events[-1] == "exiting"
    assert [r for r in records if r["event"] == "sip listening"][0]["port"] > 0
    for r in records:  # JSON lines when not a TTY: timestamp (ISO 8601), level, event, logger
        assert {"timestamp", "level", "event", "logger"} <= r.keys()
        assert datetime.fromisoformat(r["timestamp"]).tzinfo is not None
    by_event = {r["event"]: r for r in records}
    assert by_event["state directory"]["path"] == str(state)
    assert by_event["shutdown requested"]["signal"] == sig.name
    assert by_event["exiting"]["exit_code"] == 0
    assert by_event["gateway starting"]["config_source"] == str(config)
    assert "my-very-own-pw" not in d.output()
    assert d.stderr == []  # logs go to stdout


@pytest.mark.e2e
def test_daemon_state_directory_from_systemd(tmp_path: Path, daemons: list[Daemon]) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[sip]\nport = 0\n[rtsp]\nport = 0\n[http]\nport = 0\n", encoding="utf-8")
    state = tmp_path / "lib" / "gb28181-gateway"
    d = Daemon(["--config", str(config)], cwd=tmp_path, env=_env(STATE_DIRECTORY=str(state)))
    daemons.append(d)
    assert d.wait_for_event("state directory")["path"] == str(state)
    d.wait_for_event("gateway started")
    assert state.is_dir()
    assert not (tmp_path / "var").exists()
    d.signal(signal.SIGTERM)
    assert d.wait() == 0


@pytest.mark.e2e
def test_daemon_default_state_directory_is_var(tmp_path: Path, daemons: list[Daemon]) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[sip]\nport = 0\n[rtsp]\nport = 0\n[http]\nport = 0\n", encoding="utf-8")
    d = Daemon(["--config", str(config)], cwd=tmp_path, env=_env())
    daemons.append(d)
    assert d.wait_for_event("state directory")["path"] == str(tmp_path / "var")
    d.wait_for_event("gateway started")
    assert (tmp_path / "var").is_dir()
    d.signal(signal.SIGTERM)
    assert d.wait() == 0


@pytest.mark.e2e
def test_daemon_demo_mode_starts_simulated_devices(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(["--config", str(_write_config(tmp_path)), "--demo"], cwd=tmp_path, env=_env())
    daemons.append(d)
    # The demo cameras register right after SIP is up (the gateway's line, not a simulated camera's: they log
    # "device registered" too, in the same process); their URLs are logged once RTSP listens.
    while (registered := d.wait_for_event("device registered"))["logger"] != "gateway.devices":
        pass
    assert registered["new"] is True
    started_demo = d.wait_for_event("demo devices started")
    assert len(started_demo["devices"]) == 3
    cameras = started_demo["rtsp"]
    assert len(cameras) == 6 and all(c["url"].startswith("rtsp://127.0.0.1:") for c in cameras)
    assert [(c["video"], c["audio"]) for c in cameras[::2]] in (
        [("h264", "g711a"), ("h265", "g711a"), ("h264", "aac")],
        [("h264", "g711a"), ("h264", "g711a"), ("h264", "aac")],  # PyAV without libx265
    )
    assert d.wait_for_event("watch a demo camera: ffplay -rtsp_transport tcp " + cameras[0]["url"])
    assert d.wait_for_event("gateway started")["demo"] is True
    d.signal(signal.SIGTERM)
    assert d.wait() == 0


@pytest.mark.e2e
def test_daemon_unusable_state_directory_exits_1(tmp_path: Path, daemons: list[Daemon]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    config = _write_config(tmp_path, state_dir=blocker / "state")
    d = Daemon(["--config", str(config)], cwd=tmp_path, env=_env())
    daemons.append(d)
    assert d.wait_for_event("cannot create state directory")["level"] == "error"
    assert d.wait() == 1


@pytest.mark.e2e
def test_daemon_console_format(tmp_path: Path, daemons: list[Daemon]) -> None:
    config = _write_config(tmp_path, log='format = "console"')
    d = Daemon(["--config", str(config)], cwd=tmp_path, env=_env())
    daemons.append(d)
    deadline = time.monotonic() + START_TIMEOUT
    while not any("gateway started" in line for line in d.stdout):
        assert time.monotonic() < deadline and d.proc.poll() is None, d.output()
        time.sleep(0.02)
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    started = next(line for line in d.stdout if "gateway started" in line)
    assert not started.startswith("{")
    assert "\x1b[" not in started  # not a TTY: no colours even in console format


# Gateway.stop replaced in a real subprocess, to exercise the shutdown deadline and the second signal.
_PATCHED = """
import asyncio, sys
import structlog
import gateway.app, gateway.main

async def stop(self):
    structlog.get_logger("test").info("slow stop entered")
    {body}

gateway.app.Gateway.stop = stop
sys.exit(gateway.main.main(sys.argv[1:]))
"""
_SLEEPS = "await asyncio.sleep(3600)"
_IGNORES_CANCEL = """
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            structlog.get_logger("test").info("cancel ignored")
"""


@pytest.mark.e2e
def test_daemon_shutdown_deadline_cancels_and_exits_1(tmp_path: Path, daemons: list[Daemon]) -> None:
    config = _write_config(tmp_path, daemon="graceful_timeout = 0.5")
    code = _PATCHED.format(body=_SLEEPS)
    d = Daemon(["--config", str(config)], cwd=tmp_path, env=_env(), code=code)
    daemons.append(d)
    d.wait_for_event("gateway started")
    d.signal(signal.SIGTERM)
    timed_out = d.wait_for_event("graceful shutdown timed out, cancelling what is left", timeout=EXIT_TIMEOUT)
    assert timed_out["level"] == "error"
    assert timed_out["graceful_timeout"] == 0.5
    assert "gateway.stop" in timed_out["tasks"]
    records = d.finish()
    assert d.proc.returncode == 1
    assert (records[-1]["event"], records[-1]["exit_code"]) == ("exiting", 1)


@pytest.mark.e2e
def test_daemon_exits_even_if_cancellation_is_ignored(tmp_path: Path, daemons: list[Daemon]) -> None:
    config = _write_config(tmp_path, daemon="graceful_timeout = 0.2")
    d = Daemon(
        ["--config", str(config)], cwd=tmp_path, env=_env(), code=_PATCHED.format(body=_IGNORES_CANCEL)
    )
    daemons.append(d)
    d.wait_for_event("gateway started")
    d.signal(signal.SIGTERM)
    d.wait_for_event("cancel ignored", timeout=EXIT_TIMEOUT)
    last = d.wait_for_event("tasks ignored cancellation, exiting anyway", timeout=EXIT_TIMEOUT)
    assert last["tasks"] == ["gateway.stop"] and last["exit_code"] == 1
    assert d.wait() == 1


@pytest.mark.e2e
@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_daemon_second_signal_forces_exit(
    tmp_path: Path, daemons: list[Daemon], second: signal.Signals
) -> None:
    config = _write_config(tmp_path, daemon="graceful_timeout = 600")
    d = Daemon(["--config", str(config)], cwd=tmp_path, env=_env(), code=_PATCHED.format(body=_SLEEPS))
    daemons.append(d)
    d.wait_for_event("gateway started")
    d.signal(signal.SIGINT)
    d.wait_for_event("slow stop entered")
    d.signal(second)
    forced = d.wait_for_event("second signal during shutdown, exiting now", timeout=EXIT_TIMEOUT)
    assert forced["level"] == "critical" and forced["signal"] == second.name and forced["exit_code"] == 130
    assert d.wait() == 130


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- Gateway in process ----------------------------------------------------------------------------------


class _Recorder:
    def __init__(
        self, name: str, calls: list[str], fail_start: bool = False, fail_stop: bool = False
    ) -> None:
        self.name, self.calls, self.fail_start, self.fail_stop = name, calls, fail_start, fail_stop

    async def start(self) -> None:
        self.calls.append(f"start {self.name}")
        if self.fail_start:
            raise OSError("address in use")

    async def stop(self) -> None:
        self.calls.append(f"stop {self.name}")
        if self.fail_stop:
            raise RuntimeError("stuck")


async def test_gateway_starts_in_order_and_stops_in_reverse(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    parts = [
        ("a", _Recorder("a", calls)),
        ("b", _Recorder("b", calls, fail_stop=True)),
        ("c", _Recorder("c", calls)),
    ]
    monkeypatch.setattr(Gateway, "_components", lambda self: parts)
    gw = Gateway(Config())
    assert not gw.ready
    await gw.start()
    assert gw.ready
    await gw.stop()
    assert not gw.ready
    assert calls == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    await gw.stop()  # idempotent
    assert len(calls) == 6


async def test_gateway_start_failure_stops_what_started(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    parts = [
        ("a", _Recorder("a", calls)),
        ("b", _Recorder("b", calls, fail_start=True)),
        ("c", _Recorder("c", calls)),
    ]
    monkeypatch.setattr(Gateway, "_components", lambda self: parts)
    gw = Gateway(Config(), demo=True)
    with pytest.raises(OSError, match="address in use"):
        await gw.start()
    assert not gw.ready
    assert calls == ["start a", "start b", "stop a"]


# --- logging ---------------------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_with_redaction_from_structlog_and_stdlib() -> None:
    out = io.StringIO()
    configure_logging("info", "auto", out)  # StringIO is not a TTY: JSON
    log = structlog.get_logger("gateway.test")
    log.info("device registered", device_id="34020000001320000001", password="pw1", Authorization="Digest x")
    log.debug("not shown")
    logging.getLogger("aiohttp.access").warning("GET %s", "/healthz", extra={"Passwd": "pw2"})
    log.info("nested", headers={"WWW-Authenticate": "Digest nonce", "Via": "x"}, parts=[{"cnonce": "c"}], n=3)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed", secret="s")

    records = _json_lines(out)
    assert [r["event"] for r in records] == ["device registered", "GET /healthz", "nested", "it failed"]
    first = records[0]
    assert first["level"] == "info" and first["logger"] == "gateway.test"
    assert datetime.fromisoformat(first["timestamp"]).utcoffset() is not None
    assert first["device_id"] == "34020000001320000001"
    assert first["password"] == REDACTED and first["Authorization"] == REDACTED
    assert records[1]["level"] == "warning" and records[1]["logger"] == "aiohttp.access"
    assert records[1]["Passwd"] == REDACTED
    assert records[2]["headers"] == {"WWW-Authenticate": REDACTED, "Via": "x"}
    assert records[2]["parts"] == [{"cnonce": REDACTED}] and records[2]["n"] == 3
    assert records[3]["level"] == "error" and records[3]["secret"] == REDACTED
    assert "ValueError: boom" in records[3]["exception"]
    for secret in ("pw1", "pw2", "Digest x", "Digest nonce"):
        assert secret not in out.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_level_filtering() -> None:
    out = io.StringIO()
    configure_logging("warning", "json", out)
    log = structlog.get_logger("gateway.test")
    log.info("quiet")
    logging.getLogger("lib").info("quiet too")
    log.warning("loud")
    log.error("louder")
    assert [r["event"] for r in _json_lines(out)] == ["loud", "louder"]

    out2 = io.StringIO()
    configure_logging("debug", "json", out2)  # reconfiguring takes effect for existing loggers
    log.debug("now visible")
    assert [r["event"] for r in _json_lines(out2)] == ["now visible"]
    assert out.getvalue().count("\n") == 2


@pytest.mark.usefixtures("restore_logging")
def test_console_on_a_tty_and_on_request() -> None:
    tty = _FakeTTY()
    configure_logging("info", "auto", tty)
    structlog.get_logger("gateway.test").info("hello console", nonce="abc123", port=5060)
    text = tty.getvalue()
    assert "hello console" in text and not text.startswith("{")
    assert "abc123" not in text and "port" in text

    plain = io.StringIO()
    configure_logging("info", "console", plain)
    structlog.get_logger("gateway.test").info("asked for console", response="deadbeef")
    text = plain.getvalue()
    assert "asked for console" in text and "deadbeef" not in text and "\x1b[" not in text

    forced = _FakeTTY()
    configure_logging("info", "json", forced)  # json even on a TTY when asked
    assert structlog.get_logger("x").info("j") is None
    assert _json_lines(forced)[0]["event"] == "j"


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_replaces_only_its_own_handler() -> None:
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    configure_logging("info", "json", io.StringIO())
    configure_logging("info", "json", io.StringIO())
    root = logging.getLogger().handlers
    assert other in root
    assert sum(1 for h in root if h.get_name() == "gateway") == 1


def test_configure_logging_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        configure_logging("verbose", "json", io.StringIO())
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("info", "xml", io.StringIO())


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "passwd",
        "secret",
        "authorization",
        "Proxy-Authorization",
        "response",
        "nonce",
        "cnonce",
        "CNonce",
        "www_authenticate",
    ],
)
def test_redact_secrets_keys(key: str) -> None:
    assert redact_secrets(None, "info", {"event": "e", key: "v"}) == {"event": "e", key: REDACTED}


def test_redact_secrets_leaves_other_keys_and_values() -> None:
    event = {
        "event": "password changed",
        "user": "admin",
        "status": 401,
        "passwords_total": 3,
        "data": ("a", 1),
    }
    assert redact_secrets(None, "info", dict(event)) == event
    nested = {"event": "e", "req": {"auth": [{"Response": "r", "uri": "sip:x"}], "t": ({"nonce": 1},)}}
    assert redact_secrets(None, "info", nested) == {
        "event": "e",
        "req": {"auth": [{"Response": REDACTED, "uri": "sip:x"}], "t": ({"nonce": REDACTED},)},
    }


@pytest.mark.e2e
def test_daemon_start_failure_exits_1(tmp_path: Path, daemons: list[Daemon]) -> None:
    code = """
import sys
import gateway.app, gateway.main

async def start(self):
    raise OSError(98, "Address already in use")

gateway.app.Gateway.start = start
sys.exit(gateway.main.main(sys.argv[1:]))
"""
    d = Daemon(["--config", str(_write_config(tmp_path))], cwd=tmp_path, env=_env(), code=code)
    daemons.append(d)
    failed = d.wait_for_event("gateway failed to start")
    assert failed["level"] == "error" and "Address already in use" in failed["exception"]
    assert d.wait() == 1


# --- environment overrides ---------------------------------------------------------------------------------


def test_check_config_reports_environment_overrides(tmp_path: Path) -> None:
    result = run_cli("--check-config", "--config", str(CONF),
                     env={"GB28181_SIP_PORT": "5070", "GB28181_HTTP_TOKEN": "0123456789abcdef"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"configuration OK: {CONF} + environment GB28181_HTTP_TOKEN, GB28181_SIP_PORT\n"
    result = run_cli("--check-config", env={"GB28181_LOG_LEVEL": "debug"})
    assert result.stdout == "configuration OK: built-in defaults + environment GB28181_LOG_LEVEL\n"


def test_bad_environment_fails_fast_naming_variable_and_key(tmp_path: Path) -> None:
    env = {"GB28181_SIP_PORT": "70000", "GB28181_SIP_PASWORD": "hunter2-secret", "GB28181_HTTP_TOKEN": "short"}
    for args in (["--check-config"], []):  # --check-config and a normal start alike
        result = run_cli(*args, "--config", str(CONF), cwd=tmp_path, env=env)
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f"gb28181-gateway: invalid configuration ({CONF} + environment GB28181_HTTP_TOKEN, GB28181_SIP_PASWORD,"
            " GB28181_SIP_PORT):",
            "  GB28181_SIP_PASWORD: unknown environment variable (did you mean GB28181_SIP_PASSWORD, for"
            " sip.password?); GB28181_<TABLE>_<KEY> variables set configuration keys, e.g. GB28181_SIP_PORT for"
            " sip.port",
            "  sip.port (from GB28181_SIP_PORT) = 70000: expected an integer 0..65535",
            "  http.token (from GB28181_HTTP_TOKEN) = <hidden str>: expected '' or a token of 16 to 256 visible"
            " ASCII characters (no spaces)",
        ]
        assert not (tmp_path / "var").exists()


@pytest.mark.e2e
def test_daemon_takes_environment_overrides(tmp_path: Path, daemons: list[Daemon]) -> None:
    config = _write_config(tmp_path)
    env = _env(GB28181_SIP_TCP_IDLE_TIMEOUT="33", GB28181_SIP_PASSWORD="env-only-password")
    d = Daemon(["--config", str(config)], cwd=tmp_path, env=env)
    daemons.append(d)
    starting = d.wait_for_event("gateway starting")
    assert starting["config_source"] == str(config)
    assert starting["environment"] == ["GB28181_SIP_PASSWORD", "GB28181_SIP_TCP_IDLE_TIMEOUT"]
    started = d.wait_for_event("gateway started")
    assert started["config"]["sip"]["tcp_idle_timeout"] == 33.0
    port = next(json.loads(line)["port"] for line in d.stdout if '"sip listening"' in line)
    assert _register(port, "env-only-password") == 200
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    assert "env-only-password" not in d.output()


# --- SIP helpers for the daemon tests -----------------------------------------------------------------------

DEVICE = "34020000001320000001"
OTHER = "34020000001320000002"


def _register(port: int, password: str, device: str = DEVICE) -> int:
    """REGISTER ``device`` with digest to the daemon on ``port``; the final status."""
    async def go() -> int:
        client = await RawClient.open(port)
        try:
            return (await client.register(device, password)).status
        finally:
            client.close()

    return asyncio.run(go())


def _ports(d: Daemon) -> tuple[int, int]:
    """(SIP port, RTSP port) the daemon logged."""
    sip = d.wait_for_event("sip listening")["port"]
    rtsp = d.wait_for_event("rtsp listening")["port"]
    return sip, rtsp


# --- SIGHUP reload ---------------------------------------------------------------------------------------------


def _reload_config(tmp_path: Path, *, port: int = 0, sip: str = "", devices: str = "", log: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[sip]\nport = {port}\n{sip}\n[devices]\n{devices}\n[rtsp]\nport = 0\n[http]\nport = 0\n[log]\n{log}\n'
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    return path


@pytest.mark.e2e
def test_sighup_reloads_passwords_allowlist_and_log_level(tmp_path: Path, daemons: list[Daemon]) -> None:
    config = _reload_config(tmp_path, sip='password = "first-password"')
    d = Daemon(["--config", str(config)], cwd=tmp_path, env=_env())
    daemons.append(d)
    port, _ = _ports(d)
    d.wait_for_event("gateway started")
    assert _register(port, "first-password") == 200

    # Reloadable keys apply; others are named as needing a restart.
    _reload_config(tmp_path, sip='password = "second-password"\nt1 = 1.0',
                   devices=f'passwords = {{ {OTHER} = "other-password" }}', log='level = "debug"')
    d.signal(signal.SIGHUP)
    warning = d.wait_for_event("configuration changes need a restart to apply")
    assert warning["level"] == "warning" and warning["keys"] == ["sip.t1"]
    reloaded = d.wait_for_event("configuration reloaded")
    assert reloaded["changed"] == ["sip.password", "devices.passwords", "log.level"]
    assert reloaded["restart_needed"] == ["sip.t1"]
    assert reloaded["config_source"] == str(config)
    assert _register(port, "first-password") == 403
    assert _register(port, "second-password") == 200
    assert _register(port, "second-password", OTHER) == 403  # its own password now
    assert _register(port, "other-password", OTHER) == 200

    # The allowlist: a registered device no longer allowed is unregistered, and refused from then on.
    _reload_config(tmp_path, sip='password = "second-password"\nt1 = 1.0',
                   devices=f'allow = ["{OTHER}"]\npasswords = {{ {OTHER} = "other-password" }}',
                   log='level = "debug"')
    d.signal(signal.SIGHUP)
    assert d.wait_for_event("device no longer in devices.allow: unregistered")["device_id"] == DEVICE
    assert d.wait_for_event("configuration reloaded")["changed"] == ["devices.allow"]
    assert _register(port, "second-password") == 403
    assert _register(port, "other-password", OTHER) == 200

    # An invalid file: an error naming the keys, and the running configuration stays.
    _reload_config(tmp_path, port=70000, log='level = "loud"')
    d.signal(signal.SIGHUP)
    failed = d.wait_for_event("reload failed: invalid configuration, still running with the previous one")
    assert failed["level"] == "error", failed
    assert failed["keys"] == ["log.level", "sip.port"], failed
    assert failed["errors"] == ["sip.port = 70000: expected an integer 0..65535",
                                "log.level = 'loud': expected one of 'debug', 'info', 'warning', 'error'"]
    assert _register(port, "other-password", OTHER) == 200

    d.signal(signal.SIGTERM)
    records = d.finish()
    assert d.proc.returncode == 0
    assert any(r["event"] == "component stopping" and r["level"] == "debug" for r in records)  # log.level applied
    for secret in ("first-password", "second-password", "other-password"):
        assert secret not in d.output()


@pytest.mark.e2e
def test_sighup_with_values_that_do_not_fit_the_running_config(tmp_path: Path, daemons: list[Daemon]) -> None:
    # Valid on its own (loopback with the default password), but the running gateway listens beyond loopback.
    config = _reload_config(tmp_path, sip='listen = "0.0.0.0"\npassword = "own-password"')
    d = Daemon(["--config", str(config)], cwd=tmp_path, env=_env(GB28181_RTSP_AUTH="none"))
    daemons.append(d)
    d.wait_for_event("gateway started")
    _reload_config(tmp_path)
    d.signal(signal.SIGHUP)
    failed = d.wait_for_event("reload failed: invalid configuration, still running with the previous one")
    assert failed["keys"] == ["sip.password"]
    d.signal(signal.SIGTERM)
    assert d.wait() == 0


# --- sd_notify -----------------------------------------------------------------------------------------------


class NotifySocket:
    """A unix datagram socket standing in for systemd's ``NOTIFY_SOCKET``."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sdn")  # short: sun_path holds 108 bytes
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.received: list[str] = []

    def expect(self, start: str, timeout: float = START_TIMEOUT) -> str:
        """The next message beginning with ``start`` (others are kept in ``received``)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.received.append(message)
            if message.startswith(start):
                return message
        pytest.fail(f"no {start!r} within {timeout}s; received {self.received}")

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def _fields(message: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in message.splitlines())


@pytest.mark.e2e
def test_daemon_talks_sd_notify(tmp_path: Path, daemons: list[Daemon], notify_socket: NotifySocket) -> None:
    env = _env(NOTIFY_SOCKET=notify_socket.path, WATCHDOG_USEC="200000")
    d = Daemon(["--config", str(_write_config(tmp_path))], cwd=tmp_path, env=env)
    daemons.append(d)
    assert notify_socket.expect("STATUS=") == "STATUS=starting"
    ready = _fields(notify_socket.expect("READY=1"))
    assert ready == {"READY": "1", "STATUS": "0 devices online of 0 registered, 0 streams"}
    assert notify_socket.expect("WATCHDOG=1", timeout=5).splitlines()[0] == "WATCHDOG=1"
    notify_socket.expect("WATCHDOG=1", timeout=5)  # again: a loop, not a single ping

    before = time.monotonic_ns() // 1000
    d.signal(signal.SIGHUP)
    reloading = _fields(notify_socket.expect("RELOADING=1"))
    after = time.monotonic_ns() // 1000
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after  # CLOCK_MONOTONIC, as systemd compares
    assert reloading["STATUS"] == "reloading configuration"
    assert _fields(notify_socket.expect("READY=1"))["STATUS"].endswith(" streams")
    d.wait_for_event("configuration reloaded")

    d.signal(signal.SIGTERM)
    assert _fields(notify_socket.expect("STOPPING=1")) == {"STOPPING": "1", "STATUS": "stopping"}
    assert d.wait() == 0


async def test_notifier_watchdog_and_status_lines() -> None:
    sock = NotifySocket()
    try:
        notifier = Notifier({"NOTIFY_SOCKET": sock.path, "WATCHDOG_USEC": "40000"})
        assert notifier.enabled and notifier.watchdog_interval == 0.02
        counter = iter(range(100))
        task = asyncio.create_task(notifier.run(lambda: f"n={next(counter)}", status_interval=0.1))
        messages: list[str] = []
        sock.sock.setblocking(False)
        loop = asyncio.get_running_loop()
        while sum("STATUS=" in m for m in messages) < 2:
            messages.append((await asyncio.wait_for(loop.sock_recv(sock.sock, 4096), 5)).decode())
        task.cancel()
        assert all(m.startswith("WATCHDOG=1") for m in messages)
        assert [m.split("STATUS=")[1] for m in messages if "STATUS=" in m] == ["n=0", "n=1"]
        assert len(messages) >= 6  # watchdog pings between the status lines (every 0.02 s vs 0.1 s)
    finally:
        sock.close()


async def test_notifier_survives_a_failing_status() -> None:
    sock = NotifySocket()
    try:
        notifier = Notifier({"NOTIFY_SOCKET": sock.path, "WATCHDOG_USEC": "20000"})

        def broken() -> str:
            raise RuntimeError("bug")

        task = asyncio.create_task(notifier.run(broken, status_interval=0.01))
        await asyncio.sleep(0.1)
        assert not task.done()  # still pinging the watchdog
        task.cancel()
    finally:
        sock.close()


def test_notifier_environment() -> None:
    assert not Notifier({}).enabled
    Notifier({}).notify("READY=1")  # a no-op without NOTIFY_SOCKET
    # An abstract socket (systemd may pass one) is written with a leading '@'.
    name = f"gb28181-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as abstract:
        abstract.bind("\0" + name)
        abstract.settimeout(5)
        Notifier({"NOTIFY_SOCKET": "@" + name}).notify("READY=1")
        assert abstract.recv(100) == b"READY=1"
    assert Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    assert Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000",
                     "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval is None  # meant for another process
    assert Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "0"}).watchdog_interval is None


async def test_notifier_without_socket_returns_at_once() -> None:
    await asyncio.wait_for(Notifier({}).run(lambda: "x", status_interval=0.01), 1)


# --- Gateway.reload in process -------------------------------------------------------------------------------


async def test_gateway_reload_applies_only_reloadable_keys(tmp_path: Path) -> None:
    config = make_config(tmp_path, sip={"password": "old-password"})
    async with running_gateway(config) as gw:
        assert gw.sip is not None
        client = await RawClient.open(gw.sip.port)
        try:
            assert (await client.register(DEVICE, "old-password")).status == 200
            assert (await client.register(OTHER, "old-password")).status == 200
            new = Config.from_mapping({
                "sip": {"port": 5999, "password": "new-password"},
                "devices": {"allow": [OTHER], "passwords": {OTHER: "other-password"}, "keepalive_count": 99},
                "log": {"level": "warning"},
            })
            gw.reload(new)
            assert gw.config.sip.password == "new-password" and gw.config.log.level == "warning"
            assert gw.config.sip.port == 0 and gw.config.devices.keepalive_count == 3  # need a restart
            assert gw.devices.config is gw.config
            assert gw.devices.password_for(DEVICE) == "new-password"
            assert gw.devices.password_for(OTHER) == "other-password"
            # No longer allowed: unregistered; still allowed: its registration stands.
            dev, other = gw.devices.get(DEVICE), gw.devices.get(OTHER)
            assert dev is not None and not dev.registered and not dev.rec.online
            assert other is not None and other.registered and other.rec.online
            assert gw.devices.counts == (1, 1)
            assert (await client.register(DEVICE, "new-password")).status == 403
            assert (await client.register(OTHER, "other-password")).status == 200

            # Values that do not fit the running configuration change nothing.
            running = gw.config
            beyond = Config.from_mapping({"sip": {"listen": "0.0.0.0", "password": "x"}})
            gw.config = beyond
            with pytest.raises(ConfigError):
                gw.reload(Config())
            assert gw.config is beyond
            gw.config = running
        finally:
            client.close()


# --- lifecycle: SIGTERM during a stream --------------------------------------------------------------------

_SIM = "import sys; from gateway.sim.cli import main; sys.exit(main(sys.argv[1:]))"


def _rtsp_describe(port: int, path: str) -> tuple[socket.socket, str]:
    """DESCRIBE on a new RTSP connection (which starts the stream); the open socket and the response head."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=START_TIMEOUT)
    sock.sendall(f"DESCRIBE rtsp://127.0.0.1:{port}/{path} RTSP/1.0\r\nCSeq: 1\r\n"
                 "Accept: application/sdp\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed: {data!r}"
        data += chunk
    return sock, data.split(b"\r\n\r\n")[0].decode()


@pytest.mark.e2e
def test_sigterm_during_a_stream_byes_the_camera_and_exits_0(tmp_path: Path, daemons: list[Daemon]) -> None:
    """The real daemon, a real simulator process and an RTSP viewer: SIGTERM ends the stream with a BYE that the
    simulator (a separate process) sees, and the gateway exits 0."""
    config = _write_config(tmp_path, sip='password = "lifecycle-password"')
    gw = Daemon(["--config", str(config)], cwd=tmp_path, env=_env())
    daemons.append(gw)
    sip_port, rtsp_port = _ports(gw)
    gw.wait_for_event("gateway started")
    sim = Daemon(["--server", f"127.0.0.1:{sip_port}", "--password", "lifecycle-password", "--devices", "1",
                  "--channels", "1", "--audio", "none", "--width", "320", "--height", "240", "--log-format",
                  "json"], cwd=tmp_path, env=_env(), code=_SIM)
    daemons.append(sim)
    device = SimConfig().first_id
    channel = channel_id(device, 0)
    assert gw.wait_for_event("catalog synced")["device_id"] == device

    viewer, head = _rtsp_describe(rtsp_port, f"{device}/{channel}")
    try:
        assert head.startswith("RTSP/1.0 200 "), head
        streaming = sim.wait_for_event("streaming")
        assert streaming["channel_id"] == channel

        gw.signal(signal.SIGTERM)
        bye = sim.wait_for_event("bye received", timeout=EXIT_TIMEOUT)
        assert bye["channel_id"] == channel and bye["call_id"] == streaming["call_id"]
        assert bye["packets"] > 0
        records = gw.finish()
        assert gw.proc.returncode == 0
        assert (records[-1]["event"], records[-1]["exit_code"]) == ("exiting", 0)
        viewer.settimeout(EXIT_TIMEOUT)
        while viewer.recv(65536):  # the gateway closed the viewer's connection on the way out
            pass
    finally:
        viewer.close()
    assert sim.proc.poll() is None  # the camera lives on; it just lost its platform
    sim.signal(signal.SIGTERM)
    assert sim.wait() == 0


# --- systemd unit ------------------------------------------------------------------------------------------

UNIT = ROOT / "systemd" / "gb28181-gateway.service"
SYSUSERS = ROOT / "systemd" / "gb28181-gateway.sysusers"
INSTALLED = "/opt/gb28181-gateway/.venv/bin/gb28181-gateway"


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_file_settings() -> None:
    s = _unit_settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == [f"{INSTALLED} --config /etc/gb28181-gateway/gateway.toml"]
    assert s["ExecReload"] == [f"{INSTALLED} --config /etc/gb28181-gateway/gateway.toml --check-config",
                               "/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"]
    assert s["User"] == ["gb28181"] and "DynamicUser" not in s
    assert s["StateDirectory"] == ["gb28181-gateway"]
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
                       "CapabilityBoundingSet": "", "AmbientCapabilities": ""}.items():
        assert s[key] == [value], key
    assert "@system-service" in s["SystemCallFilter"]
    assert "#AmbientCapabilities=CAP_NET_BIND_SERVICE" in UNIT.read_text(encoding="utf-8").splitlines()
    # The watchdog fires well after the daemon's pings (WatchdogSec/2), and the stop timeout exceeds the
    # default graceful_timeout.
    assert int(s["WatchdogSec"][0]) >= 10
    assert int(s["TimeoutStopSec"][0]) > Config().daemon.graceful_timeout


def _systemd_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package systemd)")
    return path


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = _systemd_tool("systemd-analyze")
    # verify checks that ExecStart's program exists: point a copy at one that does (the unit's name is kept).
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED, "/bin/true"), encoding="utf-8")
    try:
        result = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.skip("systemd-analyze verify did not finish (no usable systemd in this container)")
    cannot_run = re.search(r"Failed to (initialize|set ?up|allocate) manager|Failed to setup working directory"
                           r"|not been booted with systemd", result.stderr)
    if result.returncode != 0 and cannot_run:
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()}")
    # Unknown keys and bad values are only warnings (exit 0): any output at all is a failure.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_sysusers_file_creates_the_user(tmp_path: Path) -> None:
    tool = _systemd_tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    result = subprocess.run([tool, f"--root={tmp_path}", str(SYSUSERS)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text(encoding="utf-8").splitlines()
    (entry,) = [line for line in passwd if line.startswith("gb28181:")]
    assert entry.split(":")[5:] == ["/var/lib/gb28181-gateway", "/usr/sbin/nologin"]
    assert any(line.startswith("gb28181:") for line in (tmp_path / "etc" / "group").read_text().splitlines())
