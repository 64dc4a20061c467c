"""server/policy/codec: JSON shapes of the policy values (HTTP service and the SQLite store).

Field names follow N5 (TS 29.514, research/protocol.md A13) where one exists: ``medComponents``, ``medCompN``,
``marBwUl``/``marBwDl`` (kbit/s here, not bit/s strings), ``desMaxLatency`` (ms), ``desMaxLoss`` (ppm here),
``qosReference`` (class), ``servInfStatus``. Everything read from the network goes through ``*_untrusted``
functions that raise only :class:`RemoteProtocolError` (status hint 400).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, Final

from gamesdk.errors import RemoteProtocolError

if TYPE_CHECKING:  # core imports this module (through the ledger); the type is only an annotation here
    from .core import NetworkCapacity
from .lifetime import Activate, PolicyOperation, Refresh, Release
from .model import (
    AppSession,
    Decision,
    Deny,
    DialogRef,
    EndReason,
    Grant,
    MediaComponent,
    Reservation,
    ReservationState,
    Resource,
    SessionKey,
    Side,
)

__all__ = [
    "app_session_from_json_untrusted",
    "app_session_to_json",
    "capacity_to_json",
    "decision_from_json_untrusted",
    "decision_to_json",
    "dialog_ref_from_json_untrusted",
    "dialog_ref_to_json",
    "end_reason_from_json_untrusted",
    "key_from_json_untrusted",
    "key_to_json",
    "operation_from_json_untrusted",
    "operation_to_json",
    "reservation_from_json_untrusted",
    "reservation_json_text",
    "reservation_to_json",
    "time_text",
]

_MAX_TEXT = 1024


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, 400)


def _obj(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(f"{what} must be a JSON object")
    return value


def _str(data: Mapping[str, Any], name: str, *, default: str | None = None) -> str:
    value = data.get(name, default)
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise _bad(f"{name} must be a string of at most {_MAX_TEXT} characters")
    return value


def _int(data: Mapping[str, Any], name: str, *, default: int | None = None, optional: bool = False) -> Any:
    if name not in data or data[name] is None:
        if optional:
            return None
        if default is None:
            raise _bad(f"{name} is required")
        return default
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**53) < value < 2**53:
        raise _bad(f"{name} must be an integer")
    return value


def _float(data: Mapping[str, Any], name: str, *, optional: bool = False) -> Any:
    value = data.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"{name} must be a number")
    return float(value)


def _enum(enum_type: Any, value: object, name: str) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_type)
        raise _bad(f"{name} must be one of {allowed}") from None


# -- SessionKey / DialogRef ----------------------------------------------------------------------------------------


def key_to_json(key: SessionKey) -> dict[str, Any]:
    return {"callId": key.call_id, "toTag": key.to_tag, "side": key.side.value}


def key_from_json_untrusted(value: object) -> SessionKey:
    data = _obj(value, "key")
    return SessionKey(_str(data, "callId"), _str(data, "toTag"), _enum(Side, data.get("side"), "side"))


def dialog_ref_to_json(ref: DialogRef) -> dict[str, Any]:
    return {"callId": ref.call_id, "localTag": ref.local_tag, "remoteTag": ref.remote_tag, "player": ref.player}


def dialog_ref_from_json_untrusted(value: object) -> DialogRef:
    data = _obj(value, "dialog")
    return DialogRef(
        call_id=_str(data, "callId"),
        local_tag=_str(data, "localTag"),
        remote_tag=_str(data, "remoteTag"),
        player=_str(data, "player"),
    )


def end_reason_from_json_untrusted(value: object) -> EndReason:
    reason: EndReason = _enum(EndReason, value, "reason")
    return reason


# -- AppSession ----------------------------------------------------------------------------------------------------


def app_session_to_json(request: AppSession) -> dict[str, Any]:
    return {
        "callId": request.call_id,
        "fromTag": request.from_tag,
        "toTag": request.to_tag,
        "side": request.side.value,
        "player": request.player,
        "peer": request.peer,
        "ueIpv4": request.player_ip,
        "transitRtt": request.transit_rtt_ms,
        "peerAccessRtt": request.peer_access_rtt_ms,
        "format": request.game_format,
        "qos": request.qos_text,
        "medComponents": [
            {
                "medCompN": c.number,
                "medType": "APPLICATION",
                "marBwUl": c.uplink_kbps,
                "marBwDl": c.downlink_kbps,
                "desMaxLatency": c.max_latency_ms,
                "desMaxLoss": c.max_loss_ppm,
                "desMaxJitter": c.max_jitter_ms,
                "qosReference": c.qos_class,
            }
            for c in request.components
        ],
    }


def app_session_from_json_untrusted(value: object) -> AppSession:
    data = _obj(value, "app session")
    comps_raw = data.get("medComponents")
    if not isinstance(comps_raw, list) or not 1 <= len(comps_raw) <= 16:
        raise _bad("medComponents must be a list of 1 to 16 media components")
    comps = []
    for raw in comps_raw:
        c = _obj(raw, "media component")
        qos_ref = c.get("qosReference")
        if qos_ref is not None and (not isinstance(qos_ref, str) or len(qos_ref) > 64):
            raise _bad("qosReference must be a class name")
        comps.append(
            MediaComponent(
                number=_int(c, "medCompN", default=1),
                uplink_kbps=_int(c, "marBwUl"),
                downlink_kbps=_int(c, "marBwDl"),
                max_latency_ms=_int(c, "desMaxLatency"),
                max_loss_ppm=_int(c, "desMaxLoss", optional=True),
                max_jitter_ms=_int(c, "desMaxJitter", optional=True),
                qos_class=qos_ref,
            )
        )
    return AppSession(
        call_id=_str(data, "callId"),
        from_tag=_str(data, "fromTag", default=""),
        to_tag=_str(data, "toTag", default=""),
        side=_enum(Side, data.get("side"), "side"),
        player=_str(data, "player"),
        peer=_str(data, "peer", default=""),
        player_ip=_str(data, "ueIpv4"),
        components=tuple(comps),
        transit_rtt_ms=_int(data, "transitRtt", default=0),
        peer_access_rtt_ms=_int(data, "peerAccessRtt", default=0),
        game_format=_str(data, "format", default=""),
        qos_text=_str(data, "qos", default=""),
    )


# -- Decision ------------------------------------------------------------------------------------------------------


def decision_to_json(decision: Decision) -> dict[str, Any]:
    if isinstance(decision, Grant):
        return {
            "granted": True,
            "token": decision.token,
            "network": decision.network,
            "class": decision.qos_class,
            "resPrio": decision.priority,
            "marBwUl": decision.uplink_kbps,
            "marBwDl": decision.downlink_kbps,
            "latency": decision.latency_ms,
        }
    return {
        "granted": False,
        "network": decision.network,
        "cause": decision.resource.value,
        "detail": decision.reason,
        "status": decision.status_hint,
        "warning": decision.warning_code,
    }


def decision_from_json_untrusted(value: object) -> Decision:
    data = _obj(value, "decision")
    granted = data.get("granted")
    if granted is True:
        token = data.get("token")
        if token is not None and (not isinstance(token, str) or len(token) > 256):
            raise _bad("token must be a string")
        return Grant(
            token=token,
            network=_str(data, "network"),
            qos_class=_str(data, "class"),
            priority=_int(data, "resPrio", default=0),
            uplink_kbps=_int(data, "marBwUl"),
            downlink_kbps=_int(data, "marBwDl"),
            latency_ms=_int(data, "latency", default=0),
        )
    if granted is False:
        network = data.get("network")
        if network is not None and not isinstance(network, str):
            raise _bad("network must be a string")
        return Deny(
            network=network,
            resource=_enum(Resource, data.get("cause"), "cause"),
            reason=_str(data, "detail"),
            status_hint=_int(data, "status", default=580),
            warning_code=_int(data, "warning", default=370),
        )
    raise _bad("granted must be true or false")


# -- Reservation (store) -------------------------------------------------------------------------------------------


def reservation_to_json(res: Reservation) -> dict[str, Any]:
    return {
        "request": app_session_to_json(res.request),
        "grant": decision_to_json(res.grant),
        "state": res.state.value,
        "t2xx": res.t_2xx,
        "deadline": res.deadline,
        "tConfirm": res.t_confirm,
        "tLastRefresh": res.t_last_refresh,
        "expires": res.expires_s,
        "interims": res.interim_count,
        "recordId": res.record_id,
    }


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


def _number(value: int | float | None) -> str:  # noqa: PYI041 - see below
    # ``int | float``, not ``float``: a compiled build (mypyc) turns an int passed as ``float`` into a float, and
    # the text would read 100.0 where json writes 100.
    if value is None:
        return "null"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    return json.dumps(value)  # NaN, infinities, subclasses: as json writes them


#: The ``medComponents`` text of each components tuple seen, by the tuple's identity (the entry keeps the tuple, so
#: its id is not reused while the entry lives); a call's requests share their tuple (the hooks keep it per terms),
#: so its text is built once per game text instead of per row. Emptied when full.
_components_text: dict[int, tuple[tuple[MediaComponent, ...], str]] = {}
COMPONENTS_TEXT_MAX = 256


def components_json_text(components: tuple[MediaComponent, ...]) -> str:
    """The ``medComponents`` list's items as ``json.dumps`` writes them (without the brackets); kept per tuple."""
    found = _components_text.get(id(components))
    if found is not None and found[0] is components:
        return found[1]
    text = ",".join(
        f'{{"medCompN":{_number(c.number)},"medType":"APPLICATION","marBwUl":{_number(c.uplink_kbps)},'
        f'"marBwDl":{_number(c.downlink_kbps)},"desMaxLatency":{_number(c.max_latency_ms)},'
        f'"desMaxLoss":{_number(c.max_loss_ppm)},"desMaxJitter":{_number(c.max_jitter_ms)},'
        f'"qosReference":{_text(c.qos_class)}}}'
        for c in components
    )
    if len(_components_text) >= COMPONENTS_TEXT_MAX:
        _components_text.clear()
    _components_text[id(components)] = (components, text)
    return text


def time_text(value: float) -> str:
    """A JSON number that reads back as exactly the finite float ``value``: for a wall time since 2004 (2**30 s) its
    exact decimal, written with integer steps; else its ``repr``, as ``json.dumps`` writes it.

    A float's ``repr`` (the shortest text that reads back as it) was the dearest part of a row: some 7,500
    instructions, two per call. A float from 2**30 up has no bits below 2**-22, so its fraction is a whole number of
    2**-22 and is written exactly as that number times 5**22 over 10**22 (22 digits, trailing zeros dropped). The
    text is never shorter than ``repr``'s and is the same whenever the exact decimal is short (1700000000.25); a
    reader (``json.loads``, ``float()``) gets the same float from either."""
    if 1073741824.0 <= value < 4503599627370496.0:  # 2**30 <= value < 2**52
        whole = int(value)
        units = int((value - whole) * 4194304.0)  # exact: the fraction is a multiple of 2**-22 below 1
        if not units:
            return f"{whole}.0"
        global _last_fraction
        last = _last_fraction  # (one read: another thread may replace it)
        if units == last[0]:
            return f"{whole}.{last[1]}"
        # units * 5**22 (at most 22 digits) in two parts that stay under 2**63: 5**22 = 23841857 * 10**8 + 91015625.
        low = units * 91015625
        high = units * 23841857 + low // 100000000
        digits = f"{str(high + 100000000000000)[1:]}{str(low % 100000000 + 100000000)[1:]}".rstrip("0")
        _last_fraction = (units, digits)
        return f"{whole}.{digits}"
    return repr(value)


#: The last fraction :func:`time_text` wrote out, as (its units of 2**-22, its digits): a row's two times (the 2xx's
#: wall time and its deadline, whole seconds later) have the same one, whose digits were half a time's text.
_last_fraction: tuple[int, str] = (0, "")


#: The last row's two float times (t2xx, deadline) and their text: a call's two sides share them (one wall time),
#: and a float's repr is the dearest part of a row. Only finite non-zero floats are kept, whose equal values have
#: one text.
_last_times: tuple[float, float, str] = (math.nan, math.nan, "")


#: The JSON text of the string values rows repeat (the side, the state, a player's AOR and address, the other
#: player's, the network, the class, the game's format and qos text: a few per player and game), by value: one
#: lookup instead of an escape pass each. Only short values are kept; emptied when full.
_texts: Final[dict[str, str]] = {}
TEXTS_MAX = 4096
TEXT_MAX_CHARS = 256


def _kept_text(value: str) -> str:
    """``encode_basestring_ascii(value)``, kept for the next rows (raises TypeError for a value that is no str)."""
    text = encode_basestring_ascii(value)
    if len(value) <= TEXT_MAX_CHARS:
        if len(_texts) >= TEXTS_MAX:
            _texts.clear()
        _texts[value] = text
    return text


#: The last row's ``"callId":..,"fromTag":..,"toTag":..`` text: a call's two rows (its two sides) share it.
_last_head: tuple[str, str, str, str] = ("", "", "", '"callId":"","fromTag":"","toTag":""')


def _plain_text(value: str) -> str:
    """``encode_basestring_ascii(value)`` (raises TypeError for a value that is no str), written without its escape
    pass for an ASCII letters-and-digits text, which has nothing to escape: the rule by which
    :func:`reservation_json_text` quotes a row's token and record id (hex, new in every row) as they are."""
    if type(value) is str and value.isascii() and value.isalnum():
        return f'"{value}"'
    return encode_basestring_ascii(value)


def _head_text(call_id: str, from_tag: str, to_tag: str) -> str:
    """The row's dialog fields' text (raises TypeError for a value that is no str)."""
    global _last_head
    last = _last_head  # (one read: another thread may replace it)
    if call_id == last[0] and from_tag == last[1] and to_tag == last[2] and type(call_id) is str:
        return last[3]
    enc = encode_basestring_ascii
    text = f'"callId":{enc(call_id)},"fromTag":{enc(from_tag)},"toTag":{enc(to_tag)}'
    if type(call_id) is str and type(from_tag) is str and type(to_tag) is str:
        _last_head = (call_id, from_tag, to_tag, text)
    return text


#: The text of a row's request from ``"side"`` to its components (a player's side, AORs, address, round trips and
#: game: the same in every call of that player and game) and of its grant from ``"network"`` to ``"latency"``, by
#: their values (the components by the tuple's identity, held by the entry): one lookup instead of a text per
#: field. Only texts of at most ROW_PART_MAX_CHARS are kept; emptied when full.
_request_texts: Final[dict[tuple[object, ...], tuple[tuple[MediaComponent, ...], str]]] = {}
_grant_texts: Final[dict[tuple[object, ...], str]] = {}
ROW_PARTS_MAX: Final = 1024
ROW_PART_MAX_CHARS: Final = 1024


def _request_text(req: AppSession, transit: int, peer_rtt: int) -> str:
    """``"side":...,"medComponents":[...]`` of a row (exact ints given; raises TypeError for a text that is no
    str)."""
    side = req.side
    # (the member's value: an Enum's hash is a Python call; a str side, where one is given, is its own text)
    side_value: str = side._value_ if type(side) is Side else side
    components = req.components
    key = (side_value, req.player, req.peer, req.player_ip, transit, peer_rtt, req.game_format, req.qos_text,
           id(components))
    found = _request_texts.get(key)
    if found is not None and found[0] is components:
        return found[1]
    kept = _texts.get
    keep = _kept_text
    text = (f'"side":{kept(side_value) or keep(side_value)},"player":{kept(req.player) or keep(req.player)},'
            f'"peer":{kept(req.peer) or keep(req.peer)},'
            f'"ueIpv4":{kept(req.player_ip) or keep(req.player_ip)},"transitRtt":{transit},'
            f'"peerAccessRtt":{peer_rtt},"format":{kept(req.game_format) or keep(req.game_format)},'
            f'"qos":{kept(req.qos_text) or keep(req.qos_text)},'
            f'"medComponents":[{components_json_text(components)}]')
    if len(text) <= ROW_PART_MAX_CHARS and all(type(v) is str for v in key[:4]) and type(key[6]) is str \
            and type(key[7]) is str:
        if len(_request_texts) >= ROW_PARTS_MAX:
            _request_texts.clear()
        _request_texts[key] = (components, text)
    return text


def _grant_text(network: str, qos_class: str, priority: int, up: int, down: int, latency: int) -> str:
    """``"network":...,"latency":...`` of a row's grant (exact ints given; raises TypeError for a text that is no
    str)."""
    key = (network, qos_class, priority, up, down, latency)
    text = _grant_texts.get(key)
    if text is not None:
        return text
    kept = _texts.get
    keep = _kept_text
    text = (f'"network":{kept(network) or keep(network)},"class":{kept(qos_class) or keep(qos_class)},'
            f'"resPrio":{priority},"marBwUl":{up},"marBwDl":{down},"latency":{latency}')
    if len(text) <= ROW_PART_MAX_CHARS and type(network) is str and type(qos_class) is str:
        if len(_grant_texts) >= ROW_PARTS_MAX:
            _grant_texts.clear()
        _grant_texts[key] = text
    return text


def _state_text(state: ReservationState) -> str:
    if state is ReservationState.RESERVED:
        return '"reserved"'
    if state is ReservationState.ACTIVE:
        return '"active"'
    return encode_basestring_ascii(state)  # (a str given for the state: its own text)


def reservation_json_text(res: Reservation) -> str:
    """``json.dumps(reservation_to_json(res), separators=(",", ":"))``, the same text, without building the dicts
    (the store writes one per FINAL and per state change: the generic encoder was a tenth of the FINAL's cost);
    only float times from 2004 on are written as their exact decimals (:func:`time_text`), which read back as the
    same floats.

    The usual row (exact ints, finite float times, text fields of type str) is written with one C call per text
    field and none per number (the side and the state are str enums: their text is their value, read without the
    enum's ``value`` property); anything else (None, bool, a subclass, NaN) goes through the per-value path, which
    writes what ``json.dumps`` writes for it."""
    req = res.request
    grant = res.grant
    transit, peer_rtt, expires, interims = req.transit_rtt_ms, req.peer_access_rtt_ms, res.expires_s, res.interim_count
    priority, up, down, latency = grant.priority, grant.uplink_kbps, grant.downlink_kbps, grant.latency_ms
    t_2xx, deadline, t_confirm, t_refresh = res.t_2xx, res.deadline, res.t_confirm, res.t_last_refresh
    token = grant.token
    global _last_times
    times = ""
    if type(t_2xx) is float and type(deadline) is float:
        last = _last_times  # (one read: another thread may replace it)
        if t_2xx == last[0] and deadline == last[1]:
            times = last[2]  # the call's other side: the same two times (only finite ones are kept)
        elif t_2xx - t_2xx == 0.0 and deadline - deadline == 0.0:  # finite (an infinity's or NaN's is NaN)
            times = f'"t2xx":{time_text(t_2xx)},"deadline":{time_text(deadline)}'
            if t_2xx and deadline:  # (0.0 == -0.0, but their texts differ: never kept)
                _last_times = (t_2xx, deadline, times)
    record_id = res.record_id
    # The token and the record id are hex (the policy's tokens): ASCII letters and digits, nothing to escape, quoted
    # as they are; any other text takes the per-value path.
    if (type(transit) is int and type(peer_rtt) is int and type(expires) is int and type(interims) is int
            and type(priority) is int and type(up) is int and type(down) is int and type(latency) is int
            and times and t_confirm is None and t_refresh is None and type(token) is str and type(record_id) is str
            and token.isascii() and token.isalnum() and record_id.isascii() and record_id.isalnum()):
        try:
            return (f'{{"request":{{{_head_text(req.call_id, req.from_tag, req.to_tag)},'
                    f'{_request_text(req, transit, peer_rtt)}}},"grant":{{"granted":true,"token":"{token}",'
                    f'{_grant_text(grant.network, grant.qos_class, priority, up, down, latency)}}},'
                    f'"state":{_state_text(res.state)},{times},"tConfirm":null,"tLastRefresh":null,'
                    f'"expires":{expires},"interims":{interims},"recordId":"{record_id}"}}')
        except TypeError:
            pass  # a text field that is not a str (None): the per-value path writes it as json does
    return (
        f'{{"request":{{"callId":{_text(req.call_id)},"fromTag":{_text(req.from_tag)},"toTag":{_text(req.to_tag)},'
        f'"side":{_text(req.side.value)},"player":{_text(req.player)},"peer":{_text(req.peer)},'
        f'"ueIpv4":{_text(req.player_ip)},"transitRtt":{_number(transit)},'
        f'"peerAccessRtt":{_number(peer_rtt)},"format":{_text(req.game_format)},'
        f'"qos":{_text(req.qos_text)},"medComponents":[{components_json_text(req.components)}]}},'
        f'"grant":{{"granted":true,"token":{_text(token)},"network":{_text(grant.network)},'
        f'"class":{_text(grant.qos_class)},"resPrio":{_number(priority)},"marBwUl":{_number(up)},'
        f'"marBwDl":{_number(down)},"latency":{_number(latency)}}},'
        f'"state":{_text(res.state.value)},"t2xx":{_number(t_2xx)},"deadline":{_number(deadline)},'
        f'"tConfirm":{_number(t_confirm)},"tLastRefresh":{_number(t_refresh)},'
        f'"expires":{_number(expires)},"interims":{_number(interims)},'
        f'"recordId":{_text(record_id)}}}'
    )


def capacity_to_json(capacity: NetworkCapacity) -> dict[str, Any]:
    """One access network's capacity as ``/sessions`` and ``gamesdk-server sessions --json`` show it."""
    return {
        "name": capacity.network, "sessions": capacity.sessions, "maxSessions": capacity.max_sessions,
        "uplinkKbps": capacity.uplink_kbps, "uplinkFreeKbps": capacity.uplink_free_kbps,
        "downlinkKbps": capacity.downlink_kbps, "downlinkFreeKbps": capacity.downlink_free_kbps,
    }


def reservation_from_json_untrusted(value: object) -> Reservation:
    data = _obj(value, "reservation")
    grant = decision_from_json_untrusted(data.get("grant"))
    if not isinstance(grant, Grant):
        raise _bad("a stored reservation must hold a grant")
    return Reservation(
        request=app_session_from_json_untrusted(data.get("request")),
        grant=grant,
        state=_enum(ReservationState, data.get("state"), "state"),
        t_2xx=_float(data, "t2xx"),
        deadline=_float(data, "deadline"),
        t_confirm=_float(data, "tConfirm", optional=True),
        t_last_refresh=_float(data, "tLastRefresh", optional=True),
        expires_s=_int(data, "expires", default=0),
        interim_count=_int(data, "interims", default=0),
        record_id=_str(data, "recordId", default=""),
    )


# -- Lifetime operations (PUBLISH-derived) -------------------------------------------------------------------------


def operation_to_json(op: PolicyOperation) -> dict[str, Any]:
    data: dict[str, Any] = {"dialog": dialog_ref_to_json(op.ref)}
    if isinstance(op, Activate):
        data.update(op="activate", expires=op.expires_s)
    elif isinstance(op, Refresh):
        data.update(op="refresh", expires=op.expires_s)
    else:
        data.update(op="release", reason=op.reason.value, sipReason=op.sip_reason)
        if op.peer_domain is not None:
            data["peerDomain"] = op.peer_domain
    return data


def operation_from_json_untrusted(value: object) -> PolicyOperation:
    data = _obj(value, "operation")
    ref = dialog_ref_from_json_untrusted(data.get("dialog"))
    kind = data.get("op")
    if kind in ("activate", "refresh"):
        expires = _int(data, "expires")
        if not 0 < expires <= 86400:
            raise _bad("expires must be 1..86400 seconds")
        return Activate(ref=ref, expires_s=expires) if kind == "activate" else Refresh(ref=ref, expires_s=expires)
    if kind == "release":
        sip_reason = data.get("sipReason")
        if sip_reason is not None and (not isinstance(sip_reason, str) or len(sip_reason) > _MAX_TEXT):
            raise _bad("sipReason must be a string")
        peer_domain = data.get("peerDomain")
        if peer_domain is not None and (not isinstance(peer_domain, str) or not 0 < len(peer_domain) <= 255):
            raise _bad("peerDomain must be a domain name")
        return Release(ref=ref, reason=end_reason_from_json_untrusted(data.get("reason")), sip_reason=sip_reason,
                       peer_domain=peer_domain)
    raise _bad("op must be activate, refresh or release")
