"""Which network addresses a router may connect to (against server-side request forgery).

A project chooses its smtp relay's `host` and `port`, and its recipients, whose domains'
MX hosts an mx router connects to. Without a rule a tenant could make the workers
connect to the operator's own network (cloud metadata at 169.254.169.254, a database,
a Redis on loopback) and read the first line those answer in its delivery outcomes.

So a router connects only to public addresses unless it is trusted:

- the operator defined or vouched for it: a shared router (`envoi router add --shared`),
  or a project router whose config has `allow_private_network`, which only the
  operator can set (`envoi router add|set --allow-private-network`; the API refuses
  it with a 422);
- or the host is on the operator's allowlist, passed by the worker as
  `make_transport(..., trusted_hosts=...)`: host names, addresses or networks
  ("relay.internal", "10.1.2.3", "10.0.0.0/8").

The check is made each time a session is opened, on the addresses the host resolves
to at that moment, and the connection goes to an address that passed it: no second
lookup that a DNS rebinding could answer differently.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_private(address: _Address) -> bool:
    """Not a public unicast address: private, loopback, link-local, shared (CGN),
    reserved, multicast, unspecified; IPv6 forms that embed such an IPv4 address too."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and is_private(embedded):
            return True
    return not address.is_global or address.is_multicast


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback address literal."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AddressPolicy:
    """Where a router's sessions may go (see the module docstring)."""

    allow_private: bool = False
    trusted_names: frozenset[str] = frozenset()
    trusted_networks: tuple[_Network, ...] = ()

    @classmethod
    def of(cls, *, allow_private: bool = False, trusted_hosts: Iterable[str] = ()) -> AddressPolicy:
        """A policy from the operator's allowlist: each entry a name, an address or a
        network; ValueError for an entry that is none of these."""
        names: set[str] = set()
        networks: list[_Network] = []
        for entry in trusted_hosts:
            text = entry.strip().lower().rstrip(".")
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                if not text or any(c.isspace() or c in "/:@" for c in text):
                    raise ValueError(f"{entry!r} is not a host name, address or network") from None
                names.add(text)
        return cls(allow_private, frozenset(names), tuple(networks))

    def refusal(self, host: str, address: str) -> str | None:
        """Why connecting to `address` (which `host` resolved to) is refused; None if
        it is allowed."""
        if self.allow_private:
            return None
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # no IPv6 zone
        except ValueError:
            return f"{address} is not an IP address"
        if not is_private(ip):
            return None
        if host.lower().rstrip(".") in self.trusted_names:
            return None
        if any(ip in network for network in self.trusted_networks):
            return None
        return (
            f"{host} resolves to {address}, a private address: a project's router may "
            "reach public addresses only (the operator can allow it: envoi router set "
            "ID --allow-private-network)"
        )


# Every address allowed: operator-trusted routers, and tests on loopback.
OPEN = AddressPolicy(allow_private=True)
# Public addresses only: the rule for a project's own routers.
PUBLIC_ONLY = AddressPolicy()
