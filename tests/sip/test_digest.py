"""Digest authentication: RFC 7616 / RFC 2617 vectors, challenges, client choice, nonce expiry and replay."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.digest import (
    Challenge,
    Credentials,
    DigestAuthenticator,
    DigestClient,
    NonceManager,
    NonceStatus,
    choose_challenge,
    compute_ha1,
    compute_response,
    parse_auth_params_untrusted,
    verify_response,
)

# RFC 7616 section 3.9.1 (password with a lower-case "of", erratum 4495).
RFC7616_REALM = "http-auth@example.org"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}
RFC7616_CHALLENGE = (
    'Digest\r\n    realm="http-auth@example.org",\r\n    qop="auth, auth-int",\r\n'
    "    algorithm={alg},\r\n"
    '    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\r\n'
    '    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
RFC7616_AUTHORIZATION = (
    'Digest username="Mufasa",\r\n    realm="http-auth@example.org",\r\n    uri="/dir/index.html",\r\n'
    "    algorithm={alg},\r\n"
    '    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\r\n    nc=00000001,\r\n'
    '    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",\r\n    qop=auth,\r\n'
    '    response="{response}",\r\n    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


@pytest.mark.parametrize("alg", ["MD5", "SHA-256"])
def test_rfc7616_vector_response(alg: str) -> None:
    ha1 = compute_ha1("Mufasa", RFC7616_REALM, "Circle of Life", alg)
    got = compute_response(
        ha1=ha1,
        nonce=RFC7616_NONCE,
        method="GET",
        uri="/dir/index.html",
        algorithm=alg,
        qop="auth",
        nc=1,
        cnonce=RFC7616_CNONCE,
    )
    assert got == RFC7616_RESPONSES[alg]


@pytest.mark.parametrize("alg", ["MD5", "SHA-256"])
def test_rfc7616_vector_through_client(alg: str) -> None:
    client = DigestClient("Mufasa", "Circle of Life", cnonce=lambda: RFC7616_CNONCE)
    cred = client.authorize([RFC7616_CHALLENGE.format(alg=alg)], method="GET", uri="/dir/index.html")
    assert cred.response == RFC7616_RESPONSES[alg]
    assert cred.opaque == RFC7616_OPAQUE
    assert cred.algorithm == alg
    assert cred.nc == 1
    # The value we would send parses back to the same credentials.
    assert Credentials.parse_untrusted(cred.to_header_value()) == cred


@pytest.mark.parametrize("alg", ["MD5", "SHA-256"])
def test_rfc7616_authorization_header_verifies(alg: str) -> None:
    text = RFC7616_AUTHORIZATION.format(alg=alg, response=RFC7616_RESPONSES[alg])
    cred = Credentials.parse_untrusted(text)
    assert (cred.username, cred.uri, cred.nc, cred.qop) == ("Mufasa", "/dir/index.html", 1, "auth")
    ha1 = compute_ha1("Mufasa", RFC7616_REALM, "Circle of Life", alg)
    assert verify_response(cred, ha1=ha1, method="GET")
    assert not verify_response(cred, ha1=ha1, method="POST")
    wrong = compute_ha1("Mufasa", RFC7616_REALM, "Circle Of Life", alg)
    assert not verify_response(cred, ha1=wrong, method="GET")


def test_rfc2617_vector() -> None:
    # RFC 2617 section 3.5 (password "Circle Of Life"), MD5 with qop=auth.
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    got = compute_response(
        ha1=ha1,
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        method="GET",
        uri="/dir/index.html",
        nc=1,
        cnonce="0a4f113b",
    )
    assert got == "6629fae49393a05397450978507c4ef1"


def test_challenge_parse_rfc_text() -> None:
    c = Challenge.parse_untrusted(RFC7616_CHALLENGE.format(alg="SHA-256"))
    assert c.realm == RFC7616_REALM
    assert c.nonce == RFC7616_NONCE
    assert c.algorithm == "SHA-256"
    assert c.qop == ("auth", "auth-int")
    assert c.opaque == RFC7616_OPAQUE
    assert not c.stale


def test_challenge_format_and_round_trip() -> None:
    c = Challenge(realm='eu "games"', nonce="abc", algorithm="SHA-256", opaque="o", stale=True)
    text = c.to_header_value()
    assert text == (
        'Digest realm="eu \\"games\\"", nonce="abc", opaque="o", algorithm=SHA-256, qop="auth", stale=TRUE'
    )
    assert Challenge.parse_untrusted(text) == c


def test_challenge_without_algorithm_means_md5() -> None:
    c = Challenge.parse_untrusted('Digest realm="r", nonce="n"')
    assert c.algorithm == "MD5"
    assert c.qop == ()


def test_choose_challenge_takes_topmost_supported() -> None:
    values = [
        'Basic realm="r"',
        'Digest realm="r", nonce="n0", algorithm=SHA-999, qop="auth"',
        'Digest realm="r", nonce="n1", algorithm=MD5, qop="auth-int"',
        "Digest garbage",
        'Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth"',
        'Digest realm="r", nonce="n3", algorithm=MD5, qop="auth"',
    ]
    assert choose_challenge(values).nonce == "n2"
    # A client that only does MD5 (like SIPp 3.6.1) skips the SHA-256 challenge.
    assert choose_challenge(values, supported=("MD5",)).nonce == "n3"
    with pytest.raises(RemoteProtocolError, match="no usable digest challenge"):
        choose_challenge(values[:4])


def test_client_counts_nonce_uses() -> None:
    cnonces = (f"c{i}" for i in itertools.count())
    client = DigestClient("alice", "pw", cnonce=lambda: next(cnonces))
    challenge = 'Digest realm="r", nonce="n", algorithm=MD5, qop="auth"'
    first = client.authorize([challenge], method="REGISTER", uri="sip:eu.example")
    second = client.authorize([challenge], method="INVITE", uri="sip:bob@eu.example")
    assert (first.nc, second.nc) == (1, 2)
    assert (first.cnonce, second.cnonce) == ("c0", "c1")
    assert "nc=00000002" in second.to_header_value()


def test_client_rfc2069_challenge_without_qop() -> None:
    client = DigestClient("Mufasa", "CircleOfLife", cnonce=lambda: "unused")
    cred = client.authorize(
        ['Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"'],
        method="GET",
        uri="/dir/index.html",
    )
    # RFC 2069 section 2.4 example.
    assert cred.response == "1949323746fe6a43ef61f9606e7febea"
    assert cred.qop is None and "nc=" not in cred.to_header_value()


# --- server side ---------------------------------------------------------------------------------------

SECRET = b"0123456789abcdef0123456789abcdef"
PASSWORDS = {"alice": "wonderland", "bob": "builder"}


def counter_bytes() -> Callable[[int], bytes]:
    counter = itertools.count()
    return lambda n: next(counter).to_bytes(n, "big")


def make_auth(
    algorithms: tuple[str, ...] = ("SHA-256", "MD5"), nonce_lifetime_s: float = 300.0
) -> DigestAuthenticator:
    return DigestAuthenticator(
        "eu.example",
        secret=SECRET,
        random_bytes=counter_bytes(),
        algorithms=algorithms,
        nonce_lifetime_s=nonce_lifetime_s,
    )


def lookup(username: str, algorithm: str) -> str | None:
    pw = PASSWORDS.get(username)
    return None if pw is None else compute_ha1(username, "eu.example", pw, algorithm)


def login(auth: DigestAuthenticator, now: float, user: str = "alice", pw: str = "wonderland") -> str:
    client = DigestClient(user, pw, cnonce=lambda: "cn")
    return client.authorize(auth.challenges(now), method="REGISTER", uri="sip:eu.example").to_header_value()


def test_challenges_follow_configured_order() -> None:
    values = make_auth().challenges(10.0)
    assert [Challenge.parse_untrusted(v).algorithm for v in values] == ["SHA-256", "MD5"]
    # One fresh nonce shared by the challenge set.
    assert len({Challenge.parse_untrusted(v).nonce for v in values}) == 1
    md5_first = make_auth(("MD5", "SHA-256")).challenges(10.0)
    assert Challenge.parse_untrusted(md5_first[0]).algorithm == "MD5"


@pytest.mark.parametrize("algorithms", [("SHA-256", "MD5"), ("MD5", "SHA-256")])
def test_verify_accepts_right_password(algorithms: tuple[str, ...]) -> None:
    auth = make_auth(algorithms)
    result = auth.verify(login(auth, 10.0), method="REGISTER", now=11.0, lookup_ha1=lookup)
    assert result.ok and result.username == "alice" and result.algorithm == algorithms[0]


def test_verify_refuses_wrong_password_unknown_user_and_garbage() -> None:
    auth = make_auth()
    bad = auth.verify(login(auth, 10.0, pw="nope"), method="REGISTER", now=11.0, lookup_ha1=lookup)
    assert not bad.ok and not bad.stale and bad.reason == "wrong response"
    ghost = auth.verify(login(auth, 10.0, user="eve"), method="REGISTER", now=11.0, lookup_ha1=lookup)
    assert not ghost.ok and ghost.reason == "unknown user"
    assert not auth.verify(None, method="REGISTER", now=1.0, lookup_ha1=lookup).ok
    junk = auth.verify('Digest username="x', method="REGISTER", now=1.0, lookup_ha1=lookup)
    assert not junk.ok and junk.username is None


def test_verify_refuses_method_change_and_uri_mismatch() -> None:
    auth = make_auth()
    value = login(auth, 10.0)
    assert not auth.verify(value, method="INVITE", now=11.0, lookup_ha1=lookup).ok
    moved = auth.verify(value, method="REGISTER", now=11.0, lookup_ha1=lookup, request_uri="sip:na.example")
    assert not moved.ok and "Request-URI" in moved.reason
    ok = auth.verify(value, method="REGISTER", now=11.0, lookup_ha1=lookup, request_uri="sip:eu.example")
    assert ok.ok


def test_replayed_nonce_count_is_refused_and_next_count_accepted() -> None:
    auth = make_auth()
    nonce = Challenge.parse_untrusted(auth.challenges(10.0)[0]).nonce
    client = DigestClient("alice", "wonderland", cnonce=lambda: "cn")
    challenge = Challenge(realm="eu.example", nonce=nonce, algorithm="SHA-256")
    first = client.answer(challenge, method="REGISTER", uri="sip:eu.example").to_header_value()
    assert auth.verify(first, method="REGISTER", now=11.0, lookup_ha1=lookup).ok
    replay = auth.verify(first, method="REGISTER", now=12.0, lookup_ha1=lookup)
    assert not replay.ok and not replay.stale and "replayed" in replay.reason
    second = client.answer(challenge, method="INVITE", uri="sip:bob@eu.example").to_header_value()
    assert auth.verify(second, method="INVITE", now=13.0, lookup_ha1=lookup).ok
    # Going back to an earlier count after a later one is also a replay.
    assert not auth.verify(first, method="REGISTER", now=14.0, lookup_ha1=lookup).ok


def test_expired_nonce_is_stale_only_with_the_right_password() -> None:
    auth = make_auth(nonce_lifetime_s=30.0)
    good = login(auth, 100.0)
    late = auth.verify(good, method="REGISTER", now=131.0, lookup_ha1=lookup)
    assert not late.ok and late.stale
    assert auth.verify(login(auth, 100.0), method="REGISTER", now=129.9, lookup_ha1=lookup).ok
    wrong_late = auth.verify(login(auth, 100.0, pw="x"), method="REGISTER", now=131.0, lookup_ha1=lookup)
    assert not wrong_late.ok and not wrong_late.stale
    stale_values = auth.challenges(131.0, stale=late.stale)
    assert all(Challenge.parse_untrusted(v).stale for v in stale_values)


def test_foreign_or_tampered_nonce_is_not_accepted() -> None:
    ours = make_auth()
    other = DigestAuthenticator("eu.example", secret=b"x" * 32, random_bytes=counter_bytes())
    foreign = ours.verify(login(other, 10.0), method="REGISTER", now=11.0, lookup_ha1=lookup)
    # Right password for a nonce we did not issue (e.g. before a restart with a new secret): stale, not ok.
    assert not foreign.ok and foreign.stale
    nonce = ours.nonces.issue(10.0)
    tampered = ("A" if nonce[0] != "A" else "B") + nonce[1:]
    assert ours.nonces.check(tampered, 1, 11.0) is NonceStatus.INVALID
    assert ours.nonces.check("short", 1, 11.0) is NonceStatus.INVALID
    assert ours.nonces.check(nonce, 1, 11.0) is NonceStatus.VALID
    # Issued "in the future" (clock went back): not ours to trust.
    assert ours.nonces.check(ours.nonces.issue(50.0), 1, 11.0) is NonceStatus.INVALID


def test_credentials_without_qop_are_refused() -> None:
    auth = make_auth(("MD5",))
    nonce = auth.nonces.issue(10.0)
    client = DigestClient("alice", "wonderland", cnonce=lambda: "cn")
    legacy = client.answer(Challenge(realm="eu.example", nonce=nonce, qop=()), method="REGISTER", uri="sip:x")
    result = auth.verify(legacy.to_header_value(), method="REGISTER", now=11.0, lookup_ha1=lookup)
    assert not result.ok and "qop" in result.reason


def test_algorithm_not_offered_is_refused() -> None:
    auth = make_auth(("SHA-256",))
    nonce = auth.nonces.issue(10.0)
    client = DigestClient("alice", "wonderland", cnonce=lambda: "cn")
    md5 = client.answer(Challenge(realm="eu.example", nonce=nonce), method="REGISTER", uri="sip:x")
    assert not auth.verify(md5.to_header_value(), method="REGISTER", now=11.0, lookup_ha1=lookup).ok


def test_nonce_tracker_is_bounded_and_forgotten_nonces_never_replay() -> None:
    manager = NonceManager(SECRET, counter_bytes(), max_tracked=8, lifetime_s=1000.0)
    nonces = [manager.issue(float(i)) for i in range(40)]
    for i, nonce in enumerate(nonces):
        assert manager.use(nonce, 1, 40.0 + i) is NonceStatus.VALID
        assert manager.tracked <= 8
    # The oldest nonces were forgotten: using them again (with any count) is stale, not a fresh start.
    assert manager.use(nonces[0], 1, 100.0) is NonceStatus.STALE
    assert manager.use(nonces[0], 2, 100.0) is NonceStatus.STALE
    # The newest are still tracked, so their replays are caught.
    assert manager.use(nonces[-1], 1, 100.0) is NonceStatus.REPLAYED
    assert manager.use(nonces[-1], 2, 100.0) is NonceStatus.VALID


def test_expired_entries_leave_the_tracker() -> None:
    manager = NonceManager(SECRET, counter_bytes(), max_tracked=4, lifetime_s=10.0)
    for i in range(4):
        manager.use(manager.issue(float(i)), 1, float(i))
    fresh = manager.issue(100.0)
    assert manager.use(fresh, 1, 100.0) is NonceStatus.VALID  # 5 > 4 entries: the expired four go
    assert manager.tracked == 1


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        NonceManager(b"short", counter_bytes())
    with pytest.raises(ValueError, match="unsupported digest algorithm"):
        make_auth(("SHA-1",))
    with pytest.raises(ValueError, match="control character"):
        Challenge(realm="a\r\nVia: x", nonce="n").to_header_value()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Digest",
        'Digest realm="unterminated',
        "Digest realm=a realm=b",
        'Digest realm="a", realm="b"',
        "Digest =x",
        'Digest username="u", realm="r", nonce="n", uri="u", response="r", qop=auth, nc=1, cnonce="c"',
        'Digest username="u", realm="r", nonce="n", uri="u", qop=auth, nc=00000001, cnonce="c"',
    ],
)
def test_malformed_credentials_raise_the_parse_error(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        Credentials.parse_untrusted(text)
    assert info.value.status_hint == 400


@given(st.text(max_size=300))
def test_auth_parsers_raise_only_remote_protocol_error(text: str) -> None:
    for parse in (parse_auth_params_untrusted, Challenge.parse_untrusted, Credentials.parse_untrusted):
        try:
            parse(text)
        except RemoteProtocolError:
            pass


@given(st.text(max_size=200))
def test_verify_never_raises(text: str) -> None:
    auth = make_auth()
    for value in (text, "Digest " + text, f'Digest username="alice", realm="eu.example", {text}'):
        assert not auth.verify(value, method="REGISTER", now=1.0, lookup_ha1=lookup).ok


_VALUE = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"), max_size=40)


@given(
    realm=_VALUE,
    nonce=_VALUE,
    opaque=st.none() | _VALUE,
    stale=st.booleans(),
    alg=st.sampled_from(["MD5", "SHA-256", "SHA-512-256"]),
)
def test_challenge_round_trip_property(
    realm: str, nonce: str, opaque: str | None, stale: bool, alg: str
) -> None:
    c = Challenge(realm=realm, nonce=nonce, opaque=opaque, stale=stale, algorithm=alg)
    assert Challenge.parse_untrusted(c.to_header_value()) == c


def test_client_keeps_a_busy_nonce_while_forgetting_idle_ones() -> None:
    # A long-lived nonce in use must keep counting even after many other nonces came and went: forgetting it
    # would restart its nc at 1, which the server refuses as a replay.
    client = DigestClient("alice", "pw", cnonce=lambda: "cn")
    busy = Challenge(realm="r", nonce="busy")
    counts = []
    for i in range(200):
        counts.append(client.answer(busy, method="PUBLISH", uri="sip:r").nc)
        client.answer(Challenge(realm="r", nonce=f"idle-{i}"), method="REGISTER", uri="sip:r")
    assert counts == list(range(1, 201))
    # The idle nonces were forgotten: the first one starts over.
    assert client.answer(Challenge(realm="r", nonce="idle-0"), method="REGISTER", uri="sip:r").nc == 1


def test_kept_ha2_is_per_algorithm_method_and_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    # verify_response keeps H(method:uri): a response computed for another method, uri or algorithm must still
    # fail once the first one's HA2 is kept, and the store stays bounded.
    import gamesdk.sip.digest as digest_module
    from gamesdk.sip.digest import Credentials, compute_ha1, compute_response, verify_response

    monkeypatch.setattr(digest_module, "_HA2_CACHE", {})
    monkeypatch.setattr(digest_module, "_HA2_CACHE_MAX", 3)

    def cred(method: str, uri: str, alg: str, signed_uri: str | None = None) -> tuple[Credentials, str]:
        ha1 = compute_ha1("alice", "r", "pw", alg)
        response = compute_response(ha1=ha1, nonce="n", method=method, uri=signed_uri or uri, algorithm=alg,
                                    nc=1, cnonce="c")
        return Credentials(username="alice", realm="r", nonce="n", uri=uri, response=response, algorithm=alg,
                           cnonce="c", nc=1), ha1

    for _ in range(2):
        good, ha1 = cred("REGISTER", "sip:r", "MD5")
        assert verify_response(good, ha1=ha1, method="REGISTER")
        assert not verify_response(good, ha1=ha1, method="INVITE")
        moved, ha1 = cred("REGISTER", "sip:other", "MD5", signed_uri="sip:r")
        assert not verify_response(moved, ha1=ha1, method="REGISTER")
        sha, ha1 = cred("REGISTER", "sip:r", "SHA-256")
        assert verify_response(sha, ha1=ha1, method="REGISTER")
        assert len(digest_module._HA2_CACHE) <= 3
