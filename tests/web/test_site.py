"""The player site and the operator console over real loopback HTTP: cookies, CSRF, throttling, roles, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families
from web_kit import PASSWORDS, client, login, page_csrf, site_url, start_region

from gamesdk.sip.digest import compute_ha1
from server.io import EmbeddedServer

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


def with_region(tmp_path: Path, body: Callable[[EmbeddedServer, str], Awaitable[T]]) -> T:
    async def main() -> T:
        server = await start_region("eu", tmp_path)
        try:
            return await body(server, site_url(server))
        finally:
            await server.stop()

    return run(main())


def test_login_cookie_is_httponly_strict_and_expires(tmp_path: Path) -> None:
    async def body(server: EmbeddedServer, url: str) -> tuple[int, str, int, str]:
        async with client() as http:
            resp = await login(http, url, "alice")
            cookie = resp.headers.getall("Set-Cookie")
            session = next(c for c in cookie if c.startswith("gsdk_session="))
            async with http.get(url + "/") as lobby:
                text = await lobby.text()
            return resp.status, session, lobby.status, text

    status, cookie, lobby_status, lobby = with_region(tmp_path, body)
    assert status == 302
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert "max-age=600" in flags
    assert "secure" not in flags  # plain http on loopback; https adds it
    assert lobby_status == 200 and "Players online in eu" in lobby and "offline" in lobby


def test_pages_need_a_login(tmp_path: Path) -> None:
    async def body(server: EmbeddedServer, url: str) -> list[tuple[int, str]]:
        async with client() as http:
            out = []
            for path in ("/", "/history", "/console", "/account"):
                async with http.get(url + path, allow_redirects=False) as resp:
                    out.append((resp.status, resp.headers.get("Location", "")))
            async with http.post(url + "/invite", data={"target": "bob@na.gamesdk.test"}) as resp:
                out.append((resp.status, ""))
            return out

    results = with_region(tmp_path, body)
    assert results[:4] == [(302, "/login")] * 4
    assert results[4][0] == 401


def test_forms_without_the_csrf_token_are_refused(tmp_path: Path) -> None:
    async def body(server: EmbeddedServer, url: str) -> list[int]:
        async with client() as http:
            # The login form's own token: a cross-site POST carries no login cookie.
            async with http.post(url + "/login", data={"user": "alice", "password": PASSWORDS["alice"]},
                                 allow_redirects=False) as resp:
                no_login_token = resp.status
            await login(http, url, "alice")
            statuses = [no_login_token]
            for data in ({"target": "bob@na.gamesdk.test"}, {"target": "bob@na.gamesdk.test", "csrf": "forged"}):
                async with http.post(url + "/invite", data=data, allow_redirects=False) as resp:
                    statuses.append(resp.status)
                    assert "CSRF" in await resp.text()
            async with http.post(url + "/logout", data={}, allow_redirects=False) as resp:
                statuses.append(resp.status)
            async with http.get(url + "/", allow_redirects=False) as resp:
                statuses.append(resp.status)  # still logged in: the logout without a token did nothing
            token = await page_csrf(http, url)
            async with http.post(url + "/logout", data={"csrf": token}, allow_redirects=False) as resp:
                statuses.append(resp.status)
            async with http.get(url + "/", allow_redirects=False) as resp:
                statuses.append(resp.status)
            return statuses

    assert with_region(tmp_path, body) == [403, 403, 403, 403, 200, 302, 302]


def test_wrong_passwords_lock_the_account_out_like_sip(tmp_path: Path) -> None:
    async def body(server: EmbeddedServer, url: str) -> tuple[list[int], int, str]:
        async with client() as http:
            statuses = []
            for _ in range(10):
                resp = await login(http, url, "alice", "guess")
                statuses.append(resp.status)
            right = await login(http, url, "alice")  # the right password, but the account is blocked now
            text = await right.text()
            return statuses, right.status, text

    statuses, status, text = with_region(tmp_path, body)
    assert statuses[:9] == [401] * 9 and statuses[9] == 429
    assert status == 429 and "too many failed attempts" in text


def test_the_console_is_refused_to_a_player(tmp_path: Path) -> None:
    async def body(server: EmbeddedServer, url: str) -> tuple[int, int, str, int, str]:
        async with client() as player:
            await login(player, url, "alice")
            async with player.get(url + "/console") as resp:
                refused = resp.status
            async with player.get(url + "/console/billing.csv") as resp:
                refused_csv = resp.status
        async with client() as operator:
            await login(operator, url, "op")
            async with operator.get(url + "/console") as resp:
                console = await resp.text()
                ok = resp.status
            token = await page_csrf(operator, url, "/console")
            async with operator.post(url + "/console/users", data={"csrf": token, "action": "add", "name": "carol",
                                                                    "password": "carol-password"}) as resp:
                added = await resp.text()
            async with operator.post(url + "/console/users", data={"csrf": token, "action": "lock",
                                                                    "name": "carol"}) as resp:
                assert resp.status == 200
            async with operator.get(url + "/console/billing.csv") as resp:
                csv_text = await resp.text()
                assert resp.headers["Content-Type"].startswith("text/csv")
        return refused, refused_csv, console, ok, added + csv_text

    refused, refused_csv, console, ok, rest = with_region(tmp_path, body)
    assert refused == 403 and refused_csv == 403
    assert ok == 200 and "Access networks" in console and "eu-fiber" in console and "na.gamesdk.test" in console
    assert "added carol" in rest
    assert rest.splitlines()[-1].startswith("id,") or "call_id" in rest.splitlines()[-1] or "," in rest


def test_locked_account_cannot_log_in_anywhere(tmp_path: Path) -> None:
    async def body(server: EmbeddedServer, url: str) -> tuple[int, str | None]:
        server.accounts.set_locked("alice", True)  # type: ignore[attr-defined]
        async with client() as http:
            resp = await login(http, url, "alice")
        return resp.status, server.accounts.ha1("alice", "MD5")

    status, ha1 = with_region(tmp_path, body)
    assert status == 401 and ha1 is None  # the SIP registrar sees no credentials either


def test_change_password_replaces_every_stored_digest(tmp_path: Path) -> None:
    async def body(server: EmbeddedServer, url: str) -> tuple[list[int], dict[str, str | None]]:
        statuses = []
        async with client() as http:
            await login(http, url, "alice")
            token = await page_csrf(http, url, "/account")
            for current, new, repeat in (("wrong", "new-password-1", "new-password-1"),
                                         (PASSWORDS["alice"], "short", "short"),
                                         (PASSWORDS["alice"], "new-password-1", "new-password-1")):
                async with http.post(url + "/account", data={"csrf": token, "current": current, "new": new,
                                                             "repeat": repeat}) as resp:
                    statuses.append(resp.status)
        async with client() as http:
            statuses.append((await login(http, url, "alice", "new-password-1")).status)
        return statuses, {alg: server.accounts.ha1("alice", alg) for alg in ("SHA-256",)}

    statuses, stored = with_region(tmp_path, body)
    assert statuses == [403, 400, 200, 302]
    realm = "eu.gamesdk.test"
    assert stored == {alg: compute_ha1("alice", realm, "new-password-1", alg) for alg in ("SHA-256",)}


def test_metrics_parse_with_prometheus_client(tmp_path: Path) -> None:
    async def body(server: EmbeddedServer, url: str) -> str:
        async with client() as http:
            await login(http, url, "alice", "guess")
            async with http.get(url + "/metrics") as resp:
                assert resp.status == 200
                return await resp.text()

    families = {f.name: f for f in text_string_to_metric_families(with_region(tmp_path, body))}
    for name in ("gamesdk_registrations", "gamesdk_logins_refused", "gamesdk_calls", "gamesdk_reservations_held",
                 "gamesdk_bandwidth_reserved_kbps", "gamesdk_policy_decision_seconds", "gamesdk_event_loop_lag_seconds",
                 "gamesdk_policy_refusals", "gamesdk_registered_contacts"):
        assert name in families, name
    refused = {(s.labels["where"], s.labels["reason"]): s.value for s in families["gamesdk_logins_refused"].samples
               if s.name.endswith("_total")}
    assert refused[("web", "credentials")] == 1.0
    held = {s.labels["network"]: s.value for s in families["gamesdk_reservations_held"].samples}
    assert held == {"eu-fiber": 0.0, "eu-dsl": 0.0}


def test_a_flood_of_requests_gets_503_not_the_sip_loop(tmp_path: Path) -> None:
    from web_kit import region_doc

    async def main() -> list[tuple[int, str | None]]:
        doc = region_doc("eu", tmp_path)
        doc["web"]["max_requests_per_s"] = 3
        server = await start_region("eu", tmp_path, doc)
        try:
            async with client() as http:
                out = []
                for _ in range(6):
                    async with http.get(site_url(server) + "/login") as resp:
                        out.append((resp.status, resp.headers.get("Retry-After")))
                return out
        finally:
            await server.stop()

    statuses = run(main())
    assert statuses[:3] == [(200, None)] * 3
    assert (503, "1") in statuses[3:]
