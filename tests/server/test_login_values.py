"""Values every login and call makes, dataclasses with a written ``__init__`` (``init=False``: the compiled build
runs a dataclass's generated one interpreted): server.auth's Authenticated and Challenge, server.proxy's Target,
_Plan and DialogParties, gamesdk.sip.digest's Credentials, AuthResult and _Tracked. Their fields, parameters, equality, hash and repr stay
what the generated ones gave, held here against reference dataclasses of the same fields. (Runs in the compiled
build too: CI's compiled pass, GAMESDK_EXPECT_COMPILED=1.)"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest

from gamesdk.sip import digest as digest_module
from gamesdk.sip.digest import AuthResult, Credentials, Verdict, _Tracked
from server.auth import Authenticated, Challenge
from server.proxy import DialogParties, Target, _Plan


@dataclass(slots=True, unsafe_hash=True)
class _Authenticated:
    user: str


@dataclass(slots=True, unsafe_hash=True)
class _Challenge:
    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    claimed: str | None = None


@dataclass(slots=True, eq=False)
class _Target:
    uri: str
    dest: tuple[str, int]
    local: bool = False
    access_network: str | None = None
    peer_domain: str | None = None
    routes: tuple[str, ...] = ()


@dataclass(slots=True, eq=False)
class _PlanRef:
    routes: list[str]
    route_popped: bool
    loop_hash: str
    max_forwards: int | None
    in_dialog: bool
    caller_local: bool
    from_peer: bool
    target: object


@dataclass(slots=True)
class _DialogParties:
    caller: tuple[tuple[str, int], ...]
    callee: tuple[tuple[str, int], ...]
    expires_at: float


@dataclass(slots=True, unsafe_hash=True, kw_only=True)
class _Credentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = "auth"
    cnonce: str | None = None
    nc: int = 1
    opaque: str | None = None


@dataclass(slots=True, unsafe_hash=True, kw_only=True)
class _AuthResult:
    ok: bool
    username: str | None = None
    algorithm: str | None = None
    stale: bool = False
    reason: str = ""
    verdict: Verdict = Verdict.WRONG


@dataclass(slots=True)
class _TrackedRef:
    issued_ms: int
    highest: int
    seen: int
    user: str


def _as(made: object, reference: object) -> None:
    """``made`` has ``reference``'s fields (names, order, values) and repr (but the class name)."""
    names = [f.name for f in dataclasses.fields(reference)]  # type: ignore[arg-type]
    assert [f.name for f in dataclasses.fields(made)] == names  # type: ignore[arg-type]
    assert [getattr(made, n) for n in names] == [getattr(reference, n) for n in names]
    ref_name = type(reference).__name__
    assert repr(made) == type(made).__name__ + repr(reference)[len(ref_name):]


def _differ(one: object, other: object) -> bool:
    return one != other


def _same(one: object) -> object:
    return one


def _hash_as(made: object, reference: object) -> None:
    # (unsafe_hash: the hash of the fields' tuple, as the generated __hash__ makes it)
    assert hash(made) == hash(reference)


def test_authenticated_and_challenge_as_the_dataclasses() -> None:
    _as(Authenticated("alice"), _Authenticated("alice"))
    _hash_as(Authenticated("alice"), _Authenticated("alice"))
    assert Authenticated(user="alice") == Authenticated("alice") and Authenticated("alice") != Authenticated("bob")
    assert _differ(Authenticated("alice"), _Authenticated("alice")) and _differ(Authenticated("alice"), "alice")
    assert {Authenticated("alice"), Authenticated("alice")} == {Authenticated("alice")}
    cases: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((407,), {}), ((401, None, (("WWW-Authenticate", "Digest x"),)), {}),
        ((403, "Wrong user name or password"), {"delay_s": 0.5, "claimed": "alice"}),
        ((403,), {"reason": "Too many", "claimed": "bob"}), ((400, "Malformed credentials: x"), {})]
    for args, kwargs in cases:
        made = Challenge(*args, **kwargs)
        reference = _Challenge(*args, **kwargs)
        _as(made, reference)
        _hash_as(made, reference)
        assert made == Challenge(*args, **kwargs) and {made: 1}[Challenge(*args, **kwargs)] == 1
    assert Challenge(403, "a") != Challenge(403, "b") and Challenge(403) != Challenge(403, delay_s=1.0)
    assert _differ(Challenge(407), _Challenge(407))
    with pytest.raises(TypeError):
        Challenge()  # type: ignore[call-arg]


def test_the_proxys_target_and_plan_as_the_dataclasses() -> None:
    cases: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        (("sip:b@h", ("10.0.0.1", 5060)), {}),
        (("sip:b@h", ("10.0.0.1", 5060), True), {"access_network": "lan", "routes": ("<sip:p>",)}),
        (("sip:b@h", ("10.0.0.2", 5070)), {"peer_domain": "na.test"})]
    for args, kwargs in cases:
        made = Target(*args, **kwargs)
        _as(made, _Target(*args, **kwargs))
        assert made == _same(made) and made != Target(*args, **kwargs)  # by identity, as eq=False had it
        assert hash(made) == object.__hash__(made)
    target = Target("sip:b@h", ("10.0.0.1", 5060))
    for plan_args in [(["<sip:x;lr>"], True, "", 70, False, True, False, None),
                      ([], False, "abc", None, True, False, True, target)]:
        plan = _Plan(*plan_args)
        _as(plan, _PlanRef(*plan_args))
        assert plan != _Plan(*plan_args)


def test_dialog_parties_as_the_dataclass() -> None:
    args = (("10.0.0.1", 5060), ("10.0.0.9", 5060)), (("10.0.0.2", 5062),), 1234.5
    made = DialogParties(*args)
    _as(made, _DialogParties(*args))
    assert made == DialogParties(*args) and made == DialogParties(caller=args[0], callee=args[1],
                                                                  expires_at=args[2])
    assert made != DialogParties(args[0], args[1], 1.0) and _differ(made, _DialogParties(*args))
    with pytest.raises(TypeError):  # eq without frozen: unhashable, as the dataclass was
        hash(made)
    made.expires_at = 5.0  # the proxy keeps it; restore_dialogs sorts by it
    assert made.expires_at == 5.0 and made.allows(("10.0.0.9", 5060), ("10.0.0.2", 5062))


def test_credentials_as_the_dataclass() -> None:
    cases: list[dict[str, Any]] = [
        {"username": "alice", "realm": "r", "nonce": "n", "uri": "sip:r", "response": "ab"},
        {"username": "bob", "realm": "r", "nonce": "n2", "uri": "sip:x@r", "response": "cd", "algorithm": "SHA-256",
         "qop": None, "cnonce": "c", "nc": 7, "opaque": "o"}]
    for kwargs in cases:
        made = Credentials(**kwargs)
        reference = _Credentials(**kwargs)
        _as(made, reference)
        _hash_as(made, reference)
        assert made == Credentials(**kwargs) and _differ(made, reference) and str(made) == made.to_header_value()
        assert dataclasses.replace(made, nc=9).nc == 9 and dataclasses.replace(made, nc=9) != made
    with pytest.raises(TypeError):  # keyword-only, as before
        Credentials("alice", "r", "n", "sip:r", "ab")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Credentials(username="alice", realm="r", nonce="n", uri="sip:r")  # type: ignore[call-arg]
    parsed = Credentials.parse_untrusted('Digest username="a",realm="r",nonce="n",uri="sip:r",response="AB",'
                                         'cnonce="c",nc=00000002,qop=auth')
    assert parsed == Credentials(username="a", realm="r", nonce="n", uri="sip:r", response="ab", cnonce="c", nc=2)
    assert type(parsed) is Credentials


def test_a_subclass_parses_credentials_into_itself() -> None:
    class Mine(Credentials):
        __slots__ = ()

    if not str(digest_module.__file__).endswith(".py"):
        # The compiled build: a compiled class makes no instance of an interpreted subclass, parsed or not.
        with pytest.raises(TypeError):
            Mine(username="a", realm="r", nonce="n", uri="sip:r", response="ab")
        return
    value = 'Digest username="a", realm="r", nonce="n", uri="sip:r", response="ab", opaque="o"'
    mine = Mine.parse_untrusted(value)
    assert type(mine) is Mine and mine.opaque == "o" and mine.username == "a"


def test_auth_results_and_tracked_nonces_as_the_dataclasses() -> None:
    cases: list[dict[str, Any]] = [{"ok": True, "username": "alice", "algorithm": "MD5", "reason": "ok",
                                    "verdict": Verdict.OK}, {"ok": False},
                                   {"ok": False, "username": "bob", "stale": True, "verdict": Verdict.CHALLENGE}]
    for kwargs in cases:
        made = AuthResult(**kwargs)
        reference = _AuthResult(**kwargs)
        _as(made, reference)
        _hash_as(made, reference)
        assert made == AuthResult(**kwargs) and _differ(made, reference)
    assert AuthResult(ok=False).verdict is Verdict.WRONG
    with pytest.raises(TypeError):
        AuthResult(True)  # type: ignore[call-arg]
    tracked = _Tracked(1000, 1, 1, "alice")
    _as(tracked, _TrackedRef(1000, 1, 1, "alice"))
    assert tracked == _Tracked(1000, 1, 1, "alice") and tracked != _Tracked(1000, 2, 1, "alice")
    tracked.highest = 5  # the nonce manager moves it along
    assert tracked.highest == 5
