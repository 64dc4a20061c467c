"""The example offer and answers of ``docs/protocol.md``, built with the public API.

``python -m gamesdk.sdp.examples`` prints them; a test checks that the document shows exactly these bodies.
Addresses are from the documentation ranges of RFC 5737; the keys are X25519 public keys of the private keys
``11..11`` (alice) and ``22..22`` (bob).
"""

from __future__ import annotations

from gamesdk.qos.model import GameFormat, QosParams, SessionTerms
from gamesdk.qos.negotiation import Rejected, Requirements, answer_offer
from gamesdk.sdp.codec import format_sdp
from gamesdk.sdp.game import GameMedia, Role, game_from_sdp, game_to_sdp
from gamesdk.sdp.model import SessionDescription

__all__ = [
    "ALICE_KEY",
    "BOB_KEY",
    "BOB_MODIFIED",
    "BOB_SAME",
    "OFFER_TERMS",
    "example_answer",
    "example_offer",
]

ALICE_KEY = bytes.fromhex("7b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13")
BOB_KEY = bytes.fromhex("0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20")

#: Alice offers Pong version 2 or 1 at 60 ticks/s, an 80 ms round trip, 15 ms jitter, 1 % loss.
OFFER_TERMS = SessionTerms(
    formats=(GameFormat("pong", 2, (("tick", "60"),)), GameFormat("pong", 1, (("tick", "60"),))),
    classification="action",
    qos=QosParams(latency_ms=80, jitter_ms=15, loss_ppm=10_000, pps=60),
    receive_kbps=64,
    suites=("chacha20-poly1305", "aes-256-gcm"),
)

#: Bob plays both versions and asks for nothing different: the answer echoes the QoS values.
BOB_SAME = Requirements(formats=(GameFormat("pong", 2), GameFormat("pong", 1)), receive_kbps=64)

#: Bob plays only version 1, is on a link whose round trip is at least 100 ms, sends 30 packets/s and wants
#: 48 kbit/s: the answer relaxes lat and changes pps (a modified answer).
BOB_MODIFIED = Requirements(formats=(GameFormat("pong", 1),), receive_kbps=48, pps=30, best_latency_ms=100)


def example_offer() -> SessionDescription:
    """Alice's offer (the INVITE body)."""
    game = GameMedia(
        terms=OFFER_TERMS, address="198.51.100.10", port=50_000, public_key=ALICE_KEY, session_id=305_419_896
    )
    return game_to_sdp(game, username="alice", sess_id=3_917_264_508, sess_version=1)


def example_answer(modified: bool = False) -> SessionDescription:
    """Bob's answer (the 200 OK body): unchanged, or modified by :data:`BOB_MODIFIED`."""
    offer = example_offer()
    result = answer_offer(game_from_sdp(offer, Role.OFFER).terms, BOB_MODIFIED if modified else BOB_SAME)
    if isinstance(result, Rejected):  # pragma: no cover - the examples are chosen to be accepted
        raise result.error()
    game = GameMedia(
        terms=result.answer, address="203.0.113.20", port=40_000, public_key=BOB_KEY, session_id=2_596_069_104
    )
    return game_to_sdp(
        game, username="bob", sess_id=1_204_381_190, sess_version=1, role=Role.ANSWER, offer=offer
    )


def main() -> None:
    """Print the three example bodies."""
    for title, desc in (
        ("offer", example_offer()),
        ("unchanged answer", example_answer()),
        ("modified answer", example_answer(modified=True)),
    ):
        print(f"--- {title}")
        print(format_sdp(desc).replace("\r\n", "\n"), end="")


if __name__ == "__main__":
    main()
