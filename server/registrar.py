"""Registrar (RFC 3261 section 10.3) with digest login (RFC 8760). Pure: REGISTER in, response + changes out.

The steps follow section 10.3 in order: the domain is ours (step 1), Require is understood (step 2),
the player is authenticated (step 3) and may register this address-of-record (step 4), the To AOR is ours and
exists (step 5), ``Contact: *`` is handled (step 6), each binding is added, refreshed or removed with the
Call-ID/CSeq ordering check (step 7), and the 200 lists every current binding with its expires (step 8).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.headers import split_header_values
from gamesdk.sip.ids import IdFactory
from gamesdk.sip.message import Request
from gamesdk.sip.uri import NameAddr, SipUri
from server.auth import Authenticated, LoginFlow, answer_bytes, answer_bytes_direct
from server.config import RegistrarConfig
from server.location import Binding, LocationService, is_ip_literal
from server.splice import PlainRegister

__all__ = ["SUPPORTED_EXTENSIONS", "Registrar", "RegistrarResult"]

log = logging.getLogger(__name__)

#: Option tags we honour in Require (RFC 3261 section 8.2.2.3): "path" (RFC 3327: requests for the player follow
#: the registered Path) and "outbound" (RFC 5626: ";ob"/reg-id contacts are reached over their flow). GRUU is not
#: implemented, so "Require: gruu" gets 420.
SUPPORTED_EXTENSIONS = frozenset({"path", "outbound"})


def _path_of(request: Request, source: tuple[str, int]) -> tuple[tuple[str, ...], tuple[str, int] | None]:
    """The Path values of a REGISTER (RFC 3327) and the address of the first hop (an IP literal, else the source
    the REGISTER came from: the edge that added the Path)."""
    lines = request.headers.get_all("Path")
    if not lines:
        return (), None  # the usual REGISTER: straight from the player
    values = tuple(v.strip() for line in lines for v in split_header_values(line) if v.strip())
    if not values:
        return (), None
    try:
        first = NameAddr.parse(values[0]).uri
    except RemoteProtocolError:
        return (), None
    if is_ip_literal(first.host):
        return values, (first.host.strip("[]"), first.port or 5060)
    return values, source


#: Contact lines remembered with what the registrar read from them (:meth:`Registrar._contacts_of`).
_CONTACT_CACHE_MAX = 4096
#: Longest Contact text (all lines) remembered: the memo stays bounded in bytes, not only in entries (4,096 of up
#: to a datagram each); a player's Contact, with its instance and reg-id, is well under this.
_CONTACT_TEXT_MAX = 1024


class _Contact(NamedTuple):
    """One Contact of a REGISTER as the registrar uses it."""

    #: The URI as text: the binding's key and the Request-URI of requests for the player.
    key: str
    #: Its ``expires`` parameter, if any.
    expires: int | None
    #: Its IP address and port when requests go there (an IP literal, not an outbound contact).
    target: tuple[str, int] | None
    #: Has a ``reg-id`` (RFC 5626): the 200 then says ``Require: outbound``.
    reg_id: bool


# Hashable as before. Its __init__ written out (the same parameters): the compiled build runs a dataclass's
# generated one interpreted, where a written one stores the fields natively (every REGISTER makes one).
@dataclass(slots=True, unsafe_hash=True, init=False)
class RegistrarResult:
    """What one REGISTER did."""

    #: The answer's status, and the answer itself as sent to the REGISTER's source (its top Via marked with
    #: ``received``/``rport``): written straight to bytes, no Response object in between.
    status: int
    data: bytes
    #: Send the response only after this many seconds (authentication failure throttling).
    delay_s: float = 0.0
    added: tuple[Binding, ...] = ()
    #: Bindings that ended (Expires 0, ``Contact: *``, replaced by a new Call-ID with Expires 0).
    removed: tuple[Binding, ...] = ()
    #: The authenticated user, when authentication succeeded.
    user: str | None = None
    #: The answer of the login flow to an unauthenticated request: sent statelessly and never cached.
    challenge: bool = False

    def __init__(self, status: int, data: bytes, delay_s: float = 0.0, added: tuple[Binding, ...] = (),
                 removed: tuple[Binding, ...] = (), user: str | None = None, challenge: bool = False) -> None:
        self.status = status
        self.data = data
        self.delay_s = delay_s
        self.added = added
        self.removed = removed
        self.user = user
        self.challenge = challenge


@dataclass(slots=True)
class RegistrarStats:
    registers: int = 0
    challenges: int = 0
    auth_failures: int = 0
    blocked: int = 0
    ok: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class Registrar:
    """Answers REGISTER for one domain."""

    def __init__(self, domain: str, config: RegistrarConfig, login: LoginFlow, location: LocationService,
                 ids: IdFactory, *, is_us: Callable[[SipUri], bool] | None = None) -> None:
        self.domain = domain
        self.config = config
        self.login = login
        self.is_us = is_us or (lambda uri: uri.host.lower() == domain)
        self.location = location
        self.ids = ids
        self.stats = RegistrarStats()
        #: Header fields the 200 of a login carries besides the bindings, by player and time (the node's TURN
        #: credentials when the region has a relay), or None.
        self.ok_headers: Callable[[str, float], Sequence[tuple[str, str]]] | None = None
        self._contact_cache: dict[tuple[str, ...], tuple[_Contact, ...]] = {}

    def handle(self, request: Request, source: tuple[str, int], now: float,
               client: str | None = None) -> RegistrarResult:
        """Answer one REGISTER received from ``source``. Never raises for bad input: it answers 4xx.

        ``client`` is the address failures are counted under (``source``'s IP unless a trusted proxy reports
        another)."""
        self.stats.registers += 1
        try:
            result = self._handle(request, source, now, client or source[0])
        except RemoteProtocolError as exc:
            result = self._reply(request, source, exc.status_hint, exc.message)
        status = result.status
        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        return result

    def challenge_plain(self, request: PlainRegister, source: tuple[str, int], now: float) -> bytes | None:
        """The 401 of a REGISTER read by the challenge path (``server.splice.read_register``: no Require, no
        credentials), as :meth:`handle` answers it; None, with nothing done, when a step before authentication
        would refuse it (the full path answers those)."""
        ruri = request.ruri
        to_uri = request.to_uri
        is_us = self.is_us
        if not ruri.is_sip or not is_us(ruri) or not to_uri.is_sip or not is_us(to_uri) or not to_uri.user:
            return None
        stats = self.stats
        stats.registers += 1
        stats.challenges += 1
        challenge = self.login.challenge(False, now)  # before the tag, as handle() draws them
        data = answer_bytes(request.items, request.via, source, 401, None, to_tag=self.ids.tag(),
                            extra=challenge.headers)
        stats.by_status[401] = stats.by_status.get(401, 0) + 1
        return data

    def _reply(self, request: Request, source: tuple[str, int], status: int, reason: str | None = None,
               extra: Sequence[tuple[str, str]] = (), *, delay_s: float = 0.0, added: tuple[Binding, ...] = (),
               removed: tuple[Binding, ...] = (), user: str | None = None,
               challenge: bool = False) -> RegistrarResult:
        data = answer_bytes_direct(request, source, status, reason, to_tag=self.ids.tag(), extra=extra)
        return RegistrarResult(status, data, delay_s, added, removed, user, challenge)

    def _handle(self, request: Request, source: tuple[str, int], now: float, client: str) -> RegistrarResult:
        # Step 1: this registrar serves only its own domain (named by its domain or by one of its listen
        # addresses, as SIPp's stock REGISTER does).
        ruri = request.request_uri
        if not ruri.is_sip or not self.is_us(ruri):
            return self._reply(request, source, 404, "Domain not served here")
        # Step 2: Require.
        if request.headers.get("Require") is not None:
            unsupported = [tag for tag in request.headers.values("Require")
                           if tag.lower() not in SUPPORTED_EXTENSIONS]
            if unsupported:
                return self._reply(request, source, 420, None, [("Unsupported", ", ".join(unsupported))])
        to_uri = request.to.uri
        if not to_uri.is_sip or not self.is_us(to_uri) or not to_uri.user:
            return self._reply(request, source, 404, "Address-of-record not in this domain")
        aor_user = to_uri.user

        # Step 3: authentication (server.auth: throttled per user and client address, stateless challenge).
        outcome = self.login.authenticate(request, client, now, proxy=False)
        if not isinstance(outcome, Authenticated):
            if outcome.status == 401:
                self.stats.challenges += 1
            elif outcome.status == 403:
                self.stats.auth_failures += 1
                if outcome.reason and outcome.reason.startswith("Too many"):
                    self.stats.blocked += 1
            return self._reply(request, source, outcome.status, outcome.reason, outcome.headers,
                               delay_s=outcome.delay_s, challenge=True)
        user = outcome.user
        # Step 4: a player registers only their own address-of-record (no third-party registration).
        if user != aor_user:
            log.warning("register: %s tried to register %s from %s:%d", user, aor_user, *source)
            return self._reply(request, source, 403, "Not allowed to register this address")
        # Step 5: the AOR must name an account. It does: authentication just found the HA1 of this very name,
        # and the account store answers that only for an account of the realm that may log in (asking again,
        # a second lookup per login, found nothing more; an account removed since is gone at the next login).
        aor = f"sip:{aor_user}@{self.domain}"  # the To may name us by address: the AOR is the domain's
        return self._update_bindings(request, aor, user, source, now)

    def _contacts_of(self, request: Request) -> tuple[tuple[_Contact, ...], tuple[int, str] | None] | None:
        """What the registrar reads of the Contact lines of ``request`` (None for ``Contact: *``): the contacts
        and, after them, the (status, reason) of the first Contact it cannot use (416 not SIP, 400 bad expires).
        Kept per exact text of the lines when all are usable: a player refreshing its binding sends the same
        Contact every time, which is then not parsed (nor its URI serialized) again."""
        lines = tuple(request.headers.get_all("Contact"))
        cache = self._contact_cache
        known = cache.get(lines)
        if known is not None:
            return known, None
        if request.contact_star:
            return None
        found: list[_Contact] = []
        for contact in request.contacts:
            uri = contact.uri
            if not uri.is_sip:
                return tuple(found), (416, "Contact must be a sip: URI")
            expires_text = contact.param("expires")
            if expires_text is not None and (not expires_text.isdigit() or len(expires_text) > 10):
                return tuple(found), (400, "Bad expires parameter")
            # RFC 5626 outbound (";ob"): the player is reached over the flow it registered from, never at the
            # Contact's own address (behind a NAT, or a TLS player with no listening port).
            reg_id = contact.param("reg-id") is not None
            outbound = reg_id or uri.has_param("ob")
            target = (None if outbound else
                      (uri.host.strip("[]"), uri.port or 5060) if is_ip_literal(uri.host) else None)
            found.append(_Contact(str(uri), None if expires_text is None else int(expires_text), target, reg_id))
        result = tuple(found)
        if sum(map(len, lines)) > _CONTACT_TEXT_MAX:
            return result, None
        if len(cache) >= _CONTACT_CACHE_MAX:
            del cache[next(iter(cache))]  # the oldest entry: contacts come from the network
        cache[lines] = result
        return result, None

    def _update_bindings(self, request: Request, aor: str, user: str, source: tuple[str, int],
                         now: float) -> RegistrarResult:
        call_id = request.call_id
        cseq = request.cseq.seq
        header_expires = request.expires
        cfg = self.config
        location = self.location
        read = self._contacts_of(request)

        # Step 6: "Contact: *" removes every binding, and only with Expires: 0 (section 10.2.2).
        if read is None:
            if header_expires != 0 or len(request.headers.values("Contact")) != 1:
                return self._reply(request, source, 400, "Contact: * needs Expires: 0 and no other contact")
            for binding in location.lookup(aor, now):
                if binding.call_id == call_id and cseq <= binding.cseq:
                    return self._reply(request, source, 500, "Out of order REGISTER (CSeq)", user=user)
            gone = location.remove_all(aor)
            log.info("register: %s removed all %d bindings", aor, len(gone))
            return self._ok(request, source, aor, now, False, user, (), tuple(gone), ())

        parsed, refusal = read
        contacts: list[tuple[_Contact, int]] = []  # (contact, its expires)
        default_expires = cfg.default_expires_s if header_expires is None else header_expires
        min_expires = cfg.min_expires_s
        max_expires = cfg.max_expires_s
        wants_outbound = False
        for contact in parsed:
            expires = default_expires if contact.expires is None else contact.expires
            # Section 10.3 step 7: below the minimum (but not 0) -> 423 with Min-Expires.
            if 0 < expires < min_expires:
                return self._reply(request, source, 423, None, [("Min-Expires", str(min_expires))], user=user)
            contacts.append((contact, min(expires, max_expires)))
            wants_outbound = wants_outbound or contact.reg_id
        if refusal is not None:  # a Contact after these cannot be used
            return self._reply(request, source, refusal[0], refusal[1], user=user)

        # Validate ordering for every contact before changing anything: the update is all or nothing.
        current = location.current(aor)
        for contact, _ in contacts:
            existing = current.get(contact.key)
            if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
                return self._reply(request, source, 500, "Out of order REGISTER (CSeq)", user=user)
        if len(current) + len(contacts) > cfg.max_bindings_per_aor:  # else the count below cannot be over
            live = {key for key, b in current.items() if b.expires_at > now}
            new = {c.key for c, e in contacts if e > 0} - live
            if len(live) + len(new) > cfg.max_bindings_per_aor:
                return self._reply(request, source, 403, "Too many contacts for this user", user=user)

        added: list[Binding] = []
        removed: list[Binding] = []
        network = location.networks.lookup(source[0])
        path, path_hop = _path_of(request, source)
        for contact, expires in contacts:
            key = contact.key
            if expires == 0:
                old = location.remove(aor, key)
                if old is not None:
                    removed.append(old)
                continue
            # Positional (aor, contact, expires_at, source, access_network, call_id, cseq, registered_at, target,
            # path): ten keywords cost the dataclass's __init__ call 0.36 µs more in CPython.
            binding = Binding(aor, key, now + expires, source, network, call_id, cseq, now,
                              path_hop if path else contact.target, path)
            old = location.put(binding)
            added.append(binding)
            if old is None:
                log.info("register: %s at %s from %s:%d (%s), %d s", aor, key, source[0], source[1],
                         network or "no access network", expires)
        self.stats.ok += 1
        echoed: tuple[str, ...] = ()
        if path and "path" in {t.lower() for t in request.headers.values("Supported")}:
            echoed = path  # RFC 3327 section 5.3: the registrar echoes the Path it stored
        return self._ok(request, source, aor, now, wants_outbound, user, tuple(added), tuple(removed), echoed)

    def _ok(self, request: Request, source: tuple[str, int], aor: str, now: float, outbound: bool, user: str,
            added: tuple[Binding, ...], removed: tuple[Binding, ...], path: tuple[str, ...]) -> RegistrarResult:
        # Step 8: the 200 lists every current binding with its remaining time.
        extra = [("Contact", f"<{b.contact}>;expires={b.expires_in(now)}") for b in self.location.lookup(aor, now)]
        if outbound:
            # RFC 5626 section 6: the registrar says it applied outbound to the registered flow (a reg-id)
            extra.append(("Require", "outbound"))
        for value in path:
            extra.append(("Path", value))
        ok_headers = self.ok_headers
        if ok_headers is not None:
            extra.extend(ok_headers(user, now))
        return self._reply(request, source, 200, None, extra, added=added, removed=removed, user=user)
