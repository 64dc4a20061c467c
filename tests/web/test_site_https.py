"""The player site over HTTPS with the region's certificate: the page is served over TLS, and the session
cookie gains the Secure flag on top of HttpOnly and SameSite=Strict."""

from __future__ import annotations

import asyncio
import io
import ssl
from pathlib import Path

import aiohttp
from web_kit import login, region_doc, start_region

from server.cli import EXIT_OK, main


def _make_pki(pki: Path) -> None:
    for argv in (["cert", "ca", "--dir", str(pki)],
                 ["cert", "region", "eu.gamesdk.test", "--ca", str(pki), "--ip", "127.0.0.1"]):
        out, err = io.StringIO(), io.StringIO()
        assert main(argv, stdout=out, stderr=err) == EXIT_OK, err.getvalue()


def test_site_over_https_serves_tls_and_marks_the_cookie_secure(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    _make_pki(pki)
    doc = region_doc("eu", tmp_path)
    doc["web"]["listen"] = "https://127.0.0.1:0"
    doc["tls"] = {"certificate": str(pki / "eu.gamesdk.test.crt"), "key": str(pki / "eu.gamesdk.test.key"),
                  "ca": str(pki / "ca.crt")}

    async def main_() -> tuple[str, int, str, bool]:
        server = await start_region("eu", tmp_path, doc)
        try:
            assert server.web is not None
            url = str(server.web.url)
            trusting = ssl.create_default_context(cafile=str(pki / "ca.crt"))
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar, connector=aiohttp.TCPConnector(ssl=trusting)) as http:
                resp = await login(http, url, "alice")
                cookie = next(c for c in resp.headers.getall("Set-Cookie") if c.startswith("gsdk_session="))
                status = resp.status
            # A client that does not trust the region's CA cannot complete the handshake.
            refused = False
            async with aiohttp.ClientSession() as stranger:
                try:
                    async with stranger.get(url + "/login"):
                        pass
                except aiohttp.ClientConnectorCertificateError:
                    refused = True
            return url, status, cookie, refused
        finally:
            await server.stop()

    url, status, cookie, refused = asyncio.run(asyncio.wait_for(main_(), 60))
    assert url.startswith("https://127.0.0.1:")
    assert status == 302
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "secure" in flags and "httponly" in flags and "samesite=strict" in flags
    assert refused
