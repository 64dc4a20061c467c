"""One consistent API: the same argument order, types and calling style wherever the same thing is done.

The behaviour behind each rule is exercised over real sockets in tests/sdk/test_api_consistency.py; these
checks keep the shapes from drifting apart again.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import typing
from collections.abc import Callable
from pathlib import Path

import pytest

import gamesdk
from gamesdk import (
    GameSession,
    IncomingInvite,
    InviteRequest,
    Lane,
    PollingClient,
    PollingSession,
    Requirements,
)
from gamesdk.events import SessionEstablished
from gamesdk.lowlevel import AsyncChannel, Channel, ChannelParams, GameFormat, PollChannel, make_terms

ROOT = Path(__file__).resolve().parents[1]


def python_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in listed.stdout.split()]


def address_aliases(path: Path) -> list[str]:
    """Module-level names bound to ``tuple[str, int]`` (an address type of its own) in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if ast.unparse(value).replace(" ", "") == "tuple[str,int]":
            found += [ast.unparse(target) for target in targets]
    return found


def test_one_address_type_in_the_whole_tree() -> None:
    defined = {str(path.relative_to(ROOT)): names for path in python_files() if (names := address_aliases(path))}
    assert defined == {"gamesdk/address.py": ["Address"]}
    assert typing.get_type_hints(ChannelParams)["peer_addr"] == gamesdk.Address


SENDERS: list[Callable[..., None]] = [
    GameSession.send, PollingSession.send, Channel.send, AsyncChannel.send, PollChannel.send,
]


@pytest.mark.parametrize("send", SENDERS, ids=lambda f: f.__qualname__)
def test_send_takes_the_message_first_and_the_lane_second_everywhere(send: Callable[..., None]) -> None:
    params = list(inspect.signature(send).parameters.values())[1:]
    assert [p.name for p in params[:2]] == ["data", "lane"]
    assert params[1].default is Lane.RELIABLE
    messages = [GameSession.send_message, PollingSession.send_message]
    assert all([p.name for p in list(inspect.signature(m).parameters.values())[1:3]] == ["obj", "lane"]
               for m in messages)


def test_session_established_carries_typed_channel_params() -> None:
    assert typing.get_type_hints(SessionEstablished)["channel_params"] is ChannelParams


def test_accept_and_decline_are_called_alike() -> None:
    for kind in (IncomingInvite, InviteRequest):
        assert inspect.iscoroutinefunction(kind.accept) and inspect.iscoroutinefunction(kind.decline), kind
    for accept, decline in ((PollingClient.accept, PollingClient.decline),
                            (PollingClient.accept_invite_request, PollingClient.decline_invite_request)):
        assert not inspect.iscoroutinefunction(accept) and not inspect.iscoroutinefunction(decline)
    # status and reason: the same parameters, passed the same ways, in both clients (and in Decline)
    async_decline = list(inspect.signature(IncomingInvite.decline).parameters.values())[1:]
    polling_decline = list(inspect.signature(PollingClient.decline).parameters.values())[3:]
    decision = list(inspect.signature(gamesdk.Decline).parameters.values())
    for params in (polling_decline, decision):
        assert [(p.name, p.kind, p.default) for p in params] == [(p.name, p.kind, p.default) for p in async_decline]


def public_methods(cls: type) -> dict[str, object]:
    return {name: value for name, value in vars(cls).items() if not name.startswith("_") and callable(value)}


def test_the_asyncio_surface_is_async_and_the_polling_surface_is_not() -> None:
    for cls in (gamesdk.GameClient, IncomingInvite, InviteRequest, GameSession):
        plain = {name for name, method in public_methods(cls).items() if not inspect.iscoroutinefunction(method)}
        assert plain == ({"send", "send_message"} if cls is GameSession else set()), cls
    for cls in (PollingClient, PollingSession):
        assert not any(inspect.iscoroutinefunction(m) for m in public_methods(cls).values()), cls


def test_requirements_take_the_format_forms_invite_takes() -> None:
    one = GameFormat("pong", 1)
    as_text = Requirements(formats="pong/1", receive_kbps=64)
    assert as_text == Requirements(formats=one, receive_kbps=64) == Requirements(formats=[one], receive_kbps=64)
    assert as_text.formats == (one,)
    both = Requirements(formats=["pong/2", GameFormat("pong", 1)], receive_kbps=64, classes="action")
    assert both.formats == (GameFormat("pong", 2), one) and both.classes == ("action",)
    # ... and invite() (make_terms) takes the same forms
    for value in ("pong/1", one, ["pong/1"], (one,)):
        assert make_terms(format=value).formats == (one,)
    with pytest.raises(TypeError, match="game format as text"):
        Requirements(formats=[b"pong/1"], receive_kbps=64)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="game format as text"):
        make_terms(format=1)  # type: ignore[arg-type]
