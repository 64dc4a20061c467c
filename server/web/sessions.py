"""server/web/sessions: web logins (opaque cookie -> who, CSRF token, expiry), in memory, bounded.

A session id is 256 random bits; it lives in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS) and expires
``ttl_s`` after the login (the cookie's Max-Age says the same). The CSRF token is another 256 random bits per
session, put in every form and checked on every POST. Sessions are lost on restart: players log in again.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["COOKIE", "LOGIN_COOKIE", "WebSession", "WebSessions"]

COOKIE = "gsdk_session"
#: Before a login there is no session: the login form's CSRF token is a double-submit cookie.
LOGIN_COOKIE = "gsdk_login"
MAX_SESSIONS = 10_000


@dataclass(slots=True)
class WebSession:
    sid: str
    user: str
    admin: bool
    csrf: str
    expires: float

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class WebSessions:
    def __init__(self, ttl_s: float, *, max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._by_sid: OrderedDict[str, WebSession] = OrderedDict()

    def create(self, user: str, admin: bool, now: float) -> WebSession:
        while len(self._by_sid) >= self.max_sessions:
            self._by_sid.popitem(last=False)  # the oldest login goes first
        session = WebSession(secrets.token_urlsafe(32), user, admin, secrets.token_urlsafe(32), now + self.ttl_s)
        self._by_sid[session.sid] = session
        return session

    def get(self, sid: str | None, now: float) -> WebSession | None:
        if not sid:
            return None
        session = self._by_sid.get(sid)
        if session is None:
            return None
        if session.expires <= now:
            del self._by_sid[sid]
            return None
        return session

    def drop(self, sid: str) -> None:
        self._by_sid.pop(sid, None)

    def drop_user(self, user: str) -> int:
        """Log ``user`` out everywhere (account removed, locked, or its password changed elsewhere)."""
        gone = [sid for sid, s in self._by_sid.items() if s.user == user]
        for sid in gone:
            del self._by_sid[sid]
        return len(gone)

    def __len__(self) -> int:
        return len(self._by_sid)
