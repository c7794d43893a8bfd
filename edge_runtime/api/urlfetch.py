"""Fetch the image for `/url` safely: http(s) only, no internal addresses, bounded time and size.

Every address is checked where it is used: our resolver vets what DNS returns (so a name that resolves
to 127.0.0.1 or 169.254.169.254 is refused, and the connection goes to the vetted address, which
defeats DNS rebinding), IP literals are vetted before connecting, and redirects are followed by hand,
each hop vetted again.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from edge_runtime.errors import ImageFetchError, ImageFetchTooLargeError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class _AddressRefused(OSError):
    pass


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    allow_hosts: frozenset[str]
    allow_networks: tuple[IpNetwork, ...]

    @classmethod
    def from_allow_list(cls, entries: tuple[str, ...] | list[str]) -> UrlPolicy:
        hosts: set[str] = set()
        networks: list[IpNetwork] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, host: str, address: str) -> bool:
        if host.lower().rstrip(".") in self.allow_hosts:
            return True
        ip = ipaddress.ip_address(address.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allow_networks):
            return True
        return ip.is_global and not ip.is_multicast


class _VettingResolver(AbstractResolver):
    def __init__(self, policy: UrlPolicy) -> None:
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not self._policy.allows(host, result["host"]):
                raise _AddressRefused(f"{host} resolves to {result['host']}, an internal address")
        return results

    async def close(self) -> None:
        await self._inner.close()


def _check_url(url: str, policy: UrlPolicy) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:  # "Invalid IPv6 URL", a bad port
        raise ImageFetchError(f"the URL cannot be parsed: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ImageFetchError(
            f"only http and https URLs are fetched, not {parts.scheme or 'a relative URL'!r}"
        )
    if not host:
        raise ImageFetchError("the URL has no host")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        _check_hostname(host)
        return  # a name: vetted by the resolver
    if not policy.allows(host, str(literal)):
        raise ImageFetchError(f"{host} is an internal address")


def _check_hostname(host: str) -> None:
    """DNS's rules, checked here so that the client library never meets a name it cannot encode."""
    try:
        host.encode("idna")  # empty labels, labels over 63 characters, bad code points
    except UnicodeError as exc:
        raise ImageFetchError(f"the URL's host name is not valid: {exc}") from exc
    if len(host.rstrip(".")) > 253:
        raise ImageFetchError("the URL's host name is longer than 253 characters")


async def fetch_image(
    url: str,
    policy: UrlPolicy,
    max_bytes: int,
    connect_timeout: float,
    read_timeout: float,
    max_redirects: int,
    hold: Callable[[int], None] | None = None,
) -> bytes:
    """`hold(n)` is told of every n bytes downloaded before they are kept (a memory budget may refuse)."""
    timeout = aiohttp.ClientTimeout(
        total=connect_timeout + read_timeout, sock_connect=connect_timeout, sock_read=read_timeout
    )
    connector = aiohttp.TCPConnector(resolver=_VettingResolver(policy), use_dns_cache=False, limit=4)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, trust_env=False) as session:
        for _ in range(max_redirects + 1):
            _check_url(url, policy)
            try:
                async with session.get(url, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                        url = _redirect_target(url, response.headers["Location"])
                        continue
                    if response.status != 200:
                        raise ImageFetchError(f"the image URL answered HTTP {response.status}")
                    return await _read_limited(response, max_bytes, hold)
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, _AddressRefused):
                    raise ImageFetchError(str(exc.os_error)) from exc
                raise ImageFetchError(f"cannot connect to {urlsplit(url).hostname}: {exc.os_error}") from exc
            except TimeoutError as exc:
                raise ImageFetchError("the image URL did not answer in time") from exc
            except aiohttp.ClientError as exc:
                raise ImageFetchError(f"downloading the image failed: {exc}") from exc
            except ValueError as exc:  # the client library's own URL checks (yarl)
                raise ImageFetchError(f"the URL cannot be fetched: {exc}") from exc
        raise ImageFetchError(f"more than {max_redirects} redirects")


def _redirect_target(url: str, location: str) -> str:
    try:
        return urljoin(url, location)
    except ValueError as exc:
        raise ImageFetchError(f"the image URL redirected to an invalid location: {exc}") from exc


async def _read_limited(response: Any, max_bytes: int, hold: Callable[[int], None] | None) -> bytes:
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise ImageFetchTooLargeError(f"the image is {declared} bytes, more than the limit of {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > max_bytes:
            raise ImageFetchTooLargeError(f"the image is more than the limit of {max_bytes} bytes")
        if hold is not None:
            hold(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)
