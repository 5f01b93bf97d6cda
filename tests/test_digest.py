"""Digest authentication (sip/digest.py): RFC vectors, GB28181 shapes, parser edge cases, nonces."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip.digest import (
    AuthResult,
    Challenge,
    Credentials,
    DigestAlgorithm,
    NonceManager,
    NonceState,
    authorization_for,
    compute_response,
    verify,
)
from sip.errors import LocalProtocolError, MalformedMessage, RemoteProtocolError

SECRET = b"0123456789abcdef0123456789abcdef"
DOMAIN = "3402000000"
DEVICE = "34020000001320000001"
PLATFORM_URI = "sip:34020000002000000001@3402000000"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


# --- RFC vectors ----------------------------------------------------------------------------------

# RFC 2617 §3.5, header folding replaced by single spaces (RFC 3261 §7.3.1).
RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa", realm="testrealm@host.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, '
    'cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_rfc2617_example_compute() -> None:
    assert (
        compute_response(
            DigestAlgorithm.MD5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def test_rfc2617_example_parse_both_headers() -> None:
    challenge = Challenge.parse(RFC2617_CHALLENGE)
    assert challenge == Challenge(
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        algorithm=DigestAlgorithm.MD5,
        qop=("auth", "auth-int"),
        opaque="5ccc069c403ebaf9f0171e9517f40e41",
        stale=False,
    )
    creds = Credentials.parse(RFC2617_AUTHORIZATION)
    assert creds == Credentials(
        username="Mufasa",
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        uri="/dir/index.html",
        response="6629fae49393a05397450978507c4ef1",
        algorithm=DigestAlgorithm.MD5,
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
        opaque="5ccc069c403ebaf9f0171e9517f40e41",
    )
    # The client side produces exactly the RFC's answer.
    answer = authorization_for(challenge, "Mufasa", "Circle Of Life", "GET", "/dir/index.html", "0a4f113b")
    assert answer == creds


# RFC 7616 §3.9.1 (note: password "Circle of Life", lower-case "of", unlike RFC 2617).
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (DigestAlgorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
        (DigestAlgorithm.SHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: DigestAlgorithm, expected: str) -> None:
    challenge = Challenge.parse(
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm.value}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.algorithm is algorithm
    creds = authorization_for(
        challenge, "Mufasa", "Circle of Life", "GET", "/dir/index.html", RFC7616_CNONCE
    )
    assert creds.response == expected
    assert (creds.qop, creds.nc, creds.cnonce, creds.opaque) == (
        "auth",
        "00000001",
        RFC7616_CNONCE,
        RFC7616_OPAQUE,
    )
    # The RFC's Authorization header, with no space after "Authorization:" and folding removed.
    header = (
        f'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
        f'algorithm={algorithm.value}, nonce="{RFC7616_NONCE}", nc=00000001, cnonce="{RFC7616_CNONCE}", '
        f'qop=auth, response="{expected}", opaque="{RFC7616_OPAQUE}"'
    )
    assert Credentials.parse(header) == creds


def test_no_qop_md5_rfc2069_by_hand() -> None:
    ha1 = md5(f"{DEVICE}:{DOMAIN}:12345678")
    ha2 = md5(f"REGISTER:{PLATFORM_URI}")
    expected = md5(f"{ha1}:abcdef0123:{ha2}")
    got = compute_response(DigestAlgorithm.MD5, DEVICE, DOMAIN, "12345678", "REGISTER", PLATFORM_URI, "abcdef0123")
    assert got == expected
    creds = authorization_for(Challenge(DOMAIN, "abcdef0123"), DEVICE, "12345678", "REGISTER", PLATFORM_URI, "c")
    assert creds.response == expected
    assert (creds.qop, creds.nc, creds.cnonce) == (None, None, None)
    assert "qop" not in str(creds) and "cnonce" not in str(creds) and "nc=" not in str(creds)


def test_sess_algorithms_by_hand() -> None:
    ha1 = md5(f"{md5('u:r:p')}:n:cn")
    ha2 = md5("REGISTER:sip:x")
    expected = md5(f"{ha1}:n:00000001:cn:auth:{ha2}")
    assert compute_response(DigestAlgorithm.MD5_SESS, "u", "r", "p", "REGISTER", "sip:x", "n", "auth", "00000001", "cn") == expected


def test_auth_int_hashes_the_body() -> None:
    body = b"v=0\r\n"
    ha2 = md5(f"INVITE:sip:x:{hashlib.md5(body).hexdigest()}")
    expected = md5(f"{md5('u:r:p')}:n:00000002:cn:auth-int:{ha2}")
    got = compute_response(DigestAlgorithm.MD5, "u", "r", "p", "INVITE", "sip:x", "n", "auth-int", "00000002", "cn", body)
    assert got == expected


# --- GB28181 shapes -------------------------------------------------------------------------------


def test_gb28181_register_as_hikvision_and_dahua_send_it() -> None:
    nonces = NonceManager(SECRET, lifetime=300.0)
    nonce = nonces.issue(now=1000.0)
    challenge = Challenge(realm=DOMAIN, nonce=nonce)
    assert str(challenge) == f'Digest realm="3402000000", nonce="{nonce}", algorithm=MD5'

    response = md5(f"{md5(f'{DEVICE}:{DOMAIN}:12345678')}:{nonce}:{md5(f'REGISTER:{PLATFORM_URI}')}")
    header = (
        f'Digest username="{DEVICE}", realm="{DOMAIN}", nonce="{nonce}", '
        f'uri="{PLATFORM_URI}", response="{response}", algorithm=MD5'
    )
    creds = Credentials.parse(header)
    assert creds == Credentials(DEVICE, DOMAIN, nonce, PLATFORM_URI, response, DigestAlgorithm.MD5)
    assert str(creds) == header  # byte-identical to what the devices send
    assert verify(creds, "12345678", "REGISTER", 1010.0, nonces, DOMAIN) is AuthResult.OK
    assert verify(creds, "87654321", "REGISTER", 1010.0, nonces, DOMAIN) is AuthResult.BAD_RESPONSE


def test_gb28181_register_with_qop_auth() -> None:
    nonces = NonceManager(SECRET, lifetime=300.0)
    challenge = Challenge(realm=DOMAIN, nonce=nonces.issue(5.0), qop=("auth",))
    assert str(challenge) == f'Digest realm="{DOMAIN}", nonce="{challenge.nonce}", algorithm=MD5, qop="auth"'
    creds = authorization_for(Challenge.parse(str(challenge)), DEVICE, "12345678", "REGISTER", PLATFORM_URI, "0a4f113b")
    assert verify(Credentials.parse(str(creds)), "12345678", "REGISTER", 6.0, nonces, DOMAIN) is AuthResult.OK


# --- round trips ----------------------------------------------------------------------------------


def test_challenge_round_trip_full() -> None:
    challenge = Challenge(
        realm='odd "realm" \\ here',
        nonce="n1",
        algorithm=DigestAlgorithm.SHA256_SESS,
        qop=("auth", "auth-int"),
        opaque="op",
        stale=True,
    )
    text = str(challenge)
    assert text == (
        'Digest realm="odd \\"realm\\" \\\\ here", nonce="n1", algorithm=SHA-256-sess, '
        'qop="auth,auth-int", opaque="op", stale=TRUE'
    )
    assert Challenge.parse(text) == challenge


def test_credentials_round_trip_full() -> None:
    creds = Credentials(
        username='a"b',
        realm="r,with,commas",
        nonce="n",
        uri="sip:x@y",
        response="0" * 32,
        algorithm=DigestAlgorithm.MD5_SESS,
        qop="auth",
        nc="0000000a",
        cnonce="c\\n",
        opaque="o",
    )
    text = str(creds)
    assert text == (
        'Digest username="a\\"b", realm="r,with,commas", nonce="n", uri="sip:x@y", '
        f'response="{"0" * 32}", algorithm=MD5-sess, cnonce="c\\\\n", opaque="o", qop=auth, nc=0000000a'
    )
    assert Credentials.parse(text) == creds


_value = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)


@given(
    realm=_value,
    nonce=_value,
    algorithm=st.sampled_from(DigestAlgorithm),
    qop=st.lists(st.sampled_from(["auth", "auth-int", "x-y"]), max_size=3, unique=True),
    opaque=st.none() | _value,
    stale=st.booleans(),
)
def test_challenge_round_trip_property(
    realm: str, nonce: str, algorithm: DigestAlgorithm, qop: list[str], opaque: str | None, stale: bool
) -> None:
    challenge = Challenge(realm, nonce, algorithm, tuple(qop), opaque, stale)
    assert Challenge.parse(str(challenge)) == challenge


@given(
    username=_value,
    realm=_value,
    nonce=_value,
    uri=_value,
    response=_value,
    algorithm=st.sampled_from([DigestAlgorithm.MD5, DigestAlgorithm.SHA256]),
    qop=st.sampled_from([None, "auth", "auth-int"]),
    cnonce=_value,
    opaque=st.none() | _value,
)
def test_credentials_round_trip_property(
    username: str,
    realm: str,
    nonce: str,
    uri: str,
    response: str,
    algorithm: DigestAlgorithm,
    qop: str | None,
    cnonce: str,
    opaque: str | None,
) -> None:
    creds = Credentials(
        username,
        realm,
        nonce,
        uri,
        response,
        algorithm,
        qop,
        nc="00000001" if qop else None,
        cnonce=cnonce if qop else None,
        opaque=opaque,
    )
    assert Credentials.parse(str(creds)) == creds


# --- parser leniency and strictness ---------------------------------------------------------------


def test_parser_whitespace_case_commas_escapes_unknown_and_duplicates() -> None:
    header = (
        '  dIgEsT\tUserName = "a,b" ,, REALM=3402000000,NONCE="n\\"1" ,\t'
        'x-vendor="ignored, really", uri=sip:34020000002000000001@3402000000 ,'
        'response="ABC" , username="second-ignored",  '
    )
    creds = Credentials.parse(header)
    assert creds.username == "a,b"  # first occurrence wins
    assert creds.realm == DOMAIN
    assert creds.nonce == 'n"1'
    assert creds.uri == PLATFORM_URI
    assert creds.response == "ABC"
    assert creds.algorithm is DigestAlgorithm.MD5  # missing algorithm defaults to MD5


def test_parser_accepts_lowercase_algorithm_quoted_qop_and_uppercase_stale() -> None:
    challenge = Challenge.parse('Digest realm="r", nonce="n", algorithm="sha-256", qop=auth, stale=true')
    assert (challenge.algorithm, challenge.qop, challenge.stale) == (DigestAlgorithm.SHA256, ("auth",), True)
    assert Challenge.parse('Digest realm="r", nonce="n", stale=FALSE').stale is False
    creds = Credentials.parse('Digest username="u", realm="r", nonce="n", uri="u", response="x", qop="AUTH", nc=1, cnonce="c"')
    assert (creds.qop, creds.nc) == ("auth", "1")


def test_parser_stops_at_the_next_challenge() -> None:
    # RFC 7235 §4.1: several challenges may share one header value.
    challenge = Challenge.parse('Digest realm="r", nonce="n", Basic realm="other"')
    assert challenge == Challenge("r", "n")


REQUIRED = ["username", "realm", "nonce", "uri", "response"]


@pytest.mark.parametrize("missing", REQUIRED)
def test_credentials_missing_required_param(missing: str) -> None:
    values = {"username": DEVICE, "realm": DOMAIN, "nonce": "n", "uri": PLATFORM_URI, "response": "r"}
    del values[missing]
    header = "Digest " + ", ".join(f'{k}="{v}"' for k, v in values.items())
    with pytest.raises(MalformedMessage) as exc:
        Credentials.parse(header)
    assert exc.value.reason == f'Authorization lacks "{missing}"'
    assert exc.value.status == 400


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ('Digest nonce="n"', 'challenge lacks "realm"'),
        ('Digest realm="r"', 'challenge lacks "nonce"'),
        ('Basic realm="r"', "challenge scheme is not Digest"),
        ("", "challenge scheme is not Digest"),
        ('Digest realm="r", nonce="n", algorithm=SHA-512-256', 'unknown digest algorithm "SHA-512-256"'),
    ],
)
def test_challenge_errors(header: str, message: str) -> None:
    with pytest.raises(MalformedMessage) as exc:
        Challenge.parse(header)
    assert exc.value.reason == message


BASE = 'Digest username="u", realm="r", nonce="n", uri="sip:x", response="x"'


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ('Basic dXNlcjpwYXNz', "Authorization scheme is not Digest"),
        ("   ", "Authorization scheme is not Digest"),
        ('Digestive username="u"', "Authorization scheme is not Digest"),
        ('Digest="u"', "Authorization scheme is not Digest"),
        ('Digest username="u', 'Authorization has an unterminated quoted string in "username"'),
        ('Digest username="u\\', 'Authorization has an unterminated quoted string in "username"'),
        ('Digest username="u\r\n"', "Authorization has a control character"),
        ("Digest username=\x00", "Authorization has a control character"),
        ('Digest username=, realm="r"', 'Authorization parameter "username" has no value'),
        ('Digest username="u" "junk"', "Authorization has an unexpected '\"' at offset 20"),
        (BASE + ", algorithm=SHA-1", 'unknown digest algorithm "SHA-1"'),
        (BASE + ", qop=auth-conf", 'Authorization has unsupported qop "auth-conf"'),
        (BASE + ", qop=auth", 'Authorization lacks "cnonce"'),
        (BASE + ', qop=auth, cnonce="c"', 'Authorization lacks "nc"'),
        (BASE + ', qop=auth, cnonce="c", nc=xyz', 'Authorization "nc" is not 1-8 hex digits: "xyz"'),
        (BASE + ', qop=auth, cnonce="c", nc=123456789', 'Authorization "nc" is not 1-8 hex digits: "123456789"'),
        (BASE + ", algorithm=MD5-sess", 'Authorization lacks "cnonce"'),
    ],
)
def test_credentials_errors(header: str, message: str) -> None:
    with pytest.raises(MalformedMessage) as exc:
        Credentials.parse(header)
    assert exc.value.reason == message


def test_algorithm_parse() -> None:
    assert DigestAlgorithm.parse("md5") is DigestAlgorithm.MD5
    assert DigestAlgorithm.parse("MD5-SESS") is DigestAlgorithm.MD5_SESS
    assert DigestAlgorithm.parse("sha-256") is DigestAlgorithm.SHA256
    assert DigestAlgorithm.parse("Sha-256-Sess") is DigestAlgorithm.SHA256_SESS
    with pytest.raises(MalformedMessage, match='^unknown digest algorithm "SHA256"$'):
        DigestAlgorithm.parse("SHA256")


def test_str_refuses_control_characters() -> None:
    with pytest.raises(LocalProtocolError, match='"realm" contains a control character'):
        str(Challenge("r\r\nX-Injected: 1", "n"))
    with pytest.raises(LocalProtocolError, match='"qop" is not a token'):
        str(Credentials("u", "r", "n", "sip:x", "x", qop="auth int", nc="1", cnonce="c"))


@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text: str) -> None:
    for parse in (Credentials.parse, Challenge.parse):
        try:
            parse(text)
        except RemoteProtocolError:
            pass


_GRAMMAR = st.text(alphabet='Digest usrnamlionceqpthMD5-SHA2=",\\\t :/@x\r\x00é', max_size=120)


@given(_GRAMMAR)
def test_fuzz_digest_shaped_text(text: str) -> None:
    for parse in (Credentials.parse, Challenge.parse):
        try:
            parsed = parse("Digest " + text)
        except RemoteProtocolError:
            continue
        assert type(parsed).parse(str(parsed)) == parsed  # whatever parses, round-trips


# --- nonces ---------------------------------------------------------------------------------------


def test_nonce_lifecycle_with_explicit_now() -> None:
    nonces = NonceManager(SECRET, lifetime=60.0)
    nonce = nonces.issue(now=100.0)
    assert len(nonce) == 56 and nonce == nonce.lower() and nonce.isalnum()
    assert nonces.check(nonce, 100.0) is NonceState.VALID
    assert nonces.check(nonce, 160.0) is NonceState.VALID  # exactly at the lifetime
    assert nonces.check(nonce, 160.002) is NonceState.STALE
    assert nonces.check(nonce, 99.0) is NonceState.STALE  # dated after now: monotonic clock restarted
    # Another manager with the same secret (e.g. after a restart) still recognises it: stateless.
    assert NonceManager(SECRET, lifetime=60.0).check(nonce, 130.0) is NonceState.VALID


def test_nonces_are_unique_at_the_same_instant() -> None:
    nonces = NonceManager(SECRET, lifetime=60.0)
    issued = {nonces.issue(now=5.0) for _ in range(1000)}
    assert len(issued) == 1000
    assert all(nonces.check(n, 5.0) is NonceState.VALID for n in issued)


def test_negative_and_fractional_clocks() -> None:
    nonces = NonceManager(SECRET, lifetime=1.0)
    nonce = nonces.issue(now=-3.2345)
    assert nonces.check(nonce, -3.2345) is NonceState.VALID
    assert nonces.check(nonce, -2.2) is NonceState.STALE


def test_forged_and_garbled_nonces_are_invalid() -> None:
    nonces = NonceManager(SECRET, lifetime=60.0)
    nonce = nonces.issue(now=100.0)
    flipped = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
    assert nonces.check(flipped, 100.0) is NonceState.INVALID
    # Moving the issue time forward (to extend the lifetime) breaks the MAC.
    later = f"{int(nonce[:16], 16) + 10_000:016x}" + nonce[16:]
    assert nonces.check(later, 100.0) is NonceState.INVALID
    other = NonceManager(b"another secret of 32 bytes......", lifetime=60.0)
    assert other.check(nonce, 100.0) is NonceState.INVALID
    for garbage in ["", "abc", nonce.upper(), nonce + "0", nonce[:-1], " " + nonce[1:], "é" * 56]:
        assert nonces.check(garbage, 100.0) is NonceState.INVALID


def test_nonce_manager_misuse() -> None:
    with pytest.raises(LocalProtocolError, match="at least 16 bytes"):
        NonceManager(b"short", lifetime=60.0)
    with pytest.raises(LocalProtocolError, match="lifetime must be positive"):
        NonceManager(SECRET, lifetime=0.0)
    with pytest.raises(LocalProtocolError, match="finite"):
        NonceManager(SECRET, lifetime=1.0).issue(float("nan"))


# --- verify ---------------------------------------------------------------------------------------


def _answer(nonces: NonceManager, now: float, password: str = "12345678", **kwargs: object) -> Credentials:
    challenge = Challenge(realm=DOMAIN, nonce=nonces.issue(now), **kwargs)  # type: ignore[arg-type]
    return authorization_for(challenge, DEVICE, password, "REGISTER", PLATFORM_URI, cnonce="abc123")


@pytest.mark.parametrize("algorithm", list(DigestAlgorithm))
@pytest.mark.parametrize("qop", [(), ("auth",), ("auth-int",), ("auth-int", "auth")])
def test_verify_ok_for_every_algorithm_and_qop(algorithm: DigestAlgorithm, qop: tuple[str, ...]) -> None:
    nonces = NonceManager(SECRET, lifetime=60.0)
    creds = _answer(nonces, 10.0, algorithm=algorithm, qop=qop)
    assert creds.qop == ("auth" if "auth" in qop else "auth-int" if qop else None)
    parsed = Credentials.parse(str(creds))
    assert verify(parsed, "12345678", "REGISTER", 20.0, nonces, DOMAIN) is AuthResult.OK
    assert verify(parsed, "wrong", "REGISTER", 20.0, nonces, DOMAIN) is AuthResult.BAD_RESPONSE


def test_verify_paths() -> None:
    nonces = NonceManager(SECRET, lifetime=60.0)
    creds = _answer(nonces, 10.0, qop=("auth",))
    assert verify(creds, "12345678", "REGISTER", 10.0, nonces, DOMAIN) is AuthResult.OK
    assert verify(creds, "1234567", "REGISTER", 10.0, nonces, DOMAIN) is AuthResult.BAD_RESPONSE
    assert verify(creds, "12345678", "INVITE", 10.0, nonces, DOMAIN) is AuthResult.BAD_RESPONSE
    assert verify(creds, "12345678", "REGISTER", 10.0, nonces, "3402000001") is AuthResult.WRONG_REALM
    # Right password on an expired nonce: stale (retry without re-prompting); wrong password: bad.
    assert verify(creds, "12345678", "REGISTER", 71.0, nonces, DOMAIN) is AuthResult.STALE_NONCE
    assert verify(creds, "wrong", "REGISTER", 71.0, nonces, DOMAIN) is AuthResult.BAD_RESPONSE
    # Upper-case hex from sloppy firmware is accepted.
    upper = Credentials.parse(str(creds).replace(creds.response, creds.response.upper()))
    assert verify(upper, "12345678", "REGISTER", 10.0, nonces, DOMAIN) is AuthResult.OK
    # Tampering with nc or cnonce breaks the digest.
    tampered = Credentials.parse(str(creds).replace("nc=00000001", "nc=00000002"))
    assert verify(tampered, "12345678", "REGISTER", 10.0, nonces, DOMAIN) is AuthResult.BAD_RESPONSE


def test_verify_forged_nonce_even_with_right_digest() -> None:
    nonces = NonceManager(SECRET, lifetime=60.0)
    challenge = Challenge(realm=DOMAIN, nonce="forged-nonce-of-an-attacker")
    creds = authorization_for(challenge, DEVICE, "12345678", "REGISTER", PLATFORM_URI, "c")
    assert verify(creds, "12345678", "REGISTER", 10.0, nonces, DOMAIN) is AuthResult.BAD_NONCE


def test_verify_policy_on_algorithms() -> None:
    nonces = NonceManager(SECRET, lifetime=60.0)
    creds = _answer(nonces, 0.0, algorithm=DigestAlgorithm.SHA256)
    md5_only = {DigestAlgorithm.MD5}
    assert verify(creds, "12345678", "REGISTER", 1.0, nonces, DOMAIN, allowed=md5_only) is AuthResult.UNSUPPORTED_ALGORITHM
    assert verify(creds, "12345678", "REGISTER", 1.0, nonces, DOMAIN) is AuthResult.OK


def test_verify_auth_int_checks_the_body() -> None:
    nonces = NonceManager(SECRET, lifetime=60.0)
    challenge = Challenge(realm=DOMAIN, nonce=nonces.issue(0.0), qop=("auth-int",))
    creds = authorization_for(challenge, DEVICE, "p", "MESSAGE", PLATFORM_URI, "c", nc=255, body=b"<x/>")
    assert creds.nc == "000000ff"
    assert verify(creds, "p", "MESSAGE", 1.0, nonces, DOMAIN, body=b"<x/>") is AuthResult.OK
    assert verify(creds, "p", "MESSAGE", 1.0, nonces, DOMAIN, body=b"<y/>") is AuthResult.BAD_RESPONSE


def test_verify_refuses_inconsistent_hand_built_credentials() -> None:
    nonces = NonceManager(SECRET, lifetime=60.0)
    nonce = nonces.issue(0.0)
    no_cnonce = Credentials("u", DOMAIN, nonce, "sip:x", "0" * 32, DigestAlgorithm.MD5_SESS)
    assert verify(no_cnonce, "p", "REGISTER", 1.0, nonces, DOMAIN) is AuthResult.BAD_RESPONSE
    no_nc = Credentials("u", DOMAIN, nonce, "sip:x", "0" * 32, qop="auth", cnonce="c")
    assert verify(no_nc, "p", "REGISTER", 1.0, nonces, DOMAIN) is AuthResult.BAD_RESPONSE
    non_ascii = Credentials("u", DOMAIN, nonce, "sip:x", "é" * 32)
    assert verify(non_ascii, "p", "REGISTER", 1.0, nonces, DOMAIN) is AuthResult.BAD_RESPONSE


# --- client side ----------------------------------------------------------------------------------


def test_authorization_for_sess_without_qop_sends_cnonce() -> None:
    challenge = Challenge(realm="r", nonce="n", algorithm=DigestAlgorithm.MD5_SESS)
    creds = authorization_for(challenge, "u", "p", "REGISTER", "sip:x", "cn")
    assert (creds.qop, creds.nc, creds.cnonce) == (None, None, "cn")
    ha1 = md5(md5("u:r:p") + ":n:cn")
    expected = md5(f"{ha1}:n:{md5('REGISTER:sip:x')}")
    assert creds.response == expected
    assert Credentials.parse(str(creds)) == creds


def test_authorization_for_errors() -> None:
    with pytest.raises(MalformedMessage, match='^challenge offers no supported qop: "auth-conf"$'):
        authorization_for(Challenge("r", "n", qop=("auth-conf",)), "u", "p", "REGISTER", "sip:x", "c")
    with pytest.raises(LocalProtocolError, match="cnonce must not be empty"):
        authorization_for(Challenge("r", "n"), "u", "p", "REGISTER", "sip:x", "")
    with pytest.raises(LocalProtocolError, match="nc out of range: 0"):
        authorization_for(Challenge("r", "n", qop=("auth",)), "u", "p", "REGISTER", "sip:x", "c", nc=0)


def test_compute_response_misuse() -> None:
    with pytest.raises(LocalProtocolError, match="MD5-sess needs a cnonce"):
        compute_response(DigestAlgorithm.MD5_SESS, "u", "r", "p", "REGISTER", "sip:x", "n")
    with pytest.raises(LocalProtocolError, match='qop "auth" needs nc and cnonce'):
        compute_response(DigestAlgorithm.MD5, "u", "r", "p", "REGISTER", "sip:x", "n", qop="auth")
    with pytest.raises(LocalProtocolError, match='unsupported qop "auth-conf"'):
        compute_response(DigestAlgorithm.MD5, "u", "r", "p", "REGISTER", "sip:x", "n", "auth-conf", "1", "c")
