"""The policy's per-call values (server/policy/model.py and friends) are made without the frozen dataclass's
``object.__setattr__`` per field in a pure build, and stay what they were: same signature, same values, frozen."""

from __future__ import annotations

import dataclasses
import inspect
import sys
from dataclasses import dataclass, field

import pytest

from server.billing.model import BillingEvent
from server.policy import ledger, model, queries
from server.policy.model import slot_setting_init

PER_CALL = (model.SessionKey, model.MediaComponent, model.AppSession, model.Grant, model.Deny, model.DialogRef,
            model.Reservation, ledger.Change, queries.PolicyCall)


def _twins() -> tuple[type, type]:
    def make() -> type:
        @dataclass(frozen=True, slots=True)
        class Value:
            a: int
            b: str = "b"
            c: tuple[int, ...] = field(default=(), kw_only=True)
            d: int = field(kw_only=True)
            e: str | None = field(init=False, default=None, compare=False)
            f: int = field(init=False, repr=False, compare=False)

            def __post_init__(self) -> None:
                object.__setattr__(self, "f", self.a * 2)

        return Value

    return make(), make()


def test_the_slot_setting_init_keeps_signature_values_and_frozenness() -> None:
    plain, fast = _twins()
    assert slot_setting_init(fast) is True
    assert str(inspect.signature(fast)) == str(inspect.signature(plain))
    for args, kwargs in (((1,), {"d": 4}), ((1, "x"), {"c": (1, 2), "d": 5})):
        a, b = plain(*args, **kwargs), fast(*args, **kwargs)
        assert repr(a).replace(plain.__qualname__, "V") == repr(b).replace(fast.__qualname__, "V")
        assert (b.a, b.b, b.c, b.d, b.e, b.f) == (a.a, a.b, a.c, a.d, a.e, a.f)
        assert hash(b) == hash(a)
        with pytest.raises(dataclasses.FrozenInstanceError):
            b.a = 9  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            del b.b  # type: ignore[misc]
    with pytest.raises(TypeError):
        fast(1)  # d is required, as in the dataclass's own
    with pytest.raises(TypeError):
        fast(1, "b", (), 4)  # c and d are keyword-only


def test_a_default_factory_or_a_class_without_slots_keeps_its_init() -> None:
    @dataclass(frozen=True, slots=True)
    class Listed:
        items: list[int] = field(default_factory=list)

    @dataclass(frozen=True)
    class Unslotted:
        a: int

    inits = (Listed.__init__, Unslotted.__init__)
    assert slot_setting_init(Listed) is False
    assert slot_setting_init(Unslotted) is False
    assert (Listed.__init__, Unslotted.__init__) == inits


@pytest.mark.parametrize("cls", PER_CALL, ids=lambda c: c.__name__)
def test_the_per_call_values_set_their_fields_through_the_slots(cls: type) -> None:
    pure = str(sys.modules[cls.__module__].__file__).endswith(".py")
    if pure:
        code = vars(cls)["__init__"].__code__
        # The dataclass's frozen __init__ calls __dataclass_builtins_object__.__setattr__ once per field.
        assert "__setattr__" not in code.co_names and "__dataclass_builtins_object__" not in code.co_names
    else:  # compiled: native classes, their own native __init__
        assert slot_setting_init(cls) is False


def test_the_per_call_values_are_what_they_were() -> None:
    key = model.SessionKey("c1", "t1", model.Side.ORIG)
    assert hash(key) == hash(("c1", "t1", model.Side.ORIG)) and str(key) == "c1;t1;orig"
    comp = model.MediaComponent(uplink_kbps=64, downlink_kbps=128, max_latency_ms=80)
    assert (comp.number, comp.max_loss_ppm, comp.max_jitter_ms, comp.qos_class) == (1, None, None, None)
    request = model.AppSession(call_id="c1", from_tag="f1", to_tag="t1", side=model.Side.ORIG, player="sip:a@eu",
                               peer="sip:b@na", player_ip="10.0.0.1", components=(comp,))
    assert request.key == key and request.uplink_kbps == 64 and request.transit_rtt_ms == 0
    grant = model.Grant(token="ab", network="n", qos_class="q", priority=1, uplink_kbps=64, downlink_kbps=128,
                        latency_ms=80)
    res = model.Reservation(request=request, grant=grant, state=model.ReservationState.RESERVED, t_2xx=1.0,
                            deadline=33.0)
    assert (res.t_confirm, res.t_last_refresh, res.expires_s, res.interim_count, res.record_id, res.clock_offset) == (
        None, None, 0, 0, "", 0.0)
    assert res.key == key
    assert dataclasses.replace(res, interim_count=2).interim_count == 2
    change = ledger.Change(key=key, save=res)
    assert (change.delete, change.events) == (False, ())
    call = queries.PolicyCall("final", request)
    assert (call.kind, call.request, call.op, call.player, call.player_ip) == ("final", request, None, "", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.interim_count = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        model.Grant("ab", "n", "q", 1, 64, 128, 80)  # type: ignore[misc]  # keyword-only, as before


def test_an_instance_is_its_class_s_after_init_and_a_subclass_s_fields_are_set_too() -> None:
    plain, fast = _twins()
    assert slot_setting_init(fast) is True
    value = fast(1, d=4)
    assert type(value) is fast and isinstance(value, fast)

    class Sub(fast):  # type: ignore[valid-type,misc]  # shares the inherited __init__, not the twin's layout
        __slots__ = ("extra",)

    sub = Sub(2, "y", d=6)
    assert type(sub) is Sub
    assert (sub.a, sub.b, sub.c, sub.d, sub.e, sub.f) == (2, "y", (), 6, None, 4)
    assert sub == Sub(2, "y", d=6) and plain(2, "y", d=6).a == sub.a
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.a = 5  # type: ignore[misc]


# The class called with keywords: what each positional maker must make (the references of the tests below).


def _session_key_kw(call_id: str, to_tag: str, side: model.Side) -> model.SessionKey:
    return model.SessionKey(call_id, to_tag, side)


def _app_session_kw(call_id: str, from_tag: str, to_tag: str, side: model.Side, player: str, peer: str,
                    player_ip: str, components: tuple[model.MediaComponent, ...], transit_rtt_ms: int,
                    peer_access_rtt_ms: int, game_format: str, qos_text: str) -> model.AppSession:
    return model.AppSession(call_id=call_id, from_tag=from_tag, to_tag=to_tag, side=side, player=player, peer=peer,
                            player_ip=player_ip, components=components, transit_rtt_ms=transit_rtt_ms,
                            peer_access_rtt_ms=peer_access_rtt_ms, game_format=game_format, qos_text=qos_text)


def _grant_kw(token: str | None, network: str, qos_class: str, priority: int, uplink_kbps: int, downlink_kbps: int,
              latency_ms: int) -> model.Grant:
    return model.Grant(token=token, network=network, qos_class=qos_class, priority=priority,
                       uplink_kbps=uplink_kbps, downlink_kbps=downlink_kbps, latency_ms=latency_ms)


def _reservation_kw(request: model.AppSession, grant: model.Grant, state: model.ReservationState, t_2xx: float,
                    deadline: float, t_confirm: float | None, t_last_refresh: float | None, expires_s: int,
                    interim_count: int, record_id: str, clock_offset: float) -> model.Reservation:
    return model.Reservation(request=request, grant=grant, state=state, t_2xx=t_2xx, deadline=deadline,
                             t_confirm=t_confirm, t_last_refresh=t_last_refresh, expires_s=expires_s,
                             interim_count=interim_count, record_id=record_id, clock_offset=clock_offset)


def _change_kw(key: model.SessionKey, save: model.Reservation | None, delete: bool,
               events: tuple[BillingEvent, ...]) -> ledger.Change:
    return ledger.Change(key=key, save=save, delete=delete, events=events)


def _policy_call_kw(kind: queries.CallKind, request: model.AppSession | None, op: queries.PolicyOperation | None,
                    player: str, player_ip: str | None) -> queries.PolicyCall:
    return queries.PolicyCall(kind, request=request, op=op, player=player, player_ip=player_ip)


def _maker_cases() -> list[tuple[object, object, tuple[object, ...]]]:
    """(maker, its keyword twin, arguments): every positional maker of a per-call value."""
    comp = model.MediaComponent(uplink_kbps=64, downlink_kbps=128, max_latency_ms=80, qos_class="action")
    request = model.AppSession(call_id="c1", from_tag="f1", to_tag="t1", side=model.Side.TERM, player="sip:b@eu",
                               peer="sip:a@na", player_ip="10.0.0.2", components=(comp,))
    grant = model.Grant(token="ab", network="n", qos_class="q", priority=1, uplink_kbps=64, downlink_kbps=128,
                        latency_ms=80)
    res = model.Reservation(request=request, grant=grant, state=model.ReservationState.RESERVED, t_2xx=1.5,
                            deadline=33.5)
    return [
        (model.new_session_key, _session_key_kw, ("c1", "t1", model.Side.ORIG)),
        (model.new_app_session, _app_session_kw,
         ("c1", "f1", "t1", model.Side.TERM, "sip:b@eu", "sip:a@na", "10.0.0.2", (comp,), 12, 30, "pong/1", "lat=5")),
        (model.new_grant, _grant_kw, ("ab", "n", "q", 1, 64, 128, 80)),
        (model.new_grant, _grant_kw, (None, "n", "q", 1, 64, 128, 80)),
        (model.new_reservation, _reservation_kw,
         (request, grant, model.ReservationState.ACTIVE, 1.5, 33.5, 2.5, 3.5, 60, 2, "rid", -7.25)),
        (ledger.new_change, _change_kw, (request.key, res, False, ())),
        (queries.new_policy_call, _policy_call_kw, ("final", request, None, "", None)),
    ]


@pytest.mark.parametrize("case", range(len(_maker_cases())))
def test_a_positional_maker_makes_what_the_class_makes_with_keywords(case: int) -> None:
    maker, twin, args = _maker_cases()[case]
    assert callable(maker) and callable(twin)
    if str(sys.modules[maker.__module__].__file__).endswith(".py"):  # type: ignore[attr-defined]
        # The maker takes the fields in their order, as its keyword twin (which calls the class) does. (A compiled
        # build's native signatures are not read.)
        assert list(inspect.signature(maker).parameters) == list(inspect.signature(twin).parameters)
    made, expected = maker(*args), twin(*args)
    cls = type(expected)
    assert type(made) is cls and made == expected and repr(made) == repr(expected)
    for f in dataclasses.fields(cls):  # compare=False fields too (a key's hash, a request's unread key)
        assert getattr(made, f.name) == getattr(expected, f.name), f.name
    assert hash(made) == hash(expected) if cls.__hash__ is not None else True
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, first, getattr(made, first))  # (a value of the field's type: a native class checks it)


def test_the_makers_are_positional_makers_in_a_pure_build() -> None:
    for maker, twin, _ in _maker_cases():
        module = sys.modules[maker.__module__]  # type: ignore[attr-defined]
        if str(module.__file__).endswith(".py"):
            assert maker is not twin and maker.__name__.startswith("make_")  # type: ignore[attr-defined]
        else:  # compiled: the native class's attributes set by compiled code (the dataclass's init is not)
            assert maker is not twin and maker.__name__.endswith("_native")  # type: ignore[attr-defined]


def test_the_core_calls_the_native_makers_only_where_they_are_the_makers() -> None:
    # The policy core calls the compiled build's native makers by name (a direct call): only where they are the
    # makers (no slot descriptors to set through), and they make the value the class makes.
    assert model.NATIVE_MAKERS == (model.positional_maker(model.Grant) is None)
    assert model.NATIVE_MAKERS == (model.positional_maker(model.Reservation) is None)
    if model.NATIVE_MAKERS:
        grant = model._grant_native("t", "lan", "action", 5, 100, 200, 50)
        assert grant == model.Grant(token="t", network="lan", qos_class="action", priority=5, uplink_kbps=100,
                                    downlink_kbps=200, latency_ms=50)
