"""The inventory's `vrrp` settings: one virtual IP that the lb nodes hand between them (keepalived, VRRPv3).

    vrrp: {virtual_ip: 10.0.0.250/24, router_id: 51, interface: eth0, advert_int: 0.5}

In an Ansible inventory the same keys are host (or `lb` group) variables: `fleet_vrrp_virtual_ip`,
`fleet_vrrp_router_id`, `fleet_vrrp_interface`, `fleet_vrrp_advert_int`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from fleet.core.errors import VrrpValueError
from fleet.core.model import Node, Vrrp

KEYS = ("virtual_ip", "router_id", "interface", "advert_int")
INTERFACE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")  # Linux names: at most 15 bytes, no / or blanks
# VRRPv3 carries the advertisement interval in centiseconds in 12 bits (RFC 5798 §5.2.7); under 0.05 s a busy
# node misses adverts and the address flaps.
ADVERT_MIN, ADVERT_MAX = 0.05, 40.95


def parse_vrrp(raw: Mapping[str, object]) -> Vrrp:
    """A `Vrrp` from the inventory's mapping; a bad or missing value raises VrrpValueError naming its key."""
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise VrrpValueError(unknown[0], f"unknown vrrp setting {unknown[0]!r}; settings are {', '.join(KEYS)}")
    if "virtual_ip" not in raw:
        raise VrrpValueError("virtual_ip", "the virtual IP with its prefix length is required, e.g. 10.0.0.250/24")
    if "router_id" not in raw:
        raise VrrpValueError("router_id", "a virtual router id from 1 to 255 is required (one per network segment)")
    text = str(raw["virtual_ip"]).strip()
    try:
        if "/" not in text:
            raise ValueError("the prefix length is missing")
        iface = ipaddress.IPv4Interface(text)
    except ValueError as exc:
        raise VrrpValueError("virtual_ip", f"expected an IPv4 address with its prefix length such as "
                                           f"10.0.0.250/24, got {text!r}: {exc}") from None
    net = iface.network
    if iface.network.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        raise VrrpValueError("virtual_ip", f"{iface.ip} is the network or broadcast address of {net}")
    rid = raw["router_id"]
    if isinstance(rid, bool) or not isinstance(rid, int | str) or not str(rid).isdigit() \
            or not 1 <= int(str(rid)) <= 255:
        raise VrrpValueError("router_id", f"expected a virtual router id from 1 to 255, got {rid!r}")
    interface = str(raw.get("interface", "eth0"))
    if not INTERFACE_RE.match(interface):
        raise VrrpValueError("interface", f"expected a network interface name (at most 15 letters, digits, "
                                          f"_ . : -), got {interface!r}")
    adv = raw.get("advert_int", 0.5)
    try:
        if isinstance(adv, bool):
            raise ValueError
        advert = round(float(str(adv)), 2)
    except ValueError:
        raise VrrpValueError("advert_int", f"expected seconds such as 0.5, got {adv!r}") from None
    if not ADVERT_MIN <= advert <= ADVERT_MAX:
        raise VrrpValueError("advert_int", f"expected {ADVERT_MIN} to {ADVERT_MAX} seconds "
                                           f"(VRRPv3 centiseconds), got {adv!r}")
    return Vrrp(str(iface.ip), net.prefixlen, int(str(rid)), interface, advert)


def vrrp_problems(nodes: list[Node], vrrp: Vrrp) -> list[str]:
    """What is wrong with a virtual IP for these nodes: no lb node to hold it, or an address a node has."""
    problems = []
    if not any(n.has_role("lb") for n in nodes):
        problems.append("a virtual IP needs lb nodes to hold it; no node has the role lb")
    taken = sorted(n.name for n in nodes if n.address == vrrp.virtual_ip)
    if taken:
        problems.append(f"{vrrp.virtual_ip} is the address of node {taken[0]}; the virtual IP must be a free one")
    return problems
