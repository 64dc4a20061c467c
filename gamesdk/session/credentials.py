"""Digest answers for the player's account (RFC 8760 / RFC 7616 through :mod:`gamesdk.sip.digest`), with the
last challenge of each kind kept so later requests carry credentials at once (RFC 3261 22.3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.digest import Challenge, DigestClient, choose_challenge
from gamesdk.sip.message import Response

__all__ = ["MAX_AUTH_RETRIES", "Credentials"]

#: Cap on retries of one request after 401/407, so a server that keeps challenging cannot loop us.
MAX_AUTH_RETRIES = 2

Header = tuple[str, str]


class Credentials:
    """Answers 401 (``WWW-Authenticate``) and 407 (``Proxy-Authenticate``) challenges for one account."""

    def __init__(
        self, username: str, password: str, cnonce: Callable[[], str], algorithms: Sequence[str]
    ) -> None:
        self._digest = DigestClient(username, password, cnonce, algorithms=tuple(algorithms))
        self._challenges: dict[int, Challenge] = {}

    def answer(self, resp: Response, method: str, uri: str) -> Header | None:
        """The credentials header for the challenge in ``resp`` (401 or 407), or None when it offers nothing
        we can answer. The challenge is kept for :meth:`cached`."""
        header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        try:
            challenge = choose_challenge(resp.headers.get_all(header), self._digest.algorithms)
        except RemoteProtocolError:
            return None
        # later requests carry credentials for it at once and skip a round trip until the nonce goes stale
        self._challenges[resp.status] = challenge
        return self._header(resp.status, challenge, method, uri)

    def cached(self, status: int, method: str, uri: str) -> Header | None:
        """Credentials for the challenge last seen in a ``status`` (401 or 407) response, if any."""
        challenge = self._challenges.get(status)
        return None if challenge is None else self._header(status, challenge, method, uri)

    def _header(self, status: int, challenge: Challenge, method: str, uri: str) -> Header:
        name = "Authorization" if status == 401 else "Proxy-Authorization"
        return name, self._digest.answer(challenge, method=method, uri=uri).to_header_value()
