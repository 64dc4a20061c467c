"""server/billing/tariff: the region's tariff and the charge arithmetic, in exact decimal money.

Money is :class:`decimal.Decimal`, never ``float``: a charge is computed exactly from the tariff's decimal rates
and then rounded once, half-even, to :data:`MONEY_PLACES` decimals (a millionth of the currency unit), the unit
the database stores as an integer (``*_micros``). Every printed amount shows all of those decimals and its
currency, so the books add up from the records alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = ["MONEY_PLACES", "ClassTariff", "Tariff", "format_money", "from_micros", "quantize_money", "to_micros"]

#: Decimals kept for every amount (stored as integer millionths of the currency unit).
MONEY_PLACES = 6
_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
_SIXTY = Decimal(60)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassTariff:
    """Charge for one class: ``minutes * (per_minute + per_kbps_minute * (uplink_kbps + downlink_kbps))``."""

    per_minute: Decimal = Decimal(0)
    per_kbps_minute: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Tariff:
    """The region's tariff: per class, with the default class's entry as the fallback."""

    currency: str = "EUR"
    classes: Mapping[str, ClassTariff] = field(default_factory=dict)
    default_class: str = "default"

    def for_class(self, name: str) -> ClassTariff:
        """The tariff of class ``name``; the default class's tariff if it has none; free if neither exists."""
        return self.classes.get(name) or self.classes.get(self.default_class) or ClassTariff()

    def charge(self, qos_class: str, uplink_kbps: int, downlink_kbps: int, seconds: Decimal | float) -> Decimal:
        """The charge for holding ``uplink_kbps + downlink_kbps`` of ``qos_class`` for ``seconds``, rounded once."""
        secs = seconds if isinstance(seconds, Decimal) else Decimal(repr(float(seconds)))
        if secs <= 0:
            return Decimal(0).quantize(_QUANTUM)
        entry = self.for_class(qos_class)
        rate = entry.per_minute + entry.per_kbps_minute * (uplink_kbps + downlink_kbps)
        return quantize_money(secs * rate / _SIXTY)


def quantize_money(amount: Decimal) -> Decimal:
    """``amount`` rounded half-even to :data:`MONEY_PLACES` decimals."""
    return amount.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)


def to_micros(amount: Decimal) -> int:
    """An amount as integer millionths of the currency unit (how the database stores it)."""
    return int(quantize_money(amount).scaleb(MONEY_PLACES))


def from_micros(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-MONEY_PLACES).quantize(_QUANTUM)


def format_money(amount: Decimal, currency: str = "") -> str:
    """``0.164000 EUR``: every decimal shown, the currency named."""
    text = f"{quantize_money(amount):.{MONEY_PLACES}f}"
    return f"{text} {currency}" if currency else text
