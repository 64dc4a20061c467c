"""SDP values (RFC 8866): a session description as an ordered list of typed lines.

The generic model knows nothing about games. It keeps every line in its original order so that
``format_sdp(parse_sdp_untrusted(text)) == text`` for any valid CRLF body whose numbers carry no
leading zeros (numbers are held as ``int``; ``b=AS:064`` comes back as ``b=AS:64``).

Lines we do not interpret (``i=``, ``u=``, ``e=``, ``p=``, ``t=``, ``r=``, ``z=``, ``k=``) are kept verbatim as
:class:`Field`; ``c=``, ``b=`` and ``a=`` lines are typed because the game extension reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "Attribute",
    "Bandwidth",
    "Connection",
    "Field",
    "Line",
    "MediaDescription",
    "Origin",
    "SessionDescription",
]


@dataclass(frozen=True, slots=True)
class Field:
    """A ``<type>=<value>`` line kept as text (``i u e p t r z k``)."""

    type: str
    value: str

    def __str__(self) -> str:
        return f"{self.type}={self.value}"


@dataclass(frozen=True, slots=True)
class Attribute:
    """An ``a=`` line: ``a=<name>`` (property, ``value is None``) or ``a=<name>:<value>``."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        if self.value is None:
            return f"a={self.name}"
        return f"a={self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """A ``b=<bwtype>:<bandwidth>`` line. For ``AS`` and ``CT`` the unit is kbit/s (RFC 8866 §5.8)."""

    bwtype: str
    bandwidth: int

    def __str__(self) -> str:
        return f"b={self.bwtype}:{self.bandwidth}"


@dataclass(frozen=True, slots=True)
class Connection:
    """A ``c=<nettype> <addrtype> <connection-address>`` line (address kept as text, with any /ttl)."""

    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return f"c={self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True)
class Origin:
    """The ``o=`` line: who made the description and its version (RFC 8866 §5.2)."""

    username: str
    sess_id: int
    sess_version: int
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (
            f"o={self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


Line: TypeAlias = Field | Attribute | Bandwidth | Connection


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One ``m=`` section: the media line and the lines under it, in order."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    #: Lines after ``m=`` in their original order (``i=``, ``c=``, ``b=``, ``k=``, ``a=``).
    lines: tuple[Line, ...] = ()
    #: The ``/<number of ports>`` suffix of the port, if any.
    port_count: int | None = None

    def media_line(self) -> str:
        """The ``m=`` line as text."""
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        return f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"

    @property
    def attributes(self) -> tuple[Attribute, ...]:
        """The ``a=`` lines of this section, in order."""
        return tuple(line for line in self.lines if isinstance(line, Attribute))

    @property
    def connections(self) -> tuple[Connection, ...]:
        """The ``c=`` lines of this section (zero, one, or several for multicast)."""
        return tuple(line for line in self.lines if isinstance(line, Connection))

    @property
    def bandwidths(self) -> tuple[Bandwidth, ...]:
        """The ``b=`` lines of this section, in order."""
        return tuple(line for line in self.lines if isinstance(line, Bandwidth))

    def attribute_values(self, name: str) -> list[str | None]:
        """Values of every ``a=<name>`` line in this section (attribute names are case-sensitive)."""
        return [line.value for line in self.lines if isinstance(line, Attribute) and line.name == name]


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole SDP body: ``v=``, ``o=``, ``s=``, the other session-level lines in order, then media sections."""

    origin: Origin
    #: The ``s=`` text; RFC 8866 §5.3 recommends ``-`` when there is no meaningful name.
    session_name: str = "-"
    #: Session-level lines after ``s=`` in their original order; at least one ``t=`` (RFC 8866 §5.9).
    lines: tuple[Line, ...] = (Field("t", "0 0"),)
    media: tuple[MediaDescription, ...] = ()
    #: The ``v=`` number; only 0 exists (RFC 8866 §5.1).
    version: int = 0

    @property
    def attributes(self) -> tuple[Attribute, ...]:
        """The session-level ``a=`` lines, in order."""
        return tuple(line for line in self.lines if isinstance(line, Attribute))

    @property
    def connection(self) -> Connection | None:
        """The session-level ``c=`` line, if any."""
        for line in self.lines:
            if isinstance(line, Connection):
                return line
        return None

    @property
    def bandwidths(self) -> tuple[Bandwidth, ...]:
        """The session-level ``b=`` lines, in order."""
        return tuple(line for line in self.lines if isinstance(line, Bandwidth))
