"""Two players on two regions with GameClient (asyncio): log in, invite, accept, play a few messages, hang up.

Run two regional servers first (see README), then:
    python examples/sdk_asyncio.py --eu 127.0.0.1:5060 --na 127.0.0.1:5062
"""

from __future__ import annotations

import argparse
import asyncio

from gamesdk import ClientConfig, GameClient, GameSdkError, unpack_message_untrusted
from gamesdk.events import MessageReceived, SessionEnded


async def main(eu: str, na: str) -> None:
    alice = GameClient(ClientConfig(username="alice", password="alice-pw", domain="eu.gamesdk.test", server=eu))
    bob = GameClient(ClientConfig(username="bob", password="bob-pw", domain="na.gamesdk.test", server=na))
    await alice.login()
    await bob.login()

    async def bob_plays() -> None:
        invite = await bob.next_invite()                       # an IncomingInvite, waiting for our answer
        print(f"bob: {invite.caller} invites me to {invite.offer.formats[0]}")
        session = await invite.accept()                        # accept as offered
        while True:
            event = await session.next_event()
            if isinstance(event, MessageReceived):
                print("bob got", unpack_message_untrusted(event.data))
                session.send_message({"ack": True})
            elif isinstance(event, SessionEnded):
                print("bob: session ended:", event.reason)
                return

    bob_task = asyncio.create_task(bob_plays())
    session = await alice.invite(
        "bob@na.gamesdk.test", format="pong/1;tick=60", classification="action",
        latency_ms=80, jitter_ms=10, loss_ppm=5000, bandwidth_kbps=64,
    )
    a = session.agreement
    print(f"alice: playing {a.format} class={a.classification} lat<={a.qos.latency_ms}ms suite={a.suite}")
    for r in a.reservations:
        print(f"alice: {r.region} reserved {r.up_kbps}/{r.down_kbps} kbit/s in {r.network}")
    session.send_message({"move": "up", "tick": 1})
    while not isinstance(event := await session.next_event(), MessageReceived):
        pass
    print("alice got", unpack_message_untrusted(event.data), "rtt", session.stats.rtt_ms, "ms")
    await session.end("game over")
    await bob_task
    await alice.close()
    await bob.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eu", default="127.0.0.1:5060", help="eu regional server, HOST:PORT or tls:HOST:PORT")
    parser.add_argument("--na", default="127.0.0.1:5062", help="na regional server, HOST:PORT or tls:HOST:PORT")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.eu, args.na))
    except GameSdkError as exc:  # a bad address, a refused login, a refused session: one line, exit 1
        raise SystemExit(f"error: {exc}") from None
