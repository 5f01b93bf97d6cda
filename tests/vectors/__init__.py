"""Test vectors, loaded by name (aiortc / aioquic ``load()`` style).

``load("sip/register_first.txt")`` returns the file's bytes exactly as stored: SIP vectors keep their CRLF line
endings and GB2312 bodies, so never open them in text mode. ``names("sip")`` lists one kind's vectors.

The digest credentials in ``sip/register_auth*.txt``, ``unregister.txt`` and ``folded_header.txt`` are real
RFC 2617 responses for password ``12345678`` (realm ``3402000000``), so auth tests can verify them.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent

#: The password behind every Authorization header in ``sip/*.txt``.
SIP_PASSWORD = "12345678"


def path(name: str) -> Path:
    """Absolute path of vector ``name`` (relative to ``tests/vectors``)."""
    return ROOT / name


def load(name: str) -> bytes:
    """The bytes of vector ``name``, e.g. ``load("sip/invite_live.txt")``."""
    return path(name).read_bytes()


def names(kind: str, suffix: str = ".txt") -> list[str]:
    """Sorted names (``kind/file``) of the vectors under ``tests/vectors/kind``."""
    return sorted(f"{kind}/{p.name}" for p in (ROOT / kind).glob(f"*{suffix}"))
