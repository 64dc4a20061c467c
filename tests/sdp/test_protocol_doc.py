"""docs/protocol.md shows exactly what the code produces, and its examples parse and round-trip."""

from __future__ import annotations

from pathlib import Path

from gamesdk.qos import Accepted, answer_offer
from gamesdk.sdp import Role, canonical_gsdk_lines, format_sdp, game_from_sdp, parse_sdp_untrusted
from gamesdk.sdp.examples import BOB_MODIFIED, example_answer, example_offer

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def blocks(language: str) -> list[str]:
    """The fenced code blocks of the document tagged with ``language``, LF line ends."""
    found: list[str] = []
    current: list[str] | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if current is None:
            if line.strip() == f"```{language}":
                current = []
        elif line.strip() == "```":
            found.append("\n".join(current) + "\n")
            current = None
        else:
            current.append(line)
    return found


def test_document_examples_are_what_the_code_produces() -> None:
    generated = [
        format_sdp(desc) for desc in (example_offer(), example_answer(), example_answer(modified=True))
    ]
    assert [block.replace("\n", "\r\n") for block in blocks("sdp")] == generated


def test_document_examples_parse_and_round_trip() -> None:
    examples = blocks("sdp")
    assert len(examples) == 3
    for index, block in enumerate(examples):
        body = block.replace("\n", "\r\n")
        desc = parse_sdp_untrusted(body.encode())
        assert format_sdp(desc) == body
        game_from_sdp(desc, Role.OFFER if index == 0 else Role.ANSWER)


def test_document_modified_answer_is_a_modification() -> None:
    offer = game_from_sdp(parse_sdp_untrusted(blocks("sdp")[0]), Role.OFFER)
    result = answer_offer(offer.terms, BOB_MODIFIED)
    assert isinstance(result, Accepted)
    assert result.changes == ("lat", "pps")
    assert game_from_sdp(parse_sdp_untrusted(blocks("sdp")[2]), Role.ANSWER).terms == result.answer


def test_document_canonical_lines_are_what_the_code_produces() -> None:
    text = DOC.read_text(encoding="utf-8")
    canonical = canonical_gsdk_lines(example_offer()).decode().replace("\r\n", "\n")
    assert f"```\n{canonical}```" in text


def test_document_abnf_names_every_gsdk_attribute() -> None:
    (abnf,) = blocks("abnf")
    for name in (
        "gsdk-format",
        "gsdk-class",
        "gsdk-qos",
        "gsdk-sec",
        "gsdk-kx",
        "gsdk-sid",
        "b=AS:",
        "UDP/GSDK",
    ):
        assert name in abnf
