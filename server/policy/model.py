"""server/policy/model: the N5-shaped values the policy server takes and returns.

Shaped after 3GPP TS 29.514 ``Npcf_PolicyAuthorization`` (research/protocol.md A13): an *app session* with
*media components* (``marBwUl``/``marBwDl``, ``desMaxLatency``, ``desMaxLoss``, ``qosReference``), asked for as
PRELIMINARY (check the offer, hold nothing) or FINAL (reserve for the answer). Directions are always from the
player's point of view in *this* server's access network: uplink = what the player sends, downlink = what it
receives.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

__all__ = [
    "AppSession",
    "Decision",
    "Deny",
    "DialogRef",
    "EndReason",
    "Grant",
    "MediaComponent",
    "Reservation",
    "ReservationState",
    "Resource",
    "SessionKey",
    "Side",
]


class Side(str, enum.Enum):
    """Which end of the session this server's player is (the billing "side")."""

    #: The caller (the INVITE came from this server's player).
    ORIG = "orig"
    #: The callee.
    TERM = "term"


class Resource(str, enum.Enum):
    """What was short when admission failed (named in the Warning text)."""

    NETWORK = "network"  #: no access network covers the player's address
    SESSIONS = "sessions"
    LATENCY = "latency"
    LOSS = "loss"
    JITTER = "jitter"
    UPLINK = "uplink"
    DOWNLINK = "downlink"
    CLASS_SHARE = "class-share"
    REQUEST = "request"  #: the request itself is unusable (no components, negative bandwidth)
    POLICY = "policy"  #: the policy server could not be asked (timeout, unreachable)


class EndReason(str, enum.Enum):
    """Why a reservation ended (DESIGN section 5); written in the STOP billing event."""

    BYE_LOCAL = "bye-local"
    BYE_REMOTE = "bye-remote"
    QOS_FAILED = "qos-failed"
    QOS_FAILED_PEER = "qos-failed-peer"
    NOT_ESTABLISHED = "not-established"
    LEASE_EXPIRED = "lease-expired"
    REG_EXPIRED = "reg-expired"
    SERVER_RESTART = "server-restart"
    #: The other player's region reported that the session ended because this region's player went silent (a
    #: crashed game): released when that was observed, not when the lease runs out.
    PEER_REGION = "peer-region"


class ReservationState(str, enum.Enum):
    #: FINAL granted, resources held, waiting for the player's ``confirmed`` PUBLISH (deadline 32 s).
    RESERVED = "reserved"
    #: Confirmed: gate open, billing started, held while the lease is refreshed.
    ACTIVE = "active"


@dataclass(frozen=True, slots=True)
class SessionKey:
    """Idempotency key of a FINAL decision: (Call-ID, To-tag) plus the side.

    The side is part of the key because when both players are in this region the same server reserves twice
    for one dialog: once for the callee's access network and once for the caller's.
    """

    call_id: str
    to_tag: str
    side: Side
    # Keys are looked up in several tables per decision: the hash is computed once.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The side's value, not the member: an Enum member's hash is a Python call (equal keys have equal values).
        object.__setattr__(self, "_hash", hash((self.call_id, self.to_tag, self.side._value_)))

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return f"{self.call_id};{self.to_tag};{self.side.value}"


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaComponent:
    """One media component (one ``m=`` line) of an app session."""

    number: int = 1
    uplink_kbps: int
    """What the player sends (``marBwUl``), kbit/s."""
    downlink_kbps: int
    """What the player receives (``marBwDl``), kbit/s."""
    max_latency_ms: int
    """Round-trip budget (``gsdk-qos lat``, ``desMaxLatency``), ms."""
    max_loss_ppm: int | None = None
    """``gsdk-qos loss`` (``desMaxLoss`` * 1e6); ``None`` = not checked."""
    max_jitter_ms: int | None = None
    """``gsdk-qos jit``; ``None`` = not checked."""
    qos_class: str | None = None
    """``gsdk-class`` (``qosReference``); unknown or ``None`` = the region's default class."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AppSession:
    """A request to the policy server for this server's player in one session."""

    call_id: str
    from_tag: str
    to_tag: str = ""
    """Empty on the INVITE path (PRELIMINARY); the 2xx's To-tag for FINAL."""
    side: Side
    player: str
    """AOR of this server's player (``sip:alice@eu.example``)."""
    peer: str
    """AOR of the other player."""
    player_ip: str
    """The address the player registered from; selects the access network (longest prefix)."""
    components: tuple[MediaComponent, ...]
    transit_rtt_ms: int = 0
    """Measured round-trip between this region and the peer's region (federation table); 0 = same region."""
    peer_access_rtt_ms: int = 0
    """The peer's access round-trip as stated by its side; 0 when not known yet."""
    game_format: str = ""
    """The negotiated ``gsdk-format`` (billing only)."""
    qos_text: str = ""
    """The negotiated ``gsdk-qos`` value as text (billing only)."""
    # Made once, when first read (a FINAL reads it several times; a PRELIMINARY never does).
    _key: SessionKey | None = field(init=False, default=None, repr=False, compare=False)

    @property
    def key(self) -> SessionKey:
        key = self._key
        if key is None:
            key = new_session_key(self.call_id, self.to_tag, self.side)
            object.__setattr__(self, "_key", key)
        return key

    @property
    def uplink_kbps(self) -> int:
        return sum(c.uplink_kbps for c in self.components)

    @property
    def downlink_kbps(self) -> int:
        return sum(c.downlink_kbps for c in self.components)


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """Admission passed. For FINAL, resources are held and ``token`` goes into ``P-Media-Authorization``."""

    token: str | None
    """1*HEXDIG (RFC 3313 section 5); ``None`` for a PRELIMINARY check (nothing held)."""
    network: str
    qos_class: str
    priority: int
    uplink_kbps: int
    downlink_kbps: int
    latency_ms: int
    """The round-trip budget used: access rtt + transit + peer access."""

    @property
    def granted(self) -> bool:
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class Deny:
    """Admission failed: nothing is held. Answer 580 (or forward the 2xx) with ``Warning: 370``."""

    network: str | None
    resource: Resource
    reason: str
    """Human text for the Warning, e.g. ``insufficient uplink in eu-dsl (needs 256 kbit/s, 100 free)``."""
    status_hint: int = 580
    warning_code: int = 370

    @property
    def granted(self) -> bool:
        return False

    def warning_value(self, agent: str) -> str:
        """The ``Warning`` header value (RFC 3261 section 20.43), e.g. ``370 eu.example "..."``."""
        text = self.reason.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.warning_code} {agent} "{text}"'


Decision = Grant | Deny


@dataclass(frozen=True, slots=True, kw_only=True)
class DialogRef:
    """A dialog as a player's PUBLISH names it (RFC 4235): Call-ID and both tags, seen from the publisher."""

    call_id: str
    local_tag: str
    remote_tag: str
    player: str
    """AOR of the publisher: only its own reservations may be touched."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    """A held FINAL reservation (persisted; enough to bill it after a restart)."""

    request: AppSession
    grant: Grant
    state: ReservationState
    t_2xx: float
    """When FINAL was granted (the 2xx was forwarded): billed start (research/protocol.md (d) step 1)."""
    deadline: float
    """Confirm deadline while RESERVED, lease expiry (last refresh + Expires + slack) while ACTIVE."""
    t_confirm: float | None = None
    t_last_refresh: float | None = None
    expires_s: int = 0
    """The Expires of the last confirm/refresh (the lease without slack)."""
    interim_count: int = 0
    record_id: str = ""
    """The billing record's own identity (a fresh id per FINAL grant)."""
    clock_offset: float = 0.0
    """Wall clock minus the monotonic clock when the reservation was made (not persisted; set again by a restore).
    The wall times above are ``t_2xx`` plus monotonic elapsed time, so a wall clock step during a session
    changes neither its deadlines nor its billed duration; ``time - clock_offset`` is a time's monotonic twin."""

    @property
    def key(self) -> SessionKey:
        return self.request.key


def slot_setting_init(cls: type) -> bool:
    """Give the frozen slots dataclass ``cls`` an ``__init__`` that stores its fields straight into their slots.

    In pure Python a frozen dataclass's own ``__init__`` sets each field with ``object.__setattr__(self, name,
    value)`` (the class's ``__setattr__`` refuses), some 850 instructions a field on CPython 3.11. Here the new
    instance is first made an instance of a twin class with the same slots and no ``__setattr__`` of its own, whose
    fields plain attribute stores set (a few dozen instructions each), and then made ``cls``'s again: two class
    assignments for the whole object instead of a call per field. (An instance of a subclass, whose layout the twin
    does not share, is set through each slot's descriptor, as before.) The instances stay frozen: ``__setattr__``
    and ``__delattr__`` are the dataclass's own and still raise ``FrozenInstanceError``. The signature (positional
    and keyword-only fields, defaults), the ``init=False`` fields' defaults and ``__post_init__`` are the
    dataclass's. A compiled build's classes are native (no slot descriptors): left as they are (returns False), as
    is a class with a ``default_factory``.
    """
    plan = _slot_plan(cls)
    if plan is None:
        return False
    names, params, kw_params, stores = plan
    if "_Twin" in names:
        body = ["    if type(self) is _cls:", "        _object_setattr(self, '__class__', _Twin)"]
        body += [f"        self.{name} = {value}" for name, value in stores]
        body += ["        self.__class__ = _cls", "    else:"]
        body += [f"        _set_{name}(self, {value})" for name, value in stores]
    else:
        body = [f"    _set_{name}(self, {value})" for name, value in stores]
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    signature = ", ".join(["self", *params, *(["*", *kw_params] if kw_params else [])])
    exec(f"def __init__({signature}) -> None:\n" + "\n".join(body or ["    pass"]), names)  # noqa: S102 - our own text
    init = names["__init__"]
    init.__annotations__ = dict(getattr(vars(cls).get("__init__"), "__annotations__", {}))
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses assigning a method
    return True


def positional_maker(cls: type) -> Callable[..., Any] | None:
    """A function that makes the frozen slots dataclass ``cls``'s value from every ``init`` field passed
    positionally, in the order of ``fields(cls)`` (keyword-only ones too, none left to its default): the same value
    ``cls(**fields)`` makes, frozen, its ``init=False`` defaults and ``__post_init__`` as ever, without the type call
    and its keyword dict (some 5k of an object's 12k instructions in a pure build). The instance is made a twin
    class's, its fields stored as plain attributes, then made ``cls``'s (see :func:`slot_setting_init`). None where
    that init does not apply (a compiled build's native classes, a ``default_factory``, a subclass): call ``cls``."""
    plan = _slot_plan(cls)
    if plan is None or "_Twin" not in plan[0]:
        return None
    names, _, _, stores = plan
    args = [f.name for f in fields(cls) if f.init]
    body = ["    self = _new(_Twin)"] + [f"    self.{name} = {value}" for name, value in stores]
    body.append("    self.__class__ = _cls")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    body.append("    return self")
    names["_new"] = object.__new__
    exec(f"def make({', '.join(args)}):\n" + "\n".join(body), names)  # noqa: S102 - our own text
    make: Callable[..., Any] = names["make"]
    make.__qualname__ = make.__name__ = f"make_{cls.__name__}"
    make.__module__ = cls.__module__
    return make


def _slot_plan(cls: type) -> tuple[dict[str, Any], list[str], list[str], list[tuple[str, str]]] | None:
    """What :func:`slot_setting_init` and :func:`positional_maker` generate from: the names the code reads (the
    twin class as ``_Twin`` when ``cls`` is a plain slots class), the positional and keyword-only parameters with
    their defaults, and each slot's (field, the expression it is set to). None when they do not apply."""
    params: list[str] = []
    kw_params: list[str] = []
    stores: list[tuple[str, str]] = []  # (field, the expression it is set to)
    names: dict[str, Any] = {"_cls": cls, "_object_setattr": object.__setattr__}
    for f in fields(cls):
        slot = cls.__dict__.get(f.name)
        if type(slot) is not types.MemberDescriptorType or f.default_factory is not MISSING:
            return None
        names[f"_set_{f.name}"] = slot.__set__
        if f.default is not MISSING:
            names[f"_default_{f.name}"] = f.default
        if not f.init:
            if f.default is MISSING:
                continue  # set by __post_init__
            stores.append((f.name, f"_default_{f.name}"))
            continue
        default = "" if f.default is MISSING else f"=_default_{f.name}"
        (kw_params if f.kw_only else params).append(f"{f.name}{default}")
        stores.append((f.name, f.name))
    slots = vars(cls).get("__slots__")
    if cls.__bases__ == (object,) and isinstance(slots, tuple) and stores:
        twin = _twins.get(cls)
        if twin is None:
            twin = _twins[cls] = type(f"_{cls.__name__}Slots", (), {"__slots__": slots, "__module__": cls.__module__})
        names["_Twin"] = twin
    return names, params, kw_params, stores


#: The twin class of each class given a slot-setting init or a positional maker (one per class).
_twins: dict[type, type] = {}


for _cls in (SessionKey, MediaComponent, AppSession, Grant, Deny, DialogRef, Reservation):
    slot_setting_init(_cls)


# -- A compiled build's makers --------------------------------------------------------------------------------------
# Compiled (mypyc), these classes are native but keep the dataclass's interpreted ``__init__``, which sets each field
# through ``object.__setattr__`` (an AppSession some 20k instructions, four a call). Compiled code sets a native
# attribute directly, past the frozen class's ``__setattr__`` (which still refuses every other assignment), so these
# make the same values for a few hundred. Only a compiled build uses them: in a pure build the assignments go
# through that ``__setattr__`` and raise FrozenInstanceError (its makers are ``positional_maker``'s).


def _session_key_native(call_id: str, to_tag: str, side: Side) -> SessionKey:
    made: SessionKey = SessionKey.__new__(SessionKey)
    made.call_id = call_id  # type: ignore[misc]
    made.to_tag = to_tag  # type: ignore[misc]
    made.side = side  # type: ignore[misc]
    made.__post_init__()
    return made


def _app_session_native(call_id: str, from_tag: str, to_tag: str, side: Side, player: str, peer: str,
                        player_ip: str, components: tuple[MediaComponent, ...], transit_rtt_ms: int,
                        peer_access_rtt_ms: int, game_format: str, qos_text: str) -> AppSession:
    made: AppSession = AppSession.__new__(AppSession)
    made.call_id = call_id  # type: ignore[misc]
    made.from_tag = from_tag  # type: ignore[misc]
    made.to_tag = to_tag  # type: ignore[misc]
    made.side = side  # type: ignore[misc]
    made.player = player  # type: ignore[misc]
    made.peer = peer  # type: ignore[misc]
    made.player_ip = player_ip  # type: ignore[misc]
    made.components = components  # type: ignore[misc]
    made.transit_rtt_ms = transit_rtt_ms  # type: ignore[misc]
    made.peer_access_rtt_ms = peer_access_rtt_ms  # type: ignore[misc]
    made.game_format = game_format  # type: ignore[misc]
    made.qos_text = qos_text  # type: ignore[misc]
    made._key = None  # type: ignore[misc]
    return made


def _grant_native(token: str | None, network: str, qos_class: str, priority: int, uplink_kbps: int,
                  downlink_kbps: int, latency_ms: int) -> Grant:
    made: Grant = Grant.__new__(Grant)
    made.token = token  # type: ignore[misc]
    made.network = network  # type: ignore[misc]
    made.qos_class = qos_class  # type: ignore[misc]
    made.priority = priority  # type: ignore[misc]
    made.uplink_kbps = uplink_kbps  # type: ignore[misc]
    made.downlink_kbps = downlink_kbps  # type: ignore[misc]
    made.latency_ms = latency_ms  # type: ignore[misc]
    return made


def _reservation_native(request: AppSession, grant: Grant, state: ReservationState, t_2xx: float, deadline: float,
                        t_confirm: float | None, t_last_refresh: float | None, expires_s: int, interim_count: int,
                        record_id: str, clock_offset: float) -> Reservation:
    made: Reservation = Reservation.__new__(Reservation)
    made.request = request  # type: ignore[misc]
    made.grant = grant  # type: ignore[misc]
    made.state = state  # type: ignore[misc]
    made.t_2xx = t_2xx  # type: ignore[misc]
    made.deadline = deadline  # type: ignore[misc]
    made.t_confirm = t_confirm  # type: ignore[misc]
    made.t_last_refresh = t_last_refresh  # type: ignore[misc]
    made.expires_s = expires_s  # type: ignore[misc]
    made.interim_count = interim_count  # type: ignore[misc]
    made.record_id = record_id  # type: ignore[misc]
    made.clock_offset = clock_offset  # type: ignore[misc]
    return made


#: ``SessionKey(call_id, to_tag, side)``.
new_session_key: Callable[[str, str, Side], SessionKey] = positional_maker(SessionKey) or _session_key_native
#: ``AppSession(...)`` with every field given, positionally in the order of its fields.
new_app_session: Callable[[str, str, str, Side, str, str, str, tuple[MediaComponent, ...], int, int, str, str],
                          AppSession] = positional_maker(AppSession) or _app_session_native
#: ``Grant(...)`` with every field given, positionally in the order of its fields.
new_grant: Callable[[str | None, str, str, int, int, int, int], Grant] = positional_maker(Grant) or _grant_native
#: ``Reservation(...)`` with every field given, positionally in the order of its fields.
new_reservation: Callable[[AppSession, Grant, ReservationState, float, float, float | None, float | None, int, int,
                           str, float], Reservation] = positional_maker(Reservation) or _reservation_native
#: Whether the makers above are a compiled build's native ones (its classes have no slot descriptors): the policy
#: core then calls those by name, a direct call, not one through a Python callable that parses its arguments (some
#: 600 instructions for a Reservation's eleven).
NATIVE_MAKERS = positional_maker(Grant) is None
