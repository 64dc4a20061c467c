"""The interface between the proxy and the policy/billing components (DESIGN section 4).

The proxy calls these hooks at fixed points and never reshapes itself around them:

- ``invite_received``: the INVITE path, after authentication and routing, before forwarding (PRELIMINARY check).
  A refusal becomes ``580 Precondition Failure`` (or the status given) with ``Warning: 370``.
- ``answer_received``: each 2xx to an INVITE, before it is forwarded upstream (FINAL reservation). Returns the
  headers to add (``P-Media-Authorization`` on success, ``Warning: 370`` on failure). The proxy caches them per
  (Call-ID, To-tag) so 2xx retransmissions get identical headers, and never touches the body.
- ``invite_failed``: the INVITE ended without a 2xx (non-2xx final, CANCEL, timeout): release tentative holds.
- ``publish_received``: a PUBLISH (RFC 3903) from an authenticated player of this region.
- ``bindings_removed``: registrations ended (expiry, ``Expires: 0``, ``Contact: *``): release their sessions.
- ``get_timer``/``handle_timer``: the hooks' own deadlines (confirm deadline, lease expiry), driven by the node.

Deferred verdicts: a hook whose answer needs a separate policy process returns a :class:`PolicyQuery` instead of
its verdict. The node parks the message that asked (the INVITE after its 100 Trying, the 2xx, the PUBLISH) and
hands the query to its driver (``RegionalServer.take_queries``); the driver asks the policy service (async I/O,
off the signalling path) and gives the answer back (``RegionalServer.answer_query``), which finishes the verdict
and sends what the parked message would have sent. Everything else keeps flowing meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from gamesdk.address import Address
from gamesdk.sip.message import Request, Response, response_for
from server.call_info import CallInfo
from server.location import Binding

__all__ = ["CallInfo", "InviteVerdict", "NullPolicy", "PolicyHooks", "PolicyQuery", "QueryAnswer"]

Out = list[tuple[bytes, Address]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class InviteVerdict:
    """The PRELIMINARY decision. ``ok=False`` answers ``status`` with ``warning`` as ``Warning`` header value."""

    ok: bool = True
    status: int = 580
    reason: str | None = None
    #: A full Warning value, e.g. ``370 eu.gamesdk.test "insufficient uplink in eu-dsl"`` (RFC 3261 20.43).
    warning: str | None = None
    #: Headers added to the forwarded INVITE (a token for the callee, RFC 3313 section 5.2.4).
    headers: tuple[tuple[str, str], ...] = ()
    #: With a refusal: ``Retry-After`` seconds (a 503 when the policy service is busy: back-pressure).
    retry_after: int | None = None


@dataclass(frozen=True, slots=True, init=False)
class QueryAnswer:
    """What the policy service said to a :class:`PolicyQuery`: one result per call made, in order. The calls stop
    at the first refusal; ``error`` says why they stopped early when the service could not be asked at all."""

    results: tuple[object, ...] = ()
    error: str | None = None

    def __init__(self, results: tuple[object, ...] = (), error: str | None = None) -> None:
        # A frozen dataclass's own __init__ sets each field through object.__setattr__ (the class's refuses):
        # its slots' setters, straight, are some 1,500 instructions less an answer (two a call, each INVITE's and
        # 2xx's). Still frozen: assigning a field raises FrozenInstanceError.
        _set_results(self, results)
        _set_error(self, error)


_set_results: Callable[[QueryAnswer, tuple[object, ...]], None] = vars(QueryAnswer)["results"].__set__
_set_error: Callable[[QueryAnswer, str | None], None] = vars(QueryAnswer)["error"].__set__


@dataclass(eq=False, slots=True)
class PolicyQuery(Generic[T]):
    """A policy question the node emits instead of blocking on it (see the module docstring).

    ``calls`` are the policy's own call descriptions (``server.policy.queries.PolicyCall``), made in order by the
    driver's runner; ``finish`` (set by the hooks) turns the answer into the verdict; ``then`` (set by the proxy or
    the node) resumes the parked message with it and appends what to send to ``out``.
    """

    calls: tuple[object, ...]
    finish: Callable[[QueryAnswer], T]
    then: Callable[[T, float, Out], None] | None = None
    #: Why it was asked (logs, counters): "invite", "answer", "publish", "release".
    purpose: str = ""
    #: When the message that asked arrived: the node's (monotonic loop) time and the wall clock then. A policy that
    #: answers later (a thread, another process) records the event at these times, not at its own.
    now: float = 0.0
    wall: float | None = None


class PolicyHooks(Protocol):
    def invite_received(self, call: CallInfo, now: float) -> InviteVerdict | PolicyQuery[InviteVerdict]: ...

    def answer_received(self, call: CallInfo, response: Response,
                        now: float) -> list[tuple[str, str]] | PolicyQuery[list[tuple[str, str]]]: ...

    def invite_failed(self, call: CallInfo, status: int, now: float) -> None: ...

    def publish_received(self, request: Request, user: str, source: Address,
                         now: float) -> Response | PolicyQuery[Response]: ...

    def bindings_removed(self, bindings: Sequence[Binding], now: float) -> PolicyQuery[None] | None: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class NullPolicy:
    """No policy: every INVITE passes, nothing is reserved; PUBLISH is not served (501)."""

    def invite_received(self, call: CallInfo, now: float) -> InviteVerdict:
        return InviteVerdict()

    def answer_received(self, call: CallInfo, response: Response, now: float) -> list[tuple[str, str]]:
        return []

    def invite_failed(self, call: CallInfo, status: int, now: float) -> None:
        return None

    def publish_received(self, request: Request, user: str, source: Address, now: float) -> Response:
        return response_for(request, 501, "PUBLISH not served without a policy component", to_tag="nopolicy")

    def bindings_removed(self, bindings: Sequence[Binding], now: float) -> PolicyQuery[None] | None:
        return None

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        return None
