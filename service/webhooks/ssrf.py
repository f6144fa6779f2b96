"""Which destinations a webhook may call (server-side request forgery).

A webhook URL makes the service send requests on a tenant's behalf, from inside the operator's
network. Left open, a tenant could aim it at the cloud metadata endpoint, the database, or an
admin port on localhost. So:

* only http and https, no credentials in the URL;
* the host is resolved at registration and again at every delivery (DNS can change in between),
  and every address it resolves to must be acceptable: one bad answer refuses the lot (a name
  answering both a public and a private address is a rebinding trick);
* loopback, private, link-local, multicast, reserved, unspecified and otherwise not globally
  routable addresses are refused, IPv4 and IPv6 alike, looking through IPv6 forms that embed an
  IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, 6to4, NAT64), unless the operator allows them
  (``webhook_allowed_hosts``: IPs, CIDRs or host names);
* the delivery then connects to the address that was checked, not to whatever a second lookup
  returns (service/webhooks/sender.py), and follows no redirects.

With ``webhook_allow_public_destinations`` false, only the allowed hosts and networks are used.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx

from service.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[IPAddress]]

SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2000
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class RefusedDestination(ValueError):
    """The URL may not be called; the message says why (shown to the tenant)."""


@dataclass(frozen=True)
class AllowList:
    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    allow_public: bool = True

    @classmethod
    def parse(cls, entries: Iterable[str], *, allow_public: bool = True) -> AllowList:
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(_normal_host(entry))
        return cls(tuple(networks), frozenset(hosts), allow_public)

    @classmethod
    def from_settings(cls, settings: Settings) -> AllowList:
        return cls.parse(
            settings.webhook_allowed_hosts, allow_public=settings.webhook_allow_public_destinations
        )

    def listed(self, host: str, address: IPAddress) -> bool:
        if _normal_host(host) in self.hosts:
            return True
        reached = {address, *_reached(address)}
        return any(a in n for a in reached for n in self.networks if a.version == n.version)


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _reached(address: IPAddress) -> list[IPAddress]:
    """The addresses a connection to ``address`` reaches: an IPv6 form that embeds an IPv4
    address (IPv4-mapped, NAT64) reaches that IPv4 address; 6to4 reaches both."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return [address.ipv4_mapped]
        if address in _NAT64:
            return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
        if address.sixtofour is not None:
            return [address, address.sixtofour]
    return [address]


def special_use(address: IPAddress) -> str | None:
    """Why an address is not a public destination, or None if it is one."""
    for candidate in _reached(address):
        for flag in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
            if getattr(candidate, f"is_{flag}"):
                return flag.replace("_", "-")
        if not candidate.is_global:  # shared (100.64/10), benchmarking, documentation, ...
            return "not globally routable"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to (an IP literal resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RefusedDestination(f"the host {host} does not resolve") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        # A scope id (fe80::1%eth0) is not part of the address that is checked.
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise RefusedDestination(f"the host {host} does not resolve")
    return addresses


def parse_url(url: str) -> httpx.URL:
    """The URL, if its form may be called: http(s), a host, no credentials, no fragment."""
    if len(url) > MAX_URL_LENGTH:
        raise RefusedDestination(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise RefusedDestination(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in SCHEMES:
        raise RefusedDestination("only http and https URLs are allowed")
    if not parsed.host:
        raise RefusedDestination("the URL has no host")
    if parsed.userinfo:
        # They would be sent as Basic auth to wherever the URL leads, and shown in listings.
        raise RefusedDestination("credentials in the URL are not allowed")
    if parsed.fragment:
        raise RefusedDestination("the URL has a fragment, which is never sent")
    return parsed


@dataclass(frozen=True)
class Destination:
    url: httpx.URL
    host: str  # ASCII (IDNA) host name, as resolved
    addresses: tuple[IPAddress, ...]  # all acceptable; deliveries connect to the first


def check(url: str, allow: AllowList, resolver: Resolver | None = None) -> Destination:
    """Parse, resolve (with ``resolver``, default :func:`resolve`) and check a URL; raise
    :class:`RefusedDestination` with the reason."""
    parsed = parse_url(url)
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = (resolver or resolve)(_normal_host(host), port)
    for address in addresses:
        if allow.listed(host, address):
            continue
        if not allow.allow_public:
            raise RefusedDestination(
                f"{host} ({address}) is not an allowed destination (UNLEARN_WEBHOOK_ALLOWED_HOSTS)"
            )
        reason = special_use(address)
        if reason is not None:
            raise RefusedDestination(
                f"{host} resolves to {address}, a {reason} address; such destinations are refused "
                "unless the operator allows them (UNLEARN_WEBHOOK_ALLOWED_HOSTS)"
            )
    return Destination(parsed, _normal_host(host), tuple(addresses))
