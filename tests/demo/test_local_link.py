"""The real link of ``--local`` (two embedded regions, real SIP and the encrypted channel on 127.0.0.1)
keeps the promises the game relies on (demo_game.testing.check_link_pair)."""

from __future__ import annotations

import io

from demo_game.main import build_parser
from demo_game.testing import check_link_pair


def test_local_session_links_keep_the_game_link_promises() -> None:
    from demo_game.local import setup_local_session

    args = build_parser().parse_args(["--local", "--seed", "2"])
    args.headless = True
    log = io.StringIO()
    handle = setup_local_session(args, log)
    assert handle is not None, log.getvalue()
    try:
        report = check_link_pair(handle.host_link, handle.guest_link, pump=handle.pump, messages=90)
    finally:
        handle.finish(io.StringIO())
    assert report.info.players[0].region != report.info.players[1].region
    assert report.info.security_suite in ("chacha20-poly1305", "aes-256-gcm")
    # Loopback loses nothing: every snapshot arrives (the sequenced lane may only drop stale ones).
    assert report.states_delivered >= 0.95 * report.states_sent
