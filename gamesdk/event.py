"""The one base class of every event the SDK hands out (signalling, presence and channel events alike)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Event"]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every gamesdk event: frozen dataclasses named in the past tense (``gamesdk.events``)."""
