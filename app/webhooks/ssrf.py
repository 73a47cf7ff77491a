"""Refusing webhook URLs that reach the service's own network (SSRF), at registration and at
delivery: every address a host resolves to must be global unicast."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValueError):
    """The URL is malformed, does not resolve, or reaches a non-public address."""


@dataclass(frozen=True)
class Target:
    """A checked URL: its host and port, and the public addresses to connect to."""

    scheme: str
    host: str
    port: int
    addresses: list[IPAddress]


def is_public(address: IPAddress) -> bool:
    """Global unicast only: not loopback, private, link-local (169.254.169.254 included),
    CGNAT, documentation, reserved, unspecified or multicast; IPv4-mapped IPv6 unwrapped."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


def parse(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of an http(s) URL without credentials; UnsafeUrl otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("the scheme must be http or https")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("credentials in the URL are not accepted")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve(url: str, allow_private: bool) -> Target:
    """Resolve the URL's host; UnsafeUrl when any address is not public (unless allowed)."""
    scheme, host, port = parse(url)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:  # ValueError: e.g. a NUL in the name
        raise UnsafeUrl(f"the host {host!r} does not resolve") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise UnsafeUrl(f"the host {host!r} does not resolve")
    if not allow_private:
        # All of them: a name with one public and one private address is refused, since the
        # client could be steered to either.
        blocked = [a for a in addresses if not is_public(a)]
        if blocked:
            raise UnsafeUrl(
                f"the host {host!r} resolves to a non-public address ({blocked[0]}); "
                "set CLV_WEBHOOKS_ALLOW_PRIVATE=true only for local development"
            )
    return Target(scheme, host, port, addresses)
