"""HTTP Digest authentication for SIP (RFC 2617, RFC 7616, RFC 3261 §22), both sides.

Theory of operation
-------------------
Server (our registrar challenging devices)::

    nonces = NonceManager(secret, lifetime=300.0)           # one per process; secret from os.urandom
    challenge = Challenge(realm=domain, nonce=nonces.issue(now))
    # ... 401 with ``WWW-Authenticate: {challenge}`` ...
    creds = Credentials.parse(request_authorization_value)  # MalformedMessage on garbage -> 400
    result = verify(creds, password_for(creds.username), "REGISTER", now, nonces, domain)
    # OK -> 200; STALE_NONCE -> 401 with a fresh challenge and stale=True; anything else -> 401/403

Client (the simulator and cascade registration answering a challenge)::

    challenge = Challenge.parse(response_www_authenticate_value)
    creds = authorization_for(challenge, user, password, "REGISTER", uri, cnonce=cnonce_from_rng)
    # ... resend with ``Authorization: {creds}`` ...

Nonces are stateless: ``issue`` packs the (monotonic) issue time in milliseconds and a per-manager
counter, then appends a truncated HMAC-SHA256 of both under the secret, all as lowercase hex (56
characters; hex because embedded firmware copies nonces into small fixed buffers and some of it
mishandles anything but alphanumerics). ``check`` recomputes the HMAC: a mismatch is a forgery or
garbage (INVALID); a genuine nonce older than ``lifetime``, or dated in the future (the monotonic
clock restarted while the secret survived), is STALE. No table is kept, so nonces survive load and
cost no memory; the price is that a nonce can be replayed within its lifetime (there is no ``nc``
tracking). A replayed REGISTER needs a sniffed one and only repeats what the device already did.

Decisions worth knowing:

* Parameter parsing follows RFC 7235 §2.1 (``auth-param = token BWS "=" BWS ( token /
  quoted-string )``) but leniently: commas and/or whitespace separate parameters, unquoted values may
  hold any non-separator character (``uri=sip:x@y``), names and the scheme are case-insensitive,
  unknown parameters are ignored and for a duplicated parameter the *first* occurrence wins. A
  token not followed by ``=`` starts another challenge (RFC 7235 §4.1): parsing stops there.
  Control characters (CR, LF, NUL, ...; HTAB is allowed) are refused, so ``str()`` of a parsed value
  can never inject a header.
* An Authorization with an unknown ``algorithm`` is malformed (400): we never offer one, and a
  client must answer with an algorithm the server offered (RFC 7616 §3.4). ``verify(...,
  allowed=...)`` answers UNSUPPORTED_ALGORITHM for a known algorithm the server refuses by policy.
* ``qop=auth-int`` is supported: pass the message body (``body``, default ``b""``) to
  ``compute_response``/``verify``/``authorization_for``. ``userhash`` (RFC 7616 §3.4.4) is not: we
  never offer it, so a client using it fails with BAD_RESPONSE.
* The digest-uri is not compared with the Request-URI (RFC 2617 §3.2.2.5): GB28181 devices put
  ``sip:{platform_id}@{domain}`` there whatever the Request-URI says. Matching ``username`` against
  the From header is the caller's policy.
* Everything hashed is UTF-8 (RFC 7616 §4); the response hex is compared case-insensitively with
  ``hmac.compare_digest``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import re
import struct
from collections.abc import Collection
from dataclasses import dataclass
from typing import Self

from sip.errors import LocalProtocolError, MalformedMessage

__all__ = [
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestAlgorithm",
    "NonceManager",
    "NonceState",
    "authorization_for",
    "compute_response",
    "verify",
]


class DigestAlgorithm(enum.Enum):
    """RFC 7616 §3.3 algorithms; the value is the wire spelling."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"

    @classmethod
    def parse(cls, name: str) -> DigestAlgorithm:
        """Case-insensitive lookup; unknown names raise ``MalformedMessage``."""
        found = _ALGORITHMS_BY_NAME.get(name.lower())
        if found is None:
            raise MalformedMessage(f'unknown digest algorithm "{name}"')
        return found

    @property
    def is_session(self) -> bool:
        return self in (DigestAlgorithm.MD5_SESS, DigestAlgorithm.SHA256_SESS)

    def hash_hex(self, data: str | bytes) -> str:
        """``H(data)`` as lowercase hex; text is hashed as UTF-8 (RFC 7616 §4)."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        return hashlib.new(_HASH_NAMES[self], raw).hexdigest()


_ALGORITHMS_BY_NAME: dict[str, DigestAlgorithm] = {a.value.lower(): a for a in DigestAlgorithm}
_HASH_NAMES: dict[DigestAlgorithm, str] = {
    DigestAlgorithm.MD5: "md5",
    DigestAlgorithm.MD5_SESS: "md5",
    DigestAlgorithm.SHA256: "sha256",
    DigestAlgorithm.SHA256_SESS: "sha256",
}

_QOPS = ("auth", "auth-int")


class NonceState(enum.Enum):
    VALID = "valid"
    STALE = "stale"  # genuine (our HMAC) but expired, or dated after ``now``
    INVALID = "invalid"  # forged, from another secret, or garbled


class AuthResult(enum.Enum):
    OK = "ok"
    STALE_NONCE = "stale_nonce"  # right password, expired nonce: 401 with stale=TRUE
    BAD_NONCE = "bad_nonce"  # not a nonce we issued
    WRONG_REALM = "wrong_realm"
    BAD_RESPONSE = "bad_response"  # wrong password (or user, uri, method, cnonce...)
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"


# --- auth-param parsing (RFC 7235 §2.1, RFC 7230 §3.2.6) -------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SEPARATORS = re.compile(r"[ \t,]*")
_OWS = re.compile(r"[ \t]*")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_UNQUOTED = re.compile(r'[^ \t,"]+')
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NC = re.compile(r"[0-9A-Fa-f]{1,8}")


def _skip(pattern: re.Pattern[str], text: str, pos: int) -> int:
    found = pattern.match(text, pos)
    return pos if found is None else found.end()


def _parse_params(value: str, what: str) -> dict[str, str]:
    """Parse ``Digest k=v, k="v", ...`` into lower-cased names -> unescaped values (first wins)."""
    if _CTL.search(value):
        raise MalformedMessage(f"{what} has a control character")
    pos = _skip(_OWS, value, 0)
    scheme = _TOKEN.match(value, pos)
    if scheme is None or scheme.group().lower() != "digest":
        raise MalformedMessage(f"{what} scheme is not Digest")
    pos = scheme.end()
    if pos < len(value) and value[pos] not in " \t":
        raise MalformedMessage(f"{what} scheme is not Digest")
    params: dict[str, str] = {}
    end = len(value)
    while True:
        pos = _skip(_SEPARATORS, value, pos)
        if pos >= end:
            break
        name = _TOKEN.match(value, pos)
        if name is None:
            raise MalformedMessage(f"{what} has an unexpected {value[pos]!r} at offset {pos}")
        after_name = _skip(_OWS, value, name.end())
        if after_name >= end or value[after_name] != "=":
            break  # RFC 7235 §4.1: a bare token starts the next challenge
        pos = _skip(_OWS, value, after_name + 1)
        key = name.group().lower()
        if pos < end and value[pos] == '"':
            quoted = _QUOTED.match(value, pos)
            if quoted is None:
                raise MalformedMessage(f'{what} has an unterminated quoted string in "{key}"')
            text = _QUOTED_PAIR.sub(r"\1", quoted.group(1))
            pos = quoted.end()
        else:
            bare = _UNQUOTED.match(value, pos)
            if bare is None:
                raise MalformedMessage(f'{what} parameter "{key}" has no value')
            text = bare.group()
            pos = bare.end()
        params.setdefault(key, text)
    return params


def _require(params: dict[str, str], key: str, what: str) -> str:
    found = params.get(key)
    if found is None:
        raise MalformedMessage(f'{what} lacks "{key}"')
    return found


def _quote(name: str, value: str) -> str:
    if _CTL.search(value):
        raise LocalProtocolError(f'digest parameter "{name}" contains a control character')
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _token(name: str, value: str) -> str:
    if _TOKEN.fullmatch(value) is None:
        raise LocalProtocolError(f'digest parameter "{name}" is not a token: {value!r}')
    return value


# --- header values --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """A ``WWW-Authenticate``/``Proxy-Authenticate`` Digest challenge (RFC 7616 §3.3)."""

    realm: str
    nonce: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: tuple[str, ...] = ()  # qop-options, lower-cased; empty: RFC 2069 style, no qop
    opaque: str | None = None
    stale: bool = False

    @classmethod
    def parse(cls, header_value: str) -> Self:
        what = "challenge"
        params = _parse_params(header_value, what)
        realm = _require(params, "realm", what)
        nonce = _require(params, "nonce", what)
        algorithm = DigestAlgorithm.parse(params.get("algorithm", "MD5"))
        qop_value = params.get("qop")
        qop: tuple[str, ...] = ()
        if qop_value is not None:
            qop = tuple(q.strip().lower() for q in qop_value.split(",") if q.strip())
        return cls(
            realm=realm,
            nonce=nonce,
            algorithm=algorithm,
            qop=qop,
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
        )

    def __str__(self) -> str:
        # Some Dahua firmware refuses a challenge without ``algorithm=``: always emit it.
        parts = [
            f"realm={_quote('realm', self.realm)}",
            f"nonce={_quote('nonce', self.nonce)}",
            f"algorithm={self.algorithm.value}",
        ]
        if self.qop:
            parts.append(f"qop={_quote('qop', ','.join(_token('qop', q) for q in self.qop))}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote('opaque', self.opaque)}")
        if self.stale:
            parts.append("stale=TRUE")
        return "Digest " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Credentials:
    """An ``Authorization``/``Proxy-Authorization`` Digest answer (RFC 7616 §3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: str | None = None  # "auth" or "auth-int"; None: RFC 2069 style
    nc: str | None = None  # as sent (hashed verbatim), normally 8 hex digits
    cnonce: str | None = None
    opaque: str | None = None

    @classmethod
    def parse(cls, header_value: str) -> Self:
        what = "Authorization"
        params = _parse_params(header_value, what)
        username = _require(params, "username", what)
        realm = _require(params, "realm", what)
        nonce = _require(params, "nonce", what)
        uri = _require(params, "uri", what)
        response = _require(params, "response", what)
        algorithm = DigestAlgorithm.parse(params.get("algorithm", "MD5"))
        qop = params.get("qop")
        nc = params.get("nc")
        cnonce = params.get("cnonce")
        if qop is not None:
            qop = qop.lower()
            if qop not in _QOPS:
                raise MalformedMessage(f'{what} has unsupported qop "{qop}"')
            # RFC 7616 §3.4: cnonce and nc MUST be sent with qop.
            cnonce = _require(params, "cnonce", what)
            nc = _require(params, "nc", what)
            if _NC.fullmatch(nc) is None:
                raise MalformedMessage(f'{what} "nc" is not 1-8 hex digits: "{nc}"')
        elif algorithm.is_session:
            cnonce = _require(params, "cnonce", what)  # RFC 2617 §3.2.2.2: A1 uses cnonce
        return cls(
            username=username,
            realm=realm,
            nonce=nonce,
            uri=uri,
            response=response,
            algorithm=algorithm,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            opaque=params.get("opaque"),
        )

    def __str__(self) -> str:
        # The shape Hikvision/Dahua send; qop and nc are unquoted tokens (RFC 7616 §3.4).
        parts = [
            f"username={_quote('username', self.username)}",
            f"realm={_quote('realm', self.realm)}",
            f"nonce={_quote('nonce', self.nonce)}",
            f"uri={_quote('uri', self.uri)}",
            f"response={_quote('response', self.response)}",
            f"algorithm={self.algorithm.value}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote('cnonce', self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote('opaque', self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={_token('qop', self.qop)}")
        if self.nc is not None:
            parts.append(f"nc={_token('nc', self.nc)}")
        return "Digest " + ", ".join(parts)


# --- the computation (RFC 2617 §3.2.2, RFC 7616 §3.4.1-3.4.3) -------------------------------------


def compute_response(
    algorithm: DigestAlgorithm,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest as lowercase hex.

    ``qop`` is None (RFC 2069: ``H(HA1:nonce:HA2)``), "auth" or "auth-int" (``body`` is then hashed
    into A2). With a qop, ``nc`` and ``cnonce`` are required; a ``-sess`` algorithm needs ``cnonce``.
    Raises ``LocalProtocolError`` on such misuse.
    """
    if algorithm.is_session and cnonce is None:
        raise LocalProtocolError(f"{algorithm.value} needs a cnonce")
    ha1 = algorithm.hash_hex(f"{username}:{realm}:{password}")  # RFC 7616 §3.4.2
    if algorithm.is_session:
        ha1 = algorithm.hash_hex(f"{ha1}:{nonce}:{cnonce}")
    if qop is None:
        ha2 = algorithm.hash_hex(f"{method}:{uri}")
        return algorithm.hash_hex(f"{ha1}:{nonce}:{ha2}")  # RFC 2069 / RFC 2617 §3.2.2.1
    if qop == "auth":
        ha2 = algorithm.hash_hex(f"{method}:{uri}")  # RFC 7616 §3.4.3
    elif qop == "auth-int":
        ha2 = algorithm.hash_hex(f"{method}:{uri}:{algorithm.hash_hex(body)}")
    else:
        raise LocalProtocolError(f'unsupported qop "{qop}"')
    if nc is None or cnonce is None:
        raise LocalProtocolError(f'qop "{qop}" needs nc and cnonce')
    return algorithm.hash_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def authorization_for(
    challenge: Challenge,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> Credentials:
    """Answer ``challenge`` (client side). ``cnonce`` comes from the caller's RNG.

    Picks qop "auth" when offered, else "auth-int" (hashing ``body``), else none (RFC 2069 style).
    Raises ``MalformedMessage`` when the challenge offers only qop values we do not know, and
    ``LocalProtocolError`` for an empty cnonce or an ``nc`` outside 1..0xFFFFFFFF.
    """
    if not cnonce:
        raise LocalProtocolError("cnonce must not be empty")
    if not 1 <= nc <= 0xFFFFFFFF:
        raise LocalProtocolError(f"nc out of range: {nc}")
    qop: str | None = None
    if challenge.qop:
        qop = next((q for q in _QOPS if q in challenge.qop), None)
        if qop is None:
            raise MalformedMessage(f'challenge offers no supported qop: "{",".join(challenge.qop)}"')
    nc_text = f"{nc:08x}" if qop is not None else None
    # RFC 2617 §3.2.2: cnonce is sent with a qop, and always with -sess (A1 uses it).
    cnonce_sent = cnonce if qop is not None or challenge.algorithm.is_session else None
    response = compute_response(
        challenge.algorithm,
        username,
        challenge.realm,
        password,
        method,
        uri,
        challenge.nonce,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce_sent,
        body=body,
    )
    return Credentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce_sent,
        opaque=challenge.opaque,
    )


# --- server side ----------------------------------------------------------------------------------

_NONCE_PAYLOAD = struct.Struct("!qI")  # issue time in ms (signed: any monotonic origin), counter
_MAC_SIZE = 16  # HMAC-SHA256 truncated to 128 bits (RFC 2104 §5: at least half the output)
_NONCE_HEX = re.compile(f"[0-9a-f]{{{2 * (_NONCE_PAYLOAD.size + _MAC_SIZE)}}}")


class NonceManager:
    """Issues and checks stateless server nonces (see the module docstring).

    :param secret: at least 16 random bytes; nonces issued under another secret are INVALID.
    :param lifetime: seconds a nonce stays VALID after ``issue``.
    """

    __slots__ = ("_secret", "_lifetime", "_counter")

    def __init__(self, secret: bytes, lifetime: float) -> None:
        if len(secret) < 16:
            raise LocalProtocolError("nonce secret must be at least 16 bytes")
        if not lifetime > 0:
            raise LocalProtocolError(f"nonce lifetime must be positive: {lifetime}")
        self._secret = bytes(secret)
        self._lifetime = lifetime
        self._counter = 0

    @property
    def lifetime(self) -> float:
        return self._lifetime

    def _mac(self, payload: bytes) -> bytes:
        return hmac.digest(self._secret, payload, "sha256")[:_MAC_SIZE]

    def issue(self, now: float) -> str:
        """A fresh nonce (56 lowercase hex digits).

        :param now: monotonic clock (``loop.time()``).
        """
        self._counter = (self._counter + 1) & 0xFFFFFFFF  # unique within a millisecond
        payload = _NONCE_PAYLOAD.pack(_to_ms(now), self._counter)
        return (payload + self._mac(payload)).hex()

    def check(self, nonce: str, now: float) -> NonceState:
        """Classify a nonce a client sent back.

        :param now: monotonic clock, same origin as the ``now`` given to ``issue``.
        """
        if _NONCE_HEX.fullmatch(nonce) is None:
            return NonceState.INVALID
        raw = bytes.fromhex(nonce)
        payload, mac = raw[: _NONCE_PAYLOAD.size], raw[_NONCE_PAYLOAD.size :]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return NonceState.INVALID
        issued_ms, _counter = _NONCE_PAYLOAD.unpack(payload)
        age_ms = _to_ms(now) - issued_ms
        if age_ms < 0 or age_ms > self._lifetime * 1000:
            return NonceState.STALE
        return NonceState.VALID


def _to_ms(now: float) -> int:
    if not math.isfinite(now):
        raise LocalProtocolError(f"now must be finite: {now}")
    ms = int(now * 1000 // 1)  # floor, also for negative clocks
    return max(-(2**63), min(ms, 2**63 - 1))


def verify(
    credentials: Credentials,
    password: str,
    method: str,
    now: float,
    nonces: NonceManager,
    expected_realm: str,
    *,
    body: bytes = b"",
    allowed: Collection[DigestAlgorithm] | None = None,
) -> AuthResult:
    """Check an Authorization answer (server side), with or without qop.

    :param password: the password for ``credentials.username`` (looked up by the caller).
    :param method: the request's method (``REGISTER``), hashed into A2.
    :param now: monotonic clock, as given to ``nonces.issue``.
    :param body: the request body, used only for ``qop=auth-int``.
    :param allowed: algorithms the server accepts; None accepts all four.

    STALE_NONCE is answered only when the digest is right for the expired nonce (RFC 7616 §3.3,
    ``stale``): the client may then retry without re-prompting. A wrong digest on an expired nonce
    is BAD_RESPONSE.
    """
    if credentials.realm != expected_realm:
        return AuthResult.WRONG_REALM
    if allowed is not None and credentials.algorithm not in allowed:
        return AuthResult.UNSUPPORTED_ALGORITHM
    state = nonces.check(credentials.nonce, now)
    if state is NonceState.INVALID:
        return AuthResult.BAD_NONCE
    if credentials.algorithm.is_session and credentials.cnonce is None:
        return AuthResult.BAD_RESPONSE
    if credentials.qop is not None and (
        credentials.qop not in _QOPS or credentials.nc is None or credentials.cnonce is None
    ):
        return AuthResult.BAD_RESPONSE
    expected = compute_response(
        credentials.algorithm,
        credentials.username,
        credentials.realm,
        password,
        method,
        credentials.uri,
        credentials.nonce,
        qop=credentials.qop,
        nc=credentials.nc,
        cnonce=credentials.cnonce,
        body=body,
    )
    if not hmac.compare_digest(expected.encode("ascii"), credentials.response.lower().encode("utf-8")):
        return AuthResult.BAD_RESPONSE
    if state is NonceState.STALE:
        return AuthResult.STALE_NONCE
    return AuthResult.OK
