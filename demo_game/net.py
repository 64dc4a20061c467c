"""demo_game/net: ``GamesdkLink`` maps the SDK to the game's ``GameLink`` (with local.py, the only gamesdk user).

A link drives one ``gamesdk.PollingClient``: it logs in, invites (the host) or accepts (the guest), reports each
setup step as it happens, and then carries the game's messages over the encrypted channel. Networked mode
(``--server udp:HOST:PORT ...``) builds one link against real regional servers.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import gamesdk
import gamesdk.events
from demo_game import settings
from demo_game.link import (
    GameLink,
    LinkClosed,
    LinkEvent,
    LinkStats,
    MessageReceived,
    PeerDisconnected,
    PeerInterrupted,
    PeerResumed,
    PlayerInfo,
    QosBudget,
    Reservation,
    SessionFailed,
    SessionInfo,
    SessionReady,
    SetupStep,
)

__all__ = ["GamesdkLink", "InviteRequest", "invite_request_from_args", "setup_networked_session"]


@dataclass(frozen=True, slots=True)
class InviteRequest:
    """What the host asks for in its INVITE (the ``a=gsdk-*`` lines)."""

    peer: str
    format: str
    classification: str
    latency_ms: int
    jitter_ms: int
    loss_ppm: int
    pps: int
    bandwidth_kbps: int

    def describe(self) -> str:
        return (
            f"a=gsdk-format:{self.format} a=gsdk-class:{self.classification} "
            f"a=gsdk-qos:lat={self.latency_ms};jit={self.jitter_ms};loss={self.loss_ppm};pps={self.pps} "
            f"b=AS:{self.bandwidth_kbps}"
        )


def invite_request_from_args(args: argparse.Namespace, peer: str) -> InviteRequest:
    fmt = args.format if ";" in args.format else f"{args.format};tick={settings.TICK_HZ}"
    return InviteRequest(
        peer=peer,
        format=fmt,
        classification=args.classification,
        latency_ms=max(1, round(args.latency_ms)),
        jitter_ms=max(0, round(args.jitter_ms)),
        loss_ppm=args.loss_ppm,
        pps=settings.TICK_HZ,
        bandwidth_kbps=RECEIVE_KBPS,
    )


#: b=AS of the offer: what each side receives. The host's 60 Hz snapshots take about 72 kbit/s on the wire;
#: 96 leaves room for retransmitted inputs and score events.
RECEIVE_KBPS = 96
#: How long ``shutdown`` waits at most for the hang-up and the logout to be answered: the channel's linger (1 s)
#: plus the SDK's bounded wait for the ``terminated`` PUBLISH before it logs out (4 s), plus a margin.
SHUTDOWN_WAIT_S = 6.0


def _local_ip_towards(host: str, port: int) -> str:
    """The address this machine sends from towards ``host`` (a connected UDP socket sends nothing)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        return str(probe.getsockname()[0])


def _region(aor: str) -> str:
    """``sip:alice@eu.gamesdk.test`` -> ``eu``."""
    domain = aor.split("@", 1)[-1]
    return domain.split(".", 1)[0]


def _name(aor: str) -> str:
    return aor.removeprefix("sip:")


@dataclass
class GamesdkLink:
    """A ``GameLink`` over a real gamesdk session (see the module docstring).

    Args:
        client: a ``PollingClient`` not yet logged in.
        invite: what to ask for, on the host; None on the guest, which accepts the first invitation as offered.
        may_invite: the host waits until this says yes (in the local demo: until the guest has logged in).
    """

    client: gamesdk.PollingClient
    invite: InviteRequest | None = None
    may_invite: Callable[[], bool] = lambda: True
    #: Accept the invitations our regional server asks for (a web invite: SIP REFER from the registrar).
    accept_web_invites: bool = False
    registered: bool = False
    _call_id: str | None = None
    _session: gamesdk.PollingSession | None = None
    _info: SessionInfo | None = None
    _ready: bool = False
    _done: bool = False
    _started: bool = False
    _events: list[LinkEvent] = field(default_factory=list)

    @property
    def me(self) -> str:
        return _name(self.client.agent.aor)

    # -- GameLink
    def poll(self, now: float) -> list[LinkEvent]:
        out, self._events = self._events, []
        if not self._started:
            self._started = True
            self.client.login(now)
            out.append(SetupStep(text=f"{self.me}: REGISTER to its regional server {self.client.agent.config.server[0]}:"
                                        f"{self.client.agent.config.server[1]} (digest authentication)"))
        for event in self.client.poll(now):
            out.extend(self._signalling(event, now))
        if self.invite is not None and self.registered and self._call_id is None and self.may_invite():
            out.append(self._send_invite(now))
        if self._session is not None and not self._done:
            for ch_event in self._session.poll(now):
                out.extend(self._channel(ch_event))
        return out

    def send_state(self, data: bytes) -> None:
        self._live().send(data, gamesdk.Lane.SEQUENCED)

    def send_reliable(self, data: bytes) -> None:
        self._live().send(data, gamesdk.Lane.RELIABLE)

    def flush(self, now: float) -> None:
        if self._session is not None and not self._done:
            self._session.flush(now)

    def stats(self) -> LinkStats:
        if self._session is None:
            return LinkStats()
        s = self._session.stats
        return LinkStats(
            rtt_ms=s.rtt_ms,
            rtt_min_ms=s.rtt_min_ms,
            rtt_max_ms=s.rtt_max_ms,
            jitter_ms=s.jitter_ms,
            loss_out_ppm=int(s.loss_out * 1_000_000),
            loss_in_ppm=int(s.loss_in * 1_000_000),
            kbps_in=s.kbps_in,
            kbps_out=s.kbps_out,
            packets_in=s.packets_in,
            packets_out=s.packets_out,
        )

    def session_info(self) -> SessionInfo | None:
        return self._info

    def close(self, reason: str = "quit") -> None:
        if self._session is not None and not self._done:
            self._done = True
            self._session.end(time.monotonic(), reason)

    def shutdown(self, now: float) -> None:
        """Log out and release the sockets (after ``close``).

        The region bills the match by how it ended only if it hears the ``terminated`` PUBLISH before the logout
        (a registration that ends first ends the reservation as ``reg-expired``): a session still lingering sends
        its BYE first, and the client is polled until the logout is answered (the SDK holds the logout's REGISTER
        until the ``terminated`` PUBLISH is answered), at most SHUTDOWN_WAIT_S.
        """
        deadline = now + SHUTDOWN_WAIT_S
        # The channel's linger: the peer acknowledges the last messages, then the BYE.
        now = self._poll_while(lambda: self._session is not None and self._session.closing, now, deadline)
        if self.registered:
            self.client.logout(now)
            self.registered = False
            now = self._poll_while(lambda: self.client.agent.registered, now, deadline)
        self.client.close(now)

    def _poll_while(self, waiting: Callable[[], bool], now: float, deadline: float) -> float:
        """Poll the client every 10 ms while ``waiting()`` holds, until ``deadline``; returns the time then."""
        while waiting() and now < deadline:
            self.client.poll(now)
            time.sleep(0.01)
            now = time.monotonic()
        return now

    # -- mapping
    def _live(self) -> gamesdk.PollingSession:
        if self._session is None or self._done or not self._ready:
            raise LinkClosed("the session is not established")
        return self._session

    def _send_invite(self, now: float) -> SetupStep:
        req = self.invite
        assert req is not None
        self._call_id = self.client.invite(
            req.peer, now, format=req.format, classification=req.classification, latency_ms=req.latency_ms,
            jitter_ms=req.jitter_ms, loss_ppm=req.loss_ppm, pps=req.pps, bandwidth_kbps=req.bandwidth_kbps,
        )
        return SetupStep(text=f"{self.me}: INVITE {req.peer} via its server, SDP offer {req.describe()} "
                              f"a=gsdk-sec:chacha20-poly1305,aes-256-gcm a=gsdk-kx:x25519 <fresh key>")

    def _signalling(self, event: gamesdk.events.SessionEvent, now: float) -> list[LinkEvent]:
        if isinstance(event, gamesdk.events.Registered):
            self.registered = True
            return [SetupStep(text=f"{self.me}: logged in (200 OK to REGISTER, {event.expires_s} s)")]
        if isinstance(event, gamesdk.events.RegistrationFailed):
            return [SessionFailed(status=event.status, reason=f"{self.me} could not log in: {event.reason}")]
        if isinstance(event, gamesdk.events.Ringing):
            return [SetupStep(text=f"{self.me}: 180 Ringing: the opponent's SDK is answering")]
        if isinstance(event, gamesdk.events.InviteRequested):
            if not self.accept_web_invites or self._call_id is not None:
                self.client.decline_invite_request(event.refer_id, now, "Busy")
                return [SetupStep(text=f"{self.me}: declined a web invite of {event.peer} (busy)")]
            self._call_id = self.client.accept_invite_request(event.refer_id, now)
            req = event.requirements
            return [SetupStep(text=f"{self.me}: the web page asks to invite {event.peer} (REFER from the regional "
                                   f"server, {req.get('format')}, lat<={req.get('latency_ms')} ms, "
                                   f"{req.get('bandwidth_kbps')} kbit/s): INVITE sent from this client")]
        if isinstance(event, gamesdk.events.InviteReceived):
            offer = event.offer
            self._call_id = event.call_id
            self.client.accept(event.call_id, now)
            return [SetupStep(text=f"{self.me}: invitation from {_name(event.caller)} for {offer.formats[0]} "
                                   f"class {offer.classification}, lat<={offer.qos.latency_ms} ms: 200 OK with the "
                                   f"answer (accepted as offered)")]
        if isinstance(event, gamesdk.events.SessionEstablished):
            return self._established(event)
        if isinstance(event, gamesdk.events.SessionFailed):
            self._done = True
            return [SessionFailed(status=event.status, reason=f"{event.reason} (refused by {event.refused_by})")]
        if isinstance(event, gamesdk.events.InviteCancelled):
            self._done = True
            return [SessionFailed(status=487, reason=event.reason)]
        if isinstance(event, gamesdk.events.SessionEnded):
            self._done = True
            if event.by_peer:
                return [PeerDisconnected(reason=event.reason)]
        return []

    def _established(self, event: gamesdk.events.SessionEstablished) -> list[LinkEvent]:
        a = event.agreement
        self._session = self.client.sessions.get(event.call_id)
        host, guest = (a.local, a.peer) if a.is_caller else (a.peer, a.local)
        by_region = {r.region.split(".", 1)[0]: r for r in a.reservations}

        def player(aor: str) -> PlayerInfo:
            region = _region(aor)
            r = by_region.get(region)
            reservation = None if r is None else Reservation(
                region=region, access_network=r.network, up_kbps=r.up_kbps, down_kbps=r.down_kbps)
            return PlayerInfo(name=_name(aor), region=region, reservation=reservation)

        self._info = SessionInfo(
            call_id=a.call_id,
            players=(player(host), player(guest)),
            local_side=0 if a.is_caller else 1,
            game_format=str(a.format),
            classification=a.classification,
            budget=QosBudget(latency_ms=a.qos.latency_ms, jitter_ms=a.qos.jitter_ms, loss_ppm=a.qos.loss_ppm,
                             packets_per_s=a.qos.pps),
            security_suite=a.suite,
        )
        steps: list[LinkEvent] = []
        if a.is_caller:
            reserved = "; ".join(
                f"{r.region} reserved {r.up_kbps} up / {r.down_kbps} down kbit/s in {r.network}" for r in a.reservations
            ) or "no reservation reported"
            steps.append(SetupStep(text=f"{self.me}: 200 OK from {_name(a.peer)}; policy: {reserved}"))
            steps.append(SetupStep(text=f"{self.me}: answer within bounds (lat {a.qos.latency_ms} ms"
                                        f"{', modified by the callee' if a.modified else ''}); ACK sent directly "
                                        f"to {_name(a.peer)}, not via a server"))
        else:
            steps.append(SetupStep(text=f"{self.me}: ACK received directly from {_name(a.peer)}: session established"))
        steps.append(SetupStep(text=f"{self.me}: PUBLISH dialog 'confirmed' to its server (reservation kept, "
                                    f"billing START); channel to {a.peer_addr[0]}:{a.peer_addr[1]} with {a.suite}"))
        return steps

    def _channel(self, event: gamesdk.events.ChannelEvent) -> list[LinkEvent]:
        if isinstance(event, gamesdk.events.ChannelEstablished):
            self._ready = True
            assert self._info is not None
            return [SetupStep(text=f"{self.me}: channel keys confirmed (X25519 from the SDP, {self._info.security_suite})"),
                    SessionReady(info=self._info)]
        if isinstance(event, gamesdk.events.MessageReceived):
            from demo_game.link import Lane as GameLane

            lane = GameLane.STATE if event.lane == gamesdk.Lane.SEQUENCED else GameLane.RELIABLE
            return [MessageReceived(lane=lane, data=event.data)]
        if isinstance(event, gamesdk.events.Interrupted):
            return [PeerInterrupted()]
        if isinstance(event, gamesdk.events.Resumed):
            return [PeerResumed()]
        if isinstance(event, (gamesdk.events.Disconnected, gamesdk.events.ChannelClosed)) and not self._done:
            self._done = True
            return [PeerDisconnected(reason=event.reason)]
        if isinstance(event, gamesdk.events.SecurityError):
            self._done = True
            return [SessionFailed(status=0, reason=f"channel security error: {event.reason}")]
        return []


@dataclass
class NetworkedSession:
    """A ``SessionHandle`` for one player against real regional servers."""

    host_link: GameLink | None
    guest_link: GameLink | None
    link: GamesdkLink

    def pump(self, now: float) -> None:
        """The link polls its own client; nothing else runs in this process."""

    def finish(self, out: TextIO) -> None:
        self.link.close("quit")
        self.link.shutdown(time.monotonic())
        out.write("billing: the records are on the regional servers (gamesdk-server billing list --config ...)\n")


def setup_networked_session(args: argparse.Namespace, out: TextIO) -> NetworkedSession | None:
    """``--server udp:HOST:PORT --user NAME@DOMAIN --password PW (--invite NAME@DOMAIN | --wait)``.

    Returns None, after saying why on ``out``, when the options cannot work.
    """
    user, _, domain = args.user.partition("@")
    if not domain:
        out.write("--user must be NAME@DOMAIN (your region's domain, e.g. alice@eu.gamesdk.test)\n")
        return None
    try:
        config = gamesdk.ClientConfig(username=user, password=args.password, domain=domain, server=args.server,
                                      ca=getattr(args, "ca", None), relay_only=getattr(args, "relay_only", False))
    except gamesdk.LocalProtocolError as exc:
        out.write(f"{exc}\n")
        return None
    host, port = config.server_address
    client = gamesdk.PollingClient(config, bind=(_local_ip_towards(host, port), 0))
    if args.invite:
        link = GamesdkLink(client, invite=invite_request_from_args(args, args.invite))
        return NetworkedSession(host_link=link, guest_link=None, link=link)
    link = GamesdkLink(client)
    return NetworkedSession(host_link=None, guest_link=link, link=link)

