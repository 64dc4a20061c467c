"""The regional server as presence agent (RFC 6665 SUBSCRIBE/NOTIFY, RFC 3856 ``presence`` event, RFC 3863 PIDF).

Pure: requests, responses and ``now`` in, datagrams out. A player's presence is derived from what the server
already knows: logged in (a registration binding) is ``open``; a confirmed dialog publication (DESIGN section
4) adds the RPID activity ``playing``; no binding is ``closed``. Every change is NOTIFYed to the watchers.

Authorization (who may watch whom): logged-in players of this region and players of peered regions. A
SUBSCRIBE from a peer region was authenticated there (the peer's proxy challenges its players' requests);
one from our own player is challenged here (401) and refused with 403 unless that player is logged in.
Anyone else is challenged and refused. A subscription is a dialog of its own; NOTIFYs go straight to the
watcher's Contact (as the 2xx ACK goes player to player), retransmitted on Timer E until answered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gamesdk.address import Address
from gamesdk.errors import RemoteProtocolError
from gamesdk.session.requests import build_request
from gamesdk.sip.ids import IdFactory
from gamesdk.sip.message import Request, Response, response_for
from gamesdk.sip.pidf import CONTENT_TYPE, PresenceStatus, format_presence

__all__ = ["PresenceAgent", "Subscription"]

log = logging.getLogger(__name__)

Datagrams = list[tuple[bytes, Address]]

#: Subscription lifetime bounds (RFC 6665 section 4.2.1.1: the notifier may shorten; 423 below the minimum).
MIN_EXPIRES_S = 60
MAX_EXPIRES_S = 3600
DEFAULT_EXPIRES_S = 600
#: Watchers per player and subscriptions in all, so a watcher cannot grow the table without bound.
MAX_WATCHERS_PER_PLAYER = 64
MAX_SUBSCRIPTIONS = 10_000


@dataclass(slots=True)
class Subscription:
    """One watcher's subscription to one player (a dialog: Call-ID, our tag, its tag)."""

    call_id: str
    watched: str
    watcher: str
    watcher_tag: str
    local_tag: str
    contact: Address
    expires_at: float
    cseq: int = 0
    last_sent: PresenceStatus | None = None


@dataclass(slots=True)
class _Outgoing:
    data: bytes
    dest: Address
    next_at: float
    interval: float
    give_up_at: float


@dataclass(slots=True)
class PresenceAgent:
    """Subscriptions of this region's players' watchers, and the NOTIFYs that keep them current."""

    domain: str
    via: Address
    ids: IdFactory
    #: ``status_of(aor, now)``: the player's presence as the registrar and the publications say.
    status_of: Callable[[str, float], PresenceStatus]
    t1: float = 0.5
    subs: dict[tuple[str, str], Subscription] = field(default_factory=dict)
    _outgoing: dict[Address, _Outgoing] = field(default_factory=dict)
    #: The keys of ``subs`` by watched AOR: a login or a publication looks at its own player's watchers only.
    _watchers: dict[str, dict[tuple[str, str], None]] = field(default_factory=dict)

    def _add(self, key: tuple[str, str], sub: Subscription) -> None:
        self.subs[key] = sub
        self._watchers.setdefault(sub.watched, {})[key] = None

    def _drop(self, key: tuple[str, str]) -> None:
        sub = self.subs.pop(key, None)
        if sub is None:
            return
        keys = self._watchers.get(sub.watched)
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self._watchers[sub.watched]

    # -- SUBSCRIBE -----------------------------------------------------------------------------------------------

    def subscribe(self, request: Request, watcher: str, now: float, out: Datagrams) -> Response:
        """Answer an authorized SUBSCRIBE (initial, refresh or Expires: 0) and queue the NOTIFY it triggers."""
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "presence":
            return response_for(request, 489, "Bad Event", to_tag=self.ids.tag(), extra=[("Allow-Events", "presence")])
        try:
            asked = request.expires
            contacts = request.contacts
        except RemoteProtocolError as exc:
            return response_for(request, 400, exc.message, to_tag=self.ids.tag())
        expires = DEFAULT_EXPIRES_S if asked is None else min(asked, MAX_EXPIRES_S)
        if 0 < expires < MIN_EXPIRES_S:
            return response_for(request, 423, "Interval Too Brief", to_tag=self.ids.tag(),
                                extra=[("Min-Expires", str(MIN_EXPIRES_S))])
        watched = request.request_uri.aor if request.to.tag is None else ""
        key = (request.call_id, request.from_.tag or "")
        sub = self.subs.get(key)
        if sub is None:
            if request.to.tag is not None:
                return response_for(request, 481, "Subscription does not exist")
            if not contacts or not contacts[0].uri.host:
                return response_for(request, 400, "SUBSCRIBE without a Contact", to_tag=self.ids.tag())
            if (len(self.subs) >= MAX_SUBSCRIPTIONS
                    or len(self._watchers.get(watched, ())) >= MAX_WATCHERS_PER_PLAYER):
                return response_for(request, 503, "Too many watchers", to_tag=self.ids.tag(),
                                    extra=[("Retry-After", "60")])
            uri = contacts[0].uri
            sub = Subscription(call_id=request.call_id, watched=watched, watcher=watcher,
                               watcher_tag=request.from_.tag or "", local_tag=self.ids.tag(),
                               contact=(uri.host.strip("[]"), uri.port or 5060), expires_at=now + expires)
            self._add(key, sub)
            log.info("presence: %s watches %s for %d s", watcher, watched, expires)
        elif request.to.tag != sub.local_tag:
            return response_for(request, 481, "Subscription does not exist")
        sub.expires_at = now + expires
        response = response_for(request, 200, None, to_tag=sub.local_tag, extra=[
            ("Expires", str(expires)),
            ("Contact", f"<sip:{self.via[0]}:{self.via[1]}>"),
        ])
        # RFC 6665 section 4.2.1.2: a NOTIFY follows every accepted SUBSCRIBE, the last one on Expires: 0
        self._notify(sub, now, out, terminated="timeout" if expires == 0 else None)
        if expires == 0:
            self._drop(key)
        return response

    # -- changes -------------------------------------------------------------------------------------------------

    def changed(self, aor: str, now: float, out: Datagrams) -> None:
        """``aor``'s presence may have changed (login, logout, expiry, a publication): tell its watchers."""
        keys = self._watchers.get(aor)
        if not keys:
            return
        for key in list(keys):
            sub = self.subs[key]
            if self.status_of(aor, now) is not sub.last_sent:
                self._notify(sub, now, out)

    def _notify(self, sub: Subscription, now: float, out: Datagrams, terminated: str | None = None) -> None:
        status = self.status_of(sub.watched, now)
        sub.last_sent = status
        sub.cseq += 1
        if terminated is None:
            state = f"active;expires={max(0, int(sub.expires_at - now))}"
        else:
            state = f"terminated;reason={terminated}"
        req = build_request(
            "NOTIFY",
            f"sip:{sub.contact[0]}:{sub.contact[1]}",
            via_host=self.via[0],
            via_port=self.via[1],
            branch=self.ids.branch(),
            from_=f"<{sub.watched}>;tag={sub.local_tag}",
            to=f"<{sub.watcher}>;tag={sub.watcher_tag}",
            call_id=sub.call_id,
            cseq=sub.cseq,
            contact=f"<sip:{self.via[0]}:{self.via[1]}>",
            extra=[("Event", "presence"), ("Subscription-State", state)],
            body=format_presence(sub.watched, status),
            content_type=CONTENT_TYPE,
        )
        data = req.to_bytes()
        out.append((data, sub.contact))
        self._outgoing[(sub.call_id, sub.cseq)] = _Outgoing(data, sub.contact, now + self.t1, self.t1,
                                                            now + 64 * self.t1)

    def handle_response(self, response: Response) -> bool:
        """A watcher's answer to a NOTIFY: stops its retransmission; 481 ends the subscription. True if ours."""
        try:
            if response.cseq.method != "NOTIFY":
                return False
            key = (response.call_id, response.cseq.seq)
        except RemoteProtocolError:
            return False
        if self._outgoing.pop(key, None) is None:
            return False
        if response.status == 481 or response.status >= 500:
            for sub_key, sub in list(self.subs.items()):
                if sub.call_id == response.call_id:
                    self._drop(sub_key)
        return True

    # -- timers --------------------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        times = [o.next_at for o in self._outgoing.values()] + [s.expires_at for s in self.subs.values()]
        return min(times) if times else None

    def handle_timer(self, now: float, out: Datagrams) -> None:
        for key, o in list(self._outgoing.items()):
            if now >= o.give_up_at:
                del self._outgoing[key]  # the watcher is gone; its subscription runs out on its own
            elif now >= o.next_at:
                out.append((o.data, o.dest))
                o.interval = min(o.interval * 2, 4.0)  # Timer E doubling up to T2 (RFC 3261 17.1.2.2)
                o.next_at = now + o.interval
        for sub_key, sub in list(self.subs.items()):
            if now >= sub.expires_at:
                self._notify(sub, now, out, terminated="timeout")
                self._drop(sub_key)
