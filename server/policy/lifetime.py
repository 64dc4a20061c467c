"""server/policy/lifetime: what a player's PUBLISH means for its reservations (DESIGN section 4).

:func:`operations_for_publish` turns an accepted PUBLISH (``server.publish.PublishResult``) into policy
operations; :meth:`PolicyServer.apply` (embedded) or ``PolicyHttpClient.apply_reservation`` (separate process,
asked by the SIP server's driver as a policy query) carries them out. Keeping the mapping a pure function lets the SIP server treat both deployments alike.

- ``confirmed`` (initial or modified publication) -> :class:`Activate` (gate open, billing START, lease);
- a refresh (``SIP-If-Match``, no body) of a confirmed dialog -> :class:`Refresh` (lease, billing INTERIM);
- ``terminated`` -> :class:`Release` with the end reason taken from ``<state event= code=>``;
- removal (``Expires: 0``) of a still-confirmed dialog -> :class:`Release` ``bye-local``.

The other timers (confirm deadline, lease expiry, registration expiry, restart) live in
:class:`~server.policy.core.PolicyServer` itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.dialog_info import DialogEntry, DialogInfo, DialogState
from server.publish import PublishKind, PublishResult

from .model import DialogRef, EndReason

__all__ = ["Activate", "PolicyOperation", "Refresh", "Release", "end_reason_for", "operations_for_publish"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Activate:
    ref: DialogRef
    expires_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Refresh:
    ref: DialogRef
    expires_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    ref: DialogRef
    reason: EndReason
    sip_reason: str | None = None
    #: Set when a peer region ends the session (its player saw ours vanish): only a reservation whose other
    #: player belongs to that domain matches.
    peer_domain: str | None = None


PolicyOperation = Activate | Refresh | Release

#: A BYE carrying one of these causes ended the session because QoS failed (DESIGN section 4: the SDK sends
#: ``Reason: SIP;cause=580`` after a failed reservation, ``cause=488`` when the answer's QoS is unacceptable).
_QOS_CAUSES = frozenset({580, 488})
#: A BYE right after the ACK with these causes ends a session that was never played: the SDK sends
#: ``cause=487`` when the 2xx crossed its CANCEL and ``cause=408`` when the answer came after it gave up.
_NOT_ESTABLISHED_CAUSES = frozenset({487, 408})


def end_reason_for(entry: DialogEntry) -> tuple[EndReason, str | None]:
    """The billing end reason for a ``terminated`` dialog (RFC 4235 ``<state event=... code=...>``)."""
    sip_reason = f"SIP;cause={entry.code}" if entry.code is not None else None
    if entry.event in ("local-bye", "remote-bye") and entry.code in _NOT_ESTABLISHED_CAUSES:
        # A 2xx that crossed the caller's CANCEL (or came after it gave up) is ended at once with ACK + BYE:
        # whoever sent or got that BYE, the session was never established.
        return EndReason.NOT_ESTABLISHED, sip_reason
    qos = entry.code in _QOS_CAUSES
    if entry.event == "local-bye":
        return (EndReason.QOS_FAILED if qos else EndReason.BYE_LOCAL), sip_reason
    if entry.event == "remote-bye":
        return (EndReason.QOS_FAILED_PEER if qos else EndReason.BYE_REMOTE), sip_reason
    if entry.event in ("cancelled", "rejected", "replaced"):
        return EndReason.NOT_ESTABLISHED, sip_reason
    # timeout / error / no event: the player ended it from its side.
    return (EndReason.QOS_FAILED if qos else EndReason.BYE_LOCAL), sip_reason


def _ref(entry: DialogEntry, aor: str) -> DialogRef | None:
    if not entry.call_id or entry.local_tag is None or entry.remote_tag is None:
        return None  # Without the dialog id there is nothing to match a reservation against.
    return DialogRef(call_id=entry.call_id, local_tag=entry.local_tag, remote_tag=entry.remote_tag, player=aor)


def _confirmed(info: DialogInfo | None) -> dict[str, DialogEntry]:
    if info is None:
        return {}
    return {d.id: d for d in info.dialogs if d.state is DialogState.CONFIRMED}


def operations_for_publish(result: PublishResult, aor: str) -> list[PolicyOperation]:
    """Policy operations implied by an accepted PUBLISH from ``aor`` (empty for rejected ones)."""
    if not result.ok or result.kind is None:
        return []
    ops: list[PolicyOperation] = []
    expires = result.expires or 0
    if result.kind is PublishKind.REFRESH:
        for entry in _confirmed(result.info).values():
            if (ref := _ref(entry, aor)) is not None:
                ops.append(Refresh(ref=ref, expires_s=expires))
        return ops
    if result.kind is PublishKind.REMOVE:
        for entry in _confirmed(result.info).values():
            if (ref := _ref(entry, aor)) is not None:
                ops.append(Release(ref=ref, reason=EndReason.BYE_LOCAL))
        return ops
    assert result.info is not None  # INITIAL and MODIFY always carry the new state
    for entry in result.info.dialogs:
        ref = _ref(entry, aor)
        if ref is None:
            continue
        if entry.state is DialogState.CONFIRMED:
            # A re-sent "confirmed" refreshes; the policy server treats activate-on-active as a refresh.
            ops.append(Activate(ref=ref, expires_s=expires))
        elif entry.state is DialogState.TERMINATED:
            reason, sip_reason = end_reason_for(entry)
            ops.append(Release(ref=ref, reason=reason, sip_reason=sip_reason))
        # trying/proceeding/early: nothing to do; the confirm deadline still runs.
    return ops

