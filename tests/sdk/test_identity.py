"""Identity-bound channel keys (RFC 8224 / 8225): a transit between the regions that swaps both players'
channel keys is caught by the callee's SDK (438, no session, nothing reserved or billed), and the caller gets a
clear error. Also the verifier's own checks: missing header (428), stale, untrusted signer, wrong addresses."""

from __future__ import annotations

import asyncio
import base64
import re
import sqlite3
import time
from pathlib import Path

import pytest
from tls_regions import TlsRegions, running_tls_regions

from gamesdk import SessionError
from gamesdk.address import Address
from gamesdk.identity import (
    IdentityError,
    IdentitySigner,
    IdentityVerifier,
    channel_key_digest,
    load_pem_chain,
)
from server.certs import make_test_pki

KX = re.compile(rb"a=gsdk-kx:x25519 ([A-Za-z0-9_-]+)")


class Transit(asyncio.DatagramProtocol):
    """One side of a UDP relay between the regions that puts its own key in place of every gsdk-kx key."""

    def __init__(self, target: Address) -> None:
        self.target = target
        self.other: Transit | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.swapped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        def swap(match: re.Match[bytes]) -> bytes:
            self.swapped += 1
            mine = base64.urlsafe_b64encode(b"\x42" * 32).rstrip(b"=")  # same length: Content-Length holds
            return b"a=gsdk-kx:x25519 " + mine[: len(match.group(1))]

        assert self.other is not None and self.other.transport is not None
        self.other.transport.sendto(KX.sub(swap, data), self.other.target)


async def transit_between(regions: TlsRegions) -> tuple[Transit, Transit]:
    """eu <-> transit <-> na: each region's peer entry points at the transit's side facing it."""
    loop = asyncio.get_running_loop()
    facing_eu = Transit(regions.eu.address)
    facing_na = Transit(regions.na.address)
    facing_eu.other, facing_na.other = facing_na, facing_eu
    await loop.create_datagram_endpoint(lambda: facing_eu, local_addr=("127.0.0.1", 0))
    await loop.create_datagram_endpoint(lambda: facing_na, local_addr=("127.0.0.1", 0))
    assert facing_eu.transport is not None and facing_na.transport is not None
    regions.eu.set_peer("na.gamesdk.test", facing_eu.transport.get_extra_info("sockname")[:2])
    regions.na.set_peer("eu.gamesdk.test", facing_na.transport.get_extra_info("sockname")[:2])
    return facing_eu, facing_na


def booked(database: Path) -> tuple[int, int]:
    """(reservations held, billing records) in a region database."""
    with sqlite3.connect(database) as db:
        held = db.execute("SELECT COUNT(*) FROM policy_reservations").fetchone()[0]
        billed = db.execute("SELECT COUNT(*) FROM billing_records").fetchone()[0]
    return held, billed


def test_transit_swapping_both_channel_keys_gets_438_and_no_session(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_tls_regions(tmp_path) as regions:
            facing_eu, _ = await transit_between(regions)
            alice = regions.client("alice")
            bob = regions.client("bob")
            await alice.login()
            await bob.login()
            accepted: list[object] = []

            async def answer() -> None:
                invite = await bob.next_invite()  # never comes: the SDK refuses before the application
                accepted.append(await invite.accept())

            callee = asyncio.create_task(answer())
            with pytest.raises(SessionError) as failure:
                await alice.invite("bob@na.gamesdk.test")
            assert failure.value.status == 438
            assert "Invalid Identity Header" in failure.value.reason
            assert "channel key" in failure.value.reason
            assert facing_eu.swapped >= 1  # the transit did rewrite the offer's key
            await asyncio.sleep(0.2)
            assert not accepted and not callee.done()
            callee.cancel()
            assert bob.agent.stats.get("identity_refused") == 1
            await alice.close()
            await bob.close()
            for region in ("eu", "na"):
                assert booked(tmp_path / f"{region}.sqlite3") == (0, 0), region

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_answer_with_swapped_key_is_refused_by_the_caller(tmp_path: Path) -> None:
    """A transit that leaves the offer alone and swaps only the answer's key: the caller's SDK ends the session
    (ACK, then BYE with cause 438) and reports it; the callee never gets a game channel with the caller."""

    async def scenario() -> None:
        async with running_tls_regions(tmp_path) as regions:
            facing_eu, facing_na = await transit_between(regions)
            facing_eu.datagram_received = _passthrough(facing_eu)  # type: ignore[method-assign]
            alice = regions.client("alice")
            bob = regions.client("bob")
            await alice.login()
            await bob.login()

            async def answer() -> None:
                await (await bob.next_invite()).accept()

            callee = asyncio.create_task(answer())
            with pytest.raises(SessionError) as failure:
                await alice.invite("bob@na.gamesdk.test")
            assert failure.value.status == 438 and "answer identity" in failure.value.reason
            assert facing_na.swapped >= 1
            callee.cancel()
            await alice.close()
            await bob.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def _passthrough(side: Transit) -> object:
    def forward(data: bytes, addr: Address) -> None:
        assert side.other is not None and side.other.transport is not None
        side.other.transport.sendto(data, side.other.target)

    return forward


# -- the verifier on its own -------------------------------------------------------------------------------

SDP = b"v=0\r\nm=application 5 UDP/GSDK gsdk\r\na=gsdk-kx:x25519 QUFBQQ\r\na=gsdk-sid:7\r\n"
ALICE, BOB = "sip:alice@eu.gamesdk.test", "sip:bob@na.gamesdk.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pki")
    make_test_pki(path, ("eu.gamesdk.test", "na.gamesdk.test"))
    return path


def signer(pki: Path, domain: str, at: float) -> IdentitySigner:
    return IdentitySigner.from_pem(domain, (pki / f"{domain}.crt").read_bytes(), (pki / f"{domain}.key").read_bytes(),
                                   lambda: at)


def verifier(ca: Path, at: float) -> IdentityVerifier:
    return IdentityVerifier(load_pem_chain(ca.read_bytes()), lambda: at)


def test_verifier_accepts_the_good_and_names_what_is_wrong(pki: Path, tmp_path: Path) -> None:
    now = time.time()
    header = signer(pki, "eu.gamesdk.test", now).sign(ALICE, BOB, SDP)
    check = verifier(pki / "ca.crt", now)
    check.verify(header, orig=ALICE, dest=BOB, sdp=SDP)

    def reason(header: str | None, **changes: object) -> str:
        args: dict[str, object] = {"orig": ALICE, "dest": BOB, "sdp": SDP, **changes}
        verifying = changes.pop("verifier", check)
        args.pop("verifier", None)
        with pytest.raises(IdentityError) as failure:
            verifying.verify(header, **args)  # type: ignore[attr-defined]
        return f"{failure.value.status} {failure.value.reason}"

    assert reason(None).startswith("428")
    assert "channel key" in reason(header, sdp=SDP.replace(b"QUFBQQ", b"QkJCQg"))
    assert "channel key" in reason(header, sdp=SDP.replace(b"gsdk-sid:7", b"gsdk-sid:8"))
    assert "dest" in reason(header, dest="sip:carol@na.gamesdk.test")
    # signed by na for an eu address: na's certificate is not eu's
    forged = signer(pki, "na.gamesdk.test", now).sign(ALICE, BOB, SDP)
    assert "not trusted for eu.gamesdk.test" in reason(forged)
    assert "stale" in reason(header, verifier=verifier(pki / "ca.crt", now + 120))
    other = tmp_path / "other"
    make_test_pki(other, ("eu.gamesdk.test",))
    assert "not trusted" in reason(header, verifier=verifier(other / "ca.crt", now))
    token, _, params = header.partition(";")
    head, payload, sig = token.split(".")
    tampered = f"{head}.{payload[:-4]}AAAA.{sig};{params}"
    assert reason(tampered).startswith("438")
    assert channel_key_digest(b"v=0\r\n") is None
