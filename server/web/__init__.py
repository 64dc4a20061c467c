"""server/web: the region's web site on the server's event loop (aiohttp + Jinja2).

Players log in with their account password, see who is online, invite anyone by name (the server asks the
player's own game client to invite, with a SIP REFER, and shows the progress live), read their match history and
change their password. Operators (``user add --admin``) get a console and everybody's Prometheus ``/metrics``.
"""

from .config import FormatDefaults, WebConfig, parse_web

__all__ = ["FormatDefaults", "WebConfig", "parse_web"]
