"""Tic-tac-toe across two regions (a turn-based game, not Pong): alice watches bob come online, invites him,
they take turns over the reliable lane, and the winner's "game over" is the last message before the hang-up.

Run two regional servers first (see README), then:
    python examples/tictactoe.py --eu 127.0.0.1:5060 --na 127.0.0.1:5062
"""

from __future__ import annotations

import argparse
import asyncio

from gamesdk import (
    ClientConfig,
    GameClient,
    GameSdkError,
    GameSession,
    PresenceStatus,
    unpack_message_untrusted,
)
from gamesdk.events import MessageReceived, PresenceChanged, SessionEnded

LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]


def winner(board: list[str]) -> str | None:
    for a, b, c in LINES:
        if board[a] != "." and board[a] == board[b] == board[c]:
            return board[a]
    return "draw" if "." not in board else None


def choose(board: list[str], me: str) -> int:
    """A simple player: win if it can, block if it must, else the first free cell of a fixed order."""
    other = "o" if me == "x" else "x"
    for mark in (me, other):
        for cell in range(9):
            if board[cell] == ".":
                trial = board.copy()
                trial[cell] = mark
                if winner(trial) == mark:
                    return cell
    return next(c for c in (4, 0, 2, 6, 8, 1, 3, 5, 7) if board[c] == ".")


async def play(name: str, session: GameSession, me: str, my_turn: bool) -> None:
    board = ["."] * 9
    while True:
        if my_turn and winner(board) is None:
            cell = choose(board, me)
            board[cell] = me
            session.send_message({"cell": cell})
            print(f"{name} ({me}) plays {cell}: {''.join(board)}")
        result = winner(board)
        if result is not None and my_turn:
            session.send_message({"over": result})
            await session.end("game over")  # lingers until the peer acknowledged the last move
            print(f"{name}: game over, {result}")
            return
        event = await session.next_event()
        if isinstance(event, MessageReceived):
            move = unpack_message_untrusted(event.data)
            if "over" in move:
                print(f"{name} got game over: {move['over']}")
            else:
                board[move["cell"]] = "o" if me == "x" else "x"
                my_turn = winner(board) is None  # after the opponent's winning move, wait for its "over"
                continue
        elif isinstance(event, SessionEnded):
            print(f"{name}: session ended: {event.reason}")
            return
        my_turn = False


async def main(eu: str, na: str) -> None:
    alice = GameClient(ClientConfig(username="alice", password="alice-pw", domain="eu.gamesdk.test", server=eu))
    bob = GameClient(ClientConfig(username="bob", password="bob-pw", domain="na.gamesdk.test", server=na))
    await alice.login()
    status = await alice.watch("bob@na.gamesdk.test")
    print("alice sees bob", status.value)
    await bob.login()
    while status is not PresenceStatus.ONLINE:
        change = await alice.next_presence()
        if isinstance(change, PresenceChanged):
            status = change.status
    print("alice sees bob", status.value)

    async def bob_plays() -> None:
        invite = await bob.next_invite()
        await play("bob", await invite.accept(), "o", my_turn=False)

    bob_task = asyncio.create_task(bob_plays())
    session = await alice.invite("bob@na.gamesdk.test", format="tictactoe/1", classification="strategy",
                                 latency_ms=200, bandwidth_kbps=16)
    await play("alice", session, "x", my_turn=True)
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
