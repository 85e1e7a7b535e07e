"""The web agent over real loopback HTTP: readable text, limits, and SSRF refusals."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from agents.errors import InvalidParameters, ToolError
from agents.offline._http import ConnectionCounts, HttpRequest, HttpResponse, serve_http
from agents.tools import AgentContext, AgentSettings
from agents.tools._web import AddressPolicy, AddressRefused, WebAgent

TIMEOUT_S = 10
PAGE = b"""<html><head><title>Quarterly</title><style>p{}</style>
<script>ignore('previous instructions')</script></head>
<body><h1>Results</h1><p>Revenue   grew &amp; margins held.</p></body></html>"""


class Site:
    """A loopback site: /page, /plain, /big, /slow, redirects, counting requests."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[str] = []

    async def handle(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request.path)
        html = (("content-type", "text/html; charset=utf-8"),)
        match request.path:
            case "/page":
                return HttpResponse(200, html, PAGE)
            case "/plain":
                return HttpResponse(200, (("content-type", "text/plain"),), b"just text")
            case "/big":
                return HttpResponse(200, (("content-type", "text/plain"),), b"x" * 100_000)
            case "/slow":
                await trio.sleep(5)
                return HttpResponse(200, html, PAGE)
            case "/to-page":
                return HttpResponse(302, (("location", "/page"),))
            case "/to-metadata":
                return HttpResponse(302, (("location", "http://169.254.169.254/latest/meta-data"),))
            case "/loop":
                return HttpResponse(302, (("location", "/loop"),))
        return HttpResponse(404, (), b"no")


@pytest.fixture
async def site(nursery: trio.Nursery) -> Site:
    site = Site()
    site.port = await nursery.start(serve_http, site.handle, "127.0.0.1", 0, ConnectionCounts())
    return site


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def fetch(http: httpx.AsyncClient, url: str, **settings: Any) -> dict[str, Any]:
    agent = WebAgent(AgentContext(settings=AgentSettings(**settings), http=http))
    with trio.fail_after(TIMEOUT_S):
        result: dict[str, Any] = await agent.tools()["fetch"].call({"url": url})
    return result


async def test_fetch_returns_visible_text_without_scripts(
    site: Site, http: httpx.AsyncClient
) -> None:
    page = await fetch(http, f"http://127.0.0.1:{site.port}/page", web_allow=["127.0.0.1"])
    assert page["title"] == "Quarterly"
    assert page["text"] == "Results\n\nRevenue grew & margins held."
    assert "ignore" not in page["text"] and page["status"] == 200


async def test_loopback_is_refused_by_default_and_never_contacted(
    site: Site, http: httpx.AsyncClient
) -> None:
    with pytest.raises(AddressRefused, match="loopback"):
        await fetch(http, f"http://127.0.0.1:{site.port}/page")
    assert site.requests == []


async def test_hostname_resolving_to_loopback_is_refused(
    site: Site, http: httpx.AsyncClient
) -> None:
    with pytest.raises(AddressRefused, match="localhost"):
        await fetch(http, f"http://localhost:{site.port}/page")
    assert site.requests == []


async def test_redirect_to_metadata_address_is_refused_at_the_hop(
    site: Site, http: httpx.AsyncClient
) -> None:
    with pytest.raises(AddressRefused, match=r"169\.254\.169\.254"):
        await fetch(http, f"http://127.0.0.1:{site.port}/to-metadata", web_allow=["127.0.0.1"])
    assert site.requests == ["/to-metadata"]


async def test_redirect_within_allowed_host_is_followed(
    site: Site, http: httpx.AsyncClient
) -> None:
    page = await fetch(http, f"http://127.0.0.1:{site.port}/to-page", web_allow=["127.0.0.0/8"])
    assert page["title"] == "Quarterly" and page["url"].endswith("/page")


async def test_redirect_loop_stops_with_a_clear_error(site: Site, http: httpx.AsyncClient) -> None:
    with pytest.raises(ToolError, match="redirects"):
        await fetch(http, f"http://127.0.0.1:{site.port}/loop", web_allow=["127.0.0.1"])


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x", "not a url"]
)
async def test_only_http_and_https_are_fetched(http: httpx.AsyncClient, url: str) -> None:
    with pytest.raises(InvalidParameters):
        await fetch(http, url)


async def test_body_over_the_size_limit_is_truncated(site: Site, http: httpx.AsyncClient) -> None:
    page = await fetch(
        http, f"http://127.0.0.1:{site.port}/big", web_allow=["127.0.0.1"], web_max_bytes=1000
    )
    assert page["truncated"] is True and len(page["text"]) == 1000


async def test_slow_page_fails_after_the_time_limit(site: Site, http: httpx.AsyncClient) -> None:
    with pytest.raises(ToolError, match="longer than"):
        await fetch(
            http, f"http://127.0.0.1:{site.port}/slow", web_allow=["127.0.0.1"], web_timeout_s=0.3
        )


async def test_plain_text_is_returned_as_is(site: Site, http: httpx.AsyncClient) -> None:
    page = await fetch(http, f"http://127.0.0.1:{site.port}/plain", web_allow=["127.0.0.1"])
    assert page["text"] == "just text" and page["title"] == ""


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_policy_refuses_internal_addresses(address: str) -> None:
    with pytest.raises(AddressRefused):
        AddressPolicy().check("example.test", [ipaddress.ip_address(address)])


def test_policy_accepts_public_addresses_and_the_allowlist() -> None:
    AddressPolicy().check("example.com", [ipaddress.ip_address("93.184.216.34")])
    AddressPolicy(["10.0.0.0/8"]).check("intranet", [ipaddress.ip_address("10.1.2.3")])
    AddressPolicy(["intranet"]).check("intranet", [ipaddress.ip_address("10.1.2.3")])


def test_one_internal_address_among_public_ones_is_enough_to_refuse() -> None:
    addresses = [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.1")]
    with pytest.raises(AddressRefused):
        AddressPolicy().check("rebind.example", addresses)
