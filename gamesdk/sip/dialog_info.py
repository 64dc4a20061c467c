"""gamesdk/sip/dialog_info: RFC 4235 dialog-info XML (``application/dialog-info+xml``), parsed safely and formatted.

The SDK PUBLISHes its dialog state (``confirmed`` after the ACK, ``terminated`` on BYE) to its home server
(DESIGN section 4). The body comes from the network, so :func:`parse_dialog_info_untrusted` is strict:

- size limit (:data:`MAX_BODY_BYTES`) checked before the parser sees a byte;
- no DOCTYPE at all: entity declarations (billion laughs, external entities, RFC 4235 never needs a DTD) are
  refused when the parser meets ``<!DOCTYPE``, before any entity is defined or expanded;
- depth and element-count limits; the only error raised is :class:`DialogInfoError` (400).

Stdlib ``xml.parsers.expat`` is enough here: refusing the DOCTYPE removes every XML attack defusedxml guards
against, and a dependency for one handler would not pay for itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip._grammar import is_digits

__all__ = [
    "CONTENT_TYPE",
    "MAX_BODY_BYTES",
    "NAMESPACE",
    "DialogEntry",
    "DialogInfo",
    "DialogInfoError",
    "DialogState",
    "Direction",
    "format_dialog_info",
    "parse_dialog_info_untrusted",
]

NAMESPACE = "urn:ietf:params:xml:ns:dialog-info"
CONTENT_TYPE = "application/dialog-info+xml"
#: A two-party game has one dialog; 16 KiB leaves room for identities and extensions, nothing more.
MAX_BODY_BYTES = 16 * 1024
_MAX_DEPTH = 8
_MAX_ELEMENTS = 512
_MAX_DIALOGS = 32


class DialogInfoError(RemoteProtocolError):
    """The dialog-info body is malformed, hostile or too large (answer 400 with this message)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"bad dialog-info: {message}", 400)


class DialogState(str, enum.Enum):
    """RFC 4235 section 3.7.1 dialog states."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Direction(str, enum.Enum):
    INITIATOR = "initiator"  #: the publisher sent the INVITE (caller)
    RECIPIENT = "recipient"  #: the publisher received it (callee)


@dataclass(frozen=True, slots=True, kw_only=True)
class DialogEntry:
    """One ``<dialog>`` element."""

    id: str
    state: DialogState
    call_id: str | None = None
    local_tag: str | None = None
    remote_tag: str | None = None
    direction: Direction | None = None
    event: str | None = None
    """``<state event=...>``: cancelled, rejected, replaced, local-bye, remote-bye, error, timeout."""
    code: int | None = None
    """``<state code=...>``: a SIP response code, here the cause of the BYE (580 = QoS failed)."""
    local_identity: str | None = None
    remote_identity: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DialogInfo:
    """A ``<dialog-info>`` document."""

    entity: str
    version: int
    full: bool = True
    dialogs: tuple[DialogEntry, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------------------------
# Parsing

_NS = NAMESPACE + " "


@dataclass(slots=True)
class _Node:
    name: str
    attrs: dict[str, str]
    children: list[_Node] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


class _TreeBuilder:
    def __init__(self) -> None:
        self.root: _Node | None = None
        self.stack: list[_Node] = []
        self.count = 0

    def start(self, name: str, attrs: dict[str, str]) -> None:
        self.count += 1
        if self.count > _MAX_ELEMENTS:
            raise DialogInfoError(f"more than {_MAX_ELEMENTS} elements")
        if len(self.stack) >= _MAX_DEPTH:
            raise DialogInfoError(f"elements nested deeper than {_MAX_DEPTH}")
        node = _Node(name, attrs)
        if self.stack:
            self.stack[-1].children.append(node)
        else:
            self.root = node
        self.stack.append(node)

    def end(self, name: str) -> None:
        self.stack.pop()

    def data(self, text: str) -> None:
        if self.stack:
            self.stack[-1].text.append(text)


def _refuse_doctype(*args: object) -> None:
    raise DialogInfoError("DOCTYPE is not allowed (no DTDs or entities in dialog-info)")


def _refuse_entity(*args: object) -> None:
    raise DialogInfoError("entity declarations are not allowed")


def _build_tree(body: bytes) -> _Node:
    builder = _TreeBuilder()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_entity
    parser.ExternalEntityRefHandler = _refuse_entity  # type: ignore[assignment]
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise DialogInfoError(f"not well-formed XML ({expat.errors.messages[exc.code]}, line {exc.lineno})") from None
    except RecursionError:  # pragma: no cover - depth is bounded above
        raise DialogInfoError("too deeply nested") from None
    if builder.root is None:  # pragma: no cover - expat rejects documents without a root element
        raise DialogInfoError("no root element")
    return builder.root


def _local(node: _Node) -> str | None:
    """The element's local name if it is in the dialog-info namespace, else None (foreign extension)."""
    return node.name[len(_NS):] if node.name.startswith(_NS) else None


def _text(node: _Node) -> str:
    return "".join(node.text).strip()


def _child(node: _Node, local: str) -> _Node | None:
    for child in node.children:
        if _local(child) == local:
            return child
    return None


def _identity(node: _Node | None) -> str | None:
    if node is None:
        return None
    ident = _child(node, "identity")
    return _text(ident) if ident is not None else None


def _parse_dialog(node: _Node) -> DialogEntry:
    dialog_id = node.attrs.get("id")
    if not dialog_id:
        raise DialogInfoError("<dialog> needs an id attribute")
    state_node = _child(node, "state")
    if state_node is None:
        raise DialogInfoError(f"dialog {dialog_id!r} has no <state>")
    try:
        state = DialogState(_text(state_node))
    except ValueError:
        raise DialogInfoError(f"dialog {dialog_id!r}: unknown state {_text(state_node)[:40]!r}") from None
    code: int | None = None
    if "code" in state_node.attrs:
        raw = state_node.attrs["code"]
        if not (is_digits(raw) and len(raw) == 3 and 100 <= int(raw) <= 699):
            raise DialogInfoError(f"dialog {dialog_id!r}: state code must be a SIP status, not {raw[:20]!r}")
        code = int(raw)
    direction: Direction | None = None
    if "direction" in node.attrs:
        try:
            direction = Direction(node.attrs["direction"])
        except ValueError:
            raise DialogInfoError(f"dialog {dialog_id!r}: direction must be initiator or recipient") from None
    return DialogEntry(
        id=dialog_id,
        state=state,
        call_id=node.attrs.get("call-id"),
        local_tag=node.attrs.get("local-tag"),
        remote_tag=node.attrs.get("remote-tag"),
        direction=direction,
        event=state_node.attrs.get("event"),
        code=code,
        local_identity=_identity(_child(node, "local")),
        remote_identity=_identity(_child(node, "remote")),
    )


def parse_dialog_info_untrusted(body: bytes | str) -> DialogInfo:
    """Parse an RFC 4235 document. Raises only :class:`DialogInfoError`.

    Elements outside the dialog-info namespace are ignored (RFC 4235 section 4.1 allows extensions).
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    if len(body) > MAX_BODY_BYTES:
        raise DialogInfoError(f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    if not body.strip():
        raise DialogInfoError("empty body")
    root = _build_tree(body)
    if _local(root) != "dialog-info":
        raise DialogInfoError(f"root element must be <dialog-info> in {NAMESPACE}")
    entity = root.attrs.get("entity")
    if not entity:
        raise DialogInfoError("<dialog-info> needs an entity attribute")
    raw_version = root.attrs.get("version", "")
    if not is_digits(raw_version) or len(raw_version) > 10:
        raise DialogInfoError(f"version must be a non-negative integer, not {raw_version[:20]!r}")
    doc_state = root.attrs.get("state")
    if doc_state not in ("full", "partial"):
        raise DialogInfoError("state must be full or partial")
    dialogs = [_parse_dialog(c) for c in root.children if _local(c) == "dialog"]
    if len(dialogs) > _MAX_DIALOGS:
        raise DialogInfoError(f"more than {_MAX_DIALOGS} dialogs")
    return DialogInfo(entity=entity, version=int(raw_version), full=doc_state == "full", dialogs=tuple(dialogs))


# ---------------------------------------------------------------------------------------------------------------
# Formatting


def format_dialog_info(info: DialogInfo) -> bytes:
    """Serialise ``info`` as RFC 4235 XML (UTF-8), the body the SDK PUBLISHes."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        (
            f"<dialog-info xmlns={quoteattr(NAMESPACE)} version=\"{info.version}\""
            f" state=\"{'full' if info.full else 'partial'}\" entity={quoteattr(info.entity)}>\n"
        ),
    ]
    for d in info.dialogs:
        attrs = f"id={quoteattr(d.id)}"
        for name, value in (("call-id", d.call_id), ("local-tag", d.local_tag), ("remote-tag", d.remote_tag)):
            if value is not None:
                attrs += f" {name}={quoteattr(value)}"
        if d.direction is not None:
            attrs += f' direction="{d.direction.value}"'
        state_attrs = ""
        if d.event is not None:
            state_attrs += f" event={quoteattr(d.event)}"
        if d.code is not None:
            state_attrs += f' code="{d.code}"'
        out.append(f"  <dialog {attrs}>\n    <state{state_attrs}>{d.state.value}</state>\n")
        if d.local_identity is not None:
            out.append(f"    <local><identity>{escape(d.local_identity)}</identity></local>\n")
        if d.remote_identity is not None:
            out.append(f"    <remote><identity>{escape(d.remote_identity)}</identity></remote>\n")
        out.append("  </dialog>\n")
    out.append("</dialog-info>\n")
    return "".join(out).encode("utf-8")
