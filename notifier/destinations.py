"""Where webhooks may go: the URL's form, and the addresses its host resolves to.

A subscription must not turn the notifier into a way inside (server-side request forgery): public
(globally routable) addresses are allowed unless switched off, any other address (loopback, private,
link-local such as a cloud's metadata service, shared, reserved) only within the configured networks.
The host is resolved when a subscription is created, and again at each attempt, which connects to
an address it checked (a name that resolves elsewhere later gains nothing).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from runtime.settings import SettingsError

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_S = 3.0
DEFAULT_PORTS = {"http": 80, "https": 443}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(Exception):
    """The URL or the addresses of its host are not a destination; the message says why."""


@dataclass(frozen=True)
class Url:
    """A webhook URL, checked: what an attempt needs to connect and to write its request line."""

    scheme: str
    host: str  # a name, or an IP address without brackets
    port: int
    target: str  # the request target: path and query

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def parse_url(text: str) -> Url:
    """The URL's parts; raises Refused naming what is wrong with its form."""
    if not text:
        raise Refused("is required")
    if len(text) > MAX_URL_LENGTH:
        raise Refused(f"is {len(text)} characters long, more than {MAX_URL_LENGTH}")
    if any(c <= " " or c == "\x7f" for c in text) or not text.isascii():
        raise Refused("must be ASCII without spaces or control characters (percent-encode the rest)")
    if "#" in text:
        raise Refused("must not have a fragment (#...)")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"is not a URL: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise Refused(f"must be an http or https URL, not {parts.scheme or 'one without a scheme'}")
    _check_parts(parts)
    assert parts.hostname is not None  # _check_parts made sure
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Url(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme], target)


def _check_parts(parts: SplitResult) -> None:
    if parts.username is not None or parts.password is not None:
        raise Refused("must not hold a user name or password (the signature says who sends)")
    if not parts.hostname:
        raise Refused("has no host")
    if parts.port == 0:
        raise Refused("has port 0")


class Destinations:
    """The addresses webhooks may go to."""

    def __init__(self, allowed_networks: Sequence[str], public: bool) -> None:
        try:
            self.networks: tuple[Network, ...] = tuple(
                ipaddress.ip_network(n.strip(), strict=False) for n in allowed_networks if n.strip()
            )
        except ValueError as exc:
            raise SettingsError(f"allowed_networks: {exc}") from exc
        self.public = public

    def allows(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.networks):
            return True
        return self.public and address.is_global and not address.is_multicast

    def describe(self) -> str:
        allowed = ["public addresses"] if self.public else []
        if self.networks:
            allowed.append(", ".join(str(n) for n in self.networks))
        return " and ".join(allowed) or "nothing"

    async def resolve(self, url: Url) -> list[str]:
        """The addresses of the URL's host, each one allowed; raises Refused if any is not (or none
        resolves)."""
        addresses = await _addresses(url.host, url.port)
        refused = [a for a in addresses if not self.allows(a)]
        if refused:
            literal = [str(a) for a in addresses] == [url.host]
            where = (
                url.host if literal else f"{url.host} resolves to {', '.join(str(a) for a in refused[:3])},"
            )
            raise Refused(
                f"{where} outside what the notifier may deliver to: {self.describe()} "
                "(METRICS_NOTIFIER_ALLOWED_NETWORKS, METRICS_NOTIFIER_PUBLIC_DESTINATIONS)"
            )
        return [str(a) for a in addresses]


async def _addresses(host: str, port: int) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise Refused(f"{host} did not resolve within {RESOLVE_TIMEOUT_S:g} s") from None
    except OSError as exc:
        raise Refused(f"{host} does not resolve ({exc.strerror or exc})") from None
    found: list[Address] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in found:
            found.append(address)
    if not found:
        raise Refused(f"{host} does not resolve")
    return found
