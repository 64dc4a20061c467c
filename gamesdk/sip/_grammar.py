"""RFC 3261 section 25 grammar pieces shared by the SIP codecs (character classes as regex strings)."""

from __future__ import annotations

import re

from gamesdk.errors import RemoteProtocolError

__all__ = [
    "LWS_RE",
    "QUOTED_STRING",
    "TOKEN",
    "TOKEN_CHARS",
    "TOKEN_RE",
    "Params",
    "bad_value",
    "find_param",
    "is_digits",
    "is_token",
    "quote",
    "split_outside_quotes",
    "split_simple_params",
    "unquote",
]

#: ``;name=value`` parameters in order; a flag parameter has the value None.
Params = tuple[tuple[str, "str | None"], ...]

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")  (RFC 3261 section 25.1)
TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~"
TOKEN = "[" + re.escape(TOKEN_CHARS) + "]+"
TOKEN_RE = re.compile(TOKEN)
# quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE; quoted-pair excludes CR and LF.
QUOTED_STRING = r'"(?:[^"\\\r\n]|\\[^\r\n])*"'
LWS_RE = re.compile(r"[ \t]+")


def is_digits(text: str, max_digits: int = 12) -> bool:
    """True when ``text`` is 1*DIGIT (RFC 5234 B.1: ASCII only; ``str.isdigit`` also takes '²', which ``int`` refuses)
    of at most ``max_digits``: no number we read is longer, and ``int`` refuses over 4,300 digits."""
    return len(text) <= max_digits and text.isascii() and text.isdigit()


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


def split_outside_quotes(text: str, separator: str, *, angle_brackets: bool = False) -> list[str]:
    """Split ``text`` on ``separator`` where it stands outside quoted-strings (and ``<...>`` when asked).

    Pieces are returned as they are (not stripped).
    """
    out: list[str] = []
    buf: list[str] = []
    in_quote = escaped = in_angle = False
    for ch in text:
        if in_quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif angle_brackets and ch == "<":
            in_angle = True
        elif angle_brackets and ch == ">":
            in_angle = False
        elif ch == separator and not in_angle:
            out.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    out.append("".join(buf))
    return out


def bad_value(what: str, text: str) -> RemoteProtocolError:
    """The 400 error for a value that breaks the grammar, quoting (the start of) the value."""
    shown = text if len(text) <= 60 else text[:57] + "..."
    return RemoteProtocolError(f"Bad {what}: {shown!r}", 400)


def split_simple_params(text: str) -> Params:
    """Split ``;a=b;flag`` (already checked to hold no quotes or LWS) into ``(("a", "b"), ("flag", None))``."""
    if not text:
        return ()
    out: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        out.append((name, value if eq else None))
    return tuple(out)


def find_param(params: Params, name: str) -> str | None:
    """The value of parameter ``name`` (case-insensitive; "" for a flag), or None when absent."""
    lname = ""
    for key, value in params:
        # The name as written (nearly always: ``branch``, ``tag``) matches without lower-casing either.
        if key == name:
            return "" if value is None else value
        if not lname:
            lname = name.lower()
        if key.lower() == lname:
            return "" if value is None else value
    return None
