"""An invitation's life from the callee's side: withdrawn, answered late, its reservation, an unknown class."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from regions import Regions, running_regions

from gamesdk import GameSession, InvitationWithdrawn, SessionError
from gamesdk.events import InviteCancelled, ReservationConfirmed


def run(tmp_path: Path, scenario: Any, timeout_s: float = 20.0) -> None:
    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            await scenario(regions)

    asyncio.run(asyncio.wait_for(main(), timeout_s))


def test_a_withdrawn_invitation_says_so_and_is_not_handed_out(tmp_path: Path) -> None:
    async def scenario(regions: Regions) -> None:
        alice, bob = regions.client("alice"), regions.client("bob")
        await alice.login()
        await bob.login()
        # the first invitation: alice gives up while bob is still deciding
        waiting = asyncio.create_task(bob.next_invite())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(alice.invite("bob@na.gamesdk.test"), 0.5)
        invite = await asyncio.wait_for(waiting, 2.0)
        cancelled = await asyncio.wait_for(invite.wait_withdrawn(), 3.0)
        assert isinstance(cancelled, InviteCancelled) and cancelled.call_id == invite.call_id
        with pytest.raises(InvitationWithdrawn) as caught:
            await invite.accept()
        assert caught.value.status == 487 and "withdrawn" in caught.value.reason
        await invite.decline()  # declining what is gone is harmless
        # the second: withdrawn while still queued; next_invite() skips it for the third
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(alice.invite("bob@na.gamesdk.test"), 0.3)
        for _ in range(100):  # bounded: until bob's SDK heard the CANCEL (about 2 s at most)
            if sum(isinstance(e, InviteCancelled) for e in bob.history) == 2:
                break
            await asyncio.sleep(0.02)
        third = asyncio.create_task(alice.invite("bob@na.gamesdk.test"))
        fresh = await asyncio.wait_for(bob.next_invite(), 3.0)
        assert fresh.withdrawn is None
        bobs = await fresh.accept()
        session = await third
        assert session.call_id == bobs.call_id
        await session.end()
        await alice.close()
        await bob.close()

    run(tmp_path, scenario)


def test_the_callee_learns_its_own_regions_reservation(tmp_path: Path) -> None:
    async def scenario(regions: Regions) -> None:
        alice, bob = regions.client("alice"), regions.client("bob")
        await alice.login()
        await bob.login()

        async def answer() -> GameSession:
            return await (await bob.next_invite()).accept()

        callee = asyncio.create_task(answer())
        session = await alice.invite("bob@na.gamesdk.test", bandwidth_kbps=64)
        bobs = await callee
        assert {r.region for r in session.agreement.reservations} == {"eu.gamesdk.test", "na.gamesdk.test"}

        async def confirmed() -> ReservationConfirmed:
            while not isinstance(event := await bobs.next_event(), ReservationConfirmed):
                pass
            return event

        event = await asyncio.wait_for(confirmed(), 5.0)
        (own,) = event.reservations
        assert own.region == "na.gamesdk.test" and own.network and own.up_kbps > 0 and own.down_kbps > 0
        assert bobs.agreement.reservations == (own,)
        # what na reported to bob is what it reported on the 2xx to alice
        (seen_by_alice,) = [r for r in session.agreement.reservations if r.region == "na.gamesdk.test"]
        assert (seen_by_alice.network, seen_by_alice.up_kbps, seen_by_alice.down_kbps) == (
            own.network, own.up_kbps, own.down_kbps)
        await session.end()
        await alice.close()
        await bob.close()

    run(tmp_path, scenario)


def test_an_unknown_classification_is_refused_with_its_reason(tmp_path: Path) -> None:
    async def scenario(regions: Regions) -> None:
        alice, bob = regions.client("alice"), regions.client("bob")
        await alice.login()
        await bob.login()
        with pytest.raises(SessionError) as caught:
            await alice.invite("bob@na.gamesdk.test", classification="moba")
        assert caught.value.status == 580 and caught.value.refused_by.startswith("policy:")
        assert "unknown game classification 'moba'" in caught.value.reason
        assert "action" in caught.value.reason  # and what the region does serve
        assert not [e for e in bob.history if type(e).__name__ == "InviteReceived"]
        await alice.close()
        await bob.close()

    run(tmp_path, scenario)
