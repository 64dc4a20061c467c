"""One parser and one matcher for the ``[[access_networks]]`` prefixes (server/prefixes.py): the SIP side's location
service and the policy's admission name the same network for every address."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.config import AccessNetworkRef, ConfigError
from server.location import AccessNetworkMap
from server.policy import PolicyConfig
from server.prefixes import PrefixError, PrefixMatcher, parse_prefixes

NETWORKS = [
    {"name": "eu-dsl", "prefixes": ["10.1.0.0/16"], "uplink_kbps": 1000, "downlink_kbps": 1000},
    {"name": "eu-fibre", "prefixes": ["10.0.0.0/8", "fd00:2::/32"], "uplink_kbps": 1000, "downlink_kbps": 1000},
    {"name": "eu-lab", "prefixes": ["10.1.5.0/24", "fd00:2:5::/48"], "uplink_kbps": 1000, "downlink_kbps": 1000},
    {"name": "catch-all", "prefixes": ["0.0.0.0/0"], "uplink_kbps": 1000, "downlink_kbps": 1000},
]
POLICY = PolicyConfig.from_mapping({"access_networks": NETWORKS})
LOCATION = AccessNetworkMap([AccessNetworkRef(n["name"], parse_prefixes(n["prefixes"]))  # type: ignore[arg-type]
                             for n in NETWORKS])


def _both(address: str) -> tuple[str | None, str | None]:
    found = POLICY.network_for_address(address)
    return LOCATION.lookup(address), found.name if found else None


@pytest.mark.parametrize(("address", "network"), [
    ("10.1.5.9", "eu-lab"), ("10.1.6.9", "eu-dsl"), ("10.2.0.1", "eu-fibre"), ("192.0.2.1", "catch-all"),
    ("fd00:2:5::1", "eu-lab"), ("fd00:2:6::1", "eu-fibre"), ("2001:db8::1", None), ("not an address", None),
    ("[fd00:2:5::1]", "eu-lab"),  # an IPv6 address as written in a URI or Via: the location service missed it
])
def test_the_sip_side_and_the_policy_name_the_same_network(address: str, network: str | None) -> None:
    assert _both(address) == (network, network)


@given(st.ip_addresses())
def test_they_agree_on_every_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    location, policy = _both(str(address))
    assert location == policy


def test_one_parser_names_the_bad_entry() -> None:
    with pytest.raises(PrefixError) as caught:
        parse_prefixes(["10.0.0.0/8", "10.1.2.3/16"])
    assert caught.value.key == "prefixes[1]" and "host bits" in caught.value.message
    for bad, key in ((None, "prefixes"), ([], "prefixes"), ("10.0.0.0/8", "prefixes"), ([7], "prefixes[0]")):
        with pytest.raises(PrefixError) as caught:
            parse_prefixes(bad)
        assert caught.value.key == key
    with pytest.raises(ConfigError) as config_error:
        PolicyConfig.from_mapping({"access_networks": [{**NETWORKS[0], "prefixes": ["ten"]}]})
    assert config_error.value.key == "access_networks[0].prefixes[0]"


def test_the_matcher_cache_stays_bounded() -> None:
    matcher: PrefixMatcher[str] = PrefixMatcher([(ipaddress.ip_network("10.0.0.0/8"), "net")])
    for n in range(10_000):
        matcher.lookup(f"10.{n % 256}.{n // 256}.1")
    assert len(matcher._cache) <= 4096
