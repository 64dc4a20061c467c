"""RFC 3261 section 25 grammar pieces shared by the SIP codecs (character classes as regex strings)."""

from __future__ import annotations

import re

__all__ = [
    "TOKEN",
    "TOKEN_RE",
    "LWS_RE",
    "QUOTED_STRING",
    "is_token",
    "unquote",
    "quote",
]

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")  (RFC 3261 section 25.1)
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
TOKEN_RE = re.compile(TOKEN)
# quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE; quoted-pair excludes CR and LF.
QUOTED_STRING = r'"(?:[^"\\\r\n]|\\[^\r\n])*"'
LWS_RE = re.compile(r"[ \t]+")


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 3261 token."""
    return TOKEN_RE.fullmatch(text) is not None


def unquote(text: str) -> str:
    """Remove the quotes and quoted-pair escapes of a quoted-string (``text`` must be one)."""
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    out: list[str] = []
    escaped = False
    for ch in inner:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(ch)
    return "".join(out)


def quote(text: str) -> str:
    """Make a quoted-string of ``text`` (escaping backslash and double quote)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
