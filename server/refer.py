"""server/refer: the regional server asks a player's own game client to invite someone (RFC 3515 REFER).

The web site's invite form ends here: a REFER from the server to the player's registered contact, ``Refer-To``
naming the opponent with the game requirements as URI headers (``Gsdk-Format``, ``Gsdk-Class``, ``Gsdk-Qos``,
``Gsdk-Bandwidth``), ``Referred-By`` the web login. The client answers 202, sends the INVITE itself (its channel
keys never leave the player's machine) and reports progress in NOTIFY (``Event: refer``, ``message/sipfrag``,
RFC 3420): ``SIP/2.0 180 Ringing``, then ``SIP/2.0 200 OK`` with the ``P-Gamesdk-Reservation`` header of each
region, or the failure with its ``Warning``. Each step becomes a :class:`ReferProgress` for the listener.

Sans-IO: ``now`` comes in, datagrams go out; the UDP retransmissions of the REFER follow RFC 3261 17.1.2.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from gamesdk.address import Address
from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.ids import IdFactory
from gamesdk.sip.message import Request, Response, response_for
from server.location import Binding

__all__ = ["REFER_HEADERS", "ReferAgent", "ReferProgress", "refer_to_uri"]

log = logging.getLogger(__name__)

Datagrams = list[tuple[bytes, Address]]

#: Refer-To URI header names for the game requirements, in the order they are written.
REFER_HEADERS = ("Gsdk-Format", "Gsdk-Class", "Gsdk-Qos", "Gsdk-Bandwidth")
#: REFERs in flight or subscribed at most (each lives at most a few minutes).
MAX_REFERS = 4096
#: A subscription with no NOTIFY for this long is dropped (RFC 3515: the referee's INVITE takes Timer C at most).
SUBSCRIPTION_S = 200.0


@dataclass(frozen=True, slots=True)
class ReferProgress:
    """One step of a web invite, for the page.

    ``step``: ``sent``, ``accepted`` (the client took it, 202), ``trying``, ``ringing``, ``reserved`` (one per
    region: ``region``, ``detail`` = ``network=..;up=..;down=..``), ``established``, ``refused`` (``status``,
    ``reason``, ``region`` that refused when known), ``failed`` (the client could not be reached).
    """

    ref_id: str
    step: str
    status: int = 0
    reason: str = ""
    region: str = ""
    detail: str = ""
    final: bool = False


@dataclass(slots=True)
class _Refer:
    ref_id: str
    request: bytes
    destination: Address
    call_id: str
    from_tag: str
    started: float
    retransmit_at: float | None
    interval: float
    answered: bool = False
    done: bool = False
    deadline: float = 0.0
    steps: list[str] = field(default_factory=list)


def refer_to_uri(target: str, requirements: dict[str, str]) -> str:
    """``<sip:bob@na?Gsdk-Format=...&...>``: the opponent with the game requirements as escaped URI headers."""
    parts = [f"{name}={quote(requirements[name], safe='')}" for name in REFER_HEADERS if name in requirements]
    return f"<{target}{'?' + '&'.join(parts) if parts else ''}>"


class ReferAgent:
    """Sends REFERs and follows their implicit subscriptions (NOTIFY) for one region."""

    def __init__(self, *, domain: str, via_host: str, via_port: int, ids: IdFactory, t1: float = 0.5,
                 t2: float = 4.0) -> None:
        self.domain = domain
        self.via_host = via_host
        self.via_port = via_port
        self.ids = ids
        self.t1 = t1
        self.t2 = t2
        self._by_call: dict[str, _Refer] = {}
        #: Called with every :class:`ReferProgress` (the web site keeps them per invite).
        self.listener: Callable[[ReferProgress], None] | None = None

    def start(self, binding: Binding, *, target: str, requirements: dict[str, str], referred_by: str,
              now: float) -> tuple[str, Datagrams]:
        """Send a REFER to ``binding`` (the player's registered contact). Returns (ref id, datagrams)."""
        self._expire(now)
        if len(self._by_call) >= MAX_REFERS:
            oldest = min(self._by_call.values(), key=lambda r: r.started)
            self._by_call.pop(oldest.call_id, None)
        call_id = self.ids.call_id()
        tag = self.ids.tag()
        branch = self.ids.branch()
        host = f"[{self.via_host}]" if ":" in self.via_host else self.via_host
        lines = [
            f"REFER {binding.contact} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{self.via_port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:web@{self.domain}>;tag={tag}",
            f"To: <{binding.aor}>",
            f"Call-ID: {call_id}",
            "CSeq: 1 REFER",
            f"Contact: <sip:web@{host}:{self.via_port}>",
            f"Refer-To: {refer_to_uri(target, requirements)}",
            f"Referred-By: <{referred_by}>",
            "Event: refer",
            "Allow: NOTIFY",
            "User-Agent: gamesdk-server web",
            "Content-Length: 0",
            "",
            "",
        ]
        data = "\r\n".join(lines).encode()
        ref = _Refer(ref_id=call_id, request=data, destination=binding.next_hop, call_id=call_id, from_tag=tag,
                     started=now, retransmit_at=now + self.t1, interval=self.t1, deadline=now + SUBSCRIPTION_S)
        self._by_call[call_id] = ref
        self._emit(ReferProgress(call_id, "sent", detail=f"to {binding.contact}"))
        return call_id, [(data, ref.destination)]

    # -- what comes back -------------------------------------------------------------------------------------------

    def handle_response(self, response: Response, addr: Address, now: float) -> bool:
        """A response to one of our REFERs (True: consumed)."""
        try:
            if response.cseq.method != "REFER":
                return False
        except RemoteProtocolError:
            return False
        ref = self._by_call.get(response.headers.get("Call-ID") or "")
        if ref is None:
            return False
        if response.status < 200:
            ref.retransmit_at = now + self.t2 if ref.retransmit_at is not None else None
            return True
        if ref.answered:
            return True
        ref.answered = True
        ref.retransmit_at = None
        if response.status < 300:
            self._emit(ReferProgress(ref.ref_id, "accepted", response.status, response.reason))
        else:
            ref.done = True
            self._emit(ReferProgress(ref.ref_id, "refused", response.status,
                                     f"your game client refused: {response.reason}", final=True))
            self._by_call.pop(ref.call_id, None)
        return True

    def owns(self, request: Request) -> bool:
        return request.method == "NOTIFY" and (request.headers.get("Call-ID") or "") in self._by_call

    def handle_notify(self, request: Request, addr: Address, now: float) -> Datagrams:
        """A NOTIFY of one of our subscriptions (check :meth:`owns` first): progress, then 200 (or 481/400)."""
        ref = self._by_call.get(request.headers.get("Call-ID") or "")
        if ref is None or addr[0] != ref.destination[0]:
            # Only the referee's own address reports on its REFER.
            return [(response_for(request, 481, "Subscription Does Not Exist").to_bytes(), addr)]
        event = (request.headers.get("Event") or "").split(";", 1)[0].strip().lower()
        if event != "refer":
            return [(response_for(request, 489, "Bad Event", extra=[("Allow-Events", "refer")]).to_bytes(), addr)]
        ref.answered = True
        ref.retransmit_at = None
        ref.deadline = now + SUBSCRIPTION_S
        body = request.body.decode("utf-8", "replace")
        for progress in _progress(ref.ref_id, body):
            self._emit(progress)
            if progress.final:
                ref.done = True
        state = (request.headers.get("Subscription-State") or "").split(";", 1)[0].strip().lower()
        if state == "terminated" or ref.done:
            self._by_call.pop(ref.call_id, None)
        return [(response_for(request, 200, "OK").to_bytes(), addr)]

    # -- timers ----------------------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        best: float | None = None
        for ref in self._by_call.values():
            for when in (ref.retransmit_at, ref.deadline):
                if when is not None and (best is None or when < best):
                    best = when
        return best

    def handle_timer(self, now: float, out: Datagrams) -> None:
        for ref in list(self._by_call.values()):
            if not ref.answered and now - ref.started >= 64 * self.t1:
                self._by_call.pop(ref.call_id, None)
                self._emit(ReferProgress(ref.ref_id, "failed", 408, "your game client did not answer",
                                         final=True))
                continue
            if ref.retransmit_at is not None and ref.retransmit_at <= now:
                out.append((ref.request, ref.destination))
                ref.interval = min(ref.interval * 2, self.t2)
                ref.retransmit_at = now + ref.interval
        self._expire(now)

    def _expire(self, now: float) -> None:
        for ref in list(self._by_call.values()):
            if ref.deadline <= now and ref.answered:
                self._by_call.pop(ref.call_id, None)
                self._emit(ReferProgress(ref.ref_id, "failed", 408, "no news from your game client", final=True))

    def _emit(self, progress: ReferProgress) -> None:
        log.info("refer %s: %s %s %s", progress.ref_id, progress.step, progress.status or "", progress.reason)
        if self.listener is not None:
            try:
                self.listener(progress)
            except Exception:  # the page's bookkeeping must not break SIP handling
                log.exception("refer listener failed")


def _progress(ref_id: str, body: str) -> list[ReferProgress]:
    """The steps a ``message/sipfrag`` body reports: its status line, and its reservation/Warning headers."""
    lines = [line.strip() for line in body.replace("\r\n", "\n").split("\n")]
    if not lines or not lines[0].startswith("SIP/2.0 "):
        return []
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isascii() or not parts[1].isdigit():
        return []
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip().lower(), value.strip()))
    if status < 180:
        return [ReferProgress(ref_id, "trying", status, reason)]
    if status < 200:
        return [ReferProgress(ref_id, "ringing", status, reason)]
    if status < 300:
        out = []
        for name, value in headers:
            if name == "p-gamesdk-reservation":
                region, _, detail = value.partition(";")
                out.append(ReferProgress(ref_id, "reserved", status, "", region=region.strip(), detail=detail))
        out.append(ReferProgress(ref_id, "established", status, reason, final=True))
        return out
    region = ""
    why = reason
    for name, value in headers:
        if name == "warning":
            # Warning: 370 na.gamesdk.test "insufficient uplink in na-dsl"
            _, _, rest = value.partition(" ")
            agent, _, text = rest.partition(" ")
            region = agent
            why = text.strip().strip('"') or why
        elif name == "p-gamesdk-refused-by" and not region:
            region = value
    return [ReferProgress(ref_id, "refused", status, why, region=region, final=True)]
