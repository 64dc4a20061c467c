"""The same session from a game loop with PollingClient: no asyncio, no threads; one poll per frame.

Run two regional servers first (see README), then:
    python examples/sdk_polling.py --eu 127.0.0.1:5060 --na 127.0.0.1:5062
"""

from __future__ import annotations

import argparse
import time

from gamesdk import ClientConfig, GameSdkError, Lane, PollingClient
from gamesdk.events import (
    InviteReceived,
    MessageReceived,
    Registered,
    RegistrationFailed,
    SessionEnded,
    SessionFailed,
)


def main(eu: str, na: str, frames: int = 600) -> int:
    alice = PollingClient(ClientConfig(username="alice", password="alice-pw", domain="eu.gamesdk.test", server=eu))
    bob = PollingClient(ClientConfig(username="bob", password="bob-pw", domain="na.gamesdk.test", server=na))
    now = time.monotonic()
    alice.login(now)
    bob.login(now)
    logged_in: set[str] = set()
    call_id: str | None = None
    for frame in range(frames):                        # the game loop, 100 frames/s
        now = time.monotonic()
        for name, client in (("alice", alice), ("bob", bob)):
            for event in client.poll(now):             # signalling events
                if isinstance(event, Registered):
                    logged_in.add(name)
                elif isinstance(event, RegistrationFailed):
                    print(f"{name}: login failed: {event.status} {event.reason}")
                    return 1
                elif isinstance(event, InviteReceived):
                    print("bob: accepting", event.offer.formats[0], "from", event.caller)
                    bob.accept(event.call_id, now)
                elif isinstance(event, SessionFailed):
                    print(f"{name}: session failed: {event.status} {event.reason}")
                    return 1
                elif isinstance(event, SessionEnded):
                    print(f"{name}: session ended: {event.reason}")
                    if name == "bob":
                        alice.close(now)
                        bob.close(now)
                        return 0
        if call_id is None and logged_in == {"alice", "bob"}:
            call_id = alice.invite("bob@na.gamesdk.test", now, latency_ms=80, bandwidth_kbps=64)
        for session in list(bob.sessions.values()):    # channel events of each session
            for ch_event in session.poll(now):
                if isinstance(ch_event, MessageReceived):
                    print("bob got", ch_event.data)
                    session.send(b"pong", Lane.RELIABLE)
        for session in list(alice.sessions.values()):
            if frame % 50 == 0:
                session.send(b"ping", Lane.RELIABLE)
            for ch_event in session.poll(now):
                if isinstance(ch_event, MessageReceived):
                    print("alice got", ch_event.data, "rtt", session.stats.rtt_ms, "ms")
                    session.end(now, "game over")
        time.sleep(0.01)
    print("no session within", frames, "frames")
    return 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eu", default="127.0.0.1:5060", help="eu regional server, HOST:PORT or tls:HOST:PORT")
    parser.add_argument("--na", default="127.0.0.1:5062", help="na regional server, HOST:PORT or tls:HOST:PORT")
    args = parser.parse_args()
    try:
        status = main(args.eu, args.na)
    except GameSdkError as exc:  # a bad address, a refused login: one line, exit 1
        raise SystemExit(f"error: {exc}") from None
    raise SystemExit(status)
