"""server/web/site: the player site and the operator console, on the regional server's event loop.

Pages (Jinja2 templates in ``templates/``), every form with a CSRF token:

======================  =============================================================================
GET/POST /login         account name + password, checked against the stored digest credentials (HA1)
                        under the SIP failure throttle (same counters: per user and per address)
POST /logout
GET  /                  the lobby: own game client online?, players online, the invite form
POST /invite            asks the player's game client to invite (SIP REFER); then /invites/<id>
GET  /invites/<id>/events   server-sent events: each step of that invite as JSON
GET  /history           the player's matches, from billing
GET/POST /account       change password (every stored HA1 is replaced)
GET  /console           operators only: sessions, capacity, billing, users, peers, counters
GET  /console/billing.csv   operators only: the billing records as CSV
POST /console/users     operators only: add, remove, lock, unlock
GET  /metrics           Prometheus text format
GET  /health            {"ok": true}
======================  =============================================================================
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import logging
import re
import secrets
import sqlite3
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gamesdk.sip.digest import compute_ha1
from server.billing.tariff import format_money
from server.refer import ReferProgress
from server.weblisten import Listener, serve_app

from .config import WebConfig
from .metrics import SiteMetrics, TimedPolicyBackend
from .sessions import COOKIE, LOGIN_COOKIE, WebSession, WebSessions

__all__ = ["WebSite"]

log = logging.getLogger(__name__)

_TEMPLATES = Path(__file__).resolve().parent / "templates"
_TARGET = re.compile(r"(?:sips?:)?([A-Za-z0-9][A-Za-z0-9._~-]{0,63})@([A-Za-z0-9.-]{1,253})")
_SESSION_KEY: web.RequestKey[WebSession | None] = web.RequestKey("session", WebSession)
MAX_INVITES = 1000


@dataclass(slots=True)
class WebInvite:
    """One invite started from the web: who, whom, and the steps so far (for the page and its live feed)."""

    ref_id: str
    owner: str
    target: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class WebSite:
    """The region's web site. ``server`` is the running :class:`server.io.EmbeddedServer` (node, accounts)."""

    def __init__(self, server: Any, config: WebConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.server = server
        self.config = config
        self.sessions = WebSessions(config.session_ttl_s)
        self.invites: dict[str, WebInvite] = {}
        self.metrics = SiteMetrics(self)
        self._clock = clock
        self._listener: Listener | None = None
        self._policy_config: Any = None
        self._reader: sqlite3.Connection | None = None
        self._tokens = float(config.max_requests_per_s)
        self._tokens_at = 0.0

    # -- what the pages read ---------------------------------------------------------------------------------

    @property
    def node(self) -> Any:
        return self.server.node

    @property
    def domain(self) -> str:
        return str(self.server.config.domain)

    @property
    def url(self) -> str:
        return self.config.url

    def aor(self, user: str) -> str:
        return f"sip:{user}@{self.domain}"

    def _loop_now(self) -> float:
        return asyncio.get_running_loop().time()

    def sessions_report(self) -> Any:
        """Live reservations and capacity per access network (None without the policy tables)."""
        from server.policy.cli_support import SessionsReport, sessions_report

        # An embedded policy server answers from memory: what it holds is what committed, and reading it never
        # waits on a database lock held by a billing write at the end of a match.
        # (Only the embedded PolicyServer has these views; the HTTP client to a separate process has not.)
        live: Any = getattr(getattr(self.node, "hooks", None), "backend", None)
        if callable(getattr(live, "reservations", None)) and callable(getattr(live, "capacity", None)):
            return SessionsReport(reservations=tuple(live.reservations()), capacity=tuple(live.capacity()))
        if self._policy_config is None:
            from server.policy.config import PolicyConfig
            from server.policy.runner import policy_document

            try:
                self._policy_config = PolicyConfig.from_mapping(policy_document(self.server.config))
            except Exception:  # noqa: BLE001 - a region without policy tables: nothing to show
                self._policy_config = False
        if self._policy_config is False:
            return None
        try:
            return sessions_report(self._db(), self._policy_config)
        except Exception as exc:  # noqa: BLE001 - a page must render even when the database is busy
            log.warning("web: cannot read reservations: %s", exc)
            return None

    def _db(self) -> sqlite3.Connection:
        """One read-only connection to the region database for every page (opened once, not per request)."""
        if self._reader is None:
            path = self.server.config.database
            self._reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)
        return self._reader

    # -- lifecycle -------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._rate, self._errors, self._auth], client_max_size=64 * 1024)
        aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(_TEMPLATES)), autoescape=True,
                             context_processors=[self._context])
        r = app.router
        r.add_get("/login", self.login_page)
        r.add_post("/login", self.login)
        r.add_post("/logout", self.logout)
        r.add_get("/", self.lobby)
        r.add_post("/invite", self.invite)
        r.add_get("/invites/{ref}", self.invite_page)
        r.add_get("/invites/{ref}/events", self.invite_events)
        r.add_get("/history", self.history)
        r.add_get("/account", self.account_page)
        r.add_post("/account", self.change_password)
        r.add_get("/console", self.console)
        r.add_get("/console/billing.csv", self.billing_csv)
        r.add_post("/console/users", self.console_users)
        r.add_get("/metrics", self.metrics_page)
        r.add_get("/health", self.health)
        r.add_get("/favicon.ico", self.favicon)
        return app

    async def start(self, port: int | None = None) -> str:
        """Listen (``port`` overrides the configured one; 0 = any free port). Returns the site's URL."""
        node = self.node
        node.refers.listener = self._on_progress
        self._count_sip_refusals(node)
        hooks = node.hooks
        backend = getattr(hooks, "backend", None)
        if backend is not None and not isinstance(backend, TimedPolicyBackend):
            hooks.backend = TimedPolicyBackend(hooks.backend, self.metrics)
        context = None
        if self.config.secure:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.config.certificate), str(self.config.key))
        self._listener = await serve_app(self.app(), self.config.host, self.config.port if port is None else port,
                                         max_connections=self.config.max_connections, ssl_context=context)
        self.config = self.config.with_port(self._listener.port)
        self.metrics.start()
        log.info("web: region %s site at %s", self.server.config.name, self.config.url)
        return self.config.url

    async def close(self) -> None:
        await self.metrics.stop()
        for invite in self.invites.values():
            invite.done = True
            invite.changed.set()
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _count_sip_refusals(self, node: Any) -> None:
        # The login flow reports SIP's password failures; the web's own go to the throttle directly and are
        # counted under "web".
        node.login.on_failure = self.metrics.logins_refused.labels("sip", "credentials").inc

    # -- middleware --------------------------------------------------------------------------------------------

    @web.middleware
    async def _rate(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """A token bucket over the whole site: the SIP server shares this event loop and comes first."""
        now = self._loop_now()
        rate = float(self.config.max_requests_per_s)
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1.0 and request.path != "/health":
            self.metrics.web_refused.inc()
            return web.Response(status=503, text="busy: try again in a second", headers={"Retry-After": "1"})
        self._tokens -= 1.0
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400 or request.path in ("/metrics", "/health") or exc.content_type != "text/plain":
                raise
            return self._page(request, "error.html", {"status": exc.status, "message": exc.text or exc.reason},
                              status=exc.status)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @web.middleware
    async def _auth(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        session = self.sessions.get(request.cookies.get(COOKIE), self._clock())
        request[_SESSION_KEY] = session
        public = request.path in ("/login", "/metrics", "/health", "/favicon.ico")
        if session is None and not public:
            if request.method == "GET" and not request.path.endswith("/events"):
                raise web.HTTPFound("/login")
            raise web.HTTPUnauthorized(text="log in first")
        if request.method == "POST" and request.path != "/login":
            form = await request.post()
            assert session is not None
            if not session.csrf_ok(_field(form, "csrf")):
                log.info("web: POST %s by %s refused: CSRF token missing or wrong", request.path, session.user)
                raise web.HTTPForbidden(text="CSRF token missing or wrong: reload the page and try again")
        if request.path.startswith("/console") and not (session is not None and session.admin):
            raise web.HTTPForbidden(text="operators only")
        return await handler(request)

    def _context(self, request: web.Request) -> Awaitable[dict[str, Any]]:
        async def build() -> dict[str, Any]:
            session = request.get(_SESSION_KEY)
            return {"me": session, "region": self.server.config.name, "domain": self.domain,
                    "csrf": session.csrf if isinstance(session, WebSession) else ""}

        return build()

    def _page(self, request: web.Request, template: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
        response = aiohttp_jinja2.render_template(template, request, context, status=status)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def _session(self, request: web.Request) -> WebSession:
        session = request.get(_SESSION_KEY)
        assert isinstance(session, WebSession)  # _auth let only logged-in requests through
        return session

    def _set_cookie(self, response: web.StreamResponse, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="Strict",
                            secure=self.config.secure)

    # -- login ---------------------------------------------------------------------------------------------------

    async def login_page(self, request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
        # One token per browser: a second tab (or the favicon's redirect) must not invalidate the first form.
        token = request.cookies.get(LOGIN_COOKIE, "")
        if not re.fullmatch(r"[A-Za-z0-9_-]{43}", token):
            token = secrets.token_urlsafe(32)
        response = self._page(request, "login.html", {"login_csrf": token, "error": error}, status=status)
        self._set_cookie(response, LOGIN_COOKIE, token, 600)
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        sent = _field(form, "csrf") or ""
        if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
            raise web.HTTPForbidden(text="CSRF token missing or wrong: reload the login page")
        name = (_field(form, "user") or "").strip()
        password = _field(form, "password") or ""
        if "@" in name:
            name, _, domain = name.partition("@")
            if domain.lower() != self.domain:
                return await self.login_page(request, error=f"this is the {self.domain} site", status=401)
        ip = request.remote or "?"
        ok, why = await self.check_password(name, password, ip)
        if not ok:
            self.metrics.logins_refused.labels("web", why).inc()
            status = 429 if why == "throttled" else 401
            message = ("too many failed attempts: try again later" if why == "throttled"
                       else "wrong account name or password")
            return await self.login_page(request, error=message, status=status)
        account = self.server.accounts.get(name) if hasattr(self.server.accounts, "get") else None
        session = self.sessions.create(name, bool(account and account.admin), self._clock())
        log.info("web: %s logged in from %s", name, ip)
        response = web.HTTPFound("/console" if session.admin and _field(form, "next") == "console" else "/")
        self._set_cookie(response, COOKIE, session.sid, int(self.config.session_ttl_s))
        response.del_cookie(LOGIN_COOKIE, path="/")
        raise response

    async def check_password(self, name: str, password: str, ip: str) -> tuple[bool, str]:
        """Check ``password`` against the stored HA1 of ``name``, under the SIP failure throttle.

        Returns (ok, why): why is ``throttled`` or ``credentials`` when refused.
        """
        node = self.node
        verdict = node.throttle.check(name, ip, self._loop_now())
        if verdict.blocked:
            return False, "throttled"
        if verdict.delay_s > 0:
            await asyncio.sleep(verdict.delay_s)  # as the SIP answers are held back: slows guessing
        accounts = self.server.accounts
        realm = node.authenticator.realm
        good = False
        for algorithm in node.authenticator.algorithms:
            stored = accounts.ha1(name, algorithm)
            if stored is not None:
                good = hmac.compare_digest(stored, compute_ha1(name, realm, password, algorithm))
                break
        if not good:
            now = self._loop_now()
            node.throttle.failed(name, ip, now)
            if node.throttle.check(name, ip, now).blocked:
                return False, "throttled"
            return False, "credentials"
        node.throttle.succeeded(name, ip)
        return True, ""

    async def logout(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        self.sessions.drop(session.sid)
        response = web.HTTPFound("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # -- the lobby -----------------------------------------------------------------------------------------------

    def _online(self) -> list[str]:
        node = self.node
        now = self._loop_now()
        names = []
        for aor in node.location.aors():
            if node.location.lookup(aor, now):
                names.append(aor.removeprefix("sip:").split("@", 1)[0])
        return names

    async def lobby(self, request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
        session = self._session(request)
        online = self._online()
        formats = [asdict(f) for f in self.config.formats]
        mine = [i for i in self.invites.values() if i.owner == session.user][-5:]
        return self._page(request, "lobby.html", {
            "online": online, "client_online": session.user in online, "formats": formats,
            "defaults": formats[0], "error": error, "invites": list(reversed(mine)),
            "peers": [p.domain for p in self.node.federation.peers()],
        }, status=status)

    async def invite(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        form = await request.post()
        target = (_field(form, "target") or "").strip()
        match = _TARGET.fullmatch(target)
        if match is None:
            return await self.lobby(request, error=f"{target[:80]!r} is not an address like bob@na.gamesdk.test",
                                    status=400)
        try:
            fmt = (_field(form, "format") or "").strip()
            from gamesdk.qos.model import parse_game_format

            parse_game_format(fmt)
            cls = (_field(form, "classification") or "").strip()
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,32}", cls):
                raise ValueError(f"classification {cls[:40]!r} must be a token")
            values = {k: _bounded(form, k, lo, hi) for k, lo, hi in (
                ("latency_ms", 1, 10_000), ("jitter_ms", 0, 10_000), ("loss_ppm", 0, 1_000_000),
                ("bandwidth_kbps", 1, 1_000_000))}
        except Exception as exc:  # noqa: BLE001 - every bad field is a message on the form
            return await self.lobby(request, error=str(exc), status=400)
        node = self.node
        now = self._loop_now()
        bindings = node.location.lookup(self.aor(session.user), now)
        if not bindings:
            return await self.lobby(request, error="your game client is not online: start the game and log in "
                                                   "first", status=409)
        requirements = {
            "Gsdk-Format": fmt, "Gsdk-Class": cls,
            "Gsdk-Qos": f"lat={values['latency_ms']};jit={values['jitter_ms']};loss={values['loss_ppm']}",
            "Gsdk-Bandwidth": str(values["bandwidth_kbps"]),
        }
        opponent = f"sip:{match.group(1)}@{match.group(2).lower()}"
        if len(self.invites) >= MAX_INVITES:
            oldest = next(iter(self.invites))
            del self.invites[oldest]
        ref_id, out = node.refers.start(bindings[0], target=opponent, requirements=requirements,
                                        referred_by=self.aor(session.user), now=now)
        # start() reported "sent" before we knew the id: keep it as the invite's first step.
        invite = self.invites.get(ref_id) or WebInvite(ref_id, session.user, opponent)
        invite.owner, invite.target = session.user, opponent
        self.invites[ref_id] = invite
        self.server.send(out)
        raise web.HTTPFound(f"/invites/{ref_id}")

    def _on_progress(self, progress: ReferProgress) -> None:
        invite = self.invites.get(progress.ref_id)
        if invite is None:
            invite = WebInvite(progress.ref_id, "", "")
            self.invites[progress.ref_id] = invite
        invite.steps.append({"step": progress.step, "status": progress.status, "reason": progress.reason,
                             "region": progress.region, "detail": progress.detail, "final": progress.final})
        if progress.final:
            invite.done = True
            self.metrics.web_invites.labels(progress.step).inc()
        invite.changed.set()

    def _own_invite(self, request: web.Request) -> WebInvite:
        invite = self.invites.get(request.match_info["ref"])
        if invite is None or invite.owner != self._session(request).user:
            raise web.HTTPNotFound(text="no such invite")
        return invite

    async def invite_page(self, request: web.Request) -> web.Response:
        invite = self._own_invite(request)
        return self._page(request, "invite.html", {"invite": invite})

    async def invite_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: every step of the invite (the ones so far first), then the stream ends."""
        invite = self._own_invite(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        # Each step carries its number as the event id: an EventSource that reconnects (a dropped connection)
        # sends the last one it got in Last-Event-ID and is sent only the steps after it, not all of them again.
        sent = _resume_after(request.headers.get("Last-Event-ID"), len(invite.steps))
        deadline = self._loop_now() + 300.0  # bounded: an invite is over long before
        while True:
            invite.changed.clear()
            while sent < len(invite.steps):
                await response.write(f"id: {sent + 1}\ndata: {json.dumps(invite.steps[sent])}\n\n".encode())
                sent += 1
            if invite.done or self._loop_now() > deadline:
                await response.write(b"event: end\ndata: {}\n\n")
                break
            try:
                await asyncio.wait_for(invite.changed.wait(), 15.0)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
        return response

    # -- history, account -----------------------------------------------------------------------------------------

    def _rows(self, limit: int = 500) -> list[Any]:
        from server.policy.cli_support import billing_rows

        try:
            return list(billing_rows(self._db(), limit=limit))
        except Exception as exc:  # noqa: BLE001 - the page says so instead of failing
            log.warning("web: cannot read billing: %s", exc)
            return []

    async def history(self, request: web.Request) -> web.Response:
        session = self._session(request)
        mine = self.aor(session.user)
        rows = [r for r in self._rows(200) if r.player == mine]
        return self._page(request, "history.html", {"rows": [_row_view(r) for r in rows]})

    async def account_page(self, request: web.Request, *, error: str = "", done: str = "",
                           status: int = 200) -> web.Response:
        return self._page(request, "account.html", {"error": error, "done": done}, status=status)

    async def change_password(self, request: web.Request) -> web.Response:
        session = self._session(request)
        form = await request.post()
        current = _field(form, "current") or ""
        new = _field(form, "new") or ""
        if new != (_field(form, "repeat") or ""):
            return await self.account_page(request, error="the new passwords differ", status=400)
        if len(new) < 8:
            return await self.account_page(request, error="the new password needs at least 8 characters",
                                           status=400)
        ok, why = await self.check_password(session.user, current, request.remote or "?")
        if not ok:
            self.metrics.logins_refused.labels("web", why).inc()
            return await self.account_page(request, error="the current password is wrong" if why != "throttled"
                                           else "too many failed attempts: try again later", status=403)
        self.server.accounts.set_password(session.user, new)
        log.info("web: %s changed the password", session.user)
        return await self.account_page(request, done="password changed: log in to your game with the new one")

    # -- operator console ---------------------------------------------------------------------------------------

    async def console(self, request: web.Request, *, error: str = "", done: str = "",
                      status: int = 200) -> web.Response:
        node = self.node
        report = self.sessions_report()
        stats = node.stats
        counters = {k: getattr(stats, k) for k in ("datagrams_in", "datagrams_out", "requests", "responses",
                                                   "malformed", "dropped", "internal_errors")}
        counters["registered contacts"] = len(node.location)
        counters["web logins alive"] = len(self.sessions)
        return self._page(request, "console.html", {
            "report": report, "rows": [_row_view(r) for r in self._rows(100)],
            "users": [{"name": a.name, "admin": a.admin, "locked": a.locked,
                       "created": time.strftime("%Y-%m-%d %H:%M", time.gmtime(a.created_at))}
                      for a in self.server.accounts.list()],
            "by_method": sorted(stats.by_method.items()),
            "finals": sorted(stats.invite_finals.items()), "counters": counters,
            "peers": [{"domain": p.domain, "address": f"{p.address[0]}:{p.address[1]}",
                       "rtt": None if p.min_rtt_ms is None else round(p.min_rtt_ms, 2),
                       "reachable": p.reachable} for p in node.federation.peers()],
            "error": error, "done": done,
        }, status=status)

    async def billing_csv(self, request: web.Request) -> web.Response:
        from server.policy.cli_support import billing_export_csv

        buffer = io.StringIO()
        billing_export_csv(self._rows(100_000)[::-1], buffer)
        return web.Response(text=buffer.getvalue(), content_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{self.server.config.name}-billing.csv"'})

    async def console_users(self, request: web.Request) -> web.Response:
        from server.accounts import AccountError

        form = await request.post()
        action = _field(form, "action")
        name = (_field(form, "name") or "").strip()
        accounts = self.server.accounts
        try:
            if action == "add":
                password = _field(form, "password") or ""
                if len(password) < 8:
                    raise AccountError("the password needs at least 8 characters")
                accounts.add(name, password, now=time.time(), admin=_field(form, "admin") == "on")
                done = f"added {name}"
            elif action == "remove":
                if name == self._session(request).user:
                    raise AccountError("you cannot remove your own account here")
                accounts.remove(name)
                self.sessions.drop_user(name)
                done = f"removed {name}"
            elif action in ("lock", "unlock"):
                accounts.set_locked(name, action == "lock")
                if action == "lock":
                    self.sessions.drop_user(name)
                done = f"{action}ed {name}"
            else:
                raise AccountError(f"unknown action {str(action)[:20]!r}")
        except AccountError as exc:
            return await self.console(request, error=str(exc), status=400)
        log.info("web: operator %s: %s", self._session(request).user, done)
        return await self.console(request, done=done)

    # -- machine pages ----------------------------------------------------------------------------------------

    async def metrics_page(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def favicon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _bounded(form: Any, name: str, lo: int, hi: int) -> int:
    text = (_field(form, name) or "").strip()
    if not text.isascii() or not text.isdigit() or not lo <= int(text) <= hi:
        raise ValueError(f"{name.replace('_', ' ')} must be a whole number from {lo} to {hi}")
    return int(text)


def _row_view(row: Any) -> dict[str, Any]:
    start = row.t_start or row.t_2xx
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start)), "player": row.player, "peer": row.peer,
        "side": row.side, "network": row.network, "qos_class": row.qos_class, "format": row.game_format,
        "bandwidth": f"{row.uplink_kbps}/{row.downlink_kbps}", "duration": f"{row.duration_s:.0f} s",
        "end_reason": row.end_reason or "in progress", "charge": format_money(row.charge, row.currency),
        "call_id": row.call_id,
    }


def _resume_after(last_event_id: str | None, steps: int) -> int:
    """The steps a reconnecting event stream already has: its Last-Event-ID when that is a step number sent
    (0 to ``steps``), else none."""
    if last_event_id is None or not last_event_id.isdecimal() or len(last_event_id) > 6:
        return 0
    return min(int(last_event_id), steps)
