"""demo_game/states/base: what every screen shares."""

from __future__ import annotations

from dataclasses import dataclass

import pygame

from demo_game.play import Peer, StillController
from demo_game.render import Renderer

__all__ = ["Context", "State"]


@dataclass(slots=True)
class Context:
    """What the screens work on: the local player's end and how it is steered."""

    peer: Peer
    #: set from the keyboard; None when a bot plays the local side too
    keys: StillController | None
    #: match time after which the host ends the match; None = play to the win score
    duration_s: float | None = None
    #: set by a state to close the window
    quit: bool = False


class State:
    """Base screen. Subclasses override what they need."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.next: State | None = None

    def startup(self, now: float) -> None:
        """Called when the screen becomes current."""

    def handle_event(self, event: pygame.event.Event, now: float) -> None:
        """One pygame event (keys, window close)."""
        if event.type == pygame.QUIT:
            self.ctx.peer.end("quit", now)
            self.ctx.quit = True

    def update(self, now: float) -> None:
        """Once per frame, after the network poll and the ticks."""

    def draw(self, renderer: Renderer, now: float, alpha: float) -> None:
        """Draw the whole screen."""
