"""No channel secret in session events, call records, ``repr`` or ``GameClient.history`` (real sessions)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from regions import running_regions

from gamesdk import GameSession
from gamesdk.channel import ChannelParams, PrivateKey
from gamesdk.events import MessageReceived, SessionEstablished
from gamesdk.io import player_sockets


def _holds(obj: Any, secrets: list[bytes], depth: int = 0, seen: set[int] | None = None) -> str | None:
    """Where a secret is reachable from ``obj`` through plain data (attributes, slots, containers)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 8:
        return None
    seen.add(id(obj))
    if isinstance(obj, (bytes, bytearray)):
        return "bytes" if any(s in bytes(obj) for s in secrets) else None
    if isinstance(obj, str):
        return "str" if any(s.hex() in obj for s in secrets) else None
    children: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        children = [(f"[{k!r}]", v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = [(f"[{i}]", v) for i, v in enumerate(obj)]
    elif type(obj).__module__.startswith("gamesdk"):
        names = list(getattr(obj, "__dict__", {}))
        for cls in type(obj).__mro__:
            names += [n for n in getattr(cls, "__slots__", ()) if isinstance(n, str)]
        children = [(f".{n}", getattr(obj, n, None)) for n in names]
    for label, child in children:
        where = _holds(child, secrets, depth + 1, seen)
        if where is not None:
            return label + " " + where
    return None


def test_no_private_key_in_history_events_or_call_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[bytes] = []
    real = player_sockets.generate_keypair

    def recording(random_bytes: Any) -> tuple[bytes, bytes]:
        private, public = real(random_bytes)
        made.append(private)
        return private, public

    monkeypatch.setattr(player_sockets, "generate_keypair", recording)

    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            alice, bob = regions.client("alice"), regions.client("bob")
            await alice.login()
            await bob.login()

            async def answer() -> GameSession:
                return await (await bob.next_invite()).accept()

            callee = asyncio.create_task(answer())
            session = await alice.invite("bob@na.gamesdk.test")
            bobs = await callee
            session.send(b"ping", lane=2)
            while not isinstance(await bobs.next_event(), MessageReceived):
                pass
            assert made, "the clients made key pairs"
            for client in (alice, bob):
                established = [e for e in client.history if isinstance(e, SessionEstablished)]
                assert established
                for event in established:
                    params = event.channel_params
                    assert isinstance(params, ChannelParams) and isinstance(params.local_private_key, PrivateKey)
                    assert params.local_private_key.used
                for text in (repr(client.history), str(client.history)):
                    assert not any(p.hex() in text for p in made)
                assert _holds(client.history, made) is None
                core = client._core
                assert core is not None
                assert _holds(core.agent, made) is None, "a call record still holds a private key"
            await session.end("done")
            await alice.close()
            await bob.close()

    asyncio.run(asyncio.wait_for(main(), 30))
