"""The seeded network simulator: deterministic, and its rates close to the configured ones."""

from __future__ import annotations

import itertools

import pytest

from gamesdk.channel.simulator import NetworkSimulator, SimulatorConfig, SplitMix64
from gamesdk.errors import LocalProtocolError

ADDR = ("127.0.0.1", 9)


def _run(config: SimulatorConfig, n: int = 20000) -> tuple[NetworkSimulator, list[bytes], list[float]]:
    sim = NetworkSimulator(config)
    for i in range(n):
        sim.submit(i.to_bytes(4, "big"), ADDR, now=i * 0.001)
    out: list[bytes] = []
    times: list[float] = []
    t = 0.0
    while (nxt := sim.next_time()) is not None:
        t = max(t, nxt)
        got = sim.due(t)
        out.extend(d for d, _ in got)
        times.extend([t] * len(got))
    return sim, out, times


def test_splitmix64_reference_values() -> None:
    # SplitMix64 with seed 0; reference from the published C implementation (Vigna)
    rng = SplitMix64(0)
    assert [rng.next_u64() for _ in range(3)] == [
        0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F,
    ]  # fmt: skip


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    cfg = SimulatorConfig(latency_s=0.01, jitter_s=0.005, loss=0.1, duplicate=0.05, reorder=0.1, seed=42)
    assert _run(cfg, 2000)[1] == _run(cfg, 2000)[1]
    other = SimulatorConfig(latency_s=0.01, jitter_s=0.005, loss=0.1, duplicate=0.05, reorder=0.1, seed=43)
    assert _run(cfg, 2000)[1] != _run(other, 2000)[1]


def test_rates_match_configuration() -> None:
    sim, out, _ = _run(SimulatorConfig(loss=0.2, duplicate=0.1, seed=3))
    assert sim.dropped / sim.submitted == pytest.approx(0.2, abs=0.01)
    assert sim.duplicated / (sim.submitted - sim.dropped) == pytest.approx(0.1, abs=0.01)
    assert len(out) == sim.submitted - sim.dropped + sim.duplicated == sim.delivered


def test_latency_jitter_and_reorder() -> None:
    n = 5000
    _, out, times = _run(SimulatorConfig(latency_s=0.05, seed=1), n)
    assert out == [i.to_bytes(4, "big") for i in range(n)]  # no jitter: order kept
    assert all(t == pytest.approx(int.from_bytes(d, "big") * 0.001 + 0.05) for d, t in zip(out, times))
    _, out, _ = _run(SimulatorConfig(reorder=0.1, reorder_delay_s=0.01, seed=1), n)
    seqs = [int.from_bytes(d, "big") for d in out]
    assert sorted(seqs) == list(range(n)) and seqs != list(range(n))
    overtaken = sum(1 for a, b in itertools.pairwise(seqs) if b < a)
    assert 0.05 * n < overtaken < 0.15 * n


def test_bad_probability_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="loss"):
        SimulatorConfig(loss=1.5)
    with pytest.raises(LocalProtocolError, match="latency_s"):
        SimulatorConfig(latency_s=-1)
