"""The region's policy server: admission control and reservations on access networks (DESIGN section 4).

Embedded in the SIP server by default (:class:`PolicyServer`, sans-IO) or run as its own process over HTTP/JSON
(``server.policy.http``). Billing lives in ``server.billing``.
"""

from __future__ import annotations

from .bridge import app_session_from_demand
from .config import AccessNetwork, ClassTariff, ConfigError, PolicyConfig, PolicySettings, QosClass, Tariff
from .core import NetworkCapacity, PolicyServer, ReservationStore, capacity_view, hex_token_factory
from .lifetime import Activate, PolicyOperation, Refresh, Release, end_reason_for, operations_for_publish
from .model import (
    AppSession,
    Decision,
    Deny,
    DialogRef,
    EndReason,
    Grant,
    MediaComponent,
    Reservation,
    ReservationState,
    Resource,
    SessionKey,
    Side,
)
from .store import SqliteReservationStore, open_region_db

__all__ = [
    "AccessNetwork",
    "Activate",
    "AppSession",
    "ClassTariff",
    "ConfigError",
    "Decision",
    "Deny",
    "DialogRef",
    "EndReason",
    "Grant",
    "MediaComponent",
    "NetworkCapacity",
    "PolicyConfig",
    "PolicyOperation",
    "PolicyServer",
    "PolicySettings",
    "QosClass",
    "Refresh",
    "Release",
    "Reservation",
    "ReservationState",
    "ReservationStore",
    "Resource",
    "SessionKey",
    "Side",
    "SqliteReservationStore",
    "Tariff",
    "app_session_from_demand",
    "capacity_view",
    "end_reason_for",
    "hex_token_factory",
    "open_region_db",
    "operations_for_publish",
]
