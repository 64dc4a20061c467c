"""demo_game/states/results: the final score, or why there was no game."""

from __future__ import annotations

import pygame

from demo_game import settings
from demo_game.render import Renderer
from demo_game.states.base import State

__all__ = ["ResultsState"]


class ResultsState(State):
    def startup(self, now: float) -> None:
        self.shown_at = now
        peer = self.ctx.peer
        # The last picture of the match stays behind the results panel.
        self.last_view = peer.view(now, 1.0)
        self.last_stats = peer.link.stats() if peer.info is not None else None

    def handle_event(self, event: pygame.event.Event, now: float) -> None:
        super().handle_event(event, now)
        if event.type == pygame.KEYDOWN and event.key in (
            pygame.K_ESCAPE,
            pygame.K_RETURN,
            pygame.K_KP_ENTER,
            pygame.K_SPACE,
        ):
            self.ctx.quit = True

    def update(self, now: float) -> None:
        if now - self.shown_at >= settings.RESULTS_LINGER_S:
            self.ctx.quit = True

    def draw(self, renderer: Renderer, now: float, alpha: float) -> None:
        peer = self.ctx.peer
        if peer.outcome is None:  # pragma: no cover - a results screen always follows an outcome
            return
        renderer.draw_outcome(peer.outcome, peer.steps, peer.info, self.last_stats, view=self.last_view)
