"""demo_game/main: the command line of the demo (``python -m demo_game``, ``gamesdk-demo``).

Modes:

- ``--local`` (the default): embedded eu and na regional servers on loopback, two players, the
  whole session setup, then the game, through ``demo_game/local.py: setup_local_session(args, out)``.
- ``--offline``: the same game over an in-memory link with a simulated network and setup.
- ``--server udp:HOST:PORT --user NAME --password PW (--invite NAME@DOMAIN | --wait)``: against
  real regional servers, through ``demo_game/net.py: setup_networked_session(args, out)``.

Window or not: a window with a human (W/S or arrow keys) against a bot, unless ``--headless`` is
given or no display is available, in which case bot plays bot and the log goes to stdout.

Exit codes: 0 a match was played, 1 the match ended badly (peer dropped), 2 bad options,
3 the session could not be set up (e.g. a policy refusal).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from demo_game.link import SessionHandle
from demo_game.report import MatchResult

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_MATCH_BROKEN = 1
EXIT_USAGE = 2
EXIT_SETUP_FAILED = 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m demo_game",
        description="Two-player Pong over a gamesdk session with negotiated, reserved quality of service.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--local", action="store_true", help="embedded eu and na servers on loopback (the full demo)"
    )
    mode.add_argument(
        "--offline", action="store_true", help="no servers: an in-memory link with a simulated network"
    )
    mode.add_argument("--server", metavar="tls:HOST:PORT",
                      help="your regional server, udp:HOST:PORT or tls:HOST:PORT (networked mode)")
    p.add_argument("--headless", action="store_true", help="no window: bot against bot, text log on stdout")
    p.add_argument("--web", action="store_true",
                   help="local mode: serve region eu's web site; alice's game waits for an invite from the page")
    p.add_argument("--web-port", type=int, default=8080, help="port of the web site with --web (0: any free one)")
    p.add_argument("--web-linger-s", type=float, default=0.0,
                   help="with --web: keep the site up this long after the match (to read the history)")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="match time (default: 20 s headless, until 5 points in a window)",
    )
    p.add_argument("--seed", type=int, default=1, help="seeds the serves, the bots and the simulated network")
    p.add_argument(
        "--bot", action="store_true", help="in a window, let a bot play your side too (hands-off demo)"
    )

    neg = p.add_argument_group("what the invite asks for (a=gsdk-* lines, DESIGN section 3)")
    neg.add_argument("--format", default="pong/1", help="game format (default pong/1; the tick is added)")
    neg.add_argument(
        "--class", dest="classification", default="action", help="game classification (default action)"
    )
    neg.add_argument(
        "--latency-ms",
        type=float,
        default=80.0,
        help="max round trip the session may have (default 80); try 1 to see a policy refusal",
    )
    neg.add_argument("--jitter-ms", type=float, default=20.0, help="max jitter (default 20)")
    neg.add_argument(
        "--loss-ppm", type=int, default=10_000, help="max loss, parts per million (default 10000 = 1%%)"
    )

    net = p.add_argument_group("networked mode")
    net.add_argument(
        "--user", help="your account name (networked mode) or the caller's name (local, offline)"
    )
    net.add_argument("--password", help="your password (networked mode)")
    net.add_argument("--ca", metavar="FILE", help="the regions' CA certificate, for --server tls:... (networked)")
    net.add_argument("--relay-only", action="store_true",
                     help="offer only relayed candidates (the region's coturn), so the opponent never learns your "
                          "address (networked mode; the region needs a [relay])")
    p.add_argument("--no-tls", action="store_true",
                   help="local mode: players reach their regions over plain UDP instead of TLS")
    who = net.add_mutually_exclusive_group()
    who.add_argument("--invite", metavar="NAME@DOMAIN", help="invite this player (you host the match)")
    who.add_argument("--wait", action="store_true", help="wait for an invite (you join the match)")
    net.add_argument("--peer", help="the callee's name in local and offline modes (default bob)")

    sim = p.add_argument_group(
        "simulated conditions (offline mode; local mode passes them to the channel simulator)"
    )
    sim.add_argument(
        "--access-kbps",
        type=int,
        default=None,
        help="capacity of the caller's access network; try 20 to see a policy refusal",
    )
    sim.add_argument("--sim-latency-ms", type=float, default=15.0, help="one-way latency added (default 15)")
    sim.add_argument("--sim-jitter-ms", type=float, default=2.0, help="one-way jitter added (default 2)")
    sim.add_argument("--sim-loss", type=float, default=0.0, help="share of packets lost, 0..1 (default 0)")
    sim.add_argument("--step-interval-s", type=float, default=None, help=argparse.SUPPRESS)
    return p


def _check(args: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    if args.server is not None:
        if not args.server.startswith(("udp:", "tls:")) or args.server.count(":") != 2:
            p.error(f"--server wants udp:HOST:PORT or tls:HOST:PORT, got {args.server!r}")
        if not args.user or not args.password:
            p.error("--server needs --user and --password")
        if not args.invite and not args.wait:
            p.error("--server needs --invite NAME@DOMAIN or --wait")
    elif args.invite or args.wait or args.password:
        p.error("--invite, --wait and --password belong to networked mode (--server)")
    if args.web and (args.server is not None or args.offline):
        p.error("--web belongs to the local demo (--local): the web site is region eu's")
    if not 0 <= args.web_port <= 65535:
        p.error("--web-port must be 0-65535")
    if not 0 <= args.web_linger_s <= 3600:
        p.error("--web-linger-s must be 0-3600 seconds")
    if args.duration is not None and not args.duration > 0:
        p.error("--duration must be a positive number of seconds")
    if not args.latency_ms > 0 or args.jitter_ms < 0 or args.loss_ppm < 0:
        p.error("--latency-ms must be positive; --jitter-ms and --loss-ppm must not be negative")
    if not 0.0 <= args.sim_loss < 1.0:
        p.error("--sim-loss is a share of packets: 0 <= value < 1")
    if args.sim_latency_ms < 0 or args.sim_jitter_ms < 0:
        p.error("--sim-latency-ms and --sim-jitter-ms must not be negative")


def _has_display() -> bool:
    if os.environ.get("SDL_VIDEODRIVER") in ("dummy", "offscreen"):
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True  # Windows and macOS always have one


def _setup(args: argparse.Namespace, out: TextIO) -> SessionHandle | None:
    """Run the session setup the options ask for; None (with a message) when it cannot start."""
    # Imported here: the offline path loads neither gamesdk nor the servers.
    if args.server is not None:
        from demo_game.net import setup_networked_session

        return setup_networked_session(args, out)
    if args.local:
        from demo_game.local import setup_local_session

        return setup_local_session(args, out)
    from demo_game.offline import setup_offline_session

    return setup_offline_session(args)


def _exit_code(result: MatchResult) -> int:
    if result.ok:
        return EXIT_OK
    if result.reason == "failed":
        return EXIT_SETUP_FAILED
    return EXIT_MATCH_BROKEN if result.reason == "peer-dropped" else EXIT_OK


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run the demo; returns the process exit code."""
    out = out or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check(args, parser)
    except SystemExit as exc:  # argparse has printed the message
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if not (args.local or args.offline or args.server):
        args.local = True  # the one-command demo
    headless = args.headless or not _has_display()
    if not args.headless and headless:
        out.write("no display found: playing bot against bot without a window (--headless)\n")
    args.headless = headless

    handle = _setup(args, out)
    if handle is None:
        return EXIT_USAGE
    try:
        if headless:
            from demo_game.headless import run_headless

            result = run_headless(
                handle.host_link,
                handle.guest_link,
                args.duration or 20.0,
                out,
                pump=handle.pump,
                seed=args.seed,
                setup_timeout_s=600.0 if args.web else 30.0,  # --web: a person invites from the page
            )
        else:
            os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
            from demo_game.bot import Bot
            from demo_game.window import run_window

            human = handle.host_link if handle.host_link is not None else handle.guest_link
            bot = handle.guest_link if handle.host_link is not None else None
            assert human is not None
            result = run_window(
                human,
                bot,
                duration_s=args.duration,
                pump=handle.pump,
                seed=args.seed,
                out=out,
                human=Bot(0, seed=args.seed) if args.bot else None,
            )
    except KeyboardInterrupt:
        out.write("interrupted\n")
        return EXIT_MATCH_BROKEN
    finally:
        handle.finish(out)
    return _exit_code(result)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
