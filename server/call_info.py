"""What the proxy tells the policy about one INVITE (:class:`CallInfo`, re-exported by :mod:`server.hooks`).

A module of its own so that the compiled build compiles it (setup.py MYPYC_MODULES): the proxy makes one per call
and the proxy and the policy read its fields some 50 times a call. As a native class, making it is a native call
and each read a load, where the interpreted class cost a call into the interpreter (14 keywords, ~8.5k
instructions) and a descriptor's lookup per read (~160 each). :mod:`server.hooks` itself stays interpreted.
"""

from __future__ import annotations

from dataclasses import dataclass

from gamesdk.address import Address
from gamesdk.sip.message import Request

__all__ = ["CallInfo"]


@dataclass(slots=True)
class CallInfo:
    """What the proxy knows about one INVITE when it asks the policy. (Not frozen: a frozen dataclass sets each of
    its 14 fields through ``object.__setattr__``, once per call on the hot path, and the proxy lets ``invite``
    go at the INVITE's final response.)"""

    call_id: str
    from_tag: str | None
    #: ``sip:user@domain`` of the caller (From) and of the callee (the Request-URI as received).
    caller: str
    callee: str
    #: The caller is a player of this region, authenticated here (this is the caller's server).
    caller_local: bool
    #: The callee is registered here (this is the callee's server).
    callee_local: bool
    #: Access networks by longest prefix: the caller's from the INVITE's source address (only when
    #: ``caller_local``), the callee's from its registration (only when ``callee_local``).
    caller_network: str | None
    callee_network: str | None
    caller_address: Address | None
    callee_address: Address | None
    #: The federated region on the other side, if any (for transit latency).
    peer_domain: str | None
    #: The offer as received (the proxy never changes it).
    offer: bytes
    content_type: str | None
    #: The INVITE as received, for ``invite_received``; None in the hooks called after its transaction sent its
    #: final response (``answer_received`` of another 2xx, ``invite_failed``): the proxy keeps no parsed message
    #: in a completed transaction (some 60,000 of them wait out their timers at 1,000 calls/s).
    invite: Request | None
