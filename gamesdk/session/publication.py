"""The player's dialog publication (DESIGN section 4): PUBLISH ``Event: dialog`` with RFC 4235 dialog-info to
the player's own server, ``confirmed`` after the ACK, refreshed with SIP-If-Match (RFC 3903), ``terminated``
on BYE. The server's policy component keeps the session's reservations alive on it."""

from __future__ import annotations

from gamesdk.address import Address
from gamesdk.session.calls import Call
from gamesdk.session.requests import build_request
from gamesdk.sip.dialog_info import (
    CONTENT_TYPE,
    DialogEntry,
    DialogInfo,
    DialogState,
    Direction,
    format_dialog_info,
)
from gamesdk.sip.ids import IdFactory
from gamesdk.sip.message import Request

__all__ = ["build_publish"]


def build_publish(
    call: Call,
    state: DialogState,
    *,
    aor: str,
    via: Address,
    ids: IdFactory,
    expires_s: int,
    refresh: bool,
    event: str | None = None,
    code: int | None = None,
    credentials: tuple[str, str] | None = None,
    user_agent: str | None = None,
) -> Request:
    """A PUBLISH of ``call``'s dialog state. A ``refresh`` carries no body, only SIP-If-Match (RFC 3903 4.2);
    otherwise the full state goes with the next dialog-info version (RFC 4235 4.1), under the current entity
    tag if there is one. Bumps ``call.publish_version`` for a full state."""
    extra = [("Event", "dialog"), ("Expires", str(expires_s))]
    if credentials is not None:
        extra.append(credentials)
    if call.publish_etag is not None:
        extra.append(("SIP-If-Match", call.publish_etag))
    body = b""
    if not refresh:
        call.publish_version += 1
        entry = DialogEntry(
            id=call.call_id,
            state=state,
            call_id=call.call_id,
            local_tag=call.local_tag,
            remote_tag=call.remote_tag,
            direction=Direction.INITIATOR if call.is_caller else Direction.RECIPIENT,
            event=event,
            code=code,
            local_identity=call.local_uri,
            remote_identity=call.peer_uri,
        )
        body = format_dialog_info(DialogInfo(entity=aor, version=call.publish_version, dialogs=(entry,)))
    return build_request(
        "PUBLISH",
        aor,
        via_host=via[0],
        via_port=via[1],
        branch=ids.branch(),
        from_=f"<{aor}>;tag={ids.tag()}",
        to=f"<{aor}>",
        call_id=ids.call_id(),
        cseq=1,
        extra=extra,
        body=body,
        content_type=CONTENT_TYPE if body else None,
        user_agent=user_agent,
    )
