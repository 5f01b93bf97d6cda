"""gateway.main and gateway.logs: the CLI, the daemon lifecycle as a real subprocess, and the log output."""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from gateway import __version__
from gateway.app import Gateway
from gateway.config import Config
from gateway.logs import REDACTED, configure_logging, redact_secrets
from gateway.main import main

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "gateway.toml"

START_TIMEOUT = 30.0  # functional deadlines: generous, never slept through
EXIT_TIMEOUT = 15.0


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "PYTHONWARNINGS")}
    env.update(extra)
    return env


def _write_config(
    tmp_path: Path, *, sip: str = "", log: str = "", daemon: str = "", state_dir: Path | None = None
) -> Path:
    """A config on an ephemeral SIP port with its state under ``tmp_path``; extra lines per table."""
    state = state_dir if state_dir is not None else tmp_path / "state"
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[sip]\nport = 0\n{sip}\n[rtsp]\nport = 0\n[log]\n{log}\n[daemon]\nstate_dir = "{state}"\n{daemon}\n', encoding="utf-8"
    )
    return path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(),
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
    assert "  nope = {}: unknown table, expected one of [sip], [devices], [media], [rtsp], [http], [log], [daemon]" in capsys.readouterr().err
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
    config.write_text("[sip]\nport = 0\n[rtsp]\nport = 0\n", encoding="utf-8")
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
    config.write_text("[sip]\nport = 0\n[rtsp]\nport = 0\n", encoding="utf-8")
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
