"""The network guard: which hosts a source of an uploaded plan may reach, and the hosts each backend names."""

from __future__ import annotations

from typing import Any

import pytest

from trackcheck.plan.model import SourceSpec
from trackcheck.sources import build_source
from trackcheck.sources.network import LOCAL, check_hosts, refusal

REFUSED = {
    "127.0.0.1": "loopback",
    "::1": "loopback",
    "[::1]": "loopback",
    "localhost": "loopback",
    "169.254.169.254": "cloud metadata",
    "169.254.1.1": "link-local",
    "fe80::1": "link-local",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "fd00::1": "private",
    "::ffff:127.0.0.1": "loopback",
    "::ffff:10.0.0.1": "private",
    "64:ff9b::a9fe:a9fe": "cloud metadata",  # NAT64 of 169.254.169.254
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "2130706433": "loopback",  # 127.0.0.1 written as one decimal number
    "0x7f.1": "loopback",  # and as hexadecimal with a short form
    "224.0.0.1": "multicast",
    "100.64.0.1": "not a public address",  # carrier-grade NAT
}


@pytest.mark.parametrize(("host", "kind"), REFUSED.items())
def test_local_private_and_special_addresses_are_refused(host: str, kind: str) -> None:
    problem = refusal(host, allow_private=False)

    assert problem is not None
    assert kind in problem
    assert repr(host) in problem


@pytest.mark.parametrize("host", ["2130706433", "localhost"])
def test_a_name_or_numeric_form_says_which_address_it_means(host: str) -> None:
    assert f"host {host!r} resolves to 127.0.0.1, a loopback address" == refusal(host, allow_private=False)


@pytest.mark.parametrize("host", ["93.184.215.14", "2606:2800:220:1:248:1893:25c8:1946", "[2001:4860:4860::8888]"])
def test_public_literals_are_allowed(host: str) -> None:
    assert refusal(host, allow_private=False) is None


@pytest.mark.parametrize("host", [*REFUSED, "no-such-host.invalid", ""])
def test_allow_private_allows_everything_without_resolving(host: str) -> None:
    assert refusal(host, allow_private=True) is None


def test_a_name_that_does_not_resolve_is_refused() -> None:
    assert refusal("no-such-host.invalid", allow_private=False) == "cannot resolve host 'no-such-host.invalid'"
    assert refusal("", allow_private=False) == "no host given"


def source(**spec: Any) -> Any:
    return build_source("src", SourceSpec.model_validate(spec), plan="p")


@pytest.mark.parametrize(
    ("spec", "hosts"),
    [
        ({"type": "http", "url": "https://api.example.com:8443/v1?token=x"}, ["api.example.com"]),
        ({"type": "http", "url": "http://[::1]:8080/"}, ["::1"]),
        ({"type": "http", "url": "not a url"}, [""]),
        ({"type": "redis", "url": "redis://:pw@cache.example.com:6380/2"}, ["cache.example.com"]),
        ({"type": "redis", "url": "unix:///run/redis.sock"}, [LOCAL]),
        ({"type": "redis", "url": "redis://"}, [LOCAL]),
        ({"type": "redis", "url": "redis://?host=10.0.0.5"}, ["10.0.0.5"]),
        ({"type": "sql", "url": "postgresql://u:p@db.example.com:5432/app"}, ["db.example.com"]),
        ({"type": "sql", "url": "postgresql://u@/app"}, [LOCAL]),  # libpq's Unix socket
        ({"type": "sql", "url": "postgresql://u@/app?host=/var/run/postgresql"}, [LOCAL]),
        (
            {"type": "sql", "url": "postgresql://u@db.example.com/app?host=10.0.0.7:5432,[fd00::2]:5433"},
            ["db.example.com", "10.0.0.7", "fd00::2"],
        ),
        (
            {"type": "sql", "url": "mysql://root@db.example.com/app", "connect_args": {"host": "127.0.0.1"}},
            ["db.example.com", "127.0.0.1"],
        ),
        (
            {"type": "sql", "url": "mysql://root@db.example.com/app?unix_socket=/run/mysqld.sock"},
            ["db.example.com", LOCAL],
        ),
        ({"type": "sql", "url": "sqlite:///tmp/events.db"}, []),
        ({"type": "file", "path": "/tmp/x.jsonl"}, []),
    ],
)
def test_each_backend_names_the_hosts_it_connects_to(spec: dict[str, Any], hosts: list[str]) -> None:
    assert source(**spec).hosts() == hosts


def test_check_hosts_names_the_source_and_the_first_refused_host() -> None:
    internal = source(type="sql", url="postgresql://u@93.184.215.14/app?host=169.254.169.254")
    public = source(type="http", url="http://93.184.215.14/api")

    problem = check_hosts(internal, allow_private=False)

    assert problem == "source 'src': host '169.254.169.254' is the cloud metadata address (link-local)"
    assert check_hosts(internal, allow_private=True) is None
    assert check_hosts(public, allow_private=False) is None
    assert check_hosts(source(type="redis", url="unix:///run/redis.sock"), allow_private=False) is not None
    assert check_hosts(source(type="sql", url="sqlite:///tmp/x.db"), allow_private=False) is None
