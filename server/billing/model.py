"""server/billing/model: billing records and events (pure values) and the tariff arithmetic.

DESIGN section 5: one record per server per session, append-only events: START when the session is confirmed,
INTERIM on each lease refresh, exactly one STOP with an end reason. A FINAL that was denied, or a reservation
that was never confirmed, still gets a record with a STOP (an attempt record, charge 0) so operators see every
decision; the invariant is "every record has exactly one STOP, and a START only before it".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from .tariff import Tariff

__all__ = ["BillingEvent", "BillingRecord", "BillingSink", "EventKind", "MemoryBilling", "charge_for"]


class EventKind(str, enum.Enum):
    START = "START"
    INTERIM = "INTERIM"
    STOP = "STOP"


@dataclass(frozen=True, slots=True, kw_only=True)
class BillingRecord:
    """The fixed part of one billing record: who, where, what was reserved."""

    call_id: str
    from_tag: str
    to_tag: str
    side: str
    """``orig`` (this server's player called) or ``term``."""
    player: str
    peer: str
    region: str
    network: str
    """Access network name; empty when none matched."""
    qos_class: str
    game_format: str
    qos_text: str
    uplink_kbps: int
    downlink_kbps: int
    token: str
    """The ``P-Media-Authorization`` token; empty for a denied attempt."""
    t_2xx: float
    """When the FINAL decision was made (the 2xx passed): the billed start (wall clock, epoch seconds)."""
    uid: str = ""
    """The record's own identity (unique per reservation or refused attempt; a second session that reuses a
    Call-ID and To-tag is a second record). Empty: derived from the key and ``t_2xx``."""

    @property
    def identity(self) -> str:
        return self.uid or f"{self.call_id};{self.to_tag};{self.side};{self.t_2xx!r}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BillingEvent:
    """One append-only event of a record."""

    kind: EventKind
    time: float
    record: BillingRecord
    end_reason: str | None = None
    """STOP only: bye-local, bye-remote, qos-failed, ... (server.policy.model.EndReason values)."""
    sip_reason: str | None = None
    """STOP only: the SIP Reason behind it, e.g. ``SIP;cause=580``."""
    charged_s: float = 0.0
    """Billed seconds up to this event (0 for attempts)."""
    seq: int = 0
    """INTERIM number (1, 2, ...); 0 for START and STOP. With the record's identity it names the event, so a
    replayed write (journal, retry) is recognised as the same event and never doubles it."""

    @property
    def uid(self) -> str:
        return f"{self.record.identity}/{self.kind.value}/{self.seq}"


class BillingSink(Protocol):
    """Where the policy server writes billing events (SQLite store, memory list in tests)."""

    def append(self, event: BillingEvent) -> None: ...


class MemoryBilling:
    """A BillingSink that keeps events in a list (tests, benchmarks)."""

    def __init__(self) -> None:
        self.events: list[BillingEvent] = []

    def append(self, event: BillingEvent) -> None:
        self.events.append(event)


def charge_for(tariff: Tariff, record: BillingRecord, seconds: float | Decimal) -> Decimal:
    """Charge for holding ``record``'s reservation ``seconds`` long, exact, rounded once to 1e-6 of the currency.

    ``minutes * (per_minute + per_kbps_minute * (uplink_kbps + downlink_kbps))`` with the class's tariff.
    """
    return tariff.charge(record.qos_class, record.uplink_kbps, record.downlink_kbps, seconds)
