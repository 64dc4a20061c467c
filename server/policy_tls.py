"""HTTPS between a region's SIP server and its separate policy process (``[policy] url = "https://..."``).

Both sides read the same region file. The policy process serves with the region's ``[tls]`` certificate and,
when ``[tls] ca`` is set, requires a client certificate from that CA (mutual TLS) on top of the bearer token;
the SIP server checks the policy process's certificate against ``[tls] ca`` and presents the region's own
certificate. With plain ``http://`` nothing changes (the token alone, for a policy process on loopback).
"""

from __future__ import annotations

import ssl
from typing import Any

__all__ = ["policy_client_context", "policy_server_context", "uses_https"]


def uses_https(server_config: Any) -> bool:
    url = (getattr(server_config, "policy_raw", None) or {}).get("url")
    return isinstance(url, str) and url.lower().startswith("https://")


def policy_server_context(server_config: Any) -> ssl.SSLContext | None:
    """The policy process's TLS context, or None when ``[policy] url`` is not https."""
    if not uses_https(server_config):
        return None
    tls = server_config.tls
    if tls.certificate is None or tls.key is None:
        raise ValueError("[policy] url is https:// but [tls] certificate and key are not set")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.certificate, tls.key)
    if tls.ca is not None:
        ctx.load_verify_locations(cafile=str(tls.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED  # the SIP server presents the region's certificate
    return ctx


def policy_client_context(server_config: Any) -> ssl.SSLContext | None:
    """The SIP server's TLS context toward its policy process, or None when ``[policy] url`` is not https."""
    if not uses_https(server_config):
        return None
    tls = server_config.tls
    ctx = ssl.create_default_context(cafile=str(tls.ca) if tls.ca is not None else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.certificate is not None and tls.key is not None:
        ctx.load_cert_chain(tls.certificate, tls.key)
    return ctx
