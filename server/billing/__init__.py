"""Billing: one record per server per session, START / INTERIM / exactly one STOP (DESIGN section 5)."""

from __future__ import annotations

from .model import BillingEvent, BillingRecord, BillingSink, EventKind, MemoryBilling, charge_for
from .store import BillingRow, SqliteBillingStore, read_rows

__all__ = [
    "BillingEvent",
    "BillingRecord",
    "BillingRow",
    "BillingSink",
    "EventKind",
    "MemoryBilling",
    "SqliteBillingStore",
    "charge_for",
    "read_rows",
]
