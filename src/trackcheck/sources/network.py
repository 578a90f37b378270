"""Which network addresses a source may reach: the guard for sources that uploaded plans define.

A plan uploaded to the shared service must not make trackcheck a proxy into the network it runs in: the
loopback interface, the private networks, the cloud metadata service. ``refusal`` resolves a host name the
way a driver would (``socket.getaddrinfo``, every address it returns) and says why it is refused if *any*
address is not public; the ``ipaddress`` module decides what is public. Numeric forms that the resolver
accepts (``2130706433``, ``0x7f.1``, ``::ffff:127.0.0.1``) are therefore judged by the address they mean.

Each backend names the hosts it connects to in ``Source.hosts()``; ``check_hosts`` applies the rule to
all of them when a plan loads. Because a name may resolve differently at fetch time (DNS rebinding), the
http source checks again before each request when its ``Source.network`` rule forbids private addresses.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trackcheck.sources.base import Source

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: what ``hosts()`` returns for a connection that stays on this machine (a Unix socket, a driver's default
#: host): it resolves to the loopback address, so the guard refuses it like any local host
LOCAL = "localhost"
_METADATA = ipaddress.IPv4Address("169.254.169.254")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class NetworkRule:
    """What a source may connect to, held in ``Source.network`` (None there: anything, for trusted plans).

    With ``allow_private=False`` every host must resolve to public addresses only; the http source then
    checks this again before each request it sends (redirects included) and against the address it
    actually connected to, and ignores proxy settings from the environment.
    """

    allow_private: bool = False


def refusal(host: str, *, allow_private: bool) -> str | None:
    """Why connecting to ``host`` is refused, or None if it may be reached.

    With ``allow_private`` everything is allowed and nothing is resolved (a trusted plan loads without
    network access). Otherwise a host is refused when it does not resolve, or when any of its addresses is
    loopback, link-local (the cloud metadata service among them), private, unspecified, multicast,
    reserved or otherwise not globally reachable.
    """
    if allow_private:
        return None
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if not name:
        return "no host given"
    try:
        addresses = _resolve(name)
    except (OSError, UnicodeError, ValueError):
        return f"cannot resolve host {host!r}"
    if not addresses:
        return f"cannot resolve host {host!r}"
    literal = _literal(name)
    for address in addresses:
        kind = _kind(address)
        if kind is not None:
            if literal is not None and literal == address:
                return f"host {host!r} is {kind}"
            return f"host {host!r} resolves to {address}, {kind}"
    return None


def check_hosts(source: Source, *, allow_private: bool) -> str | None:
    """The first refusal among ``source.hosts()``, naming the source; None when every host may be reached."""
    for host in source.hosts():
        problem = refusal(host, allow_private=allow_private)
        if problem is not None:
            return f"source {source.name!r}: {problem}"
    return None


def _resolve(name: str) -> list[IPAddress]:
    """Every address ``name`` resolves to (IP literals resolve to themselves, without DNS)."""
    found: dict[IPAddress, None] = {}
    for *_, sockaddr in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM):
        text = str(sockaddr[0]).partition("%")[0]  # an IPv6 zone (fe80::1%eth0) is not part of the address
        found[ipaddress.ip_address(text)] = None
    return list(found)


def _literal(name: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(name.partition("%")[0])
    except ValueError:
        return None


def _kind(address: IPAddress) -> str | None:
    """What kind of non-public address this is, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            kind = _kind(embedded)
            if kind is not None:
                return f"{kind} ({embedded})"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address == _METADATA:
        return "the cloud metadata address (link-local)"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private network address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a public address"
    return None


__all__ = ["LOCAL", "NetworkRule", "check_hosts", "refusal"]
