"""server/publish: RFC 3903 PUBLISH processing for ``Event: dialog`` (an Event State Compositor), sans-IO.

Works on plain values (the SIP layer extracts Event, Expires, SIP-If-Match, Content-Type and the body) and
returns a :class:`PublishResult` the SIP layer turns into a response. RFC 3903 section 6 processing order:

1. Event package: not ``dialog`` -> 489 Bad Event (+ ``Allow-Events: dialog``)           (step 2)
2. ``SIP-If-Match`` naming no live entity-tag of this publisher -> 412 Conditional Request Failed (step 3),
   except for a body that ends every dialog it names: that is taken as a new publication (an end counts even
   when a refresh moved the tag in flight or a restart lost it)
3. ``Expires`` below the minimum (and not 0) -> 423 Interval Too Brief (+ ``Min-Expires``); above the maximum it is
   lowered                                                                                   (step 4)
4. Body: a wrong Content-Type -> 415 (+ ``Accept``); a bad dialog-info body -> 400 with the parse error; an
   initial PUBLISH (no ``SIP-If-Match``) without a body -> 400                               (step 5)
5. Success: a fresh entity-tag every time (step 7), 200 with ``SIP-ETag`` and the granted ``Expires``.

``Expires: 0`` with ``SIP-If-Match`` removes the publication (section 4.5).
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from .dialog_info import CONTENT_TYPE, DialogInfo, DialogInfoError, DialogState, parse_dialog_info_untrusted

__all__ = [
    "DialogPublications",
    "Publication",
    "PublishKind",
    "PublishRequest",
    "PublishResult",
]

EVENT_PACKAGE = "dialog"


class PublishKind(str, enum.Enum):
    INITIAL = "initial"  #: no SIP-If-Match, body: a new publication
    REFRESH = "refresh"  #: SIP-If-Match, no body: extend it
    MODIFY = "modify"  #: SIP-If-Match and a body: replace (or merge a partial) state
    REMOVE = "remove"  #: SIP-If-Match and Expires: 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishRequest:
    """The parts of a PUBLISH that RFC 3903 processing looks at."""

    aor: str
    """The publisher (authenticated From / Request-URI AOR)."""
    event: str | None
    """The Event header value, e.g. ``dialog`` (parameters allowed)."""
    expires: int | None
    """The Expires header value; ``None`` when absent."""
    if_match: str | None = None
    content_type: str | None = None
    body: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Publication:
    """The state an entity-tag currently stands for."""

    aor: str
    etag: str
    info: DialogInfo
    expires_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishResult:
    """What to answer, and what changed."""

    status: int
    reason: str
    kind: PublishKind | None = None
    etag: str | None = None
    expires: int | None = None
    min_expires: int | None = None
    info: DialogInfo | None = None
    """The publication's state after this request (for REMOVE: the state that was removed)."""
    previous: DialogInfo | None = None
    """The state before this request (MODIFY, REFRESH, REMOVE)."""
    extra_headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    replaced: Publication | None = None
    """The publication this request replaced or removed (for :meth:`DialogPublications.undo`)."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def headers(self) -> list[tuple[str, str]]:
        """Headers the response needs (SIP-ETag, Expires, Min-Expires, Allow-Events, Accept)."""
        out: list[tuple[str, str]] = []
        if self.etag is not None:
            out.append(("SIP-ETag", self.etag))
        if self.expires is not None:
            out.append(("Expires", str(self.expires)))
        if self.min_expires is not None:
            out.append(("Min-Expires", str(self.min_expires)))
        out.extend(self.extra_headers)
        return out


def _same_aor(a: str, b: str) -> bool:
    # The AOR is compared without display decoration and case-insensitively: our player names and domains are
    # lower-case tokens; a stricter RFC 3261 section 19.1.4 URI comparison belongs to the SIP layer.
    return a.strip().strip("<>").lower() == b.strip().strip("<>").lower()


def _all_terminated(info: DialogInfo) -> bool:
    return bool(info.dialogs) and all(d.state is DialogState.TERMINATED for d in info.dialogs)


def _merge(old: DialogInfo, new: DialogInfo) -> DialogInfo:
    """RFC 4235 section 4.1: a partial document updates the dialogs it lists, keeps the others."""
    if new.full:
        return new
    dialogs = {d.id: d for d in old.dialogs}
    for d in new.dialogs:
        dialogs[d.id] = d
    return DialogInfo(entity=old.entity, version=new.version, full=True, dialogs=tuple(dialogs.values()))


class DialogPublications:
    """The server's Event State Compositor for the ``dialog`` package.

    Args:
        etag_factory: returns a fresh, unguessable entity-tag (token chars), e.g. ``lambda: os.urandom(12).hex()``.
        min_expires_s / max_expires_s / default_expires_s: RFC 3903 section 6 step 4 bounds.
    """

    def __init__(
        self,
        *,
        etag_factory: Callable[[], str],
        min_expires_s: int = 60,
        max_expires_s: int = 3600,
        default_expires_s: int = 90,
        max_per_aor: int = 32,
        max_total: int = 100_000,
    ) -> None:
        self._etag_factory = etag_factory
        # Hard caps (the table is keyed by what players send): one player cannot hold memory for everybody.
        self.max_per_aor = max_per_aor
        self.max_total = max_total
        self._per_aor: dict[str, int] = {}
        self.min_expires_s = min_expires_s
        self.max_expires_s = max_expires_s
        self.default_expires_s = default_expires_s
        self._by_etag: dict[str, Publication] = {}
        self._timers: list[tuple[float, str]] = []
        # Entity-tags added (the publication) or gone (None) since the driver last saved them.
        self._changes: dict[str, Publication | None] = {}
        # Per player, the entity-tags (oldest first) of publications whose dialogs all ended: what makes room.
        self._ended: dict[str, dict[str, None]] = {}

    def get(self, etag: str) -> Publication | None:
        return self._by_etag.get(etag)

    def of(self, aor: str) -> list[Publication]:
        """The live publications of ``aor``."""
        return [p for p in self._by_etag.values() if _same_aor(p.aor, aor)]

    def __len__(self) -> int:
        return len(self._by_etag)

    def handle(self, req: PublishRequest, now: float) -> PublishResult:
        """Process one PUBLISH at ``now``. Never raises for bad input: errors are results with a status."""
        # Step 2: the event package.
        event = (req.event or "").split(";", 1)[0].strip().lower()
        if event != EVENT_PACKAGE:
            return PublishResult(
                status=489,
                reason="Bad Event",
                extra_headers=(("Allow-Events", EVENT_PACKAGE),),
            )

        # Step 3: the entity-tag.
        current: Publication | None = None
        stale = False
        if req.if_match is not None:
            current = self._by_etag.get(req.if_match.strip())
            if current is None or current.expires_at <= now or not _same_aor(current.aor, req.aor):
                # Refused below, unless the body ends every dialog it names: an end must count although a
                # refresh moved the tag in flight or a restart lost it (it is then a new publication).
                current, stale = None, True
                if not req.body.strip() or req.expires == 0:
                    return PublishResult(status=412, reason="Conditional Request Failed")

        # Step 4: the expiration interval.
        expires = self.default_expires_s if req.expires is None else req.expires
        if expires < 0:
            return PublishResult(status=400, reason="Bad Expires")
        if expires == 0:
            if current is None:
                return PublishResult(status=400, reason="Expires 0 needs SIP-If-Match")
            self._drop(current.etag)
            return PublishResult(
                status=200, reason="OK", kind=PublishKind.REMOVE, etag=current.etag, expires=0,
                info=current.info, previous=current.info, replaced=current,
            )
        if expires < self.min_expires_s:
            return PublishResult(status=423, reason="Interval Too Brief", min_expires=self.min_expires_s)
        expires = min(expires, self.max_expires_s)

        # Step 5: the body.
        info: DialogInfo | None = None
        if req.body.strip():
            ctype = (req.content_type or "").split(";", 1)[0].strip().lower()
            if ctype != CONTENT_TYPE:
                return PublishResult(
                    status=415, reason="Unsupported Media Type", extra_headers=(("Accept", CONTENT_TYPE),)
                )
            try:
                info = parse_dialog_info_untrusted(req.body)
            except DialogInfoError as exc:
                return PublishResult(status=400, reason=exc.message)
            if not _same_aor(info.entity, req.aor):
                return PublishResult(status=403, reason="dialog-info entity is not the publisher")
            if stale and not (info.dialogs and all(d.state is DialogState.TERMINATED for d in info.dialogs)):
                return PublishResult(status=412, reason="Conditional Request Failed")
        elif current is None:
            return PublishResult(status=400, reason="initial PUBLISH needs a dialog-info body")

        ends_all = info is not None and _all_terminated(info)
        if current is None:
            # A new publication: within the caps (a game session needs one; 32 at once is no player's). Ended
            # sessions make room: the oldest publication of this player whose dialogs all ended goes first, and
            # an end is never refused for room (its reservation must be released).
            if self._per_aor.get(req.aor, 0) >= self.max_per_aor and not self._evict_ended(req.aor) \
                    and not ends_all:
                return PublishResult(status=403, reason=f"Too many publications for this player (limit "
                                                        f"{self.max_per_aor})")
            if len(self._by_etag) >= self.max_total and not self._evict_ended(req.aor) and not ends_all:
                return PublishResult(status=503, reason="Too many publications, try later",
                                     extra_headers=(("Retry-After", "30"),))

        # Step 7: a fresh entity-tag for every successful PUBLISH.
        etag = self._etag_factory()
        if current is None:
            assert info is not None  # guaranteed by the body check above
            kind, state, previous = PublishKind.INITIAL, info, None
        else:
            self._drop(current.etag)
            previous = current.info
            if info is None:
                kind, state = PublishKind.REFRESH, current.info
            else:
                # No version check needed: each success rotates the entity-tag, so a stale PUBLISH gets 412.
                kind, state = PublishKind.MODIFY, _merge(current.info, info)
        pub = Publication(aor=req.aor, etag=etag, info=state, expires_at=now + expires)
        self._add(pub)
        heapq.heappush(self._timers, (pub.expires_at, etag))
        return PublishResult(
            status=200, reason="OK", kind=kind, etag=etag, expires=expires, info=state, previous=previous,
            replaced=current,
        )

    def undo(self, result: PublishResult) -> None:
        """Take back a successful :meth:`handle` whose effects could not be applied: the new entity-tag is
        forgotten and the replaced publication is live again, so the publisher's retry (same ``SIP-If-Match``)
        is processed as if the first attempt never happened."""
        if not result.ok:
            return
        if result.kind is not PublishKind.REMOVE and result.etag is not None:
            self._drop(result.etag)
        old = result.replaced
        if old is not None:
            self._add(old)
            heapq.heappush(self._timers, (old.expires_at, old.etag))

    def get_timer(self) -> float | None:
        while self._timers:
            when, etag = self._timers[0]
            pub = self._by_etag.get(etag)
            if pub is not None and pub.expires_at == when:
                return when
            heapq.heappop(self._timers)
        return None

    def handle_timer(self, now: float) -> list[Publication]:
        """Drop publications that expired (RFC 3903 section 6: soft state). Returns them.

        The policy server's own lease (Expires + 32 s slack) decides about reservations; this only forgets tags.
        """
        expired: list[Publication] = []
        while self._timers and self._timers[0][0] <= now:
            when, etag = heapq.heappop(self._timers)
            pub = self._by_etag.get(etag)
            if pub is not None and pub.expires_at == when:
                self._drop(etag)
                expired.append(pub)
        return expired

    def take_changes(self) -> dict[str, Publication | None]:
        """What changed since the last call (entity-tag -> publication, or None when it went): the driver writes
        it to the region database, so a restart keeps the players' entity-tags (their refreshes still match)."""
        changes, self._changes = self._changes, {}
        return changes

    def restore(self, publications: list[Publication], now: float) -> int:
        """Publications read back at start-up (times on this process' clock); those already expired are skipped.
        Returns how many were restored."""
        restored = 0
        for pub in publications:
            if pub.expires_at <= now or pub.etag in self._by_etag:
                continue
            if self._per_aor.get(pub.aor, 0) >= self.max_per_aor or len(self._by_etag) >= self.max_total:
                continue
            self._by_etag[pub.etag] = pub
            self._per_aor[pub.aor] = self._per_aor.get(pub.aor, 0) + 1
            if _all_terminated(pub.info):
                self._ended.setdefault(pub.aor, {})[pub.etag] = None
            heapq.heappush(self._timers, (pub.expires_at, pub.etag))
            restored += 1
        return restored

    def _evict_ended(self, aor: str) -> bool:
        """Drop this player's oldest publication whose dialogs all ended (it only answers a late refresh)."""
        ended = self._ended.get(aor)
        if not ended:
            return False
        self._drop(next(iter(ended)))
        return True

    def _add(self, pub: Publication) -> None:
        self._by_etag[pub.etag] = pub
        self._per_aor[pub.aor] = self._per_aor.get(pub.aor, 0) + 1
        self._changes[pub.etag] = pub
        if _all_terminated(pub.info):
            self._ended.setdefault(pub.aor, {})[pub.etag] = None

    def _drop(self, etag: str) -> None:
        pub = self._by_etag.pop(etag, None)
        if pub is not None:
            self._changes[etag] = None
            ended = self._ended.get(pub.aor)
            if ended is not None:
                ended.pop(etag, None)
                if not ended:
                    del self._ended[pub.aor]
            left = self._per_aor.get(pub.aor, 1) - 1
            if left > 0:
                self._per_aor[pub.aor] = left
            else:
                self._per_aor.pop(pub.aor, None)
