"""What a reload (SIGHUP, ``ctl reload``) may change in a running region, checked before anything is applied.

A reload reads the region file again and applies access networks, classes, tariff, policy settings, peers,
registrar and authentication limits, timers and the log level. Keys that need new sockets or another database
(region name, domain, listen addresses, database, TLS) are refused with the key named, and the server keeps
running on its old file: a restart applies those.
"""

from __future__ import annotations

from pathlib import Path

from server.config import ConfigError, ServerConfig, load_config

__all__ = ["load_for_reload"]

_FIXED = (("name", "region.name"), ("domain", "region.domain"), ("listens", "region.listen"),
          ("database", "region.database"), ("tls", "[tls]"), ("event_loop", "runtime.event_loop"))


def load_for_reload(path: Path, running: ServerConfig, *, listen_as_configured: ServerConfig | None = None
                    ) -> ServerConfig:
    """Read ``path`` again; raises :class:`ConfigError` naming the reason when it cannot be applied.

    ``listen_as_configured`` is the config as first read from the file (the running one may carry the port the
    socket really bound, e.g. port 0 in tests), used to compare the fixed keys.
    """
    new = load_config(path)
    _check_policy_tables(new)
    base = listen_as_configured or running
    for attr, key in _FIXED:
        if getattr(new, attr) != getattr(base, attr):
            raise ConfigError(key, "changed: that needs a restart (the running server keeps its old file)")
    return new


def _check_policy_tables(config: ServerConfig) -> None:
    from server.policy.config import PolicyConfig
    from server.policy.runner import policy_document

    PolicyConfig.from_mapping(policy_document(config))
