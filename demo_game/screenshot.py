"""demo_game/screenshot: draw one frame of a bot match and save it (``docs/demo-screenshot.png``).

``python -m demo_game.screenshot [PATH]`` plays an offline bot-against-bot match on a virtual
clock (so the picture is the same on every machine with the same fonts), then draws what the
host's player sees at that moment into an off-screen surface. No window is opened.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pygame

from demo_game import settings
from demo_game.bot import Bot
from demo_game.control import Control
from demo_game.play import Peer, Phase
from demo_game.render import Renderer
from demo_game.testing import VirtualClock, offline_session
from demo_game.world import GUEST, HOST, Rules

__all__ = ["draw_match_frame", "main"]

DEFAULT_PATH = Path("docs/demo-screenshot.png")


def draw_match_frame(
    seconds: float = 14.0, *, seed: int = 4, argv: list[str] | None = None
) -> pygame.Surface:
    """Play ``seconds`` of an offline bot match and return the host's view as a Surface.

    Args:
        seconds: match time to play before the picture is taken.
        seed: seeds the world, the bots and the simulated network.
        argv: extra ``python -m demo_game`` options for the offline session (e.g. ``--sim-loss``).
    """
    session = offline_session("--seed", str(seed), *(argv or []))
    assert session.host_link is not None and session.guest_link is not None
    rules = Rules(win_score=99)
    host = Peer(session.host_link, Bot(HOST, rules, seed=seed * 2 + 1), rules=rules, seed=seed)
    guest = Peer(session.guest_link, Bot(GUEST, rules, seed=seed * 2 + 2), rules=rules, seed=seed)
    clock = VirtualClock()
    control = Control([host, guest], clock)
    started: float | None = None
    while started is None or clock.t - started < seconds:
        clock.t += settings.TICK_S
        alpha = control.frame()
        if started is None and host.phase is Phase.PLAYING:
            started = clock.t
    if not pygame.font.get_init():
        pygame.font.init()
    surface = pygame.Surface((settings.WINDOW_W_PX, settings.WINDOW_H_PX))
    renderer = Renderer(surface, rules=rules)
    renderer.draw_match(
        host.view(clock.t, alpha),
        host.info,
        host.link.stats(),
        notices=list(host.notices),
        now=clock.t,
        hint=f"W/S or Up/Down to move  |  Esc to leave  |  {60 - seconds:.0f} s left",
    )
    return surface


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo_game.screenshot", description=__doc__.splitlines()[0])
    p.add_argument(
        "path", nargs="?", type=Path, default=DEFAULT_PATH, help=f"where to save (default {DEFAULT_PATH})"
    )
    p.add_argument("--seconds", type=float, default=14.0, help="match time before the picture (default 14)")
    p.add_argument("--seed", type=int, default=4)
    args = p.parse_args(argv)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    pygame.display.init()  # not pygame.init(): no mixer, so no audio device is needed
    pygame.font.init()
    try:
        surface = draw_match_frame(args.seconds, seed=args.seed)
        args.path.parent.mkdir(parents=True, exist_ok=True)
        pygame.image.save(surface, str(args.path))
    finally:
        pygame.quit()
    print(f"saved {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
