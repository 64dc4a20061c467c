"""Watching other players (RFC 6665 SUBSCRIBE with the RFC 3856 ``presence`` event): one subscription per
watched player, refreshed before it runs out, its NOTIFYs turned into ``PresenceChanged`` events (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from gamesdk.address import Address
from gamesdk.session.requests import build_request
from gamesdk.sip.ids import IdFactory
from gamesdk.sip.message import Request
from gamesdk.sip.pidf import CONTENT_TYPE

__all__ = ["WATCH_EXPIRES_S", "Watch", "build_subscribe"]

#: Subscription lifetime asked for; refreshed at 80 %.
WATCH_EXPIRES_S = 600


@dataclass(slots=True)
class Watch:
    """Our subscription to one player's presence."""

    player: str
    call_id: str
    local_tag: str
    cseq: int = 0
    #: The notifier's tag and where in-dialog requests go (its Contact), once it answered or notified.
    remote_tag: str | None = None
    target: Address | None = None
    target_uri: str | None = None
    expires_s: int = WATCH_EXPIRES_S
    ended: bool = False


def build_subscribe(
    watch: Watch,
    *,
    aor: str,
    contact: str,
    via: Address,
    ids: IdFactory,
    expires_s: int,
    credentials: tuple[str, str] | None = None,
    user_agent: str | None = None,
) -> Request:
    """A SUBSCRIBE for ``watch``: out of dialog (to the player's address of record, through our server) until
    the notifier answered, then within the subscription's dialog (to its Contact)."""
    watch.cseq += 1
    extra = [("Event", "presence"), ("Accept", CONTENT_TYPE), ("Expires", str(expires_s))]
    if credentials is not None:
        extra.append(credentials)
    to = f"<{watch.player}>" if watch.remote_tag is None else f"<{watch.player}>;tag={watch.remote_tag}"
    return build_request(
        "SUBSCRIBE",
        watch.target_uri or watch.player,
        via_host=via[0],
        via_port=via[1],
        branch=ids.branch(),
        from_=f"<{aor}>;tag={watch.local_tag}",
        to=to,
        call_id=watch.call_id,
        cseq=watch.cseq,
        contact=contact,
        extra=extra,
        user_agent=user_agent,
    )
