"""demo_game/window: the windowed runner: a human (W/S or arrow keys) against a bot.

``pygame.init()`` and the display happen here, inside :func:`run_window`, never at import.
One :class:`~demo_game.control.Control` drives both ends when the bot plays in this process
(local and offline modes); in networked mode only the human's end is here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import pygame

from demo_game import settings
from demo_game.bot import Bot
from demo_game.control import Control
from demo_game.link import GameLink, LinkEvent, SessionFailed, SessionReady, SetupStep
from demo_game.play import Controller, HostRole, Peer, Phase, StillController, match_result
from demo_game.render import Renderer
from demo_game.report import MatchResult, final_score_line, session_lines
from demo_game.states import ConnectingState, Context, State
from demo_game.world import GUEST, HOST, Rules

__all__ = ["run_window"]


def run_window(
    human_link: GameLink,
    bot_link: GameLink | None = None,
    *,
    duration_s: float | None = None,
    pump: Callable[[float], None] | None = None,
    seed: int = 1,
    out: TextIO | None = None,
    human: Controller | None = None,
    rules: Rules | None = None,
    max_frames: int | None = None,
    screenshot_at_s: float | None = None,
    screenshot_path: Path | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> MatchResult:
    """Open a 960x600 window and play until the player closes it.

    Args:
        human_link: the local player's end (host or guest, whichever the session makes it).
        bot_link: the other end when the bot plays in this process; None in networked mode.
        duration_s: match time (the host ends the match then); None plays to the win score.
        pump: called once per frame before the links are polled (``SessionHandle.pump``).
        seed: seeds the world and the bot.
        out: also log the setup steps and the final line here (the terminal).
        human: who steers the local paddle; None = the keyboard. A Bot gives a hands-off demo.
        rules: match rules (default :class:`~demo_game.world.Rules`).
        max_frames: stop after this many frames (tests, screenshots).
        screenshot_at_s / screenshot_path: save the window once, that many seconds into the match.
    """
    rules = rules or Rules()
    keys: StillController | None = None
    controller: Controller
    if human is None:
        keys = controller = StillController()
    else:
        controller = human
    me = Peer(human_link, controller, rules=rules, seed=seed)
    other = Peer(bot_link, Bot(GUEST, rules, seed=seed * 2 + 2), rules=rules, seed=seed) if bot_link else None
    ctx = Context(peer=me, keys=keys, duration_s=duration_s)

    def log(line: str) -> None:
        if out is not None:
            out.write(line + "\n")
            out.flush()

    def on_link_events(peer: Peer, events: list[LinkEvent]) -> None:
        for ev in events:
            if isinstance(ev, SessionReady) and isinstance(peer.controller, Bot):
                # A bot steers whichever side the session gave its end (before that end's first tick).
                peer.controller.side = ev.info.local_side
        if peer is not me:
            return
        for ev in events:
            if isinstance(ev, SetupStep):
                log(f"setup: {ev.text}")
            elif isinstance(ev, SessionReady):
                for line in session_lines(ev.info):
                    log(line)
            elif isinstance(ev, SessionFailed):
                log(f"setup FAILED: {ev.status} {ev.reason}")

    pygame.display.init()  # not pygame.init(): no mixer, so no audio device is needed
    pygame.font.init()
    try:
        screen = pygame.display.set_mode((settings.WINDOW_W_PX, settings.WINDOW_H_PX))
        pygame.display.set_caption("gamesdk demo: Pong with negotiated QoS")
        renderer = Renderer(screen, rules=rules)
        control = Control(
            [p for p in (me, other) if p is not None], clock, on_link_events=on_link_events, pump=pump
        )
        frame_clock = pygame.time.Clock()
        state: State = ConnectingState(ctx)
        state.startup(control.now)
        frames = 0
        match_started: float | None = None
        match_ended: float | None = None
        shot_taken = False
        while not ctx.quit and (max_frames is None or frames < max_frames):
            now = clock()
            for event in pygame.event.get():
                state.handle_event(event, now)
            alpha = control.frame()
            now = control.now
            if match_started is None and me.phase is Phase.PLAYING:
                match_started = now
            if (
                other is not None
                and duration_s is not None
                and match_started is not None
                and isinstance(other.role, HostRole)
                and now - match_started >= duration_s
            ):
                other.end("time", now)  # the bot hosts: it ends the match as MatchState does for a human host
            if match_ended is None and me.finished:
                match_ended = now
            state.update(now)
            if state.next is not None:
                state = state.next
                state.startup(now)
            state.draw(renderer, now, alpha)
            pygame.display.flip()
            if (
                screenshot_path is not None
                and not shot_taken
                and match_started is not None
                and now - match_started >= (screenshot_at_s or 0.0)
            ):
                pygame.image.save(screen, str(screenshot_path))
                shot_taken = True
            frames += 1
            frame_clock.tick(settings.WINDOW_FPS)
        if not me.finished:
            me.end("quit", control.now)
        for peer in (me, other):
            if peer is not None:
                peer.hang_up(control.now)
        host, guest = (me, other) if me.side in (None, HOST) else (other, me)
        result = match_result(host, guest, control.ticks, match_started, match_ended, control.now)
        log(final_score_line(result))
        return result
    finally:
        pygame.quit()


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run the demo with: python -m demo_game")
