"""The `web` agent: fetch a page and return its readable text, safely.

No server-side request forgery: the host name is resolved first and every address it
resolves to must be global (`is_global`, and not multicast) unless the host or network is
on `agents.web_allow`. An allowlist of "safe" ranges would miss some (100.64.0.0/10 holds
Alibaba Cloud's metadata address), so anything not global is refused; an IPv6 address
carrying an IPv4 one (mapped, 6to4, Teredo, NAT64, IPv4-compatible) must pass with the
IPv4 address too. The connection goes to the checked address (the `Host` header and TLS
SNI keep the name), so a second resolution cannot swap in an internal address. Redirects
are followed by hand and each hop is checked again. Only http and https; the body is
read up to a size limit within a time limit. The text is untrusted data: it reaches the
model quoted, never as instructions.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import httpx
import trio

from agents.errors import AddressRefused, InvalidParameters, ToolError
from agents.llm import ToolSpec
from agents.tools._base import Agent, Tool, require_valid
from agents.tools._context import AgentContext, positive_or
from agents.tools._document_text import html_page

MAX_REDIRECTS = 5
DEFAULT_MAX_BYTES = 2 * 1024 * 1024
DEFAULT_TIMEOUT_S = 15.0
MAX_TEXT_CHARS = 20_000
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Not global whatever `is_global` says on this Python: 3.11 counts most of 192.0.0.0/24
# (IETF protocol assignments, 192.0.0.1 among them) as global.
_NEVER_GLOBAL = (ipaddress.ip_network("192.0.0.0/24"),)
# Ranges whose last 32 bits are an IPv4 address the packets may end up at.
_LOW_32_IS_IPV4 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96"))
# How a refused address is described, most telling first; the fallback is "non-global".
_KINDS = ("loopback", "link_local", "unspecified", "multicast", "private", "reserved")

FETCH = ToolSpec(
    agent="web",
    action="fetch",
    description="Fetch a web page (http or https URL) and return its readable text.",
    parameters={
        "type": "object",
        "properties": {
            "url": {"type": "string", "description": "http(s) URL"},
            "max_chars": {"type": "integer", "description": "longest text returned"},
        },
        "required": ["url"],
    },
    idempotent=True,
    keywords=("fetch", "web", "page", "url", "website", "download", "read"),
)


class AddressPolicy:
    """Which destinations may be fetched: public addresses, plus an explicit allowlist."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self._hosts: set[str] = set()
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._hosts.add(entry.lower())

    def check(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """Raise `AddressRefused` unless every address is public or allowed."""
        if host.lower() in self._hosts:
            return
        for address in addresses:
            reason = self._refusal(address)
            if reason:
                raise AddressRefused(
                    f"refusing to fetch {host}: it resolves to {address} ({reason}); "
                    "allow it in agents.web_allow if that is intended"
                )

    def _refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be reached (None: it may); allowed networks win."""
        if any(address in network for network in self._networks):
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return self._refusal(address.ipv4_mapped)  # on the wire it is the IPv4 address
        reason = _not_global(address)
        if reason is not None:
            return reason
        # web_allow names what may be reached, not what may be tunnelled to: allowing
        # 127.0.0.1 does not admit the 6to4 address that carries it.
        for inner in _embedded_ipv4(address):
            inner_reason = _not_global(inner)
            if inner_reason is not None:
                return f"it carries {inner}, a {inner_reason}"
        return None


def _not_global(address: IPAddress) -> str | None:
    """None for a global unicast address, else what kind of address it is."""
    never = any(address in network for network in _NEVER_GLOBAL)
    if address.is_global and not address.is_multicast and not never:
        return None
    kind = next((k for k in _KINDS if getattr(address, f"is_{k}")), "non-global")
    return f"{kind.replace('_', '-')} address"


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (6to4, Teredo, NAT64, compatible)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    found = [address.sixtofour] if address.sixtofour is not None else []
    found += list(address.teredo or ())
    if any(address in network for network in _LOW_32_IS_IPV4):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (a literal IP resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    except OSError as exc:
        raise ToolError(f"cannot resolve {host}: {exc}", retryable=True) from exc
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class Page:
    url: str
    status: int
    content_type: str
    body: bytes
    truncated: bool


class Fetcher:
    """Fetches over the shared pooled client, checking every hop against the policy."""

    def __init__(
        self, http: httpx.AsyncClient, policy: AddressPolicy, max_bytes: int, timeout_s: float
    ) -> None:
        self._http = http
        self._policy = policy
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s

    async def fetch(self, url: str) -> Page:
        with trio.move_on_after(self._timeout_s) as scope:
            for _ in range(MAX_REDIRECTS + 1):
                page, location = await self._hop(url)
                if location is None:
                    return page
                url = str(httpx.URL(url).join(location))
            raise ToolError(f"more than {MAX_REDIRECTS} redirects")
        assert scope.cancelled_caught
        raise ToolError(f"fetching {url} took longer than {self._timeout_s:g} s", retryable=True)

    async def _hop(self, url: str) -> tuple[Page, str | None]:
        target, headers, extensions = await self._checked_target(url)
        try:
            async with self._http.stream(
                "GET", target, headers=headers, extensions=extensions, follow_redirects=False
            ) as response:
                if response.is_redirect and "location" in response.headers:
                    return _empty(url, response), response.headers["location"]
                body, truncated = await self._read(response)
        except httpx.HTTPError as exc:
            raise ToolError(f"fetching {url} failed: {exc!r}", retryable=True) from exc
        return Page(
            url, response.status_code, response.headers.get("content-type", ""), body, truncated
        ), None

    async def _checked_target(self, url: str) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
        parsed = _parse(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = await resolve(parsed.host, port)
        if not addresses:
            raise ToolError(f"{parsed.host} resolves to no address")
        self._policy.check(parsed.host, addresses)
        address = addresses[0]
        headers = {"Host": parsed.netloc.decode("ascii")}
        extensions: dict[str, Any] = (
            {"sni_hostname": parsed.host} if parsed.scheme == "https" else {}
        )
        return parsed.copy_with(host=str(address)), headers, extensions

    async def _read(self, response: httpx.Response) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        stream = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        async with contextlib.aclosing(stream) as body:
            async for chunk in body:
                chunks.append(chunk)
                size += len(chunk)
                if size >= self._max_bytes:
                    return b"".join(chunks)[: self._max_bytes], True
        return b"".join(chunks), False


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidParameters(f"not a URL: {url!r}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidParameters(f"only http and https URLs can be fetched, not {url!r}")
    return parsed


def _empty(url: str, response: httpx.Response) -> Page:
    return Page(url, response.status_code, response.headers.get("content-type", ""), b"", False)


def readable(page: Page) -> tuple[str, str]:
    """(title, text) of a page: HTML reduced to its visible text; other text as is."""
    text = page.body.decode("utf-8", errors="replace")
    if "html" not in page.content_type.lower() and not text.lstrip().startswith("<"):
        return "", text
    return html_page(text)


class FetchTool(Tool):
    spec = FETCH

    def __init__(self, fetcher: Fetcher | None) -> None:
        self._fetcher = fetcher

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        if self._fetcher is None:
            raise ToolError("the web agent has no HTTP client")
        page = await self._fetcher.fetch(parameters["url"])
        title, text = await trio.to_thread.run_sync(readable, page)
        limit = int(parameters.get("max_chars") or MAX_TEXT_CHARS)
        return {
            "url": page.url,
            "status": page.status,
            "content_type": page.content_type,
            "title": title,
            "text": text[:limit],
            "truncated": page.truncated or len(text) > limit,
        }


class WebAgent(Agent):
    name = "web"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (FETCH,)

    def __init__(self, context: AgentContext) -> None:
        settings = context.settings
        policy = AddressPolicy(settings.web_allow)
        fetcher = None
        if context.http is not None:
            fetcher = Fetcher(
                context.http,
                policy,
                int(positive_or(settings.web_max_bytes, DEFAULT_MAX_BYTES)),
                positive_or(settings.web_timeout_s, DEFAULT_TIMEOUT_S),
            )
        self._tools = {"fetch": FetchTool(fetcher)}

    def tools(self) -> Mapping[str, Tool]:
        return self._tools
