"""A player process for the fault test: plays sessions with the real SDK until its time is up.

``python fault_player.py caller|callee USER PASSWORD DOMAIN SERVER_PORT PEER PLAY_S TOTAL_S``

A caller invites PEER again and again, plays PLAY_S seconds, ends the session; a callee accepts every invitation.
Every failure is printed and the loop goes on (sessions may fail cleanly under the injected faults); the process
exits 0 after TOTAL_S seconds, ending what it plays. Killed with SIGKILL it simply vanishes, as a crashed game does.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

from gamesdk import ClientConfig, GameClient, SessionError


async def main(role: str, user: str, password: str, domain: str, port: int, peer: str, play_s: float,
               total_s: float) -> None:
    client = GameClient(ClientConfig(username=user, password=password, domain=domain, server=("127.0.0.1", port),
                                     publish_expires_s=4, publish_refresh_s=2.0, invite_timeout_s=4.0,
                                     ice=False))
    end = time.monotonic() + total_s
    for _ in range(50):  # bounded: login may race the servers' start
        try:
            await client.login()
            break
        except Exception as exc:  # noqa: BLE001 - printed; the next attempt follows
            print(f"{user}: login failed: {exc}", flush=True)
            await asyncio.sleep(0.3)
    print(f"{user}: logged in", flush=True)
    while time.monotonic() < end:
        try:
            if role == "caller":
                session = await client.invite(peer, latency_ms=200, bandwidth_kbps=64)
                print(f"{user}: playing {session.call_id}", flush=True)
                await asyncio.sleep(min(play_s, max(0.0, end - time.monotonic())))
                await session.end("game over")
                await asyncio.sleep(0.3)
            else:
                invite = await asyncio.wait_for(client.next_invite(), max(0.1, end - time.monotonic()))
                session = await invite.accept()
                print(f"{user}: playing {session.call_id}", flush=True)
        except (SessionError, TimeoutError) as exc:
            print(f"{user}: {type(exc).__name__}: {exc}", flush=True)
            await asyncio.sleep(0.5)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), 5.0)
    print(f"{user}: done", flush=True)


if __name__ == "__main__":
    r, u, p, d, port, peer, play, total = sys.argv[1:9]
    asyncio.run(main(r, u, p, d, int(port), peer, float(play), float(total)))
