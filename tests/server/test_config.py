"""Config: the examples load, relative paths follow the file, and every error names its key."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
from server_kit import EXAMPLES

from server.config import ConfigError, ServerConfig, load_config, parse_address


def example_doc() -> dict[str, Any]:
    return tomllib.loads((EXAMPLES / "eu.toml").read_text())


def test_examples_load_and_federate() -> None:
    eu = load_config(EXAMPLES / "eu.toml")
    na = load_config(EXAMPLES / "na.toml")
    assert (eu.domain, na.domain) == ("eu.gamesdk.test", "na.gamesdk.test")
    assert eu.peer_for_domain("na.gamesdk.test").address == na.listen  # type: ignore[union-attr]
    assert na.peer_for_domain("eu.gamesdk.test").address == eu.listen  # type: ignore[union-attr]
    assert eu.database == EXAMPLES / "eu.sqlite3"
    assert [n.name for n in eu.access_networks] == ["eu-fiber", "eu-dsl"]
    assert eu.access_networks_raw[0]["uplink_kbps"] == 100000  # kept raw for the policy parser
    assert eu.auth.digest_algorithms == ("SHA-256",) and eu.auth.realm == "eu.gamesdk.test"


def test_relative_database_follows_the_config_file(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    (sub / "r.toml").write_text('[region]\nname = "r"\ndomain = "r.test"\ndatabase = "data/r.db"\n')
    config = load_config(sub / "r.toml")
    assert config.database == sub / "data" / "r.db"
    assert config.listen.addr == ("127.0.0.1", 5060)  # defaults so a minimal file runs


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.replace("]", "").replace("[", ".").split(".")
    node: Any = doc
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if value is _DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


_DELETE = object()

CASES = [
    ("region.name", _DELETE, "region.name"),
    ("region.domain", "not a domain!", "region.domain"),
    ("region.listen", "tcp:127.0.0.1:5060", "region.listen"),
    ("region.listen", "udp:localhost:5060", "region.listen"),
    ("region.listen", "udp:127.0.0.1:99999", "region.listen"),
    ("region.listen", 5060, "region.listen"),
    ("region.database", 7, "region.database"),
    ("region.colour", "blue", "region.colour"),
    ("peers[0].address", "udp:127.0.0.1", "peers[0].address"),
    ("peers[0].domain", "eu.gamesdk.test", "peers[0].domain"),
    ("access_networks[1].prefixes", ["10.0.0.0/33"], "access_networks[1].prefixes[0]"),
    ("access_networks[1].prefixes", [], "access_networks[1].prefixes"),
    ("access_networks[1].name", "eu-fiber", "access_networks[1].name"),
    ("auth.digest_algorithms", ["SHA-1"], "auth.digest_algorithms[0]"),
    ("auth.digest_algorithms", ["MD5", "md5"], "auth.digest_algorithms[1]"),
    ("auth.nonce_lifetime_s", "long", "auth.nonce_lifetime_s"),
    ("registrar.min_expires_s", 0, "registrar.min_expires_s"),
    ("registrar.max_expires_s", 30, "registrar.max_expires_s"),
    ("limits.max_message_bytes", 100_000, "limits.max_message_bytes"),
    ("timers.t1_s", -1, "timers.t1_s"),
    ("log.level", "LOUD", "log.level"),
    ("federation.options_interval_s", True, "federation.options_interval_s"),
    ("peers", "na", "peers"),
    ("surprise", 1, "surprise"),
]


@pytest.mark.parametrize(("path", "value", "key"), CASES, ids=[c[0] + "=" + repr(c[1])[:20] for c in CASES])
def test_every_error_names_its_key(path: str, value: Any, key: str) -> None:
    doc = copy.deepcopy(example_doc())
    _set(doc, path, value)
    with pytest.raises(ConfigError) as info:
        ServerConfig.from_mapping(doc, Path("/tmp"))
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_missing_region_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig.from_mapping({})
    assert info.value.key == "region"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[region\nname=")
    with pytest.raises(ConfigError, match="not valid TOML") as bad:
        load_config(tmp_path / "bad.toml")
    assert bad.value.key == "file"


@pytest.mark.parametrize("port", ["\u00b2", "\u0663", "99999999999999999999", "5o60"])
def test_address_port_must_be_ascii_digits_in_range(port: str) -> None:
    # '\u00b2' passes str.isdigit but int() refuses it; each of these must be the usual ConfigError naming the key.
    with pytest.raises(ConfigError, match="port must be a number from 0 to 65535") as info:
        parse_address("peers[0].address", f"udp:127.0.0.1:{port}")
    assert info.value.key == "peers[0].address"


def test_addresses_and_copies() -> None:
    assert parse_address("k", "udp:[::1]:5070").addr == ("::1", 5070)
    assert str(parse_address("k", "udp:[::1]:5070")) == "udp:[::1]:5070"
    config = load_config(EXAMPLES / "eu.toml")
    moved = config.with_listen("127.0.0.1", 0).with_peer_address("na.gamesdk.test", "127.0.0.1", 6000)
    assert moved.listen.port == 0 and moved.peers[0].address.port == 6000
    assert config.listen.port == 5060  # frozen: the original is unchanged
