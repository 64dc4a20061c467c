"""server/policy/queries: the policy calls the hooks make, as data, and how a synchronous backend answers them.

The hooks describe what they need from the policy as a tuple of :class:`PolicyCall` and finish their verdict from
the :class:`~server.hooks.QueryAnswer`. An embedded :class:`~server.policy.core.PolicyServer` answers at once
(:func:`answer_now`); a separate policy process is asked by the driver, off the signalling path
(:class:`server.policy.runner.HttpQueryRunner`), with the same rules:

- the calls are made in order and stop after the first refusal (a :class:`Deny` from PRELIMINARY or FINAL: the
  later sides are not asked, as in DESIGN section 4) or the first operation that was not made durable (``error``
  says why; the PUBLISH is then not acknowledged);
- a decision that fails (a bug, a broken database) is a refusal with resource ``policy``, never an exception;
- a released player that fails is logged and counted as ``None``; the other players are still released.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from server.hooks import QueryAnswer

from .lifetime import PolicyOperation
from .model import (
    AppSession,
    Decision,
    Deny,
    EndReason,
    Reservation,
    Resource,
    positional_maker,
    slot_setting_init,
)

__all__ = ["PolicyCall", "SyncBackend", "answer_now", "new_policy_call", "policy_fault"]

log: Final = logging.getLogger(__name__)

CallKind = Literal["preliminary", "final", "apply", "release_player"]


@dataclass(frozen=True, slots=True)
class PolicyCall:
    """One call to the policy: a decision on ``request``, an operation ``op``, or the release of ``player``."""

    kind: CallKind
    request: AppSession | None = None
    op: PolicyOperation | None = None
    player: str = ""
    player_ip: str | None = None


slot_setting_init(PolicyCall)  # made per policy call: fields set through the slots (still frozen)


def _policy_call_native(kind: CallKind, request: AppSession | None, op: PolicyOperation | None, player: str,
                        player_ip: str | None) -> PolicyCall:
    # A compiled build's maker: the fields set as native attributes (see server.policy.model's native makers).
    made: PolicyCall = PolicyCall.__new__(PolicyCall)
    made.kind = kind  # type: ignore[misc]
    made.request = request  # type: ignore[misc]
    made.op = op  # type: ignore[misc]
    made.player = player  # type: ignore[misc]
    made.player_ip = player_ip  # type: ignore[misc]
    return made


#: ``PolicyCall(...)`` with every field given positionally (the hooks make four per call).
new_policy_call: Callable[[CallKind, AppSession | None, PolicyOperation | None, str, str | None], PolicyCall] = (
    positional_maker(PolicyCall) or _policy_call_native)


class SyncBackend(Protocol):
    """The policy in this process (:class:`~server.policy.core.PolicyServer`)."""

    def preliminary(self, request: AppSession, now: float, *, wall: float | None = None) -> Decision: ...

    def final(self, request: AppSession, now: float, *, wall: float | None = None) -> Decision: ...

    def apply(self, op: PolicyOperation, now: float) -> Reservation | None: ...

    def release_player(
        self, player: str, now: float, reason: EndReason = EndReason.REG_EXPIRED, *, player_ip: str | None = None
    ) -> list[Reservation]: ...


def policy_fault(reason: str = "policy server error") -> Deny:
    """The refusal a failed decision becomes: the proxy still answers the INVITE and forwards every 2xx."""
    return Deny(network=None, resource=Resource.POLICY, reason=reason)


def _check_failed(request: AppSession, exc: Exception) -> Decision:
    log.error("policy check for %s failed", request.call_id, exc_info=exc)
    return policy_fault()


_new_object: Final = object.__new__
_set_results: Final[Callable[[QueryAnswer, tuple[object, ...]], None]] = vars(QueryAnswer)["results"].__set__
_set_error: Final[Callable[[QueryAnswer, str | None], None]] = vars(QueryAnswer)["error"].__set__


def _answer(results: list[object], error: str | None) -> QueryAnswer:
    """``QueryAnswer(tuple(results), error)``, its slots set as its ``__init__`` sets them, without the type call
    and that ``__init__``'s frame (server.hooks is interpreted): ~1,500 instructions less a call's INVITE and 2xx
    each in a compiled build."""
    answer: QueryAnswer = _new_object(QueryAnswer)
    _set_results(answer, tuple(results))
    _set_error(answer, error)
    return answer


def answer_now(backend: SyncBackend, calls: tuple[PolicyCall, ...], now: float, wall: float) -> QueryAnswer:
    """Make ``calls`` on a backend in this process, by the module's rules."""
    results: list[object] = []
    final_many = getattr(backend, "final_many", None)
    index = 0
    while index < len(calls):
        call = calls[index]
        index += 1
        kind = call.kind
        if kind == "final" and final_many is not None:
            # The FINALs in a row (a call's two sides) go together: the backend records them in one write.
            requests: list[AppSession] = []
            for pending in calls[index - 1:]:
                if pending.kind != "final":
                    break
                assert pending.request is not None  # built by the hooks (internal invariant)
                requests.append(pending.request)
            index += len(requests) - 1
            try:
                decisions: list[Decision] = final_many(requests, now, wall=wall, on_fault=_check_failed)
            except Exception:
                log.exception("policy check for %s failed", requests[0].call_id)
                decisions = [policy_fault()]
            results.extend(decisions)
            if decisions and isinstance(decisions[-1], Deny):
                break
            continue
        if kind in ("preliminary", "final"):
            assert call.request is not None  # built by the hooks (internal invariant)
            check = backend.preliminary if kind == "preliminary" else backend.final
            try:
                decision = check(call.request, now, wall=wall)
            except Exception:
                log.exception("policy check for %s failed", call.request.call_id)
                decision = policy_fault()
            results.append(decision)
            if isinstance(decision, Deny):
                break
        elif kind == "apply":
            assert call.op is not None
            try:
                results.append(backend.apply(call.op, now))
            except Exception as exc:  # noqa: BLE001 - not durable, whatever the cause: the PUBLISH is not acked
                return _answer(results, f"{type(exc).__name__}: {exc}")
        else:
            try:
                results.append(len(backend.release_player(call.player, now, player_ip=call.player_ip)))
            except Exception:
                log.exception("releasing the sessions of %s failed", call.player)
                results.append(None)
    return _answer(results, None)
