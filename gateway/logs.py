"""Logging: structlog in front, stdlib ``logging`` behind, one handler, one format for both.

Our code logs with ``structlog.get_logger(__name__)`` and key/values (``log.info("device registered",
device_id=...)``); libraries log through stdlib ``logging``. Both end in a single ``StreamHandler`` whose
``structlog.stdlib.ProcessorFormatter`` renders either JSON lines (one object per line: ``timestamp`` in ISO 8601
UTC, ``level``, ``event``, ``logger`` and the key/values) or structlog's ``ConsoleRenderer`` for people at a
terminal. ``fmt="auto"`` picks the console renderer when the stream is a TTY and JSON otherwise (journald, pipes,
files, tests).

Secrets never reach the output by key: :func:`redact_secrets` replaces the value of any key in
:data:`SECRET_KEYS` (case-insensitive, ``-`` and ``_`` alike, at any depth in dicts, lists and tuples) with
``"***"``. It cannot see inside free text, so never put a raw ``Authorization`` header or a whole SIP message in
the event string; pass it as a key/value, or log parsed fields. Note that ``response`` is a secret key (digest
response): log a SIP status as ``status=``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["LEVELS", "SECRET_KEYS", "REDACTED", "configure_logging", "redact_secrets", "set_level"]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
"""``log.level`` names → stdlib levels."""

SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "authorization",
        "proxy_authorization",
        "www_authenticate",
        "proxy_authenticate",
        "response",
        "nonce",
        "cnonce",
    }
)
"""Keys whose values are replaced, compared lower-case with ``-`` read as ``_``."""

REDACTED = "***"

_HANDLER_NAME = "gateway"


def _is_secret(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_") in SECRET_KEYS


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v) for v in value)
    return value


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace the values of secret keys (see :data:`SECRET_KEYS`) with ``"***"``."""
    for key, value in event_dict.items():
        if _is_secret(key):
            event_dict[key] = REDACTED
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = _redact(value)
    return event_dict


def _drop_color_message(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    # uvicorn-style libraries add a duplicate `color_message` extra; it is noise in JSON.
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib ``logging`` to ``stream`` (default ``sys.stdout``) at ``level``.

    :param level: ``debug``, ``info``, ``warning`` or ``error``.
    :param fmt: ``json``, ``console``, or ``auto`` (console when ``stream`` is a TTY, else JSON).
    Safe to call again (tests do): our previous handler is replaced; other root handlers stay.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}")
    out = sys.stdout if stream is None else stream
    is_tty = _isatty(out)
    console = fmt == "console" or (fmt == "auto" and is_tty)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=is_tty)
        tail: list[Processor] = []
    else:
        renderer = structlog.processors.JSONRenderer()
        tail = [structlog.processors.format_exc_info]

    formatter = structlog.stdlib.ProcessorFormatter(
        # Records from stdlib loggers: their `extra=` key/values count too (and get redacted).
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_color_message, redact_secrets],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.set_name(_HANDLER_NAME)

    root = logging.getLogger()
    for old in root.handlers[:]:
        if old.get_name() == _HANDLER_NAME:  # ours from an earlier call; leave others' (pytest's) alone
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    logging.captureWarnings(True)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            redact_secrets,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: configure_logging() may run again (tests), and module-level loggers must follow it.
        cache_logger_on_first_use=False,
    )


def set_level(level: str) -> None:
    """Change the least severe level written (``log.level`` reloaded on SIGHUP); the format stays."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    logging.getLogger().setLevel(LEVELS[level])


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty(), or a closed stream
        return False
