"""demo_game/states/match: the match itself: keyboard in, field and HUD out."""

from __future__ import annotations

import pygame

from demo_game.play import HostRole, Phase
from demo_game.render import Renderer
from demo_game.states.base import State

__all__ = ["MatchState"]

UP_KEYS = (pygame.K_w, pygame.K_UP)
DOWN_KEYS = (pygame.K_s, pygame.K_DOWN)


class MatchState(State):
    def startup(self, now: float) -> None:
        self.started_at = now

    def handle_event(self, event: pygame.event.Event, now: float) -> None:
        super().handle_event(event, now)
        if event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE:
            self.ctx.peer.end("quit", now)

    def update(self, now: float) -> None:
        from demo_game.states.results import ResultsState

        keys = self.ctx.keys
        if keys is not None:
            pressed = pygame.key.get_pressed()
            keys.move = float(any(pressed[k] for k in DOWN_KEYS)) - float(any(pressed[k] for k in UP_KEYS))
        peer = self.ctx.peer
        duration = self.ctx.duration_s
        if duration is not None and isinstance(peer.role, HostRole) and now - self.started_at >= duration:
            peer.end("time", now)
        if peer.phase is not Phase.PLAYING:
            self.next = ResultsState(self.ctx)

    def draw(self, renderer: Renderer, now: float, alpha: float) -> None:
        peer = self.ctx.peer
        banner = "Connection interrupted: waiting for the other player" if peer.interrupted else None
        who = "W/S or Up/Down to move" if self.ctx.keys is not None else "bot playing"
        left = ""
        if self.ctx.duration_s is not None:
            left = f"  |  {max(0.0, self.ctx.duration_s - (now - self.started_at)):.0f} s left"
        renderer.draw_match(
            peer.view(now, alpha),
            peer.info,
            peer.link.stats(),
            notices=list(peer.notices),
            now=now,
            banner=banner,
            hint=f"{who}  |  Esc to leave{left}",
        )
