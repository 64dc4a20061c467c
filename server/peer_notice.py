"""Telling a peer region that one of its players vanished from a session (sans-IO).

When a player of this region publishes ``terminated`` with ``event="timeout"`` (its SDK lost the other player:
the channel went silent or the BYE got no answer), the other player's region would otherwise keep that player's
reservation and bill it until the lease runs out, since a crashed game sends nothing more. So this region sends
the peer region a PUBLISH (RFC 3903, ``Event: dialog``) naming the dialog as ``terminated`` from the vanished
player's side; the peer region (which accepts it only as a configured, authenticated peer, and only for sessions
between its player and one of ours) releases the reservation at once, billed ``peer-region`` to that moment.

The PUBLISH is a non-INVITE client transaction (RFC 3261 17.1.2: retransmitted at T1 doubling to T2, given up
after 64*T1); at most ``MAX_PENDING`` are under way.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass

from gamesdk.address import Address
from gamesdk.sip.dialog_info import CONTENT_TYPE, DialogEntry, DialogInfo, DialogState, format_dialog_info
from gamesdk.sip.ids import IdFactory
from gamesdk.sip.message import Headers, Request, Response

__all__ = ["MAX_PENDING", "PeerNotices"]

log = logging.getLogger(__name__)

MAX_PENDING = 10_000


@dataclass(slots=True)
class _Pending:
    data: bytes
    dest: Address
    interval: float
    give_up_at: float
    next_at: float


class PeerNotices:
    """PUBLISHes to peer regions about their vanished players, with retransmissions."""

    def __init__(self, *, domain: str, via: Address, ids: IdFactory, t1: float = 0.5, t2: float = 4.0) -> None:
        self.domain = domain
        self.via = via
        self.ids = ids
        self.t1 = t1
        self.t2 = t2
        self._pending: dict[str, _Pending] = {}
        self._timers: list[tuple[float, str]] = []
        self.outbox: list[tuple[bytes, Address]] = []
        #: Notices sent, answered 2xx, refused (non-2xx final) and given up.
        self.stats = {"sent": 0, "accepted": 0, "refused": 0, "timed_out": 0}

    def player_vanished(self, dest: Address, *, player: str, call_id: str, local_tag: str, remote_tag: str,
                        peer: str, now: float) -> None:
        """Tell the region at ``dest`` that its ``player`` (AOR) went silent in dialog ``call_id`` (tags seen from
        that player: ``local_tag`` is its own) with our player ``peer``."""
        if len(self._pending) >= MAX_PENDING:
            log.warning("peer notices: %d under way, not telling %s about %s", len(self._pending), dest, call_id)
            return
        entry = DialogEntry(id=call_id, state=DialogState.TERMINATED, call_id=call_id, local_tag=local_tag,
                            remote_tag=remote_tag, event="timeout", code=408, local_identity=player,
                            remote_identity=peer)
        body = format_dialog_info(DialogInfo(entity=player, version=0, dialogs=(entry,)))
        branch = self.ids.branch()
        host, port = self.via
        headers = Headers([
            ("Via", f"SIP/2.0/UDP {host}:{port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{self.domain}>;tag={self.ids.tag()}"),
            ("To", f"<{player}>"),
            ("Call-ID", self.ids.call_id()),
            ("CSeq", "1 PUBLISH"),
            ("Event", "dialog"),
            ("Expires", "60"),
            ("Content-Type", CONTENT_TYPE),
        ])
        data = Request("PUBLISH", player, headers, body).to_bytes()
        pending = _Pending(data, dest, self.t1, now + 64 * self.t1, now + self.t1)
        self._pending[branch] = pending
        heapq.heappush(self._timers, (pending.next_at, branch))
        self.outbox.append((data, dest))
        self.stats["sent"] += 1
        log.info("told %s:%d that %s went silent in %s", dest[0], dest[1], player, call_id)

    def take(self) -> list[tuple[bytes, Address]]:
        out, self.outbox = self.outbox, []
        return out

    def handle_response(self, response: Response) -> bool:
        """A response to one of our notices (True: consumed)."""
        branch = response.top_via.branch or ""
        pending = self._pending.get(branch)
        if pending is None:
            return False
        if response.status < 200:
            pending.interval = self.t2  # RFC 3261 17.1.2.2: Proceeding retransmits at T2
            return True
        del self._pending[branch]
        if response.status < 300:
            self.stats["accepted"] += 1
        else:
            self.stats["refused"] += 1
            log.warning("peer region refused the notice %s: %d %s", branch, response.status, response.reason)
        return True

    def get_timer(self) -> float | None:
        while self._timers:
            when, branch = self._timers[0]
            pending = self._pending.get(branch)
            if pending is not None and pending.next_at == when:
                return when
            heapq.heappop(self._timers)
        return None

    def handle_timer(self, now: float) -> list[tuple[bytes, Address]]:
        out: list[tuple[bytes, Address]] = []
        while self._timers and self._timers[0][0] <= now:
            when, branch = heapq.heappop(self._timers)
            pending = self._pending.get(branch)
            if pending is None or pending.next_at != when:
                continue
            if now >= pending.give_up_at:
                del self._pending[branch]
                self.stats["timed_out"] += 1
                log.warning("peer region at %s:%d never answered a notice", *pending.dest)
                continue
            out.append((pending.data, pending.dest))
            pending.interval = min(2 * pending.interval, self.t2)
            pending.next_at = min(now + pending.interval, pending.give_up_at)
            heapq.heappush(self._timers, (pending.next_at, branch))
        return out
