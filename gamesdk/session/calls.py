"""The user agent's bookkeeping values: one game call (its state, SDPs, dialog, timers) and what each of its
client transactions is for."""

from __future__ import annotations

import enum
import heapq
import itertools
from dataclasses import dataclass, field

from gamesdk.address import Address
from gamesdk.channel.config import ChannelParams, PrivateKey
from gamesdk.events import Agreement
from gamesdk.qos.model import SessionTerms
from gamesdk.qos.negotiation import Acceptable
from gamesdk.sdp.game import GameMedia
from gamesdk.sdp.ice import IceParameters
from gamesdk.sdp.model import SessionDescription
from gamesdk.sip.dialog import Dialog
from gamesdk.sip.dialog_info import DialogState
from gamesdk.sip.message import Request
from gamesdk.sip.transaction_client import ClientInviteTransaction
from gamesdk.sip.transaction_server import ServerInviteTransaction

__all__ = ["Call", "CallState", "CallTimers", "Pending", "TimerHeap"]


#: The agent's deadlines of all its calls, earliest first: ``(deadline, sequence, name, call)``. An entry is
#: current while the call is still the agent's and ``call.timers[name]`` still holds that deadline; stale ones
#: are dropped when they reach the top (lazy deletion), so finding the next deadline costs O(log n) instead of
#: a scan over every call (ended calls linger 64*T1 = 32 s, hundreds of them under load).
TimerHeap = list[tuple[float, int, str, "Call"]]

_sequence = itertools.count()


class CallTimers(dict[str, float]):
    """A call's named deadlines (a dict); once bound to the agent's :data:`TimerHeap`, each one set is pushed
    there too."""

    __slots__ = ("_call", "_heap")

    def __init__(self) -> None:
        super().__init__()
        self._heap: TimerHeap | None = None
        self._call: Call | None = None

    def bind(self, heap: TimerHeap, call: Call) -> None:
        """Report every deadline of ``call`` (those set so far and later ones) to ``heap``."""
        self._heap, self._call = heap, call
        for name, deadline in self.items():
            heapq.heappush(heap, (deadline, next(_sequence), name, call))

    def __setitem__(self, name: str, deadline: float) -> None:
        super().__setitem__(name, deadline)
        if self._heap is not None and self._call is not None:
            heapq.heappush(self._heap, (deadline, next(_sequence), name, self._call))


class CallState(enum.Enum):
    """Where a game call stands, on either side."""

    #: INVITE sent, no final answer yet (caller) / INVITE received, the application decides (callee).
    PENDING = "pending"
    #: Callee: 200 sent, waiting for the ACK.
    ANSWERED = "answered"
    #: ACK sent or received: the session is established.
    CONFIRMED = "confirmed"
    #: BYE sent, waiting for its answer.
    ENDING = "ending"
    #: Over; kept briefly to answer retransmissions.
    ENDED = "ended"


@dataclass(slots=True)
class Call:
    """One invitation and the session it may become (mutable: the agent's own record)."""

    call_id: str
    is_caller: bool
    local_uri: str
    peer_uri: str
    local_tag: str
    state: CallState = CallState.PENDING
    remote_tag: str | None = None
    #: The dialog (RFC 3261 12): the caller's from its 2xx, the callee's from the INVITE it answers.
    dialog: Dialog | None = None
    #: CSeq of our INVITE (grows by one for each digest retry).
    invite_cseq: int = 1
    invite: Request | None = None
    invite_tx: ClientInviteTransaction | ServerInviteTransaction | None = None
    #: Caller: a provisional response arrived, so a CANCEL may be sent (RFC 3261 9.1).
    provisional: bool = False
    offer_desc: SessionDescription | None = None
    answer_desc: SessionDescription | None = None
    #: The game streams of both SDPs as read (ours as built), for the agreement and the channel keys.
    offer_game: GameMedia | None = None
    answer_game: GameMedia | None = None
    #: Our X25519 private key until the channel parameters take it (then ``None``); never in ``repr``.
    private_key: PrivateKey | None = field(default=None, repr=False)
    #: The peer's ICE credentials and candidates (None: it offers no ICE, or not yet known).
    remote_ice: IceParameters | None = None
    acceptable: Acceptable | None = None
    #: Caller: the ACK for the 2xx and where it went, sent again for each 2xx retransmission (RFC 3261 13.2.2.4).
    ack: tuple[bytes, Address] | None = None
    agreement: Agreement | None = None
    #: Callee: the game channel's parameters, worked out while the 200 travels (the "keys" timer), not after the ACK.
    channel_params: ChannelParams | None = None
    auth_retries: int = 0
    #: The entity tag of our dialog publication at the player's server (RFC 3903), once it has one.
    publish_etag: str | None = None
    publish_version: int = 0
    caller_name: str | None = None
    #: Set once we CANCEL: the (status, reason, refused_by) the application will see for it.
    cancelled: tuple[int, str, str] | None = None
    #: Named deadlines: invite, cancel, answer, ring, keys, refresh, publish, forget.
    timers: CallTimers = field(default_factory=CallTimers)

    @property
    def offer(self) -> SessionTerms | None:
        """What the offer asks for: the terms of its game stream."""
        return None if self.offer_game is None else self.offer_game.terms


@dataclass(slots=True)
class Pending:
    """What a live transaction is for (``purpose``: register, invite, uas-invite, cancel, bye, refresh,
    publish), which call it serves, and how often its request was retried after a digest challenge."""

    purpose: str
    call_id: str | None
    retries: int = 0
    request: Request | None = None
    #: A PUBLISH of a full state (``confirmed`` or ``terminated``): sent again until a 2xx, a bounded number of
    #: times (``attempt`` counts them), so the server bills what really happened.
    publish_state: DialogState | None = None
    attempt: int = 0
    #: The transaction got its final answer or gave up (it lingers a while longer to absorb retransmissions).
    settled: bool = False
