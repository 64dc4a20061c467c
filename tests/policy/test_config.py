"""Config parsing: valid tables, defaults, longest-prefix lookup, and every error naming its key."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from server.policy import ConfigError, PolicyConfig


@pytest.fixture
def parse(region_doc: dict[str, Any]) -> Any:
    def parse(mutate: Any = None) -> PolicyConfig:
        if mutate is not None:
            mutate(region_doc)
        return PolicyConfig.from_mapping(region_doc)

    return parse


def test_parses_networks_classes_tariff(parse: Any) -> None:
    cfg = parse()
    assert [n.name for n in cfg.networks] == ["eu-dsl", "eu-fibre", "eu-lab"]
    dsl = cfg.networks[0]
    assert (dsl.uplink_kbps, dsl.downlink_kbps, dsl.rtt_ms, dsl.jitter_ms, dsl.loss_ppm, dsl.max_sessions) == (
        1000, 4000, 20, 5, 1000, 3,
    )
    assert cfg.default_class == "casual"
    assert cfg.qos_class("action").max_share == 0.5
    assert cfg.qos_class("no-such-class").name == "casual"
    assert cfg.qos_class(None).name == "casual"
    assert cfg.tariff.for_class("action").per_kbps_minute == Decimal("0.0001")
    assert cfg.settings.confirm_timeout_s == 32


def test_empty_config_gets_working_defaults() -> None:
    cfg = PolicyConfig.from_mapping({})
    assert cfg.networks == ()
    assert [c.name for c in cfg.classes] == ["default"]
    assert cfg.settings.url is None
    assert cfg.settings.timeout_s == 2.0
    assert cfg.tariff.for_class("default").per_minute == 0.0


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("10.1.2.3", "eu-dsl"),
        ("10.2.9.9", "eu-fibre"),
        ("10.2.5.9", "eu-lab"),  # inside both 10.2.0.0/16 and 10.2.5.0/24: the longer prefix wins
        ("fd00:2::1", "eu-fibre"),
        ("[fd00:2::1]", "eu-fibre"),
        ("192.0.2.1", None),
        ("not-an-ip", None),
    ],
)
def test_longest_prefix_lookup(address: str, network: str | None, parse: Any) -> None:
    found = parse().network_for_address(address)
    assert (found.name if found else None) == network


def _set(path: str, value: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        parts = path.split(".")
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        last = parts[-1]
        if value is _DELETE:
            del target[last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return mutate


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "key", "words"),
    [
        ("access_networks.0.uplink_kbps", -5, "access_networks[0].uplink_kbps", ">= 1"),
        ("access_networks.0.uplink_kbps", "fast", "access_networks[0].uplink_kbps", "integer"),
        ("access_networks.0.uplink_kbps", True, "access_networks[0].uplink_kbps", "integer"),
        ("access_networks.0.downlink_kbps", _DELETE, "access_networks[0].downlink_kbps", "required"),
        ("access_networks.1.name", "eu-dsl", "access_networks[1].name", "duplicate"),
        ("access_networks.1.name", "bad name!", "access_networks[1].name", "letters"),
        ("access_networks.0.prefixes", [], "access_networks[0].prefixes", "at least one"),
        ("access_networks.0.prefixes", ["10.1.2.3/16"], "access_networks[0].prefixes[0]", "host bits"),
        ("access_networks.0.prefixes", ["ten"], "access_networks[0].prefixes[0]", "not an IP prefix"),
        ("access_networks.2.prefixes", ["10.1.0.0/16"], "access_networks[2].prefixes[0]", "already a prefix"),
        ("access_networks.0.uplink_kpbs", 5, "access_networks[0].uplink_kpbs", "unknown key"),
        ("access_networks.0.max_sessions", 0, "access_networks[0].max_sessions", ">= 1"),
        ("access_networks", {"name": "x"}, "access_networks", "array"),
        ("classes.1.max_share", 1.5, "classes[1].max_share", "fraction"),
        ("classes.1.max_share", 0, "classes[1].max_share", "fraction"),
        ("classes.1.priority", "high", "classes[1].priority", "integer"),
        ("classes.1.default", True, "classes[1].default", "only one class"),
        ("classes.1.name", "casual", "classes[1].name", "duplicate"),
        ("tariff.currency", "euro", "tariff.currency", "3-letter"),
        ("tariff.ranked", {"per_minute": 1}, "tariff.ranked", "no class named"),
        ("tariff.action", {"per_minute": -1}, "tariff.action.per_minute", ">= 0"),
        ("tariff.action", {"per_hour": 1}, "tariff.action.per_hour", "unknown key"),
        ("policy.url", "ftp://x", "policy.url", "http://"),
        ("policy.listen", "nowhere", "policy.listen", "host:port"),
        ("policy.token", "short", "policy.token", "16 to 512 printable"),
        ("policy.token", "has a space in the middle", "policy.token", "without spaces"),
        ("policy.timeout_s", 0, "policy.timeout_s", "> 0"),
        ("policy.default_class", "ranked", "policy.default_class", "not a configured class"),
        ("policy.min_expires_s", 120, "policy.default_expires_s", "between"),
        ("policy.max_expires_s", 10, "policy.max_expires_s", "min_expires_s"),
        ("policy.lease_slack", 1, "policy.lease_slack", "unknown key"),
    ],
)
def test_config_errors_name_their_key(path: str, value: Any, key: str, words: str, parse: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse(_set(path, value))
    assert info.value.key == key
    assert words in info.value.message
    assert str(info.value).startswith(key + ": ")


def test_policy_url_and_listen(parse: Any) -> None:
    cfg = parse(_set("policy.url", "http://127.0.0.1:7080/"))
    assert cfg.settings.url == "http://127.0.0.1:7080"
    assert cfg.settings.listen_host_port == ("127.0.0.1", 7080)
    assert cfg.settings.token == "policy-test-token-0123456789"


def test_policy_url_needs_the_token(region_doc: dict[str, Any]) -> None:
    region_doc["policy"]["url"] = "http://127.0.0.1:7080"
    del region_doc["policy"]["token"]
    with pytest.raises(ConfigError) as info:
        PolicyConfig.from_mapping(region_doc)
    assert info.value.key == "policy.token" and "required with policy.url" in info.value.message


def test_default_class_from_policy_table_wins(parse: Any) -> None:
    cfg = parse(_set("policy.default_class", "action"))
    assert cfg.default_class == "action"
    assert cfg.qos_class("unknown").name == "action"


def test_unknown_classifications_are_known_only_by_explicit_rule(parse: Any) -> None:
    cfg = parse()
    assert cfg.known_class("no-such-class") is None  # refused by admission, never defaulted
    assert cfg.known_class(None) is not None and cfg.known_class(None).name == "casual"

    def alias(doc: dict[str, Any]) -> None:
        doc["classes"][0]["aliases"] = ["moba", "fps"]

    aliased = parse(alias)
    first = aliased.classes[0]
    assert aliased.known_class("moba") is first and aliased.known_class("fps") is first
    # a region file without [[classes]] serves every game in its one class, as documented
    assert PolicyConfig.from_mapping({}).known_class("moba") is not None


def test_an_alias_may_not_shadow_a_class(region_doc: dict[str, Any]) -> None:
    region_doc["classes"][0]["aliases"] = [region_doc["classes"][1]["name"]]
    with pytest.raises(ConfigError) as caught:
        PolicyConfig.from_mapping(region_doc)
    assert "aliases" in str(caught.value)
