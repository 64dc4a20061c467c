"""Offer/answer rules for the game session (DESIGN section 3), as pure functions.

- :func:`answer_offer`: the callee computes its answer from an offer and its own :class:`Requirements`
  (accept as is, accept modified, or reject with a reason and a status hint).
- :func:`check_answer`: the caller checks an answer against its offer and its own :class:`Acceptable` bounds.
  An offerer cannot reject an answer (RFC 3264 §6); when this returns a rejection the SDK sends ACK, then BYE
  with ``Reason: SIP;cause=488;text="QoS answer unacceptable"``.
- :func:`demand`: what one player's access network must carry; the policy server's input on the INVITE path
  (offer only, PRELIMINARY) and on the 2xx path (offer + answer, FINAL).

The rules, one per line of the answer:

=============  =====================================================================================
gsdk-format    the first offered format (offerer's order) the callee plays: same name and version, and
               the parameters the callee names (if any) have its values
gsdk-class     echoed; a class the callee does not accept rejects the offer
gsdk-qos       each of lat/jit/loss: the offer's value, tightened to the callee's own maximum, or
               relaxed up to the best the callee can achieve (if it may relax); pps is the callee's own
gsdk-sec       the strongest offered suite the callee supports, ties in the offer's order; never
               weaker than the callee's minimum and never a suite the offer did not list
b=AS           the callee's own receive bandwidth (RFC 3264 §5.1)
=============  =====================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gamesdk.errors import LocalProtocolError, NegotiationError
from gamesdk.qos.model import (
    KNOWN_SUITES,
    MAX_JITTER_MS,
    MAX_KBPS,
    MAX_LATENCY_MS,
    MAX_LOSS_PPM,
    MAX_PPS,
    FormatsLike,
    GameFormat,
    QosParams,
    SessionTerms,
    Side,
    game_formats,
    suite_bits,
)

__all__ = [
    "Acceptable",
    "Accepted",
    "Demand",
    "Rejected",
    "Requirements",
    "access_bandwidth",
    "answer_offer",
    "check_answer",
    "demand",
]

#: The status every negotiation failure answers with: 488 Not Acceptable Here (RFC 3261 §21.4.26).
NOT_ACCEPTABLE = 488


def _check_optional(name: str, value: int | None, high: int, low: int = 0) -> None:
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high
    ):
        raise LocalProtocolError(f"{name} must be None or an integer in {low}..{high}, got {value!r}")


def _check_suites(name: str, suites: tuple[str, ...]) -> None:
    if not suites:
        raise LocalProtocolError(f"{name} must name at least one suite")
    unknown = [suite for suite in suites if suite_bits(suite) == 0]
    if unknown:
        raise LocalProtocolError(f"{name}: unknown security suite {unknown[0]!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Requirements:
    """The callee's own needs and capabilities, from which it answers an offer.

    ``formats`` takes what ``invite(format=...)`` takes: one format or several, each a ``GameFormat`` or its
    text (``"pong/1"``); ``classes`` one classification or several. After construction both are tuples
    (``formats`` of ``GameFormat``).
    """

    #: Formats this side plays: name and version, plus any parameter values it insists on (GameFormat.admits).
    formats: tuple[GameFormat, ...]
    #: b=AS of the answer: kbit/s this side wants to receive.
    receive_kbps: int
    #: Classifications this side accepts; empty means any.
    classes: tuple[str, ...] = ()
    #: Packets/s this side sends (pps of the answer); None sends at the offer's rate.
    pps: int | None = None
    #: The loosest round trip this side's game tolerates, ms; a looser offer is tightened to it.
    max_latency_ms: int | None = None
    #: The best round trip this side can achieve (its access network), ms; a tighter offer is relaxed to it.
    best_latency_ms: int = 0
    max_jitter_ms: int | None = None
    best_jitter_ms: int = 0
    max_loss_ppm: int | None = None
    best_loss_ppm: int = 0
    #: May the answer loosen a value the offer asked for? If not, such an offer is rejected as impossible.
    relax: bool = True
    #: Suites this side implements (all must be known names).
    suites: tuple[str, ...] = KNOWN_SUITES
    #: The weakest suite strength this side accepts, bits.
    min_security_bits: int = 256

    def __init__(
        self,
        *,
        formats: FormatsLike,
        receive_kbps: int,
        classes: str | Sequence[str] = (),
        pps: int | None = None,
        max_latency_ms: int | None = None,
        best_latency_ms: int = 0,
        max_jitter_ms: int | None = None,
        best_jitter_ms: int = 0,
        max_loss_ppm: int | None = None,
        best_loss_ppm: int = 0,
        relax: bool = True,
        suites: Sequence[str] = KNOWN_SUITES,
        min_security_bits: int = 256,
    ) -> None:
        # written out (not the dataclass's) so formats and classes take the forms invite() takes
        if isinstance(suites, str):
            raise LocalProtocolError("Requirements.suites must be a sequence of suite names, e.g. ('aes-256-gcm',)")
        values = {
            "formats": game_formats(formats, "Requirements.formats"),
            "receive_kbps": receive_kbps,
            "classes": (classes,) if isinstance(classes, str) else tuple(classes),
            "pps": pps,
            "max_latency_ms": max_latency_ms,
            "best_latency_ms": best_latency_ms,
            "max_jitter_ms": max_jitter_ms,
            "best_jitter_ms": best_jitter_ms,
            "max_loss_ppm": max_loss_ppm,
            "best_loss_ppm": best_loss_ppm,
            "relax": relax,
            "suites": tuple(suites),
            "min_security_bits": min_security_bits,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    def __post_init__(self) -> None:
        _check_optional("receive_kbps", self.receive_kbps, MAX_KBPS, 1)
        _check_optional("pps", self.pps, MAX_PPS, 1)
        _check_optional("max_latency_ms", self.max_latency_ms, MAX_LATENCY_MS, 1)
        _check_optional("best_latency_ms", self.best_latency_ms, MAX_LATENCY_MS)
        _check_optional("max_jitter_ms", self.max_jitter_ms, MAX_JITTER_MS)
        _check_optional("best_jitter_ms", self.best_jitter_ms, MAX_JITTER_MS)
        _check_optional("max_loss_ppm", self.max_loss_ppm, MAX_LOSS_PPM)
        _check_optional("best_loss_ppm", self.best_loss_ppm, MAX_LOSS_PPM)
        _check_suites("Requirements.suites", self.suites)
        _check_optional("min_security_bits", self.min_security_bits, 1024)


@dataclass(frozen=True, slots=True, kw_only=True)
class Acceptable:
    """The caller's own bounds on an answer. ``None`` means "whatever the answer says", except for bandwidth
    and packet rate, which the SDK bounds by the offer's (:meth:`within_offer`) unless given here."""

    max_latency_ms: int | None = None
    max_jitter_ms: int | None = None
    max_loss_ppm: int | None = None
    #: Most packets/s the callee may send (the answer's pps).
    max_peer_pps: int | None = None
    #: The answer's b=AS is what the caller may send at most; below this the game cannot run.
    min_peer_receive_kbps: int = 0
    #: ... and above this the caller will not reserve (its uplink, or its tariff).
    max_peer_receive_kbps: int | None = None
    #: Suites the caller implements.
    suites: tuple[str, ...] = KNOWN_SUITES
    min_security_bits: int = 256

    def __post_init__(self) -> None:
        _check_optional("max_latency_ms", self.max_latency_ms, MAX_LATENCY_MS, 1)
        _check_optional("max_jitter_ms", self.max_jitter_ms, MAX_JITTER_MS)
        _check_optional("max_loss_ppm", self.max_loss_ppm, MAX_LOSS_PPM)
        _check_optional("max_peer_pps", self.max_peer_pps, MAX_PPS, 1)
        _check_optional("min_peer_receive_kbps", self.min_peer_receive_kbps, MAX_KBPS)
        _check_optional("max_peer_receive_kbps", self.max_peer_receive_kbps, MAX_KBPS)
        _check_suites("Acceptable.suites", self.suites)
        _check_optional("min_security_bits", self.min_security_bits, 1024)

    def within_offer(self, offer: SessionTerms) -> Acceptable:
        """These bounds with what they leave open filled in from ``offer``: the answer may ask for at most the
        bandwidth and packet rate the offer asked for (a callee cannot make the caller reserve, and pay, more)."""
        return Acceptable(
            max_latency_ms=self.max_latency_ms,
            max_jitter_ms=self.max_jitter_ms,
            max_loss_ppm=self.max_loss_ppm,
            max_peer_pps=offer.qos.pps if self.max_peer_pps is None else self.max_peer_pps,
            min_peer_receive_kbps=self.min_peer_receive_kbps,
            max_peer_receive_kbps=(offer.receive_kbps if self.max_peer_receive_kbps is None
                                   else self.max_peer_receive_kbps),
            suites=self.suites,
            min_security_bits=self.min_security_bits,
        )

    @classmethod
    def no_looser_than(cls, offer: SessionTerms) -> Acceptable:
        """Bounds that accept an answer only if every QoS value is at least as strict as the offer's."""
        return cls(
            max_latency_ms=offer.qos.latency_ms,
            max_jitter_ms=offer.qos.jitter_ms,
            max_loss_ppm=offer.qos.loss_ppm,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """The callee can play: ``answer`` is what goes into the 200 OK."""

    answer: SessionTerms
    #: Names of the gsdk-qos values the answer changed (``lat``, ``jit``, ``loss``, ``pps``); empty = as is.
    changes: tuple[str, ...] = ()

    @property
    def modified(self) -> bool:
        """True if the answer changed a QoS value of the offer (a modification, DESIGN section 3)."""
        return bool(self.changes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """The two sides cannot meet. ``reason`` names the SDP line or value; it goes into a Warning or Reason."""

    reason: str
    #: The SDP line at fault, e.g. ``a=gsdk-class:ranked`` (None when no single line is).
    line: str | None = None
    status_hint: int = NOT_ACCEPTABLE
    #: Warning code for the 488 (RFC 3261 §20.43): 305 "Incompatible media format" when no game format
    #: matches, else 399 "Miscellaneous warning" with ``reason`` as its text.
    warn_code: int = 399

    def error(self) -> NegotiationError:
        """The rejection as an exception, for code that raises."""
        return NegotiationError(self.reason, self.status_hint)


def _reject(reason: str, attribute: str, value: object, warn_code: int = 399) -> Rejected:
    line = f"a={attribute}:{value}" if attribute.startswith("gsdk-") else f"{attribute}:{value}"
    return Rejected(reason=f"{reason} ({line})", line=line, warn_code=warn_code)


def _answer_value(
    key: str, what: str, offered: int, maximum: int | None, best: int, relax: bool, qos: QosParams
) -> int | Rejected:
    """One gsdk-qos bound: tighten to the callee's maximum, relax to its best achievable value."""
    value = offered if maximum is None else min(offered, maximum)
    if best > value:
        if maximum is not None and best > maximum:
            return _reject(
                f"{what} impossible: best achievable here is {best}, above this side's own limit {maximum}",
                "gsdk-qos",
                qos,
            )
        if not relax:
            return _reject(
                f"{what} impossible: offer asks {key}={offered}, best achievable here is {best}",
                "gsdk-qos",
                qos,
            )
        value = best
    return value


def _choose_suite(offer: SessionTerms, suites: tuple[str, ...], min_bits: int) -> str | Rejected:
    common = [suite for suite in offer.suites if suite in suites]
    offered = ",".join(offer.suites)
    if not common:
        return _reject(
            f"no common security suite: this side supports {','.join(suites)}", "gsdk-sec", offered
        )
    strong = [suite for suite in common if suite_bits(suite) >= min_bits]
    if not strong:
        return _reject(
            f"weaker security refused: the offer allows at most {max(map(suite_bits, common))}-bit suites, "
            f"this side requires {min_bits}-bit",
            "gsdk-sec",
            offered,
        )
    # Strongest first; among equals the offerer's order (it lists its preference, strongest first).
    return max(strong, key=lambda suite: (suite_bits(suite), -offer.suites.index(suite)))


def answer_offer(offer: SessionTerms, requirements: Requirements) -> Accepted | Rejected:
    """Compute the callee's answer to an offer.

    Args:
        offer: the terms read from the INVITE's SDP.
        requirements: what the callee plays and needs.

    Returns:
        :class:`Accepted` with the answer terms (``modified`` when a QoS value changed), or :class:`Rejected`
        with a reason naming the line and status hint 488 (answer the INVITE with it and a Warning).
    """
    chosen = next(
        (fmt for fmt in offer.formats if any(own.admits(fmt) for own in requirements.formats)), None
    )
    if chosen is None:
        playable = ", ".join(f"{fmt.name}/{fmt.version}" for fmt in requirements.formats)
        return _reject(
            f"no common game format: this side plays {playable}", "gsdk-format", offer.formats[0], 305
        )
    if requirements.classes and offer.classification not in requirements.classes:
        return _reject(
            f"class mismatch: this side accepts {', '.join(requirements.classes)}",
            "gsdk-class",
            offer.classification,
        )
    suite = _choose_suite(offer, requirements.suites, requirements.min_security_bits)
    if isinstance(suite, Rejected):
        return suite

    qos = offer.qos
    relax = requirements.relax
    latency = _answer_value(
        "lat",
        "latency",
        qos.latency_ms,
        requirements.max_latency_ms,
        requirements.best_latency_ms,
        relax,
        qos,
    )
    if isinstance(latency, Rejected):
        return latency
    jitter = _answer_value(
        "jit", "jitter", qos.jitter_ms, requirements.max_jitter_ms, requirements.best_jitter_ms, relax, qos
    )
    if isinstance(jitter, Rejected):
        return jitter
    loss = _answer_value(
        "loss", "loss", qos.loss_ppm, requirements.max_loss_ppm, requirements.best_loss_ppm, relax, qos
    )
    if isinstance(loss, Rejected):
        return loss
    pps = qos.pps if requirements.pps is None else requirements.pps

    answer_qos = QosParams(latency_ms=latency, jitter_ms=jitter, loss_ppm=loss, pps=pps, extra=qos.extra)
    changes = tuple(
        key
        for key, old, new in (
            ("lat", qos.latency_ms, latency),
            ("jit", qos.jitter_ms, jitter),
            ("loss", qos.loss_ppm, loss),
            ("pps", qos.pps, pps),
        )
        if old != new
    )
    answer = SessionTerms(
        formats=(chosen,),
        classification=offer.classification,
        qos=answer_qos,
        receive_kbps=requirements.receive_kbps,
        suites=(suite,),
    )
    return Accepted(answer=answer, changes=changes)


def check_answer(offer: SessionTerms, answer: SessionTerms, acceptable: Acceptable) -> Rejected | None:
    """Check on the caller's side that an answer keeps the rules and fits the caller's own bounds.

    Returns:
        None if the caller can play with this answer, else a :class:`Rejected` whose reason names the line
        (send ACK, then BYE with ``Reason: SIP;cause=488;text="QoS answer unacceptable"``).
    """
    if len(answer.formats) != 1:
        return _reject("the answer must pick exactly one game format", "gsdk-format", answer.formats[0])
    if answer.formats[0] not in offer.formats:
        return _reject(
            "the answer picked a game format that was not offered", "gsdk-format", answer.formats[0]
        )
    if answer.classification != offer.classification:
        return _reject(
            f"the answer changed the class (offered {offer.classification})",
            "gsdk-class",
            answer.classification,
        )
    if len(answer.suites) != 1:
        return _reject("the answer must pick exactly one security suite", "gsdk-sec", ",".join(answer.suites))
    suite = answer.suites[0]
    if suite not in offer.suites:
        return _reject("the answer picked a security suite that was not offered", "gsdk-sec", suite)
    if suite not in acceptable.suites or suite_bits(suite) < acceptable.min_security_bits:
        return _reject(
            f"weaker security refused: this side accepts {','.join(acceptable.suites)} "
            f"of at least {acceptable.min_security_bits} bits",
            "gsdk-sec",
            suite,
        )
    qos = answer.qos
    for key, value, bound in (
        ("lat", qos.latency_ms, acceptable.max_latency_ms),
        ("jit", qos.jitter_ms, acceptable.max_jitter_ms),
        ("loss", qos.loss_ppm, acceptable.max_loss_ppm),
        ("pps", qos.pps, acceptable.max_peer_pps),
    ):
        if bound is not None and value > bound:
            return _reject(
                f"QoS answer unacceptable: {key}={value} is above this side's bound {bound}", "gsdk-qos", qos
            )
    if answer.receive_kbps < acceptable.min_peer_receive_kbps:
        return _reject(
            f"QoS answer unacceptable: the peer receives {answer.receive_kbps} kbit/s, "
            f"this side needs to send {acceptable.min_peer_receive_kbps}",
            "b=AS",
            answer.receive_kbps,
        )
    if (
        acceptable.max_peer_receive_kbps is not None
        and answer.receive_kbps > acceptable.max_peer_receive_kbps
    ):
        return _reject(
            f"QoS answer unacceptable: the peer wants {answer.receive_kbps} kbit/s, "
            f"this side sends at most {acceptable.max_peer_receive_kbps}",
            "b=AS",
            answer.receive_kbps,
        )
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Demand:
    """What one player's access network must carry for a session: the policy server's request."""

    side: Side
    classification: str
    #: The format the session plays (the first offered one before the answer is known).
    format: GameFormat
    #: Latency budget: the whole round trip the session may take, ms (gsdk-qos lat).
    latency_ms: int
    jitter_ms: int
    loss_ppm: int
    #: kbit/s from this player into the network (what the peer wants to receive).
    up_kbps: int
    #: kbit/s from the network to this player (what this player wants to receive).
    down_kbps: int
    up_pps: int
    down_pps: int
    #: True when computed from the answer (FINAL); False for the offer-only estimate (PRELIMINARY).
    final: bool


def access_bandwidth(offer: SessionTerms, answer: SessionTerms | None, side: Side) -> tuple[int, int]:
    """(up_kbps, down_kbps) that ``side``'s access network carries.

    b= is what each side wants to receive (RFC 3264 §5.1): the caller's down is the offer's b=AS and its up is
    the answer's, capped at the offer's (the callee cannot inflate the caller's reservation and bill); the
    callee's are the reverse, uncapped (what the callee asks for is on its own side). Before the answer exists (the INVITE path), the callee is
    assumed to want what the caller wants (a symmetric game), so both directions use the offer's b=AS.
    """
    offer_kbps = offer.receive_kbps
    answer_kbps = offer_kbps if answer is None else answer.receive_kbps
    if side == Side.CALLER:
        # The caller's side never reserves (or pays) more than its offer asked for (DESIGN section 10): a callee
        # answering b=AS:49000 to an offer of 64 gets 64 counted on the caller's side, whatever it wrote.
        return min(answer_kbps, offer_kbps), offer_kbps
    return offer_kbps, answer_kbps


def demand(offer: SessionTerms, answer: SessionTerms | None, side: Side) -> Demand:
    """The access-network demand of ``side`` for an offer (PRELIMINARY) or an offer and answer (FINAL).

    Servers reserve and bill on the answer (DESIGN section 3): with an answer, the QoS bounds, format and suite
    come from it; without one, from the offer.
    """
    up_kbps, down_kbps = access_bandwidth(offer, answer, side)
    terms = offer if answer is None else answer
    caller_pps = offer.qos.pps
    callee_pps = caller_pps if answer is None else answer.qos.pps
    # The caller's uplink carries at most the packet rate its offer asked for, like b=AS above.
    if side == Side.CALLER:
        up_pps, down_pps = caller_pps, min(callee_pps, caller_pps)
    else:
        up_pps, down_pps = callee_pps, caller_pps
    return Demand(
        side=side,
        classification=terms.classification,
        format=terms.formats[0],
        latency_ms=terms.qos.latency_ms,
        jitter_ms=terms.qos.jitter_ms,
        loss_ppm=terms.qos.loss_ppm,
        up_kbps=up_kbps,
        down_kbps=down_kbps,
        up_pps=up_pps,
        down_pps=down_pps,
        final=answer is not None,
    )
