"""demo_game/states/lobby: the connecting screen, listing each setup step as it is done."""

from __future__ import annotations

import pygame

from demo_game.play import Phase
from demo_game.render import Renderer
from demo_game.states.base import State

__all__ = ["ConnectingState"]


class ConnectingState(State):
    def handle_event(self, event: pygame.event.Event, now: float) -> None:
        super().handle_event(event, now)
        if event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE:
            self.ctx.peer.end("quit", now)
            self.ctx.quit = True

    def update(self, now: float) -> None:
        from demo_game.states.match import MatchState
        from demo_game.states.results import ResultsState

        phase = self.ctx.peer.phase
        if phase is Phase.PLAYING:
            self.next = MatchState(self.ctx)
        elif phase in (Phase.FAILED, Phase.FINISHED):
            self.next = ResultsState(self.ctx)

    def draw(self, renderer: Renderer, now: float, alpha: float) -> None:
        renderer.draw_connecting(self.ctx.peer.steps, now)
